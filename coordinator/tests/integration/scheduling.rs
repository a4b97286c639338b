//! The coordinator's scheduling and failure rules, on the in-process queue, store and blob store.

use std::sync::Arc;
use std::time::Duration;

use lathe_coordinator::blob::{MemoryBlobStore, put_bytes};
use lathe_coordinator::coordinator::{AttemptCall, Fault, StartVerdict};

use crate::started;
use lathe_coordinator::queue::{MemoryQueue, WorkQueue};
use lathe_coordinator::record::{TaskState, WorkerRecord, encode, worker_key};
use lathe_coordinator::state::{LeaseId, MemoryStore, Page, StateStore, Transaction, Versioned};
use lathe_coordinator::{Coordinator, CoordinatorSettings, Error};
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
        .submit(
            &v1::SubmitJobRequest {
                name: name.to_owned(),
                priority,
                profile_toml: lathe_model::profile::Profile::preset("cd")
                    .expect("preset")
                    .to_toml(),
                tracks: specs,
                ..Default::default()
            },
            "tester",
        )
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
    let task = format!("{job_id}.0000000");
    let coordinator = &fixture.coordinator;

    let token = started(coordinator, &task, "w1", 1).await;
    assert!(
        !coordinator
            .fail_task(
                AttemptCall {
                    task_id: &task,
                    worker_id: "w1",
                    token: &token
                },
                "bad-0.wav: cannot decode",
                Fault::Worker
            )
            .await
            .expect("fail")
    );
    let token = started(coordinator, &task, "w2", 2).await;
    assert!(
        coordinator
            .fail_task(
                AttemptCall {
                    task_id: &task,
                    worker_id: "w2",
                    token: &token
                },
                "bad-0.wav: still bad",
                Fault::Worker
            )
            .await
            .expect("fail")
    );
    assert!(matches!(
        coordinator.start_task(&task, "w1", 3).await.expect("start"),
        StartVerdict::Drop(_)
    ));
    let status = full_status(coordinator, &job_id).await;
    assert_eq!(status.tasks[0].state(), v1::TaskState::Failed);
    assert_eq!(status.tasks[0].attempts, 2);
    assert_eq!(status.tasks[0].last_error, "bad-0.wav: still bad");
    assert_eq!(
        status.state(),
        v1::JobState::Running,
        "the other task is not done"
    );

    // An attempt that never reports is counted, and recorded as lost.
    let other = format!("{job_id}.0000001");
    started(coordinator, &other, "w1", 1).await;
    started(coordinator, &other, "w2", 2).await;
    assert!(matches!(
        coordinator
            .start_task(&other, "w2", 3)
            .await
            .expect("start"),
        StartVerdict::Drop(_)
    ));
    let status = full_status(coordinator, &job_id).await;
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
        let task = format!("{job_id}.{index:07}");
        run_and_fail(coordinator, &task, "boom", Fault::Worker).await;
    }
    let task = format!("{job_id}.0000002");
    assert!(matches!(
        coordinator.start_task(&task, "w1", 1).await.expect("start"),
        StartVerdict::HandBack(_)
    ));
    started(coordinator, &task, "w2", 2).await;
    let status = full_status(coordinator, &job_id).await;
    assert_eq!(status.blocklisted_workers, ["w1"]);

    assert_eq!(
        coordinator
            .clear_blocklist(&job_id, "")
            .await
            .expect("clear"),
        ["w1"]
    );
    let task = format!("{job_id}.0000000");
    started(coordinator, &task, "w1", 2).await;
}

#[tokio::test]
async fn progress_is_kept_only_from_the_worker_running_the_task() {
    let fixture = fixture(CoordinatorSettings::default());
    let job_id = job(&fixture, "p", 0, 2).await;
    let coordinator = &fixture.coordinator;
    coordinator.dispatch_ready().await.expect("dispatch");
    let running = format!("{job_id}.0000000");
    let token = started(coordinator, &running, "w1", 1).await;
    assert!(
        !coordinator
            .progress(
                AttemptCall {
                    task_id: &running,
                    worker_id: "w1",
                    token: &token
                },
                "render",
                0.25
            )
            .await
            .expect("progress")
    );
    assert_eq!(fraction_of(coordinator, &job_id).await, 0.25);
    // Another worker's report is not kept, and tells it to stop.
    assert!(
        coordinator
            .progress(
                AttemptCall {
                    task_id: &running,
                    worker_id: "w2",
                    token: &token
                },
                "render",
                0.75
            )
            .await
            .expect("a refusal, not an error")
    );
    assert_eq!(fraction_of(coordinator, &job_id).await, 0.25);
    // A task not started, a task of a job that does not exist, and bad values: nothing kept.
    let queued = format!("{job_id}.0000001");
    assert!(
        coordinator
            .progress(
                AttemptCall {
                    task_id: &queued,
                    worker_id: "w1",
                    token: &token
                },
                "render",
                0.5
            )
            .await
            .expect("a refusal")
    );
    assert!(matches!(
        coordinator
            .progress(
                AttemptCall {
                    task_id: "x.y",
                    worker_id: "w1",
                    token: &token
                },
                "render",
                0.5
            )
            .await,
        Err(Error::TaskNotFound(_) | Error::InvalidRequest(_))
    ));
    for (phase, fraction) in [
        ("render", f64::NAN),
        ("render", 1.5),
        (&*"p".repeat(33), 0.5),
    ] {
        assert!(matches!(
            coordinator
                .progress(
                    AttemptCall {
                        task_id: &running,
                        worker_id: "w1",
                        token: &token
                    },
                    phase,
                    fraction
                )
                .await,
            Err(Error::InvalidRequest(_))
        ));
    }
    assert_eq!(fraction_of(coordinator, &job_id).await, 0.25);
}

/// The fraction of task 0 of `job_id` as the job's status shows it.
async fn fraction_of(coordinator: &Coordinator, job_id: &str) -> f64 {
    let task = coordinator.task(job_id, 0).await.expect("task");
    coordinator.task_status(&task).fraction
}

#[tokio::test]
async fn cancel_drops_queued_and_stops_running_tasks() {
    let fixture = fixture(CoordinatorSettings::default());
    let job_id = job(&fixture, "c", 0, 3).await;
    let coordinator = &fixture.coordinator;
    let running = format!("{job_id}.0000000");
    let token = started(coordinator, &running, "w1", 1).await;
    assert!(
        !coordinator
            .progress(
                AttemptCall {
                    task_id: &running,
                    worker_id: "w1",
                    token: &token
                },
                "render",
                0.5
            )
            .await
            .expect("progress")
    );
    coordinator.cancel(&job_id).await.expect("cancel");
    assert!(
        coordinator
            .progress(
                AttemptCall {
                    task_id: &running,
                    worker_id: "w1",
                    token: &token
                },
                "render",
                0.6
            )
            .await
            .expect("progress"),
        "told to stop"
    );
    assert!(matches!(
        coordinator
            .start_task(&format!("{job_id}.0000001"), "w2", 1)
            .await
            .expect("start"),
        StartVerdict::Drop(_)
    ));
    let status = full_status(coordinator, &job_id).await;
    assert_eq!(status.state(), v1::JobState::Cancelled);
    assert!(
        status
            .tasks
            .iter()
            .all(|t| t.state() == v1::TaskState::Cancelled)
    );
    assert_eq!(coordinator.dispatch_ready().await.expect("dispatch"), 0);
}

/// A graph job of four tasks: `measure` of two sources (0 and 1), then task 2 needing both and
/// taking task 1's files as inputs, then task 3 needing task 2.
async fn graph_job(fixture: &Fixture) -> String {
    use lathe_model::delivery::plan::{MeasureWork, Work};
    let mut specs = Vec::new();
    for index in 0..4u32 {
        let work = Work::Measure(MeasureWork {
            album: "Northern Lights".to_owned(),
            track: index as usize,
        });
        let digest = put_bytes(&fixture.blobs, format!("source {index}").as_bytes())
            .await
            .expect("blob");
        let (needs, inputs_from) = match index {
            2 => (vec![0, 1], vec![1]),
            3 => (vec![2], vec![]),
            _ => (vec![], vec![]),
        };
        specs.push(v1::GraphTaskSpec {
            label: format!("Northern Lights / measure / {index}"),
            kind: work.kind().to_owned(),
            work_json: serde_json::to_string(&work).expect("work json"),
            source_digests: vec![digest.to_string()],
            source_names: vec![format!("{index}.wav")],
            needs,
            inputs_from,
            error: String::new(),
        });
    }
    fixture
        .coordinator
        .submit(
            &v1::SubmitJobRequest {
                name: "graph".to_owned(),
                profile_toml: lathe_model::profile::Profile::preset("streaming")
                    .expect("preset")
                    .to_toml(),
                graph: specs,
                ..Default::default()
            },
            "tester",
        )
        .await
        .expect("submit")
}

/// The tasks on the queue, in order (handed back).
async fn queued_tasks(queue: &MemoryQueue) -> Vec<v1::Task> {
    let mut tasks = Vec::new();
    for delivery in queue
        .pull(100, Duration::from_millis(50))
        .await
        .expect("pull")
    {
        tasks.push(v1::Task::decode(delivery.payload.clone()).expect("task"));
        delivery.ack().await.expect("ack");
    }
    tasks
}

/// Runs `task` on `worker` and completes it with `files` (uploaded first) in its outcome.
async fn complete_with_files(fixture: &Fixture, task: &str, files: &[&str]) {
    use lathe_model::delivery::outcome::{OutcomeFile, TaskOutcome};
    let coordinator = &fixture.coordinator;
    let token = started(coordinator, task, "w1", 1).await;
    let mut outcome = TaskOutcome::default();
    let mut outputs = Vec::new();
    for path in files {
        let digest = put_bytes(&fixture.blobs, path.as_bytes())
            .await
            .expect("blob");
        outputs.push(v1::OutputFile {
            path: (*path).to_owned(),
            digest: digest.to_string(),
            delivered: false,
        });
        outcome.files.push(OutcomeFile {
            path: (*path).to_owned(),
            delivered: false,
            kind: lathe_model::delivery::outcome::OutcomeKind::FloatMaster,
            duration_s: Some(1.0),
            integrated_lufs: None,
            true_peak_dbtp: None,
            qc: lathe_model::report::QcVerdict {
                passed: true,
                issues: Vec::new(),
            },
            platforms: Vec::new(),
            notes: Vec::new(),
        });
    }
    let report = serde_json::to_string(&outcome).expect("outcome json");
    coordinator
        .complete_task(
            AttemptCall {
                task_id: task,
                worker_id: "w1",
                token: &token,
            },
            "",
            &report,
            &outputs,
        )
        .await
        .expect("complete");
}

#[tokio::test]
async fn a_graph_task_is_published_once_its_needs_succeeded_with_their_files_as_inputs() {
    let fixture = fixture(CoordinatorSettings::default());
    let job_id = graph_job(&fixture).await;
    register_worker(&fixture, "w1", 8).await;
    let coordinator = &fixture.coordinator;

    coordinator.dispatch_ready().await.expect("dispatch");
    let first: Vec<String> = queued_tasks(&fixture.queue)
        .await
        .into_iter()
        .map(|t| t.task_id)
        .collect();
    assert_eq!(
        first,
        [format!("{job_id}.0000000"), format!("{job_id}.0000001")],
        "only the tasks that need nothing"
    );

    complete_with_files(&fixture, &format!("{job_id}.0000000"), &["a/0.wav"]).await;
    coordinator.dispatch_ready().await.expect("dispatch");
    assert!(
        queued_tasks(&fixture.queue).await.is_empty(),
        "task 2 still waits for task 1"
    );

    complete_with_files(
        &fixture,
        &format!("{job_id}.0000001"),
        &["b/1.wav", "b/2.wav"],
    )
    .await;
    coordinator.dispatch_ready().await.expect("dispatch");
    let next = queued_tasks(&fixture.queue).await;
    assert_eq!(next.len(), 1, "{next:?}");
    assert_eq!(next[0].task_id, format!("{job_id}.0000002"));
    assert_eq!(next[0].kind, "measure");
    assert_eq!(next[0].label, "Northern Lights / measure / 2");
    assert_eq!(next[0].source_names, ["2.wav"]);
    let inputs: Vec<&str> = next[0].inputs.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(inputs, ["b/1.wav", "b/2.wav"], "task 1's files, in order");

    let status = full_status(coordinator, &job_id).await;
    assert_eq!(status.tasks[1].outputs.len(), 2);
    assert_eq!(status.tasks[1].label, "Northern Lights / measure / 1");
    assert_eq!(status.tasks[2].needs, [0, 1]);
}

#[tokio::test]
async fn a_failed_need_fails_its_dependents_by_name_and_the_job_ends() {
    let settings = CoordinatorSettings {
        max_attempts: 1,
        ..CoordinatorSettings::default()
    };
    let fixture = fixture(settings);
    let job_id = graph_job(&fixture).await;
    register_worker(&fixture, "w1", 8).await;
    let coordinator = &fixture.coordinator;
    coordinator.dispatch_ready().await.expect("dispatch");
    queued_tasks(&fixture.queue).await;

    complete_with_files(&fixture, &format!("{job_id}.0000000"), &["a/0.wav"]).await;
    let failing = format!("{job_id}.0000001");
    let token = started(coordinator, &failing, "w1", 1).await;
    assert!(
        coordinator
            .fail_task(
                AttemptCall {
                    task_id: &failing,
                    worker_id: "w1",
                    token: &token
                },
                "1.wav: not an audio file",
                Fault::Worker
            )
            .await
            .expect("fail"),
        "one attempt: failed for good"
    );
    coordinator.dispatch_ready().await.expect("dispatch");
    assert!(queued_tasks(&fixture.queue).await.is_empty());

    let status = full_status(coordinator, &job_id).await;
    let states: Vec<v1::TaskState> = status.tasks.iter().map(|t| t.state()).collect();
    assert_eq!(
        states,
        [
            v1::TaskState::Succeeded,
            v1::TaskState::Failed,
            v1::TaskState::Failed,
            v1::TaskState::Failed
        ]
    );
    assert_eq!(
        status.tasks[2].last_error,
        "needs Northern Lights / measure / 1, which failed"
    );
    assert_eq!(
        status.tasks[3].last_error,
        "needs Northern Lights / measure / 2, which failed"
    );
    assert_eq!(status.tasks[2].attempts, 0, "never ran");
    assert_eq!(status.state(), v1::JobState::CompletedWithFailures);
}

#[tokio::test]
async fn a_graph_completion_must_upload_the_outcomes_files() {
    let fixture = fixture(CoordinatorSettings::default());
    let job_id = graph_job(&fixture).await;
    let task = format!("{job_id}.0000000");
    let coordinator = &fixture.coordinator;
    let token = started(coordinator, &task, "w1", 1).await;
    let missing = v1::OutputFile {
        path: "a/0.wav".to_owned(),
        digest: lathe_coordinator::blob::Digest::of(b"never uploaded").to_string(),
        delivered: true,
    };
    let mut outcome = lathe_model::delivery::outcome::TaskOutcome::default();
    outcome
        .files
        .push(lathe_model::delivery::outcome::OutcomeFile {
            path: "a/0.wav".to_owned(),
            delivered: true,
            kind: lathe_model::delivery::outcome::OutcomeKind::Track,
            duration_s: None,
            integrated_lufs: None,
            true_peak_dbtp: None,
            qc: lathe_model::report::QcVerdict {
                passed: true,
                issues: Vec::new(),
            },
            platforms: Vec::new(),
            notes: Vec::new(),
        });
    let report = serde_json::to_string(&outcome).expect("json");
    let error = coordinator
        .complete_task(
            AttemptCall {
                task_id: &task,
                worker_id: "w1",
                token: &token,
            },
            "",
            &report,
            &[missing],
        )
        .await
        .expect_err("not uploaded");
    assert!(
        error.to_string().contains("has not been uploaded"),
        "{error}"
    );
    let status = full_status(coordinator, &job_id).await;
    assert_eq!(status.tasks[0].state(), v1::TaskState::Running);
}

#[tokio::test]
async fn a_job_of_5000_tasks_is_counted_paged_and_dispatched_in_bounded_steps() {
    let fixture = fixture(CoordinatorSettings::default());
    register_worker(&fixture, "w1", 2).await;
    let coordinator = &fixture.coordinator;
    let job_id = job(&fixture, "big", 0, 5_000).await;
    let output = put_bytes(&fixture.blobs, b"master").await.expect("blob");
    let status = coordinator.status(&job_id).await.expect("status");
    assert_eq!(status.counts.expect("counts").pending, 5_000);
    assert!(status.tasks.is_empty(), "no task is running yet");
    let mut done = 0;
    let mut largest_status = 0;
    while done < 5_000 {
        // Two slots and one ahead: at most three go on the queue at a time.
        let published = coordinator.dispatch_ready().await.expect("dispatch");
        assert!((1..=3).contains(&published), "{published}");
        let queued = coordinator
            .task_page(&job_id, Some(TaskState::Queued), None, 1_000)
            .await
            .expect("queued");
        assert!(queued.tasks.len() <= 3);
        for task in &queued.tasks {
            let token = started(coordinator, &task.id, "w1", 1).await;
            let status = coordinator.status(&job_id).await.expect("status");
            largest_status = largest_status.max(status.encoded_len());
            coordinator
                .complete_task(
                    AttemptCall {
                        task_id: &task.id,
                        worker_id: "w1",
                        token: &token,
                    },
                    &output.to_string(),
                    "{}",
                    &[],
                )
                .await
                .expect("complete");
            done += 1;
        }
    }
    let status = coordinator.status(&job_id).await.expect("status");
    assert_eq!(status.state(), v1::JobState::Succeeded);
    let counts = status.counts.expect("counts");
    assert_eq!(
        (counts.succeeded, counts.pending, counts.running),
        (5_000, 0, 0)
    );
    // The job's status stays a small message whatever the job's size.
    assert!(largest_status < 4_096, "{largest_status} bytes");
    // Every task, page by page, in order; a state filter pages through its own index.
    let mut seen = 0;
    let mut pages = 0;
    let mut after: Option<String> = None;
    loop {
        let page = coordinator
            .task_page(&job_id, Some(TaskState::Succeeded), after.as_deref(), 1_000)
            .await
            .expect("page");
        for (offset, task) in page.tasks.iter().enumerate() {
            assert_eq!(task.index as usize, seen + offset);
        }
        seen += page.tasks.len();
        pages += 1;
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!((seen, pages), (5_000, 5));
    let failed = coordinator
        .task_page(&job_id, Some(TaskState::Failed), None, 10)
        .await
        .expect("page");
    assert!(failed.tasks.is_empty() && failed.next_after.is_none());
    // A finished job no longer costs the dispatcher a read: it left the active set.
    assert!(
        fixture
            .state
            .page("active/", None, 10)
            .await
            .expect("page")
            .entries
            .is_empty()
    );
}

/// Dispatches, starts and completes tasks until `count` more have succeeded.
async fn run_tasks(fixture: &Fixture, count: usize) {
    let coordinator = &fixture.coordinator;
    let output = put_bytes(&fixture.blobs, b"master").await.expect("blob");
    let mut done = 0;
    while done < count {
        coordinator.dispatch_ready().await.expect("dispatch");
        for task in queued_tasks(&fixture.queue).await {
            let token = started(coordinator, &task.task_id, "w1", 1).await;
            coordinator
                .complete_task(
                    AttemptCall {
                        task_id: &task.task_id,
                        worker_id: "w1",
                        token: &token,
                    },
                    &output.to_string(),
                    "{}",
                    &[],
                )
                .await
                .expect("complete");
            done += 1;
        }
    }
}

#[tokio::test]
async fn a_task_sent_back_to_pending_behind_the_dispatchers_floor_is_queued_at_the_next_pass() {
    // The dispatcher reads a job's pending index in windows from where its last pass stopped;
    // a task that goes back to pending far behind that point must not wait for the job's end.
    let fixture = fixture(CoordinatorSettings::default());
    register_worker(&fixture, "w1", 1).await;
    let coordinator = &fixture.coordinator;
    let job_id = job(&fixture, "floor", 0, 3_000).await;
    let first = format!("{job_id}.0000000");
    coordinator.dispatch_ready().await.expect("dispatch");
    let queued: Vec<String> = queued_tasks(&fixture.queue)
        .await
        .into_iter()
        .map(|task| task.task_id)
        .collect();
    assert_eq!(queued[0], first, "the first pass starts at the first task");
    assert!(run_and_fail(coordinator, &first, "0.wav: not audio", Fault::Input).await);
    let output = put_bytes(&fixture.blobs, b"master").await.expect("blob");
    for task in &queued[1..] {
        let token = started(coordinator, task, "w1", 1).await;
        coordinator
            .complete_task(
                AttemptCall {
                    task_id: task,
                    worker_id: "w1",
                    token: &token,
                },
                &output.to_string(),
                "{}",
                &[],
            )
            .await
            .expect("complete");
    }
    // Two windows of the pending index further on.
    run_tasks(&fixture, 2_100).await;
    assert_eq!(coordinator.retry(&job_id).await.expect("retry"), 1);
    coordinator.dispatch_ready().await.expect("dispatch");
    let queued: Vec<String> = queued_tasks(&fixture.queue)
        .await
        .into_iter()
        .map(|task| task.task_id)
        .collect();
    assert!(queued.contains(&first), "{queued:?}");

    // A coordinator that starts on this state (it knows no floor) goes on where the job is,
    // and the rest of the job completes with every count right.
    let restarted = Fixture {
        coordinator: Coordinator::new(
            Arc::new(fixture.queue.clone()),
            Arc::new(fixture.state.clone()),
            Arc::new(fixture.blobs.clone()),
            CoordinatorSettings::default(),
        ),
        queue: fixture.queue.clone(),
        state: fixture.state.clone(),
        blobs: fixture.blobs.clone(),
    };
    for task in &queued {
        let token = started(coordinator, task, "w1", 1).await;
        coordinator
            .complete_task(
                AttemptCall {
                    task_id: task,
                    worker_id: "w1",
                    token: &token,
                },
                &output.to_string(),
                "{}",
                &[],
            )
            .await
            .expect("complete");
    }
    let left = restarted
        .coordinator
        .status(&job_id)
        .await
        .expect("status")
        .counts
        .expect("counts");
    run_tasks(&restarted, left.pending as usize).await;
    let status = restarted.coordinator.status(&job_id).await.expect("status");
    assert_eq!(status.state(), v1::JobState::Succeeded);
    assert_eq!(status.counts.expect("counts").succeeded, 3_000);
}

#[tokio::test]
async fn an_input_fault_fails_its_task_at_once_and_counts_against_no_worker() {
    let settings = CoordinatorSettings {
        max_attempts: 3,
        blocklist_after: 2,
        ..CoordinatorSettings::default()
    };
    let fixture = fixture(settings);
    let job_id = job(&fixture, "refused", 0, 3).await;
    let coordinator = &fixture.coordinator;
    for index in 0..3 {
        let task = format!("{job_id}.{index:07}");
        let error = format!("{index}.wav: not an audio file");
        let final_failure = run_and_fail(coordinator, &task, &error, Fault::Input).await;
        assert!(final_failure, "no retry for a source that cannot be read");
    }
    let status = full_status(coordinator, &job_id).await;
    assert_eq!(status.state(), v1::JobState::Failed);
    assert!(status.tasks.iter().all(|t| t.attempts == 1));
    assert!(
        status.blocklisted_workers.is_empty(),
        "three refused sources in a row do not blocklist the worker"
    );
    assert_eq!(status.counts.expect("counts").failed, 3);
}

#[tokio::test]
async fn a_job_no_worker_may_take_is_paused_instead_of_cycling() {
    let settings = CoordinatorSettings {
        blocklist_after: 1,
        ..CoordinatorSettings::default()
    };
    let fixture = fixture(settings);
    register_worker(&fixture, "w1", 1).await;
    let job_id = job(&fixture, "stuck", 0, 3).await;
    let coordinator = &fixture.coordinator;
    assert_eq!(coordinator.dispatch_ready().await.expect("dispatch"), 2);
    assert_eq!(queued_tasks(&fixture.queue).await.len(), 2);
    let first = format!("{job_id}.0000000");
    let token = started(coordinator, &first, "w1", 1).await;
    coordinator
        .fail_task(
            AttemptCall {
                task_id: &first,
                worker_id: "w1",
                token: &token,
            },
            "the disk is full",
            Fault::Worker,
        )
        .await
        .expect("fail");
    // w1, the only worker, is now blocklisted: the next delivery is dropped and its task goes
    // back to pending, and the job says why it waits.
    let second = format!("{job_id}.0000001");
    let StartVerdict::Drop(reason) = coordinator
        .start_task(&second, "w1", 1)
        .await
        .expect("start")
    else {
        panic!("dropped")
    };
    assert!(reason.contains("every worker is blocklisted"), "{reason}");
    let status = full_status(coordinator, &job_id).await;
    assert_eq!(status.paused_reason, reason);
    assert_eq!(status.tasks[1].state(), v1::TaskState::Pending);
    assert_eq!(
        coordinator.dispatch_ready().await.expect("dispatch"),
        0,
        "nothing goes on the queue while the job is paused"
    );
    // Clearing the blocklist resumes it; the task queued again is a new message, not a duplicate.
    coordinator
        .clear_blocklist(&job_id, "")
        .await
        .expect("clear");
    assert!(coordinator.dispatch_ready().await.expect("dispatch") > 0);
    let status = full_status(coordinator, &job_id).await;
    assert!(status.paused_reason.is_empty());
    let ids: Vec<String> = queued_tasks(&fixture.queue)
        .await
        .into_iter()
        .map(|t| t.task_id)
        .collect();
    assert!(ids.contains(&second), "{ids:?}");
}

#[tokio::test]
async fn a_master_that_failed_qc_is_counted_and_flagged() {
    let fixture = fixture(CoordinatorSettings::default());
    let job_id = job(&fixture, "qc", 0, 2).await;
    let output = put_bytes(&fixture.blobs, b"master").await.expect("blob");
    let coordinator = &fixture.coordinator;
    for (index, report) in [r#"{"qc":{"passed":true}}"#, r#"{"qc":{"passed":false}}"#]
        .iter()
        .enumerate()
    {
        let task = format!("{job_id}.{index:07}");
        let token = started(coordinator, &task, "w1", 1).await;
        coordinator
            .complete_task(
                AttemptCall {
                    task_id: &task,
                    worker_id: "w1",
                    token: &token,
                },
                &output.to_string(),
                report,
                &[],
            )
            .await
            .expect("complete");
    }
    let status = full_status(coordinator, &job_id).await;
    let counts = status.counts.expect("counts");
    assert_eq!((counts.succeeded, counts.qc_failed), (2, 1));
    assert_eq!(
        status.tasks.iter().map(|t| t.qc_failed).collect::<Vec<_>>(),
        [false, true]
    );
    // The QC failures have their own index: a page of them reads nothing else.
    let page = coordinator
        .qc_failed_page(&job_id, None, 10)
        .await
        .expect("qc page");
    let ids: Vec<&str> = page.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, [format!("{job_id}.0000001")]);
}

#[tokio::test]
async fn a_submission_retried_with_its_idempotency_key_returns_the_first_job() {
    let fixture = fixture(CoordinatorSettings::default());
    let digest = put_bytes(&fixture.blobs, b"source").await.expect("blob");
    let request = |key: &str| v1::SubmitJobRequest {
        name: "retry".to_owned(),
        profile_toml: lathe_model::profile::Profile::preset("cd")
            .expect("preset")
            .to_toml(),
        tracks: vec![v1::TrackSpec {
            source_digest: digest.to_string(),
            source_name: "a.wav".to_owned(),
            ..Default::default()
        }],
        idempotency_key: key.to_owned(),
        ..Default::default()
    };
    let coordinator = &fixture.coordinator;
    let first = coordinator
        .submit(&request("k1"), "tester")
        .await
        .expect("submit");
    let again = coordinator
        .submit(&request("k1"), "tester")
        .await
        .expect("submit");
    let other = coordinator
        .submit(&request("k2"), "tester")
        .await
        .expect("submit");
    let unkeyed = coordinator
        .submit(&request(""), "tester")
        .await
        .expect("submit");
    assert_eq!(first, again);
    assert_ne!(first, other);
    assert_ne!(unkeyed, first);
    let (jobs, next) = coordinator.list(None, 10).await.expect("list");
    assert_eq!(jobs.len(), 3, "the retry made no second job");
    assert!(next.is_none());
}

/// A state store one of whose transactions fails (the one after `commits_left`), as etcd going
/// away for a moment in the middle of a submission.
#[derive(Debug)]
struct FailingStore {
    inner: MemoryStore,
    commits_left: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl StateStore for FailingStore {
    async fn get(&self, key: &str) -> lathe_coordinator::Result<Option<Versioned>> {
        self.inner.get(key).await
    }
    async fn page_range(
        &self,
        prefix: &str,
        after: Option<&str>,
        before: Option<&str>,
        limit: usize,
    ) -> lathe_coordinator::Result<Page> {
        self.inner.page_range(prefix, after, before, limit).await
    }
    async fn get_many(&self, keys: &[String]) -> lathe_coordinator::Result<Vec<Option<Versioned>>> {
        self.inner.get_many(keys).await
    }
    async fn put(&self, key: &str, value: Vec<u8>) -> lathe_coordinator::Result<i64> {
        self.inner.put(key, value).await
    }
    async fn commit(&self, transaction: &Transaction) -> lathe_coordinator::Result<bool> {
        use std::sync::atomic::Ordering;
        // One commit fails (etcd went away for a moment); the clean-up after it goes through.
        let before = self
            .commits_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.checked_sub(1).unwrap_or(usize::MAX))
            })
            .unwrap_or(1);
        if before == 0 {
            return Err(lathe_coordinator::Error::State("etcd went away".to_owned()));
        }
        self.inner.commit(transaction).await
    }
    async fn delete_prefix(&self, prefix: &str) -> lathe_coordinator::Result<()> {
        self.inner.delete_prefix(prefix).await
    }
    async fn delete(&self, key: &str) -> lathe_coordinator::Result<()> {
        self.inner.delete(key).await
    }
    async fn grant_lease(&self, ttl: Duration) -> lathe_coordinator::Result<LeaseId> {
        self.inner.grant_lease(ttl).await
    }
    async fn keep_alive(&self, lease: LeaseId) -> lathe_coordinator::Result<()> {
        self.inner.keep_alive(lease).await
    }
    async fn put_leased(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: LeaseId,
    ) -> lathe_coordinator::Result<()> {
        self.inner.put_leased(key, value, lease).await
    }
    async fn revoke(&self, lease: LeaseId) -> lathe_coordinator::Result<()> {
        self.inner.revoke(lease).await
    }
}

#[tokio::test]
async fn a_submission_that_fails_halfway_leaves_nothing_behind() {
    let settings = CoordinatorSettings::default();
    let memory = MemoryStore::new();
    let blobs = MemoryBlobStore::new();
    let coordinator = Coordinator::new(
        Arc::new(MemoryQueue::new(
            settings.queue_settings(Duration::from_secs(30)),
        )),
        Arc::new(FailingStore {
            inner: memory.clone(),
            commits_left: 2.into(),
        }),
        Arc::new(blobs.clone()),
        settings,
    );
    let mut tracks = Vec::new();
    for index in 0..300 {
        let digest = put_bytes(&blobs, format!("{index}").as_bytes())
            .await
            .expect("blob");
        tracks.push(v1::TrackSpec {
            source_digest: digest.to_string(),
            source_name: format!("{index}.wav"),
            ..Default::default()
        });
    }
    let error = coordinator
        .submit(
            &v1::SubmitJobRequest {
                name: "doomed".to_owned(),
                profile_toml: lathe_model::profile::Profile::preset("cd")
                    .expect("preset")
                    .to_toml(),
                tracks,
                ..Default::default()
            },
            "tester",
        )
        .await
        .expect_err("the third batch fails");
    assert!(
        error.to_string().contains("nothing of it was kept"),
        "{error}"
    );
    // 300 tasks are five batches; two were written, then removed.
    for prefix in [
        "tasks/",
        "by_state/",
        "jobs/",
        "counts/",
        "active/",
        "submitting/",
        "blob_refs/",
    ] {
        let page = memory.page(prefix, None, 10).await.expect("page");
        assert!(page.entries.is_empty(), "{prefix}: {page:?}");
    }
}

/// Starts `task` on worker `w1` (it must run) and fails it with `error`; returns whether it is
/// now failed for good.
async fn run_and_fail(coordinator: &Coordinator, task: &str, error: &str, fault: Fault) -> bool {
    let token = started(coordinator, task, "w1", 1).await;
    coordinator
        .fail_task(
            AttemptCall {
                task_id: task,
                worker_id: "w1",
                token: &token,
            },
            error,
            fault,
        )
        .await
        .expect("fail")
}

/// A job's status with every task, paged through `task_page` two at a time, as the tests read it.
async fn full_status(coordinator: &Coordinator, job_id: &str) -> v1::JobStatus {
    let mut status = coordinator.status(job_id).await.expect("status");
    status.tasks.clear();
    let mut after: Option<String> = None;
    loop {
        let page = coordinator
            .task_page(job_id, None, after.as_deref(), 2)
            .await
            .expect("page");
        assert!(page.tasks.len() <= 2);
        status
            .tasks
            .extend(page.tasks.iter().map(|task| coordinator.task_status(task)));
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    // The counts agree with the tasks.
    let counts = status.counts.expect("counts");
    let count = |state: v1::TaskState| {
        u32::try_from(status.tasks.iter().filter(|t| t.state() == state).count()).unwrap_or(0)
    };
    assert_eq!(
        [
            counts.pending,
            counts.queued,
            counts.running,
            counts.succeeded,
            counts.failed,
            counts.cancelled
        ],
        [
            count(v1::TaskState::Pending),
            count(v1::TaskState::Queued),
            count(v1::TaskState::Running),
            count(v1::TaskState::Succeeded),
            count(v1::TaskState::Failed),
            count(v1::TaskState::Cancelled)
        ],
        "{status:?}"
    );
    status
}

/// Starts `task` on `w1` and completes it with `master` as its output.
async fn run_and_complete(coordinator: &Coordinator, task: &str, master: &str) {
    let token = started(coordinator, task, "w1", 1).await;
    coordinator
        .complete_task(
            AttemptCall {
                task_id: task,
                worker_id: "w1",
                token: &token,
            },
            master,
            r#"{"qc":{"passed":true}}"#,
            &[],
        )
        .await
        .expect("complete");
}

#[tokio::test]
async fn retry_runs_the_failed_tasks_again_with_fresh_attempts() {
    let fixture = fixture(CoordinatorSettings::default());
    register_worker(&fixture, "w1", 1).await;
    let job_id = job(&fixture, "retry", 0, 2).await;
    let coordinator = &fixture.coordinator;
    let master = put_bytes(&fixture.blobs, b"master").await.expect("blob");
    let (first, second) = (format!("{job_id}.0000000"), format!("{job_id}.0000001"));
    run_and_complete(coordinator, &first, &master.to_string()).await;
    run_and_fail(coordinator, &second, "cannot decode", Fault::Input).await;
    let status = full_status(coordinator, &job_id).await;
    assert_eq!(status.state(), v1::JobState::CompletedWithFailures);
    assert!(status.finished_unix_ms > 0);

    assert_eq!(coordinator.retry(&job_id).await.expect("retry"), 1);
    let status = full_status(coordinator, &job_id).await;
    assert_eq!(status.state(), v1::JobState::Running);
    assert_eq!(status.finished_unix_ms, 0);
    let retried = &status.tasks[1];
    assert_eq!(retried.state(), v1::TaskState::Pending);
    assert_eq!((retried.attempts, retried.last_error.as_str()), (0, ""));
    assert_eq!(status.tasks[0].state(), v1::TaskState::Succeeded);

    assert_eq!(coordinator.dispatch_ready().await.expect("dispatch"), 1);
    let queued: Vec<String> = queued_tasks(&fixture.queue)
        .await
        .into_iter()
        .map(|t| t.task_id)
        .collect();
    assert_eq!(queued, std::slice::from_ref(&second));
    run_and_complete(coordinator, &second, &master.to_string()).await;
    let status = full_status(coordinator, &job_id).await;
    assert_eq!(status.state(), v1::JobState::Succeeded);
    assert_eq!(
        coordinator.retry(&job_id).await.expect("retry"),
        0,
        "nothing left to retry"
    );
    assert_eq!(
        coordinator.status(&job_id).await.expect("status").state(),
        v1::JobState::Succeeded
    );
    coordinator.cancel(&job_id).await.expect("cancel");
}

#[tokio::test]
async fn a_suspended_job_starts_nothing_until_resumed() {
    let fixture = fixture(CoordinatorSettings::default());
    register_worker(&fixture, "w1", 2).await;
    let job_id = job(&fixture, "paused", 0, 4).await;
    let coordinator = &fixture.coordinator;
    assert_eq!(coordinator.dispatch_ready().await.expect("dispatch"), 3);
    let status = coordinator.suspend(&job_id).await.expect("suspend");
    assert_eq!(status.state(), v1::JobState::Suspended);
    // A queued task a worker receives now goes back to pending instead of running.
    let first = format!("{job_id}.0000000");
    assert_eq!(
        coordinator
            .start_task(&first, "w1", 1)
            .await
            .expect("start"),
        StartVerdict::Drop("the job is suspended".to_owned())
    );
    let status = full_status(coordinator, &job_id).await;
    assert_eq!(status.tasks[0].state(), v1::TaskState::Pending);
    assert_eq!(coordinator.dispatch_ready().await.expect("dispatch"), 0);
    // Suspending twice is harmless; resuming lets the dispatcher go on.
    coordinator.suspend(&job_id).await.expect("suspend again");
    let status = coordinator.resume(&job_id).await.expect("resume");
    assert_eq!(status.state(), v1::JobState::Running);
    assert_eq!(coordinator.dispatch_ready().await.expect("dispatch"), 1);
    // A job that has ended cannot be suspended.
    coordinator.cancel(&job_id).await.expect("cancel");
    let error = coordinator.suspend(&job_id).await.expect_err("refused");
    assert!(
        error.to_string().contains("is cancelled, not running"),
        "{error}"
    );
}

#[tokio::test]
async fn a_new_priority_applies_to_the_next_dispatch() {
    let fixture = fixture(CoordinatorSettings::default());
    let low = job(&fixture, "low", 1, 3).await;
    let high = job(&fixture, "high", 5, 3).await;
    let status = fixture
        .coordinator
        .set_priority(&low, 9)
        .await
        .expect("priority");
    assert_eq!(status.priority, 9);
    register_worker(&fixture, "w1", 2).await;
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
        [low.clone(), low.clone(), low]
    );
    assert!(!high.is_empty());
}

/// Submits a job of the given sources (by digest).
async fn job_of_sources(fixture: &Fixture, name: &str, sources: &[String]) -> String {
    fixture
        .coordinator
        .submit(
            &v1::SubmitJobRequest {
                name: name.to_owned(),
                profile_toml: lathe_model::profile::Profile::preset("cd")
                    .expect("preset")
                    .to_toml(),
                tracks: sources
                    .iter()
                    .enumerate()
                    .map(|(index, digest)| v1::TrackSpec {
                        source_digest: digest.clone(),
                        source_name: format!("{name}-{index}.wav"),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
            "tester",
        )
        .await
        .expect("submit")
}

/// Every key under `prefix` in the store.
async fn keys_under(state: &MemoryStore, prefix: &str) -> Vec<String> {
    let page = state.page(prefix, None, 1000).await.expect("page");
    page.entries.into_iter().map(|(key, _)| key).collect()
}

#[tokio::test]
async fn delete_removes_the_job_and_the_blobs_no_other_job_uses() {
    use lathe_coordinator::blob::{BlobStore as _, Digest};
    let fixture = fixture(CoordinatorSettings::default());
    let coordinator = &fixture.coordinator;
    let shared = put_bytes(&fixture.blobs, b"shared").await.expect("blob");
    let own = put_bytes(&fixture.blobs, b"own").await.expect("blob");
    let first = job_of_sources(&fixture, "first", &[shared.to_string(), own.to_string()]).await;
    let second = job_of_sources(&fixture, "second", &[shared.to_string()]).await;

    let error = coordinator
        .delete(&first, false)
        .await
        .expect_err("running");
    assert!(error.to_string().contains("--force"), "{error}");

    let mut masters = Vec::new();
    for index in 0..2 {
        let master = put_bytes(&fixture.blobs, format!("master {index}").as_bytes())
            .await
            .expect("blob");
        run_and_complete(
            coordinator,
            &format!("{first}.{index:07}"),
            &master.to_string(),
        )
        .await;
        masters.push(master);
    }
    let deleted = coordinator.delete(&first, false).await.expect("delete");
    // Its own source and its two masters went; the source the second job uses stayed.
    assert_eq!((deleted.tasks, deleted.blobs), (2, 3));
    let contains = |digest: Digest| {
        let blobs = fixture.blobs.clone();
        async move { blobs.contains(&digest).await.expect("contains") }
    };
    assert!(contains(shared).await);
    for gone in [own, masters[0], masters[1]] {
        assert!(!contains(gone).await);
    }
    assert!(matches!(
        coordinator.status(&first).await,
        Err(lathe_coordinator::Error::JobNotFound(_))
    ));
    for prefix in ["tasks/", "by_state/", "counts/", "finished/", "jobs/"] {
        let left = keys_under(&fixture.state, &format!("{prefix}{first}")).await;
        assert!(left.is_empty(), "{prefix}: {left:?}");
    }
    assert_eq!(
        keys_under(&fixture.state, "blob_refs/").await,
        [format!("blob_refs/{shared}/{second}")]
    );

    // --force cancels a running job first; then nothing refers to the shared source.
    let deleted = coordinator.delete(&second, true).await.expect("delete");
    assert_eq!((deleted.tasks, deleted.blobs), (1, 1));
    assert!(!contains(shared).await);
    assert!(keys_under(&fixture.state, "").await.is_empty());
}

#[tokio::test]
async fn retention_deletes_old_jobs_unless_pinned_and_the_sweep_removes_unreferenced_blobs() {
    use lathe_coordinator::blob::BlobStore as _;
    let fixture = fixture(CoordinatorSettings {
        retain: Some(Duration::ZERO),
        unreferenced_blob_grace: Duration::ZERO,
        ..CoordinatorSettings::default()
    });
    let coordinator = &fixture.coordinator;
    let old = job(&fixture, "old", 0, 1).await;
    let kept = job(&fixture, "kept", 0, 1).await;
    let running = job(&fixture, "running", 0, 1).await;
    let master = put_bytes(&fixture.blobs, b"master").await.expect("blob");
    for job_id in [&old, &kept] {
        run_and_complete(
            coordinator,
            &format!("{job_id}.0000000"),
            &master.to_string(),
        )
        .await;
    }
    assert!(
        coordinator
            .set_pinned(&kept, true)
            .await
            .expect("pin")
            .pinned
    );
    let orphan = put_bytes(&fixture.blobs, b"uploaded, never submitted")
        .await
        .expect("blob");

    let (jobs, blobs) = coordinator.maintenance_pass().await.expect("maintenance");
    assert_eq!(jobs, 1, "only the unpinned finished job goes");
    assert!(blobs >= 1);
    assert!(coordinator.status(&old).await.is_err());
    assert!(coordinator.status(&kept).await.is_ok());
    assert!(coordinator.status(&running).await.is_ok());
    assert!(!fixture.blobs.contains(&orphan).await.expect("contains"));
    assert!(
        fixture.blobs.contains(&master).await.expect("contains"),
        "the pinned job's master stays"
    );
    // Every blob left is one a job refers to: the kept and running jobs' sources and the master.
    assert_eq!(fixture.blobs.page(None, 100).await.expect("page").len(), 3);

    assert!(
        !coordinator
            .set_pinned(&kept, false)
            .await
            .expect("unpin")
            .pinned
    );
    assert_eq!(
        coordinator.maintenance_pass().await.expect("maintenance").0,
        1
    );
    assert!(coordinator.status(&kept).await.is_err());
    assert!(!fixture.blobs.contains(&master).await.expect("contains"));
}

#[tokio::test]
async fn the_reconciler_publishes_queued_tasks_the_queue_lost() {
    let fixture = fixture(CoordinatorSettings::default());
    register_worker(&fixture, "w1", 1).await;
    let job_id = job(&fixture, "lost", 0, 3).await;
    let coordinator = &fixture.coordinator;
    assert_eq!(coordinator.dispatch_ready().await.expect("dispatch"), 2);
    // The messages are lost, as to a NATS server that restarted without its data.
    assert_eq!(queued_tasks(&fixture.queue).await.len(), 2);
    let done = coordinator.reconcile().await.expect("reconcile");
    assert_eq!(done.republished, 2);
    let held: Vec<String> = fixture
        .queue
        .held(None, 10)
        .await
        .expect("held")
        .into_iter()
        .map(|message| v1::Task::decode(message.payload).expect("task").task_id)
        .collect();
    assert_eq!(
        held,
        [format!("{job_id}.0000000"), format!("{job_id}.0000001")]
    );
    // What the queue holds is left alone.
    assert_eq!(
        coordinator.reconcile().await.expect("reconcile"),
        lathe_coordinator::coordinator::Reconciled::default()
    );
}

#[tokio::test]
async fn the_reconciler_queues_again_a_task_whose_worker_and_message_are_gone() {
    let fixture = fixture(CoordinatorSettings::default());
    register_worker(&fixture, "w1", 1).await;
    let job_id = job(&fixture, "orphan", 0, 1).await;
    let coordinator = &fixture.coordinator;
    let task = format!("{job_id}.0000000");
    assert_eq!(coordinator.dispatch_ready().await.expect("dispatch"), 1);
    started(coordinator, &task, "w1", 1).await;
    // While its worker is registered, a running task is its worker's (its message lost as to a
    // NATS server that restarted without its data).
    assert_eq!(queued_tasks(&fixture.queue).await.len(), 1);
    assert_eq!(
        coordinator.reconcile().await.expect("reconcile").requeued,
        0
    );
    // The worker's lease ran out and the queue lost the message: queued again, as a lost attempt.
    fixture
        .state
        .delete(&worker_key("w1"))
        .await
        .expect("lease");
    assert_eq!(
        coordinator.reconcile().await.expect("reconcile").requeued,
        1
    );
    let status = full_status(coordinator, &job_id).await;
    assert_eq!(status.tasks[0].state(), v1::TaskState::Queued);
    assert!(
        status.tasks[0].last_error.contains("was lost"),
        "{}",
        status.tasks[0].last_error
    );
    let queued = queued_tasks(&fixture.queue).await;
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].task_id, task);
    register_worker(&fixture, "w2", 1).await;
    started(coordinator, &task, "w2", 1).await;
    assert_eq!(full_status(coordinator, &job_id).await.tasks[0].attempts, 2);
}

#[tokio::test]
async fn the_reconciler_fails_a_lost_task_on_its_last_delivery_without_the_advisory() {
    let fixture = fixture(CoordinatorSettings::default());
    let max_deliver = fixture.queue.settings().max_deliver;
    register_worker(&fixture, "w1", 1).await;
    let job_id = job(&fixture, "last", 0, 1).await;
    let coordinator = &fixture.coordinator;
    let task = format!("{job_id}.0000000");
    assert_eq!(coordinator.dispatch_ready().await.expect("dispatch"), 1);
    fixture
        .state
        .delete(&worker_key("w1"))
        .await
        .expect("lease");
    // A lost attempt whose message the queue still delivers is left to the queue...
    started(coordinator, &task, "w1", max_deliver - 1).await;
    assert_eq!(
        coordinator.reconcile().await.expect("reconcile"),
        lathe_coordinator::coordinator::Reconciled::default()
    );
    // ...unless it came from the last delivery: the queue will not deliver it again.
    started(coordinator, &task, "w1", max_deliver).await;
    assert_eq!(
        coordinator.reconcile().await.expect("reconcile").exhausted,
        1
    );
    let status = full_status(coordinator, &job_id).await;
    assert_eq!(status.state(), v1::JobState::Failed);
    assert!(
        status.tasks[0].last_error.contains("last delivery"),
        "{}",
        status.tasks[0].last_error
    );
    assert!(
        fixture.queue.held(None, 10).await.expect("held").is_empty(),
        "its message was removed"
    );
}

#[tokio::test]
async fn the_reconciler_ends_an_attempt_past_the_task_time_limit_and_refuses_its_completion() {
    let limit = Duration::from_millis(300);
    let fixture = fixture(CoordinatorSettings {
        task_time_limit: limit,
        max_attempts: 2,
        ..CoordinatorSettings::default()
    });
    register_worker(&fixture, "w1", 1).await;
    let job_id = job(&fixture, "hung", 0, 1).await;
    let coordinator = &fixture.coordinator;
    let task = format!("{job_id}.0000000");
    let master = put_bytes(&fixture.blobs, b"master").await.expect("blob");
    assert_eq!(coordinator.dispatch_ready().await.expect("dispatch"), 1);
    // w1 takes the message and starts the task, then hangs: it stays registered and keeps the
    // message in flight.
    let deliveries = fixture
        .queue
        .pull(1, Duration::from_millis(50))
        .await
        .expect("pull");
    let late_token = started(coordinator, &task, "w1", deliveries[0].delivery).await;
    let late = AttemptCall {
        task_id: &task,
        worker_id: "w1",
        token: &late_token,
    };
    assert_eq!(
        coordinator.reconcile().await.expect("reconcile").timed_out,
        0,
        "within the limit"
    );

    tokio::time::sleep(limit + Duration::from_millis(100)).await;
    assert_eq!(
        coordinator.reconcile().await.expect("reconcile").timed_out,
        1
    );
    let status = full_status(coordinator, &job_id).await;
    assert_eq!(status.tasks[0].state(), v1::TaskState::Queued);
    assert_eq!(status.tasks[0].attempts, 1, "the ended attempt counts");
    assert!(
        status.tasks[0]
            .last_error
            .contains("took longer than the task time limit of 0.3 s"),
        "{}",
        status.tasks[0].last_error
    );
    // The hung attempt's message is gone, and the task is on a new one.
    let held = fixture.queue.held(None, 10).await.expect("held");
    assert_eq!(held.len(), 1, "one message: the new one");
    assert_eq!(
        v1::Task::decode(held[0].payload.clone())
            .expect("task")
            .task_id,
        task
    );
    // The late worker is told to stop, and its completion is refused.
    assert!(
        coordinator
            .progress(late, "render", 0.9)
            .await
            .expect("progress")
    );
    let refused = coordinator
        .complete_task(late, &master.to_string(), r#"{"qc":{"passed":true}}"#, &[])
        .await
        .expect_err("the ended attempt's completion");
    assert!(matches!(refused, Error::PermissionDenied(_)), "{refused:?}");
    // Another worker's attempt runs it to the end.
    register_worker(&fixture, "w2", 1).await;
    let token = started(coordinator, &task, "w2", 1).await;
    coordinator
        .complete_task(
            AttemptCall {
                task_id: &task,
                worker_id: "w2",
                token: &token,
            },
            &master.to_string(),
            r#"{"qc":{"passed":true}}"#,
            &[],
        )
        .await
        .expect("complete");
    let status = full_status(coordinator, &job_id).await;
    assert_eq!(status.state(), v1::JobState::Succeeded);
    assert_eq!(status.tasks[0].attempts, 2);
}

#[tokio::test]
async fn an_attempt_past_the_task_time_limit_on_the_last_attempt_fails_the_task() {
    let limit = Duration::from_millis(100);
    let fixture = fixture(CoordinatorSettings {
        task_time_limit: limit,
        max_attempts: 1,
        ..CoordinatorSettings::default()
    });
    register_worker(&fixture, "w1", 1).await;
    let job_id = job(&fixture, "hung", 0, 1).await;
    let coordinator = &fixture.coordinator;
    let task = format!("{job_id}.0000000");
    assert_eq!(coordinator.dispatch_ready().await.expect("dispatch"), 1);
    started(coordinator, &task, "w1", 1).await;
    tokio::time::sleep(limit + Duration::from_millis(100)).await;
    assert_eq!(
        coordinator.reconcile().await.expect("reconcile").timed_out,
        1
    );
    let status = full_status(coordinator, &job_id).await;
    assert_eq!(status.state(), v1::JobState::Failed);
    assert!(
        status.tasks[0].last_error.contains("task time limit"),
        "{}",
        status.tasks[0].last_error
    );
    assert!(
        fixture.queue.held(None, 10).await.expect("held").is_empty(),
        "nothing left on the queue"
    );
}

#[tokio::test]
async fn a_failure_or_hand_back_on_the_last_delivery_is_final() {
    let settings = CoordinatorSettings {
        max_attempts: 100,
        blocklist_after: 1,
        ..CoordinatorSettings::default()
    };
    let fixture = fixture(settings);
    let max_deliver = fixture.queue.settings().max_deliver;
    register_worker(&fixture, "w1", 1).await;
    register_worker(&fixture, "w2", 1).await;
    let job_id = job(&fixture, "limit", 0, 2).await;
    let coordinator = &fixture.coordinator;
    let (first, second) = (format!("{job_id}.0000000"), format!("{job_id}.0000001"));
    let token = started(coordinator, &first, "w1", max_deliver).await;
    let final_failure = coordinator
        .fail_task(
            AttemptCall {
                task_id: &first,
                worker_id: "w1",
                token: &token,
            },
            "out of memory",
            Fault::Worker,
        )
        .await
        .expect("fail");
    assert!(final_failure, "no redelivery would follow");
    // w1 is now blocklisted; its hand-back of the last delivery fails the task at once.
    let verdict = coordinator
        .start_task(&second, "w1", max_deliver)
        .await
        .expect("start");
    assert!(matches!(verdict, StartVerdict::Drop(_)), "{verdict:?}");
    let status = full_status(coordinator, &job_id).await;
    assert_eq!(status.counts.expect("counts").failed, 2);
}

#[tokio::test]
async fn a_watch_sends_the_whole_status_then_only_what_changed() {
    use lathe_coordinator::client::apply_delta;
    let fixture = fixture(CoordinatorSettings::default());
    register_worker(&fixture, "w1", 2).await;
    let job_id = job(&fixture, "watched", 0, 3).await;
    let coordinator = &fixture.coordinator;
    let master = put_bytes(&fixture.blobs, b"master").await.expect("blob");
    coordinator.dispatch_ready().await.expect("dispatch");
    let (first, second) = (format!("{job_id}.0000000"), format!("{job_id}.0000001"));
    let token = started(coordinator, &first, "w1", 1).await;
    started(coordinator, &second, "w1", 1).await;
    let mut watch = coordinator.watch(&job_id);
    let mut whole = watch.next().await.expect("message").expect("status");
    assert!(!whole.delta);
    assert_eq!(whole.tasks.len(), 2, "the running tasks");

    // Progress alone: a delta naming only the task that moved, with its phase and fraction.
    coordinator
        .progress(
            AttemptCall {
                task_id: &first,
                worker_id: "w1",
                token: &token,
            },
            "render",
            0.25,
        )
        .await
        .expect("progress");
    coordinator
        .progress(
            AttemptCall {
                task_id: &first,
                worker_id: "w1",
                token: &token,
            },
            "render",
            0.5,
        )
        .await
        .expect("progress");
    let delta = watch.next().await.expect("message").expect("delta");
    assert!(delta.delta);
    assert_eq!(delta.tasks.len(), 1);
    assert!(delta.tasks[0].progress_only);
    assert_eq!(
        (delta.tasks[0].task_id.as_str(), delta.tasks[0].fraction),
        (first.as_str(), 0.5)
    );
    apply_delta(&mut whole, delta);
    assert_eq!(whole.tasks.len(), 2);
    assert_eq!(whole.tasks[0].fraction, 0.5);
    assert_eq!(
        whole.tasks[0].source_name, "watched-0.wav",
        "kept from the whole status"
    );

    // A task that ends leaves the running set; the counts move with it.
    coordinator
        .complete_task(
            AttemptCall {
                task_id: &first,
                worker_id: "w1",
                token: &token,
            },
            &master.to_string(),
            "{}",
            &[],
        )
        .await
        .expect("complete");
    let delta = watch.next().await.expect("message").expect("delta");
    assert!(delta.delta);
    assert!(
        delta.tasks.iter().all(|task| task.task_id == first),
        "{:?}",
        delta.tasks
    );
    assert_eq!(delta.counts.expect("counts").succeeded, 1);
    apply_delta(&mut whole, delta);
    let running: Vec<&str> = whole.tasks.iter().map(|t| t.task_id.as_str()).collect();
    assert_eq!(running, [second.as_str()]);
    assert_eq!(whole.counts.expect("counts").running, 1);

    // The message in which the job ends is the last.
    coordinator.cancel(&job_id).await.expect("cancel");
    let mut last = None;
    while let Some(message) = watch.next().await {
        last = Some(message.expect("status"));
    }
    assert_eq!(
        last.expect("a last message").state(),
        v1::JobState::Cancelled
    );
}
