//! The notification log and the webhook fan-out against a database of their own,
//! without a broker (the deliveries themselves are tested in the CLI's webhooks
//! tests, against a receiver).

use airline_contracts::FailureReason;
use airline_contracts::Message;
use airline_contracts::messages::{BookingConfirmed, BookingFailed, LoyaltyAwarded, ReleaseSeat};
use airline_contracts::topology::NOTIFY_OUTCOMES;
use airline_notify::{SERVICE, event_id};
use airline_runtime::testing::{TestDatabase, incoming, incoming_with};
use airline_runtime::{Config, Handler, Outcome};
use std::sync::Arc;
use time::OffsetDateTime;
use uuid::Uuid;

/// A notify database. The fan-out reads which API key made a booking from the
/// booking's row (`booking.bookings.api_key_id`), or from the gateway's
/// `booking_requests` until the gateway has settled it; neither crate is a
/// dependency of notify, so the test stands in the two columns it reads of each.
async fn notify() -> (TestDatabase, Arc<dyn Handler>) {
    let db = TestDatabase::create(&[&SERVICE])
        .await
        .expect("a test database");
    sqlx::raw_sql(
        "CREATE SCHEMA gateway;
         CREATE TABLE gateway.booking_requests (id uuid PRIMARY KEY, api_key_id uuid);
         CREATE SCHEMA booking;
         CREATE TABLE booking.bookings (id uuid PRIMARY KEY, api_key_id uuid)",
    )
    .execute(db.pool())
    .await
    .expect("the booking's and the gateway's tables");
    let handler = db
        .handler(&SERVICE, &NOTIFY_OUTCOMES, &Config::default())
        .expect("the handler");
    (db, handler)
}

/// Records that `key` made `booking`, as the booking service does.
async fn made_by(db: &TestDatabase, booking: Uuid, key: Uuid) {
    sqlx::query("INSERT INTO booking.bookings (id, api_key_id) VALUES ($1, $2)")
        .bind(booking)
        .bind(key)
        .execute(db.pool())
        .await
        .expect("booking");
}

/// Records that `key` asked for `booking`, as the gateway does before the saga
/// starts (and as bookings made before the owner travelled in the message are).
async fn requested_by(db: &TestDatabase, booking: Uuid, key: Uuid) {
    sqlx::query("INSERT INTO gateway.booking_requests (id, api_key_id) VALUES ($1, $2)")
        .bind(booking)
        .bind(key)
        .execute(db.pool())
        .await
        .expect("booking request");
}

/// An endpoint of `key` for `events`, enabled or not.
async fn endpoint(db: &TestDatabase, key: Uuid, events: &[&str], enabled: bool) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO notify.webhook_endpoints (id, api_key_id, url, events, secret, status)
         VALUES ($1, $2, $3, $4, 'whsec_dGVzdA==', $5)",
    )
    .bind(id)
    .bind(key)
    .bind(format!("https://hooks.example.com/{id}"))
    .bind(events)
    .bind(if enabled { "enabled" } else { "disabled" })
    .execute(db.pool())
    .await
    .expect("endpoint");
    id
}

fn confirmed(booking: Uuid) -> Message {
    Message::BookingConfirmed(BookingConfirmed {
        booking_id: booking,
        customer_id: "cust-1".into(),
        outbound_flight_id: Uuid::new_v4(),
        booking_reference: "ABC234".into(),
        ticket_price: 120,
        ticket_currency: "EUR".into(),
        confirmed_at: OffsetDateTime::now_utc(),
    })
}

async fn logged(db: &TestDatabase, booking: Uuid) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT event_type FROM notify.notifications WHERE booking_id = $1 ORDER BY id",
    )
    .bind(booking)
    .fetch_all(db.pool())
    .await
    .expect("the log")
}

#[tokio::test]
async fn an_outcome_is_logged_once() {
    let (db, handler) = notify().await;
    let booking = Uuid::new_v4();
    for _ in 0..2 {
        // Another message id each time (a republished event): logged once.
        let out = db
            .handle(handler.as_ref(), &incoming(confirmed(booking)))
            .await
            .expect("handled");
        assert!(out.is_empty(), "no endpoint: {out:?}");
    }
    let awarded = Message::LoyaltyAwarded(LoyaltyAwarded {
        booking_id: booking,
        customer_id: "cust-1".into(),
        points: 120,
        total_points: 120,
        level: "bronze".into(),
    });
    db.handle(handler.as_ref(), &incoming(awarded))
        .await
        .expect("handled");
    assert_eq!(
        logged(&db, booking).await,
        ["booking.confirmed", "loyalty.awarded"]
    );
    let payload: serde_json::Value = sqlx::query_scalar(
        "SELECT payload FROM notify.notifications WHERE booking_id = $1 AND event_type = 'booking.confirmed'",
    )
    .bind(booking)
    .fetch_one(db.pool())
    .await
    .expect("payload");
    assert_eq!(payload["bookingReference"], "ABC234", "{payload}");
}

#[tokio::test]
async fn one_delivery_per_enabled_endpoint_of_the_bookings_key() {
    let (db, handler) = notify().await;
    let (key, other_key) = (Uuid::new_v4(), Uuid::new_v4());
    let wants = [
        endpoint(&db, key, &["booking.confirmed"], true).await,
        endpoint(&db, key, &["booking.failed", "booking.confirmed"], true).await,
    ];
    endpoint(&db, key, &["booking.confirmed"], false).await;
    endpoint(&db, key, &["booking.failed"], true).await;
    endpoint(&db, other_key, &["booking.confirmed"], true).await;
    let booking = Uuid::new_v4();
    made_by(&db, booking, key).await;
    let msg = incoming_with(confirmed(booking), "m-1", 1);
    let outcome = db
        .process(&SERVICE, &NOTIFY_OUTCOMES, handler.as_ref(), &msg)
        .await
        .expect("processed");
    assert!(
        matches!(outcome, Outcome::Handled(ref p) if p.len() == 2),
        "{outcome:?}"
    );
    let sent = db.sent("notify").await.expect("outbox");
    let mut endpoints = Vec::new();
    for m in &sent {
        let Message::DeliverWebhook(d) = m else {
            panic!("expected webhook.deliver, got {m:?}");
        };
        assert_eq!(d.booking_id, booking);
        assert_eq!(d.event_type, "booking.confirmed");
        assert_eq!(
            d.event_id,
            event_id(d.endpoint_id, booking, "booking.confirmed")
        );
        assert_eq!(d.payload["type"], "booking.confirmed");
        assert_eq!(d.payload["data"]["bookingReference"], "ABC234");
        endpoints.push(d.endpoint_id);
    }
    endpoints.sort();
    let mut expected = wants.to_vec();
    expected.sort();
    assert_eq!(endpoints, expected);
    // The same delivery again, then the event under another message id: no more
    // webhooks.
    let again = db
        .process(&SERVICE, &NOTIFY_OUTCOMES, handler.as_ref(), &msg)
        .await
        .expect("processed");
    assert!(matches!(again, Outcome::Duplicate));
    let republished = db
        .handle(handler.as_ref(), &incoming(confirmed(booking)))
        .await
        .expect("handled");
    assert!(republished.is_empty(), "{republished:?}");
    assert_eq!(db.sent("notify").await.expect("outbox").len(), 2);
}

#[tokio::test]
async fn the_owner_is_read_from_the_booking_or_else_its_request_row() {
    let (db, handler) = notify().await;
    let key = Uuid::new_v4();
    let hook = endpoint(&db, key, &["booking.confirmed"], true).await;
    // Owner on the request row only (the booking row has none): found there.
    let old = Uuid::new_v4();
    sqlx::query("INSERT INTO booking.bookings (id) VALUES ($1)")
        .bind(old)
        .execute(db.pool())
        .await
        .expect("booking");
    requested_by(&db, old, key).await;
    // Owner on the booking, its request row settled (gone).
    let settled = Uuid::new_v4();
    made_by(&db, settled, key).await;
    for booking in [old, settled] {
        let out = db
            .handle(handler.as_ref(), &incoming(confirmed(booking)))
            .await
            .expect("handled");
        let [Message::DeliverWebhook(d)] = out.as_slice() else {
            panic!("one delivery for {booking}: {out:?}");
        };
        assert_eq!((d.endpoint_id, d.booking_id), (hook, booking));
    }
}

#[tokio::test]
async fn a_booking_no_key_made_gets_no_webhook() {
    let (db, handler) = notify().await;
    endpoint(&db, Uuid::new_v4(), &["booking.failed"], true).await;
    let booking = Uuid::new_v4();
    let failed = Message::BookingFailed(BookingFailed {
        booking_id: booking,
        customer_id: "cust-2".into(),
        outbound_flight_id: Uuid::new_v4(),
        reason: FailureReason::SoldOut,
        failed_at: OffsetDateTime::now_utc(),
    });
    let out = db
        .handle(handler.as_ref(), &incoming(failed))
        .await
        .expect("handled");
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(logged(&db, booking).await, ["booking.failed"]);
    // Anything but an outcome is refused for good.
    let command = Message::ReleaseSeat(ReleaseSeat {
        booking_id: booking,
        flight_id: Uuid::new_v4(),
    });
    let err = db
        .handle(handler.as_ref(), &incoming(command))
        .await
        .expect_err("refused");
    assert!(err.is_permanent(), "{err}");
}
