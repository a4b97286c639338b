//! Jobs of thousands of tasks through the coordinator on a real etcd and a real NATS JetStream:
//! the dispatcher, the queue and the state at a size where a read of "every task" would show, and
//! fair share and priority between jobs at that size. Workers are simulated in process (they
//! pull from JetStream, start the task, complete it with a stored master and acknowledge), so the
//! tests measure the farm's machinery, not the engine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lathe_coordinator::blob::{Digest, MemoryBlobStore, put_bytes};
use lathe_coordinator::coordinator::{AttemptCall, StartVerdict};
use lathe_coordinator::queue::{JetStreamQueue, WorkQueue};
use lathe_coordinator::record::{JobState, TaskState, WorkerRecord, encode, worker_key};
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
            if let StartVerdict::Run(attempt) = verdict {
                let token = attempt.token;
                coordinator
                    .complete_task(
                        AttemptCall {
                            task_id: &task.task_id,
                            worker_id: "w1",
                            token: &token,
                        },
                        &master,
                        "{}",
                        &[],
                    )
                    .await
                    .expect("complete");
            }
            delivery.ack().await.expect("ack");
        }
    }
}

/// A coordinator on a real nats-server and etcd (running while this lives), with one registered
/// worker `w1` and a tiny source and master in its blob store.
struct RealFarm {
    coordinator: Coordinator,
    queue: Arc<dyn WorkQueue>,
    source: Digest,
    master: Digest,
    _servers: (NatsServer, EtcdServer),
}

impl RealFarm {
    /// Starts one whose worker has `slots` slots, or returns `None` when nats-server or etcd is
    /// not installed.
    async fn start(slots: u32) -> Option<Self> {
        let (Some(nats), Some(etcd)) = (NatsServer::start(), EtcdServer::start()) else {
            return None;
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
            slots,
            current_tasks: Vec::new(),
            heartbeat_unix_ms: 0,
        };
        state
            .put(&worker_key("w1"), encode(&worker).expect("encode"))
            .await
            .expect("register");
        Some(Self {
            coordinator,
            queue,
            source: put_bytes(&blobs, b"a tiny source").await.expect("blob"),
            master: put_bytes(&blobs, b"a tiny master").await.expect("blob"),
            _servers: (nats, etcd),
        })
    }

    /// Submits a job of `tasks` tracks, every one the tiny source.
    async fn submit(&self, name: &str, priority: i32, tasks: usize) -> String {
        self.coordinator
            .submit(
                &v1::SubmitJobRequest {
                    name: name.to_owned(),
                    priority,
                    profile_toml: lathe_model::profile::Profile::preset("cd")
                        .expect("preset")
                        .to_toml(),
                    tracks: (0..tasks)
                        .map(|index| v1::TrackSpec {
                            source_digest: self.source.to_string(),
                            source_name: format!("{index:05}.wav"),
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

    /// Starts the coordinator's loops and `slots` simulated worker slots.
    fn run(&self, slots: u32) -> Running {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let coordinator = self.coordinator.clone();
        let loops = tokio::spawn(async move {
            coordinator
                .run(async move {
                    let _ = stopped.await;
                })
                .await
        });
        let slots = (0..slots)
            .map(|_| {
                tokio::spawn(worker_slot(
                    self.coordinator.clone(),
                    self.queue.clone(),
                    self.master.to_string(),
                ))
            })
            .collect();
        Running { stop, loops, slots }
    }
}

/// The coordinator's loops and the worker slots, running.
struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    loops: tokio::task::JoinHandle<lathe_coordinator::Result<()>>,
    slots: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops the slots (wherever they are in a task), then the coordinator's loops.
    async fn stop(self) {
        for slot in self.slots {
            slot.abort();
            let _ = slot.await;
        }
        let _ = self.stop.send(());
        self.loops.await.expect("join").expect("run");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_of_5000_tasks_completes_on_real_servers_with_right_counts_and_pages() {
    let Some(farm) = RealFarm::start(SLOTS).await else {
        return;
    };
    let coordinator = &farm.coordinator;
    let job_id = farm.submit("five thousand", 0, TASKS).await;
    let running = farm.run(SLOTS);
    let mut watch = coordinator.watch(&job_id);
    let mut last = None;
    let mut largest_message = 0;
    while let Some(message) = watch.next().await {
        let message = message.expect("status");
        largest_message = largest_message.max(message.encoded_len());
        last = Some(message);
    }
    running.stop().await;

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

/// Jobs of the fair-share test.
const SHARED_JOBS: usize = 10;
/// Tasks of each.
const SHARED_TASKS: usize = 10_000;
/// Worker slots of the fair-share test. With the dispatcher's one task queued ahead
/// (`CoordinatorSettings::queue_ahead`), the queue and the slots hold 20 tasks: two a job.
const SHARED_SLOTS: u32 = 19;
/// Tasks in flight at most: the slots and the queue's one ahead.
const IN_FLIGHT: u32 = SHARED_SLOTS + 1;
/// Tasks succeeded, over all jobs, when fair share is checked.
const SHARED_SUCCEEDED: u32 = 2_000;
/// Tasks of the higher-priority job.
const URGENT_TASKS: usize = 200;

/// Tasks a job has had started (queued, running or succeeded), from its counts.
fn started(counts: &v1::TaskCounts) -> u32 {
    counts.queued + counts.running + counts.succeeded
}

/// The counts of each job.
async fn counts_of(coordinator: &Coordinator, jobs: &[String]) -> Vec<v1::TaskCounts> {
    let mut counts = Vec::with_capacity(jobs.len());
    for job in jobs {
        let status = coordinator.status(job).await.expect("status");
        counts.push(status.counts.expect("counts"));
    }
    counts
}

/// How many tasks of `jobs` in `state` started running between `from` and `to` (milliseconds
/// since the Unix epoch, both included).
async fn started_between(
    coordinator: &Coordinator,
    jobs: &[String],
    state: TaskState,
    (from, to): (u64, u64),
) -> usize {
    let mut count = 0;
    for job in jobs {
        let mut after: Option<String> = None;
        loop {
            let page = coordinator
                .task_page(job, Some(state), after.as_deref(), 1_000)
                .await
                .expect("page");
            count += page
                .tasks
                .iter()
                .filter(|task| (from..=to).contains(&task.started_unix_ms))
                .count();
            match page.next_after {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    count
}

/// Ten jobs of 10,000 tasks submitted at once, of one priority, share the slots: by the time
/// 2,000 tasks have succeeded, each has had about a tenth of them started. A job of a higher
/// priority submitted then goes ahead of all ten. Cancelling the ten at once finishes every task of
/// theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_jobs_of_10000_tasks_share_the_slots_and_a_higher_priority_goes_first() {
    let Some(farm) = RealFarm::start(SHARED_SLOTS).await else {
        return;
    };
    let coordinator = &farm.coordinator;
    let began = Instant::now();
    // All ten stored before any runs, so each has the whole run to get its share.
    let names: Vec<String> = (0..SHARED_JOBS)
        .map(|number| format!("shared {number}"))
        .collect();
    let jobs: Vec<String> =
        futures::future::join_all(names.iter().map(|name| farm.submit(name, 0, SHARED_TASKS)))
            .await;
    let submit_s = began.elapsed().as_secs_f64();
    for (job, counts) in jobs.iter().zip(counts_of(coordinator, &jobs).await) {
        assert_eq!(counts.pending as usize, SHARED_TASKS, "{job}: {counts:?}");
        assert_eq!(counts.total() as usize, SHARED_TASKS, "{job}: {counts:?}");
        let page = coordinator
            .task_page(job, None, None, 1_000)
            .await
            .expect("page");
        assert_eq!(page.tasks.len(), 1_000);
        let next = coordinator
            .task_page(job, None, page.next_after.as_deref(), 1_000)
            .await
            .expect("next page");
        assert_eq!(next.tasks.first().map(|task| task.index), Some(1_000));
    }

    let running = farm.run(SHARED_SLOTS);
    let began = Instant::now();
    let shares = loop {
        let counts = counts_of(coordinator, &jobs).await;
        if counts.iter().map(|c| c.succeeded).sum::<u32>() >= SHARED_SUCCEEDED {
            break counts;
        }
        assert!(
            began.elapsed() < Duration::from_secs(180),
            "{SHARED_SUCCEEDED} tasks did not succeed in 3 minutes: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let share_s = began.elapsed().as_secs_f64();
    // The dispatcher gives the next task to the job with the fewest tasks queued or running (then
    // the oldest), so with room for two a job each keeps two in flight and starts a tenth of the
    // tasks, give or take a few in the lag of a dispatch pass. One that served the oldest job
    // first would start some 2,000 of the first job's and none of the others'; one that counted
    // only the queued tasks would serve the oldest job almost alone, as the slots take each task
    // off the queue at once. Half to one and a half times the mean leaves room for the lag and
    // none for either.
    let started_per_job: Vec<u32> = shares.iter().map(started).collect();
    let mean = f64::from(started_per_job.iter().sum::<u32>()) / SHARED_JOBS as f64;
    for (job, &count) in jobs.iter().zip(&started_per_job) {
        assert!(
            (0.5 * mean..=1.5 * mean).contains(&f64::from(count)),
            "job {job} had {count} tasks started against a mean of {mean:.0}: {started_per_job:?}"
        );
    }
    for (job, counts) in jobs.iter().zip(&shares) {
        assert_eq!(counts.total() as usize, SHARED_TASKS, "{job}: {counts:?}");
    }

    // A job of a higher priority gets the whole room while it has tasks pending: of the ten's,
    // only those already queued when it arrived (at most the room), those a dispatch pass begun
    // before it queues anyway (at most the room again) and those the slots pull beside its last
    // tasks (at most the slots) start while it runs. At the same priority it would get a share
    // like any other job, and the ten would start some ten tasks for each of its own.
    let urgent = farm.submit("urgent", 5, URGENT_TASKS).await;
    let began = Instant::now();
    let finished = loop {
        let status = coordinator.status(&urgent).await.expect("status");
        if status.state() == v1::JobState::Succeeded {
            break status.finished_unix_ms;
        }
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "the urgent job did not finish in a minute: {:?}",
            status.counts
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let urgent_s = began.elapsed().as_secs_f64();
    let urgent_tasks = coordinator
        .task_page(&urgent, None, None, 1_000)
        .await
        .expect("page");
    assert_eq!(urgent_tasks.tasks.len(), URGENT_TASKS);
    let first_start = urgent_tasks
        .tasks
        .iter()
        .map(|task| task.started_unix_ms)
        .min()
        .expect("a task");
    let window = (first_start, finished);
    let beside = started_between(coordinator, &jobs, TaskState::Succeeded, window).await
        + started_between(coordinator, &jobs, TaskState::Running, window).await;
    assert!(
        beside <= 3 * IN_FLIGHT as usize,
        "{beside} tasks of the ten started while the urgent job ran ({URGENT_TASKS} tasks)"
    );

    // Cancelled with nothing moving: the slots stopped wherever they were, some tasks running.
    // All ten at once: a cancel moves a job's tasks in batched transactions.
    running.stop().await;
    let began = Instant::now();
    let states = futures::future::join_all(jobs.iter().map(|job| coordinator.cancel(job))).await;
    let cancel_s = began.elapsed().as_secs_f64();
    let mut cancelled_tasks = 0;
    for (job, state) in jobs.iter().zip(states) {
        assert_eq!(state.expect("cancel"), JobState::Cancelled);
        let status = coordinator.status(job).await.expect("status");
        assert_eq!(status.state(), v1::JobState::Cancelled);
        let counts = status.counts.expect("counts");
        assert_eq!(
            counts.pending + counts.queued + counts.running,
            0,
            "{counts:?}"
        );
        assert_eq!(
            counts.cancelled + counts.succeeded,
            SHARED_TASKS as u32,
            "{counts:?}"
        );
        cancelled_tasks += counts.cancelled;
        let page = coordinator
            .task_page(job, Some(TaskState::Cancelled), None, 1_000)
            .await
            .expect("page");
        assert_eq!(page.tasks.len(), 1_000);
        assert!(
            page.tasks
                .iter()
                .all(|task| task.state == TaskState::Cancelled)
        );
    }
    eprintln!(
        "{SHARED_JOBS} jobs x {SHARED_TASKS} tasks: submitted in {submit_s:.1} s; \
         {SHARED_SUCCEEDED} succeeded in {share_s:.1} s, started per job {started_per_job:?}; \
         urgent job of {URGENT_TASKS} in {urgent_s:.1} s with {beside} of the ten's started beside it; \
         the ten jobs' {cancelled_tasks} unfinished tasks cancelled in {cancel_s:.1} s"
    );
}
