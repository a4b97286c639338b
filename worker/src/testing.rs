//! A render gate for the farm tests (the `testing` feature, which only the tests crate enables): a
//! worker holds every render at its first progress report (recorded first, so the task shows as
//! running with a fraction) until the test releases it, so that a
//! test can cancel, kill or drain a task known to be mid-render however fast the engine is.
//!
//! The gate is a folder. A held task creates `held-<task id>` in it and waits, polling, until
//! `release-<task id>` or `release-all` exists there, or the task is told to stop.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// The gate folder, once set.
static GATE: OnceLock<PathBuf> = OnceLock::new();

/// How often a held render looks for its release.
const POLL: Duration = Duration::from_millis(20);

/// Holds every render of this process at `gate` (see the module's documentation). Call it once,
/// before the worker starts; later calls change nothing.
pub fn hold_renders_at(gate: PathBuf) {
    let _ = GATE.set(gate);
}

/// Waits at the gate, if there is one, until `task_id` is released or `stopped` says so.
pub(crate) fn hold(task_id: &str, stopped: impl Fn() -> bool) {
    let Some(gate) = GATE.get() else {
        return;
    };
    let released = |name: &str| gate.join(name).exists();
    let task_release = format!("release-{task_id}");
    if released("release-all") || released(&task_release) {
        return;
    }
    let _ = std::fs::write(gate.join(format!("held-{task_id}")), b"");
    while !(stopped() || released("release-all") || released(&task_release)) {
        std::thread::sleep(POLL);
    }
}
