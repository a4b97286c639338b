//! The reconciler: makes the tasks' recorded states agree with what the queue holds and which
//! workers are alive, so that no task waits for a message that will never come. It runs when the
//! coordinator starts and every
//! [`reconcile_interval`](crate::CoordinatorSettings::reconcile_interval):
//! - a `queued` task whose message the queue does not hold (a publish that failed, a NATS server
//!   that restarted without its data) is published again;
//! - a `running` task whose worker is no longer registered (its lease ran out) and whose message
//!   the queue does not hold is queued again, as a lost attempt (failed when its attempts are
//!   used up);
//! - a `running` task whose worker is gone and whose message reached the queue's delivery limit
//!   is failed and its message removed, even if the queue's advisory was missed;
//! - a `running` task whose worker is still registered but whose attempt started longer ago than
//!   the [task time limit](crate::CoordinatorSettings::task_time_limit) (a hung render: its
//!   worker heartbeats and acks in progress, but never finishes) has that attempt ended as a
//!   failed one, counted against the worker like any failed attempt: the attempt's token is
//!   replaced (the late worker's progress is told to stop, its uploads and completion are
//!   refused), its queue message removed, and the task queued again on a new message, or failed
//!   once its attempts are used up.
//!
//! A `running` task whose worker is gone but whose message the queue still delivers is left to
//! the queue, which hands it to another worker once its acknowledgement deadline passes.
//!
//! Every read is bounded: the queue holds at most what the dispatcher put there (free slots plus
//! the queue-ahead, and messages awaiting redelivery), and only the active jobs' `queued` and
//! `running` indexes are read, a page at a time.

use std::collections::{HashMap, HashSet};

use lathe_proto::v1;
use prost::Message as _;

use super::Coordinator;
use crate::error::Result;
use crate::record::{JobRecord, TaskRecord, TaskState, unix_ms};
use crate::state::MAX_PAGE;

/// The most queue messages one pass reads (far more than a farm's slots).
const MAX_HELD: usize = 100_000;

/// What one reconciler pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// `queued` tasks published again.
    pub republished: u32,
    /// `running` tasks on a lost worker, queued again.
    pub requeued: u32,
    /// Tasks failed because their message reached the delivery limit.
    pub exhausted: u32,
    /// Attempts ended because they passed the task time limit.
    pub timed_out: u32,
}

impl Coordinator {
    /// Reconciles every [`reconcile_interval`](crate::CoordinatorSettings::reconcile_interval),
    /// forever.
    pub(super) async fn keep_reconciling(&self) {
        loop {
            tokio::time::sleep(self.inner.settings.reconcile_interval).await;
            match self.reconcile().await {
                Ok(done) if done != Reconciled::default() => {
                    tracing::info!(?done, "reconciled the tasks with the queue and the workers");
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "reconciling failed; retrying"),
            }
        }
    }

    /// One pass of the reconciler (see the module's documentation). A publish that fails ends
    /// the pass early: the queue is away, and the next pass goes on.
    pub async fn reconcile(&self) -> Result<Reconciled> {
        let held = self.held_messages().await?;
        let workers: HashSet<String> = self
            .worker_records()
            .await?
            .into_iter()
            .map(|worker| worker.id)
            .collect();
        let mut done = Reconciled::default();
        for job in self.active_jobs().await? {
            if job.state.is_final() {
                continue;
            }
            for state in [TaskState::Queued, TaskState::Running] {
                let mut after: Option<String> = None;
                loop {
                    let page = self
                        .page_of_tasks(&job.id, Some(state), after.as_deref(), MAX_PAGE)
                        .await?;
                    for task in &page.tasks {
                        let in_queue = held.get(&task.id).map(Vec::as_slice);
                        if !self
                            .reconcile_task(task, &job, in_queue, &workers, &mut done)
                            .await?
                        {
                            return Ok(done);
                        }
                    }
                    match page.next_after {
                        Some(next) => after = Some(next),
                        None => break,
                    }
                }
            }
        }
        Ok(done)
    }

    /// Reconciles one task with the queue messages that carry it; false when a publish failed.
    async fn reconcile_task(
        &self,
        task: &TaskRecord,
        job: &JobRecord,
        in_queue: Option<&[u64]>,
        workers: &HashSet<String>,
        done: &mut Reconciled,
    ) -> Result<bool> {
        match (task.state, in_queue) {
            (TaskState::Queued, None) => {
                if let Err(error) = self.publish(task, job).await {
                    tracing::warn!(%error, task = %task.id, "publish failed; the next pass retries");
                    return Ok(false);
                }
                tracing::info!(task = %task.id, "queued task missing from the queue: published again");
                done.republished += 1;
            }
            (TaskState::Running, in_queue)
                if workers.contains(&task.worker_id) && self.overran(task) =>
            {
                return self
                    .end_overrun_attempt(task, job, in_queue.unwrap_or_default(), done)
                    .await;
            }
            (TaskState::Running, _) if workers.contains(&task.worker_id) => {}
            (TaskState::Running, Some(sequences))
                if task.deliveries >= self.inner.queue.settings().max_deliver =>
            {
                let reason = format!(
                    "attempt {} on worker {} was lost on the work queue's last delivery",
                    task.attempts, task.worker_id
                );
                self.fail_exhausted(&task.id, &reason, true).await?;
                for &sequence in sequences {
                    self.inner.queue.remove(sequence).await?;
                }
                done.exhausted += 1;
            }
            (TaskState::Running, None) => {
                let max_attempts = self.inner.settings.max_attempts;
                let requeued = self
                    .update_task(&task.id, |stored| {
                        (stored.state == TaskState::Running
                            && stored.worker_id == task.worker_id)
                            .then(|| {
                                stored.last_error = format!(
                                    "attempt {} on worker {} was lost (its worker stopped and the work queue no longer held the task)",
                                    stored.attempts, stored.worker_id
                                );
                                queue_again_or_fail(stored, max_attempts);
                                stored.clone()
                            })
                    })
                    .await?;
                let Some(stored) = requeued else {
                    return Ok(true);
                };
                if stored.state == TaskState::Failed {
                    self.finish_job_if_done(&job.id).await?;
                    return Ok(true);
                }
                tracing::info!(task = %task.id, worker = %task.worker_id, "running task on a lost worker: queued again");
                done.requeued += 1;
                if let Err(error) = self.publish(&stored, job).await {
                    tracing::warn!(%error, task = %task.id, "publish failed; the next pass retries");
                    return Ok(false);
                }
            }
            // In the queue: delivered (again) in time.
            _ => {}
        }
        Ok(true)
    }

    /// True when `task`'s current attempt started longer ago than the task time limit (an
    /// attempt recorded before attempts had a start time is left alone).
    fn overran(&self, task: &TaskRecord) -> bool {
        let limit_ms =
            u64::try_from(self.inner.settings.task_time_limit.as_millis()).unwrap_or(u64::MAX);
        task.attempt_started_unix_ms > 0
            && unix_ms().saturating_sub(task.attempt_started_unix_ms) > limit_ms
    }

    /// Ends the attempt of `task` that passed the task time limit (see the module's
    /// documentation); its queue messages are `sequences`. False when a publish failed.
    async fn end_overrun_attempt(
        &self,
        task: &TaskRecord,
        job: &JobRecord,
        sequences: &[u64],
        done: &mut Reconciled,
    ) -> Result<bool> {
        let limit_s = self.inner.settings.task_time_limit.as_secs_f64();
        let max_attempts = self.inner.settings.max_attempts;
        // A token nobody holds: every later call of the late attempt is refused.
        let (_, no_holder) = crate::auth::attempt_token()?;
        let ended = self
            .update_task(&task.id, |stored| {
                (stored.state == TaskState::Running
                    && stored.attempt_token_hash == task.attempt_token_hash)
                    .then(|| {
                        stored.last_error = format!(
                            "attempt {} on worker {} took longer than the task time limit of \
                             {limit_s} s: ended",
                            stored.attempts, stored.worker_id
                        );
                        stored.attempt_token_hash.clone_from(&no_holder);
                        queue_again_or_fail(stored, max_attempts);
                        stored.clone()
                    })
            })
            .await?;
        let Some(stored) = ended else {
            // It finished, failed or was taken over since the page was read.
            return Ok(true);
        };
        tracing::warn!(task = %task.id, worker = %task.worker_id, limit_s, state = ?stored.state, "attempt past the task time limit: ended");
        done.timed_out += 1;
        if let Ok(mut progress) = self.inner.progress.lock() {
            progress.remove(&task.id);
        }
        for &sequence in sequences {
            self.inner.queue.remove(sequence).await?;
        }
        self.count_failure_against(&job.id, &task.worker_id).await?;
        if stored.state == TaskState::Failed {
            self.inner.metrics.task_finished(false, false);
            self.finish_job_if_done(&job.id).await?;
            self.inner.dispatch.notify_one();
            return Ok(true);
        }
        if let Err(error) = self.publish(&stored, job).await {
            tracing::warn!(%error, task = %task.id, "publish failed; the next pass retries");
            return Ok(false);
        }
        Ok(true)
    }

    /// The sequences of the messages the queue holds, by task id.
    async fn held_messages(&self) -> Result<HashMap<String, Vec<u64>>> {
        let mut held: HashMap<String, Vec<u64>> = HashMap::new();
        let mut after = None;
        let mut read = 0;
        while read < MAX_HELD {
            let page = self.inner.queue.held(after, MAX_PAGE).await?;
            let Some(last) = page.last() else {
                break;
            };
            after = Some(last.sequence);
            read += page.len();
            for message in page {
                if let Ok(task) = v1::Task::decode(message.payload) {
                    held.entry(task.task_id).or_default().push(message.sequence);
                }
            }
        }
        Ok(held)
    }
}

/// After an attempt was lost or ended: `task` is queued again, or failed when that was its last
/// attempt.
fn queue_again_or_fail(task: &mut TaskRecord, max_attempts: u32) {
    if task.attempts >= max_attempts {
        task.state = TaskState::Failed;
    } else {
        task.state = TaskState::Queued;
        task.queued_count += 1;
    }
}
