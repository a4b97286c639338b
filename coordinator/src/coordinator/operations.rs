//! What the people who run the farm do to jobs besides submitting and cancelling them: retry the
//! failed tasks, suspend and resume, change the priority, pin, delete; and what the coordinator
//! does by itself to keep the store from growing without end: retention of finished jobs and the
//! removal of blobs no job refers to.
//!
//! Every operation is bounded: a job's tasks are read a page at a time, and blob references are
//! counted by a one-key read of their prefix.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt as _;
use lathe_proto::v1;

use super::{Coordinator, SWAP_ATTEMPTS};
use crate::blob::Digest;
use crate::error::{Error, Result};
use crate::record::{
    self, FINISHED_PREFIX, JobState, TaskRecord, TaskState, active_key, blob_ref_key,
    blob_refs_prefix, by_state_prefix, by_state_root, counts_prefix, encode, finished_key,
    idempotency_key, job_key, job_of_finished_key, submitting_key, tasks_prefix,
};
use crate::state::{Expect, MAX_PAGE, MAX_TRANSACTION_OPS, Transaction};

/// Blob references checked at once when a job releases its blobs.
const RELEASE_CONCURRENCY: usize = 16;

/// Finished jobs deleted by one retention pass (the next pass goes on).
const RETENTION_JOBS_PER_PASS: usize = 16;

/// Stored blobs looked at by one pass of the sweep of unreferenced blobs.
const SWEEP_BLOBS_PER_PASS: usize = 512;

/// What deleting a job removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deleted {
    /// Task records.
    pub tasks: u32,
    /// Blobs no other job referred to.
    pub blobs: u32,
}

impl Coordinator {
    /// Puts a job's failed tasks back to pending with fresh attempts, and a finished job back to
    /// running; returns how many tasks. A cancelled job is refused (submit it again).
    pub async fn retry(&self, job_id: &str) -> Result<u32> {
        let (job, _) = self.job(job_id).await?;
        if job.state == JobState::Cancelled {
            return Err(Error::InvalidRequest(format!(
                "job {job_id} was cancelled; submit it again instead"
            )));
        }
        // The tasks first, while a finished job stays finished (nothing else moves its tasks),
        // then the job: a coordinator stopped in between leaves pending tasks in a finished job,
        // which the next retry reopens.
        let mut retried = 0;
        loop {
            let (tasks, _) = self
                .index_page(&by_state_prefix(job_id, TaskState::Failed), None, MAX_PAGE)
                .await?;
            if tasks.is_empty() {
                break;
            }
            let moved = self
                .transition_batch(job_id, tasks, |task| {
                    if task.state != TaskState::Failed {
                        return false;
                    }
                    task.state = TaskState::Pending;
                    task.attempts = 0;
                    task.last_error.clear();
                    task.worker_id.clear();
                    true
                })
                .await?;
            retried += u32::try_from(moved.len()).unwrap_or(u32::MAX);
        }
        let counts = self.counts(job_id).await?;
        if counts.unfinished() > 0 {
            self.reopen(job_id).await?;
        }
        if retried > 0 {
            tracing::info!(job = %job_id, retried, "failed tasks retried");
        }
        self.changed(job_id);
        self.inner.dispatch.notify_one();
        Ok(retried)
    }

    /// A finished job running again: its state, its `active` key and its place in the retention
    /// index change in one transaction. A job still running is left as it is.
    async fn reopen(&self, job_id: &str) -> Result<()> {
        let key = job_key(job_id);
        for _ in 0..SWAP_ATTEMPTS {
            let (mut job, revision) = self.job(job_id).await?;
            if !job.state.is_final() {
                return Ok(());
            }
            let finished = finished_key(&job);
            job.state = JobState::Running;
            job.finished_unix_ms = 0;
            job.paused_reason.clear();
            job.consecutive_failures.clear();
            let transaction = Transaction::new()
                .check(key.clone(), Expect::Revision(revision))
                .put(key.clone(), encode(&job)?)
                .put(active_key(job_id), Vec::new())
                .delete(finished);
            if self.inner.state.commit(&transaction).await? {
                return Ok(());
            }
        }
        Err(Error::Contention {
            key,
            attempts: SWAP_ATTEMPTS,
        })
    }

    /// Starts no more of a running job's tasks until [`resume`](Self::resume): running tasks
    /// finish; queued ones go back to pending as workers receive them.
    pub async fn suspend(&self, job_id: &str) -> Result<v1::JobStatus> {
        self.change_lifecycle(job_id, JobState::Running, JobState::Suspended)
            .await
    }

    /// Lets a suspended job's tasks start again.
    pub async fn resume(&self, job_id: &str) -> Result<v1::JobStatus> {
        let status = self
            .change_lifecycle(job_id, JobState::Suspended, JobState::Running)
            .await?;
        self.inner.dispatch.notify_one();
        Ok(status)
    }

    /// Moves a job from `from` to `to`; a job already in `to` is left as it is, a job in any
    /// other state is refused.
    async fn change_lifecycle(
        &self,
        job_id: &str,
        from: JobState,
        to: JobState,
    ) -> Result<v1::JobStatus> {
        let mut refused = None;
        self.update_job(job_id, |job| {
            if job.state == to {
                return None;
            }
            if job.state != from {
                refused = Some(job.state);
                return None;
            }
            job.state = to;
            Some(())
        })
        .await?;
        if let Some(state) = refused {
            return Err(Error::InvalidRequest(format!(
                "job {job_id} is {}, not {}",
                state_word(state),
                state_word(from)
            )));
        }
        tracing::info!(job = %job_id, state = ?to, "job {}", state_word(to));
        self.status(job_id).await
    }

    /// Sets a job's priority (higher runs first); it applies to the tasks not queued yet.
    pub async fn set_priority(&self, job_id: &str, priority: i32) -> Result<v1::JobStatus> {
        self.update_job(job_id, |job| {
            (job.priority != priority).then(|| job.priority = priority)
        })
        .await?;
        self.inner.dispatch.notify_one();
        self.status(job_id).await
    }

    /// Pins a job (retention keeps it whatever its age) or releases it: the flag and the job's
    /// place in the retention index change in one transaction.
    pub async fn set_pinned(&self, job_id: &str, pinned: bool) -> Result<v1::JobStatus> {
        let key = job_key(job_id);
        for _ in 0..SWAP_ATTEMPTS {
            let (mut job, revision) = self.job(job_id).await?;
            if job.pinned == pinned {
                return self.status(job_id).await;
            }
            job.pinned = pinned;
            let mut transaction = Transaction::new()
                .check(key.clone(), Expect::Revision(revision))
                .put(key.clone(), encode(&job)?);
            if job.state.is_final() {
                transaction = if pinned {
                    transaction.delete(finished_key(&job))
                } else {
                    transaction.put(finished_key(&job), Vec::new())
                };
            }
            if self.inner.state.commit(&transaction).await? {
                self.changed(job_id);
                return self.status(job_id).await;
            }
        }
        Err(Error::Contention {
            key,
            attempts: SWAP_ATTEMPTS,
        })
    }

    /// Deletes a finished job: its tasks, counts, indexes and record, and the blobs (sources,
    /// masters, plan) no other job refers to. A job not finished is refused unless `force`,
    /// which cancels it first. The job's record goes last, so a delete that stopped halfway can be
    /// run again.
    pub async fn delete(&self, job_id: &str, force: bool) -> Result<Deleted> {
        let (job, _) = self.job(job_id).await?;
        if !job.state.is_final() {
            if !force {
                return Err(Error::InvalidRequest(format!(
                    "job {job_id} is {}; cancel it first, or delete it with --force",
                    state_word(job.state)
                )));
            }
            self.cancel(job_id).await?;
        }
        let (job, _) = self.job(job_id).await?;
        let deleted = self.release_blobs(job_id, &job.plan_digest, true).await?;
        let state = &self.inner.state;
        state.delete_prefix(&tasks_prefix(job_id)).await?;
        state.delete_prefix(&by_state_root(job_id)).await?;
        state.delete_prefix(&counts_prefix(job_id)).await?;
        let mut keys = vec![
            active_key(job_id),
            submitting_key(job_id),
            finished_key(&job),
        ];
        if !job.idempotency_key.is_empty() {
            keys.push(idempotency_key(&job.idempotency_key));
        }
        for key in keys {
            state.delete(&key).await?;
        }
        state.delete(&job_key(job_id)).await?;
        if let Ok(mut progress) = self.inner.progress.lock() {
            progress.retain(|task, _| record::job_of_task(task).ok() != Some(job_id));
        }
        tracing::info!(job = %job_id, tasks = deleted.tasks, blobs = deleted.blobs, "job deleted");
        self.changed(job_id);
        Ok(deleted)
    }

    /// Removes a job's references to the blobs its tasks (and its plan) name, a page of tasks at
    /// a time; with `remove_unreferenced`, removes each blob no job refers to any more. Returns the
    /// tasks read and the blobs removed.
    pub(super) async fn release_blobs(
        &self,
        job_id: &str,
        plan_digest: &str,
        remove_unreferenced: bool,
    ) -> Result<Deleted> {
        let mut deleted = Deleted::default();
        if !plan_digest.is_empty() {
            deleted.blobs += self
                .release_digests(job_id, vec![plan_digest.to_owned()], remove_unreferenced)
                .await?;
        }
        let mut after: Option<String> = None;
        loop {
            let page = self
                .page_of_tasks(job_id, None, after.as_deref(), MAX_PAGE)
                .await?;
            deleted.tasks += u32::try_from(page.tasks.len()).unwrap_or(u32::MAX);
            let mut digests: Vec<String> = page
                .tasks
                .iter()
                .flat_map(TaskRecord::blob_digests)
                .map(str::to_owned)
                .collect();
            digests.sort_unstable();
            digests.dedup();
            deleted.blobs += self
                .release_digests(job_id, digests, remove_unreferenced)
                .await?;
            match page.next_after {
                Some(next) => after = Some(next),
                None => return Ok(deleted),
            }
        }
    }

    /// Deletes the job's references to `digests` and, with `remove_unreferenced`, removes those
    /// blobs nobody else refers to; returns how many it removed.
    async fn release_digests(
        &self,
        job_id: &str,
        digests: Vec<String>,
        remove_unreferenced: bool,
    ) -> Result<u32> {
        for chunk in digests.chunks(MAX_TRANSACTION_OPS) {
            let mut transaction = Transaction::new();
            for digest in chunk {
                transaction = transaction.delete(blob_ref_key(digest, job_id));
            }
            self.inner.state.commit(&transaction).await?;
        }
        if !remove_unreferenced {
            return Ok(0);
        }
        let removed: Vec<Result<bool>> = futures::stream::iter(digests)
            .map(|digest| async move { self.remove_if_unreferenced(&digest).await })
            .buffer_unordered(RELEASE_CONCURRENCY)
            .collect()
            .await;
        let mut count = 0;
        for outcome in removed {
            count += u32::from(outcome?);
        }
        Ok(count)
    }

    /// Removes a blob if no job refers to it; true when it removed one.
    async fn remove_if_unreferenced(&self, digest: &str) -> Result<bool> {
        let referred = self
            .inner
            .state
            .page(&blob_refs_prefix(digest), None, 1)
            .await?;
        if !referred.entries.is_empty() {
            return Ok(false);
        }
        let Ok(parsed) = Digest::parse(digest) else {
            return Ok(false);
        };
        // Counted first: a submission that read the count before this removal checks its
        // blobs again.
        self.inner.blobs_removed.fetch_add(1, Ordering::SeqCst);
        self.inner.blobs.remove(&parsed).await
    }

    /// Runs retention and the sweep of unreferenced blobs every
    /// [`maintenance_interval`](crate::CoordinatorSettings::maintenance_interval), forever.
    pub(super) async fn maintain(&self) {
        loop {
            tokio::time::sleep(self.inner.settings.maintenance_interval).await;
            if let Err(error) = self.maintenance_pass().await {
                tracing::warn!(%error, "maintenance failed; retrying");
            }
        }
    }

    /// One pass of retention (when configured) and of the sweep of unreferenced blobs; returns
    /// the jobs and blobs it removed.
    pub async fn maintenance_pass(&self) -> Result<(u32, u32)> {
        let jobs = match self.inner.settings.retain {
            Some(retain) => self.apply_retention(retain).await?,
            None => 0,
        };
        let blobs = self.sweep_unreferenced_blobs().await?;
        Ok((jobs, blobs))
    }

    /// Deletes up to [`RETENTION_JOBS_PER_PASS`] jobs that finished longer than `retain` ago
    /// (oldest first, from the retention index: pinned jobs are not in it).
    async fn apply_retention(&self, retain: Duration) -> Result<u32> {
        let cutoff =
            record::unix_ms().saturating_sub(u64::try_from(retain.as_millis()).unwrap_or(u64::MAX));
        let page = self
            .inner
            .state
            .page(FINISHED_PREFIX, None, RETENTION_JOBS_PER_PASS)
            .await?;
        let mut deleted = 0;
        for (key, _) in &page.entries {
            let Some((finished_ms, job_id)) = job_of_finished_key(key) else {
                continue;
            };
            if finished_ms > cutoff {
                break;
            }
            match self.job(job_id).await {
                Ok((job, _)) if job.pinned || !job.state.is_final() => {
                    self.inner.state.delete(key).await?;
                }
                Ok(_) => {
                    let removed = self.delete(job_id, false).await?;
                    tracing::info!(job = %job_id, blobs = removed.blobs, "retention: job deleted");
                    deleted += 1;
                }
                Err(Error::JobNotFound(_)) => self.inner.state.delete(key).await?,
                Err(error) => return Err(error),
            }
        }
        Ok(deleted)
    }

    /// Looks at the next [`SWEEP_BLOBS_PER_PASS`] stored blobs (going round the store pass by
    /// pass) and removes those older than the grace period that no job refers to: uploads never
    /// submitted, masters of tasks that were deleted while they ran.
    async fn sweep_unreferenced_blobs(&self) -> Result<u32> {
        let cursor = self.inner.sweep_cursor.lock().ok().and_then(|c| *c);
        let blobs = self
            .inner
            .blobs
            .page(cursor.as_ref(), SWEEP_BLOBS_PER_PASS)
            .await?;
        let next = if blobs.len() < SWEEP_BLOBS_PER_PASS {
            None
        } else {
            blobs.last().map(|blob| blob.digest)
        };
        if let Ok(mut stored) = self.inner.sweep_cursor.lock() {
            *stored = next;
        }
        let grace = self.inner.settings.unreferenced_blob_grace;
        let mut removed = 0;
        for blob in blobs.iter().filter(|blob| blob.age >= grace) {
            if self
                .remove_if_unreferenced(&blob.digest.to_string())
                .await?
            {
                tracing::info!(blob = %blob.digest, "removed a blob no job refers to");
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// A job state as a word in messages.
fn state_word(state: JobState) -> &'static str {
    match state {
        JobState::Running => "running",
        JobState::Succeeded => "succeeded",
        JobState::CompletedWithFailures => "completed with failures",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
        JobState::Suspended => "suspended",
    }
}
