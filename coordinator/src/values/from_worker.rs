//! Reading a worker's results connection: each result's head decoded,
//! its values left in the kernel (spliced into pipes) where the system
//! allows, read into memory otherwise.

use std::io;
use std::time::Duration;

use farm_net::side_connection::{MAX_RESULT_HEAD_BYTES, MAX_RESULT_VALUES_BYTES};
use farm_net::wire::Payload;
use farm_proto::v1;
use prost::Message;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::ChunkValues;

/// Why a results connection cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("the results connection broke: {0}")]
    Io(#[from] io::Error),
    #[error("the results connection sent {0}")]
    Protocol(String),
}

/// One result as it came off the connection.
#[derive(Debug)]
pub struct ReceivedResult {
    /// The result, its `values_le` empty.
    pub result: v1::ChunkResult,
    pub values: ChunkValues,
}

/// Reads the next result. `Ok(None)` when the worker closed the
/// connection between results; waits as long as it takes for a result to
/// begin, then at most `stall` for each further step of it.
pub async fn next_result(
    stream: &mut TcpStream,
    stall: Duration,
) -> Result<Option<ReceivedResult>, ResultsError> {
    let mut head_len = [0u8; 4];
    if stream.read(&mut head_len[..1]).await? == 0 {
        return Ok(None);
    }
    within(stall, stream.read_exact(&mut head_len[1..])).await?;
    let head_len = u32::from_le_bytes(head_len);
    if head_len > MAX_RESULT_HEAD_BYTES {
        return Err(ResultsError::Protocol(format!(
            "a result of {head_len} bytes (at most {MAX_RESULT_HEAD_BYTES})"
        )));
    }
    let mut head = vec![0u8; head_len as usize + 8];
    within(stall, stream.read_exact(&mut head)).await?;
    let (encoded, values_len) = head.split_at(head_len as usize);
    let result = v1::ChunkResult::decode(encoded).map_err(|error| {
        ResultsError::Protocol(format!("a result that does not decode: {error}"))
    })?;
    let values_len = u64::from_le_bytes(values_len.try_into().unwrap_or_default());
    if values_len > MAX_RESULT_VALUES_BYTES {
        return Err(ResultsError::Protocol(format!(
            "{values_len} bytes of values in one result (at most {MAX_RESULT_VALUES_BYTES})"
        )));
    }
    // Bounded just above, so it fits.
    let values_len = usize::try_from(values_len).unwrap_or(usize::MAX);
    let values = receive_values(stream, values_len, stall).await?;
    Ok(Some(ReceivedResult { result, values }))
}

/// The next `len` bytes: in pipes if the system gives enough of them,
/// otherwise in memory.
async fn receive_values(
    stream: &mut TcpStream,
    len: usize,
    stall: Duration,
) -> Result<ChunkValues, ResultsError> {
    #[cfg(target_os = "linux")]
    let (mut memory, len) = {
        let filled = super::pipes::fill(stream, len, stall).await?;
        if filled.left == 0 {
            return Ok(ChunkValues::Piped(filled.piped));
        }
        (filled.piped.read_all()?, filled.left)
    };
    #[cfg(not(target_os = "linux"))]
    let mut memory = Vec::new();
    let start = memory.len();
    memory.resize(start + len, 0);
    within(stall, stream.read_exact(&mut memory[start..])).await?;
    Ok(ChunkValues::Memory(Payload::from(bytes::Bytes::from(
        memory,
    ))))
}

async fn within<T>(
    stall: Duration,
    read: impl Future<Output = io::Result<T>>,
) -> Result<T, ResultsError> {
    match tokio::time::timeout(stall, read).await {
        Ok(read) => Ok(read?),
        Err(_) => Err(ResultsError::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "nothing came for {} s in the middle of a result",
                stall.as_secs()
            ),
        ))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use farm_net::side_connection::result_head;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    const STALL: Duration = Duration::from_secs(10);

    async fn connected() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let connecting = TcpStream::connect(listener.local_addr().unwrap());
        let (accepted, connected) = tokio::join!(listener.accept(), connecting);
        (connected.unwrap(), accepted.unwrap().0)
    }

    fn result(min: f64) -> v1::ChunkResult {
        v1::ChunkResult {
            token: Some(v1::LeaseToken {
                job_id: 1,
                chunk_index: 2,
                attempt: 3,
            }),
            min,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn results_arrive_with_their_values_then_the_end() {
        let (mut worker, mut inlet) = connected().await;
        let values: Vec<u8> = (0..3_000_000).map(|i| (i % 251) as u8).collect();
        worker
            .write_all(&result_head(&result(1.0), values.len()))
            .await
            .unwrap();
        worker.write_all(&values).await.unwrap();
        worker
            .write_all(&result_head(&result(2.0), 0))
            .await
            .unwrap();
        drop(worker);

        let first = next_result(&mut inlet, STALL).await.unwrap().unwrap();
        assert_eq!(first.result, result(1.0));
        assert_eq!(first.values.into_memory().unwrap().joined(), values);
        let second = next_result(&mut inlet, STALL).await.unwrap().unwrap();
        assert_eq!(second.result, result(2.0));
        assert!(second.values.is_empty());
        assert!(next_result(&mut inlet, STALL).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_result_cut_short_or_oversized_is_an_error() {
        let (mut worker, mut inlet) = connected().await;
        worker
            .write_all(&result_head(&result(1.0), 100))
            .await
            .unwrap();
        worker.write_all(&[0u8; 50]).await.unwrap();
        drop(worker);
        let error = next_result(&mut inlet, STALL).await.unwrap_err();
        assert!(matches!(error, ResultsError::Io(_)), "{error}");

        let (mut worker, mut inlet) = connected().await;
        worker.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
        let error = next_result(&mut inlet, STALL).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "the results connection sent a result of 4294967295 bytes (at most 4194304)"
        );
    }
}
