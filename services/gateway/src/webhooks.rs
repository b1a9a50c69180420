//! `/v1/webhooks`: an API key's webhook endpoints ([`airline_notify::endpoints`]).
//! An endpoint belongs to the key that created it and hears about the bookings that
//! key made; another key's endpoint is answered 404, as if it did not exist. The
//! signing secret is returned once, by the create answer.

use airline_notify::destination::{self, Refusal, WebhookUrl};
use airline_notify::endpoints::{self, Endpoint, EventTypes};
use airline_runtime::validation::FieldError;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::extract::{Body, Checked, PathId};
use crate::routes::no_nul;
use crate::{AppState, Problem};

type Result<T, E = Problem> = std::result::Result<T, E>;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, remove))
}

/// The body of `POST /v1/webhooks`, checked: every field at fault is named.
fn new_endpoint(body: &Value) -> Result<(WebhookUrl, EventTypes)> {
    if !body.is_object() {
        return Err(Problem::field("(body)", "must be a JSON object"));
    }
    let mut errors = Vec::new();
    let url = match body.get("url").and_then(Value::as_str) {
        None => {
            errors.push(FieldError::new(
                "url",
                "must be a string (an http or https URL)",
            ));
            None
        }
        Some(raw) => {
            no_nul("url", raw)?;
            WebhookUrl::parse(raw)
                .map_err(|e| errors.push(FieldError::new("url", e.to_string())))
                .ok()
        }
    };
    let events = EventTypes::parse(body.get("events").unwrap_or(&Value::Null))
        .map_err(|reason| errors.push(FieldError::new("events", reason)))
        .ok();
    match (url, events) {
        (Some(url), Some(events)) if errors.is_empty() => Ok((url, events)),
        _ => Err(Problem::invalid(errors)),
    }
}

/// The body of `POST /v1/webhooks`, checked.
#[derive(Debug)]
pub(crate) struct NewEndpoint(WebhookUrl, EventTypes);

impl Checked for NewEndpoint {
    // The event list's rules read JSON ([`EventTypes::parse`]).
    type Raw = Value;

    fn check(raw: Value) -> Result<Self> {
        new_endpoint(&raw).map(|(url, events)| Self(url, events))
    }
}

/// Register a webhook endpoint
///
/// The answer carries the signing secret, once.
#[utoipa::path(
    post, path = "/v1/webhooks", operation_id = "createWebhookEndpoint", tag = "webhooks",
    request_body(content = crate::openapi::NewWebhookBody, description = "Sent as application/json; any other Content-Type is answered 415."),
    responses(
        (status = 201, description = "Created; the secret is shown this once.", body = crate::openapi::WebhookCreated,
         headers(("Location" = String, description = "Path of the endpoint."))),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
        (status = 422, response = crate::openapi::Unprocessable),
    )
)]
pub(crate) async fn create(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(NewEndpoint(url, events)): Body<NewEndpoint>,
) -> Result<Response> {
    destination::vet(&url, s.config.webhooks.allow_private)
        .await
        .map_err(|refusal: Refusal| Problem::unprocessable("url", refusal.to_string()))?;
    let (endpoint, secret) = endpoints::create(&s.pool, caller.key_id, &url, &events).await?;
    tracing::info!(endpoint = %endpoint.id, key = %caller.name, "webhook endpoint created");
    let mut body = shown(&endpoint)?;
    body["secret"] = json!(secret.expose());
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/webhooks/{}", endpoint.id)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

fn shown(endpoint: &Endpoint) -> Result<Value> {
    serde_json::to_value(endpoint).map_err(|e| Problem::internal(&e.into()))
}

/// The calling key's webhook endpoints
#[utoipa::path(
    get, path = "/v1/webhooks", operation_id = "listWebhookEndpoints", tag = "webhooks",
    responses((status = 200, description = "Its endpoints.", body = crate::openapi::WebhookList))
)]
pub(crate) async fn list(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>> {
    let items = endpoints::list(&s.pool, caller.key_id).await?;
    Ok(Json(json!({ "items": items })))
}

/// One webhook endpoint and how its deliveries go
#[utoipa::path(
    get, path = "/v1/webhooks/{id}", operation_id = "getWebhookEndpoint", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The webhook endpoint's id.")),
    responses(
        (status = 200, description = "The endpoint.", body = Endpoint),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
    )
)]
pub(crate) async fn show(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathId(id): PathId,
) -> Result<Json<Endpoint>> {
    endpoints::get(&s.pool, caller.key_id, id)
        .await?
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no webhook endpoint {id}")))
}

/// Delete a webhook endpoint
#[utoipa::path(
    delete, path = "/v1/webhooks/{id}", operation_id = "deleteWebhookEndpoint", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The webhook endpoint's id.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
    )
)]
pub(crate) async fn remove(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathId(id): PathId,
) -> Result<StatusCode> {
    if endpoints::delete(&s.pool, caller.key_id, id).await? {
        tracing::info!(endpoint = %id, key = %caller.name, "webhook endpoint deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found(format!("no webhook endpoint {id}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: Problem) -> String {
        format!("{p:?}")
    }

    #[test]
    fn every_field_at_fault_is_named() {
        assert!(
            new_endpoint(&json!({"url": "https://example.com/h", "events": ["booking.confirmed"]}))
                .is_ok()
        );
        let both = names(
            new_endpoint(&json!({"url": "ftp://x/", "events": ["seat.sold"]}))
                .expect_err("refused"),
        );
        assert!(
            both.contains("\"url\"") && both.contains("\"events\""),
            "{both}"
        );
        let missing = names(new_endpoint(&json!({})).expect_err("refused"));
        assert!(
            missing.contains("\"url\"") && missing.contains("\"events\""),
            "{missing}"
        );
        let body = names(new_endpoint(&json!([1])).expect_err("refused"));
        assert!(body.contains("(body)"), "{body}");
    }
}
