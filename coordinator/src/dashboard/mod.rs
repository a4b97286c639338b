//! The coordinator's web dashboard: server-rendered pages of the jobs, a job's tasks, a track's
//! report and the workers, kept live over server-sent events, with a job's actions (cancel, retry
//! the failed tasks, priority). A small script (`dashboard.js`) and style sheet (`dashboard.css`)
//! are compiled in; nothing is fetched from elsewhere.
//!
//! | route | what |
//! |---|---|
//! | `GET /login`, `POST /login` (`token=`), `POST /logout` | signing in with a client token and out ([`login`]) |
//! | `GET /` (`?after=`) | a page of jobs: owner, state, progress, failures, time left ([`pages::jobs`]) |
//! | `GET /events` | the jobs list's changed rows ([`events::jobs_events`]) |
//! | `GET /jobs/{id}` (`?state=&after=`) | a job's counts and a page of its tasks ([`pages::job`]) |
//! | `GET /jobs/{id}/events` | the job's status deltas ([`events::job_events`]) |
//! | `GET /jobs/{id}/tasks/{index}` | a track's report with its plots ([`pages::task`]) |
//! | `GET /workers` | the workers, for read and admin sessions ([`pages::workers`]) |
//! | `POST /jobs/{id}/cancel`, `/retry`, `/priority` | the actions ([`actions`]) |
//!
//! Everything but the sign-in page and the static assets needs a session ([`session`]), started
//! by signing in with one of the farm's client tokens and checked again on every request; a
//! session reaches what its token reaches through the gRPC job API ([`access`]). Every request
//! that may change something must come from the dashboard's own pages.
//!
//! Every page reads at most one page of rows ([`pages::PAGE_ROWS`]) and a job's counts, so a job
//! of 100,000 tasks costs what a job of 100 does. Errors are pages with their status
//! ([`error_page`]): 404 for an unknown job or task (or another owner's, to a submit session),
//! 403 for what the session's role does not allow, 503 while the state store cannot be read.

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::middleware::{from_fn, from_fn_with_state, map_response};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::auth::Caller;
use crate::coordinator::Coordinator;
use crate::error::Result;
use session::{SessionSettings, Sessions};

pub mod access;
pub mod actions;
pub mod error_page;
pub mod events;
pub mod html;
pub mod login;
pub mod pages;
pub mod plots;
pub mod report;
pub mod rows;
pub mod session;

/// The page script.
const SCRIPT: &str = include_str!("dashboard.js");
/// The style sheet.
const STYLE: &str = include_str!("dashboard.css");

/// What pages may load and run: only this server's script, style and event streams; no page of
/// another site may frame them (their buttons act on the farm).
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
    base-uri 'none'";

/// How a session's token is checked again on each request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TokenCheck {
    /// Through the coordinator's token cache, as the gRPC job API checks it: a revoked token's
    /// sessions end within [`crate::auth::TOKEN_RECHECK`].
    #[default]
    Cached,
    /// Against the state store on every request: a revoked token's sessions end at once, for a
    /// store read a request (tests that revoke a token without waiting out the cache).
    EveryRequest,
}

/// How a dashboard is set up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DashboardSettings {
    /// The dashboard is served over TLS: its cookie is `Secure`.
    pub tls: bool,
    /// How many sessions it holds, and for how long.
    pub sessions: SessionSettings,
    /// How a session's token is checked again.
    pub token_check: TokenCheck,
}

/// What the dashboard's handlers share: the coordinator, and the sessions signed in to it.
#[derive(Debug, Clone)]
pub struct Dashboard {
    coordinator: Coordinator,
    sessions: Arc<Sessions>,
    settings: DashboardSettings,
}

impl Dashboard {
    /// A dashboard of `coordinator` with no session yet.
    pub fn new(coordinator: Coordinator, settings: DashboardSettings) -> Self {
        Self {
            coordinator,
            sessions: Arc::new(Sessions::new(settings.sessions)),
            settings,
        }
    }

    /// The caller a client token names, checked as [`DashboardSettings::token_check`] says.
    async fn check_token(&self, token: &str) -> Result<Caller> {
        match self.settings.token_check {
            TokenCheck::Cached => self.coordinator.authenticate(token).await,
            TokenCheck::EveryRequest => {
                crate::auth::authenticate(self.coordinator.state(), token).await
            }
        }
    }
}

impl FromRef<Dashboard> for Coordinator {
    fn from_ref(dashboard: &Dashboard) -> Self {
        dashboard.coordinator.clone()
    }
}

/// The dashboard's routes on `coordinator` (see the module's table).
pub fn router(coordinator: Coordinator, settings: DashboardSettings) -> Router {
    let dashboard = Dashboard::new(coordinator, settings);
    let pages = Router::new()
        .route("/", get(pages::jobs))
        .route("/workers", get(pages::workers))
        .route("/jobs/{id}", get(pages::job))
        .route("/jobs/{id}/tasks/{index}", get(pages::task))
        .route_layer(from_fn_with_state(dashboard.clone(), access::page_session));
    let calls = Router::new()
        .route("/events", get(events::jobs_events))
        .route("/jobs/{id}/events", get(events::job_events))
        .route("/jobs/{id}/cancel", post(actions::cancel))
        .route("/jobs/{id}/retry", post(actions::retry))
        .route("/jobs/{id}/priority", post(actions::priority))
        .route_layer(from_fn_with_state(dashboard.clone(), access::call_session));
    Router::new()
        .merge(pages)
        .merge(calls)
        .route(access::LOGIN_PATH, get(login::form).post(login::login))
        .route("/logout", post(login::logout))
        .route("/static/dashboard.js", get(script))
        .route("/static/dashboard.css", get(style))
        .fallback(not_found)
        .layer(from_fn(access::refuse_cross_site))
        .layer(map_response(security_headers))
        .with_state(dashboard)
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

/// Adds the content security policy and its companions to every response; none is kept in a
/// cache (a shared machine's browser shows no farm's page after signing out).
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
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
