//! One session with the coordinator, from hello to drain or disconnect:
//! wires the coordinator's messages, the compute pool's answers, the
//! heartbeat and the drain signal to the lease bookkeeping ([`Leases`]),
//! and sends what it decides.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use farm_net::display::status_text;
use farm_net::transport::Connection;
use farm_net::wire::{Encoded, FrameSender, MessageReader};
use farm_proto::v1;
use farm_proto::v1::coordinator_message::Kind as Incoming;
use farm_proto::v1::worker_message::Kind as Outgoing;
use farm_wasm::Runtime;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::Status;
use tonic::body::Body;

use crate::chunks::{ChunkAnswer, batch_lost, compute_batch, failed_jobs};
use crate::compute::ComputePool;
use crate::config::WorkerConfig;
use crate::handshake::{self, Opened, SessionError};
use crate::leases::Leases;
use crate::modules::{self, Modules};
use crate::reports::{self, Report};
use crate::results_connection::ResultsConnection;

/// How long to wait, after our last message, for the coordinator to close
/// the session (proof it read everything).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How a session that was established ended.
#[derive(Debug)]
pub(crate) enum SessionEnd {
    /// We drained: every lease was reported or handed back.
    Drained,
    /// The session broke; reconnect.
    Lost(String),
}

/// The batch on the compute pool.
type Computing = Pin<Box<dyn Future<Output = Vec<ChunkAnswer>> + Send>>;

/// Opens a session and serves it until it drains or breaks. Tasks it
/// starts (the results connection's writer) go on `tasks`.
pub(crate) async fn run(
    connection: Connection,
    config: &WorkerConfig,
    pool: &Arc<ComputePool>,
    runtime: &Arc<Runtime>,
    drain: &CancellationToken,
    connected: &watch::Sender<bool>,
    tasks: &TaskTracker,
) -> Result<SessionEnd, SessionError> {
    // The results connection presents the session's token.
    let credential = connection.token().map(|token| *token.bytes());
    let Opened {
        outbox,
        inbound,
        welcome,
    } = handshake::open(
        connection,
        &config.coordinator,
        &config.name,
        pool.threads(),
    )
    .await?;
    connected.send_replace(true);
    tracing::info!(
        worker_id = welcome.worker_id,
        coordinator = %config.coordinator,
        threads = pool.threads(),
        "connected"
    );
    let results = open_results_connection(config, &welcome, credential, tasks).await;
    let session = Session {
        config,
        pool,
        runtime,
        outbox,
        results,
        leases: Leases::new(config.prefetch),
        modules: Modules::default(),
        computing: None,
    };
    Ok(session.serve(inbound, &welcome, drain).await)
}

/// The results connection the welcome offered, if it did and it opens;
/// otherwise every result goes in the session.
async fn open_results_connection(
    config: &WorkerConfig,
    welcome: &v1::Welcome,
    credential: Option<[u8; farm_net::auth::KEY_BYTES]>,
    tasks: &TaskTracker,
) -> Option<ResultsConnection> {
    if welcome.results_token.is_empty() {
        return None;
    }
    let Ok(token) = welcome.results_token.as_ref().try_into() else {
        tracing::warn!(
            len = welcome.results_token.len(),
            "ignoring a results token of the wrong length; results go in the session"
        );
        return None;
    };
    let opened = ResultsConnection::open(
        &config.coordinator,
        welcome.worker_id,
        token,
        credential,
        tasks,
    );
    match opened.await {
        Ok(connection) => Some(connection),
        Err(error) => {
            tracing::warn!(%error, "cannot open a results connection; results go in the session");
            None
        }
    }
}

struct Session<'a> {
    config: &'a WorkerConfig,
    pool: &'a Arc<ComputePool>,
    runtime: &'a Arc<Runtime>,
    outbox: FrameSender,
    /// Where results with values go, if the coordinator offered it.
    results: Option<ResultsConnection>,
    leases: Leases,
    /// WebAssembly modules this session was sent.
    modules: Modules,
    computing: Option<Computing>,
}

impl Session<'_> {
    async fn serve(
        mut self,
        mut inbound: MessageReader<Body>,
        welcome: &v1::Welcome,
        drain: &CancellationToken,
    ) -> SessionEnd {
        let heartbeat_every =
            Duration::from_millis(u64::from(welcome.heartbeat_interval_ms.max(50)));
        let mut heartbeat = tokio::time::interval(heartbeat_every);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut drain_deadline: Option<Instant> = None;
        // Never cancelled when there is no results connection.
        let results_ended = self
            .results
            .as_ref()
            .map(ResultsConnection::ended)
            .unwrap_or_default();
        if !drain.is_cancelled() {
            self.pull_more().await;
        }
        loop {
            if self.leases.is_drained() {
                return self.close(inbound).await;
            }
            let grace_over = async {
                match drain_deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                message = inbound.message::<v1::CoordinatorMessage>() => match message {
                    Ok(Some(message)) => self.receive(message).await,
                    Ok(None) => return SessionEnd::Lost("the coordinator closed the session".to_owned()),
                    Err(status) => return SessionEnd::Lost(status_text(&status)),
                },
                answers = async {
                    match self.computing.as_mut() {
                        Some(computing) => computing.await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.computing = None;
                    let ended = self.leases.end_batch();
                    let failed = self.leases.drop_jobs(&failed_jobs(&answers));
                    self.start_next();
                    let pull = self.leases.top_up();
                    self.report(reports::report(answers, &ended.revoked, pull)).await;
                    if !failed.is_empty() {
                        // After the failure that fails their job.
                        self.send(Outgoing::Returned(v1::ReturnLeases { tokens: failed })).await;
                    }
                }
                _ = heartbeat.tick() => self.send(Outgoing::Heartbeat(v1::Heartbeat {})).await,
                () = results_ended.cancelled() => {
                    let reason = match self.results.take() {
                        Some(results) => results.why_ended().await,
                        None => "the results connection ended".to_owned(),
                    };
                    return SessionEnd::Lost(reason);
                }
                () = drain.cancelled(), if !self.leases.is_draining() => {
                    drain_deadline = Some(Instant::now() + self.config.drain_grace);
                    self.begin_drain().await;
                }
                () = grace_over => {
                    tracing::warn!(grace = ?self.config.drain_grace, "the running chunks did not finish within the drain grace; handing them back");
                    self.computing = None;
                    let unfinished = self.leases.end_batch().wanted;
                    if !unfinished.is_empty() {
                        self.send(Outgoing::Returned(v1::ReturnLeases { tokens: unfinished })).await;
                    }
                    return self.close(inbound).await;
                }
            }
        }
    }

    async fn receive(&mut self, message: v1::CoordinatorMessage) {
        match message.kind {
            Some(Incoming::Grant(grant)) => {
                let granted = self.leases.grant(grant.leases);
                if granted.without_token > 0 {
                    tracing::warn!(
                        leases = granted.without_token,
                        "ignoring leases without a token"
                    );
                }
                if !granted.hand_back.is_empty() {
                    let tokens = granted.hand_back;
                    self.send(Outgoing::Returned(v1::ReturnLeases { tokens }))
                        .await;
                }
                self.start_next();
                // Tiny chunks: hold more of them.
                self.pull_more().await;
            }
            Some(Incoming::Revoke(revoke)) => {
                self.leases.revoke(&revoke.tokens);
                self.pull_more().await;
            }
            Some(Incoming::Module(module)) => self.load_module(module).await,
            Some(Incoming::Ping(ping)) => {
                // At once: the coordinator times our round trip with it,
                // and holds us enough work to cover it.
                let sent_us = ping.sent_us;
                self.send(Outgoing::Pong(v1::Pong { sent_us })).await;
            }
            Some(Incoming::Welcome(_)) | None => {
                tracing::debug!("ignoring an unexpected coordinator message");
            }
        }
    }

    /// Checks and compiles a module off the async threads. Its leases come
    /// after it in the session, so they wait for it.
    async fn load_module(&mut self, module: v1::WasmModule) {
        let runtime = Arc::clone(self.runtime);
        let loaded =
            match tokio::task::spawn_blocking(move || modules::load(&runtime, &module)).await {
                Ok(loaded) => loaded,
                Err(error) => {
                    tracing::error!(%error, "loading a module panicked");
                    None
                }
            };
        if let Some((hash, loaded)) = loaded {
            let leases = &self.leases;
            self.modules
                .insert(hash, loaded, |hash| leases.names_module(&hash.0));
        }
    }

    async fn pull_more(&mut self) {
        let slots = self.leases.top_up();
        if slots > 0 {
            self.send(Outgoing::Pull(v1::PullRequest { slots })).await;
        }
    }

    /// Starts the next batch of queued leases on the compute pool, if the
    /// pool is free.
    fn start_next(&mut self) {
        let Some(batch) = self.leases.next_batch() else {
            return;
        };
        let modules = self.modules.for_batch(&batch);
        let leases = &self.leases;
        self.modules
            .drop_unneeded(|hash| leases.names_module(&hash.0));
        let pool = Arc::clone(self.pool);
        let faults = self.config.faults.clone();
        self.computing = Some(Box::pin(async move {
            let leases = batch.clone();
            match pool
                .run(move || compute_batch(&leases, &modules, &faults))
                .await
            {
                Ok(answers) => answers,
                // The pool lost the task: every lease of the batch failed.
                Err(err) => batch_lost(batch, &err.to_string()),
            }
        }));
    }

    /// Sends a finished batch's report.
    async fn report(&mut self, report: Report) {
        let Report {
            failures,
            alone,
            rest,
        } = report;
        for failure in failures {
            tracing::warn!(token = ?failure.token, error = %failure.message, "chunk failed");
            self.send(Outgoing::Failure(failure)).await;
        }
        for mut result in alone {
            match &self.results {
                Some(connection) => {
                    let values = std::mem::take(&mut result.values_le);
                    // A broken connection ends the session (see `serve`),
                    // and the result's lease goes to another worker.
                    let _ = connection.send(result, values).await;
                }
                None => self.send(Outgoing::Result(result)).await,
            }
        }
        if let Some(message) = rest {
            self.send(message).await;
        }
    }

    async fn begin_drain(&mut self) {
        tracing::info!(
            queued = self.leases.queued(),
            running = self.leases.running(),
            "draining: finishing the running chunks and handing back the rest"
        );
        let tokens = self.leases.drain();
        self.send(Outgoing::Drain(v1::DrainNotice {})).await;
        if !tokens.is_empty() {
            self.send(Outgoing::Returned(v1::ReturnLeases { tokens }))
                .await;
        }
    }

    async fn send(&mut self, kind: Outgoing) {
        // A failed send means the session is gone; the inbound side of the
        // loop sees that and ends the session.
        let _ = self.outbox.send(encode(kind)).await;
    }

    /// Ends our side of the session and waits for the coordinator to close
    /// its side, which it does only after reading everything we sent.
    async fn close(self, mut inbound: MessageReader<Body>) -> SessionEnd {
        // Results first: the coordinator takes the session's end to mean
        // that everything was sent.
        if let Some(results) = self.results
            && let Err(error) = results.close(CLOSE_TIMEOUT).await
        {
            tracing::warn!(%error, "results may be lost: the results connection did not close cleanly");
        }
        drop(self.outbox);
        let closed =
            async { while let Ok(Some(_)) = inbound.message::<v1::CoordinatorMessage>().await {} };
        if tokio::time::timeout(CLOSE_TIMEOUT, closed).await.is_err() {
            tracing::warn!("the coordinator did not close the session within 5 s");
        }
        SessionEnd::Drained
    }
}

/// A message for the coordinator; a chunk's values travel as their own
/// frame, never copied. An error (a message over the size limit) fails the
/// session.
pub(crate) fn encode(kind: Outgoing) -> Result<Encoded, Status> {
    match kind {
        Outgoing::Result(result) => Encoded::chunk_result(result),
        kind => Encoded::message(&v1::WorkerMessage { kind: Some(kind) }),
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
