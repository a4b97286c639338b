//! Who may ask the dashboard for what.
//!
//! - Every route but the sign-in page and the static assets needs a session whose token is still
//!   valid, checked again on every request ([`page_session`]: pages send the browser to
//!   `/login`; [`call_session`]: event streams and actions answer 401). The signed-in [`Caller`]
//!   is then a request extension.
//! - Every request that may change something (any method but `GET`, `HEAD`, `OPTIONS`) must come
//!   from the dashboard's own pages ([`refuse_cross_site`]).
//! - A session's role reaches what the gRPC job API lets its token reach: a submit session sees
//!   and changes only its own jobs, and another owner's job is a 404 to it, the same page as a
//!   job that does not exist ([`require_visible`], [`require_changeable`]); a read session sees
//!   every job and changes none (403); an admin session does everything. Only read and admin
//!   sessions see the workers ([`sees_workers`]).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use super::Dashboard;
use super::error_page::ErrorPage;
use super::session::session_id;
use crate::auth::{Caller, Role};
use crate::coordinator::Coordinator;
use crate::error::Error;

/// The sign-in page, where a page without a session sends the browser.
pub const LOGIN_PATH: &str = "/login";

/// Why a request has no caller.
enum Refusal {
    /// No session, or one that ended (signed out, expired, pushed out, its token revoked).
    SignedOut,
    /// The token could not be checked (the state store is unreachable): the error's page.
    Unchecked(ErrorPage),
}

/// The caller of a request's session, its token checked again now. A session whose token is no
/// longer valid ends here.
async fn session_caller(dashboard: &Dashboard, headers: &HeaderMap) -> Result<Caller, Refusal> {
    let id = session_id(headers).ok_or(Refusal::SignedOut)?;
    let token = dashboard.sessions.token(&id).ok_or(Refusal::SignedOut)?;
    match dashboard.check_token(&token).await {
        Ok(caller) => Ok(caller),
        Err(Error::Unauthenticated(reason)) => {
            dashboard.sessions.end(&id);
            tracing::info!(%reason, "dashboard session ended: its token is no longer valid");
            Err(Refusal::SignedOut)
        }
        Err(error) => Err(Refusal::Unchecked(error.into())),
    }
}

/// Runs the request with its session's caller as an extension, or answers `refused`.
async fn with_caller(
    dashboard: &Dashboard,
    mut request: Request,
    next: Next,
    refused: impl FnOnce() -> Response,
) -> Response {
    match session_caller(dashboard, request.headers()).await {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(Refusal::SignedOut) => refused(),
        Err(Refusal::Unchecked(page)) => page.into_response(),
    }
}

/// The guard of the pages: without a session, `303 See Other` to the sign-in page.
pub async fn page_session(
    State(dashboard): State<Dashboard>,
    request: Request,
    next: Next,
) -> Response {
    with_caller(&dashboard, request, next, || {
        Redirect::to(LOGIN_PATH).into_response()
    })
    .await
}

/// The guard of the event streams and the actions: without a session, 401 (a script, not a
/// person, made the request; the page's script shows the reason).
pub async fn call_session(
    State(dashboard): State<Dashboard>,
    request: Request,
    next: Next,
) -> Response {
    with_caller(&dashboard, request, next, || {
        ErrorPage::unauthorized(format!("not signed in: sign in at {LOGIN_PATH}")).into_response()
    })
    .await
}

/// Refuses a request that may change something unless it comes from the dashboard's own pages:
/// its `Origin` names the host it was sent to, or, without an `Origin`, the browser says it is
/// `Sec-Fetch-Site: same-origin`. `SameSite=Strict` already keeps the session cookie off
/// requests another site starts; this refuses them even where a browser would not.
pub fn same_origin(headers: &HeaderMap) -> Result<(), ErrorPage> {
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or_default();
    match headers.get(header::ORIGIN) {
        Some(origin) => {
            let origin = origin.to_str().unwrap_or_default();
            let origin_host = origin
                .split_once("://")
                .map(|(_, rest)| rest.trim_end_matches('/'));
            if !host.is_empty() && origin_host.is_some_and(|o| o.eq_ignore_ascii_case(host)) {
                Ok(())
            } else {
                Err(ErrorPage::forbidden(format!(
                    "a request from {origin} may not act on this farm"
                )))
            }
        }
        None if headers
            .get("sec-fetch-site")
            .is_some_and(|site| site.as_bytes() == b"same-origin") =>
        {
            Ok(())
        }
        None => Err(ErrorPage::forbidden(
            "a request that names no origin may not act on this farm",
        )),
    }
}

/// The guard of every route: a request that may change something passes [`same_origin`].
pub async fn refuse_cross_site(request: Request, next: Next) -> Response {
    if !request.method().is_safe()
        && let Err(page) = same_origin(request.headers())
    {
        tracing::warn!(method = %request.method(), path = %request.uri().path(), "dashboard request from another site refused");
        return page.into_response();
    }
    next.run(request).await
}

/// The page for a job `caller` may not see: the one a job that does not exist gets, so that a
/// submit session cannot tell another owner's job from no job.
fn no_such_job(job_id: &str) -> ErrorPage {
    Error::JobNotFound(job_id.to_owned()).into()
}

/// Refuses (404) unless `caller` may see job `job_id`: read and admin sessions see every job, a
/// submit session its own. A job that does not exist is a 404 too.
pub async fn require_visible(
    coordinator: &Coordinator,
    caller: &Caller,
    job_id: &str,
) -> Result<(), ErrorPage> {
    match caller.role {
        Role::Read | Role::Admin => Ok(()),
        Role::Submit => {
            let owner = coordinator.job_owner(job_id).await?;
            if caller.may_read(&owner) {
                Ok(())
            } else {
                Err(no_such_job(job_id))
            }
        }
    }
}

/// Refuses unless `caller` may change job `job_id`: a read session never (403), a submit
/// session only its own jobs (another's is a 404, as in [`require_visible`]).
pub async fn require_changeable(
    coordinator: &Coordinator,
    caller: &Caller,
    job_id: &str,
) -> Result<(), ErrorPage> {
    caller.require(Role::Submit, "changing a job")?;
    require_visible(coordinator, caller, job_id).await
}

/// May `caller` see the workers page? Read and admin sessions may.
pub fn sees_workers(caller: &Caller) -> bool {
    matches!(caller.role, Role::Read | Role::Admin)
}

/// Refuses (403) the workers page to a submit session.
pub fn require_workers(caller: &Caller) -> Result<(), ErrorPage> {
    if sees_workers(caller) {
        Ok(())
    } else {
        Err(ErrorPage::forbidden(
            "the workers page needs a read or admin token",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(
        origin: Option<&'static str>,
        fetch_site: Option<&'static str>,
        host: &'static str,
    ) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static(host));
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, HeaderValue::from_static(origin));
        }
        if let Some(site) = fetch_site {
            headers.insert("sec-fetch-site", HeaderValue::from_static(site));
        }
        headers
    }

    #[test]
    fn only_requests_from_the_dashboards_own_pages_may_act() {
        let host = "127.0.0.1:8080";
        assert!(same_origin(&headers(Some("http://127.0.0.1:8080"), None, host)).is_ok());
        assert!(same_origin(&headers(Some("https://127.0.0.1:8080"), None, host)).is_ok());
        assert!(same_origin(&headers(None, Some("same-origin"), host)).is_ok());
        for (origin, site) in [
            (Some("http://evil.example"), None),
            (Some("http://evil.example"), Some("same-origin")),
            (Some("http://127.0.0.1:8081"), None),
            (Some("http://127.0.0.1:8080.evil.example"), None),
            (Some("null"), None),
            (None, None),
            (None, Some("cross-site")),
            (None, Some("same-site")),
        ] {
            assert!(
                same_origin(&headers(origin, site, host)).is_err(),
                "{origin:?} {site:?}"
            );
        }
        let mut no_host = headers(Some("http://127.0.0.1:8080"), None, host);
        no_host.remove(header::HOST);
        assert!(same_origin(&no_host).is_err());
    }

    #[test]
    fn only_read_and_admin_sessions_see_the_workers() {
        let caller = |role| Caller {
            name: "x".to_owned(),
            role,
        };
        assert!(require_workers(&caller(Role::Submit)).is_err());
        assert!(require_workers(&caller(Role::Read)).is_ok());
        assert!(require_workers(&caller(Role::Admin)).is_ok());
    }
}
