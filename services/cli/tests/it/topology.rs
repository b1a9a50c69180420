//! The lean topology on the broker: a retry goes back to its own queue through a
//! shared delay tier, the shared DLQ is drained into the store under each dead
//! letter's origin queue.

use std::time::Duration;

use airline_contracts::topology::{DEAD_LETTER_EXCHANGE, ORIGIN_QUEUE_HEADER, RETRY_EXCHANGE};
use airline_runtime::broker::{Envelope, Publisher, with_header};
use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use uuid::Uuid;

use crate::dlq::{dead_letters, depth};
use crate::helpers::{TestApp, spawn_bare};

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.to_owned()))
}

fn header(headers: Option<&FieldTable>, key: &str) -> Option<String> {
    match headers?.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    }
}

async fn exists(app: &TestApp, queue: &str) -> bool {
    let channel = app.rt.broker.create_channel().await.expect("channel");
    let found = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .is_ok();
    if found {
        let _ = channel.close(200, "done".into()).await;
    }
    found
}

fn message(id: &str) -> lapin::BasicProperties {
    airline_runtime::broker::properties(id, "flight.release-seat.v1", None, "test", None, None)
}

#[tokio::test]
async fn a_retry_goes_back_to_its_own_queue_through_the_shared_tier() {
    // No service runs: the message waits where the broker puts it.
    let app = spawn_bare(|_| {}).await;
    let tier = app.names.tier(Duration::from_millis(200));
    assert!(exists(&app, &tier).await, "TEST_RETRY's one tier");
    let home = app.names.resolve("flight.release-seat");
    let id = Uuid::now_v7().to_string();
    let retry = |tier_name: &str| Envelope {
        exchange: app.names.resolve(RETRY_EXCHANGE),
        routing_key: home.clone(),
        properties: with_header(message(&id), "retry-tier", tier_name)
            .with_expiration("300".into()),
        body: b"{}".to_vec(),
    };
    app.publish(&[retry("200ms")]).await;

    let channel = app.rt.broker.create_channel().await.expect("channel");
    let back = app
        .eventually("the retry back in its work queue", || async {
            channel
                .basic_get(home.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .expect("basic.get")
        })
        .await;
    assert_eq!(
        back.delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str()),
        Some(id.as_str())
    );
    let Some(AMQPValue::FieldArray(deaths)) = back
        .delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-death").cloned())
    else {
        panic!("the broker's x-death: {:?}", back.delivery.properties);
    };
    let AMQPValue::FieldTable(death) = &deaths.as_slice()[0] else {
        panic!("an x-death entry");
    };
    assert_eq!(header(Some(death), "queue").as_deref(), Some(tier.as_str()));
    assert_eq!(header(Some(death), "reason").as_deref(), Some("expired"));
    // Nowhere else: not in another work queue sharing the tier, not left in it.
    for other in [
        "flight.reserve-seat",
        "payment.collect",
        "booking.requested",
    ] {
        assert_eq!(depth(&app, &app.names.resolve(other)).await, 0, "{other}");
    }
    assert_eq!(depth(&app, &tier).await, 0);
    let _ = channel.close(200, "done".into()).await;

    // A tier nobody declared: unroutable, the publisher is told (mandatory).
    let publisher = Publisher::open(&app.rt.broker).await.expect("publisher");
    let refused = publisher.publish_all(&[retry("999ms")]).await;
    assert!(refused.is_err(), "an unknown tier is refused");
}

#[tokio::test]
async fn the_shared_dlq_is_drained_whole_and_each_dead_letter_stored_under_its_queue() {
    let app = spawn_bare(|_| {}).await;
    // Dead-lettered through the exchange (as the broker does) from two queues...
    app.publish(&dead_letters(&app, "flight.release-seat", 2))
        .await;
    app.publish(&dead_letters(&app, "payment.refund", 3)).await;
    // ... and one that says its queue in its headers only, as a consumer's does.
    let mut ours = dead_letters(&app, "payment.collect", 1).remove(0);
    ours.exchange = String::new();
    ours.routing_key = app.names.dead_letters();
    ours.properties = with_header(ours.properties, ORIGIN_QUEUE_HEADER, "payment.collect");
    app.publish(&[ours]).await;
    assert_eq!(depth(&app, &app.names.dead_letters()).await, 6);

    let (code, stdout, stderr) = app.cli(&["dlq", "drain", "--queue", "payment.refund"], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("drained 6 dead letter(s)"), "{stdout}");
    assert!(stdout.contains("so it was drained whole"), "{stdout}");
    assert_eq!(depth(&app, &app.names.dead_letters()).await, 0);
    let per_queue: Vec<(String, i64)> = sqlx::query_as(
        "SELECT queue, count(*) FROM messaging.dead_letters GROUP BY queue ORDER BY queue",
    )
    .fetch_all(&app.rt.pool)
    .await
    .expect("counts");
    assert_eq!(
        per_queue,
        [
            ("flight.release-seat".to_owned(), 2),
            ("payment.collect".to_owned(), 1),
            ("payment.refund".to_owned(), 3),
        ]
    );
    let (code, stdout, stderr) = app.cli(&["dlq", "list", "--queue", "payment.refund"], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("payment.refund"), "{stdout}");
}
