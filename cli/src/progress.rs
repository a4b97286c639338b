//! Following a farm job to its end, shown the way the command wants: a bar per track (`lathe master`
//! on files), a spinner (`lathe master MANIFEST`), the job's bar and a bar per running task (`lathe
//! watch`, `lathe submit --watch`), or one line of JSON per status update (their `--json`).

use std::collections::HashMap;
use std::io::Write;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use lathe_coordinator::client::FarmClient;
use lathe_proto::v1;

use crate::coordinator::rpc_error;
use crate::job_status::{job_json, task_name};

/// How a followed job is shown; the bars and the spinner draw on stderr.
pub(crate) enum JobView<'a> {
    /// A bar per running track, named as given (one name per task, in the job's task order), with
    /// the track's phase and the fraction of it done.
    TrackBars {
        /// The name each task's bar shows.
        track_names: &'a [String],
    },
    /// One spinner: how many tasks are done, and the labels of those running.
    Spinner,
    /// The job's bar with its ETA, and a bar per running task with its phase and worker.
    FarmBars {
        /// The job shown on the job's bar.
        job_id: &'a str,
    },
    /// Every status update as one line of JSON (the shape of `lathe status JOB --json`).
    JsonLines(&'a mut dyn Write),
}

/// Follows the job to its end, showing each status update in `view` (the job's counts and its
/// running tasks: a bounded message whatever the job's size, kept whole from the coordinator's
/// deltas); returns the job's final status, with no tasks (page them with `FarmClient::task_page`).
pub(crate) async fn follow_job(
    client: &FarmClient,
    job_id: &str,
    view: JobView<'_>,
) -> anyhow::Result<v1::JobStatus> {
    let mut watched = client
        .watch_job(job_id)
        .await
        .map_err(|error| match error {
            lathe_coordinator::Error::Rpc(status) => rpc_error(status),
            error => error.into(),
        })?;
    let mut display = Display::new(view);
    let mut last = None;
    let outcome = async {
        while let Some(status) = watched.next().await? {
            display.show(status)?;
            last = Some(status.clone());
            if crate::job_status::job_has_ended(status.state()) {
                break;
            }
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    display.finish();
    outcome?;
    let mut last =
        last.ok_or_else(|| anyhow::anyhow!("the coordinator closed the watch of job {job_id}"))?;
    last.tasks.clear();
    Ok(last)
}

/// A task's position in its job, from its id (`{job}.{index}`).
fn task_index(task: &v1::TaskStatus) -> Option<usize> {
    task.task_id.rsplit_once('.')?.1.parse().ok()
}

/// Counts by state of a status (zero when the coordinator sent none).
fn counts(status: &v1::JobStatus) -> v1::TaskCounts {
    status.counts.unwrap_or_default()
}

/// Tasks that have ended (succeeded, failed or cancelled), and all tasks.
fn ended_and_total(status: &v1::JobStatus) -> (u32, u32) {
    let c = counts(status);
    let ended = c.succeeded + c.failed + c.cancelled;
    (ended, ended + c.pending + c.queued + c.running)
}

/// A view with what it has drawn so far.
enum Display<'a> {
    TrackBars {
        track_names: &'a [String],
        tasks: TaskBars,
    },
    Spinner(ProgressBar),
    FarmBars {
        overall: ProgressBar,
        tasks: TaskBars,
    },
    JsonLines(&'a mut dyn Write),
}

/// A bar per running task, under any bars already drawn: its name on the left, then the bar, the
/// percentage and a message.
struct TaskBars {
    bars: MultiProgress,
    style: ProgressStyle,
    shown: HashMap<String, ProgressBar>,
}

impl TaskBars {
    fn new(bars: MultiProgress) -> Self {
        Self {
            bars,
            style: ProgressStyle::with_template("{prefix:>24!} {bar:30} {percent:>3}% {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            shown: HashMap::new(),
        }
    }

    /// Clears the bars of the tasks no longer running (those not among `status`'s running tasks).
    fn keep_running(&mut self, status: &v1::JobStatus) {
        let running: std::collections::HashSet<&str> = status
            .tasks
            .iter()
            .filter(|task| task.state() == v1::TaskState::Running)
            .map(|task| task.task_id.as_str())
            .collect();
        self.shown.retain(|id, bar| {
            let keep = running.contains(id.as_str());
            if !keep {
                bar.finish_and_clear();
            }
            keep
        });
    }

    /// The bar of `task` while it runs (added, named `name`, when it starts); `None` once it has
    /// stopped.
    fn running(&mut self, task: &v1::TaskStatus, name: &str) -> Option<&ProgressBar> {
        if task.state() != v1::TaskState::Running {
            return None;
        }
        Some(self.shown.entry(task.task_id.clone()).or_insert_with(|| {
            let bar = self.bars.add(ProgressBar::new(1000));
            bar.set_style(self.style.clone());
            bar.set_prefix(name.to_owned());
            bar
        }))
    }

    fn finish(&self) {
        self.shown.values().for_each(ProgressBar::finish_and_clear);
    }
}

impl<'a> Display<'a> {
    fn new(view: JobView<'a>) -> Self {
        match view {
            JobView::TrackBars { track_names } => Display::TrackBars {
                track_names,
                tasks: TaskBars::new(MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            },
            JobView::Spinner => {
                let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                Display::Spinner(bar)
            }
            JobView::FarmBars { job_id } => {
                let bars = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
                let overall = bars.add(ProgressBar::new(1000));
                overall.set_style(
                    ProgressStyle::with_template(
                        "{prefix:>24!} [{bar:30}] {percent:>3}% ETA {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                overall.set_prefix(format!("job {job_id}"));
                Display::FarmBars {
                    overall,
                    tasks: TaskBars::new(bars),
                }
            }
            JobView::JsonLines(out) => Display::JsonLines(out),
        }
    }

    fn show(&mut self, status: &v1::JobStatus) -> std::io::Result<()> {
        match self {
            Display::TrackBars { track_names, tasks } => {
                tasks.keep_running(status);
                for task in &status.tasks {
                    let Some(name) = task_index(task).and_then(|i| track_names.get(i)) else {
                        continue;
                    };
                    let Some(bar) = tasks.running(task, name) else {
                        continue;
                    };
                    if !task.phase.is_empty() {
                        bar.set_message(task.phase.clone());
                    }
                    bar.set_position((task.fraction.clamp(0.0, 1.0) * 1000.0) as u64);
                }
            }
            Display::Spinner(bar) => {
                let (done, total) = ended_and_total(status);
                let running: Vec<&str> = status
                    .tasks
                    .iter()
                    .filter(|t| t.state() == v1::TaskState::Running)
                    .map(|t| t.label.as_str())
                    .collect();
                bar.set_message(format!("{done}/{total} tasks; {}", running.join(", ")));
                bar.tick();
            }
            Display::FarmBars { overall, tasks } => {
                let (ended, total) = ended_and_total(status);
                let running: f64 = status
                    .tasks
                    .iter()
                    .filter(|task| task.state() == v1::TaskState::Running)
                    .map(|task| track_progress(&task.phase, task.fraction))
                    .sum();
                let done = f64::from(ended) + running;
                overall.set_position((done / f64::from(total.max(1)) * 1000.0) as u64);
                tasks.keep_running(status);
                for task in &status.tasks {
                    let Some(bar) = tasks.running(task, task_name(task)) else {
                        continue;
                    };
                    bar.set_message(format!("{} on {}", task.phase, task.worker_id));
                    bar.set_position((track_progress(&task.phase, task.fraction) * 1000.0) as u64);
                }
            }
            Display::JsonLines(out) => writeln!(out, "{}", job_json(status))?,
        }
        Ok(())
    }

    /// Clears what is still drawn.
    fn finish(self) {
        match self {
            Display::TrackBars { tasks, .. } => tasks.finish(),
            Display::Spinner(bar) => bar.finish_and_clear(),
            Display::FarmBars { overall, tasks } => {
                tasks.finish();
                overall.finish_and_clear();
            }
            Display::JsonLines(_) => {}
        }
    }
}

/// How far through a track the render is (0 to 1), from its phase and the fraction of that phase:
/// the engine reads the source once per phase, so each phase is given an equal share.
fn track_progress(phase: &str, fraction: f64) -> f64 {
    const PHASES: [&str; 5] = ["analyse", "chain", "calibrate", "render", "verify"];
    let index = PHASES.iter().position(|p| *p == phase).unwrap_or(0);
    (index as f64 + fraction.clamp(0.0, 1.0)) / PHASES.len() as f64
}
