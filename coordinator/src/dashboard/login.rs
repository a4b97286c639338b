//! Signing in and out of the dashboard.
//!
//! - `GET /login`: the form (a plain HTML form: no script, so it works under the content security
//!   policy and without JavaScript).
//! - `POST /login` (`token=`): the token is checked as the gRPC job API checks a bearer token; a
//!   valid one starts a session ([`super::session`]) whose id the `lathe_session` cookie carries,
//!   and the browser goes to the jobs. A token that is not valid gets the form again, 401, and no
//!   cookie.
//! - `POST /logout`: ends the session and deletes the cookie.

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::Dashboard;
use super::access::LOGIN_PATH;
use super::error_page::ErrorPage;
use super::html::{escape, page};
use super::session::{ended_cookie, session_cookie, session_id};
use crate::error::Error;

/// The sign-in form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    /// A client token (`lathe_{id}_{secret}`).
    pub token: String,
}

/// The sign-in page, with `problem` (plain text) above the form when there is one.
fn login_page(problem: Option<&str>) -> String {
    let problem = problem.map_or_else(String::new, |problem| {
        format!(
            "<p id=\"login-error\" class=\"bad\" role=\"alert\">{}</p>",
            escape(problem)
        )
    });
    page(
        "Sign in",
        None,
        &[("page", "login")],
        &format!(
            "<h1>Sign in</h1>{problem}\
             <form method=\"post\" action=\"{LOGIN_PATH}\" class=\"login\">\
             <label for=\"token\">Client token</label> \
             <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\" \
             spellcheck=\"false\" autocapitalize=\"off\" required> \
             <button type=\"submit\" id=\"sign-in\">Sign in</button></form>\
             <p class=\"note\">One of this farm's client tokens, as <code>lathe</code> uses \
             (an admin makes one with <code>lathe-coordinator token create</code>). You see and \
             act on what the token may: a submit token its own jobs, a read token every job \
             without changing any, an admin token everything.</p>"
        ),
    )
}

/// `GET /login`: the form.
pub async fn form() -> Html<String> {
    Html(login_page(None))
}

/// `POST /login`: starts a session for a valid token and sends the browser to the jobs.
pub async fn login(
    State(dashboard): State<Dashboard>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let token = form.token.trim();
    let caller = match dashboard.check_token(token).await {
        Ok(caller) => caller,
        Err(Error::Unauthenticated(reason)) => {
            tracing::warn!(%reason, "dashboard sign-in refused");
            return (
                StatusCode::UNAUTHORIZED,
                Html(login_page(Some(
                    "That is not a valid token of this farm (unknown, revoked or mistyped).",
                ))),
            )
                .into_response();
        }
        Err(error) => return ErrorPage::from(error).into_response(),
    };
    // The browser's earlier session, if any, ends: a sign-in always gets a fresh id.
    if let Some(earlier) = session_id(&headers) {
        dashboard.sessions.end(&earlier);
    }
    let id = match dashboard.sessions.start(token) {
        Ok(id) => id,
        Err(error) => return ErrorPage::from(error).into_response(),
    };
    tracing::info!(name = %caller.name, role = caller.role.name(), "dashboard sign-in");
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(
            &id,
            dashboard.sessions.settings().lifetime,
            dashboard.settings.tls,
        ),
    );
    response
}

/// `POST /logout`: ends the session (if there is one) and sends the browser to the sign-in page.
pub async fn logout(State(dashboard): State<Dashboard>, headers: HeaderMap) -> Response {
    if let Some(id) = session_id(&headers) {
        dashboard.sessions.end(&id);
    }
    let mut response = Redirect::to(LOGIN_PATH).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, ended_cookie(dashboard.settings.tls));
    response
}
