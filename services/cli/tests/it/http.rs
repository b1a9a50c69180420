//! The gateway's HTTP contract with the whole system running: what needs the saga
//! or the broker (the HTTP layer alone is tested in services/gateway/tests/it).

use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, problem, spawn_app};

fn names_field(problem: &Value, field: &str) -> bool {
    problem["invalidParams"]
        .as_array()
        .is_some_and(|a| a.iter().any(|p| p["name"] == field))
        && problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains(field))
}

async fn list(app: &TestApp, query: &str) -> Vec<Value> {
    app.get_json(&format!("/v1/bookings?{query}")).await["items"]
        .as_array()
        .cloned()
        .expect("items")
}

#[tokio::test]
async fn a_customer_lists_their_bookings_by_status_and_never_sees_the_card_token() {
    let app = spawn_app().await;
    let flight = app.create_flight(5).await;
    let ok = app.book(flight, "cust-list", "tok_visa").await;
    let declined = app.book(flight, "cust-list", "tok_chargeDeclined").await;
    app.book(flight, "someone-else", "tok_visa").await;
    app.settled(ok).await;
    app.settled(declined).await;

    let all = list(&app, "customerId=cust-list").await;
    let ids: Vec<&str> = all.iter().filter_map(|b| b["id"].as_str()).collect();
    assert_eq!(
        ids,
        [declined.to_string(), ok.to_string()],
        "newest first, only this customer's"
    );
    assert_eq!(
        list(&app, "customerId=cust-list&status=CONFIRMED")
            .await
            .len(),
        1
    );
    assert_eq!(
        list(&app, "customerId=cust-list&status=FAILED").await[0]["failureReason"],
        "PAYMENT_DECLINED"
    );
    let page = app
        .get_json("/v1/bookings?customerId=cust-list&limit=1")
        .await;
    let cursor = page["nextCursor"].as_str().expect("a second page");
    assert_eq!(
        list(
            &app,
            &format!("customerId=cust-list&limit=1&cursor={cursor}")
        )
        .await[0]["id"],
        ok.to_string()
    );

    let one = app
        .get(&format!("/v1/bookings/{ok}"))
        .await
        .text()
        .await
        .expect("body");
    let listed = app
        .get("/v1/bookings?customerId=cust-list")
        .await
        .text()
        .await
        .expect("body");
    assert!(
        !one.contains("tok_") && !listed.contains("tok_"),
        "the payment token is never returned"
    );
}

#[tokio::test]
async fn health_and_openapi_are_served() {
    let app = spawn_app().await;
    let health = app.get_json("/healthz").await;
    assert_eq!(
        health,
        json!({ "status": "ok", "broker": "up", "database": "up" })
    );
    // The document itself, and that it lists every route, are tested on the
    // gateway alone (services/gateway/tests/it/openapi.rs).
    let doc = app.get_json("/openapi.json").await;
    assert!(doc["paths"]["/v1/bookings"]["post"].is_object());

    let huge = format!("{{\"customerId\": \"{}\"}}", "x".repeat(3 * 1024 * 1024));
    let response = app
        .http
        .post(app.url("/v1/bookings"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .expect("sent");
    problem(response, 413).await;
}

async fn post_with_key(app: &TestApp, key: &str, body: &Value) -> reqwest::Response {
    app.http
        .post(app.url("/v1/bookings"))
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .expect("sent")
}

#[tokio::test]
async fn an_idempotency_key_starts_one_saga_however_often_it_is_sent() {
    let app = spawn_app().await;
    let flight = app.create_flight(5).await;
    let body = json!({ "outboundFlightId": flight, "customerId": "cust-idem", "paymentToken": "tok_visa" });

    let answers =
        futures_util::future::join_all((0..5).map(|_| post_with_key(&app, "order-42", &body)))
            .await;
    let mut ids = Vec::new();
    for answer in answers {
        assert_eq!(answer.status(), 202);
        let b: Value = answer.json().await.expect("json");
        ids.push(b["id"].as_str().expect("id").to_owned());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every answer names the same booking");
    let booking: Uuid = ids[0].parse().expect("uuid");
    assert_eq!(app.settled(booking).await["status"], "CONFIRMED");
    let again: Value = post_with_key(&app, "order-42", &body)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(again["id"], ids[0]);
    assert_eq!(list(&app, "customerId=cust-idem").await.len(), 1);
    assert_eq!(app.seats_left(flight).await, 4);

    let mut other = body.clone();
    other["paymentToken"] = json!("tok_mastercard");
    let p = problem(post_with_key(&app, "order-42", &other).await, 422).await;
    assert!(names_field(&p, "Idempotency-Key"), "{p}");
    let bad = app
        .http
        .post(app.url("/v1/bookings"))
        .header("idempotency-key", "")
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert!(names_field(&problem(bad, 400).await, "Idempotency-Key"));
}

#[tokio::test]
async fn only_a_confirmed_booking_checks_in() {
    let app = spawn_app().await;
    let flight = app.create_flight(5).await;
    let ok = app.book(flight, "cust-checkin", "tok_visa").await;
    let declined = app.book(flight, "cust-checkin", "tok_chargeDeclined").await;
    app.settled(ok).await;
    app.settled(declined).await;

    for _ in 0..2 {
        let response = app
            .http
            .post(app.url(&format!("/v1/bookings/{ok}/check-in")))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200);
        let b: Value = response.json().await.expect("json");
        assert_eq!(b["checkedIn"], true);
    }
    assert_eq!(
        app.get_json(&format!("/v1/bookings/{ok}")).await["checkedIn"],
        true
    );
    let refused = app
        .http
        .post(app.url(&format!("/v1/bookings/{declined}/check-in")))
        .send()
        .await
        .expect("sent");
    let p = problem(refused, 409).await;
    assert!(
        p["detail"].as_str().is_some_and(|d| d.contains("FAILED")),
        "{p}"
    );
    let unknown = app
        .http
        .post(app.url(&format!("/v1/bookings/{}/check-in", Uuid::now_v7())))
        .send()
        .await
        .expect("sent");
    problem(unknown, 404).await;
}

#[tokio::test]
async fn request_ids_are_taken_or_made_and_always_returned() {
    let app = spawn_app().await;
    let given = app
        .http
        .get(app.url("/healthz"))
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .expect("sent");
    assert_eq!(given.headers()["x-request-id"], "trace-me-123");
    let made = app.get("/v1/flights").await;
    let id = made.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(Uuid::parse_str(&id).is_ok(), "{id}");
    let error = app.get("/v1/nowhere").await;
    assert!(error.headers().contains_key("x-request-id"));
    let big = format!("{{\"customerId\": \"{}\"}}", "x".repeat(70 * 1024));
    let response = app
        .http
        .post(app.url("/v1/bookings"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .expect("sent");
    problem(response, 413).await;
}

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_move_with_a_booking() {
    let app = spawn_app().await;
    let flight = app.create_flight(5).await;
    let before = app.get("/metrics").await.text().await.expect("metrics");
    let handled = r#"airline_deliveries_total{outcome="handled",queue="booking.requested",type="booking.requested.v1"}"#;
    let confirmed = r#"airline_booking_duration_seconds_count{outcome="CONFIRMED"}"#;
    let posts = r#"airline_http_requests_total{method="POST",route="/v1/bookings",status="202"}"#;

    let booking = app.book(flight, "cust-metrics", "tok_visa").await;
    app.settled(booking).await;
    let after = app.get("/metrics").await.text().await.expect("metrics");

    for name in [handled, confirmed, posts] {
        assert!(
            metric(&after, name) >= metric(&before, name) + 1.0,
            "{name} did not move:\n{after}"
        );
    }
    assert!(
        metric(&after, r#"airline_sagas{state="CONFIRMED"}"#) >= 1.0,
        "{after}"
    );
    assert!(
        after.contains(r#"airline_queue_depth{queue="payment.collect"}"#),
        "{after}"
    );
    assert!(
        after.contains("airline_handler_duration_seconds_bucket"),
        "{after}"
    );
}
