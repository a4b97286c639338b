//! The dashboard's pages, server-rendered: the jobs (`/`), a job (`/jobs/{id}`), a track
//! (`/jobs/{id}/tasks/{index}`) and the workers (`/workers`). Each page reads one bounded page of
//! rows ([`PAGE_ROWS`]) and a job's counts, never a whole job or the whole catalogue. Each shows
//! what the signed-in caller may see ([`super::access`]).

use std::fmt::Write as _;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::response::Html;
use lathe_model::analysis::Analysis;
use lathe_model::delivery::outcome::TaskOutcome;
use lathe_model::plot::PlotData;
use lathe_model::report::TrackReport;
use lathe_proto::v1;
use serde::Deserialize;

use super::access::{require_visible, require_workers, sees_workers};
use super::error_page::ErrorPage;
use super::html::{Section, Viewer, escape, level, page, url_component, utc_time};
use super::plots;
use super::report::StoredReport;
use super::rows::{
    JOB_HEADER, JobProgress, TASK_HEADER, WORKER_HEADER, job_href, job_row, task_row, worker_row,
};
use crate::auth::Caller;
use crate::coordinator::Coordinator;
use crate::record::{TaskRecord, TaskState, unix_ms};

/// Rows a page shows: jobs on the jobs page, tasks on a job's page.
pub const PAGE_ROWS: usize = 100;

/// A task's needs read to find its source's curves (an album's `render` needs its `measure` task
/// and a few others).
const NEEDS_READ: usize = 8;

/// The filter word of the QC-failed tasks.
pub const QC_FAILED: &str = "qc_failed";

/// The query of the jobs page: where the page starts.
#[derive(Debug, Default, Deserialize)]
pub struct JobsQuery {
    /// The last job of the previous page.
    pub after: Option<String>,
}

/// The query of a job's page: which tasks and where the page starts.
#[derive(Debug, Default, Deserialize)]
pub struct TasksQuery {
    /// A task state's name, or `qc_failed`; every task without it.
    pub state: Option<String>,
    /// The last task of the previous page.
    pub after: Option<String>,
}

/// The state filter of a job's page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskFilter {
    /// Every task.
    All,
    /// The tasks in one state.
    State(TaskState),
    /// The succeeded tasks that failed QC.
    QcFailed,
}

impl TaskFilter {
    /// The filter a query names (`None` or empty: every task).
    pub fn parse(name: Option<&str>) -> Result<Self, ErrorPage> {
        match name.unwrap_or_default() {
            "" | "all" => Ok(Self::All),
            QC_FAILED => Ok(Self::QcFailed),
            name => TaskState::ALL
                .into_iter()
                .find(|state| state.name() == name)
                .map(Self::State)
                .ok_or_else(|| {
                    ErrorPage::bad_request(format!(
                        "{name:?} is not a task state (pending, queued, running, succeeded, \
                         failed, cancelled or qc_failed)"
                    ))
                }),
        }
    }

    /// Its name in a query (empty for every task).
    pub fn name(self) -> &'static str {
        match self {
            Self::All => "",
            Self::State(state) => state.name(),
            Self::QcFailed => QC_FAILED,
        }
    }
}

/// The header of `caller`'s page in `section`.
fn viewer(caller: &Caller, section: Section) -> Viewer<'_> {
    Viewer {
        caller,
        section,
        workers: sees_workers(caller),
    }
}

/// A query parameter that is given and not empty.
fn given(parameter: Option<&String>) -> Option<&str> {
    parameter
        .map(String::as_str)
        .filter(|text| !text.is_empty())
}

/// A page of the jobs `caller` may see, after job `after`, and the job the next page starts
/// after. As `ListJobs` does, one page of the catalogue is read and filtered, so a submit
/// session's page may come back short, even empty, with a page after it.
pub async fn visible_jobs(
    coordinator: &Coordinator,
    caller: &Caller,
    after: Option<&str>,
) -> crate::error::Result<(Vec<v1::JobStatus>, Option<String>)> {
    let (mut jobs, next) = coordinator.list(after, PAGE_ROWS).await?;
    jobs.retain(|job| caller.may_read(&job.owner));
    Ok((jobs, next))
}

/// `/`: a page of jobs with their owner, state, progress, failures and time left.
pub async fn jobs(
    State(coordinator): State<Coordinator>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<JobsQuery>,
) -> Result<Html<String>, ErrorPage> {
    let after = given(query.after.as_ref());
    let (jobs, next) = visible_jobs(&coordinator, &caller, after).await?;
    let now = unix_ms();
    let mut body = String::from("<h1>Jobs</h1><table id=\"jobs\"><thead>");
    body.push_str(JOB_HEADER);
    body.push_str("</thead><tbody>");
    for job in &jobs {
        body.push_str(&job_row(job, now));
    }
    body.push_str("</tbody></table>");
    if jobs.is_empty() {
        body.push_str("<p id=\"no-jobs\">No jobs on this page. Submit one with <code>lathe submit</code>.</p>");
    }
    body.push_str(&pager("/?", after.is_some(), next.as_deref()));
    Ok(Html(page(
        "Jobs",
        Some(viewer(&caller, Section::Jobs)),
        &[
            ("page", "jobs"),
            ("after", after.unwrap_or_default()),
            ("last-page", if next.is_none() { "true" } else { "false" }),
            ("page-rows", &PAGE_ROWS.to_string()),
        ],
        &body,
    )))
}

/// The links to the first and the next page; `base` ends in `?` or `&`.
fn pager(base: &str, not_first: bool, next: Option<&str>) -> String {
    let mut links = String::from("<nav class=\"pager\">");
    if not_first {
        let first = base.trim_end_matches(['?', '&']);
        let _ = write!(
            links,
            "<a href=\"{}\">First page</a> ",
            escape(if first.is_empty() { "/" } else { first })
        );
    }
    if let Some(next) = next {
        let _ = write!(
            links,
            "<a rel=\"next\" href=\"{}\">Next page</a>",
            escape(&format!("{base}after={}", url_component(next)))
        );
    }
    links.push_str("</nav>");
    links
}

/// The job's counts as filter links, each count in a `data-count` element the script updates.
fn count_links(job: &v1::JobStatus, filter: TaskFilter) -> String {
    let counts = job.counts.unwrap_or_default();
    let href = job_href(&job.job_id);
    let total = counts.total();
    let entries = [
        ("all", TaskFilter::All, total),
        (
            "pending",
            TaskFilter::State(TaskState::Pending),
            counts.pending,
        ),
        (
            "queued",
            TaskFilter::State(TaskState::Queued),
            counts.queued,
        ),
        (
            "running",
            TaskFilter::State(TaskState::Running),
            counts.running,
        ),
        (
            "succeeded",
            TaskFilter::State(TaskState::Succeeded),
            counts.succeeded,
        ),
        (
            "failed",
            TaskFilter::State(TaskState::Failed),
            counts.failed,
        ),
        (
            "cancelled",
            TaskFilter::State(TaskState::Cancelled),
            counts.cancelled,
        ),
        (QC_FAILED, TaskFilter::QcFailed, counts.qc_failed),
    ];
    let mut links = String::from("<ul class=\"counts\">");
    for (name, this, count) in entries {
        let target = match this {
            TaskFilter::All => href.clone(),
            _ => format!("{href}?state={}", this.name()),
        };
        let current = if this == filter {
            " aria-current=\"true\""
        } else {
            ""
        };
        let _ = write!(
            links,
            "<li><a href=\"{}\"{current}>{} <span data-count=\"{name}\">{count}</span></a></li>",
            escape(&target),
            name.replace('_', " "),
        );
    }
    links.push_str("</ul>");
    links
}

/// The forms of a job's actions (cancel, retry the failed tasks, priority); the script posts them
/// without leaving the page, and without it they post and come back.
fn action_forms(job: &v1::JobStatus) -> String {
    let href = escape(&job_href(&job.job_id));
    format!(
        "<section class=\"actions\">\
         <form method=\"post\" action=\"{href}/priority\" data-action=\"priority\">\
         <label>Priority <input name=\"priority\" type=\"number\" step=\"1\" value=\"{priority}\" \
         data-field=\"priority-input\"></label> <button type=\"submit\">Set</button></form>\
         <form method=\"post\" action=\"{href}/retry\" data-action=\"retry\">\
         <button type=\"submit\" id=\"retry-job\">Retry failed tasks</button></form>\
         <details class=\"danger\"><summary id=\"cancel-open\">Cancel job…</summary>\
         <form method=\"post\" action=\"{href}/cancel\" data-action=\"cancel\">\
         <button type=\"submit\" id=\"cancel-job\">Cancel this job</button></form></details>\
         <p id=\"action-message\" role=\"status\"></p></section>",
        priority = job.priority,
    )
}

/// `/jobs/{id}`: the job's owner, counts, progress and actions (for a caller that may change
/// it), and a page of its tasks (filtered by `?state=`, continued with `?after=`).
pub async fn job(
    State(coordinator): State<Coordinator>,
    Extension(caller): Extension<Caller>,
    Path(job_id): Path<String>,
    Query(query): Query<TasksQuery>,
) -> Result<Html<String>, ErrorPage> {
    require_visible(&coordinator, &caller, &job_id).await?;
    let filter = TaskFilter::parse(query.state.as_deref())?;
    let after = given(query.after.as_ref());
    let job = coordinator.summary(&job_id).await?;
    let tasks = match filter {
        TaskFilter::All => {
            coordinator
                .task_page(&job_id, None, after, PAGE_ROWS)
                .await?
        }
        TaskFilter::State(state) => {
            coordinator
                .task_page(&job_id, Some(state), after, PAGE_ROWS)
                .await?
        }
        TaskFilter::QcFailed => {
            coordinator
                .qc_failed_page(&job_id, after, PAGE_ROWS)
                .await?
        }
    };
    let progress = JobProgress::of(&job, unix_ms());
    let state = job.state().word();
    let live = matches!(job.state(), v1::JobState::Running | v1::JobState::Suspended);
    let name = if job.name.is_empty() {
        &job.job_id
    } else {
        &job.name
    };
    let mut body = format!(
        "<p><a href=\"/\">All jobs</a></p><h1>{name}</h1>\
         <p class=\"facts\">Job <code>{id}</code> · owner <span data-field=\"owner\">{owner}</span> · \
         profile {profile} · submitted {submitted} · \
         state <strong data-field=\"state\" class=\"state state-{state}\">{state}</strong> · \
         priority <span data-field=\"priority\">{priority}</span></p>\
         <p class=\"paused\" data-field=\"paused\">{paused}</p>\
         <p class=\"progress\"><progress id=\"job-progress\" max=\"1\" value=\"{fraction:.4}\"></progress> \
         <span data-field=\"finished\">{finished}</span> of <span data-field=\"total\">{total}</span> \
         tasks finished · <span data-field=\"eta\">{eta}</span></p>",
        name = escape(name),
        id = escape(&job.job_id),
        owner = escape(&job.owner),
        profile = escape(&job.profile_name),
        submitted = utc_time(job.submitted_unix_ms),
        priority = job.priority,
        paused = escape(&job.paused_reason),
        fraction = progress.fraction(),
        finished = progress.finished,
        total = progress.total,
        eta = escape(&progress.eta),
    );
    body.push_str(&count_links(&job, filter));
    if caller.may_change(&job.owner) {
        body.push_str(&action_forms(&job));
    }
    let _ = write!(
        body,
        "<h2>Tasks{}</h2><table id=\"tasks\"><thead>{TASK_HEADER}</thead><tbody>",
        match filter {
            TaskFilter::All => String::new(),
            other => format!(": {}", other.name().replace('_', " ")),
        }
    );
    for task in &tasks.tasks {
        body.push_str(&task_row(&job_id, &coordinator.task_status(task)));
    }
    body.push_str("</tbody></table>");
    if tasks.tasks.is_empty() {
        body.push_str("<p>No tasks here.</p>");
    }
    let base = match filter {
        TaskFilter::All => format!("{}?", job_href(&job_id)),
        other => format!("{}?state={}&", job_href(&job_id), other.name()),
    };
    body.push_str(&pager(&base, after.is_some(), tasks.next_after.as_deref()));
    Ok(Html(page(
        name,
        Some(viewer(&caller, Section::Jobs)),
        &[
            ("page", "job"),
            ("job", &job.job_id),
            ("state", state),
            ("live", if live { "true" } else { "false" }),
        ],
        &body,
    )))
}

/// `/jobs/{id}/tasks/{index}`: one task, its stored report with its plots before and after.
pub async fn task(
    State(coordinator): State<Coordinator>,
    Extension(caller): Extension<Caller>,
    Path((job_id, index)): Path<(String, String)>,
) -> Result<Html<String>, ErrorPage> {
    require_visible(&coordinator, &caller, &job_id).await?;
    let job = coordinator.summary(&job_id).await?;
    let index: u32 = index.parse().map_err(|_| {
        ErrorPage::from(crate::error::Error::TaskNotFound(format!(
            "{job_id}.{index}"
        )))
    })?;
    let record = coordinator.task(&job_id, index).await?;
    let status = coordinator.task_status(&record);
    let report = StoredReport::read(&record.report_json);
    let name = if status.label.is_empty() {
        &status.source_name
    } else {
        &status.label
    };
    let job_name = if job.name.is_empty() {
        &job.job_id
    } else {
        &job.name
    };
    let mut body = format!(
        "<p><a href=\"{job_href}\">{job_name}</a></p><h1>{name}</h1><table class=\"facts\">\
         <tr><th>Task</th><td><code>{id}</code></td></tr>\
         <tr><th>State</th><td class=\"state state-{state}\">{state}</td></tr>\
         <tr><th>Phase</th><td>{phase}</td></tr><tr><th>Worker</th><td>{worker}</td></tr>\
         <tr><th>Attempts</th><td>{attempts}</td></tr><tr><th>Output</th><td>{output}</td></tr>\
         <tr><th>Started</th><td>{started}</td></tr>\
         <tr><th>Last error</th><td class=\"error\">{error}</td></tr></table>",
        job_href = escape(&job_href(&job_id)),
        job_name = escape(job_name),
        name = escape(name),
        id = escape(&status.task_id),
        state = status.state().word(),
        phase = escape(&status.phase),
        worker = escape(&status.worker_id),
        attempts = status.attempts,
        output = escape(&status.output_name),
        started = utc_time(status.started_unix_ms),
        error = escape(&status.last_error),
    );
    body.push_str(&report_section(&coordinator, &record, &report).await);
    Ok(Html(page(
        name,
        Some(viewer(&caller, Section::Jobs)),
        &[("page", "task")],
        &body,
    )))
}

/// The report part of a task's page: plots, the analyses before and after, QC, stages, warnings
/// and the stored JSON.
async fn report_section(
    coordinator: &Coordinator,
    record: &TaskRecord,
    report: &StoredReport,
) -> String {
    let mut section = String::from("<h2>Report</h2>");
    match report {
        StoredReport::Empty => {
            section.push_str("<p>No report yet: a task has one once it succeeded.</p>");
            return section;
        }
        StoredReport::Unreadable(reason) => {
            let _ = write!(
                section,
                "<p>The stored report is not in a form this coordinator reads ({}).</p>",
                escape(reason)
            );
        }
        StoredReport::Outcome(outcome) => {
            section.push_str(&curves(coordinator, record, outcome).await);
        }
        StoredReport::Track(track) => section.push_str(&track_plots(track)),
    }
    if let Some(track) = report.track() {
        section.push_str(&track_report(track));
    }
    if let StoredReport::Outcome(outcome) = report {
        section.push_str(&outcome_files(outcome));
    }
    let _ = write!(
        section,
        "<details><summary>Stored report (JSON)</summary><pre>{}</pre></details>",
        escape(&record.report_json)
    );
    section
}

/// The loudness-over-time and spectrum plots of a graph task: the master's curves from its
/// outcome, the source's from the `measure` task it needs.
async fn curves(coordinator: &Coordinator, record: &TaskRecord, outcome: &TaskOutcome) -> String {
    let mut before: Option<PlotData> = None;
    for &need in record.graph.needs.iter().take(NEEDS_READ) {
        let Ok(needed) = coordinator.task(&record.job_id, need).await else {
            continue;
        };
        // A `measure` task's outcome holds the source's figures and curves.
        if let StoredReport::Outcome(measured) = StoredReport::read(&needed.report_json) {
            if measured.source.is_some() && measured.plot.is_some() {
                before = measured.plot;
                break;
            }
        }
    }
    let after = outcome.plot.clone();
    let (before, after) = match (before, after) {
        (None, None) => {
            return "<p>No curves were measured for this task.</p>".to_owned();
        }
        // A `measure` task's own curves are the source's.
        (None, Some(plot)) if outcome.source.is_some() => (plot, PlotData::default()),
        (before, after) => (before.unwrap_or_default(), after.unwrap_or_default()),
    };
    curve_plots(&before, &after)
}

/// The loudness-over-time and spectrum plots, before and after.
fn curve_plots(before: &PlotData, after: &PlotData) -> String {
    format!(
        "<div class=\"plots\">{}{}</div>",
        plots::loudness_over_time(before, after),
        plots::spectrum(before, after)
    )
}

/// The plots of a render's track report: its curves before and after; for a report written before
/// the engine measured curves, the levels chart instead.
pub(super) fn track_plots(report: &TrackReport) -> String {
    match &report.plots {
        Some(curves) => curve_plots(&curves.before, &curves.after),
        None => format!(
            "<div class=\"plots\">{}</div><p class=\"note\">This report was written before \
             lathe measured curves: the levels before and after stand in for them.</p>",
            plots::levels(&report.input_analysis, &report.output_analysis)
        ),
    }
}

/// A track report: the analyses side by side, QC, stages and warnings.
fn track_report(report: &TrackReport) -> String {
    let mut section = analyses(&report.input_analysis, &report.output_analysis);
    let _ = write!(
        section,
        "<p>Profile {} · gain {:.2} dB · target {} · loudness error {} · {} passes · lathe {}</p>",
        escape(&report.profile),
        report.gain_db,
        level(report.target_lufs, "LUFS"),
        level(report.loudness_error_lu, "LU"),
        report.passes,
        escape(&report.lathe_version),
    );
    let _ = write!(
        section,
        "<h3>Quality check</h3><p class=\"{}\">{}</p>",
        if report.qc.passed { "good" } else { "bad" },
        if report.qc.passed { "passed" } else { "failed" }
    );
    section.push_str(&list(&report.qc.issues));
    if !report.stages.is_empty() {
        section.push_str("<h3>Stages</h3><table><tr><th>Stage</th><th>Figures</th></tr>");
        for stage in &report.stages {
            let _ = write!(
                section,
                "<tr><td>{}</td><td><code>{}</code></td></tr>",
                escape(&stage.stage),
                escape(&stage.report.to_string())
            );
        }
        section.push_str("</table>");
    }
    if !report.warnings.is_empty() {
        section.push_str("<h3>Warnings</h3>");
        section.push_str(&list(&report.warnings));
    }
    section
}

/// An escaped bullet list (nothing for no items).
fn list(items: &[String]) -> String {
    if items.is_empty() {
        return String::new();
    }
    let mut list = String::from("<ul>");
    for item in items {
        let _ = write!(list, "<li>{}</li>", escape(item));
    }
    list.push_str("</ul>");
    list
}

/// The source's and the master's analyses side by side.
fn analyses(before: &Analysis, after: &Analysis) -> String {
    let rows: [(&str, String, String); 10] = [
        (
            "Integrated loudness",
            level(before.integrated_lufs, "LUFS"),
            level(after.integrated_lufs, "LUFS"),
        ),
        (
            "Loudness range",
            level(before.loudness_range_lu, "LU"),
            level(after.loudness_range_lu, "LU"),
        ),
        (
            "Max short-term",
            level(before.max_short_term_lufs, "LUFS"),
            level(after.max_short_term_lufs, "LUFS"),
        ),
        (
            "Max momentary",
            level(before.max_momentary_lufs, "LUFS"),
            level(after.max_momentary_lufs, "LUFS"),
        ),
        (
            "True peak",
            level(before.true_peak_dbtp, "dBTP"),
            level(after.true_peak_dbtp, "dBTP"),
        ),
        (
            "Sample peak",
            level(before.sample_peak_dbfs, "dBFS"),
            level(after.sample_peak_dbfs, "dBFS"),
        ),
        (
            "Clipped samples",
            before.clipped_samples.to_string(),
            after.clipped_samples.to_string(),
        ),
        (
            "DC offset",
            format!("{:.5}", before.dc_offset),
            format!("{:.5}", after.dc_offset),
        ),
        (
            "Duration",
            format!("{:.2} s", before.duration_s),
            format!("{:.2} s", after.duration_s),
        ),
        (
            "Sample rate",
            format!("{} Hz, {} ch", before.sample_rate, before.channels),
            format!("{} Hz, {} ch", after.sample_rate, after.channels),
        ),
    ];
    let mut table = String::from(
        "<table class=\"analyses\"><tr><th>Measure</th><th>Before (source)</th><th>After (master)</th></tr>",
    );
    for (name, before, after) in rows {
        let _ = write!(
            table,
            "<tr><td>{name}</td><td class=\"num\">{before}</td><td class=\"num\">{after}</td></tr>"
        );
    }
    table.push_str("</table>");
    table
}

/// A graph task's files with their figures and checks.
fn outcome_files(outcome: &TaskOutcome) -> String {
    let mut section = String::new();
    if !outcome.files.is_empty() {
        section.push_str(
            "<h3>Files</h3><table><tr><th>Path</th><th>Kind</th><th>Loudness</th><th>True peak</th><th>QC</th></tr>",
        );
        for file in &outcome.files {
            let _ = write!(
                section,
                "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"{}\">{}</td></tr>",
                escape(&file.path),
                file.kind.as_str(),
                level(file.integrated_lufs, "LUFS"),
                level(file.true_peak_dbtp, "dBTP"),
                if file.qc.passed { "good" } else { "bad" },
                if file.qc.passed {
                    "passed".to_owned()
                } else {
                    escape(&file.qc.issues.join("; "))
                },
            );
        }
        section.push_str("</table>");
    }
    if !outcome.notes.is_empty() {
        section.push_str("<h3>Notes</h3>");
        section.push_str(&list(&outcome.notes));
    }
    section
}

/// `/workers`: the registered workers, their tasks and blocklists (read and admin sessions only:
/// a worker's current tasks name other owners' jobs).
pub async fn workers(
    State(coordinator): State<Coordinator>,
    Extension(caller): Extension<Caller>,
) -> Result<Html<String>, ErrorPage> {
    require_workers(&caller)?;
    let workers = coordinator.workers().await?;
    let now = unix_ms();
    let mut body =
        format!("<h1>Workers</h1><table id=\"workers\"><thead>{WORKER_HEADER}</thead><tbody>");
    for worker in &workers {
        body.push_str(&worker_row(worker, now));
    }
    body.push_str("</tbody></table>");
    if workers.is_empty() {
        body.push_str("<p>No worker is registered.</p>");
    }
    Ok(Html(page(
        "Workers",
        Some(viewer(&caller, Section::Workers)),
        &[("page", "workers")],
        &body,
    )))
}
