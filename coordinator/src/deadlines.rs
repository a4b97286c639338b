//! Per-call bounds on the gRPC server, as a tower layer ([`CallDeadlinesLayer`]) around every
//! route.
//!
//! One deadline for every call would cut the uploads: a client-streaming call (`PutBlob`,
//! `PutResult`) answers only once it has received its whole stream, up to 64 GiB, which takes
//! minutes. So the bounds depend on the call's shape:
//!
//! - A unary call must answer within [`CallDeadlines::call_timeout`]; past it the handler is
//!   dropped and the client gets `DEADLINE_EXCEEDED`.
//! - A server-streaming call (`FetchBlob`, `FetchSource`, `Watch`) must answer (start its stream)
//!   within the same time. Its stream is not timed: a download runs as fast as the client reads,
//!   a watch as long as the job runs; the connection's keepalive ends a client that is gone, and
//!   the concurrency limit per connection bounds how many a client holds.
//! - A client-streaming call (an upload) has no deadline but an idle timeout: while its handler
//!   waits for the next message, [`CallDeadlines::stream_idle_timeout`] without one ends the
//!   call with `DEADLINE_EXCEEDED` (a stalled client), however long the stream flows steadily.
//!   Time the handler spends on a message (writing it to disk) does not count as idle.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body::{Frame, SizeHint};
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http;

/// The default [`CallDeadlines::call_timeout`]: a unary call reads and writes a few etcd keys,
/// in milliseconds; 30 s is a store or a coordinator in trouble.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The default [`CallDeadlines::stream_idle_timeout`]: a client sends 1 MiB chunks back to
/// back, so a minute without one is a client that stalled or went away.
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The client-streaming methods of `lathe.proto` (full gRPC paths): idle timeout, no deadline.
pub const CLIENT_STREAMING: [&str; 2] =
    ["/lathe.v1.JobApi/PutBlob", "/lathe.v1.WorkerApi/PutResult"];

/// The time bounds of calls (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallDeadlines {
    /// The longest a call may take to answer, except an upload.
    pub call_timeout: Duration,
    /// The longest an upload may go without a message while the server waits for one.
    pub stream_idle_timeout: Duration,
}

/// A tower layer that bounds every call of the services under it by [`CallDeadlines`].
#[derive(Debug, Clone, Copy)]
pub struct CallDeadlinesLayer(pub CallDeadlines);

impl<S> tower::Layer<S> for CallDeadlinesLayer {
    type Service = Deadlined<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadlined {
            inner,
            deadlines: self.0,
        }
    }
}

/// The services under a [`CallDeadlinesLayer`].
#[derive(Debug, Clone)]
pub struct Deadlined<S> {
    inner: S,
    deadlines: CallDeadlines,
}

impl<S> tower::Service<http::Request<Body>> for Deadlined<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let CallDeadlines {
            call_timeout,
            stream_idle_timeout,
        } = self.deadlines;
        if CLIENT_STREAMING.contains(&request.uri().path()) {
            let request =
                request.map(|body| Body::new(IdleTimeoutBody::new(body, stream_idle_timeout)));
            return Box::pin(self.inner.call(request));
        }
        let path = request.uri().path().to_owned();
        let answer = self.inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout(call_timeout, answer).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    tracing::warn!(call = %path, timeout_s = call_timeout.as_secs_f64(), "call past its deadline: ended");
                    Ok(Status::deadline_exceeded(format!(
                        "{path} took longer than the server's limit of {} s",
                        call_timeout.as_secs_f64()
                    ))
                    .into_http())
                }
            }
        })
    }
}

/// A request body that fails with `DEADLINE_EXCEEDED` when its next frame takes longer than
/// `idle` to come, counted from when the handler asks for it.
struct IdleTimeoutBody {
    inner: Body,
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// The handler is waiting for a frame (the timer runs).
    waiting: bool,
}

impl IdleTimeoutBody {
    fn new(inner: Body, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            waiting: false,
        }
    }
}

impl http_body::Body for IdleTimeoutBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if !self.waiting {
            let deadline = tokio::time::Instant::now() + self.idle;
            self.timer.as_mut().reset(deadline);
            self.waiting = true;
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                self.waiting = false;
                Poll::Ready(frame)
            }
            Poll::Pending => match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.waiting = false;
                    Poll::Ready(Some(Err(Status::deadline_exceeded(format!(
                        "no message for {} s: the upload stalled",
                        self.idle.as_secs_f64()
                    )))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::CLIENT_STREAMING;

    /// Every client-streaming method of the protocol is in [`CLIENT_STREAMING`] (a new upload
    /// method left out would get the unary deadline and be cut), and nothing else is.
    #[test]
    fn the_client_streaming_methods_are_those_of_the_protocol() {
        let proto = include_str!("../../proto/proto/lathe.proto");
        let mut service = "";
        let mut found = Vec::new();
        for line in proto.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix("service ") {
                service = name.trim_end_matches(" {").trim();
            }
            if let Some(rpc) = line.strip_prefix("rpc ") {
                let (method, rest) = rpc.split_once('(').expect("an rpc line");
                if rest.starts_with("stream ") {
                    found.push(format!("/lathe.v1.{service}/{}", method.trim()));
                }
            }
        }
        found.sort();
        let mut listed: Vec<String> = CLIENT_STREAMING.iter().map(|p| (*p).to_owned()).collect();
        listed.sort();
        assert_eq!(found, listed);
    }
}
