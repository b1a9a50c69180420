//! Replaying: an outbox row and the mark `replayed` in one transaction, then the
//! outbox is published, so a replay is sent once.

use airline_contracts::QUEUES;
use airline_contracts::topology::{DEAD_LETTERS, PARKING};
use airline_runtime::Refusal;
use airline_runtime::broker::Publisher;
use airline_runtime::service::Runtime;
use serde::Serialize;
use sqlx::{QueryBuilder, Row};
use uuid::Uuid;

use crate::OPERATOR;
use crate::filter::{Filter, Selection, matching};

/// Dead letters replayed per transaction.
const REPLAY_BATCH: i64 = 200;

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
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
                let filter = Filter {
                    status: Some("stored".into()),
                    ..filter.clone()
                };
                let mut query = QueryBuilder::new(
                    "SELECT id, queue, status, message_type, message_id, correlation_id,
                            COALESCE(edited_body, body) AS body
                       FROM messaging.dead_letters WHERE ",
                );
                matching(&mut query, &filter);
                query
                    .push(" AND queue <> ")
                    .push_bind(parking_queue())
                    .push(" AND queue <> ")
                    .push_bind(DEAD_LETTERS)
                    .push(" ORDER BY id LIMIT ")
                    .push_bind(REPLAY_BATCH)
                    .push(" FOR UPDATE SKIP LOCKED");
                query.build().fetch_all(&mut *tx).await?
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
            if queue == DEAD_LETTERS {
                return Err(Refusal::Conflict(format!(
                    "dead letter {id} does not say which queue it died in (no x-origin-queue, x-queue or x-death naming a queue of this deployment), so it has nowhere to go back to; publish its body by hand or discard it"
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
    while airline_runtime::outbox::relay_batch(
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
