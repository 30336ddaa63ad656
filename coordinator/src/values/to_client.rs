//! Writing a job's released values to its client's value connection.

use std::time::Duration;

use bytes::Bytes;
use farm_net::side_connection::ACCEPTED;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};

use super::ChunkValues;

/// Value batches (a chunk each) queued for the connection's writer: one
/// being written, one ready, as the gRPC stream's queue.
const WRITE_QUEUE: usize = 2;

/// Writes a job's values to its claimed connection on a task of its own,
/// so the job's task goes on taking released values while one is written.
/// Dropped before [`finish`](ValueWriter::finish), as when the job fails,
/// it closes the connection at once: the client stops waiting for values
/// and reads why in the job's stream.
#[derive(Debug)]
pub struct ValueWriter {
    queue: mpsc::Sender<ChunkValues>,
    task: AbortOnDropHandle<std::io::Result<()>>,
}

impl ValueWriter {
    /// Accepts `stream` (the one-byte answer) and starts writing to it on
    /// a task of `tasks`; a write that moves nothing for `stall` breaks the
    /// connection.
    // Only piped values (Linux) need `stall` here; writes of values in
    // memory are bounded by the caller's `send` and `finish`.
    #[cfg_attr(not(target_os = "linux"), allow(unused_variables))]
    pub fn start(mut stream: TcpStream, stall: Duration, tasks: &TaskTracker) -> ValueWriter {
        let (queue, mut batches) = mpsc::channel::<ChunkValues>(WRITE_QUEUE);
        let task = tasks.spawn(async move {
            stream.write_all(&[ACCEPTED]).await?;
            while let Some(batch) = batches.recv().await {
                match batch {
                    ChunkValues::Memory(payload) => {
                        write_pieces(&mut stream, payload.parts()).await?;
                    }
                    #[cfg(target_os = "linux")]
                    ChunkValues::Piped(piped) => piped.drain_into(&stream, stall).await?,
                }
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
    pub async fn send(&self, batch: ChunkValues, stall: Duration) -> bool {
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
