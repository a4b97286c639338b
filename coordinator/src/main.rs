//! `lathe-coordinator`: the farm's coordinator service.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = lathe_coordinator::telemetry::Telemetry::init("lathe-coordinator")?;
    lathe_coordinator::service::run_service(lathe_coordinator::service::ServiceArgs::parse())
        .await?;
    Ok(())
}
