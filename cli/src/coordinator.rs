//! Reaching a farm's coordinator: where it is, the connection, and how a failed call is reported.

use anyhow::Context;
use lathe_coordinator::client::{DEFAULT_COORDINATOR, FarmClient};

/// Where the coordinator is.
#[derive(Debug, Clone, clap::Args)]
pub struct CoordinatorArg {
    /// The coordinator's gRPC address.
    #[arg(long, env = "LATHE_COORDINATOR", default_value = DEFAULT_COORDINATOR)]
    pub coordinator: String,
}

/// The runtime the farm commands run their calls on.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Connects to the coordinator.
pub(crate) async fn connect(coordinator: &CoordinatorArg) -> anyhow::Result<FarmClient> {
    Ok(FarmClient::connect(&coordinator.coordinator).await?)
}

/// A failed call to the coordinator as the CLI reports it: the coordinator's own message.
pub(crate) fn rpc_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message())
}
