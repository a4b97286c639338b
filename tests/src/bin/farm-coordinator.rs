//! The coordinator, built inside the tests package so that the farm tests can spawn (and kill) it
//! as a process: the same code as the `lathe-coordinator` binary, its `token` command included.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    lathe_coordinator::command_line::run_command_line().await
}
