//! The `lathe` binary.

fn main() {
    std::process::exit(lathe_cli::run_process());
}
