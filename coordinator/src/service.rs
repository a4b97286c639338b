//! The coordinator as a service: its command-line options and the function that runs it until
//! SIGTERM. The `lathe-coordinator` binary is this and nothing else.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use crate::blob::DiskBlobStore;
use crate::error::{Error, Result};
use crate::queue::JetStreamQueue;
use crate::state::EtcdStore;
use crate::store_access::{EtcdAccess, NatsAccess, StoreArgs};
use crate::tls::{ServerTls, Transport, is_loopback};
use crate::{Coordinator, CoordinatorSettings};

/// The lathe farm's coordinator: accepts jobs over gRPC, keeps state in etcd, dispatches tasks on NATS
/// JetStream, stores blobs on its disk.
#[derive(Debug, Parser)]
#[command(name = "lathe-coordinator", version)]
pub struct ServiceArgs {
    /// Address the gRPC services listen on.
    #[arg(long, env = "LATHE_LISTEN", default_value = "127.0.0.1:7480")]
    pub listen: String,
    /// NATS server with JetStream.
    #[arg(long, env = "LATHE_NATS", default_value = "nats://127.0.0.1:4222")]
    pub nats: String,
    /// etcd endpoints, comma-separated.
    #[arg(long, env = "LATHE_ETCD", default_value = "http://127.0.0.1:2379")]
    pub etcd: String,
    /// Prefix of every etcd key (several farms can share one etcd).
    #[arg(long, env = "LATHE_NAMESPACE", default_value = "/lathe/")]
    pub namespace: String,
    /// Folder of the content-addressed blob store.
    #[arg(long, env = "LATHE_BLOBS", default_value = "lathe-blobs")]
    pub blobs: PathBuf,
    /// Attempts a task gets before it is failed.
    #[arg(long, default_value_t = 3)]
    pub max_attempts: u32,
    /// Tasks of one job a worker may fail in a row before it is blocklisted for the job.
    #[arg(long, default_value_t = 3)]
    pub blocklist_after: u32,
    /// Seconds a worker has to acknowledge (or mark in progress) a task before it is redelivered.
    #[arg(long, default_value_t = 30.0)]
    pub ack_wait_s: f64,
    /// Delete finished jobs (their state and the blobs no other job refers to) this many days
    /// after they finished, unless pinned (`lathe pin`); without it, finished jobs are kept until
    /// `lathe delete`.
    #[arg(long, env = "LATHE_RETAIN_DAYS")]
    pub retain_days: Option<f64>,
    /// Hours a stored blob that no job refers to (an upload never submitted) is kept before the
    /// sweep removes it.
    #[arg(long, default_value_t = 6.0)]
    pub unreferenced_blob_hours: f64,
    /// Seconds between passes of the reconciler, which publishes again the queued tasks the queue
    /// lost and queues again the running tasks of workers that are gone.
    #[arg(long, default_value_t = 10.0)]
    pub reconcile_interval_s: f64,
    /// The largest blob (a source or a master) an upload may store, bytes; an upload is refused
    /// as soon as it would pass it. The default, 64 GiB, fits a 6-hour 192 kHz 8-channel source.
    #[arg(long, env = "LATHE_MAX_UPLOAD_BYTES", default_value_t = crate::coordinator::DEFAULT_MAX_UPLOAD_BYTES)]
    pub max_upload_bytes: u64,
    /// Seconds one attempt of a task may run, from its start to its completion, before the
    /// reconciler ends it as a failed attempt (a hung render on a worker that still heartbeats).
    /// The default is the workers' limit on the render (3600 s) plus 1800 s for fetching and
    /// uploading, so that a worker's own limit, with its clearer error, comes first.
    #[arg(long, env = "LATHE_TASK_TIME_LIMIT_S", default_value_t = crate::coordinator::DEFAULT_TASK_TIME_LIMIT.as_secs() + crate::coordinator::TASK_TIME_LIMIT_GRACE.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub task_time_limit_s: u64,
    /// Seconds a gRPC call may take to answer (a unary call, or a download or watch starting);
    /// past it the call ends with DEADLINE_EXCEEDED. Uploads have `--stream-idle-timeout-s`
    /// instead.
    #[arg(long, env = "LATHE_CALL_TIMEOUT_S", default_value_t = crate::deadlines::DEFAULT_CALL_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub call_timeout_s: u64,
    /// Seconds an upload (PutBlob, PutResult) may go without a message before it is ended with
    /// DEADLINE_EXCEEDED; a stream that keeps flowing is never cut, however long it takes.
    #[arg(long, env = "LATHE_STREAM_IDLE_TIMEOUT_S", default_value_t = crate::deadlines::DEFAULT_STREAM_IDLE_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub stream_idle_timeout_s: u64,
    /// Address of the HTTP endpoint with Prometheus metrics (`/metrics`) and health
    /// (`/healthz`, `/readyz`); off unless given. Plain HTTP on any address (unless it is the
    /// `--http-listen` address, whose server then serves both): Prometheus and an orchestrator's
    /// probes read it without a certificate or a sign-in, and it carries no secret and no job's
    /// name, owner or file (running jobs appear by id, with their task counts).
    #[arg(long, env = "LATHE_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Address of the web dashboard, which needs a sign-in with a client token (it serves
    /// `/metrics`, `/healthz` and `/readyz` too, so it may be the same address as
    /// `--metrics-listen`); off unless given. Served over HTTPS with `--tls-cert` and `--tls-key`;
    /// in plain HTTP only with `--insecure-loopback` on a loopback address.
    #[arg(long, env = "LATHE_HTTP_LISTEN")]
    pub http_listen: Option<String>,
    /// Seconds to wait for NATS and etcd at start (a farm whose services start together) before
    /// giving up.
    #[arg(long, env = "LATHE_CONNECT_TIMEOUT_S", default_value_t = 300.0)]
    pub connect_timeout_s: f64,
    /// The coordinator's TLS certificate chain (PEM; `lathe-coordinator certs` makes one).
    #[arg(long, env = "LATHE_TLS_CERT", requires_all = ["tls_key", "tls_client_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// The key of `--tls-cert` (PEM).
    #[arg(long, env = "LATHE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The CA that workers' client certificates must chain to (PEM): the farm's CA.
    #[arg(long, env = "LATHE_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Serve plain HTTP/2, without TLS: allowed only when `--listen` is a loopback address (and
    /// the dashboard in plain HTTP, only when `--http-listen` is one too). For tests and a farm
    /// that never leaves one machine.
    #[arg(long, conflicts_with = "tls_cert")]
    pub insecure_loopback: bool,
    /// TLS and credentials for NATS and etcd.
    #[command(flatten)]
    pub stores: StoreArgs,
}

impl ServiceArgs {
    /// The transport the options ask for: TLS, or plain HTTP/2 on loopback when asked for
    /// explicitly; anything else is refused.
    pub fn transport(&self) -> Result<Transport> {
        match (&self.tls_cert, &self.tls_key, &self.tls_client_ca) {
            (Some(cert), Some(key), Some(ca)) => {
                Ok(Transport::Tls(ServerTls::load(cert, key, ca)?))
            }
            _ if self.insecure_loopback => {
                if is_loopback(&self.listen) {
                    Ok(Transport::InsecureLoopback)
                } else {
                    Err(Error::InvalidRequest(format!(
                        "--insecure-loopback serves plain HTTP/2 only on a loopback address, not \
                         {}",
                        self.listen
                    )))
                }
            }
            _ => Err(Error::InvalidRequest(
                "the coordinator serves TLS: give --tls-cert, --tls-key and --tls-client-ca \
                 (lathe-coordinator certs makes them), or --insecure-loopback with a loopback \
                 --listen address"
                    .to_owned(),
            )),
        }
    }
}

/// Runs the coordinator with `args` until SIGTERM or Ctrl-C.
pub async fn run_service(args: ServiceArgs) -> Result<()> {
    let settings = CoordinatorSettings {
        max_attempts: args.max_attempts.max(1),
        blocklist_after: args.blocklist_after.max(1),
        retain: args
            .retain_days
            .map(|days| Duration::from_secs_f64(days.max(0.0) * 86_400.0)),
        unreferenced_blob_grace: Duration::from_secs_f64(
            args.unreferenced_blob_hours.max(0.0) * 3_600.0,
        ),
        reconcile_interval: Duration::from_secs_f64(args.reconcile_interval_s.max(0.1)),
        max_upload_bytes: args.max_upload_bytes,
        task_time_limit: Duration::from_secs(args.task_time_limit_s),
        call_timeout: Duration::from_secs(args.call_timeout_s),
        stream_idle_timeout: Duration::from_secs(args.stream_idle_timeout_s),
        ..CoordinatorSettings::default()
    };
    let transport = args.transport()?;
    let dashboard_tls = dashboard_tls(&args, &transport)?;
    let queue_settings = settings.queue_settings(Duration::from_secs_f64(args.ack_wait_s.max(1.0)));
    let (nats_access, etcd_access) = args.stores.access()?;
    let (queue, state) = connect_stores(
        (&args.nats, &nats_access),
        (&args.etcd, &etcd_access),
        &args.namespace,
        queue_settings,
        Duration::from_secs_f64(args.connect_timeout_s.max(0.0)),
    )
    .await?;
    let blobs = DiskBlobStore::open(&args.blobs)?;
    let coordinator = Coordinator::new(Arc::new(queue), Arc::new(state), Arc::new(blobs), settings);
    // Before serving: a submission in progress would look like one a stopped coordinator left.
    coordinator.remove_unfinished_submissions().await?;
    let listener = crate::http::bind(&args.listen).await?;
    tracing::info!(listen = %listener.local_addr().map_err(|e| Error::io(&args.listen, e))?, nats = %args.nats, etcd = %args.etcd, "coordinator up");
    let shutdown = crate::signal::shutdown_signal();
    let (shutdown_sender, shutdown_receiver) = tokio::sync::watch::channel(false);
    let mut server_shutdown = shutdown_receiver.clone();
    let server = {
        let coordinator = coordinator.clone();
        tokio::spawn(async move {
            crate::grpc::serve(&coordinator, listener, &transport, async move {
                let _ = server_shutdown.changed().await;
            })
            .await
        })
    };
    let mut http_servers = Vec::new();
    for address in http_addresses(&args) {
        let listener = crate::http::bind(&address.listen).await?;
        let shown = listener
            .local_addr()
            .map_err(|e| Error::io(&address.listen, e))?;
        let mut router = crate::http::probe_routes(Arc::new(coordinator.clone()));
        let tls = dashboard_tls.clone().filter(|_| address.dashboard);
        let scheme = if tls.is_some() { "https" } else { "http" };
        if address.dashboard {
            let settings = crate::dashboard::DashboardSettings {
                tls: tls.is_some(),
                ..Default::default()
            };
            router = router.merge(crate::dashboard::router(coordinator.clone(), settings));
            tracing::info!(url = %format!("{scheme}://{shown}/"), "dashboard");
        }
        tracing::info!(url = %format!("{scheme}://{shown}/metrics"), "metrics");
        let mut stop = shutdown_receiver.clone();
        let stop = async move {
            let _ = stop.changed().await;
        };
        http_servers.push(match tls {
            Some(config) => tokio::spawn(crate::http::serve(
                router,
                crate::http::TlsListener::new(listener, config)?,
                stop,
            )),
            None => tokio::spawn(crate::http::serve(router, listener, stop)),
        });
    }
    let mut loop_shutdown = shutdown_receiver;
    let background = {
        let coordinator = coordinator.clone();
        tokio::spawn(async move {
            coordinator
                .run(async move {
                    let _ = loop_shutdown.changed().await;
                })
                .await
        })
    };
    shutdown.await;
    tracing::info!("shutting down");
    let _ = shutdown_sender.send(true);
    let joined = |e: tokio::task::JoinError| Error::Queue(format!("coordinator task: {e}"));
    server.await.map_err(joined)??;
    background.await.map_err(joined)??;
    for http in http_servers {
        http.await.map_err(joined)??;
    }
    Ok(())
}

/// How `--http-listen` is served: over TLS with the coordinator's certificate (`--tls-cert` and
/// `--tls-key`; no client certificate asked for) when it has one; else in plain HTTP, which
/// `--insecure-loopback` allows on a loopback address only, as it does gRPC on `--listen`: a
/// sign-in's token and a session's cookie must not cross a network in the clear. `None` for
/// plain HTTP (or no dashboard).
fn dashboard_tls(
    args: &ServiceArgs,
    transport: &Transport,
) -> Result<Option<Arc<tokio_rustls::rustls::ServerConfig>>> {
    let Some(listen) = &args.http_listen else {
        return Ok(None);
    };
    match (transport, &args.tls_cert, &args.tls_key) {
        (Transport::Tls(_), Some(cert), Some(key)) => {
            Ok(Some(crate::http::https_config(cert, key)?))
        }
        _ if is_loopback(listen) => Ok(None),
        _ => Err(Error::InvalidRequest(format!(
            "--insecure-loopback serves the dashboard in plain HTTP only on a loopback address, \
             not --http-listen {listen}; give --tls-cert, --tls-key and --tls-client-ca to serve \
             it over HTTPS"
        ))),
    }
}

/// An HTTP address to serve, and whether the dashboard is on it.
struct HttpAddress {
    listen: String,
    dashboard: bool,
}

/// The addresses of `--http-listen` (dashboard, metrics, probes) and `--metrics-listen` (metrics
/// and probes), one server for an address given twice.
fn http_addresses(args: &ServiceArgs) -> Vec<HttpAddress> {
    let mut addresses = Vec::new();
    if let Some(listen) = &args.http_listen {
        addresses.push(HttpAddress {
            listen: listen.clone(),
            dashboard: true,
        });
    }
    if let Some(listen) = &args.metrics_listen
        && args.http_listen.as_ref() != Some(listen)
    {
        addresses.push(HttpAddress {
            listen: listen.clone(),
            dashboard: false,
        });
    }
    addresses
}

/// The farm's work queue (NATS JetStream at `nats`) and state store (etcd at `etcd`, keys under
/// `namespace`), each waited for up to `patience` (see [`patiently`]).
///
/// # Errors
/// The last connection error of a service not up within `patience`.
pub async fn connect_stores(
    (nats, nats_access): (&str, &NatsAccess),
    (etcd, etcd_access): (&str, &EtcdAccess),
    namespace: &str,
    queue_settings: crate::queue::QueueSettings,
    patience: Duration,
) -> Result<(JetStreamQueue, EtcdStore)> {
    let queue = patiently("NATS", nats, patience, || {
        JetStreamQueue::connect_with(nats, queue_settings, nats_access)
    })
    .await?;
    let state = patiently("etcd", etcd, patience, || {
        EtcdStore::connect_with(etcd, namespace, etcd_access)
    })
    .await?;
    Ok((queue, state))
}

/// Connects with `connect`, retrying for up to `patience` while the service (`what` at `url`) is
/// not up yet: a farm's services start together, and the coordinator waits for NATS and etcd
/// rather than exiting.
///
/// # Errors
/// The last connection error once `patience` has passed.
pub async fn patiently<T, F, Fut>(
    what: &str,
    url: &str,
    patience: Duration,
    mut connect: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(250);
    loop {
        match connect().await {
            Ok(connected) => return Ok(connected),
            Err(error) if started.elapsed() + pause <= patience => {
                tracing::warn!(%error, "waiting for {what} at {url}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(error) => return Err(error),
        }
    }
}

impl crate::http::Observed for Coordinator {
    fn metrics_text(&self) -> String {
        self.metrics().encode()
    }

    fn readiness(&self) -> crate::http::Readiness {
        let coordinator = self.clone();
        Box::pin(async move { coordinator.not_ready().await })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_service_not_up_yet_is_waited_for_within_the_patience() {
        let attempts = AtomicU32::new(0);
        let connected = patiently("NATS", "nats://x", Duration::from_secs(30), || {
            let attempt = attempts.fetch_add(1, Ordering::SeqCst);
            async move {
                if attempt < 2 {
                    Err(Error::Queue("connection refused".to_owned()))
                } else {
                    Ok(attempt)
                }
            }
        })
        .await;
        assert_eq!(connected.ok(), Some(2), "the third attempt connects");
    }

    fn args(options: &[&str]) -> ServiceArgs {
        let mut line = vec!["lathe-coordinator"];
        line.extend_from_slice(options);
        ServiceArgs::try_parse_from(line).expect("options")
    }

    #[test]
    fn a_plain_http_dashboard_is_refused_off_loopback() {
        let open = args(&["--insecure-loopback", "--http-listen", "0.0.0.0:7481"]);
        let transport = open.transport().expect("gRPC on loopback");
        let refused = dashboard_tls(&open, &transport).expect_err("plain HTTP on 0.0.0.0");
        assert!(
            refused.to_string().contains("--http-listen 0.0.0.0:7481"),
            "{refused}"
        );
        let local = args(&["--insecure-loopback", "--http-listen", "127.0.0.1:7481"]);
        let transport = local.transport().expect("gRPC on loopback");
        assert!(
            dashboard_tls(&local, &transport)
                .expect("loopback")
                .is_none()
        );
        // Metrics alone stay plain anywhere: no dashboard, nothing to refuse.
        let metrics = args(&["--insecure-loopback", "--metrics-listen", "0.0.0.0:7482"]);
        let transport = metrics.transport().expect("gRPC on loopback");
        assert!(
            dashboard_tls(&metrics, &transport)
                .expect("metrics")
                .is_none()
        );
    }

    #[test]
    fn with_a_certificate_the_dashboard_is_served_over_tls() {
        let pki = tempfile::tempdir().expect("temp dir");
        let (cert, key, ca) = crate::pki::test_server_certificate(pki.path());
        let paths = [cert, key, ca].map(|path| path.to_string_lossy().into_owned());
        let served = args(&[
            "--tls-cert",
            &paths[0],
            "--tls-key",
            &paths[1],
            "--tls-client-ca",
            &paths[2],
            "--listen",
            "0.0.0.0:7480",
            "--http-listen",
            "0.0.0.0:7481",
        ]);
        let transport = served.transport().expect("TLS");
        assert!(
            dashboard_tls(&served, &transport)
                .expect("TLS configuration")
                .is_some()
        );
    }

    #[tokio::test]
    async fn past_the_patience_the_last_error_is_returned() {
        let attempts = AtomicU32::new(0);
        let outcome: Result<()> = patiently("etcd", "http://x", Duration::ZERO, || {
            attempts.fetch_add(1, Ordering::SeqCst);
            async { Err(Error::State("connection refused".to_owned())) }
        })
        .await;
        assert!(matches!(outcome, Err(Error::State(_))));
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
    }
}
