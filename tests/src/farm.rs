//! A real farm for the guarantee tests: `nats-server -js`, `etcd`, the coordinator and workers as
//! separate processes (so that they can be killed), all on free loopback ports with their data and logs
//! in a temporary folder. Everything is killed when the [`Farm`] is dropped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lathe_coordinator::testing::{EtcdSecurity, EtcdServer, NatsSecurity, NatsServer, free_port};

/// How the farm's services are configured.
#[derive(Debug, Clone, Copy)]
pub struct FarmOptions {
    /// Seconds before an unacknowledged task is redelivered.
    pub ack_wait_s: f64,
    /// Attempts a task gets.
    pub max_attempts: u32,
    /// Failures in a row before a worker is blocklisted for a job.
    pub blocklist_after: u32,
    /// Workers hold every render at its first progress report until the test releases it
    /// ([`Farm::wait_held`], [`Farm::release`], [`Farm::release_all`]).
    pub hold_renders: bool,
    /// The coordinator serves its dashboard (`--http-listen` on a free port; [`Farm::http_url`]).
    pub http: bool,
    /// The coordinator and every worker serve `/metrics`, `/healthz` and `/readyz`
    /// ([`Farm::coordinator_http`], [`Farm::worker_http`]).
    pub metrics: bool,
    /// The port of an OTLP/gRPC collector on loopback that every process exports its spans to.
    pub otlp_port: Option<u16>,
    /// Every connection as `make farm` runs it: gRPC over TLS from the farm's CA with a
    /// certificate per worker, NATS with TLS and the users of `deploy/nats-auth.conf`, etcd with
    /// TLS and the users `lathe-coordinator etcd-users` makes. Otherwise plaintext on loopback
    /// (`--insecure-loopback`), without store credentials.
    pub secure: bool,
}

impl Default for FarmOptions {
    fn default() -> Self {
        Self {
            ack_wait_s: 4.0,
            max_attempts: 3,
            blocklist_after: 3,
            hold_renders: false,
            http: false,
            metrics: false,
            otlp_port: None,
            secure: false,
        }
    }
}

/// The environment variable that gives a farm worker its render gate (`lathe_worker::testing`).
pub const RENDER_GATE: &str = "LATHE_TEST_RENDER_GATE";

/// The service binaries: `CARGO_BIN_EXE_farm-coordinator` and `CARGO_BIN_EXE_farm-worker`, which
/// cargo gives the integration tests (not this library).
#[derive(Debug, Clone, Copy)]
pub struct Binaries {
    /// The coordinator.
    pub coordinator: &'static str,
    /// The worker.
    pub worker: &'static str,
}

/// The farm.
#[derive(Debug)]
pub struct Farm {
    nats: NatsServer,
    etcd: EtcdServer,
    /// Temporary folder: blobs, scratch, logs.
    pub dir: tempfile::TempDir,
    options: FarmOptions,
    binaries: Binaries,
    coordinator_port: u16,
    /// The coordinator's HTTP port (metrics and probes).
    coordinator_http_port: u16,
    /// Each worker's HTTP port (metrics and probes).
    worker_http_ports: BTreeMap<String, u16>,
    coordinator: Option<Child>,
    workers: BTreeMap<String, Child>,
    /// An admin client token, made when the farm starts.
    token: String,
    /// Set by [`Farm::release_all`]: workers started later hold nothing.
    released_all: bool,
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Farm {
    fn drop(&mut self) {
        if let Some(mut coordinator) = self.coordinator.take() {
            kill(&mut coordinator);
        }
        for child in self.workers.values_mut() {
            kill(child);
        }
        if std::thread::panicking() {
            // Leave the logs where a developer can read them.
            let logs = self.dir.path().join("logs");
            eprintln!("farm logs in {}", logs.display());
            if let Ok(entries) = std::fs::read_dir(&logs) {
                for entry in entries.flatten() {
                    let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(40).collect();
                    eprintln!("---- {} (last lines)", entry.path().display());
                    for line in tail.iter().rev() {
                        eprintln!("{line}");
                    }
                }
            }
        }
    }
}

/// `(name, path)` pairs as environment variables.
fn env_of(pairs: &[(&str, PathBuf)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, path)| ((*name).to_owned(), path.display().to_string()))
        .collect()
}

/// Runs `lathe-coordinator ARGS` (an administrative command) and checks that it succeeded.
fn run_coordinator_command(binaries: Binaries, args: &[&str]) {
    let output = Command::new(binaries.coordinator)
        .args(args)
        .output()
        .expect("run lathe-coordinator");
    assert!(
        output.status.success(),
        "lathe-coordinator {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A secure farm's servers, as `make farm` sets them up: the farm's CA and the servers'
/// certificate (`lathe-coordinator certs`) in `dir/tls`, random passwords in `dir/secrets`,
/// nats-server with TLS and the users of `deploy/nats-auth.conf`, etcd with TLS and the users
/// `lathe-coordinator etcd-users` makes; `None` when the servers are not installed.
fn secure_servers(binaries: Binaries, dir: &Path) -> Option<(NatsServer, EtcdServer)> {
    use lathe_coordinator::store_access::ClientIdentity;
    let (tls, secrets) = (dir.join("tls"), dir.join("secrets"));
    run_coordinator_command(binaries, &["certs", "--dir", &tls.display().to_string()]);
    std::fs::create_dir_all(&secrets).expect("secrets folder");
    let password = |name: &str| {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("random password");
        // `p` first: nats-server reads a password as a value of its configuration, and one that
        // began with a digit would be read as a number (deploy/nats-auth.conf).
        let text: String = std::iter::once("p".to_owned())
            .chain(bytes.iter().map(|b| format!("{b:02x}")))
            .collect();
        std::fs::write(secrets.join(name), &text).expect("write a password");
        text
    };
    let server = ClientIdentity {
        cert: tls.join("server.pem"),
        key: tls.join("server-key.pem"),
    };
    let ca = tls.join("ca.pem");
    let nats = NatsServer::start_secure(NatsSecurity {
        ca: ca.clone(),
        server: server.clone(),
        verify_clients: true,
        coordinator_password: password("nats-coordinator"),
        worker_password: password("nats-worker"),
    })?;
    let etcd = EtcdServer::start_secure(EtcdSecurity {
        ca: ca.clone(),
        server,
    })?;
    password("etcd-root");
    password("etcd-lathe");
    let path = |p: PathBuf| p.display().to_string();
    run_coordinator_command(
        binaries,
        &[
            "etcd-users",
            "--etcd",
            &etcd.url(),
            "--etcd-ca",
            &path(ca),
            "--etcd-cert",
            &path(tls.join("server.pem")),
            "--etcd-key",
            &path(tls.join("server-key.pem")),
            "--root-password-file",
            &path(secrets.join("etcd-root")),
            "--etcd-password-file",
            &path(secrets.join("etcd-lathe")),
        ],
    );
    Some((nats, etcd))
}

fn log_file(dir: &Path, name: &str) -> std::fs::File {
    let folder = dir.join("logs");
    std::fs::create_dir_all(&folder).expect("logs folder");
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(folder.join(format!("{name}.log")))
        .expect("log file")
}

impl Farm {
    /// Starts NATS, etcd and a coordinator (no workers yet); `None` when the servers are not
    /// installed (the test then skips, saying so).
    pub fn start(binaries: Binaries, options: FarmOptions) -> Option<Self> {
        let dir = tempfile::tempdir().expect("farm folder");
        let (nats, etcd) = if options.secure {
            secure_servers(binaries, dir.path())?
        } else {
            (NatsServer::start()?, EtcdServer::start()?)
        };
        let mut farm = Self {
            nats,
            etcd,
            dir,
            options,
            binaries,
            coordinator_port: free_port(),
            coordinator_http_port: free_port(),
            worker_http_ports: BTreeMap::new(),
            coordinator: None,
            workers: BTreeMap::new(),
            token: String::new(),
            released_all: false,
        };
        farm.token = farm.create_token("test-admin", "admin");
        farm.start_coordinator();
        Some(farm)
    }

    /// Makes a client token named `name` with `role` (`submit`, `read`, `admin`), as an operator
    /// would (`lathe-coordinator token create`); returns its text.
    pub fn create_token(&self, name: &str, role: &str) -> String {
        let output = Command::new(self.binaries.coordinator)
            .args(["token", "create", "--name", name, "--role", role])
            .args(["--etcd", &self.etcd.url()])
            .envs(self.etcd_env())
            .output()
            .expect("run lathe-coordinator token create");
        assert!(
            output.status.success(),
            "token create: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .expect("utf-8 token")
            .trim()
            .to_owned()
    }

    /// The admin token the farm made when it started.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// How an admin client reaches the coordinator.
    pub fn access(&self) -> lathe_coordinator::client::Access {
        let mut access =
            lathe_coordinator::client::Access::insecure(&self.url(), Some(self.token.clone()));
        if self.options.secure {
            access.tls = Some(
                lathe_coordinator::tls::ClientTls::load(&self.tls_dir().join("ca.pem"), None)
                    .expect("the farm's CA"),
            );
        }
        access
    }

    /// The coordinator's gRPC address.
    pub fn url(&self) -> String {
        let scheme = if self.options.secure { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.coordinator_port)
    }

    /// The farm's CA and certificates (a secure farm's; [`FarmOptions::secure`]).
    fn tls_dir(&self) -> PathBuf {
        self.dir.path().join("tls")
    }

    /// The variables that give the coordinator (and its token command) TLS and the `lathe` user
    /// to etcd, on a secure farm.
    fn etcd_env(&self) -> Vec<(String, String)> {
        if !self.options.secure {
            return Vec::new();
        }
        let (tls, secrets) = (self.tls_dir(), self.dir.path().join("secrets"));
        env_of(&[
            ("LATHE_ETCD_CA", tls.join("ca.pem")),
            ("LATHE_ETCD_CERT", tls.join("server.pem")),
            ("LATHE_ETCD_KEY", tls.join("server-key.pem")),
            ("LATHE_ETCD_USER", PathBuf::from("lathe")),
            ("LATHE_ETCD_PASSWORD_FILE", secrets.join("etcd-lathe")),
        ])
    }

    /// The variables that give a process TLS and `user` (`coordinator` or `worker`) to NATS, with
    /// the client certificate `certificate` (`server`, or `worker-ID`), on a secure farm.
    fn nats_env(&self, user: &str, certificate: &str) -> Vec<(String, String)> {
        if !self.options.secure {
            return Vec::new();
        }
        let (tls, secrets) = (self.tls_dir(), self.dir.path().join("secrets"));
        env_of(&[
            ("LATHE_NATS_CA", tls.join("ca.pem")),
            ("LATHE_NATS_CERT", tls.join(format!("{certificate}.pem"))),
            ("LATHE_NATS_KEY", tls.join(format!("{certificate}-key.pem"))),
            ("LATHE_NATS_USER", PathBuf::from(user)),
            (
                "LATHE_NATS_PASSWORD_FILE",
                secrets.join(format!("nats-{user}")),
            ),
        ])
    }

    /// The coordinator's dashboard (the farm's options ask for it with `http`).
    pub fn http_url(&self) -> String {
        format!("http://{}", self.coordinator_http())
    }

    /// The coordinator's HTTP address (metrics and probes; [`FarmOptions::metrics`]).
    pub fn coordinator_http(&self) -> String {
        format!("127.0.0.1:{}", self.coordinator_http_port)
    }

    /// A worker's HTTP address (metrics and probes; [`FarmOptions::metrics`]).
    pub fn worker_http(&self, id: &str) -> String {
        format!("127.0.0.1:{}", self.worker_http_ports[id])
    }

    /// The environment every process of the farm gets: the collector, when there is one.
    fn telemetry_env(&self) -> Vec<(String, String)> {
        self.options
            .otlp_port
            .map(|port| {
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
                    format!("http://127.0.0.1:{port}"),
                )
            })
            .into_iter()
            .collect()
    }

    /// Starts the coordinator process (again, after [`kill_coordinator`](Self::kill_coordinator)).
    pub fn start_coordinator(&mut self) {
        let options = self.options;
        let mut command = Command::new(self.binaries.coordinator);
        if options.http {
            command.args(["--http-listen", &self.coordinator_http()]);
        }
        if options.metrics {
            // The same address as the dashboard's when both are asked for: one server.
            command.args(["--metrics-listen", &self.coordinator_http()]);
        }
        let child = command
            .args(["--listen", &format!("127.0.0.1:{}", self.coordinator_port)])
            .args(["--nats", &self.nats.url(), "--etcd", &self.etcd.url()])
            .arg("--blobs")
            .arg(self.dir.path().join("blobs"))
            .args(["--max-attempts", &options.max_attempts.to_string()])
            .args(["--blocklist-after", &options.blocklist_after.to_string()])
            .args(["--ack-wait-s", &options.ack_wait_s.to_string()])
            .args(["--reconcile-interval-s", "1"])
            .args(self.coordinator_transport())
            .envs(self.etcd_env())
            .envs(self.nats_env("coordinator", "server"))
            .envs(self.telemetry_env())
            .env("LATHE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file(self.dir.path(), "coordinator"))
            .spawn()
            .expect("spawn the coordinator");
        self.coordinator = Some(child);
        wait_for_port(self.coordinator_port);
        if options.http {
            wait_for_port(self.coordinator_http_port);
        }
    }

    /// The coordinator's gRPC transport: TLS from the farm's CA on a secure farm, else
    /// `--insecure-loopback`.
    fn coordinator_transport(&self) -> Vec<String> {
        if !self.options.secure {
            return vec!["--insecure-loopback".to_owned()];
        }
        let tls = self.tls_dir();
        [
            ("--tls-cert", "server.pem"),
            ("--tls-key", "server-key.pem"),
            ("--tls-client-ca", "ca.pem"),
        ]
        .into_iter()
        .flat_map(|(flag, file)| [flag.to_owned(), tls.join(file).display().to_string()])
        .collect()
    }

    /// Restarts nats-server: with its data folder (streams and messages survive), or with an
    /// empty one (everything it held is lost).
    pub fn restart_nats(&mut self, keep_data: bool) {
        if keep_data {
            self.nats.restart();
        } else {
            self.nats.restart_fresh();
        }
    }

    /// The URL of the farm's etcd.
    pub fn etcd_url(&self) -> String {
        self.etcd.url()
    }

    /// Kills etcd (its data stays); [`restart_etcd`](Self::restart_etcd) brings it back.
    pub fn kill_etcd(&mut self) {
        self.etcd.kill();
    }

    /// Starts etcd again on its ports and data.
    pub fn restart_etcd(&mut self) {
        self.etcd.restart();
    }

    /// Stops the coordinator with SIGTERM, as an operator would, and waits for it to exit.
    pub fn stop_coordinator(&mut self) {
        if let Some(mut child) = self.coordinator.take() {
            let status = Command::new("kill")
                .args(["-s", "TERM", &child.id().to_string()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill -s TERM the coordinator");
            let started = Instant::now();
            while child.try_wait().expect("try_wait").is_none() {
                if started.elapsed() > Duration::from_secs(30) {
                    kill(&mut child);
                    panic!("the coordinator did not stop within 30 s of SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Kills the coordinator with SIGKILL.
    pub fn kill_coordinator(&mut self) {
        if let Some(mut child) = self.coordinator.take() {
            kill(&mut child);
        }
    }

    /// Starts a worker process with one slot.
    pub fn start_worker(&mut self, id: &str) {
        self.start_worker_with_env(id, &[]);
    }

    /// [`start_worker`](Self::start_worker) with more environment variables.
    pub fn start_worker_with_env(&mut self, id: &str, env: &[(&str, &str)]) {
        let options = self.options;
        let scratch = self.dir.path().join("scratch").join(id);
        std::fs::create_dir_all(&scratch).expect("scratch folder");
        let mut command = Command::new(self.binaries.worker);
        if options.hold_renders {
            let gate = self.gate(id);
            std::fs::create_dir_all(&gate).expect("gate folder");
            if self.released_all {
                std::fs::write(gate.join("release-all"), b"").expect("release all");
            }
            command.env(RENDER_GATE, &gate);
        }
        if options.metrics {
            let port = *self
                .worker_http_ports
                .entry(id.to_owned())
                .or_insert_with(free_port);
            command.args(["--metrics-listen", &format!("127.0.0.1:{port}")]);
        }
        if options.secure {
            // A certificate naming this worker, from the farm's CA, as `lathe-coordinator certs
            // --worker ID` issues it.
            run_coordinator_command(
                self.binaries,
                &[
                    "certs",
                    "--dir",
                    &self.tls_dir().display().to_string(),
                    "--worker",
                    id,
                ],
            );
            let tls = self.tls_dir();
            for (flag, file) in [
                ("--tls-ca", "ca.pem".to_owned()),
                ("--tls-cert", format!("worker-{id}.pem")),
                ("--tls-key", format!("worker-{id}-key.pem")),
            ] {
                command.arg(flag).arg(tls.join(file));
            }
        }
        let child = command
            .envs(self.telemetry_env())
            .envs(self.nats_env("worker", &format!("worker-{id}")))
            .envs(env.iter().copied())
            .args(["--coordinator", &self.url()])
            .args(["--nats", &self.nats.url()])
            .args(["--id", id, "--slots", "1"])
            .arg("--scratch")
            .arg(&scratch)
            .args(["--ack-wait-s", &options.ack_wait_s.to_string()])
            .args(["--max-attempts", &options.max_attempts.to_string()])
            .env("LATHE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file(self.dir.path(), id))
            .spawn()
            .expect("spawn a worker");
        self.workers.insert(id.to_owned(), child);
    }

    /// The render gate folder of a worker.
    fn gate(&self, worker: &str) -> PathBuf {
        self.dir.path().join("gates").join(worker)
    }

    /// Waits until `worker` holds a render (the farm holds renders) that is not released yet;
    /// returns its task id. The task is then mid-render, and stays so until released or stopped.
    pub fn wait_held(&self, worker: &str, timeout: Duration) -> String {
        let gate = self.gate(worker);
        let started = Instant::now();
        loop {
            let mut held: Vec<String> = std::fs::read_dir(&gate)
                .expect("read the gate folder")
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter_map(|name| name.strip_prefix("held-").map(str::to_owned))
                .filter(|task| !gate.join(format!("release-{task}")).exists())
                .collect();
            held.sort();
            if let Some(task) = held.into_iter().next() {
                return task;
            }
            assert!(
                started.elapsed() < timeout,
                "worker {worker} held no render within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Lets a render `worker` holds go on.
    pub fn release(&self, worker: &str, task: &str) {
        std::fs::write(self.gate(worker).join(format!("release-{task}")), b"").expect("release");
    }

    /// Lets every render go on, now and later.
    pub fn release_all(&mut self) {
        self.released_all = true;
        if !self.options.hold_renders {
            return;
        }
        for worker in self.workers.keys() {
            std::fs::write(self.gate(worker).join("release-all"), b"").expect("release all");
        }
    }

    /// Sends `signal` (`KILL`, `TERM`) to a worker.
    pub fn signal_worker(&mut self, id: &str, signal: &str) {
        let child = self.workers.get_mut(id).expect("a worker with this id");
        if signal == "KILL" {
            child.kill().expect("SIGKILL the worker");
            return;
        }
        let pid = child.id();
        let status = Command::new("kill")
            .args(["-s", signal, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {signal} {pid}");
    }

    /// Waits for a worker process to exit; returns its exit code (`None` if killed by a signal).
    pub fn wait_worker(&mut self, id: &str, timeout: Duration) -> Option<i32> {
        let child = self.workers.get_mut(id).expect("a worker with this id");
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(
                started.elapsed() < timeout,
                "worker {id} did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The log a worker or the coordinator wrote.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("logs").join(format!("{name}.log")))
            .unwrap_or_default()
    }

    /// Runs `lathe ARGS --coordinator URL --token TOKEN` in-process, as the farm's admin.
    pub fn lathe(&self, args: &[&str]) -> crate::Outcome {
        self.lathe_with_token(args, &self.token)
    }

    /// Runs `lathe ARGS --coordinator URL --token TOKEN` in-process with another token.
    pub fn lathe_with_token(&self, args: &[&str], token: &str) -> crate::Outcome {
        let (url, ca) = (
            self.url(),
            self.tls_dir().join("ca.pem").display().to_string(),
        );
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--coordinator", url.as_str(), "--token", token]);
        if self.options.secure {
            all.extend(["--ca", ca.as_str()]);
        }
        crate::lathe(&all)
    }

    /// Waits until `condition` holds on `lathe status JOB --json`, polling; returns that status.
    /// Fails at once if the job ended without it.
    pub fn wait_for_status(
        &self,
        job: &str,
        timeout: Duration,
        condition: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let started = Instant::now();
        loop {
            let outcome = self.lathe(&["status", job, "--json"]);
            if outcome.status == 0 {
                let status = status_from_json_lines(&outcome.stdout);
                if condition(&status) {
                    return status;
                }
                assert!(
                    status["state"] == "running" || status["state"] == "suspended",
                    "job {job} ended before the condition held: {status:#}"
                );
                assert!(
                    started.elapsed() < timeout,
                    "job {job}: condition not met within {timeout:?}; last status {status:#}"
                );
            } else {
                assert!(
                    started.elapsed() < timeout,
                    "lathe status failed: {}",
                    outcome.stderr
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The output of `lathe status JOB --json` (the job on its first line, then a line per task) as
/// one value: the job with every task under `tasks`.
pub fn status_from_json_lines(stdout: &str) -> serde_json::Value {
    let mut lines = stdout.lines();
    let mut status: serde_json::Value =
        serde_json::from_str(lines.next().expect("the job's line")).expect("status --json is JSON");
    let tasks: Vec<serde_json::Value> = lines
        .map(|line| serde_json::from_str(line).expect("a task's line is JSON"))
        .filter(|line: &serde_json::Value| line.get("task_id").is_some())
        .collect();
    status["tasks"] = serde_json::Value::Array(tasks);
    status
}

fn wait_for_port(port: u16) {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the coordinator did not listen on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes `count` short synthetic tracks (float WAV, different seeds and lengths) into `dir`.
pub fn write_catalogue(dir: &Path, count: usize, duration_s: f64) -> Vec<PathBuf> {
    use lathe_synth::{Style, TrackRecipe, write_wav};
    let styles = [Style::Pop, Style::Rock, Style::Ballad, Style::Ambient];
    (0..count)
        .map(|index| {
            let recipe = TrackRecipe {
                duration_s: duration_s + index as f64 * 0.5,
                channel_count: if index % 3 == 2 { 1 } else { 2 },
                ..TrackRecipe::new(styles[index % styles.len()], 0xFA_0000 + index as u64)
            };
            let path = dir.join(format!("{:02}-track.wav", index + 1));
            write_wav(&recipe, &path, 24).expect("write a track");
            path
        })
        .collect()
}

/// The files of a folder with this extension, sorted, with their bytes.
pub fn files_with_extension(dir: &Path, extension: &str) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("read folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .map(|p| {
            (
                p.file_name().expect("name").to_string_lossy().into_owned(),
                std::fs::read(&p).expect("read file"),
            )
        })
        .collect()
}

/// Serialises the farm tests of one binary: each starts its own servers and several processes, and
/// two at once would starve each other on a small machine.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
