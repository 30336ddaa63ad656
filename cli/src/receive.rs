//! Receiving a job's values: [`OutputWriter`] writes them to the output on
//! a thread of its own, whether they come in the job's stream (batches
//! the client hands it) or on a value connection of their own, which it
//! opens when the coordinator offers one (see
//! [`farm_net::side_connection`]). It knows nothing of jobs beyond
//! that: the client and `farm submit` drive it.

use std::io::Read;
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use farm_net::auth::KEY_BYTES;
use farm_net::peer;
use farm_net::side_connection::{ACCEPTED, Hello, Purpose, Token, UNAUTHENTICATED};
use farm_net::transport::CONNECT_TIMEOUT;
use farm_net::wire::Payload;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::output::{OutputError, Sink};

/// Value batches (a chunk each, 8 MiB) waiting for the output writer:
/// enough to keep it busy while the next one is decoded.
const WRITE_QUEUE: usize = 2;

/// How long a value connection may be silent once values flow on it. The
/// job's stream tells a dead coordinator sooner (the writer is stopped
/// then); this bounds a connection that hangs after the job finished.
const VALUE_SILENCE_TIMEOUT: Duration = Duration::from_secs(300);

/// What reaches the writer thread.
#[derive(Debug)]
enum WriterInput {
    /// The next values, from the job's stream.
    Batch(Payload),
    /// A value connection, its hello sent: if the coordinator accepts it,
    /// it carries all the values still due.
    Connection(TcpStream),
}

/// Writes a job's values to its output on a thread of its own, so disk or
/// pipe writes never block the runtime.
#[derive(Debug)]
pub struct OutputWriter {
    queue: mpsc::Sender<WriterInput>,
    thread: std::thread::JoinHandle<Result<(), OutputError>>,
    /// Opening the value connection, if one was offered.
    opening: Mutex<Option<AbortOnDropHandle<()>>>,
    /// The value connection being read, so it can be shut when the job
    /// fails: that ends the thread's blocking read.
    connection: Arc<Mutex<Option<TcpStream>>>,
    /// Cancelled when the thread ends, however it ends.
    stopped: CancellationToken,
}

impl OutputWriter {
    pub fn start(mut sink: Sink) -> OutputWriter {
        let (queue, mut incoming) = mpsc::channel::<WriterInput>(WRITE_QUEUE);
        let stopped = CancellationToken::new();
        let stopped_guard = stopped.clone().drop_guard();
        let thread = std::thread::spawn(move || {
            // Dropped however the thread ends, a panic included.
            let _stopped = stopped_guard;
            while let Some(next) = incoming.blocking_recv() {
                match next {
                    WriterInput::Batch(batch) => sink.write_pieces(batch.parts())?,
                    WriterInput::Connection(mut connection) => {
                        if accepted(&mut connection) {
                            sink.copy_from(&mut connection)?;
                        }
                    }
                }
            }
            // Only a complete output is renamed into place; `finish`
            // reports a short one.
            sink.finish()
        });
        OutputWriter {
            queue,
            thread,
            opening: Mutex::new(None),
            connection: Arc::new(Mutex::new(None)),
            stopped,
        }
    }

    /// Completes once the writer has stopped. Before [`finish`] that means
    /// it failed (a full disk, a reader of stdout that left): the job must
    /// end at once, whichever route its values take. Values on a value
    /// connection never pass through [`batch`], so without this the job's
    /// stream would not notice.
    ///
    /// [`finish`]: OutputWriter::finish
    /// [`batch`]: OutputWriter::batch
    pub async fn stopped(&self) {
        self.stopped.cancelled().await;
    }

    /// Queues the next values from the job's stream; false if the writer
    /// stopped (its error comes from [`finish`](OutputWriter::finish)).
    pub async fn batch(&self, batch: Payload) -> bool {
        self.queue.send(WriterInput::Batch(batch)).await.is_ok()
    }

    /// Opens the value connection the coordinator at `address` offered
    /// for `job_id`, in the background. If it cannot be opened, the
    /// coordinator sends the values in the job's stream instead.
    pub fn open_connection(
        &self,
        address: &str,
        job_id: u64,
        token: Token,
        credential: Option<[u8; KEY_BYTES]>,
    ) {
        let queue = self.queue.clone();
        let connection = self.connection.clone();
        let address = peer::host_port(address).to_owned();
        let opening = tokio::spawn(async move {
            let hello = Hello {
                purpose: Purpose::JobValues,
                id: job_id,
                token,
                credential,
            };
            match open(&address, hello).await {
                Ok(stream) => {
                    if let Ok(shutter) = stream.try_clone() {
                        *lock(&connection) = Some(shutter);
                    }
                    let _ = queue.send(WriterInput::Connection(stream)).await;
                }
                Err(error) => tracing::warn!(
                    %error,
                    "cannot open a value connection to {address}; the values will come in the job's stream"
                ),
            }
        });
        *lock(&self.opening) = Some(AbortOnDropHandle::new(opening));
    }

    /// Waits for the writer to write everything it was given. When the
    /// job did not finish, the value connection is shut first, and the
    /// writer's complaint that the output is short is not news, but its
    /// own failures (a full disk, a closed pipe) are.
    pub async fn finish(self, job_finished: bool) -> Result<(), OutputError> {
        let OutputWriter {
            queue,
            thread,
            opening,
            connection,
            stopped: _,
        } = self;
        if !job_finished {
            drop(lock(&opening).take());
            if let Some(connection) = lock(&connection).take() {
                let _ = connection.shutdown(std::net::Shutdown::Both);
            }
        }
        drop(queue);
        let joined = tokio::task::spawn_blocking(move || thread.join()).await;
        let Ok(Ok(written)) = joined else {
            return Err(OutputError::WriterCrashed);
        };
        match written {
            Err(OutputError::WrongCount { .. } | OutputError::ValueConnection { .. })
                if !job_finished =>
            {
                Ok(())
            }
            other => other,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Connects to `address` and sends `hello`; the stream comes back
/// blocking, for the writer thread.
async fn open(address: &str, hello: Hello) -> std::io::Result<TcpStream> {
    let connect = tokio::net::TcpStream::connect(address);
    let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    stream.set_nodelay(true)?;
    let hello = hello.encode();
    tokio::time::timeout(CONNECT_TIMEOUT, stream.write_all(&hello))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// Whether the coordinator accepted the connection. It answers only when
/// the job's first values are ready, which may take as long as computing
/// a chunk, so this waits without a timeout of its own: a job that fails
/// meanwhile has its connection shut ([`OutputWriter::finish`]), and one
/// that finishes was accepted. Once values flow, silence is bounded.
fn accepted(connection: &mut TcpStream) -> bool {
    let mut answer = [0u8; 1];
    let answered = connection.read_exact(&mut answer).is_ok() && answer[0] == ACCEPTED;
    if answer[0] == UNAUTHENTICATED {
        tracing::warn!(
            "the coordinator refused this client's token on the value connection; the values come in the job's stream"
        );
    }
    answered
        && connection
            .set_read_timeout(Some(VALUE_SILENCE_TIMEOUT))
            .is_ok()
}
