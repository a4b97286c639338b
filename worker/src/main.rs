//! `lathe-worker`: a worker of the lathe farm.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = lathe_coordinator::telemetry::Telemetry::init("lathe-worker")?;
    lathe_worker::service::run_service(lathe_worker::service::ServiceArgs::parse()).await?;
    Ok(())
}
