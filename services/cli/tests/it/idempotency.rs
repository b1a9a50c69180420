//! Nothing twice: every message delivered again under its own message id changes
//! nothing, and a booking requested twice starts one saga.

use std::collections::BTreeSet;

use airline_contracts::messages::BookingRequested;
use airline_contracts::{Message, PaymentToken, QUEUES};
use airline_runtime::broker::Envelope;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

/// How many queues receive a message of this type (watch queues get only dead
/// letters).
fn fan_out(message_type: &str) -> i64 {
    let name = message_type
        .rsplit_once(".v")
        .map_or(message_type, |(n, _)| n);
    QUEUES
        .iter()
        .filter(|q| !q.watches_dead_letters && q.messages.contains(&name))
        .count() as i64
}

async fn inbox_rows(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM messaging.inbox")
        .fetch_one(&app.rt.pool)
        .await
        .expect("inbox")
}

/// Runs `plan` (flight seats, card token), then delivers every message the sagas
/// published a second time, and checks that the books did not move. Returns the
/// message types seen.
async fn redeliver_everything(
    app: &TestApp,
    plan: &[(i64, &str)],
    messages_expected: usize,
) -> BTreeSet<String> {
    redeliver_after(app, plan, false, messages_expected).await
}

/// [`redeliver_everything`], cancelling each booking once it has settled when
/// `cancel` is set.
async fn redeliver_after(
    app: &TestApp,
    plan: &[(i64, &str)],
    cancel: bool,
    messages_expected: usize,
) -> BTreeSet<String> {
    let mut tap = app.tap().await;
    for (seats, token) in plan {
        let flight = app.create_flight(*seats).await;
        let booking = app.book(flight, "cust-dup", token).await;
        app.settled(booking).await;
        if cancel {
            let response = app
                .http
                .post(app.url(&format!("/v1/bookings/{booking}/cancel")))
                .send()
                .await
                .expect("sent");
            assert_eq!(response.status(), 202);
            app.eventually("the cancellation to finish", || async {
                let b = app.get_json(&format!("/v1/bookings/{booking}")).await;
                (b["status"] == "CANCELLED").then_some(())
            })
            .await;
        }
    }
    let messages = tap.take(messages_expected).await;
    let deliveries: i64 = messages
        .iter()
        .map(|m| {
            fan_out(
                m.properties
                    .kind()
                    .as_ref()
                    .map(|k| k.as_str())
                    .unwrap_or_default(),
            )
        })
        .sum();
    app.eventually("every delivery to be handled", || async {
        (inbox_rows(app).await == deliveries).then_some(())
    })
    .await;
    let before = app.books().await;

    let envelopes: Vec<Envelope> = messages
        .iter()
        .map(|m| Envelope {
            exchange: m.exchange.to_string(),
            routing_key: m.routing_key.to_string(),
            properties: m.properties.clone(),
            body: m.data.clone(),
        })
        .collect();
    app.publish(&envelopes).await;
    app.eventually("every duplicate to be absorbed", || async {
        (app.duplicates_absorbed().await == deliveries).then_some(())
    })
    .await;

    assert_eq!(
        app.books().await,
        before,
        "a second delivery changed the books"
    );
    assert_eq!(inbox_rows(app).await, deliveries);
    messages
        .iter()
        .filter_map(|m| m.properties.kind().as_ref().map(|k| k.to_string()))
        .collect()
}

#[tokio::test]
async fn every_message_type_delivered_twice_changes_nothing() {
    let app = spawn_app().await;
    // confirmed: 7 messages; declined: 8; sold out: 4.
    let mut seen = redeliver_everything(
        &app,
        &[
            (10, "tok_visa"),
            (10, "tok_chargeDeclined"),
            (0, "tok_visa"),
        ],
        19,
    )
    .await;
    drop(app);
    let app = spawn_app_with(|c| {
        c.faults
            .steps
            .insert(airline_runtime::config::FaultStep::ConfirmBooking);
    })
    .await;
    // confirmation fails after payment: refund, release, failed: 10 messages.
    seen.extend(redeliver_everything(&app, &[(10, "tok_visa")], 10).await);
    drop(app);
    let app = spawn_app_with(|c| c.webhooks.allow_private = true).await;
    let mut receiver = crate::webhooks::Receiver::start(0).await;
    crate::webhooks::register(&app, &receiver.url, &["booking.confirmed"]).await;
    // confirmed, with a webhook endpoint: 7 messages and one webhook.deliver, which
    // is POSTed once however often it is delivered.
    seen.extend(redeliver_everything(&app, &[(10, "tok_visa")], 8).await);
    assert_eq!(receiver.drain(), 1, "one POST for one event");

    drop(app);
    let app = spawn_app().await;
    // confirmed, then cancelled: 7 messages, then cancel, refund, refunded,
    // release-seat, released, cancelled: 13.
    seen.extend(redeliver_after(&app, &[(10, "tok_visa")], true, 13).await);

    // booking.parked goes to an operators' parking queue that nothing consumes.
    let all: BTreeSet<String> = Message::TYPES
        .iter()
        .filter(|t| t.name != "booking.parked")
        .map(ToString::to_string)
        .collect();
    assert_eq!(seen, all, "every message type was delivered twice");
}

#[tokio::test]
async fn a_booking_requested_twice_starts_one_saga() {
    let app = spawn_app().await;
    let flight = app.create_flight(5).await;
    let booking_id = Uuid::now_v7();
    let request = Message::BookingRequested(BookingRequested {
        booking_id,
        outbound_flight_id: flight,
        customer_id: "cust-twice".into(),
        payment_token: PaymentToken::parse("tok_visa").expect("token"),
        requested_at: OffsetDateTime::now_utc(),
        api_key_id: None,
    });

    // The same message five times at once, and the same booking under another id.
    let same_id = Uuid::now_v7().to_string();
    let mut envelopes: Vec<Envelope> = (0..5).map(|_| app.envelope(&request, &same_id)).collect();
    envelopes.push(app.envelope(&request, &Uuid::now_v7().to_string()));
    app.publish(&envelopes).await;
    let settled = app.settled(booking_id).await;
    app.eventually("all six deliveries to be handled", || async {
        let dups = app.duplicates_absorbed().await;
        (dups == 4).then_some(())
    })
    .await;

    assert_eq!(settled["status"], "CONFIRMED");
    assert_eq!(app.seats_left(flight).await, 4);
    let sagas: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM booking.saga_history WHERE booking_id = $1 AND from_state IS NULL",
    )
    .bind(booking_id)
    .fetch_one(&app.rt.pool)
    .await
    .expect("history");
    assert_eq!(sagas, 1);
}

/// The sample's loyalty ingest inserted a ledger row on every redelivery.
#[tokio::test]
async fn points_are_awarded_once_per_booking() {
    let app = spawn_app().await;
    let flight = app.create_flight(5).await;
    let booking = app.book(flight, "cust-points", "tok_visa").await;
    app.settled(booking).await;
    app.eventually("points", || async {
        (app.get_json("/v1/loyalty/cust-points").await["points"] == 120).then_some(())
    })
    .await;
    let confirmed: Message = {
        let payload: serde_json::Value = sqlx::query_scalar(
            "SELECT payload FROM notify.notifications WHERE booking_id = $1 AND event_type = 'booking.confirmed'",
        )
        .bind(booking)
        .fetch_one(&app.rt.pool)
        .await
        .expect("notification");
        Message::decode(Some("booking.confirmed.v1"), payload.to_string().as_bytes())
            .expect("decodes")
    };

    // Redelivered under new message ids: the ledger is unique per booking.
    let envelopes: Vec<Envelope> = (0..3)
        .map(|_| app.envelope(&confirmed, &Uuid::now_v7().to_string()))
        .collect();
    app.publish(&envelopes).await;
    app.eventually("the redeliveries to be handled", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM messaging.inbox WHERE consumer = 'loyalty:loyalty.booking-confirmed'")
            .fetch_one(&app.rt.pool)
            .await
            .expect("inbox");
        (n == 4).then_some(())
    })
    .await;

    assert_eq!(app.get_json("/v1/loyalty/cust-points").await["points"], 120);
}
