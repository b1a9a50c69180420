//! The systems a run drives: the broker as an upstream system publishes to it, the
//! gateway over HTTP, and the baseline: a chain of raw hops with no application
//! code, measuring this machine's ceiling on the same broker and database.

use std::sync::Arc;

use airline_contracts::messages::BookingRequested;
use airline_contracts::{Message, Names, PaymentToken};
use airline_runtime::broker::{Envelope, confirm_channel, envelope_for, publish_on};
use anyhow::Context as _;
use futures_util::StreamExt as _;
use futures_util::future::BoxFuture;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ExchangeDeclareOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};
use serde_json::json;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::run::Target;

/// How bookings are spread: flights round-robin, a share of declined cards, a share
/// sent to sold-out flights.
#[derive(Debug, Clone)]
pub struct Mix {
    pub flights: Vec<Uuid>,
    pub sold_out: Vec<Uuid>,
    pub decline_ratio: f64,
    pub sold_out_ratio: f64,
}

/// Whether item `i` falls in a share `ratio` spread evenly over the run.
pub(crate) fn in_share(i: u64, ratio: f64) -> bool {
    ratio > 0.0 && ((i + 1) as f64 * ratio).floor() > (i as f64 * ratio).floor()
}

impl Mix {
    fn flight(&self, i: u64) -> Uuid {
        let pool = if !self.sold_out.is_empty() && in_share(i, self.sold_out_ratio) {
            &self.sold_out
        } else {
            &self.flights
        };
        pool[usize::try_from(i).unwrap_or(0) % pool.len()]
    }

    fn token(&self, i: u64) -> &'static str {
        if in_share(i, self.decline_ratio) {
            "tok_chargeDeclined"
        } else {
            "tok_visa"
        }
    }
}

/// Creates the run's own flights: `count` with `seats` seats, and `sold_out` with none.
///
/// # Errors
/// When the catalog's tables are missing (start the system first) or the database fails.
pub async fn create_flights(
    pool: &PgPool,
    count: u32,
    seats: u32,
    sold_out: u32,
) -> anyhow::Result<(Vec<Uuid>, Vec<Uuid>)> {
    let mut open = Vec::new();
    let mut full = Vec::new();
    for n in 0..count + sold_out {
        let body = json!({
            "flightNumber": 9000 + (n % 999), "departureAirportCode": "LDT", "departureAirportName": "Load Test",
            "departureCity": "Load", "departureLocale": "UTC", "departureDate": "2030-01-01T08:00:00Z",
            "arrivalAirportCode": "LDA", "arrivalAirportName": "Load Arrival", "arrivalCity": "Arrival",
            "arrivalLocale": "UTC", "arrivalDate": "2030-01-01T10:00:00Z", "ticketPrice": 100,
            "ticketCurrency": "EUR", "seatCapacity": if n < count { seats } else { 0 },
        });
        let new = airline_catalog::flights::NewFlight::from_json(&body)
            .map_err(|e| anyhow::anyhow!("invalid load-test flight: {e:?}"))?;
        let flight = airline_catalog::flights::create(pool, &new).await.context(
            "creating the run's flights (is the system migrated? run `airline migrate`)",
        )?;
        if n < count {
            open.push(flight.id)
        } else {
            full.push(flight.id)
        }
    }
    Ok((open, full))
}

async fn publish(channel: &Channel, e: &Envelope) -> anyhow::Result<()> {
    publish_on(channel, std::slice::from_ref(e)).await
}

fn request(mix: &Mix, i: u64) -> anyhow::Result<Message> {
    Ok(Message::BookingRequested(BookingRequested {
        booking_id: Uuid::now_v7(),
        outbound_flight_id: mix.flight(i),
        customer_id: format!("load-{}", i % 1000),
        payment_token: PaymentToken::parse(mix.token(i)).map_err(|e| anyhow::anyhow!("{e}"))?,
        requested_at: OffsetDateTime::now_utc(),
        api_key_id: None,
    }))
}

/// Publishes `booking.requested` straight onto the broker, as an upstream system.
#[derive(Debug)]
pub struct Amqp {
    pub channel: Channel,
    pub names: Names,
    pub mix: Mix,
}

impl Amqp {
    /// A confirm-mode channel on `connection`.
    ///
    /// # Errors
    /// When the channel cannot be opened.
    pub async fn new(connection: &Connection, names: Names, mix: Mix) -> anyhow::Result<Self> {
        Ok(Self {
            channel: confirm_channel(connection).await?,
            names,
            mix,
        })
    }
}

impl Target for Amqp {
    fn send(&self, i: u64) -> BoxFuture<'_, anyhow::Result<Uuid>> {
        Box::pin(async move {
            let message = request(&self.mix, i)?;
            let envelope = envelope_for(
                &self.names,
                &message,
                &Uuid::now_v7().to_string(),
                "airline-load",
            );
            publish(&self.channel, &envelope).await?;
            Ok(message.booking_id())
        })
    }
}

/// `POST /v1/bookings` through the gateway.
#[derive(Debug)]
pub struct Http {
    pub client: reqwest::Client,
    pub base: String,
    pub mix: Mix,
}

impl Target for Http {
    fn send(&self, i: u64) -> BoxFuture<'_, anyhow::Result<Uuid>> {
        Box::pin(async move {
            let body = json!({
                "outboundFlightId": self.mix.flight(i),
                "customerId": format!("load-{}", i % 1000),
                "paymentToken": self.mix.token(i),
            });
            let response = self
                .client
                .post(format!("{}/v1/bookings", self.base))
                .json(&body)
                .send()
                .await?;
            anyhow::ensure!(
                response.status() == 202,
                "gateway answered {}",
                response.status()
            );
            let body: serde_json::Value = response.json().await?;
            body["id"]
                .as_str()
                .and_then(|s| Uuid::parse_str(s).ok())
                .context("no booking id in the answer")
        })
    }
}

/// Consumer transactions on one booking's critical path: start saga, reserve seat,
/// advance on the seat, collect payment, confirm. Each hop publishes one message, so
/// a chain also carries the path's six messages (the request included).
pub const HOPS: usize = 5;

/// The raw chain: publish with confirm → consume → one small transaction → publish
/// the next with confirm → ack, [`HOPS`] times, then an outcome on the tool's queue.
#[derive(Debug)]
pub struct Baseline {
    connection: Arc<Connection>,
    channel: Channel,
    names: Names,
    consumers: Vec<Channel>,
}

impl Baseline {
    /// The exchange the last hop publishes outcomes to.
    pub fn outcome_exchange(&self) -> String {
        self.names.resolve("outcomes")
    }

    fn hop(&self, k: usize) -> String {
        self.names.resolve(&format!("hop{k}"))
    }

    /// Declares the chain under a fresh prefix and starts its consumers.
    ///
    /// # Errors
    /// When the broker or database refuse.
    pub async fn start(
        connection: &Arc<Connection>,
        pool: &PgPool,
        prefetch: u16,
    ) -> anyhow::Result<Self> {
        sqlx::raw_sql(
            "CREATE SCHEMA IF NOT EXISTS load_baseline;
             CREATE TABLE IF NOT EXISTS load_baseline.hops (
                 id bigserial PRIMARY KEY, booking_id uuid NOT NULL, hop integer NOT NULL,
                 at timestamptz NOT NULL DEFAULT now())",
        )
        .execute(pool)
        .await?;
        let names = Names::new(format!(
            "baseline.{}.",
            &Uuid::new_v4().simple().to_string()[..8]
        ));
        let channel = confirm_channel(connection).await?;
        let mut this = Self {
            connection: Arc::clone(connection),
            channel,
            names,
            consumers: Vec::new(),
        };
        channel_declare(&this.channel, &this.outcome_exchange()).await?;
        let mut quorum = FieldTable::default();
        quorum.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(LongString::from("quorum")),
        );
        for k in 0..HOPS {
            this.channel
                .queue_declare(
                    this.hop(k).into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    quorum.clone(),
                )
                .await?;
        }
        for k in 0..HOPS {
            let consume = connection.create_channel().await?;
            consume
                .basic_qos(prefetch, BasicQosOptions::default())
                .await?;
            let publisher = confirm_channel(connection).await?;
            let mut deliveries = consume
                .basic_consume(
                    this.hop(k).into(),
                    format!("baseline-{k}").into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            let next = if k + 1 < HOPS {
                ("".to_owned(), this.hop(k + 1))
            } else {
                (this.outcome_exchange(), "baseline.confirmed".to_owned())
            };
            let pool = pool.clone();
            tokio::spawn(async move {
                while let Some(Ok(d)) = deliveries.next().await {
                    let (pool, publisher, next) = (pool.clone(), publisher.clone(), next.clone());
                    tokio::spawn(async move {
                        let booking = d
                            .properties
                            .correlation_id()
                            .as_ref()
                            .and_then(|c| Uuid::parse_str(c.as_str()).ok());
                        let step = async {
                            let mut tx = pool.begin().await?;
                            sqlx::query(
                                "INSERT INTO load_baseline.hops (booking_id, hop) VALUES ($1, $2)",
                            )
                            .bind(booking)
                            .bind(i32::try_from(k).unwrap_or(0))
                            .execute(&mut *tx)
                            .await?;
                            tx.commit().await?;
                            let envelope = Envelope {
                                exchange: next.0,
                                routing_key: next.1,
                                properties: d.properties.clone(),
                                body: d.data.clone(),
                            };
                            publish(&publisher, &envelope).await?;
                            d.acker.ack(BasicAckOptions::default()).await?;
                            anyhow::Ok(())
                        };
                        if let Err(e) = step.await {
                            eprintln!("baseline hop {k} failed: {e:#}");
                        }
                    });
                }
            });
            this.consumers.push(consume);
        }
        Ok(this)
    }

    /// Removes the chain's queues and exchange, and the rows it wrote.
    pub async fn stop(&self, pool: &PgPool, amqp_url: &str) {
        for c in &self.consumers {
            let _ = c.close(200, "baseline done".into()).await;
        }
        // A failed delete closes its channel: each queue gets a few tries, each on
        // a channel of its own, and one that still stands is named. When the run's
        // connection died (the broker closed it), a fresh one does the deleting.
        let fresh = if self.connection.status().connected() {
            None
        } else {
            airline_runtime::broker::connect(amqp_url, "airline-load-cleanup")
                .await
                .ok()
        };
        let connection = fresh.as_ref().unwrap_or(&self.connection);
        for k in 0..HOPS {
            let queue = self.hop(k);
            let mut deleted = false;
            for _ in 0..3 {
                let Ok(channel) = connection.create_channel().await else {
                    continue;
                };
                deleted = channel
                    .queue_delete(queue.clone().into(), QueueDeleteOptions::default())
                    .await
                    .is_ok();
                let _ = channel.close(200, "baseline done".into()).await;
                if deleted {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            if !deleted {
                eprintln!(
                    "airline-load: could not delete the baseline queue {queue}; delete it by hand"
                );
            }
        }
        if let Ok(channel) = connection.create_channel().await {
            let _ = channel
                .exchange_delete(self.outcome_exchange().into(), Default::default())
                .await;
            let _ = channel.close(200, "baseline done".into()).await;
        }
        let _ = sqlx::query("DROP SCHEMA IF EXISTS load_baseline CASCADE")
            .execute(pool)
            .await;
    }
}

async fn channel_declare(channel: &Channel, exchange: &str) -> anyhow::Result<()> {
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

impl Target for Baseline {
    fn send(&self, _i: u64) -> BoxFuture<'_, anyhow::Result<Uuid>> {
        Box::pin(async move {
            let id = Uuid::now_v7();
            let properties = BasicProperties::default()
                .with_message_id(Uuid::now_v7().to_string().into())
                .with_correlation_id(id.to_string().into())
                .with_delivery_mode(2)
                .with_content_type("application/json".into());
            // A body the size of a booking request.
            let body = vec![b'x'; 220];
            let envelope = Envelope {
                exchange: String::new(),
                routing_key: self.hop(0),
                properties,
                body,
            };
            publish(&self.channel, &envelope).await?;
            Ok(id)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_spread_evenly() {
        let hits = (0..1000).filter(|i| in_share(*i, 0.1)).count();
        assert_eq!(hits, 100);
        assert_eq!((0..1000).filter(|i| in_share(*i, 0.0)).count(), 0);
        assert_eq!((0..10).filter(|i| in_share(*i, 1.0)).count(), 10);
    }
}

/// `GET /v1/flights` searches through the gateway: each answer is its own outcome,
/// so the latency is the request's, from its intended send time.
#[derive(Debug)]
pub struct Search {
    pub client: reqwest::Client,
    pub base: String,
    pub answered: tokio::sync::mpsc::UnboundedSender<(Uuid, bool, tokio::time::Instant)>,
}

impl Target for Search {
    fn send(&self, _i: u64) -> BoxFuture<'_, anyhow::Result<Uuid>> {
        Box::pin(async move {
            let url = format!(
                "{}/v1/flights?departureAirportCode=LDT&arrivalAirportCode=LDA&departureDate=2030-01-01&limit=20",
                self.base
            );
            let response = self.client.get(url).send().await?;
            // 429 is an answer too: with a rate-limited key (--api-key) the run
            // measures how the gateway turns a flood away (counted as failed).
            let admitted = response.status() == 200;
            anyhow::ensure!(
                admitted || response.status() == 429,
                "gateway answered {}",
                response.status()
            );
            let _ = response.bytes().await?;
            let id = Uuid::now_v7();
            let _ = self
                .answered
                .send((id, admitted, tokio::time::Instant::now()));
            Ok(id)
        })
    }
}
