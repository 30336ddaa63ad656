//! Value connections: a job's values on a TCP connection of their own.
//!
//! A client that asks for one gets a secret token with its job's
//! acceptance, opens a TCP connection to the coordinator's port and
//! presents the token (the handshake is in
//! [`farm_proto::value_connection`]). The listener recognises the
//! connection and [`ValueOffers::claim`] hands it to the job's stream task,
//! which then writes the released values there instead of into the gRPC
//! stream: raw bytes with nothing around them, which the client can
//! splice into its output without reading them, one copy fewer per byte
//! on the client and none of HTTP/2's framing and flow control.
//!
//! A client that cannot open the connection (a proxy that only passes
//! HTTP/2, say) still gets its values: after
//! [`CoordinatorConfig::value_connection_wait`](crate::CoordinatorConfig)
//! the job sends them in its stream as before.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use farm_proto::value_connection::{ACCEPTED, Hello, TOKEN_BYTES, Token};
use farm_proto::wire::Payload;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::AbortOnDropHandle;

use crate::scheduler::JobId;

/// Value batches (a chunk each) queued for the connection's writer: one
/// being written, one ready, as the gRPC stream's queue.
const WRITE_QUEUE: usize = 2;

/// Offered value connections not yet claimed, by job.
#[derive(Debug, Default)]
pub struct ValueOffers {
    offers: Mutex<HashMap<JobId, Offer>>,
}

#[derive(Debug)]
struct Offer {
    token: Token,
    deliver: oneshot::Sender<TcpStream>,
}

/// Why a value connection could not be offered.
#[derive(Debug, thiserror::Error)]
#[error("no randomness for a value connection's token: {0}")]
pub struct NoToken(getrandom::Error);

impl ValueOffers {
    /// Offers `job` a value connection: the token its client must present,
    /// and where the connection will arrive.
    pub fn offer(&self, job: JobId) -> Result<(Token, oneshot::Receiver<TcpStream>), NoToken> {
        let mut token = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut token).map_err(NoToken)?;
        let (deliver, arrival) = oneshot::channel();
        self.lock().insert(job, Offer { token, deliver });
        Ok((token, arrival))
    }

    /// Hands `stream` to the job `hello` names, if its token is right and
    /// the offer still stands; otherwise gives it back.
    pub fn claim(&self, hello: &Hello, stream: TcpStream) -> Result<(), TcpStream> {
        let mut offers = self.lock();
        let Entry::Occupied(offer) = offers.entry(JobId(hello.job_id)) else {
            return Err(stream);
        };
        if !tokens_match(&offer.get().token, &hello.token) {
            return Err(stream);
        }
        offer.remove().deliver.send(stream)
    }

    /// Ends `job`'s offer, claimed or not.
    pub fn withdraw(&self, job: JobId) {
        self.lock().remove(&job);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Offer>> {
        // Each call is one insert or remove: nothing is left half done.
        self.offers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Compares in time independent of where the tokens differ, so a guesser
/// learns nothing from how fast a wrong token is refused.
fn tokens_match(a: &Token, b: &Token) -> bool {
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Writes a job's values to its claimed connection on a task of its own,
/// so the job's task goes on taking released values while one is written.
/// Dropped before [`finish`](ValueWriter::finish), as when the job fails,
/// it closes the connection at once: the client stops waiting for values
/// and reads why in the job's stream.
#[derive(Debug)]
pub struct ValueWriter {
    queue: mpsc::Sender<Payload>,
    task: AbortOnDropHandle<std::io::Result<()>>,
}

impl ValueWriter {
    /// Accepts `stream` (the one-byte answer) and starts writing to it.
    pub fn start(mut stream: TcpStream) -> ValueWriter {
        let (queue, mut batches) = mpsc::channel::<Payload>(WRITE_QUEUE);
        let task = tokio::spawn(async move {
            stream.write_all(&[ACCEPTED]).await?;
            while let Some(batch) = batches.recv().await {
                write_pieces(&mut stream, batch.parts()).await?;
            }
            stream.shutdown().await
        });
        ValueWriter {
            queue,
            task: AbortOnDropHandle::new(task),
        }
    }

    /// Queues a batch; false if the connection broke or the client read
    /// nothing for `stall`.
    pub async fn send(&self, batch: Payload, stall: Duration) -> bool {
        matches!(
            tokio::time::timeout(stall, self.queue.send(batch)).await,
            Ok(Ok(()))
        )
    }

    /// Waits until every queued value is written and the connection is
    /// closed, at most `stall`; an error says why they were not.
    pub async fn finish(self, stall: Duration) -> Result<(), String> {
        let ValueWriter { queue, task } = self;
        drop(queue);
        match tokio::time::timeout(stall, task).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(error))) => Err(format!("the value connection broke: {error}")),
            Ok(Err(_)) => Err("the value connection's writer failed".to_owned()),
            Err(_) => Err(format!(
                "the client read no values for {} s",
                stall.as_secs()
            )),
        }
    }
}

async fn write_pieces(stream: &mut TcpStream, pieces: &[Bytes]) -> std::io::Result<()> {
    for piece in pieces {
        stream.write_all(piece).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_when_equal() {
        let token = *b"0123456789abcdef";
        assert!(tokens_match(&token, &token));
        let mut other = token;
        other[15] ^= 1;
        assert!(!tokens_match(&token, &other));
    }
}
