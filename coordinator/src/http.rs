//! The coordinator's HTTP server (the dashboard), beside its gRPC server: axum on a listener the
//! caller bound, until a shutdown signal.

use std::future::Future;
use std::time::Duration;

use crate::error::{Error, Result};

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
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
