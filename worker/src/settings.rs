//! How a worker runs: its id, slots, scratch folder and timings.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lathe_coordinator::client::Access;
use lathe_coordinator::local_blobs::LocalBlobStore;

use crate::scratch::{self, FreeSpace};

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Its id (unique in the farm): by default `host-pid`.
    pub id: String,
    /// Tasks it runs at once.
    pub slots: u32,
    /// How it reaches the coordinator: its address and, on a farm with TLS, the farm's CA and
    /// the worker's certificate (whose name must be `id`).
    pub coordinator: Access,
    /// Folder for sources and masters while a task runs (a temporary folder per task).
    pub scratch: PathBuf,
    /// How often it refreshes its registration.
    pub heartbeat: Duration,
    /// How often a running task reports progress and sends an in-progress ack.
    pub progress_interval: Duration,
    /// How long a pull waits for a task.
    pub poll_wait: Duration,
    /// On shutdown, how long running tasks may take to finish before they are handed back.
    pub drain: Duration,
    /// After a failed attempt, how long before the task may be delivered again (to another worker,
    /// if one is free).
    pub retry_delay: Duration,
    /// How long the engine may take on one task: a render past it is stopped and the attempt
    /// failed as the worker's fault (another worker may be faster; the task fails once its
    /// attempts are used up). Default [`DEFAULT_TASK_TIME_LIMIT`].
    pub task_time_limit: Duration,
    /// Bytes left free in the scratch folder besides what a task needs: a task that would eat
    /// into them is left to another worker (see [`crate::scratch`]).
    pub scratch_reserve_bytes: u64,
    /// How the free space of the scratch folder is read ([`scratch::free_bytes`]; tests give
    /// another), or `None` to take every task whatever the room (a farm of one machine, where no
    /// other worker could take a task this one leaves).
    pub scratch_free: Option<FreeSpace>,
    /// The coordinator's blob store, when the worker runs in the coordinator's own process (the
    /// embedded farm): sources are read where the store holds them and masters moved into it,
    /// instead of streamed over gRPC. `None` on a farm.
    pub local_blobs: Option<Arc<LocalBlobStore>>,
}

/// The default [`WorkerSettings::task_time_limit`], one hour: the engine masters at about 100x
/// real time, so even the longest source a worker accepts (6 hours) takes minutes, and an hour
/// is a render gone wrong (a stalled disk, a machine far too slow), not a long track.
pub const DEFAULT_TASK_TIME_LIMIT: Duration =
    lathe_coordinator::coordinator::DEFAULT_TASK_TIME_LIMIT;

impl WorkerSettings {
    /// Defaults for a worker of the coordinator `coordinator` names.
    pub fn new(coordinator: Access) -> Self {
        Self {
            id: default_worker_id(),
            slots: 1,
            coordinator,
            scratch: std::env::temp_dir(),
            heartbeat: Duration::from_secs(2),
            progress_interval: Duration::from_millis(500),
            poll_wait: Duration::from_secs(1),
            drain: Duration::ZERO,
            retry_delay: Duration::from_millis(500),
            task_time_limit: DEFAULT_TASK_TIME_LIMIT,
            scratch_reserve_bytes: scratch::DEFAULT_SCRATCH_RESERVE_BYTES,
            scratch_free: Some(scratch::free_bytes),
            local_blobs: None,
        }
    }
}

/// The host's name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// `host-pid`.
pub fn default_worker_id() -> String {
    format!("{}-{}", host_name(), std::process::id())
}
