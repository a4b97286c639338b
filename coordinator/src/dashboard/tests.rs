//! The dashboard's routes on an in-process coordinator (memory queue, store and blobs), through
//! `tower::ServiceExt::oneshot`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use futures::StreamExt;
use lathe_proto::v1;
use tower::ServiceExt;

use super::pages::PAGE_ROWS;
use super::router;
use crate::CoordinatorSettings;
use crate::blob::{MemoryBlobStore, put_bytes};
use crate::coordinator::{AttemptCall, Coordinator, Fault};
use crate::queue::MemoryQueue;
use crate::record::JobState;
use crate::state::{MemoryStore, StateStore};
use crate::testing::fill_finished_jobs;

const CRAFTED_JOB: &str = "<script>window.pwned=1</script>";
const CRAFTED_TRACK: &str = "\"><img src=x onerror=alert(1)>";

struct Fixture {
    coordinator: Coordinator,
    state: MemoryStore,
    blobs: MemoryBlobStore,
}

fn fixture() -> Fixture {
    let settings = CoordinatorSettings::default();
    let queue = MemoryQueue::new(settings.queue_settings(Duration::from_secs(30)));
    let state = MemoryStore::new();
    let blobs = MemoryBlobStore::new();
    Fixture {
        coordinator: Coordinator::new(
            Arc::new(queue),
            Arc::new(state.clone()),
            Arc::new(blobs.clone()),
            settings,
        ),
        state,
        blobs,
    }
}

/// Submits a job named `name` of `tracks` tracks, the first with a crafted name.
async fn submit(fixture: &Fixture, name: &str, tracks: usize) -> String {
    let mut specs = Vec::new();
    for index in 0..tracks {
        let digest = put_bytes(&fixture.blobs, format!("{name} {index}").as_bytes())
            .await
            .expect("blob");
        let source_name = if index == 0 {
            format!("{CRAFTED_TRACK}.wav")
        } else {
            format!("{index:02}-track.wav")
        };
        specs.push(v1::TrackSpec {
            source_digest: digest.to_string(),
            source_name,
            ..Default::default()
        });
    }
    fixture
        .coordinator
        .submit(
            &v1::SubmitJobRequest {
                name: name.to_owned(),
                profile_toml: lathe_model::profile::Profile::preset("cd")
                    .expect("preset")
                    .to_toml(),
                tracks: specs,
                ..Default::default()
            },
            "tester",
        )
        .await
        .expect("submit")
}

/// Fails the job's task `index` with `error` (the input's fault: at once, for good).
async fn fail(fixture: &Fixture, job_id: &str, index: u32, error: &str) {
    let task = format!("{job_id}.{index:07}");
    let token = fixture
        .coordinator
        .start_task(&task, "w1", 1)
        .await
        .expect("start")
        .attempt()
        .expect("run")
        .token;
    assert!(
        fixture
            .coordinator
            .fail_task(
                AttemptCall {
                    task_id: &task,
                    worker_id: "w1",
                    token: &token
                },
                error,
                Fault::Input
            )
            .await
            .expect("fail")
    );
}

async fn send(fixture: &Fixture, request: Request<Body>) -> (StatusCode, String) {
    let response = router(fixture.coordinator.clone())
        .oneshot(request)
        .await
        .expect("infallible");
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn get(fixture: &Fixture, uri: &str) -> (StatusCode, String) {
    send(
        fixture,
        Request::get(uri).body(Body::empty()).expect("request"),
    )
    .await
}

fn post(uri: &str, form: &str) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form.to_owned()))
        .expect("request")
}

fn rows(page: &str, prefix: &str) -> usize {
    page.matches(&format!("<tr id=\"{prefix}-")).count()
}

#[tokio::test]
async fn the_jobs_page_lists_jobs_with_their_names_escaped() {
    let fixture = fixture();
    let job_id = submit(&fixture, CRAFTED_JOB, 3).await;
    let (status, page) = get(&fixture, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(&format!("id=\"job-{job_id}\"")), "{page}");
    assert!(!page.contains("<script>window"), "{page}");
    assert!(page.contains("&lt;script&gt;window.pwned=1&lt;/script&gt;"));
    assert!(page.contains("0 / 3"), "progress: {page}");
    assert_eq!(rows(&page, "job"), 1);
}

#[tokio::test]
async fn a_jobs_page_shows_counts_tasks_and_errors_escaped() {
    let fixture = fixture();
    let job_id = submit(&fixture, "album", 3).await;
    fail(&fixture, &job_id, 0, "<b>bad</b> header: cannot decode").await;
    let (status, page) = get(&fixture, &format!("/jobs/{job_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rows(&page, "task"), 3);
    assert!(
        page.contains("<span data-count=\"failed\">1</span>"),
        "{page}"
    );
    assert!(
        page.contains("<span data-count=\"pending\">2</span>"),
        "{page}"
    );
    assert!(page.contains("&lt;b&gt;bad&lt;/b&gt; header: cannot decode"));
    assert!(
        !page.contains("<b>bad</b>") && !page.contains("<img src=x"),
        "{page}"
    );
    assert!(page.contains("data-live=\"true\""));

    // Filtered by state: only the failed task.
    let (_, failed) = get(&fixture, &format!("/jobs/{job_id}?state=failed")).await;
    assert_eq!(rows(&failed, "task"), 1);
    assert!(failed.contains("id=\"task-0\""));
    let (status, _) = get(&fixture, &format!("/jobs/{job_id}?state=sideways")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn unknown_jobs_tasks_and_pages_are_404_pages() {
    let fixture = fixture();
    let job_id = submit(&fixture, "album", 2).await;
    for uri in [
        "/jobs/nosuchjob".to_owned(),
        "/jobs/nosuchjob/tasks/0".to_owned(),
        "/jobs/nosuchjob/events".to_owned(),
        format!("/jobs/{job_id}/tasks/7"),
        format!("/jobs/{job_id}/tasks/x"),
        "/nothing-here".to_owned(),
    ] {
        let (status, page) = get(&fixture, &uri).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}: {page}");
        assert!(page.contains("<h1>No such"), "{uri}: {page}");
    }
    let (status, page) = get(&fixture, "/jobs/%3Cb%3Ex%3C%2Fb%3E").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!page.contains("<b>x</b>"), "{page}");
    let (status, _) = send(&fixture, post("/jobs/nosuchjob/cancel", "")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_large_jobs_page_holds_one_page_of_rows() {
    let fixture = fixture();
    let ids = fill_finished_jobs(&fixture.state, 1, 10_000)
        .await
        .expect("fill");
    let job_id = &ids[0];
    let (status, page) = get(&fixture, &format!("/jobs/{job_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rows(&page, "task"), PAGE_ROWS);
    assert!(page.contains("<span data-count=\"succeeded\">10000</span>"));
    let next = format!("after={job_id}.{:07}", PAGE_ROWS - 1);
    assert!(page.contains(&next), "a next link: {page}");
    // The rows carry the figures of the stored report.
    assert!(page.contains("-10.0 LUFS") && page.contains("-14.0 LUFS"));
    assert!(page.contains("-1.0 dBTP"));

    let (_, second) = get(&fixture, &format!("/jobs/{job_id}?{next}")).await;
    assert_eq!(rows(&second, "task"), PAGE_ROWS);
    assert!(second.contains(&format!("id=\"task-{PAGE_ROWS}\"")));
    let (_, last) = get(
        &fixture,
        &format!("/jobs/{job_id}?state=succeeded&after={job_id}.0009995"),
    )
    .await;
    assert_eq!(rows(&last, "task"), 4);
    assert!(!last.contains("rel=\"next\""));
    assert!(last.contains("data-live=\"false\""));
}

#[tokio::test]
async fn a_tracks_page_shows_its_report_before_and_after() {
    let fixture = fixture();
    let ids = fill_finished_jobs(&fixture.state, 1, 3)
        .await
        .expect("fill");
    let (status, page) = get(&fixture, &format!("/jobs/{}/tasks/2", ids[0])).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("<svg"), "{page}");
    assert!(
        page.contains("Loudness over time") && page.contains("Spectrum (mean)"),
        "the render's curves before and after"
    );
    assert!(page.contains("Integrated loudness"));
    assert!(page.contains("-10.0 LUFS") && page.contains("-14.0 LUFS"));
    assert!(page.contains("compressor") && page.contains("passed"));
    assert!(page.contains("0000002.wav"));
}

#[test]
fn a_track_report_plots_its_curves_or_else_its_levels() {
    let mut report: lathe_model::report::TrackReport =
        serde_json::from_str(include_str!("../testing/track_report.json")).expect("the fixture");
    let curves = report.plots.as_ref().expect("a report as workers send it");
    assert_eq!(curves.before.short_term_lufs.len(), 30, "a 30 s track");
    let page = super::pages::track_plots(&report);
    assert!(page.contains("Loudness over time") && page.contains("Spectrum (mean)"));
    assert!(!page.contains("written before"));
    // A report stored before the engine measured curves: its levels stand in.
    report.plots = None;
    let page = super::pages::track_plots(&report);
    assert!(!page.contains("Loudness over time") && page.contains("written before"));
    assert!(page.contains("<svg"));
}

#[tokio::test]
async fn the_workers_page_lists_workers() {
    let fixture = fixture();
    let record = crate::record::WorkerRecord {
        id: "<w1>".to_owned(),
        host: "box".to_owned(),
        pid: 42,
        slots: 2,
        current_tasks: Vec::new(),
        heartbeat_unix_ms: 0,
    };
    fixture
        .state
        .put(
            &crate::record::worker_key(&record.id),
            crate::record::encode(&record).expect("encode"),
        )
        .await
        .expect("register");
    let (status, page) = get(&fixture, "/workers").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("&lt;w1&gt;") && !page.contains("<w1>"),
        "{page}"
    );
    assert!(page.contains("0 / 2"));
}

#[tokio::test]
async fn actions_cancel_retry_and_set_the_priority() {
    let fixture = fixture();
    let job_id = submit(&fixture, "album", 3).await;
    let coordinator = &fixture.coordinator;

    // Other methods are refused.
    let (status, _) = get(&fixture, &format!("/jobs/{job_id}/cancel")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

    // The priority, from the page's script (JSON) and malformed.
    let request = Request::post(format!("/jobs/{job_id}/priority"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ACCEPT, "application/json")
        .body(Body::from("priority=7"))
        .expect("request");
    let (status, reply) = send(&fixture, request).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert!(reply.contains("priority set to 7"), "{reply}");
    assert_eq!(coordinator.summary(&job_id).await.expect("job").priority, 7);
    let (status, _) = send(
        &fixture,
        post(&format!("/jobs/{job_id}/priority"), "priority=high"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Retry puts the failed task back.
    fail(&fixture, &job_id, 1, "cannot decode").await;
    let (status, _) = send(&fixture, post(&format!("/jobs/{job_id}/retry"), "")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let counts = coordinator
        .summary(&job_id)
        .await
        .expect("job")
        .counts
        .unwrap_or_default();
    assert_eq!((counts.failed, counts.pending), (0, 3));

    // A form from another site is refused and changes nothing.
    let forged = Request::post(format!("/jobs/{job_id}/cancel"))
        .header(header::HOST, "127.0.0.1:8080")
        .header(header::ORIGIN, "http://evil.example")
        .body(Body::empty())
        .expect("request");
    let (status, _) = send(&fixture, forged).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        coordinator.summary(&job_id).await.expect("job").state(),
        v1::JobState::Running
    );

    // Cancel: a plain form post goes back to the job's page.
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("/jobs/{job_id}/cancel"))
        .header(header::HOST, "127.0.0.1:8080")
        .header(header::ORIGIN, "http://127.0.0.1:8080")
        .body(Body::empty())
        .expect("request");
    let response = router(coordinator.clone())
        .oneshot(request)
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        response
            .headers()
            .get(header::LOCATION)
            .map(|l| l.as_bytes()),
        Some(format!("/jobs/{job_id}").as_bytes())
    );
    let job = coordinator.summary(&job_id).await.expect("job");
    assert_eq!(job.state(), JobState::Cancelled.to_proto());
    assert_eq!(job.counts.unwrap_or_default().cancelled, 3);
}

/// The next server-sent event of a stream (within a few seconds), as its text.
async fn next_event(
    body: &mut (impl futures::Stream<Item = Result<bytes::Bytes, axum::Error>> + Unpin),
) -> String {
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .expect("an event within 5 s")
            .expect("the stream goes on")
            .expect("a chunk");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text
}

/// The JSON of an event's `data:` line.
fn event_data(event: &str) -> serde_json::Value {
    let data = event
        .lines()
        .find_map(|line| line.strip_prefix("data: "))
        .expect("a data line");
    serde_json::from_str(data).expect("JSON data")
}

#[tokio::test]
async fn a_jobs_event_stream_sends_its_status_then_deltas() {
    let fixture = fixture();
    let job_id = submit(&fixture, "album", 3).await;
    let response = router(fixture.coordinator.clone())
        .oneshot(
            Request::get(format!("/jobs/{job_id}/events"))
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.as_bytes()),
        Some(&b"text/event-stream"[..])
    );
    let mut body = response.into_body().into_data_stream();
    let first = next_event(&mut body).await;
    assert!(first.contains("event: status"), "{first}");
    let status = event_data(&first);
    assert_eq!(status["state"], "running");
    assert_eq!(status["counts"]["pending"], 3);
    assert_eq!(status["whole"], true);

    // A change of the job's record: a delta with its fields and no task.
    fixture
        .coordinator
        .set_priority(&job_id, 5)
        .await
        .expect("priority");
    let delta = event_data(&next_event(&mut body).await);
    assert_eq!(delta["priority"], 5);
    assert_eq!(delta["whole"], false);
    assert_eq!(delta["tasks"].as_array().map(Vec::len), Some(0));

    // A task that fails: its row alone, escaped, and the counts.
    fail(&fixture, &job_id, 0, "<i>broken</i>").await;
    let delta = event_data(&next_event(&mut body).await);
    let tasks = delta["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 1, "{delta:#}");
    assert_eq!(tasks[0]["index"], 0);
    let row = tasks[0]["row"].as_str().expect("row");
    assert!(row.contains("&lt;i&gt;broken&lt;/i&gt;") && !row.contains("<i>"));
    assert_eq!(delta["counts"]["failed"], 1);

    // Cancelling ends the job and the stream's last status says so.
    fixture.coordinator.cancel(&job_id).await.expect("cancel");
    let mut last = event_data(&next_event(&mut body).await);
    while last["ended"] != true {
        last = event_data(&next_event(&mut body).await);
    }
    assert_eq!(last["state"], "cancelled");
    assert!(last["tasks"].as_array().map_or(0, Vec::len) <= 2);
}

#[tokio::test]
async fn the_jobs_list_stream_sends_the_rows_that_changed() {
    let fixture = fixture();
    let job_id = submit(&fixture, "album", 2).await;
    let response = router(fixture.coordinator.clone())
        .oneshot(
            Request::get("/events")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body().into_data_stream();
    fixture
        .coordinator
        .set_priority(&job_id, 3)
        .await
        .expect("priority");
    let event = next_event(&mut body).await;
    assert!(event.contains("event: jobs"), "{event}");
    let jobs = event_data(&event);
    let rows = jobs["jobs"].as_array().expect("jobs");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], job_id.as_str());
    assert!(
        rows[0]["row"]
            .as_str()
            .is_some_and(|row| row.contains(">3</td>"))
    );
}

#[tokio::test]
async fn pages_carry_a_content_security_policy_and_the_assets_are_served() {
    let fixture = fixture();
    let response = router(fixture.coordinator.clone())
        .oneshot(Request::get("/").body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let policy = response
        .headers()
        .get(header::CONTENT_SECURITY_POLICY)
        .and_then(|policy| policy.to_str().ok())
        .unwrap_or_default();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    let (status, script) = get(&fixture, "/static/dashboard.js").await;
    assert_eq!(status, StatusCode::OK);
    assert!(script.contains("EventSource"));
    let (status, style) = get(&fixture, "/static/dashboard.css").await;
    assert_eq!(status, StatusCode::OK);
    assert!(style.contains("progress"));
}

/// Measures one job page of a 100,000-task job on the in-memory store (printed, not asserted:
/// test builds are no place for timings); the page still holds one page of rows.
#[tokio::test]
async fn a_100000_task_jobs_page_reads_one_page() {
    let fixture = fixture();
    let ids = fill_finished_jobs(&fixture.state, 1, 100_000)
        .await
        .expect("fill");
    let uri = format!("/jobs/{}?after={}.0050000", ids[0], ids[0]);
    let started = Instant::now();
    let (status, page) = get(&fixture, &uri).await;
    let elapsed = started.elapsed();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rows(&page, "task"), PAGE_ROWS);
    println!(
        "job page of a 100,000-task job (rows 50,001 to 50,100): {:.2} ms, {} bytes",
        elapsed.as_secs_f64() * 1000.0,
        page.len()
    );
}
