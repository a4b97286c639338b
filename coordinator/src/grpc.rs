//! The coordinator's gRPC services: [`JobService`] for clients and [`WorkerService`] for workers, both
//! thin layers over [`Coordinator`]. Errors become `tonic::Status` in one place
//! (`impl From<Error> for tonic::Status`).

use std::pin::Pin;

use futures::{Stream, StreamExt};
use lathe_proto::v1;
use lathe_proto::v1::job_api_server::{JobApi, JobApiServer};
use lathe_proto::v1::worker_api_server::{WorkerApi, WorkerApiServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::auth::{AUTHORIZATION, Caller, Role};
use crate::blob::{BlobStore, Digest};
use crate::coordinator::{AttemptCall, Coordinator, Fault, StartVerdict};
use crate::deadlines::{CallDeadlines, CallDeadlinesLayer};
use crate::error::Error;
use crate::limits::{
    MAX_ERROR_BYTES, MAX_ID_BYTES, MAX_LIST_ITEMS, bounded_list, bounded_text, check_completion,
    truncated,
};
use crate::record::{TaskState, WorkerRecord, unix_ms};
use crate::state::MAX_PAGE;
use crate::tls::{Transport, certificate_name};

/// A unary gRPC result.
pub type GrpcResult<T> = Result<Response<T>, Status>;
/// A server-streaming gRPC response body.
pub type GrpcStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Messages buffered per server stream.
const STREAM_BUFFER: usize = 8;
/// gRPC messages may be this large (a chunk plus framing).
pub const MAX_MESSAGE_BYTES: usize = 8 << 20;

/// HTTP/2 flow-control window per stream (both ends), bytes.
pub const STREAM_WINDOW_BYTES: u32 = 8 << 20;

/// HTTP/2 flow-control window per connection (both ends), bytes.
pub const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;

/// The largest HTTP/2 frame the server accepts, bytes (the protocol allows up to 16 MiB - 1).
pub const MAX_FRAME_BYTES: u32 = 1 << 20;

/// Calls one connection may have in flight at once.
pub const MAX_CALLS_PER_CONNECTION: usize = 64;
/// How often an idle connection is pinged, and how long the answer may take before the
/// connection is closed (a client that vanished does not hold its streams open).
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// The client-facing job API.
#[derive(Debug, Clone)]
pub struct JobService(pub Coordinator);

/// The worker-facing task and blob API.
#[derive(Debug, Clone)]
pub struct WorkerService {
    coordinator: Coordinator,
    /// Workers are known by their client certificates (a farm with TLS).
    verify_workers: bool,
}

/// Tasks or jobs in a page when the request asks for none in particular.
const DEFAULT_PAGE: usize = 200;

/// A request's page size: the default for 0, and never above [`MAX_PAGE`].
fn page_limit(limit: u32) -> usize {
    match limit {
        0 => DEFAULT_PAGE,
        limit => (limit as usize).min(MAX_PAGE),
    }
}

fn non_empty(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

/// Both services, ready to be added to a `tonic::transport::Server`; `verify_workers` when
/// workers are known by their client certificates.
pub fn services(
    coordinator: &Coordinator,
    verify_workers: bool,
) -> (JobApiServer<JobService>, WorkerApiServer<WorkerService>) {
    (
        JobApiServer::new(JobService(coordinator.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        WorkerApiServer::new(WorkerService {
            coordinator: coordinator.clone(),
            verify_workers,
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
}

/// Stores a streamed blob, verifying its digest; a blob already stored is not written again.
async fn receive_blob(
    coordinator: &Coordinator,
    mut chunks: Streaming<v1::BlobChunk>,
) -> Result<v1::BlobStored, Error> {
    let cap = coordinator.settings().max_upload_bytes;
    let stored = store_chunks(coordinator.blobs(), &mut chunks, cap).await?;
    coordinator.metrics().bytes_received(stored.size_bytes);
    Ok(stored)
}

/// The chunks of an upload, stored (or drained, when the store holds the blob already), refused
/// as soon as they would come to more than `cap` bytes: the chunk that would pass it is not
/// written, and the partial blob is removed.
async fn store_chunks(
    blobs: &dyn BlobStore,
    chunks: &mut Streaming<v1::BlobChunk>,
    cap: u64,
) -> Result<v1::BlobStored, Error> {
    let Some(first) = chunks.message().await? else {
        return Err(Error::InvalidRequest("empty blob upload".to_owned()));
    };
    let digest = Digest::parse(&first.digest)?;
    let mut size = 0u64;
    let mut count = |data: &[u8]| -> Result<(), Error> {
        size += data.len() as u64;
        if size > cap {
            return Err(Error::UploadTooLarge { cap_bytes: cap });
        }
        Ok(())
    };
    count(&first.data)?;
    if blobs.contains(&digest).await? {
        while let Some(chunk) = chunks.message().await? {
            count(&chunk.data)?;
        }
        return Ok(v1::BlobStored {
            digest: digest.to_string(),
            size_bytes: size,
        });
    }
    // Dropping the writer unfinished (an error below returns early) removes what it wrote.
    let mut writer = blobs.writer(digest).await?;
    writer.write(first.data).await?;
    while let Some(chunk) = chunks.message().await? {
        count(&chunk.data)?;
        writer.write(chunk.data).await?;
    }
    let size_bytes = writer.commit().await?;
    Ok(v1::BlobStored {
        digest: digest.to_string(),
        size_bytes,
    })
}

/// Streams a stored blob; the first chunk carries the digest. The receiver verifies the digest (it
/// must: bytes can change on the way), so this side reads without hashing.
async fn send_blob(
    coordinator: &Coordinator,
    digest: &str,
) -> Result<GrpcStream<v1::BlobChunk>, Error> {
    let digest = Digest::parse(digest)?;
    let mut stream = coordinator.blobs().read_for_transfer(&digest).await?;
    let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
    let coordinator = coordinator.clone();
    tokio::spawn(async move {
        let mut first = true;
        while let Some(chunk) = stream.next().await {
            if let Ok(data) = &chunk {
                coordinator.metrics().bytes_sent(data.len() as u64);
            }
            let message = chunk.map_err(Status::from).map(|data| v1::BlobChunk {
                digest: if first {
                    digest.to_string()
                } else {
                    String::new()
                },
                data,
            });
            first = false;
            let stop = message.is_err();
            if sender.send(message).await.is_err() || stop {
                return;
            }
        }
        if first {
            // An empty blob still sends its digest.
            let _ = sender
                .send(Ok(v1::BlobChunk {
                    digest: digest.to_string(),
                    data: bytes::Bytes::new(),
                }))
                .await;
        }
    });
    Ok(Box::pin(ReceiverStream::new(receiver)))
}

/// The caller of a job-API call: the client token it presents, checked against the store. A
/// call that presents a worker's certificate is refused: workers have no business here.
async fn caller<T>(coordinator: &Coordinator, request: &Request<T>) -> Result<Caller, Error> {
    if request.peer_certs().is_some_and(|certs| !certs.is_empty()) {
        return Err(Error::PermissionDenied(
            "a worker's certificate cannot call the job API".to_owned(),
        ));
    }
    let token = request
        .metadata()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .ok_or_else(|| {
            Error::Unauthenticated(
                "no token: give lathe --token, LATHE_TOKEN or LATHE_TOKEN_FILE (an admin makes \
                 one with lathe-coordinator token create)"
                    .to_owned(),
            )
        })?;
    coordinator.authenticate(token.trim()).await
}

impl JobService {
    /// The caller, refused unless it may read job `job_id`.
    async fn reader<T>(&self, request: &Request<T>, job_id: &str) -> Result<Caller, Error> {
        let caller = caller(&self.0, request).await?;
        if caller.role == Role::Submit {
            caller.require_read(job_id, &self.0.job_owner(job_id).await?)?;
        }
        Ok(caller)
    }

    /// The caller, refused unless it may change job `job_id`.
    async fn changer<T>(&self, request: &Request<T>, job_id: &str) -> Result<Caller, Error> {
        let caller = caller(&self.0, request).await?;
        caller.require(Role::Submit, "changing a job")?;
        if caller.role == Role::Submit {
            caller.require_change(job_id, &self.0.job_owner(job_id).await?)?;
        }
        Ok(caller)
    }

    /// The caller, refused unless it is an admin.
    async fn admin<T>(&self, request: &Request<T>, what: &str) -> Result<Caller, Error> {
        let caller = caller(&self.0, request).await?;
        caller.require(Role::Admin, what)?;
        Ok(caller)
    }
}

#[tonic::async_trait]
impl JobApi for JobService {
    async fn missing_blobs(
        &self,
        request: Request<v1::MissingBlobsRequest>,
    ) -> GrpcResult<v1::MissingBlobsReply> {
        // Any valid token: `FarmClient::connect` checks its token with this call.
        caller(&self.0, &request).await?;
        let digests = request.into_inner().digests;
        bounded_list("digests", digests.len(), MAX_LIST_ITEMS)?;
        let mut missing = Vec::new();
        for digest in digests {
            if !self.0.blobs().contains(&Digest::parse(&digest)?).await? {
                missing.push(digest);
            }
        }
        Ok(Response::new(v1::MissingBlobsReply { digests: missing }))
    }

    async fn put_blob(
        &self,
        request: Request<Streaming<v1::BlobChunk>>,
    ) -> GrpcResult<v1::BlobStored> {
        caller(&self.0, &request)
            .await?
            .require(Role::Submit, "uploading")?;
        Ok(Response::new(
            receive_blob(&self.0, request.into_inner()).await?,
        ))
    }

    async fn submit(
        &self,
        request: Request<v1::SubmitJobRequest>,
    ) -> GrpcResult<v1::SubmitJobReply> {
        let caller = caller(&self.0, &request).await?;
        caller.require(Role::Submit, "submitting")?;
        let span = following(tracing::info_span!("submit"), &request);
        let request = request.into_inner();
        let job_id = self
            .0
            .submit(&request, &caller.name)
            .instrument(span)
            .await?;
        Ok(Response::new(v1::SubmitJobReply { job_id }))
    }

    async fn get_job(&self, request: Request<v1::JobRef>) -> GrpcResult<v1::JobStatus> {
        let job_id = &request.get_ref().job_id;
        self.reader(&request, job_id).await?;
        Ok(Response::new(self.0.status(job_id).await?))
    }

    async fn list_jobs(
        &self,
        request: Request<v1::ListJobsRequest>,
    ) -> GrpcResult<v1::ListJobsReply> {
        let caller = caller(&self.0, &request).await?;
        let request = request.into_inner();
        let (mut jobs, next) = self
            .0
            .list(non_empty(&request.after), page_limit(request.limit))
            .await?;
        // A submit token sees its own jobs: the page is read whole and filtered, so it may come
        // back shorter (even empty) with a page after it.
        jobs.retain(|job| caller.may_read(&job.owner));
        Ok(Response::new(v1::ListJobsReply {
            jobs,
            next_after: next.unwrap_or_default(),
        }))
    }

    async fn list_tasks(
        &self,
        request: Request<v1::ListTasksRequest>,
    ) -> GrpcResult<v1::ListTasksReply> {
        self.reader(&request, &request.get_ref().job_id).await?;
        let request = request.into_inner();
        let (after, limit) = (non_empty(&request.after), page_limit(request.limit));
        let page = if request.qc_failed {
            self.0.qc_failed_page(&request.job_id, after, limit).await?
        } else {
            let state = TaskState::from_proto(request.state());
            self.0
                .task_page(&request.job_id, state, after, limit)
                .await?
        };
        Ok(Response::new(v1::ListTasksReply {
            tasks: page
                .tasks
                .iter()
                .map(|task| self.0.task_status(task))
                .collect(),
            next_after: page.next_after.unwrap_or_default(),
        }))
    }

    type WatchStream = GrpcStream<v1::JobStatus>;

    async fn watch(&self, request: Request<v1::JobRef>) -> GrpcResult<Self::WatchStream> {
        self.reader(&request, &request.get_ref().job_id).await?;
        let job_id = request.into_inner().job_id;
        let mut watch = self.0.watch(&job_id);
        // The first message here, so that a job that does not exist fails the call itself.
        let first = watch
            .next()
            .await
            .ok_or_else(|| tonic::Status::unavailable("the coordinator is shutting down"))??;
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(async move {
            if sender.send(Ok(first)).await.is_err() {
                return;
            }
            while let Some(message) = watch.next().await {
                if sender.send(message.map_err(Into::into)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn cancel(&self, request: Request<v1::JobRef>) -> GrpcResult<v1::CancelReply> {
        self.changer(&request, &request.get_ref().job_id).await?;
        let state = self.0.cancel(&request.into_inner().job_id).await?;
        Ok(Response::new(v1::CancelReply {
            state: state.to_proto().into(),
        }))
    }

    type FetchBlobStream = GrpcStream<v1::BlobChunk>;

    async fn fetch_blob(&self, request: Request<v1::BlobRef>) -> GrpcResult<Self::FetchBlobStream> {
        let caller = caller(&self.0, &request).await?;
        let blob = request.into_inner();
        if caller.role == Role::Submit {
            // A submit token reads the blobs of its own jobs, named with the job.
            if blob.job_id.is_empty() {
                return Err(Error::PermissionDenied(
                    "a submit token fetches a blob of one of its jobs: name the job".to_owned(),
                )
                .into());
            }
            caller.require_read(&blob.job_id, &self.0.job_owner(&blob.job_id).await?)?;
            if !self.0.job_refers_to(&blob.job_id, &blob.digest).await? {
                return Err(Error::PermissionDenied(format!(
                    "blob {} is not a file of job {}",
                    blob.digest, blob.job_id
                ))
                .into());
            }
        }
        Ok(Response::new(send_blob(&self.0, &blob.digest).await?))
    }

    async fn list_workers(
        &self,
        request: Request<v1::ListWorkersRequest>,
    ) -> GrpcResult<v1::ListWorkersReply> {
        caller(&self.0, &request).await?;
        Ok(Response::new(v1::ListWorkersReply {
            workers: self.0.workers().await?,
        }))
    }

    async fn clear_blocklist(
        &self,
        request: Request<v1::ClearBlocklistRequest>,
    ) -> GrpcResult<v1::ClearBlocklistReply> {
        self.admin(&request, "clearing a blocklist").await?;
        let request = request.into_inner();
        let cleared = self
            .0
            .clear_blocklist(&request.job_id, &request.worker_id)
            .await?;
        Ok(Response::new(v1::ClearBlocklistReply { cleared }))
    }

    async fn retry(&self, request: Request<v1::JobRef>) -> GrpcResult<v1::RetryReply> {
        self.changer(&request, &request.get_ref().job_id).await?;
        let job_id = request.into_inner().job_id;
        let retried = self.0.retry(&job_id).await?;
        Ok(Response::new(v1::RetryReply {
            retried,
            job: Some(self.0.status(&job_id).await?),
        }))
    }

    async fn suspend(&self, request: Request<v1::JobRef>) -> GrpcResult<v1::JobStatus> {
        self.changer(&request, &request.get_ref().job_id).await?;
        Ok(Response::new(
            self.0.suspend(&request.into_inner().job_id).await?,
        ))
    }

    async fn resume(&self, request: Request<v1::JobRef>) -> GrpcResult<v1::JobStatus> {
        self.changer(&request, &request.get_ref().job_id).await?;
        Ok(Response::new(
            self.0.resume(&request.into_inner().job_id).await?,
        ))
    }

    async fn set_priority(
        &self,
        request: Request<v1::SetPriorityRequest>,
    ) -> GrpcResult<v1::JobStatus> {
        self.changer(&request, &request.get_ref().job_id).await?;
        let request = request.into_inner();
        Ok(Response::new(
            self.0
                .set_priority(&request.job_id, request.priority)
                .await?,
        ))
    }

    async fn set_pinned(
        &self,
        request: Request<v1::SetPinnedRequest>,
    ) -> GrpcResult<v1::JobStatus> {
        self.admin(&request, "pinning a job").await?;
        let request = request.into_inner();
        Ok(Response::new(
            self.0.set_pinned(&request.job_id, request.pinned).await?,
        ))
    }

    async fn delete_job(
        &self,
        request: Request<v1::DeleteJobRequest>,
    ) -> GrpcResult<v1::DeleteJobReply> {
        self.admin(&request, "deleting a job").await?;
        let request = request.into_inner();
        let deleted = self.0.delete(&request.job_id, request.force).await?;
        Ok(Response::new(v1::DeleteJobReply {
            tasks_removed: deleted.tasks,
            blobs_removed: deleted.blobs,
        }))
    }
}

/// `span`, the server's span for a call, made a child of the caller's span (the context the
/// request carries), so that an exporter puts it in the job's trace.
fn following<T>(span: tracing::Span, request: &Request<T>) -> tracing::Span {
    crate::trace::follow_request(&span, request);
    span
}

/// The metadata key naming the task of a `PutResult` upload.
pub const TASK_ID_METADATA: &str = "lathe-task-id";
/// The metadata key naming the worker of a `PutResult` upload.
pub const WORKER_ID_METADATA: &str = "lathe-worker-id";
/// The metadata key carrying the attempt's token of a `PutResult` upload.
pub const ATTEMPT_TOKEN_METADATA: &str = "lathe-attempt-token";

impl WorkerService {
    /// The worker making a call: on a farm with TLS, the name in its client certificate, which
    /// must be the id the request gives (`claimed`), or its prefix before a `/` (a pool's
    /// certificate); on an insecure loopback farm, the id the
    /// request gives. A call carrying a client token is refused: users have no business here.
    fn worker<T>(&self, request: &Request<T>, claimed: &str) -> Result<(), Error> {
        if request.metadata().contains_key(AUTHORIZATION) {
            return Err(Error::PermissionDenied(
                "a client token cannot call the worker API".to_owned(),
            ));
        }
        bounded_text("worker id", claimed, MAX_ID_BYTES)?;
        if !self.verify_workers {
            return Ok(());
        }
        let name = request
            .peer_certs()
            .and_then(|certs| certs.first().and_then(|cert| certificate_name(cert)))
            .ok_or_else(|| {
                Error::Unauthenticated(
                    "the worker API needs a worker's client certificate".to_owned(),
                )
            })?;
        // A certificate names a worker, or a pool of them (`pool`: ids `pool/...`, for workers
        // scaled from one image that share a certificate).
        let pool_member = claimed
            .strip_prefix(name.as_str())
            .is_some_and(|rest| rest.starts_with('/'));
        if name != claimed && !pool_member {
            tracing::warn!(certificate = %name, claimed = %claimed, "worker call refused: the id is not the certificate's");
            return Err(Error::PermissionDenied(format!(
                "the certificate is worker {name}'s, not {claimed}'s"
            )));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl WorkerApi for WorkerService {
    async fn start_task(
        &self,
        request: Request<v1::StartTaskRequest>,
    ) -> GrpcResult<v1::StartTaskReply> {
        self.worker(&request, &request.get_ref().worker_id)?;
        let span = following(
            tracing::info_span!(
                "start_task",
                lathe.task.id = tracing::field::Empty,
                lathe.worker.id = tracing::field::Empty
            ),
            &request,
        );
        let request = request.into_inner();
        span.record("lathe.task.id", request.task_id.as_str());
        span.record("lathe.worker.id", request.worker_id.as_str());
        let verdict = self
            .coordinator
            .start_task(&request.task_id, &request.worker_id, request.delivery)
            .instrument(span)
            .await?;
        let reply = match verdict {
            StartVerdict::Run(attempt) => v1::StartTaskReply {
                verdict: v1::StartVerdict::Run.into(),
                reason: String::new(),
                attempt_token: attempt.token,
                task: Some(attempt.task),
            },
            StartVerdict::Drop(reason) => v1::StartTaskReply {
                verdict: v1::StartVerdict::Drop.into(),
                reason,
                ..Default::default()
            },
            StartVerdict::HandBack(reason) => v1::StartTaskReply {
                verdict: v1::StartVerdict::HandBack.into(),
                reason,
                ..Default::default()
            },
        };
        Ok(Response::new(reply))
    }

    type FetchSourceStream = GrpcStream<v1::BlobChunk>;

    async fn fetch_source(
        &self,
        request: Request<v1::SourceRequest>,
    ) -> GrpcResult<Self::FetchSourceStream> {
        self.worker(&request, &request.get_ref().worker_id)?;
        let span = following(tracing::info_span!("send_blob"), &request);
        let source = request.into_inner();
        let call = AttemptCall {
            task_id: &source.task_id,
            worker_id: &source.worker_id,
            token: &source.attempt_token,
        };
        self.coordinator
            .require_source_of_attempt(call, &source.digest)
            .await?;
        Ok(Response::new(
            send_blob(&self.coordinator, &source.digest)
                .instrument(span)
                .await?,
        ))
    }

    async fn report_progress(
        &self,
        request: Request<v1::ProgressRequest>,
    ) -> GrpcResult<v1::ProgressReply> {
        self.worker(&request, &request.get_ref().worker_id)?;
        let request = request.into_inner();
        let cancel = self
            .coordinator
            .progress(
                AttemptCall {
                    task_id: &request.task_id,
                    worker_id: &request.worker_id,
                    token: &request.attempt_token,
                },
                &request.phase,
                request.fraction,
            )
            .await?;
        Ok(Response::new(v1::ProgressReply { cancel }))
    }

    async fn put_result(
        &self,
        request: Request<Streaming<v1::BlobChunk>>,
    ) -> GrpcResult<v1::BlobStored> {
        let text = |key: &str| {
            request
                .metadata()
                .get(key)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let (task_id, worker_id, token) = (
            text(TASK_ID_METADATA),
            text(WORKER_ID_METADATA),
            text(ATTEMPT_TOKEN_METADATA),
        );
        self.worker(&request, &worker_id)?;
        self.coordinator
            .require_attempt(AttemptCall {
                task_id: &task_id,
                worker_id: &worker_id,
                token: &token,
            })
            .await?;
        let span = following(tracing::info_span!("receive_blob"), &request);
        Ok(Response::new(
            receive_blob(&self.coordinator, request.into_inner())
                .instrument(span)
                .await?,
        ))
    }

    async fn complete_task(
        &self,
        request: Request<v1::CompleteTaskRequest>,
    ) -> GrpcResult<v1::CompleteTaskReply> {
        self.worker(&request, &request.get_ref().worker_id)?;
        let span = following(
            tracing::info_span!(
                "complete_task",
                lathe.task.id = tracing::field::Empty,
                lathe.worker.id = tracing::field::Empty
            ),
            &request,
        );
        let request = request.into_inner();
        span.record("lathe.task.id", request.task_id.as_str());
        span.record("lathe.worker.id", request.worker_id.as_str());
        check_completion(&request)?;
        self.coordinator
            .complete_task(
                AttemptCall {
                    task_id: &request.task_id,
                    worker_id: &request.worker_id,
                    token: &request.attempt_token,
                },
                &request.output_digest,
                &request.report_json,
                &request.outputs,
            )
            .instrument(span)
            .await?;
        Ok(Response::new(v1::CompleteTaskReply {}))
    }

    async fn fail_task(
        &self,
        request: Request<v1::FailTaskRequest>,
    ) -> GrpcResult<v1::FailTaskReply> {
        self.worker(&request, &request.get_ref().worker_id)?;
        let span = following(
            tracing::info_span!(
                "fail_task",
                lathe.task.id = tracing::field::Empty,
                lathe.worker.id = tracing::field::Empty
            ),
            &request,
        );
        let request = request.into_inner();
        span.record("lathe.task.id", request.task_id.as_str());
        span.record("lathe.worker.id", request.worker_id.as_str());
        // A long error is cut, not refused: the failure must still be recorded.
        let error = truncated(&request.error, MAX_ERROR_BYTES);
        let final_failure = self
            .coordinator
            .fail_task(
                AttemptCall {
                    task_id: &request.task_id,
                    worker_id: &request.worker_id,
                    token: &request.attempt_token,
                },
                error,
                if request.input_fault {
                    Fault::Input
                } else {
                    Fault::Worker
                },
            )
            .instrument(span)
            .await?;
        Ok(Response::new(v1::FailTaskReply {
            r#final: final_failure,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<v1::WorkerHeartbeat>,
    ) -> GrpcResult<v1::WorkerHeartbeatReply> {
        self.worker(&request, &request.get_ref().worker_id)?;
        let beat = request.into_inner();
        self.coordinator
            .heartbeat(&WorkerRecord {
                id: beat.worker_id,
                host: beat.host,
                pid: beat.pid,
                slots: beat.slots,
                current_tasks: beat.current_tasks,
                heartbeat_unix_ms: unix_ms(),
            })
            .await?;
        Ok(Response::new(v1::WorkerHeartbeatReply {}))
    }

    async fn unregister_worker(
        &self,
        request: Request<v1::UnregisterWorkerRequest>,
    ) -> GrpcResult<v1::WorkerHeartbeatReply> {
        self.worker(&request, &request.get_ref().worker_id)?;
        self.coordinator
            .unregister_worker(&request.into_inner().worker_id)
            .await?;
        Ok(Response::new(v1::WorkerHeartbeatReply {}))
    }
}

/// Serves both services on `listener` until `shutdown` resolves, over `transport`.
pub async fn serve(
    coordinator: &Coordinator,
    listener: tokio::net::TcpListener,
    transport: &Transport,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Error> {
    let (jobs, workers) = services(coordinator, transport.verifies_workers());
    // grpc.health.v1: the farm's services are SERVING while this server runs (`/readyz` on the
    // HTTP port also checks NATS and etcd).
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<JobApiServer<JobService>>().await;
    health.set_serving::<WorkerApiServer<WorkerService>>().await;
    let mut server = tonic::transport::Server::builder()
        // Every call ends within the limit, and no connection holds more than its share of
        // concurrent calls (streams of blobs and watches included: both are bounded).
        .concurrency_limit_per_connection(MAX_CALLS_PER_CONNECTION)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        // Every call answers in time, and no upload stalls for long (`deadlines`).
        .layer(CallDeadlinesLayer(CallDeadlines {
            call_timeout: coordinator.settings().call_timeout,
            stream_idle_timeout: coordinator.settings().stream_idle_timeout,
        }));
    if let Transport::Tls(tls) = transport {
        server = server
            .tls_config(tls.config())
            .map_err(|e| Error::Connect {
                url: "gRPC server".to_owned(),
                reason: format!("TLS: {e}"),
            })?;
    }
    server
        // Blob chunks are 1 MiB: windows of several chunks keep uploads streaming without waiting
        // for window updates, and large frames cut the per-frame work.
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .add_service(health_service)
        .add_service(jobs)
        .add_service(workers)
        .serve_with_incoming_shutdown(
            // TCP_NODELAY on every accepted connection (the builder's `tcp_nodelay` applies only
            // to a listener it binds itself): without it a small reply can wait some 40 ms for
            // the client's delayed acknowledgement of the one before.
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
        .map_err(|e| Error::Connect {
            url: "gRPC server".to_owned(),
            reason: e.to_string(),
        })
}
