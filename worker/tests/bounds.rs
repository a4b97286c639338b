//! A worker's own bounds, on an in-process coordinator (real gRPC on loopback, the in-memory
//! queue, state and blob stores): a render past the task time limit fails its attempts with the
//! limit in the error, and a worker without scratch room for a task leaves it, unstarted, to a
//! worker that has the room.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lathe_coordinator::auth::{Role, create_token};
use lathe_coordinator::blob::MemoryBlobStore;
use lathe_coordinator::client::{Access, FarmClient};
use lathe_coordinator::queue::MemoryQueue;
use lathe_coordinator::state::MemoryStore;
use lathe_coordinator::tls::Transport;
use lathe_coordinator::{Coordinator, CoordinatorSettings};
use lathe_model::profile::Profile;
use lathe_proto::v1;
use lathe_synth::{Style, TrackRecipe, write_wav};
use lathe_worker::WorkerSettings;
use lathe_worker::embedded::wait_for_job;
use lathe_worker::observe::WorkerObserver;
use lathe_worker::run_worker;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A coordinator serving on loopback, and the worker loops a test starts on it.
struct Farm {
    client: FarmClient,
    url: String,
    queue: Arc<MemoryQueue>,
    scratch: tempfile::TempDir,
    stop: watch::Sender<bool>,
    handles: Vec<JoinHandle<()>>,
}

async fn until(mut receiver: watch::Receiver<bool>) {
    let _ = receiver.wait_for(|stop| *stop).await;
}

impl Farm {
    async fn start(settings: CoordinatorSettings) -> Self {
        let queue = Arc::new(MemoryQueue::new(
            settings.queue_settings(Duration::from_secs(30)),
        ));
        let state = Arc::new(MemoryStore::new());
        let (_, token) = create_token(state.as_ref(), "test", Role::Admin)
            .await
            .expect("token");
        let coordinator = Coordinator::new(
            queue.clone(),
            state,
            Arc::new(MemoryBlobStore::new()),
            settings,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let (stop, stopped) = watch::channel(false);
        let mut handles = Vec::new();
        {
            let coordinator = coordinator.clone();
            let stopped = until(stopped.clone());
            handles.push(tokio::spawn(async move {
                lathe_coordinator::grpc::serve(
                    &coordinator,
                    listener,
                    &Transport::InsecureLoopback,
                    stopped,
                )
                .await
                .expect("serve");
            }));
        }
        {
            let stopped = until(stopped);
            handles.push(tokio::spawn(async move {
                coordinator.run(stopped).await.expect("coordinator");
            }));
        }
        Self {
            client: FarmClient::lazy(&Access::insecure(&url, Some(token))).expect("client"),
            url,
            queue,
            scratch: tempfile::tempdir().expect("scratch"),
            stop,
            handles,
        }
    }

    /// Settings of a worker `id` that checks no scratch room (tests that check set their own).
    fn worker_settings(&self, id: &str) -> WorkerSettings {
        let mut settings = WorkerSettings::new(Access::insecure(&self.url, None));
        settings.id = id.to_owned();
        settings.scratch = self.scratch.path().join(id);
        settings.poll_wait = Duration::from_millis(100);
        settings.progress_interval = Duration::from_millis(100);
        settings.retry_delay = Duration::from_millis(100);
        settings.scratch_free = None;
        settings
    }

    /// Starts a worker loop with `settings`, reporting to `observer`.
    fn start_worker(&mut self, settings: WorkerSettings, observer: Arc<WorkerObserver>) {
        let queue = self.queue.clone();
        let stopped = until(self.stop.subscribe());
        self.handles.push(tokio::spawn(async move {
            run_worker(settings, queue, observer, stopped)
                .await
                .expect("worker");
        }));
    }

    /// Uploads `source` and submits it as a job of one track; returns the job's id.
    async fn submit(&self, source: &Path) -> String {
        let profile = Profile::preset("cd").expect("preset");
        self.client
            .submit_sources("bounds", 0, profile.to_toml(), &[source])
            .await
            .expect("submit")
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        for handle in self.handles {
            handle.await.expect("join");
        }
    }
}

/// A short synthetic track written under `folder`.
fn source(folder: &Path) -> PathBuf {
    let path = folder.join("track.wav");
    let recipe = TrackRecipe {
        duration_s: 1.0,
        ..TrackRecipe::new(Style::Pop, 7)
    };
    write_wav(&recipe, &path, 16).expect("write");
    path
}

fn settings() -> CoordinatorSettings {
    CoordinatorSettings {
        max_attempts: 2,
        blocklist_after: u32::MAX,
        dispatch_interval: Duration::from_millis(100),
        ..CoordinatorSettings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_render_past_the_task_time_limit_fails_its_attempts_with_the_limit() {
    let mut farm = Farm::start(settings()).await;
    let mut worker = farm.worker_settings("slow");
    // Every render is past a limit of zero at the engine's first progress call, however fast
    // the machine: no wall-clock race.
    worker.task_time_limit = Duration::ZERO;
    farm.start_worker(worker, Arc::new(WorkerObserver::new()));
    let job_id = farm.submit(&source(farm.scratch.path())).await;
    let status = wait_for_job(&farm.client, &job_id).await.expect("job");
    farm.stop().await;

    assert_eq!(status.state(), v1::JobState::Failed);
    let task = &status.tasks[0];
    assert_eq!(task.state(), v1::TaskState::Failed);
    assert_eq!(
        task.last_error, "render took longer than the task time limit of 0 s",
        "the worker's error, as FailTask reported it"
    );
    assert_eq!(
        task.attempts, 2,
        "the worker's fault, not the input's: retried until its attempts were used up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_scratch_room_leaves_the_task_unstarted_to_one_with_room() {
    let mut farm = Farm::start(settings()).await;
    let source = source(farm.scratch.path());
    let source_bytes = std::fs::metadata(&source).expect("source").len();

    let full_observer = Arc::new(WorkerObserver::new());
    let mut full = farm.worker_settings("full");
    full.scratch_free = Some(|_| Ok(0));
    farm.start_worker(full, Arc::clone(&full_observer));
    let job_id = farm.submit(&source).await;

    // The full worker takes the message, finds no room and hands it back before `StartTask`.
    let reason = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(reason) = full_observer.not_ready().filter(|r| r.contains("scratch")) {
                return reason;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the full worker refuses the task");
    assert!(reason.starts_with("scratch full: 0 bytes free"), "{reason}");
    assert!(
        reason.contains(&format!("{} needed", 5 * source_bytes)),
        "the source's size came with the task, and its masters are estimated at 4 times it: \
         {reason}"
    );
    assert!(
        full_observer
            .encode()
            .contains("lathe_worker_tasks_total{outcome=\"no_room\"}")
    );
    let waiting = farm.client.job_with_tasks(&job_id).await.expect("status");
    assert_eq!(waiting.tasks[0].attempts, 0, "no attempt was counted");
    assert_eq!(waiting.tasks[0].state(), v1::TaskState::Queued);

    let mut roomy = farm.worker_settings("roomy");
    roomy.scratch_free = Some(|_| Ok(u64::MAX));
    farm.start_worker(roomy, Arc::new(WorkerObserver::new()));
    let status = wait_for_job(&farm.client, &job_id).await.expect("job");
    farm.stop().await;

    assert_eq!(status.state(), v1::JobState::Succeeded);
    assert_eq!(status.tasks[0].worker_id, "roomy");
    assert_eq!(status.tasks[0].attempts, 1);
}
