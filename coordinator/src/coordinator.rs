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

use crate::blob::BlobStore;
use crate::error::{Error, Result};
use crate::graph::{self, Readiness};
use crate::plan::plan_job;
use crate::queue::{QueueMessage, WorkQueue};
use crate::record::{
    self, JOBS_PREFIX, JobRecord, JobState, TaskRecord, TaskState, WORKERS_PREFIX, WorkerRecord,
    decode, encode, job_key, task_key, tasks_prefix,
};
use crate::state::StateStore;

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
}

impl Default for CoordinatorSettings {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            blocklist_after: 3,
            dispatch_interval: Duration::from_millis(500),
            queue_ahead: 1,
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

/// What a worker should do with a delivery, from [`Coordinator::start_task`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartVerdict {
    /// Run it.
    Run,
    /// Acknowledge and drop the message; the reason says why.
    Drop(String),
    /// Hand it back for another worker.
    HandBack(String),
}

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
    /// Job ids whose status changed.
    changes: broadcast::Sender<String>,
    /// Wakes the dispatcher early (a job arrived, a task finished).
    dispatch: Notify,
    next_id: AtomicU64,
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
    pub fn new(
        queue: Arc<dyn WorkQueue>,
        state: Arc<dyn StateStore>,
        blobs: Arc<dyn BlobStore>,
        settings: CoordinatorSettings,
    ) -> Self {
        let (changes, _) = broadcast::channel(1024);
        Self {
            inner: Arc::new(Inner {
                queue,
                state,
                blobs,
                settings,
                progress: Mutex::new(HashMap::new()),
                changes,
                dispatch: Notify::new(),
                next_id: AtomicU64::new(0),
            }),
        }
    }

    /// The blob store.
    pub fn blobs(&self) -> &dyn BlobStore {
        self.inner.blobs.as_ref()
    }

    /// The settings.
    pub fn settings(&self) -> CoordinatorSettings {
        self.inner.settings
    }

    /// Job ids whose status changed, as they change.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.inner.changes.subscribe()
    }

    fn changed(&self, job_id: &str) {
        let _ = self.inner.changes.send(job_id.to_owned());
    }

    /// Runs the dispatcher and the watcher of exhausted messages until `shutdown` resolves. Tasks
    /// queued by an earlier coordinator that may not have reached the queue are published again first
    /// (the queue drops duplicates by id; a duplicate that slips through is harmless, as tasks are
    /// deterministic and a finished task's redelivery is dropped).
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        self.republish_queued().await?;
        let exhausted = self.inner.queue.exhausted().await?;
        let watcher = {
            let coordinator = self.clone();
            tokio::spawn(async move { coordinator.watch_exhausted(exhausted).await })
        };
        tokio::pin!(shutdown);
        loop {
            if let Err(error) = self.dispatch_ready().await {
                tracing::warn!(%error, "dispatch failed; retrying");
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = self.inner.dispatch.notified() => {}
                () = tokio::time::sleep(self.inner.settings.dispatch_interval) => {}
            }
        }
        watcher.abort();
        Ok(())
    }

    async fn watch_exhausted(&self, mut exhausted: crate::queue::ExhaustedStream) {
        while let Some(payload) = exhausted.next().await {
            let Ok(task) = v1::Task::decode(payload) else {
                continue;
            };
            let result = self
                .update_task(&task.task_id, |task| {
                    if task.state.is_final() {
                        return None;
                    }
                    task.state = TaskState::Failed;
                    if task.last_error.is_empty() {
                        task.last_error = "the work queue gave up delivering it".to_owned();
                    }
                    Some(())
                })
                .await;
            match result {
                Ok(Some(_)) => {
                    tracing::warn!(task = %task.task_id, "task past its delivery limit: failed");
                    let _ = self.finish_job_if_done(&task.job_id).await;
                    self.inner.dispatch.notify_one();
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, task = %task.task_id, "cannot fail task"),
            }
        }
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

    /// Plans and stores a job; its tasks go on the queue as workers free up.
    pub async fn submit(&self, request: &v1::SubmitJobRequest) -> Result<String> {
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
        let job_id = self.new_job_id();
        let plan = plan_job(&job_id, request)?;
        // Tasks first, then the job: the dispatcher only looks at jobs, so it never sees half a plan.
        for task in &plan.tasks {
            self.inner
                .state
                .put(&task_key(&task.id)?, encode(task)?)
                .await?;
        }
        self.inner
            .state
            .put(&job_key(&job_id), encode(&plan.job)?)
            .await?;
        tracing::info!(job = %job_id, tasks = plan.tasks.len(), priority = plan.job.priority, "job submitted");
        self.inner.dispatch.notify_one();
        Ok(job_id)
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

    async fn tasks(&self, job_id: &str) -> Result<Vec<TaskRecord>> {
        self.inner
            .state
            .list(&tasks_prefix(job_id))
            .await?
            .iter()
            .map(|(key, stored)| decode(key, &stored.value))
            .collect()
    }

    async fn jobs(&self) -> Result<Vec<JobRecord>> {
        self.inner
            .state
            .list(JOBS_PREFIX)
            .await?
            .iter()
            .map(|(key, stored)| decode(key, &stored.value))
            .collect()
    }

    /// A job's status with its tasks and their live progress.
    pub async fn status(&self, job_id: &str) -> Result<v1::JobStatus> {
        let (job, _) = self.job(job_id).await?;
        let tasks = self.tasks(job_id).await?;
        Ok(self.to_status(&job, &tasks))
    }

    fn to_status(&self, job: &JobRecord, tasks: &[TaskRecord]) -> v1::JobStatus {
        let progress = self
            .inner
            .progress
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default();
        v1::JobStatus {
            job_id: job.id.clone(),
            name: job.name.clone(),
            priority: job.priority,
            state: job.state.to_proto().into(),
            profile_name: job.profile_name.clone(),
            tasks: tasks
                .iter()
                .map(|task| {
                    let live = (task.state == TaskState::Running)
                        .then(|| progress.get(&task.id).cloned())
                        .flatten();
                    task.to_proto(live)
                })
                .collect(),
            blocklisted_workers: job.blocklist.clone(),
            submitted_unix_ms: job.submitted_unix_ms,
            plan_digest: job.plan_digest.clone(),
        }
    }

    /// Every job, oldest first, with its tasks.
    pub async fn list(&self) -> Result<Vec<v1::JobStatus>> {
        let mut jobs = self.jobs().await?;
        jobs.sort_by(|a, b| (a.submitted_unix_ms, &a.id).cmp(&(b.submitted_unix_ms, &b.id)));
        let mut statuses = Vec::new();
        for job in jobs {
            let tasks = self.tasks(&job.id).await?;
            statuses.push(self.to_status(&job, &tasks));
        }
        Ok(statuses)
    }

    /// Cancels a job: tasks not finished become cancelled at once; workers running one are told on
    /// their next progress report and stop.
    pub async fn cancel(&self, job_id: &str) -> Result<JobState> {
        let state = self
            .update_job(job_id, |job| {
                if job.state.is_final() {
                    return None;
                }
                job.state = JobState::Cancelled;
                Some(())
            })
            .await?;
        if state.is_some() {
            for task in self.tasks(job_id).await? {
                self.update_task(&task.id, |task| {
                    if task.state.is_final() {
                        return None;
                    }
                    task.state = TaskState::Cancelled;
                    Some(())
                })
                .await?;
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
                Some(cleared)
            })
            .await?
            .unwrap_or_default();
        self.changed(job_id);
        Ok(cleared)
    }

    /// Registered workers with the jobs each is blocklisted for.
    pub async fn workers(&self) -> Result<Vec<v1::WorkerStatus>> {
        let jobs = self.jobs().await?;
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

    async fn worker_records(&self) -> Result<Vec<WorkerRecord>> {
        self.inner
            .state
            .list(WORKERS_PREFIX)
            .await?
            .iter()
            .map(|(key, stored)| decode(key, &stored.value))
            .collect()
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

    /// Applies `change` to the task with compare-and-swap, as [`update_job`](Self::update_job).
    async fn update_task<T>(
        &self,
        task_id: &str,
        mut change: impl FnMut(&mut TaskRecord) -> Option<T>,
    ) -> Result<Option<T>> {
        let key = task_key(task_id)?;
        for _ in 0..SWAP_ATTEMPTS {
            let stored = self
                .inner
                .state
                .get(&key)
                .await?
                .ok_or_else(|| Error::TaskNotFound(task_id.to_owned()))?;
            let mut task: TaskRecord = decode(&key, &stored.value)?;
            let Some(outcome) = change(&mut task) else {
                return Ok(None);
            };
            if self
                .inner
                .state
                .swap(&key, Some(stored.revision), encode(&task)?)
                .await?
            {
                self.changed(&task.job_id);
                return Ok(Some(outcome));
            }
        }
        Err(Error::Contention {
            key,
            attempts: SWAP_ATTEMPTS,
        })
    }

    /// Ends the job once every task is final.
    async fn finish_job_if_done(&self, job_id: &str) -> Result<()> {
        let tasks = self.tasks(job_id).await?;
        if !tasks.iter().all(|t| t.state.is_final()) {
            return Ok(());
        }
        let failed = tasks
            .iter()
            .filter(|t| t.state != TaskState::Succeeded)
            .count();
        let outcome = if failed == 0 {
            JobState::Succeeded
        } else if failed == tasks.len() {
            JobState::Failed
        } else {
            JobState::CompletedWithFailures
        };
        let ended = self
            .update_job(job_id, |job| {
                if job.state.is_final() {
                    return None;
                }
                job.state = outcome;
                Some(())
            })
            .await?;
        if ended.is_some() {
            tracing::info!(job = %job_id, state = ?outcome, "job finished");
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------------
    // Dispatch.

    async fn publish(&self, task: &TaskRecord, job: &JobRecord) -> Result<()> {
        let message = task.to_task(&job.profile_toml);
        self.inner
            .queue
            .publish(QueueMessage {
                id: format!("{}#{}", task.id, task.attempts),
                payload: message.encode_to_vec().into(),
                headers: vec![(
                    crate::trace::TRACEPARENT.to_owned(),
                    crate::trace::traceparent(&job.id, &task.id, task.attempts),
                )],
            })
            .await
    }

    async fn republish_queued(&self) -> Result<()> {
        for job in self.jobs().await? {
            if job.state.is_final() {
                continue;
            }
            for task in self.tasks(&job.id).await? {
                if task.state == TaskState::Queued && task.attempts == 0 {
                    self.publish(&task, &job).await?;
                }
            }
        }
        Ok(())
    }

    /// Fails the pending graph tasks of a job whose needs failed (in task order, so that a failure
    /// reaches every task that depends on it in one pass), then ends the job if nothing is left.
    async fn fail_blocked(&self, job_id: &str, tasks: &mut [TaskRecord]) -> Result<()> {
        let mut failed = false;
        for position in 0..tasks.len() {
            if tasks[position].state != TaskState::Pending || !tasks[position].graph.is_graph() {
                continue;
            }
            let Readiness::Blocked(reason) = graph::readiness(&tasks[position], tasks) else {
                continue;
            };
            self.fail_pending(&tasks[position].id, &reason).await?;
            tasks[position].state = TaskState::Failed;
            tasks[position].last_error = reason;
            failed = true;
        }
        if failed {
            self.finish_job_if_done(job_id).await?;
        }
        Ok(())
    }

    /// Fails a task that never ran (a need failed, or its work could not be resolved).
    async fn fail_pending(&self, task_id: &str, reason: &str) -> Result<()> {
        let moved = self
            .update_task(task_id, |task| {
                (task.state == TaskState::Pending).then(|| {
                    task.state = TaskState::Failed;
                    task.last_error = reason.to_owned();
                })
            })
            .await?;
        if moved.is_some() {
            tracing::warn!(task = %task_id, %reason, "task failed before running");
        }
        Ok(())
    }

    /// Puts ready tasks on the queue while workers have room: highest priority first, and among jobs
    /// of equal priority the one with the fewest tasks queued or running (then the oldest). A task
    /// of a graph job is ready once every task it needs succeeded; its work is resolved from their
    /// outcomes as it goes on the queue. One whose need failed fails without running.
    pub async fn dispatch_ready(&self) -> Result<usize> {
        let slots: u32 = self.worker_records().await?.iter().map(|w| w.slots).sum();
        let mut jobs: Vec<(JobRecord, Vec<TaskRecord>)> = Vec::new();
        for job in self.jobs().await? {
            if job.state == JobState::Running {
                let mut tasks = self.tasks(&job.id).await?;
                self.fail_blocked(&job.id, &mut tasks).await?;
                if tasks.iter().all(|t| t.state.is_final()) {
                    // Every task failed before running (a graph job whose sources the client
                    // could not read): nothing else would end it.
                    self.finish_job_if_done(&job.id).await?;
                    continue;
                }
                jobs.push((job, tasks));
            }
        }
        let active = |tasks: &[TaskRecord]| {
            tasks
                .iter()
                .filter(|t| matches!(t.state, TaskState::Queued | TaskState::Running))
                .count()
        };
        let queued: usize = jobs
            .iter()
            .flat_map(|(_, tasks)| tasks)
            .filter(|t| t.state == TaskState::Queued)
            .count();
        let running: usize = jobs
            .iter()
            .flat_map(|(_, tasks)| tasks)
            .filter(|t| t.state == TaskState::Running)
            .count();
        let free = (slots as usize).saturating_sub(running).max(1);
        let room = (free + self.inner.settings.queue_ahead as usize).saturating_sub(queued);
        let mut published = 0;
        while published < room {
            let next = jobs
                .iter_mut()
                .filter(|(_, tasks)| first_ready(tasks).is_some())
                .min_by(|(a, a_tasks), (b, b_tasks)| {
                    (
                        std::cmp::Reverse(a.priority),
                        active(a_tasks),
                        a.submitted_unix_ms,
                    )
                        .cmp(&(
                            std::cmp::Reverse(b.priority),
                            active(b_tasks),
                            b.submitted_unix_ms,
                        ))
                });
            let Some((job, tasks)) = next else {
                break;
            };
            let Some(position) = first_ready(tasks) else {
                break;
            };
            let resolved = if tasks[position].graph.is_graph() {
                match graph::resolve_task(&tasks[position], tasks) {
                    Ok(resolved) => Some(resolved),
                    Err(error) => {
                        let reason = format!("{}: {error}", tasks[position].graph.label);
                        self.fail_pending(&tasks[position].id, &reason).await?;
                        tasks[position].state = TaskState::Failed;
                        self.fail_blocked(&job.id, tasks).await?;
                        self.finish_job_if_done(&job.id).await?;
                        continue;
                    }
                }
            } else {
                None
            };
            let task = &mut tasks[position];
            let moved = self
                .update_task(&task.id, |stored| {
                    (stored.state == TaskState::Pending).then(|| {
                        stored.state = TaskState::Queued;
                        if let Some((work_json, inputs)) = &resolved {
                            stored.graph.work_json.clone_from(work_json);
                            stored.graph.inputs.clone_from(inputs);
                        }
                        stored.clone()
                    })
                })
                .await?;
            task.state = TaskState::Queued;
            if let Some(stored) = moved {
                self.publish(&stored, job).await?;
                tracing::debug!(task = %stored.id, "task queued");
                published += 1;
            }
        }
        Ok(published)
    }

    // -----------------------------------------------------------------------------------------------
    // Worker reports.

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
        if job.blocklist.iter().any(|w| w == worker_id) {
            return Ok(StartVerdict::HandBack(format!(
                "worker {worker_id} is blocklisted for job {job_id}"
            )));
        }
        let max_attempts = self.inner.settings.max_attempts;
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
                if task.started_unix_ms == 0 {
                    task.started_unix_ms = record::unix_ms();
                }
                Some(StartVerdict::Run)
            })
            .await?
            .unwrap_or(StartVerdict::Run);
        match &verdict {
            StartVerdict::Run => {
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

    /// A worker's progress on a task; returns true when the task should stop (job cancelled).
    pub async fn progress(&self, task_id: &str, phase: &str, fraction: f64) -> Result<bool> {
        let job_id = record::job_of_task(task_id)?;
        if let Ok(mut progress) = self.inner.progress.lock() {
            progress.insert(task_id.to_owned(), (phase.to_owned(), fraction));
        }
        self.changed(job_id);
        let (job, _) = self.job(job_id).await?;
        Ok(job.state == JobState::Cancelled)
    }

    /// A worker finished a task and uploaded its files (a track's master, or a graph task's
    /// `outputs`): records it once every file is stored.
    pub async fn complete_task(
        &self,
        task_id: &str,
        worker_id: &str,
        output_digest: &str,
        report_json: &str,
        outputs: &[v1::OutputFile],
    ) -> Result<()> {
        let key = task_key(task_id)?;
        let stored = self
            .inner
            .state
            .get(&key)
            .await?
            .ok_or_else(|| Error::TaskNotFound(task_id.to_owned()))?;
        let is_graph = decode::<TaskRecord>(&key, &stored.value)?.graph.is_graph();
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
        self.update_task(task_id, |task| {
            if task.state.is_final() {
                return None;
            }
            task.state = TaskState::Succeeded;
            task.worker_id = worker_id.to_owned();
            task.output_digest = output_digest.to_owned();
            task.report_json = report_json.to_owned();
            task.graph.outputs.clone_from(&files);
            Some(())
        })
        .await?;
        if let Ok(mut progress) = self.inner.progress.lock() {
            progress.remove(task_id);
        }
        let job_id = record::job_of_task(task_id)?;
        self.update_job(job_id, |job| {
            job.consecutive_failures.remove(worker_id).map(|_| ())
        })
        .await?;
        tracing::info!(task = %task_id, worker = %worker_id, "task succeeded");
        self.finish_job_if_done(job_id).await?;
        self.inner.dispatch.notify_one();
        Ok(())
    }

    /// A worker failed a task: records the error, counts it against the worker, and returns true when
    /// the task is now failed for good (out of attempts).
    pub async fn fail_task(&self, task_id: &str, worker_id: &str, error: &str) -> Result<bool> {
        let max_attempts = self.inner.settings.max_attempts;
        let final_failure = self
            .update_task(task_id, |task| {
                if task.state.is_final() {
                    return Some(true);
                }
                task.last_error = error.to_owned();
                task.worker_id = worker_id.to_owned();
                if task.attempts >= max_attempts {
                    task.state = TaskState::Failed;
                    Some(true)
                } else {
                    task.state = TaskState::Queued;
                    Some(false)
                }
            })
            .await?
            .unwrap_or(true);
        if let Ok(mut progress) = self.inner.progress.lock() {
            progress.remove(task_id);
        }
        let job_id = record::job_of_task(task_id)?;
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
        tracing::warn!(task = %task_id, worker = %worker_id, %error, final_failure, "task attempt failed");
        if blocklisted {
            tracing::warn!(job = %job_id, worker = %worker_id, "worker blocklisted for the job");
        }
        if final_failure {
            self.finish_job_if_done(job_id).await?;
            self.inner.dispatch.notify_one();
        }
        Ok(final_failure)
    }
}

/// The position of the first pending task that can go on the queue: a track's render, or a graph
/// task whose needs all succeeded.
fn first_ready(tasks: &[TaskRecord]) -> Option<usize> {
    tasks.iter().position(|task| {
        task.state == TaskState::Pending
            && (!task.graph.is_graph() || graph::readiness(task, tasks) == Readiness::Ready)
    })
}
