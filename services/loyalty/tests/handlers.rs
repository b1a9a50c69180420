//! Awarding and revoking points against a database of its own, without a broker.

use airline_contracts::FailureReason;
use airline_contracts::Message;
use airline_contracts::messages::{BookingCancelled, BookingConfirmed, BookingFailed};
use airline_contracts::topology::LOYALTY_CONFIRMED;
use airline_loyalty::{SERVICE, profile};
use airline_runtime::testing::{TestDatabase, incoming, incoming_with};
use airline_runtime::{Config, Handler, Outcome};
use std::sync::Arc;
use time::OffsetDateTime;
use uuid::Uuid;

async fn loyalty() -> (TestDatabase, Arc<dyn Handler>) {
    let db = TestDatabase::create(&[&SERVICE])
        .await
        .expect("a test database");
    let handler = db
        .handler(&SERVICE, &LOYALTY_CONFIRMED, &Config::default())
        .expect("the handler");
    (db, handler)
}

fn confirmed(booking: Uuid, customer: &str, price: i64) -> Message {
    Message::BookingConfirmed(BookingConfirmed {
        booking_id: booking,
        customer_id: customer.into(),
        outbound_flight_id: Uuid::new_v4(),
        booking_reference: "ABC234".into(),
        ticket_price: price,
        ticket_currency: "EUR".into(),
        confirmed_at: OffsetDateTime::now_utc(),
    })
}

fn cancelled(booking: Uuid, customer: &str, price: i64) -> Message {
    Message::BookingCancelled(BookingCancelled {
        booking_id: booking,
        customer_id: customer.into(),
        outbound_flight_id: Uuid::new_v4(),
        booking_reference: Some("ABC234".into()),
        ticket_price: price,
        ticket_currency: "EUR".into(),
        cancelled_at: OffsetDateTime::now_utc(),
    })
}

async fn points(db: &TestDatabase, customer: &str) -> i64 {
    profile(db.pool(), customer).await.expect("profile").points
}

#[tokio::test]
async fn a_booking_earns_its_points_once() {
    let (db, handler) = loyalty().await;
    let booking = Uuid::new_v4();
    let out = db
        .handle(
            handler.as_ref(),
            &incoming(confirmed(booking, "cust-1", 120)),
        )
        .await
        .expect("awarded");
    assert!(
        matches!(out.as_slice(), [Message::LoyaltyAwarded(m)]
            if m.points == 120 && m.total_points == 120 && m.level == "bronze"),
        "{out:?}"
    );
    // Again under another message id: nothing more, nothing sent.
    let again = db
        .handle(
            handler.as_ref(),
            &incoming(confirmed(booking, "cust-1", 120)),
        )
        .await
        .expect("ignored");
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(points(&db, "cust-1").await, 120);
    // The same delivery twice goes through the inbox.
    let msg = incoming_with(confirmed(Uuid::new_v4(), "cust-1", 80), "m-1", 1);
    for duplicate in [false, true] {
        let outcome = db
            .process(&SERVICE, &LOYALTY_CONFIRMED, handler.as_ref(), &msg)
            .await
            .expect("processed");
        assert_eq!(matches!(outcome, Outcome::Duplicate), duplicate);
    }
    assert_eq!(points(&db, "cust-1").await, 200);
    let sent = db.sent("loyalty").await.expect("outbox");
    assert!(
        matches!(sent.as_slice(), [Message::LoyaltyAwarded(m)] if m.total_points == 200),
        "{sent:?}"
    );
}

#[tokio::test]
async fn a_cancellation_revokes_the_points_once_in_either_order() {
    let (db, handler) = loyalty().await;
    let kept = Uuid::new_v4();
    let gone = Uuid::new_v4();
    for msg in [
        confirmed(kept, "cust-2", 60_000),
        confirmed(gone, "cust-2", 120),
        cancelled(gone, "cust-2", 120),
        cancelled(gone, "cust-2", 120),
    ] {
        db.handle(handler.as_ref(), &incoming(msg))
            .await
            .expect("handled");
    }
    let p = profile(db.pool(), "cust-2").await.expect("profile");
    assert_eq!(p.points, 60_000);
    assert_eq!(p.level.as_str(), "silver");
    // The cancellation first (messages overtake each other): the two still cancel out.
    let late = Uuid::new_v4();
    for msg in [cancelled(late, "cust-3", 90), confirmed(late, "cust-3", 90)] {
        db.handle(handler.as_ref(), &incoming(msg))
            .await
            .expect("handled");
    }
    assert_eq!(points(&db, "cust-3").await, 0);
}

#[tokio::test]
async fn only_confirmed_and_cancelled_bookings_are_accepted() {
    let (db, handler) = loyalty().await;
    let failed = Message::BookingFailed(BookingFailed {
        booking_id: Uuid::new_v4(),
        customer_id: "cust-4".into(),
        outbound_flight_id: Uuid::new_v4(),
        reason: FailureReason::SoldOut,
        failed_at: OffsetDateTime::now_utc(),
    });
    let err = db
        .handle(handler.as_ref(), &incoming(failed))
        .await
        .expect_err("refused");
    assert!(err.is_permanent(), "{err}");
    assert_eq!(points(&db, "cust-4").await, 0);
}
