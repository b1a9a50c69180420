//! `/v1/admin/dead-letters`: the dead-letter store over HTTP, the same operations
//! as `airline dlq` ([`airline_runtime::dead_letters`]). The caller may name itself
//! in `x-operator` (recorded on replays, edits and discards).

use std::collections::HashMap;

use airline_runtime::dead_letters::{self as store, Edit, Filter, Refusal, Selection};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::routes::{json_body, limit, query};
use crate::{AppState, Problem};

type Result<T, E = Problem> = std::result::Result<T, E>;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/dead-letters", get(overview))
        .route("/v1/admin/dead-letters/drain", post(drain))
        .route("/v1/admin/dead-letters/replay", post(replay_matching))
        .route("/v1/admin/dead-letters/discard", post(discard_matching))
        .route("/v1/admin/dead-letters/{id}", get(show).patch(edit))
        .route("/v1/admin/dead-letters/{id}/replay", post(replay_one))
        .route("/v1/admin/dead-letters/{id}/discard", post(discard_one))
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

fn dead_letter_id(raw: &str) -> Result<i64> {
    raw.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| Problem::field("id", "must be a positive integer"))
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

async fn overview(
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

async fn show(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<store::Detail>> {
    let id = dead_letter_id(&id)?;
    store::show(&s.pool, id)
        .await?
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no dead letter {id}")))
}

async fn edit(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<store::Detail>> {
    let id = dead_letter_id(&id)?;
    let body = json_body(&headers, body)?;
    let edit = match (body.get("set"), body.get("body")) {
        (Some(Value::Object(set)), None) if !set.is_empty() => Edit::Set(
            set.iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
        ),
        (None, Some(b)) => Edit::Body(b.to_string().into_bytes()),
        _ => {
            return Err(Problem::field(
                "set",
                "send either {\"set\": {\"path\": value, ...}} or {\"body\": {...}}",
            ));
        }
    };
    store::edit(&s.pool, id, edit, &operator(&headers))
        .await
        .map_err(problem)?;
    show(State(s), Path(id.to_string())).await
}

async fn replay_one(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<store::ReplayReport>> {
    let id = dead_letter_id(&id)?;
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

/// A bulk selection from a JSON body: a group or `"all": true`, and filters.
fn selection_of(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Selection> {
    let body = json_body(headers, body)?;
    if !body.is_object() {
        return Err(Problem::field("(body)", "must be a JSON object"));
    }
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
    Ok(Selection::Matching(filter))
}

async fn replay_matching(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<store::ReplayReport>> {
    let selection = selection_of(&headers, body)?;
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

async fn discard_one(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<store::Detail>> {
    let id = dead_letter_id(&id)?;
    store::discard(&s.pool, &Selection::One(id), &operator(&headers))
        .await
        .map_err(problem)?;
    show(State(s), Path(id.to_string())).await
}

async fn discard_matching(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>> {
    let selection = selection_of(&headers, body)?;
    let n = store::discard(&s.pool, &selection, &operator(&headers))
        .await
        .map_err(problem)?;
    Ok(Json(json!({ "discarded": n })))
}

async fn drain(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<store::DrainReport>> {
    let body = json_body(&headers, body)?;
    let queue = body.get("queue").and_then(Value::as_str);
    store::drain(s.runtime()?, queue, &mut |_| {})
        .await
        .map(Json)
        .map_err(problem)
}
