//! A job of 5,000 tasks through the coordinator on a real etcd and a real NATS JetStream: the
//! dispatcher, the queue and the state at a size where a read of "every task" would show. Workers
//! are simulated in process (they pull from JetStream, start the task, complete it with a stored
//! master and acknowledge), so the test measures the farm's machinery, not the engine.

use std::sync::Arc;
use std::time::Duration;

use lathe_coordinator::blob::{MemoryBlobStore, put_bytes};
use lathe_coordinator::coordinator::StartVerdict;
use lathe_coordinator::queue::{JetStreamQueue, WorkQueue};
use lathe_coordinator::record::{TaskState, WorkerRecord, encode, worker_key};
use lathe_coordinator::state::{EtcdStore, StateStore};
use lathe_coordinator::testing::{EtcdServer, NatsServer};
use lathe_coordinator::{Coordinator, CoordinatorSettings};
use lathe_proto::v1;
use prost::Message as _;

const TASKS: usize = 5_000;
const SLOTS: u32 = 8;

/// A simulated worker slot: pulls a task, starts it, completes it with `master`, acknowledges.
async fn worker_slot(coordinator: Coordinator, queue: Arc<dyn WorkQueue>, master: String) {
    loop {
        let deliveries = match queue.pull(1, Duration::from_millis(500)).await {
            Ok(deliveries) => deliveries,
            Err(_) => continue,
        };
        for delivery in deliveries {
            let task = v1::Task::decode(delivery.payload.clone()).expect("task");
            let verdict = coordinator
                .start_task(&task.task_id, "w1", delivery.delivery)
                .await
                .expect("start");
            if verdict == StartVerdict::Run {
                coordinator
                    .complete_task(&task.task_id, "w1", &master, "{}", &[])
                    .await
                    .expect("complete");
            }
            delivery.ack().await.expect("ack");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_of_5000_tasks_completes_on_real_servers_with_right_counts_and_pages() {
    let (Some(nats), Some(etcd)) = (NatsServer::start(), EtcdServer::start()) else {
        return;
    };
    let settings = CoordinatorSettings::default();
    let queue: Arc<dyn WorkQueue> = Arc::new(
        JetStreamQueue::connect(
            &nats.url(),
            settings.queue_settings(Duration::from_secs(30)),
        )
        .await
        .expect("nats"),
    );
    let state = Arc::new(
        EtcdStore::connect(&etcd.url(), "scale/")
            .await
            .expect("etcd"),
    );
    let blobs = MemoryBlobStore::new();
    let coordinator = Coordinator::new(
        queue.clone(),
        state.clone(),
        Arc::new(blobs.clone()),
        settings,
    );
    let worker = WorkerRecord {
        id: "w1".to_owned(),
        host: "test".to_owned(),
        pid: 1,
        slots: SLOTS,
        current_tasks: Vec::new(),
        heartbeat_unix_ms: 0,
    };
    state
        .put(&worker_key("w1"), encode(&worker).expect("encode"))
        .await
        .expect("register");
    let source = put_bytes(&blobs, b"a tiny source").await.expect("blob");
    let master = put_bytes(&blobs, b"a tiny master").await.expect("blob");
    let job_id = coordinator
        .submit(&v1::SubmitJobRequest {
            name: "five thousand".to_owned(),
            profile_toml: lathe_model::profile::Profile::preset("cd")
                .expect("preset")
                .to_toml(),
            tracks: (0..TASKS)
                .map(|index| v1::TrackSpec {
                    source_digest: source.to_string(),
                    source_name: format!("{index:05}.wav"),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .await
        .expect("submit");

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = {
        let coordinator = coordinator.clone();
        tokio::spawn(async move {
            coordinator
                .run(async move {
                    let _ = stopped.await;
                })
                .await
        })
    };
    let slots: Vec<_> = (0..SLOTS)
        .map(|_| {
            tokio::spawn(worker_slot(
                coordinator.clone(),
                queue.clone(),
                master.to_string(),
            ))
        })
        .collect();
    let mut watch = coordinator.watch(&job_id);
    let mut last = None;
    let mut largest_message = 0;
    while let Some(message) = watch.next().await {
        let message = message.expect("status");
        largest_message = largest_message.max(message.encoded_len());
        last = Some(message);
    }
    for slot in slots {
        slot.abort();
    }
    let _ = stop.send(());
    running.await.expect("join").expect("run");

    let last = last.expect("a status");
    assert_eq!(last.state(), v1::JobState::Succeeded);
    let counts = last.counts.expect("counts");
    assert_eq!(counts.succeeded as usize, TASKS);
    assert_eq!(
        counts.pending + counts.queued + counts.running + counts.failed + counts.cancelled,
        0
    );
    assert!(
        largest_message < 16 * 1024,
        "every watch message stays small: {largest_message} bytes"
    );
    // The status pages through every task, 1,000 at a time, each succeeded once.
    let mut seen = 0;
    let mut after: Option<String> = None;
    loop {
        let page = coordinator
            .task_page(&job_id, None, after.as_deref(), 1_000)
            .await
            .expect("page");
        assert!(page.tasks.len() <= 1_000);
        for task in &page.tasks {
            assert_eq!(task.state, TaskState::Succeeded, "{}", task.id);
            assert_eq!(task.attempts, 1, "{}", task.id);
        }
        seen += page.tasks.len();
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, TASKS);
    let succeeded = coordinator
        .task_page(&job_id, Some(TaskState::Succeeded), None, 1_000)
        .await
        .expect("page");
    assert_eq!(succeeded.tasks.len(), 1_000);
    assert!(succeeded.next_after.is_some());
}
