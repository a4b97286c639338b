//! The farm in one process: a coordinator and N worker loops on the in-process queue, state store and
//! blob store, talking gRPC over loopback. It runs the same coordinator and worker code as a real
//! farm and needs no servers; `lathe master` runs on it. Also the client side of a delivery (a
//! catalogue's task graph) that `lathe submit`, `lathe fetch` and `lathe master MANIFEST` share:
//! [`submit_delivery`] and [`fetch_delivery`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lathe_coordinator::auth::{Role, create_token};
use lathe_coordinator::blob::{BlobStore, Digest};
use lathe_coordinator::client::{Access, FarmClient, digest_file};
use lathe_coordinator::local_blobs::LocalBlobStore;
use lathe_coordinator::queue::MemoryQueue;
use lathe_coordinator::state::MemoryStore;
use lathe_coordinator::tls::Transport;
use lathe_coordinator::{Coordinator, CoordinatorSettings};
use lathe_engine::album::deliver::DeliveryManifest;
use lathe_engine::album::delivery_writer::write_delivery;
use lathe_model::catalog::Catalogue;
use lathe_model::delivery::outcome::TaskOutcome;
use lathe_model::delivery::plan::DeliveryPlan;
use lathe_model::profile::Profile;
use lathe_proto::v1;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::observe::WorkerObserver;
use crate::settings::WorkerSettings;
use crate::worker::run_worker;

/// A running in-process farm; [`stop`](EmbeddedFarm::stop) shuts it down.
#[derive(Debug)]
pub struct EmbeddedFarm {
    /// A client of its coordinator.
    pub client: FarmClient,
    /// Its blob store, shared with its workers, when it keeps blobs on this machine's disk
    /// ([`start`](Self::start)): sources are adopted where they lie and masters delivered from
    /// it by an atomic rename, without a copy through gRPC.
    pub local_blobs: Option<Arc<LocalBlobStore>>,
    shutdown: watch::Sender<bool>,
    handles: Vec<JoinHandle<()>>,
}

async fn until(mut receiver: watch::Receiver<bool>) {
    let _ = receiver.wait_for(|stop| *stop).await;
}

impl EmbeddedFarm {
    /// Starts a coordinator and `workers` worker loops of one slot each, sharing a
    /// [`LocalBlobStore`] under `scratch` (on disk, so that memory does not grow with the
    /// catalogue): sources adopted where they lie ([`local_blobs`](Self::local_blobs)), masters
    /// moved into it from the workers' scratch files.
    pub async fn start(workers: usize, scratch: &Path) -> Result<Self> {
        let blobs = Arc::new(LocalBlobStore::open(&scratch.join("blobs"))?);
        Self::start_with(workers, scratch, blobs.clone(), Some(blobs)).await
    }

    /// [`start`](Self::start) on the given blob store (the in-memory one for measurements that leave
    /// the disk out).
    pub async fn start_with_blobs(
        workers: usize,
        scratch: &Path,
        blobs: Arc<dyn BlobStore>,
    ) -> Result<Self> {
        Self::start_with(workers, scratch, blobs, None).await
    }

    async fn start_with(
        workers: usize,
        scratch: &Path,
        blobs: Arc<dyn BlobStore>,
        local_blobs: Option<Arc<LocalBlobStore>>,
    ) -> Result<Self> {
        let settings = CoordinatorSettings {
            // The engine is deterministic: a second attempt on the same machine only repeats the
            // failure, so the embedded farm tries each track once, and never blocklists one of its
            // identical worker loops (which could leave a job with nobody to run it).
            max_attempts: 1,
            blocklist_after: u32::MAX,
            dispatch_interval: Duration::from_millis(100),
            // The user's own command on the user's own machine: a long source on a slow machine
            // takes as long as it takes (Ctrl-C stops it), so no task time limit.
            task_time_limit: Duration::MAX,
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
        // The embedded farm's own client is its admin, with a token made for this run: another
        // user of this machine cannot use its port.
        let (_, token) = create_token(state.as_ref(), "local", Role::Admin).await?;
        let access = Access::insecure(&url, Some(token));
        let (shutdown, receiver) = watch::channel(false);
        let mut handles = Vec::new();
        {
            let coordinator = coordinator.clone();
            let stop = until(receiver.clone());
            handles.push(tokio::spawn(async move {
                if let Err(error) = lathe_coordinator::grpc::serve(
                    &coordinator,
                    listener,
                    &Transport::InsecureLoopback,
                    stop,
                )
                .await
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
            let mut settings = WorkerSettings::new(Access::insecure(&url, None));
            settings.id = format!("local-{}", index + 1);
            settings.scratch = scratch.to_path_buf();
            settings.poll_wait = Duration::from_millis(200);
            settings.progress_interval = Duration::from_millis(200);
            // One machine: no other worker could take a task this one left for lack of room (a
            // disk that fills fails the render with its own error).
            settings.scratch_free = None;
            settings.task_time_limit = Duration::MAX;
            settings.local_blobs = local_blobs.clone();
            let queue = queue.clone();
            let stop = until(receiver.clone());
            handles.push(tokio::spawn(async move {
                let observer = Arc::new(WorkerObserver::new());
                if let Err(error) = run_worker(settings, queue, observer, stop).await {
                    tracing::error!(%error, "embedded worker stopped");
                }
            }));
        }
        Ok(Self {
            client: FarmClient::lazy(&access)?,
            local_blobs,
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
    follow_job(client, job_id, |_| {}).await
}

/// Follows a job until it ends, handing every update to `on_status` (a progress display); returns
/// its final status with every task (read a page at a time).
pub async fn follow_job(
    client: &FarmClient,
    job_id: &str,
    mut on_status: impl FnMut(&v1::JobStatus),
) -> Result<v1::JobStatus> {
    let mut watched = client.watch_job(job_id).await?;
    while let Some(status) = watched.next().await? {
        on_status(status);
        if !matches!(
            status.state(),
            v1::JobState::Running | v1::JobState::Suspended
        ) {
            break;
        }
    }
    Ok(client.job_with_tasks(job_id).await?)
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
        client
            .download(&status.job_id, &task.output_digest, &path)
            .await?;
        if !task.report_json.is_empty() {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let report = path.with_file_name(format!("{stem}.report.json"));
            lathe_engine::atomic_file::write_atomically(&report, task.report_json.as_bytes())?;
        }
        written.push(path);
    }
    Ok(written)
}

/// A graph job's plan as the client keeps it with the job (a blob, named by the job's
/// `plan_digest`): the catalogue and its delivery plan, so that `fetch` can write the delivery
/// manifest on any host, without the sources.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryJob {
    /// The catalogue, paths resolved on the submitting host.
    pub catalogue: Catalogue,
    /// Its plan: the tasks, in the job's order.
    pub plan: DeliveryPlan,
}

/// Downloads a blob of job `job_id` into memory, verified against `digest`.
pub async fn download_bytes(client: &FarmClient, job_id: &str, digest: &str) -> Result<Vec<u8>> {
    let expected = Digest::parse(digest)?;
    let mut stream = client
        .jobs
        .clone()
        .fetch_blob(v1::BlobRef {
            digest: digest.to_owned(),
            job_id: job_id.to_owned(),
        })
        .await?
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await? {
        bytes.extend_from_slice(&chunk.data);
    }
    lathe_coordinator::blob::verify(&expected, &Digest::of(&bytes))?;
    Ok(bytes)
}

/// Uploads the plan's sources (those the coordinator does not hold yet) and the plan itself, and
/// submits the plan as one graph job (a non-empty `idempotency_key` makes a retried submission
/// return the first one's job); returns the job id. The job's profile is the catalogue's
/// (its name is what status tables show).
pub async fn submit_delivery(
    client: &FarmClient,
    job: &DeliveryJob,
    name: &str,
    priority: i32,
    idempotency_key: &str,
) -> Result<String> {
    let profile = Profile::load(&job.catalogue.profile_for(None))?;
    let mut sources: Vec<&Path> = job
        .plan
        .tasks
        .iter()
        .flat_map(|t| t.sources.iter().map(PathBuf::as_path))
        .collect();
    sources.sort();
    sources.dedup();
    // A source that cannot be read fails its tasks alone (and those that need them).
    let mut digest_of: HashMap<&Path, std::result::Result<Digest, String>> = HashMap::new();
    for source in &sources {
        digest_of.insert(source, digest_file(source).await.map_err(|e| e.to_string()));
    }
    let readable: Vec<(&Path, Digest)> = sources
        .iter()
        .filter_map(|s| match digest_of.get(s) {
            Some(Ok(digest)) => Some((*s, *digest)),
            _ => None,
        })
        .collect();
    let files: Vec<&Path> = readable.iter().map(|(path, _)| *path).collect();
    let digests: Vec<Digest> = readable.iter().map(|(_, digest)| *digest).collect();
    client.upload_digested(&files, &digests).await?;
    let plan_json = serde_json::to_vec(job).map_err(|e| {
        Error::Farm(lathe_coordinator::Error::InvalidRequest(format!(
            "the delivery plan: {e}"
        )))
    })?;
    let plan_digest = client.upload_bytes(plan_json.into()).await?;
    let mut graph = Vec::with_capacity(job.plan.tasks.len());
    for task in &job.plan.tasks {
        let work_json = serde_json::to_string(&task.work).map_err(|e| {
            Error::Farm(lathe_coordinator::Error::InvalidRequest(format!(
                "{}: {e}",
                task.label
            )))
        })?;
        let index = |list: &[usize]| -> Vec<u32> {
            list.iter()
                .map(|&i| u32::try_from(i).unwrap_or(u32::MAX))
                .collect()
        };
        let digests: std::result::Result<Vec<String>, String> = task
            .sources
            .iter()
            .map(|s| match digest_of.get(s.as_path()) {
                Some(Ok(digest)) => Ok(digest.to_string()),
                Some(Err(error)) => Err(error.clone()),
                None => Err(format!("{}: not read", s.display())),
            })
            .collect();
        let (source_digests, error) = match digests {
            Ok(digests) => (digests, String::new()),
            Err(error) => (Vec::new(), error),
        };
        graph.push(v1::GraphTaskSpec {
            label: task.label.clone(),
            kind: task.work.kind().to_owned(),
            work_json,
            source_digests,
            error,
            source_names: task
                .sources
                .iter()
                .map(|s| {
                    s.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                })
                .collect(),
            needs: index(&task.needs),
            inputs_from: index(&task.inputs_from),
        });
    }
    let request = v1::SubmitJobRequest {
        name: name.to_owned(),
        priority,
        profile_toml: profile.to_toml(),
        graph,
        plan_digest: plan_digest.to_string(),
        idempotency_key: idempotency_key.to_owned(),
        ..Default::default()
    };
    Ok(client.submit_job(request).await?)
}

/// Writes a finished graph job's delivery into `out`: every delivered file of its succeeded tasks
/// at its path (temporary name, renamed once its digest checks), then `delivery.json` and each
/// album's report from the tasks' outcomes (a task that did not succeed is its error).
pub async fn fetch_delivery(
    client: &FarmClient,
    status: &v1::JobStatus,
    out: &Path,
) -> Result<DeliveryManifest> {
    let invalid = |reason: String| Error::Farm(lathe_coordinator::Error::InvalidRequest(reason));
    if status.plan_digest.is_empty() {
        return Err(invalid(format!(
            "job {} is not a delivery (it has no plan)",
            status.job_id
        )));
    }
    let job: DeliveryJob =
        serde_json::from_slice(&download_bytes(client, &status.job_id, &status.plan_digest).await?)
            .map_err(|e| invalid(format!("job {}: its plan: {e}", status.job_id)))?;
    if job.plan.tasks.len() != status.tasks.len() {
        return Err(invalid(format!(
            "job {}: {} tasks but its plan has {}",
            status.job_id,
            status.tasks.len(),
            job.plan.tasks.len()
        )));
    }
    std::fs::create_dir_all(out).map_err(|source| Error::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let mut outcomes = Vec::with_capacity(status.tasks.len());
    for task in &status.tasks {
        if task.state() != v1::TaskState::Succeeded {
            outcomes.push(Err(if task.last_error.is_empty() {
                format!("{}: {:?}", task.label, task.state())
            } else {
                task.last_error.clone()
            }));
            continue;
        }
        for file in task.outputs.iter().filter(|f| f.delivered) {
            if !lathe_coordinator::graph::is_inside(&file.path) {
                return Err(invalid(format!(
                    "task {}: output path {:?} is not inside the output folder",
                    task.task_id, file.path
                )));
            }
            let path = out.join(&file.path);
            if let Some(folder) = path.parent() {
                std::fs::create_dir_all(folder).map_err(|source| Error::Io {
                    path: folder.to_path_buf(),
                    source,
                })?;
            }
            client.download(&status.job_id, &file.digest, &path).await?;
        }
        let outcome: TaskOutcome = serde_json::from_str(&task.report_json)
            .map_err(|e| invalid(format!("task {}: its outcome: {e}", task.task_id)))?;
        outcomes.push(Ok(outcome));
    }
    Ok(write_delivery(&job.catalogue, &job.plan, &outcomes, out)?)
}
