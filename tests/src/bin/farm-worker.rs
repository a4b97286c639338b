//! The worker service, built inside the tests package so that the farm tests can spawn (and kill) it
//! as a process: the same code as the `lathe-worker` binary, plus the render gate
//! (`lathe_worker::testing`) when `LATHE_TEST_RENDER_GATE` names a folder.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = lathe_coordinator::telemetry::Telemetry::init("lathe-worker")?;
    if let Some(gate) = std::env::var_os(lathe_tests::farm::RENDER_GATE) {
        lathe_worker::testing::hold_renders_at(gate.into());
    }
    lathe_worker::service::run_service(lathe_worker::service::ServiceArgs::parse()).await?;
    Ok(())
}
