//! The dead-letter store: drain (also across a crash), group, edit, replay once,
//! discard, the store's bound; and the saga held by a dead-lettered step, resumed by
//! its replay.

use std::time::Duration;

use airline_contracts::Message;
use airline_contracts::messages::ReleaseSeat;
use airline_contracts::topology::DEAD_LETTER_EXCHANGE;
use airline_dead_letters::{self as store, Filter};
use airline_runtime::broker::{Envelope, properties};
use airline_runtime::retry::RetryPolicy;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app_with, spawn_bare};

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.to_owned()))
}

/// `n` dead letters of `queue` on their way to the shared DLQ (published to the
/// dead-letter exchange under the queue's name, as the broker dead-letters them):
/// release-seat commands refused for a reason that differs only in a number.
pub fn dead_letters(app: &TestApp, queue: &str, n: usize) -> Vec<Envelope> {
    (0..n)
        .map(|i| {
            let message = Message::ReleaseSeat(ReleaseSeat {
                booking_id: Uuid::now_v7(),
                flight_id: Uuid::now_v7(),
            });
            let mut headers = FieldTable::default();
            for (k, v) in [
                ("x-error-kind", "rejected"),
                ("x-error", &format!("seat row {i} is locked")),
                ("x-original-exchange", &app.names.resolve("commands")),
                ("x-original-routing-key", queue),
                ("x-last-failure-at", "2026-11-27T10:00:00Z"),
            ] {
                headers.insert(k.into(), text(v));
            }
            let booking = message.booking_id().to_string();
            Envelope {
                exchange: app.names.resolve(DEAD_LETTER_EXCHANGE),
                routing_key: app.names.resolve(queue),
                properties: properties(
                    &Uuid::now_v7().to_string(),
                    "flight.release-seat.v1",
                    Some(&booking),
                    "catalog",
                    None,
                    None,
                )
                .with_headers(headers),
                body: message.encode(),
            }
        })
        .collect()
}

pub async fn depth(app: &TestApp, queue: &str) -> u32 {
    let channel = app.rt.broker.create_channel().await.expect("channel");
    let q = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("queue exists");
    let _ = channel.close(200, "done".into()).await;
    q.message_count()
}

async fn stored(app: &TestApp) -> (i64, i64) {
    sqlx::query_as("SELECT count(*), count(DISTINCT message_id) FROM messaging.dead_letters")
        .fetch_one(&app.rt.pool)
        .await
        .expect("count")
}

fn json_of(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("JSON ({e}): {stdout}"))
}

#[tokio::test]
async fn a_drain_killed_after_its_commit_stores_each_dead_letter_once() {
    let app = spawn_bare(|_| {}).await;
    app.publish(&dead_letters(&app, "flight.release-seat", 250))
        .await;
    let dlq = app.names.dead_letters();
    assert_eq!(depth(&app, &dlq).await, 250);

    // The fault aborts the process after its first batch commits, before the ack.
    let (code, _, stderr) = app.cli(
        &["dlq", "drain"],
        &[("AIRLINE_FAULT_STEPS", "drain-commit")],
    );
    assert_ne!(code, Some(0), "the drain crashed: {stderr}");
    assert_eq!(stored(&app).await, (100, 100));
    let left = app
        .eventually("the unacked batch back in the DLQ", || async {
            let n = depth(&app, &dlq).await;
            (n == 250).then_some(n)
        })
        .await;
    assert_eq!(left, 250, "nothing was acked");

    let (code, stdout, stderr) = app.cli(&["dlq", "drain", "--json"], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let report = json_of(&stdout);
    assert_eq!(report["stored"], 150);
    assert_eq!(report["already_stored"], 100);
    assert_eq!(report["left_in_broker"], 0);
    assert_eq!(stored(&app).await, (250, 250));
    assert_eq!(depth(&app, &dlq).await, 0);
}

#[tokio::test]
async fn a_full_store_stops_draining_and_says_so() {
    let app = spawn_bare(|_| {}).await;
    app.publish(&dead_letters(&app, "payment.refund", 8)).await;

    let (code, stdout, stderr) = app.cli(&["dlq", "drain"], &[("AIRLINE_DLQ_MAX", "5")]);

    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("dead-letter store is full"), "{stderr}");
    assert!(
        stderr.contains("3 dead letter(s) left in the broker"),
        "{stderr}"
    );
    assert_eq!(stored(&app).await.0, 5);
    assert_eq!(depth(&app, &app.names.dead_letters()).await, 3);

    // Discarded and purged, there is room again.
    let (code, _, stderr) = app.cli(&["dlq", "discard", "--all"], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stdout, _) = app.cli(&["dlq", "purge", "--older-than", "0s"], &[]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("deleted 5"), "{stdout}");
    let (code, _, stderr) = app.cli(&["dlq", "drain"], &[("AIRLINE_DLQ_MAX", "5")]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stored(&app).await.0, 3);
}

#[tokio::test]
async fn a_replay_goes_out_once_and_an_edited_one_goes_out_edited() {
    let app = spawn_bare(|_| {}).await;
    app.publish(&dead_letters(&app, "flight.release-seat", 2))
        .await;
    let report = store::drain(&app.rt, None, &mut |_| {})
        .await
        .expect("drained");
    assert_eq!(report.stored, 2);
    let letters = store::list(&app.rt.pool, &Filter::default(), 10)
        .await
        .expect("list");
    let (plain, edited) = (letters[1].clone(), letters[0].clone());
    let work_queue = app.names.resolve("flight.release-seat");

    // Replayed twice: one message out; the second is refused (exit status 2).
    let id = plain.id.to_string();
    let (code, _, stderr) = app.cli(&["dlq", "replay", &id, "--by", "ops-test"], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, _, stderr) = app.cli(&["dlq", "replay", &id], &[]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("replayed already"), "{stderr}");
    assert_eq!(depth(&app, &work_queue).await, 1);
    let channel = app.rt.broker.create_channel().await.expect("channel");
    let out = channel
        .basic_get(work_queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .expect("get")
        .expect("the replay");
    let detail = store::show(&app.rt.pool, plain.id)
        .await
        .expect("show")
        .expect("exists");
    assert_eq!(detail.summary.status, "replayed");
    assert_eq!(detail.replays, 1);
    assert_eq!(detail.replayed_by.as_deref(), Some("ops-test"));
    let sent_id = out
        .delivery
        .properties
        .message_id()
        .as_ref()
        .map(|m| m.to_string());
    assert_eq!(sent_id, detail.replay_message_id.map(|m| m.to_string()));
    assert_ne!(sent_id, plain.message_id, "a new message id");
    let causation = out
        .delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-causation-id").cloned());
    assert_eq!(
        causation,
        plain.message_id.as_deref().map(text),
        "linked to the original"
    );

    // --force sends it again, on purpose.
    let (code, _, stderr) = app.cli(&["dlq", "replay", &id, "--force"], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(depth(&app, &work_queue).await, 1);
    let _ = channel
        .basic_get(work_queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await;

    // Edited, then replayed: only the edited body goes out.
    let other_flight = Uuid::now_v7().to_string();
    let id = edited.id.to_string();
    let (code, _, stderr) = app.cli(&["dlq", "edit", &id, "--set", "bookingId=not-a-uuid"], &[]);
    assert_eq!(code, Some(2), "an edit that breaks the contract is refused");
    assert!(
        stderr.contains("not a valid flight.release-seat.v1"),
        "{stderr}"
    );
    let (code, stdout, stderr) = app.cli(
        &[
            "dlq",
            "edit",
            &id,
            "--set",
            &format!("flightId={other_flight}"),
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains(&other_flight), "{stdout}");
    let (code, _, stderr) = app.cli(&["dlq", "replay", &id], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(depth(&app, &work_queue).await, 1);
    let out = channel
        .basic_get(work_queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .expect("get")
        .expect("the edited replay");
    let body: Value = serde_json::from_slice(&out.delivery.data).expect("json");
    assert_eq!(body["flightId"], other_flight);

    // Unknown ids and bad arguments: clear errors, exit status 2.
    let (code, _, stderr) = app.cli(&["dlq", "show", "999999"], &[]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("no dead letter 999999"), "{stderr}");
    let (code, _, _) = app.cli(&["dlq", "replay"], &[]);
    assert_eq!(code, Some(2));
    let (code, _, _) = app.cli(&["dlq", "purge", "--older-than", "soon"], &[]);
    assert_eq!(code, Some(2));
    let _ = channel.close(200, "done".into()).await;
}

#[tokio::test]
async fn a_group_of_a_thousand_is_replayed_once_each() {
    let app = spawn_bare(|_| {}).await;
    app.publish(&dead_letters(&app, "flight.release-seat", 1000))
        .await;
    let (code, _, stderr) = app.cli(&["dlq", "drain"], &[]);
    assert_eq!(code, Some(0), "{stderr}");

    let (code, stdout, _) = app.cli(&["dlq", "list", "--json"], &[]);
    assert_eq!(code, Some(0));
    let overview = json_of(&stdout);
    let groups = overview["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 1, "one cause: {groups:?}");
    assert_eq!(groups[0]["count"], 1000);
    assert_eq!(groups[0]["errorKind"], "rejected");
    assert_eq!(overview["queues"][0]["stored"], 1000);
    let group = groups[0]["group"].as_str().expect("group id").to_owned();

    let (code, stdout, stderr) = app.cli(&["dlq", "replay", "--group", &group, "--json"], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(json_of(&stdout)["replayed"], 1000);
    // Run again: nothing left to send.
    let (code, stdout, _) = app.cli(&["dlq", "replay", "--group", &group, "--json"], &[]);
    assert_eq!(code, Some(0));
    assert_eq!(json_of(&stdout)["replayed"], 0);

    assert_eq!(
        depth(&app, &app.names.resolve("flight.release-seat")).await,
        1000
    );
    let (replayed, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'replayed' AND replays = 1),
                count(DISTINCT replay_message_id) FROM messaging.dead_letters",
    )
    .fetch_one(&app.rt.pool)
    .await
    .expect("count");
    assert_eq!((replayed, distinct), (1000, 1000));
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM messaging.outbox")
        .fetch_one(&app.rt.pool)
        .await
        .expect("count");
    assert_eq!(outbox, 0);
}

async fn held(app: &TestApp, bookings: &[Uuid]) -> i64 {
    sqlx::query_scalar(
        "SELECT count(DISTINCT booking_id) FROM booking.saga_history
          WHERE booking_id = ANY($1) AND trigger_type LIKE '%(dead-lettered)'",
    )
    .bind(bookings)
    .fetch_one(&app.rt.pool)
    .await
    .expect("count")
}

/// The runbook's scenario: a payment outage dead-letters every collect; the sagas
/// wait; after the outage the operator finds the cause, replays the group, and every
/// booking confirms, none lost or doubled.
#[tokio::test]
async fn bookings_held_by_a_payment_outage_confirm_when_their_dead_letters_are_replayed() {
    let mut app = spawn_app_with(|c| {
        c.payment.failure_rate = 1.0;
        c.retry.default = RetryPolicy {
            attempts: 2,
            base: Duration::from_millis(100),
            cap: Duration::from_millis(100),
        };
    })
    .await;
    let flight = app.create_flight(20).await;
    let mut bookings = Vec::new();
    for i in 0..10 {
        bookings.push(
            app.book(flight, &format!("cust-outage-{i}"), "tok_visa")
                .await,
        );
    }
    app.eventually("every saga held by its dead-lettered payment", || async {
        (held(&app, &bookings).await == 10).then_some(())
    })
    .await;
    for b in &bookings {
        assert_eq!(
            app.get_json(&format!("/v1/bookings/{b}")).await["status"],
            "PENDING"
        );
    }

    // The outage is over.
    app.restart_with(|c| c.payment.failure_rate = 0.0).await;
    let (code, _, stderr) = app.cli(&["dlq", "drain", "--queue", "payment.collect"], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let overview = app
        .get_json("/v1/admin/dead-letters?queue=payment.collect")
        .await;
    let groups = overview["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(groups[0]["count"], 10);
    assert_eq!(groups[0]["messageType"], "payment.collect.v1");
    assert_eq!(groups[0]["errorKind"], "retries-exhausted");
    assert!(
        groups[0]["exampleError"]
            .as_str()
            .is_some_and(|e| e.contains("payment provider unavailable")),
        "{groups:?}"
    );
    // The card token is stored for the replay, never shown.
    let one = app
        .get_json(&format!(
            "/v1/admin/dead-letters/{}",
            overview["items"][0]["id"]
        ))
        .await;
    assert_eq!(one["body"]["paymentToken"], "[redacted]");

    let response = app
        .http
        .post(app.url("/v1/admin/dead-letters/replay"))
        .header("x-operator", "ops")
        .json(&json!({ "group": groups[0]["group"] }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.expect("json")["replayed"],
        10
    );

    for b in &bookings {
        assert_eq!(app.settled(*b).await["status"], "CONFIRMED", "{b}");
    }
    assert_eq!(app.seats_left(flight).await, 10);
    let charges: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM payment.payments WHERE booking_id = ANY($1) AND status = 'captured'",
    )
    .bind(&bookings)
    .fetch_one(&app.rt.pool)
    .await
    .expect("count");
    assert_eq!(charges, 10, "each booking charged once");
    let (code, stdout, stderr) = app.cli(&["audit"], &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let shown = airline::saga::show(&app.rt.pool, bookings[0])
        .await
        .expect("saga")
        .expect("exists");
    assert!(airline::saga::render(&shown).contains("held for an operator"));
}

/// An upstream sends a booking request without its card token: it is dead-lettered
/// as invalid; the operator fixes it over HTTP and replays it, and the saga runs.
#[tokio::test]
async fn a_bad_upstream_message_fixed_over_http_starts_its_saga() {
    let app = spawn_app_with(|_| {}).await;
    let flight = app.create_flight(3).await;
    let booking = Uuid::now_v7();
    let body = json!({
        "bookingId": booking, "outboundFlightId": flight, "customerId": "cust-upstream",
        "requestedAt": "2026-11-27T10:00:00Z",
    });
    app.publish(&[Envelope {
        exchange: app.names.resolve("events"),
        routing_key: "booking.requested".into(),
        properties: properties(
            &Uuid::now_v7().to_string(),
            "booking.requested.v1",
            Some(&booking.to_string()),
            "upstream",
            None,
            None,
        ),
        body: body.to_string().into_bytes(),
    }])
    .await;

    let letter = app
        .eventually("the dead letter drained", || async {
            let r = app
                .http
                .post(app.url("/v1/admin/dead-letters/drain"))
                .json(&json!({}))
                .send()
                .await
                .expect("sent");
            assert_eq!(r.status(), 200);
            let all = app
                .get_json("/v1/admin/dead-letters?queue=booking.requested")
                .await;
            all["items"].as_array().and_then(|i| i.first().cloned())
        })
        .await;
    assert_eq!(letter["errorKind"], "invalid-body");
    let path = format!("/v1/admin/dead-letters/{}", letter["id"]);
    let shown = app.get_json(&path).await;
    assert!(
        shown["error"]
            .as_str()
            .is_some_and(|e| e.contains("paymentToken")),
        "{shown}"
    );

    let patch = |body: Value| {
        app.http
            .patch(app.url(&path))
            .header("x-operator", "ops")
            .json(&body)
            .send()
    };
    let bad = patch(json!({ "set": { "paymentToken": "visa" } }))
        .await
        .expect("sent");
    assert_eq!(bad.status(), 422, "a token that breaks the contract");
    let fixed = patch(json!({ "set": { "paymentToken": "tok_visa" } }))
        .await
        .expect("sent");
    assert_eq!(fixed.status(), 200);
    let fixed: Value = fixed.json().await.expect("json");
    assert_eq!(fixed["editedBody"]["paymentToken"], "[redacted]");
    assert_eq!(fixed["editedBy"], "http:ops");

    let replay = |p: String| app.http.post(app.url(&p)).send();
    let first = replay(format!("{path}/replay")).await.expect("sent");
    assert_eq!(first.status(), 200);
    assert_eq!(app.settled(booking).await["status"], "CONFIRMED");
    let again = replay(format!("{path}/replay")).await.expect("sent");
    assert_eq!(again.status(), 409);
    assert_eq!(again.headers()["content-type"], "application/problem+json");
    let discard = replay(format!("{path}/discard")).await.expect("sent");
    assert_eq!(
        discard.status(),
        409,
        "a replayed dead letter is not discarded"
    );
    assert_eq!(app.get("/v1/admin/dead-letters/999999").await.status(), 404);
    assert_eq!(app.get("/v1/admin/dead-letters/abc").await.status(), 400);
    assert_eq!(
        app.get("/v1/admin/dead-letters?status=lost").await.status(),
        400
    );
}
