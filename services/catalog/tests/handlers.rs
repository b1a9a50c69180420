//! The seat steps against a database of their own, without a broker.

use airline_catalog::{SERVICE, flights};
use airline_contracts::messages::{ReleaseSeat, ReserveSeat};
use airline_contracts::topology::{RELEASE_SEAT, RESERVE_SEAT};
use airline_contracts::{Message, SeatUnavailableReason};
use airline_runtime::testing::{TestDatabase, incoming, incoming_with};
use airline_runtime::{Config, Handler, Outcome};
use std::sync::Arc;
use uuid::Uuid;

struct Catalog {
    db: TestDatabase,
    reserve: Arc<dyn Handler>,
    release: Arc<dyn Handler>,
}

async fn catalog() -> Catalog {
    let db = TestDatabase::create(&[&SERVICE])
        .await
        .expect("a test database");
    let config = Config::default();
    let reserve = db
        .handler(&SERVICE, &RESERVE_SEAT, &config)
        .expect("reserve handler");
    let release = db
        .handler(&SERVICE, &RELEASE_SEAT, &config)
        .expect("release handler");
    Catalog {
        db,
        reserve,
        release,
    }
}

/// A flight with `seats` seats at 120 EUR.
async fn flight(db: &TestDatabase, seats: u32) -> Uuid {
    let body = serde_json::json!({
        "flightNumber": 1234,
        "departureAirportCode": "LGW", "departureAirportName": "London Gatwick",
        "departureCity": "London", "departureLocale": "Europe/London",
        "departureDate": "2027-01-11T08:00:00Z",
        "arrivalAirportCode": "MAD", "arrivalAirportName": "Madrid Barajas",
        "arrivalCity": "Madrid", "arrivalLocale": "Europe/Madrid",
        "arrivalDate": "2027-01-11T10:30:00Z",
        "ticketPrice": 120, "ticketCurrency": "EUR", "seatCapacity": seats,
    });
    let new = flights::NewFlight::from_json(&body).expect("a valid flight");
    flights::create(db.pool(), &new).await.expect("stored").id
}

async fn seats_left(db: &TestDatabase, flight: Uuid) -> i32 {
    flights::get(db.pool(), flight)
        .await
        .expect("read")
        .expect("the flight")
        .seat_capacity
}

fn reserve(booking: Uuid, flight: Uuid) -> Message {
    Message::ReserveSeat(ReserveSeat {
        booking_id: booking,
        flight_id: flight,
    })
}

fn release(booking: Uuid, flight: Uuid) -> Message {
    Message::ReleaseSeat(ReleaseSeat {
        booking_id: booking,
        flight_id: flight,
    })
}

fn unavailable(out: &[Message]) -> Option<SeatUnavailableReason> {
    match out {
        [Message::SeatUnavailable(m)] => Some(m.reason),
        _ => None,
    }
}

#[tokio::test]
async fn a_reservation_takes_one_seat_and_answers_the_price() {
    let c = catalog().await;
    let f = flight(&c.db, 3).await;
    let booking = Uuid::new_v4();
    let out =
        c.db.handle(c.reserve.as_ref(), &incoming(reserve(booking, f)))
            .await
            .expect("reserved");
    match out.as_slice() {
        [Message::SeatReserved(m)] => {
            assert_eq!(m.booking_id, booking);
            assert_eq!((m.ticket_price, m.ticket_currency.as_str()), (120, "EUR"));
        }
        other => panic!("expected seat reserved, got {other:?}"),
    }
    assert_eq!(seats_left(&c.db, f).await, 2);
}

#[tokio::test]
async fn a_booking_takes_its_seat_once_even_under_another_message_id() {
    let c = catalog().await;
    let f = flight(&c.db, 3).await;
    let booking = Uuid::new_v4();
    let first =
        c.db.handle(c.reserve.as_ref(), &incoming(reserve(booking, f)))
            .await
            .expect("reserved");
    // A second command for the same booking (a step asked for again at its
    // deadline) answers the same, without a second seat.
    let again =
        c.db.handle(c.reserve.as_ref(), &incoming(reserve(booking, f)))
            .await
            .expect("answered again");
    assert_eq!(first, again);
    assert_eq!(seats_left(&c.db, f).await, 2);
    // The same delivery twice goes through the inbox: the second does nothing.
    let msg = incoming_with(reserve(Uuid::new_v4(), f), "m-1", 1);
    let handled =
        c.db.process(&SERVICE, &RESERVE_SEAT, c.reserve.as_ref(), &msg)
            .await
            .expect("handled");
    assert!(matches!(handled, Outcome::Handled(ref p) if p.len() == 1));
    let duplicate =
        c.db.process(&SERVICE, &RESERVE_SEAT, c.reserve.as_ref(), &msg)
            .await
            .expect("absorbed");
    assert!(matches!(duplicate, Outcome::Duplicate));
    assert_eq!(seats_left(&c.db, f).await, 1);
    assert_eq!(c.db.sent("catalog").await.expect("outbox").len(), 1);
}

#[tokio::test]
async fn a_sold_out_flight_answers_seat_unavailable_and_never_goes_below_zero() {
    let c = catalog().await;
    let f = flight(&c.db, 1).await;
    let out =
        c.db.handle(c.reserve.as_ref(), &incoming(reserve(Uuid::new_v4(), f)))
            .await
            .expect("reserved");
    assert!(matches!(out.as_slice(), [Message::SeatReserved(_)]));
    for _ in 0..3 {
        let out =
            c.db.handle(c.reserve.as_ref(), &incoming(reserve(Uuid::new_v4(), f)))
                .await
                .expect("answered");
        assert_eq!(unavailable(&out), Some(SeatUnavailableReason::SoldOut));
    }
    assert_eq!(seats_left(&c.db, f).await, 0);
    let out =
        c.db.handle(
            c.reserve.as_ref(),
            &incoming(reserve(Uuid::new_v4(), Uuid::new_v4())),
        )
        .await
        .expect("answered");
    assert_eq!(
        unavailable(&out),
        Some(SeatUnavailableReason::FlightNotFound)
    );
}

#[tokio::test]
async fn a_release_gives_the_seat_back_once() {
    let c = catalog().await;
    let f = flight(&c.db, 2).await;
    let booking = Uuid::new_v4();
    c.db.handle(c.reserve.as_ref(), &incoming(reserve(booking, f)))
        .await
        .expect("reserved");
    assert_eq!(seats_left(&c.db, f).await, 1);
    let released = |out: Vec<Message>| match out.as_slice() {
        [Message::SeatReleased(m)] => m.released,
        other => panic!("expected seat released, got {other:?}"),
    };
    let out =
        c.db.handle(c.release.as_ref(), &incoming(release(booking, f)))
            .await
            .expect("released");
    assert!(released(out));
    assert_eq!(seats_left(&c.db, f).await, 2);
    // A duplicate release (another message id) never creates a seat.
    for _ in 0..2 {
        let out =
            c.db.handle(c.release.as_ref(), &incoming(release(booking, f)))
                .await
                .expect("released again");
        assert!(!released(out));
    }
    assert_eq!(seats_left(&c.db, f).await, 2);
}

#[tokio::test]
async fn a_release_before_the_reservation_makes_the_reservation_refused() {
    let c = catalog().await;
    let f = flight(&c.db, 2).await;
    let booking = Uuid::new_v4();
    let out =
        c.db.handle(c.release.as_ref(), &incoming(release(booking, f)))
            .await
            .expect("tombstone");
    assert!(matches!(out.as_slice(), [Message::SeatReleased(m)] if !m.released));
    let out =
        c.db.handle(c.reserve.as_ref(), &incoming(reserve(booking, f)))
            .await
            .expect("answered");
    assert_eq!(
        unavailable(&out),
        Some(SeatUnavailableReason::ReservationFailed)
    );
    assert_eq!(seats_left(&c.db, f).await, 2);
}

#[tokio::test]
async fn the_reserve_fault_refuses_without_taking_a_seat() {
    let c = catalog().await;
    let f = flight(&c.db, 2).await;
    let failing = airline_catalog::seats::ReserveSeatHandler { fail: true };
    let out =
        c.db.handle(&failing, &incoming(reserve(Uuid::new_v4(), f)))
            .await
            .expect("answered");
    assert_eq!(
        unavailable(&out),
        Some(SeatUnavailableReason::ReservationFailed)
    );
    assert_eq!(seats_left(&c.db, f).await, 2);
    // The wrong message on the queue is refused for good.
    let err =
        c.db.handle(c.reserve.as_ref(), &incoming(release(Uuid::new_v4(), f)))
            .await
            .expect_err("refused");
    assert!(err.is_permanent(), "{err}");
}
