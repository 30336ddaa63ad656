//! Running totals, for `farm workers`, `farm status` and tests.

/// What happened in the whole cluster since the coordinator started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub leases_granted: u64,
    /// Taken back because the worker's session could not take them: not
    /// counted as granted, and given to other workers without using up a
    /// try.
    pub leases_undelivered: u64,
    pub leases_expired: u64,
    pub leases_returned: u64,
    pub results_accepted: u64,
    /// Elements of the accepted results.
    pub elements_computed: u64,
    pub results_rejected_stale: u64,
    pub chunk_failures: u64,
    pub retries: u64,
    /// Second leases of chunks held by a straggler.
    pub backups_granted: u64,
    /// Chunks whose backup lease reported first.
    pub backups_won: u64,
    pub jobs_submitted: u64,
    pub jobs_finished: u64,
    pub jobs_failed: u64,
    pub jobs_cancelled: u64,
}

/// What happened to one job's chunks, for `farm status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobCounters {
    /// Every lease: first tries, retries and backups.
    pub leases_granted: u64,
    pub retries: u64,
    pub backups_granted: u64,
    pub backups_won: u64,
    pub results_rejected_stale: u64,
}
