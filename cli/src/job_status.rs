//! A farm job's status as the CLI shows it: the names of job and task states, and the JSON shape of
//! `lathe status JOB --json`.

use lathe_proto::v1;
use serde_json::json;

/// True once a job has ended: not running and not suspended (a retry may start it again).
pub(crate) fn job_has_ended(state: v1::JobState) -> bool {
    !matches!(state, v1::JobState::Running | v1::JobState::Suspended)
}

/// A job's status as JSON: the first line of `lathe status JOB --json`, and each line of `lathe
/// watch --json` (with its running tasks).
pub(crate) fn job_json(status: &v1::JobStatus) -> serde_json::Value {
    let counts = status.counts.unwrap_or_default();
    json!({
        "job_id": status.job_id,
        "name": status.name,
        "priority": status.priority,
        "state": status.state().word(),
        "profile": status.profile_name,
        "submitted_unix_ms": status.submitted_unix_ms,
        "blocklisted_workers": status.blocklisted_workers,
        "paused_reason": status.paused_reason,
        "pinned": status.pinned,
        "finished_unix_ms": status.finished_unix_ms,
        "counts": {
            "pending": counts.pending,
            "queued": counts.queued,
            "running": counts.running,
            "succeeded": counts.succeeded,
            "failed": counts.failed,
            "cancelled": counts.cancelled,
            "qc_failed": counts.qc_failed,
        },
        "tasks": status.tasks.iter().map(task_json).collect::<Vec<_>>(),
    })
}

/// A task as JSON (a line of `lathe status JOB --json`).
pub(crate) fn task_json(task: &v1::TaskStatus) -> serde_json::Value {
    json!({
        "task_id": task.task_id,
        "kind": task.kind,
        "source": task.source_name,
        "output": task.output_name,
        "state": task.state().word(),
        "qc": qc_verdict(task),
        "worker": task.worker_id,
        "attempts": task.attempts,
        "last_error": task.last_error,
        "output_digest": task.output_digest,
        "phase": task.phase,
        "fraction": task.fraction,
        "started_unix_ms": task.started_unix_ms,
        "label": task.label,
        "needs": task.needs,
        "outputs": task.outputs.iter().map(|file| json!({
            "path": file.path,
            "digest": file.digest,
            "delivered": file.delivered,
        })).collect::<Vec<_>>(),
    })
}

/// A finished task's quality-check verdict: `passed`, `failed`, or empty before it succeeded.
pub(crate) fn qc_verdict(task: &v1::TaskStatus) -> &'static str {
    if task.state() != v1::TaskState::Succeeded {
        ""
    } else if task.qc_failed {
        "failed"
    } else {
        "passed"
    }
}

/// What a status line calls a task: a graph task's label, else its source's name.
pub(crate) fn task_name(task: &v1::TaskStatus) -> &str {
    if task.label.is_empty() {
        &task.source_name
    } else {
        &task.label
    }
}
