//! Typed extractors: a handler receives complete, checked values, and every
//! refusal is a problem+json naming what was wrong.
//!
//! A body goes through two steps. Decoding (serde, with `serde_path_to_error`)
//! refuses a wrong content type (415), an oversized body (413), malformed JSON
//! (400 naming `(body)`) and a field of the wrong JSON type (400 naming its JSON
//! path). Checking ([`Checked::check`]) then applies the domain's rules to the
//! decoded value and names every field at fault at once.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use std::collections::HashMap;

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::Problem;

/// A request body type: what is decoded ([`Checked::Raw`]) and how it becomes a
/// complete value.
pub(crate) trait Checked: Sized {
    /// What the JSON decodes into: fields the client may omit are `Option`s, so
    /// that [`Checked::check`] names every missing one.
    type Raw: DeserializeOwned;

    /// The complete value, or a problem naming every field at fault.
    fn check(raw: Self::Raw) -> Result<Self, Problem>;
}

/// A JSON request body, decoded and checked.
#[derive(Debug)]
pub(crate) struct Body<T>(pub(crate) T);

impl<S: Send + Sync, T: Checked> FromRequest<S> for Body<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        let essence = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::trim)
            .unwrap_or("");
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(Problem::plain(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported media type",
                "send the body as application/json",
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|e: BytesRejection| {
                Problem::plain(e.status(), "Unreadable body", e.body_text())
            })?;
        T::check(decode(&bytes)?).map(Body)
    }
}

/// Decodes `bytes` as JSON into `R`, naming the field at fault by its JSON path.
pub(crate) fn decode<R: DeserializeOwned>(bytes: &[u8]) -> Result<R, Problem> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let decoded: R = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner();
        if !inner.is_data() {
            return Problem::field("(body)", format!("is not valid JSON: {inner}"));
        }
        let path = e.path().to_string();
        let message = without_position(&inner.to_string());
        // A missing field is reported at its parent; name the field itself.
        if let Some(field) = message
            .strip_prefix("missing field `")
            .and_then(|m| m.strip_suffix('`'))
        {
            let name = if path == "." {
                field.to_owned()
            } else {
                format!("{path}.{field}")
            };
            return Problem::field(&name, "is required");
        }
        // serde reads a struct from an array too; a body of ours is an object.
        if path == "." || path.starts_with('[') {
            return Problem::field("(body)", "must be a JSON object");
        }
        Problem::field(&path, format!("is invalid: {message}"))
    })?;
    de.end()
        .map_err(|e| Problem::field("(body)", format!("is not valid JSON: {e}")))?;
    Ok(decoded)
}

/// A serde_json message without its " at line L column C" suffix.
fn without_position(message: &str) -> String {
    message
        .rsplit_once(" at line ")
        .map_or(message, |(m, _)| m)
        .to_owned()
}

/// A query string type, read from the parameters (each NUL-free).
pub(crate) trait FromQuery: Sized {
    /// The complete value, or a problem naming the parameter at fault.
    fn from_query(q: &HashMap<String, String>) -> Result<Self, Problem>;
}

/// A query string, decoded and checked: handlers get typed values.
#[derive(Debug)]
pub(crate) struct Params<T>(pub(crate) T);

impl<S: Send + Sync, T: FromQuery> FromRequestParts<S> for Params<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let q = Query::<HashMap<String, String>>::from_request_parts(parts, state).await;
        T::from_query(&crate::routes::query(q)?).map(Params)
    }
}

/// The `{id}` of a path, a UUID (400 naming `id` otherwise).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PathId(pub(crate) Uuid);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| Problem::field("id", "must be a UUID"))?;
        Uuid::parse_str(&raw)
            .map(PathId)
            .map_err(|_| Problem::field("id", "must be a UUID"))
    }
}

/// A required string of 1 to `max` characters (trimmed), without NUL: the
/// field's value, or its reason recorded in `errors`.
pub(crate) fn text(
    errors: &mut Vec<airline_runtime::validation::FieldError>,
    name: &str,
    value: Option<String>,
    max: usize,
) -> Option<String> {
    use airline_runtime::validation::FieldError;
    let Some(value) = value else {
        errors.push(FieldError::new(name, "is required"));
        return None;
    };
    let value = value.trim();
    if value.is_empty() || value.chars().count() > max {
        errors.push(FieldError::new(
            name,
            format!("must have 1 to {max} characters"),
        ));
        return None;
    }
    // PostgreSQL text cannot hold NUL.
    if value.contains('\0') {
        errors.push(FieldError::new(name, "must not contain NUL characters"));
        return None;
    }
    Some(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Raw {
        a: Option<i64>,
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        b: String,
    }

    fn refused(body: &str) -> String {
        format!("{:?}", decode::<Raw>(body.as_bytes()).expect_err("refused"))
    }

    #[test]
    fn decoding_names_the_field_by_its_path() {
        assert!(decode::<Raw>(br#"{"a": 1}"#).is_ok());
        assert!(refused(r#"{"a": "x"}"#).contains("name: \"a\""));
        assert!(refused(r#"{"inner": {}}"#).contains("name: \"inner.b\""));
        assert!(refused(r#"{"inner": {"b": 3}}"#).contains("name: \"inner.b\""));
        assert!(refused(r#"{"a": "#).contains("(body)"));
        assert!(refused(r#"{"a": 1} x"#).contains("(body)"));
        assert!(refused("[1]").contains("(body)"));
        assert!(refused(r#"["x"]"#).contains("(body)"));
        assert!(!refused(r#"{"a": "x"}"#).contains("line"));
    }
}
