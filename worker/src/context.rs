//! What a worker's tasks share: its settings, its client of the coordinator, the tasks it is
//! running (each with its progress and whether it should stop), the scratch room they claimed,
//! and whether it should pull at all for now.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lathe_coordinator::client::FarmClient;

use crate::observe::WorkerObserver;
use crate::scratch::ScratchClaims;
use crate::settings::WorkerSettings;

/// Why a running task should stop.
const KEEP_GOING: u8 = 0;
const JOB_CANCELLED: u8 = 1;
const HAND_BACK: u8 = 2;
const TIMED_OUT: u8 = 3;

/// What the worker's tasks share.
pub(crate) struct WorkerContext {
    pub(crate) settings: WorkerSettings,
    pub(crate) client: FarmClient,
    pub(crate) running: Mutex<Vec<Arc<RunningTask>>>,
    /// Its metrics and readiness.
    pub(crate) observer: Arc<WorkerObserver>,
    /// The scratch room its running tasks claimed.
    pub(crate) scratch: ScratchClaims,
    /// Until when it pulls no task (it just left one for lack of scratch room).
    pub(crate) pull_paused_until: Mutex<Option<Instant>>,
}

impl WorkerContext {
    /// Adds a task to those running.
    pub(crate) fn add_running(&self, task: Arc<RunningTask>) {
        if let Ok(mut running) = self.running.lock() {
            running.push(task);
            self.observer.slots(self.settings.slots, running.len());
        }
    }

    /// Removes a task from those running.
    pub(crate) fn remove_running(&self, task: &Arc<RunningTask>) {
        if let Ok(mut running) = self.running.lock() {
            running.retain(|t| !Arc::ptr_eq(t, task));
            self.observer.slots(self.settings.slots, running.len());
        }
    }

    /// Pulls no task for `pause` (from now).
    pub(crate) fn pause_pulling(&self, pause: Duration) {
        if let Ok(mut until) = self.pull_paused_until.lock() {
            *until = Instant::now().checked_add(pause);
        }
    }

    /// How long pulling stays paused, if it is.
    pub(crate) fn pull_pause(&self) -> Option<Duration> {
        let until = (*self.pull_paused_until.lock().ok()?)?;
        until
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
    }

    /// The ids of the tasks it is running, sorted, without repeats.
    pub(crate) fn current_tasks(&self) -> Vec<String> {
        self.running
            .lock()
            .map(|running| {
                running
                    .iter()
                    .map(|t| t.task_id.clone())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A task this worker is running, as the rest of the worker sees it.
#[derive(Debug)]
pub(crate) struct RunningTask {
    /// The task id.
    pub(crate) task_id: String,
    /// The token of the attempt, which every call about the task presents.
    pub(crate) attempt_token: String,
    stop: AtomicU8,
    /// The engine's phase and how far through it the task is.
    pub(crate) progress: Mutex<(String, f64)>,
    /// How long each of its phases took so far.
    pub(crate) phases: Mutex<PhaseTimes>,
}

/// How long the phases of a task took: what its "task done" log line reports, so that an
/// operator (and `make bench-farm`) can see where a task's time goes besides the engine.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PhaseTimes {
    /// The `StartTask` call.
    pub(crate) start: Duration,
    /// Fetching the sources and inputs.
    pub(crate) fetch: Duration,
    /// The engine.
    pub(crate) render: Duration,
    /// Hashing and uploading the files written.
    pub(crate) upload: Duration,
    /// The `CompleteTask` call.
    pub(crate) complete: Duration,
}

/// Which phase a span of a task's time belongs to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Phase {
    Start,
    Fetch,
    Render,
    Upload,
    Complete,
}

impl RunningTask {
    /// Task `task_id`, just started as the attempt of `attempt_token`.
    pub(crate) fn new(task_id: String, attempt_token: String) -> Self {
        Self {
            task_id,
            attempt_token,
            stop: AtomicU8::new(KEEP_GOING),
            progress: Mutex::new(("start".to_owned(), 0.0)),
            phases: Mutex::new(PhaseTimes::default()),
        }
    }

    /// Adds the time since `since` to `phase`.
    pub(crate) fn timed(&self, phase: Phase, since: Instant) {
        let spent = since.elapsed();
        if let Ok(mut phases) = self.phases.lock() {
            let slot = match phase {
                Phase::Start => &mut phases.start,
                Phase::Fetch => &mut phases.fetch,
                Phase::Render => &mut phases.render,
                Phase::Upload => &mut phases.upload,
                Phase::Complete => &mut phases.complete,
            };
            *slot += spent;
        }
    }

    /// The phases' times so far.
    pub(crate) fn phase_times(&self) -> PhaseTimes {
        self.phases.lock().map(|phases| *phases).unwrap_or_default()
    }

    /// True when the task stopped because its job was cancelled.
    pub(crate) fn job_cancelled(&self) -> bool {
        self.stop.load(Ordering::Acquire) == JOB_CANCELLED
    }

    /// Stops the task at the engine's next progress call and hands it back to the queue.
    pub(crate) fn hand_back(&self) {
        let _ =
            self.stop
                .compare_exchange(KEEP_GOING, HAND_BACK, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Stops the task at the engine's next progress call: its job was cancelled.
    pub(crate) fn cancel(&self) {
        let _ = self.stop.compare_exchange(
            KEEP_GOING,
            JOB_CANCELLED,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// Stops the task at the engine's next progress call: it passed the task time limit.
    pub(crate) fn time_out(&self) {
        let _ =
            self.stop
                .compare_exchange(KEEP_GOING, TIMED_OUT, Ordering::AcqRel, Ordering::Acquire);
    }

    /// True when the task stopped because it passed the task time limit.
    pub(crate) fn timed_out(&self) -> bool {
        self.stop.load(Ordering::Acquire) == TIMED_OUT
    }

    /// Why the task should stop, once it should.
    pub(crate) fn stop_reason(&self) -> Option<&'static str> {
        match self.stop.load(Ordering::Acquire) {
            JOB_CANCELLED => Some("the job was cancelled"),
            HAND_BACK => Some("the worker is shutting down"),
            TIMED_OUT => Some("the task time limit passed"),
            _ => None,
        }
    }
}
