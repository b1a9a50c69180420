//! RabbitMQ: the connection (automatic recovery on), the topology, and publishing
//! with confirms.

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use airline_contracts::topology::exchange_of;
use airline_contracts::{Message, Names};
use anyhow::Context as _;
use backon::{ExponentialBuilder, Retryable};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use crate::config::redact_url;

/// How many times the broker redelivers a message whose consumer died before the
/// message is dead-lettered by the broker itself (a message that crashes its
/// consumer must not loop for ever).
pub const DELIVERY_LIMIT: i64 = 20;

/// Connects with automatic connection and topology recovery, retrying for a few
/// seconds while the broker is starting.
///
/// # Errors
/// One line naming the URL (password hidden) and what went wrong.
pub async fn connect(url: &str, connection_name: &str) -> anyhow::Result<Connection> {
    let shown = redact_url(url);
    let retry = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(2))
        .with_max_times(6);
    // Probe the socket first: the client's own reconnect loop (meant for outages
    // after start) would otherwise keep a misconfigured start waiting for minutes.
    let address = socket_address(url);
    (|| async { tokio::net::TcpStream::connect(&address).await.map(drop) })
        .retry(retry)
        .await
        .with_context(|| format!("cannot reach RabbitMQ at {shown}"))?;
    // Reconnect after an outage within two seconds of the broker's return, however
    // long it lasted: the client's default gives up after 16 ever longer waits.
    let props = ConnectionProperties::default()
        .with_connection_name(connection_name.into())
        .enable_auto_recover()
        .configure_backoff(|b| {
            b.with_min_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_secs(2))
                .with_jitter()
                .without_max_times()
        });
    tokio::time::timeout(Duration::from_secs(15), Connection::connect(url, props))
        .await
        .map_err(|_| anyhow::anyhow!("timed out"))
        .and_then(|r| r.map_err(anyhow::Error::from))
        .with_context(|| format!("cannot connect to RabbitMQ at {shown}"))
}

/// `host:port` of an AMQP URL (default ports 5672, and 5671 for amqps).
fn socket_address(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("amqp", url));
    let authority = rest.split('/').next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let has_port = host_port
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok());
    if has_port {
        host_port.to_owned()
    } else {
        let port = if scheme == "amqps" { 5671 } else { 5672 };
        format!(
            "{}:{port}",
            if host_port.is_empty() {
                "localhost"
            } else {
                host_port
            }
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn socket_addresses_of_urls() {
        use super::socket_address;
        assert_eq!(
            socket_address("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "127.0.0.1:5672"
        );
        assert_eq!(socket_address("amqp://rabbit/%2f"), "rabbit:5672");
        assert_eq!(socket_address("amqps://u:p@rabbit"), "rabbit:5671");
    }
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.to_owned()))
}

pub use crate::topology::{declare_topology, declared_exchanges, declared_queues};

/// One message ready to go on the wire.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The broker exchange name (prefixed).
    pub exchange: String,
    /// The routing key.
    pub routing_key: String,
    /// AMQP properties.
    pub properties: BasicProperties,
    /// The body.
    pub body: Vec<u8>,
}

/// Builds the AMQP properties every message of this system carries.
#[must_use]
pub fn properties(
    message_id: &str,
    message_type: &str,
    correlation_id: Option<&str>,
    producer: &str,
    causation_id: Option<&str>,
    traceparent: Option<&str>,
) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(c) = causation_id {
        headers.insert("x-causation-id".into(), text(c));
    }
    if let Some(t) = traceparent {
        headers.insert("traceparent".into(), text(t));
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut props = BasicProperties::default()
        .with_message_id(message_id.into())
        .with_type(message_type.into())
        .with_app_id(producer.into())
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_timestamp(u64::try_from(now).unwrap_or_default())
        .with_headers(headers);
    if let Some(c) = correlation_id {
        props = props.with_correlation_id(c.into());
    }
    props
}

/// `props` with one more text header.
#[must_use]
pub fn with_header(props: BasicProperties, name: &str, value: &str) -> BasicProperties {
    let mut headers = props.headers().clone().unwrap_or_default();
    headers.insert(name.into(), text(value));
    props.with_headers(headers)
}

/// An envelope for a message published now, outside any outbox (tests, tools,
/// upstream-style publishers).
#[must_use]
pub fn envelope_for(
    names: &Names,
    message: &Message,
    message_id: &str,
    producer: &str,
) -> Envelope {
    let t = message.message_type();
    let booking = message.booking_id().to_string();
    Envelope {
        exchange: names.resolve(exchange_of(t.kind)),
        routing_key: t.name.to_owned(),
        properties: properties(
            message_id,
            &t.to_string(),
            Some(&booking),
            producer,
            None,
            None,
        ),
        body: message.encode(),
    }
}

/// The process's broker connection. The client recovers a broken connection by
/// itself; if it has not within [`RECOVERY_PATIENCE`], the watchdog replaces it with a
/// new one, and consumers and publishers move to it as they reopen their channels.
#[derive(Clone)]
pub struct Broker {
    current: Arc<RwLock<Arc<Connection>>>,
    /// How many times the watchdog replaced the connection.
    generation: Arc<std::sync::atomic::AtomicU64>,
    url: Arc<str>,
    name: Arc<str>,
}

/// Closes an abandoned channel once the client's recovery brings it back (closing
/// fails while it is reconnecting), so that it does not come back as a hidden
/// consumer or publisher. `keep` (its consumer) lives until then. Waits as long
/// as the channel is recovering; stops once it is closed or errored.
pub fn bury_channel<T: Send + 'static>(channel: Channel, keep: T) {
    tokio::spawn(async move {
        // No time limit: a channel dropped while the client still recovers it would
        // come back with its consumer, holding messages nobody reads.
        loop {
            if channel.status().connected() {
                let _ = channel.close(200, "abandoned".into()).await;
                break;
            }
            if !channel.status().reconnecting() && !channel.status().initializing() {
                // Closed or errored for good: nothing to close.
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        drop(keep);
    });
}

fn bury_connection(connection: Arc<Connection>) {
    tokio::spawn(async move {
        loop {
            if connection.status().connected() {
                let _ = connection.close(200, "replaced".into()).await;
                return;
            }
            if connection.status().closed() || connection.status().errored() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}

/// How long a connection may stay down, once the broker answers again, before the
/// watchdog replaces it.
pub const RECOVERY_PATIENCE: Duration = Duration::from_secs(6);

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("connected", &self.connected())
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// Connects (see [`connect`]).
    ///
    /// # Errors
    /// One line naming the URL and what went wrong.
    pub async fn connect(url: &str, name: &str) -> anyhow::Result<Self> {
        Ok(Self {
            current: Arc::new(RwLock::new(Arc::new(connect(url, name).await?))),
            generation: Arc::default(),
            url: url.into(),
            name: name.into(),
        })
    }

    /// The connection in use.
    #[must_use]
    pub fn connection(&self) -> Arc<Connection> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Changes each time the watchdog replaces the connection: a consumer
    /// subscribed on an older one must subscribe again (the client's own recovery of
    /// the abandoned connection may never finish, and its consumers then wait in
    /// silence).
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether the connection in use is up.
    #[must_use]
    pub fn connected(&self) -> bool {
        self.connection().status().connected()
    }

    /// Opens a channel on the connection in use.
    ///
    /// # Errors
    /// When the connection is down.
    pub async fn create_channel(&self) -> lapin::Result<Channel> {
        self.connection().create_channel().await
    }

    /// Replaces a connection that stays down longer than [`RECOVERY_PATIENCE`],
    /// until `shutdown`.
    pub async fn watch(self, shutdown: tokio_util::sync::CancellationToken) {
        // Patience counts from when the broker answers again, so that the client's
        // own recovery (which retries every 2 s at most) gets its chance first.
        let address = socket_address(&self.url);
        let mut reachable_since: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            if self.connected() {
                reachable_since = None;
                continue;
            }
            let reachable = tokio::time::timeout(
                Duration::from_secs(1),
                tokio::net::TcpStream::connect(&address),
            )
            .await
            .is_ok_and(|r| r.is_ok());
            if !reachable {
                reachable_since = None;
                continue;
            }
            let since = *reachable_since.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() < RECOVERY_PATIENCE {
                continue;
            }
            match connect(&self.url, &self.name).await {
                // It may have recovered by itself while the new one was connecting.
                Ok(fresh) if self.connected() => {
                    let _ = fresh.close(200, "not needed".into()).await;
                    reachable_since = None;
                }
                Ok(fresh) => {
                    let old = std::mem::replace(
                        &mut *self.current.write().unwrap_or_else(PoisonError::into_inner),
                        Arc::new(fresh),
                    );
                    self.generation
                        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                    tracing::warn!("the broker connection did not recover by itself; replaced it");
                    bury_connection(old);
                    reachable_since = None;
                }
                Err(e) => tracing::warn!(error = format!("{e:#}"), "broker still unreachable"),
            }
        }
    }

    /// Closes the connection in use.
    pub async fn close(&self) {
        let _ = self.connection().close(200, "shutting down".into()).await;
    }
}

/// A channel in confirm mode. Every publish is `mandatory`: a message the broker
/// cannot route comes back and is an error, never a silent loss. When its channel
/// breaks and the client's own recovery does not bring it back within a few
/// seconds, the next failed publish opens a new one.
#[derive(Clone)]
pub struct Publisher {
    broker: Broker,
    /// The channel, the broker's generation when it was opened, and this
    /// publisher's own count of channels (which identifies the slot's content:
    /// channel ids restart on each connection).
    channel: Arc<Mutex<Slot>>,
}

#[derive(Clone)]
struct Slot {
    channel: Channel,
    generation: u64,
    number: u64,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

/// Opens a channel in confirm mode.
///
/// # Errors
/// When the channel cannot be opened.
pub async fn confirm_channel(connection: &Connection) -> anyhow::Result<Channel> {
    let channel = bounded("opening a channel", connection.create_channel()).await??;
    bounded(
        "turning on confirms",
        channel.confirm_select(ConfirmSelectOptions::default()),
    )
    .await??;
    Ok(channel)
}

/// How long one broker operation (opening a channel, a publish, a subscription)
/// may take. A channel of a connection that never recovers stays "reconnecting",
/// and an operation on it can wait for ever: it must fail instead, so that the
/// caller moves to a new channel.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// `future`, or an error naming `what` after [`OPERATION_TIMEOUT`].
///
/// # Errors
/// When it takes longer.
pub async fn bounded<T>(
    what: &str,
    future: impl std::future::Future<Output = T>,
) -> anyhow::Result<T> {
    tokio::time::timeout(OPERATION_TIMEOUT, future)
        .await
        .map_err(|_| {
            anyhow::anyhow!("{what}: no answer from the broker within {OPERATION_TIMEOUT:?}")
        })
}

impl Publisher {
    /// Opens a channel and turns publisher confirms on.
    ///
    /// # Errors
    /// When the channel cannot be opened.
    pub async fn open(broker: &Broker) -> anyhow::Result<Self> {
        Ok(Self {
            channel: Arc::new(Mutex::new(Slot {
                channel: confirm_channel(&broker.connection()).await?,
                generation: broker.generation(),
                number: 0,
            })),
            broker: broker.clone(),
        })
    }

    /// The channel in use.
    #[must_use]
    pub fn channel(&self) -> Channel {
        self.slot().channel
    }

    /// Publishes every envelope, then waits for all their confirms (pipelined: one
    /// round trip for the batch, not one per message).
    ///
    /// # Errors
    /// When any message is nacked or returned unroutable, or the channel fails; the
    /// caller must treat the whole batch as unsent (consumers de-duplicate).
    pub async fn publish_all(&self, envelopes: &[Envelope]) -> anyhow::Result<()> {
        let slot = self.slot();
        let result = publish_on(&slot.channel, envelopes).await;
        if result.is_err() {
            self.heal(&slot).await;
        }
        result
    }

    fn slot(&self) -> Slot {
        self.channel
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// After a failure: if the channel is broken, give the client's recovery five
    /// seconds, then open a new channel if the connection is up.
    async fn heal(&self, failed: &Slot) {
        for _ in 0..20 {
            if failed.channel.status().connected() {
                return;
            }
            // Its connection was abandoned (it will not come back), or another task
            // has replaced the channel already.
            if self.broker.generation() != failed.generation || self.slot().number != failed.number
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        if self.slot().number != failed.number {
            return;
        }
        if !self.broker.connected() {
            return;
        }
        match confirm_channel(&self.broker.connection()).await {
            Ok(fresh) => {
                let generation = self.broker.generation();
                let mut slot = self.channel.lock().unwrap_or_else(PoisonError::into_inner);
                if slot.number == failed.number {
                    *slot = Slot {
                        channel: fresh,
                        generation,
                        number: failed.number + 1,
                    };
                    drop(slot);
                    bury_channel(failed.channel.clone(), ());
                    tracing::info!("publishing channel replaced after a failure");
                } else {
                    // Another task replaced it already.
                    drop(slot);
                    bury_channel(fresh, ());
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not open a new publishing channel; will try again")
            }
        }
    }
}

/// How long a publish waits for the broker's confirm before it counts as failed.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Publishes every envelope on `channel` (`mandatory`), then waits for all their
/// confirms; [`Publisher::publish_all`] adds channel repair around it.
///
/// # Errors
/// A nack, an unroutable message, a missing confirm or a channel error.
pub async fn publish_on(channel: &Channel, envelopes: &[Envelope]) -> anyhow::Result<()> {
    let mut pending = Vec::with_capacity(envelopes.len());
    for e in envelopes {
        let confirm = bounded(
            "publishing",
            channel.basic_publish(
                ShortString::from(e.exchange.as_str()),
                ShortString::from(e.routing_key.as_str()),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &e.body,
                e.properties.clone(),
            ),
        )
        .await
        .and_then(|r| r.map_err(anyhow::Error::from))
        .with_context(|| format!("publishing to {} / {}", e.exchange, e.routing_key))?;
        pending.push((e, confirm));
    }
    for (e, confirm) in pending {
        // While the client recovers, a pending confirm may wait for the whole outage.
        let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
            .await
            .map_err(|_| anyhow::anyhow!("no publisher confirm within {CONFIRM_TIMEOUT:?}"))?
            .context("waiting for a publisher confirm")?;
        if confirmation.is_nack() {
            anyhow::bail!(
                "the broker refused (nack) a message to {} / {}",
                e.exchange,
                e.routing_key
            );
        }
        if let Some(returned) = confirmation.take_message() {
            anyhow::bail!(
                "unroutable message to {} / {}: {}",
                e.exchange,
                e.routing_key,
                returned.reply_text
            );
        }
    }
    Ok(())
}
