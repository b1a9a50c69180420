//! Looking at the store: counts per queue, failures grouped by cause, lists and
//! one dead letter in full (secrets hidden).

use serde::Serialize;
use serde_json::Value;
use sqlx::{PgPool, QueryBuilder, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::filter::{Filter, matching};
use crate::redact::{display_body, mask_json, mask_secrets};

/// Dead letters per queue and status.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QueueCount {
    /// Logical queue name.
    pub queue: String,
    /// Waiting for an operator.
    pub stored: i64,
    /// Replayed.
    pub replayed: i64,
    /// Discarded.
    pub discarded: i64,
}

/// Failures of one cause.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    /// The group id (for `--group`).
    pub group: String,
    /// Message type.
    pub message_type: Option<String>,
    /// Error kind.
    pub error_kind: String,
    /// One occurrence's error text.
    pub example_error: String,
    /// The queues they died in.
    pub queues: Vec<String>,
    /// How many.
    pub count: i64,
    /// The first and last failure.
    #[serde(with = "time::serde::rfc3339")]
    pub first_failed_at: OffsetDateTime,
    /// The last failure.
    #[serde(with = "time::serde::rfc3339")]
    pub last_failed_at: OffsetDateTime,
}

/// The schema of a dead letter's status.
fn status_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(["stored", "replayed", "discarded"]))
        .build()
}

/// One dead letter, in a list.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = DeadLetterSummary)]
pub struct Summary {
    /// Id in the store.
    pub id: i64,
    /// Queue it died in.
    pub queue: String,
    /// Message type.
    pub message_type: Option<String>,
    /// Original message id.
    pub message_id: Option<String>,
    /// Correlation id (the booking).
    pub correlation_id: Option<String>,
    /// Error kind.
    pub error_kind: String,
    /// Group id.
    pub group: String,
    /// stored, replayed or discarded.
    #[schema(schema_with = status_schema)]
    pub status: String,
    /// Whether an edited body is waiting.
    pub edited: bool,
    /// When it failed.
    #[serde(with = "time::serde::rfc3339::option")]
    pub failed_at: Option<OffsetDateTime>,
}

/// Counts per queue (every status).
///
/// # Errors
/// Database errors.
pub async fn counts(pool: &PgPool) -> sqlx::Result<Vec<QueueCount>> {
    let rows = sqlx::query(
        "SELECT queue,
                count(*) FILTER (WHERE status = 'stored') AS stored,
                count(*) FILTER (WHERE status = 'replayed') AS replayed,
                count(*) FILTER (WHERE status = 'discarded') AS discarded
           FROM messaging.dead_letters GROUP BY queue ORDER BY queue",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(QueueCount {
                queue: r.try_get("queue")?,
                stored: r.try_get("stored")?,
                replayed: r.try_get("replayed")?,
                discarded: r.try_get("discarded")?,
            })
        })
        .collect()
}

/// Failures grouped by cause, the most recent group first.
///
/// # Errors
/// Database errors.
pub async fn groups(pool: &PgPool, filter: &Filter) -> sqlx::Result<Vec<Group>> {
    let mut query = QueryBuilder::new(
        "SELECT group_id, min(message_type) AS message_type, min(error_kind) AS error_kind,
                min(error) AS example_error, array_agg(DISTINCT queue) AS queues,
                count(*) AS count,
                min(COALESCE(failed_at, drained_at)) AS first_failed_at,
                max(COALESCE(failed_at, drained_at)) AS last_failed_at
           FROM messaging.dead_letters WHERE ",
    );
    matching(&mut query, filter);
    query.push(" GROUP BY group_id ORDER BY last_failed_at DESC");
    let rows = query.build().fetch_all(pool).await?;
    rows.iter()
        .map(|r| {
            Ok(Group {
                group: r.try_get("group_id")?,
                message_type: r.try_get("message_type")?,
                error_kind: r.try_get("error_kind")?,
                example_error: mask_secrets(&r.try_get::<String, _>("example_error")?),
                queues: r.try_get("queues")?,
                count: r.try_get("count")?,
                first_failed_at: r.try_get("first_failed_at")?,
                last_failed_at: r.try_get("last_failed_at")?,
            })
        })
        .collect()
}

/// The dead letters matching `filter`, newest first, at most `limit`.
///
/// # Errors
/// Database errors.
pub async fn list(pool: &PgPool, filter: &Filter, limit: i64) -> sqlx::Result<Vec<Summary>> {
    let mut query = QueryBuilder::new(
        "SELECT id, queue, message_type, message_id, correlation_id, error_kind, group_id,
                status, edited_body IS NOT NULL AS edited, failed_at
           FROM messaging.dead_letters WHERE ",
    );
    matching(&mut query, filter);
    query.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
    let rows = query.build().fetch_all(pool).await?;
    rows.iter().map(Summary::from_row).collect()
}

impl Summary {
    fn from_row(r: &sqlx::postgres::PgRow) -> sqlx::Result<Self> {
        Ok(Self {
            id: r.try_get("id")?,
            queue: r.try_get("queue")?,
            message_type: r.try_get("message_type")?,
            message_id: r.try_get("message_id")?,
            correlation_id: r.try_get("correlation_id")?,
            error_kind: r.try_get("error_kind")?,
            group: r.try_get("group_id")?,
            status: r.try_get("status")?,
            edited: r.try_get("edited")?,
            failed_at: r.try_get("failed_at")?,
        })
    }
}

/// Everything about one dead letter.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = DeadLetter)]
pub struct Detail {
    /// The list fields.
    #[serde(flatten)]
    pub summary: Summary,
    /// The error text.
    pub error: String,
    /// Where it was first published.
    pub original_exchange: String,
    /// Its first routing key.
    pub original_routing_key: String,
    /// AMQP properties.
    pub properties: Value,
    /// AMQP headers, `x-error-*` and `x-death` included.
    pub headers: Value,
    /// The body (JSON pretty-printed, secrets redacted).
    pub body: Value,
    /// The edited body that a replay sends, if any (secrets redacted).
    pub edited_body: Option<Value>,
    /// Who edited it, and when.
    pub edited_by: Option<String>,
    /// When it was edited.
    #[serde(with = "time::serde::rfc3339::option")]
    pub edited_at: Option<OffsetDateTime>,
    /// When it was drained.
    #[serde(with = "time::serde::rfc3339")]
    pub drained_at: OffsetDateTime,
    /// How many times it was replayed.
    pub replays: i32,
    /// The last replay: when, by whom, and its message id.
    #[serde(with = "time::serde::rfc3339::option")]
    pub replayed_at: Option<OffsetDateTime>,
    /// Who replayed it.
    pub replayed_by: Option<String>,
    /// The message id of the last replay.
    pub replay_message_id: Option<Uuid>,
    /// When it was discarded, and by whom.
    #[serde(with = "time::serde::rfc3339::option")]
    pub discarded_at: Option<OffsetDateTime>,
    /// Who discarded it.
    pub discarded_by: Option<String>,
}

/// One dead letter.
///
/// # Errors
/// Database errors.
pub async fn show(pool: &PgPool, id: i64) -> sqlx::Result<Option<Detail>> {
    let Some(r) = sqlx::query(
        "SELECT *, edited_body IS NOT NULL AS edited FROM messaging.dead_letters WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let body: Vec<u8> = r.try_get("body")?;
    let edited: Option<Vec<u8>> = r.try_get("edited_body")?;
    Ok(Some(Detail {
        summary: Summary::from_row(&r)?,
        error: mask_secrets(&r.try_get::<String, _>("error")?),
        original_exchange: r.try_get("original_exchange")?,
        original_routing_key: r.try_get("original_routing_key")?,
        properties: r.try_get("properties")?,
        headers: {
            let mut h: Value = r.try_get("headers")?;
            mask_json(&mut h);
            h
        },
        body: display_body(&body),
        edited_body: edited.as_deref().map(display_body),
        edited_by: r.try_get("edited_by")?,
        edited_at: r.try_get("edited_at")?,
        drained_at: r.try_get("drained_at")?,
        replays: r.try_get("replays")?,
        replayed_at: r.try_get("replayed_at")?,
        replayed_by: r.try_get("replayed_by")?,
        replay_message_id: r.try_get("replay_message_id")?,
        discarded_at: r.try_get("discarded_at")?,
        discarded_by: r.try_get("discarded_by")?,
    }))
}
