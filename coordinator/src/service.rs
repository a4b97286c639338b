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
    /// Address of the HTTP endpoint with Prometheus metrics (`/metrics`) and health
    /// (`/healthz`, `/readyz`); off unless given.
    #[arg(long, env = "LATHE_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Address of the web dashboard (it serves `/metrics`, `/healthz` and `/readyz` too, so it may
    /// be the same address as `--metrics-listen`); off unless given.
    #[arg(long, env = "LATHE_HTTP_LISTEN")]
    pub http_listen: Option<String>,
    /// Seconds to wait for NATS and etcd at start (a farm whose services start together) before
    /// giving up.
    #[arg(long, env = "LATHE_CONNECT_TIMEOUT_S", default_value_t = 300.0)]
    pub connect_timeout_s: f64,
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
        ..CoordinatorSettings::default()
    };
    let queue_settings = settings.queue_settings(Duration::from_secs_f64(args.ack_wait_s.max(1.0)));
    let queue = JetStreamQueue::connect(&args.nats, queue_settings).await?;
    let state = EtcdStore::connect(&args.etcd, &args.namespace).await?;
    let blobs = DiskBlobStore::open(&args.blobs)?;
    let coordinator = Coordinator::new(Arc::new(queue), Arc::new(state), Arc::new(blobs), settings);
    // Before serving: a submission in progress would look like one a stopped coordinator left.
    coordinator.remove_unfinished_submissions().await?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| Error::Connect {
            url: args.listen.clone(),
            reason: format!("cannot listen: {e}"),
        })?;
    tracing::info!(listen = %listener.local_addr().map_err(|e| Error::io(&args.listen, e))?, nats = %args.nats, etcd = %args.etcd, "coordinator up");
    let shutdown = crate::signal::shutdown_signal();
    let (shutdown_sender, shutdown_receiver) = tokio::sync::watch::channel(false);
    let mut server_shutdown = shutdown_receiver.clone();
    let server = {
        let coordinator = coordinator.clone();
        tokio::spawn(async move {
            crate::grpc::serve(&coordinator, listener, async move {
                let _ = server_shutdown.changed().await;
            })
            .await
        })
    };
    let dashboard = match &args.http_listen {
        Some(address) => {
            let listener =
                tokio::net::TcpListener::bind(address)
                    .await
                    .map_err(|e| Error::Connect {
                        url: address.clone(),
                        reason: format!("cannot listen: {e}"),
                    })?;
            let bound = listener.local_addr().map_err(|e| Error::io(address, e))?;
            tracing::info!("dashboard at http://{bound}/");
            let mut http_shutdown = shutdown_receiver.clone();
            let router = crate::dashboard::router(coordinator.clone());
            Some(tokio::spawn(crate::http::serve(
                router,
                listener,
                async move {
                    let _ = http_shutdown.changed().await;
                },
            )))
        }
        None => None,
    };
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
    if let Some(dashboard) = dashboard {
        dashboard.await.map_err(joined)??;
    }
    background.await.map_err(joined)??;
    Ok(())
}
