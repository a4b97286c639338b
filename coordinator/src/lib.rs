//! lathe's coordinator, and the infrastructure it shares with workers.
//!
//! - [`queue`], [`state`], [`blob`]: the work queue (NATS JetStream | in process), the state store
//!   (etcd | in memory) and the blob store (coordinator disk | in memory), each a trait with two
//!   implementations that pass one conformance suite; [`store_access`]: TLS and credentials for
//!   NATS and etcd.
//! - [`coordinator`]: jobs, planning ([`plan`], [`graph`]), dispatch, failure handling;
//!   [`grpc`]: its services, each call bounded by [`deadlines`]; [`client`]: the client the CLI
//!   and workers use.
//! - [`dashboard`]: the web dashboard (jobs, tasks, reports, workers; live over server-sent
//!   events), served by [`http`].
//! - `testing` (cargo feature `testing`, for tests only): real `nats-server` and `etcd` processes.
#![deny(missing_docs)]

pub mod admin;
pub mod auth;
pub mod blob;
pub mod client;
pub mod command_line;
pub mod coordinator;
pub mod dashboard;
pub mod deadlines;
pub mod error;
pub mod etcd_users;
pub mod graph;
pub mod grpc;
pub mod http;
pub mod limits;
pub mod local_blobs;
pub mod metrics;
pub mod observed;
pub mod pki;
pub mod plan;
pub mod queue;
pub mod record;
pub mod service;
pub mod signal;
pub mod state;
pub mod store_access;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
pub mod trace;

pub use coordinator::{Coordinator, CoordinatorSettings};
pub use error::{Error, Result};
