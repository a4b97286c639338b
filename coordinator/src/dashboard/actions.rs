//! A job's actions from the dashboard: `POST /jobs/{id}/cancel`, `/retry` and `/priority`
//! (form field `priority`), the same coordinator operations as `lathe cancel`, `retry` and
//! `priority`. The router takes no other method for them. A form posted from another site (its
//! `Origin` is not this host) is refused. A request that accepts JSON (the page's script) gets
//! `{"message": ...}`; a plain form post is sent back to the job's page.

use axum::Json;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;

use super::error_page::ErrorPage;
use super::rows::job_href;
use crate::coordinator::Coordinator;

/// The priority form.
#[derive(Debug, Deserialize)]
pub struct PriorityForm {
    /// The new priority (an integer; higher runs first).
    pub priority: String,
}

/// Refuses a request whose `Origin` names another host than the one it was sent to: a page on
/// another site must not cancel jobs through a visitor's browser.
fn same_origin(headers: &HeaderMap) -> Result<(), ErrorPage> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default();
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or_default();
    let origin_host = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    if !host.is_empty() && origin_host == host {
        Ok(())
    } else {
        Err(ErrorPage::forbidden(format!(
            "a form from {origin} may not act on this farm"
        )))
    }
}

/// The answer to an action that worked: JSON for the page's script, else back to the job.
fn done(headers: &HeaderMap, job_id: &str, message: String) -> Response {
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("application/json"));
    if wants_json {
        Json(json!({ "message": message })).into_response()
    } else {
        Redirect::to(&job_href(job_id)).into_response()
    }
}

/// `POST /jobs/{id}/cancel`.
pub async fn cancel(
    State(coordinator): State<Coordinator>,
    Path(job_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ErrorPage> {
    same_origin(&headers)?;
    let state = coordinator.cancel(&job_id).await?;
    tracing::info!(job = %job_id, "cancel from the dashboard");
    Ok(done(
        &headers,
        &job_id,
        format!("job {}", state.to_proto().word()),
    ))
}

/// `POST /jobs/{id}/retry`.
pub async fn retry(
    State(coordinator): State<Coordinator>,
    Path(job_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ErrorPage> {
    same_origin(&headers)?;
    let retried = coordinator.retry(&job_id).await?;
    tracing::info!(job = %job_id, retried, "retry from the dashboard");
    Ok(done(
        &headers,
        &job_id,
        format!(
            "{retried} failed task{} put back to pending",
            if retried == 1 { "" } else { "s" }
        ),
    ))
}

/// `POST /jobs/{id}/priority` with `priority=N`.
pub async fn priority(
    State(coordinator): State<Coordinator>,
    Path(job_id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<PriorityForm>,
) -> Result<Response, ErrorPage> {
    same_origin(&headers)?;
    let priority: i32 = form.priority.trim().parse().map_err(|_| {
        ErrorPage::bad_request(format!(
            "priority {:?} is not a whole number",
            form.priority
        ))
    })?;
    let status = coordinator.set_priority(&job_id, priority).await?;
    tracing::info!(job = %job_id, priority, "priority from the dashboard");
    Ok(done(
        &headers,
        &job_id,
        format!("priority set to {}", status.priority),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(origin: Option<&'static str>, host: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static(host));
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, HeaderValue::from_static(origin));
        }
        headers
    }

    #[test]
    fn forms_from_other_sites_are_refused() {
        assert!(same_origin(&headers(None, "127.0.0.1:8080")).is_ok());
        assert!(same_origin(&headers(Some("http://127.0.0.1:8080"), "127.0.0.1:8080")).is_ok());
        assert!(same_origin(&headers(Some("http://evil.example"), "127.0.0.1:8080")).is_err());
        assert!(same_origin(&headers(Some("null"), "127.0.0.1:8080")).is_err());
    }
}
