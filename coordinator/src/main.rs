//! `lathe-coordinator`: the farm's coordinator service, and its administrative commands
//! (`token`, `certs`).

use clap::Parser;
use lathe_coordinator::admin::{AdminCommand, run_admin};
use lathe_coordinator::service::{ServiceArgs, run_service};

/// The lathe farm's coordinator: with no command, serves (see the options); `token` and `certs`
/// administer the farm.
#[derive(Debug, Parser)]
#[command(
    name = "lathe-coordinator",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<AdminCommand>,
    #[command(flatten)]
    serve: ServiceArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(command) => run_admin(command).await?,
        None => {
            let _telemetry = lathe_coordinator::telemetry::Telemetry::init("lathe-coordinator")?;
            run_service(cli.serve).await?;
        }
    }
    Ok(())
}
