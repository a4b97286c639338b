//! The farm's guarantees, each proven against a real farm: `nats-server -js`, `etcd`, the coordinator
//! and workers as separate processes on loopback (see `lathe_tests::farm`). Masters are compared byte
//! for byte with `lathe master` on the same inputs and profile.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::BINARIES;
use lathe_tests::farm::{
    Farm, FarmOptions, files_with_extension, serial, status_from_json_lines, write_catalogue,
};
use lathe_tests::lathe;
use serde_json::Value;

const PROFILE: &str = "streaming";
const LONG: Duration = Duration::from_secs(600);

/// A farm whose workers hold every render at the gate until the test releases it: the tests that
/// act on a running task (kill, restart, cancel, drain) then never race the engine's speed.
fn holding() -> FarmOptions {
    FarmOptions {
        hold_renders: true,
        ..FarmOptions::default()
    }
}

/// `lathe master` on `sources` into `out`: the reference masters.
fn local_masters(sources: &Path, out: &Path) -> BTreeMap<String, Vec<u8>> {
    let outcome = lathe(&[
        "master",
        sources.to_str().expect("utf-8 path"),
        "--profile",
        PROFILE,
        "--out",
        out.to_str().expect("utf-8 path"),
        "-j",
        "2",
    ]);
    assert_eq!(outcome.status, 0, "lathe master: {}", outcome.stderr);
    files_with_extension(out, "flac")
}

fn submit(farm: &Farm, sources: &Path) -> String {
    let outcome = farm.lathe(&[
        "submit",
        sources.to_str().expect("utf-8 path"),
        "--profile",
        PROFILE,
        "--json",
    ]);
    assert_eq!(outcome.status, 0, "lathe submit: {}", outcome.stderr);
    let reply: Value = serde_json::from_str(&outcome.stdout).expect("submit --json");
    reply["job_id"].as_str().expect("job id").to_owned()
}

fn fetch(farm: &Farm, job: &str, out: &Path) -> BTreeMap<String, Vec<u8>> {
    let outcome = farm.lathe(&["fetch", job, "--out", out.to_str().expect("utf-8 path")]);
    assert_eq!(outcome.status, 0, "lathe fetch: {}", outcome.stderr);
    files_with_extension(out, "flac")
}

fn tasks(status: &Value) -> &Vec<Value> {
    status["tasks"].as_array().expect("tasks")
}

fn count_state(status: &Value, state: &str) -> usize {
    tasks(status).iter().filter(|t| t["state"] == state).count()
}

fn ended(status: &Value) -> bool {
    status["state"] != "running" && status["state"] != "suspended"
}

/// `lathe ARGS --json` on the farm, which must exit 0: its JSON reply.
fn json_reply(farm: &Farm, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let outcome = farm.lathe(&all);
    assert_eq!(outcome.status, 0, "lathe {args:?}: {}", outcome.stderr);
    serde_json::from_str(&outcome.stdout).expect("one JSON reply")
}

/// The files under a folder, at any depth.
fn files_under(folder: &Path) -> usize {
    std::fs::read_dir(folder).map_or(0, |entries| {
        entries
            .flatten()
            .map(|entry| {
                let path = entry.path();
                if path.is_dir() { files_under(&path) } else { 1 }
            })
            .sum()
    })
}

fn running_on(status: &Value, worker: &str) -> bool {
    tasks(status).iter().any(|t| {
        t["state"] == "running" && t["worker"] == worker && t["fraction"].as_f64() > Some(0.0)
    })
}

fn assert_same_masters(farm: &BTreeMap<String, Vec<u8>>, local: &BTreeMap<String, Vec<u8>>) {
    assert_eq!(
        farm.keys().collect::<Vec<_>>(),
        local.keys().collect::<Vec<_>>(),
        "same file names"
    );
    for (name, bytes) in local {
        assert!(
            farm[name] == *bytes,
            "{name}: farm master differs from lathe master"
        );
    }
}

/// Guarantee 1: six tracks on two workers give masters byte-identical to `lathe master`, and
/// `submit --watch` exits 0, on a farm secured as `make farm` runs it: gRPC over TLS with a
/// certificate per worker, NATS and etcd over TLS with their users.
#[test]
fn farm_masters_are_byte_identical_to_lathe_master() {
    let _serial = serial();
    let options = FarmOptions {
        secure: true,
        ..FarmOptions::default()
    };
    let Some(mut farm) = Farm::start(BINARIES, options) else {
        return;
    };
    farm.start_worker("w1");
    farm.start_worker("w2");
    let work = tempfile::tempdir().expect("temp dir");
    let sources = work.path().join("sources");
    std::fs::create_dir_all(&sources).expect("sources");
    write_catalogue(&sources, 6, 4.0);
    let local = local_masters(&sources, &work.path().join("local"));
    assert_eq!(local.len(), 6);

    let outcome = farm.lathe(&[
        "submit",
        sources.to_str().expect("utf-8 path"),
        "--profile",
        PROFILE,
        "--watch",
        "--json",
    ]);
    assert_eq!(outcome.status, 0, "submit --watch: {}", outcome.stderr);
    let watched: Value =
        serde_json::from_str(outcome.stdout.lines().last().expect("a status line"))
            .expect("JSON status");
    assert_eq!(watched["state"], "succeeded");
    assert_eq!(watched["counts"]["succeeded"], 6);
    let job = watched["job_id"].as_str().expect("job id");
    let last = status_from_json_lines(&farm.lathe(&["status", job, "--json"]).stdout);
    assert_eq!(count_state(&last, "succeeded"), 6);
    // Both workers took part.
    let workers: std::collections::BTreeSet<&str> = tasks(&last)
        .iter()
        .filter_map(|t| t["worker"].as_str())
        .collect();
    assert_eq!(workers.len(), 2, "tasks ran on {workers:?}");

    let fetched = fetch(&farm, job, &work.path().join("farm"));
    assert_same_masters(&fetched, &local);

    // (One job is one trace: `farm_observability.rs` collects the spans and checks the tree.)
    // Reports sit beside the masters, as `lathe master` writes them.
    assert!(work.path().join("farm/01-track.report.json").is_file());

    // Sources already stored are not sent again: a second submission uploads nothing new and
    // gives the same masters.
    let job2 = submit(&farm, &sources);
    farm.wait_for_status(&job2, LONG, ended);
    assert_same_masters(&fetch(&farm, &job2, &work.path().join("farm2")), &local);
}

/// Guarantee 2: a worker killed with SIGKILL in the middle of a task loses nothing: the task is
/// redelivered after the ack deadline and the job completes with identical masters.
#[test]
fn worker_killed_mid_task_loses_nothing() {
    let _serial = serial();
    let Some(mut farm) = Farm::start(BINARIES, holding()) else {
        return;
    };
    farm.start_worker("w1");
    farm.start_worker("w2");
    let work = tempfile::tempdir().expect("temp dir");
    let sources = work.path().join("sources");
    std::fs::create_dir_all(&sources).expect("sources");
    write_catalogue(&sources, 6, 4.0);
    let local = local_masters(&sources, &work.path().join("local"));

    let job = submit(&farm, &sources);
    // w1 holds its render at the gate: the kill lands mid-render.
    farm.wait_held("w1", LONG);
    farm.signal_worker("w1", "KILL");
    assert_eq!(
        farm.wait_worker("w1", Duration::from_secs(10)),
        None,
        "killed by a signal"
    );
    farm.release_all();

    let status = farm.wait_for_status(&job, LONG, ended);
    assert_eq!(status["state"], "succeeded", "{status:#}");
    let retried = tasks(&status)
        .iter()
        .filter(|t| t["attempts"].as_u64() >= Some(2))
        .count();
    assert!(
        retried >= 1,
        "the killed worker's task ran again: {status:#}"
    );
    assert_same_masters(&fetch(&farm, &job, &work.path().join("farm")), &local);
}

/// Guarantee 3: the coordinator killed and restarted mid-job: the job completes, every task exactly
/// once in the job's record, masters identical.
#[test]
fn coordinator_restart_loses_no_job() {
    let _serial = serial();
    let Some(mut farm) = Farm::start(BINARIES, holding()) else {
        return;
    };
    farm.start_worker("w1");
    farm.start_worker("w2");
    let work = tempfile::tempdir().expect("temp dir");
    let sources = work.path().join("sources");
    std::fs::create_dir_all(&sources).expect("sources");
    write_catalogue(&sources, 6, 4.0);
    let local = local_masters(&sources, &work.path().join("local"));

    let job = submit(&farm, &sources);
    // Both workers hold a render; w1's goes on and succeeds while w2's stays held (running).
    let first = farm.wait_held("w1", LONG);
    farm.wait_held("w2", LONG);
    farm.release("w1", &first);
    let before = farm.wait_for_status(&job, LONG, |s| {
        count_state(s, "succeeded") >= 1 && count_state(s, "running") >= 1
    });
    assert!(!ended(&before));
    farm.kill_coordinator();
    std::thread::sleep(Duration::from_secs(1));
    farm.start_coordinator();
    farm.release_all();

    let status = farm.wait_for_status(&job, LONG, ended);
    assert_eq!(status["state"], "succeeded", "{status:#}");
    assert_eq!(tasks(&status).len(), 6, "no task lost or added");
    assert_eq!(count_state(&status, "succeeded"), 6);
    assert_same_masters(&fetch(&farm, &job, &work.path().join("farm")), &local);
}

/// Guarantee 4: a corrupt track fails at once with a clear error (its source is at fault, so it
/// is not retried and counts against no worker), the others complete, and the job ends
/// completed-with-failures; `lathe status` shows why.
#[test]
fn corrupt_track_fails_alone_at_once_and_blames_no_worker() {
    let _serial = serial();
    let options = FarmOptions {
        max_attempts: 3,
        // One worker fault would blocklist a worker: a refused source must not count as one.
        blocklist_after: 1,
        ..FarmOptions::default()
    };
    let Some(mut farm) = Farm::start(BINARIES, options) else {
        return;
    };
    farm.start_worker("w1");
    farm.start_worker("w2");
    let work = tempfile::tempdir().expect("temp dir");
    let sources = work.path().join("sources");
    std::fs::create_dir_all(&sources).expect("sources");
    write_catalogue(&sources, 5, 3.0);
    let mut corrupt = b"RIFF\x24\x08\x00\x00WAVEfmt ".to_vec();
    corrupt.extend(std::iter::repeat_n(0xA5u8, 4000));
    std::fs::write(sources.join("03-corrupt.wav"), &corrupt).expect("corrupt track");

    let outcome = farm.lathe(&[
        "submit",
        sources.to_str().expect("utf-8 path"),
        "--profile",
        PROFILE,
        "--watch",
        "--json",
    ]);
    assert_eq!(outcome.status, 1, "submit --watch fails when a task failed");
    let watched: Value =
        serde_json::from_str(outcome.stdout.lines().last().expect("status")).expect("JSON status");
    assert_eq!(watched["state"], "completed_with_failures");
    assert_eq!(watched["counts"]["succeeded"], 5);
    assert_eq!(watched["counts"]["failed"], 1);
    let job = watched["job_id"].as_str().expect("job id");
    let listed = farm.lathe(&["status", job, "--json"]);
    assert_eq!(listed.status, 0, "{}", listed.stderr);
    let last = status_from_json_lines(&listed.stdout);
    // `--state failed` pages through the failed tasks alone.
    let only_failed = farm.lathe(&["status", job, "--json", "--state", "failed"]);
    assert_eq!(
        status_from_json_lines(&only_failed.stdout)["tasks"]
            .as_array()
            .expect("tasks")
            .len(),
        1,
        "{}",
        only_failed.stdout
    );
    assert_eq!(count_state(&last, "succeeded"), 5);
    let failed: Vec<&Value> = tasks(&last)
        .iter()
        .filter(|t| t["state"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["source"], "03-corrupt.wav");
    assert_eq!(failed[0]["attempts"], 1, "a source at fault is not retried");
    assert_eq!(
        last["blocklisted_workers"],
        serde_json::json!([]),
        "a source at fault blames no worker"
    );
    let error = failed[0]["last_error"].as_str().expect("error");
    assert!(
        error.starts_with("03-corrupt.wav:") && !error.contains("lathe-task-"),
        "the error names the file as submitted: {error}"
    );

    let table = farm.lathe(&["status", job]);
    assert_eq!(table.status, 0);
    assert!(
        table.stdout.contains("completed_with_failures"),
        "{}",
        table.stdout
    );
    assert!(table.stdout.contains(error), "{}", table.stdout);

    // Operations on the finished job, each with --json. Retry runs the failed task again, with
    // fresh attempts: the source is refused a second time, once.
    let retried = json_reply(&farm, &["retry", job]);
    assert_eq!(retried["retried"], 1, "{retried:#}");
    assert_eq!(retried["state"], "running");
    let again = farm.wait_for_status(job, LONG, ended);
    assert_eq!(again["state"], "completed_with_failures");
    assert_eq!(again["counts"]["failed"], 1);
    assert_eq!(
        farm.log("coordinator")
            .matches("task input refused")
            .count(),
        2,
        "the refused task ran again after the retry"
    );
    assert_eq!(json_reply(&farm, &["priority", job, "7"])["priority"], 7);
    assert_eq!(json_reply(&farm, &["pin", job])["pinned"], true);
    assert_eq!(json_reply(&farm, &["unpin", job])["pinned"], false);
    // Delete removes the job and every blob (6 sources, 5 masters), as no other job uses them.
    let deleted = json_reply(&farm, &["delete", job]);
    assert_eq!(deleted["deleted"], true);
    assert_eq!(deleted["tasks_removed"], 6);
    assert_eq!(deleted["blobs_removed"], 11);
    assert_eq!(
        files_under(&farm.dir.path().join("blobs").join("blake3")),
        0
    );
    let gone = farm.lathe(&["status", job]);
    assert_ne!(gone.status, 0);
    assert!(gone.stderr.contains("does not exist"), "{}", gone.stderr);
}

/// `lathe suspend`: the running task finishes, no other starts (a queued one goes back to
/// pending); `lathe resume` lets the job run to the end.
#[test]
fn suspend_lets_running_tasks_finish_and_starts_none_until_resumed() {
    let _serial = serial();
    let Some(mut farm) = Farm::start(BINARIES, holding()) else {
        return;
    };
    farm.start_worker("w1");
    let work = tempfile::tempdir().expect("temp dir");
    let sources = work.path().join("sources");
    std::fs::create_dir_all(&sources).expect("sources");
    write_catalogue(&sources, 4, 2.0);
    let job = submit(&farm, &sources);
    farm.wait_held("w1", LONG);
    assert_eq!(json_reply(&farm, &["suspend", &job])["state"], "suspended");
    farm.release_all();
    let settled = |status: &Value| {
        status["counts"]["succeeded"] == 1
            && status["counts"]["running"] == 0
            && status["counts"]["queued"] == 0
    };
    let status = farm.wait_for_status(&job, LONG, settled);
    assert_eq!(status["state"], "suspended");
    assert_eq!(status["counts"]["pending"], 3, "{status:#}");
    std::thread::sleep(Duration::from_secs(2));
    let still = farm.wait_for_status(&job, LONG, |_| true);
    assert!(
        settled(&still),
        "nothing started while suspended: {still:#}"
    );

    assert_eq!(json_reply(&farm, &["resume", &job])["state"], "running");
    let done = farm.wait_for_status(&job, LONG, ended);
    assert_eq!(done["state"], "succeeded");
    assert_eq!(done["counts"]["succeeded"], 4);
}

/// Guarantee 5: `lathe cancel`: no new task starts, running ones stop, the job ends cancelled.
#[test]
fn cancel_stops_running_tasks_and_starts_no_more() {
    let _serial = serial();
    let Some(mut farm) = Farm::start(BINARIES, holding()) else {
        return;
    };
    farm.start_worker("w1");
    farm.start_worker("w2");
    let work = tempfile::tempdir().expect("temp dir");
    let sources = work.path().join("sources");
    std::fs::create_dir_all(&sources).expect("sources");
    write_catalogue(&sources, 6, 4.0);

    let job = submit(&farm, &sources);
    // Both workers hold a render at the gate: cancel finds them mid-render.
    farm.wait_held("w1", LONG);
    farm.wait_held("w2", LONG);
    let outcome = farm.lathe(&["cancel", &job, "--json"]);
    assert_eq!(outcome.status, 0, "{}", outcome.stderr);
    let reply: Value = serde_json::from_str(&outcome.stdout).expect("cancel --json");
    assert_eq!(reply["state"], "cancelled");

    // Running tasks stop: the workers drop them (their registrations show no current task).
    let started = std::time::Instant::now();
    loop {
        let workers = farm.lathe(&["workers", "--json"]);
        let list: Value = serde_json::from_str(&workers.stdout).expect("workers --json");
        let busy = list
            .as_array()
            .expect("array")
            .iter()
            .any(|w| !w["current_tasks"].as_array().expect("tasks").is_empty());
        if !busy {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "workers still busy: {list:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    let status = farm.wait_for_status(&job, LONG, ended);
    assert_eq!(status["state"], "cancelled");
    let succeeded = count_state(&status, "succeeded");
    assert_eq!(
        count_state(&status, "cancelled") + succeeded,
        6,
        "{status:#}"
    );
    assert_eq!(succeeded, 0, "no render got past the gate: {status:#}");
    for worker in ["w1", "w2"] {
        assert!(
            farm.log(worker).contains("task stopped"),
            "{worker}'s running task was stopped mid-render: {}",
            farm.log(worker)
        );
    }
}

/// Guarantee 6: a worker joining mid-job takes tasks; a worker sent SIGTERM hands its task back,
/// exits 0, and the job completes with identical masters.
#[test]
fn worker_joins_mid_job_and_sigterm_drains_without_loss() {
    let _serial = serial();
    let Some(mut farm) = Farm::start(BINARIES, holding()) else {
        return;
    };
    farm.start_worker("w1");
    let work = tempfile::tempdir().expect("temp dir");
    let sources = work.path().join("sources");
    std::fs::create_dir_all(&sources).expect("sources");
    write_catalogue(&sources, 6, 4.0);
    let local = local_masters(&sources, &work.path().join("local"));

    let job = submit(&farm, &sources);
    let first = farm.wait_held("w1", LONG);
    farm.release("w1", &first);
    farm.wait_for_status(&job, LONG, |s| count_state(s, "succeeded") >= 1);
    farm.start_worker("w2");
    // w1 holds its next render and w2 its first: the SIGTERM lands while w1's render is running.
    farm.wait_held("w1", LONG);
    farm.wait_held("w2", LONG);
    farm.wait_for_status(&job, LONG, |s| running_on(s, "w1") && running_on(s, "w2"));
    farm.signal_worker("w1", "TERM");
    assert_eq!(
        farm.wait_worker("w1", Duration::from_secs(30)),
        Some(0),
        "a drained worker exits cleanly"
    );
    assert!(
        farm.log("w1").contains("task handed back"),
        "{}",
        farm.log("w1")
    );
    farm.release_all();

    let status = farm.wait_for_status(&job, LONG, ended);
    assert_eq!(status["state"], "succeeded", "{status:#}");
    let on_w2 = tasks(&status)
        .iter()
        .filter(|t| t["worker"] == "w2")
        .count();
    assert!(on_w2 >= 2, "the joining worker took tasks: {status:#}");
    assert_same_masters(&fetch(&farm, &job, &work.path().join("farm")), &local);
}

/// A job of `tracks` tracks under way on two workers, each holding a render at the gate (with
/// more of the job queued), for the tests that disrupt a server mid-job; returns the farm, the
/// sources folder (in `work`) and the job.
fn job_under_way(work: &Path, tracks: usize) -> Option<(Farm, std::path::PathBuf, String)> {
    let mut farm = Farm::start(BINARIES, holding())?;
    farm.start_worker("w1");
    farm.start_worker("w2");
    let sources = work.join("sources");
    std::fs::create_dir_all(&sources).expect("sources");
    write_catalogue(&sources, tracks, 2.0);
    let job = submit(&farm, &sources);
    farm.wait_held("w1", LONG);
    farm.wait_held("w2", LONG);
    Some((farm, sources, job))
}

/// Lets every render go on, waits for `jobs` to end, and checks that each succeeded with masters
/// byte-identical to `lathe master` on `sources`.
fn finishes_as_lathe_master(farm: &mut Farm, work: &Path, sources: &Path, jobs: &[&str]) {
    farm.release_all();
    let local = local_masters(sources, &work.join("local"));
    for (index, job) in jobs.iter().enumerate() {
        let status = farm.wait_for_status(job, LONG, ended);
        assert_eq!(status["state"], "succeeded", "{status:#}");
        let fetched = fetch(farm, job, &work.join(format!("farm-{index}")));
        assert_same_masters(&fetched, &local);
    }
}

/// Nothing stalls: nats-server restarted mid-job with its data (streams, messages and the
/// consumer's state survive); the workers and the coordinator reconnect and the job completes.
#[test]
fn nats_restart_with_its_data_mid_job_loses_nothing() {
    let _serial = serial();
    let work = tempfile::tempdir().expect("temp dir");
    let Some((mut farm, sources, job)) = job_under_way(work.path(), 5) else {
        return;
    };
    farm.restart_nats(true);
    finishes_as_lathe_master(&mut farm, work.path(), &sources, &[&job]);
}

/// Nothing stalls: nats-server restarted mid-job without its data. The stream, the consumer and
/// the queued tasks' messages are gone: the queue creates the stream again, the reconciler
/// publishes the queued tasks again, and the running ones complete over gRPC.
#[test]
fn nats_restart_without_its_data_mid_job_loses_nothing() {
    let _serial = serial();
    let work = tempfile::tempdir().expect("temp dir");
    let Some((mut farm, sources, job)) = job_under_way(work.path(), 5) else {
        return;
    };
    farm.restart_nats(false);
    finishes_as_lathe_master(&mut farm, work.path(), &sources, &[&job]);
    assert!(
        farm.log("coordinator")
            .contains("queued task missing from the queue: published again"),
        "the reconciler published the lost tasks again"
    );
}

/// Nothing stalls: etcd restarted mid-job (its data kept).
#[test]
fn etcd_restart_mid_job_loses_nothing() {
    let _serial = serial();
    let work = tempfile::tempdir().expect("temp dir");
    let Some((mut farm, sources, job)) = job_under_way(work.path(), 5) else {
        return;
    };
    farm.kill_etcd();
    farm.restart_etcd();
    finishes_as_lathe_master(&mut farm, work.path(), &sources, &[&job]);
}

/// Nothing stalls: etcd away for 20 s while one job runs and another is being submitted. The
/// submission is retried under one idempotency key until etcd is back (one job, not two), the
/// dispatcher goes on, and both jobs complete.
#[test]
fn etcd_away_for_20_s_during_submit_and_dispatch_loses_nothing() {
    let _serial = serial();
    let work = tempfile::tempdir().expect("temp dir");
    let Some((mut farm, sources, first)) = job_under_way(work.path(), 4) else {
        return;
    };
    farm.kill_etcd();
    let (url, token) = (farm.url(), farm.token().to_owned());
    let folder = sources.clone();
    let submitting = std::thread::spawn(move || {
        lathe(&[
            "submit",
            folder.to_str().expect("utf-8 path"),
            "--profile",
            PROFILE,
            "--json",
            "--coordinator",
            &url,
            "--token",
            &token,
        ])
    });
    std::thread::sleep(Duration::from_secs(20));
    if submitting.is_finished() {
        let outcome = submitting.join().expect("submit thread");
        panic!(
            "the submission did not wait for etcd: exit {}, {}{}",
            outcome.status, outcome.stdout, outcome.stderr
        );
    }
    farm.restart_etcd();
    let outcome = submitting.join().expect("submit thread");
    assert_eq!(outcome.status, 0, "lathe submit: {}", outcome.stderr);
    let reply: Value = serde_json::from_str(&outcome.stdout).expect("submit --json");
    let second = reply["job_id"].as_str().expect("job id").to_owned();
    finishes_as_lathe_master(&mut farm, work.path(), &sources, &[&first, &second]);
    let jobs = farm.lathe(&["status", "--json"]);
    assert_eq!(jobs.status, 0, "{}", jobs.stderr);
    assert_eq!(
        jobs.stdout
            .lines()
            .filter(|line| line.contains("job_id"))
            .count(),
        2,
        "one job per submission: {}",
        jobs.stdout
    );
}

/// Security on real servers, each an attack that must fail: a call without a token, a read token
/// cancelling, a submit token fetching another owner's job, and a `CompleteTask` forged for a task
/// a worker is rendering (a wrong attempt token, or another worker's claim). The job then
/// completes with the real masters, byte-identical to `lathe master`.
#[test]
fn forged_calls_are_refused_and_the_real_masters_are_delivered() {
    let _serial = serial();
    let work = tempfile::tempdir().expect("temp dir");
    let Some((mut farm, sources, job)) = job_under_way(work.path(), 2) else {
        return;
    };
    let url = farm.url();
    let anonymous = lathe(&["status", &job, "--coordinator", &url]);
    assert_ne!(anonymous.status, 0);
    assert!(
        anonymous.stderr.contains("not authenticated"),
        "{}",
        anonymous.stderr
    );
    let reader = farm.create_token("auditor", "read");
    let cancel = farm.lathe_with_token(&["cancel", &job], &reader);
    assert_ne!(cancel.status, 0);
    assert!(
        cancel.stderr.contains("needs a token with the submit role"),
        "{}",
        cancel.stderr
    );
    let alice = farm.create_token("alice", "submit");
    let out = work.path().join("stolen");
    let fetch_other = farm.lathe_with_token(
        &["fetch", &job, "--out", out.to_str().expect("utf-8 path")],
        &alice,
    );
    assert_ne!(fetch_other.status, 0);
    assert!(
        fetch_other.stderr.contains("belongs to another user"),
        "{}",
        fetch_other.stderr
    );
    assert_eq!(files_under(&out), 0, "nothing of the job was written");

    // A forged completion of the render w1 holds: the attempt's token is not known outside it.
    let held = farm.wait_held("w1", LONG);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let refusals = runtime.block_on(async {
        let admin = lathe_coordinator::client::FarmClient::connect(&farm.access())
            .await
            .expect("connect");
        let fake = admin
            .upload_bytes(b"not the master".to_vec().into())
            .await
            .expect("upload")
            .to_string();
        let mut refusals = Vec::new();
        for (worker, token) in [("w1", "forged"), ("w2", "")] {
            let forged = lathe_proto::v1::CompleteTaskRequest {
                task_id: held.clone(),
                worker_id: worker.to_owned(),
                output_digest: fake.clone(),
                report_json: "{}".to_owned(),
                attempt_token: token.to_owned(),
                outputs: Vec::new(),
            };
            let refused = admin.workers.clone().complete_task(forged).await;
            refusals.push(refused.expect_err("a forged completion").code());
        }
        refusals
    });
    assert_eq!(refusals, [tonic::Code::PermissionDenied; 2]);
    assert!(farm.log("coordinator").contains("completion refused"));
    finishes_as_lathe_master(&mut farm, work.path(), &sources, &[&job]);
}
