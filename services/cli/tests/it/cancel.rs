//! Cancelling a confirmed booking: the cancellation saga refunds, gives the seat
//! back and the points are revoked; only a CONFIRMED booking can be cancelled, and
//! an Idempotency-Key makes a retried cancel safe.

use std::time::Duration;

use airline_gateway::auth::Scope;
use airline_runtime::retry::RetryPolicy;
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

async fn cancel(
    app: &TestApp,
    client: &reqwest::Client,
    booking: Uuid,
    key: Option<&str>,
) -> reqwest::Response {
    let mut request = client.post(app.url(&format!("/v1/bookings/{booking}/cancel")));
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.expect("sent")
}

async fn status_becomes(app: &TestApp, booking: Uuid, status: &str) -> Value {
    app.eventually(&format!("booking {booking} to be {status}"), || async {
        let b = app.get_json(&format!("/v1/bookings/{booking}")).await;
        (b["status"] == status).then_some(b)
    })
    .await
}

async fn ledger(app: &TestApp, booking: Uuid) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT kind, points FROM loyalty.ledger WHERE booking_id = $1 ORDER BY id")
        .bind(booking)
        .fetch_all(&app.rt.pool)
        .await
        .expect("ledger")
}

async fn detail(response: reqwest::Response, status: u16) -> String {
    let p = crate::helpers::problem(response, status).await;
    p["detail"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_confirmed_booking_is_cancelled_refunded_released_and_its_points_revoked() {
    let app = spawn_app().await;
    let flight = app.create_flight(3).await;
    let booking = app.book(flight, "cust-cancel", "tok_visa").await;
    assert_eq!(app.settled(booking).await["status"], "CONFIRMED");
    app.eventually("the points to be awarded", || async {
        (ledger(&app, booking).await.len() == 1).then_some(())
    })
    .await;
    assert_eq!(app.seats_left(flight).await, 2);

    let response = cancel(&app, &app.http, booking, None).await;
    assert_eq!(response.status(), 202);
    assert_eq!(
        response.headers()["location"],
        format!("/v1/bookings/{booking}").as_str()
    );
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], "CANCELLING");
    // From the 202 on, a reader never sees it CONFIRMED again.
    let now = app.get_json(&format!("/v1/bookings/{booking}")).await;
    assert!(
        now["status"] == "CANCELLING" || now["status"] == "CANCELLED",
        "{now}"
    );
    let listed = app
        .get_json("/v1/bookings?customerId=cust-cancel&status=CONFIRMED")
        .await;
    let still_confirmed = listed["items"].as_array().map_or(0, Vec::len);
    assert_eq!(still_confirmed, 0, "{listed}");

    let cancelled = status_becomes(&app, booking, "CANCELLED").await;
    assert_eq!(cancelled["failureReason"], Value::Null);
    assert_eq!(app.seats_left(flight).await, 3);
    let (payment, refunded): (String, i64) = sqlx::query_as(
        "SELECT p.status, r.amount FROM payment.payments p JOIN payment.refunds r USING (booking_id)
          WHERE booking_id = $1",
    )
    .bind(booking)
    .fetch_one(&app.rt.pool)
    .await
    .expect("payment and refund");
    assert_eq!((payment.as_str(), refunded), ("refunded", 120));
    app.eventually("the points to be revoked", || async {
        (ledger(&app, booking).await.len() == 2).then_some(())
    })
    .await;
    assert_eq!(
        ledger(&app, booking).await,
        [("award".to_owned(), 120), ("revoke".to_owned(), 120)]
    );
    let profile = app.get_json("/v1/loyalty/cust-cancel").await;
    assert_eq!(profile["points"], 0);
    app.eventually("the customer to be told", || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM notify.notifications WHERE booking_id = $1 AND event_type = 'booking.cancelled'",
        )
        .bind(booking)
        .fetch_one(&app.rt.pool)
        .await
        .expect("count");
        (n == 1).then_some(())
    })
    .await;
    let states = app.saga_states(booking).await;
    assert_eq!(
        states[states.len() - 3..],
        ["CANCEL_REFUNDING", "CANCEL_RELEASING_SEAT", "CANCELLED"]
    );

    // Cancelled is cancelled: a second cancel and a check-in get 409.
    let again = detail(cancel(&app, &app.http, booking, None).await, 409).await;
    assert!(again.contains("cancelled already"), "{again}");
    let response = app
        .http
        .post(app.url(&format!("/v1/bookings/{booking}/check-in")))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 409);
    let listed = app
        .get_json("/v1/bookings?customerId=cust-cancel&status=CANCELLED")
        .await;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1));
    let (code, out, err) = app.cli(&["audit"], &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("cancelled 1"), "{out}");
}

#[tokio::test]
async fn only_a_confirmed_booking_of_ones_own_can_be_cancelled() {
    let app = spawn_app().await;
    let flight = app.create_flight(3).await;
    let declined = app.book(flight, "cust-x", "tok_chargeDeclined").await;
    assert_eq!(app.settled(declined).await["status"], "FAILED");
    let why = detail(cancel(&app, &app.http, declined, None).await, 409).await;
    assert!(why.contains("failed"), "{why}");
    let unknown = detail(cancel(&app, &app.http, Uuid::now_v7(), None).await, 404).await;
    assert!(unknown.contains("no booking"), "{unknown}");
    let response = app
        .http
        .post(app.url("/v1/bookings/not-a-uuid/cancel"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 400);

    // A client key cancels its own bookings, and not another client's.
    let (_, alice) = app.key("alice", Scope::Client, 100, 50).await;
    let (_, mallory) = app.key("mallory", Scope::Client, 100, 50).await;
    let response = alice
        .post(app.url("/v1/bookings"))
        .json(&serde_json::json!({"outboundFlightId": flight, "customerId": "alice", "paymentToken": "tok_visa"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 202);
    let booking: Uuid = response.json::<Value>().await.expect("json")["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("id");
    assert_eq!(app.settled(booking).await["status"], "CONFIRMED");
    detail(cancel(&app, &mallory, booking, None).await, 404).await;
    assert_eq!(cancel(&app, &alice, booking, None).await.status(), 202);
    status_becomes(&app, booking, "CANCELLED").await;
}

#[tokio::test]
async fn a_retried_cancel_with_its_idempotency_key_cancels_once() {
    let app = spawn_app().await;
    let flight = app.create_flight(3).await;
    let booking = app.book(flight, "cust-retry", "tok_visa").await;
    assert_eq!(app.settled(booking).await["status"], "CONFIRMED");

    let key = format!("cancel-{booking}");
    let answers = futures_util::future::join_all(
        (0..8).map(|_| cancel(&app, &app.http, booking, Some(&key))),
    )
    .await;
    for a in answers {
        assert_eq!(a.status(), 202);
        let body: Value = a.json().await.expect("json");
        assert_eq!(body["id"], booking.to_string());
    }
    status_becomes(&app, booking, "CANCELLED").await;
    // Later, the same key still answers as the first time; no key gets the reason.
    assert_eq!(
        cancel(&app, &app.http, booking, Some(&key)).await.status(),
        202
    );
    detail(cancel(&app, &app.http, booking, None).await, 409).await;
    let cancels: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM booking.saga_history WHERE booking_id = $1 AND to_state = 'CANCEL_REFUNDING'",
    )
    .bind(booking)
    .fetch_one(&app.rt.pool)
    .await
    .expect("history");
    assert_eq!(cancels, 1);

    // Two cancels at once without a key: one is accepted, the other told why not.
    let other = app.book(flight, "cust-race", "tok_visa").await;
    assert_eq!(app.settled(other).await["status"], "CONFIRMED");
    let (a, b) = tokio::join!(
        cancel(&app, &app.http, other, None),
        cancel(&app, &app.http, other, None)
    );
    let mut codes = [a.status().as_u16(), b.status().as_u16()];
    codes.sort_unstable();
    assert_eq!(codes, [202, 409]);
    status_becomes(&app, other, "CANCELLED").await;
}

#[tokio::test]
async fn a_cancellation_waits_out_a_refund_outage_and_then_finishes() {
    let mut app = spawn_app_with(|c| {
        c.retry.default = RetryPolicy {
            attempts: 2,
            base: Duration::from_millis(100),
            cap: Duration::from_millis(100),
        };
        c.saga.payment_deadline = Duration::from_secs(2);
    })
    .await;
    let flight = app.create_flight(3).await;
    let booking = app.book(flight, "cust-outage", "tok_visa").await;
    assert_eq!(app.settled(booking).await["status"], "CONFIRMED");

    // The provider's refunds fail: payment retries, then dead-letters the refund.
    app.restart_with(|c| {
        c.faults
            .steps
            .insert(airline_runtime::config::FaultStep::RefundPayment);
    })
    .await;
    assert_eq!(cancel(&app, &app.http, booking, None).await.status(), 202);
    let dead = app.dead_letter("payment.refund").await;
    assert_eq!(
        dead.delivery.properties.kind().as_ref().map(|k| k.as_str()),
        Some("payment.refund.v1")
    );
    let b = app.get_json(&format!("/v1/bookings/{booking}")).await;
    assert_eq!(b["status"], "CANCELLING");

    // The outage ends: the saga asks for the refund again at its deadline.
    app.restart_with(|c| {
        c.faults
            .steps
            .retain(|s| *s != airline_runtime::config::FaultStep::RefundPayment)
    })
    .await;
    status_becomes(&app, booking, "CANCELLED").await;
    assert_eq!(app.seats_left(flight).await, 3);
    let refunds: i64 =
        sqlx::query_scalar("SELECT count(*) FROM payment.refunds WHERE booking_id = $1")
            .bind(booking)
            .fetch_one(&app.rt.pool)
            .await
            .expect("refunds");
    assert_eq!(refunds, 1);
    let history: Vec<String> = sqlx::query_scalar(
        "SELECT note FROM booking.saga_history WHERE booking_id = $1 ORDER BY id",
    )
    .bind(booking)
    .fetch_all(&app.rt.pool)
    .await
    .expect("history");
    assert!(
        history.iter().any(|n| n.contains("asking again")),
        "{history:?}"
    );
}
