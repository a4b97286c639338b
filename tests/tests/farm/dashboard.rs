//! The coordinator's dashboard in a real browser: headless Chromium driven over WebDriver
//! (`chromedriver`) against a live local farm (`nats-server`, `etcd`, the coordinator with
//! `--http-listen` and a worker whose renders wait at the test's gate). The test signs in through
//! the form with the farm's admin token and follows a job: it appears in the list with its owner,
//! its progress advances without a reload, its failed track shows its error (as text: a crafted
//! file name injects no markup), and the cancel button cancels it. Then a submit token of another
//! user sees no trace of the job, and a read token sees it without its buttons. Screenshots go to
//! `$CARGO_TARGET_TMPDIR/dashboard-screenshots/`. Apart from the browser, the coordinator refuses
//! to serve the dashboard in plain HTTP off loopback.
//!
//! Skips, saying so, when `chromium`, `chromedriver`, `nats-server` or `etcd` is not installed
//! (`make deps` installs them).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::BINARIES;
use lathe_tests::farm::{Farm, FarmOptions, serial, status_from_json_lines, write_catalogue};
use serde_json::{Value, json};

use crate::webdriver::Session;

/// How long the page may take to show a change.
const PATIENCE: Duration = Duration::from_secs(60);

/// A file name that would run script if the dashboard did not escape it.
const CRAFTED_SOURCE: &str = "00-<img src=x onerror=window.pwned=1>.wav";
/// A job name that would run script if the dashboard did not escape it.
const CRAFTED_JOB: &str = "<script>window.pwned=2</script> dashboard";

/// The absolute path of `binary` on `PATH`.
fn on_path(binary: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|folder| folder.join(binary))
        .find(|path| path.is_file())
}

/// A `chromedriver` on a free port and the browser profile of its sessions; on drop, the driver
/// and any browser process still using the profile (one a failed test left open) are killed.
struct ChromeDriver {
    child: Child,
    port: u16,
    profile: tempfile::TempDir,
}

impl ChromeDriver {
    fn start(binary: &Path, log: &Path) -> Self {
        let profile = tempfile::tempdir().expect("browser profile");
        let port = lathe_coordinator::testing::free_port();
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not listen on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            port,
            profile,
        }
    }

    /// The driver's `host:port`.
    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Browser processes of this profile only: their command line names its folder.
        let profile = self.profile.path().to_string_lossy().into_owned();
        let Ok(processes) = std::fs::read_dir("/proc") else {
            return;
        };
        for process in processes.flatten() {
            let Some(pid) = process
                .file_name()
                .to_str()
                .and_then(|pid| pid.parse::<u32>().ok())
            else {
                continue;
            };
            let command = std::fs::read(process.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&command).contains(&profile) {
                let _ = Command::new("kill")
                    .args(["-s", "KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// A headless Chromium session with a fresh profile.
fn open_browser(driver: &ChromeDriver, chromium: &Path) -> Session {
    Session::open(
        &driver.address(),
        json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,1000",
                    format!("--user-data-dir={}", driver.profile.path().display()),
                ],
            },
        }),
    )
}

/// Runs `script` in the page until `condition` holds on its value; returns that value.
fn wait_for(
    browser: &Session,
    script: &str,
    what: &str,
    condition: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let value = browser.execute(script);
        if condition(&value) {
            return value;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "{what}: not within {PATIENCE:?}; last {value}; page: {}",
            browser.source()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The text of the first element `selector` finds.
fn text(browser: &Session, selector: &str) -> String {
    browser.find(selector).text()
}

/// Saves a screenshot of the page as `name`.png; returns its path.
fn screenshot(browser: &Session, name: &str) -> PathBuf {
    let folder = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    std::fs::create_dir_all(&folder).expect("screenshot folder");
    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    let path = folder.join(format!("{name}.png"));
    std::fs::write(&path, png).expect("write the screenshot");
    path
}

/// Signs in through the dashboard's form at `dashboard` with `token`; the browser lands on the
/// jobs list.
fn sign_in(browser: &Session, dashboard: &str, token: &str) {
    browser.goto(&format!("{dashboard}/login"));
    browser.wait_for_element("#token", PATIENCE);
    browser.execute(&format!(
        "document.getElementById('token').value = {}; return true;",
        json!(token)
    ));
    browser.find("#sign-in").click();
    browser.wait_for_element("#jobs", PATIENCE);
}

/// Signs out with the header's button; the browser lands on the sign-in page.
fn sign_out(browser: &Session) {
    browser.find("#sign-out").click();
    browser.wait_for_element("#token", PATIENCE);
}

/// Nothing injected ran: neither crafted name set `window.pwned`.
fn assert_not_injected(browser: &Session) {
    let pwned = browser.execute("return window.pwned === undefined;");
    assert_eq!(pwned, Value::Bool(true), "a crafted name ran as script");
}

#[test]
fn the_dashboard_follows_a_job_live_and_cancels_it() {
    let _serial = serial();
    let (Some(chromium), Some(chromedriver)) = (on_path("chromium"), on_path("chromedriver"))
    else {
        eprintln!("skipping: chromium or chromedriver is not installed (make deps)");
        return;
    };
    let options = FarmOptions {
        hold_renders: true,
        http: true,
        ..FarmOptions::default()
    };
    let Some(mut farm) = Farm::start(BINARIES, options) else {
        return;
    };
    farm.start_worker("w1");
    let work = tempfile::tempdir().expect("temp dir");
    let sources = work.path().join("sources");
    std::fs::create_dir_all(&sources).expect("sources");
    write_catalogue(&sources, 3, 2.0);
    let mut corrupt = b"RIFF\x24\x08\x00\x00WAVEfmt ".to_vec();
    corrupt.extend(std::iter::repeat_n(0xA5u8, 4000));
    std::fs::write(sources.join(CRAFTED_SOURCE), &corrupt).expect("corrupt track");
    let outcome = farm.lathe(&[
        "submit",
        sources.to_str().expect("utf-8 path"),
        "--profile",
        "streaming",
        "--name",
        CRAFTED_JOB,
        "--json",
    ]);
    assert_eq!(outcome.status, 0, "lathe submit: {}", outcome.stderr);
    let reply: Value = serde_json::from_str(&outcome.stdout).expect("submit --json");
    let job = reply["job_id"].as_str().expect("job id").to_owned();

    // The worker fails the corrupt track (task 0) and holds the next render at the gate.
    let corrupt_task = format!("{job}.0000000");
    let mut held = farm.wait_held("w1", PATIENCE);
    if held == corrupt_task {
        farm.release("w1", &held);
        held = farm.wait_held("w1", PATIENCE);
    }

    let driver = ChromeDriver::start(&chromedriver, &farm.dir.path().join("chromedriver.log"));
    let browser = open_browser(&driver, &chromium);
    let dashboard = farm.http_url();

    // Without a session the dashboard sends the browser to its sign-in page.
    browser.goto(&format!("{dashboard}/jobs/{job}"));
    browser.wait_for_element("#token", PATIENCE);
    let path = browser.execute("return location.pathname;");
    assert_eq!(path, json!("/login"));
    screenshot(&browser, "sign-in");
    sign_in(&browser, &dashboard, farm.token());
    let cookies = browser.execute("return document.cookie;");
    assert!(
        !cookies
            .as_str()
            .unwrap_or_default()
            .contains("lathe_session"),
        "the session cookie is out of scripts' reach: {cookies}"
    );

    // The jobs list shows the job with its owner (the admin token that submitted it), its
    // crafted name as text.
    let row = text(&browser, &format!("#job-{job}"));
    assert!(row.contains(CRAFTED_JOB), "the name as text: {row}");
    assert!(row.contains("running"), "{row}");
    let owner = text(&browser, &format!("#job-{job} [data-cell=owner]"));
    assert_eq!(owner, "test-admin");
    assert_not_injected(&browser);
    browser.find(&format!("#job-{job} a")).click();
    browser.wait_for_element("#tasks", PATIENCE);

    // The failed track shows its error; nothing crafted became markup.
    wait_for(
        &browser,
        "return document.querySelector('[data-count=failed]').textContent;",
        "one failed task",
        |value| value == "1",
    );
    let row = text(&browser, "#task-0");
    assert!(row.contains("failed"), "{row}");
    assert!(row.contains(CRAFTED_SOURCE), "the file name as text: {row}");
    let error = text(&browser, "#task-0 td.error");
    assert!(
        !error.trim().is_empty(),
        "the failed track shows its error: {row}"
    );
    let images = browser.execute("return document.querySelectorAll('main img').length;");
    assert_eq!(images, json!(0), "no injected element");
    assert_not_injected(&browser);
    // A marker a reload would lose.
    browser.execute("window.laTheMarker = 'still here'; return true;");
    assert_eq!(text(&browser, "[data-count=succeeded]"), "0");

    // Releasing the held render: the page's counts, bar and row change without a reload.
    farm.release("w1", &held);
    let held_index: u32 = held
        .rsplit_once('.')
        .and_then(|(_, index)| index.parse().ok())
        .expect("a task index");
    wait_for(
        &browser,
        "return document.querySelector('[data-count=succeeded]').textContent;",
        "the released task succeeds on the page",
        |value| value == "1",
    );
    let marker = browser.execute("return window.laTheMarker;");
    assert_eq!(marker, json!("still here"), "the page was not reloaded");
    let row = wait_for(
        &browser,
        &format!("return document.getElementById('task-{held_index}').textContent;"),
        "the released task's row shows its master",
        |row| {
            row.as_str()
                .is_some_and(|row| row.contains("succeeded") && row.contains("LUFS"))
        },
    );
    assert!(
        row.as_str().is_some_and(|row| row.contains("dBTP")),
        "{row}"
    );
    let progress = browser.execute("return document.getElementById('job-progress').value;");
    assert!(
        progress.as_f64().is_some_and(|value| value > 0.0),
        "{progress}"
    );
    screenshot(&browser, "job-live");

    // The cancel button cancels the job; the page follows.
    browser.find("#cancel-open").click();
    browser.find("#cancel-job").click();
    wait_for(
        &browser,
        "return document.querySelector('[data-field=state]').textContent;",
        "the page shows the job cancelled",
        |value| value == "cancelled",
    );
    let message = text(&browser, "#action-message");
    assert!(message.contains("cancelled"), "{message}");
    let marker = browser.execute("return window.laTheMarker;");
    assert_eq!(marker, json!("still here"), "the page was not reloaded");
    screenshot(&browser, "job-cancelled");
    let status = farm.lathe(&["status", &job, "--json"]);
    assert_eq!(status.status, 0, "{}", status.stderr);
    assert_eq!(status_from_json_lines(&status.stdout)["state"], "cancelled");

    // The succeeded track's page: its report with the levels before and after; the workers.
    browser.goto(&format!("{dashboard}/jobs/{job}/tasks/{held_index}"));
    let report = text(&browser, "main");
    assert!(report.contains("Integrated loudness"), "{report}");
    assert!(report.contains("Before (source)") && report.contains("After (master)"));
    let charts = browser.execute(
        "return [...document.querySelectorAll('main svg title')].map(t => t.textContent).join('|');",
    );
    let charts = charts.as_str().unwrap_or_default();
    assert!(
        charts.contains("Loudness over time") && charts.contains("Spectrum"),
        "the track's curves before and after: {charts}"
    );
    screenshot(&browser, "track");
    browser.goto(&format!("{dashboard}/workers"));
    let workers = text(&browser, "#workers");
    assert!(workers.contains("w1"), "{workers}");

    // Another user's submit token: the job is not in the list, and its page is a 404.
    sign_out(&browser);
    sign_in(
        &browser,
        &dashboard,
        &farm.create_token("other-user", "submit"),
    );
    assert!(
        browser.try_find(&format!("#job-{job}")).is_none(),
        "another owner's job in a submit session's list"
    );
    let signed_in = text(&browser, "#signed-in");
    assert!(signed_in.contains("other-user (submit)"), "{signed_in}");
    browser.goto(&format!("{dashboard}/jobs/{job}"));
    let page = text(&browser, "main");
    assert!(page.contains("No such job"), "{page}");
    assert!(!page.contains(CRAFTED_JOB), "{page}");

    // A read token: the job's page without its buttons.
    browser.goto(&format!("{dashboard}/"));
    sign_out(&browser);
    sign_in(&browser, &dashboard, &farm.create_token("auditor", "read"));
    browser.goto(&format!("{dashboard}/jobs/{job}"));
    browser.wait_for_element("#tasks", PATIENCE);
    assert!(
        browser.try_find("#cancel-job").is_none()
            && browser.try_find("form[data-action]").is_none(),
        "a read session's page has no action"
    );
    browser.close();
    drop(driver);
}

#[test]
fn a_plain_http_dashboard_off_loopback_is_refused() {
    let _serial = serial();
    let port = lathe_coordinator::testing::free_port();
    // The check comes before the coordinator connects to anything: no NATS or etcd is needed.
    let output = Command::new(BINARIES.coordinator)
        .args(["--insecure-loopback", "--listen", "127.0.0.1:0"])
        .args(["--http-listen", &format!("0.0.0.0:{port}")])
        .args([
            "--nats",
            "nats://127.0.0.1:1",
            "--etcd",
            "http://127.0.0.1:1",
        ])
        .args(["--connect-timeout-s", "0"])
        .output()
        .expect("run the coordinator");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "it started: {stderr}");
    assert!(
        stderr.contains(&format!("--http-listen 0.0.0.0:{port}")),
        "{stderr}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens on the dashboard's port"
    );
}
