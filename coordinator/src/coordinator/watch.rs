//! Watching a job: its whole status once, then deltas. Changes to the job are gathered for
//! [`WATCH_BATCH`] and sent as one message holding the job's fields, its counts and only the tasks
//! that changed. A progress report costs no read of the state store (live progress is in memory);
//! a task's transition costs one read of the job's counts per batch, whatever the job's size.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lathe_proto::v1;
use tokio::sync::broadcast;

use super::{Change, Coordinator};
use crate::error::Result;
use crate::record::{TaskRecord, TaskState};

/// How long changes are gathered into one message: at most four messages a second per watcher,
/// however many tasks report progress.
pub const WATCH_BATCH: Duration = Duration::from_millis(250);

/// A watch of one job, as the `Watch` RPC streams it.
pub struct JobWatch {
    coordinator: Coordinator,
    job_id: String,
    changes: broadcast::Receiver<Change>,
    /// The status last sent, without its tasks: the job's fields for the next delta.
    last: Option<v1::JobStatus>,
    ended: bool,
}

/// The changes to a job gathered for one message.
#[derive(Default)]
struct Gathered {
    job: bool,
    tasks: BTreeMap<String, Arc<TaskRecord>>,
    progress: BTreeMap<String, (String, f64)>,
    /// Changes were dropped (the watcher fell behind): send the whole status.
    whole: bool,
}

impl Gathered {
    fn is_empty(&self) -> bool {
        !self.job && self.tasks.is_empty() && self.progress.is_empty() && !self.whole
    }
}

impl Coordinator {
    /// A watch of `job_id`; [`JobWatch::next`] gives its messages.
    pub fn watch(&self, job_id: &str) -> JobWatch {
        JobWatch {
            coordinator: self.clone(),
            job_id: job_id.to_owned(),
            changes: self.subscribe(),
            last: None,
            ended: false,
        }
    }
}

impl JobWatch {
    /// The next message: the whole status first, then a delta once something changed; `None`
    /// after the message in which the job ended.
    pub async fn next(&mut self) -> Option<Result<v1::JobStatus>> {
        if self.ended {
            return None;
        }
        let message = if self.last.is_none() {
            self.coordinator.status(&self.job_id).await
        } else {
            let gathered = self.gather().await?;
            if gathered.whole {
                self.coordinator.status(&self.job_id).await
            } else {
                self.delta(gathered).await
            }
        };
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                self.ended = true;
                return Some(Err(error));
            }
        };
        self.ended = !matches!(
            message.state(),
            v1::JobState::Running | v1::JobState::Suspended
        );
        self.last = Some(v1::JobStatus {
            tasks: Vec::new(),
            ..message.clone()
        });
        Some(Ok(message))
    }

    /// Waits for a change to the job, then gathers changes for [`WATCH_BATCH`]; `None` when the
    /// coordinator is shutting down.
    async fn gather(&mut self) -> Option<Gathered> {
        let mut gathered = Gathered::default();
        while gathered.is_empty() {
            self.receive(&mut gathered).await?;
        }
        let deadline = tokio::time::Instant::now() + WATCH_BATCH;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return Some(gathered),
                received = self.receive(&mut gathered) => received?,
            }
        }
    }

    /// Receives one change and keeps it if it concerns the job.
    async fn receive(&mut self, gathered: &mut Gathered) -> Option<()> {
        match self.changes.recv().await {
            Ok(change) if change.job_id() == self.job_id => {
                match change {
                    Change::Job(_) => gathered.job = true,
                    Change::Task(task) => {
                        gathered.progress.remove(&task.id);
                        gathered.tasks.insert(task.id.clone(), task);
                    }
                    Change::Progress {
                        task_id,
                        phase,
                        fraction,
                    } => {
                        gathered.progress.insert(task_id, (phase, fraction));
                    }
                }
                Some(())
            }
            Ok(_) => Some(()),
            Err(broadcast::error::RecvError::Lagged(_)) => {
                gathered.whole = true;
                Some(())
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// The delta for what was gathered: the job re-read only if its record changed, its counts
    /// only if a task changed; the changed tasks as they were written, and the progress of the
    /// others from memory.
    async fn delta(&self, gathered: Gathered) -> Result<v1::JobStatus> {
        let coordinator = &self.coordinator;
        let mut message = match (&self.last, gathered.job) {
            (Some(last), false) => last.clone(),
            _ => {
                let mut whole = coordinator.status(&self.job_id).await?;
                whole.tasks.clear();
                whole
            }
        };
        if !gathered.tasks.is_empty() && !gathered.job {
            let counts = coordinator.counts(&self.job_id).await?;
            message.counts = Some(counts.to_proto());
        }
        message.delta = true;
        message.tasks = gathered
            .tasks
            .values()
            .map(|task| coordinator.task_status(task))
            .collect();
        message.tasks.extend(
            gathered
                .progress
                .into_iter()
                .map(|(task_id, (phase, fraction))| v1::TaskStatus {
                    task_id,
                    state: TaskState::Running.to_proto().into(),
                    phase,
                    fraction,
                    progress_only: true,
                    ..Default::default()
                }),
        );
        Ok(message)
    }
}
