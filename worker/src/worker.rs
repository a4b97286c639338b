//! The worker loop: register, pull while there are free slots, run tasks, drain on shutdown.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lathe_coordinator::Error as FarmError;
use lathe_coordinator::client::FarmClient;
use lathe_coordinator::queue::WorkQueue;
use lathe_coordinator::record::{WorkerRecord, encode, unix_ms, worker_key};
use lathe_coordinator::state::{LeaseId, StateStore};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::context::WorkerContext;
use crate::error::Result;
use crate::observe::WorkerObserver;
use crate::settings::{WorkerSettings, host_name};
use crate::task::run_delivery;

/// No lease granted yet (etcd lease ids are never 0).
const NO_LEASE: LeaseId = 0;

/// Keeps the worker's registration alive; a lease that ran out (a long pause) is replaced.
async fn register(
    state: &dyn StateStore,
    context: &WorkerContext,
    lease: &AtomicI64,
) -> Result<()> {
    let settings = &context.settings;
    let record = WorkerRecord {
        id: settings.id.clone(),
        host: host_name(),
        pid: std::process::id(),
        slots: settings.slots,
        current_tasks: context.current_tasks(),
        heartbeat_unix_ms: unix_ms(),
    };
    let id: LeaseId = match lease.load(Ordering::Acquire) {
        NO_LEASE => state.grant_lease(settings.lease_ttl).await?,
        id => match state.keep_alive(id).await {
            Ok(()) => id,
            Err(FarmError::LeaseExpired { .. }) => state.grant_lease(settings.lease_ttl).await?,
            Err(error) => return Err(error.into()),
        },
    };
    lease.store(id, Ordering::Release);
    state
        .put_leased(&worker_key(&settings.id), encode(&record)?, id)
        .await?;
    Ok(())
}

/// Runs a worker until `shutdown` resolves, then stops pulling, lets running tasks finish for
/// `settings.drain`, hands back the rest and removes its registration. `observer` gets its
/// metrics and readiness as it goes.
pub async fn run_worker(
    settings: WorkerSettings,
    queue: Arc<dyn WorkQueue>,
    state: Arc<dyn StateStore>,
    observer: Arc<WorkerObserver>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let client = FarmClient::lazy(&settings.coordinator_url)?;
    observer.slots(settings.slots, 0);
    let context = Arc::new(WorkerContext {
        client,
        running: Mutex::new(Vec::new()),
        settings,
        observer,
    });
    let lease = Arc::new(AtomicI64::new(NO_LEASE));
    register(state.as_ref(), &context, &lease).await?;
    context.observer.heartbeat(true);
    tracing::info!(worker = %context.settings.id, slots = context.settings.slots, "worker registered");
    let heartbeat = {
        let context = Arc::clone(&context);
        let state = Arc::clone(&state);
        let lease = Arc::clone(&lease);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(context.settings.heartbeat).await;
                let registered = register(state.as_ref(), &context, &lease).await;
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
    let id = lease.load(Ordering::Acquire);
    if id != NO_LEASE
        && let Err(error) = state.revoke(id).await
    {
        tracing::warn!(%error, "cannot revoke the worker's lease");
    }
    tracing::info!(worker = %context.settings.id, "worker stopped");
    Ok(())
}
