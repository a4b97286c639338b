//! W3C trace context for the farm: one job is one trace. The coordinator puts a `traceparent` on every
//! task message (a NATS header); the worker runs the task in a span carrying it and sends it with every
//! gRPC call about the task (`traceparent` metadata), where the coordinator records it in its own spans.
//! The trace id is derived from the job id, so every task of a job shares it; an OpenTelemetry exporter
//! can pick the context up from these spans without changing the protocol.

use sha2::{Digest as _, Sha256};

/// The header and metadata name.
pub const TRACEPARENT: &str = "traceparent";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `00-<trace id from the job>-<span id from the task and attempt>-01`.
pub fn traceparent(job_id: &str, task_id: &str, attempt: u32) -> String {
    let trace = Sha256::digest(job_id.as_bytes());
    let span = Sha256::digest(format!("{task_id}#{attempt}").as_bytes());
    format!("00-{}-{}-01", hex(&trace[..16]), hex(&span[..8]))
}

/// The trace id of a `traceparent`, if it is well formed.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (Some("00"), Some(trace), Some(span), Some(_flags)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    (trace.len() == 32 && span.len() == 16 && trace.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(trace)
}

/// A request carrying `traceparent` as metadata (left out if it is not valid metadata).
pub fn traced<T>(message: T, traceparent: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = traceparent.parse() {
        request.metadata_mut().insert(TRACEPARENT, value);
    }
    request
}

/// The `traceparent` a request carries, or an empty string.
pub fn of_request<T>(request: &tonic::Request<T>) -> String {
    request
        .metadata()
        .get(TRACEPARENT)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_of_one_job_share_the_trace_id() {
        let a = traceparent("job1", "job1.00000", 0);
        let b = traceparent("job1", "job1.00001", 0);
        let c = traceparent("job2", "job2.00000", 0);
        assert_eq!(a.len(), 55);
        assert_eq!(trace_id(&a), trace_id(&b));
        assert_ne!(trace_id(&a), trace_id(&c));
        assert_ne!(a, b, "each task is its own span");
        assert_eq!(trace_id("01-xyz"), None);
    }

    #[test]
    fn requests_carry_it_as_metadata() {
        let parent = traceparent("j", "j.00000", 1);
        assert_eq!(of_request(&traced((), &parent)), parent);
    }
}
