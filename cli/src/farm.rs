//! The farm client commands: `submit`, `watch`, `status`, `fetch`, `workers` (`cancel` and the
//! other job operations are in `operations`).
//!
//! Each talks gRPC to a coordinator: `--coordinator URL`, else `LATHE_COORDINATOR`, else
//! `DEFAULT_COORDINATOR` (loopback, where `make farm` puts it). Audio moves only over gRPC: `submit`
//! uploads the sources the coordinator does not hold yet (by BLAKE3 digest) and `fetch` downloads the masters,
//! each verified against its digest.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lathe_coordinator::client::FarmClient;
use lathe_coordinator::record::TaskState;
use lathe_engine::album::source_rate_hz;
use lathe_model::catalog::Catalogue;
use lathe_model::delivery::plan::DeliveryPlan;
use lathe_model::profile::Profile;
use lathe_proto::v1;
use lathe_worker::embedded::DeliveryJob;
use serde_json::json;

use crate::coordinator::{CoordinatorArg, connect, rpc_error, runtime};
use crate::job_report::{JobReport, TrackOutcome};
use crate::job_status::{job_json, qc_verdict, task_json, task_name};
use crate::progress::{JobView, follow_job};
use crate::sources::file_name;
use crate::table::Table;
use crate::{EXIT_FAILURES, EXIT_OK, EXIT_USAGE, Streams};

/// Arguments of `lathe submit`.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// A folder of audio files (searched recursively), audio files, or a catalogue manifest (TOML).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// A preset name (see `lathe profiles`) or a profile TOML file (default: streaming; with a
    /// manifest it replaces the manifest's `[job] profile`).
    #[arg(short, long)]
    pub profile: Option<String>,
    /// Higher runs first; equal priorities share workers fairly (default: 0, or the manifest's
    /// `[job] priority`).
    #[arg(long, allow_negative_numbers = true)]
    pub priority: Option<i32>,
    /// A name for the job (default: the manifest's `[job] name`, else the first input's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Follow the job until it ends (exit 0 only if every task succeeded).
    #[arg(long)]
    pub watch: bool,
    /// Print the job id (and with --watch the final status) as JSON.
    #[arg(long)]
    pub json: bool,
    /// A key naming this submission: submitting again with the same key (a retry after a
    /// timeout) returns the job the first submission created instead of making a second.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    #[command(flatten)]
    pub coordinator: CoordinatorArg,
}

/// The profile of a submitted folder when none is given.
const DEFAULT_PROFILE: &str = "streaming";

/// Arguments of `lathe watch`.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// The job id.
    pub job: String,
    /// Print every status update as one line of JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub coordinator: CoordinatorArg,
}

/// Arguments of `lathe status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// A job id: its tasks; without, a table of jobs.
    pub job: Option<String>,
    /// Clear the job's worker blocklist (all workers, or the one given).
    #[arg(long, value_name = "WORKER", num_args = 0..=1, default_missing_value = "", requires = "job")]
    pub clear_blocklist: Option<String>,
    /// Only the tasks in this state.
    #[arg(long, value_enum, requires = "job")]
    pub state: Option<TaskState>,
    /// Only the succeeded tasks whose master failed the quality checks.
    #[arg(long, requires = "job", conflicts_with = "state")]
    pub qc_failed: bool,
    /// At most this many tasks (or jobs, without a job id); default: every task with --json, 100
    /// in a table.
    #[arg(long)]
    pub limit: Option<u32>,
    /// Start after this task id (or job id, without a job id): the `next` a page ended with.
    #[arg(long)]
    pub after: Option<String>,
    /// JSON lines instead of a table: the job (with its counts by state), then one line per task,
    /// and a last `{"next_after": ID}` line when --limit left tasks out.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub coordinator: CoordinatorArg,
}

/// Tasks `lathe fetch` reads (and downloads the masters of) at a time.
const FETCH_PAGE: u32 = 500;

/// Tasks a `lathe status` table shows when no --limit is given.
const TABLE_TASKS: u32 = 100;

/// Arguments of `lathe fetch`.
#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// The job id.
    pub job: String,
    /// Folder for the masters and reports (created if missing).
    #[arg(short, long)]
    pub out: PathBuf,
    /// Print the files written as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub coordinator: CoordinatorArg,
}

/// Arguments of `lathe workers`.
#[derive(Debug, clap::Args)]
pub struct WorkersArgs {
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub coordinator: CoordinatorArg,
}

/// Finds the audio files of the inputs as `lathe master` does (folders searched recursively,
/// sorted; files kept as given).
fn collect_sources(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let sources = crate::sources::collect_sources(inputs).map_err(|usage| usage.0)?;
    if sources.is_empty() {
        return Err("no audio files found in the inputs".to_owned());
    }
    Ok(sources)
}

/// A job ready to submit: its name, priority, profile, and each track's source with its spec (the
/// digest is filled in once the source is uploaded).
struct FarmJob {
    name: String,
    priority: i32,
    profile: Profile,
    tracks: Vec<(PathBuf, v1::TrackSpec)>,
}

/// A folder (or files) of loose tracks: the masters are named as `lathe master` names them.
fn folder_job(args: &SubmitArgs) -> Result<FarmJob, String> {
    let profile = Profile::load(args.profile.as_deref().unwrap_or(DEFAULT_PROFILE))
        .map_err(|e| e.to_string())?;
    let sources = collect_sources(&args.inputs)?;
    let name = args.name.clone().unwrap_or_else(|| {
        args.inputs[0]
            .file_name()
            .map_or_else(|| "job".to_owned(), |n| n.to_string_lossy().into_owned())
    });
    let tracks = sources
        .into_iter()
        .map(|source| {
            let spec = v1::TrackSpec {
                source_name: file_name(&source),
                ..Default::default()
            };
            (source, spec)
        })
        .collect();
    Ok(FarmJob {
        name,
        priority: args.priority.unwrap_or(0),
        profile,
        tracks,
    })
}

/// A catalogue manifest as a farm job: its delivery planned as the engine's task graph
/// (`lathe_model::delivery::plan::DeliveryPlan`: every album, outlet and loose track), so that the farm delivers
/// what `lathe master MANIFEST` delivers.
struct DeliveryJobArgs {
    name: String,
    priority: i32,
    job: DeliveryJob,
}

fn delivery_job(manifest: &Path, args: &SubmitArgs) -> Result<DeliveryJobArgs, String> {
    let mut catalogue = Catalogue::load(manifest).map_err(|e| e.to_string())?;
    if let Some(profile) = &args.profile {
        catalogue.job.profile = profile.clone();
    }
    Profile::load(&catalogue.profile_for(None)).map_err(|e| e.to_string())?;
    let plan = DeliveryPlan::of(&catalogue, &source_rate_hz)
        .map_err(|e| format!("{}: {e}", manifest.display()))?;
    let name = args.name.clone().unwrap_or_else(|| {
        if catalogue.job.name.is_empty() {
            file_name(manifest)
        } else {
            catalogue.job.name.clone()
        }
    });
    Ok(DeliveryJobArgs {
        name,
        priority: args.priority.unwrap_or(catalogue.job.priority),
        job: DeliveryJob { catalogue, plan },
    })
}

/// `lathe submit`.
pub fn submit(args: &SubmitArgs, streams: &mut Streams<'_>) -> anyhow::Result<i32> {
    if let [manifest] = args.inputs.as_slice()
        && manifest.extension().is_some_and(|e| e == "toml")
    {
        return submit_delivery(manifest, args, streams);
    }
    let job = match folder_job(args) {
        Ok(job) => job,
        Err(message) => {
            writeln!(streams.err, "lathe: {message}")?;
            return Ok(EXIT_USAGE);
        }
    };
    runtime()?.block_on(async {
        let client = connect(&args.coordinator).await?;
        let files: Vec<&Path> = job.tracks.iter().map(|(f, _)| f.as_path()).collect();
        let digests = client.upload_sources(&files).await?;
        let tracks = job
            .tracks
            .iter()
            .zip(&digests)
            .map(|((_, spec), digest)| v1::TrackSpec {
                source_digest: digest.to_string(),
                ..spec.clone()
            })
            .collect();
        let job_id = client
            .submit_job(v1::SubmitJobRequest {
                name: job.name.clone(),
                priority: job.priority,
                profile_toml: job.profile.to_toml(),
                tracks,
                idempotency_key: args.idempotency_key.clone().unwrap_or_default(),
                ..Default::default()
            })
            .await
            .map_err(|error| match error {
                lathe_coordinator::Error::Rpc(status) => rpc_error(status),
                error => error.into(),
            })?;
        if args.json && !args.watch {
            writeln!(streams.out, "{}", json!({ "job_id": job_id }))?;
        } else if !args.json {
            writeln!(
                streams.out,
                "submitted job {job_id}: {} tracks, profile {}, priority {}",
                job.tracks.len(),
                job.profile.name,
                job.priority
            )?;
        }
        if !args.watch {
            return Ok(EXIT_OK);
        }
        follow(&client, &job_id, args.json, streams).await
    })
}

/// `lathe submit MANIFEST`: the catalogue's delivery as one graph job.
fn submit_delivery(
    manifest: &Path,
    args: &SubmitArgs,
    streams: &mut Streams<'_>,
) -> anyhow::Result<i32> {
    let delivery = match delivery_job(manifest, args) {
        Ok(delivery) => delivery,
        Err(message) => {
            writeln!(streams.err, "lathe: {message}")?;
            return Ok(EXIT_USAGE);
        }
    };
    runtime()?.block_on(async {
        let client = connect(&args.coordinator).await?;
        let job_id = lathe_worker::embedded::submit_delivery(
            &client,
            &delivery.job,
            &delivery.name,
            delivery.priority,
            args.idempotency_key.as_deref().unwrap_or_default(),
        )
        .await?;
        if args.json && !args.watch {
            writeln!(streams.out, "{}", json!({ "job_id": job_id }))?;
        } else if !args.json {
            writeln!(
                streams.out,
                "submitted job {job_id}: {} tasks delivering {} tracks to {}, priority {}",
                delivery.job.plan.tasks.len(),
                delivery.job.catalogue.track_count(),
                delivery
                    .job
                    .catalogue
                    .job
                    .outlets
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                delivery.priority
            )?;
        }
        if !args.watch {
            return Ok(EXIT_OK);
        }
        follow(&client, &job_id, args.json, streams).await
    })
}

/// `lathe watch`.
pub fn watch(args: &WatchArgs, streams: &mut Streams<'_>) -> anyhow::Result<i32> {
    runtime()?.block_on(async {
        let client = connect(&args.coordinator).await?;
        follow(&client, &args.job, args.json, streams).await
    })
}

/// Follows a job to its end: progress bars (a bar per running task with its phase, and the job's bar
/// with its ETA), or JSON lines. Exit 0 only if every task succeeded.
async fn follow(
    client: &FarmClient,
    job_id: &str,
    json_lines: bool,
    streams: &mut Streams<'_>,
) -> anyhow::Result<i32> {
    let started = Instant::now();
    let view = if json_lines {
        JobView::JsonLines(&mut *streams.out)
    } else {
        JobView::FarmBars { job_id }
    };
    let status = follow_job(client, job_id, view).await?;
    let counts = status.counts.unwrap_or_default();
    if !json_lines {
        let total = counts.total();
        writeln!(
            streams.out,
            "job {job_id} {}: {} of {total} tasks succeeded ({} failed QC) in {:.1} s",
            status.state().word(),
            counts.succeeded,
            counts.qc_failed,
            started.elapsed().as_secs_f64()
        )?;
        if counts.cancelled > 0 {
            writeln!(streams.err, "lathe: {} tasks cancelled", counts.cancelled)?;
        }
        // The failures and the QC failures, a page at a time (not every task of the job).
        for qc_failed in [false, true] {
            let mut after = String::new();
            loop {
                let page = if qc_failed {
                    client.qc_failed_page(job_id, &after, 0).await?
                } else {
                    client
                        .task_page(job_id, Some(v1::TaskState::Failed), &after, 0)
                        .await?
                };
                for task in &page.tasks {
                    let (state, reason) = if qc_failed {
                        ("failed QC", qc_issues(task))
                    } else {
                        (task.state().word(), task.last_error.clone())
                    };
                    writeln!(streams.err, "lathe: {}: {state}: {reason}", task_name(task))?;
                }
                if page.next_after.is_empty() {
                    break;
                }
                after = page.next_after;
            }
        }
    }
    // As `lathe master`: 0 only when every task succeeded and every master passed QC.
    Ok(
        if status.state() == v1::JobState::Succeeded && counts.qc_failed == 0 {
            EXIT_OK
        } else {
            EXIT_FAILURES
        },
    )
}

/// The QC issues a finished task's report lists, joined (a track's report, or each file of a
/// graph task's outcome).
fn qc_issues(task: &v1::TaskStatus) -> String {
    let Ok(report) = serde_json::from_str::<serde_json::Value>(&task.report_json) else {
        return String::new();
    };
    let issues = |value: &serde_json::Value| -> Vec<String> {
        value["qc"]["issues"]
            .as_array()
            .map(|issues| {
                issues
                    .iter()
                    .filter_map(|issue| issue.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut all = issues(&report);
    if let Some(files) = report["files"].as_array() {
        all.extend(files.iter().flat_map(issues));
    }
    all.join("; ")
}

/// `lathe status`.
pub fn status(args: &StatusArgs, streams: &mut Streams<'_>) -> anyhow::Result<i32> {
    runtime()?.block_on(async {
        let client = connect(&args.coordinator).await?;
        let Some(job_id) = &args.job else {
            return list_jobs(&client, args, streams).await;
        };
        if let Some(worker) = &args.clear_blocklist {
            let cleared = client
                .jobs
                .clone()
                .clear_blocklist(v1::ClearBlocklistRequest {
                    job_id: job_id.clone(),
                    worker_id: worker.clone(),
                })
                .await
                .map_err(rpc_error)?
                .into_inner()
                .cleared;
            if !args.json {
                writeln!(
                    streams.out,
                    "cleared from the blocklist: {}",
                    cleared.join(", ")
                )?;
            }
        }
        let status = client
            .jobs
            .clone()
            .get_job(v1::JobRef {
                job_id: job_id.clone(),
            })
            .await
            .map_err(rpc_error)?
            .into_inner();
        if args.json {
            writeln!(streams.out, "{}", job_json(&status))?;
        } else {
            print_job_header(&status, streams)?;
        }
        // The tasks, a page at a time, each printed as it arrives.
        let limit = args
            .limit
            .or((!args.json).then_some(TABLE_TASKS))
            .unwrap_or(u32::MAX);
        let state = args.state.map(TaskState::to_proto);
        let mut after = args.after.clone().unwrap_or_default();
        let mut shown = 0u32;
        let mut table = Table::new(&[
            "task",
            "source or label",
            "state",
            "qc",
            "worker",
            "attempts",
            "last error",
        ]);
        let next = loop {
            let count = (limit - shown).min(1_000);
            let page = if args.qc_failed {
                client.qc_failed_page(job_id, &after, count).await
            } else {
                client.task_page(job_id, state, &after, count).await
            }
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            for task in &page.tasks {
                if args.json {
                    writeln!(streams.out, "{}", task_json(task))?;
                } else {
                    table.row(task_row(task));
                }
            }
            shown += u32::try_from(page.tasks.len()).unwrap_or(u32::MAX);
            if page.next_after.is_empty() {
                break None;
            }
            if shown >= limit {
                break Some(page.next_after);
            }
            after = page.next_after;
        };
        if args.json {
            if let Some(next) = next {
                writeln!(streams.out, "{}", json!({ "next_after": next }))?;
            }
        } else {
            write!(streams.out, "{}", table.render())?;
            if let Some(next) = next {
                writeln!(streams.out, "more tasks: --after {next}")?;
            }
        }
        Ok(EXIT_OK)
    })
}

/// `lathe status` without a job: a page of jobs with their counts.
async fn list_jobs(
    client: &FarmClient,
    args: &StatusArgs,
    streams: &mut Streams<'_>,
) -> anyhow::Result<i32> {
    let reply = client
        .jobs
        .clone()
        .list_jobs(v1::ListJobsRequest {
            after: args.after.clone().unwrap_or_default(),
            limit: args.limit.unwrap_or(TABLE_TASKS),
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    if args.json {
        for job in &reply.jobs {
            writeln!(streams.out, "{}", job_json(job))?;
        }
        if !reply.next_after.is_empty() {
            writeln!(streams.out, "{}", json!({ "next_after": reply.next_after }))?;
        }
        return Ok(EXIT_OK);
    }
    let mut table = Table::new(&[
        "job",
        "name",
        "priority",
        "state",
        "done",
        "failed",
        "qc failed",
    ]);
    for job in &reply.jobs {
        let counts = job.counts.unwrap_or_default();
        let total = counts.total();
        table.row(vec![
            job.job_id.clone(),
            job.name.clone(),
            job.priority.to_string(),
            job.state().word().to_owned(),
            format!("{}/{total}", counts.succeeded),
            counts.failed.to_string(),
            counts.qc_failed.to_string(),
        ]);
    }
    write!(streams.out, "{}", table.render())?;
    if !reply.next_after.is_empty() {
        writeln!(streams.out, "more jobs: --after {}", reply.next_after)?;
    }
    Ok(EXIT_OK)
}

/// The lines above a job's task table: its state, its counts by state and its blocklist.
fn print_job_header(status: &v1::JobStatus, streams: &mut Streams<'_>) -> anyhow::Result<()> {
    writeln!(
        streams.out,
        "job {} ({}): {}, profile {}, priority {}",
        status.job_id,
        status.name,
        status.state().word(),
        status.profile_name,
        status.priority
    )?;
    let c = status.counts.unwrap_or_default();
    writeln!(
        streams.out,
        "tasks: {} pending, {} queued, {} running, {} succeeded ({} failed QC), {} failed, {} cancelled",
        c.pending, c.queued, c.running, c.succeeded, c.qc_failed, c.failed, c.cancelled
    )?;
    if !status.blocklisted_workers.is_empty() {
        writeln!(
            streams.out,
            "blocklisted workers: {} (clear with --clear-blocklist)",
            status.blocklisted_workers.join(", ")
        )?;
    }
    if !status.paused_reason.is_empty() {
        writeln!(streams.out, "{}", status.paused_reason)?;
    }
    Ok(())
}

/// A task's row in the `lathe status` table.
fn task_row(task: &v1::TaskStatus) -> Vec<String> {
    let state = if task.state() == v1::TaskState::Running {
        format!("running ({} {:.0}%)", task.phase, task.fraction * 100.0)
    } else {
        task.state().word().to_owned()
    };
    vec![
        task.task_id.clone(),
        task_name(task).to_owned(),
        state,
        qc_verdict(task).to_owned(),
        task.worker_id.clone(),
        task.attempts.to_string(),
        task.last_error.clone(),
    ]
}

/// `lathe fetch`.
pub fn fetch(args: &FetchArgs, streams: &mut Streams<'_>) -> anyhow::Result<i32> {
    runtime()?.block_on(async {
        let client = connect(&args.coordinator).await?;
        let status = client
            .jobs
            .clone()
            .get_job(v1::JobRef {
                job_id: args.job.clone(),
            })
            .await
            .map_err(rpc_error)?
            .into_inner();
        if !status.plan_digest.is_empty() {
            let status = client.job_with_tasks(&args.job).await?;
            let manifest =
                lathe_worker::embedded::fetch_delivery(&client, &status, &args.out).await?;
            if args.json {
                writeln!(
                    streams.out,
                    "{}",
                    json!({
                        "job_id": status.job_id,
                        "written": manifest.files.iter().map(|f| args.out.join(&f.path)).collect::<Vec<_>>(),
                        "failures": manifest.failures,
                    })
                )?;
                return Ok(if manifest.all_passed() { EXIT_OK } else { EXIT_FAILURES });
            }
            return crate::deliver::print_delivery(&manifest, &args.out, streams);
        }
        // A page of tasks at a time: their masters and reports are written, and only what the
        // job's report needs is kept.
        let mut report = JobReportBuilder::new(&status);
        let (mut written, mut missing) = (Vec::new(), Vec::new());
        let mut after = String::new();
        loop {
            let page = client
                .task_page(&args.job, None, &after, FETCH_PAGE)
                .await?;
            let tasks = v1::JobStatus {
                tasks: page.tasks,
                ..Default::default()
            };
            written.extend(
                lathe_worker::embedded::fetch_outputs(&client, &tasks, &args.out).await?,
            );
            report.add(&tasks.tasks, &args.out)?;
            missing.extend(
                tasks
                    .tasks
                    .into_iter()
                    .filter(|t| t.state() != v1::TaskState::Succeeded)
                    .map(|t| (t.source_name.clone(), t.state().word(), t.last_error)),
            );
            if page.next_after.is_empty() {
                break;
            }
            after = page.next_after;
        }
        report.finish(&status).write(&args.out)?;
        if args.json {
            writeln!(
                streams.out,
                "{}",
                json!({ "job_id": status.job_id, "written": written, "missing": missing.iter().map(|(name, _, _)| name).collect::<Vec<_>>() })
            )?;
        } else {
            writeln!(
                streams.out,
                "{} masters of job {} -> {}",
                written.len(),
                status.job_id,
                args.out.display()
            )?;
        }
        for (name, state, error) in &missing {
            writeln!(streams.err, "lathe: {name}: {state} {error}")?;
        }
        let qc_failed = status.counts.unwrap_or_default().qc_failed > 0;
        Ok(if missing.is_empty() && !qc_failed {
            EXIT_OK
        } else {
            EXIT_FAILURES
        })
    })
}

/// The job's `report.json`, in the shape `lathe master` writes, gathered a page of tasks at a
/// time: sources by the names they were submitted under, masters where `fetch` put them; the
/// job's time runs from its submission to the end of its last task.
struct JobReportBuilder {
    tracks: Vec<TrackOutcome>,
    ended_ms: f64,
    workers: std::collections::BTreeSet<String>,
}

impl JobReportBuilder {
    fn new(status: &v1::JobStatus) -> Self {
        Self {
            tracks: Vec::new(),
            ended_ms: status.submitted_unix_ms as f64,
            workers: std::collections::BTreeSet::new(),
        }
    }

    /// Adds a page of tasks whose masters went under `out`.
    fn add(&mut self, tasks: &[v1::TaskStatus], out: &Path) -> anyhow::Result<()> {
        for task in tasks {
            let input = Path::new(&task.source_name);
            let output = lathe_worker::embedded::output_path(out, task)?;
            let report = (task.state() == v1::TaskState::Succeeded)
                .then(|| {
                    serde_json::from_str::<lathe_model::report::TrackReport>(&task.report_json)
                })
                .transpose()?;
            self.tracks.push(match report {
                Some(report) => {
                    self.ended_ms = self
                        .ended_ms
                        .max(task.started_unix_ms as f64 + report.elapsed_s * 1e3);
                    TrackOutcome::mastered(input, &output, &report, report.elapsed_s)
                }
                None => TrackOutcome::failed(
                    input,
                    &output,
                    format!(
                        "{}: {} {}",
                        task.source_name,
                        task.state().word(),
                        task.last_error
                    ),
                    0.0,
                ),
            });
            if !task.worker_id.is_empty() {
                self.workers.insert(task.worker_id.clone());
            }
        }
        Ok(())
    }

    fn finish(self, status: &v1::JobStatus) -> JobReport {
        JobReport::new(
            &status.profile_name,
            self.workers.len(),
            (self.ended_ms - status.submitted_unix_ms as f64).max(0.0) / 1e3,
            self.tracks,
        )
    }
}

/// `lathe workers`.
pub fn workers(args: &WorkersArgs, streams: &mut Streams<'_>) -> anyhow::Result<i32> {
    runtime()?.block_on(async {
        let client = connect(&args.coordinator).await?;
        let workers = client
            .jobs
            .clone()
            .list_workers(v1::ListWorkersRequest {})
            .await
            .map_err(rpc_error)?
            .into_inner()
            .workers;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        if args.json {
            let all: Vec<_> = workers
                .iter()
                .map(|w| {
                    json!({
                        "worker_id": w.worker_id, "host": w.host, "pid": w.pid, "slots": w.slots,
                        "current_tasks": w.current_tasks, "heartbeat_unix_ms": w.heartbeat_unix_ms,
                        "blocklisted_for": w.blocklisted_for,
                    })
                })
                .collect();
            writeln!(streams.out, "{}", serde_json::to_string_pretty(&all)?)?;
            return Ok(EXIT_OK);
        }
        let mut table = Table::new(&[
            "worker",
            "host",
            "pid",
            "slots",
            "tasks",
            "heartbeat",
            "blocklisted for",
        ]);
        for worker in &workers {
            let age = Duration::from_millis(now_ms.saturating_sub(worker.heartbeat_unix_ms));
            table.row(vec![
                worker.worker_id.clone(),
                worker.host.clone(),
                worker.pid.to_string(),
                worker.slots.to_string(),
                worker.current_tasks.join(" "),
                format!("{:.1} s ago", age.as_secs_f64()),
                worker.blocklisted_for.join(" "),
            ]);
        }
        write!(streams.out, "{}", table.render())?;
        Ok(EXIT_OK)
    })
}
