//! `lathe-coordinator`: the farm's coordinator service, and its administrative commands
//! (`token`, `certs`).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    lathe_coordinator::command_line::run_command_line().await
}
