//! The worker loop: register, pull while there are free slots, run tasks, drain on shutdown.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lathe_coordinator::Error as FarmError;
use lathe_coordinator::client::FarmClient;
use lathe_coordinator::queue::WorkQueue;
use lathe_proto::v1;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::context::WorkerContext;
use crate::error::Result;
use crate::observe::WorkerObserver;
use crate::scratch::ScratchClaims;
use crate::settings::{WorkerSettings, host_name};
use crate::task::run_delivery;

/// Registers the worker with the coordinator, or keeps its registration alive (the coordinator
/// holds its lease in etcd; the worker has no etcd access).
async fn register(context: &WorkerContext) -> Result<()> {
    let settings = &context.settings;
    let beat = v1::WorkerHeartbeat {
        worker_id: settings.id.clone(),
        host: host_name(),
        pid: std::process::id(),
        slots: settings.slots,
        current_tasks: context.current_tasks(),
    };
    context
        .client
        .workers
        .clone()
        .heartbeat(beat)
        .await
        .map_err(FarmError::from)?;
    Ok(())
}

/// Runs a worker until `shutdown` resolves, then stops pulling, lets running tasks finish for
/// `settings.drain`, hands back the rest and removes its registration. `observer` gets its
/// metrics and readiness as it goes.
pub async fn run_worker(
    settings: WorkerSettings,
    queue: Arc<dyn WorkQueue>,
    observer: Arc<WorkerObserver>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let client = FarmClient::lazy(&settings.coordinator)?;
    observer.slots(settings.slots, 0);
    let context = Arc::new(WorkerContext {
        client,
        running: Mutex::new(Vec::new()),
        settings,
        observer,
        scratch: ScratchClaims::default(),
        pull_paused_until: Mutex::new(None),
    });
    register(&context).await?;
    context.observer.heartbeat(true);
    tracing::info!(worker = %context.settings.id, slots = context.settings.slots, "worker registered");
    let heartbeat = {
        let context = Arc::clone(&context);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(context.settings.heartbeat).await;
                let registered = register(&context).await;
                context.observer.heartbeat(registered.is_ok());
                if let Err(error) = registered {
                    tracing::warn!(%error, "heartbeat failed");
                }
            }
        })
    };

    let slots = Arc::new(Semaphore::new(context.settings.slots.max(1) as usize));
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    context.observer.set_pulling(true);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        while tasks.try_join_next().is_some() {}
        if let Some(pause) = context.pull_pause() {
            // A task just went back for lack of scratch room: let other workers take tasks
            // for a while rather than take (and give back) the next one at once.
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(pause) => {}
            }
        }
        let pulled = tokio::select! {
            () = &mut shutdown => break,
            pulled = queue.pull(1, context.settings.poll_wait) => pulled,
        };
        match pulled {
            Ok(deliveries) => {
                if let Some(delivery) = deliveries.into_iter().next() {
                    let context = Arc::clone(&context);
                    tasks.spawn(async move {
                        run_delivery(&context, delivery).await;
                        drop(permit);
                    });
                }
            }
            Err(error) => {
                tracing::warn!(%error, "pull failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    context.observer.set_pulling(false);
    tracing::info!(worker = %context.settings.id, running = tasks.len(), "draining");
    let drain = context.settings.drain;
    let finished =
        tokio::time::timeout(drain, async { while tasks.join_next().await.is_some() {} }).await;
    if finished.is_err() {
        if let Ok(running) = context.running.lock() {
            for task in running.iter() {
                task.hand_back();
            }
        }
        while tasks.join_next().await.is_some() {}
    }
    heartbeat.abort();
    let unregister = v1::UnregisterWorkerRequest {
        worker_id: context.settings.id.clone(),
    };
    if let Err(error) = context
        .client
        .workers
        .clone()
        .unregister_worker(unregister)
        .await
    {
        // Harmless: the registration goes with its lease within seconds (and an embedded farm's
        // coordinator may stop first).
        tracing::info!(%error, "registration not removed; it ends with its lease");
    }
    tracing::info!(worker = %context.settings.id, "worker stopped");
    Ok(())
}
