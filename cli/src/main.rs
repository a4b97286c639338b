//! The `lathe` binary.

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LATHE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,lofty=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr();
    let status = lathe_cli::run(
        std::env::args_os(),
        &mut lathe_cli::Streams {
            out: &mut out,
            err: &mut err,
        },
    );
    std::process::exit(status);
}
