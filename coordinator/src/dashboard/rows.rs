//! The rows of the dashboard's tables, one function each, shared by the pages (which render a page
//! of them) and the event streams (which send a changed row for the script to put in place).
//! Every user string is escaped here.

use std::fmt::Write as _;

use lathe_proto::v1;

use super::html::{duration, escape, level, url_component, utc_time};
use super::report::StoredReport;

/// How far a job is: its tasks finished and in all, and an estimate of the time left.
#[derive(Debug, Clone, PartialEq)]
pub struct JobProgress {
    /// Tasks finished (succeeded, failed or cancelled).
    pub finished: u32,
    /// Every task.
    pub total: u32,
    /// The estimate of the time left, in words (empty when there is none).
    pub eta: String,
}

impl JobProgress {
    /// The progress of `job` at `now_unix_ms`: the time left extrapolates the rate of finished
    /// tasks since submission over the tasks not finished.
    pub fn of(job: &v1::JobStatus, now_unix_ms: u64) -> Self {
        let counts = job.counts.unwrap_or_default();
        let finished = counts.succeeded + counts.failed + counts.cancelled;
        let unfinished = counts.pending + counts.queued + counts.running;
        let total = finished + unfinished;
        let eta = match job.state() {
            v1::JobState::Running if finished > 0 && unfinished > 0 => {
                let elapsed = now_unix_ms.saturating_sub(job.submitted_unix_ms);
                let left = elapsed.saturating_mul(u64::from(unfinished)) / u64::from(finished);
                format!("~{}", duration(left))
            }
            v1::JobState::Running | v1::JobState::Suspended => String::new(),
            _ if job.finished_unix_ms > 0 => format!(
                "took {}",
                duration(job.finished_unix_ms.saturating_sub(job.submitted_unix_ms))
            ),
            _ => String::new(),
        };
        Self {
            finished,
            total,
            eta,
        }
    }

    /// Finished over total, 0 to 1 (1 for a job of no tasks).
    pub fn fraction(&self) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            f64::from(self.finished) / f64::from(self.total)
        }
    }
}

/// The link to a job's page.
pub fn job_href(job_id: &str) -> String {
    format!("/jobs/{}", url_component(job_id))
}

/// The index of a task in its job, from its id (`{job}.{index:07}`).
pub fn task_index(task_id: &str) -> Option<u32> {
    task_id.rsplit_once('.')?.1.parse().ok()
}

/// A job's row in the jobs list (`<tr id="job-ID">`): its name, owner, state, progress, failures,
/// time left, priority, profile and submission time.
pub fn job_row(job: &v1::JobStatus, now_unix_ms: u64) -> String {
    let counts = job.counts.unwrap_or_default();
    let progress = JobProgress::of(job, now_unix_ms);
    let id = escape(&job.job_id);
    let state = job.state().word();
    format!(
        "<tr id=\"job-{id}\" data-job=\"{id}\"><td><a href=\"{href}\">{name}</a><br><small>{id}</small></td>\
         <td data-cell=\"owner\">{owner}</td><td class=\"state state-{state}\">{state}{paused}</td>\
         <td><progress max=\"1\" value=\"{fraction:.4}\"></progress> {finished} / {total}</td>\
         <td class=\"num{failed_class}\">{failed}</td><td>{eta}</td><td class=\"num\">{priority}</td>\
         <td>{profile}</td><td>{submitted}</td></tr>",
        href = escape(&job_href(&job.job_id)),
        name = escape(if job.name.is_empty() {
            &job.job_id
        } else {
            &job.name
        }),
        owner = escape(&job.owner),
        paused = if job.paused_reason.is_empty() {
            String::new()
        } else {
            format!(
                " <small title=\"{0}\">(paused)</small>",
                escape(&job.paused_reason)
            )
        },
        fraction = progress.fraction(),
        finished = progress.finished,
        total = progress.total,
        failed_class = if counts.failed > 0 { " bad" } else { "" },
        failed = counts.failed,
        eta = escape(&progress.eta),
        priority = job.priority,
        profile = escape(&job.profile_name),
        submitted = utc_time(job.submitted_unix_ms),
    )
}

/// The header of the table [`job_row`] fills.
pub const JOB_HEADER: &str = "<tr><th>Job</th><th>Owner</th><th>State</th><th>Progress</th><th>Failed</th>\
    <th>ETA</th><th>Priority</th><th>Profile</th><th>Submitted</th></tr>";

/// The link to a task's page.
pub fn task_href(job_id: &str, index: u32) -> String {
    format!("{}/tasks/{index}", job_href(job_id))
}

/// The cell of a task's phase: the phase and, while it runs, how far through it.
fn phase_cell(task: &v1::TaskStatus) -> String {
    let mut cell = format!(
        "<td data-cell=\"phase\"><span>{}</span>",
        escape(&task.phase)
    );
    if task.state() == v1::TaskState::Running {
        let _ = write!(
            cell,
            " <progress max=\"1\" value=\"{:.3}\"></progress>",
            task.fraction.clamp(0.0, 1.0)
        );
    }
    cell.push_str("</td>");
    cell
}

/// A task's row in a job's table (`<tr id="task-INDEX">`): its state, phase, worker, attempts,
/// loudness in and out, true peak, QC and last error.
pub fn task_row(job_id: &str, task: &v1::TaskStatus) -> String {
    let index = task_index(&task.task_id).unwrap_or_default();
    let figures = StoredReport::read(&task.report_json).row_figures();
    let name = if task.label.is_empty() {
        &task.source_name
    } else {
        &task.label
    };
    let state = task.state().word();
    let qc = match (task.qc_failed, figures.qc_passed) {
        (true, _) | (false, Some(false)) => "<td class=\"bad\">failed</td>",
        (false, Some(true)) => "<td>passed</td>",
        (false, None) => "<td></td>",
    };
    format!(
        "<tr id=\"task-{index}\" data-task=\"{id}\"><td class=\"num\"><a href=\"{href}\">{index}</a></td>\
         <td>{name}</td><td class=\"state state-{state}\">{state}</td>{phase}<td>{worker}</td>\
         <td class=\"num\">{attempts}</td><td class=\"num\">{input}</td><td class=\"num\">{output}</td>\
         <td class=\"num\">{peak}</td>{qc}<td class=\"error\">{error}</td></tr>",
        id = escape(&task.task_id),
        href = escape(&task_href(job_id, index)),
        name = escape(name),
        phase = phase_cell(task),
        worker = escape(&task.worker_id),
        attempts = task.attempts,
        input = level(figures.input_lufs, "LUFS"),
        output = level(figures.output_lufs, "LUFS"),
        peak = level(figures.output_true_peak_dbtp, "dBTP"),
        error = escape(&task.last_error),
    )
}

/// The header of the table [`task_row`] fills.
pub const TASK_HEADER: &str = "<tr><th>#</th><th>Track</th><th>State</th><th>Phase</th>\
    <th>Worker</th><th>Attempts</th><th>Loudness in</th><th>Loudness out</th><th>True peak</th>\
    <th>QC</th><th>Last error</th></tr>";

/// A worker's row.
pub fn worker_row(worker: &v1::WorkerStatus, now_unix_ms: u64) -> String {
    let tasks: Vec<String> = worker
        .current_tasks
        .iter()
        .map(|task| match (task.rsplit_once('.'), task_index(task)) {
            (Some((job, _)), Some(index)) => format!(
                "<a href=\"{}\">{}</a>",
                escape(&task_href(job, index)),
                escape(task)
            ),
            _ => escape(task),
        })
        .collect();
    let blocklisted: Vec<String> = worker
        .blocklisted_for
        .iter()
        .map(|job| format!("<a href=\"{}\">{}</a>", escape(&job_href(job)), escape(job)))
        .collect();
    format!(
        "<tr id=\"worker-{id}\"><td>{id}</td><td>{host}</td><td class=\"num\">{pid}</td>\
         <td class=\"num\">{busy} / {slots}</td><td>{tasks}</td><td>{heartbeat}</td><td>{blocklisted}</td></tr>",
        id = escape(&worker.worker_id),
        host = escape(&worker.host),
        pid = worker.pid,
        busy = worker.current_tasks.len(),
        slots = worker.slots,
        tasks = tasks.join(" "),
        heartbeat = if worker.heartbeat_unix_ms == 0 {
            String::new()
        } else {
            format!(
                "{} ago",
                duration(now_unix_ms.saturating_sub(worker.heartbeat_unix_ms))
            )
        },
        blocklisted = blocklisted.join(" "),
    )
}

/// The header of the table [`worker_row`] fills.
pub const WORKER_HEADER: &str = "<tr><th>Worker</th><th>Host</th><th>PID</th><th>Busy</th>\
    <th>Current tasks</th><th>Heartbeat</th><th>Blocklisted for</th></tr>";

#[cfg(test)]
mod tests {
    use super::*;

    fn job(state: v1::JobState, counts: v1::TaskCounts) -> v1::JobStatus {
        v1::JobStatus {
            job_id: "j1".to_owned(),
            name: "<script>alert(1)</script>".to_owned(),
            owner: "<b>mallory</b>".to_owned(),
            state: state.into(),
            counts: Some(counts),
            submitted_unix_ms: 1_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn the_time_left_extrapolates_the_finished_tasks() {
        let counts = v1::TaskCounts {
            succeeded: 2,
            failed: 1,
            pending: 6,
            ..Default::default()
        };
        // 3 of 9 finished in 60 s: 6 left take 120 s.
        let progress = JobProgress::of(&job(v1::JobState::Running, counts), 1_060_000);
        assert_eq!((progress.finished, progress.total), (3, 9));
        assert_eq!(progress.eta, "~2 min 00 s");
        assert!((progress.fraction() - 1.0 / 3.0).abs() < 1e-9);
        let fresh = JobProgress::of(
            &job(
                v1::JobState::Running,
                v1::TaskCounts {
                    pending: 4,
                    ..Default::default()
                },
            ),
            1_060_000,
        );
        assert_eq!(fresh.eta, "");
    }

    #[test]
    fn rows_escape_names_and_errors() {
        let row = job_row(&job(v1::JobState::Running, v1::TaskCounts::default()), 0);
        assert!(!row.contains("<script>"), "{row}");
        assert!(row.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(
            row.contains("<td data-cell=\"owner\">&lt;b&gt;mallory&lt;/b&gt;</td>"),
            "{row}"
        );
        let task = v1::TaskStatus {
            task_id: "j1.0000007".to_owned(),
            source_name: "\"><img src=x onerror=alert(1)>.wav".to_owned(),
            state: v1::TaskState::Failed.into(),
            last_error: "<b>bad</b> input".to_owned(),
            ..Default::default()
        };
        let row = task_row("j1", &task);
        assert!(row.starts_with("<tr id=\"task-7\""), "{row}");
        assert!(!row.contains("<img") && !row.contains("<b>"), "{row}");
        assert!(row.contains("&lt;b&gt;bad&lt;/b&gt; input"));
        assert!(row.contains("href=\"/jobs/j1/tasks/7\""));
    }
}
