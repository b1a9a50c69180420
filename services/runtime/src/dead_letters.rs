//! The dead-letter store: operators drain the broker's DLQs into
//! `messaging.dead_letters`, look at failures grouped by cause, fix them, replay
//! them or discard them (`airline dlq`, and the gateway's `/v1/admin/dead-letters`).
//!
//! - **Drain** takes dead letters off the DLQs with `basic.get`, stores a batch in
//!   one transaction and acks it only after the commit. Each dead letter has a
//!   `drain_key` (a hash of its queue, properties and body), so one drained again
//!   after a crash between the commit and the ack is recognised and not stored twice.
//!   The store is bounded: at `AIRLINE_DLQ_MAX` rows draining stops and says so, and
//!   replayed or discarded rows are deleted after `AIRLINE_DLQ_RETENTION`.
//! - **Replay** writes an outbox row (producer [`OPERATOR`]) and marks the dead letter
//!   replayed in one transaction, then publishes the outbox: a replay is sent once,
//!   even if the command runs twice or dies midway. The copy goes back to the queue
//!   the message died in (not to a fan-out exchange, where every subscriber would get
//!   it again), with a new message id and `x-causation-id` naming the original.
//! - **Edit** stores a corrected body beside the original; a replay sends the edited
//!   body, never the original.

use std::fmt::Write as _;

use airline_contracts::topology::PARKING;
use airline_contracts::{Message, Names, QUEUES};
use anyhow::Context as _;
use lapin::BasicProperties;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{PgPool, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::broker::{Publisher, bounded};
use crate::service::Runtime;

/// The outbox producer of replays.
pub const OPERATOR: &str = "operator";

/// Dead letters stored per transaction while draining.
const DRAIN_BATCH: usize = 100;

/// Dead letters replayed per transaction.
const REPLAY_BATCH: i64 = 200;

/// Body fields that hold secrets: shown as `[redacted]`.
const SECRET_FIELDS: &[&str] = &["paymentToken"];

/// A problem with what the operator asked for (exit status 2, HTTP 4xx), as
/// opposed to a failure of the database or broker.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No such dead letter.
    #[error("no dead letter {0}")]
    NotFound(i64),
    /// The arguments are wrong (a bad path, an edited body that does not decode).
    #[error("{0}")]
    Invalid(String),
    /// The dead letter is not in a state that allows this (replayed, discarded,
    /// parked).
    #[error("{0}")]
    Conflict(String),
}

// ---------------------------------------------------------------------------------
// Pure parts: converting AMQP values, explaining failures, grouping them.
// ---------------------------------------------------------------------------------

/// An AMQP header value as JSON (byte strings as UTF-8 where they are).
#[must_use]
pub fn amqp_to_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(n) => json!(n),
        AMQPValue::ShortShortUInt(n) => json!(n),
        AMQPValue::ShortInt(n) => json!(n),
        AMQPValue::ShortUInt(n) => json!(n),
        AMQPValue::LongInt(n) => json!(n),
        AMQPValue::LongUInt(n) => json!(n),
        AMQPValue::LongLongInt(n) => json!(n),
        AMQPValue::Float(n) => json!(n),
        AMQPValue::Double(n) => json!(n),
        AMQPValue::DecimalValue(d) => json!({ "scale": d.scale, "value": d.value }),
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(amqp_to_json).collect()),
        AMQPValue::Timestamp(t) => json!(t),
        AMQPValue::FieldTable(t) => table_to_json(t),
        AMQPValue::ByteArray(b) => json!(String::from_utf8_lossy(b.as_slice())),
        AMQPValue::Void => Value::Null,
    }
}

/// A header table as a JSON object (keys sorted).
#[must_use]
pub fn table_to_json(table: &FieldTable) -> Value {
    Value::Object(
        table
            .inner()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), amqp_to_json(v)))
            .collect(),
    )
}

/// The AMQP properties other than headers, as JSON.
#[must_use]
pub fn properties_to_json(p: &BasicProperties) -> Value {
    let mut out = serde_json::Map::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            out.insert(k.to_owned(), json!(v));
        }
    };
    put(
        "content_type",
        p.content_type().as_ref().map(|s| s.to_string()),
    );
    put(
        "content_encoding",
        p.content_encoding().as_ref().map(|s| s.to_string()),
    );
    put("message_id", p.message_id().as_ref().map(|s| s.to_string()));
    put("type", p.kind().as_ref().map(|s| s.to_string()));
    put(
        "correlation_id",
        p.correlation_id().as_ref().map(|s| s.to_string()),
    );
    put("app_id", p.app_id().as_ref().map(|s| s.to_string()));
    put("user_id", p.user_id().as_ref().map(|s| s.to_string()));
    put("reply_to", p.reply_to().as_ref().map(|s| s.to_string()));
    put("expiration", p.expiration().as_ref().map(|s| s.to_string()));
    put("delivery_mode", p.delivery_mode().map(|m| m.to_string()));
    put("timestamp", p.timestamp().map(|t| t.to_string()));
    Value::Object(out)
}

/// Why a message died, read from its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// `x-error-kind`, or `broker-<reason>` when the broker dead-lettered it, or
    /// `parked` for a saga in the booking DLQ.
    pub kind: String,
    /// What went wrong, for a person.
    pub error: String,
    /// When it failed (RFC 3339), where known.
    pub failed_at: Option<String>,
    /// The exchange it was first published to (broker name; '' = default).
    pub exchange: String,
    /// Its first routing key.
    pub routing_key: String,
}

fn text_of(headers: &Value, key: &str) -> Option<String> {
    headers.get(key)?.as_str().map(str::to_owned)
}

/// Explains a dead letter from its headers (as JSON), its body and where the DLQ got
/// it from (`delivered_exchange`/`delivered_routing_key`).
#[must_use]
pub fn explain(
    queue: &str,
    headers: &Value,
    body: &[u8],
    delivered_exchange: &str,
    delivered_routing_key: &str,
) -> Explanation {
    let death = headers
        .get("x-death")
        .and_then(Value::as_array)
        .and_then(|a| a.first());
    let death_text = |k: &str| death.and_then(|d| d.get(k)).and_then(Value::as_str);
    let exchange = text_of(headers, "x-original-exchange")
        .or_else(|| death_text("exchange").map(str::to_owned))
        .unwrap_or_else(|| delivered_exchange.to_owned());
    let routing_key = text_of(headers, "x-original-routing-key")
        .or_else(|| {
            death
                .and_then(|d| d.get("routing-keys"))
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| delivered_routing_key.to_owned());
    if let Some(kind) = text_of(headers, "x-error-kind") {
        return Explanation {
            kind,
            error: text_of(headers, "x-error").unwrap_or_default(),
            failed_at: text_of(headers, "x-last-failure-at"),
            exchange,
            routing_key,
        };
    }
    if let Some(reason) = death_text("reason") {
        let count = death.and_then(|d| d.get("count")).and_then(Value::as_i64);
        let from = death_text("queue").unwrap_or(queue);
        return Explanation {
            kind: format!("broker-{reason}"),
            error: format!(
                "dead-lettered by the broker from {from} ({reason}{})",
                count.map(|n| format!(", {n} time(s)")).unwrap_or_default()
            ),
            failed_at: death
                .and_then(|d| d.get("time"))
                .and_then(Value::as_i64)
                .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                }),
            exchange,
            routing_key,
        };
    }
    let parked: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if let Some(reason) = parked.get("reason").and_then(Value::as_str) {
        let stuck = parked.get("stuckIn").and_then(Value::as_str).unwrap_or("?");
        return Explanation {
            kind: "parked".into(),
            error: format!("saga parked: {reason} (stuck in {stuck})"),
            failed_at: parked
                .get("parkedAt")
                .and_then(Value::as_str)
                .map(str::to_owned),
            exchange,
            routing_key,
        };
    }
    Explanation {
        kind: "unknown".into(),
        error: "no failure headers".into(),
        failed_at: None,
        exchange,
        routing_key,
    }
}

/// The error text with what varies between occurrences of one failure (numbers,
/// ids, hex) replaced by `#`, so that they group together.
#[must_use]
pub fn normalise(error: &str) -> String {
    let mut out = String::with_capacity(error.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.chars().any(|c| c.is_ascii_digit()) {
            out.push('#');
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in error.chars() {
        if c.is_ascii_hexdigit() || (c == '-' && !run.is_empty()) {
            run.push(c);
        } else {
            // A run glued to a word ("v1", "tok_abc12") is part of that word.
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// The group of a failure: message type, error kind and normalised error text.
#[must_use]
pub fn group_of(message_type: Option<&str>, kind: &str, error: &str) -> String {
    let mut hash = crate::sha256_hex(&[
        message_type.unwrap_or("").as_bytes(),
        kind.as_bytes(),
        normalise(error).as_bytes(),
    ]);
    hash.truncate(10);
    hash
}

/// The key that recognises one dead letter drained twice: its queue, properties,
/// headers (without the redelivery counter the broker adds) and body.
#[must_use]
pub fn drain_key(queue: &str, properties: &Value, headers: &Value, body: &[u8]) -> String {
    let mut headers = headers.clone();
    if let Some(h) = headers.as_object_mut() {
        h.remove("x-delivery-count");
    }
    crate::sha256_hex(&[
        queue.as_bytes(),
        properties.to_string().as_bytes(),
        headers.to_string().as_bytes(),
        body,
    ])
}

/// A body for people: pretty JSON with secrets redacted, or the text with card
/// tokens and card-like numbers masked.
#[must_use]
pub fn display_body(body: &[u8]) -> Value {
    match serde_json::from_slice::<Value>(body) {
        Ok(mut v) => {
            redact(&mut v);
            v
        }
        Err(_) => json!(mask_secrets(&String::from_utf8_lossy(body))),
    }
}

/// Any field whose name mentions a token (`paymentToken`, `payment_token`,
/// `token`), in any case, is redacted; every other string is masked.
fn redact(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, x) in map.iter_mut() {
                let key = k.to_ascii_lowercase();
                let secret = SECRET_FIELDS.iter().any(|f| f.eq_ignore_ascii_case(k))
                    || key.contains("token");
                if secret && !x.is_null() {
                    *x = json!("[redacted]");
                } else {
                    redact(x);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::String(text) => *text = mask_secrets(text),
        _ => {}
    }
}

/// Text with card tokens (`tok_…`) and card-like numbers (12 digits or more)
/// masked: for error texts, headers and bodies that are not JSON, where a serde
/// message or a malformed body may repeat a secret.
#[must_use]
pub fn mask_secrets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let rest: String = chars[i..chars.len().min(i + 4)].iter().collect();
        if rest == "tok_" && (i == 0 || !chars[i - 1].is_ascii_alphanumeric()) {
            let mut j = i + 4;
            while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                j += 1;
            }
            out.push_str("tok_[redacted]");
            i = j;
            continue;
        }
        if chars[i].is_ascii_digit() {
            let mut j = i;
            while j < chars.len() && chars[j].is_ascii_digit() {
                j += 1;
            }
            if j - i >= 12 {
                out.push_str("[redacted number]");
            } else {
                out.extend(&chars[i..j]);
            }
            i = j;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// A JSON value (headers) with every string masked.
fn mask_json(v: &mut Value) {
    match v {
        Value::String(text) => *text = mask_secrets(text),
        Value::Array(items) => items.iter_mut().for_each(mask_json),
        Value::Object(map) => map.values_mut().for_each(mask_json),
        _ => {}
    }
}

/// Sets `path` (fields separated by `.`, array indexes as numbers) to `value` in
/// `body`. The value is read as JSON when it parses, as a string otherwise.
///
/// # Errors
/// When the body is no JSON object or the path cannot be followed.
pub fn set_path(body: &mut Value, path: &str, value: &str) -> Result<(), Refusal> {
    let value: Value = serde_json::from_str(value).unwrap_or_else(|_| json!(value));
    let parts: Vec<&str> = path.split('.').collect();
    if path.is_empty() || parts.iter().any(|p| p.is_empty()) {
        return Err(Refusal::Invalid(format!(
            "`{path}` is not a field path like a.b.0.c"
        )));
    }
    let mut at = body;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        at = match at {
            Value::Object(map) if last => {
                map.insert((*part).to_owned(), value);
                return Ok(());
            }
            Value::Object(map) => map.entry((*part).to_owned()).or_insert_with(|| json!({})),
            Value::Array(items) => {
                let idx: usize = part.parse().map_err(|_| {
                    Refusal::Invalid(format!("`{part}` in `{path}` is not an array index"))
                })?;
                let slot = items.get_mut(idx).ok_or_else(|| {
                    Refusal::Invalid(format!("index {idx} in `{path}` is out of range"))
                })?;
                if last {
                    *slot = value;
                    return Ok(());
                }
                slot
            }
            _ => {
                return Err(Refusal::Invalid(format!(
                    "`{path}`: `{part}` is inside a value that is not an object"
                )));
            }
        };
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Drain.
// ---------------------------------------------------------------------------------

/// What one drain did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DrainReport {
    /// Dead letters stored now.
    pub stored: u64,
    /// Dead letters already stored (drained before a crash): acked, not stored again.
    pub already_stored: u64,
    /// Replayed or discarded dead letters deleted after the retention period.
    pub expired: u64,
    /// Messages left in the DLQs drained.
    pub left_in_broker: u64,
    /// The store is full: draining stopped before the DLQs were empty.
    pub full: bool,
    /// Rows in the store now, and its bound.
    pub store_size: i64,
    /// `AIRLINE_DLQ_MAX`.
    pub store_max: i64,
}

/// The DLQs a drain reads (broker names, with the logical work queue), optionally
/// only one queue's (`queue` may name the work queue or its DLQ).
///
/// # Errors
/// When `queue` names no queue of the topology.
pub fn dlqs(names: &Names, queue: Option<&str>) -> Result<Vec<(String, &'static str)>, Refusal> {
    let wanted = queue.map(|q| {
        let q = names.strip(q).unwrap_or(q);
        // A queue's own name (the booking DLQ ends in .dlq too), else a work
        // queue's DLQ.
        if QUEUES.iter().any(|spec| spec.name == q) {
            q.to_owned()
        } else {
            q.strip_suffix(airline_contracts::topology::DLQ_SUFFIX)
                .unwrap_or(q)
                .to_owned()
        }
    });
    let all: Vec<_> = QUEUES
        .iter()
        .filter(|q| wanted.as_deref().is_none_or(|w| w == q.name))
        .map(|q| {
            if q.consumer == PARKING {
                (names.resolve(q.name), q.name)
            } else {
                (names.dlq(q.name), q.name)
            }
        })
        .collect();
    if all.is_empty() {
        let known: Vec<_> = QUEUES.iter().map(|q| q.name).collect();
        return Err(Refusal::Invalid(format!(
            "no queue `{}`; known: {}",
            queue.unwrap_or_default(),
            known.join(", ")
        )));
    }
    Ok(all)
}

/// Deletes replayed and discarded dead letters resolved before `older_than` ago.
/// Returns how many.
///
/// # Errors
/// Database errors.
pub async fn purge(pool: &PgPool, older_than: std::time::Duration) -> sqlx::Result<u64> {
    Ok(sqlx::query(
        "DELETE FROM messaging.dead_letters
          WHERE status <> 'stored' AND resolved_at < now() - make_interval(secs => $1)",
    )
    .bind(older_than.as_secs_f64())
    .execute(pool)
    .await?
    .rows_affected())
}

async fn store_size(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM messaging.dead_letters")
        .fetch_one(pool)
        .await
}

/// Moves dead letters from the DLQs (all, or `queue`'s) into the store, until they
/// are empty or the store is full. `progress` is called with each batch's size.
///
/// # Errors
/// Database or broker errors; what was committed stays stored, the rest stays in
/// the broker.
pub async fn drain(
    rt: &Runtime,
    queue: Option<&str>,
    progress: &mut (dyn FnMut(u64) + Send),
) -> anyhow::Result<DrainReport> {
    let dlqs = dlqs(&rt.names, queue)?;
    let mut report = DrainReport {
        expired: purge(&rt.pool, rt.config.dead_letters.retention).await?,
        store_max: rt.config.dead_letters.max,
        ..DrainReport::default()
    };
    let crash_after_commit = rt.config.fails(crate::config::FaultStep::DrainCommit);
    let channel = bounded("opening a channel", rt.broker.create_channel()).await??;
    for (dlq, logical) in dlqs {
        loop {
            let room = rt.config.dead_letters.max - store_size(&rt.pool).await?;
            if room <= 0 {
                report.full = true;
                break;
            }
            let want = usize::try_from(room)
                .unwrap_or(DRAIN_BATCH)
                .min(DRAIN_BATCH);
            let mut batch = Vec::with_capacity(want);
            let mut remaining = 0;
            while batch.len() < want {
                match bounded(
                    "reading a DLQ",
                    channel.basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: false }),
                )
                .await?
                .with_context(|| format!("reading {dlq}"))?
                {
                    Some(got) => {
                        remaining = u64::from(got.message_count);
                        batch.push(got.delivery);
                    }
                    None => {
                        remaining = 0;
                        break;
                    }
                }
            }
            let Some(last) = batch.last() else { break };
            let last_tag = last.delivery_tag;
            let stored = store_batch(&rt.pool, &rt.names, logical, &batch).await?;
            if crash_after_commit {
                eprintln!("drain-commit fault: crashing after the commit, before the ack");
                std::process::abort();
            }
            bounded(
                "acking",
                channel.basic_ack(last_tag, BasicAckOptions { multiple: true }),
            )
            .await?
            .with_context(|| format!("acking {dlq}"))?;
            report.stored += stored;
            report.already_stored += batch.len() as u64 - stored;
            progress(batch.len() as u64);
            if remaining == 0 {
                break;
            }
        }
        report.left_in_broker += depth(rt, &dlq).await?;
        if report.full {
            break;
        }
    }
    let _ = channel.close(200, "drained".into()).await;
    report.store_size = store_size(&rt.pool).await?;
    Ok(report)
}

/// Messages ready in `queue` (a broker name), on a channel of its own (a failed passive declare
/// closes its channel).
pub async fn depth(rt: &Runtime, queue: &str) -> anyhow::Result<u64> {
    let channel = bounded("opening a channel", rt.broker.create_channel()).await??;
    let declared = bounded(
        "counting a DLQ",
        channel.queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await?
    .with_context(|| format!("counting {queue}"))?;
    let _ = channel.close(200, "counted".into()).await;
    Ok(u64::from(declared.message_count()))
}

/// Stores a batch in one transaction; returns how many were new.
async fn store_batch(
    pool: &PgPool,
    names: &Names,
    queue: &str,
    batch: &[lapin::message::Delivery],
) -> anyhow::Result<u64> {
    let mut tx = pool.begin().await?;
    let mut stored = 0;
    for d in batch {
        let props = properties_to_json(&d.properties);
        let headers = d
            .properties
            .headers()
            .as_ref()
            .map_or_else(|| json!({}), table_to_json);
        let why = explain(
            &names.resolve(queue),
            &headers,
            &d.data,
            d.exchange.as_str(),
            d.routing_key.as_str(),
        );
        let message_type = d.properties.kind().as_ref().map(|k| k.to_string());
        let failed_at = why.failed_at.as_deref().and_then(|t| {
            OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        });
        stored += sqlx::query(
            "INSERT INTO messaging.dead_letters
                 (drain_key, queue, message_id, message_type, correlation_id, original_exchange,
                  original_routing_key, properties, headers, body, error_kind, error, group_id,
                  failed_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
             ON CONFLICT (drain_key) DO NOTHING",
        )
        .bind(drain_key(queue, &props, &headers, &d.data))
        .bind(queue)
        .bind(d.properties.message_id().as_ref().map(|m| m.to_string()))
        .bind(&message_type)
        .bind(
            d.properties
                .correlation_id()
                .as_ref()
                .map(|c| c.to_string()),
        )
        .bind(&why.exchange)
        .bind(&why.routing_key)
        .bind(&props)
        .bind(&headers)
        .bind(&d.data)
        .bind(&why.kind)
        .bind(&why.error)
        .bind(group_of(message_type.as_deref(), &why.kind, &why.error))
        .bind(failed_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    tx.commit().await?;
    Ok(stored)
}

// ---------------------------------------------------------------------------------
// Looking.
// ---------------------------------------------------------------------------------

/// Which dead letters an operation applies to.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Logical queue name.
    pub queue: Option<String>,
    /// Message type, with or without its `.vN`.
    pub message_type: Option<String>,
    /// Failed (or drained) at or after.
    pub since: Option<OffsetDateTime>,
    /// A group id.
    pub group: Option<String>,
    /// `stored` (the default), `replayed` or `discarded`.
    pub status: Option<String>,
}

const FILTER_SQL: &str = "($1::text IS NULL OR queue = $1)
    AND ($2::text IS NULL OR message_type = $2
         OR regexp_replace(message_type, '\\.v[0-9]+$', '') = $2)
    AND ($3::timestamptz IS NULL OR COALESCE(failed_at, drained_at) >= $3)
    AND ($4::text IS NULL OR group_id = $4)
    AND status = COALESCE($5, 'stored')";

macro_rules! bind_filter {
    ($query:expr, $f:expr) => {
        $query
            .bind($f.queue.as_deref())
            .bind($f.message_type.as_deref())
            .bind($f.since)
            .bind($f.group.as_deref())
            .bind($f.status.as_deref())
    };
}

/// Dead letters per queue and status.
#[derive(Debug, Clone, Serialize)]
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
#[derive(Debug, Clone, Serialize)]
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

/// One dead letter, in a list.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
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
    let sql = format!(
        "SELECT group_id, min(message_type) AS message_type, min(error_kind) AS error_kind,
                min(error) AS example_error, array_agg(DISTINCT queue) AS queues,
                count(*) AS count,
                min(COALESCE(failed_at, drained_at)) AS first_failed_at,
                max(COALESCE(failed_at, drained_at)) AS last_failed_at
           FROM messaging.dead_letters WHERE {FILTER_SQL}
          GROUP BY group_id ORDER BY last_failed_at DESC"
    );
    let rows = bind_filter!(sqlx::query(&sql), filter)
        .fetch_all(pool)
        .await?;
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
    let sql = format!(
        "SELECT id, queue, message_type, message_id, correlation_id, error_kind, group_id,
                status, edited_body IS NOT NULL AS edited, failed_at
           FROM messaging.dead_letters WHERE {FILTER_SQL}
          ORDER BY id DESC LIMIT $6"
    );
    let rows = bind_filter!(sqlx::query(&sql), filter)
        .bind(limit)
        .fetch_all(pool)
        .await?;
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
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
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

// ---------------------------------------------------------------------------------
// Changing.
// ---------------------------------------------------------------------------------

/// How to change a body.
#[derive(Debug, Clone)]
pub enum Edit {
    /// Set fields: (path, value) pairs.
    Set(Vec<(String, String)>),
    /// Replace the whole body.
    Body(Vec<u8>),
}

/// Stores an edited body for a stored dead letter (starting from an earlier edit, if
/// any). When the message type is one of the contract's, the edited body must decode
/// as that message. Returns the edited body as shown.
///
/// # Errors
/// [`Refusal`] for a missing or already resolved dead letter, a bad path or a body
/// that does not decode; database errors otherwise.
pub async fn edit(pool: &PgPool, id: i64, edit: Edit, by: &str) -> anyhow::Result<Value> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query(
        "SELECT status, message_type, body, edited_body FROM messaging.dead_letters
          WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Refusal::NotFound(id))?;
    let status: String = row.try_get("status")?;
    if status != "stored" {
        return Err(Refusal::Conflict(format!(
            "dead letter {id} is {status}; only a stored dead letter can be edited"
        ))
        .into());
    }
    let message_type: Option<String> = row.try_get("message_type")?;
    let current: Vec<u8> = match row.try_get::<Option<Vec<u8>>, _>("edited_body")? {
        Some(b) => b,
        None => row.try_get("body")?,
    };
    let new_body = match edit {
        Edit::Body(b) => b,
        Edit::Set(pairs) => {
            let mut v: Value = serde_json::from_slice(&current).map_err(|e| {
                Refusal::Invalid(format!(
                    "the body is not JSON ({e}); replace it whole with --body"
                ))
            })?;
            for (path, value) in &pairs {
                set_path(&mut v, path, value)?;
            }
            serde_json::to_vec(&v)?
        }
    };
    let known = message_type
        .as_deref()
        .is_some_and(|t| Message::TYPES.iter().any(|k| k.to_string() == t));
    if known && let Err(e) = Message::decode(message_type.as_deref(), &new_body) {
        return Err(Refusal::Invalid(format!(
            "the edited body is not a valid {}: {e}",
            message_type.unwrap_or_default()
        ))
        .into());
    }
    sqlx::query(
        "UPDATE messaging.dead_letters SET edited_body = $2, edited_at = now(), edited_by = $3
          WHERE id = $1",
    )
    .bind(id)
    .bind(&new_body)
    .bind(by)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(display_body(&new_body))
}

/// Which dead letters to replay or discard.
#[derive(Debug, Clone)]
pub enum Selection {
    /// One.
    One(i64),
    /// Those matching a filter (a group, a queue, ...).
    Matching(Filter),
}

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayReport {
    /// Dead letters sent again.
    pub replayed: u64,
    /// The message ids of the copies (for one dead letter).
    pub message_ids: Vec<Uuid>,
}

/// Replays dead letters: in one transaction per batch, an outbox row and the mark
/// `replayed`; then the outbox is published. Only `stored` dead letters are replayed,
/// unless `force` (one dead letter, sent again on purpose). `progress` is called
/// with each batch's size.
///
/// # Errors
/// [`Refusal`] when the one dead letter is missing, already replayed (without
/// `force`) or a parked saga; database or broker errors otherwise (what was
/// committed is published by the next replay, or by the gateway's relay).
pub async fn replay(
    rt: &Runtime,
    selection: &Selection,
    by: &str,
    force: bool,
    progress: &mut (dyn FnMut(u64) + Send),
) -> anyhow::Result<ReplayReport> {
    let publisher = Publisher::open(&rt.broker).await?;
    // What an earlier run committed and did not get out.
    flush(rt, &publisher).await?;
    let mut report = ReplayReport::default();
    loop {
        let mut tx = rt.pool.begin().await?;
        let rows = match selection {
            Selection::One(id) => {
                let row = sqlx::query(
                    "SELECT id, queue, status, message_type, message_id, correlation_id,
                            COALESCE(edited_body, body) AS body
                       FROM messaging.dead_letters WHERE id = $1 FOR UPDATE",
                )
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(Refusal::NotFound(*id))?;
                let status: String = row.try_get("status")?;
                if status == "replayed" && !force && report.replayed == 0 {
                    return Err(Refusal::Conflict(format!(
                        "dead letter {id} was replayed already; add --force to send it again"
                    ))
                    .into());
                }
                if status == "discarded" && !force {
                    return Err(Refusal::Conflict(format!(
                        "dead letter {id} was discarded; add --force to send it anyway"
                    ))
                    .into());
                }
                if report.replayed > 0 {
                    Vec::new()
                } else {
                    vec![row]
                }
            }
            Selection::Matching(filter) => {
                let sql = format!(
                    "SELECT id, queue, status, message_type, message_id, correlation_id,
                            COALESCE(edited_body, body) AS body
                       FROM messaging.dead_letters
                      WHERE {FILTER_SQL} AND queue <> $7
                      ORDER BY id LIMIT $6 FOR UPDATE SKIP LOCKED"
                );
                let filter = Filter {
                    status: Some("stored".into()),
                    ..filter.clone()
                };
                bind_filter!(sqlx::query(&sql), filter)
                    .bind(REPLAY_BATCH)
                    .bind(parking_queue())
                    .fetch_all(&mut *tx)
                    .await?
            }
        };
        if rows.is_empty() {
            tx.commit().await?;
            break;
        }
        let n = rows.len() as u64;
        for row in rows {
            let id: i64 = row.try_get("id")?;
            let queue: String = row.try_get("queue")?;
            if queue == parking_queue() {
                return Err(Refusal::Conflict(format!(
                    "dead letter {id} is a parked saga: a record for an operator, not a message to send again (see docs/runbook.md)"
                ))
                .into());
            }
            let message_id = Uuid::now_v7();
            let correlation: Option<String> = row.try_get("correlation_id")?;
            sqlx::query(
                "INSERT INTO messaging.outbox
                     (producer, message_id, exchange, routing_key, message_type, correlation_id,
                      causation_id, body)
                 VALUES ($1, $2, '', $3, $4, $5, $6, $7)",
            )
            .bind(OPERATOR)
            .bind(message_id)
            .bind(rt.names.resolve(&queue))
            .bind(
                row.try_get::<Option<String>, _>("message_type")?
                    .unwrap_or_default(),
            )
            .bind(correlation.as_deref().and_then(|c| c.parse::<Uuid>().ok()))
            .bind(row.try_get::<Option<String>, _>("message_id")?)
            .bind(row.try_get::<Vec<u8>, _>("body")?)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE messaging.dead_letters
                    SET status = 'replayed', replays = replays + 1, replayed_at = now(),
                        replayed_by = $2, replay_message_id = $3, resolved_at = now()
                  WHERE id = $1",
            )
            .bind(id)
            .bind(by)
            .bind(message_id)
            .execute(&mut *tx)
            .await?;
            if matches!(selection, Selection::One(_)) {
                report.message_ids.push(message_id);
            }
        }
        tx.commit().await?;
        flush(rt, &publisher).await?;
        report.replayed += n;
        progress(n);
    }
    Ok(report)
}

fn parking_queue() -> &'static str {
    QUEUES
        .iter()
        .find(|q| q.consumer == PARKING)
        .map_or("", |q| q.name)
}

/// Publishes every replay committed and not yet sent.
///
/// # Errors
/// Database or broker errors.
pub async fn flush(rt: &Runtime, publisher: &Publisher) -> anyhow::Result<()> {
    while crate::outbox::relay_batch(
        &rt.pool,
        publisher,
        &rt.names,
        OPERATOR,
        rt.config.outbox.batch,
        std::time::Duration::ZERO,
    )
    .await?
        > 0
    {}
    Ok(())
}

/// Discards (archives) stored dead letters; they are kept for the retention
/// period. Returns how many.
///
/// # Errors
/// [`Refusal`] when the one dead letter is missing or not stored.
pub async fn discard(pool: &PgPool, selection: &Selection, by: &str) -> anyhow::Result<u64> {
    let n = match selection {
        Selection::One(id) => {
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM messaging.dead_letters WHERE id = $1")
                    .bind(id)
                    .fetch_optional(pool)
                    .await?;
            match status.as_deref() {
                None => return Err(Refusal::NotFound(*id).into()),
                Some("stored") => {}
                Some(other) => {
                    return Err(Refusal::Conflict(format!(
                        "dead letter {id} is {other}; only a stored one can be discarded"
                    ))
                    .into());
                }
            }
            sqlx::query(
                "UPDATE messaging.dead_letters
                    SET status = 'discarded', discarded_at = now(), discarded_by = $2,
                        resolved_at = now()
                  WHERE id = $1 AND status = 'stored'",
            )
            .bind(id)
            .bind(by)
            .execute(pool)
            .await?
            .rows_affected()
        }
        Selection::Matching(filter) => {
            let filter = Filter {
                status: Some("stored".into()),
                ..filter.clone()
            };
            let sql = format!(
                "UPDATE messaging.dead_letters
                    SET status = 'discarded', discarded_at = now(), discarded_by = $6,
                        resolved_at = now()
                  WHERE {FILTER_SQL}"
            );
            bind_filter!(sqlx::query(&sql), filter)
                .bind(by)
                .execute(pool)
                .await?
                .rows_affected()
        }
    };
    Ok(n)
}

/// A readable table of counts and groups.
#[must_use]
pub fn render_overview(counts: &[QueueCount], groups: &[Group]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<28} {:>8} {:>9} {:>10}",
        "QUEUE", "STORED", "REPLAYED", "DISCARDED"
    );
    for c in counts {
        let _ = writeln!(
            out,
            "{:<28} {:>8} {:>9} {:>10}",
            c.queue, c.stored, c.replayed, c.discarded
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<11} {:>6}  {:<26} {:<20} {:<20} ERROR",
        "GROUP", "COUNT", "TYPE", "KIND", "LAST FAILED"
    );
    for g in groups {
        let last = g
            .last_failed_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let error: String = g.example_error.chars().take(100).collect();
        let _ = writeln!(
            out,
            "{:<11} {:>6}  {:<26} {:<20} {:<20} {error}",
            g.group,
            g.count,
            g.message_type.as_deref().unwrap_or("-"),
            g.error_kind,
            &last[..last.len().min(19)],
        );
    }
    let total: i64 = groups.iter().map(|g| g.count).sum();
    let _ = writeln!(out, "{} group(s), {total} dead letter(s)", groups.len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_that_differ_only_in_ids_and_numbers_share_a_group() {
        let a = "gave up after 4 attempts: payment provider unavailable: tok_flaky failed call 2 of 2 for a1000000-0000-4000-8000-000000000001";
        let b = "gave up after 4 attempts: payment provider unavailable: tok_flaky failed call 1 of 2 for 9c0ffee0-1111-4000-8000-00000000beef";
        assert_eq!(normalise(a), normalise(b));
        assert_eq!(
            group_of(Some("payment.collect.v1"), "retries-exhausted", a),
            group_of(Some("payment.collect.v1"), "retries-exhausted", b)
        );
        assert_ne!(
            group_of(Some("payment.collect.v1"), "retries-exhausted", a),
            group_of(Some("payment.collect.v1"), "rejected", a)
        );
        assert_ne!(
            group_of(
                Some("payment.collect.v1"),
                "invalid-body",
                "missing field `amount`"
            ),
            group_of(
                Some("payment.collect.v1"),
                "invalid-body",
                "missing field `currency`"
            )
        );
    }

    #[test]
    fn the_failure_is_read_from_our_headers_then_the_brokers_then_a_parked_body() {
        let ours = json!({
            "x-error-kind": "rejected", "x-error": "no booking",
            "x-original-exchange": "airline.commands", "x-original-routing-key": "payment.collect",
            "x-last-failure-at": "2026-11-27T10:00:00Z",
        });
        let e = explain(
            "airline.payment.collect",
            &ours,
            b"{}",
            "airline.dead-letter",
            "airline.payment.collect",
        );
        assert_eq!(
            (e.kind.as_str(), e.error.as_str()),
            ("rejected", "no booking")
        );
        assert_eq!(
            (e.exchange.as_str(), e.routing_key.as_str()),
            ("airline.commands", "payment.collect")
        );
        assert_eq!(e.failed_at.as_deref(), Some("2026-11-27T10:00:00Z"));

        let broker = json!({ "x-death": [{
            "reason": "delivery_limit", "queue": "airline.payment.collect", "count": 1,
            "exchange": "airline.commands", "routing-keys": ["payment.collect"], "time": 1_800_000_000,
        }]});
        let e = explain(
            "airline.payment.collect",
            &broker,
            b"{}",
            "airline.dead-letter",
            "airline.payment.collect",
        );
        assert_eq!(e.kind, "broker-delivery_limit");
        assert!(e.error.contains("airline.payment.collect"), "{}", e.error);
        assert_eq!(e.routing_key, "payment.collect");
        assert!(e.failed_at.is_some());

        let parked = br#"{"reason":"COMPENSATION_FAILED","stuckIn":"REFUNDING_PAYMENT"}"#;
        let e = explain(
            "airline.booking.dlq",
            &json!({}),
            parked,
            "airline.events",
            "booking.parked",
        );
        assert_eq!(e.kind, "parked");
        assert!(e.error.contains("REFUNDING_PAYMENT"));
        assert_eq!(e.routing_key, "booking.parked");
    }

    #[test]
    fn a_redelivered_dead_letter_has_the_same_drain_key() {
        let props = json!({"message_id": "m1"});
        let first = json!({"x-error": "boom"});
        let again = json!({"x-error": "boom", "x-delivery-count": 1});
        assert_eq!(
            drain_key("q", &props, &first, b"body"),
            drain_key("q", &props, &again, b"body")
        );
        assert_ne!(
            drain_key("q", &props, &first, b"body"),
            drain_key("other", &props, &first, b"body")
        );
    }

    #[test]
    fn tokens_and_card_numbers_are_masked_in_text() {
        assert_eq!(
            mask_secrets(
                "bad body {\"paymentToken\":\"tok_visa_123\", pan 4111111111111111, id 42"
            ),
            "bad body {\"paymentToken\":\"tok_[redacted]\", pan [redacted number], id 42"
        );
        assert_eq!(mask_secrets("stok_x is a word"), "stok_x is a word");
        let shown = display_body(b"{\"paymentToken\":\"tok_visa\"");
        assert!(!shown.to_string().contains("tok_visa"), "{shown}");
        let shown = display_body(br#"{"payment_token":"x","Token":"y","note":"tok_abc"}"#);
        assert_eq!(
            shown,
            json!({"payment_token":"[redacted]","Token":"[redacted]","note":"tok_[redacted]"})
        );
    }

    #[test]
    fn payment_tokens_never_show() {
        let shown = display_body(
            br#"{"bookingId":"b","paymentToken":"tok_visa","nested":[{"paymentToken":"x"}]}"#,
        );
        let text = shown.to_string();
        assert!(
            !text.contains("tok_visa") && !text.contains("\"x\""),
            "{text}"
        );
        assert_eq!(display_body(b"not json"), json!("not json"));
    }

    #[test]
    fn paths_set_fields_and_refuse_what_they_cannot_follow() {
        let mut v = json!({"a": {"b": 1}, "list": [1, 2]});
        set_path(&mut v, "a.b", "2").expect("set");
        set_path(&mut v, "a.c", "text").expect("set");
        set_path(&mut v, "list.1", "{\"x\":true}").expect("set");
        assert_eq!(
            v,
            json!({"a": {"b": 2, "c": "text"}, "list": [1, {"x": true}]})
        );
        assert!(set_path(&mut v, "list.9", "1").is_err());
        assert!(set_path(&mut v, "a.b.c", "1").is_err());
        assert!(set_path(&mut v, "", "1").is_err());
        assert!(set_path(&mut v, "a..b", "1").is_err());
    }
}
