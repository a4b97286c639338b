//! What the dashboard answers when a request cannot be served: a page with a status code that
//! says why (404 for a job or task that does not exist, 400 for a malformed request, 401 without a
//! session, 403 for what the session may not do, 503 while the state store or the queue cannot
//! be reached), in one place, as the gRPC services map errors to statuses in one place.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::html::{escape, page};
use crate::error::Error;

/// An error page: its status, heading and explanation (plain text, escaped when rendered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorPage {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, in a few words.
    pub title: String,
    /// The detail (the error's message).
    pub detail: String,
}

impl ErrorPage {
    /// A 400 page for a malformed request.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            title: "Bad request".to_owned(),
            detail: detail.into(),
        }
    }

    /// A 401 page for a request without a session.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            title: "Not signed in".to_owned(),
            detail: detail.into(),
        }
    }

    /// A 403 page for a request the dashboard refuses (a form posted from another site, a page the
    /// session's role does not reach).
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            title: "Refused".to_owned(),
            detail: detail.into(),
        }
    }
}

impl From<Error> for ErrorPage {
    fn from(error: Error) -> Self {
        let detail = error.to_string();
        let (status, title) = match &error {
            Error::JobNotFound(_) => (StatusCode::NOT_FOUND, "No such job"),
            Error::TaskNotFound(_) => (StatusCode::NOT_FOUND, "No such task"),
            Error::InvalidRequest(_) | Error::BadDigest(_) => {
                (StatusCode::BAD_REQUEST, "Bad request")
            }
            Error::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "Not signed in"),
            Error::PermissionDenied(_) => (StatusCode::FORBIDDEN, "Not allowed"),
            _ if error.is_retryable() => (
                StatusCode::SERVICE_UNAVAILABLE,
                "The farm's state cannot be read now",
            ),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "Internal error"),
        };
        if status.is_server_error() {
            tracing::warn!(%error, "dashboard request failed");
        }
        Self {
            status,
            title: title.to_owned(),
            detail,
        }
    }
}

impl IntoResponse for ErrorPage {
    fn into_response(self) -> Response {
        let body = format!(
            "<h1>{}</h1><p class=\"detail\">{}</p><p><a href=\"/\">All jobs</a></p>",
            escape(&self.title),
            escape(&self.detail)
        );
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            page(&self.title, None, &[], &body),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_statuses() {
        let status = |error: Error| ErrorPage::from(error).status;
        assert_eq!(
            status(Error::JobNotFound("x".to_owned())),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(Error::TaskNotFound("x".to_owned())),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(Error::State("etcd unreachable".to_owned())),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(Error::InvalidRequest("no".to_owned())),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(Error::PermissionDenied("read token".to_owned())),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            status(Error::Unauthenticated("revoked".to_owned())),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(Error::CorruptRecord {
                key: "k".to_owned(),
                reason: "r".to_owned()
            }),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
