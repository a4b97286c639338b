//! One task, from delivery to acknowledgement.
//!
//! 0. Claim room in the scratch folder for its sources and masters ([`crate::scratch`]); a worker
//!    short of it hands the delivery back at once, before the coordinator counts an attempt, and
//!    pulls nothing for a while, so that another worker takes it.
//! 1. Ask the coordinator whether to run it (`StartTask`): it may be finished already, cancelled, out
//!    of attempts, or this worker may be blocklisted for its job.
//! 2. Stream the source into a temporary folder, verifying its digest (a graph task: its sources
//!    and its inputs, the files of the tasks it takes them from).
//! 3. Run the engine on a blocking thread (`render::master_track`, or a graph task's
//!    `album::execute::execute`); meanwhile report progress to the coordinator and send in-progress
//!    acks to the queue. A render past the task time limit is stopped like a cancelled one (at
//!    the engine's next progress call) and fails the attempt.
//! 4. Stream the master (a graph task: every file it wrote) back with its digest, then
//!    `CompleteTask`; only then ack the delivery.
//!
//! A failed attempt is reported (`FailTask`) and handed back for another attempt after a delay, or
//! terminated when the coordinator says it is out of attempts. A task whose job is cancelled, or that
//! the worker hands back while draining, stops the engine at its next progress call.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lathe_coordinator::blob::Digest;
use lathe_coordinator::client::{digest_file, file_chunks, receive_to_file};
use lathe_coordinator::grpc::{ATTEMPT_TOKEN_METADATA, TASK_ID_METADATA, WORKER_ID_METADATA};
use lathe_coordinator::queue::Delivery;
use lathe_coordinator::trace::traced;
use lathe_engine::album::execute as delivery_task;
use lathe_engine::render::{MasterRequest, Progress, master_track};
use lathe_model::delivery::plan::Work;
use lathe_model::profile::Profile;
use lathe_model::report::TrackReport;
use lathe_model::tags::TrackTags;
use lathe_proto::v1;
use prost::Message as _;
use tracing::Instrument;

use crate::context::{Phase, RunningTask, WorkerContext};
use crate::error::{Error, Result};
use crate::scratch::{self, Claim, NoRoom};

/// How long calls to the coordinator are retried while it is unreachable (a restart).
const COORDINATOR_PATIENCE: Duration = Duration::from_secs(120);

/// Handles one delivery to the end, in a `task` span that is a child of the coordinator's
/// `dispatch` span (the context the message carries), so it joins its job's trace; never fails
/// (every outcome settles the delivery).
pub(crate) async fn run_delivery(context: &WorkerContext, delivery: Delivery) {
    let span = tracing::info_span!(
        "task",
        lathe.job.id = tracing::field::Empty,
        lathe.task.id = tracing::field::Empty,
        lathe.track = tracing::field::Empty,
        lathe.worker.id = %context.settings.id,
        lathe.x_realtime = tracing::field::Empty,
        lathe.loudness.in_lufs = tracing::field::Empty,
        lathe.loudness.out_lufs = tracing::field::Empty,
        lathe.qc.passed = tracing::field::Empty,
    );
    lathe_coordinator::trace::follow_headers(&span, &delivery.headers);
    handle_delivery(context, delivery).instrument(span).await;
}

async fn handle_delivery(context: &WorkerContext, delivery: Delivery) {
    let settings = &context.settings;
    // The message names the task; what to run comes from the coordinator (`StartTask`).
    let task = match v1::Task::decode(delivery.payload.clone()) {
        Ok(task) => task,
        Err(error) => {
            tracing::error!(%error, "undecodable task message: terminated");
            let _ = delivery.term().await;
            context.observer.task_settled("dropped");
            return;
        }
    };
    let span = tracing::Span::current();
    span.record("lathe.task.id", task.task_id.as_str());
    span.record("lathe.track", task.source_name.as_str());
    if let Ok(job) = lathe_coordinator::record::job_of_task(&task.task_id) {
        span.record("lathe.job.id", job);
    }
    // Held until the task ends.
    let _room = match claim_room(context, &task) {
        Ok(claim) => claim,
        Err(no_room) => {
            let reason = no_room.to_string();
            tracing::warn!(task = %task.task_id, %reason, "no room for the task: left to another worker");
            context.observer.scratch_room(Some(reason));
            context.pause_pulling(scratch::NO_ROOM_PAUSE);
            let _ = delivery.nak(Some(settings.retry_delay)).await;
            context.observer.task_settled("no_room");
            return;
        }
    };
    // While the coordinator is unreachable (a restart), keep the delivery: retry, with in-progress
    // acks so that the queue does not hand it to another worker meanwhile.
    let asked = Instant::now();
    let start = holding(&delivery, settings.progress_interval, || {
        let mut workers = context.client.workers.clone();
        let request = v1::StartTaskRequest {
            task_id: task.task_id.clone(),
            worker_id: settings.id.clone(),
            delivery: delivery.delivery,
        };
        async move { workers.start_task(traced(request)).await }
    })
    .instrument(tracing::info_span!("start"))
    .await;
    let reply = match start {
        Ok(reply) => reply.into_inner(),
        Err(status) => {
            tracing::warn!(task = %task.task_id, %status, "coordinator unreachable: handing back");
            let _ = delivery.nak(Some(settings.retry_delay)).await;
            context.observer.task_settled("handed_back");
            return;
        }
    };
    let (task, attempt_token) = match reply.verdict() {
        v1::StartVerdict::Run => match reply.task {
            Some(stored) if stored.task_id == task.task_id => (stored, reply.attempt_token),
            _ => {
                tracing::warn!(task = %task.task_id, "the coordinator's reply holds no task: handing back");
                let _ = delivery.nak(Some(settings.retry_delay)).await;
                context.observer.task_settled("handed_back");
                return;
            }
        },
        v1::StartVerdict::HandBack => {
            tracing::info!(task = %task.task_id, reason = %reply.reason, "handing back");
            let _ = delivery.nak(Some(settings.retry_delay)).await;
            context.observer.task_settled("handed_back");
            return;
        }
        v1::StartVerdict::Drop | v1::StartVerdict::Unspecified => {
            tracing::info!(task = %task.task_id, reason = %reply.reason, "dropping delivery");
            let _ = delivery.ack().await;
            context.observer.task_settled("dropped");
            return;
        }
    };

    let running = Arc::new(RunningTask::new(task.task_id.clone(), attempt_token));
    running.timed(Phase::Start, asked);
    context.add_running(Arc::clone(&running));
    tracing::info!(task = %task.task_id, source = %task.source_name, delivery = delivery.delivery, "task running");
    let outcome = {
        let work = execute(context, &task, &running);
        tokio::pin!(work);
        let mut ticker = tokio::time::interval(settings.progress_interval);
        loop {
            tokio::select! {
                outcome = &mut work => break outcome,
                _ = ticker.tick() => {
                    report_progress(context, &task, &running, &delivery).await;
                }
            }
        }
    };
    context.remove_running(&running);

    match outcome {
        Ok(()) => {
            let acked = Instant::now();
            let _ = delivery.ack().await;
            let phases = running.phase_times();
            context.observer.task_settled("succeeded");
            for (phase, spent) in [
                ("start", phases.start),
                ("fetch", phases.fetch),
                ("upload", phases.upload),
                ("complete", phases.complete),
            ] {
                context.observer.phase(phase, spent.as_secs_f64());
            }
            let ms = |spent: Duration| spent.as_secs_f64() * 1e3;
            tracing::info!(
                task = %task.task_id,
                start_ms = ms(phases.start),
                fetch_ms = ms(phases.fetch),
                render_ms = ms(phases.render),
                upload_ms = ms(phases.upload),
                complete_ms = ms(phases.complete),
                ack_ms = ms(acked.elapsed()),
                "task done"
            );
        }
        Err(Error::Stopped(reason)) if running.job_cancelled() => {
            tracing::info!(task = %task.task_id, reason, "task stopped");
            let _ = delivery.ack().await;
            context.observer.task_settled("stopped");
        }
        Err(Error::Stopped(reason)) => {
            tracing::info!(task = %task.task_id, reason, "task handed back");
            let _ = delivery.nak(None).await;
            context.observer.task_settled("handed_back");
        }
        Err(Error::Farm(error)) if error.is_retryable() => {
            tracing::warn!(task = %task.task_id, %error, "farm unreachable: handing back");
            let _ = delivery.nak(Some(settings.retry_delay)).await;
            context.observer.task_settled("handed_back");
        }
        Err(error) => {
            let message = error.to_string();
            tracing::warn!(task = %task.task_id, error = %message, "task failed");
            context.observer.task_settled("failed");
            let request = v1::FailTaskRequest {
                task_id: task.task_id.clone(),
                worker_id: settings.id.clone(),
                delivery: delivery.delivery,
                error: message,
                input_fault: error.is_input_fault(),
                attempt_token: running.attempt_token.clone(),
            };
            let reply = holding(&delivery, settings.progress_interval, || {
                let mut workers = context.client.workers.clone();
                let request = request.clone();
                async move { workers.fail_task(traced(request)).await }
            })
            .instrument(tracing::info_span!("fail"))
            .await;
            match reply {
                Ok(reply) if reply.get_ref().r#final => {
                    let _ = delivery.term().await;
                }
                _ => {
                    let _ = delivery.nak(Some(settings.retry_delay)).await;
                }
            }
        }
    }
}

/// Claims scratch room for `task` (unless the worker takes every task: no
/// [`scratch_free`](crate::WorkerSettings::scratch_free)): the bytes its message says it fetches
/// and what the engine writes from them ([`scratch::needed_bytes`]), with the reserve to spare.
/// Room that cannot be measured (a scratch folder that cannot be created or read) is not a
/// refusal: the task's own use of the folder fails with the reason.
fn claim_room(context: &WorkerContext, task: &v1::Task) -> Result<Option<Claim>, NoRoom> {
    let settings = &context.settings;
    let Some(free_space) = settings.scratch_free else {
        return Ok(None);
    };
    let free = create_folder(&settings.scratch).and_then(|()| {
        free_space(&settings.scratch).map_err(|source| Error::Io {
            path: settings.scratch.clone(),
            source,
        })
    });
    let free = match free {
        Ok(free) => free,
        Err(error) => {
            tracing::warn!(%error, "the scratch folder's free space is unknown");
            return Ok(None);
        }
    };
    let claim = context.scratch.claim(
        free,
        scratch::needed_bytes(task.fetch_bytes),
        settings.scratch_reserve_bytes,
    )?;
    context.observer.scratch_room(None);
    Ok(Some(claim))
}

/// Sends an in-progress ack and the task's progress; a cancelled job stops the task.
async fn report_progress(
    context: &WorkerContext,
    task: &v1::Task,
    running: &RunningTask,
    delivery: &Delivery,
) {
    if let Err(error) = delivery.progress().await {
        tracing::warn!(task = %task.task_id, %error, "in-progress ack failed");
    }
    let (phase, fraction) = running
        .progress
        .lock()
        .map(|p| p.clone())
        .unwrap_or_default();
    let request = v1::ProgressRequest {
        task_id: task.task_id.clone(),
        worker_id: context.settings.id.clone(),
        phase,
        fraction,
        attempt_token: running.attempt_token.clone(),
    };
    let mut workers = context.client.workers.clone();
    match tokio::time::timeout(
        Duration::from_secs(2),
        workers.report_progress(traced(request)),
    )
    .await
    {
        Ok(Ok(reply)) if reply.get_ref().cancel => running.cancel(),
        Ok(Ok(_)) => {}
        Ok(Err(status)) => tracing::debug!(task = %task.task_id, %status, "progress not reported"),
        Err(_) => tracing::debug!(task = %task.task_id, "progress report timed out"),
    }
}

/// Retries `call` while the coordinator is unreachable (it may be restarting), for up to
/// [`COORDINATOR_PATIENCE`].
async fn with_patience<T, F, Fut>(mut call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let started = tokio::time::Instant::now();
    loop {
        match call().await {
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
                ) && started.elapsed() < COORDINATOR_PATIENCE =>
            {
                tracing::debug!(%status, "coordinator unreachable; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            outcome => return outcome,
        }
    }
}

/// [`with_patience`] while holding `delivery`: in-progress acks every `interval` meanwhile.
async fn holding<T, F, Fut>(
    delivery: &Delivery,
    interval: Duration,
    call: F,
) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let work = with_patience(call);
    tokio::pin!(work);
    let mut ticker = tokio::time::interval(interval);
    loop {
        tokio::select! {
            outcome = &mut work => return outcome,
            _ = ticker.tick() => {
                let _ = delivery.progress().await;
            }
        }
    }
}

/// A plain file name (no folders), so that a task cannot write outside its scratch folder.
fn plain_name(name: &str) -> Result<&str> {
    let path = Path::new(name);
    match path.file_name() {
        Some(file) if file == path.as_os_str() && !name.starts_with('.') => Ok(name),
        _ => Err(invalid(format!("{name:?} is not a plain file name"))),
    }
}

/// A refusal of a malformed task message.
fn invalid(reason: String) -> Error {
    Error::Farm(lathe_coordinator::Error::InvalidRequest(reason))
}

/// Creates `path` (and its parents).
fn create_folder(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A scratch folder for one task, removed when dropped.
fn task_folder(context: &WorkerContext) -> Result<tempfile::TempDir> {
    let scratch = &context.settings.scratch;
    create_folder(scratch)?;
    tempfile::Builder::new()
        .prefix("lathe-task-")
        .tempdir_in(scratch)
        .map_err(|source| Error::Io {
            path: scratch.clone(),
            source,
        })
}

/// Streams blob `digest`, a source or input of the task `running` holds, into `path`, verified
/// against it; in the coordinator's process, `path` links to the blob's file, checked.
async fn fetch_blob(
    context: &WorkerContext,
    running: &RunningTask,
    digest: &str,
    path: &Path,
) -> Result<()> {
    if let Some(blobs) = &context.settings.local_blobs {
        // In the coordinator's process: the blob's own file, checked, under the task's name for it.
        let file = blobs.verified_file(&Digest::parse(digest)?).await?;
        return std::os::unix::fs::symlink(&file, path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        });
    }
    with_patience(|| {
        let mut workers = context.client.workers.clone();
        let request = v1::SourceRequest {
            digest: digest.to_owned(),
            task_id: running.task_id.clone(),
            attempt_token: running.attempt_token.clone(),
            worker_id: context.settings.id.clone(),
        };
        let path = path.to_path_buf();
        async move {
            let digest = request.digest.clone();
            let stream = workers.fetch_source(traced(request)).await?.into_inner();
            receive_to_file(stream, &digest, &path)
                .await
                .map_err(tonic::Status::from)
        }
    })
    .instrument(tracing::info_span!("fetch_source", lathe.blob = %digest))
    .await?;
    if let Ok(metadata) = tokio::fs::metadata(path).await {
        context.observer.fetched(metadata.len());
    }
    Ok(())
}

/// Uploads a file the task `running` holds wrote (`PutResult`, digest verified by the
/// coordinator), or in the coordinator's process moves it into the blob store; returns its digest.
async fn put_result(context: &WorkerContext, running: &RunningTask, path: &Path) -> Result<String> {
    if let Some(blobs) = &context.settings.local_blobs {
        // In the coordinator's process: the file moves into its blob store.
        return Ok(blobs.adopt_by_moving(path).await?.to_string());
    }
    let digest = digest_file(path).await?;
    let metadata = [
        (TASK_ID_METADATA, running.task_id.as_str()),
        (WORKER_ID_METADATA, context.settings.id.as_str()),
        (ATTEMPT_TOKEN_METADATA, running.attempt_token.as_str()),
    ]
    .map(|(key, value)| (key, value.parse::<tonic::metadata::MetadataValue<_>>().ok()));
    with_patience(|| {
        let mut workers = context.client.workers.clone();
        let path = path.to_path_buf();
        let metadata = metadata.clone();
        async move {
            let chunks = file_chunks(&path, digest)
                .await
                .map_err(tonic::Status::from)?;
            let mut request = traced(chunks);
            for (key, value) in metadata {
                let value = value.ok_or_else(|| {
                    tonic::Status::invalid_argument(format!("{key} is not printable ASCII"))
                })?;
                request.metadata_mut().insert(key, value);
            }
            workers.put_result(request).await
        }
    })
    .instrument(tracing::info_span!("put_result", lathe.blob = %digest))
    .await?;
    if let Ok(metadata) = tokio::fs::metadata(path).await {
        context.observer.uploaded(metadata.len());
    }
    Ok(digest.to_string())
}

/// Runs `work` on a blocking thread, in an `engine` span under the task's (the engine's own
/// phase spans nest under it), with a progress callback that records the engine's progress and
/// the time of each of its phases, and stops the engine (by returning [`ControlFlow::Break`]) when
/// the task is told to stop or the task time limit has passed since the engine started. Engine
/// errors name files as the client knows them: the scratch `folder` is cut from their paths.
async fn on_engine_thread<T: Send + 'static>(
    context: &WorkerContext,
    running: &Arc<RunningTask>,
    folder: &Path,
    work: impl FnOnce(&mut dyn FnMut(Progress) -> ControlFlow<()>) -> lathe_engine::Result<T>
    + Send
    + 'static,
) -> Result<T> {
    let engine_task = Arc::clone(running);
    let observer = Arc::clone(&context.observer);
    let span = tracing::info_span!("engine");
    // None: a limit too far off to count.
    let deadline = Instant::now().checked_add(context.settings.task_time_limit);
    let engine = tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let mut phase: Option<(lathe_engine::progress::Phase, Instant)> = None;
        let outcome = work(&mut |progress| {
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                engine_task.time_out();
            }
            if phase.is_none_or(|(current, _)| current != progress.phase) {
                if let Some((ended, since)) = phase.replace((progress.phase, Instant::now())) {
                    observer.phase(ended.as_str(), since.elapsed().as_secs_f64());
                }
            }
            if let Ok(mut current) = engine_task.progress.lock() {
                *current = (progress.phase.as_str().to_owned(), progress.fraction);
            }
            #[cfg(feature = "testing")]
            crate::testing::hold(&engine_task.task_id, || engine_task.stop_reason().is_some());
            if engine_task.stop_reason().is_some() {
                // The engine stops at this block, removes its temporary files and returns
                // `Error::Cancelled`.
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        });
        if let (Ok(_), Some((ended, since))) = (&outcome, phase) {
            observer.phase(ended.as_str(), since.elapsed().as_secs_f64());
        }
        outcome
    });
    let outcome = match engine.await {
        Ok(Err(lathe_engine::Error::Cancelled)) => {
            return Err(stopped(context, running));
        }
        Ok(outcome) => outcome.map_err(|error| {
            let mut message = error.to_string();
            for part in [SOURCES, INPUTS, OUTPUTS, ""] {
                message = message.replace(&format!("{}/", folder.join(part).display()), "");
            }
            Error::Track {
                message: message.replace(&format!("{}/", folder.display()), ""),
                input_fault: error.is_input_fault(),
            }
        })?,
        Err(error) if error.is_panic() => {
            let payload = error.into_panic();
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            return Err(Error::Panicked(message));
        }
        Err(error) => return Err(Error::Panicked(error.to_string())),
    };
    if running.stop_reason().is_some() {
        return Err(stopped(context, running));
    }
    Ok(outcome)
}

/// Why the engine stopped: the task time limit, or what told the task to stop.
fn stopped(context: &WorkerContext, running: &RunningTask) -> Error {
    if running.timed_out() {
        Error::TimedOut {
            limit_s: context.settings.task_time_limit.as_secs_f64(),
        }
    } else {
        Error::Stopped(running.stop_reason().unwrap_or("stopped"))
    }
}

/// Puts what the engine measured on the task's span (loudness in and out, speed, QC) and in the
/// worker's metrics.
fn observe_report(context: &WorkerContext, report: &TrackReport, engine_time: Duration) {
    let span = tracing::Span::current();
    if let Some(lufs) = report.input_analysis.integrated_lufs {
        span.record("lathe.loudness.in_lufs", lufs);
    }
    if let Some(lufs) = report.output_analysis.integrated_lufs {
        span.record("lathe.loudness.out_lufs", lufs);
    }
    span.record("lathe.qc.passed", report.qc.passed);
    let seconds = engine_time.as_secs_f64();
    if seconds > 0.0 {
        let factor = report.input_analysis.duration_s / seconds;
        span.record("lathe.x_realtime", factor);
        context.observer.realtime_factor(factor);
    }
    if !report.qc.passed {
        context.observer.qc_failed();
    }
}

/// Reports the task done (its files already uploaded).
async fn complete(context: &WorkerContext, request: v1::CompleteTaskRequest) -> Result<()> {
    with_patience(|| {
        let mut workers = context.client.workers.clone();
        let request = request.clone();
        async move { workers.complete_task(traced(request)).await }
    })
    .instrument(tracing::info_span!("complete"))
    .await?;
    Ok(())
}

/// A graph task's scratch subfolders: its sources, its inputs (one numbered folder each, so that
/// two inputs may share a file name) and the files it writes.
const SOURCES: &str = "src";
const INPUTS: &str = "in";
const OUTPUTS: &str = "out";

async fn execute(
    context: &WorkerContext,
    task: &v1::Task,
    running: &Arc<RunningTask>,
) -> Result<()> {
    if !task.work_json.is_empty() {
        return execute_graph(context, task, running).await;
    }
    if task.kind != lathe_coordinator::plan::RENDER {
        return Err(invalid(format!("unknown task kind {:?}", task.kind)));
    }
    let profile = Profile::from_toml(&task.profile_toml, &task.task_id)?;
    let folder = task_folder(context)?;
    let source = folder.path().join(plain_name(&task.source_name)?);
    let output_folder = folder.path().join("out");
    create_folder(&output_folder)?;
    // The output name may carry folders (an album's); the worker writes only its file name.
    let output_file = Path::new(&task.output_name)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let output = output_folder.join(plain_name(&output_file)?);
    let tags = if task.tags_json.is_empty() {
        TrackTags::default()
    } else {
        serde_json::from_str(&task.tags_json)
            .map_err(|e| invalid(format!("task {}: tags_json: {e}", task.task_id)))?
    };

    // 2. The source, verified.
    let since = Instant::now();
    fetch_blob(context, running, &task.source_digest, &source).await?;
    running.timed(Phase::Fetch, since);

    // 3. The engine, on a blocking thread.
    let since = Instant::now();
    let mut report = {
        let source = source.clone();
        let output = output.clone();
        on_engine_thread(context, running, folder.path(), move |progress| {
            let request = MasterRequest {
                input: &source,
                output: &output,
                profile: &profile,
                tags,
                level: None,
                fades: None,
            };
            master_track(&request, progress)
        })
        .await?
    };
    running.timed(Phase::Render, since);
    observe_report(context, &report, since.elapsed());

    // 4. The master back, with its digest; then the completion.
    let since = Instant::now();
    let digest = put_result(context, running, &output).await?;
    running.timed(Phase::Upload, since);
    report.input = PathBuf::from(&task.source_name);
    report.output = PathBuf::from(&task.output_name);
    // Compact: the coordinator stores it with the task (in etcd, on a farm).
    let report_json = serde_json::to_string(&report).unwrap_or_default();
    let request = v1::CompleteTaskRequest {
        task_id: task.task_id.clone(),
        worker_id: context.settings.id.clone(),
        attempt_token: running.attempt_token.clone(),
        output_digest: digest,
        report_json,
        outputs: Vec::new(),
    };
    let since = Instant::now();
    complete(context, request).await?;
    running.timed(Phase::Complete, since);
    Ok(())
}

/// A task of a graph job: its sources and inputs fetched into the scratch folder, the engine's
/// `album::execute::execute`, every file it wrote uploaded, and its outcome as the report.
async fn execute_graph(
    context: &WorkerContext,
    task: &v1::Task,
    running: &Arc<RunningTask>,
) -> Result<()> {
    let work: Work = serde_json::from_str(&task.work_json)
        .map_err(|e| invalid(format!("task {}: work_json: {e}", task.task_id)))?;
    if task.source_digests.len() != task.source_names.len() {
        return Err(invalid(format!(
            "task {}: {} source digests but {} names",
            task.task_id,
            task.source_digests.len(),
            task.source_names.len()
        )));
    }
    let folder = task_folder(context)?;
    let out = folder.path().join(OUTPUTS);
    create_folder(&out)?;

    let since = Instant::now();
    let mut sources = Vec::with_capacity(task.source_digests.len());
    for (digest, name) in task.source_digests.iter().zip(&task.source_names) {
        let path = folder.path().join(SOURCES).join(plain_name(name)?);
        create_folder(folder.path().join(SOURCES).as_path())?;
        fetch_blob(context, running, digest, &path).await?;
        sources.push(path);
    }
    let mut inputs = Vec::with_capacity(task.inputs.len());
    for (index, input) in task.inputs.iter().enumerate() {
        let name = Path::new(&input.path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let holder = folder.path().join(INPUTS).join(index.to_string());
        create_folder(&holder)?;
        let path = holder.join(plain_name(&name)?);
        fetch_blob(context, running, &input.digest, &path).await?;
        inputs.push(path);
    }

    running.timed(Phase::Fetch, since);
    let since = Instant::now();
    let outcome = {
        let out = out.clone();
        on_engine_thread(context, running, folder.path(), move |progress| {
            delivery_task::execute(&work, &sources, &inputs, &out, progress)
        })
        .await?
    };
    running.timed(Phase::Render, since);

    let since = Instant::now();
    let mut outputs = Vec::with_capacity(outcome.files.len());
    for file in &outcome.files {
        if !lathe_coordinator::graph::is_inside(&file.path) {
            return Err(invalid(format!(
                "task {}: the engine wrote {:?}, outside its output folder",
                task.task_id, file.path
            )));
        }
        let digest = put_result(context, running, &out.join(&file.path)).await?;
        outputs.push(v1::OutputFile {
            path: file.path.clone(),
            digest,
            delivered: file.delivered,
        });
    }
    let report_json = serde_json::to_string(&outcome)
        .map_err(|e| invalid(format!("task {}: outcome: {e}", task.task_id)))?;
    let request = v1::CompleteTaskRequest {
        task_id: task.task_id.clone(),
        worker_id: context.settings.id.clone(),
        attempt_token: running.attempt_token.clone(),
        output_digest: String::new(),
        report_json,
        outputs,
    };
    running.timed(Phase::Upload, since);
    let since = Instant::now();
    complete(context, request).await?;
    running.timed(Phase::Complete, since);
    Ok(())
}
