//! The coordinator's web dashboard: server-rendered pages of the jobs, a job's tasks, a track's
//! report and the workers, kept live over server-sent events, with a job's actions (cancel, retry
//! the failed tasks, priority). A small script (`dashboard.js`) and style sheet (`dashboard.css`)
//! are compiled in; nothing is fetched from elsewhere.
//!
//! | route | what |
//! |---|---|
//! | `GET /` (`?after=`) | a page of jobs: state, progress, failures, time left ([`pages::jobs`]) |
//! | `GET /events` | the jobs list's changed rows ([`events::jobs_events`]) |
//! | `GET /jobs/{id}` (`?state=&after=`) | a job's counts and a page of its tasks ([`pages::job`]) |
//! | `GET /jobs/{id}/events` | the job's status deltas ([`events::job_events`]) |
//! | `GET /jobs/{id}/tasks/{index}` | a track's report with its plots ([`pages::task`]) |
//! | `GET /workers` | the workers ([`pages::workers`]) |
//! | `POST /jobs/{id}/cancel`, `/retry`, `/priority` | the actions ([`actions`]) |
//!
//! Every page reads at most one page of rows ([`pages::PAGE_ROWS`]) and a job's counts, so a job
//! of 100,000 tasks costs what a job of 100 does. Errors are pages with their status
//! ([`error_page`]): 404 for an unknown job or task, 503 while the state store cannot be read.

use axum::Router;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::coordinator::Coordinator;

pub mod actions;
pub mod error_page;
pub mod events;
pub mod html;
pub mod pages;
pub mod plots;
pub mod report;
pub mod rows;

/// The page script.
const SCRIPT: &str = include_str!("dashboard.js");
/// The style sheet.
const STYLE: &str = include_str!("dashboard.css");

/// What pages may load and run: only this server's script, style and event streams; no page of
/// another site may frame them (their buttons act on the farm).
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
    base-uri 'none'";

/// The dashboard's routes on `coordinator` (see the module's table).
pub fn router(coordinator: Coordinator) -> Router {
    Router::new()
        .route("/", get(pages::jobs))
        .route("/events", get(events::jobs_events))
        .route("/workers", get(pages::workers))
        .route("/jobs/{id}", get(pages::job))
        .route("/jobs/{id}/events", get(events::job_events))
        .route("/jobs/{id}/tasks/{index}", get(pages::task))
        .route("/jobs/{id}/cancel", post(actions::cancel))
        .route("/jobs/{id}/retry", post(actions::retry))
        .route("/jobs/{id}/priority", post(actions::priority))
        .route("/static/dashboard.js", get(script))
        .route("/static/dashboard.css", get(style))
        .fallback(not_found)
        .layer(axum::middleware::map_response(security_headers))
        .with_state(coordinator)
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

async fn not_found(uri: Uri) -> error_page::ErrorPage {
    error_page::ErrorPage {
        status: StatusCode::NOT_FOUND,
        title: "No such page".to_owned(),
        detail: format!("the dashboard has no page {}", uri.path()),
    }
}

/// Adds the content security policy and its companions to every response.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

#[cfg(test)]
mod tests;
