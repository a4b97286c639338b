//! The `lathe` command line: `master`, `restore`, `analyze`, `profiles` and `demo` on this
//! machine; `submit`, `watch`, `status`, `fetch`, `cancel`, `workers` and the job operations
//! (`retry`, `suspend`, `resume`, `priority`, `pin`, `unpin`, `delete`) on a farm.
//!
//! The binary is a thin wrapper around [`run`], which takes the arguments and the streams to write to,
//! so that the cross-crate tests drive exactly what a user runs.
#![deny(missing_docs)]

mod analyze;
mod coordinator;
mod deliver;
mod demo;
mod farm;
mod job_report;
mod job_status;
mod master;
mod operations;
mod output_folder;
mod progress;
mod restore;
mod sources;
mod table;

pub use coordinator::CoordinatorArg;

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Exit status: every track succeeded.
pub const EXIT_OK: i32 = 0;
/// Exit status: at least one track failed (each is listed with its reason).
pub const EXIT_FAILURES: i32 = 1;
/// Exit status: the command line or profile was wrong; nothing was processed.
pub const EXIT_USAGE: i32 = 2;

/// Remaster back catalogues: restore, master, level and check audio at catalogue scale.
#[derive(Debug, Parser)]
#[command(name = "lathe", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Master files or folders on this machine (no servers needed).
    Master(master::MasterArgs),
    /// Restore one file (declick, decrackle, denoise, dehum, declip) into an aligned float WAV.
    Restore(restore::RestoreArgs),
    /// Measure loudness, peaks and defects of audio files.
    Analyze(analyze::AnalyzeArgs),
    /// List the built-in profiles, or print one as TOML to start a custom profile from.
    Profiles {
        /// A preset to print.
        name: Option<String>,
    },
    /// Submit a folder of audio (or a catalogue manifest) to a farm's coordinator.
    Submit(farm::SubmitArgs),
    /// Follow a farm job: a progress bar per running track and the job's bar with its ETA.
    Watch(farm::WatchArgs),
    /// A table of the farm's jobs, or of one job's tasks (state, worker, attempts, last error).
    Status(farm::StatusArgs),
    /// Download a farm job's masters and reports (the file names `lathe master` writes).
    Fetch(farm::FetchArgs),
    /// Cancel a farm job: no new tasks start, running ones stop.
    Cancel(operations::JobArgs),
    /// The farm's workers: host, pid, slots, current tasks, last heartbeat, blocklists.
    Workers(farm::WorkersArgs),
    /// Run a farm job's failed tasks again with fresh attempts (a finished job runs again).
    Retry(operations::JobArgs),
    /// Start no more of a farm job's tasks until it is resumed (running ones finish).
    Suspend(operations::JobArgs),
    /// Let a suspended farm job's tasks start again.
    Resume(operations::JobArgs),
    /// Change a farm job's priority (higher runs first).
    Priority(operations::PriorityArgs),
    /// Keep a farm job from the coordinator's retention (--retain-days) whatever its age.
    Pin(operations::JobArgs),
    /// Let retention delete a pinned farm job again.
    Unpin(operations::JobArgs),
    /// Delete a finished farm job: its state, and its sources and masters unless another job
    /// uses them.
    Delete(operations::DeleteArgs),
    /// Generate a short, deliberately rough demo album in DIR and master it.
    Demo {
        /// Folder for the demo (created): DIR/source holds the album, DIR/masters the masters.
        dir: PathBuf,
        /// Profile to master with: a preset name or a TOML file.
        #[arg(short, long, default_value = "streaming")]
        profile: String,
        /// Tracks mastered in parallel (default: all cores).
        #[arg(short, long)]
        jobs: Option<usize>,
    },
}

/// A usage problem: reported on one line, exit status 2, nothing processed.
#[derive(Debug)]
pub(crate) struct Usage(pub(crate) String);

/// Output streams for a command: user-facing results go to `out`, diagnostics to `err`.
pub struct Streams<'a> {
    /// Results (tables, JSON).
    pub out: &'a mut dyn Write,
    /// Errors and warnings.
    pub err: &'a mut dyn Write,
}

/// The `lathe` process: logging (`LATHE_LOG`, default `warn`; `LATHE_LOG_FORMAT=json`), spans
/// exported when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (so `lathe submit` opens the job's trace),
/// then [`run`] with the process's arguments on standard output and error. Returns the exit status
/// once every span is flushed.
pub fn run_process() -> i32 {
    // The exporter's gRPC client needs a Tokio runtime of its own: the commands start theirs.
    let exporting = std::env::var(lathe_coordinator::telemetry::OTLP_ENDPOINT_VAR)
        .is_ok_and(|endpoint| !endpoint.trim().is_empty());
    let exporter_runtime = exporting
        .then(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .ok()
        })
        .flatten();
    let telemetry = {
        let _entered = exporter_runtime
            .as_ref()
            .map(tokio::runtime::Runtime::enter);
        lathe_coordinator::telemetry::Telemetry::init_with_filter("lathe", "warn,lofty=error")
    };
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr();
    if let Err(error) = &telemetry {
        let _ = writeln!(err, "lathe: logging: {error}");
    }
    let status = {
        let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
        let command = args
            .get(1)
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _span = tracing::info_span!("lathe", lathe.command = %command).entered();
        run(
            args,
            &mut Streams {
                out: &mut out,
                err: &mut err,
            },
        )
    };
    drop(telemetry);
    drop(exporter_runtime);
    status
}

/// Runs `lathe` with `args` (the first is the program name) and returns the exit status.
pub fn run<I, T>(args: I, streams: &mut Streams<'_>) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = write!(streams.err, "{}", error.render());
            return if error.use_stderr() {
                EXIT_USAGE
            } else {
                EXIT_OK
            };
        }
    };
    let status = match cli.command {
        Command::Master(args) => master::run(&args, streams),
        Command::Restore(args) => restore::run(&args, streams),
        Command::Analyze(args) => analyze::run(&args, streams),
        Command::Profiles { name } => profiles(name.as_deref(), streams),
        Command::Submit(args) => farm::submit(&args, streams),
        Command::Watch(args) => farm::watch(&args, streams),
        Command::Status(args) => farm::status(&args, streams),
        Command::Fetch(args) => farm::fetch(&args, streams),
        Command::Cancel(args) => operations::cancel(&args, streams),
        Command::Workers(args) => farm::workers(&args, streams),
        Command::Retry(args) => operations::retry(&args, streams),
        Command::Suspend(args) => {
            operations::run(operations::JobOperation::Suspend, &args, streams)
        }
        Command::Resume(args) => operations::run(operations::JobOperation::Resume, &args, streams),
        Command::Priority(args) => operations::priority(&args, streams),
        Command::Pin(args) => operations::run(operations::JobOperation::Pin, &args, streams),
        Command::Unpin(args) => operations::run(operations::JobOperation::Unpin, &args, streams),
        Command::Delete(args) => operations::delete(&args, streams),
        Command::Demo { dir, profile, jobs } => demo::run(&dir, &profile, jobs, streams),
    };
    status.unwrap_or_else(|error| {
        let _ = writeln!(streams.err, "lathe: {error:#}");
        EXIT_FAILURES
    })
}

fn profiles(name: Option<&str>, streams: &mut Streams<'_>) -> anyhow::Result<i32> {
    match name {
        Some(name) => match lathe_model::profile::Profile::load(name) {
            Ok(profile) => {
                write!(streams.out, "{}", profile.to_toml())?;
                Ok(EXIT_OK)
            }
            Err(error) => {
                writeln!(streams.err, "lathe: {error}")?;
                Ok(EXIT_USAGE)
            }
        },
        None => {
            for (name, _) in lathe_model::profile::PRESETS {
                let profile = lathe_model::profile::Profile::preset(name)?;
                writeln!(streams.out, "{name:<10} {}", profile.description)?;
            }
            Ok(EXIT_OK)
        }
    }
}
