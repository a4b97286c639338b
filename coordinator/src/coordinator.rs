//! The coordinator: accepts jobs, plans them into tasks, keeps their state in the [`StateStore`],
//! dispatches ready tasks on the [`WorkQueue`] in priority order and fairly between jobs, stores blobs,
//! follows the workers' reports and aggregates progress.
//!
//! Everything that must survive a restart lives in the state store (jobs, tasks, worker
//! registrations) and the queue (published tasks); a new coordinator picks up where the old one
//! stopped. Live progress (phase and fraction of running tasks) is kept in memory only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use lathe_proto::v1;
use prost::Message as _;
use tokio::sync::{Notify, broadcast};
use tracing::Instrument;

use crate::blob::BlobStore;
use crate::error::{Error, Result};
use crate::graph;
use crate::metrics::CoordinatorMetrics;
use crate::observed::{ObservedQueue, ObservedState};
use crate::plan::{Plan, plan_job};
use crate::queue::WorkQueue;
use crate::record::{
    self, ACTIVE_PREFIX, COUNT_SHARDS, JOBS_PREFIX, JobRecord, JobState, SUBMITTING_PREFIX,
    TaskCounts, TaskRecord, TaskState, WORKERS_PREFIX, WorkerRecord, active_key, blob_ref_key,
    by_state_key, by_state_prefix, by_state_root, counts_key, counts_prefix, decode, encode,
    finished_key, idempotency_key, job_key, qc_failed_key, qc_failed_prefix, submitting_key,
    task_id, task_key, task_of_by_state_key, tasks_prefix, worker_key,
};

mod batch;
mod dispatch;
mod operations;
use crate::state::{Expect, LeaseId, MAX_PAGE, MAX_TRANSACTION_OPS, StateStore, Transaction};
mod reconcile;
mod watch;
pub use operations::Deleted;
pub use reconcile::Reconciled;
pub use watch::JobWatch;

/// How the coordinator treats failures and fills the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoordinatorSettings {
    /// Attempts a task gets before it is failed for good.
    pub max_attempts: u32,
    /// Tasks of one job a worker may fail in a row before it is blocklisted for that job.
    pub blocklist_after: u32,
    /// How often the dispatcher looks for ready tasks when nothing wakes it.
    pub dispatch_interval: Duration,
    /// Tasks kept on the queue beyond the workers' free slots, so a worker finishing one finds the
    /// next at once.
    pub queue_ahead: u32,
    /// Finished jobs older than this are deleted with their blobs, unless pinned; `None` keeps
    /// them.
    pub retain: Option<Duration>,
    /// A stored blob that no job refers to is removed once it is this old (a client uploads
    /// sources before it submits, and a worker a master before it completes its task).
    pub unreferenced_blob_grace: Duration,
    /// How often retention and the sweep of unreferenced blobs run.
    pub maintenance_interval: Duration,
    /// How often the reconciler compares the tasks' states with what the queue holds and which
    /// workers are registered (it also runs on start).
    pub reconcile_interval: Duration,
    /// The largest blob an upload may store, bytes: an upload is refused as soon as it would pass
    /// this, before the chunk that would is written.
    pub max_upload_bytes: u64,
    /// How long one attempt of a task may run, from its `StartTask` to its completion: the
    /// reconciler ends an older attempt of a worker that is still registered (a hung render) as
    /// a failed attempt. Longer than the workers' own limit on the render
    /// ([`DEFAULT_TASK_TIME_LIMIT`]), which normally fails the attempt first.
    pub task_time_limit: Duration,
    /// The longest a unary gRPC call may take, and the longest a streaming call may take to
    /// answer (see [`crate::deadlines`]).
    pub call_timeout: Duration,
    /// The longest an upload's stream may go without a message before the call is ended (see
    /// [`crate::deadlines`]).
    pub stream_idle_timeout: Duration,
}

/// The default [`CoordinatorSettings::max_upload_bytes`], 64 GiB: a 6-hour source at 192 kHz
/// with 8 channels of 32-bit samples (66.4 GB) fits.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 64 << 30;

/// How long a worker lets a render run by default (`lathe-worker --task-time-limit-s`), one
/// hour: the engine masters at about 100x real time, so the longest source a worker accepts (6
/// hours) takes minutes, and an hour is a render gone wrong (a stalled disk, a machine far too
/// slow), not a long track.
pub const DEFAULT_TASK_TIME_LIMIT: Duration = Duration::from_secs(3_600);

/// What the coordinator's [`CoordinatorSettings::task_time_limit`] adds to the workers' limit on
/// the render by default, half an hour: an attempt also fetches its sources and uploads its
/// masters (64 GiB each way at worst, some 10 minutes on a 1 Gbit/s network), so that the
/// worker's own limit, which reports a clear error, always comes first.
pub const TASK_TIME_LIMIT_GRACE: Duration = Duration::from_secs(1_800);

impl Default for CoordinatorSettings {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            blocklist_after: 3,
            dispatch_interval: Duration::from_millis(500),
            queue_ahead: 1,
            retain: None,
            unreferenced_blob_grace: Duration::from_secs(6 * 3600),
            maintenance_interval: Duration::from_secs(60),
            reconcile_interval: Duration::from_secs(10),
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            task_time_limit: DEFAULT_TASK_TIME_LIMIT + TASK_TIME_LIMIT_GRACE,
            call_timeout: crate::deadlines::DEFAULT_CALL_TIMEOUT,
            stream_idle_timeout: crate::deadlines::DEFAULT_STREAM_IDLE_TIMEOUT,
        }
    }
}

impl CoordinatorSettings {
    /// The queue rules that go with these settings: redelivery after `ack_wait`, and a delivery limit
    /// well above `max_attempts`, because hand-backs (a blocklisted worker, a worker draining) count
    /// as deliveries too. The coordinator counts real attempts itself; the queue's limit is the
    /// backstop reported through [`WorkQueue::exhausted`].
    pub fn queue_settings(&self, ack_wait: Duration) -> crate::queue::QueueSettings {
        crate::queue::QueueSettings {
            ack_wait,
            max_deliver: self.max_attempts.saturating_mul(4).saturating_add(4),
        }
    }
}

/// How many times a compare-and-swap transition is retried against concurrent writers.
const SWAP_ATTEMPTS: u32 = 20;

/// The longest phase name a progress report may carry, bytes (the engine's are a word).
const MAX_PHASE_BYTES: usize = 32;

/// The most bytes of records one submit transaction writes (etcd refuses requests over 1.5 MiB).
const SUBMIT_BATCH_BYTES: usize = 512 * 1024;

/// What changed, as [`Coordinator::subscribe`] reports it.
#[derive(Debug, Clone)]
pub enum Change {
    /// A job's record changed (its state, priority, blocklist or pin).
    Job(String),
    /// A task's record changed (its job's counts may have too): the record as written.
    Task(Arc<TaskRecord>),
    /// A running task reported its progress.
    Progress {
        /// The task.
        task_id: String,
        /// Its phase.
        phase: String,
        /// How much of the task is done, 0 to 1.
        fraction: f64,
    },
}

impl Change {
    /// The job it concerns.
    pub fn job_id(&self) -> &str {
        match self {
            Self::Job(job_id) => job_id,
            Self::Task(task) => &task.job_id,
            Self::Progress { task_id, .. } => record::job_of_task(task_id).unwrap_or_default(),
        }
    }
}

/// A page of a job's tasks, and the task id to read after for the next one.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskPage {
    /// The tasks, in task order.
    pub tasks: Vec<TaskRecord>,
    /// The last task's id when more follow; `None` at the end.
    pub next_after: Option<String>,
}

/// Whose fault a failed attempt was, as the worker reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The task's input (a source that cannot be decoded, is empty or breaks a profile limit):
    /// any worker would fail the same way.
    Input,
    /// The worker's (a crash, a full disk, a timeout, a lost connection): another try may work.
    Worker,
}

/// What a worker should do with a delivery, from [`Coordinator::start_task`].
#[derive(Debug, Clone, PartialEq)]
pub enum StartVerdict {
    /// Run it: the attempt's token and the task as stored.
    Run(Box<Attempt>),
    /// Acknowledge and drop the message; the reason says why.
    Drop(String),
    /// Hand it back for another worker.
    HandBack(String),
}

/// An attempt a worker holds: the token every later call about the task presents, and the task
/// as the coordinator stores it (which the worker runs, whatever the queue message said).
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// The attempt's token (only its hash is stored).
    pub token: String,
    /// The task.
    pub task: v1::Task,
}

impl StartVerdict {
    /// The attempt, when the verdict is to run.
    pub fn attempt(self) -> Option<Attempt> {
        match self {
            Self::Run(attempt) => Some(*attempt),
            _ => None,
        }
    }

    /// True when the verdict is to run.
    pub fn is_run(&self) -> bool {
        matches!(self, Self::Run(_))
    }
}

/// A worker's call about the attempt it holds: who it is and the attempt's token.
#[derive(Debug, Clone, Copy)]
pub struct AttemptCall<'a> {
    /// The task.
    pub task_id: &'a str,
    /// The worker (its certificate's name on a farm with TLS).
    pub worker_id: &'a str,
    /// The token [`Coordinator::start_task`] gave the attempt.
    pub token: &'a str,
}

impl AttemptCall<'_> {
    /// True when `task` is held by this call's attempt: started by this worker, with this token.
    fn holds(&self, task: &TaskRecord) -> bool {
        task.worker_id == self.worker_id
            && crate::auth::attempt_token_matches(self.token, &task.attempt_token_hash)
    }

    /// The refusal of a call whose attempt does not hold `task`, logged.
    fn refused(&self, what: &str, task: &TaskRecord) -> Error {
        tracing::warn!(
            task = %self.task_id,
            worker = %self.worker_id,
            holder = %task.worker_id,
            attempts = task.attempts,
            "{what} refused: not the attempt that holds the task"
        );
        Error::PermissionDenied(format!(
            "{what} of task {}: worker {} does not hold its current attempt",
            self.task_id, self.worker_id
        ))
    }
}

/// A worker's registration disappears this long after its last heartbeat (workers beat every
/// 2 s).
pub const WORKER_LEASE_TTL: Duration = Duration::from_secs(10);

/// Workers one coordinator keeps leases for.
const MAX_WORKERS: usize = 10_000;

/// How long `/readyz` waits for the state store and the work queue.
pub const READY_PROBE_WAIT: Duration = Duration::from_secs(2);

/// The key `/readyz` reads (never written): any answer shows the state store is up.
const READY_PROBE_KEY: &str = "ready-probe";

/// The coordinator's state and logic, shared by its gRPC services and its background loops.
#[derive(Clone)]
pub struct Coordinator {
    inner: Arc<Inner>,
}

struct Inner {
    queue: Arc<dyn WorkQueue>,
    state: Arc<dyn StateStore>,
    blobs: Arc<dyn BlobStore>,
    settings: CoordinatorSettings,
    /// Live progress of running tasks: task id -> (phase, fraction).
    progress: Mutex<HashMap<String, (String, f64)>>,
    /// What changed, for watchers.
    changes: broadcast::Sender<Change>,
    /// Wakes the dispatcher early (a job arrived, a task finished).
    dispatch: Notify,
    next_id: AtomicU64,
    /// Blobs removed so far: a submission re-checks its blobs only if one was removed while it
    /// was being stored.
    blobs_removed: AtomicU64,
    /// Where the sweep of unreferenced blobs goes on from.
    sweep_cursor: Mutex<Option<crate::blob::Digest>>,
    /// Where the dispatcher's next look at each job's pending index starts.
    pending_floors: Mutex<dispatch::PendingFloors>,
    /// What `/metrics` reports.
    metrics: Arc<CoordinatorMetrics>,
    /// Client tokens verified lately.
    tokens: crate::auth::TokenCache,
    /// The lease this coordinator holds for each registered worker.
    worker_leases: Mutex<HashMap<String, LeaseId>>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl Coordinator {
    /// A coordinator on these stores; call [`run`](Self::run) to start its background loops.
    /// Every failed call to the queue or the state store is counted in its metrics.
    pub fn new(
        queue: Arc<dyn WorkQueue>,
        state: Arc<dyn StateStore>,
        blobs: Arc<dyn BlobStore>,
        settings: CoordinatorSettings,
    ) -> Self {
        let (changes, _) = broadcast::channel(1024);
        let metrics = Arc::new(CoordinatorMetrics::new());
        Self {
            inner: Arc::new(Inner {
                queue: Arc::new(ObservedQueue::new(queue, Arc::clone(&metrics))),
                state: Arc::new(ObservedState::new(state, Arc::clone(&metrics))),
                blobs,
                settings,
                progress: Mutex::new(HashMap::new()),
                changes,
                dispatch: Notify::new(),
                next_id: AtomicU64::new(0),
                blobs_removed: AtomicU64::new(0),
                sweep_cursor: Mutex::new(None),
                pending_floors: Mutex::new(dispatch::PendingFloors::default()),
                metrics,
                tokens: crate::auth::TokenCache::default(),
                worker_leases: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Its metrics.
    pub fn metrics(&self) -> &CoordinatorMetrics {
        &self.inner.metrics
    }

    /// Why the coordinator cannot work now (its state store or work queue does not answer within
    /// [`READY_PROBE_WAIT`]), or `None` when it can: what `/readyz` reports.
    pub async fn not_ready(&self) -> Option<String> {
        let state = tokio::time::timeout(READY_PROBE_WAIT, self.inner.state.get(READY_PROBE_KEY));
        match state.await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Some(format!("the state store: {error}")),
            Err(_) => return Some("the state store does not answer".to_owned()),
        }
        match tokio::time::timeout(READY_PROBE_WAIT, self.inner.queue.depth()).await {
            Ok(Ok(_)) => None,
            Ok(Err(error)) => Some(format!("the work queue: {error}")),
            Err(_) => Some("the work queue does not answer".to_owned()),
        }
    }

    /// The blob store.
    pub fn blobs(&self) -> &dyn BlobStore {
        self.inner.blobs.as_ref()
    }

    /// The state store (the token records the services check live there too).
    pub fn state(&self) -> &dyn StateStore {
        self.inner.state.as_ref()
    }

    /// The client that presented `token`: its name and role, if the token is valid.
    pub async fn authenticate(&self, token: &str) -> Result<crate::auth::Caller> {
        self.inner
            .tokens
            .authenticate(self.inner.state.as_ref(), token)
            .await
    }

    /// Who owns job `job_id` (the name of the token that submitted it).
    pub async fn job_owner(&self, job_id: &str) -> Result<String> {
        Ok(self.job(job_id).await?.0.owner)
    }

    /// True when job `job_id` refers to blob `digest` (a source, master or plan of it).
    pub async fn job_refers_to(&self, job_id: &str, digest: &str) -> Result<bool> {
        Ok(self
            .inner
            .state
            .get(&blob_ref_key(digest, job_id))
            .await?
            .is_some())
    }

    /// Checks that a worker's attempt holds task `call.task_id`, running.
    pub async fn require_attempt(&self, call: AttemptCall<'_>) -> Result<()> {
        self.held_task(call, "an upload").await.map(drop)
    }

    /// Task `call.task_id`, if the call's attempt holds it and it is running; else `what` is
    /// refused.
    async fn held_task(&self, call: AttemptCall<'_>, what: &str) -> Result<TaskRecord> {
        let task = self.task_by_id(call.task_id).await?;
        if task.state != TaskState::Running || !call.holds(&task) {
            return Err(call.refused(what, &task));
        }
        Ok(task)
    }

    /// Checks that a worker's attempt holds task `call.task_id` and that `digest` is one of the
    /// task's sources or inputs: the only blobs the worker may read.
    pub async fn require_source_of_attempt(
        &self,
        call: AttemptCall<'_>,
        digest: &str,
    ) -> Result<()> {
        let task = self.held_task(call, "a source read").await?;
        let of_task = task.source_digest == digest
            || task.graph.source_digests.iter().any(|d| d == digest)
            || task.graph.inputs.iter().any(|input| input.digest == digest);
        if !of_task {
            tracing::warn!(task = %call.task_id, worker = %call.worker_id, %digest, "source read refused: not a file of the task");
            return Err(Error::PermissionDenied(format!(
                "blob {digest} is not a source or input of task {}",
                call.task_id
            )));
        }
        Ok(())
    }

    /// The settings.
    pub fn settings(&self) -> CoordinatorSettings {
        self.inner.settings
    }

    /// What changes, as it changes.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }

    fn changed(&self, job_id: &str) {
        let _ = self.inner.changes.send(Change::Job(job_id.to_owned()));
    }

    /// Runs the dispatcher, the watcher of exhausted messages, the reconciler and the
    /// maintenance (retention, unreferenced blobs) until `shutdown` resolves. The reconciler runs
    /// first, so that tasks an earlier coordinator queued and the queue lost are published again.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        if let Err(error) = self.reconcile().await {
            tracing::warn!(%error, "reconciling on start failed; the next pass retries");
        }
        let exhausted = self.inner.queue.exhausted().await?;
        let watcher = {
            let coordinator = self.clone();
            tokio::spawn(async move { coordinator.watch_exhausted(exhausted).await })
        };
        let maintenance = {
            let coordinator = self.clone();
            tokio::spawn(async move { coordinator.maintain().await })
        };
        let reconciler = {
            let coordinator = self.clone();
            tokio::spawn(async move { coordinator.keep_reconciling().await })
        };
        tokio::pin!(shutdown);
        loop {
            let pass = std::time::Instant::now();
            if let Err(error) = self.dispatch_ready().await {
                tracing::warn!(%error, "dispatch failed; retrying");
            }
            self.inner
                .metrics
                .dispatch_pass(pass.elapsed().as_secs_f64());
            tokio::select! {
                () = &mut shutdown => break,
                () = self.inner.dispatch.notified() => {}
                () = tokio::time::sleep(self.inner.settings.dispatch_interval) => {}
            }
        }
        watcher.abort();
        maintenance.abort();
        reconciler.abort();
        Ok(())
    }

    async fn watch_exhausted(&self, mut exhausted: crate::queue::ExhaustedStream) {
        while let Some(payload) = exhausted.next().await {
            let Ok(task) = v1::Task::decode(payload) else {
                continue;
            };
            if let Err(error) = self
                .fail_exhausted(&task.task_id, "the work queue gave up delivering it", false)
                .await
            {
                tracing::warn!(%error, task = %task.task_id, "cannot fail task");
            }
        }
    }

    /// Fails a task whose queue message reached its delivery limit, and ends its job if that was
    /// its last task. `reason` becomes its last error when it has none, or always with `replace`.
    async fn fail_exhausted(&self, task_id: &str, reason: &str, replace: bool) -> Result<()> {
        let failed = self
            .update_task(task_id, |task| {
                if task.state.is_final() {
                    return None;
                }
                task.state = TaskState::Failed;
                if replace || task.last_error.is_empty() {
                    task.last_error = reason.to_owned();
                }
                Some(())
            })
            .await?;
        if failed.is_some() {
            tracing::warn!(task = %task_id, %reason, "task past its delivery limit: failed");
            self.finish_job_if_done(record::job_of_task(task_id)?)
                .await?;
            self.inner.dispatch.notify_one();
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------------
    // Jobs.

    fn new_job_id(&self) -> String {
        let sequence = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        format!(
            "{:011x}{:x}{:03x}",
            record::unix_ms(),
            std::process::id() & 0xfff,
            sequence & 0xfff
        )
    }

    /// Refuses a request that names a blob the store does not hold: [`Error::InvalidRequest`]
    /// "`what` has not been uploaded" (a malformed digest is [`Error::BadDigest`]).
    async fn require_stored(&self, digest: &str, what: impl FnOnce() -> String) -> Result<()> {
        if self
            .inner
            .blobs
            .contains(&crate::blob::Digest::parse(digest)?)
            .await?
        {
            Ok(())
        } else {
            Err(Error::InvalidRequest(format!(
                "{} has not been uploaded",
                what()
            )))
        }
    }

    /// Plans and stores a job; its tasks go on the queue as workers free up. A job whose tasks
    /// came as a blob (`tasks_digest`) is read from it first. `owner` (the submitting token's
    /// name) is recorded on the job; its idempotency key is the owner's, so that another user's
    /// key finds nothing.
    pub async fn submit(&self, request: &v1::SubmitJobRequest, owner: &str) -> Result<String> {
        let owned;
        let request = if request.idempotency_key.is_empty() {
            request
        } else {
            owned = v1::SubmitJobRequest {
                idempotency_key: format!("{owner}/{}", request.idempotency_key),
                ..request.clone()
            };
            &owned
        };
        if request.tasks_digest.is_empty() {
            return self.submit_whole(request, owner).await;
        }
        if !request.tracks.is_empty() || !request.graph.is_empty() {
            return Err(Error::InvalidRequest(
                "a job gives its tasks in the request or in a blob, not both".to_owned(),
            ));
        }
        let digest = crate::blob::Digest::parse(&request.tasks_digest)?;
        self.require_stored(&request.tasks_digest, || {
            format!("the job's task list {}", request.tasks_digest)
        })
        .await?;
        let bytes = crate::blob::get_bytes(self.inner.blobs.as_ref(), &digest).await?;
        let tasks = v1::JobTasks::decode(bytes.as_slice()).map_err(|error| {
            Error::InvalidRequest(format!("the job's task list is not readable: {error}"))
        })?;
        let whole = v1::SubmitJobRequest {
            tracks: tasks.tracks,
            graph: tasks.graph,
            tasks_digest: String::new(),
            ..request.clone()
        };
        self.submit_whole(&whole, owner).await
    }

    /// [`submit`](Self::submit) of a request that holds its tasks.
    async fn submit_whole(&self, request: &v1::SubmitJobRequest, owner: &str) -> Result<String> {
        crate::limits::check_submission(request)?;
        let removals_before = self.inner.blobs_removed.load(Ordering::SeqCst);
        for track in &request.tracks {
            self.require_stored(&track.source_digest, || {
                format!("source {} ({})", track.source_name, track.source_digest)
            })
            .await?;
        }
        for task in &request.graph {
            for (digest, name) in task.source_digests.iter().zip(&task.source_names) {
                self.require_stored(digest, || {
                    format!("source {name} ({digest}) of {:?}", task.label)
                })
                .await?;
            }
        }
        if !request.plan_digest.is_empty() {
            self.require_stored(&request.plan_digest, || {
                format!("the job's plan {}", request.plan_digest)
            })
            .await?;
        }
        let idempotency = request.idempotency_key.as_str();
        if let Some(existing) = self.job_for_idempotency_key(idempotency).await? {
            return Ok(existing);
        }
        let job_id = self.new_job_id();
        // The job's span: a child of the submitter's (the request's context), the parent of every
        // span of its tasks.
        let span =
            tracing::info_span!("job", lathe.job.id = %job_id, lathe.job.name = %request.name);
        let mut plan = plan_job(&job_id, request)?;
        plan.job.trace_context = crate::trace::context_headers(&span);
        plan.job.owner = owner.to_owned();
        self.store_submission(plan, idempotency, removals_before)
            .instrument(span)
            .await
    }

    /// Stores a planned job (see [`submit`](Self::submit)).
    async fn store_submission(
        &self,
        plan: Plan,
        idempotency: &str,
        removals_before: u64,
    ) -> Result<String> {
        let job_id = plan.job.id.clone();
        // A marker first (naming the plan blob): a coordinator that stops halfway leaves it, and
        // the next one removes the half-written tasks (`remove_unfinished_submissions`).
        self.inner
            .state
            .put(
                &submitting_key(&job_id),
                plan.job.plan_digest.as_bytes().to_vec(),
            )
            .await?;
        match self.store_plan(&plan, idempotency, removals_before).await {
            Ok(true) => {}
            Ok(false) => {
                // Another submission with the same key won the race: its job is the answer.
                self.remove_job_state(&job_id, &plan.job.plan_digest)
                    .await?;
                return self
                    .job_for_idempotency_key(idempotency)
                    .await?
                    .ok_or_else(|| Error::State("an idempotency key vanished".to_owned()));
            }
            Err(error) => {
                if let Err(cleanup) = self.remove_job_state(&job_id, &plan.job.plan_digest).await {
                    tracing::warn!(job = %job_id, error = %cleanup, "cannot remove a failed submission; the next start will");
                }
                return Err(match error {
                    Error::InvalidRequest(_) => error,
                    error => Error::State(format!(
                        "the job could not be stored, and nothing of it was kept: {error}"
                    )),
                });
            }
        }
        tracing::info!(job = %job_id, tasks = plan.tasks.len(), priority = plan.job.priority, "job submitted");
        self.inner.dispatch.notify_one();
        Ok(job_id)
    }

    /// The job an idempotency key created, if any (none for an empty key).
    async fn job_for_idempotency_key(&self, key: &str) -> Result<Option<String>> {
        if key.is_empty() {
            return Ok(None);
        }
        Ok(self
            .inner
            .state
            .get(&idempotency_key(key))
            .await?
            .map(|stored| String::from_utf8_lossy(&stored.value).into_owned()))
    }

    /// Writes a planned job: its tasks in batches, with a reference to each blob they name, then,
    /// in one transaction, the job, its counts, its `active` key and its idempotency key (the job
    /// appears whole or not at all). False when the idempotency key was taken meanwhile. If a
    /// blob was removed since `removals_before` (a job deleted meanwhile may have released one
    /// this job names), every blob is checked again now that this job refers to it.
    async fn store_plan(
        &self,
        plan: &crate::plan::Plan,
        idempotency: &str,
        removals_before: u64,
    ) -> Result<bool> {
        let job_id = &plan.job.id;
        let mut batches = SubmitBatches::new(self.inner.state.as_ref());
        let mut referred: std::collections::HashSet<&str> = std::collections::HashSet::new();
        if !plan.job.plan_digest.is_empty() {
            referred.insert(&plan.job.plan_digest);
            batches
                .put(blob_ref_key(&plan.job.plan_digest, job_id), Vec::new())
                .await?;
        }
        for task in &plan.tasks {
            batches.put(task_key(&task.id)?, encode(task)?).await?;
            batches
                .put(by_state_key(&task.id, task.state)?, Vec::new())
                .await?;
            for digest in task.blob_digests() {
                if referred.insert(digest) {
                    batches
                        .put(blob_ref_key(digest, job_id), Vec::new())
                        .await?;
                }
            }
        }
        batches.flush().await?;
        if self.inner.blobs_removed.load(Ordering::SeqCst) != removals_before {
            for digest in &referred {
                self.require_stored(digest, || {
                    format!("blob {digest}, which the job names, was removed while the job was being stored: it")
                })
                .await?;
            }
        }
        let mut last = Transaction::new().put(job_key(job_id), encode(&plan.job)?);
        for (shard, counts) in TaskCounts::by_shard(&plan.tasks) {
            last = last.put(counts_key(job_id, shard), encode(&counts)?);
        }
        let mut last = last
            .put(active_key(job_id), Vec::new())
            .delete(submitting_key(job_id));
        if !idempotency.is_empty() {
            let key = idempotency_key(idempotency);
            last = last
                .check(key.clone(), Expect::Absent)
                .put(key, job_id.as_bytes().to_vec());
        }
        self.inner.state.commit(&last).await
    }

    /// Removes everything stored of a job that never appeared (a submission that failed or lost
    /// its idempotency race): its tasks, their blob references (the blobs stay: the client may
    /// submit them again; the sweep removes them if nobody does) and its marker.
    async fn remove_job_state(&self, job_id: &str, plan_digest: &str) -> Result<()> {
        self.release_blobs(job_id, plan_digest, false).await?;
        let state = &self.inner.state;
        state.delete_prefix(&tasks_prefix(job_id)).await?;
        state.delete_prefix(&by_state_root(job_id)).await?;
        state.delete_prefix(&counts_prefix(job_id)).await?;
        for key in [active_key(job_id), job_key(job_id), submitting_key(job_id)] {
            state.delete(&key).await?;
        }
        Ok(())
    }

    /// Removes the tasks of submissions a stopped coordinator left half-written. Call it once
    /// when the coordinator starts, before it serves any request: a submission of its own in
    /// progress would look the same.
    pub async fn remove_unfinished_submissions(&self) -> Result<()> {
        loop {
            let page = self
                .inner
                .state
                .page(SUBMITTING_PREFIX, None, MAX_PAGE)
                .await?;
            if page.entries.is_empty() {
                return Ok(());
            }
            for (key, stored) in &page.entries {
                let job_id = key.trim_start_matches(SUBMITTING_PREFIX);
                tracing::warn!(job = %job_id, "removing a submission left half-written");
                let plan_digest = String::from_utf8_lossy(&stored.value);
                self.remove_job_state(job_id, &plan_digest).await?;
            }
        }
    }

    async fn job(&self, job_id: &str) -> Result<(JobRecord, i64)> {
        let key = job_key(job_id);
        let stored = self
            .inner
            .state
            .get(&key)
            .await?
            .ok_or_else(|| Error::JobNotFound(job_id.to_owned()))?;
        Ok((decode(&key, &stored.value)?, stored.revision))
    }

    /// A job's counts by state: its shards summed, read at one revision.
    async fn counts(&self, job_id: &str) -> Result<TaskCounts> {
        let page = self
            .inner
            .state
            .page(&counts_prefix(job_id), None, COUNT_SHARDS as usize)
            .await?;
        if page.entries.is_empty() {
            return Err(Error::JobNotFound(job_id.to_owned()));
        }
        let mut counts = TaskCounts::default();
        for (key, stored) in &page.entries {
            counts.add(&decode(key, &stored.value)?);
        }
        Ok(counts)
    }

    /// The task `index` of a job ([`Error::TaskNotFound`] when there is none).
    pub async fn task(&self, job_id: &str, index: u32) -> Result<TaskRecord> {
        let id = task_id(job_id, index);
        self.task_by_id(&id).await
    }

    async fn task_by_id(&self, id: &str) -> Result<TaskRecord> {
        let key = task_key(id)?;
        let stored = self
            .inner
            .state
            .get(&key)
            .await?
            .ok_or_else(|| Error::TaskNotFound(id.to_owned()))?;
        decode(&key, &stored.value)
    }

    /// A page of a job's tasks in task order, after the task `after` (from the first without it);
    /// only those in `state` when given. At most `limit` tasks (at most [`MAX_PAGE`]).
    /// [`Error::JobNotFound`] for a job that does not exist.
    pub async fn task_page(
        &self,
        job_id: &str,
        state: Option<TaskState>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<TaskPage> {
        self.job(job_id).await?;
        self.page_of_tasks(job_id, state, after, limit).await
    }

    /// [`task_page`](Self::task_page) of a job the caller has already read.
    async fn page_of_tasks(
        &self,
        job_id: &str,
        state: Option<TaskState>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<TaskPage> {
        let Some(state) = state else {
            // A job's tasks are numbered from 0 without gaps: the page is the window of indexes
            // after `after` (etcd counts only the keys of the range it reads).
            let limit = limit.clamp(1, MAX_PAGE);
            let first = match after {
                Some(after) => record::index_of_task(after)?.saturating_add(1),
                None => 0,
            };
            let end = first.saturating_add(u32::try_from(limit).unwrap_or(u32::MAX));
            let page = self
                .inner
                .state
                .page_range(
                    &tasks_prefix(job_id),
                    first
                        .checked_sub(1)
                        .map(|index| task_key(&task_id(job_id, index)))
                        .transpose()?
                        .as_deref(),
                    Some(&task_key(&task_id(job_id, end))?),
                    limit,
                )
                .await?;
            let tasks = page
                .entries
                .iter()
                .map(|(key, stored)| decode::<TaskRecord>(key, &stored.value))
                .collect::<Result<Vec<_>>>()?;
            let more = tasks.len() == limit
                && self
                    .inner
                    .state
                    .get(&task_key(&task_id(job_id, end))?)
                    .await?
                    .is_some();
            let next_after = more
                .then(|| tasks.last().map(|task| task.id.clone()))
                .flatten();
            return Ok(TaskPage { tasks, next_after });
        };
        self.page_of_index(&by_state_prefix(job_id, state), after, limit)
            .await
    }

    /// A page of a job's succeeded tasks whose master (or a file of whose outcome) failed QC, in
    /// task order, after the task `after`. [`Error::JobNotFound`] for a job that does not exist.
    pub async fn qc_failed_page(
        &self,
        job_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<TaskPage> {
        self.job(job_id).await?;
        self.page_of_index(&qc_failed_prefix(job_id), after, limit)
            .await
    }

    /// The tasks of an index (`by_state/{job}/{name}/`), read a page of keys at a time, the tasks
    /// of a page in one request (one that left the index meanwhile is skipped).
    async fn page_of_index(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<TaskPage> {
        let (tasks, next_after) = self.index_page(prefix, after, limit).await?;
        Ok(TaskPage {
            tasks: tasks.into_iter().map(|(task, _)| task).collect(),
            next_after,
        })
    }

    /// [`page_of_index`](Self::page_of_index) with each task's revision, and the task id to read
    /// after for the next page.
    async fn index_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<(TaskRecord, i64)>, Option<String>)> {
        let after = after
            .map(|id| {
                id.rsplit_once('.')
                    .map(|(_, index)| format!("{prefix}{index}"))
                    .ok_or_else(|| Error::TaskNotFound(id.to_owned()))
            })
            .transpose()?;
        let page = self
            .inner
            .state
            .page(prefix, after.as_deref(), limit)
            .await?;
        let keys = page
            .entries
            .iter()
            .map(|(key, _)| {
                let id = task_of_by_state_key(key).ok_or_else(|| Error::CorruptRecord {
                    key: key.clone(),
                    reason: "not a state-index key".to_owned(),
                })?;
                task_key(&id)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut tasks = Vec::with_capacity(keys.len());
        for (key, stored) in keys.iter().zip(self.inner.state.get_many(&keys).await?) {
            // A task gone since the index was read is left out.
            if let Some(stored) = stored {
                tasks.push((decode(key, &stored.value)?, stored.revision));
            }
        }
        let next_after = page.next.as_deref().and_then(task_of_by_state_key);
        Ok((tasks, next_after))
    }

    /// The jobs not finished, oldest first.
    async fn active_jobs(&self) -> Result<Vec<JobRecord>> {
        let mut jobs = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .inner
                .state
                .page(ACTIVE_PREFIX, after.as_deref(), MAX_PAGE)
                .await?;
            for (key, _) in &page.entries {
                match self.job(key.trim_start_matches(ACTIVE_PREFIX)).await {
                    Ok((job, _)) => jobs.push(job),
                    Err(Error::JobNotFound(_)) => {}
                    Err(error) => return Err(error),
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        jobs.sort_by(|a, b| (a.submitted_unix_ms, &a.id).cmp(&(b.submitted_unix_ms, &b.id)));
        Ok(jobs)
    }

    /// A job's status: its counts by state and its running tasks with their live progress (a
    /// bounded message whatever the job's size; [`task_page`](Self::task_page) lists the rest).
    pub async fn status(&self, job_id: &str) -> Result<v1::JobStatus> {
        let (job, _) = self.job(job_id).await?;
        let counts = self.counts(job_id).await?;
        let running = self
            .page_of_tasks(job_id, Some(TaskState::Running), None, MAX_PAGE)
            .await?;
        Ok(self.to_status(&job, &counts, &running.tasks))
    }

    /// A job's fields and counts, without its tasks (what [`list`](Self::list) gives of each
    /// job): two reads whatever the job's size.
    pub async fn summary(&self, job_id: &str) -> Result<v1::JobStatus> {
        let (job, _) = self.job(job_id).await?;
        let counts = self.counts(job_id).await?;
        Ok(self.to_status(&job, &counts, &[]))
    }

    fn to_status(
        &self,
        job: &JobRecord,
        counts: &TaskCounts,
        tasks: &[TaskRecord],
    ) -> v1::JobStatus {
        v1::JobStatus {
            job_id: job.id.clone(),
            name: job.name.clone(),
            priority: job.priority,
            state: job.state.to_proto().into(),
            profile_name: job.profile_name.clone(),
            tasks: tasks.iter().map(|task| self.task_status(task)).collect(),
            blocklisted_workers: job.blocklist.clone(),
            owner: job.owner.clone(),
            submitted_unix_ms: job.submitted_unix_ms,
            plan_digest: job.plan_digest.clone(),
            counts: Some(counts.to_proto()),
            paused_reason: job.paused_reason.clone(),
            pinned: job.pinned,
            finished_unix_ms: job.finished_unix_ms,
            delta: false,
        }
    }

    /// A task's protocol view, with its live progress when it is running.
    pub fn task_status(&self, task: &TaskRecord) -> v1::TaskStatus {
        let live = (task.state == TaskState::Running)
            .then(|| {
                self.inner
                    .progress
                    .lock()
                    .ok()
                    .and_then(|progress| progress.get(&task.id).cloned())
            })
            .flatten();
        task.to_proto(live)
    }

    /// A page of jobs in id order (ids start with the submission time, so oldest first), after
    /// the job `after`; each with its counts, none with its tasks.
    pub async fn list(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<v1::JobStatus>, Option<String>)> {
        let after = after.map(job_key);
        let page = self
            .inner
            .state
            .page(JOBS_PREFIX, after.as_deref(), limit)
            .await?;
        let mut statuses = Vec::with_capacity(page.entries.len());
        for (key, stored) in &page.entries {
            let job: JobRecord = decode(key, &stored.value)?;
            let counts = self.counts(&job.id).await.unwrap_or_default();
            statuses.push(self.to_status(&job, &counts, &[]));
        }
        let next = page
            .next
            .map(|key| key.trim_start_matches(JOBS_PREFIX).to_owned());
        Ok((statuses, next))
    }

    /// Cancels a job: tasks not finished become cancelled at once; workers running one are told on
    /// their next progress report and stop.
    pub async fn cancel(&self, job_id: &str) -> Result<JobState> {
        let ended = self.end_job(job_id, JobState::Cancelled).await?;
        if ended {
            // Page by page from the start of each state: every task cancelled leaves the index.
            for state in [TaskState::Pending, TaskState::Queued, TaskState::Running] {
                loop {
                    let (tasks, _) = self
                        .index_page(&by_state_prefix(job_id, state), None, MAX_PAGE)
                        .await?;
                    if tasks.is_empty() {
                        break;
                    }
                    self.transition_batch(job_id, tasks, |task| {
                        if task.state.is_final() {
                            return false;
                        }
                        task.state = TaskState::Cancelled;
                        true
                    })
                    .await?;
                }
            }
            tracing::info!(job = %job_id, "job cancelled");
        }
        self.changed(job_id);
        Ok(self.job(job_id).await?.0.state)
    }

    /// Clears a job's blocklist (one worker, or all with an empty id); returns the workers cleared.
    pub async fn clear_blocklist(&self, job_id: &str, worker_id: &str) -> Result<Vec<String>> {
        let cleared = self
            .update_job(job_id, |job| {
                let cleared: Vec<String> = job
                    .blocklist
                    .iter()
                    .filter(|w| worker_id.is_empty() || w.as_str() == worker_id)
                    .cloned()
                    .collect();
                job.blocklist.retain(|w| !cleared.contains(w));
                for worker in &cleared {
                    job.consecutive_failures.remove(worker);
                }
                if !cleared.is_empty() {
                    job.paused_reason.clear();
                }
                Some(cleared)
            })
            .await?
            .unwrap_or_default();
        self.changed(job_id);
        self.inner.dispatch.notify_one();
        Ok(cleared)
    }

    /// Registered workers with the jobs each is blocklisted for.
    pub async fn workers(&self) -> Result<Vec<v1::WorkerStatus>> {
        let jobs = self.active_jobs().await?;
        Ok(self
            .worker_records()
            .await?
            .into_iter()
            .map(|worker| {
                let blocklisted = jobs
                    .iter()
                    .filter(|job| !job.state.is_final() && job.blocklist.contains(&worker.id))
                    .map(|job| job.id.clone())
                    .collect();
                worker.to_proto(blocklisted)
            })
            .collect())
    }

    /// Every worker registration (as many as the farm has workers, not growing with the catalogue).
    async fn worker_records(&self) -> Result<Vec<WorkerRecord>> {
        let mut workers = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .inner
                .state
                .page(WORKERS_PREFIX, after.as_deref(), MAX_PAGE)
                .await?;
            for (key, stored) in &page.entries {
                workers.push(decode(key, &stored.value)?);
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(workers),
            }
        }
    }

    // -----------------------------------------------------------------------------------------------
    // Transitions.

    /// Applies `change` to the job with compare-and-swap, retrying on concurrent writes. `change`
    /// returns `None` to leave the record as it is.
    async fn update_job<T>(
        &self,
        job_id: &str,
        mut change: impl FnMut(&mut JobRecord) -> Option<T>,
    ) -> Result<Option<T>> {
        let key = job_key(job_id);
        for _ in 0..SWAP_ATTEMPTS {
            let (mut job, revision) = self.job(job_id).await?;
            let Some(outcome) = change(&mut job) else {
                return Ok(None);
            };
            if self
                .inner
                .state
                .swap(&key, Some(revision), encode(&job)?)
                .await?
            {
                self.changed(job_id);
                return Ok(Some(outcome));
            }
        }
        Err(Error::Contention {
            key,
            attempts: SWAP_ATTEMPTS,
        })
    }

    /// Applies `change` to the task with compare-and-swap, as [`update_job`](Self::update_job). A
    /// change of state moves the task's state-index key and its job's counts in the same
    /// transaction.
    async fn update_task<T>(
        &self,
        task_id: &str,
        change: impl FnMut(&mut TaskRecord) -> Option<T>,
    ) -> Result<Option<T>> {
        self.update_task_adding(task_id, &[], change).await
    }

    /// [`update_task`](Self::update_task) that also writes the empty keys `added` (references)
    /// in the same transaction when the change is made.
    async fn update_task_adding<T>(
        &self,
        task_id: &str,
        added: &[String],
        change: impl FnMut(&mut TaskRecord) -> Option<T>,
    ) -> Result<Option<T>> {
        Ok(self
            .update_task_counted(task_id, added, change)
            .await?
            .map(|(outcome, _)| outcome))
    }

    /// [`update_task_adding`](Self::update_task_adding) that also returns the counts of the
    /// task's shard as written when its state changed. The task and its shard are read in one
    /// request (the shard follows from the task's id).
    async fn update_task_counted<T>(
        &self,
        task_id: &str,
        added: &[String],
        mut change: impl FnMut(&mut TaskRecord) -> Option<T>,
    ) -> Result<Option<(T, Option<TaskCounts>)>> {
        let key = task_key(task_id)?;
        let job_id = record::job_of_task(task_id)?;
        let shard_key = counts_key(job_id, record::count_shard(record::index_of_task(task_id)?));
        for _ in 0..SWAP_ATTEMPTS {
            let mut read = self
                .inner
                .state
                .get_many(&[key.clone(), shard_key.clone()])
                .await?
                .into_iter();
            let stored = read
                .next()
                .flatten()
                .ok_or_else(|| Error::TaskNotFound(task_id.to_owned()))?;
            let shard = read
                .next()
                .flatten()
                .ok_or_else(|| Error::JobNotFound(job_id.to_owned()))?;
            let mut task: TaskRecord = decode(&key, &stored.value)?;
            let before = (task.state, task.qc_failed);
            let Some(outcome) = change(&mut task) else {
                return Ok(None);
            };
            let after = (task.state, task.qc_failed);
            let mut transaction = Transaction::new()
                .check(key.clone(), Expect::Revision(stored.revision))
                .put(key.clone(), encode(&task)?);
            for added in added {
                transaction = transaction.put(added.clone(), Vec::new());
            }
            let mut shard_counts = None;
            if before != after {
                let mut counts: TaskCounts = decode(&shard_key, &shard.value)?;
                counts.moved(before, after);
                transaction = transaction
                    .check(shard_key.clone(), Expect::Revision(shard.revision))
                    .put(shard_key.clone(), encode(&counts)?);
                shard_counts = Some(counts);
                transaction = move_index_keys(transaction, task_id, before, after)?;
            }
            if self.inner.state.commit(&transaction).await? {
                self.transitioned(before.0, task);
                return Ok(Some((outcome, shard_counts)));
            }
        }
        Err(Error::Contention {
            key,
            attempts: SWAP_ATTEMPTS,
        })
    }

    /// After a committed transition of `task` from state `before`: lowers the dispatcher's floor
    /// of its job when it went back to pending, and tells watchers.
    fn transitioned(&self, before: TaskState, task: TaskRecord) {
        if task.state == TaskState::Pending
            && before != TaskState::Pending
            && let Ok(mut floors) = self.inner.pending_floors.lock()
        {
            floors.lower(&task.job_id, task.index);
        }
        let _ = self.inner.changes.send(Change::Task(Arc::new(task)));
    }

    /// Ends the job once every task is final, from its counts.
    async fn finish_job_if_done(&self, job_id: &str) -> Result<()> {
        let counts = self.counts(job_id).await?;
        if counts.unfinished() > 0 {
            return Ok(());
        }
        let outcome = if counts.succeeded == counts.total() {
            JobState::Succeeded
        } else if counts.succeeded == 0 {
            JobState::Failed
        } else {
            JobState::CompletedWithFailures
        };
        if self.end_job(job_id, outcome).await? {
            tracing::info!(job = %job_id, state = ?outcome, "job finished");
        }
        Ok(())
    }

    /// Records why a job is paused (every worker is blocklisted for it); returns the reason.
    async fn pause(&self, job: &JobRecord) -> Result<String> {
        let reason = format!(
            "paused: every worker is blocklisted for this job ({}); clear the blocklist with `lathe status {} --clear-blocklist` to go on",
            job.blocklist.join(", "),
            job.id
        );
        let recorded = self
            .update_job(&job.id, |job| {
                (job.paused_reason != reason).then(|| job.paused_reason.clone_from(&reason))
            })
            .await?;
        if recorded.is_some() {
            tracing::warn!(job = %job.id, %reason, "job paused");
        }
        Ok(reason)
    }

    /// Gives a running job its final state and removes its `active` key, in one transaction
    /// that also enters it in the retention index unless it is pinned; false when it had
    /// already ended.
    async fn end_job(&self, job_id: &str, outcome: JobState) -> Result<bool> {
        let key = job_key(job_id);
        for _ in 0..SWAP_ATTEMPTS {
            let (mut job, revision) = self.job(job_id).await?;
            if job.state.is_final() {
                return Ok(false);
            }
            job.state = outcome;
            job.finished_unix_ms = record::unix_ms();
            let mut transaction = Transaction::new()
                .check(key.clone(), Expect::Revision(revision))
                .put(key.clone(), encode(&job)?)
                .delete(active_key(job_id));
            if !job.pinned {
                transaction = transaction.put(finished_key(&job), Vec::new());
            }
            if self.inner.state.commit(&transaction).await? {
                self.changed(job_id);
                return Ok(true);
            }
        }
        Err(Error::Contention {
            key,
            attempts: SWAP_ATTEMPTS,
        })
    }

    // -----------------------------------------------------------------------------------------------
    // Worker reports.

    /// A worker's heartbeat: its record written under a lease this coordinator holds for it
    /// (granted at the first heartbeat, or again when it ran out), kept alive by each heartbeat.
    pub async fn heartbeat(&self, record: &WorkerRecord) -> Result<()> {
        crate::limits::bounded_text("worker id", &record.id, crate::limits::MAX_ID_BYTES)?;
        crate::limits::bounded_text("host", &record.host, crate::limits::MAX_NAME_BYTES)?;
        crate::limits::bounded_list(
            "current tasks",
            record.current_tasks.len(),
            crate::limits::MAX_LIST_ITEMS,
        )?;
        let held = self
            .inner
            .worker_leases
            .lock()
            .ok()
            .and_then(|leases| leases.get(&record.id).copied());
        let lease = match held {
            Some(lease) => match self.inner.state.keep_alive(lease).await {
                Ok(()) => lease,
                Err(Error::LeaseExpired { .. }) => self.new_worker_lease(&record.id).await?,
                Err(error) => return Err(error),
            },
            None => self.new_worker_lease(&record.id).await?,
        };
        self.inner
            .state
            .put_leased(&worker_key(&record.id), encode(record)?, lease)
            .await
    }

    async fn new_worker_lease(&self, worker_id: &str) -> Result<LeaseId> {
        let lease = self.inner.state.grant_lease(WORKER_LEASE_TTL).await?;
        if let Ok(mut leases) = self.inner.worker_leases.lock() {
            if leases.len() >= MAX_WORKERS && !leases.contains_key(worker_id) {
                return Err(Error::InvalidRequest(format!(
                    "more than {MAX_WORKERS} workers registered"
                )));
            }
            leases.insert(worker_id.to_owned(), lease);
        }
        Ok(lease)
    }

    /// A worker shutting down: its registration goes at once.
    pub async fn unregister_worker(&self, worker_id: &str) -> Result<()> {
        let lease = self
            .inner
            .worker_leases
            .lock()
            .ok()
            .and_then(|mut leases| leases.remove(worker_id));
        match lease {
            Some(lease) => self.inner.state.revoke(lease).await,
            None => self.inner.state.delete(&worker_key(worker_id)).await,
        }
    }

    /// A worker received `task_id` (its `delivery`-th delivery): decides whether it runs it.
    pub async fn start_task(
        &self,
        task_id: &str,
        worker_id: &str,
        delivery: u32,
    ) -> Result<StartVerdict> {
        let job_id = record::job_of_task(task_id)?;
        let (job, _) = match self.job(job_id).await {
            Ok(job) => job,
            Err(Error::JobNotFound(_)) => return Ok(StartVerdict::Drop("no such job".to_owned())),
            Err(error) => return Err(error),
        };
        if job.state == JobState::Cancelled {
            return Ok(StartVerdict::Drop("the job was cancelled".to_owned()));
        }
        if job.state == JobState::Suspended {
            // Back to pending: it goes on the queue again when the job is resumed.
            self.update_task(task_id, |task| {
                (task.state == TaskState::Queued).then(|| task.state = TaskState::Pending)
            })
            .await?;
            return Ok(StartVerdict::Drop("the job is suspended".to_owned()));
        }
        if job.blocklist.iter().any(|w| w == worker_id) {
            let workers = self.worker_records().await?;
            if !every_worker_blocklisted(&job, &workers) {
                let reason = format!("worker {worker_id} is blocklisted for job {job_id}");
                if delivery >= self.inner.queue.settings().max_deliver {
                    // The queue would not deliver it again: record that now rather than wait
                    // for its advisory.
                    self.fail_exhausted(task_id, &reason, true).await?;
                    return Ok(StartVerdict::Drop(reason));
                }
                return Ok(StartVerdict::HandBack(reason));
            }
            // No worker may take it: rather than cycle through the queue, the task goes back to
            // pending and the job waits, paused, until its blocklist is cleared.
            let reason = self.pause(&job).await?;
            self.update_task(task_id, |task| {
                (task.state == TaskState::Queued).then(|| task.state = TaskState::Pending)
            })
            .await?;
            return Ok(StartVerdict::Drop(reason));
        }
        let max_attempts = self.inner.settings.max_attempts;
        let (token, token_hash) = crate::auth::attempt_token()?;
        let verdict = self
            .update_task(task_id, |task| {
                if task.state.is_final() {
                    return Some(StartVerdict::Drop(format!("the task is {:?}", task.state)));
                }
                if task.state == TaskState::Running {
                    // The previous attempt ended without a report: its worker died, hung, or handed
                    // the task back while shutting down.
                    task.last_error = format!(
                        "attempt {} on worker {} was lost (its worker stopped before reporting)",
                        task.attempts, task.worker_id
                    );
                }
                if task.attempts >= max_attempts {
                    task.state = TaskState::Failed;
                    return Some(StartVerdict::Drop(format!(
                        "failed after {} attempts: {}",
                        task.attempts, task.last_error
                    )));
                }
                task.state = TaskState::Running;
                task.worker_id = worker_id.to_owned();
                task.attempts += 1;
                task.deliveries = delivery;
                task.attempt_token_hash.clone_from(&token_hash);
                task.attempt_started_unix_ms = record::unix_ms();
                if task.started_unix_ms == 0 {
                    task.started_unix_ms = task.attempt_started_unix_ms;
                }
                Some(StartVerdict::Run(Box::new(Attempt {
                    token: token.clone(),
                    task: task.to_task(&job.profile_toml),
                })))
            })
            .await?
            .ok_or_else(|| Error::TaskNotFound(task_id.to_owned()))?;
        match &verdict {
            StartVerdict::Run(_) => {
                tracing::info!(task = %task_id, worker = %worker_id, delivery, "task started");
            }
            StartVerdict::Drop(reason) => {
                tracing::info!(task = %task_id, worker = %worker_id, %reason, "delivery dropped");
                self.finish_job_if_done(job_id).await?;
                self.inner.dispatch.notify_one();
            }
            StartVerdict::HandBack(_) => {}
        }
        Ok(verdict)
    }

    /// A worker's progress on a task; returns true when the task should stop (its job was
    /// cancelled, or the task is no longer running on this worker). Nothing is kept for a task
    /// that is not running on `worker_id`: only running tasks take memory, whatever is reported.
    pub async fn progress(
        &self,
        call: AttemptCall<'_>,
        phase: &str,
        fraction: f64,
    ) -> Result<bool> {
        let AttemptCall {
            task_id, worker_id, ..
        } = call;
        let job_id = record::job_of_task(task_id)?;
        if phase.len() > MAX_PHASE_BYTES || !(0.0..=1.0).contains(&fraction) {
            return Err(Error::InvalidRequest(format!(
                "progress of {task_id}: a phase of at most {MAX_PHASE_BYTES} bytes and a \
                 fraction from 0 to 1"
            )));
        }
        let task = self.task_by_id(task_id).await?;
        if task.state != TaskState::Running || !call.holds(&task) {
            tracing::warn!(
                task = %task_id,
                worker = %worker_id,
                state = ?task.state,
                holder = %task.worker_id,
                "progress refused: the task is not running on this worker"
            );
            return Ok(true);
        }
        if let Ok(mut progress) = self.inner.progress.lock() {
            progress.insert(task_id.to_owned(), (phase.to_owned(), fraction));
        }
        let _ = self.inner.changes.send(Change::Progress {
            task_id: task_id.to_owned(),
            phase: phase.to_owned(),
            fraction,
        });
        let (job, _) = self.job(job_id).await?;
        Ok(job.state == JobState::Cancelled)
    }

    /// A worker finished a task and uploaded its files (a track's master, or a graph task's
    /// `outputs`): records it once every file is stored.
    pub async fn complete_task(
        &self,
        call: AttemptCall<'_>,
        output_digest: &str,
        report_json: &str,
        outputs: &[v1::OutputFile],
    ) -> Result<()> {
        let AttemptCall {
            task_id, worker_id, ..
        } = call;
        let stored_task = self.task_by_id(task_id).await?;
        if !call.holds(&stored_task) {
            return Err(call.refused("completion", &stored_task));
        }
        let is_graph = stored_task.graph.is_graph();
        let qc_failed = fails_qc(report_json, is_graph);
        let files = if is_graph {
            graph::check_outputs(task_id, outputs, report_json)?
        } else {
            Vec::new()
        };
        let digests: Vec<&str> = if is_graph {
            files.iter().map(|f| f.digest.as_str()).collect()
        } else {
            vec![output_digest]
        };
        for digest in digests {
            self.require_stored(digest, || format!("task {task_id}: its output {digest}"))
                .await?;
        }
        let job_id = record::job_of_task(task_id)?;
        let references: Vec<String> = {
            let mut digests: Vec<&str> = files.iter().map(|f| f.digest.as_str()).collect();
            digests.push(output_digest);
            digests.retain(|digest| !digest.is_empty());
            digests.sort_unstable();
            digests.dedup();
            digests
                .into_iter()
                .map(|digest| blob_ref_key(digest, job_id))
                .collect()
        };
        let mut lost_attempt = None;
        let completed = self
            .update_task_counted(task_id, &references, |task| {
                if !call.holds(task) {
                    lost_attempt = Some(task.clone());
                    return None;
                }
                if task.state.is_final() {
                    return None;
                }
                task.state = TaskState::Succeeded;
                task.qc_failed = qc_failed;
                task.worker_id = worker_id.to_owned();
                task.output_digest = output_digest.to_owned();
                task.report_json = report_json.to_owned();
                task.graph.outputs.clone_from(&files);
                Some(())
            })
            .await?;
        if let Some(task) = lost_attempt {
            // Another attempt started between the check above and the write.
            return Err(call.refused("completion", &task));
        }
        if completed.is_some() {
            self.inner.metrics.task_finished(true, qc_failed);
        }
        // The job can only be done once the task's own shard of it is.
        let maybe_done = completed
            .and_then(|(_, shard)| shard)
            .is_some_and(|shard| shard.unfinished() == 0);
        if let Ok(mut progress) = self.inner.progress.lock() {
            progress.remove(task_id);
        }
        self.update_job(job_id, |job| {
            job.consecutive_failures.remove(worker_id).map(|_| ())
        })
        .await?;
        tracing::info!(task = %task_id, worker = %worker_id, "task succeeded");
        if maybe_done {
            self.finish_job_if_done(job_id).await?;
        }
        self.inner.dispatch.notify_one();
        Ok(())
    }

    /// A worker failed a task: records the error and returns true when the task is now failed for
    /// good. A fault of the task's input fails it at once and counts against nobody; a fault of
    /// the worker is retried while attempts remain and counts against the worker (which may be
    /// blocklisted for the job).
    pub async fn fail_task(
        &self,
        call: AttemptCall<'_>,
        error: &str,
        fault: Fault,
    ) -> Result<bool> {
        let AttemptCall {
            task_id, worker_id, ..
        } = call;
        let max_attempts = self.inner.settings.max_attempts;
        let max_deliver = self.inner.queue.settings().max_deliver;
        let mut lost_attempt = None;
        let final_failure = self
            .update_task(task_id, |task| {
                if !call.holds(task) {
                    lost_attempt = Some(task.clone());
                    return None;
                }
                if task.state.is_final() {
                    return Some(true);
                }
                task.last_error = error.to_owned();
                task.worker_id = worker_id.to_owned();
                if fault == Fault::Input
                    || task.attempts >= max_attempts
                    || task.deliveries >= max_deliver
                {
                    task.state = TaskState::Failed;
                    Some(true)
                } else {
                    task.state = TaskState::Queued;
                    Some(false)
                }
            })
            .await?
            .unwrap_or(true);
        if let Some(task) = lost_attempt {
            return Err(call.refused("failure report", &task));
        }
        if let Ok(mut progress) = self.inner.progress.lock() {
            progress.remove(task_id);
        }
        let job_id = record::job_of_task(task_id)?;
        if fault == Fault::Input {
            tracing::warn!(task = %task_id, worker = %worker_id, %error, "task input refused: failed without retry");
            self.finish_job_if_done(job_id).await?;
            self.inner.dispatch.notify_one();
            return Ok(true);
        }
        tracing::warn!(task = %task_id, worker = %worker_id, %error, final_failure, "task attempt failed");
        self.count_failure_against(job_id, worker_id).await?;
        if final_failure {
            self.inner.metrics.task_finished(false, false);
            self.finish_job_if_done(job_id).await?;
            self.inner.dispatch.notify_one();
        }
        Ok(final_failure)
    }

    /// Counts a failed attempt of a task of `job_id` against `worker_id`: one failure too many in
    /// a row blocklists the worker for the job.
    async fn count_failure_against(&self, job_id: &str, worker_id: &str) -> Result<()> {
        let blocklist_after = self.inner.settings.blocklist_after;
        let blocklisted = self
            .update_job(job_id, |job| {
                let count = job
                    .consecutive_failures
                    .entry(worker_id.to_owned())
                    .or_insert(0);
                *count += 1;
                let block =
                    *count >= blocklist_after && !job.blocklist.iter().any(|w| w == worker_id);
                if block {
                    job.blocklist.push(worker_id.to_owned());
                }
                Some(block)
            })
            .await?
            .unwrap_or(false);
        if blocklisted {
            tracing::warn!(job = %job_id, worker = %worker_id, "worker blocklisted for the job");
        }
        Ok(())
    }
}

/// True when workers are registered and every one is blocklisted for `job`.
fn every_worker_blocklisted(job: &JobRecord, workers: &[WorkerRecord]) -> bool {
    !workers.is_empty() && workers.iter().all(|w| job.blocklist.contains(&w.id))
}

/// Adds to `transaction` the index keys of a task whose (state, QC flag) went from `before` to
/// `after`: its state-index key moves, and its QC-failed key comes or goes.
fn move_index_keys(
    mut transaction: Transaction,
    task_id: &str,
    before: (TaskState, bool),
    after: (TaskState, bool),
) -> Result<Transaction> {
    if before.0 != after.0 {
        transaction = transaction
            .delete(by_state_key(task_id, before.0)?)
            .put(by_state_key(task_id, after.0)?, Vec::new());
    }
    if before.1 != after.1 {
        transaction = if after.1 {
            transaction.put(qc_failed_key(task_id)?, Vec::new())
        } else {
            transaction.delete(qc_failed_key(task_id)?)
        };
    }
    Ok(transaction)
}

/// True when a finished task's report says its master, or any file of its outcome, failed QC.
fn fails_qc(report_json: &str, is_graph: bool) -> bool {
    let Ok(report) = serde_json::from_str::<serde_json::Value>(report_json) else {
        return false;
    };
    let failed =
        |value: &serde_json::Value| value["qc"]["passed"] == serde_json::Value::Bool(false);
    if is_graph {
        report["files"]
            .as_array()
            .is_some_and(|files| files.iter().any(failed))
    } else {
        failed(&report)
    }
}

/// Unconditional puts gathered into transactions of at most [`MAX_TRANSACTION_OPS`] operations
/// and [`SUBMIT_BATCH_BYTES`] bytes, each committed when full.
struct SubmitBatches<'a> {
    state: &'a dyn StateStore,
    batch: Transaction,
    bytes: usize,
}

impl<'a> SubmitBatches<'a> {
    fn new(state: &'a dyn StateStore) -> Self {
        Self {
            state,
            batch: Transaction::new(),
            bytes: 0,
        }
    }

    async fn put(&mut self, key: String, value: Vec<u8>) -> Result<()> {
        let size = key.len() + value.len();
        if self.batch.puts.len() + 1 > MAX_TRANSACTION_OPS || self.bytes + size > SUBMIT_BATCH_BYTES
        {
            self.flush().await?;
        }
        self.bytes += size;
        self.batch = std::mem::take(&mut self.batch).put(key, value);
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        if self.batch.puts.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.bytes = 0;
        if self.state.commit(&batch).await? {
            Ok(())
        } else {
            Err(Error::State(
                "a transaction without checks was refused".to_owned(),
            ))
        }
    }
}
