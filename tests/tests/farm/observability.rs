//! Watching a real farm (`nats-server -js`, `etcd`, the coordinator and workers as processes, see
//! `lathe_tests::farm`): the metrics move as a job runs and the backlog is the job's ready tasks,
//! the probes answer (and a worker cut off from etcd reports not ready), `grpc.health.v1` serves,
//! `LATHE_LOG_FORMAT=json` writes JSON lines, and every process's spans reach an OTLP collector as
//! one trace per job, a tree with every parent present and the engine's phases under each task,
//! the tasks a restarted coordinator dispatches included.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::BINARIES;
use lathe_tests::farm::{Farm, FarmOptions, serial, status_from_json_lines, write_catalogue};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::Value;

const LATHE: &str = env!("CARGO_BIN_EXE_farm-lathe");
const LONG: Duration = Duration::from_secs(300);
/// Tracks of the traced job: more than the one worker's slot plus the one task queued ahead.
const TRACKS: usize = 4;

/// `GET path` from `address`: the status code and the body.
fn http_get(address: &str, path: &str) -> (u16, String) {
    let Ok(mut stream) = std::net::TcpStream::connect(address) else {
        return (0, String::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    let status = reply
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of a series (`name{labels}` exactly as printed) in Prometheus text.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

/// Polls `address`'s `/metrics` until `condition` holds; returns that text.
fn wait_metrics(address: &str, what: &str, condition: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    loop {
        let (status, text) = http_get(address, "/metrics");
        if status == 200 && condition(&text) {
            return text;
        }
        assert!(
            started.elapsed() < LONG,
            "{what} did not happen within {LONG:?}; last metrics of {address}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Polls `address`'s `/readyz` until it answers `status`.
fn wait_ready_status(address: &str, status: u16) -> String {
    let started = Instant::now();
    loop {
        let (got, body) = http_get(address, "/readyz");
        if got == status {
            return body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{address}/readyz answered {got} ({body}), not {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn submit(farm: &Farm, sources: &Path) -> String {
    let outcome = farm.lathe(&[
        "submit",
        sources.to_str().expect("utf-8 path"),
        "--profile",
        "streaming",
        "--json",
    ]);
    assert_eq!(outcome.status, 0, "lathe submit: {}", outcome.stderr);
    let reply: Value = serde_json::from_str(&outcome.stdout).expect("submit --json");
    reply["job_id"].as_str().expect("job id").to_owned()
}

fn grpc_health(url: &str) -> i32 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
            .expect("endpoint")
            .connect()
            .await
            .expect("connect to the coordinator");
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        client
            .check(tonic_health::pb::HealthCheckRequest {
                service: "lathe.v1.JobApi".to_owned(),
            })
            .await
            .expect("grpc.health.v1 Check")
            .into_inner()
            .status
    })
}

#[test]
fn metrics_probes_and_logs_follow_a_real_job() {
    let _serial = serial();
    let options = FarmOptions {
        hold_renders: true,
        metrics: true,
        ..FarmOptions::default()
    };
    let Some(mut farm) = Farm::start(BINARIES, options) else {
        eprintln!("skipped: nats-server or etcd is not installed");
        return;
    };
    farm.start_worker_with_env("w1", &[("LATHE_LOG_FORMAT", "json")]);
    farm.start_worker("w2");
    let coordinator = farm.coordinator_http();
    for worker in ["w1", "w2"] {
        wait_ready_status(&farm.worker_http(worker), 200);
        assert_eq!(http_get(&farm.worker_http(worker), "/healthz").0, 200);
    }
    assert_eq!(http_get(&coordinator, "/healthz").0, 200);
    wait_ready_status(&coordinator, 200);
    assert_eq!(grpc_health(&farm.url()), 1, "SERVING");

    let sources = tempfile::tempdir().expect("sources");
    write_catalogue(sources.path(), 6, 1.0);
    let job = submit(&farm, sources.path());
    farm.wait_held("w1", LONG);
    farm.wait_held("w2", LONG);

    // Both workers hold a render: two tasks run, four are ready, and the backlog says four.
    let running = format!("lathe_job_tasks{{job=\"{job}\",state=\"running\"}}");
    let text = wait_metrics(&coordinator, "two tasks running", |text| {
        metric(text, &running) == Some(2.0) && metric(text, "lathe_backlog_tasks") == Some(4.0)
    });
    let status = status_from_json_lines(&farm.lathe(&["status", &job, "--json"]).stdout);
    let ready = status["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter(|task| task["state"] == "pending" || task["state"] == "queued")
        .count();
    assert_eq!(
        metric(&text, "lathe_backlog_tasks"),
        Some(ready as f64),
        "{status:#}"
    );
    assert_eq!(
        metric(&text, "lathe_worker_slots{state=\"total\"}"),
        Some(2.0)
    );
    assert_eq!(
        metric(&text, "lathe_worker_slots{state=\"busy\"}"),
        Some(2.0)
    );
    let worker_text = http_get(&farm.worker_http("w1"), "/metrics").1;
    assert_eq!(
        metric(&worker_text, "lathe_worker_slots_busy"),
        Some(1.0),
        "{worker_text}"
    );
    assert_eq!(metric(&worker_text, "lathe_worker_ready"), Some(1.0));

    // The job runs to its end: the backlog empties and the counters moved.
    farm.release_all();
    farm.wait_for_status(&job, LONG, |status| status["state"] == "succeeded");
    let text = wait_metrics(&coordinator, "the job's end", |text| {
        metric(text, "lathe_backlog_tasks") == Some(0.0)
            && metric(text, "lathe_tasks_finished_total{outcome=\"succeeded\"}") == Some(6.0)
    });
    assert!(
        !text.contains(&format!("job=\"{job}\"")),
        "a finished job leaves the label set"
    );
    assert!(metric(&text, "lathe_blob_bytes_received_total").is_some_and(|b| b > 0.0));
    assert!(metric(&text, "lathe_blob_bytes_sent_total").is_some_and(|b| b > 0.0));
    assert!(metric(&text, "lathe_dispatch_pass_seconds_count").is_some_and(|n| n > 0.0));
    let mut succeeded = 0.0;
    for worker in ["w1", "w2"] {
        let text = http_get(&farm.worker_http(worker), "/metrics").1;
        succeeded +=
            metric(&text, "lathe_worker_tasks_total{outcome=\"succeeded\"}").unwrap_or(0.0);
        if metric(&text, "lathe_worker_tasks_total{outcome=\"succeeded\"}").is_some() {
            for phase in ["fetch", "analyse", "chain", "verify", "upload", "complete"] {
                let series = format!("lathe_worker_phase_seconds_count{{phase=\"{phase}\"}}");
                assert!(
                    metric(&text, &series).is_some_and(|n| n > 0.0),
                    "{series}:\n{text}"
                );
            }
            assert!(metric(&text, "lathe_worker_realtime_factor_count").is_some_and(|n| n > 0.0));
            assert!(metric(&text, "lathe_worker_bytes_fetched_total").is_some_and(|b| b > 0.0));
            assert!(metric(&text, "lathe_worker_bytes_uploaded_total").is_some_and(|b| b > 0.0));
        }
    }
    assert_eq!(succeeded, 6.0, "every task settled once, on one worker");

    // LATHE_LOG_FORMAT=json: every line of w1's log is a JSON object with a level and fields.
    let log = farm.log("w1");
    assert!(log.lines().count() > 3, "{log}");
    for line in log.lines() {
        let event: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            event["level"].is_string() && event["fields"].is_object(),
            "{line}"
        );
    }
    assert!(log.contains("\"message\":\"task done\""), "{log}");

    // Cut off from etcd, the coordinator is not ready and a worker whose heartbeats keep failing
    // says so; both come back with etcd.
    farm.kill_etcd();
    let reason = wait_ready_status(&farm.worker_http("w1"), 503);
    assert!(reason.contains("heartbeat"), "{reason}");
    let reason = wait_ready_status(&coordinator, 503);
    assert!(reason.contains("state store"), "{reason}");
    let text = http_get(&farm.worker_http("w1"), "/metrics").1;
    assert!(metric(&text, "lathe_worker_heartbeat_failures_total").is_some_and(|n| n >= 3.0));
    assert_eq!(metric(&text, "lathe_worker_ready"), Some(0.0));
    let text = http_get(&coordinator, "/metrics").1;
    assert!(
        metric(&text, "lathe_store_errors_total{store=\"state\"}").is_some_and(|n| n > 0.0),
        "{text}"
    );
    farm.restart_etcd();
    wait_ready_status(&farm.worker_http("w1"), 200);
    wait_ready_status(&coordinator, 200);
}

/// A collector that keeps every span it is sent, with its service's name.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let request = request.into_inner();
        if let Ok(mut spans) = self.spans.lock() {
            for resource in request.resource_spans {
                let service = resource
                    .resource
                    .as_ref()
                    .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                    .and_then(|kv| kv.value.as_ref())
                    .and_then(|v| match &v.value {
                        Some(AnyValue::StringValue(name)) => Some(name.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                for scope in resource.scope_spans {
                    for span in scope.spans {
                        spans.push((service.clone(), span));
                    }
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// An attribute of a span, as text.
fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(AnyValue::StringValue(text)) => Some(text.clone()),
            Some(AnyValue::DoubleValue(x)) => Some(x.to_string()),
            Some(AnyValue::IntValue(x)) => Some(x.to_string()),
            Some(AnyValue::BoolValue(x)) => Some(x.to_string()),
            _ => None,
        })
}

#[test]
fn every_process_exports_one_trace_per_job_as_a_tree() {
    let _serial = serial();
    // The collector: an OTLP/gRPC receiver on a runtime of its own.
    let collector = Collector::default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind the collector");
    let port = listener.local_addr().expect("address").port();
    runtime.spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let options = FarmOptions {
        otlp_port: Some(port),
        hold_renders: true,
        ..FarmOptions::default()
    };
    let Some(mut farm) = Farm::start(BINARIES, options) else {
        eprintln!("skipped: nats-server or etcd is not installed");
        return;
    };
    farm.start_worker("w1");
    let sources = tempfile::tempdir().expect("sources");
    write_catalogue(sources.path(), TRACKS, 1.0);
    // The CLI as a process of its own, exporting its spans too.
    let submitted = std::process::Command::new(LATHE)
        .args(["submit", sources.path().to_str().expect("utf-8 path")])
        .args([
            "--profile",
            "streaming",
            "--json",
            "--coordinator",
            &farm.url(),
            "--token",
            farm.token(),
        ])
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        )
        .output()
        .expect("run lathe submit");
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let reply: Value = serde_json::from_slice(&submitted.stdout).expect("submit --json");
    let job = reply["job_id"].as_str().expect("job id").to_owned();
    // With the first render held on the only worker (one slot), the coordinator has dispatched
    // two tasks at most. It stops (flushing its spans, the job's among them) and a new process
    // takes over: the tasks it dispatches must join the job's trace all the same, from the trace
    // context stored with the job.
    farm.wait_held("w1", LONG);
    farm.stop_coordinator();
    let dispatches_of_job = |spans: &[(String, Span)]| {
        spans
            .iter()
            .filter(|(_, span)| {
                span.name == "dispatch"
                    && attribute(span, "lathe.job.id").as_deref() == Some(job.as_str())
            })
            .count()
    };
    let dispatched_before_restart = dispatches_of_job(&collector.spans.lock().expect("spans"));
    assert!(
        (1..TRACKS).contains(&dispatched_before_restart),
        "{dispatched_before_restart} of {TRACKS} tasks dispatched before the restart"
    );
    farm.start_coordinator();
    farm.release_all();
    farm.start_worker("w2");
    farm.wait_for_status(&job, LONG, |status| status["state"] == "succeeded");
    // Stopping the processes flushes their spans.
    for worker in ["w1", "w2"] {
        farm.signal_worker(worker, "TERM");
        assert_eq!(farm.wait_worker(worker, LONG), Some(0));
    }
    farm.stop_coordinator();

    let spans = collector.spans.lock().expect("spans").clone();
    let by_id: BTreeMap<Vec<u8>, &(String, Span)> = spans
        .iter()
        .map(|entry| (entry.1.span_id.clone(), entry))
        .collect();
    let named = |service: &str, name: &str| -> Vec<&Span> {
        spans
            .iter()
            .filter(|(s, span)| s == service && span.name == name)
            .map(|(_, span)| span)
            .collect()
    };
    // The CLI's span is the root; the job's span is in its trace.
    let cli = named("lathe", "lathe");
    assert_eq!(
        cli.len(),
        1,
        "one CLI span: {:?}",
        spans.iter().map(|s| (&s.0, &s.1.name)).collect::<Vec<_>>()
    );
    let root = cli[0];
    assert!(root.parent_span_id.is_empty(), "the CLI's span is the root");
    let trace = root.trace_id.clone();
    let jobs: Vec<&Span> = named("lathe-coordinator", "job")
        .into_iter()
        .filter(|span| attribute(span, "lathe.job.id").as_deref() == Some(job.as_str()))
        .collect();
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        jobs[0].trace_id, trace,
        "the job's span joins the CLI's trace"
    );

    // One trace per job: every span about the job is in it, and every parent is present.
    let in_trace: Vec<&(String, Span)> =
        spans.iter().filter(|(_, s)| s.trace_id == trace).collect();
    for (service, span) in &spans {
        if attribute(span, "lathe.job.id").as_deref() == Some(job.as_str()) {
            assert_eq!(
                span.trace_id, trace,
                "{service} {} is in another trace",
                span.name
            );
        }
    }
    for (service, span) in &in_trace {
        if !span.parent_span_id.is_empty() {
            assert!(
                by_id.contains_key(&span.parent_span_id),
                "{service} span {} has a parent that was never exported",
                span.name
            );
        }
    }
    let parent_of = |span: &Span| by_id.get(&span.parent_span_id).map(|(_, parent)| parent);

    // Each task: dispatch (coordinator, under the job) -> task (worker) -> its phases.
    let tasks: Vec<&Span> = named("lathe-worker", "task")
        .into_iter()
        .filter(|span| span.trace_id == trace)
        .collect();
    let task_ids: BTreeSet<String> = tasks
        .iter()
        .filter_map(|span| attribute(span, "lathe.task.id"))
        .collect();
    assert_eq!(task_ids.len(), TRACKS, "a task span for every track");
    assert!(
        dispatches_of_job(&spans) > dispatched_before_restart,
        "the restarted coordinator dispatched the rest of the job"
    );
    let services: BTreeSet<String> = in_trace
        .iter()
        .map(|(service, _)| service.clone())
        .collect();
    assert!(
        ["lathe", "lathe-coordinator", "lathe-worker"]
            .iter()
            .all(|s| services.contains(*s)),
        "{services:?}"
    );
    for task in &tasks {
        let dispatch = parent_of(task).expect("the task's parent");
        assert_eq!(dispatch.name, "dispatch");
        assert_eq!(parent_of(dispatch).map(|p| p.name.as_str()), Some("job"));
        assert!(attribute(task, "lathe.worker.id").is_some());
        assert!(attribute(task, "lathe.track").is_some_and(|t| t.ends_with(".wav")));
        for key in [
            "lathe.loudness.in_lufs",
            "lathe.loudness.out_lufs",
            "lathe.x_realtime",
        ] {
            assert!(
                attribute(task, key).is_some(),
                "{key} on {:?}",
                task.attributes
            );
        }
        let children = |parent: &Span| -> Vec<&Span> {
            spans
                .iter()
                .map(|(_, span)| span)
                .filter(|span| span.parent_span_id == parent.span_id)
                .collect()
        };
        let phases: BTreeSet<&str> = children(task).iter().map(|s| s.name.as_str()).collect();
        for phase in ["start", "fetch_source", "engine", "put_result", "complete"] {
            assert!(phases.contains(phase), "{phase} under the task: {phases:?}");
        }
        let engine = children(task)
            .into_iter()
            .find(|span| span.name == "engine")
            .expect("the engine span");
        let engine_phases: BTreeSet<&str> =
            children(engine).iter().map(|s| s.name.as_str()).collect();
        for phase in ["analyse", "chain", "calibrate", "verify"] {
            assert!(
                engine_phases.contains(phase),
                "{phase} under the engine: {engine_phases:?}"
            );
        }
        // The coordinator's spans for the worker's calls are children of the worker's.
        let start = children(task)
            .into_iter()
            .find(|span| span.name == "start")
            .expect("start");
        assert!(
            children(start).iter().any(|span| span.name == "start_task"),
            "the coordinator's start_task under the worker's start"
        );
    }
}
