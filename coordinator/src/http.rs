//! The farm's HTTP endpoints, served by [`serve`]: Prometheus metrics and health probes for the
//! coordinator and for workers, and the coordinator's dashboard ([`crate::dashboard`]).
//!
//! - `/metrics`: the process's metrics as Prometheus (OpenMetrics) text.
//! - `/healthz`: 200 while the process runs (liveness).
//! - `/readyz`: 200 when it can do its work, 503 with the reason when not (readiness).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::error::{Error, Result};

/// Why a process is not ready, or `None` when it is.
pub type Readiness = Pin<Box<dyn Future<Output = Option<String>> + Send>>;

/// What the probe routes ask the process.
pub trait Observed: Send + Sync + 'static {
    /// The metrics as Prometheus text.
    fn metrics_text(&self) -> String;
    /// Resolves to `None` when ready, or the reason it is not.
    fn readiness(&self) -> Readiness;
}

/// `/metrics`, `/healthz` and `/readyz` for `observed`.
pub fn probe_routes(observed: Arc<dyn Observed>) -> Router {
    let metrics = Arc::clone(&observed);
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = Arc::clone(&metrics);
                async move {
                    (
                        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
                        metrics.metrics_text(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let observed = Arc::clone(&observed);
                async move { ready_response(observed.readiness().await) }
            }),
        )
}

fn ready_response(not_ready: Option<String>) -> Response {
    match not_ready {
        None => (StatusCode::OK, "ready\n".to_owned()).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
            .into_response(),
    }
}

/// Listens on `address` (TCP): the HTTP endpoints' listeners and the coordinator's gRPC one.
///
/// # Errors
/// [`Error::Connect`] when the address cannot be listened on.
pub async fn bind(address: &str) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| Error::Connect {
            url: address.to_owned(),
            reason: format!("cannot listen: {e}"),
        })
}

/// How long connections still open at shutdown get to finish. Event streams never finish by
/// themselves (a browser keeps its dashboard open), so after this the server stops regardless.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Serves `router` on `listener` until `shutdown` resolves; then waits up to
/// [`SHUTDOWN_GRACE`] for requests in flight, and returns.
pub async fn serve(
    router: axum::Router,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let address = listener
        .local_addr()
        .map_or_else(|_| "HTTP server".to_owned(), |address| address.to_string());
    let (stopping, mut stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stopping.send(true);
    });
    let mut graceful = stopped.clone();
    let server = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = graceful.wait_for(|stop| *stop).await;
        })
        .into_future();
    let deadline = async move {
        // A dropped sender (the spawned task ended without sending) means no shutdown signal
        // came: keep serving.
        if stopped.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = server => served.map_err(|e| Error::Connect {
            url: address,
            reason: e.to_string(),
        }),
        () = deadline => {
            tracing::info!("HTTP connections still open at shutdown were closed");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    struct Fixed(Option<&'static str>);

    impl Observed for Fixed {
        fn metrics_text(&self) -> String {
            "lathe_test 1\n# EOF\n".to_owned()
        }
        fn readiness(&self) -> Readiness {
            let reason = self.0.map(str::to_owned);
            Box::pin(async move { reason })
        }
    }

    async fn get_status(router: Router, path: &str) -> (u16, String) {
        let listener = bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(router, listener, async move {
            let _ = stopped.await;
        }));
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .expect("request");
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.expect("reply");
        let _ = stop.send(());
        server.await.expect("server task").expect("server");
        let status = reply
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let body = reply
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        (status, body)
    }

    #[tokio::test]
    async fn probes_answer_and_readiness_gives_its_reason() {
        let ready = probe_routes(Arc::new(Fixed(None)));
        assert_eq!(get_status(ready.clone(), "/healthz").await.0, 200);
        assert_eq!(get_status(ready.clone(), "/readyz").await.0, 200);
        let (status, body) = get_status(ready, "/metrics").await;
        assert_eq!(status, 200);
        assert!(body.contains("lathe_test 1"), "{body}");
        let (status, body) = get_status(
            probe_routes(Arc::new(Fixed(Some("etcd unreachable")))),
            "/readyz",
        )
        .await;
        assert_eq!(status, 503);
        assert!(body.contains("etcd unreachable"), "{body}");
    }

    #[tokio::test]
    async fn serves_until_shutdown_even_with_a_connection_open() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let router = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(router, listener, async move {
            let _ = stopped.await;
        }));
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("request");
        let mut reply = vec![0; 512];
        let read = stream.read(&mut reply).await.expect("reply");
        assert!(String::from_utf8_lossy(&reply[..read]).contains("hello"));
        // The connection stays open (keep-alive); shutdown still ends the server.
        let _ = stop.send(());
        tokio::time::timeout(SHUTDOWN_GRACE * 3, server)
            .await
            .expect("the server stops")
            .expect("join")
            .expect("served");
    }
}
