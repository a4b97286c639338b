//! The coordinator's integration tests, in one test binary so that the crate and its dependencies
//! are linked once: the bounds on what a client may send, the conformance suite of each
//! infrastructure trait, the scheduling and failure rules, attacks on the stores as deployed (TLS,
//! users, permissions), jobs of thousands of tasks on real
//! servers, and the trace exporter.

mod access;
mod bounds;
mod conformance;
mod real_servers_scale;
mod scheduling;
mod store_security;
mod telemetry;

use lathe_coordinator::Coordinator;
use lathe_coordinator::coordinator::StartVerdict;

/// Starts `task` on `worker` (its `delivery`-th delivery), asserting that the coordinator says
/// to run it; returns the attempt's token, which the worker's later calls present.
pub(crate) async fn started(
    coordinator: &Coordinator,
    task: &str,
    worker: &str,
    delivery: u32,
) -> String {
    match coordinator
        .start_task(task, worker, delivery)
        .await
        .expect("start")
    {
        StartVerdict::Run(attempt) => attempt.token,
        other => panic!("task {task} on {worker}: {other:?}, not run"),
    }
}
