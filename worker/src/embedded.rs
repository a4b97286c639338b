//! The farm in one process: a coordinator and N worker loops on the in-process queue, state store and
//! blob store, talking gRPC over loopback. It runs the same coordinator and worker code as a real
//! farm and needs no servers; `lathe master` runs on it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lathe_coordinator::blob::{BlobStore, DiskBlobStore};
use lathe_coordinator::client::FarmClient;
use lathe_coordinator::queue::MemoryQueue;
use lathe_coordinator::state::MemoryStore;
use lathe_coordinator::{Coordinator, CoordinatorSettings};
use lathe_engine::profile::Profile;
use lathe_proto::v1;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::worker::{WorkerSettings, run_worker};

/// A running in-process farm; [`stop`](EmbeddedFarm::stop) shuts it down.
#[derive(Debug)]
pub struct EmbeddedFarm {
    /// A client of its coordinator.
    pub client: FarmClient,
    shutdown: watch::Sender<bool>,
    handles: Vec<JoinHandle<()>>,
}

async fn until(mut receiver: watch::Receiver<bool>) {
    let _ = receiver.wait_for(|stop| *stop).await;
}

impl EmbeddedFarm {
    /// Starts a coordinator and `workers` worker loops of one slot each; scratch files and the
    /// blobs (sources and masters, on disk so that memory does not grow with the catalogue) go under
    /// `scratch`.
    pub async fn start(workers: usize, scratch: &Path) -> Result<Self> {
        let blobs = DiskBlobStore::open(&scratch.join("blobs"))?;
        Self::start_with_blobs(workers, scratch, Arc::new(blobs)).await
    }

    /// [`start`](Self::start) on the given blob store (the in-memory one for measurements that leave
    /// the disk out).
    pub async fn start_with_blobs(
        workers: usize,
        scratch: &Path,
        blobs: Arc<dyn BlobStore>,
    ) -> Result<Self> {
        let settings = CoordinatorSettings {
            // The engine is deterministic: a second attempt on the same machine only repeats the
            // failure, so the embedded farm tries each track once, and never blocklists one of its
            // identical worker loops (which could leave a job with nobody to run it).
            max_attempts: 1,
            blocklist_after: u32::MAX,
            dispatch_interval: Duration::from_millis(100),
            ..CoordinatorSettings::default()
        };
        let queue = Arc::new(MemoryQueue::new(
            settings.queue_settings(Duration::from_secs(30)),
        ));
        let state = Arc::new(MemoryStore::new());
        let coordinator = Coordinator::new(queue.clone(), state.clone(), blobs, settings);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|source| Error::Io {
                path: PathBuf::from("127.0.0.1:0"),
                source,
            })?;
        let address = listener.local_addr().map_err(|source| Error::Io {
            path: PathBuf::from("127.0.0.1:0"),
            source,
        })?;
        let url = format!("http://{address}");
        let (shutdown, receiver) = watch::channel(false);
        let mut handles = Vec::new();
        {
            let coordinator = coordinator.clone();
            let stop = until(receiver.clone());
            handles.push(tokio::spawn(async move {
                if let Err(error) =
                    lathe_coordinator::grpc::serve(&coordinator, listener, stop).await
                {
                    tracing::error!(%error, "embedded coordinator server stopped");
                }
            }));
        }
        {
            let coordinator = coordinator.clone();
            let stop = until(receiver.clone());
            handles.push(tokio::spawn(async move {
                if let Err(error) = coordinator.run(stop).await {
                    tracing::error!(%error, "embedded coordinator stopped");
                }
            }));
        }
        for index in 0..workers.max(1) {
            let mut settings = WorkerSettings::new(&url);
            settings.id = format!("local-{}", index + 1);
            settings.scratch = scratch.to_path_buf();
            settings.poll_wait = Duration::from_millis(200);
            settings.progress_interval = Duration::from_millis(200);
            let queue = queue.clone();
            let state = state.clone();
            let stop = until(receiver.clone());
            handles.push(tokio::spawn(async move {
                if let Err(error) = run_worker(settings, queue, state, stop).await {
                    tracing::error!(%error, "embedded worker stopped");
                }
            }));
        }
        Ok(Self {
            client: FarmClient::lazy(&url)?,
            shutdown,
            handles,
        })
    }

    /// Stops the workers and the coordinator and waits for them.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for handle in self.handles {
            let _ = handle.await;
        }
    }
}

/// Uploads `sources`, submits them as one job with `profile` and follows it to the end; returns the
/// job's final status.
pub async fn submit_and_wait(
    client: &FarmClient,
    sources: &[PathBuf],
    profile: &Profile,
    name: &str,
    priority: i32,
) -> Result<v1::JobStatus> {
    let files: Vec<&Path> = sources.iter().map(PathBuf::as_path).collect();
    let job_id = client
        .submit_sources(name, priority, profile.to_toml(), &files)
        .await?;
    wait_for_job(client, &job_id).await
}

/// Follows a job until it ends; returns its final status.
pub async fn wait_for_job(client: &FarmClient, job_id: &str) -> Result<v1::JobStatus> {
    let mut updates = client
        .jobs
        .clone()
        .watch(v1::JobRef {
            job_id: job_id.to_owned(),
        })
        .await?
        .into_inner();
    let mut last = None;
    while let Some(status) = updates.message().await? {
        let ended = status.state() != v1::JobState::Running;
        last = Some(status);
        if ended {
            break;
        }
    }
    match last {
        Some(status) if status.state() != v1::JobState::Running => Ok(status),
        _ => client
            .jobs
            .clone()
            .get_job(v1::JobRef {
                job_id: job_id.to_owned(),
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(Error::from),
    }
}

/// Where a task's master goes under `out`: its output name, a relative path (the coordinator refuses
/// any other, and so does this, in case the coordinator is not ours).
pub fn output_path(out: &Path, task: &v1::TaskStatus) -> Result<PathBuf> {
    let name = Path::new(&task.output_name);
    let relative = name
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !relative || name.file_name().is_none() {
        return Err(Error::Farm(lathe_coordinator::Error::InvalidRequest(
            format!(
                "task {}: output name {:?} is not inside the output folder",
                task.task_id, task.output_name
            ),
        )));
    }
    Ok(out.join(name))
}

/// Downloads every succeeded task's master into `out` under its output name (folders created), with
/// its report beside it as `<stem>.report.json`; returns the paths written.
pub async fn fetch_outputs(
    client: &FarmClient,
    status: &v1::JobStatus,
    out: &Path,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).map_err(|source| Error::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    for task in &status.tasks {
        if task.state() != v1::TaskState::Succeeded {
            continue;
        }
        let path = output_path(out, task)?;
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder).map_err(|source| Error::Io {
                path: folder.to_path_buf(),
                source,
            })?;
        }
        client.download(&task.output_digest, &path).await?;
        if !task.report_json.is_empty() {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let report = path.with_file_name(format!("{stem}.report.json"));
            lathe_engine::render::write_atomically(&report, task.report_json.as_bytes())?;
        }
        written.push(path);
    }
    Ok(written)
}
