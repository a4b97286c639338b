//! The `lathe` CLI, built inside the tests package so that the farm tests can run it as a process of
//! its own (with its own telemetry): the same code as the `lathe` binary.

fn main() {
    std::process::exit(lathe_cli::run_process());
}
