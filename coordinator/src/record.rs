//! What the coordinator keeps in the state store, as JSON: jobs, tasks and worker registrations.
//!
//! Keys:
//! - `jobs/{job}`: the job (its profile, state, blocklist);
//! - `counts/{job}`: its tasks counted by state ([`TaskCounts`]), changed in the same transaction as
//!   each task's transition, so a job's progress is one small read;
//! - `tasks/{job}/{index:07}`: a task; its id is `{job}.{index:07}`, so its key follows from it;
//! - `by_state/{job}/{state}/{index:07}`: an empty key per task in its current state, moved in the
//!   same transaction, so "the pending tasks" or "the failed tasks" is a page read, not a scan;
//! - `active/{job}`: an empty key per job not finished, removed with the job's final state;
//! - `submitting/{job}`: a job whose tasks are being written (a coordinator that stopped halfway
//!   leaves it; the next one removes the half-written tasks);
//! - `idempotency/{key}`: the job a submission key created;
//! - `finished/{unix_ms}/{job}`: the retention index of finished jobs not pinned, oldest first;
//! - `blob_refs/{digest}/{job}`: a job's reference to a blob, written with the task (or job)
//!   that names it, so a blob is removed only when no job refers to it;
//! - `workers/{worker}`: a worker's registration, under its lease.

use std::collections::BTreeMap;

use lathe_proto::v1;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A job's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Some tasks are not finished.
    Running,
    /// Every task succeeded.
    Succeeded,
    /// Every task finished; some failed.
    CompletedWithFailures,
    /// Every task failed.
    Failed,
    /// Cancelled by a client.
    Cancelled,
    /// Stopped by a client: no task of it starts until it is resumed.
    Suspended,
}

impl JobState {
    /// True once the job has ended (a retry may start it again).
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Running | Self::Suspended)
    }

    /// The protocol's value.
    pub fn to_proto(self) -> v1::JobState {
        match self {
            Self::Running => v1::JobState::Running,
            Self::Succeeded => v1::JobState::Succeeded,
            Self::CompletedWithFailures => v1::JobState::CompletedWithFailures,
            Self::Failed => v1::JobState::Failed,
            Self::Cancelled => v1::JobState::Cancelled,
            Self::Suspended => v1::JobState::Suspended,
        }
    }
}

/// A task's lifecycle (also `lathe status --state`'s values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Planned, not on the queue yet.
    Pending,
    /// On the queue (first time, or handed back for another attempt).
    Queued,
    /// A worker is running it.
    Running,
    /// The master is stored.
    Succeeded,
    /// Out of attempts; `last_error` says why.
    Failed,
    /// Its job was cancelled.
    Cancelled,
}

impl TaskState {
    /// True once the task can change no more.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// Its name in keys and on the command line: `pending`, `queued`, ...
    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// From the protocol's value (`None` for unspecified: no state in particular).
    pub fn from_proto(state: v1::TaskState) -> Option<Self> {
        match state {
            v1::TaskState::Unspecified => None,
            v1::TaskState::Pending => Some(Self::Pending),
            v1::TaskState::Queued => Some(Self::Queued),
            v1::TaskState::Running => Some(Self::Running),
            v1::TaskState::Succeeded => Some(Self::Succeeded),
            v1::TaskState::Failed => Some(Self::Failed),
            v1::TaskState::Cancelled => Some(Self::Cancelled),
        }
    }

    /// Every state, in lifecycle order.
    pub const ALL: [Self; 6] = [
        Self::Pending,
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The protocol's value.
    pub fn to_proto(self) -> v1::TaskState {
        match self {
            Self::Pending => v1::TaskState::Pending,
            Self::Queued => v1::TaskState::Queued,
            Self::Running => v1::TaskState::Running,
            Self::Succeeded => v1::TaskState::Succeeded,
            Self::Failed => v1::TaskState::Failed,
            Self::Cancelled => v1::TaskState::Cancelled,
        }
    }
}

/// A job's tasks counted by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCounts {
    /// Not on the queue yet.
    pub pending: u32,
    /// On the queue.
    pub queued: u32,
    /// Being run.
    pub running: u32,
    /// Succeeded (QC-failed ones included).
    pub succeeded: u32,
    /// Failed for good.
    pub failed: u32,
    /// Cancelled.
    pub cancelled: u32,
    /// Succeeded with a master that failed QC.
    pub qc_failed: u32,
}

impl TaskCounts {
    /// Each counts shard's counts of these tasks, by shard (only the shards that hold a task).
    pub fn by_shard<'a>(
        tasks: impl IntoIterator<Item = &'a TaskRecord>,
    ) -> std::collections::BTreeMap<u32, Self> {
        let mut shards = std::collections::BTreeMap::<u32, Self>::new();
        for task in tasks {
            let counts = shards.entry(count_shard(task.index)).or_default();
            *counts.of(task.state) += 1;
            counts.qc_failed += u32::from(task.qc_failed);
        }
        shards
    }

    /// Adds `other`'s counts to these (the shards of a job summed).
    pub fn add(&mut self, other: &Self) {
        self.pending += other.pending;
        self.queued += other.queued;
        self.running += other.running;
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.cancelled += other.cancelled;
        self.qc_failed += other.qc_failed;
    }

    fn of(&mut self, state: TaskState) -> &mut u32 {
        match state {
            TaskState::Pending => &mut self.pending,
            TaskState::Queued => &mut self.queued,
            TaskState::Running => &mut self.running,
            TaskState::Succeeded => &mut self.succeeded,
            TaskState::Failed => &mut self.failed,
            TaskState::Cancelled => &mut self.cancelled,
        }
    }

    /// Counts a task that went from `before` to `after` (either with its QC flag).
    pub fn moved(&mut self, before: (TaskState, bool), after: (TaskState, bool)) {
        let slot = self.of(before.0);
        *slot = slot.saturating_sub(1);
        *self.of(after.0) += 1;
        self.qc_failed = (self.qc_failed + u32::from(after.1)).saturating_sub(u32::from(before.1));
    }

    /// Tasks not finished.
    pub fn unfinished(&self) -> u32 {
        self.pending + self.queued + self.running
    }

    /// Tasks on the queue or running.
    pub fn active(&self) -> u32 {
        self.queued + self.running
    }

    /// Every task.
    pub fn total(&self) -> u32 {
        self.unfinished() + self.succeeded + self.failed + self.cancelled
    }

    /// The protocol's value.
    pub fn to_proto(&self) -> v1::TaskCounts {
        v1::TaskCounts {
            pending: self.pending,
            queued: self.queued,
            running: self.running,
            succeeded: self.succeeded,
            failed: self.failed,
            cancelled: self.cancelled,
            qc_failed: self.qc_failed,
        }
    }
}

/// A job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Job id.
    pub id: String,
    /// Name given at submission.
    pub name: String,
    /// Higher runs first.
    pub priority: i32,
    /// The job's profile, TOML.
    pub profile_toml: String,
    /// The profile's name.
    pub profile_name: String,
    /// Lifecycle.
    pub state: JobState,
    /// Milliseconds since the Unix epoch.
    pub submitted_unix_ms: u64,
    /// How many tasks it has.
    pub task_count: u32,
    /// Per worker: tasks of this job it failed in a row.
    #[serde(default)]
    pub consecutive_failures: BTreeMap<String, u32>,
    /// Workers that get no more tasks of this job.
    #[serde(default)]
    pub blocklist: Vec<String>,
    /// A graph job's plan blob, as the client submitted it (empty for a job of tracks).
    #[serde(default)]
    pub plan_digest: String,
    /// Why no worker may take the job's tasks (every registered worker is blocklisted for it);
    /// empty while it runs.
    #[serde(default)]
    pub paused_reason: String,
    /// When it reached its final state (milliseconds since the Unix epoch); 0 while it runs.
    #[serde(default)]
    pub finished_unix_ms: u64,
    /// Kept by retention whatever its age.
    #[serde(default)]
    pub pinned: bool,
    /// The submission's idempotency key (empty for none), removed with the job.
    #[serde(default)]
    pub idempotency_key: String,
    /// The name of the token that submitted it (empty for a job from before tokens).
    #[serde(default)]
    pub owner: String,
    /// The trace context of the job's span (W3C `traceparent`, `tracestate`; empty when spans
    /// are not exported): every task dispatched, by this coordinator or a later one, is its child.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trace_context: Vec<(String, String)>,
}

/// One task of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// `{job}.{index:07}`.
    pub id: String,
    /// The job.
    pub job_id: String,
    /// Position in the job.
    pub index: u32,
    /// What to run (`render`).
    pub kind: String,
    /// The source blob.
    pub source_digest: String,
    /// The source's file name.
    pub source_name: String,
    /// The master's file name.
    pub output_name: String,
    /// A per-track profile (TOML), or empty for the job's.
    pub profile_toml: String,
    /// Lifecycle.
    pub state: TaskState,
    /// The worker running it, or that ran it last.
    pub worker_id: String,
    /// Attempts started.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub last_error: String,
    /// The master blob, once succeeded.
    pub output_digest: String,
    /// The engine's track report (JSON), once succeeded.
    pub report_json: String,
    /// Tags for the master: the engine's `TrackTags` as JSON, or empty for none.
    #[serde(default)]
    pub tags_json: String,
    /// When its first attempt started running (milliseconds since the Unix epoch), or 0.
    #[serde(default)]
    pub started_unix_ms: u64,
    /// Succeeded, but its master (or a file of its outcome) failed the quality checks.
    #[serde(default)]
    pub qc_failed: bool,
    /// Times it went on the queue from `pending` (a paused job's tasks go back to `pending`); part
    /// of the queue message's id, so that a task queued again is not taken for a duplicate.
    #[serde(default)]
    pub queued_count: u32,
    /// Which delivery of its queue message its current attempt came from: at the queue's
    /// delivery limit, no redelivery will follow if the attempt is lost.
    #[serde(default)]
    pub deliveries: u32,
    /// When its current (or last) attempt started (milliseconds since the Unix epoch), or 0: the
    /// reconciler ends an attempt older than the task time limit.
    #[serde(default)]
    pub attempt_started_unix_ms: u64,
    /// BLAKE3 of the token of its current (or last) attempt: calls about the task must present
    /// the token.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub attempt_token_hash: String,
    /// A graph task's part: empty for a track's render.
    #[serde(flatten)]
    pub graph: GraphPart,
}

/// What a task of a graph job has besides the common fields: its work, its sources, the tasks it
/// needs and its files.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GraphPart {
    /// What a person sees in a status table.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label: String,
    /// The model's `delivery::plan::Work` as JSON: as planned, then resolved when the task is queued.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub work_json: String,
    /// The source blobs it reads, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_digests: Vec<String>,
    /// Their file names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_names: Vec<String>,
    /// Indexes of the tasks that must succeed first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<u32>,
    /// Indexes of the tasks whose files are its inputs, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs_from: Vec<u32>,
    /// Its inputs (the files of `inputs_from`), set when it is queued.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<OutputRecord>,
    /// The files it wrote, once succeeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<OutputRecord>,
}

impl GraphPart {
    /// True for a task of a graph job.
    pub fn is_graph(&self) -> bool {
        !self.work_json.is_empty()
    }
}

/// A file a graph task wrote, stored as a blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRecord {
    /// Relative to the delivery folder, `/`-separated.
    pub path: String,
    /// The blob.
    pub digest: String,
    /// False for an intermediate another task reads.
    pub delivered: bool,
}

impl OutputRecord {
    /// The protocol's value.
    pub fn to_proto(&self) -> v1::OutputFile {
        v1::OutputFile {
            path: self.path.clone(),
            digest: self.digest.clone(),
            delivered: self.delivered,
        }
    }

    /// From the protocol's value.
    pub fn from_proto(file: &v1::OutputFile) -> Self {
        Self {
            path: file.path.clone(),
            digest: file.digest.clone(),
            delivered: file.delivered,
        }
    }
}

/// A worker's registration (under its lease).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// Worker id.
    pub id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Tasks it runs at once.
    pub slots: u32,
    /// Tasks it is running.
    pub current_tasks: Vec<String>,
    /// Milliseconds since the Unix epoch.
    pub heartbeat_unix_ms: u64,
}

/// `jobs/{job}`.
pub fn job_key(job_id: &str) -> String {
    format!("jobs/{job_id}")
}

/// `tasks/{job}/`: the prefix of a job's tasks.
pub fn tasks_prefix(job_id: &str) -> String {
    format!("tasks/{job_id}/")
}

/// How many keys a job's counts are spread over. Each holds the counts of the tasks whose index
/// is its number modulo this, so that two transitions of one job conflict only when their tasks
/// share a shard (a transition checks its shard's revision), and a read of the whole counts
/// is one range read of this many keys.
pub const COUNT_SHARDS: u32 = 16;

/// `counts/{job}/`: the prefix of a job's counts shards.
pub fn counts_prefix(job_id: &str) -> String {
    format!("counts/{job_id}/")
}

/// `counts/{job}/{shard}`: the counts of the job's tasks in `shard`.
pub fn counts_key(job_id: &str, shard: u32) -> String {
    format!("counts/{job_id}/{shard:02}")
}

/// The counts shard of task `index`.
pub fn count_shard(index: u32) -> u32 {
    index % COUNT_SHARDS
}

/// `by_state/{job}/`: the prefix of a job's state index.
pub fn by_state_root(job_id: &str) -> String {
    format!("by_state/{job_id}/")
}

/// `by_state/{job}/{state}/`: the prefix of a job's tasks in `state`.
pub fn by_state_prefix(job_id: &str, state: TaskState) -> String {
    format!("by_state/{job_id}/{}/", state.name())
}

/// The state-index key of a task in `state`.
pub fn by_state_key(task_id: &str, state: TaskState) -> Result<String> {
    let (job, index) = split_task_id(task_id)?;
    Ok(format!("{}{index}", by_state_prefix(job, state)))
}

/// `by_state/{job}/qc_failed/`: the prefix of a job's succeeded tasks whose master (or a file of
/// whose outcome) failed QC, kept beside the state index in the same transactions.
pub fn qc_failed_prefix(job_id: &str) -> String {
    format!("by_state/{job_id}/qc_failed/")
}

/// The QC-failure index key of a task.
pub fn qc_failed_key(task_id: &str) -> Result<String> {
    let (job, index) = split_task_id(task_id)?;
    Ok(format!("{}{index}", qc_failed_prefix(job)))
}

/// The task id a state-index key stands for.
pub fn task_of_by_state_key(key: &str) -> Option<String> {
    let rest = key.strip_prefix("by_state/")?;
    let (job, rest) = rest.split_once('/')?;
    let (_, index) = rest.split_once('/')?;
    Some(format!("{job}.{index}"))
}

/// `active/{job}`.
pub fn active_key(job_id: &str) -> String {
    format!("{ACTIVE_PREFIX}{job_id}")
}

/// `submitting/{job}`.
pub fn submitting_key(job_id: &str) -> String {
    format!("{SUBMITTING_PREFIX}{job_id}")
}

/// `idempotency/{key}`.
pub fn idempotency_key(key: &str) -> String {
    format!("idempotency/{key}")
}

/// The prefix of the jobs not finished.
pub const ACTIVE_PREFIX: &str = "active/";
/// The prefix of the jobs being submitted.
pub const SUBMITTING_PREFIX: &str = "submitting/";

/// `finished/{unix_ms:013}/{job}`: a finished job in the retention index, oldest first. A pinned
/// job has none.
pub fn finished_key(job: &JobRecord) -> String {
    format!("{FINISHED_PREFIX}{:013}/{}", job.finished_unix_ms, job.id)
}

/// The job a retention-index key stands for, and when it finished.
pub fn job_of_finished_key(key: &str) -> Option<(u64, &str)> {
    let (ms, job) = key.strip_prefix(FINISHED_PREFIX)?.split_once('/')?;
    Some((ms.parse().ok()?, job))
}

/// The prefix of the retention index.
pub const FINISHED_PREFIX: &str = "finished/";

/// `blob_refs/{digest}/{job}`: the job refers to the blob (a source, a plan or an output), so it
/// is kept. A blob with no key under [`blob_refs_prefix`] may be removed.
pub fn blob_ref_key(digest: &str, job_id: &str) -> String {
    format!("{}{job_id}", blob_refs_prefix(digest))
}

/// `blob_refs/{digest}/`: the jobs that refer to a blob.
pub fn blob_refs_prefix(digest: &str) -> String {
    format!("blob_refs/{digest}/")
}

/// `{job}.{index:07}`: seven digits keep ten million tasks of a job in key order.
pub fn task_id(job_id: &str, index: u32) -> String {
    format!("{job_id}.{index:07}")
}

fn split_task_id(task_id: &str) -> Result<(&str, &str)> {
    task_id
        .rsplit_once('.')
        .ok_or_else(|| Error::TaskNotFound(task_id.to_owned()))
}

/// The key of a task, from its id.
pub fn task_key(task_id: &str) -> Result<String> {
    let (job, index) = split_task_id(task_id)?;
    Ok(format!("tasks/{job}/{index}"))
}

/// The index of a task in its job, from its id.
pub fn index_of_task(task_id: &str) -> Result<u32> {
    split_task_id(task_id)?
        .1
        .parse()
        .map_err(|_| Error::TaskNotFound(task_id.to_owned()))
}

/// The job of a task, from its id.
pub fn job_of_task(task_id: &str) -> Result<&str> {
    split_task_id(task_id).map(|(job, _)| job)
}

/// `workers/{worker}`.
pub fn worker_key(worker_id: &str) -> String {
    format!("workers/{worker_id}")
}

/// The prefix of worker registrations.
pub const WORKERS_PREFIX: &str = "workers/";
/// The prefix of jobs.
pub const JOBS_PREFIX: &str = "jobs/";

/// Encodes a record.
pub fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(record).map_err(|e| Error::InvalidRequest(e.to_string()))
}

/// Decodes the record at `key`.
pub fn decode<T: for<'de> Deserialize<'de>>(key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::CorruptRecord {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

impl TaskRecord {
    /// Every blob the task refers to: its sources and, once it succeeded, its outputs (its inputs
    /// are other tasks' outputs, referred to by those).
    pub fn blob_digests(&self) -> impl Iterator<Item = &str> {
        [self.source_digest.as_str(), self.output_digest.as_str()]
            .into_iter()
            .chain(self.graph.source_digests.iter().map(String::as_str))
            .chain(self.graph.outputs.iter().map(|file| file.digest.as_str()))
            .filter(|digest| !digest.is_empty())
    }

    /// The protocol's view, with live progress if any.
    pub fn to_proto(&self, progress: Option<(String, f64)>) -> v1::TaskStatus {
        let (phase, fraction) = progress.unwrap_or_default();
        v1::TaskStatus {
            task_id: self.id.clone(),
            kind: self.kind.clone(),
            source_name: self.source_name.clone(),
            output_name: self.output_name.clone(),
            state: self.state.to_proto().into(),
            worker_id: self.worker_id.clone(),
            attempts: self.attempts,
            last_error: self.last_error.clone(),
            output_digest: self.output_digest.clone(),
            report_json: self.report_json.clone(),
            phase,
            fraction,
            started_unix_ms: self.started_unix_ms,
            label: self.graph.label.clone(),
            outputs: self
                .graph
                .outputs
                .iter()
                .map(OutputRecord::to_proto)
                .collect(),
            needs: self.graph.needs.clone(),
            qc_failed: self.qc_failed,
            progress_only: false,
        }
    }

    /// The message published on the work queue for it (a graph task's profiles are in its work).
    pub fn to_task(&self, job_profile_toml: &str) -> v1::Task {
        v1::Task {
            task_id: self.id.clone(),
            job_id: self.job_id.clone(),
            kind: self.kind.clone(),
            source_digest: self.source_digest.clone(),
            source_name: self.source_name.clone(),
            output_name: self.output_name.clone(),
            profile_toml: if self.graph.is_graph() {
                String::new()
            } else if self.profile_toml.is_empty() {
                job_profile_toml.to_owned()
            } else {
                self.profile_toml.clone()
            },
            tags_json: self.tags_json.clone(),
            label: self.graph.label.clone(),
            work_json: self.graph.work_json.clone(),
            source_digests: self.graph.source_digests.clone(),
            source_names: self.graph.source_names.clone(),
            inputs: self
                .graph
                .inputs
                .iter()
                .map(OutputRecord::to_proto)
                .collect(),
            // Filled in when the task is published (`Coordinator::publish`), from the blob store.
            fetch_bytes: 0,
        }
    }

    /// The blobs a worker fetches to run it: its source, or a graph task's sources and inputs.
    pub fn fetched_digests(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.source_digest.as_str())
            .chain(self.graph.source_digests.iter().map(String::as_str))
            .chain(self.graph.inputs.iter().map(|file| file.digest.as_str()))
            .filter(|digest| !digest.is_empty())
    }
}

impl WorkerRecord {
    /// The protocol's view.
    pub fn to_proto(&self, blocklisted_for: Vec<String>) -> v1::WorkerStatus {
        v1::WorkerStatus {
            worker_id: self.id.clone(),
            host: self.host.clone(),
            pid: self.pid,
            slots: self.slots,
            current_tasks: self.current_tasks.clone(),
            heartbeat_unix_ms: self.heartbeat_unix_ms,
            blocklisted_for,
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
