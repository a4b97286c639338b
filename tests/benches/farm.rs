//! Farm measurements (a benchmark, not a test): run with `cargo bench -p lathe-tests --bench farm`.
//!
//! 1. gRPC streaming throughput on loopback: a 256 MiB blob uploaded to and downloaded from a
//!    coordinator (in-memory blob store, so the disk is out of the picture), digests verified.
//! 2. The same catalogue mastered by `lathe master -j 2` and by a real farm (nats-server, etcd, a
//!    coordinator and two one-slot workers as processes): wall times, and the time from submit to the
//!    first task running.

use std::path::Path;
use std::time::{Duration, Instant};

use lathe_tests::farm::{Binaries, Farm, FarmOptions, write_catalogue};
use lathe_tests::lathe;

const BINARIES: Binaries = Binaries {
    coordinator: env!("CARGO_BIN_EXE_farm-coordinator"),
    worker: env!("CARGO_BIN_EXE_farm-worker"),
};

fn streaming_throughput(dir: &Path) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let farm = lathe_worker::embedded::EmbeddedFarm::start(0, dir)
            .await
            .expect("embedded farm");
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
        let started = Instant::now();
        let digests = farm
            .client
            .upload_sources(&[blob.as_path()])
            .await
            .expect("upload");
        let upload_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        farm.client
            .download(&digests[0].to_string(), &dir.join("back.bin"))
            .await
            .expect("download");
        let download_s = started.elapsed().as_secs_f64();
        println!(
            "gRPC streaming, loopback, 256 MiB (SHA-256 on both sides): upload {:.0} MB/s, download {:.0} MB/s",
            megabytes / upload_s,
            megabytes / download_s
        );
        farm.stop().await;
    });
}

fn farm_against_local(dir: &Path) {
    let sources = dir.join("sources");
    std::fs::create_dir_all(&sources).expect("sources");
    write_catalogue(&sources, 6, 30.0);
    let started = Instant::now();
    let outcome = lathe(&[
        "master",
        sources.to_str().expect("utf-8"),
        "--profile",
        "streaming",
        "--out",
        dir.join("local").to_str().expect("utf-8"),
        "-j",
        "2",
    ]);
    assert_eq!(outcome.status, 0, "{}", outcome.stderr);
    let local_s = started.elapsed().as_secs_f64();

    // The embedded farm (what `lathe master` is to run on): coordinator and 2 worker loops in process.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let embedded_s = runtime.block_on(async {
        let started = Instant::now();
        let farm = lathe_worker::embedded::EmbeddedFarm::start(2, &dir.join("scratch"))
            .await
            .expect("embedded farm");
        let mut files: Vec<_> = std::fs::read_dir(&sources)
            .expect("sources")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        let profile = lathe_engine::profile::Profile::preset("streaming").expect("preset");
        let status =
            lathe_worker::embedded::submit_and_wait(&farm.client, &files, &profile, "bench", 0)
                .await
                .expect("job");
        assert_eq!(status.state(), lathe_proto::v1::JobState::Succeeded);
        lathe_worker::embedded::fetch_outputs(&farm.client, &status, &dir.join("embedded"))
            .await
            .expect("fetch");
        farm.stop().await;
        started.elapsed().as_secs_f64()
    });
    println!(
        "embedded farm (2 worker loops, in-process queue/store/blobs): {embedded_s:.2} s, {:+.1} % against lathe master -j 2",
        (embedded_s / local_s - 1.0) * 100.0
    );

    let Some(mut farm) = Farm::start(BINARIES, FarmOptions::default()) else {
        return;
    };
    farm.start_worker("w1");
    farm.start_worker("w2");
    std::thread::sleep(Duration::from_secs(1));
    // Upload first, so that the submit-to-first-task time is the scheduling path alone.
    let started = Instant::now();
    let outcome = farm.lathe(&["submit", sources.to_str().expect("utf-8"), "--json"]);
    assert_eq!(outcome.status, 0, "{}", outcome.stderr);
    let upload_and_submit_s = started.elapsed().as_secs_f64();
    let first = Instant::now();
    let job: serde_json::Value = serde_json::from_str(&outcome.stdout).expect("json");
    let job = job["job_id"].as_str().expect("job id").to_owned();
    let _ = farm.wait_for_status(&job, Duration::from_secs(600), |s| {
        s["tasks"].as_array().is_some_and(|t| {
            t.iter()
                .any(|t| t["state"] != "queued" && t["state"] != "pending")
        })
    });
    let first_task_ms = first.elapsed().as_secs_f64() * 1e3;
    let last = farm.wait_for_status(&job, Duration::from_secs(600), |s| s["state"] != "running");
    assert_eq!(last["state"], "succeeded", "{last:#}");
    let farm_s = upload_and_submit_s + first.elapsed().as_secs_f64();
    println!(
        "6 tracks x 30-32.5 s, streaming profile: lathe master -j 2 {local_s:.2} s; farm (2 workers x 1 slot) {farm_s:.2} s \
         including upload+submit {upload_and_submit_s:.2} s; overhead {:+.1} %; submit to first task running <= {first_task_ms:.0} ms \
         (polled through `lathe status`)",
        (farm_s / local_s - 1.0) * 100.0
    );
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    streaming_throughput(dir.path());
    farm_against_local(dir.path());
}
