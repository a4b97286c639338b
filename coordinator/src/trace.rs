//! Trace context across the farm: one job is one trace.
//!
//! The context travels as W3C `traceparent`/`tracestate`, written and read by OpenTelemetry's own
//! [`TraceContextPropagator`] through the carriers here: NATS message headers ([`HeaderInjector`],
//! [`HeaderExtractor`]) and gRPC metadata ([`MetadataInjector`], [`MetadataExtractor`]).
//!
//! - `lathe submit` sends its span's context with the request; the coordinator's `job` span is its
//!   child, and the job's context is stored with the job ([`context_headers`]), so every task
//!   dispatched later, even by a coordinator started since, is a child of it.
//! - The coordinator's `dispatch` span of a task puts its context on the task message; the worker's
//!   `task` span is its child; every call the worker makes about the task carries the context of
//!   the span making it ([`traced`]), and the coordinator's span for the call is its child
//!   ([`follow_request`]).
//!
//! Without an exporter ([`crate::telemetry`]) spans have no OpenTelemetry context: nothing is
//! injected and nothing is linked.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Writes a context into NATS message headers (name, value pairs).
#[derive(Debug)]
pub struct HeaderInjector<'a>(pub &'a mut Vec<(String, String)>);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.retain(|(name, _)| !name.eq_ignore_ascii_case(key));
        self.0.push((key.to_owned(), value));
    }
}

/// Reads a context from NATS message headers.
#[derive(Debug)]
pub struct HeaderExtractor<'a>(pub &'a [(String, String)]);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(key))
            .map(|(_, value)| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_str()).collect()
    }
}

/// Writes a context into gRPC request metadata (a value that is not valid metadata is left out).
#[derive(Debug)]
pub struct MetadataInjector<'a>(pub &'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            value.parse(),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// Reads a context from gRPC request metadata.
#[derive(Debug)]
pub struct MetadataExtractor<'a>(pub &'a tonic::metadata::MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|key| match key {
                tonic::metadata::KeyRef::Ascii(key) => Some(key.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// The context of `span` as headers (`traceparent`, and `tracestate` when it has one): what a job
/// stores and a task message carries. Empty when spans are not exported.
pub fn context_headers(span: &tracing::Span) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    TraceContextPropagator::new()
        .inject_context(&span.context(), &mut HeaderInjector(&mut headers));
    headers
}

/// Makes the context in `headers` (see [`context_headers`]) the parent of `span`; headers without
/// a valid context leave it as it is.
pub fn follow_headers(span: &tracing::Span, headers: &[(String, String)]) {
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if parent.has_active_span() {
        let _ = span.set_parent(parent);
    }
}

/// A request carrying the context of the current span, so that the server's span for it is a
/// child of the caller's.
pub fn traced<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    TraceContextPropagator::new().inject_context(
        &tracing::Span::current().context(),
        &mut MetadataInjector(request.metadata_mut()),
    );
    request
}

/// Makes the context a request carries the parent of `span` (the server's span for the call).
pub fn follow_request<T>(span: &tracing::Span, request: &tonic::Request<T>) {
    let parent = TraceContextPropagator::new().extract(&MetadataExtractor(request.metadata()));
    if parent.has_active_span() {
        let _ = span.set_parent(parent);
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, TraceFlags, TraceState};

    use super::*;

    fn remote_context() -> opentelemetry::Context {
        opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
            opentelemetry::trace::TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736")
                .expect("trace id"),
            opentelemetry::trace::SpanId::from_hex("00f067aa0ba902b7").expect("span id"),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ))
    }

    #[test]
    fn headers_carry_the_context_both_ways() {
        let mut headers = vec![("Nats-Msg-Id".to_owned(), "x".to_owned())];
        TraceContextPropagator::new()
            .inject_context(&remote_context(), &mut HeaderInjector(&mut headers));
        assert!(headers.contains(&(
            "traceparent".to_owned(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned()
        )));
        let extracted = TraceContextPropagator::new().extract(&HeaderExtractor(&headers));
        assert_eq!(
            extracted.span().span_context().trace_id(),
            remote_context().span().span_context().trace_id()
        );
        // Injecting again replaces the values rather than adding second headers.
        let count = headers.len();
        TraceContextPropagator::new()
            .inject_context(&remote_context(), &mut HeaderInjector(&mut headers));
        assert_eq!(headers.len(), count);
    }

    #[test]
    fn metadata_carries_the_context_both_ways() {
        let mut metadata = tonic::metadata::MetadataMap::new();
        TraceContextPropagator::new()
            .inject_context(&remote_context(), &mut MetadataInjector(&mut metadata));
        let extracted = TraceContextPropagator::new().extract(&MetadataExtractor(&metadata));
        assert_eq!(
            extracted.span().span_context().span_id(),
            remote_context().span().span_context().span_id()
        );
    }

    #[test]
    fn malformed_or_missing_context_is_no_parent() {
        let headers = vec![("traceparent".to_owned(), "01-xyz".to_owned())];
        let extracted = TraceContextPropagator::new().extract(&HeaderExtractor(&headers));
        assert!(!extracted.has_active_span());
        // Without an exporter a span has no context to inject.
        assert!(context_headers(&tracing::Span::none()).is_empty());
    }
}
