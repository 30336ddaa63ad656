//! The results connection: results with values sent on a TCP connection
//! of their own beside the session (see `Welcome.results_token` in
//! `farm.proto`). Unframed by HTTP/2, the values can pass through the
//! coordinator to its client inside the kernel, never read by it.
//!
//! Results go out in the order they are queued, each written straight
//! from the buffer it was computed into. The connection is part of the
//! session: if it breaks, the session ends (and reconnects), since the
//! results on it are lost and their leases must go to someone.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use farm_net::auth::KEY_BYTES;
use farm_net::peer;
use farm_net::side_connection::{ACCEPTED, Hello, Purpose, Token, UNAUTHENTICATED, result_head};
use farm_proto::v1;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};

/// How long opening the connection (connect, hello, answer) may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one write may wait for the coordinator to take more bytes.
/// It reads results as they come, so a long wait means it is gone.
const WRITE_STALL: Duration = Duration::from_secs(60);

/// Results queued for the writer: one being written, one ready, so the
/// session's loop waits (and computing pauses) when the network is the
/// bottleneck, as with the session's own queue.
const QUEUE: usize = 2;

#[derive(Debug)]
pub(crate) struct ResultsConnection {
    queue: mpsc::Sender<(v1::ChunkResult, Bytes)>,
    writer: AbortOnDropHandle<io::Result<()>>,
    /// Cancelled when the writer ends.
    ended: CancellationToken,
}

impl ResultsConnection {
    /// Opens the connection the coordinator at `address` offered this
    /// worker and claims it with `token`; its writer runs on `tasks`.
    pub(crate) async fn open(
        address: &str,
        worker_id: u64,
        token: Token,
        credential: Option<[u8; KEY_BYTES]>,
        tasks: &TaskTracker,
    ) -> io::Result<ResultsConnection> {
        let hello = Hello {
            purpose: Purpose::ChunkResults,
            id: worker_id,
            token,
            credential,
        };
        let opening = async {
            let mut stream = TcpStream::connect(peer::host_port(address)).await?;
            stream.set_nodelay(true)?;
            stream.write_all(&hello.encode()).await?;
            let mut answer = [0u8; 1];
            stream.read_exact(&mut answer).await?;
            if answer[0] == UNAUTHENTICATED {
                return Err(io::Error::other(
                    "the coordinator refused this worker's token on the results connection",
                ));
            }
            if answer[0] != ACCEPTED {
                return Err(io::Error::other("the coordinator refused the connection"));
            }
            Ok(stream)
        };
        let stream = tokio::time::timeout(OPEN_TIMEOUT, opening)
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        let (queue, results) = mpsc::channel(QUEUE);
        let ended = CancellationToken::new();
        let writer = tasks.spawn({
            let ended = ended.clone();
            async move {
                let written = write_results(stream, results).await;
                ended.cancel();
                written
            }
        });
        Ok(ResultsConnection {
            queue,
            writer: AbortOnDropHandle::new(writer),
            ended,
        })
    }

    /// Queues a result and its values; false if the connection broke (the
    /// reason comes from [`why_ended`](ResultsConnection::why_ended)).
    pub(crate) async fn send(&self, result: v1::ChunkResult, values: Bytes) -> bool {
        self.queue.send((result, values)).await.is_ok()
    }

    /// Cancelled when the connection has ended (broken, or closed).
    pub(crate) fn ended(&self) -> CancellationToken {
        self.ended.clone()
    }

    /// Why the connection ended, once [`ended`](ResultsConnection::ended).
    pub(crate) async fn why_ended(self) -> String {
        match self.writer.await {
            Ok(Ok(())) => "the results connection closed".to_owned(),
            Ok(Err(error)) => format!("the results connection broke: {error}"),
            Err(error) => format!("the results writer failed: {error}"),
        }
    }

    /// Sends everything queued and closes the connection, within
    /// `timeout`.
    pub(crate) async fn close(self, timeout: Duration) -> io::Result<()> {
        let ResultsConnection { queue, writer, .. } = self;
        drop(queue);
        match tokio::time::timeout(timeout, writer).await {
            Ok(Ok(written)) => written,
            Ok(Err(error)) => Err(io::Error::other(error)),
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        }
    }
}

async fn write_results(
    mut stream: TcpStream,
    mut results: mpsc::Receiver<(v1::ChunkResult, Bytes)>,
) -> io::Result<()> {
    while let Some((result, values)) = results.recv().await {
        let head = result_head(&result, values.len());
        for bytes in [head, values] {
            tokio::time::timeout(WRITE_STALL, stream.write_all(&bytes))
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        }
    }
    stream.shutdown().await
}
