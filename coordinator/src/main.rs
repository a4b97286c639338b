//! `lathe-coordinator`: the farm's coordinator service.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LATHE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    lathe_coordinator::service::run_service(lathe_coordinator::service::ServiceArgs::parse())
        .await?;
    Ok(())
}
