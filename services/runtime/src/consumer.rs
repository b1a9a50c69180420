//! Consumers: decode, de-duplicate, handle, commit, then ack.
//!
//! For each delivery, in one database transaction: an inbox row (consumer, message
//! id) that makes a second delivery of the same message a no-op, the handler's own
//! writes, and the outbox rows of the messages it sends. The delivery is acked only
//! after that transaction commits. A message that cannot be decoded or handled goes
//! to its queue's dead-letter queue with the reason in `x-error-*` headers, and the
//! consumer goes on. When the database is unreachable the delivery is held unacked and
//! retried until the database answers, never acked unprocessed.

use std::sync::Arc;
use std::time::Duration;

use airline_contracts::topology::DEAD_LETTER_EXCHANGE;
use airline_contracts::{Message, Names, QueueSpec};
use async_trait::async_trait;
use futures_util::StreamExt as _;
use lapin::Connection;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::broker::{Envelope, Publisher};
use crate::outbox::{self, Cause, RelaySignal};

/// The largest body a consumer will try to decode; larger ones are dead-lettered.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// A decoded delivery, as a handler sees it.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The AMQP message id: the de-duplication key.
    pub message_id: String,
    /// The decoded message.
    pub message: Message,
    /// The W3C traceparent header, if any.
    pub traceparent: Option<String>,
}

impl Incoming {
    /// The cause to record on messages sent while handling this one.
    #[must_use]
    pub fn cause(&self) -> Cause {
        Cause {
            message_id: Some(self.message_id.clone()),
            traceparent: self.traceparent.clone(),
        }
    }
}

/// Why a handler did not handle a message.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The message is valid but cannot be acted on (it refers to nothing, or
    /// contradicts the state): retrying would not help. Dead-lettered.
    #[error("{0}")]
    Rejected(String),
    /// Anything else. Dead-lettered, unless it is the database being unreachable,
    /// in which case the delivery is held and retried until the database answers.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<sqlx::Error> for HandlerError {
    fn from(e: sqlx::Error) -> Self {
        Self::Unexpected(e.into())
    }
}

/// A message handler: a function from (transaction, message) to the messages to
/// send. It can be called straight from a test, without a broker.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Handles one message inside `tx`. The messages returned are written to the
    /// outbox in the same transaction.
    ///
    /// # Errors
    /// [`HandlerError`]; the transaction is rolled back.
    async fn handle(
        &self,
        tx: &mut PgConnection,
        msg: &Incoming,
    ) -> Result<Vec<Message>, HandlerError>;
}

/// What became of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Handled and committed, with this many messages sent.
    Handled(usize),
    /// Already handled before (same consumer, same message id): nothing done.
    Duplicate,
}

/// Runs `handler` on `msg` in one transaction with the inbox row and the outbox rows.
///
/// # Errors
/// [`HandlerError`] from the handler or the database; nothing was committed.
pub async fn process(
    pool: &PgPool,
    consumer: &str,
    producer: &str,
    handler: &dyn Handler,
    msg: &Incoming,
) -> Result<Outcome, HandlerError> {
    let mut tx = pool.begin().await?;
    // `xmax = 0` tells an inserted row from an updated one: a duplicate only bumps
    // the counter, so operators (and tests) can see duplicates being absorbed.
    let fresh: bool = sqlx::query_scalar(
        "INSERT INTO messaging.inbox (consumer, message_id) VALUES ($1, $2)
         ON CONFLICT (consumer, message_id) DO UPDATE SET duplicates = messaging.inbox.duplicates + 1
         RETURNING xmax = 0",
    )
    .bind(consumer)
    .bind(&msg.message_id)
    .fetch_one(&mut *tx)
    .await?;
    if !fresh {
        tx.commit().await?;
        return Ok(Outcome::Duplicate);
    }
    let out = handler.handle(&mut tx, msg).await?;
    let cause = msg.cause();
    for m in &out {
        outbox::enqueue(&mut tx, producer, &cause, m).await?;
    }
    tx.commit().await?;
    Ok(Outcome::Handled(out.len()))
}

/// Whether an error means "the database is not reachable right now" rather than
/// "this message is bad": such deliveries are held and retried, never dead-lettered.
#[must_use]
pub fn is_unavailable(error: &HandlerError) -> bool {
    let HandlerError::Unexpected(e) = error else {
        return false;
    };
    e.chain().any(|cause| {
        cause.downcast_ref::<sqlx::Error>().is_some_and(|s| {
            matches!(
                s,
                sqlx::Error::Io(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
            ) || s
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| {
                    c.starts_with("08") || c == "57P01" || c == "40001" || c == "40P01"
                })
        })
    })
}

/// Everything a consumer needs.
#[derive(Clone)]
pub struct ConsumerContext {
    /// The broker connection.
    pub connection: Arc<Connection>,
    /// The database.
    pub pool: PgPool,
    /// Broker names.
    pub names: Names,
    /// The consuming service, which is also the producer of what it sends.
    pub service: &'static str,
    /// Deliveries in flight at once.
    pub prefetch: u16,
    /// Wakes the service's outbox relay.
    pub relay: RelaySignal,
}

impl std::fmt::Debug for ConsumerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerContext")
            .field("service", &self.service)
            .field("prefetch", &self.prefetch)
            .finish_non_exhaustive()
    }
}

/// Consumes `queue` until `shutdown`: stops taking deliveries, finishes and acks
/// those in flight, then closes its channel.
///
/// # Errors
/// When the channel cannot be opened or the connection is lost for good.
pub async fn run_consumer(
    ctx: ConsumerContext,
    queue: &'static QueueSpec,
    handler: Arc<dyn Handler>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let queue_name = ctx.names.resolve(queue.name);
    let channel = ctx.connection.create_channel().await?;
    // Prefetch bounds how many deliveries this consumer handles at once: each is
    // handled in its own task, and each holds one database connection while it runs.
    channel
        .basic_qos(ctx.prefetch, BasicQosOptions::default())
        .await?;
    let dead_letters = Publisher::open(&ctx.connection).await?;
    let mut deliveries = channel
        .basic_consume(
            queue_name.clone().into(),
            format!("{}-{}-{}", ctx.service, std::process::id(), queue.name).into(),
            // Manual acknowledgement: a delivery is acked after its commit.
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(queue = %queue_name, service = ctx.service, "consuming");
    let tracker = TaskTracker::new();
    let worker = Arc::new(QueueWorker {
        consumer_key: format!("{}:{}", ctx.service, queue.name),
        queue_name: queue_name.clone(),
        dead_letters: dead_letters.clone(),
        shutdown: shutdown.clone(),
        ctx,
        queue,
        handler,
    });
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => break,
            next = deliveries.next() => next,
        };
        match next {
            None => break,
            Some(Err(e)) => {
                tracing::warn!(queue = %queue_name, error = %e, "consumer interrupted; waiting for the connection to recover");
                channel.wait_for_recovery(e).await?;
            }
            Some(Ok(delivery)) => {
                let worker = Arc::clone(&worker);
                tracker.spawn(async move { worker.on_delivery(delivery).await });
            }
        }
    }
    tracker.close();
    tracker.wait().await;
    let _ = channel.close(200, "shutting down".into()).await;
    let _ = dead_letters
        .channel()
        .close(200, "shutting down".into())
        .await;
    tracing::info!(queue = %queue_name, "consumer stopped");
    Ok(())
}

/// A delivery that could not be handled, and why.
#[derive(Debug, Clone)]
pub struct Failure {
    /// A short stable code: `invalid-body`, `unknown-type`, `handler-error`, ...
    pub kind: String,
    /// What went wrong, for a person.
    pub text: String,
    /// The booking, where known.
    pub booking_id: Option<String>,
}

impl Failure {
    fn new(kind: &str, text: impl Into<String>) -> Self {
        Self {
            kind: kind.to_owned(),
            text: text.into(),
            booking_id: None,
        }
    }
}

fn decode(queue: &QueueSpec, delivery: &Delivery) -> Result<Incoming, Failure> {
    let props = &delivery.properties;
    if delivery.data.len() > MAX_BODY_BYTES {
        return Err(Failure::new(
            "body-too-large",
            format!(
                "body of {} bytes exceeds the limit of {MAX_BODY_BYTES}",
                delivery.data.len()
            ),
        ));
    }
    if let Some(ct) = props.content_type()
        && ct.as_str() != "application/json"
    {
        return Err(Failure::new(
            "wrong-content-type",
            format!("content type `{}` is not application/json", ct.as_str()),
        ));
    }
    let message_id = props
        .message_id()
        .as_ref()
        .map(|m| m.as_str().to_owned())
        .filter(|m| !m.is_empty())
        .ok_or_else(|| {
            Failure::new(
                "missing-message-id",
                "the AMQP message_id property is missing",
            )
        })?;
    let message_type = props.kind().as_ref().map(|k| k.as_str().to_owned());
    let message = Message::decode(message_type.as_deref(), &delivery.data)
        .map_err(|e| Failure::new(e.code(), e.to_string()))?;
    let name = message.message_type().name;
    if !queue.messages.contains(&name) {
        let mut f = Failure::new(
            "unexpected-type",
            format!("`{name}` does not belong on queue `{}`", queue.name),
        );
        f.booking_id = Some(message.booking_id().to_string());
        return Err(f);
    }
    let traceparent = props
        .headers()
        .as_ref()
        .and_then(|h| match h.inner().get("traceparent") {
            Some(AMQPValue::LongString(s)) => {
                Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
            }
            Some(AMQPValue::ShortString(s)) => Some(s.as_str().to_owned()),
            _ => None,
        });
    Ok(Incoming {
        message_id,
        message,
        traceparent,
    })
}

/// What each delivery of one queue is handled with.
struct QueueWorker {
    ctx: ConsumerContext,
    queue: &'static QueueSpec,
    queue_name: String,
    consumer_key: String,
    handler: Arc<dyn Handler>,
    dead_letters: Publisher,
    shutdown: CancellationToken,
}

impl QueueWorker {
    async fn on_delivery(&self, delivery: Delivery) {
        let Self {
            ctx,
            queue,
            queue_name,
            consumer_key,
            handler,
            dead_letters,
            shutdown,
        } = self;
        let handler = handler.as_ref();
        let incoming = match decode(queue, &delivery) {
            Ok(incoming) => incoming,
            Err(failure) => {
                tracing::warn!(queue = %queue_name, kind = %failure.kind, error = %failure.text, "dead-lettering an undecodable message");
                dead_letter(ctx, queue_name, dead_letters, &delivery, &failure).await;
                return;
            }
        };
        let span = tracing::info_span!(
            "handle",
            messaging.system = "rabbitmq",
            messaging.destination.name = %queue_name,
            messaging.message.id = %incoming.message_id,
            message_type = %incoming.message.message_type(),
            booking_id = %incoming.message.booking_id(),
        );
        async {
        let mut waited = Duration::ZERO;
        let result = loop {
            let result = process(&ctx.pool, consumer_key, ctx.service, handler, &incoming).await;
            match &result {
                // Hold the delivery (unacked) and try again until the database is
                // back: requeueing would count against the queue's delivery limit.
                Err(e) if is_unavailable(e) && !shutdown.is_cancelled() => {
                    let pause = Duration::from_millis(250).max(waited / 2).min(Duration::from_secs(5));
                    tracing::warn!(error = format!("{e:#}"), retry_in_ms = pause.as_millis(), "database unavailable; holding the delivery");
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {},
                        () = shutdown.cancelled() => {},
                    }
                    waited += pause;
                }
                _ => break result,
            }
        };
        match result {
            Ok(outcome) => {
                if matches!(outcome, Outcome::Handled(n) if n > 0) {
                    ctx.relay.notify_one();
                }
                if outcome == Outcome::Duplicate {
                    tracing::info!("duplicate delivery ignored");
                }
                ack(&delivery).await;
            }
            Err(e) if is_unavailable(&e) => {
                // Shutting down while the database is away: give the delivery back.
                let _ = delivery
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await;
            }
            Err(e) => {
                let kind = match e {
                    HandlerError::Rejected(_) => "rejected",
                    HandlerError::Unexpected(_) => "handler-error",
                };
                let mut failure = Failure::new(kind, format!("{e:#}"));
                failure.booking_id = Some(incoming.message.booking_id().to_string());
                tracing::warn!(kind, error = %failure.text, "dead-lettering a message its handler refused");
                dead_letter(ctx, queue_name, dead_letters, &delivery, &failure).await;
            }
        }
    }
    .instrument(span)
    .await;
    }
}

async fn ack(delivery: &Delivery) {
    if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
        // The channel died after the commit: the broker will redeliver, and the
        // inbox will recognise the message as a duplicate.
        tracing::warn!(error = %e, "ack failed after commit; the redelivery will be de-duplicated");
    }
}

fn text_value(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.to_owned()))
}

/// Publishes a copy of the delivery, body untouched, to the queue's dead-letter
/// queue with the reason in its headers, then acks the original. If the copy cannot
/// be published, the original is rejected so that the broker dead-letters it itself
/// (without the reason, but not lost).
async fn dead_letter(
    ctx: &ConsumerContext,
    queue_name: &str,
    publisher: &Publisher,
    delivery: &Delivery,
    failure: &Failure,
) {
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    // Serde repeats offending values in its messages: keep the header bounded.
    let text: String = failure.text.chars().take(2000).collect();
    for (k, v) in [
        ("x-error-kind", failure.kind.as_str()),
        ("x-error", text.as_str()),
        ("x-first-failure-at", now.as_str()),
        ("x-last-failure-at", now.as_str()),
        ("x-original-exchange", delivery.exchange.as_str()),
        ("x-original-routing-key", delivery.routing_key.as_str()),
        ("x-queue", queue_name),
        ("x-service", ctx.service),
    ] {
        headers.insert(k.into(), text_value(v));
    }
    headers.insert("x-attempts".into(), AMQPValue::LongLongInt(1));
    if let Some(b) = &failure.booking_id {
        headers.insert("x-booking-id".into(), text_value(b));
    }
    let envelope = Envelope {
        exchange: ctx.names.resolve(DEAD_LETTER_EXCHANGE),
        routing_key: queue_name.to_owned(),
        properties: delivery.properties.clone().with_headers(headers),
        body: delivery.data.clone(),
    };
    match publisher.publish_all(std::slice::from_ref(&envelope)).await {
        Ok(()) => ack(delivery).await,
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "could not publish the dead letter; rejecting so the broker dead-letters it"
            );
            let _ = delivery
                .acker
                .nack(BasicNackOptions {
                    requeue: false,
                    ..BasicNackOptions::default()
                })
                .await;
        }
    }
}
