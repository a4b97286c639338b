//! The worker as a service: its command-line options and the function that runs it until SIGTERM.
//! The `lathe-worker` binary is this and nothing else.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use lathe_coordinator::CoordinatorSettings;
use lathe_coordinator::client::Access;
use lathe_coordinator::queue::JetStreamQueue;
use lathe_coordinator::service::patiently;
use lathe_coordinator::store_access::NatsAccessArgs;
use lathe_coordinator::tls::ClientTls;

use crate::error::Result;
use crate::observe::{WorkerObserver, WorkerProbes};
use crate::{WorkerSettings, run_worker};

/// A lathe farm worker: pulls render tasks from NATS JetStream, streams sources from the coordinator,
/// masters them, streams the masters back. SIGTERM: stop pulling, finish or hand back, exit.
#[derive(Debug, Parser)]
#[command(name = "lathe-worker", version)]
pub struct ServiceArgs {
    /// The coordinator's gRPC address.
    #[arg(long, env = "LATHE_COORDINATOR", default_value = lathe_coordinator::client::DEFAULT_COORDINATOR)]
    pub coordinator: String,
    /// The farm's CA (PEM), which the coordinator's certificate chains to; with `--tls-cert`
    /// and `--tls-key`, the coordinator is reached over TLS (an `https://` address).
    #[arg(long, env = "LATHE_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
    /// The worker's certificate (PEM; `lathe-coordinator certs --worker ID` makes it): its name
    /// is the worker's id.
    #[arg(long, env = "LATHE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The key of `--tls-cert` (PEM).
    #[arg(long, env = "LATHE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// NATS server with JetStream.
    #[arg(long, env = "LATHE_NATS", default_value = "nats://127.0.0.1:4222")]
    pub nats: String,
    /// TLS and the NATS user (the farm's `worker` user may only pull and acknowledge tasks).
    #[command(flatten)]
    pub nats_access: NatsAccessArgs,
    /// Worker id (default: host-pid; with `--tls-cert`, CERT-NAME/host-pid). On a farm with
    /// TLS it must be the certificate's name, or start with it and a `/`.
    #[arg(long, env = "LATHE_WORKER_ID")]
    pub id: Option<String>,
    /// Tasks run at once.
    #[arg(long, default_value_t = 1)]
    pub slots: u32,
    /// Folder for sources and masters while tasks run.
    #[arg(long, env = "LATHE_SCRATCH")]
    pub scratch: Option<PathBuf>,
    /// Bytes kept free in the scratch folder: a task whose sources and masters (estimated at 5
    /// times the sources) would eat into them is left to another worker before it starts.
    #[arg(long, env = "LATHE_SCRATCH_RESERVE_BYTES", default_value_t = crate::scratch::DEFAULT_SCRATCH_RESERVE_BYTES)]
    pub scratch_reserve_bytes: u64,
    /// Seconds the engine may take on one task before the render is stopped and the attempt
    /// failed ("render took longer than the task time limit"); another worker retries it. The
    /// engine masters at about 100x real time, so a 6-hour source takes minutes: the default,
    /// an hour, is a render gone wrong. Keep it below the coordinator's `--task-time-limit-s`.
    #[arg(long, env = "LATHE_TASK_TIME_LIMIT_S", default_value_t = crate::settings::DEFAULT_TASK_TIME_LIMIT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub task_time_limit_s: u64,
    /// On SIGTERM, seconds running tasks may take to finish before they are handed back.
    #[arg(long, default_value_t = 0.0)]
    pub drain_s: f64,
    /// Must match the coordinator's: ack deadline of the queue, seconds.
    #[arg(long, default_value_t = 30.0)]
    pub ack_wait_s: f64,
    /// Must match the coordinator's: attempts a task gets.
    #[arg(long, default_value_t = 3)]
    pub max_attempts: u32,
    /// Address of the HTTP endpoint with Prometheus metrics (`/metrics`), liveness (`/healthz`)
    /// and readiness (`/readyz`: registered and pulling); off unless given.
    #[arg(long, env = "LATHE_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Seconds to wait for NATS at start before giving up.
    #[arg(long, env = "LATHE_CONNECT_TIMEOUT_S", default_value_t = 300.0)]
    pub connect_timeout_s: f64,
}

/// Runs a worker with `args` until SIGTERM or Ctrl-C (then drains).
pub async fn run_service(args: ServiceArgs) -> Result<()> {
    let tls = match (&args.tls_ca, &args.tls_cert, &args.tls_key) {
        (Some(ca), Some(cert), Some(key)) => Some(ClientTls::load(ca, Some((cert, key)))?),
        _ => None,
    };
    let mut settings = WorkerSettings::new(Access {
        url: args.coordinator.clone(),
        token: None,
        tls,
    });
    if let Some(id) = args.id {
        settings.id = id;
    } else if let Some(cert) = &args.tls_cert {
        // On a farm with TLS the worker is who its certificate says: a worker, or a member of
        // the pool the certificate names (`pool/host-pid`).
        settings.id = format!("{}/{}", certificate_file_name(cert)?, settings.id);
    }
    settings.slots = args.slots.max(1);
    if let Some(scratch) = args.scratch {
        settings.scratch = scratch;
    }
    settings.drain = Duration::from_secs_f64(args.drain_s.max(0.0));
    settings.scratch_reserve_bytes = args.scratch_reserve_bytes;
    settings.task_time_limit = Duration::from_secs(args.task_time_limit_s);
    let queue_settings = CoordinatorSettings {
        max_attempts: args.max_attempts.max(1),
        ..CoordinatorSettings::default()
    }
    .queue_settings(Duration::from_secs_f64(args.ack_wait_s.max(1.0)));
    let nats_access = args.nats_access.access()?;
    let queue = patiently(
        "NATS",
        &args.nats,
        Duration::from_secs_f64(args.connect_timeout_s.max(0.0)),
        || JetStreamQueue::connect_with(&args.nats, queue_settings, &nats_access),
    )
    .await?;
    let observer = Arc::new(WorkerObserver::new());
    let (stop_probes, probes_stopped) = tokio::sync::oneshot::channel::<()>();
    let probes = match &args.metrics_listen {
        Some(address) => {
            let listener = lathe_coordinator::http::bind(address).await?;
            if let Ok(bound) = listener.local_addr() {
                tracing::info!(url = %format!("http://{bound}/metrics"), "metrics");
            }
            let routes = lathe_coordinator::http::probe_routes(Arc::new(WorkerProbes(Arc::clone(
                &observer,
            ))));
            Some(tokio::spawn(lathe_coordinator::http::serve(
                routes,
                listener,
                async move {
                    let _ = probes_stopped.await;
                },
            )))
        }
        None => None,
    };
    let outcome = run_worker(
        settings,
        Arc::new(queue),
        observer,
        lathe_coordinator::signal::shutdown_signal(),
    )
    .await;
    let _ = stop_probes.send(());
    if let Some(probes) = probes {
        let _ = probes.await;
    }
    outcome
}

/// The name in the certificate at `path` (PEM).
fn certificate_file_name(path: &std::path::Path) -> Result<String> {
    let pem = std::fs::read(path).map_err(|e| lathe_coordinator::Error::io(path, e))?;
    lathe_coordinator::tls::pem_certificate_name(&pem)
        .ok_or_else(|| {
            lathe_coordinator::Error::InvalidRequest(format!(
                "{}: no certificate with a common name",
                path.display()
            ))
        })
        .map_err(Into::into)
}
