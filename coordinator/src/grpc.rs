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

use crate::blob::{BlobStore, Digest};
use crate::coordinator::{Coordinator, Fault, StartVerdict};
use crate::error::Error;
use crate::record::TaskState;
use crate::state::MAX_PAGE;

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

/// The client-facing job API.
#[derive(Debug, Clone)]
pub struct JobService(pub Coordinator);

/// The worker-facing task and blob API.
#[derive(Debug, Clone)]
pub struct WorkerService(pub Coordinator);

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

/// Both services, ready to be added to a `tonic::transport::Server`.
pub fn services(
    coordinator: &Coordinator,
) -> (JobApiServer<JobService>, WorkerApiServer<WorkerService>) {
    (
        JobApiServer::new(JobService(coordinator.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        WorkerApiServer::new(WorkerService(coordinator.clone()))
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

#[tonic::async_trait]
impl JobApi for JobService {
    async fn missing_blobs(
        &self,
        request: Request<v1::MissingBlobsRequest>,
    ) -> GrpcResult<v1::MissingBlobsReply> {
        let mut missing = Vec::new();
        for digest in request.into_inner().digests {
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
        Ok(Response::new(
            receive_blob(&self.0, request.into_inner()).await?,
        ))
    }

    async fn submit(
        &self,
        request: Request<v1::SubmitJobRequest>,
    ) -> GrpcResult<v1::SubmitJobReply> {
        let span = following(tracing::info_span!("submit"), &request);
        let job_id = self
            .0
            .submit(&request.into_inner())
            .instrument(span)
            .await?;
        Ok(Response::new(v1::SubmitJobReply { job_id }))
    }

    async fn get_job(&self, request: Request<v1::JobRef>) -> GrpcResult<v1::JobStatus> {
        Ok(Response::new(
            self.0.status(&request.into_inner().job_id).await?,
        ))
    }

    async fn list_jobs(
        &self,
        request: Request<v1::ListJobsRequest>,
    ) -> GrpcResult<v1::ListJobsReply> {
        let request = request.into_inner();
        let (jobs, next) = self
            .0
            .list(non_empty(&request.after), page_limit(request.limit))
            .await?;
        Ok(Response::new(v1::ListJobsReply {
            jobs,
            next_after: next.unwrap_or_default(),
        }))
    }

    async fn list_tasks(
        &self,
        request: Request<v1::ListTasksRequest>,
    ) -> GrpcResult<v1::ListTasksReply> {
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
        let state = self.0.cancel(&request.into_inner().job_id).await?;
        Ok(Response::new(v1::CancelReply {
            state: state.to_proto().into(),
        }))
    }

    type FetchBlobStream = GrpcStream<v1::BlobChunk>;

    async fn fetch_blob(&self, request: Request<v1::BlobRef>) -> GrpcResult<Self::FetchBlobStream> {
        Ok(Response::new(
            send_blob(&self.0, &request.into_inner().digest).await?,
        ))
    }

    async fn list_workers(
        &self,
        _request: Request<v1::ListWorkersRequest>,
    ) -> GrpcResult<v1::ListWorkersReply> {
        Ok(Response::new(v1::ListWorkersReply {
            workers: self.0.workers().await?,
        }))
    }

    async fn clear_blocklist(
        &self,
        request: Request<v1::ClearBlocklistRequest>,
    ) -> GrpcResult<v1::ClearBlocklistReply> {
        let request = request.into_inner();
        let cleared = self
            .0
            .clear_blocklist(&request.job_id, &request.worker_id)
            .await?;
        Ok(Response::new(v1::ClearBlocklistReply { cleared }))
    }

    async fn retry(&self, request: Request<v1::JobRef>) -> GrpcResult<v1::RetryReply> {
        let job_id = request.into_inner().job_id;
        let retried = self.0.retry(&job_id).await?;
        Ok(Response::new(v1::RetryReply {
            retried,
            job: Some(self.0.status(&job_id).await?),
        }))
    }

    async fn suspend(&self, request: Request<v1::JobRef>) -> GrpcResult<v1::JobStatus> {
        Ok(Response::new(
            self.0.suspend(&request.into_inner().job_id).await?,
        ))
    }

    async fn resume(&self, request: Request<v1::JobRef>) -> GrpcResult<v1::JobStatus> {
        Ok(Response::new(
            self.0.resume(&request.into_inner().job_id).await?,
        ))
    }

    async fn set_priority(
        &self,
        request: Request<v1::SetPriorityRequest>,
    ) -> GrpcResult<v1::JobStatus> {
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
        let request = request.into_inner();
        Ok(Response::new(
            self.0.set_pinned(&request.job_id, request.pinned).await?,
        ))
    }

    async fn delete_job(
        &self,
        request: Request<v1::DeleteJobRequest>,
    ) -> GrpcResult<v1::DeleteJobReply> {
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

#[tonic::async_trait]
impl WorkerApi for WorkerService {
    async fn start_task(
        &self,
        request: Request<v1::StartTaskRequest>,
    ) -> GrpcResult<v1::StartTaskReply> {
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
            .0
            .start_task(&request.task_id, &request.worker_id, request.delivery)
            .instrument(span)
            .await?;
        let (verdict, reason) = match verdict {
            StartVerdict::Run => (v1::StartVerdict::Run, String::new()),
            StartVerdict::Drop(reason) => (v1::StartVerdict::Drop, reason),
            StartVerdict::HandBack(reason) => (v1::StartVerdict::HandBack, reason),
        };
        Ok(Response::new(v1::StartTaskReply {
            verdict: verdict.into(),
            reason,
        }))
    }

    type FetchSourceStream = GrpcStream<v1::BlobChunk>;

    async fn fetch_source(
        &self,
        request: Request<v1::BlobRef>,
    ) -> GrpcResult<Self::FetchSourceStream> {
        let span = following(tracing::info_span!("send_blob"), &request);
        Ok(Response::new(
            send_blob(&self.0, &request.into_inner().digest)
                .instrument(span)
                .await?,
        ))
    }

    async fn report_progress(
        &self,
        request: Request<v1::ProgressRequest>,
    ) -> GrpcResult<v1::ProgressReply> {
        let request = request.into_inner();
        let cancel = self
            .0
            .progress(
                &request.task_id,
                &request.worker_id,
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
        let span = following(tracing::info_span!("receive_blob"), &request);
        Ok(Response::new(
            receive_blob(&self.0, request.into_inner())
                .instrument(span)
                .await?,
        ))
    }

    async fn complete_task(
        &self,
        request: Request<v1::CompleteTaskRequest>,
    ) -> GrpcResult<v1::CompleteTaskReply> {
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
        self.0
            .complete_task(
                &request.task_id,
                &request.worker_id,
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
        let final_failure = self
            .0
            .fail_task(
                &request.task_id,
                &request.worker_id,
                &request.error,
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
}

/// Serves both services on `listener` until `shutdown` resolves.
pub async fn serve(
    coordinator: &Coordinator,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Error> {
    let (jobs, workers) = services(coordinator);
    // grpc.health.v1: the farm's services are SERVING while this server runs (`/readyz` on the
    // HTTP port also checks NATS and etcd).
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<JobApiServer<JobService>>().await;
    health.set_serving::<WorkerApiServer<WorkerService>>().await;
    tonic::transport::Server::builder()
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
