//! Consumers: decode, de-duplicate, handle, commit, then ack.
//!
//! For each delivery, in one database transaction: an inbox row (consumer, message
//! id) that makes a second delivery of the same message a no-op, the handler's own
//! writes, and the outbox rows of the messages it sends. The delivery is acked only
//! after that transaction commits. A message that cannot be decoded or handled goes
//! to the deployment's dead-letter queue with the reason in `x-error-*` headers and
//! its queue in `x-origin-queue`, and the consumer goes on. When the database is
//! unreachable the delivery is held unacked and retried until the database answers,
//! never acked unprocessed.

use std::sync::Arc;
use std::time::Duration;

use airline_contracts::topology::{DEAD_LETTER_EXCHANGE, ORIGIN_QUEUE_HEADER, RETRY_EXCHANGE};
use airline_contracts::{Message, Names, QueueSpec};
use anyhow::Context as _;
use async_trait::async_trait;
use futures_util::{FutureExt as _, StreamExt as _};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::broker::{Envelope, Publisher};
use crate::outbox::{self, Cause, Dispatcher, Pending};
use crate::retry::{self, RetryPolicy};

mod batch;
mod decision;
pub use batch::process_batch;
pub use decision::{Failure, Settlement, decide, decide_undecodable};

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
    /// Which delivery attempt this is: 1, then one more after each failure.
    pub attempt: u32,
    /// The `x-request-id` header: the HTTP request the flow began with.
    pub request_id: Option<String>,
}

impl Incoming {
    /// The cause to record on messages sent while handling this one.
    #[must_use]
    pub fn cause(&self) -> Cause {
        Cause {
            message_id: Some(self.message_id.clone()),
            traceparent: self.traceparent.clone(),
            request_id: self.request_id.clone(),
        }
    }
}

/// Why a handler did not handle a message: permanent (dead-lettered at once) or
/// transient (retried after a delay on the broker, then dead-lettered).
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Permanent: the message is valid but cannot be acted on (it refers to
    /// nothing, or contradicts the state); retrying would not help.
    #[error("{0}")]
    Rejected(String),
    /// Transient: a dependency failed in a way that may pass (a provider error
    /// marked retryable, a timeout).
    #[error("{0:#}")]
    Transient(anyhow::Error),
    /// Anything else, retried like a transient error. When it is the database being
    /// unreachable, the delivery is held and retried until the database answers.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl HandlerError {
    /// The `x-error-kind` of this error.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Rejected(_) => "rejected",
            Self::Transient(_) => "transient",
            Self::Unexpected(_) => "unexpected",
        }
    }

    /// Whether retrying may help.
    #[must_use]
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Rejected(_))
    }
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

    /// Whether several ready deliveries may share one transaction (see
    /// [`batch`](mod@batch)). A handler that waits on another system (a payment
    /// provider, a webhook receiver) says no: each of its deliveries runs on its own.
    fn batches(&self) -> bool {
        true
    }

    /// The key of the row this handler locks first for `msg`: a batch is handled in
    /// this order, so that two batches never lock the same rows in opposite orders.
    fn lock_key(&self, msg: &Incoming) -> String {
        msg.message.booking_id().to_string()
    }
}

/// What became of a delivery.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Handled and committed; these outbox rows are to be published.
    Handled(Vec<Pending>),
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
    let outcome = process_in(&mut tx, consumer, producer, handler, msg).await?;
    tx.commit().await?;
    Ok(outcome)
}

/// The inbox row, the handler and the outbox rows of `msg`, inside the caller's
/// transaction (which the caller commits, a duplicate's too: it bumped a counter).
///
/// # Errors
/// [`HandlerError`] from the handler or the database; the caller must roll back
/// (to a savepoint, in a batch).
pub async fn process_in(
    tx: &mut PgConnection,
    consumer: &str,
    producer: &str,
    handler: &dyn Handler,
    msg: &Incoming,
) -> Result<Outcome, HandlerError> {
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
        return Ok(Outcome::Duplicate);
    }
    let out = handler.handle(tx, msg).await?;
    let cause = msg.cause();
    let mut pending = Vec::with_capacity(out.len());
    for m in &out {
        pending.push(outbox::enqueue(tx, producer, &cause, m).await?);
    }
    Ok(Outcome::Handled(pending))
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
    pub broker: crate::broker::Broker,
    /// The database.
    pub pool: PgPool,
    /// Broker names.
    pub names: Names,
    /// The consuming service, which is also the producer of what it sends.
    pub service: &'static str,
    /// Deliveries in flight at once.
    pub prefetch: u16,
    /// The configuration, for retry policies.
    pub config: crate::Config,
    /// Publishes what a handler's commit wrote to the outbox.
    pub dispatcher: Dispatcher,
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
    let dead_letters = Publisher::open(&ctx.broker).await?;
    let tracker = TaskTracker::new();
    let batch = if handler.batches() {
        usize::from(ctx.config.broker.delivery_batch.min(ctx.prefetch).max(1))
    } else {
        1
    };
    let worker = Arc::new(QueueWorker {
        batch,
        retry: ctx.config.retry_for(queue.name),
        consumer_key: format!("{}:{}", ctx.service, queue.name),
        queue_name: queue_name.clone(),
        dead_letters: dead_letters.clone(),
        shutdown: shutdown.clone(),
        ctx: ctx.clone(),
        queue,
        handler,
    });
    let mut channel = None;
    let mut started = false;
    while !shutdown.is_cancelled() {
        let (current, mut deliveries) = match subscribe(&ctx, &queue_name, queue).await {
            Ok(subscribed) => subscribed,
            // At start a consumer that cannot subscribe is a configuration error.
            Err(e) if !started => return Err(e),
            Err(e) => {
                tracing::warn!(queue = %queue_name, error = format!("{e:#}"), "cannot subscribe; will try again");
                pause(&shutdown, Duration::from_secs(1)).await;
                continue;
            }
        };
        started = true;
        let generation = ctx.broker.generation();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut down_since: Option<tokio::time::Instant> = None;
        // A stream event met while filling a batch, handled next.
        let mut carried = None;
        loop {
            let next = if let Some(next) = carried.take() {
                next
            } else {
                tokio::select! {
                () = shutdown.cancelled() => break,
                next = deliveries.next() => next,
                _ = tick.tick() => {
                    // A consumer whose channel is down says nothing: look.
                    if ctx.broker.generation() != generation {
                        tracing::warn!(queue = %queue_name, "the broker connection was replaced; subscribing again");
                        break;
                    }
                    if current.status().connected() {
                        down_since = None;
                    } else if down_since.get_or_insert_with(tokio::time::Instant::now).elapsed()
                        > Duration::from_secs(15)
                    {
                        tracing::warn!(queue = %queue_name, "the consumer's channel has been down for 15 s; subscribing again");
                        break;
                    }
                    continue;
                }
                }
            };
            match next {
                Some(Ok(delivery)) => {
                    // Whatever else the channel has already received joins it, up
                    // to the batch size; nothing waits for more.
                    let mut batch = vec![delivery];
                    while batch.len() < worker.batch {
                        match deliveries.next().now_or_never() {
                            Some(Some(Ok(more))) => batch.push(more),
                            Some(other) => {
                                carried = Some(other);
                                break;
                            }
                            None => break,
                        }
                    }
                    let worker = Arc::clone(&worker);
                    if batch.len() == 1 {
                        let delivery = batch.pop().expect("one delivery");
                        tracker.spawn(async move { worker.on_delivery(delivery).await });
                    } else {
                        tracker.spawn(async move { worker.on_batch(batch).await });
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(queue = %queue_name, error = %e, "consumer interrupted; waiting for the connection to recover");
                    // The client recovers the connection, channel and consumer by
                    // itself; if that does not happen in time, subscribe afresh.
                    match tokio::time::timeout(
                        Duration::from_secs(15),
                        current.wait_for_recovery(e),
                    )
                    .await
                    {
                        Ok(Ok(())) => {}
                        _ => break,
                    }
                }
                None => {
                    tracing::warn!(queue = %queue_name, "the broker cancelled the consumer; subscribing again");
                    break;
                }
            }
        }
        if shutdown.is_cancelled() {
            channel = Some(current);
            break;
        }
        // Closing fails while the channel is reconnecting; close it when it is back.
        crate::broker::bury_channel(current, deliveries);
        pause(&shutdown, Duration::from_secs(1)).await;
    }
    // In-flight deliveries are finished and acked before the channel closes.
    tracker.close();
    tracker.wait().await;
    if let Some(channel) = channel {
        let _ = channel.close(200, "shutting down".into()).await;
    }
    let _ = dead_letters
        .channel()
        .close(200, "shutting down".into())
        .await;
    tracing::info!(queue = %queue_name, "consumer stopped");
    Ok(())
}

async fn pause(shutdown: &CancellationToken, how_long: Duration) {
    tokio::select! {
        () = tokio::time::sleep(how_long) => {},
        () = shutdown.cancelled() => {},
    }
}

/// Opens a channel with the consumer's prefetch and subscribes to `queue`.
async fn subscribe(
    ctx: &ConsumerContext,
    queue_name: &str,
    queue: &QueueSpec,
) -> anyhow::Result<(lapin::Channel, lapin::Consumer)> {
    use crate::broker::bounded;
    let channel = bounded("opening a channel", ctx.broker.create_channel()).await??;
    // Prefetch bounds how many deliveries this consumer handles at once: each is
    // handled in its own task, and each holds one database connection while it runs.
    bounded(
        "setting the prefetch",
        channel.basic_qos(ctx.prefetch, BasicQosOptions::default()),
    )
    .await??;
    let deliveries = bounded(
        "subscribing",
        channel.basic_consume(
            queue_name.into(),
            format!("{}-{}-{}", ctx.service, std::process::id(), queue.name).into(),
            // Manual acknowledgement: a delivery is acked after its commit.
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .and_then(|r| r.map_err(anyhow::Error::from))
    .with_context(|| format!("subscribing to {queue_name}"))?;
    tracing::info!(queue = %queue_name, service = ctx.service, "consuming");
    Ok((channel, deliveries))
}

fn header_text(headers: Option<&FieldTable>, key: &str) -> Option<String> {
    match headers?.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn header_int(headers: Option<&FieldTable>, key: &str) -> Option<i64> {
    match headers?.inner().get(key)? {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        _ => None,
    }
}

/// Failures recorded on a delivery by earlier attempts (`x-attempts`).
fn previous_failures(delivery: &Delivery) -> u32 {
    header_int(delivery.properties.headers().as_ref(), "x-attempts")
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0)
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
    Ok(Incoming {
        message_id,
        message,
        traceparent: header_text(props.headers().as_ref(), "traceparent"),
        attempt: previous_failures(delivery) + 1,
        request_id: header_text(props.headers().as_ref(), outbox::REQUEST_ID_HEADER)
            .filter(|r| r.len() <= 128),
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
    retry: RetryPolicy,
    /// The most deliveries handled in one transaction (1: each on its own).
    batch: usize,
}

impl QueueWorker {
    async fn on_delivery(&self, delivery: Delivery) {
        match decode(self.queue, &delivery) {
            Ok(incoming) => self.on_decoded(&delivery, incoming).await,
            Err(failure) => self.on_undecodable(&delivery, failure).await,
        }
    }

    async fn on_undecodable(&self, delivery: &Delivery, failure: Failure) {
        let kind = failure.kind.clone();
        match decide_undecodable(failure, self.queue.watches_dead_letters) {
            Settlement::DeadLetter(failure) => {
                crate::metrics::METRICS.delivery(self.queue.name, "unknown", "undecodable");
                tracing::warn!(
                    queue = %self.queue_name,
                    kind = %failure.kind,
                    error = %failure.text,
                    "dead-lettering an undecodable message"
                );
                self.dead_letter(delivery, &failure).await;
            }
            _ => {
                // A copy of a dead letter that is no valid step of a saga: the
                // original is in its own DLQ with the reason; nothing to hold.
                crate::metrics::METRICS.delivery(self.queue.name, "unknown", "ignored");
                tracing::info!(
                    queue = %self.queue_name,
                    kind = %kind,
                    "a dead-lettered copy that is no saga step; ignored"
                );
                ack(delivery).await;
            }
        }
    }

    fn span(&self, incoming: &Incoming) -> tracing::Span {
        tracing::info_span!(
            "handle",
            messaging.system = "rabbitmq",
            messaging.destination.name = %self.queue_name,
            messaging.message.id = %incoming.message_id,
            message_type = %incoming.message.message_type(),
            booking_id = %incoming.message.booking_id(),
            request_id = incoming.request_id.as_deref().unwrap_or("-"),
            attempt = incoming.attempt,
        )
    }

    async fn on_decoded(&self, delivery: &Delivery, incoming: Incoming) {
        async {
            let started = std::time::Instant::now();
            let result = self.process_patiently(&incoming).await;
            crate::metrics::METRICS
                .handler_seconds
                .with_label_values(&[self.queue.name])
                .observe(started.elapsed().as_secs_f64());
            let settlement = decide(
                result,
                incoming.attempt,
                incoming.message.booking_id().to_string(),
                &self.retry,
            );
            let outcome = self.settle(delivery, settlement).await;
            let message_type = incoming.message.message_type().to_string();
            crate::metrics::METRICS.delivery(self.queue.name, &message_type, outcome);
        }
        .instrument(self.span(&incoming))
        .await;
    }

    /// Processes the message; while the database is unreachable, holds the
    /// delivery (unacked) and tries again, since requeueing would count against the
    /// queue's delivery limit.
    async fn process_patiently(&self, incoming: &Incoming) -> Result<Outcome, HandlerError> {
        let mut waited = Duration::ZERO;
        loop {
            let result = process(
                &self.ctx.pool,
                &self.consumer_key,
                self.ctx.service,
                self.handler.as_ref(),
                incoming,
            )
            .await;
            match &result {
                Err(e) if is_unavailable(e) && !self.shutdown.is_cancelled() => {
                    let pause =
                        (waited / 2).clamp(Duration::from_millis(250), Duration::from_secs(5));
                    tracing::warn!(
                        error = format!("{e:#}"),
                        retry_in_ms = pause.as_millis(),
                        "database unavailable; holding the delivery"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {},
                        () = self.shutdown.cancelled() => {},
                    }
                    waited += pause;
                }
                _ => return result,
            }
        }
    }

    /// Acks, retries later or dead-letters the delivery as [`decide`] said;
    /// returns what became of it, for the metrics.
    async fn settle(&self, delivery: &Delivery, settlement: Settlement) -> &'static str {
        let label = settlement.label();
        match settlement {
            Settlement::Ack { publish } => {
                // Publish before acking: a consumer that outpaces the broker slows
                // down instead of piling up unpublished rows.
                self.ctx.dispatcher.dispatch(&publish).await;
                ack(delivery).await;
            }
            Settlement::AckDuplicate => {
                tracing::info!("duplicate delivery ignored");
                ack(delivery).await;
            }
            Settlement::Ignore => ack(delivery).await,
            Settlement::GiveBack => {
                // Shutting down while the database is away: give the delivery back.
                let _ = delivery
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await;
            }
            Settlement::Retry { delay, failure } => {
                tracing::warn!(
                    kind = %failure.kind,
                    delay_ms = delay.as_millis(),
                    error = %failure.text,
                    "handler failed; retrying later"
                );
                self.schedule_retry(delivery, &failure, delay).await;
            }
            Settlement::DeadLetter(failure) => {
                tracing::warn!(kind = %failure.kind, error = %failure.text, "dead-lettering");
                self.dead_letter(delivery, &failure).await;
            }
        }
        label
    }

    /// Parks the delivery in the deployment's delay tier for `delay` (with jitter),
    /// then acks it: published to the retry exchange with the tier in a header and
    /// this queue as routing key, under which the tier sends it back on expiry. If
    /// it cannot be parked, it goes back to the queue.
    async fn schedule_retry(&self, delivery: &Delivery, failure: &Failure, delay: Duration) {
        let wait = retry::jittered(delay, fastrand::f64());
        let mut headers = self.failure_headers(delivery, failure);
        let (tier, value) = crate::topology::tier_header(delay);
        headers.insert(tier.into(), value);
        let envelope = Envelope {
            exchange: self.ctx.names.resolve(RETRY_EXCHANGE),
            routing_key: self.queue_name.clone(),
            properties: delivery
                .properties
                .clone()
                .with_headers(headers)
                .with_expiration(wait.as_millis().to_string().into()),
            body: delivery.data.clone(),
        };
        self.publish_then_ack(delivery, &envelope, true).await;
    }

    /// Publishes a copy of the delivery, body untouched, through the dead-letter
    /// exchange (to the shared dead-letter queue) with the reason and this queue's
    /// name in its headers, then acks the original. If the copy
    /// cannot be published, the original is rejected so that the broker
    /// dead-letters it itself (without the reason, but not lost).
    async fn dead_letter(&self, delivery: &Delivery, failure: &Failure) {
        let envelope = Envelope {
            exchange: self.ctx.names.resolve(DEAD_LETTER_EXCHANGE),
            routing_key: self.queue_name.clone(),
            properties: delivery
                .properties
                .clone()
                .with_headers(self.failure_headers(delivery, failure)),
            body: delivery.data.clone(),
        };
        self.publish_then_ack(delivery, &envelope, false).await;
    }

    async fn publish_then_ack(
        &self,
        delivery: &Delivery,
        envelope: &Envelope,
        requeue_on_failure: bool,
    ) {
        match self
            .dead_letters
            .publish_all(std::slice::from_ref(envelope))
            .await
        {
            Ok(()) => ack(delivery).await,
            Err(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    to = %envelope.routing_key,
                    requeue = requeue_on_failure,
                    "could not move the delivery; handing it back to the broker"
                );
                if requeue_on_failure {
                    // Not at once: the handler would run again in a tight loop.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                let _ = delivery
                    .acker
                    .nack(BasicNackOptions {
                        requeue: requeue_on_failure,
                        ..BasicNackOptions::default()
                    })
                    .await;
            }
        }
    }

    /// The delivery's headers with this failure recorded: `x-attempts` one more,
    /// `x-first-failure-at` kept from the first failure, the original exchange and
    /// routing key kept from the first delivery (a retried message comes back
    /// through the default exchange), the queue it failed in (`x-queue`, and
    /// `x-origin-queue` by logical name: the shared DLQ is told apart by it), the
    /// broker's `x-death` untouched.
    fn failure_headers(&self, delivery: &Delivery, failure: &Failure) -> FieldTable {
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let existing = delivery.properties.headers().clone().unwrap_or_default();
        let kept = |key: &str, first: String| header_text(Some(&existing), key).unwrap_or(first);
        let first = kept("x-first-failure-at", now.clone());
        let exchange = kept("x-original-exchange", delivery.exchange.to_string());
        let routing_key = kept("x-original-routing-key", delivery.routing_key.to_string());
        let mut headers = existing.clone();
        // Serde repeats offending values in its messages: keep the header bounded.
        let text: String = failure.text.chars().take(2000).collect();
        for (k, v) in [
            ("x-error-kind", failure.kind.as_str()),
            ("x-error", text.as_str()),
            ("x-first-failure-at", first.as_str()),
            ("x-last-failure-at", now.as_str()),
            ("x-original-exchange", exchange.as_str()),
            ("x-original-routing-key", routing_key.as_str()),
            ("x-queue", self.queue_name.as_str()),
            (ORIGIN_QUEUE_HEADER, self.queue.name),
            ("x-service", self.ctx.service),
        ] {
            headers.insert(k.into(), text_value(v));
        }
        headers.insert(
            "x-attempts".into(),
            AMQPValue::LongLongInt(i64::from(previous_failures(delivery) + 1)),
        );
        if let Some(b) = &failure.booking_id {
            headers.insert("x-booking-id".into(), text_value(b));
        }
        if let Some(k) = failure.last_kind {
            headers.insert("x-last-error-kind".into(), text_value(k));
        }
        headers
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
