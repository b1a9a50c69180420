//! RabbitMQ: the connection (automatic recovery on), the topology, and publishing
//! with confirms.

use std::time::Duration;

use airline_contracts::topology::{
    COMMANDS_EXCHANGE, DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE, PARKING, QUEUES, exchange_of,
};
use airline_contracts::{Message, Names, QueueSpec};
use anyhow::Context as _;
use backon::{ExponentialBuilder, Retryable};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::config::{Config, redact_url};
use crate::retry;

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
    let props = ConnectionProperties::default()
        .with_connection_name(connection_name.into())
        .enable_auto_recover();
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

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.to_owned()))
}

/// Declares every exchange, work queue, dead-letter queue and binding. Declaring is
/// idempotent: every service does it at start.
///
/// Work queues are durable quorum queues. A message rejected, or redelivered more than
/// [`DELIVERY_LIMIT`] times, is dead-lettered by the broker through the dead-letter
/// exchange to the queue's `.dlq`, at least once (`x-dead-letter-strategy`).
///
/// # Errors
/// When the broker refuses a declaration, e.g. a queue exists with other arguments.
pub async fn declare_topology(
    channel: &Channel,
    names: &Names,
    config: &Config,
) -> anyhow::Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    for (name, kind) in [
        (COMMANDS_EXCHANGE, ExchangeKind::Direct),
        (EVENTS_EXCHANGE, ExchangeKind::Topic),
        (DEAD_LETTER_EXCHANGE, ExchangeKind::Direct),
    ] {
        channel
            .exchange_declare(
                names.resolve(name).into(),
                kind,
                durable,
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("declaring exchange {}", names.resolve(name)))?;
    }
    let queue_options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let dlx = names.resolve(DEAD_LETTER_EXCHANGE);
    for queue in QUEUES {
        let name = names.resolve(queue.name);
        if queue.consumer == PARKING {
            // A parking queue (the booking DLQ): read by operators, never consumed
            // by a service, so it has no dead-letter queue and no retries of its own.
            channel
                .queue_declare(
                    name.clone().into(),
                    queue_options,
                    table(&[("x-queue-type", text("quorum"))]),
                )
                .await
                .with_context(|| format!("declaring queue {name}"))?;
            bind_messages(channel, names, queue, &name).await?;
            continue;
        }
        for delay in config.retry_for(queue.name).tiers() {
            let tier = retry::tier_queue(&name, delay);
            // Expired messages go back to the work queue through the default exchange.
            let args = table(&[
                ("x-queue-type", text("quorum")),
                ("x-dead-letter-exchange", text("")),
                ("x-dead-letter-routing-key", text(&name)),
                ("x-dead-letter-strategy", text("at-least-once")),
                ("x-overflow", text("reject-publish")),
            ]);
            channel
                .queue_declare(tier.clone().into(), queue_options, args)
                .await
                .with_context(|| format!("declaring queue {tier}"))?;
        }
        let dlq = names.dlq(queue.name);
        channel
            .queue_declare(
                dlq.clone().into(),
                queue_options,
                table(&[("x-queue-type", text("quorum"))]),
            )
            .await
            .with_context(|| format!("declaring queue {dlq}"))?;
        channel
            .queue_bind(
                dlq.into(),
                dlx.clone().into(),
                name.clone().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let args = table(&[
            ("x-queue-type", text("quorum")),
            ("x-dead-letter-exchange", text(&dlx)),
            ("x-dead-letter-routing-key", text(&name)),
            ("x-dead-letter-strategy", text("at-least-once")),
            ("x-overflow", text("reject-publish")),
            ("x-delivery-limit", AMQPValue::LongLongInt(DELIVERY_LIMIT)),
        ]);
        channel
            .queue_declare(name.clone().into(), queue_options, args)
            .await
            .with_context(|| format!("declaring queue {name}"))?;
        bind_messages(channel, names, queue, &name).await?;
    }
    Ok(())
}

async fn bind_messages(
    channel: &Channel,
    names: &Names,
    queue: &QueueSpec,
    name: &str,
) -> anyhow::Result<()> {
    for t in queue.message_types() {
        channel
            .queue_bind(
                name.into(),
                names.resolve(exchange_of(t.kind)).into(),
                t.name.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("binding {name} to {}", t.name))?;
    }
    Ok(())
}

/// Every queue [`declare_topology`] declares, by broker name (for tools and tests
/// that remove a namespace).
#[must_use]
pub fn declared_queues(names: &Names, config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for queue in QUEUES {
        let name = names.resolve(queue.name);
        if queue.consumer != PARKING {
            out.push(names.dlq(queue.name));
            out.extend(
                config
                    .retry_for(queue.name)
                    .tiers()
                    .into_iter()
                    .map(|d| retry::tier_queue(&name, d)),
            );
        }
        out.push(name);
    }
    out
}

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

/// A channel in confirm mode. Every publish is `mandatory`: a message the broker
/// cannot route comes back and is an error, never a silent loss.
#[derive(Debug, Clone)]
pub struct Publisher {
    channel: Channel,
}

impl Publisher {
    /// Opens a channel and turns publisher confirms on.
    ///
    /// # Errors
    /// When the channel cannot be opened.
    pub async fn open(connection: &Connection) -> anyhow::Result<Self> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self { channel })
    }

    /// Publishes every envelope, then waits for all their confirms (pipelined: one
    /// round trip for the batch, not one per message).
    ///
    /// # Errors
    /// When any message is nacked or returned unroutable, or the channel fails; the
    /// caller must treat the whole batch as unsent (consumers de-duplicate).
    pub async fn publish_all(&self, envelopes: &[Envelope]) -> anyhow::Result<()> {
        let mut pending = Vec::with_capacity(envelopes.len());
        for e in envelopes {
            let confirm = self
                .channel
                .basic_publish(
                    ShortString::from(e.exchange.as_str()),
                    ShortString::from(e.routing_key.as_str()),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &e.body,
                    e.properties.clone(),
                )
                .await
                .with_context(|| format!("publishing to {} / {}", e.exchange, e.routing_key))?;
            pending.push((e, confirm));
        }
        for (e, confirm) in pending {
            let confirmation = confirm.await.context("waiting for a publisher confirm")?;
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

    /// The underlying channel.
    #[must_use]
    pub fn channel(&self) -> &Channel {
        &self.channel
    }
}
