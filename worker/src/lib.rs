//! lathe's worker: pulls tasks from the work queue, streams their sources from the coordinator, runs
//! the engine on blocking threads, streams the masters back and acknowledges a task only once the
//! coordinator has stored its master.
//!
//! - [`worker`]: the worker loop ([`run_worker`]): registration under a lease, slots, draining.
//! - [`settings`]: how a worker runs ([`WorkerSettings`]).
//! - [`scratch`]: room in the scratch folder, checked before a task is taken.
//! - [`observe`]: its Prometheus metrics and readiness, served on `--metrics-listen`.
//! - [`task`]: one task, from delivery to acknowledgement.
//! - [`embedded`]: the coordinator and N worker loops in one process on the in-process queue, store
//!   and blob implementations: `lathe master`'s engine room, the same code as the farm.
//! - `testing` (the `testing` feature, for the farm tests only): a gate that holds renders.
#![deny(missing_docs)]

mod context;
pub mod embedded;
pub mod error;
pub mod observe;
pub mod scratch;
pub mod service;
pub mod settings;
pub mod task;
#[cfg(feature = "testing")]
pub mod testing;
pub mod worker;

pub use error::{Error, Result};
pub use settings::WorkerSettings;
pub use worker::run_worker;
