//! The booking saga end to end: outcomes, compensation chains, the last seats.

use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

async fn notified(app: &TestApp, booking: Uuid, event: &str) {
    app.eventually(&format!("{event} in the notification log"), || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM notify.notifications WHERE booking_id = $1 AND event_type = $2",
        )
        .bind(booking)
        .bind(event)
        .fetch_one(&app.rt.pool)
        .await
        .expect("query");
        (n == 1).then_some(())
    })
    .await;
}

async fn payment_status(app: &TestApp, booking: Uuid) -> Option<String> {
    sqlx::query_scalar("SELECT status FROM payment.payments WHERE booking_id = $1")
        .bind(booking)
        .fetch_optional(&app.rt.pool)
        .await
        .expect("query")
}

#[tokio::test]
async fn a_booking_with_an_approved_card_is_confirmed() {
    let app = spawn_app().await;
    let flight = app.create_flight(10).await;

    let booking = app.book(flight, "cust-ok", "tok_visa").await;
    let settled = app.settled(booking).await;

    assert_eq!(settled["status"], "CONFIRMED");
    assert_eq!(settled["failureReason"], Value::Null);
    let reference = settled["bookingReference"]
        .as_str()
        .expect("a booking reference");
    assert_eq!(reference.len(), 6);
    assert!(reference.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(app.seats_left(flight).await, 9);
    assert_eq!(
        payment_status(&app, booking).await.as_deref(),
        Some("captured")
    );
    notified(&app, booking, "booking.confirmed").await;
    notified(&app, booking, "loyalty.awarded").await;
    let loyalty = app.get_json("/v1/loyalty/cust-ok").await;
    assert_eq!(loyalty["points"], 120);
    assert_eq!(loyalty["level"], "bronze");
    assert_eq!(loyalty["remainingPoints"], 50_000 - 120);
    assert_eq!(
        app.saga_states(booking).await,
        ["RESERVING_SEAT", "COLLECTING_PAYMENT", "CONFIRMED"]
    );
    let token: Option<String> =
        sqlx::query_scalar("SELECT payment_token FROM booking.bookings WHERE id = $1")
            .bind(booking)
            .fetch_one(&app.rt.pool)
            .await
            .expect("query");
    assert_eq!(token, None, "the card token is dropped once the saga ends");
}

#[tokio::test]
async fn a_declined_card_fails_the_booking_and_gives_the_seat_back() {
    let app = spawn_app().await;
    let flight = app.create_flight(3).await;

    for token in ["tok_chargeDeclined", "tok_chargeDeclinedInsufficientFunds"] {
        let booking = app.book(flight, "cust-declined", token).await;
        let settled = app.settled(booking).await;

        assert_eq!(settled["status"], "FAILED", "{token}");
        assert_eq!(settled["failureReason"], "PAYMENT_DECLINED");
        assert_eq!(settled["bookingReference"], Value::Null);
        assert_eq!(
            payment_status(&app, booking).await.as_deref(),
            Some("declined")
        );
        assert_eq!(
            app.saga_states(booking).await,
            [
                "RESERVING_SEAT",
                "COLLECTING_PAYMENT",
                "RELEASING_SEAT",
                "FAILED"
            ]
        );
        notified(&app, booking, "booking.failed").await;
    }
    assert_eq!(app.seats_left(flight).await, 3);
    assert_eq!(app.get_json("/v1/loyalty/cust-declined").await["points"], 0);
}

#[tokio::test]
async fn a_sold_out_flight_fails_with_sold_out() {
    let app = spawn_app().await;
    let flight = app.create_flight(0).await;

    let booking = app.book(flight, "cust-late", "tok_visa").await;
    let settled = app.settled(booking).await;

    assert_eq!(settled["status"], "FAILED");
    assert_eq!(settled["failureReason"], "SOLD_OUT");
    assert_eq!(app.saga_states(booking).await, ["RESERVING_SEAT", "FAILED"]);
    assert_eq!(
        payment_status(&app, booking).await,
        None,
        "nothing was charged"
    );
    assert_eq!(app.seats_left(flight).await, 0);
}

/// A fault injected at each step runs that step's compensation chain.
#[tokio::test]
async fn a_failure_at_each_step_runs_its_compensation_chain() {
    let cases: [(&str, &str, &[&str], Option<&str>); 4] = [
        (
            "reserve-seat",
            "SEAT_RESERVATION_FAILED",
            &["RESERVING_SEAT", "FAILED"],
            None,
        ),
        (
            "reserve-booking",
            "BOOKING_RESERVATION_FAILED",
            &["RESERVING_SEAT", "RELEASING_SEAT", "FAILED"],
            None,
        ),
        (
            "collect-payment",
            "PAYMENT_FAILED",
            &[
                "RESERVING_SEAT",
                "COLLECTING_PAYMENT",
                "RELEASING_SEAT",
                "FAILED",
            ],
            Some("declined"),
        ),
        (
            "confirm-booking",
            "CONFIRMATION_FAILED",
            &[
                "RESERVING_SEAT",
                "COLLECTING_PAYMENT",
                "REFUNDING_PAYMENT",
                "RELEASING_SEAT",
                "FAILED",
            ],
            Some("refunded"),
        ),
    ];
    for (step, reason, chain, payment) in cases {
        let app = spawn_app_with(|c| {
            c.faults.steps.insert(step.parse().expect("a fault step"));
        })
        .await;
        let flight = app.create_flight(2).await;

        let booking = app.book(flight, "cust-fault", "tok_visa").await;
        let settled = app.settled(booking).await;

        assert_eq!(settled["status"], "FAILED", "{step}");
        assert_eq!(settled["failureReason"], reason, "{step}");
        assert_eq!(app.saga_states(booking).await, chain, "{step}");
        assert_eq!(app.seats_left(flight).await, 2, "{step}: the seat is back");
        assert_eq!(
            payment_status(&app, booking).await.as_deref(),
            payment,
            "{step}"
        );
        if step == "confirm-booking" {
            let refunded: i64 =
                sqlx::query_scalar("SELECT amount FROM payment.refunds WHERE booking_id = $1")
                    .bind(booking)
                    .fetch_one(&app.rt.pool)
                    .await
                    .expect("a refund");
            assert_eq!(refunded, 120);
            // What an operator sees of it.
            let shown = airline::saga::show(&app.rt.pool, booking)
                .await
                .expect("query")
                .expect("the saga");
            let states: Vec<&str> = shown.steps.iter().map(|s| s.to_state.as_str()).collect();
            assert_eq!(states, chain);
            assert_eq!(
                (shown.seat.as_deref(), shown.refunded),
                (Some("released"), Some(120))
            );
            assert_eq!(
                shown.charge.as_ref().map(|c| c.status.as_str()),
                Some("refunded")
            );
            let text = airline::saga::render(&shown);
            assert!(
                text.contains("CONFIRMATION_FAILED") && text.contains("payment.refunded.v1"),
                "{text}"
            );
        }
        notified(&app, booking, "booking.failed").await;
        assert_eq!(
            app.get_json("/v1/loyalty/cust-fault").await["points"],
            0,
            "{step}: no points"
        );
    }
}

#[tokio::test]
async fn twenty_concurrent_bookings_for_five_seats_confirm_exactly_five() {
    let app = spawn_app().await;
    let flight = app.create_flight(5).await;

    let bookings = futures_util::future::join_all((0..20).map(|i| {
        let app = &app;
        async move { app.book(flight, &format!("cust-{i}"), "tok_visa").await }
    }))
    .await;
    let mut confirmed = 0;
    let mut sold_out = 0;
    for booking in bookings {
        let settled = app.settled(booking).await;
        match (
            settled["status"].as_str(),
            settled["failureReason"].as_str(),
        ) {
            (Some("CONFIRMED"), None) => confirmed += 1,
            (Some("FAILED"), Some("SOLD_OUT")) => sold_out += 1,
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    assert_eq!((confirmed, sold_out), (5, 15));
    assert_eq!(app.seats_left(flight).await, 0);
    let captured: i64 =
        sqlx::query_scalar("SELECT count(*) FROM payment.payments WHERE status = 'captured'")
            .fetch_one(&app.rt.pool)
            .await
            .expect("query");
    assert_eq!(captured, 5);
}

/// Two copies of every worker (a second system on the same database and
/// namespace, as a second machine would run) share the work as competing consumers.
#[tokio::test]
async fn two_copies_of_the_workers_share_the_queues() {
    let app = spawn_app().await;
    let mut config = app.rt.config.clone();
    config.http.addr = "127.0.0.1:0".parse().expect("addr");
    let second = airline_runtime::Runtime::start(config, "airline-test-2", airline::SERVICES)
        .await
        .expect("second copy");
    let stop = tokio_util::sync::CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("port");
    let copy = tokio::spawn({
        let (second, stop) = (second.clone(), stop.clone());
        async move { airline::run_all(&second, listener, stop).await }
    });
    let flight = app.create_flight(30).await;

    let mut bookings = Vec::new();
    for i in 0..20 {
        let token = if i % 4 == 0 {
            "tok_chargeDeclined"
        } else {
            "tok_visa"
        };
        bookings.push(app.book(flight, "cust-two", token).await);
    }
    let mut confirmed = 0;
    for booking in bookings {
        if app.settled(booking).await["status"] == "CONFIRMED" {
            confirmed += 1;
        }
    }

    assert_eq!(confirmed, 15);
    assert_eq!(app.seats_left(flight).await, 15);
    stop.cancel();
    copy.await
        .expect("joined")
        .expect("the second copy stopped cleanly");
    second.close().await;
}
