//! Several ready deliveries of one queue in one transaction.
//!
//! The consumer takes, besides the delivery that woke it, whatever deliveries the
//! channel has already received (never waiting for more, so a lone delivery is
//! handled at once and latency at low load does not grow), up to
//! `AIRLINE_DELIVERY_BATCH`. They are processed in one transaction, each under a
//! savepoint: a message whose handler fails is rolled back to its savepoint and
//! settled on its own (retried or dead-lettered), the others commit together. One
//! `BEGIN` and one `COMMIT` (one WAL flush) serve the batch, and what the batch
//! sends is published in one go with pipelined confirms before any of it is acked.
//!
//! The batch is handled in the order of each message's lock key (the row its
//! handler locks first), so that two batches never wait on each other's rows in
//! opposite orders. If the database fails underneath (an unavailable error, a
//! deadlock, the commit), nothing of the batch is known to be committed and every
//! delivery goes the one-at-a-time way, which holds it until the database answers
//! and, after a commit that did happen, finds it a duplicate in the inbox.

use lapin::message::Delivery;
use sqlx::{Executor as _, PgPool};
use tracing::Instrument as _;

use super::{
    Handler, HandlerError, Incoming, Outcome, QueueWorker, Settlement, decide, is_unavailable,
    process_in,
};

/// Processes `msgs` in one transaction, a savepoint each, and commits. Returns each
/// message's result, in order.
///
/// # Errors
/// When the database fails (begin, a savepoint, an unavailable error in a handler,
/// the commit): nothing is known to be committed.
pub async fn process_batch(
    pool: &PgPool,
    consumer: &str,
    producer: &str,
    handler: &dyn Handler,
    msgs: &[&Incoming],
) -> Result<Vec<Result<Outcome, HandlerError>>, HandlerError> {
    let mut tx = pool.begin().await?;
    let mut results = Vec::with_capacity(msgs.len());
    for (i, msg) in msgs.iter().enumerate() {
        // One round trip: release the previous message's savepoint, set this one's.
        let savepoint = if i == 0 {
            "SAVEPOINT delivery"
        } else {
            "RELEASE SAVEPOINT delivery; SAVEPOINT delivery"
        };
        // A bare string goes by the simple query protocol: both statements at once.
        (&mut *tx).execute(savepoint).await?;
        match process_in(&mut tx, consumer, producer, handler, msg).await {
            Ok(outcome) => results.push(Ok(outcome)),
            Err(e) if is_unavailable(&e) => return Err(e),
            Err(e) => {
                (&mut *tx).execute("ROLLBACK TO SAVEPOINT delivery").await?;
                results.push(Err(e));
            }
        }
    }
    tx.commit().await?;
    Ok(results)
}

impl QueueWorker {
    /// Handles deliveries taken together: the undecodable ones each on its own,
    /// the rest in one transaction (or one by one if there is only one, or the
    /// batch's transaction fails).
    pub(super) async fn on_batch(&self, deliveries: Vec<Delivery>) {
        let mut decoded = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            match super::decode(self.queue, &delivery) {
                Ok(incoming) => decoded.push((delivery, incoming)),
                Err(failure) => self.on_undecodable(&delivery, failure).await,
            }
        }
        if decoded.len() <= 1 {
            for (delivery, incoming) in decoded {
                self.on_decoded(&delivery, incoming).await;
            }
            return;
        }
        decoded.sort_by_cached_key(|(_, incoming)| self.handler.lock_key(incoming));
        let started = std::time::Instant::now();
        let results = {
            let msgs: Vec<&Incoming> = decoded.iter().map(|(_, incoming)| incoming).collect();
            process_batch(
                &self.ctx.pool,
                &self.consumer_key,
                self.ctx.service,
                self.handler.as_ref(),
                &msgs,
            )
            .await
        };
        let results = match results {
            Ok(results) => results,
            Err(e) => {
                tracing::warn!(
                    queue = %self.queue_name,
                    deliveries = decoded.len(),
                    error = format!("{e:#}"),
                    "the batch's transaction failed; handling its deliveries one by one"
                );
                for (delivery, incoming) in decoded {
                    self.on_decoded(&delivery, incoming).await;
                }
                return;
            }
        };
        let elapsed = started.elapsed().as_secs_f64();
        crate::metrics::METRICS
            .delivery_batch
            .with_label_values(&[self.queue.name])
            .observe(decoded.len() as f64);
        // Everything the committed messages send goes out together, then each is
        // settled (acked, retried or dead-lettered) on its own.
        let mut settlements = Vec::with_capacity(decoded.len());
        let mut publish = Vec::new();
        for (i, result) in results.into_iter().enumerate() {
            let incoming = &decoded[i].1;
            crate::metrics::METRICS
                .handler_seconds
                .with_label_values(&[self.queue.name])
                .observe(elapsed);
            let settlement = decide(
                result,
                incoming.attempt,
                incoming.message.booking_id().to_string(),
                &self.retry,
            );
            settlements.push(match settlement {
                Settlement::Ack { publish: mut p } => {
                    publish.append(&mut p);
                    Settlement::Ack {
                        publish: Vec::new(),
                    }
                }
                other => other,
            });
        }
        self.ctx.dispatcher.dispatch(&publish).await;
        for ((delivery, incoming), settlement) in decoded.into_iter().zip(settlements) {
            let span = self.span(&incoming);
            let outcome = self.settle(&delivery, settlement).instrument(span).await;
            let message_type = incoming.message.message_type().to_string();
            crate::metrics::METRICS.delivery(self.queue.name, &message_type, outcome);
        }
    }
}
