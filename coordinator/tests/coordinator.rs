//! The coordinator's scheduling and failure rules, on the in-process queue, store and blob store.

use std::sync::Arc;
use std::time::Duration;

use lathe_coordinator::blob::{MemoryBlobStore, put_bytes};
use lathe_coordinator::coordinator::StartVerdict;
use lathe_coordinator::queue::{MemoryQueue, WorkQueue};
use lathe_coordinator::record::{WorkerRecord, encode, worker_key};
use lathe_coordinator::state::{MemoryStore, StateStore};
use lathe_coordinator::{Coordinator, CoordinatorSettings};
use lathe_proto::v1;
use prost::Message as _;

struct Fixture {
    coordinator: Coordinator,
    queue: MemoryQueue,
    state: MemoryStore,
    blobs: MemoryBlobStore,
}

fn fixture(settings: CoordinatorSettings) -> Fixture {
    let queue = MemoryQueue::new(settings.queue_settings(Duration::from_secs(30)));
    let state = MemoryStore::new();
    let blobs = MemoryBlobStore::new();
    Fixture {
        coordinator: Coordinator::new(
            Arc::new(queue.clone()),
            Arc::new(state.clone()),
            Arc::new(blobs.clone()),
            settings,
        ),
        queue,
        state,
        blobs,
    }
}

async fn job(fixture: &Fixture, name: &str, priority: i32, tracks: usize) -> String {
    let mut specs = Vec::new();
    for index in 0..tracks {
        let digest = put_bytes(&fixture.blobs, format!("{name} {index}").as_bytes())
            .await
            .expect("blob");
        specs.push(v1::TrackSpec {
            source_digest: digest.to_string(),
            source_name: format!("{name}-{index}.wav"),
            ..Default::default()
        });
    }
    fixture
        .coordinator
        .submit(&v1::SubmitJobRequest {
            name: name.to_owned(),
            priority,
            profile_toml: lathe_engine::profile::Profile::preset("cd")
                .expect("preset")
                .to_toml(),
            tracks: specs,
        })
        .await
        .expect("submit")
}

async fn register_worker(fixture: &Fixture, id: &str, slots: u32) {
    let record = WorkerRecord {
        id: id.to_owned(),
        host: "test".to_owned(),
        pid: 1,
        slots,
        current_tasks: Vec::new(),
        heartbeat_unix_ms: 0,
    };
    fixture
        .state
        .put(&worker_key(id), encode(&record).expect("encode"))
        .await
        .expect("register");
}

/// The job ids of the tasks on the queue, in queue order.
async fn queued_jobs(queue: &MemoryQueue) -> Vec<String> {
    let deliveries = queue
        .pull(100, Duration::from_millis(50))
        .await
        .expect("pull");
    let mut jobs = Vec::new();
    for delivery in deliveries {
        jobs.push(
            v1::Task::decode(delivery.payload.clone())
                .expect("task")
                .job_id,
        );
        delivery.nak(None).await.expect("nak");
    }
    jobs
}

#[tokio::test]
async fn higher_priority_jobs_go_first() {
    let fixture = fixture(CoordinatorSettings::default());
    let low = job(&fixture, "low", 1, 3).await;
    let high = job(&fixture, "high", 5, 3).await;
    register_worker(&fixture, "w1", 2).await;
    // Two free slots plus one queued ahead.
    assert_eq!(
        fixture
            .coordinator
            .dispatch_ready()
            .await
            .expect("dispatch"),
        3
    );
    assert_eq!(
        queued_jobs(&fixture.queue).await,
        [high.clone(), high.clone(), high]
    );
    assert!(!low.is_empty());
}

#[tokio::test]
async fn equal_priorities_share_the_workers() {
    let fixture = fixture(CoordinatorSettings::default());
    let first = job(&fixture, "first", 3, 6).await;
    let second = job(&fixture, "second", 3, 6).await;
    register_worker(&fixture, "w1", 3).await;
    assert_eq!(
        fixture
            .coordinator
            .dispatch_ready()
            .await
            .expect("dispatch"),
        4
    );
    let queued = queued_jobs(&fixture.queue).await;
    let count = |job: &String| queued.iter().filter(|j| *j == job).count();
    assert_eq!((count(&first), count(&second)), (2, 2), "{queued:?}");
}

#[tokio::test]
async fn failures_are_bounded_and_keep_the_last_error() {
    let settings = CoordinatorSettings {
        max_attempts: 2,
        blocklist_after: 10,
        ..CoordinatorSettings::default()
    };
    let fixture = fixture(settings);
    let job_id = job(&fixture, "bad", 0, 2).await;
    let task = format!("{job_id}.00000");
    let coordinator = &fixture.coordinator;

    assert_eq!(
        coordinator.start_task(&task, "w1", 1).await.expect("start"),
        StartVerdict::Run
    );
    assert!(
        !coordinator
            .fail_task(&task, "w1", "bad-0.wav: cannot decode")
            .await
            .expect("fail")
    );
    assert_eq!(
        coordinator.start_task(&task, "w2", 2).await.expect("start"),
        StartVerdict::Run
    );
    assert!(
        coordinator
            .fail_task(&task, "w2", "bad-0.wav: still bad")
            .await
            .expect("fail")
    );
    assert!(matches!(
        coordinator.start_task(&task, "w1", 3).await.expect("start"),
        StartVerdict::Drop(_)
    ));
    let status = coordinator.status(&job_id).await.expect("status");
    assert_eq!(status.tasks[0].state(), v1::TaskState::Failed);
    assert_eq!(status.tasks[0].attempts, 2);
    assert_eq!(status.tasks[0].last_error, "bad-0.wav: still bad");
    assert_eq!(
        status.state(),
        v1::JobState::Running,
        "the other task is not done"
    );

    // An attempt that never reports is counted, and recorded as lost.
    let other = format!("{job_id}.00001");
    assert_eq!(
        coordinator
            .start_task(&other, "w1", 1)
            .await
            .expect("start"),
        StartVerdict::Run
    );
    assert_eq!(
        coordinator
            .start_task(&other, "w2", 2)
            .await
            .expect("start"),
        StartVerdict::Run
    );
    assert!(matches!(
        coordinator
            .start_task(&other, "w2", 3)
            .await
            .expect("start"),
        StartVerdict::Drop(_)
    ));
    let status = coordinator.status(&job_id).await.expect("status");
    assert!(
        status.tasks[1].last_error.contains("lost"),
        "{}",
        status.tasks[1].last_error
    );
    assert_eq!(status.state(), v1::JobState::Failed);
}

#[tokio::test]
async fn a_worker_failing_in_a_row_is_blocklisted_until_cleared() {
    let settings = CoordinatorSettings {
        max_attempts: 5,
        blocklist_after: 2,
        ..CoordinatorSettings::default()
    };
    let fixture = fixture(settings);
    let job_id = job(&fixture, "j", 0, 3).await;
    let coordinator = &fixture.coordinator;
    for index in 0..2 {
        let task = format!("{job_id}.{index:05}");
        assert_eq!(
            coordinator.start_task(&task, "w1", 1).await.expect("start"),
            StartVerdict::Run
        );
        coordinator
            .fail_task(&task, "w1", "boom")
            .await
            .expect("fail");
    }
    let task = format!("{job_id}.00002");
    assert!(matches!(
        coordinator.start_task(&task, "w1", 1).await.expect("start"),
        StartVerdict::HandBack(_)
    ));
    assert_eq!(
        coordinator.start_task(&task, "w2", 2).await.expect("start"),
        StartVerdict::Run
    );
    let status = coordinator.status(&job_id).await.expect("status");
    assert_eq!(status.blocklisted_workers, ["w1"]);

    assert_eq!(
        coordinator
            .clear_blocklist(&job_id, "")
            .await
            .expect("clear"),
        ["w1"]
    );
    let task = format!("{job_id}.00000");
    assert_eq!(
        coordinator.start_task(&task, "w1", 2).await.expect("start"),
        StartVerdict::Run
    );
}

#[tokio::test]
async fn cancel_drops_queued_and_stops_running_tasks() {
    let fixture = fixture(CoordinatorSettings::default());
    let job_id = job(&fixture, "c", 0, 3).await;
    let coordinator = &fixture.coordinator;
    let running = format!("{job_id}.00000");
    assert_eq!(
        coordinator
            .start_task(&running, "w1", 1)
            .await
            .expect("start"),
        StartVerdict::Run
    );
    assert!(
        !coordinator
            .progress(&running, "render", 0.5)
            .await
            .expect("progress")
    );
    coordinator.cancel(&job_id).await.expect("cancel");
    assert!(
        coordinator
            .progress(&running, "render", 0.6)
            .await
            .expect("progress"),
        "told to stop"
    );
    assert!(matches!(
        coordinator
            .start_task(&format!("{job_id}.00001"), "w2", 1)
            .await
            .expect("start"),
        StartVerdict::Drop(_)
    ));
    let status = coordinator.status(&job_id).await.expect("status");
    assert_eq!(status.state(), v1::JobState::Cancelled);
    assert!(
        status
            .tasks
            .iter()
            .all(|t| t.state() == v1::TaskState::Cancelled)
    );
    assert_eq!(coordinator.dispatch_ready().await.expect("dispatch"), 0);
}
