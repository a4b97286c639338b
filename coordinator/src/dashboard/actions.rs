//! A job's actions from the dashboard: `POST /jobs/{id}/cancel`, `/retry` and `/priority`
//! (form field `priority`), the same coordinator operations as `lathe cancel`, `retry` and
//! `priority`, allowed to the sessions whose tokens the gRPC job API allows them
//! ([`require_changeable`]). The router takes no other method for them, and refuses them from
//! another site ([`super::access::refuse_cross_site`]). A request that accepts JSON (the page's
//! script) gets `{"message": ...}`; a plain form post is sent back to the job's page.

use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use super::access::require_changeable;
use super::error_page::ErrorPage;
use super::rows::job_href;
use crate::auth::Caller;
use crate::coordinator::Coordinator;

/// The priority form.
#[derive(Debug, Deserialize)]
pub struct PriorityForm {
    /// The new priority (an integer; higher runs first).
    pub priority: String,
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
    Extension(caller): Extension<Caller>,
    Path(job_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ErrorPage> {
    require_changeable(&coordinator, &caller, &job_id).await?;
    let state = coordinator.cancel(&job_id).await?;
    tracing::info!(job = %job_id, by = %caller.name, "cancel from the dashboard");
    Ok(done(
        &headers,
        &job_id,
        format!("job {}", state.to_proto().word()),
    ))
}

/// `POST /jobs/{id}/retry`.
pub async fn retry(
    State(coordinator): State<Coordinator>,
    Extension(caller): Extension<Caller>,
    Path(job_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ErrorPage> {
    require_changeable(&coordinator, &caller, &job_id).await?;
    let retried = coordinator.retry(&job_id).await?;
    tracing::info!(job = %job_id, by = %caller.name, retried, "retry from the dashboard");
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
    Extension(caller): Extension<Caller>,
    Path(job_id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<PriorityForm>,
) -> Result<Response, ErrorPage> {
    require_changeable(&coordinator, &caller, &job_id).await?;
    let priority: i32 = form.priority.trim().parse().map_err(|_| {
        ErrorPage::bad_request(format!(
            "priority {:?} is not a whole number",
            form.priority
        ))
    })?;
    let status = coordinator.set_priority(&job_id, priority).await?;
    tracing::info!(job = %job_id, by = %caller.name, priority, "priority from the dashboard");
    Ok(done(
        &headers,
        &job_id,
        format!("priority set to {}", status.priority),
    ))
}
