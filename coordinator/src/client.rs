//! A client of the coordinator's gRPC services, for the CLI, workers and tests: connection, blob
//! upload and download with digests verified, and the job calls.

use std::path::Path;
use std::time::Duration;

use std::io::Read as _;

use futures::StreamExt;
use lathe_proto::v1;
use lathe_proto::v1::job_api_client::JobApiClient;
use lathe_proto::v1::worker_api_client::WorkerApiClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::tls::ClientTls;

use crate::blob::{Digest, DigestWriter, HashingSink, read_file, verify};
use crate::error::{Error, Result};
use crate::grpc::{CONNECTION_WINDOW_BYTES, MAX_MESSAGE_BYTES, STREAM_WINDOW_BYTES};

/// Files hashed, and uploaded, at the same time.
const PARALLEL_UPLOADS: usize = 4;

/// Tasks asked for per page when a client reads a whole job.
const TASKS_PER_PAGE: u32 = 1_000;

/// The coordinator's default address: loopback, port 7480.
pub const DEFAULT_COORDINATOR: &str = "http://127.0.0.1:7480";

/// How a client reaches the coordinator: its address, the client token it presents to the job
/// API, and over TLS the CA it trusts and (a worker) its own certificate.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// `https://host:port` (or `http://` on an insecure loopback farm).
    pub url: String,
    /// The client token (`lathe_...`); none for a worker.
    pub token: Option<String>,
    /// TLS: the farm's CA, and a worker's certificate.
    pub tls: Option<ClientTls>,
}

impl Access {
    /// Plain HTTP/2 to `url` with `token`: the embedded farm, and tests on loopback.
    pub fn insecure(url: &str, token: Option<String>) -> Self {
        Self {
            url: url.to_owned(),
            token,
            tls: None,
        }
    }
}

/// Adds the client's token to every job-API call.
#[derive(Debug, Clone)]
pub struct BearerToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert(crate::auth::AUTHORIZATION, value.clone());
        }
        Ok(request)
    }
}

/// The channel the job API's stub sends on: every call with the client's token.
pub type JobChannel = InterceptedService<Channel, BearerToken>;

/// Connected stubs of both services (cheap to clone; one HTTP/2 connection underneath).
#[derive(Debug, Clone)]
pub struct FarmClient {
    /// The job API.
    pub jobs: JobApiClient<JobChannel>,
    /// The worker API.
    pub workers: WorkerApiClient<Channel>,
    url: String,
}

impl FarmClient {
    /// A client for the coordinator `access` names. The connection is made on first use and
    /// re-made after the coordinator restarts.
    pub fn lazy(access: &Access) -> Result<Self> {
        let url = access.url.as_str();
        let failed = |reason: String| Error::Connect {
            url: url.to_owned(),
            reason,
        };
        let mut endpoint = Channel::from_shared(url.to_owned())
            .map_err(|e| failed(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES);
        if let Some(tls) = &access.tls {
            endpoint = endpoint
                .tls_config(tls.config())
                .map_err(|e| failed(format!("TLS: {e}")))?;
        }
        let token = access
            .token
            .as_deref()
            .map(|token| {
                format!("Bearer {}", token.trim())
                    .parse()
                    .map_err(|_| failed("the token is not printable ASCII".to_owned()))
            })
            .transpose()?;
        let channel = endpoint.connect_lazy();
        Ok(Self {
            jobs: JobApiClient::with_interceptor(channel.clone(), BearerToken(token))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            workers: WorkerApiClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            url: url.to_owned(),
        })
    }

    /// A client for the coordinator `access` names, checked by a first call that checks the
    /// token too (the coordinator answers it without NATS, and without etcd for a token it
    /// verified lately, so that a command waiting for them can start).
    pub async fn connect(access: &Access) -> Result<Self> {
        let client = Self::lazy(access)?;
        client
            .jobs
            .clone()
            .missing_blobs(v1::MissingBlobsRequest {
                digests: Vec::new(),
            })
            .await
            .map_err(|status| match status.code() {
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => Error::Rpc(status),
                _ => Error::Connect {
                    url: access.url.clone(),
                    reason: if access.url.starts_with("http://") {
                        // A TLS server answers plain HTTP/2 with a protocol error.
                        format!(
                            "{} (a farm's coordinator serves TLS: give an https:// address, and \
                             the farm's CA with --ca or LATHE_CA)",
                            status.message()
                        )
                    } else {
                        status.message().to_owned()
                    },
                },
            })?;
        Ok(client)
    }

    /// The coordinator's address.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Uploads the files the coordinator does not hold yet; returns every file's digest, in order.
    pub async fn upload_sources(&self, files: &[&Path]) -> Result<Vec<Digest>> {
        let digests = futures::stream::iter(files.iter().map(|file| digest_file(file)))
            .buffered(PARALLEL_UPLOADS)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        self.upload_digested(files, &digests).await?;
        Ok(digests)
    }

    /// Uploads the files whose digests (from [`digest_file`]) the coordinator does not hold yet,
    /// a few at a time (one stream each on the shared connection), so that small files do not each
    /// wait for the round trips of the one before.
    pub async fn upload_digested(&self, files: &[&Path], digests: &[Digest]) -> Result<()> {
        let missing = self
            .jobs
            .clone()
            .missing_blobs(v1::MissingBlobsRequest {
                digests: digests.iter().map(ToString::to_string).collect(),
            })
            .await?
            .into_inner()
            .digests;
        let uploads = files
            .iter()
            .zip(digests)
            .filter(|(_, digest)| missing.contains(&digest.to_string()))
            .map(|(file, digest)| async move {
                let chunks = file_chunks(file, *digest).await?;
                self.jobs.clone().put_blob(chunks).await?;
                Ok::<_, Error>(())
            });
        futures::stream::iter(uploads)
            .buffer_unordered(PARALLEL_UPLOADS)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }

    /// Uploads `sources` (those the coordinator does not hold yet) and submits them as one job of
    /// loose tracks, each mastered with `profile_toml`; returns the job id.
    pub async fn submit_sources(
        &self,
        name: &str,
        priority: i32,
        profile_toml: String,
        sources: &[&Path],
    ) -> Result<String> {
        let digests = self.upload_sources(sources).await?;
        let tracks = sources
            .iter()
            .zip(&digests)
            .map(|(source, digest)| v1::TrackSpec {
                source_digest: digest.to_string(),
                source_name: source
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                ..Default::default()
            })
            .collect();
        let request = v1::SubmitJobRequest {
            name: name.to_owned(),
            priority,
            profile_toml,
            tracks,
            ..Default::default()
        };
        self.submit_job(request).await
    }

    /// Submits a job; returns its id. While the coordinator cannot store it (its etcd or NATS is
    /// away, or it is restarting) the submission is retried for up to [`SUBMIT_RETRY_FOR`], under
    /// one idempotency key, so that a retry after a lost reply returns the job the first attempt
    /// created: the request's own key, or one made for this call.
    pub async fn submit_job(&self, mut request: v1::SubmitJobRequest) -> Result<String> {
        if request.idempotency_key.is_empty() {
            request.idempotency_key = call_key();
        }
        if prost::Message::encoded_len(&request) > SUBMIT_INLINE_BYTES {
            // Too large for one message: the tasks go first, as a blob.
            let tasks = v1::JobTasks {
                tracks: std::mem::take(&mut request.tracks),
                graph: std::mem::take(&mut request.graph),
            };
            let digest = self
                .upload_bytes(prost::Message::encode_to_vec(&tasks).into())
                .await?;
            request.tasks_digest = digest.to_string();
        }
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(250);
        loop {
            match self
                .jobs
                .clone()
                .submit(crate::trace::traced(request.clone()))
                .await
            {
                Ok(reply) => return Ok(reply.into_inner().job_id),
                Err(status) => {
                    let error = Error::Rpc(status);
                    if !error.is_retryable() || started.elapsed() + pause > SUBMIT_RETRY_FOR {
                        return Err(error);
                    }
                    tracing::warn!(%error, "the coordinator cannot take the job now; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(4));
                }
            }
        }
    }

    /// A page of a job's tasks in task order: only those in `state` when given, after the task id
    /// `after` (from the first when empty), at most `limit` (0: the coordinator's default).
    pub async fn task_page(
        &self,
        job_id: &str,
        state: Option<v1::TaskState>,
        after: &str,
        limit: u32,
    ) -> Result<v1::ListTasksReply> {
        let request = v1::ListTasksRequest {
            job_id: job_id.to_owned(),
            state: state.unwrap_or(v1::TaskState::Unspecified).into(),
            after: after.to_owned(),
            limit,
            qc_failed: false,
        };
        Ok(self.jobs.clone().list_tasks(request).await?.into_inner())
    }

    /// A page of a job's succeeded tasks whose master (or a file of whose outcome) failed QC, in
    /// task order, as [`task_page`](Self::task_page).
    pub async fn qc_failed_page(
        &self,
        job_id: &str,
        after: &str,
        limit: u32,
    ) -> Result<v1::ListTasksReply> {
        let request = v1::ListTasksRequest {
            job_id: job_id.to_owned(),
            after: after.to_owned(),
            limit,
            qc_failed: true,
            ..Default::default()
        };
        Ok(self.jobs.clone().list_tasks(request).await?.into_inner())
    }

    /// Uploads `bytes` as a blob (unless the coordinator holds it already); returns its digest.
    pub async fn upload_bytes(&self, bytes: bytes::Bytes) -> Result<Digest> {
        let digest = Digest::of(&bytes);
        let missing = self
            .jobs
            .clone()
            .missing_blobs(v1::MissingBlobsRequest {
                digests: vec![digest.to_string()],
            })
            .await?
            .into_inner()
            .digests;
        if missing.is_empty() {
            return Ok(digest);
        }
        let header = v1::BlobChunk {
            digest: digest.to_string(),
            data: bytes::Bytes::new(),
        };
        let chunks: Vec<v1::BlobChunk> = std::iter::once(header)
            .chain(
                (0..bytes.len())
                    .step_by(lathe_proto::CHUNK_BYTES)
                    .map(|start| v1::BlobChunk {
                        digest: String::new(),
                        data: bytes
                            .slice(start..(start + lathe_proto::CHUNK_BYTES).min(bytes.len())),
                    }),
            )
            .collect();
        self.jobs
            .clone()
            .put_blob(futures::stream::iter(chunks))
            .await?;
        Ok(digest)
    }

    /// Watches a job: [`WatchedJob::next`] gives its status after each change, whole (the
    /// coordinator sends deltas; they are applied here).
    pub async fn watch_job(&self, job_id: &str) -> Result<WatchedJob> {
        let updates = self
            .jobs
            .clone()
            .watch(v1::JobRef {
                job_id: job_id.to_owned(),
            })
            .await?
            .into_inner();
        Ok(WatchedJob {
            updates,
            current: None,
        })
    }

    /// A job's status with every one of its tasks, read a page at a time (each reply is bounded;
    /// the list is held here, in the client).
    pub async fn job_with_tasks(&self, job_id: &str) -> Result<v1::JobStatus> {
        let mut status = self
            .jobs
            .clone()
            .get_job(v1::JobRef {
                job_id: job_id.to_owned(),
            })
            .await?
            .into_inner();
        status.tasks.clear();
        let mut after = String::new();
        loop {
            let page = self.task_page(job_id, None, &after, TASKS_PER_PAGE).await?;
            status.tasks.extend(page.tasks);
            if page.next_after.is_empty() {
                return Ok(status);
            }
            after = page.next_after;
        }
    }

    /// Downloads a blob of job `job_id` into `path` (written under a temporary name, renamed once
    /// its digest checks).
    pub async fn download(&self, job_id: &str, digest: &str, path: &Path) -> Result<u64> {
        let stream = self
            .jobs
            .clone()
            .fetch_blob(v1::BlobRef {
                digest: digest.to_owned(),
                job_id: job_id.to_owned(),
            })
            .await?
            .into_inner();
        receive_to_file(stream, digest, path).await
    }
}

/// The digest of a file, read in chunks on a blocking thread.
pub async fn digest_file(path: &Path) -> Result<Digest> {
    let file_path = path.to_path_buf();
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        let mut hash = DigestWriter::default();
        let mut buffer = vec![0u8; lathe_proto::CHUNK_BYTES];
        loop {
            match file.read(&mut buffer) {
                Ok(0) => return Ok(hash.finish()),
                Ok(read) => hash.update(&buffer[..read]),
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => return Err(Error::io(&path, error)),
            }
        }
    })
    .await
    .map_err(|e| Error::io(file_path, std::io::Error::other(e.to_string())))?
}

/// A file as a stream of chunks for upload, read a few chunks ahead on a blocking thread; the first
/// message carries `digest` (and no bytes). A read error ends the stream early, which the
/// receiver's digest check then refuses.
pub async fn file_chunks(
    path: &Path,
    digest: Digest,
) -> Result<impl futures::Stream<Item = v1::BlobChunk> + Send + 'static> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let header = v1::BlobChunk {
        digest: digest.to_string(),
        data: bytes::Bytes::new(),
    };
    let chunks = read_file(file, path.to_path_buf(), None)
        .take_while(|chunk| {
            if let Err(error) = chunk {
                tracing::warn!(%error, "upload cut short");
            }
            std::future::ready(chunk.is_ok())
        })
        .filter_map(|chunk| {
            std::future::ready(chunk.ok().map(|data| v1::BlobChunk {
                digest: String::new(),
                data,
            }))
        });
    Ok(futures::stream::iter([header]).chain(chunks))
}

/// Writes a streamed blob to `path` via a temporary file, verifying its digest against `expected`
/// before renaming it into place. Returns its size in bytes. Hashing and writing run on a blocking
/// thread while the next chunk arrives.
pub async fn receive_to_file(
    mut stream: tonic::Streaming<v1::BlobChunk>,
    expected: &str,
    path: &Path,
) -> Result<u64> {
    let expected = Digest::parse(expected)?;
    let folder = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (file, temp) = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".partial")
        .tempfile_in(folder)
        .map_err(|e| Error::io(folder, e))?
        .into_parts();
    let mut sink = HashingSink::to_file(file, temp.to_path_buf(), false);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if !chunk.digest.is_empty() && chunk.digest != expected.to_string() {
            return Err(Error::DigestMismatch {
                expected: expected.to_string(),
                actual: chunk.digest,
            });
        }
        if !chunk.data.is_empty() {
            sink.write(chunk.data).await?;
        }
    }
    let (actual, size) = sink.finish().await?;
    verify(&expected, &actual)?;
    temp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(size)
}

/// The largest request [`FarmClient::submit_job`] sends whole; a larger job's tasks go first as a
/// blob (requests are capped at 8 MiB).
pub const SUBMIT_INLINE_BYTES: usize = 4 * 1024 * 1024;

/// How long [`FarmClient::submit_job`] retries a submission the coordinator cannot store yet.
pub const SUBMIT_RETRY_FOR: Duration = Duration::from_secs(180);

/// An idempotency key for one submission from this process: host, process, time and a counter.
fn call_key() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    format!(
        "{host}-{}-{nanos:x}-{}",
        std::process::id(),
        CALLS.fetch_add(1, Ordering::Relaxed)
    )
}

/// A watched job: its status with its running tasks, kept whole from the coordinator's deltas.
#[derive(Debug)]
pub struct WatchedJob {
    updates: tonic::Streaming<v1::JobStatus>,
    current: Option<v1::JobStatus>,
}

impl WatchedJob {
    /// The status after the next change; `None` once the coordinator ended the watch (after the
    /// message in which the job ended).
    pub async fn next(&mut self) -> Result<Option<&v1::JobStatus>> {
        let Some(update) = self.updates.message().await? else {
            return Ok(None);
        };
        match &mut self.current {
            Some(current) if update.delta => apply_delta(current, update),
            _ => self.current = Some(update),
        }
        Ok(self.current.as_ref())
    }
}

/// Applies a watch delta to a whole status: the job's fields and counts are replaced; a changed
/// task replaces the one held (a progress-only one updates its phase and fraction), and a task no
/// longer running leaves the running set. Tasks stay in task order.
pub fn apply_delta(current: &mut v1::JobStatus, mut delta: v1::JobStatus) {
    let mut running: std::collections::BTreeMap<String, v1::TaskStatus> =
        std::mem::take(&mut current.tasks)
            .into_iter()
            .map(|task| (task.task_id.clone(), task))
            .collect();
    let changed = std::mem::take(&mut delta.tasks);
    *current = v1::JobStatus {
        delta: false,
        ..delta
    };
    for task in changed {
        if task.progress_only {
            if let Some(held) = running.get_mut(&task.task_id) {
                held.phase = task.phase;
                held.fraction = task.fraction;
            }
        } else if task.state() == v1::TaskState::Running {
            running.insert(task.task_id.clone(), task);
        } else {
            running.remove(&task.task_id);
        }
    }
    current.tasks = running.into_values().collect();
}
