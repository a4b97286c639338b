//! The dispatcher: puts ready tasks on the queue while workers have room, highest priority first
//! and, among jobs of equal priority, the one with the fewest tasks queued or running (then the
//! oldest).
//!
//! Its work per pass is bounded whatever the catalogue:
//! - the workers and the active jobs, one read each, and each active job's counts (one range read
//!   of its [`COUNT_SHARDS`](crate::record::COUNT_SHARDS) keys);
//! - for each job it takes tasks from, windows of its pending index of [`WINDOW`] task indexes
//!   each, from the lowest index that may be pending ([`PendingFloors`]). etcd counts every key of
//!   the range a read names, whatever its limit, so a read of "the first 64 pending keys" of a job
//!   of 100,000 pending tasks would cost as much as reading them all;
//! - the records of the tasks a window names, in one multi-key read;
//! - one transaction per job (per [`BATCH`](super::batch::BATCH) tasks) that moves its tasks to
//!   `queued` with their index keys and counts, then one publish per task.

use std::collections::{HashMap, VecDeque};

use tracing::Instrument;

use super::{Coordinator, every_worker_blocklisted};
use crate::error::{Error, Result};
use crate::graph::{self, Readiness};
use crate::metrics::FarmSnapshot;
use crate::queue::QueueMessage;
use crate::record::{
    self, JobRecord, JobState, OutputRecord, TaskCounts, TaskRecord, TaskState, by_state_prefix,
    decode, task_key,
};

/// Task indexes per read of a job's pending index.
const WINDOW: u32 = 1_024;

/// The most index keys one read of a window returns.
const INDEX_PAGE: usize = 64;

/// The most windows and index keys of one job the dispatcher reads in one pass: a graph job whose
/// first pending tasks all wait for their needs costs a bounded read, and the next pass goes on
/// from the first of them (the tasks ahead will have moved by then).
const DISPATCH_SCAN_BUDGET: usize = 512;

/// The lowest task index of each job that may still be pending, kept in memory so that a pass
/// starts where the last one stopped instead of at the job's first task. Every transition to
/// `pending` lowers it ([`lower`](Self::lower)); a job the map does not know (the coordinator
/// started, or the floor was dropped) is found with one unbounded read of its pending index.
#[derive(Debug, Default)]
pub(super) struct PendingFloors {
    floors: HashMap<String, u32>,
    /// The lowest index lowered to since the job's current pass began, which that pass's end
    /// must not raise the floor above.
    lowered_during_pass: HashMap<String, u32>,
}

impl PendingFloors {
    /// Task `index` of `job_id` went back to `pending`.
    pub(super) fn lower(&mut self, job_id: &str, index: u32) {
        if let Some(floor) = self.floors.get_mut(job_id) {
            *floor = (*floor).min(index);
        }
        self.lowered_during_pass
            .entry(job_id.to_owned())
            .and_modify(|lowest| *lowest = (*lowest).min(index))
            .or_insert(index);
    }

    /// The floor of a job as a pass begins (`None`: not known).
    fn begin(&mut self, job_id: &str) -> Option<u32> {
        self.lowered_during_pass.remove(job_id);
        self.floors.get(job_id).copied()
    }

    /// Records where the pass found the job's first pending task not queued; `None` forgets the
    /// floor (the next pass looks it up).
    fn end(&mut self, job_id: &str, floor: Option<u32>) {
        let lowered = self.lowered_during_pass.remove(job_id);
        match floor {
            Some(floor) => {
                let floor = lowered.map_or(floor, |lowered| floor.min(lowered));
                self.floors.insert(job_id.to_owned(), floor);
            }
            None => {
                self.floors.remove(job_id);
            }
        }
    }

    /// Forgets the jobs not in `active`.
    fn retain(&mut self, active: &[DispatchJob]) {
        self.floors
            .retain(|job_id, _| active.iter().any(|job| job.record.id == *job_id));
    }
}

/// A running job as one dispatch pass sees it.
struct DispatchJob {
    record: JobRecord,
    /// Its counts at the start of the pass, plus what the pass queued.
    counts: TaskCounts,
    /// Its pending tasks read and not looked at yet, with their revisions, in index order.
    unread: VecDeque<(TaskRecord, i64)>,
    /// The next task index of the pending index to read.
    cursor: u32,
    /// The pending index has no more keys (or the floor was not known and none was found).
    index_ended: bool,
    /// Index reads and keys so far in this pass.
    scanned: usize,
    /// The lowest index of a pending task the pass looked at and left (a graph task waiting).
    first_left: Option<u32>,
    /// Nothing more to queue from it in this pass.
    exhausted: bool,
    /// Some task failed before running (so the job may be over).
    failed_any: bool,
    /// The tasks this pass queues, with their revisions and a graph task's resolved work.
    batch: Vec<ReadyTask>,
    /// How many tasks the pass chose of it.
    batch_len: usize,
    /// Its number of tasks (their indexes run from 0 to this).
    tasks: u32,
}

impl DispatchJob {
    /// Where the next pass should start: the first task this one left pending.
    fn floor(&self) -> u32 {
        let unread = self.unread.front().map(|(task, _)| task.index);
        [self.first_left, unread, Some(self.cursor)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(self.cursor)
    }
}

/// A task that can go on the queue: its record as read, with its revision, and a graph task's
/// resolved work and inputs.
struct ReadyTask {
    task: TaskRecord,
    revision: i64,
    resolved: Option<(String, Vec<OutputRecord>)>,
}

/// The pending-index key of task `index` of a job: the bound of a window.
fn pending_index_key(job_id: &str, index: u32) -> String {
    format!("{}{index:07}", by_state_prefix(job_id, TaskState::Pending))
}

impl Coordinator {
    /// Puts `task` on the queue, in a `dispatch` span under its job's (so the worker's spans of the
    /// task join the job's trace).
    pub(super) async fn publish(&self, task: &TaskRecord, job: &JobRecord) -> Result<()> {
        let span = tracing::info_span!(
            "dispatch",
            lathe.job.id = %job.id,
            lathe.task.id = %task.id,
            lathe.track = %task.source_name,
            lathe.attempt = task.attempts,
        );
        crate::trace::follow_headers(&span, &job.trace_context);
        let mut message = task.to_task(&job.profile_toml);
        message.fetch_bytes = self.fetch_bytes(task).await;
        let publish = self.inner.queue.publish(QueueMessage {
            id: format!("{}#{}.{}", task.id, task.attempts, task.queued_count),
            payload: prost::Message::encode_to_vec(&message).into(),
            headers: crate::trace::context_headers(&span),
        });
        publish.instrument(span).await
    }

    /// The bytes of the blobs a worker fetches to run `task` (one size read each), so that a
    /// worker short of scratch room can leave it to another before it starts; a blob the store
    /// cannot size counts as 0 (the worker's fetch reports what is wrong with it).
    async fn fetch_bytes(&self, task: &TaskRecord) -> u64 {
        let mut total = 0u64;
        for digest in task.fetched_digests() {
            let size = match crate::blob::Digest::parse(digest) {
                Ok(digest) => self.inner.blobs.size(&digest).await,
                Err(error) => Err(error),
            };
            match size {
                Ok(bytes) => total = total.saturating_add(bytes),
                Err(error) => {
                    tracing::debug!(task = %task.id, %digest, %error, "blob size unknown");
                }
            }
        }
        total
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

    /// The first pending index of a job whose floor is not known: one read of its pending index
    /// (etcd counts the whole range, once).
    async fn find_floor(&self, job_id: &str) -> Result<Option<u32>> {
        let page = self
            .inner
            .state
            .page(&by_state_prefix(job_id, TaskState::Pending), None, 1)
            .await?;
        Ok(page
            .entries
            .first()
            .and_then(|(key, _)| key.rsplit_once('/'))
            .and_then(|(_, index)| index.parse().ok()))
    }

    /// Reads the next window of a job's pending index (or the next page of the current one) and
    /// the records of the tasks it names.
    async fn read_pending(&self, job: &mut DispatchJob) -> Result<()> {
        let job_id = job.record.id.clone();
        let end = job.cursor.saturating_add(WINDOW);
        let after = job
            .cursor
            .checked_sub(1)
            .map(|index| pending_index_key(&job_id, index));
        let page = self
            .inner
            .state
            .page_range(
                &by_state_prefix(&job_id, TaskState::Pending),
                after.as_deref(),
                Some(&pending_index_key(&job_id, end)),
                INDEX_PAGE,
            )
            .await?;
        job.scanned += page.entries.len().max(1);
        let indexes: Vec<u32> = page
            .entries
            .iter()
            .filter_map(|(key, _)| key.rsplit_once('/'))
            .filter_map(|(_, index)| index.parse().ok())
            .collect();
        job.cursor = match (page.next.is_some(), indexes.last()) {
            (true, Some(&last)) => last + 1,
            _ => end,
        };
        job.index_ended = job.cursor >= job.tasks;
        let ids: Vec<String> = indexes
            .iter()
            .map(|&index| record::task_id(&job_id, index))
            .collect();
        let keys = ids
            .iter()
            .map(|id| task_key(id))
            .collect::<Result<Vec<_>>>()?;
        for (key, stored) in keys.iter().zip(self.inner.state.get_many(&keys).await?) {
            // A task gone or moved on since the index was read is passed over.
            let Some(stored) = stored else { continue };
            let task: TaskRecord = decode(key, &stored.value)?;
            if task.state == TaskState::Pending {
                job.unread.push_back((task, stored.revision));
            }
        }
        Ok(())
    }

    /// The next pending task of `job` that can go on the queue, with its work resolved when it is
    /// a graph task. Graph tasks whose needs failed are failed on the way; those still waiting
    /// are passed over. Reads at most [`DISPATCH_SCAN_BUDGET`] index keys over the whole pass.
    async fn next_ready(&self, job: &mut DispatchJob) -> Result<Option<ReadyTask>> {
        loop {
            let Some((task, revision)) = job.unread.pop_front() else {
                if job.index_ended || job.scanned >= DISPATCH_SCAN_BUDGET {
                    return Ok(None);
                }
                self.read_pending(job).await?;
                continue;
            };
            if !task.graph.is_graph() {
                return Ok(Some(ReadyTask {
                    task,
                    revision,
                    resolved: None,
                }));
            }
            let mut needs = Vec::with_capacity(task.graph.needs.len());
            for &need in &task.graph.needs {
                match self.task(&job.record.id, need).await {
                    Ok(needed) => needs.push(needed),
                    Err(Error::TaskNotFound(_)) => {}
                    Err(error) => return Err(error),
                }
            }
            match graph::readiness(&task, &needs) {
                Readiness::Waiting => {
                    job.first_left = Some(job.first_left.unwrap_or(task.index).min(task.index));
                }
                Readiness::Blocked(reason) => {
                    self.fail_pending(&task.id, &reason).await?;
                    job.failed_any = true;
                }
                Readiness::Ready => match graph::resolve_task(&task, &needs) {
                    Ok(resolved) => {
                        return Ok(Some(ReadyTask {
                            task,
                            revision,
                            resolved: Some(resolved),
                        }));
                    }
                    Err(error) => {
                        let reason = format!("{}: {error}", task.graph.label);
                        self.fail_pending(&task.id, &reason).await?;
                        job.failed_any = true;
                    }
                },
            }
        }
    }

    /// The running jobs the dispatcher may take tasks from, with their counts; pauses a job no
    /// worker may take and ends one with nothing left to run.
    async fn dispatch_jobs(&self, workers: &[record::WorkerRecord]) -> Result<Vec<DispatchJob>> {
        let mut jobs = Vec::new();
        for job in self.active_jobs().await? {
            if job.state != JobState::Running {
                continue;
            }
            if every_worker_blocklisted(&job, workers) {
                if job.paused_reason.is_empty() {
                    self.pause(&job).await?;
                }
                continue;
            }
            let counts = self.counts(&job.id).await?;
            if counts.unfinished() == 0 {
                // Every task failed before running (a graph job whose sources the client
                // could not read): nothing else would end it.
                self.finish_job_if_done(&job.id).await?;
                continue;
            }
            jobs.push(DispatchJob {
                record: job,
                counts,
                unread: VecDeque::new(),
                cursor: 0,
                index_ended: false,
                scanned: 0,
                first_left: None,
                exhausted: counts.pending == 0,
                failed_any: false,
                batch: Vec::new(),
                batch_len: 0,
                tasks: counts.total(),
            });
        }
        Ok(jobs)
    }

    /// Puts ready tasks on the queue while workers have room: highest priority first, and among jobs
    /// of equal priority the one with the fewest tasks queued or running (then the oldest). A task
    /// of a graph job is ready once every task it needs succeeded; its work is resolved from their
    /// outcomes as it goes on the queue. One whose need failed fails without running. Returns how
    /// many tasks it published.
    pub async fn dispatch_ready(&self) -> Result<usize> {
        let workers = self.worker_records().await?;
        let slots: u32 = workers.iter().map(|w| w.slots).sum();
        let mut jobs = self.dispatch_jobs(&workers).await?;
        let queued: u32 = jobs.iter().map(|job| job.counts.queued).sum();
        let running: u32 = jobs.iter().map(|job| job.counts.running).sum();
        self.inner.metrics.set_snapshot(FarmSnapshot {
            jobs: jobs
                .iter()
                .map(|job| (job.record.id.clone(), job.counts))
                .collect(),
            slots_total: u64::from(slots),
            slots_busy: u64::from(running),
            workers: workers.len() as u64,
        });
        let free = (slots as usize).saturating_sub(running as usize).max(1);
        let room =
            (free + self.inner.settings.queue_ahead as usize).saturating_sub(queued as usize);
        if room == 0 {
            return Ok(0);
        }
        {
            let mut floors = self.floors()?;
            floors.retain(&jobs);
            for job in &mut jobs {
                job.cursor = floors.begin(&job.record.id).unwrap_or(u32::MAX);
            }
        }
        let mut chosen = 0;
        while chosen < room {
            let Some(job) = jobs
                .iter_mut()
                .filter(|job| !job.exhausted)
                .min_by_key(|job| {
                    (
                        std::cmp::Reverse(job.record.priority),
                        job.counts.active(),
                        job.record.submitted_unix_ms,
                    )
                })
            else {
                break;
            };
            if job.cursor == u32::MAX {
                match self.find_floor(&job.record.id).await? {
                    Some(floor) => job.cursor = floor,
                    None => {
                        job.cursor = 0;
                        job.index_ended = true;
                    }
                }
            }
            let Some(ready) = self.next_ready(job).await? else {
                job.exhausted = true;
                continue;
            };
            job.counts.pending = job.counts.pending.saturating_sub(1);
            job.counts.queued += 1;
            job.batch.push(ready);
            job.batch_len += 1;
            chosen += 1;
        }
        let mut published = 0;
        let mut outcome = Ok(());
        for job in &mut jobs {
            if outcome.is_ok() {
                outcome = self.queue_batch(job, &mut published).await;
            }
            let floor = if job.cursor == u32::MAX {
                // The job was not reached in this pass.
                None
            } else if job.index_ended
                && job.unread.is_empty()
                && job.first_left.is_none()
                && job.batch_len == 0
                && !job.failed_any
                && job.counts.pending > 0
            {
                // The counts say tasks are pending, but none were found from the floor on: look
                // the floor up again next pass rather than trust it.
                None
            } else {
                Some(job.floor())
            };
            self.floors()?.end(&job.record.id, floor);
        }
        outcome?;
        for job in jobs.iter().filter(|job| job.failed_any) {
            self.finish_job_if_done(&job.record.id).await?;
        }
        Ok(published)
    }

    fn floors(&self) -> Result<std::sync::MutexGuard<'_, PendingFloors>> {
        self.inner
            .pending_floors
            .lock()
            .map_err(|_| Error::State("the dispatcher's floors are poisoned".to_owned()))
    }

    /// Moves the tasks the pass chose of `job` to `queued` ([`transition_batch`](Self::transition_batch))
    /// and publishes them. A task that moved on meanwhile is left out; one whose publish fails
    /// stays queued for the reconciler, and nothing more is published in this pass (the
    /// failure is not an error of the pass).
    async fn queue_batch(&self, job: &mut DispatchJob, published: &mut usize) -> Result<()> {
        let batch = std::mem::take(&mut job.batch);
        let mut resolved = HashMap::new();
        let mut tasks = Vec::with_capacity(batch.len());
        for ready in batch {
            if let Some(work) = ready.resolved {
                resolved.insert(ready.task.index, work);
            }
            tasks.push((ready.task, ready.revision));
        }
        let queued = self
            .transition_batch(&job.record.id, tasks, |task| {
                if task.state != TaskState::Pending {
                    return false;
                }
                task.state = TaskState::Queued;
                task.queued_count += 1;
                if let Some((work_json, inputs)) = resolved.get(&task.index) {
                    task.graph.work_json.clone_from(work_json);
                    task.graph.inputs.clone_from(inputs);
                }
                true
            })
            .await?;
        for task in queued {
            if let Err(error) = self.publish(&task, &job.record).await {
                // The task stays queued; the reconciler publishes it once the queue is back.
                tracing::warn!(%error, task = %task.id, "publish failed; the reconciler will publish it again");
                return Ok(());
            }
            tracing::debug!(task = %task.id, "task queued");
            *published += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::PendingFloors;

    #[test]
    fn a_floor_lowered_during_a_pass_is_not_raised_by_its_end() {
        let mut floors = PendingFloors::default();
        assert_eq!(floors.begin("j"), None, "a job not seen has no floor");
        floors.end("j", Some(100));
        assert_eq!(floors.begin("j"), Some(100));
        // While this pass reads from 100 on, task 150 (already passed) goes back to pending.
        floors.lower("j", 150);
        floors.end("j", Some(400));
        assert_eq!(floors.begin("j"), Some(150));
        // Lowered between passes: the next pass starts there.
        floors.end("j", Some(400));
        floors.lower("j", 7);
        assert_eq!(floors.begin("j"), Some(7));
        // Forgotten: looked up again.
        floors.end("j", None);
        assert_eq!(floors.begin("j"), None);
    }
}
