//! The farm client commands: `submit`, `watch`, `status`, `fetch`, `cancel`, `workers`.
//!
//! Each talks gRPC to a coordinator: `--coordinator URL`, else `LATHE_COORDINATOR`, else
//! [`DEFAULT_COORDINATOR`] (loopback, where `make farm` puts it). Audio moves only over gRPC: `submit`
//! uploads the sources the coordinator does not hold yet (by SHA-256) and `fetch` downloads the masters,
//! each verified against its digest.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use lathe_coordinator::client::{DEFAULT_COORDINATOR, FarmClient};
use lathe_engine::profile::Profile;
use lathe_proto::v1;
use serde_json::json;

use crate::table::Table;
use crate::{EXIT_FAILURES, EXIT_OK, EXIT_USAGE, Streams};

/// Where the coordinator is.
#[derive(Debug, Clone, clap::Args)]
pub struct CoordinatorArg {
    /// The coordinator's gRPC address.
    #[arg(long, env = "LATHE_COORDINATOR", default_value = DEFAULT_COORDINATOR)]
    pub coordinator: String,
}

/// Arguments of `lathe submit`.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// A folder of audio files (searched recursively), audio files, or a catalogue manifest (TOML).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// A preset name (see `lathe profiles`) or a profile TOML file.
    #[arg(short, long, default_value = "streaming")]
    pub profile: String,
    /// Higher runs first; equal priorities share workers fairly.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i32,
    /// A name for the job (default: the first input's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Follow the job until it ends (exit 0 only if every task succeeded).
    #[arg(long)]
    pub watch: bool,
    /// Print the job id (and with --watch the final status) as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub coordinator: CoordinatorArg,
}

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
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub coordinator: CoordinatorArg,
}

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

/// Arguments of `lathe cancel`.
#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    /// The job id.
    pub job: String,
    /// Print the job's state as JSON.
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

async fn connect(coordinator: &CoordinatorArg) -> anyhow::Result<FarmClient> {
    Ok(FarmClient::connect(&coordinator.coordinator).await?)
}

fn job_state_name(state: v1::JobState) -> &'static str {
    match state {
        v1::JobState::Unspecified => "unknown",
        v1::JobState::Running => "running",
        v1::JobState::Succeeded => "succeeded",
        v1::JobState::CompletedWithFailures => "completed_with_failures",
        v1::JobState::Failed => "failed",
        v1::JobState::Cancelled => "cancelled",
    }
}

fn task_state_name(state: v1::TaskState) -> &'static str {
    match state {
        v1::TaskState::Unspecified => "unknown",
        v1::TaskState::Pending => "pending",
        v1::TaskState::Queued => "queued",
        v1::TaskState::Running => "running",
        v1::TaskState::Succeeded => "succeeded",
        v1::TaskState::Failed => "failed",
        v1::TaskState::Cancelled => "cancelled",
    }
}

/// A job's status as JSON (the shape of `lathe status JOB --json`).
pub fn job_json(status: &v1::JobStatus) -> serde_json::Value {
    json!({
        "job_id": status.job_id,
        "name": status.name,
        "priority": status.priority,
        "state": job_state_name(status.state()),
        "profile": status.profile_name,
        "submitted_unix_ms": status.submitted_unix_ms,
        "blocklisted_workers": status.blocklisted_workers,
        "tasks": status.tasks.iter().map(|task| json!({
            "task_id": task.task_id,
            "source": task.source_name,
            "output": task.output_name,
            "state": task_state_name(task.state()),
            "worker": task.worker_id,
            "attempts": task.attempts,
            "last_error": task.last_error,
            "output_digest": task.output_digest,
            "phase": task.phase,
            "fraction": task.fraction,
        })).collect::<Vec<_>>(),
    })
}

/// Finds the audio files of the inputs as `lathe master` does (folders searched recursively,
/// sorted; files kept as given). A `.toml` input is a catalogue manifest, which the farm does not
/// take yet: albums need the `plan` and `assemble` tasks.
fn collect_sources(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    if let Some(manifest) = inputs
        .iter()
        .find(|i| i.extension().is_some_and(|e| e == "toml"))
    {
        return Err(format!(
            "{}: the farm does not take catalogue manifests yet (use `lathe master`); submit a folder of audio",
            manifest.display()
        ));
    }
    let sources = crate::master::collect_sources(inputs).map_err(|usage| usage.0)?;
    if sources.is_empty() {
        return Err("no audio files found in the inputs".to_owned());
    }
    Ok(sources)
}

/// `lathe submit`.
pub fn submit(args: &SubmitArgs, streams: &mut Streams<'_>) -> anyhow::Result<i32> {
    let profile = match Profile::load(&args.profile) {
        Ok(profile) => profile,
        Err(error) => {
            writeln!(streams.err, "lathe: {error}")?;
            return Ok(EXIT_USAGE);
        }
    };
    let sources = match collect_sources(&args.inputs) {
        Ok(sources) => sources,
        Err(message) => {
            writeln!(streams.err, "lathe: {message}")?;
            return Ok(EXIT_USAGE);
        }
    };
    let name = args.name.clone().unwrap_or_else(|| {
        args.inputs[0]
            .file_name()
            .map_or_else(|| "job".to_owned(), |n| n.to_string_lossy().into_owned())
    });
    runtime()?.block_on(async {
        let client = connect(&args.coordinator).await?;
        let files: Vec<&Path> = sources.iter().map(PathBuf::as_path).collect();
        let job_id = client
            .submit_sources(&name, args.priority, profile.to_toml(), &files)
            .await?;
        if args.json && !args.watch {
            writeln!(streams.out, "{}", json!({ "job_id": job_id }))?;
        } else if !args.json {
            writeln!(
                streams.out,
                "submitted job {job_id}: {} tracks, profile {}, priority {}",
                sources.len(),
                profile.name,
                args.priority
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
    let mut updates = client
        .jobs
        .clone()
        .watch(v1::JobRef {
            job_id: job_id.to_owned(),
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    let bars = MultiProgress::with_draw_target(if json_lines {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });
    let job_style =
        ProgressStyle::with_template("{prefix:>24!} [{bar:30}] {percent:>3}% ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    let task_style = ProgressStyle::with_template("{prefix:>24!} {bar:30} {percent:>3}% {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    let overall = bars.add(ProgressBar::new(1000));
    overall.set_style(job_style);
    overall.set_prefix(format!("job {job_id}"));
    let mut task_bars: HashMap<String, ProgressBar> = HashMap::new();
    let started = Instant::now();
    let mut last = None;
    while let Some(status) = updates.message().await? {
        if json_lines {
            writeln!(streams.out, "{}", job_json(&status))?;
        }
        let total = status.tasks.len().max(1) as f64;
        let done: f64 = status
            .tasks
            .iter()
            .map(|task| match task.state() {
                v1::TaskState::Running => track_progress(&task.phase, task.fraction),
                v1::TaskState::Succeeded | v1::TaskState::Failed | v1::TaskState::Cancelled => 1.0,
                _ => 0.0,
            })
            .sum();
        overall.set_position((done / total * 1000.0) as u64);
        for task in &status.tasks {
            let running = task.state() == v1::TaskState::Running;
            match (running, task_bars.contains_key(&task.task_id)) {
                (true, false) => {
                    let bar = bars.add(ProgressBar::new(1000));
                    bar.set_style(task_style.clone());
                    bar.set_prefix(task.source_name.clone());
                    task_bars.insert(task.task_id.clone(), bar);
                }
                (false, true) => {
                    if let Some(bar) = task_bars.remove(&task.task_id) {
                        bar.finish_and_clear();
                    }
                }
                _ => {}
            }
            if let Some(bar) = task_bars.get(&task.task_id) {
                bar.set_message(format!("{} on {}", task.phase, task.worker_id));
                bar.set_position((track_progress(&task.phase, task.fraction) * 1000.0) as u64);
            }
        }
        let ended = status.state() != v1::JobState::Running;
        last = Some(status);
        if ended {
            break;
        }
    }
    for bar in task_bars.values() {
        bar.finish_and_clear();
    }
    overall.finish_and_clear();
    let Some(status) = last else {
        anyhow::bail!("the coordinator closed the watch of job {job_id}");
    };
    if !json_lines {
        let succeeded = status
            .tasks
            .iter()
            .filter(|t| t.state() == v1::TaskState::Succeeded)
            .count();
        writeln!(
            streams.out,
            "job {job_id} {}: {succeeded} of {} tasks succeeded in {:.1} s",
            job_state_name(status.state()),
            status.tasks.len(),
            started.elapsed().as_secs_f64()
        )?;
        for task in status
            .tasks
            .iter()
            .filter(|t| t.state() != v1::TaskState::Succeeded)
        {
            writeln!(
                streams.err,
                "lathe: {}: {}: {}",
                task.source_name,
                task_state_name(task.state()),
                task.last_error
            )?;
        }
    }
    Ok(if status.state() == v1::JobState::Succeeded {
        EXIT_OK
    } else {
        EXIT_FAILURES
    })
}

/// How far through a track the render is (0 to 1), from its phase and the fraction of that phase:
/// the engine reads the source once per phase, so each phase is given an equal share.
fn track_progress(phase: &str, fraction: f64) -> f64 {
    const PHASES: [&str; 5] = ["analyse", "chain", "calibrate", "render", "verify"];
    let index = PHASES.iter().position(|p| *p == phase).unwrap_or(0);
    (index as f64 + fraction.clamp(0.0, 1.0)) / PHASES.len() as f64
}

/// `lathe status`.
pub fn status(args: &StatusArgs, streams: &mut Streams<'_>) -> anyhow::Result<i32> {
    runtime()?.block_on(async {
        let client = connect(&args.coordinator).await?;
        let mut jobs = client.jobs.clone();
        let Some(job_id) = &args.job else {
            let list = jobs
                .list_jobs(v1::ListJobsRequest {})
                .await
                .map_err(rpc_error)?
                .into_inner()
                .jobs;
            if args.json {
                let all: Vec<_> = list.iter().map(job_json).collect();
                writeln!(streams.out, "{}", serde_json::to_string_pretty(&all)?)?;
                return Ok(EXIT_OK);
            }
            let mut table = Table::new(&["job", "name", "priority", "state", "done", "failed"]);
            for job in &list {
                let count = |state| job.tasks.iter().filter(|t| t.state() == state).count();
                table.row(vec![
                    job.job_id.clone(),
                    job.name.clone(),
                    job.priority.to_string(),
                    job_state_name(job.state()).to_owned(),
                    format!("{}/{}", count(v1::TaskState::Succeeded), job.tasks.len()),
                    count(v1::TaskState::Failed).to_string(),
                ]);
            }
            write!(streams.out, "{}", table.render())?;
            return Ok(EXIT_OK);
        };
        if let Some(worker) = &args.clear_blocklist {
            let cleared = jobs
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
        let status = jobs
            .get_job(v1::JobRef {
                job_id: job_id.clone(),
            })
            .await
            .map_err(rpc_error)?
            .into_inner();
        if args.json {
            writeln!(
                streams.out,
                "{}",
                serde_json::to_string_pretty(&job_json(&status))?
            )?;
            return Ok(EXIT_OK);
        }
        writeln!(
            streams.out,
            "job {} ({}): {}, profile {}, priority {}",
            status.job_id,
            status.name,
            job_state_name(status.state()),
            status.profile_name,
            status.priority
        )?;
        if !status.blocklisted_workers.is_empty() {
            writeln!(
                streams.out,
                "blocklisted workers: {} (clear with --clear-blocklist)",
                status.blocklisted_workers.join(", ")
            )?;
        }
        let mut table = Table::new(&[
            "task",
            "source",
            "state",
            "worker",
            "attempts",
            "last error",
        ]);
        for task in &status.tasks {
            let state = if task.state() == v1::TaskState::Running {
                format!("running ({} {:.0}%)", task.phase, task.fraction * 100.0)
            } else {
                task_state_name(task.state()).to_owned()
            };
            table.row(vec![
                task.task_id.clone(),
                task.source_name.clone(),
                state,
                task.worker_id.clone(),
                task.attempts.to_string(),
                task.last_error.clone(),
            ]);
        }
        write!(streams.out, "{}", table.render())?;
        Ok(EXIT_OK)
    })
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
        let written = lathe_worker::embedded::fetch_outputs(&client, &status, &args.out).await?;
        let missing: Vec<_> = status
            .tasks
            .iter()
            .filter(|t| t.state() != v1::TaskState::Succeeded)
            .collect();
        if args.json {
            writeln!(
                streams.out,
                "{}",
                json!({ "job_id": status.job_id, "written": written, "missing": missing.iter().map(|t| &t.source_name).collect::<Vec<_>>() })
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
        for task in &missing {
            writeln!(
                streams.err,
                "lathe: {}: {} {}",
                task.source_name,
                task_state_name(task.state()),
                task.last_error
            )?;
        }
        Ok(if missing.is_empty() { EXIT_OK } else { EXIT_FAILURES })
    })
}

/// `lathe cancel`.
pub fn cancel(args: &CancelArgs, streams: &mut Streams<'_>) -> anyhow::Result<i32> {
    runtime()?.block_on(async {
        let client = connect(&args.coordinator).await?;
        let reply = client
            .jobs
            .clone()
            .cancel(v1::JobRef {
                job_id: args.job.clone(),
            })
            .await
            .map_err(rpc_error)?
            .into_inner();
        let state = job_state_name(reply.state());
        if args.json {
            writeln!(
                streams.out,
                "{}",
                json!({ "job_id": args.job, "state": state })
            )?;
        } else {
            writeln!(streams.out, "job {}: {state}", args.job)?;
        }
        Ok(EXIT_OK)
    })
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

/// A failed call to the coordinator as the CLI reports it: the coordinator's own message.
fn rpc_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message())
}
