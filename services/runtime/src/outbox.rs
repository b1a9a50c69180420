//! The transactional outbox and its relay.
//!
//! A handler never publishes. It returns the messages it wants sent; the runtime
//! writes them to `messaging.outbox` in the same transaction as the handler's own
//! writes and the inbox row, so either all of it happens or none. The relay then
//! publishes outbox rows with confirms and deletes them once confirmed. A crash
//! between publish and delete publishes again with the same message id, which the
//! consumers' inboxes absorb.

use std::sync::Arc;
use std::time::Duration;

use airline_contracts::topology::exchange_of;
use airline_contracts::{Message, Names};
use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::broker::{Envelope, Publisher, properties};

/// How often the relay looks at the outbox when nobody woke it: rows written by
/// another process, or left by a crash.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// What caused a message: the delivery being handled, for causation and tracing.
#[derive(Debug, Clone, Default)]
pub struct Cause {
    /// The message id of the delivery being handled.
    pub message_id: Option<String>,
    /// Its W3C `traceparent`.
    pub traceparent: Option<String>,
}

/// Writes `message` to the outbox of `producer` inside the caller's transaction.
/// Returns the new message id.
///
/// # Errors
/// When the insert fails; the caller's transaction must then be rolled back.
pub async fn enqueue(
    tx: &mut PgConnection,
    producer: &str,
    cause: &Cause,
    message: &Message,
) -> sqlx::Result<Uuid> {
    let message_id = Uuid::now_v7();
    let t = message.message_type();
    let booking = message.booking_id();
    let traceparent = child_traceparent(cause.traceparent.as_deref(), booking);
    sqlx::query(
        "INSERT INTO messaging.outbox
             (producer, message_id, exchange, routing_key, message_type, correlation_id,
              causation_id, traceparent, body)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(producer)
    .bind(message_id)
    .bind(exchange_of(t.kind))
    .bind(t.name)
    .bind(t.to_string())
    .bind(booking)
    .bind(cause.message_id.as_deref())
    .bind(&traceparent)
    .bind(message.encode())
    .execute(tx)
    .await?;
    Ok(message_id)
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
        let stopping = tokio::select! {
            () = signal.notified() => false,
            () = tokio::time::sleep(POLL_INTERVAL) => false,
            () = shutdown.cancelled() => true,
        };
        loop {
            match relay_batch(&pool, &publisher, &names, &producer, batch).await {
                Ok(0) => {
                    failures = 0;
                    break;
                }
                Ok(_) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(producer = %producer, error = format!("{e:#}"), failures, "outbox relay failed; will retry");
                    if let Some(lapin_error) = e.downcast_ref::<lapin::Error>() {
                        let _ = publisher
                            .channel()
                            .wait_for_recovery(lapin_error.clone())
                            .await;
                    }
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

/// Publishes up to `batch` rows of `producer`'s outbox and deletes them. Returns how
/// many were published.
///
/// # Errors
/// When the database or the broker fails; nothing is deleted then.
pub async fn relay_batch(
    pool: &PgPool,
    publisher: &Publisher,
    names: &Names,
    producer: &str,
    batch: i64,
) -> anyhow::Result<usize> {
    let mut tx = pool.begin().await?;
    let rows = sqlx::query(
        "SELECT id, message_id, exchange, routing_key, message_type, correlation_id,
                causation_id, traceparent, body
           FROM messaging.outbox
          WHERE producer = $1
          ORDER BY id
          LIMIT $2
          FOR UPDATE SKIP LOCKED",
    )
    .bind(producer)
    .bind(batch)
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
        let exchange: String = row.try_get("exchange")?;
        envelopes.push(Envelope {
            exchange: names.resolve(&exchange),
            routing_key: row.try_get("routing_key")?,
            properties: properties(
                &message_id.to_string(),
                row.try_get::<&str, _>("message_type")?,
                correlation.map(|c| c.to_string()).as_deref(),
                producer,
                causation.as_deref(),
                traceparent.as_deref(),
            ),
            body: row.try_get("body")?,
        });
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
