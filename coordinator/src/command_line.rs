//! The `lathe-coordinator` command line: with no command it serves ([`crate::service`]); `token`
//! and `certs` administer the farm ([`crate::admin`]).

use clap::Parser;

use crate::admin::{AdminCommand, run_admin};
use crate::service::{ServiceArgs, run_service};

/// The lathe farm's coordinator: with no command, serves (see the options); `token` and `certs`
/// administer the farm.
#[derive(Debug, Parser)]
#[command(
    name = "lathe-coordinator",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct CoordinatorCli {
    /// An administrative command; none to serve.
    #[command(subcommand)]
    pub command: Option<AdminCommand>,
    /// How to serve.
    #[command(flatten)]
    pub serve: ServiceArgs,
}

/// Parses the process's arguments and runs what they ask for (serving sets up logging and
/// tracing first).
pub async fn run_command_line() -> anyhow::Result<()> {
    let cli = CoordinatorCli::parse();
    match cli.command {
        Some(command) => run_admin(command).await?,
        None => {
            let _telemetry = crate::telemetry::Telemetry::init("lathe-coordinator")?;
            run_service(cli.serve).await?;
        }
    }
    Ok(())
}
