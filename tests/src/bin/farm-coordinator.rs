//! The coordinator service, built inside the tests package so that the farm tests can spawn (and
//! kill) it as a process: the same code as the `lathe-coordinator` binary.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = lathe_coordinator::telemetry::Telemetry::init("lathe-coordinator")?;
    lathe_coordinator::service::run_service(lathe_coordinator::service::ServiceArgs::parse())
        .await?;
    Ok(())
}
