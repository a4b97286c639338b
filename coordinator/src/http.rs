//! The farm's HTTP endpoints, served by [`serve`]: Prometheus metrics and health probes for the
//! coordinator and for workers, and the coordinator's dashboard ([`crate::dashboard`]), which is
//! served over TLS ([`TlsListener`]) when the coordinator has a certificate.
//!
//! - `/metrics`: the process's metrics as Prometheus (OpenMetrics) text.
//! - `/healthz`: 200 while the process runs (liveness).
//! - `/readyz`: 200 when it can do its work, 503 with the reason when not (readiness).
//!
//! The probes need no session: they carry no job's name, owner or file and no secret (the
//! metrics name running jobs by id only, with their task counts; see [`crate::metrics`]).

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::Listener;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;

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

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS handshakes under way at once; further connections wait in the listen backlog.
const MAX_HANDSHAKES: usize = 256;

/// The TLS configuration of an HTTPS server: the certificate chain `cert` and its key `key`
/// (PEM; the coordinator's, the files of `--tls-cert` and `--tls-key`), no client certificate
/// asked for, HTTP/1.1.
///
/// # Errors
/// [`Error::Io`] when a file cannot be read; [`Error::InvalidRequest`] when it holds no
/// certificate or key, or they do not match.
pub fn https_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>> {
    let read = |path: &Path| std::fs::read(path).map_err(|e| Error::io(path, e));
    let unusable = |path: &Path, what: &str, reason: String| {
        Error::InvalidRequest(format!("{}: {what}: {reason}", path.display()))
    };
    let chain = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| unusable(cert, "no certificate chain", e.to_string()))?;
    if chain.is_empty() {
        return Err(unusable(cert, "no certificate chain", "empty".to_owned()));
    }
    let private_key = PrivateKeyDer::from_pem_slice(&read(key)?)
        .map_err(|e| unusable(key, "no private key", e.to_string()))?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| unusable(cert, "TLS", e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, private_key)
            .map_err(|e| unusable(key, "not the key of the certificate", e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A listener of TLS connections for [`serve`]: TCP connections are accepted by a task of their
/// own and their handshakes run side by side, each within [`HANDSHAKE_TIMEOUT`] and at most
/// [`MAX_HANDSHAKES`] at once, so a client that never finishes one holds up nobody. A
/// connection whose handshake fails (a plain-HTTP request, a client that does not trust the
/// certificate) is closed and never reaches the router.
#[derive(Debug)]
pub struct TlsListener {
    address: SocketAddr,
    handshaken: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Accepts TLS connections with `config` on `listener`.
    ///
    /// # Errors
    /// [`Error::Connect`] when the listener has no local address.
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>) -> Result<Self> {
        let address = listener.local_addr().map_err(|e| Error::Connect {
            url: "HTTPS listener".to_owned(),
            reason: e.to_string(),
        })?;
        let (handshaken_sender, handshaken) = mpsc::channel(MAX_HANDSHAKES);
        let accepting = tokio::spawn(accept_tls(
            listener,
            TlsAcceptor::from(config),
            handshaken_sender,
        ));
        Ok(Self {
            address,
            handshaken,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// Accepts TCP connections on `listener` and hands each to `handshaken` once its TLS handshake
/// is done (the [`TlsListener`] aborts it when dropped).
async fn accept_tls(
    mut listener: TcpListener,
    acceptor: TlsAcceptor,
    handshaken: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(permit) = Arc::clone(&handshakes).acquire_owned().await else {
            return;
        };
        let (stream, peer) = Listener::accept(&mut listener).await;
        let acceptor = acceptor.clone();
        let handshaken = handshaken.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                // The permit is held until the server has the connection.
                Ok(Ok(stream)) => {
                    let _ = handshaken.send((stream, peer)).await;
                }
                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
            drop(permit);
        });
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.handshaken.recv().await {
            Some(connection) => connection,
            // The accepting task ended (it does not while the listener lives): accept nothing.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.address)
    }
}

/// How long connections still open at shutdown get to finish. Event streams never finish by
/// themselves (a browser keeps its dashboard open), so after this the server stops regardless.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Serves `router` on `listener` (a [`TcpListener`], or a [`TlsListener`]) until `shutdown`
/// resolves; then waits up to [`SHUTDOWN_GRACE`] for requests in flight, and returns.
pub async fn serve<L>(
    router: axum::Router,
    listener: L,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()>
where
    L: Listener<Addr = SocketAddr>,
{
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

    /// The farm's CA and a server certificate issued from it (for `localhost`), in a folder.
    fn server_certificate() -> (tempfile::TempDir, std::path::PathBuf, Arc<ServerConfig>) {
        let pki = tempfile::tempdir().expect("temp dir");
        let (cert, key, ca) = crate::pki::test_server_certificate(pki.path());
        let config = https_config(&cert, &key).expect("TLS configuration");
        (pki, ca, config)
    }

    /// A client that trusts the CA in `ca`.
    fn client(ca: &Path) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(ca).expect("CA file");
        for certificate in CertificateDer::pem_slice_iter(&pem) {
            roots.add(certificate.expect("CA")).expect("a trusted CA");
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    #[tokio::test]
    async fn https_serves_with_the_certificate_and_refuses_plain_http() {
        let (_pki, ca, config) = server_certificate();
        let listener = bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let router = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let listener = TlsListener::new(listener, config).expect("TLS listener");
        let server = tokio::spawn(serve(router, listener, async move {
            let _ = stopped.await;
        }));

        // A client that starts no handshake, left waiting while the others are served.
        let idle = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");

        // Plain HTTP gets no page.
        let mut plain = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        plain
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("request");
        let mut reply = Vec::new();
        let _ = plain.read_to_end(&mut reply).await;
        assert!(
            !String::from_utf8_lossy(&reply).contains("hello"),
            "plain HTTP was served"
        );

        // A client that trusts the farm's CA is served.
        let tcp = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let mut tls = client(&ca).connect(name, tcp).await.expect("handshake");
        tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("request");
        let mut reply = Vec::new();
        let _ = tls.read_to_end(&mut reply).await;
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.contains("hello"), "{reply}");
        // The idle client's handshake is still waiting (not timed out and closed first): it held
        // up nobody.
        let mut byte = [0u8; 1];
        assert!(
            matches!(idle.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "the idle connection was closed before the next client was served"
        );

        let _ = stop.send(());
        server.await.expect("server task").expect("server");
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let (pki, _, _) = server_certificate();
        let (cert, _) = crate::pki::certificate_paths(pki.path(), "server");
        let other_key = pki.path().join("ca-key.pem");
        assert!(matches!(
            https_config(&cert, &other_key),
            Err(Error::InvalidRequest(_))
        ));
        assert!(matches!(
            https_config(&pki.path().join("absent.pem"), &other_key),
            Err(Error::Io { .. })
        ));
    }
}
