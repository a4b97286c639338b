//! What a worker shows an operator: its Prometheus metrics and its readiness, served on
//! `--metrics-listen` (see [`lathe_coordinator::http`]).
//!
//! | metric | type | what |
//! |---|---|---|
//! | `lathe_worker_phase_seconds{phase}` | histogram | time of each phase of a task: `start`, `fetch`, the engine's `analyse`, `chain`, `calibrate`, `render`, `verify` (a graph task's engine time is `deliver`), `upload`, `complete` |
//! | `lathe_worker_realtime_factor` | histogram | seconds of audio mastered per second of engine time |
//! | `lathe_worker_tasks_total{outcome}` | counter | tasks settled: `succeeded`, `failed`, `handed_back`, `no_room` (left to another worker for lack of scratch room), `stopped`, `dropped` |
//! | `lathe_worker_qc_failures_total` | counter | masters that failed QC |
//! | `lathe_worker_bytes_fetched_total` | counter | bytes of sources and inputs fetched |
//! | `lathe_worker_bytes_uploaded_total` | counter | bytes of masters and files uploaded |
//! | `lathe_worker_heartbeat_failures_total` | counter | registrations that failed |
//! | `lathe_worker_slots_total`, `lathe_worker_slots_busy` | gauge | its slots, and those running a task |
//! | `lathe_worker_ready` | gauge | 1 when ready |
//!
//! Ready means registered, pulling, and not [`HEARTBEAT_FAILURES_NOT_READY`] failed heartbeats in
//! a row (a worker cut off from etcd loses its registration and should not get traffic), and
//! the last task it looked at fitted in its scratch folder (else `/readyz` says "scratch full:
//! X bytes free, ..." until one fits again).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Failed heartbeats in a row after which the worker reports not ready.
pub const HEARTBEAT_FAILURES_NOT_READY: u32 = 3;

type Labels = Vec<(&'static str, String)>;

/// A worker's metrics and readiness.
#[derive(Debug)]
pub struct WorkerObserver {
    registry: Registry,
    phase_seconds: Family<Labels, Histogram>,
    realtime: Histogram,
    tasks: Family<Labels, Counter>,
    qc_failures: Counter,
    bytes_fetched: Counter,
    bytes_uploaded: Counter,
    heartbeat_failures: Counter,
    slots_total: Gauge,
    slots_busy: Gauge,
    ready_gauge: Gauge,
    registered: AtomicBool,
    pulling: AtomicBool,
    failed_heartbeats_in_a_row: AtomicU32,
    /// Why the last task looked at did not fit in the scratch folder, while none has since.
    no_room: Mutex<Option<String>>,
}

impl Default for WorkerObserver {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkerObserver {
    /// Every metric at zero; not ready.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        // 1 ms to about 4.5 hours.
        let phase_seconds = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 24))
        });
        registry.register(
            "lathe_worker_phase_seconds",
            "Time of each phase of a task",
            phase_seconds.clone(),
        );
        // 0.25x to about 4,000x real time.
        let realtime = Histogram::new(exponential_buckets(0.25, 2.0, 15));
        registry.register(
            "lathe_worker_realtime_factor",
            "Seconds of audio mastered per second of engine time",
            realtime.clone(),
        );
        let tasks = Family::<Labels, Counter>::default();
        registry.register(
            "lathe_worker_tasks",
            "Tasks settled, by outcome",
            tasks.clone(),
        );
        let qc_failures = Counter::default();
        registry.register(
            "lathe_worker_qc_failures",
            "Masters that failed QC",
            qc_failures.clone(),
        );
        let bytes_fetched = Counter::default();
        registry.register(
            "lathe_worker_bytes_fetched",
            "Bytes of sources and inputs fetched from the coordinator",
            bytes_fetched.clone(),
        );
        let bytes_uploaded = Counter::default();
        registry.register(
            "lathe_worker_bytes_uploaded",
            "Bytes of masters and files uploaded to the coordinator",
            bytes_uploaded.clone(),
        );
        let heartbeat_failures = Counter::default();
        registry.register(
            "lathe_worker_heartbeat_failures",
            "Registrations (heartbeats) that failed",
            heartbeat_failures.clone(),
        );
        let slots_total = Gauge::default();
        registry.register(
            "lathe_worker_slots_total",
            "Slots (tasks run at once)",
            slots_total.clone(),
        );
        let slots_busy = Gauge::default();
        registry.register(
            "lathe_worker_slots_busy",
            "Slots running a task",
            slots_busy.clone(),
        );
        let ready_gauge = Gauge::default();
        registry.register(
            "lathe_worker_ready",
            "1 when the worker is ready",
            ready_gauge.clone(),
        );
        Self {
            registry,
            phase_seconds,
            realtime,
            tasks,
            qc_failures,
            bytes_fetched,
            bytes_uploaded,
            heartbeat_failures,
            slots_total,
            slots_busy,
            ready_gauge,
            registered: AtomicBool::new(false),
            pulling: AtomicBool::new(false),
            failed_heartbeats_in_a_row: AtomicU32::new(0),
            no_room: Mutex::new(None),
        }
    }

    /// Records how long a phase of a task took.
    pub fn phase(&self, phase: &str, seconds: f64) {
        self.phase_seconds
            .get_or_create(&vec![("phase", phase.to_owned())])
            .observe(seconds);
    }

    /// Records a track's speed: seconds of audio per second of engine time.
    pub fn realtime_factor(&self, factor: f64) {
        if factor.is_finite() && factor > 0.0 {
            self.realtime.observe(factor);
        }
    }

    /// Counts a settled task.
    pub fn task_settled(&self, outcome: &str) {
        self.tasks
            .get_or_create(&vec![("outcome", outcome.to_owned())])
            .inc();
    }

    /// Counts a master that failed QC.
    pub fn qc_failed(&self) {
        self.qc_failures.inc();
    }

    /// Counts bytes fetched.
    pub fn fetched(&self, bytes: u64) {
        self.bytes_fetched.inc_by(bytes);
    }

    /// Counts bytes uploaded.
    pub fn uploaded(&self, bytes: u64) {
        self.bytes_uploaded.inc_by(bytes);
    }

    /// Sets the slots and how many are busy.
    pub fn slots(&self, total: u32, busy: usize) {
        self.slots_total.set(i64::from(total));
        self.slots_busy.set(i64::try_from(busy).unwrap_or(i64::MAX));
    }

    /// Records a heartbeat's outcome.
    pub fn heartbeat(&self, succeeded: bool) {
        if succeeded {
            self.registered.store(true, Ordering::Release);
            self.failed_heartbeats_in_a_row.store(0, Ordering::Release);
        } else {
            self.heartbeat_failures.inc();
            self.failed_heartbeats_in_a_row
                .fetch_add(1, Ordering::AcqRel);
        }
        self.update_ready_gauge();
    }

    /// Records whether the worker is pulling tasks (false once it drains).
    pub fn set_pulling(&self, pulling: bool) {
        self.pulling.store(pulling, Ordering::Release);
        self.update_ready_gauge();
    }

    /// Records whether the last task looked at fitted in the scratch folder: `None` when it
    /// did, else why not.
    pub fn scratch_room(&self, no_room: Option<String>) {
        if let Ok(mut current) = self.no_room.lock() {
            *current = no_room;
        }
        self.update_ready_gauge();
    }

    /// Why the worker is not ready, or `None` when it is.
    pub fn not_ready(&self) -> Option<String> {
        let failures = self.failed_heartbeats_in_a_row.load(Ordering::Acquire);
        if !self.registered.load(Ordering::Acquire) {
            Some("not registered yet".to_owned())
        } else if failures >= HEARTBEAT_FAILURES_NOT_READY {
            Some(format!("{failures} heartbeats in a row failed"))
        } else if !self.pulling.load(Ordering::Acquire) {
            Some("not pulling tasks (starting or draining)".to_owned())
        } else {
            self.no_room.lock().ok().and_then(|no_room| no_room.clone())
        }
    }

    fn update_ready_gauge(&self) {
        self.ready_gauge.set(i64::from(self.not_ready().is_none()));
    }

    /// The metrics as Prometheus (OpenMetrics) text.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(%error, "cannot encode the metrics");
        }
        text
    }
}

/// The worker's probes: `/metrics`, `/healthz`, `/readyz`.
#[derive(Debug, Clone)]
pub struct WorkerProbes(pub std::sync::Arc<WorkerObserver>);

impl lathe_coordinator::http::Observed for WorkerProbes {
    fn metrics_text(&self) -> String {
        self.0.encode()
    }

    fn readiness(&self) -> lathe_coordinator::http::Readiness {
        let reason = self.0.not_ready();
        Box::pin(async move { reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_registration_pulling_and_heartbeats() {
        let observer = WorkerObserver::new();
        assert!(observer.not_ready().is_some(), "not registered");
        observer.heartbeat(true);
        observer.set_pulling(true);
        assert_eq!(observer.not_ready(), None);
        assert!(observer.encode().contains("lathe_worker_ready 1\n"));
        for _ in 0..HEARTBEAT_FAILURES_NOT_READY - 1 {
            observer.heartbeat(false);
        }
        assert_eq!(observer.not_ready(), None, "a failure or two is weather");
        observer.heartbeat(false);
        assert!(
            observer
                .not_ready()
                .is_some_and(|reason| reason.contains("heartbeats")),
        );
        assert!(observer.encode().contains("lathe_worker_ready 0\n"));
        observer.heartbeat(true);
        assert_eq!(observer.not_ready(), None, "back after a good heartbeat");
        observer.set_pulling(false);
        assert!(observer.not_ready().is_some(), "draining");
    }

    #[test]
    fn a_full_scratch_folder_is_not_ready_until_a_task_fits() {
        let observer = WorkerObserver::new();
        observer.heartbeat(true);
        observer.set_pulling(true);
        observer.scratch_room(Some("scratch full: 10 bytes free".to_owned()));
        assert_eq!(
            observer.not_ready().as_deref(),
            Some("scratch full: 10 bytes free")
        );
        assert!(observer.encode().contains("lathe_worker_ready 0\n"));
        observer.scratch_room(None);
        assert_eq!(observer.not_ready(), None);
    }

    #[test]
    fn phases_and_outcomes_are_counted() {
        let observer = WorkerObserver::new();
        observer.phase("render", 0.5);
        observer.phase("render", 1.5);
        observer.task_settled("succeeded");
        observer.realtime_factor(42.0);
        observer.realtime_factor(f64::NAN);
        let text = observer.encode();
        assert!(
            text.contains("lathe_worker_phase_seconds_count{phase=\"render\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("lathe_worker_tasks_total{outcome=\"succeeded\"} 1\n"));
        assert!(text.contains("lathe_worker_realtime_factor_count 1\n"));
    }
}
