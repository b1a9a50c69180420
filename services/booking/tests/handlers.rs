//! The saga's handlers and its deadline sweep against a database of their own,
//! without a broker; deadlines pass because the sweep is given a later `now`, not
//! because the test waits.

use std::time::Duration;

use airline_booking::saga::LocalSteps;
use airline_booking::{AdvanceSaga, Deadlines, SERVICE, StartSaga, sweep_once};
use airline_contracts::messages::{
    BookingRequested, CancelBooking, CollectPayment, PaymentCollected, PaymentDeclined,
    PaymentRefunded, ReserveSeat, SeatReleased, SeatReserved,
};
use airline_contracts::topology::BOOKING_REQUESTED;
use airline_contracts::{FailureReason, Message, PaymentToken};
use airline_runtime::testing::{TestDatabase, incoming, incoming_with};
use airline_runtime::{Config, Outcome};
use time::OffsetDateTime;
use uuid::Uuid;

const DEADLINES: Deadlines = Deadlines {
    step: Duration::from_secs(10),
    payment: Duration::from_secs(30),
    hold: Duration::from_secs(24 * 3600),
};

const ADVANCE: AdvanceSaga = AdvanceSaga {
    steps: LocalSteps {
        reserve_booking_fails: false,
        confirm_booking_fails: false,
    },
    deadlines: DEADLINES,
};

const START: StartSaga = StartSaga {
    deadlines: DEADLINES,
};

/// One booking's saga, read from its row.
#[derive(Debug)]
struct Row {
    state: String,
    version: i32,
    failure: Option<String>,
    deadline: Option<OffsetDateTime>,
    history: i64,
}

async fn row(db: &TestDatabase, id: Uuid) -> Row {
    let (state, version, failure, deadline): (String, i32, Option<String>, Option<OffsetDateTime>) =
        sqlx::query_as(
            "SELECT state, version, failure_reason, deadline_at FROM booking.bookings WHERE id = $1",
        )
        .bind(id)
        .fetch_one(db.pool())
        .await
        .expect("the booking");
    let history: i64 =
        sqlx::query_scalar("SELECT count(*) FROM booking.saga_history WHERE booking_id = $1")
            .bind(id)
            .fetch_one(db.pool())
            .await
            .expect("its history");
    Row {
        state,
        version,
        failure,
        deadline,
        history,
    }
}

struct Booking {
    id: Uuid,
    flight: Uuid,
}

fn requested(b: &Booking) -> Message {
    Message::BookingRequested(BookingRequested {
        booking_id: b.id,
        outbound_flight_id: b.flight,
        customer_id: "cust-1".into(),
        payment_token: PaymentToken::parse("tok_visa").expect("a token"),
        requested_at: OffsetDateTime::now_utc(),
        api_key_id: None,
    })
}

fn seat_reserved(b: &Booking) -> Message {
    Message::SeatReserved(SeatReserved {
        booking_id: b.id,
        flight_id: b.flight,
        ticket_price: 120,
        ticket_currency: "EUR".into(),
    })
}

fn seat_released(b: &Booking) -> Message {
    Message::SeatReleased(SeatReleased {
        booking_id: b.id,
        flight_id: b.flight,
        released: true,
    })
}

fn payment_collected(b: &Booking) -> Message {
    Message::PaymentCollected(PaymentCollected {
        booking_id: b.id,
        charge_id: "ch_1".into(),
        amount: 120,
        currency: "EUR".into(),
        receipt_url: "https://example.com/r/ch_1".into(),
        attempts: 1,
    })
}

fn payment_refunded(b: &Booking) -> Message {
    Message::PaymentRefunded(PaymentRefunded {
        booking_id: b.id,
        refund_id: Some("re_1".into()),
        amount: 120,
    })
}

/// A database and a booking requested in it (RESERVING_SEAT).
async fn started() -> (TestDatabase, Booking) {
    let db = TestDatabase::create(&[&SERVICE])
        .await
        .expect("a test database");
    let b = Booking {
        id: Uuid::new_v4(),
        flight: Uuid::new_v4(),
    };
    let out = db
        .handle(&START, &incoming(requested(&b)))
        .await
        .expect("started");
    assert_eq!(
        out,
        vec![Message::ReserveSeat(ReserveSeat {
            booking_id: b.id,
            flight_id: b.flight,
        })]
    );
    (db, b)
}

/// A booking that reached COLLECTING_PAYMENT.
async fn collecting() -> (TestDatabase, Booking) {
    let (db, b) = started().await;
    db.handle(&ADVANCE, &incoming(seat_reserved(&b)))
        .await
        .expect("seat reserved");
    (db, b)
}

async fn advance(db: &TestDatabase, msg: Message) -> Vec<Message> {
    db.handle(&ADVANCE, &incoming(msg)).await.expect("handled")
}

async fn sweep(db: &TestDatabase, now: OffsetDateTime) -> usize {
    sweep_once(db.pool(), ADVANCE.steps, DEADLINES, now)
        .await
        .expect("swept")
}

#[tokio::test]
async fn a_second_request_changes_nothing() {
    let (db, b) = started().await;
    let before = row(&db, b.id).await;
    assert_eq!(
        (before.state.as_str(), before.version),
        ("RESERVING_SEAT", 1)
    );
    assert_eq!(before.history, 1);
    let again = db
        .handle(&START, &incoming(requested(&b)))
        .await
        .expect("answered");
    assert!(again.is_empty(), "{again:?}");
    let after = row(&db, b.id).await;
    assert_eq!(
        (after.state, after.version, after.history),
        ("RESERVING_SEAT".into(), 1, 1)
    );
    // Built from the descriptor and delivered twice, through the inbox.
    let start = db
        .handler(&SERVICE, &BOOKING_REQUESTED, &Config::default())
        .expect("the handler");
    let other = Booking {
        id: Uuid::new_v4(),
        flight: b.flight,
    };
    let msg = incoming_with(requested(&other), "req-1", 1);
    for expected_duplicate in [false, true] {
        let outcome = db
            .process(&SERVICE, &BOOKING_REQUESTED, start.as_ref(), &msg)
            .await
            .expect("processed");
        assert_eq!(matches!(outcome, Outcome::Duplicate), expected_duplicate);
    }
    assert_eq!(db.sent("booking").await.expect("outbox").len(), 1);
}

#[tokio::test]
async fn the_booking_keeps_the_api_key_it_was_requested_under() {
    let db = TestDatabase::create(&[&SERVICE])
        .await
        .expect("a test database");
    let key = Uuid::now_v7();
    let (owned, upstream) = (Uuid::now_v7(), Uuid::now_v7());
    for (id, api_key_id) in [(owned, Some(key)), (upstream, None)] {
        let b = Booking {
            id,
            flight: Uuid::new_v4(),
        };
        let Message::BookingRequested(mut request) = requested(&b) else {
            unreachable!("a booking request")
        };
        request.api_key_id = api_key_id;
        db.handle(&START, &incoming(Message::BookingRequested(request)))
            .await
            .expect("started");
    }
    for (id, expected) in [(owned, Some(key)), (upstream, None)] {
        let stored: Option<Uuid> =
            sqlx::query_scalar("SELECT api_key_id FROM booking.bookings WHERE id = $1")
                .bind(id)
                .fetch_one(db.pool())
                .await
                .expect("the booking");
        assert_eq!(stored, expected);
    }
}

#[tokio::test]
async fn a_reserved_seat_asks_for_the_ticket_price() {
    let (db, b) = started().await;
    let out = advance(&db, seat_reserved(&b)).await;
    assert_eq!(
        out,
        vec![Message::CollectPayment(CollectPayment {
            booking_id: b.id,
            customer_id: "cust-1".into(),
            payment_token: PaymentToken::parse("tok_visa").expect("a token"),
            amount: 120,
            currency: "EUR".into(),
        })]
    );
    let r = row(&db, b.id).await;
    assert_eq!((r.state.as_str(), r.version), ("COLLECTING_PAYMENT", 2));
    // The payment deadline, counted from now.
    let deadline = r.deadline.expect("a deadline");
    let left = deadline - OffsetDateTime::now_utc();
    assert!(
        left > time::Duration::seconds(25) && left <= time::Duration::seconds(30),
        "{left}"
    );
}

#[tokio::test]
async fn collected_payment_confirms_with_a_reference() {
    let (db, b) = collecting().await;
    let out = advance(&db, payment_collected(&b)).await;
    match out.as_slice() {
        [Message::BookingConfirmed(m)] => {
            assert_eq!(m.booking_id, b.id);
            assert_eq!(m.booking_reference.len(), 6);
            assert_eq!((m.ticket_price, m.ticket_currency.as_str()), (120, "EUR"));
        }
        other => panic!("expected booking confirmed, got {other:?}"),
    }
    let r = row(&db, b.id).await;
    assert_eq!(r.state, "CONFIRMED");
    assert_eq!(r.deadline, None);
}

#[tokio::test]
async fn a_declined_payment_releases_the_seat_then_fails() {
    let (db, b) = collecting().await;
    let out = advance(
        &db,
        Message::PaymentDeclined(PaymentDeclined {
            booking_id: b.id,
            decline_code: "card_declined".into(),
            reason: FailureReason::PaymentDeclined,
        }),
    )
    .await;
    assert!(
        matches!(out.as_slice(), [Message::ReleaseSeat(m)] if m.booking_id == b.id && m.flight_id == b.flight),
        "{out:?}"
    );
    let r = row(&db, b.id).await;
    assert_eq!(r.state, "RELEASING_SEAT");
    assert_eq!(r.failure.as_deref(), Some("PAYMENT_DECLINED"));
    let out = advance(&db, seat_released(&b)).await;
    assert!(
        matches!(out.as_slice(), [Message::BookingFailed(m)] if m.reason == FailureReason::PaymentDeclined),
        "{out:?}"
    );
    assert_eq!(row(&db, b.id).await.state, "FAILED");
}

#[tokio::test]
async fn a_reply_that_does_not_apply_is_ignored() {
    let (db, b) = started().await;
    let before = row(&db, b.id).await;
    // A refund nobody asked for, and a payment before any seat: nothing changes.
    for msg in [payment_refunded(&b), payment_collected(&b)] {
        let out = advance(&db, msg).await;
        assert!(out.is_empty(), "{out:?}");
    }
    let after = row(&db, b.id).await;
    assert_eq!((after.state, after.version), (before.state, before.version));
    assert_eq!(after.history, before.history);
    // A reply for a booking that does not exist is refused for good.
    let stranger = Booking {
        id: Uuid::new_v4(),
        flight: b.flight,
    };
    let err = db
        .handle(&ADVANCE, &incoming(seat_reserved(&stranger)))
        .await
        .expect_err("refused");
    assert!(err.is_permanent(), "{err}");
}

#[tokio::test]
async fn a_confirmed_booking_cancelled_is_refunded_first() {
    let (db, b) = collecting().await;
    advance(&db, payment_collected(&b)).await;
    let out = advance(
        &db,
        Message::CancelBooking(CancelBooking {
            booking_id: b.id,
            requested_at: OffsetDateTime::now_utc(),
        }),
    )
    .await;
    assert!(
        matches!(out.as_slice(), [Message::RefundPayment(m)] if m.booking_id == b.id),
        "{out:?}"
    );
    assert_eq!(row(&db, b.id).await.state, "CANCEL_REFUNDING");
}

#[tokio::test]
async fn a_payment_past_its_deadline_is_refunded() {
    let (db, b) = collecting().await;
    let deadline = row(&db, b.id).await.deadline.expect("a deadline");
    // Not yet: the wall clock is before the deadline.
    assert_eq!(sweep(&db, OffsetDateTime::now_utc()).await, 0);
    assert_eq!(
        sweep(&db, deadline - time::Duration::milliseconds(1)).await,
        0
    );
    assert_eq!(row(&db, b.id).await.state, "COLLECTING_PAYMENT");
    // At the deadline.
    assert_eq!(sweep(&db, deadline).await, 1);
    let r = row(&db, b.id).await;
    assert_eq!(r.state, "REFUNDING_PAYMENT");
    assert_eq!(r.failure.as_deref(), Some("PAYMENT_TIMED_OUT"));
    let sent = db.sent("booking").await.expect("outbox");
    assert!(
        matches!(sent.as_slice(), [Message::RefundPayment(m)] if m.booking_id == b.id),
        "{sent:?}"
    );
    let trigger: String = sqlx::query_scalar(
        "SELECT trigger_type FROM booking.saga_history WHERE booking_id = $1 ORDER BY id DESC LIMIT 1",
    )
    .bind(b.id)
    .fetch_one(db.pool())
    .await
    .expect("history");
    assert_eq!(trigger, "deadline");
}

#[tokio::test]
async fn a_held_saga_is_compensated_at_its_hold_deadline_then_parked() {
    let (db, b) = started().await;
    // The reserve-seat command was dead-lettered: its copy on the watch queue holds
    // the saga for an operator.
    let copy = Message::ReserveSeat(ReserveSeat {
        booking_id: b.id,
        flight_id: b.flight,
    });
    let out = advance(&db, copy).await;
    assert!(out.is_empty(), "{out:?}");
    let held = row(&db, b.id).await;
    assert_eq!(held.state, "RESERVING_SEAT");
    let hold_deadline = held.deadline.expect("the hold deadline");
    assert!(hold_deadline - OffsetDateTime::now_utc() > time::Duration::hours(23));
    // Well past the step deadline, but held.
    let an_hour = OffsetDateTime::now_utc() + time::Duration::hours(1);
    assert_eq!(sweep(&db, an_hour).await, 0);
    // Past the hold deadline: compensated.
    let later = hold_deadline + time::Duration::seconds(1);
    assert_eq!(sweep(&db, later).await, 1);
    let r = row(&db, b.id).await;
    assert_eq!(r.state, "RELEASING_SEAT");
    assert_eq!(r.failure.as_deref(), Some("SEAT_RESERVATION_TIMED_OUT"));
    let sent = db.sent("booking").await.expect("outbox");
    assert!(
        matches!(sent.as_slice(), [Message::ReleaseSeat(m)] if m.booking_id == b.id),
        "{sent:?}"
    );
    // The release's own step deadline (counted from the wall clock) is long past at
    // `later` too: the compensation is stuck, so the saga is parked and fails.
    assert_eq!(sweep(&db, later).await, 1);
    let r = row(&db, b.id).await;
    assert_eq!(r.state, "FAILED");
    assert_eq!(r.failure.as_deref(), Some("COMPENSATION_FAILED"));
    assert_eq!(r.deadline, None);
    let sent = db.sent("booking").await.expect("outbox");
    assert!(
        matches!(
            &sent[1..],
            [Message::BookingParked(p), Message::BookingFailed(f)]
                if p.stuck_in == "RELEASING_SEAT" && f.reason == FailureReason::CompensationFailed
        ),
        "{sent:?}"
    );
    // Terminal: nothing more to sweep, however late.
    assert_eq!(sweep(&db, later + time::Duration::days(30)).await, 0);
}
