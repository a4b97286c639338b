//! The OpenTelemetry exporter against a real OTLP/gRPC receiver: a span whose parent came through
//! message headers (as a worker's `task` span follows the coordinator's `dispatch` span) reaches the
//! collector in its parent's trace, under its parent, with the process's service name.

use std::sync::{Arc, Mutex};

use lathe_coordinator::telemetry::exporting_provider;
use lathe_coordinator::trace::{context_headers, follow_headers};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tracing_subscriber::layer::SubscriberExt;

/// A collector that keeps every export request.
#[derive(Clone, Default)]
struct Collector {
    received: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if let Ok(mut received) = self.received.lock() {
            received.push(request.into_inner());
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_span_is_exported_in_its_jobs_trace() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let provider = exporting_provider(&format!("http://{address}"), "lathe-test-worker").unwrap();
    let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "lathe-test-worker");
    let subscriber =
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer));
    let headers = tracing::subscriber::with_default(subscriber, || {
        let dispatch = tracing::info_span!("dispatch");
        let headers = context_headers(&dispatch);
        // The task span is made apart from the dispatch span, from the headers alone.
        let task = tracing::info_span!(parent: None, "task");
        follow_headers(&task, &headers);
        task.in_scope(|| tracing::info!("rendering"));
        headers
    });
    let parent = headers
        .iter()
        .find(|(name, _)| name == "traceparent")
        .map(|(_, value)| value.clone())
        .expect("a traceparent header");
    // Shutting down flushes the batch; it blocks, so off the runtime's threads.
    tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .unwrap()
        .unwrap();
    server.abort();

    let received = collector.received.lock().unwrap();
    let resource_spans: Vec<_> = received.iter().flat_map(|r| &r.resource_spans).collect();
    let spans: Vec<_> = resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .collect();
    assert_eq!(spans.len(), 2, "{spans:?}");
    let span = spans
        .iter()
        .find(|span| span.name == "task")
        .expect("the task span");
    let mut fields = parent.split('-').skip(1);
    assert_eq!(
        hex(&span.trace_id),
        fields.next().unwrap(),
        "the dispatch span's trace"
    );
    assert_eq!(
        hex(&span.parent_span_id),
        fields.next().unwrap(),
        "the dispatch span"
    );
    let service = resource_spans[0]
        .resource
        .as_ref()
        .unwrap()
        .attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.clone());
    assert_eq!(
        service,
        Some(Value::StringValue("lathe-test-worker".to_owned()))
    );
}
