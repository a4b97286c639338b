//! The dashboard's routes on an in-process coordinator (memory queue, store and blobs), through
//! `tower::ServiceExt::oneshot`, signed in with client tokens from the same store. Requests come
//! from the dashboard's own origin ([`HOST`]) unless a test says otherwise.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use futures::StreamExt;
use lathe_proto::v1;
use tower::ServiceExt;

use super::pages::PAGE_ROWS;
use super::{DashboardSettings, TokenCheck, router};
use crate::CoordinatorSettings;
use crate::auth::{Role, create_token, revoke_token};
use crate::blob::{MemoryBlobStore, put_bytes};
use crate::coordinator::{AttemptCall, Coordinator, Fault};
use crate::queue::MemoryQueue;
use crate::record::JobState;
use crate::state::{MemoryStore, StateStore};
use crate::testing::fill_finished_jobs;

const CRAFTED_JOB: &str = "<script>window.pwned=1</script>";
const CRAFTED_TRACK: &str = "\"><img src=x onerror=alert(1)>";

/// The host the requests are sent to, and their origin.
const HOST: &str = "127.0.0.1:8080";
const ORIGIN: &str = "http://127.0.0.1:8080";

/// The owner of the jobs [`submit`] submits.
const TESTER: &str = "tester";

struct Fixture {
    coordinator: Coordinator,
    state: MemoryStore,
    blobs: MemoryBlobStore,
    /// The dashboard: one router, so that its sessions last from request to request.
    router: Router,
    /// The cookie of an admin session.
    admin: String,
}

async fn fixture() -> Fixture {
    fixture_with(DashboardSettings::default()).await
}

async fn fixture_with(settings: DashboardSettings) -> Fixture {
    let coordinator_settings = CoordinatorSettings::default();
    let queue = MemoryQueue::new(coordinator_settings.queue_settings(Duration::from_secs(30)));
    let state = MemoryStore::new();
    let blobs = MemoryBlobStore::new();
    let coordinator = Coordinator::new(
        Arc::new(queue),
        Arc::new(state.clone()),
        Arc::new(blobs.clone()),
        coordinator_settings,
    );
    let mut fixture = Fixture {
        router: router(coordinator.clone(), settings),
        coordinator,
        state,
        blobs,
        admin: String::new(),
    };
    fixture.admin = sign_in(&fixture, "root", Role::Admin).await;
    fixture
}

/// Makes a token named `name` with `role`; returns its id and text.
async fn token(fixture: &Fixture, name: &str, role: Role) -> (String, String) {
    let (record, text) = create_token(&fixture.state, name, role)
        .await
        .expect("token");
    (record.id, text)
}

/// `POST uri` with `form`, from the dashboard's own origin, with the session `cookie` if given.
fn post_as(cookie: Option<&str>, uri: &str, form: &str) -> Request<Body> {
    let mut request = Request::post(uri)
        .header(header::HOST, HOST)
        .header(header::ORIGIN, ORIGIN)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    request.body(Body::from(form.to_owned())).expect("request")
}

/// `GET uri` with the session `cookie`.
fn get_as(cookie: &str, uri: &str) -> Request<Body> {
    Request::get(uri)
        .header(header::HOST, HOST)
        .header(header::COOKIE, cookie)
        .body(Body::empty())
        .expect("request")
}

/// Sends `request` to the fixture's dashboard.
async fn respond(fixture: &Fixture, request: Request<Body>) -> Response<Body> {
    fixture
        .router
        .clone()
        .oneshot(request)
        .await
        .expect("infallible")
}

/// The status and body text of a response.
async fn read(response: Response<Body>) -> (StatusCode, String) {
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A header of a response, as text.
fn header_of(response: &Response<Body>, name: header::HeaderName) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// Signs in with `token` through the form; returns the response.
async fn sign_in_with(fixture: &Fixture, token: &str) -> Response<Body> {
    let form = format!("token={}", super::html::url_component(token));
    respond(fixture, post_as(None, "/login", &form)).await
}

/// Signs in with a new token named `name` with `role`; returns the session's cookie
/// (`lathe_session=ID`).
async fn sign_in(fixture: &Fixture, name: &str, role: Role) -> String {
    let (_, text) = token(fixture, name, role).await;
    session_of(&sign_in_with(fixture, &text).await)
}

/// The session cookie a sign-in's response sets, checked to be a good one.
fn session_of(response: &Response<Body>) -> String {
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "signed in");
    assert_eq!(header_of(response, header::LOCATION).as_deref(), Some("/"));
    let cookie = header_of(response, header::SET_COOKIE).expect("a session cookie");
    cookie
        .split(';')
        .next()
        .expect("the name and value")
        .to_owned()
}

/// A job's state as the coordinator has it.
async fn state_of(fixture: &Fixture, job_id: &str) -> v1::JobState {
    fixture
        .coordinator
        .summary(job_id)
        .await
        .expect("job")
        .state()
}

/// Submits a job named `name` of `tracks` tracks for [`TESTER`], the first with a crafted name.
async fn submit(fixture: &Fixture, name: &str, tracks: usize) -> String {
    submit_for(fixture, TESTER, name, tracks).await
}

/// Submits a job named `name` of `tracks` tracks for `owner`, the first with a crafted name.
async fn submit_for(fixture: &Fixture, owner: &str, name: &str, tracks: usize) -> String {
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
            owner,
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

/// `GET uri` as the fixture's admin.
async fn get(fixture: &Fixture, uri: &str) -> (StatusCode, String) {
    read(respond(fixture, get_as(&fixture.admin, uri)).await).await
}

/// `POST uri` with `form` as the fixture's admin, from the dashboard's own origin.
async fn post(fixture: &Fixture, uri: &str, form: &str) -> (StatusCode, String) {
    read(respond(fixture, post_as(Some(&fixture.admin), uri, form)).await).await
}

fn rows(page: &str, prefix: &str) -> usize {
    page.matches(&format!("<tr id=\"{prefix}-")).count()
}

#[tokio::test]
async fn the_jobs_page_lists_jobs_with_their_names_escaped() {
    let fixture = fixture().await;
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
    let fixture = fixture().await;
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
    let fixture = fixture().await;
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
    let (status, _) = post(&fixture, "/jobs/nosuchjob/cancel", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_large_jobs_page_holds_one_page_of_rows() {
    let fixture = fixture().await;
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
    let fixture = fixture().await;
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
    let fixture = fixture().await;
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
async fn an_admin_session_cancels_retries_and_sets_the_priority() {
    let fixture = fixture().await;
    let job_id = submit(&fixture, "album", 3).await;
    let coordinator = &fixture.coordinator;

    // Other methods are refused.
    let (status, _) = get(&fixture, &format!("/jobs/{job_id}/cancel")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

    // The priority, from the page's script (JSON) and malformed.
    let mut request = post_as(
        Some(&fixture.admin),
        &format!("/jobs/{job_id}/priority"),
        "priority=7",
    );
    request.headers_mut().insert(
        header::ACCEPT,
        header::HeaderValue::from_static("application/json"),
    );
    let (status, reply) = read(respond(&fixture, request).await).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert!(reply.contains("priority set to 7"), "{reply}");
    assert_eq!(coordinator.summary(&job_id).await.expect("job").priority, 7);
    let (status, _) = post(
        &fixture,
        &format!("/jobs/{job_id}/priority"),
        "priority=high",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Retry puts the failed task back.
    fail(&fixture, &job_id, 1, "cannot decode").await;
    let (status, _) = post(&fixture, &format!("/jobs/{job_id}/retry"), "").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let counts = coordinator
        .summary(&job_id)
        .await
        .expect("job")
        .counts
        .unwrap_or_default();
    assert_eq!((counts.failed, counts.pending), (0, 3));

    // Cancel (a job the admin does not own): a plain form post goes back to the job's page.
    let response = respond(
        &fixture,
        post_as(Some(&fixture.admin), &format!("/jobs/{job_id}/cancel"), ""),
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        header_of(&response, header::LOCATION),
        Some(format!("/jobs/{job_id}"))
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
    let fixture = fixture().await;
    let job_id = submit(&fixture, "album", 3).await;
    let response = respond(
        &fixture,
        get_as(&fixture.admin, &format!("/jobs/{job_id}/events")),
    )
    .await;
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
    let fixture = fixture().await;
    let job_id = submit(&fixture, "album", 2).await;
    let response = respond(&fixture, get_as(&fixture.admin, "/events")).await;
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
    let fixture = fixture().await;
    let response = respond(&fixture, get_as(&fixture.admin, "/")).await;
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
    let fixture = fixture().await;
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

#[tokio::test]
async fn without_a_session_pages_go_to_the_sign_in_page_and_calls_are_refused() {
    let fixture = fixture().await;
    let job_id = submit(&fixture, "album", 2).await;
    let forged = format!("lathe_session={}", "ab".repeat(32));
    for cookie in ["", forged.as_str()] {
        for uri in [
            "/".to_owned(),
            "/workers".to_owned(),
            format!("/jobs/{job_id}"),
            format!("/jobs/{job_id}/tasks/0"),
        ] {
            let response = respond(&fixture, get_as(cookie, &uri)).await;
            assert_eq!(response.status(), StatusCode::SEE_OTHER, "{uri}");
            assert_eq!(
                header_of(&response, header::LOCATION).as_deref(),
                Some("/login"),
                "{uri}"
            );
        }
        for uri in ["/events".to_owned(), format!("/jobs/{job_id}/events")] {
            let (status, _) = read(respond(&fixture, get_as(cookie, &uri)).await).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
        }
        for action in ["cancel", "retry", "priority"] {
            let uri = format!("/jobs/{job_id}/{action}");
            let request = post_as(Some(cookie), &uri, "priority=9");
            let (status, _) = read(respond(&fixture, request).await).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
        }
    }
    let job = fixture.coordinator.summary(&job_id).await.expect("job");
    assert_eq!((job.state(), job.priority), (v1::JobState::Running, 0));

    // The sign-in page and the assets need no session.
    let (status, page) = read(respond(&fixture, get_as("", "/login")).await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("<form method=\"post\" action=\"/login\""),
        "{page}"
    );
    // No inline script (the policy allows none): one script element, the compiled-in one, and no
    // event-handler attribute.
    assert_eq!(page.matches("<script").count(), 1, "{page}");
    assert!(page.contains("<script src=\"/static/dashboard.js\" defer></script>"));
    let handler = page.split(" on").skip(1).any(|rest| {
        let name_end = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        name_end > 0 && rest[name_end..].starts_with('=')
    });
    assert!(!handler, "an event-handler attribute: {page}");
    for asset in ["/static/dashboard.js", "/static/dashboard.css"] {
        let (status, _) = read(respond(&fixture, get_as("", asset)).await).await;
        assert_eq!(status, StatusCode::OK, "{asset}");
    }
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_gets_no_cookie() {
    let fixture = fixture().await;
    let (id, text) = token(&fixture, "alice", Role::Submit).await;
    revoke_token(&fixture.state, &id).await.expect("revoke");
    let forged = format!("lathe_{id}_{}", "0".repeat(64));
    for wrong in [
        text.as_str(),
        forged.as_str(),
        "lathe_0123456789abcdef_00",
        "",
    ] {
        let response = sign_in_with(&fixture, wrong).await;
        assert_eq!(response.headers().get(header::SET_COOKIE), None, "{wrong}");
        let (status, page) = read(response).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{wrong}");
        assert!(page.contains("id=\"login-error\""), "{page}");
    }
}

#[tokio::test]
async fn signing_in_starts_a_session_and_signing_out_ends_it() {
    let fixture = fixture().await;
    let (_, text) = token(&fixture, "alice", Role::Submit).await;
    let response = sign_in_with(&fixture, &text).await;
    let set_cookie = header_of(&response, header::SET_COOKIE).expect("a cookie");
    for attribute in ["; HttpOnly", "; SameSite=Strict", "; Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "plain HTTP: {set_cookie}");
    let secret = text.rsplit('_').next().expect("secret");
    assert!(!set_cookie.contains(secret), "the cookie carries no token");
    let cookie = session_of(&response);

    let (status, page) = read(respond(&fixture, get_as(&cookie, "/")).await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("alice (submit)"), "{page}");

    let response = respond(&fixture, post_as(Some(&cookie), "/logout", "")).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        header_of(&response, header::LOCATION).as_deref(),
        Some("/login")
    );
    let ended = header_of(&response, header::SET_COOKIE).expect("a cookie");
    assert!(ended.starts_with("lathe_session=; Max-Age=0"), "{ended}");
    // The old cookie, kept by a careless browser, no longer signs in.
    let response = respond(&fixture, get_as(&cookie, "/")).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn over_tls_the_session_cookie_is_secure() {
    let fixture = fixture_with(DashboardSettings {
        tls: true,
        ..DashboardSettings::default()
    })
    .await;
    let (_, text) = token(&fixture, "alice", Role::Submit).await;
    let response = sign_in_with(&fixture, &text).await;
    let set_cookie = header_of(&response, header::SET_COOKIE).expect("a cookie");
    assert!(set_cookie.ends_with("; Secure"), "{set_cookie}");
}

#[tokio::test]
async fn a_submit_session_sees_and_changes_only_its_own_jobs() {
    let fixture = fixture().await;
    let own = submit_for(&fixture, "alice", "alice's album", 2).await;
    let other = submit_for(&fixture, "bob", "bob's album", 2).await;
    let alice = sign_in(&fixture, "alice", Role::Submit).await;
    let as_alice = |uri: &str| get_as(&alice, uri);

    // The list: her job, with its owner; not bob's.
    let (status, list) = read(respond(&fixture, as_alice("/")).await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(list.contains(&format!("id=\"job-{own}\"")), "{list}");
    assert!(!list.contains(&other) && !list.contains("bob"), "{list}");
    assert!(
        list.contains("<td data-cell=\"owner\">alice</td>"),
        "{list}"
    );
    assert!(!list.contains("href=\"/workers\""), "no workers link");
    let (status, page) = read(respond(&fixture, as_alice(&format!("/jobs/{own}"))).await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("id=\"cancel-job\""), "her own job's actions");

    // Bob's job is as absent as a job that does not exist.
    let (status, missing) = read(respond(&fixture, as_alice("/jobs/nosuchjob")).await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for uri in [
        format!("/jobs/{other}"),
        format!("/jobs/{other}/tasks/0"),
        format!("/jobs/{other}/events"),
    ] {
        let (status, page) = read(respond(&fixture, as_alice(&uri)).await).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert!(!page.contains("bob"), "{uri}: {page}");
    }
    let (_, hidden) = read(respond(&fixture, as_alice(&format!("/jobs/{other}"))).await).await;
    assert_eq!(
        hidden.replace(&other, "X"),
        missing.replace("nosuchjob", "X")
    );
    for action in ["cancel", "retry", "priority"] {
        let uri = format!("/jobs/{other}/{action}");
        let (status, _) =
            read(respond(&fixture, post_as(Some(&alice), &uri, "priority=9")).await).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
    }
    let bobs = fixture.coordinator.summary(&other).await.expect("job");
    assert_eq!((bobs.state(), bobs.priority), (v1::JobState::Running, 0));

    // The workers page is not hers.
    let (status, _) = read(respond(&fixture, as_alice("/workers")).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Her own job she may cancel.
    let uri = format!("/jobs/{own}/cancel");
    let (status, _) = read(respond(&fixture, post_as(Some(&alice), &uri, "")).await).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(state_of(&fixture, &own).await, v1::JobState::Cancelled);
}

#[tokio::test]
async fn a_submit_sessions_list_is_one_page_filtered() {
    let fixture = fixture().await;
    // 150 finished jobs of nobody's, then hers: her first page is empty, with a next page.
    fill_finished_jobs(&fixture.state, 150, 1)
        .await
        .expect("fill");
    let own = submit_for(&fixture, "alice", "alice's album", 1).await;
    let alice = sign_in(&fixture, "alice", Role::Submit).await;
    let (_, first) = read(respond(&fixture, get_as(&alice, "/")).await).await;
    assert_eq!(rows(&first, "job"), 0, "{first}");
    assert!(first.contains("rel=\"next\""), "{first}");
    let next = first
        .split("rel=\"next\" href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the next page's link")
        .replace("&amp;", "&");
    let (_, second) = read(respond(&fixture, get_as(&alice, &next)).await).await;
    assert_eq!(rows(&second, "job"), 1, "{second}");
    assert!(second.contains(&format!("id=\"job-{own}\"")));
    // An admin's first page is a full one.
    let (_, admins) = get(&fixture, "/").await;
    assert_eq!(rows(&admins, "job"), PAGE_ROWS);
}

#[tokio::test]
async fn a_submit_sessions_list_stream_carries_only_its_own_jobs() {
    let fixture = fixture().await;
    let own = submit_for(&fixture, "alice", "alice's album", 1).await;
    let other = submit_for(&fixture, "bob", "bob's album", 1).await;
    let alice = sign_in(&fixture, "alice", Role::Submit).await;
    let response = respond(&fixture, get_as(&alice, "/events")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body().into_data_stream();
    // Bob's job changes first, then hers: the first event is hers alone.
    for (job_id, priority) in [(&other, 4), (&own, 5)] {
        fixture
            .coordinator
            .set_priority(job_id, priority)
            .await
            .expect("priority");
    }
    let jobs = event_data(&next_event(&mut body).await);
    let rows = jobs["jobs"].as_array().expect("jobs");
    assert_eq!(rows.len(), 1, "{jobs:#}");
    assert_eq!(rows[0]["id"], own.as_str());
    // A job of bob's deleted: not a word to her.
    fixture
        .coordinator
        .delete(&other, true)
        .await
        .expect("delete");
    fixture
        .coordinator
        .set_priority(&own, 6)
        .await
        .expect("priority");
    let jobs = event_data(&next_event(&mut body).await);
    assert!(!jobs.to_string().contains(&other), "{jobs:#}");
}

#[tokio::test]
async fn a_read_session_sees_every_job_and_changes_none() {
    let fixture = fixture().await;
    let job_id = submit_for(&fixture, "bob", "bob's album", 2).await;
    let reader = sign_in(&fixture, "auditor", Role::Read).await;
    let (_, list) = read(respond(&fixture, get_as(&reader, "/")).await).await;
    assert!(list.contains(&format!("id=\"job-{job_id}\"")), "{list}");
    let (status, page) =
        read(respond(&fixture, get_as(&reader, &format!("/jobs/{job_id}"))).await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !page.contains("id=\"cancel-job\"") && !page.contains("data-action"),
        "no action for a read session: {page}"
    );
    for action in ["cancel", "retry", "priority"] {
        let uri = format!("/jobs/{job_id}/{action}");
        let (status, _) =
            read(respond(&fixture, post_as(Some(&reader), &uri, "priority=9")).await).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri}");
    }
    let job = fixture.coordinator.summary(&job_id).await.expect("job");
    assert_eq!((job.state(), job.priority), (v1::JobState::Running, 0));
    let (status, _) = read(respond(&fixture, get_as(&reader, "/workers")).await).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_post_from_another_origin_is_refused() {
    let fixture = fixture().await;
    let job_id = submit(&fixture, "album", 2).await;
    let uri = format!("/jobs/{job_id}/cancel");
    let foreign = |origin: Option<&'static str>, site: Option<&'static str>| {
        let mut request = post_as(Some(&fixture.admin), &uri, "");
        let headers = request.headers_mut();
        headers.remove(header::ORIGIN);
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, header::HeaderValue::from_static(origin));
        }
        if let Some(site) = site {
            headers.insert("sec-fetch-site", header::HeaderValue::from_static(site));
        }
        request
    };
    for (origin, site) in [
        (Some("http://evil.example"), None),
        (Some("null"), None),
        (None, None),
        (None, Some("cross-site")),
    ] {
        let (status, _) = read(respond(&fixture, foreign(origin, site)).await).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{origin:?} {site:?}");
        assert_eq!(state_of(&fixture, &job_id).await, v1::JobState::Running);
    }
    // A sign-in from another site starts no session either.
    let (_, text) = token(&fixture, "alice", Role::Submit).await;
    let mut login = post_as(None, "/login", &format!("token={text}"));
    login.headers_mut().insert(
        header::ORIGIN,
        header::HeaderValue::from_static("http://evil.example"),
    );
    let response = respond(&fixture, login).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(response.headers().get(header::SET_COOKIE), None);
    // Without an Origin, the browser's word that the request is same-origin does.
    let (status, _) = read(respond(&fixture, foreign(None, Some("same-origin"))).await).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(state_of(&fixture, &job_id).await, v1::JobState::Cancelled);
}

#[tokio::test]
async fn a_revoked_tokens_session_is_refused() {
    // The token checked on every request: the cache's re-check window is zero.
    let fixture = fixture_with(DashboardSettings {
        token_check: TokenCheck::EveryRequest,
        ..DashboardSettings::default()
    })
    .await;
    let job_id = submit_for(&fixture, "alice", "album", 1).await;
    let (id, text) = token(&fixture, "alice", Role::Submit).await;
    let alice = session_of(&sign_in_with(&fixture, &text).await);
    let (status, _) = read(respond(&fixture, get_as(&alice, "/")).await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(revoke_token(&fixture.state, &id).await.expect("revoke"));
    let response = respond(&fixture, get_as(&alice, "/")).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        header_of(&response, header::LOCATION).as_deref(),
        Some("/login")
    );
    let uri = format!("/jobs/{job_id}/cancel");
    let (status, _) = read(respond(&fixture, post_as(Some(&alice), &uri, "")).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(state_of(&fixture, &job_id).await, v1::JobState::Running);
}
