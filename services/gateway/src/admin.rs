//! `/v1/admin/dead-letters`: the dead-letter store over HTTP, the same operations
//! as `airline dlq` ([`airline_dead_letters`]). The caller may name itself
//! in `x-operator` (recorded on replays, edits and discards).

use std::collections::HashMap;

use airline_dead_letters::{self as store, Edit, Filter, Refusal, Selection};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::{Body, Checked};
use crate::routes::{limit, query};
use crate::{AppState, Problem};

type Result<T, E = Problem> = std::result::Result<T, E>;

/// The admin routes; [`crate::routes`] puts the admin guard on them.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(overview))
        .routes(routes!(drain))
        .routes(routes!(replay_matching))
        .routes(routes!(discard_matching))
        .routes(routes!(show, edit))
        .routes(routes!(replay_one))
        .routes(routes!(discard_one))
}

fn operator(headers: &HeaderMap) -> String {
    headers
        .get("x-operator")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 100)
        .map_or_else(|| "http".to_owned(), |v| format!("http:{v}"))
}

fn problem(e: anyhow::Error) -> Problem {
    match e.downcast_ref::<Refusal>() {
        Some(Refusal::NotFound(_)) => Problem::not_found(e.to_string()),
        Some(Refusal::Invalid(m)) => Problem::unprocessable("(body)", m.clone()),
        Some(Refusal::Conflict(m)) => Problem::plain(StatusCode::CONFLICT, "Conflict", m.clone()),
        None => match e.downcast::<sqlx::Error>() {
            Ok(sql) => Problem::from(sql),
            Err(e) => Problem::internal(&e),
        },
    }
}

/// The `{id}` of a dead letter's path: a positive integer (400 naming `id`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DeadLetterId(i64);

impl<S: Send + Sync> FromRequestParts<S> for DeadLetterId {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let refused = || Problem::field("id", "must be a positive integer");
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| refused())?;
        raw.parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .map(DeadLetterId)
            .ok_or_else(refused)
    }
}

/// The body of an edit: `{"set": {path: value, …}}` or `{"body": {…}}`.
#[derive(Debug)]
pub(crate) struct EditRequest(Edit);

/// An edit as decoded: which of the two forms was sent is checked after.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct RawEdit {
    set: Option<Map<String, Value>>,
    body: Option<Value>,
}

impl Checked for EditRequest {
    type Raw = RawEdit;

    fn check(raw: RawEdit) -> Result<Self> {
        match (raw.set, raw.body) {
            (Some(set), None) if !set.is_empty() => Ok(Self(Edit::Set(
                set.iter()
                    .map(|(k, v)| (k.clone(), v.to_string()))
                    .collect(),
            ))),
            (None, Some(b)) => Ok(Self(Edit::Body(b.to_string().into_bytes()))),
            _ => Err(Problem::field(
                "set",
                "send either {\"set\": {\"path\": value, ...}} or {\"body\": {...}}",
            )),
        }
    }
}

/// A bulk selection: a group or `"all": true`, and filters.
#[derive(Debug)]
pub(crate) struct SelectionRequest(Selection);

impl Checked for SelectionRequest {
    type Raw = Map<String, Value>;

    fn check(body: Map<String, Value>) -> Result<Self> {
        let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
        let filter = filter_of(text)?;
        let all = body.get("all").and_then(Value::as_bool).unwrap_or(false);
        if filter.group.is_none() && !all {
            return Err(Problem::field(
                "group",
                "name a group, or send \"all\": true",
            ));
        }
        if filter.status.is_some() {
            return Err(Problem::field(
                "status",
                "bulk operations apply to stored dead letters only",
            ));
        }
        Ok(Self(Selection::Matching(filter)))
    }
}

/// The body of a drain: optionally the one queue whose DLQ to drain.
#[derive(Debug)]
pub(crate) struct DrainRequest(Option<String>);

impl Checked for DrainRequest {
    type Raw = Map<String, Value>;

    fn check(body: Map<String, Value>) -> Result<Self> {
        Ok(Self(
            body.get("queue").and_then(Value::as_str).map(str::to_owned),
        ))
    }
}

fn since(raw: &str, field: &str) -> Result<OffsetDateTime> {
    if let Ok(t) = OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339) {
        return Ok(t);
    }
    airline_runtime::retry::parse_duration(raw)
        .map(|d| OffsetDateTime::now_utc() - d)
        .map_err(|_| {
            Problem::field(
                field,
                "must be an RFC 3339 time or a duration like 30m, 24h",
            )
        })
}

/// The filter from query parameters or a JSON body's fields.
fn filter_of(get: impl Fn(&str) -> Option<String>) -> Result<Filter> {
    for name in ["queue", "type", "since", "group", "status"] {
        if let Some(v) = get(name) {
            crate::routes::no_nul(name, &v)?;
        }
    }
    let status = get("status");
    if let Some(s) = &status
        && !["stored", "replayed", "discarded"].contains(&s.as_str())
    {
        return Err(Problem::field(
            "status",
            "must be stored, replayed or discarded",
        ));
    }
    Ok(Filter {
        queue: get("queue"),
        message_type: get("type"),
        since: get("since").map(|s| since(&s, "since")).transpose()?,
        group: get("group"),
        status,
    })
}

/// Counts per queue, groups by cause, and dead letters
#[utoipa::path(
    get, path = "/v1/admin/dead-letters", operation_id = "listDeadLetters", tag = "dead-letters",
    params(
        ("queue" = Option<String>, Query, description = "Only this queue's."),
        ("type" = Option<String>, Query, description = "Only this message type's."),
        ("since" = Option<String>, Query, description = "Dead-lettered since: an RFC 3339 time or a duration like 30m, 24h."),
        ("group" = Option<String>, Query, description = "Only this group's (a cause)."),
        ("status" = Option<String>, Query, description = "stored, replayed or discarded.", pattern = "^(stored|replayed|discarded)$"),
        ("limit" = Option<i64>, Query, description = "Page size.", minimum = 1, maximum = 100),
    ),
    responses(
        (status = 200, description = "The overview.", body = crate::openapi::DeadLetterOverview),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 403, response = crate::openapi::Forbidden),
    )
)]
pub(crate) async fn overview(
    State(s): State<AppState>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>> {
    let q = query(q)?;
    let filter = filter_of(|k| q.get(k).cloned())?;
    let limit = limit(&q)?;
    let counts = store::counts(&s.pool).await?;
    let groups = store::groups(&s.pool, &filter).await?;
    let items = store::list(&s.pool, &filter, limit).await?;
    Ok(Json(
        json!({ "queues": counts, "groups": groups, "items": items }),
    ))
}

/// Everything about one dead letter
#[utoipa::path(
    get, path = "/v1/admin/dead-letters/{id}", operation_id = "getDeadLetter", tag = "dead-letters",
    params(("id" = i64, Path, description = "The dead letter's id in the store.", minimum = 1)),
    responses(
        (status = 200, description = "The dead letter.", body = store::Detail),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
    )
)]
pub(crate) async fn show(
    State(s): State<AppState>,
    DeadLetterId(id): DeadLetterId,
) -> Result<Json<store::Detail>> {
    store::show(&s.pool, id)
        .await?
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no dead letter {id}")))
}

/// Correct a stored dead letter's body
#[utoipa::path(
    patch, path = "/v1/admin/dead-letters/{id}", operation_id = "editDeadLetter", tag = "dead-letters",
    params(("id" = i64, Path, description = "The dead letter's id in the store.", minimum = 1), ("x-operator" = Option<String>, Header, description = "Who is acting, recorded as `http:<name>` on replays, edits and discards (`http` when absent).", max_length = 100)),
    request_body(content = crate::openapi::DeadLetterEdit, description = "Either {\"set\": {\"path\": value, ...}} or {\"body\": {...}}, as application/json."),
    responses(
        (status = 200, description = "The dead letter, edited.", body = store::Detail),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
        (status = 422, response = crate::openapi::Unprocessable),
    )
)]
pub(crate) async fn edit(
    State(s): State<AppState>,
    DeadLetterId(id): DeadLetterId,
    headers: HeaderMap,
    Body(EditRequest(edit)): Body<EditRequest>,
) -> Result<Json<store::Detail>> {
    store::edit(&s.pool, id, edit, &operator(&headers))
        .await
        .map_err(problem)?;
    show(State(s), DeadLetterId(id)).await
}

/// Replay one dead letter, once
#[utoipa::path(
    post, path = "/v1/admin/dead-letters/{id}/replay", operation_id = "replayDeadLetter", tag = "dead-letters",
    params(("id" = i64, Path, description = "The dead letter's id in the store.", minimum = 1), ("x-operator" = Option<String>, Header, description = "Who is acting, recorded as `http:<name>` on replays, edits and discards (`http` when absent).", max_length = 100), ("force" = Option<bool>, Query, description = "Replay even if it was replayed before.")),
    responses(
        (status = 200, description = "What was replayed.", body = store::ReplayReport),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
        (status = 422, response = crate::openapi::Unprocessable),
    )
)]
pub(crate) async fn replay_one(
    State(s): State<AppState>,
    DeadLetterId(id): DeadLetterId,
    headers: HeaderMap,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<store::ReplayReport>> {
    let force = match query(q)?.get("force").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(Problem::field("force", "must be true or false")),
    };
    store::replay(
        s.runtime()?,
        &Selection::One(id),
        &operator(&headers),
        force,
        &mut |_| {},
    )
    .await
    .map(Json)
    .map_err(problem)
}

/// Replay a group, or all stored dead letters matching filters
#[utoipa::path(
    post, path = "/v1/admin/dead-letters/replay", operation_id = "replayDeadLetters", tag = "dead-letters",
    params(("x-operator" = Option<String>, Header, description = "Who is acting, recorded as `http:<name>` on replays, edits and discards (`http` when absent).", max_length = 100)),
    request_body(content = crate::openapi::DeadLetterSelection, description = "A group, or \"all\": true, and filters (queue, type, since), as application/json."),
    responses(
        (status = 200, description = "What was replayed.", body = store::ReplayReport),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
        (status = 422, response = crate::openapi::Unprocessable),
    )
)]
pub(crate) async fn replay_matching(
    State(s): State<AppState>,
    headers: HeaderMap,
    Body(SelectionRequest(selection)): Body<SelectionRequest>,
) -> Result<Json<store::ReplayReport>> {
    store::replay(
        s.runtime()?,
        &selection,
        &operator(&headers),
        false,
        &mut |_| {},
    )
    .await
    .map(Json)
    .map_err(problem)
}

/// Discard one stored dead letter
#[utoipa::path(
    post, path = "/v1/admin/dead-letters/{id}/discard", operation_id = "discardDeadLetter", tag = "dead-letters",
    params(("id" = i64, Path, description = "The dead letter's id in the store.", minimum = 1), ("x-operator" = Option<String>, Header, description = "Who is acting, recorded as `http:<name>` on replays, edits and discards (`http` when absent).", max_length = 100)),
    responses(
        (status = 200, description = "The dead letter, discarded.", body = store::Detail),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
        (status = 422, response = crate::openapi::Unprocessable),
    )
)]
pub(crate) async fn discard_one(
    State(s): State<AppState>,
    DeadLetterId(id): DeadLetterId,
    headers: HeaderMap,
) -> Result<Json<store::Detail>> {
    store::discard(&s.pool, &Selection::One(id), &operator(&headers))
        .await
        .map_err(problem)?;
    show(State(s), DeadLetterId(id)).await
}

/// Discard a group, or all stored dead letters matching filters
#[utoipa::path(
    post, path = "/v1/admin/dead-letters/discard", operation_id = "discardDeadLetters", tag = "dead-letters",
    params(("x-operator" = Option<String>, Header, description = "Who is acting, recorded as `http:<name>` on replays, edits and discards (`http` when absent).", max_length = 100)),
    request_body(content = crate::openapi::DeadLetterSelection, description = "A group, or \"all\": true, and filters (queue, type, since), as application/json."),
    responses(
        (status = 200, description = "How many were discarded.", body = crate::openapi::Discarded),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
        (status = 422, response = crate::openapi::Unprocessable),
    )
)]
pub(crate) async fn discard_matching(
    State(s): State<AppState>,
    headers: HeaderMap,
    Body(SelectionRequest(selection)): Body<SelectionRequest>,
) -> Result<Json<Value>> {
    let n = store::discard(&s.pool, &selection, &operator(&headers))
        .await
        .map_err(problem)?;
    Ok(Json(json!({ "discarded": n })))
}

/// Move dead letters from the broker's DLQs into the store
#[utoipa::path(
    post, path = "/v1/admin/dead-letters/drain", operation_id = "drainDeadLetters", tag = "dead-letters",
    request_body(content = crate::openapi::DrainBody, description = "Optionally {\"queue\": name}, as application/json."),
    responses(
        (status = 200, description = "What was drained.", body = store::DrainReport),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
        (status = 422, response = crate::openapi::Unprocessable),
    )
)]
pub(crate) async fn drain(
    State(s): State<AppState>,
    Body(DrainRequest(queue)): Body<DrainRequest>,
) -> Result<Json<store::DrainReport>> {
    store::drain(s.runtime()?, queue.as_deref(), &mut |_| {})
        .await
        .map(Json)
        .map_err(problem)
}
