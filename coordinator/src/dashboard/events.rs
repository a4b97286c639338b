//! Live updates as server-sent events, deltas only.
//!
//! - `/jobs/{id}/events`: the job's [`Coordinator::watch`] as `status` events: the job's state,
//!   priority, counts and time left, and only the tasks that changed, each as its new row (or, for
//!   a progress report, its phase and fraction). The first event carries the running tasks (as
//!   many as the farm has slots), never the whole job.
//! - `/events`: the jobs list's `jobs` events: the rows of the jobs that changed (gathered for
//!   [`LIST_BATCH`]); after the stream fell behind, the rows of the client's page again.
//!
//! Each stream carries what its session may see: a submit session follows only its own jobs
//! (another owner's job's stream is a 404), and its list's events carry only its own jobs' rows,
//! with no word of a job deleted (whose owner can no longer be read): its row goes at the next
//! load.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use lathe_proto::v1;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::access::require_visible;
use super::error_page::ErrorPage;
use super::pages::{JobsQuery, PAGE_ROWS, visible_jobs};
use super::rows::{JobProgress, job_row, task_index, task_row};
use crate::auth::{Caller, Role};
use crate::coordinator::{Change, Coordinator, JobWatch};
use crate::error::{Error, Result};
use crate::record::unix_ms;

/// How long the jobs list's changes are gathered into one event.
pub const LIST_BATCH: Duration = Duration::from_millis(250);

/// How long a browser waits before it connects again after a stream ended without its job
/// ending (a store error, a coordinator restart).
const RECONNECT: Duration = Duration::from_secs(3);

/// The `status` event of one watch message: the job's fields and counts, and its changed tasks.
pub fn job_status_event(job_id: &str, message: &v1::JobStatus) -> Value {
    let counts = message.counts.unwrap_or_default();
    let progress = JobProgress::of(message, unix_ms());
    let tasks: Vec<Value> = message
        .tasks
        .iter()
        .map(|task| {
            let index = task_index(&task.task_id).unwrap_or_default();
            if task.progress_only {
                json!({ "index": index, "phase": task.phase, "fraction": task.fraction })
            } else {
                json!({ "index": index, "row": task_row(job_id, task) })
            }
        })
        .collect();
    json!({
        "state": message.state().word(),
        "ended": !matches!(message.state(), v1::JobState::Running | v1::JobState::Suspended),
        "priority": message.priority,
        "paused": message.paused_reason,
        "counts": {
            "all": progress.total,
            "pending": counts.pending,
            "queued": counts.queued,
            "running": counts.running,
            "succeeded": counts.succeeded,
            "failed": counts.failed,
            "cancelled": counts.cancelled,
            "qc_failed": counts.qc_failed,
        },
        "finished": progress.finished,
        "total": progress.total,
        "fraction": progress.fraction(),
        "eta": progress.eta,
        "whole": !message.delta,
        "tasks": tasks,
    })
}

/// An event named `name` with `data` as JSON.
fn event(name: &str, data: &Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

/// `/jobs/{id}/events`: the job's status deltas until it ends. A job that does not exist, or
/// that the caller may not see, is a 404 (the browser then stops trying).
pub async fn job_events(
    State(coordinator): State<Coordinator>,
    Extension(caller): Extension<Caller>,
    Path(job_id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ErrorPage> {
    require_visible(&coordinator, &caller, &job_id).await?;
    coordinator.summary(&job_id).await?;
    let watch = coordinator.watch(&job_id);
    let stream = futures::stream::unfold(
        Some((watch, job_id)),
        |state: Option<(JobWatch, String)>| async move {
            let (mut watch, job_id) = state?;
            match watch.next().await? {
                Ok(message) => {
                    let event =
                        event("status", &job_status_event(&job_id, &message)).retry(RECONNECT);
                    Some((Ok(event), Some((watch, job_id))))
                }
                Err(error) => {
                    tracing::warn!(%error, job = %job_id, "dashboard watch failed");
                    let problem = event("problem", &json!({ "message": error.to_string() }));
                    Some((Ok(problem), None))
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// What the jobs list's stream keeps between events.
struct ListStream {
    coordinator: Coordinator,
    /// Whose list it is: its rows are the jobs this caller may see.
    caller: Caller,
    changes: broadcast::Receiver<Change>,
    /// The client's page: the job its page starts after.
    after: Option<String>,
}

/// The jobs that changed in one batch, or that the stream fell behind.
#[derive(Debug, Default)]
struct Changed {
    jobs: BTreeSet<String>,
    whole: bool,
}

impl ListStream {
    /// Waits for a change to a job or a task, then gathers for [`LIST_BATCH`]; `None` when the
    /// coordinator is gone.
    async fn gather(&mut self) -> Option<Changed> {
        let mut changed = Changed::default();
        while changed.jobs.is_empty() && !changed.whole {
            self.receive(&mut changed).await?;
        }
        let deadline = tokio::time::Instant::now() + LIST_BATCH;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return Some(changed),
                received = self.receive(&mut changed) => received?,
            }
        }
    }

    async fn receive(&mut self, changed: &mut Changed) -> Option<()> {
        match self.changes.recv().await {
            // Progress reports change no row of the list.
            Ok(Change::Progress { .. }) => {}
            Ok(change) => {
                changed.jobs.insert(change.job_id().to_owned());
            }
            Err(broadcast::error::RecvError::Lagged(_)) => changed.whole = true,
            Err(broadcast::error::RecvError::Closed) => return None,
        }
        Some(())
    }

    /// The rows of a `jobs` event of what changed: one per changed job the caller may see
    /// (`removed` for one deleted, to a caller that sees every job).
    async fn rows(&self, changed: Changed) -> Result<Vec<Value>> {
        let now = unix_ms();
        let mut rows = Vec::new();
        if changed.whole || changed.jobs.len() > PAGE_ROWS {
            let (jobs, _) =
                visible_jobs(&self.coordinator, &self.caller, self.after.as_deref()).await?;
            for job in &jobs {
                rows.push(json!({ "id": job.job_id, "row": job_row(job, now) }));
            }
        } else {
            for job_id in &changed.jobs {
                match self.coordinator.summary(job_id).await {
                    Ok(job) if self.caller.may_read(&job.owner) => {
                        rows.push(json!({ "id": job_id, "row": job_row(&job, now) }));
                    }
                    Ok(_) => {}
                    Err(Error::JobNotFound(_)) if self.caller.role != Role::Submit => {
                        rows.push(json!({ "id": job_id, "removed": true }));
                    }
                    Err(Error::JobNotFound(_)) => {}
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(rows)
    }
}

/// `/events?after=`: the rows of the jobs that change, for the jobs list whose page starts after
/// `after`, of the jobs the caller may see.
pub async fn jobs_events(
    State(coordinator): State<Coordinator>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<JobsQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let list = ListStream {
        changes: coordinator.subscribe(),
        coordinator,
        caller,
        after: query.after.filter(|after| !after.is_empty()),
    };
    let stream = futures::stream::unfold(Some(list), |state: Option<ListStream>| async move {
        let mut list = state?;
        loop {
            let changed = list.gather().await?;
            match list.rows(changed).await {
                // Changes to jobs the caller may not see make no event (not even an empty one).
                Ok(rows) if rows.is_empty() => {}
                Ok(rows) => {
                    let rows = event("jobs", &json!({ "jobs": rows })).retry(RECONNECT);
                    return Some((Ok(rows), Some(list)));
                }
                Err(error) => {
                    tracing::warn!(%error, "dashboard jobs stream failed");
                    let problem = event("problem", &json!({ "message": error.to_string() }));
                    return Some((Ok(problem), None));
                }
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
