//! The coordinator's Prometheus metrics, served as text on `/metrics` (see [`crate::http`]).
//!
//! Label sets stay bounded: tasks are counted per job and state for the jobs still running only
//! (the dispatcher reads their counts on every pass anyway), never per task.
//!
//! | metric | type | what |
//! |---|---|---|
//! | `lathe_backlog_tasks` | gauge | tasks ready but not running (pending or queued), all jobs |
//! | `lathe_job_tasks{job,state}` | gauge | tasks of each running job by state |
//! | `lathe_jobs_running` | gauge | jobs not finished |
//! | `lathe_worker_slots{state}` | gauge | slots of the registered workers: `total`, `busy` |
//! | `lathe_workers` | gauge | registered workers |
//! | `lathe_dispatch_pass_seconds` | histogram | time of one dispatcher pass |
//! | `lathe_store_errors_total{store}` | counter | failed calls to the state store (`state`: etcd) and the work queue (`queue`: NATS JetStream) |
//! | `lathe_tasks_finished_total{outcome}` | counter | tasks that ended: `succeeded`, `failed` |
//! | `lathe_qc_failures_total` | counter | tasks whose master failed QC |
//! | `lathe_blob_bytes_received_total` | counter | bytes uploaded to the blob store |
//! | `lathe_blob_bytes_sent_total` | counter | bytes streamed from the blob store |

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::record::TaskCounts;

/// The content type of [`CoordinatorMetrics::encode`]'s text (OpenMetrics, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Which store a failed call went to.
pub const STATE_STORE: &str = "state";
/// The work queue.
pub const WORK_QUEUE: &str = "queue";

type Labels = Vec<(&'static str, String)>;

/// What the last dispatcher pass saw: the running jobs' counts and the workers' slots.
#[derive(Debug, Default, Clone)]
pub struct FarmSnapshot {
    /// Each running job's id and task counts.
    pub jobs: Vec<(String, TaskCounts)>,
    /// Slots of the registered workers.
    pub slots_total: u64,
    /// Tasks running.
    pub slots_busy: u64,
    /// Registered workers.
    pub workers: u64,
}

impl FarmSnapshot {
    /// Tasks ready but not running: pending (not yet on the queue) or queued, in every running job.
    /// A graph job's pending tasks whose inputs are still being made count too.
    pub fn backlog(&self) -> u64 {
        self.jobs
            .iter()
            .map(|(_, counts)| u64::from(counts.pending) + u64::from(counts.queued))
            .sum()
    }
}

/// Encodes the snapshot at scrape time, so a scrape never sees a job's counts half replaced.
#[derive(Debug)]
struct SnapshotCollector(Arc<Mutex<FarmSnapshot>>);

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    let value = i64::try_from(value).unwrap_or(i64::MAX);
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let snapshot = self.0.lock().map(|s| s.clone()).unwrap_or_default();
        gauge(
            &mut encoder,
            "lathe_backlog_tasks",
            "Tasks ready but not running (pending or queued), across all jobs",
            snapshot.backlog(),
        )?;
        gauge(
            &mut encoder,
            "lathe_jobs_running",
            "Jobs not finished",
            snapshot.jobs.len() as u64,
        )?;
        gauge(
            &mut encoder,
            "lathe_workers",
            "Registered workers",
            snapshot.workers,
        )?;
        {
            let mut slots = encoder.encode_descriptor(
                "lathe_worker_slots",
                "Slots of the registered workers: total, and busy running a task",
                None,
                MetricType::Gauge,
            )?;
            for (state, value) in [
                ("total", snapshot.slots_total),
                ("busy", snapshot.slots_busy),
            ] {
                let labels: Labels = vec![("state", state.to_owned())];
                ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
                    .encode(slots.encode_family(&labels)?)?;
            }
        }
        let mut tasks = encoder.encode_descriptor(
            "lathe_job_tasks",
            "Tasks of each running job by state",
            None,
            MetricType::Gauge,
        )?;
        for (job, counts) in &snapshot.jobs {
            for (state, value) in [
                ("pending", counts.pending),
                ("queued", counts.queued),
                ("running", counts.running),
                ("succeeded", counts.succeeded),
                ("failed", counts.failed),
                ("cancelled", counts.cancelled),
                ("qc_failed", counts.qc_failed),
            ] {
                let labels: Labels = vec![("job", job.clone()), ("state", state.to_owned())];
                ConstGauge::new(i64::from(value)).encode(tasks.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The coordinator's metrics.
#[derive(Debug)]
pub struct CoordinatorMetrics {
    registry: Registry,
    snapshot: Arc<Mutex<FarmSnapshot>>,
    dispatch_pass: Histogram,
    store_errors: Family<Labels, Counter>,
    tasks_finished: Family<Labels, Counter>,
    qc_failures: Counter,
    bytes_received: Counter<u64, AtomicU64>,
    bytes_sent: Counter<u64, AtomicU64>,
}

impl Default for CoordinatorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl CoordinatorMetrics {
    /// Every metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let snapshot = Arc::new(Mutex::new(FarmSnapshot::default()));
        registry.register_collector(Box::new(SnapshotCollector(Arc::clone(&snapshot))));
        // 1 ms to about 16 s.
        let dispatch_pass = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "lathe_dispatch_pass_seconds",
            "Time of one dispatcher pass",
            dispatch_pass.clone(),
        );
        let store_errors = Family::<Labels, Counter>::default();
        registry.register(
            "lathe_store_errors",
            "Failed calls to the state store (state: etcd) and the work queue (queue: NATS JetStream)",
            store_errors.clone(),
        );
        let tasks_finished = Family::<Labels, Counter>::default();
        registry.register(
            "lathe_tasks_finished",
            "Tasks that ended, by outcome",
            tasks_finished.clone(),
        );
        let qc_failures = Counter::default();
        registry.register(
            "lathe_qc_failures",
            "Tasks whose master failed QC",
            qc_failures.clone(),
        );
        let bytes_received = Counter::<u64, AtomicU64>::default();
        registry.register(
            "lathe_blob_bytes_received",
            "Bytes uploaded to the blob store (sources, masters)",
            bytes_received.clone(),
        );
        let bytes_sent = Counter::<u64, AtomicU64>::default();
        registry.register(
            "lathe_blob_bytes_sent",
            "Bytes streamed from the blob store (to workers and clients)",
            bytes_sent.clone(),
        );
        Self {
            registry,
            snapshot,
            dispatch_pass,
            store_errors,
            tasks_finished,
            qc_failures,
            bytes_received,
            bytes_sent,
        }
    }

    /// Replaces what the dispatcher saw.
    pub fn set_snapshot(&self, snapshot: FarmSnapshot) {
        if let Ok(mut current) = self.snapshot.lock() {
            *current = snapshot;
        }
    }

    /// The last snapshot's backlog.
    pub fn backlog(&self) -> u64 {
        self.snapshot.lock().map(|s| s.backlog()).unwrap_or(0)
    }

    /// Records one dispatcher pass.
    pub fn dispatch_pass(&self, seconds: f64) {
        self.dispatch_pass.observe(seconds);
    }

    /// Counts a failed call to `store` ([`STATE_STORE`] or [`WORK_QUEUE`]).
    pub fn store_error(&self, store: &'static str) {
        self.store_errors
            .get_or_create(&vec![("store", store.to_owned())])
            .inc();
    }

    /// Counts a task that ended: succeeded (`qc_failed` when its master failed QC) or failed.
    pub fn task_finished(&self, succeeded: bool, qc_failed: bool) {
        let outcome = if succeeded { "succeeded" } else { "failed" };
        self.tasks_finished
            .get_or_create(&vec![("outcome", outcome.to_owned())])
            .inc();
        if qc_failed {
            self.qc_failures.inc();
        }
    }

    /// Counts bytes uploaded to the blob store.
    pub fn bytes_received(&self, bytes: u64) {
        self.bytes_received.inc_by(bytes);
    }

    /// Counts bytes streamed from the blob store.
    pub fn bytes_sent(&self, bytes: u64) {
        self.bytes_sent.inc_by(bytes);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn value_of(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
    }

    #[test]
    fn the_snapshot_gives_the_backlog_and_each_jobs_counts() {
        let metrics = CoordinatorMetrics::new();
        let counts = TaskCounts {
            pending: 7,
            queued: 2,
            running: 3,
            succeeded: 5,
            ..TaskCounts::default()
        };
        metrics.set_snapshot(FarmSnapshot {
            jobs: vec![("j1".to_owned(), counts), ("j2".to_owned(), counts)],
            slots_total: 4,
            slots_busy: 3,
            workers: 2,
        });
        let text = metrics.encode();
        assert_eq!(
            value_of(&text, "lathe_backlog_tasks "),
            Some(18.0),
            "{text}"
        );
        assert_eq!(
            value_of(&text, "lathe_job_tasks{job=\"j2\",state=\"running\"} "),
            Some(3.0)
        );
        assert_eq!(
            value_of(&text, "lathe_worker_slots{state=\"busy\"} "),
            Some(3.0)
        );
        // A job that ends leaves the label set.
        metrics.set_snapshot(FarmSnapshot::default());
        let text = metrics.encode();
        assert!(!text.contains("job=\"j1\""), "{text}");
        assert_eq!(value_of(&text, "lathe_backlog_tasks "), Some(0.0));
    }

    #[test]
    fn counters_and_histograms_move() {
        let metrics = CoordinatorMetrics::new();
        metrics.store_error(STATE_STORE);
        metrics.store_error(STATE_STORE);
        metrics.task_finished(true, true);
        metrics.bytes_received(1_000);
        metrics.dispatch_pass(0.004);
        let text = metrics.encode();
        assert_eq!(
            value_of(&text, "lathe_store_errors_total{store=\"state\"} "),
            Some(2.0),
            "{text}"
        );
        assert_eq!(value_of(&text, "lathe_qc_failures_total "), Some(1.0));
        assert_eq!(
            value_of(&text, "lathe_blob_bytes_received_total "),
            Some(1000.0)
        );
        assert_eq!(
            value_of(&text, "lathe_dispatch_pass_seconds_count "),
            Some(1.0)
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
