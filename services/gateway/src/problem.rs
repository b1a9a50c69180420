//! `application/problem+json` answers (RFC 9457), naming the fields at fault.

use airline_runtime::validation::FieldError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answer.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    title: &'static str,
    detail: String,
    invalid_params: Vec<FieldError>,
}

impl Problem {
    /// 400 with every invalid field named.
    #[must_use]
    pub fn invalid(errors: Vec<FieldError>) -> Self {
        let detail = errors
            .iter()
            .map(|e| format!("{} {}", e.name, e.reason))
            .collect::<Vec<_>>()
            .join("; ");
        Self {
            status: StatusCode::BAD_REQUEST,
            title: "Invalid request",
            detail,
            invalid_params: errors,
        }
    }

    /// 400 for one field.
    #[must_use]
    pub fn field(name: &str, reason: impl Into<String>) -> Self {
        Self::invalid(vec![FieldError::new(name, reason)])
    }

    /// 422: well-formed, but refers to something that does not exist.
    #[must_use]
    pub fn unprocessable(name: &str, reason: impl Into<String>) -> Self {
        let mut p = Self::field(name, reason);
        p.status = StatusCode::UNPROCESSABLE_ENTITY;
        p.title = "Unprocessable request";
        p
    }

    /// 404.
    #[must_use]
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::plain(StatusCode::NOT_FOUND, "Not found", detail)
    }

    /// Any status with a title and a detail.
    #[must_use]
    pub fn plain(status: StatusCode, title: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            title,
            detail: detail.into(),
            invalid_params: Vec::new(),
        }
    }

    /// 500: the cause goes to the log, never to the client.
    #[must_use]
    pub fn internal(error: &anyhow::Error) -> Self {
        tracing::error!(error = format!("{error:#}"), "request failed");
        Self::plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error",
            "the request could not be completed; it was logged",
        )
    }
}

impl From<sqlx::Error> for Problem {
    fn from(e: sqlx::Error) -> Self {
        let error = anyhow::Error::from(e);
        let mut p = Self::internal(&error);
        if airline_runtime::consumer::is_unavailable(&airline_runtime::HandlerError::Unexpected(
            error,
        )) {
            p.status = StatusCode::SERVICE_UNAVAILABLE;
            p.title = "Service unavailable";
            p.detail = "the database is unavailable; try again".into();
        }
        p
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": "about:blank",
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if !self.invalid_params.is_empty() {
            body["invalidParams"] = json!(self.invalid_params);
        }
        let mut response = (self.status, body.to_string()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}
