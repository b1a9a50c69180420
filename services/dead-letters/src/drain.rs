//! Draining: dead letters move from the broker's DLQs into the store, a batch per
//! transaction, acked only after the commit.
//!
//! A deployment has two DLQs: the shared one (`<prefix>dead-letters`), where every
//! work queue's dead letters land, each recorded under the queue it died in
//! ([`airline_runtime::topology::origin_of`]), and the booking DLQ (parked sagas).

use airline_contracts::topology::{DEAD_LETTERS, PARKING};
use airline_contracts::{Names, QUEUES};
use airline_runtime::Refusal;
use airline_runtime::broker::bounded;
use airline_runtime::service::Runtime;
use anyhow::Context as _;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::FieldTable;
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;
use time::OffsetDateTime;

use crate::discard::purge;
use crate::explain::{drain_key, explain, group_of, properties_to_json, table_to_json};

/// Dead letters stored per transaction while draining.
const DRAIN_BATCH: usize = 100;

/// What one drain did.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct DrainReport {
    /// Dead letters stored now.
    pub stored: u64,
    /// Dead letters already stored (drained before a crash): acked, not stored again.
    pub already_stored: u64,
    /// Replayed or discarded dead letters deleted after the retention period.
    pub expired: u64,
    /// Messages left in the DLQs drained.
    pub left_in_broker: u64,
    /// The DLQs drained (broker names). The shared DLQ holds every work queue's
    /// dead letters: draining for one work queue drains it whole, each dead letter
    /// recorded under its own origin queue.
    pub drained: Vec<String>,
    /// The store is full: draining stopped before the DLQs were empty.
    pub full: bool,
    /// Rows in the store now, and its bound.
    pub store_size: i64,
    /// `AIRLINE_DLQ_MAX`.
    pub store_max: i64,
}

/// Where a drained dead letter is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Under the queue it died in, read from the message (the shared DLQ).
    FromMessage,
    /// Under this queue (a parking queue: the booking DLQ).
    Queue(&'static str),
}

/// The DLQs a drain reads (broker names), with where their dead letters are
/// recorded: the shared DLQ and the booking DLQ, or, for `queue`, the booking DLQ
/// when it names it, else the shared DLQ, whole (it holds every work queue's dead
/// letters; each is recorded under its own queue). `queue` may name a work queue
/// (`payment.collect`), its old-layout DLQ (`payment.collect.dlq`) or a DLQ by
/// broker or logical name.
///
/// # Errors
/// When `queue` names no queue of the topology.
pub fn dlqs(names: &Names, queue: Option<&str>) -> Result<Vec<(String, Origin)>, Refusal> {
    let shared = (names.dead_letters(), Origin::FromMessage);
    let parking = QUEUES
        .iter()
        .filter(|q| q.consumer == PARKING)
        .map(|q| (names.resolve(q.name), Origin::Queue(q.name)));
    let Some(wanted) = queue else {
        return Ok(std::iter::once(shared).chain(parking).collect());
    };
    let q = names.strip(wanted).unwrap_or(wanted);
    if let Some(spec) = QUEUES.iter().find(|spec| spec.name == q) {
        return Ok(if spec.consumer == PARKING {
            vec![(names.resolve(spec.name), Origin::Queue(spec.name))]
        } else {
            vec![shared]
        });
    }
    let work = q
        .strip_suffix(airline_contracts::topology::DLQ_SUFFIX)
        .unwrap_or(q);
    if q == DEAD_LETTERS || QUEUES.iter().any(|spec| spec.name == work) {
        return Ok(vec![shared]);
    }
    let known: Vec<_> = QUEUES
        .iter()
        .map(|q| q.name)
        .chain([DEAD_LETTERS])
        .collect();
    Err(Refusal::Invalid(format!(
        "no queue `{wanted}`; known: {}",
        known.join(", ")
    )))
}

async fn store_size(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM messaging.dead_letters")
        .fetch_one(pool)
        .await
}

/// Moves dead letters from the DLQs (all, or those [`dlqs`] names for `queue`: the
/// shared DLQ whole for any work queue) into the store, until they are empty or the
/// store is full. `progress` is called with each batch's size.
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
    let crash_after_commit = rt
        .config
        .fails(airline_runtime::config::FaultStep::DrainCommit);
    let channel = bounded("opening a channel", rt.broker.create_channel()).await??;
    for (dlq, origin) in dlqs {
        report.drained.push(dlq.clone());
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
            let stored = store_batch(&rt.pool, &rt.names, origin, &batch).await?;
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

/// The queue (logical name) a drained dead letter is recorded under: its origin
/// queue, or [`DEAD_LETTERS`] when it says none (replay refuses those).
fn queue_of(names: &Names, origin: Origin, d: &lapin::message::Delivery) -> &'static str {
    match origin {
        Origin::Queue(q) => q,
        Origin::FromMessage => airline_runtime::topology::origin_of(
            names,
            d.properties.headers().as_ref(),
            d.routing_key.as_str(),
        )
        .map_or(DEAD_LETTERS, |q| q.name),
    }
}

/// Stores a batch in one transaction; returns how many were new.
async fn store_batch(
    pool: &PgPool,
    names: &Names,
    origin: Origin,
    batch: &[lapin::message::Delivery],
) -> anyhow::Result<u64> {
    let mut tx = pool.begin().await?;
    let mut stored = 0;
    for d in batch {
        let queue = queue_of(names, origin, d);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_reads_the_shared_dlq_and_the_booking_dlq() {
        let names = Names::new("t.");
        let all = dlqs(&names, None).expect("every DLQ");
        assert_eq!(
            all,
            [
                ("t.dead-letters".to_owned(), Origin::FromMessage),
                ("t.booking.dlq".to_owned(), Origin::Queue("booking.dlq")),
            ]
        );
        // One work queue's dead letters are in the shared DLQ: it is drained whole.
        for queue in [
            "payment.collect",
            "t.payment.collect",
            "payment.collect.dlq",
            "dead-letters",
            "t.dead-letters",
        ] {
            assert_eq!(
                dlqs(&names, Some(queue)).expect("a queue"),
                [("t.dead-letters".to_owned(), Origin::FromMessage)],
                "{queue}"
            );
        }
        assert_eq!(
            dlqs(&names, Some("booking.dlq")).expect("the booking DLQ"),
            [("t.booking.dlq".to_owned(), Origin::Queue("booking.dlq"))]
        );
        let err = dlqs(&names, Some("nope")).expect_err("unknown").to_string();
        assert!(err.contains("no queue `nope`"), "{err}");
    }
}
