//! Real servers for tests: `nats-server -js` and `etcd` on free loopback ports with temporary data
//! folders, stopped (killed) when dropped.
//!
//! [`NatsServer::start`] and [`EtcdServer::start`] return `None`, after printing why, when the binary
//! is not installed, so that a developer without them can still run the rest of the tests; CI installs
//! both (`.ci/run`), so there they always run.
//!
//! [`NatsServer::start_secure`] and [`EtcdServer::start_secure`] run them with TLS and users, as
//! the farm does ([`secure`]).
//!
//! [`fill_finished_jobs`] stores finished jobs as the coordinator leaves them, for measurements of
//! state at scale.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::blob::Digest;
use crate::error::{Error, Result};
use crate::record::{
    JobRecord, JobState, TaskCounts, TaskRecord, TaskState, blob_ref_key, by_state_key,
    count_shard, counts_key, encode, finished_key, job_key, task_id, task_key, unix_ms,
};
use crate::state::{MAX_TRANSACTION_OPS, StateStore, Transaction};

pub mod secure;

pub use secure::{EtcdSecurity, NatsSecurity, TestPki};

/// How long a server gets to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// etcd's backend quota: 8 GiB, the largest etcd recommends. The default (2 GiB) is too small for
/// the benchmark of state at scale, which stores a million finished tasks; a quota costs nothing
/// until the data reaches it.
const ETCD_QUOTA_BYTES: u64 = 8 << 30;

/// Transactions between etcd's snapshots. Only the write-ahead log after the last snapshot must
/// stay (and five 64 MB files of it do), so the log of a bulk write is removed as it goes; with the
/// default (100,000) it would grow as large as the data written, some 4 GB more on disk for a
/// million finished tasks in transactions of 32.
const ETCD_SNAPSHOT_ENTRIES: u32 = 10_000;

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
    security: Option<NatsSecurity>,
}

impl NatsServer {
    /// Starts one, or returns `None` (printing why) if `nats-server` is not installed.
    ///
    /// # Panics
    /// If it is installed but does not start.
    pub fn start() -> Option<Self> {
        Self::launch(None)
    }

    /// Starts one that requires TLS and the farm's users (`deploy/nats-auth.conf`), or returns
    /// `None` (printing why) if `nats-server` is not installed.
    ///
    /// # Panics
    /// If it is installed but does not start.
    pub fn start_secure(security: NatsSecurity) -> Option<Self> {
        Self::launch(Some(security))
    }

    fn launch(security: Option<NatsSecurity>) -> Option<Self> {
        if !installed("nats-server") {
            eprintln!("SKIPPED: nats-server is not installed (apt-get install nats-server)");
            return None;
        }
        let data = tempfile::tempdir().expect("temporary folder for nats-server");
        let mut server = Self {
            process: None,
            port: free_port(),
            data,
            security,
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
        let mut command = Command::new("nats-server");
        match &self.security {
            None => command
                .args([
                    "-js",
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-sd",
                ])
                .arg(self.data.path()),
            Some(security) => command
                .arg("-c")
                .arg(security.write_config(self.data.path(), self.port))
                .envs(security.environment()),
        };
        let mut child = command
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
    security: Option<EtcdSecurity>,
}

impl EtcdServer {
    /// Starts one, or returns `None` (printing why) if `etcd` is not installed.
    ///
    /// # Panics
    /// If it is installed but does not start.
    pub fn start() -> Option<Self> {
        Self::launch(None)
    }

    /// Starts one serving clients over TLS only (`https://`), or returns `None` (printing why) if
    /// `etcd` is not installed. Authentication is off until
    /// [`crate::etcd_users::setup_etcd_users`] turns it on.
    ///
    /// # Panics
    /// If it is installed but does not start.
    pub fn start_secure(security: EtcdSecurity) -> Option<Self> {
        Self::launch(Some(security))
    }

    fn launch(security: Option<EtcdSecurity>) -> Option<Self> {
        if !installed("etcd") {
            eprintln!("SKIPPED: etcd is not installed (apt-get install etcd-server)");
            return None;
        }
        let mut server = Self {
            process: None,
            client_port: free_port(),
            peer_port: free_port(),
            data: tempfile::tempdir().expect("temporary folder for etcd"),
            security,
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
        let mut child = etcd_command(
            self.data.path(),
            self.client_port,
            self.peer_port,
            self.security.as_ref(),
        )
        .spawn()
        .expect("spawn etcd");
        wait_for_port(self.client_port, &mut child, "etcd").expect("etcd starts");
        self.process = Some(Guard(child));
    }

    /// `http://127.0.0.1:PORT`, or `https://` when it runs with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.security.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// Its data folder.
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }
}

fn etcd_command(
    data: &Path,
    client_port: u16,
    peer_port: u16,
    security: Option<&EtcdSecurity>,
) -> Command {
    let scheme = if security.is_some() { "https" } else { "http" };
    let client = format!("{scheme}://127.0.0.1:{client_port}");
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
        .args(["--quota-backend-bytes", &ETCD_QUOTA_BYTES.to_string()])
        .args(["--snapshot-count", &ETCD_SNAPSHOT_ENTRIES.to_string()])
        .args(security.map(EtcdSecurity::arguments).unwrap_or_default())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

// ---------------------------------------------------------------------------------------------------
// Finished jobs in bulk.

/// A render task's report as a worker sends it (`serde_json::to_string` of the engine's
/// `TrackReport` for a 30 s track, its curves included: 3.2 KB): what a succeeded task holds as
/// its `report_json`.
const TRACK_REPORT_JSON: &str = include_str!("testing/track_report.json");

/// The preset the filled jobs were mastered with (the report's).
const FILLED_PROFILE: &str = "streaming";

/// A finished task's keys: its record, its state-index key, and its job's references to its
/// source and to its master.
const KEYS_PER_FILLED_TASK: usize = 4;

/// Tasks per transaction of the fill: as many as etcd's operation limit takes (their records, 3 KB
/// each, stay far below its 1.5 MiB request limit).
const FILLED_TASKS_PER_TRANSACTION: usize = MAX_TRANSACTION_OPS / KEYS_PER_FILLED_TASK;

/// Transactions of the fill in flight at once: etcd commits concurrent transactions in one
/// write to its log, so a million tasks take minutes, not the hour one transaction at a time would.
const FILL_TRANSACTIONS_IN_FLIGHT: usize = 16;

/// Time between the submissions of two filled jobs.
const FILLED_JOB_SPACING_MS: u64 = 3_600_000;

/// How long each filled job ran, from its submission to its end.
const FILLED_JOB_RUN_MS: u64 = 1_800_000;

/// Writes `jobs` finished jobs of `tasks_per_job` tracks each into `state`, every task succeeded,
/// in the keys and records the coordinator leaves behind when such a job has run to its end
/// (`Coordinator::submit`, the transitions of its tasks and the end of the job): the job's record
/// (state `Succeeded`, `finished_unix_ms` set), its counts, its entry in the retention index,
/// and per task its record (one attempt, a master, a real track report), its `by_state` key and
/// the job's references to its source and its master. A finished job has no `active` key, so
/// the dispatcher never reads it. Returns the jobs' ids, oldest first.
///
/// The jobs were submitted an hour apart, the newest an hour ago, and each ran for half an
/// hour. Their sources and masters are digests of made-up bytes that no blob store holds:
/// what is measured is the state. Each job's tasks go in transactions of at most
/// [`MAX_TRANSACTION_OPS`] operations, several in flight at once, before its record, so a job
/// appears whole, as a submission does.
pub async fn fill_finished_jobs(
    state: &dyn StateStore,
    jobs: usize,
    tasks_per_job: usize,
) -> Result<Vec<String>> {
    let tasks = u32::try_from(tasks_per_job).map_err(|_| {
        Error::InvalidRequest(format!("{tasks_per_job} tasks are more than a job holds"))
    })?;
    let profile = lathe_model::profile::Profile::preset(FILLED_PROFILE)?;
    let profile_toml = profile.to_toml();
    let extension = profile.output.format.extension();
    let now = unix_ms();
    let mut ids = Vec::with_capacity(jobs);
    for number in 0..jobs {
        let submitted_unix_ms = now.saturating_sub((jobs - number) as u64 * FILLED_JOB_SPACING_MS);
        let job = JobRecord {
            // The coordinator's form: the submission time in hexadecimal, then a process and a
            // sequence part (no two filled jobs share a submission time).
            id: format!("{submitted_unix_ms:011x}0{:03x}", number & 0xfff),
            name: format!("{tasks} tracks"),
            priority: 0,
            profile_toml: profile_toml.clone(),
            profile_name: profile.name.clone(),
            state: JobState::Succeeded,
            submitted_unix_ms,
            task_count: tasks,
            consecutive_failures: BTreeMap::new(),
            blocklist: Vec::new(),
            plan_digest: String::new(),
            paused_reason: String::new(),
            finished_unix_ms: submitted_unix_ms + FILLED_JOB_RUN_MS,
            pinned: false,
            idempotency_key: String::new(),
            trace_context: Vec::new(),
            owner: String::new(),
        };
        write_finished_tasks(state, &job, extension).await?;
        let mut last = Transaction::new().put(job_key(&job.id), encode(&job)?);
        for (key, value) in counts_writes(&job.id, tasks)? {
            last = last.put(key, value);
        }
        commit_unchecked(state, &last.put(finished_key(&job), Vec::new())).await?;
        ids.push(job.id);
    }
    Ok(ids)
}

/// Writes the tasks of the finished `job`, [`FILLED_TASKS_PER_TRANSACTION`] a transaction,
/// [`FILL_TRANSACTIONS_IN_FLIGHT`] transactions at once.
async fn write_finished_tasks(
    state: &dyn StateStore,
    job: &JobRecord,
    extension: &str,
) -> Result<()> {
    let tasks = job.task_count;
    let transactions = (0..tasks)
        .step_by(FILLED_TASKS_PER_TRANSACTION)
        .map(|first| async move {
            let last = first
                .saturating_add(FILLED_TASKS_PER_TRANSACTION as u32)
                .min(tasks);
            let mut transaction = Transaction::new();
            for index in first..last {
                let task = finished_task(job, index, extension);
                transaction = transaction
                    .put(task_key(&task.id)?, encode(&task)?)
                    .put(by_state_key(&task.id, task.state)?, Vec::new())
                    .put(blob_ref_key(&task.source_digest, &job.id), Vec::new())
                    .put(blob_ref_key(&task.output_digest, &job.id), Vec::new());
            }
            commit_unchecked(state, &transaction).await
        });
    let mut committed =
        futures::stream::iter(transactions).buffer_unordered(FILL_TRANSACTIONS_IN_FLIGHT);
    while let Some(outcome) = committed.next().await {
        outcome?;
    }
    Ok(())
}

/// Task `index` of the finished `job`, as its completion left it: one attempt on one of eight
/// workers, started within the job's run, its master and report stored.
fn finished_task(job: &JobRecord, index: u32, extension: &str) -> TaskRecord {
    let id = task_id(&job.id, index);
    let digest = |what: &str| Digest::of(format!("{what} of {id}").as_bytes()).to_string();
    let (source_digest, output_digest) = (digest("the source"), digest("the master"));
    let into_run = FILLED_JOB_RUN_MS * u64::from(index) / u64::from(job.task_count.max(1));
    TaskRecord {
        id,
        job_id: job.id.clone(),
        index,
        kind: crate::plan::RENDER.to_owned(),
        source_digest,
        source_name: format!("{index:07}.wav"),
        output_name: format!("{index:07}.{extension}"),
        profile_toml: String::new(),
        state: TaskState::Succeeded,
        worker_id: format!("w{}", index % 8),
        attempts: 1,
        last_error: String::new(),
        output_digest,
        report_json: TRACK_REPORT_JSON.to_owned(),
        tags_json: String::new(),
        started_unix_ms: job.submitted_unix_ms + into_run,
        qc_failed: false,
        queued_count: 1,
        deliveries: 1,
        attempt_started_unix_ms: 0,
        attempt_token_hash: String::new(),
        graph: Default::default(),
    }
}

/// The keys that hold the counts of a job whose `tasks` tasks (indexes `0..tasks`) all succeeded,
/// with their values, as the coordinator stores them: one key per counts shard that holds a task
/// (`counts/{job}/{shard}`), each counting its shard's tasks. The fill writes counts through this
/// function only, so a change to how the coordinator keeps a job's counts is a change here alone.
fn counts_writes(job_id: &str, tasks: u32) -> Result<Vec<(String, Vec<u8>)>> {
    let mut shards = BTreeMap::<u32, TaskCounts>::new();
    for index in 0..tasks {
        shards.entry(count_shard(index)).or_default().succeeded += 1;
    }
    shards
        .into_iter()
        .map(|(shard, counts)| Ok((counts_key(job_id, shard), encode(&counts)?)))
        .collect()
}

/// Commits a transaction that checks nothing (so it cannot be refused).
async fn commit_unchecked(state: &dyn StateStore, transaction: &Transaction) -> Result<()> {
    if state.commit(transaction).await? {
        Ok(())
    } else {
        Err(Error::State(
            "a transaction without checks was refused".to_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::blob::MemoryBlobStore;
    use crate::queue::{MemoryQueue, WorkQueue};
    use crate::record::{WorkerRecord, worker_key};
    use crate::state::{EtcdStore, MAX_PAGE, MemoryStore};
    use crate::{Coordinator, CoordinatorSettings};
    use lathe_proto::v1;

    /// Every key in `state`.
    async fn every_key(state: &dyn StateStore) -> Vec<String> {
        let mut keys = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = state
                .page("", after.as_deref(), MAX_PAGE)
                .await
                .expect("page");
            keys.extend(page.entries.into_iter().map(|(key, _)| key));
            match page.next {
                Some(next) => after = Some(next),
                None => return keys,
            }
        }
    }

    /// Fills `state` with 3 jobs of 50 tasks and reads them through a coordinator: each is a
    /// succeeded job with its counts and its tasks in pages, the dispatcher leaves them alone, and
    /// the coordinator's own delete and retention remove every key the fill wrote.
    async fn filled_jobs_are_finished_jobs(state: Arc<dyn StateStore>) {
        let ids = fill_finished_jobs(state.as_ref(), 3, 50)
            .await
            .expect("fill");
        assert_eq!(ids.len(), 3);
        let settings = CoordinatorSettings {
            retain: Some(Duration::ZERO),
            ..CoordinatorSettings::default()
        };
        let queue = MemoryQueue::new(settings.queue_settings(Duration::from_secs(30)));
        let coordinator = Coordinator::new(
            Arc::new(queue.clone()),
            state.clone(),
            Arc::new(MemoryBlobStore::new()),
            settings,
        );
        let worker = WorkerRecord {
            id: "w1".to_owned(),
            host: "test".to_owned(),
            pid: 1,
            slots: 4,
            current_tasks: Vec::new(),
            heartbeat_unix_ms: 0,
        };
        state
            .put(&worker_key("w1"), encode(&worker).expect("encode"))
            .await
            .expect("register");

        for job_id in &ids {
            let status = coordinator.status(job_id).await.expect("status");
            assert_eq!(status.state(), v1::JobState::Succeeded, "{job_id}");
            assert!(status.finished_unix_ms > status.submitted_unix_ms);
            assert!(status.tasks.is_empty(), "no task runs");
            let counts = status.counts.expect("counts");
            assert_eq!(
                counts,
                v1::TaskCounts {
                    succeeded: 50,
                    ..Default::default()
                }
            );
            let mut seen = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = coordinator
                    .task_page(job_id, None, after.as_deref(), 20)
                    .await
                    .expect("page");
                assert!(page.tasks.len() <= 20);
                for task in &page.tasks {
                    assert_eq!(task.state, TaskState::Succeeded, "{}", task.id);
                    assert_eq!(task.attempts, 1);
                    assert!(!task.output_digest.is_empty());
                    assert!(task.report_json.contains("\"qc\""));
                }
                seen.extend(page.tasks.iter().map(|task| task.index));
                match page.next_after {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            assert_eq!(seen, (0..50).collect::<Vec<u32>>());
            let succeeded = coordinator
                .task_page(job_id, Some(TaskState::Succeeded), None, MAX_PAGE)
                .await
                .expect("succeeded page");
            assert_eq!(succeeded.tasks.len(), 50);
            assert!(succeeded.next_after.is_none());
        }
        let (listed, _) = coordinator.list(None, 10).await.expect("list");
        let listed: Vec<&str> = listed.iter().map(|job| job.job_id.as_str()).collect();
        assert_eq!(listed, ids, "oldest first");

        assert_eq!(coordinator.dispatch_ready().await.expect("dispatch"), 0);
        assert!(queue.held(None, 10).await.expect("held").is_empty());

        // The coordinator's delete, and retention through the finished index, leave nothing.
        let deleted = coordinator.delete(&ids[0], false).await.expect("delete");
        assert_eq!(deleted.tasks, 50);
        assert!(
            every_key(state.as_ref())
                .await
                .iter()
                .all(|key| !key.contains(&ids[0]))
        );
        assert_eq!(
            coordinator.maintenance_pass().await.expect("retention"),
            (2, 0)
        );
        assert_eq!(every_key(state.as_ref()).await, [worker_key("w1")]);
    }

    #[tokio::test]
    async fn filled_jobs_are_finished_jobs_in_memory() {
        filled_jobs_are_finished_jobs(Arc::new(MemoryStore::new())).await;
    }

    #[tokio::test]
    async fn filled_jobs_are_finished_jobs_in_etcd() {
        let Some(etcd) = EtcdServer::start() else {
            return;
        };
        let store = EtcdStore::connect(&etcd.url(), "fill/")
            .await
            .expect("etcd");
        filled_jobs_are_finished_jobs(Arc::new(store)).await;
    }
}

/// A coordinator's gRPC services on a free loopback port, as the farm serves them; the server
/// stops when this is dropped, or with [`LoopbackServer::stop`].
#[derive(Debug)]
pub struct LoopbackServer {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl LoopbackServer {
    /// Serves `coordinator` over `transport` on `127.0.0.1` (a free port).
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub async fn start(coordinator: &crate::Coordinator, transport: crate::tls::Transport) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let address = listener.local_addr().expect("the bound address");
        let scheme = match transport {
            crate::tls::Transport::Tls(_) => "https",
            crate::tls::Transport::InsecureLoopback => "http",
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let coordinator = coordinator.clone();
        let served = tokio::spawn(async move {
            crate::grpc::serve(&coordinator, listener, &transport, async {
                let _ = stopped.await;
            })
            .await
        });
        Self {
            url: format!("{scheme}://{address}"),
            stop: Some(stop),
            served: Some(served),
        }
    }

    /// `http://127.0.0.1:PORT`, or `https://` over TLS.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops the server and returns how its serving ended.
    ///
    /// # Errors
    /// What the server returned.
    ///
    /// # Panics
    /// If the server's task panicked.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.served.take() {
            Some(served) => served.await.expect("the server's task"),
            None => Ok(()),
        }
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
