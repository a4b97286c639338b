//! Real servers for tests: `nats-server -js` and `etcd` on free loopback ports with temporary data
//! folders, stopped (killed) when dropped.
//!
//! [`NatsServer::start`] and [`EtcdServer::start`] return `None`, after printing why, when the binary
//! is not installed, so that a developer without them can still run the rest of the tests; CI installs
//! both (`.ci/run`), so there they always run.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server gets to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A free loopback TCP port (bound and released; the OS does not hand it out again at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_or(0, |address| address.port())
}

fn installed(binary: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|folder| folder.join(binary).is_file())
    })
}

fn wait_for_port(port: u16, child: &mut Child, name: &str) -> std::io::Result<()> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    while started.elapsed() < START_TIMEOUT {
        if let Some(status) = child.try_wait()? {
            return Err(std::io::Error::other(format!(
                "{name} exited with {status} before listening"
            )));
        }
        if TcpStream::connect_timeout(&address, Duration::from_millis(100)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(std::io::Error::other(format!(
        "{name} did not listen on port {port} within {START_TIMEOUT:?}"
    )))
}

/// A process killed (and reaped) on drop.
#[derive(Debug)]
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `nats-server` with JetStream, on loopback.
#[derive(Debug)]
pub struct NatsServer {
    process: Option<Guard>,
    port: u16,
    data: tempfile::TempDir,
}

impl NatsServer {
    /// Starts one, or returns `None` (printing why) if `nats-server` is not installed.
    ///
    /// # Panics
    /// If it is installed but does not start.
    pub fn start() -> Option<Self> {
        if !installed("nats-server") {
            eprintln!("SKIPPED: nats-server is not installed (apt-get install nats-server)");
            return None;
        }
        let data = tempfile::tempdir().expect("temporary folder for nats-server");
        let mut server = Self {
            process: None,
            port: free_port(),
            data,
        };
        server.restart();
        Some(server)
    }

    /// Kills the server (as a crash would).
    pub fn kill(&mut self) {
        self.process = None;
    }

    /// Starts the server again on the same port with an empty data folder, as a server that lost
    /// its disk: every stream, consumer and message is gone.
    ///
    /// # Panics
    /// If it does not start.
    pub fn restart_fresh(&mut self) {
        self.process = None;
        self.data = tempfile::tempdir().expect("temporary folder for nats-server");
        self.restart();
    }

    /// Starts the server again on the same port and data folder (JetStream state survives).
    ///
    /// # Panics
    /// If it does not start.
    pub fn restart(&mut self) {
        self.process = None;
        let mut child = Command::new("nats-server")
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.data.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        wait_for_port(self.port, &mut child, "nats-server").expect("nats-server starts");
        self.process = Some(Guard(child));
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

/// A single-member `etcd` on loopback.
#[derive(Debug)]
pub struct EtcdServer {
    process: Option<Guard>,
    client_port: u16,
    peer_port: u16,
    data: tempfile::TempDir,
}

impl EtcdServer {
    /// Starts one, or returns `None` (printing why) if `etcd` is not installed.
    ///
    /// # Panics
    /// If it is installed but does not start.
    pub fn start() -> Option<Self> {
        if !installed("etcd") {
            eprintln!("SKIPPED: etcd is not installed (apt-get install etcd-server)");
            return None;
        }
        let mut server = Self {
            process: None,
            client_port: free_port(),
            peer_port: free_port(),
            data: tempfile::tempdir().expect("temporary folder for etcd"),
        };
        server.restart();
        Some(server)
    }

    /// Kills the server (as a crash would); its data stays.
    pub fn kill(&mut self) {
        self.process = None;
    }

    /// Starts the server again on the same ports and data folder.
    ///
    /// # Panics
    /// If it does not start.
    pub fn restart(&mut self) {
        self.process = None;
        let mut child = etcd_command(self.data.path(), self.client_port, self.peer_port)
            .spawn()
            .expect("spawn etcd");
        wait_for_port(self.client_port, &mut child, "etcd").expect("etcd starts");
        self.process = Some(Guard(child));
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Its data folder.
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }
}

fn etcd_command(data: &Path, client_port: u16, peer_port: u16) -> Command {
    let client = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let mut command = Command::new("etcd");
    command
        .arg("--data-dir")
        .arg(data)
        .args(["--name", "lathe-test"])
        .args(["--listen-client-urls", &client])
        .args(["--advertise-client-urls", &client])
        .args(["--listen-peer-urls", &peer])
        .args(["--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("lathe-test={peer}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}
