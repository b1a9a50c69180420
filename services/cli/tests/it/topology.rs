//! The lean topology on the broker: a retry goes back to its own queue through a
//! shared delay tier, the shared DLQ is drained into the store under each dead
//! letter's origin queue, and `airline migrate` removes the old layout without
//! losing a dead letter.

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

#[tokio::test]
async fn migrate_removes_the_old_layout_and_moves_its_dead_letters() {
    let app = spawn_bare(|_| {}).await;
    let channel = app.rt.broker.create_channel().await.expect("channel");
    let quorum = |extra: &[(&str, &str)]| {
        let mut t = FieldTable::default();
        t.insert("x-queue-type".into(), text("quorum"));
        for (k, v) in extra {
            t.insert((*k).into(), text(v));
        }
        t
    };
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    // The old layout, as the previous version declared it.
    let work = app.names.resolve("payment.collect");
    let old_dlq = app.names.old_dlq("payment.collect");
    channel
        .queue_declare(old_dlq.as_str().into(), durable, quorum(&[]))
        .await
        .expect("old DLQ");
    channel
        .queue_bind(
            old_dlq.as_str().into(),
            app.names.resolve(DEAD_LETTER_EXCHANGE).into(),
            work.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("old binding");
    let empty_tier = app
        .names
        .old_tier("payment.collect", Duration::from_secs(1));
    let busy_tier = app
        .names
        .old_tier("flight.reserve-seat", Duration::from_secs(2));
    for (tier, home) in [
        (&empty_tier, work.clone()),
        (&busy_tier, app.names.resolve("flight.reserve-seat")),
    ] {
        let args = quorum(&[
            ("x-dead-letter-exchange", ""),
            ("x-dead-letter-routing-key", &home),
            ("x-dead-letter-strategy", "at-least-once"),
            ("x-overflow", "reject-publish"),
        ]);
        channel
            .queue_declare(tier.as_str().into(), durable, args)
            .await
            .expect("old tier");
    }
    let _ = channel.close(200, "declared".into()).await;
    let plain = |id: &str, to: &str| Envelope {
        exchange: String::new(),
        routing_key: to.to_owned(),
        properties: message(id),
        body: br#"{"old":true}"#.to_vec(),
    };
    // A retry still waiting (no expiry: it stays), an old consumer's dead letter
    // (x-queue) dead-lettered after the new topology was declared, so in both DLQs,
    // and one in the old DLQ that says nothing of its queue.
    let both = Envelope {
        exchange: app.names.resolve(DEAD_LETTER_EXCHANGE),
        routing_key: work.clone(),
        properties: with_header(message("in-both"), "x-queue", &work),
        body: b"{}".to_vec(),
    };
    app.publish(&[
        plain("waiting", &busy_tier),
        both,
        plain("old-1", &old_dlq),
        plain("old-2", &old_dlq),
    ])
    .await;
    assert_eq!(depth(&app, &old_dlq).await, 3);

    let (code, stdout, stderr) = app.cli(&["migrate"], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains(&format!(
            "moved 3 dead letter(s) from the old DLQ {old_dlq} to {}",
            app.names.dead_letters()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("kept {busy_tier} (1 message(s))")),
        "{stdout}"
    );
    assert!(!exists(&app, &old_dlq).await, "the old DLQ is gone");
    assert!(
        !exists(&app, &empty_tier).await,
        "the empty old tier is gone"
    );
    assert!(exists(&app, &busy_tier).await, "the busy one stays");
    assert_eq!(depth(&app, &app.names.dead_letters()).await, 4);

    // Every dead letter is stored once, under the queue it died in.
    let (code, stdout, stderr) = app.cli(&["dlq", "drain", "--json"], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(
        (report["stored"].as_u64(), report["already_stored"].as_u64()),
        (Some(3), Some(1))
    );
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT message_id, queue FROM messaging.dead_letters ORDER BY message_id")
            .fetch_all(&app.rt.pool)
            .await
            .expect("rows");
    assert_eq!(
        rows,
        [
            ("in-both".to_owned(), "payment.collect".to_owned()),
            ("old-1".to_owned(), "payment.collect".to_owned()),
            ("old-2".to_owned(), "payment.collect".to_owned()),
        ]
    );
    // Running it again finds nothing more to do but the waiting retry.
    let (code, stdout, _) = app.cli(&["migrate"], &[]);
    assert_eq!(code, Some(0));
    assert!(!stdout.contains("moved"), "{stdout}");
}
