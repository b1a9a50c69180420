//! Failure handling: delayed retries, dead letters that explain themselves, saga
//! deadlines, the booking DLQ.

use std::time::Duration;

use airline_runtime::retry::RetryPolicy;
use lapin::types::AMQPValue;
use serde_json::Value;

use crate::helpers::{TestApp, spawn_app_with};

fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        attempts: 4,
        base: Duration::from_millis(100),
        cap: Duration::from_millis(400),
    }
}

pub fn header(message: &lapin::message::BasicGetMessage, name: &str) -> Option<AMQPValue> {
    message
        .delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(name).cloned())
}

pub fn text(message: &lapin::message::BasicGetMessage, name: &str) -> String {
    match header(message, name) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

async fn history(app: &TestApp, booking: uuid::Uuid) -> Vec<(String, i32, String)> {
    sqlx::query_as("SELECT to_state, step_attempts, note FROM booking.saga_history WHERE booking_id = $1 ORDER BY version")
        .bind(booking)
        .fetch_all(&app.rt.pool)
        .await
        .expect("history")
}

#[tokio::test]
async fn a_flaky_card_confirms_after_retries_shown_in_the_saga_history() {
    let app = spawn_app_with(|c| c.retry.default = fast_retries()).await;
    let flight = app.create_flight(3).await;

    let booking = app.book(flight, "cust-flaky", "tok_flaky").await;
    let settled = app.settled(booking).await;

    assert_eq!(settled["status"], "CONFIRMED");
    let steps = history(&app, booking).await;
    let confirmed = steps
        .iter()
        .find(|(state, _, _)| state == "CONFIRMED")
        .expect("a CONFIRMED step");
    assert_eq!(confirmed.1, 3, "payment took three deliveries");
    assert!(confirmed.2.contains("after 3 attempts"), "{}", confirmed.2);
}

#[tokio::test]
async fn exhausted_retries_dead_letter_with_their_story_and_the_saga_compensates() {
    let app = spawn_app_with(|c| {
        c.retry.default = fast_retries();
        c.payment.failure_rate = 1.0;
        c.saga.hold_deadline = Duration::from_secs(2);
    })
    .await;
    let flight = app.create_flight(3).await;

    let booking = app.book(flight, "cust-outage", "tok_visa").await;

    // The collect is retried, then dead-lettered with its whole story.
    let dead = app.dead_letter("payment.collect").await;
    assert_eq!(text(&dead, "x-error-kind"), "retries-exhausted");
    assert!(
        text(&dead, "x-error").contains("gave up after 4 attempts"),
        "{}",
        text(&dead, "x-error")
    );
    assert_eq!(header(&dead, "x-attempts"), Some(AMQPValue::LongLongInt(4)));
    assert_eq!(text(&dead, "x-original-routing-key"), "payment.collect");
    assert_eq!(
        text(&dead, "x-original-exchange"),
        app.names.resolve("commands")
    );
    assert_eq!(text(&dead, "x-service"), "payment");
    assert_eq!(text(&dead, "x-booking-id"), booking.to_string());
    assert!(text(&dead, "x-first-failure-at") < text(&dead, "x-last-failure-at"));
    assert!(
        header(&dead, "x-death").is_some(),
        "the broker's x-death is kept"
    );

    // The saga is held for an operator; nobody replays the dead letter, so at the
    // hold deadline it compensates: nothing was charged.
    let settled = app.settled(booking).await;
    assert_eq!(settled["status"], "FAILED");
    assert_eq!(settled["failureReason"], "PAYMENT_TIMED_OUT");
    assert_eq!(app.seats_left(flight).await, 3);
    let steps = history(&app, booking).await;
    let held = steps
        .iter()
        .position(|(_, _, note)| note.contains("held for an operator"))
        .expect("a hold in the history");
    assert_eq!(steps[held].0, "COLLECTING_PAYMENT");
    assert_eq!(steps[held + 1].0, "REFUNDING_PAYMENT");
}

#[tokio::test]
async fn a_compensation_that_cannot_finish_parks_the_saga_in_the_booking_dlq() {
    let app = spawn_app_with(|c| {
        c.retry.default = fast_retries();
        c.faults.steps.extend([
            airline_runtime::config::FaultStep::ConfirmBooking,
            airline_runtime::config::FaultStep::RefundPayment,
        ]);
        c.saga.payment_deadline = Duration::from_secs(2);
    })
    .await;
    let flight = app.create_flight(3).await;

    let booking = app.book(flight, "cust-stuck", "tok_visa").await;
    let settled = app.settled(booking).await;

    assert_eq!(settled["status"], "FAILED");
    assert_eq!(settled["failureReason"], "COMPENSATION_FAILED");
    let refund = app.dead_letter("payment.refund").await;
    assert_eq!(text(&refund, "x-error-kind"), "retries-exhausted");
    let parked = app
        .dead_letter_from(&app.names.resolve("booking.dlq"))
        .await;
    let body: Value = serde_json::from_slice(&parked.delivery.data).expect("json");
    assert_eq!(body["bookingId"], booking.to_string());
    // Taken off the booking DLQ and never stored: the audit notices.
    let report = airline::audit::audit_all(&app.rt)
        .await
        .expect("audit runs");
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.check == "sagas" && v.detail.contains("COMPENSATION_FAILED")),
        "{:?}",
        report.violations
    );
    assert_eq!(body["stuckIn"], "REFUNDING_PAYMENT");
    assert_eq!(body["reason"], "COMPENSATION_FAILED");
    assert_eq!(body["originalFailure"], "CONFIRMATION_FAILED");
    let states: Vec<&str> = body["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|s| s["toState"].as_str())
        .collect();
    assert_eq!(
        states,
        [
            "RESERVING_SEAT",
            "COLLECTING_PAYMENT",
            "REFUNDING_PAYMENT",
            "FAILED"
        ]
    );
}

#[tokio::test]
async fn a_payment_that_answers_after_its_deadline_is_refunded() {
    let app = spawn_app_with(|c| c.saga.payment_deadline = Duration::from_secs(2)).await;
    let flight = app.create_flight(3).await;

    let booking = app.book(flight, "cust-slow", "tok_timeout").await;
    let settled = app.settled(booking).await;

    assert_eq!(settled["status"], "FAILED");
    assert_eq!(settled["failureReason"], "PAYMENT_TIMED_OUT");
    let (status, refunded): (String, i64) = app
        .eventually("the late charge to be refunded", || async {
            sqlx::query_as(
                "SELECT p.status, r.amount FROM payment.payments p JOIN payment.refunds r USING (booking_id)
                  WHERE booking_id = $1",
            )
            .bind(booking)
            .fetch_optional(&app.rt.pool)
            .await
            .expect("query")
            .filter(|(status, _): &(String, i64)| status == "refunded")
        })
        .await;
    assert_eq!((status.as_str(), refunded), ("refunded", 120));
    assert_eq!(app.seats_left(flight).await, 3);
    assert_eq!(app.get_json("/v1/loyalty/cust-slow").await["points"], 0);
}
