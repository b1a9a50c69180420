//! The transactional outbox, its dispatcher and its relay.
//!
//! A handler never publishes. It returns the messages it wants sent; the runtime
//! writes them to `messaging.outbox` in the same transaction as the handler's own
//! writes and the inbox row, so either all of it happens or none. Right after the
//! commit the [`Dispatcher`] publishes those same rows from memory with confirms, and
//! a deleter removes the confirmed rows in batches: no extra transaction per message
//! on the hot path. The relay is the safety net: it publishes rows that are still
//! there a second later (the process died after its commit, or the broker was away)
//! and, when woken, everything. A message published twice that way keeps its message
//! id, and the consumers' inboxes absorb the duplicate.

use std::sync::Arc;
use std::time::Duration;

use airline_contracts::topology::exchange_of;
use airline_contracts::{Message, Names};
use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::broker::{Envelope, Publisher, properties};

/// How often the relay looks at the outbox when nobody woke it.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// How old a row must be before the polling relay takes it: younger rows are the
/// dispatcher's, on their way out.
const STALE_AFTER: Duration = Duration::from_secs(1);

/// The AMQP header that carries the HTTP request id from message to message.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// What caused a message: the delivery being handled, for causation and tracing.
#[derive(Debug, Clone, Default)]
pub struct Cause {
    /// The message id of the delivery being handled.
    pub message_id: Option<String>,
    /// Its W3C `traceparent`.
    pub traceparent: Option<String>,
    /// The `x-request-id` of the HTTP request the flow began with, carried from
    /// message to message.
    pub request_id: Option<String>,
}

/// An outbox row, as written: what the dispatcher publishes once it is committed.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The row id.
    pub id: i64,
    message_id: Uuid,
    exchange: String,
    routing_key: String,
    message_type: String,
    correlation_id: Option<Uuid>,
    causation_id: Option<String>,
    traceparent: Option<String>,
    request_id: Option<String>,
    body: Vec<u8>,
}

impl Pending {
    /// The envelope to publish, as `producer`, under `names`.
    #[must_use]
    pub fn envelope(&self, names: &Names, producer: &str) -> Envelope {
        let mut properties = properties(
            &self.message_id.to_string(),
            &self.message_type,
            self.correlation_id.map(|c| c.to_string()).as_deref(),
            producer,
            self.causation_id.as_deref(),
            self.traceparent.as_deref(),
        );
        if let Some(id) = &self.request_id {
            properties = crate::broker::with_header(properties, REQUEST_ID_HEADER, id);
        }
        Envelope {
            // '' is the default exchange (a replay straight to a queue), never prefixed.
            exchange: if self.exchange.is_empty() {
                String::new()
            } else {
                names.resolve(&self.exchange)
            },
            routing_key: self.routing_key.clone(),
            properties,
            body: self.body.clone(),
        }
    }

    /// The message id.
    #[must_use]
    pub fn message_id(&self) -> Uuid {
        self.message_id
    }
}

/// Writes `message` to the outbox of `producer` inside the caller's transaction.
/// Returns the row, for the [`Dispatcher`] once the transaction has committed.
///
/// # Errors
/// When the insert fails; the caller's transaction must then be rolled back.
pub async fn enqueue(
    tx: &mut PgConnection,
    producer: &str,
    cause: &Cause,
    message: &Message,
) -> sqlx::Result<Pending> {
    let t = message.message_type();
    let booking = message.booking_id();
    let mut pending = Pending {
        id: 0,
        message_id: Uuid::now_v7(),
        exchange: exchange_of(t.kind).to_owned(),
        routing_key: t.name.to_owned(),
        message_type: t.to_string(),
        correlation_id: Some(booking),
        causation_id: cause.message_id.clone(),
        traceparent: Some(child_traceparent(cause.traceparent.as_deref(), booking)),
        request_id: cause.request_id.clone(),
        body: message.encode(),
    };
    pending.id = sqlx::query_scalar(
        "INSERT INTO messaging.outbox
             (producer, message_id, exchange, routing_key, message_type, correlation_id,
              causation_id, traceparent, body, request_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         RETURNING id",
    )
    .bind(producer)
    .bind(pending.message_id)
    .bind(&pending.exchange)
    .bind(&pending.routing_key)
    .bind(&pending.message_type)
    .bind(pending.correlation_id)
    .bind(pending.causation_id.as_deref())
    .bind(pending.traceparent.as_deref())
    .bind(&pending.body)
    .bind(pending.request_id.as_deref())
    .fetch_one(tx)
    .await?;
    Ok(pending)
}

/// Publishes committed outbox rows straight away and hands the confirmed ones to the
/// deleter. What it cannot publish stays in the outbox for the relay.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    publisher: Publisher,
    names: Names,
    producer: String,
    confirmed: mpsc::UnboundedSender<i64>,
}

impl Dispatcher {
    /// Publishes `pending` (already committed) with confirms.
    pub async fn dispatch(&self, pending: &[Pending]) {
        if pending.is_empty() {
            return;
        }
        let envelopes: Vec<Envelope> = pending
            .iter()
            .map(|p| p.envelope(&self.names, &self.producer))
            .collect();
        match self.publisher.publish_all(&envelopes).await {
            Ok(()) => {
                for p in pending {
                    let _ = self.confirmed.send(p.id);
                }
            }
            Err(e) => tracing::warn!(
                producer = %self.producer,
                error = format!("{e:#}"),
                "could not publish after commit; the relay will"
            ),
        }
    }
}

/// Starts a producer's dispatcher and the deleter of its confirmed rows. The
/// deleter ends once every clone of the dispatcher is dropped and it has deleted
/// what it was given.
///
/// # Errors
/// When the publishing channel cannot be opened.
pub async fn start_dispatcher(
    broker: &crate::broker::Broker,
    pool: PgPool,
    names: Names,
    producer: &str,
    tasks: &tokio_util::task::TaskTracker,
) -> anyhow::Result<Dispatcher> {
    let (confirmed, rx) = mpsc::unbounded_channel();
    tasks.spawn(run_deleter(pool, rx));
    Ok(Dispatcher {
        publisher: Publisher::open(broker).await?,
        names,
        producer: producer.to_owned(),
        confirmed,
    })
}

/// Deletes confirmed rows in batches: whatever arrived within 10 ms, up to 1,000.
async fn run_deleter(pool: PgPool, mut rx: mpsc::UnboundedReceiver<i64>) {
    while let Some(first) = rx.recv().await {
        let mut ids = vec![first];
        let window = tokio::time::sleep(Duration::from_millis(10));
        tokio::pin!(window);
        while ids.len() < 1000 {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(id) => ids.push(id),
                    None => break,
                },
                () = &mut window => break,
            }
        }
        // A failed delete leaves rows for the relay to publish again: duplicates,
        // which the inboxes absorb, never losses.
        if let Err(e) = sqlx::query("DELETE FROM messaging.outbox WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&pool)
            .await
        {
            tracing::warn!(error = %e, rows = ids.len(), "could not delete published outbox rows; the relay will resend them");
        }
    }
}

/// A W3C traceparent continuing `parent`'s trace, or starting one whose trace id is
/// the booking id, so that a booking's whole saga is one trace.
#[must_use]
pub fn child_traceparent(parent: Option<&str>, booking: Uuid) -> String {
    let trace_id = parent
        .and_then(|p| p.split('-').nth(1))
        .filter(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .map_or_else(|| booking.simple().to_string(), str::to_owned);
    let span = Uuid::new_v4().simple().to_string();
    format!("00-{trace_id}-{}-01", &span[..16])
}

/// Wakes a service's relay after a commit that wrote outbox rows.
pub type RelaySignal = Arc<Notify>;

/// Publishes one producer's outbox until `shutdown`, then drains what is left once.
pub async fn run_relay(
    pool: PgPool,
    publisher: Publisher,
    names: Names,
    producer: String,
    batch: i64,
    signal: RelaySignal,
    shutdown: CancellationToken,
) {
    let mut failures: u32 = 0;
    loop {
        let (stopping, woken) = tokio::select! {
            () = signal.notified() => (false, true),
            () = tokio::time::sleep(POLL_INTERVAL) => (false, false),
            () = shutdown.cancelled() => (true, true),
        };
        // Woken on purpose: everything; on the timer: only rows the dispatcher
        // evidently did not get out.
        let min_age = if woken { Duration::ZERO } else { STALE_AFTER };
        loop {
            match relay_batch(&pool, &publisher, &names, &producer, batch, min_age).await {
                Ok(0) => {
                    failures = 0;
                    break;
                }
                Ok(_) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(producer = %producer, error = format!("{e:#}"), failures, "outbox relay failed; will retry");
                    let backoff = Duration::from_millis(100 * u64::from(failures.min(50)));
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {},
                        () = shutdown.cancelled() => {},
                    }
                    break;
                }
            }
        }
        if stopping {
            break;
        }
    }
}

/// Publishes up to `batch` rows of `producer`'s outbox at least `min_age` old and
/// deletes them. Returns how many were published.
///
/// # Errors
/// When the database or the broker fails; nothing is deleted then.
pub async fn relay_batch(
    pool: &PgPool,
    publisher: &Publisher,
    names: &Names,
    producer: &str,
    batch: i64,
    min_age: Duration,
) -> anyhow::Result<usize> {
    let mut tx = pool.begin().await?;
    let rows = sqlx::query(
        "SELECT id, message_id, exchange, routing_key, message_type, correlation_id,
                causation_id, traceparent, body, request_id
           FROM messaging.outbox
          WHERE producer = $1 AND created_at <= now() - make_interval(secs => $3)
          ORDER BY id
          LIMIT $2
          FOR UPDATE SKIP LOCKED",
    )
    .bind(producer)
    .bind(batch)
    .bind(min_age.as_secs_f64())
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        tx.commit().await?;
        return Ok(0);
    }
    let mut ids = Vec::with_capacity(rows.len());
    let mut envelopes = Vec::with_capacity(rows.len());
    for row in rows {
        ids.push(row.try_get::<i64, _>("id")?);
        let message_id: Uuid = row.try_get("message_id")?;
        let correlation: Option<Uuid> = row.try_get("correlation_id")?;
        let causation: Option<String> = row.try_get("causation_id")?;
        let traceparent: Option<String> = row.try_get("traceparent")?;
        let pending = Pending {
            id: row.try_get("id")?,
            message_id,
            exchange: row.try_get("exchange")?,
            routing_key: row.try_get("routing_key")?,
            message_type: row.try_get("message_type")?,
            correlation_id: correlation,
            causation_id: causation,
            traceparent,
            request_id: row.try_get("request_id")?,
            body: row.try_get("body")?,
        };
        envelopes.push(pending.envelope(names, producer));
    }
    publisher.publish_all(&envelopes).await?;
    sqlx::query("DELETE FROM messaging.outbox WHERE id = ANY($1)")
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(ids.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_continues_the_trace() {
        let booking = Uuid::now_v7();
        let first = child_traceparent(None, booking);
        let parts: Vec<_> = first.split('-').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[1], booking.simple().to_string());
        assert_eq!(parts[2].len(), 16);
        let second = child_traceparent(Some(&first), Uuid::now_v7());
        assert_eq!(second.split('-').nth(1), Some(parts[1]));
        assert_ne!(second, first);
    }
}
