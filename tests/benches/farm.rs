//! Farm measurements (a benchmark, not a test): run with `cargo bench -p lathe-tests --bench farm`.
//! Every figure is the median of `LATHE_BENCH_REPEATS` runs (default 3): on a shared machine single
//! runs swing by tens of percent.
//!
//! 1. gRPC streaming throughput on loopback: a 256 MiB blob uploaded to and downloaded from a
//!    coordinator (in-memory blob store, so the disk is out of the picture), digests verified, in
//!    plain HTTP/2 (the embedded farm's `--insecure-loopback`) and over TLS (the farm's own CA).
//! 2. The same catalogue mastered by `lathe master -j 2` (the embedded farm), by a real farm
//!    (nats-server, etcd, a coordinator and two one-slot workers as processes, fresh for each run so
//!    that every run uploads its sources, every connection with TLS and credentials as `make farm`
//!    runs them), and, when `LATHE_BASELINE` names an older `lathe` binary,
//!    by that binary's `lathe master -j 2` (the thread pool before `lathe master` ran on the embedded
//!    farm): wall times, and the time from submit to the first task running (from the coordinator's
//!    own timestamps: the job's `submitted_unix_ms` and its tasks' `started_unix_ms`). The real farm
//!    runs twice per repeat: as it is, and observed (every process exporting its spans over OTLP to
//!    a collector in this process, and serving metrics scraped every second): the cost of tracing
//!    and metrics.
//!
//! 3. State at scale, in a real etcd through the coordinator (in this process): first
//!    `LATHE_BENCH_FINISHED_JOBS` finished jobs (default 100) of `LATHE_BENCH_FINISHED_TASKS_PER_JOB`
//!    succeeded tasks each (default 10,000: a million tasks), written in the coordinator's key
//!    layout by `lathe_coordinator::testing::fill_finished_jobs` (tasks per second), then one live
//!    job of `LATHE_BENCH_SCALE_TASKS` tasks (default 100,000): the submit, the dispatcher's pass
//!    (each handing out the tasks the free slots take, which are then run to completion), the
//!    coordinator's `status`, a page of 1,000 tasks, `lathe status JOB` as a user runs it (the CLI
//!    in process against the coordinator's gRPC server on loopback: connect, the job, its first
//!    100 tasks) for the live job and a finished one, the watch traffic of 100 running tasks, this
//!    process's resident memory, and etcd's database size (as etcd reports it, then after
//!    compaction to the current revision and defragmentation) and its data folder on disk.
//!
//! 4. The fixed cost per task: a job of `LATHE_BENCH_FIXED_TASKS` (default 2,000) distinct 0.5 s
//!    tracks on a real farm with 2 and with 4 one-slot workers: tasks per second from the first
//!    task's start to the job's end (the coordinator's timestamps), and the wall time per task per
//!    slot less the engine's render time (each task's report `elapsed_s`).
//!
//! `LATHE_BENCH_ONLY=streaming` (or `farm`, `scale`, `fixed`) runs only that measurement, to
//! profile it.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lathe_coordinator::blob::MemoryBlobStore;
use lathe_coordinator::client::{FarmClient, digest_file};
use lathe_proto::v1;
use lathe_tests::farm::{Binaries, Farm, FarmOptions, write_catalogue};
use lathe_tests::lathe;

const BINARIES: Binaries = Binaries {
    coordinator: env!("CARGO_BIN_EXE_farm-coordinator"),
    worker: env!("CARGO_BIN_EXE_farm-worker"),
};

fn repeats() -> usize {
    std::env::var("LATHE_BENCH_REPEATS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3)
        .max(1)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

fn range(values: &[f64]) -> (f64, f64) {
    values.iter().fold((f64::MAX, f64::MIN), |(low, high), &v| {
        (low.min(v), high.max(v))
    })
}

/// CPU seconds (user + system) this process has used: a figure that, unlike wall time, does not
/// depend on how busy the rest of the machine is. Linux's `/proc/self/stat`, in USER_HZ (100) ticks.
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the command name: state is field 3, utime field 14, stime field 15.
    (ticks(11) + ticks(12)) / 100.0
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A coordinator in this process (in-memory queue, state and blobs) served over TLS with
/// certificates from the farm's own CA (`lathe_coordinator::pki`, as `lathe-coordinator certs`
/// makes them), and an admin client of it that trusts that CA; stopped when the server is dropped.
async fn tls_coordinator(dir: &Path) -> (FarmClient, lathe_coordinator::testing::LoopbackServer) {
    use lathe_coordinator::auth::{Role, create_token};
    use lathe_coordinator::client::Access;
    use lathe_coordinator::tls::{ClientTls, ServerTls, Transport};
    let tls = dir.join("tls");
    lathe_coordinator::pki::ensure_ca(&tls).expect("CA");
    let (cert, key) = lathe_coordinator::pki::issue(
        &tls,
        "server",
        "server",
        &lathe_coordinator::pki::Usage::Server(Vec::new()),
    )
    .expect("server certificate");
    let ca = lathe_coordinator::pki::ca_path(&tls);
    let state = Arc::new(lathe_coordinator::state::MemoryStore::new());
    let settings = lathe_coordinator::CoordinatorSettings::default();
    let queue = Arc::new(lathe_coordinator::queue::MemoryQueue::new(
        settings.queue_settings(Duration::from_secs(30)),
    ));
    let coordinator = lathe_coordinator::Coordinator::new(
        queue,
        state.clone(),
        Arc::new(MemoryBlobStore::new()),
        settings,
    );
    let (_, token) = create_token(state.as_ref(), "bench", Role::Admin)
        .await
        .expect("token");
    let transport = Transport::Tls(ServerTls::load(&cert, &key, &ca).expect("server TLS"));
    let server = lathe_coordinator::testing::LoopbackServer::start(&coordinator, transport).await;
    let access = Access {
        url: server.url().to_owned(),
        token: Some(token),
        tls: Some(ClientTls::load(&ca, None).expect("client TLS")),
    };
    (FarmClient::connect(&access).await.expect("connect"), server)
}

/// Upload (hash, then stream) and download MB/s of one transport, each run's figures pushed.
#[derive(Default)]
struct Throughput {
    uploads: Vec<f64>,
    streams: Vec<f64>,
    downloads: Vec<f64>,
    upload_cpu: Vec<f64>,
    download_cpu: Vec<f64>,
}

impl Throughput {
    /// What `lathe submit` does (hash the file, to skip it if the coordinator holds it, then
    /// stream it) and what `lathe fetch` does, timed; the stream alone is timed too.
    async fn measure(&mut self, client: &FarmClient, blob: &Path, back: &Path, megabytes: f64) {
        let (started, cpu) = (Instant::now(), cpu_s());
        let digests = vec![digest_file(blob).await.expect("digest")];
        let streaming = Instant::now();
        client
            .upload_digested(&[blob], &digests)
            .await
            .expect("upload");
        self.streams
            .push(megabytes / streaming.elapsed().as_secs_f64());
        self.uploads
            .push(megabytes / started.elapsed().as_secs_f64());
        self.upload_cpu.push(megabytes / (cpu_s() - cpu).max(0.01));
        let (started, cpu) = (Instant::now(), cpu_s());
        client
            .download("", &digests[0].to_string(), back)
            .await
            .expect("download");
        self.downloads
            .push(megabytes / started.elapsed().as_secs_f64());
        self.download_cpu
            .push(megabytes / (cpu_s() - cpu).max(0.01));
    }

    fn report(&self, transport: &str) {
        let (up_low, up_high) = range(&self.uploads);
        let (down_low, down_high) = range(&self.downloads);
        println!(
            "gRPC streaming, loopback, {transport}, 256 MiB (BLAKE3 on both sides), median of {}: upload {:.0} MB/s ({up_low:.0}-{up_high:.0}; \
             the stream alone, after the client's hash, {:.0} MB/s), download {:.0} MB/s ({down_low:.0}-{down_high:.0})",
            self.uploads.len(),
            median(self.uploads.clone()),
            median(self.streams.clone()),
            median(self.downloads.clone()),
        );
        println!(
            "  per CPU-second of client and coordinator together (independent of the machine's load): upload {:.0} MB, download {:.0} MB",
            median(self.upload_cpu.clone()),
            median(self.download_cpu.clone()),
        );
    }
}

fn streaming_throughput(dir: &Path) {
    let blob = dir.join("blob.bin");
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let bytes: Vec<u8> = (0..256usize << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(&blob, &bytes).expect("write blob");
    let megabytes = bytes.len() as f64 / 1e6;
    let back = dir.join("back.bin");
    let (mut plain, mut tls) = (Throughput::default(), Throughput::default());
    for _ in 0..repeats() {
        runtime().block_on(async {
            // Plain HTTP/2: the embedded farm of `lathe master` (--insecure-loopback).
            let farm = lathe_worker::embedded::EmbeddedFarm::start_with_blobs(
                0,
                dir,
                Arc::new(MemoryBlobStore::new()),
            )
            .await
            .expect("embedded farm");
            plain.measure(&farm.client, &blob, &back, megabytes).await;
            farm.stop().await;
            // TLS, as a farm on a network serves it.
            let (client, server) = tls_coordinator(dir).await;
            tls.measure(&client, &blob, &back, megabytes).await;
            drop(server);
        });
    }
    plain.report("plain HTTP/2 (--insecure-loopback)");
    tls.report("TLS (rustls, the farm's CA)");
    println!(
        "  TLS against plain: upload {:.2}x, download {:.2}x",
        median(tls.uploads.clone()) / median(plain.uploads.clone()),
        median(tls.downloads.clone()) / median(plain.downloads.clone()),
    );
}

/// Seconds `lathe master -j 2` takes in-process (the embedded farm).
fn local_master(sources: &Path, out: &Path) -> f64 {
    let started = Instant::now();
    let outcome = lathe(&[
        "master",
        sources.to_str().expect("utf-8"),
        "--profile",
        "streaming",
        "--out",
        out.to_str().expect("utf-8"),
        "-j",
        "2",
    ]);
    assert_eq!(outcome.status, 0, "{}", outcome.stderr);
    started.elapsed().as_secs_f64()
}

/// Seconds an older `lathe` binary's `master -j 2` takes.
fn baseline_master(binary: &str, sources: &Path, out: &Path) -> f64 {
    let started = Instant::now();
    let status = std::process::Command::new(binary)
        .args(["master", "--profile", "streaming", "-j", "2", "--out"])
        .arg(out)
        .arg(sources)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run the baseline lathe");
    assert!(status.success(), "{binary} failed");
    started.elapsed().as_secs_f64()
}

/// An OTLP/gRPC collector that counts the spans it is sent, on a runtime of its own.
struct SpanSink {
    spans: Arc<std::sync::atomic::AtomicU64>,
    port: u16,
    _runtime: tokio::runtime::Runtime,
}

#[derive(Clone)]
struct CountingCollector(Arc<std::sync::atomic::AtomicU64>);

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
    for CountingCollector
{
    async fn export(
        &self,
        request: tonic::Request<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        >,
    ) -> Result<
        tonic::Response<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
        >,
        tonic::Status,
    > {
        let spans: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0
            .fetch_add(spans as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(tonic::Response::new(Default::default()))
    }
}

impl SpanSink {
    fn start() -> Self {
        let runtime = runtime();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the collector");
        let port = listener.local_addr().expect("address").port();
        let spans = Arc::new(std::sync::atomic::AtomicU64::new(0));
        runtime.spawn(
            tonic::transport::Server::builder()
                .add_service(
                    opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer::new(
                        CountingCollector(Arc::clone(&spans)),
                    ),
                )
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Self {
            spans,
            port,
            _runtime: runtime,
        }
    }
}

/// Scrapes `addresses`' `/metrics` every second (Prometheus's default is every 15 s) until
/// `stop` is set; returns how many scrapes answered.
fn scrape_until(
    addresses: Vec<String>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        let mut scrapes = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for address in &addresses {
                if let Ok(mut stream) = std::net::TcpStream::connect(address) {
                    let request = format!(
                        "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
                    );
                    let mut reply = Vec::new();
                    if stream.write_all(request.as_bytes()).is_ok()
                        && stream.read_to_end(&mut reply).is_ok()
                        && reply.starts_with(b"HTTP/1.1 200")
                    {
                        scrapes += 1;
                    }
                }
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        scrapes
    })
}

/// Seconds a fresh real farm takes from upload to the job's end, and milliseconds from submit to
/// its first task running. The end is seen on the job's watch stream (as `lathe submit --watch` sees
/// it), not by polling, so that the figure carries no polling interval. With `observed`, every
/// process exports its spans to `sink` and serves metrics, scraped every second.
fn real_farm(sources: &Path, observed: Option<&SpanSink>) -> Option<(f64, f64)> {
    let options = FarmOptions {
        metrics: observed.is_some(),
        otlp_port: observed.map(|sink| sink.port),
        // As a farm on a network runs: TLS and credentials on every connection.
        secure: true,
        ..FarmOptions::default()
    };
    let mut farm = Farm::start(BINARIES, options)?;
    farm.start_worker("w1");
    farm.start_worker("w2");
    std::thread::sleep(Duration::from_secs(1));
    let stop_scraping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scraper = observed.map(|_| {
        scrape_until(
            vec![
                farm.coordinator_http(),
                farm.worker_http("w1"),
                farm.worker_http("w2"),
            ],
            Arc::clone(&stop_scraping),
        )
    });
    let started = Instant::now();
    let outcome = farm.lathe(&["submit", sources.to_str().expect("utf-8"), "--json"]);
    assert_eq!(outcome.status, 0, "{}", outcome.stderr);
    let job: serde_json::Value = serde_json::from_str(&outcome.stdout).expect("json");
    let job = job["job_id"].as_str().expect("job id").to_owned();
    let last = runtime().block_on(async {
        let client = FarmClient::connect(&farm.access()).await.expect("connect");
        lathe_worker::embedded::wait_for_job(&client, &job)
            .await
            .expect("watch the job")
    });
    let farm_s = started.elapsed().as_secs_f64();
    stop_scraping.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(scraper) = scraper {
        assert!(scraper.join().expect("scraper") > 0, "no scrape answered");
        // Stopped as an operator stops them, the processes flush the spans they still hold.
        for worker in ["w1", "w2"] {
            farm.signal_worker(worker, "TERM");
            farm.wait_worker(worker, Duration::from_secs(60));
        }
        farm.stop_coordinator();
    }
    assert_eq!(last.state(), v1::JobState::Succeeded, "{last:#?}");
    let first = last
        .tasks
        .iter()
        .map(|t| t.started_unix_ms)
        .filter(|&ms| ms > 0)
        .min()
        .expect("a task started");
    Some((farm_s, first.saturating_sub(last.submitted_unix_ms) as f64))
}

fn farm_against_local(dir: &Path) {
    let sources = dir.join("sources");
    std::fs::create_dir_all(&sources).expect("sources");
    write_catalogue(&sources, 6, 30.0);
    let baseline = std::env::var("LATHE_BASELINE").ok();
    let (mut local, mut old, mut farm, mut first_ms) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut observed = Vec::new();
    let sink = SpanSink::start();
    for run in 0..repeats() {
        let out = dir.join(format!("run-{run}"));
        local.push(local_master(&sources, &out.join("local")));
        if let Some(binary) = &baseline {
            old.push(baseline_master(binary, &sources, &out.join("baseline")));
        }
        if let Some((farm_s, first)) = real_farm(&sources, None) {
            farm.push(farm_s);
            first_ms.push(first);
        }
        if let Some((farm_s, _)) = real_farm(&sources, Some(&sink)) {
            observed.push(farm_s);
        }
    }
    let local_s = median(local.clone());
    let (low, high) = range(&local);
    println!(
        "6 tracks x 30-32.5 s, streaming profile, median of {}: lathe master -j 2 (embedded farm) {local_s:.2} s ({low:.2}-{high:.2})",
        local.len()
    );
    if !old.is_empty() {
        let old_s = median(old.clone());
        let (low, high) = range(&old);
        println!(
            "  baseline lathe master -j 2 (thread pool, {}) {old_s:.2} s ({low:.2}-{high:.2}); embedded farm {:+.1} % against it",
            baseline.as_deref().unwrap_or_default(),
            (local_s / old_s - 1.0) * 100.0
        );
    }
    if !farm.is_empty() {
        let farm_s = median(farm.clone());
        let (low, high) = range(&farm);
        let (first_low, first_high) = range(&first_ms);
        println!(
            "  farm (nats-server, etcd, coordinator, 2 workers x 1 slot), upload to last master {farm_s:.2} s ({low:.2}-{high:.2}); \
             overhead {:+.1} % against lathe master -j 2; submit to first task running {:.0} ms ({first_low:.0}-{first_high:.0})",
            (farm_s / local_s - 1.0) * 100.0,
            median(first_ms.clone()),
        );
    }
    if !observed.is_empty() {
        let observed_s = median(observed.clone());
        let (low, high) = range(&observed);
        println!(
            "  the same farm with every span exported over OTLP ({} spans in {} runs) and /metrics scraped every second: \
             {observed_s:.2} s ({low:.2}-{high:.2}); overhead {:+.1} % against lathe master -j 2, {:+.1} % against the farm without them",
            sink.spans.load(std::sync::atomic::Ordering::Relaxed),
            observed.len(),
            (observed_s / local_s - 1.0) * 100.0,
            (observed_s / median(farm.clone()).max(f64::MIN_POSITIVE) - 1.0) * 100.0,
        );
    }
}

/// `LATHE_BENCH_ONLY=streaming` or `=farm` runs one of the two measurements (for profiling one).
fn main() {
    let only = std::env::var("LATHE_BENCH_ONLY").unwrap_or_default();
    let dir = tempfile::tempdir().expect("temp dir");
    if only.is_empty() || only == "streaming" {
        streaming_throughput(dir.path());
    }
    if only.is_empty() || only == "farm" {
        farm_against_local(dir.path());
    }
    if only.is_empty() || only == "scale" {
        state_at_scale();
    }
    if only.is_empty() || only == "fixed" {
        fixed_cost_per_task(dir.path());
    }
}

/// Measurement 4 (see the top of this file).
fn fixed_cost_per_task(dir: &Path) {
    let tracks: usize = std::env::var("LATHE_BENCH_FIXED_TASKS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000);
    let sources = dir.join("tiny");
    std::fs::create_dir_all(&sources).expect("sources");
    for index in 0..tracks {
        let styles = [
            lathe_synth::Style::Pop,
            lathe_synth::Style::Rock,
            lathe_synth::Style::Ballad,
        ];
        let recipe = lathe_synth::TrackRecipe {
            duration_s: 0.5,
            ..lathe_synth::TrackRecipe::new(styles[index % styles.len()], 0x71_0000 + index as u64)
        };
        lathe_synth::write_wav(&recipe, &sources.join(format!("{index:05}.wav")), 24)
            .expect("write a track");
    }
    for slots in [2usize, 4] {
        let Some(mut farm) = Farm::start(BINARIES, FarmOptions::default()) else {
            return;
        };
        for worker in 0..slots {
            farm.start_worker(&format!("w{worker}"));
        }
        std::thread::sleep(Duration::from_secs(1));
        let outcome = farm.lathe(&["submit", sources.to_str().expect("utf-8"), "--json"]);
        assert_eq!(outcome.status, 0, "{}", outcome.stderr);
        let job: serde_json::Value = serde_json::from_str(&outcome.stdout).expect("json");
        let job = job["job_id"].as_str().expect("job id").to_owned();
        let last = runtime().block_on(async {
            let client = FarmClient::connect(&farm.access()).await.expect("connect");
            lathe_worker::embedded::wait_for_job(&client, &job)
                .await
                .expect("watch the job")
        });
        assert_eq!(last.state(), v1::JobState::Succeeded);
        let first_ms = last
            .tasks
            .iter()
            .map(|t| t.started_unix_ms)
            .filter(|&ms| ms > 0)
            .min()
            .expect("a task started");
        let wall_s = last.finished_unix_ms.saturating_sub(first_ms) as f64 / 1e3;
        let render_s: f64 = last
            .tasks
            .iter()
            .filter_map(|t| serde_json::from_str::<serde_json::Value>(&t.report_json).ok())
            .filter_map(|report| report["elapsed_s"].as_f64())
            .sum::<f64>()
            / tracks as f64;
        let per_slot_ms = wall_s * slots as f64 / tracks as f64 * 1e3;
        println!(
            "{tracks} tasks x 0.5 s on {slots} one-slot workers: {:.1} tasks/s; {per_slot_ms:.1} ms of wall time per task per slot, of which render {:.1} ms: fixed cost {:.1} ms per task per slot",
            tracks as f64 / wall_s,
            render_s * 1e3,
            per_slot_ms - render_s * 1e3
        );
        let (read_ms, commit_ms) = runtime().block_on(etcd_round_trips(&farm.etcd_url()));
        println!(
            "  this etcd: a read {read_ms:.2} ms, a one-key transaction {commit_ms:.2} ms (medians of 200)"
        );
        let mut phases = PhaseSums::default();
        for worker in 0..slots {
            phases.add_log(&farm.log(&format!("w{worker}")));
        }
        if phases.tasks > 0 {
            let mean = |total: f64| total / phases.tasks as f64;
            let accounted: f64 = phases.totals.iter().sum::<f64>() / phases.tasks as f64;
            let parts: Vec<String> = PHASES
                .iter()
                .zip(phases.totals)
                .map(|(name, total)| format!("{name} {:.1}", mean(total)))
                .collect();
            println!(
                "  where a slot's time per task goes (ms, from the workers' \"task done\" lines over {} tasks): {}; waiting for the next delivery (queue and dispatcher) {:.1}",
                phases.tasks,
                parts.join(", "),
                per_slot_ms - accounted
            );
        }
    }
}

/// The medians of 200 reads and 200 one-key transactions on the etcd at `url`, ms.
async fn etcd_round_trips(url: &str) -> (f64, f64) {
    use lathe_coordinator::state::{EtcdStore, Expect, StateStore, Transaction};
    let store = EtcdStore::connect(url, "bench-round-trips/")
        .await
        .expect("etcd");
    let (mut reads, mut commits) = (Vec::new(), Vec::new());
    for round in 0..200u32 {
        let started = Instant::now();
        let stored = store.get("probe").await.expect("read");
        reads.push(started.elapsed().as_secs_f64() * 1e3);
        let expect = stored.map_or(Expect::Absent, |stored| Expect::Revision(stored.revision));
        let started = Instant::now();
        let transaction = Transaction::new()
            .check("probe", expect)
            .put("probe", round.to_le_bytes().to_vec());
        assert!(store.commit(&transaction).await.expect("commit"));
        commits.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    (median(reads), median(commits))
}

/// The phases a worker's "task done" line times, in its order.
const PHASES: [&str; 6] = ["start", "fetch", "render", "upload", "complete", "ack"];

/// The phase times of the "task done" lines of workers' logs, summed.
#[derive(Default)]
struct PhaseSums {
    tasks: usize,
    totals: [f64; 6],
}

impl PhaseSums {
    /// Adds the "task done" lines of a log (colour codes ignored).
    fn add_log(&mut self, log: &str) {
        for line in log.lines().filter(|line| line.contains("task done")) {
            let plain = strip_colours(line);
            let mut found = [None; 6];
            for field in plain.split_whitespace() {
                let Some((name, value)) = field.split_once('=') else {
                    continue;
                };
                let Some(slot) = PHASES
                    .iter()
                    .position(|phase| name.strip_suffix("_ms") == Some(*phase))
                else {
                    continue;
                };
                found[slot] = value.parse::<f64>().ok();
            }
            if found.iter().all(Option::is_some) {
                self.tasks += 1;
                for (total, value) in self.totals.iter_mut().zip(found) {
                    *total += value.unwrap_or_default();
                }
            }
        }
    }
}

/// `line` without its ANSI colour sequences.
fn strip_colours(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// The resident memory of this process, MB (Linux's `/proc/self/status`).
fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The bytes of every file under `dir`.
fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| {
                    let path = entry.path();
                    if path.is_dir() {
                        folder_bytes(&path)
                    } else {
                        entry.metadata().map_or(0, |m| m.len())
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// The median and range of `samples` (milliseconds), as printed.
fn millis(samples: Vec<f64>) -> String {
    let (low, high) = range(&samples);
    format!("{:.1} ms ({low:.1}-{high:.1})", median(samples))
}

/// Milliseconds `lathe status JOB` takes against the coordinator at `url`: the CLI in process, on
/// a blocking thread (it runs its own runtime), as a user runs it.
async fn cli_status_ms(job: &str, url: &str, token: &str) -> f64 {
    let (job, url, token) = (job.to_owned(), url.to_owned(), token.to_owned());
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let outcome = lathe(&["status", &job, "--coordinator", &url, "--token", &token]);
        let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
        assert_eq!(outcome.status, 0, "{}", outcome.stderr);
        assert!(outcome.stdout.contains(&job), "{}", outcome.stdout);
        elapsed_ms
    })
    .await
    .expect("lathe status")
}

/// etcd's database size in bytes as etcd reports it, then after compacting its history to the
/// current revision (physically) and defragmenting it.
async fn etcd_database_compacted(url: &str) -> (i64, i64) {
    let mut client = etcd_client::Client::connect([url], None)
        .await
        .expect("etcd client");
    let status = client.status().await.expect("etcd status");
    let revision = status.header().expect("header").revision();
    client
        .compact(
            revision,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .expect("compact");
    client.defragment().await.expect("defragment");
    let compacted = client.status().await.expect("etcd status");
    (status.db_size(), compacted.db_size())
}

/// Measurement 3 (see the top of this file).
fn state_at_scale() {
    use lathe_coordinator::blob::put_bytes;
    use lathe_coordinator::coordinator::AttemptCall;
    use lathe_coordinator::queue::MemoryQueue;
    use lathe_coordinator::record::{TaskState, WorkerRecord, encode, worker_key};
    use lathe_coordinator::state::{EtcdStore, StateStore};
    use lathe_coordinator::testing::{EtcdServer, fill_finished_jobs};
    use lathe_coordinator::{Coordinator, CoordinatorSettings};

    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    let setting = |name: &str, default: usize| -> usize {
        std::env::var(name)
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(default)
    };
    let tasks = setting("LATHE_BENCH_SCALE_TASKS", 100_000);
    let finished_jobs = setting("LATHE_BENCH_FINISHED_JOBS", 100);
    let finished_tasks = setting("LATHE_BENCH_FINISHED_TASKS_PER_JOB", 10_000);
    runtime().block_on(async {
        let store = Arc::new(
            EtcdStore::connect(&etcd.url(), "bench/")
                .await
                .expect("etcd"),
        );
        let blobs = MemoryBlobStore::new();
        let settings = CoordinatorSettings::default();
        let queue = MemoryQueue::new(settings.queue_settings(Duration::from_secs(30)));
        let coordinator = Coordinator::new(
            Arc::new(queue),
            store.clone(),
            Arc::new(blobs.clone()),
            settings,
        );
        let worker = WorkerRecord {
            id: "w1".to_owned(),
            host: "bench".to_owned(),
            pid: 1,
            slots: 4,
            current_tasks: Vec::new(),
            heartbeat_unix_ms: 0,
        };
        store
            .put(&worker_key("w1"), encode(&worker).expect("encode"))
            .await
            .expect("register");
        let rss_before_fill = rss_mb();
        let started = Instant::now();
        let finished = fill_finished_jobs(store.as_ref(), finished_jobs, finished_tasks)
            .await
            .expect("fill");
        let fill_s = started.elapsed().as_secs_f64();
        let source = put_bytes(&blobs, b"source").await.expect("blob");
        let master = put_bytes(&blobs, b"master").await.expect("blob");
        let specs = (0..tasks)
            .map(|index| v1::TrackSpec {
                source_digest: source.to_string(),
                source_name: format!("{index:06}.wav"),
                ..Default::default()
            })
            .collect();
        let request = v1::SubmitJobRequest {
            name: "scale".to_owned(),
            profile_toml: lathe_model::profile::Profile::preset("cd")
                .expect("preset")
                .to_toml(),
            tracks: specs,
            ..Default::default()
        };
        let rss_before = rss_mb();
        let started = Instant::now();
        let job_id = coordinator
            .submit(&request, "bench")
            .await
            .expect("submit");
        let submit_s = started.elapsed().as_secs_f64();
        drop(request);
        let (mut passes, mut statuses, mut pages) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..21 {
            let started = Instant::now();
            coordinator.dispatch_ready().await.expect("dispatch");
            passes.push(started.elapsed().as_secs_f64() * 1e3);
            let queued = coordinator
                .task_page(&job_id, Some(TaskState::Queued), None, 100)
                .await
                .expect("queued");
            for task in &queued.tasks {
                let token = coordinator
                    .start_task(&task.id, "w1", 1)
                    .await
                    .expect("start")
                    .attempt()
                    .expect("run")
                    .token;
                coordinator
                    .complete_task(AttemptCall { task_id: &task.id, worker_id: "w1", token: &token }, &master.to_string(), "{}", &[])
                    .await
                    .expect("complete");
            }
            let started = Instant::now();
            let status = coordinator.status(&job_id).await.expect("status");
            statuses.push(started.elapsed().as_secs_f64() * 1e3);
            assert!(status.counts.expect("counts").succeeded > 0);
            let started = Instant::now();
            let page = coordinator
                .task_page(&job_id, None, None, 1_000)
                .await
                .expect("page");
            pages.push(started.elapsed().as_secs_f64() * 1e3);
            assert_eq!(page.tasks.len(), 1_000.min(tasks));
        }
        // `lathe status JOB` as a user runs it, against the coordinator's gRPC server.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listen");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let (_, token) =
            lathe_coordinator::auth::create_token(store.as_ref(), "bench", lathe_coordinator::auth::Role::Read)
                .await
                .expect("token");
        let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
        let server = {
            let coordinator = coordinator.clone();
            tokio::spawn(async move {
                lathe_coordinator::grpc::serve(
                    &coordinator,
                    listener,
                    &lathe_coordinator::tls::Transport::InsecureLoopback,
                    async move {
                        let _ = server_stopped.await;
                    },
                )
                .await
            })
        };
        let (mut cli_live, mut cli_finished) = (Vec::new(), Vec::new());
        for _ in 0..11 {
            cli_live.push(cli_status_ms(&job_id, &url, &token).await);
            if let Some(job) = finished.last() {
                cli_finished.push(cli_status_ms(job, &url, &token).await);
            }
        }
        let _ = stop_server.send(());
        server.await.expect("join").expect("gRPC server");

        // Watch traffic: 100 running tasks each reporting progress twice a second, for 10 s.
        let busy = WorkerRecord {
            slots: 100,
            ..worker.clone()
        };
        store
            .put(&worker_key("w1"), encode(&busy).expect("encode"))
            .await
            .expect("register");
        coordinator.dispatch_ready().await.expect("dispatch");
        let queued = coordinator
            .task_page(&job_id, Some(TaskState::Queued), None, 100)
            .await
            .expect("queued");
        let mut running = Vec::new();
        for task in &queued.tasks {
            let attempt = coordinator
                .start_task(&task.id, "w1", 1)
                .await
                .expect("start")
                .attempt()
                .expect("run");
            running.push((task.id.clone(), attempt.token));
        }
        let mut watch = coordinator.watch(&job_id);
        let mut watch_bytes = 0;
        let mut watch_messages = 0;
        let reporter = {
            let coordinator = coordinator.clone();
            let running = running.clone();
            tokio::spawn(async move {
                for round in 0..20 {
                    for (task, token) in &running {
                        coordinator
                            .progress(AttemptCall { task_id: task, worker_id: "w1", token }, "render", f64::from(round) / 20.0)
                            .await
                            .expect("progress");
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            })
        };
        let watched = Instant::now();
        while watched.elapsed() < Duration::from_secs(10) {
            let Ok(Some(message)) =
                tokio::time::timeout(Duration::from_secs(1), watch.next()).await
            else {
                continue;
            };
            watch_bytes += prost::Message::encoded_len(&message.expect("status"));
            watch_messages += 1;
        }
        reporter.await.expect("reporter");
        let watch_s = watched.elapsed().as_secs_f64();

        let rss_end = rss_mb();
        let (db_before, db_after) = etcd_database_compacted(&etcd.url()).await;

        let filled = finished_jobs * finished_tasks;
        println!(
            "state at scale: {finished_jobs} finished jobs of {finished_tasks} tasks and one live job of {tasks} tasks in a real etcd"
        );
        println!(
            "  fill of the finished jobs: {filled} tasks in {fill_s:.1} s ({:.0} tasks/s)",
            filled as f64 / fill_s
        );
        println!(
            "  submit of the live job: {submit_s:.1} s ({:.0} tasks/s)",
            tasks as f64 / submit_s
        );
        println!("  dispatcher pass: {}", millis(passes));
        println!(
            "  status of the live job, the coordinator's (counts + running tasks): {}",
            millis(statuses)
        );
        println!("  a page of 1,000 tasks: {}", millis(pages));
        println!(
            "  lathe status JOB (the CLI over gRPC) of the live job: {}",
            millis(cli_live)
        );
        if !cli_finished.is_empty() {
            println!(
                "  lathe status JOB (the CLI over gRPC) of a finished job: {}",
                millis(cli_finished)
            );
        }
        println!(
            "  this process's resident memory: {rss_end:.0} MB ({rss_before_fill:.0} MB before the fill, {rss_before:.0} MB before the submit)"
        );
        println!(
            "  etcd's database: {:.0} MB; after compaction and defragmentation {:.0} MB; its data folder on disk {:.0} MB",
            db_before as f64 / 1e6,
            db_after as f64 / 1e6,
            folder_bytes(etcd.data_dir()) as f64 / 1e6
        );
        println!(
            "  watch with {} running tasks reporting twice a second: {watch_messages} messages, {:.1} kB/s",
            running.len(),
            watch_bytes as f64 / watch_s / 1e3
        );
    });
}
