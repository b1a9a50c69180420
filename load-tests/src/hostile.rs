//! `airline-load hostile`: bad input on every queue while good bookings flow.
//! Publishes malformed, oversized, wrongly typed and replayed messages straight onto
//! every work queue (as a careless upstream would), then checks that each bad one
//! is in the shared DLQ with the reason expected, saying the queue it was sent to
//! as the queue it died in, and that the replayed booking
//! started one saga. The good load runs at the same time and is reported like any
//! amqp run (lost bookings, latency).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use airline_contracts::messages::{BookingRequested, ReleaseSeat, ReserveSeat};
use airline_contracts::topology::PARKING;
use airline_contracts::{Message, Names, PaymentToken, QUEUES};
use airline_runtime::broker::{Envelope, confirm_channel, publish_on};
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Connection};
use serde::Serialize;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

/// A bad message and the `x-error-kind` it must be dead-lettered with.
#[derive(Debug, Clone, Copy)]
struct Case {
    name: &'static str,
    expected: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "not-json",
        expected: "invalid-body",
    },
    Case {
        name: "wrong-shape",
        expected: "invalid-body",
    },
    Case {
        name: "wrong-content-type",
        expected: "wrong-content-type",
    },
    Case {
        name: "missing-message-id",
        expected: "missing-message-id",
    },
    Case {
        name: "missing-type",
        expected: "missing-type",
    },
    Case {
        name: "unknown-type",
        expected: "unknown-type",
    },
    Case {
        name: "unsupported-version",
        expected: "unsupported-version",
    },
    Case {
        name: "oversized",
        expected: "body-too-large",
    },
    Case {
        name: "wrong-queue",
        expected: "unexpected-type",
    },
];

/// One case on one queue, as checked.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Tally {
    pub published: u64,
    /// Found in the DLQ with the expected reason.
    pub dead_lettered: u64,
    /// Found in the DLQ with another reason.
    pub wrong_reason: u64,
    /// Found in the DLQ with the expected reason, but naming another queue as the
    /// one it died in.
    pub wrong_queue: u64,
}

/// What the hostile run found.
#[derive(Debug, Clone, Serialize)]
pub struct HostileReport {
    /// Per case: published and dead-lettered as expected, over every queue.
    pub cases: BTreeMap<String, Tally>,
    pub queues: usize,
    /// Bad messages not found in the shared DLQ (with any reason) in time.
    pub missing: u64,
    /// The replayed booking request started exactly one saga.
    pub replay_started_one_saga: bool,
    pub ok: bool,
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.to_owned()))
}

fn own_type(queue: &airline_contracts::QueueSpec) -> String {
    format!(
        "{}.v1",
        queue.messages.first().copied().unwrap_or("unknown")
    )
}

/// The bad message of `case` for `queue` (a broker name), tagged for the check.
fn bad(case: &Case, queue: &airline_contracts::QueueSpec, broker_queue: &str) -> Envelope {
    let id = format!("hostile-{}", Uuid::now_v7());
    let mut headers = FieldTable::default();
    headers.insert("x-hostile-case".into(), text(case.name));
    headers.insert("x-hostile-queue".into(), text(queue.name));
    let mut props = BasicProperties::default()
        .with_message_id(id.as_str().into())
        .with_type(own_type(queue).as_str().into())
        .with_content_type("application/json".into())
        .with_delivery_mode(2);
    let mut body = br#"{"bookingId":"not even close"}"#.to_vec();
    match case.name {
        "not-json" => body = b"{not json".to_vec(),
        "wrong-shape" => body = br#"{"unexpected":true}"#.to_vec(),
        "wrong-content-type" => props = props.with_content_type("text/plain".into()),
        "missing-message-id" => {
            props = BasicProperties::default()
                .with_type(own_type(queue).as_str().into())
                .with_content_type("application/json".into());
        }
        "missing-type" => {
            props = BasicProperties::default()
                .with_message_id(id.as_str().into())
                .with_content_type("application/json".into());
        }
        "unknown-type" => props = props.with_type("no.such.message.v1".into()),
        "unsupported-version" => {
            let t = own_type(queue).replace(".v1", ".v99");
            props = props.with_type(t.as_str().into());
        }
        "oversized" => {
            body = format!("{{\"padding\":\"{}\"}}", "x".repeat(300 * 1024)).into_bytes();
        }
        _ => {
            // A valid message of a type this queue does not carry.
            let message = if queue.messages.contains(&"flight.release-seat") {
                Message::ReserveSeat(ReserveSeat {
                    booking_id: Uuid::now_v7(),
                    flight_id: Uuid::now_v7(),
                })
            } else {
                Message::ReleaseSeat(ReleaseSeat {
                    booking_id: Uuid::now_v7(),
                    flight_id: Uuid::now_v7(),
                })
            };
            props = props.with_type(message.message_type().to_string().as_str().into());
            body = message.encode();
        }
    }
    Envelope {
        exchange: String::new(),
        routing_key: broker_queue.to_owned(),
        properties: props.with_headers(headers),
        body,
    }
}

/// The queues a service consumes (not the booking DLQ, not a watch queue).
fn work_queues() -> impl Iterator<Item = &'static airline_contracts::QueueSpec> {
    QUEUES
        .iter()
        .filter(|q| q.consumer != PARKING && !q.watches_dead_letters)
}

/// Publishes `rounds` rounds of every case on every work queue, one round per
/// `every`, and one booking request twice under one message id; returns what was
/// published and the replayed booking's id.
pub async fn flood(
    connection: &Connection,
    names: &Names,
    flight: Uuid,
    rounds: u32,
    every: Duration,
) -> anyhow::Result<(BTreeMap<String, Tally>, Uuid)> {
    let channel = confirm_channel(connection).await?;
    let mut cases: BTreeMap<String, Tally> = BTreeMap::new();
    let booking = Uuid::now_v7();
    let replayed = Message::BookingRequested(BookingRequested {
        booking_id: booking,
        outbound_flight_id: flight,
        customer_id: "hostile-replay".into(),
        payment_token: PaymentToken::parse("tok_visa").map_err(|e| anyhow::anyhow!("{e}"))?,
        requested_at: OffsetDateTime::now_utc(),
        api_key_id: None,
    });
    let envelope = airline_runtime::broker::envelope_for(
        names,
        &replayed,
        &Uuid::now_v7().to_string(),
        "airline-load-hostile",
    );
    publish_on(&channel, &[envelope.clone(), envelope]).await?;
    for round in 0..rounds {
        let started = Instant::now();
        let mut batch = Vec::new();
        for queue in work_queues() {
            let broker_queue = names.resolve(queue.name);
            for case in CASES {
                batch.push(bad(case, queue, &broker_queue));
                cases.entry(case.name.to_owned()).or_default().published += 1;
            }
        }
        publish_on(&channel, &batch).await?;
        if round + 1 < rounds
            && let Some(wait) = every.checked_sub(started.elapsed())
        {
            tokio::time::sleep(wait).await;
        }
    }
    let _ = channel.close(200, "hostile flood done".into()).await;
    Ok((cases, booking))
}

fn header(props: &BasicProperties, key: &str) -> Option<String> {
    match props.headers().as_ref()?.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    }
}

/// Takes this run's bad messages off the DLQs (leaving everything else) and checks
/// their reasons, until all are found or `patience` runs out.
pub async fn check(
    connection: &Connection,
    names: &Names,
    pool: &PgPool,
    mut cases: BTreeMap<String, Tally>,
    replayed_booking: Uuid,
    patience: Duration,
) -> anyhow::Result<HostileReport> {
    let expected: BTreeMap<&str, &str> = CASES.iter().map(|c| (c.name, c.expected)).collect();
    let published: u64 = cases.values().map(|t| t.published).sum();
    let channel = connection.create_channel().await?;
    let deadline = Instant::now() + patience;
    let mut found = 0;
    while found < published && Instant::now() < deadline {
        let mut others = Vec::new();
        let dlq = names.dead_letters();
        while let Some(got) = channel
            .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: false })
            .await?
        {
            let d = got.delivery;
            let Some(case) = header(&d.properties, "x-hostile-case") else {
                others.push(d.delivery_tag);
                continue;
            };
            let tally = cases.entry(case.clone()).or_default();
            let died_in = airline_runtime::topology::origin_of(
                names,
                d.properties.headers().as_ref(),
                d.routing_key.as_str(),
            )
            .map(|q| q.name);
            if header(&d.properties, "x-error-kind").as_deref()
                != expected.get(case.as_str()).copied()
            {
                tally.wrong_reason += 1;
            } else if died_in != header(&d.properties, "x-hostile-queue").as_deref() {
                tally.wrong_queue += 1;
            } else {
                tally.dead_lettered += 1;
            }
            found += 1;
            channel
                .basic_ack(d.delivery_tag, BasicAckOptions::default())
                .await?;
        }
        // What is not ours goes back, for operators.
        for tag in others {
            channel
                .basic_nack(
                    tag,
                    BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    },
                )
                .await?;
        }
        if found < published {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let _ = channel.close(200, "hostile check done".into()).await;
    let sagas: i64 = sqlx::query_scalar("SELECT count(*) FROM booking.bookings WHERE id = $1")
        .bind(replayed_booking)
        .fetch_one(pool)
        .await?;
    let wrong: u64 = cases.values().map(|t| t.wrong_reason + t.wrong_queue).sum();
    let missing = published - found;
    Ok(HostileReport {
        queues: work_queues().count(),
        missing,
        replay_started_one_saga: sagas == 1,
        ok: missing == 0 && wrong == 0 && sagas == 1,
        cases,
    })
}

/// The report for a person.
#[must_use]
pub fn render(r: &HostileReport) -> String {
    let expected: BTreeMap<&str, &str> = CASES.iter().map(|c| (c.name, c.expected)).collect();
    let mut out = format!(
        "{:<20} {:<20} {:>9} {:>13} {:>12} {:>11}\n",
        "bad message",
        "expected reason",
        "published",
        "dead-lettered",
        "wrong reason",
        "wrong queue"
    );
    for (name, t) in &r.cases {
        out.push_str(&format!(
            "{:<20} {:<20} {:>9} {:>13} {:>12} {:>11}\n",
            name,
            expected.get(name.as_str()).copied().unwrap_or("?"),
            t.published,
            t.dead_lettered,
            t.wrong_reason,
            t.wrong_queue
        ));
    }
    out.push_str(&format!(
        "on {} work queues; missing from the shared DLQ: {}; a booking request delivered twice started {} saga\n",
        r.queues,
        r.missing,
        if r.replay_started_one_saga { "one" } else { "NOT one" }
    ));
    out
}
