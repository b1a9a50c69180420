//! Bookings over HTTP, up to the outbox: validation, idempotency keys, what is
//! recorded and published, and the list's statuses.

use axum::http::Method;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{Call, TestGateway, gateway, names_field};

async fn book_with_key(
    gw: &TestGateway,
    key: &str,
    body: &serde_json::Value,
) -> crate::helpers::Answer {
    gw.admin(
        Call::new(Method::POST, "/v1/bookings")
            .header("idempotency-key", key)
            .json(body),
    )
    .await
}

#[tokio::test]
async fn bad_booking_input_gets_problems_naming_the_field() {
    let gw = gateway().await;
    let flight = gw.create_flight(3).await;
    let valid =
        json!({ "outboundFlightId": flight, "customerId": "c-1", "paymentToken": "tok_visa" });

    let response = gw
        .admin(
            Call::new(Method::POST, "/v1/bookings")
                .raw("application/json", "{\"outboundFlightId\": "),
        )
        .await;
    assert!(names_field(&response.problem(400), "(body)"));
    for field in ["outboundFlightId", "customerId", "paymentToken"] {
        let mut body = valid.clone();
        body.as_object_mut().expect("object").remove(field);
        assert!(
            names_field(&gw.post("/v1/bookings", &body).await.problem(400), field),
            "{field}"
        );
    }
    for token in ["visa", "tok_", "tok_no spaces", ""] {
        let mut body = valid.clone();
        body["paymentToken"] = json!(token);
        let p = gw.post("/v1/bookings", &body).await.problem(400);
        assert!(names_field(&p, "paymentToken"), "{token}: {p}");
    }
    let mut body = valid.clone();
    body["outboundFlightId"] = json!(Uuid::now_v7());
    assert!(names_field(
        &gw.post("/v1/bookings", &body).await.problem(422),
        "outboundFlightId"
    ));
    let response = gw
        .admin(Call::new(Method::POST, "/v1/bookings").raw("text/plain", valid.to_string()))
        .await;
    response.problem(415);
    gw.get(&format!("/v1/bookings/{}", Uuid::now_v7()))
        .await
        .problem(404);
    gw.get("/v1/nowhere").await.problem(404);
    assert!(names_field(
        &gw.get("/v1/bookings").await.problem(400),
        "customerId"
    ));
    assert!(names_field(
        &gw.get("/v1/bookings?customerId=c&status=LOST")
            .await
            .problem(400),
        "status"
    ));
    assert!(
        gw.recorder.published().is_empty(),
        "nothing refused was published"
    );
}

#[tokio::test]
async fn a_booking_accepted_is_recorded_and_published() {
    let gw = gateway().await;
    let flight = gw.create_flight(3).await;
    let answer = gw
        .post(
            "/v1/bookings",
            &json!({ "outboundFlightId": flight, "customerId": "c-1", "paymentToken": "tok_visa" }),
        )
        .await;
    assert_eq!(answer.status(), 202, "{}", answer.text);
    let body = answer.json();
    assert_eq!(body["status"], "PENDING");
    let id: Uuid = body["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("an id");
    assert_eq!(
        answer.header("location"),
        Some(format!("/v1/bookings/{id}").as_str())
    );
    let (customer, outbound): (String, Uuid) = sqlx::query_as(
        "SELECT customer_id, outbound_flight_id FROM gateway.booking_requests WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&gw.pool)
    .await
    .expect("the gateway's record of the request");
    assert_eq!((customer.as_str(), outbound), ("c-1", flight));
    assert_eq!(gw.published_types().await, ["booking.requested.v1"]);
    // Until the saga starts, the booking reads PENDING, alone and in the list.
    let one = gw.get(&format!("/v1/bookings/{id}")).await.json();
    assert_eq!(one["status"], "PENDING");
    let pending = gw
        .get("/v1/bookings?customerId=c-1&status=PENDING")
        .await
        .json();
    assert_eq!(pending["items"][0]["id"], id.to_string());
    let confirmed = gw
        .get("/v1/bookings?customerId=c-1&status=CONFIRMED")
        .await
        .json();
    assert_eq!(confirmed["items"], json!([]));
    assert!(
        !one.to_string().contains("tok_"),
        "the payment token is never returned"
    );
}

#[tokio::test]
async fn concurrent_requests_under_one_idempotency_key_accept_one_booking() {
    let gw = gateway().await;
    let flight = gw.create_flight(5).await;
    let body = json!({ "outboundFlightId": flight, "customerId": "cust-idem", "paymentToken": "tok_visa" });

    let answers =
        futures_util::future::join_all((0..5).map(|_| book_with_key(&gw, "order-42", &body))).await;
    let mut ids = Vec::new();
    for answer in answers {
        assert_eq!(answer.status(), 202, "{}", answer.text);
        ids.push(answer.json()["id"].as_str().expect("id").to_owned());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every answer names the same booking");
    let again = book_with_key(&gw, "order-42", &body).await.json();
    assert_eq!(again["id"], ids[0]);
    assert_eq!(
        gw.published_types().await,
        ["booking.requested.v1"],
        "one saga"
    );
    let requests: i64 = sqlx::query_scalar("SELECT count(*) FROM gateway.booking_requests")
        .fetch_one(&gw.pool)
        .await
        .expect("count");
    assert_eq!(requests, 1);

    let mut other = body.clone();
    other["paymentToken"] = json!("tok_mastercard");
    let p = book_with_key(&gw, "order-42", &other).await.problem(422);
    assert!(names_field(&p, "Idempotency-Key"), "{p}");
    let bad = book_with_key(&gw, "", &body).await;
    assert!(names_field(&bad.problem(400), "Idempotency-Key"));
}

/// Writes booking `id` of `customer` in saga state `state`, as the saga would.
async fn saga_row(gw: &TestGateway, id: Uuid, customer: &str, flight: Uuid, state: &str) {
    sqlx::query(
        "INSERT INTO gateway.booking_requests (id, customer_id, outbound_flight_id, created_at)
         VALUES ($1, $2, $3, now())",
    )
    .bind(id)
    .bind(customer)
    .bind(flight)
    .execute(&gw.pool)
    .await
    .expect("a request");
    sqlx::query(
        "INSERT INTO booking.bookings (id, state, version, outbound_flight_id, customer_id)
         VALUES ($1, $2, 1, $3, $4)",
    )
    .bind(id)
    .bind(state)
    .bind(flight)
    .bind(customer)
    .execute(&gw.pool)
    .await
    .expect("a saga row");
}

#[tokio::test]
async fn the_list_filters_by_the_status_a_client_sees() {
    let gw = gateway().await;
    let flight = gw.create_flight(5).await;
    let mut made = Vec::new();
    for state in [
        "COLLECTING_PAYMENT",
        "CONFIRMED",
        "FAILED",
        "CANCEL_REFUNDING",
        "CANCELLED",
        "CONFIRMED",
    ] {
        let id = Uuid::now_v7();
        saga_row(&gw, id, "cust-st", flight, state).await;
        made.push(id);
    }
    // The last CONFIRMED one's cancellation was accepted: it reads CANCELLING.
    sqlx::query("INSERT INTO gateway.cancel_requests (booking_id) VALUES ($1)")
        .bind(made[5])
        .execute(&gw.pool)
        .await
        .expect("a cancel request");
    let ids = |status: &str| {
        let gw = &gw;
        let status = status.to_owned();
        async move {
            let page = gw
                .get(&format!("/v1/bookings?customerId=cust-st&status={status}"))
                .await
                .json();
            page["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|b| {
                    assert_eq!(b["status"], status.as_str());
                    b["id"].as_str().expect("id").to_owned()
                })
                .collect::<Vec<_>>()
        }
    };
    let s = |i: usize| made[i].to_string();
    assert_eq!(ids("PENDING").await, [s(0)]);
    assert_eq!(ids("CONFIRMED").await, [s(1)]);
    assert_eq!(ids("FAILED").await, [s(2)]);
    assert_eq!(ids("CANCELLING").await, [s(5), s(3)]);
    assert_eq!(ids("CANCELLED").await, [s(4)]);
    let one = gw.get(&format!("/v1/bookings/{}", made[5])).await.json();
    assert_eq!(one["status"], "CANCELLING");
}

#[tokio::test]
async fn a_body_is_refused_naming_every_field_at_fault() {
    let gw = gateway().await;
    let p = gw.post("/v1/bookings", &json!({})).await.problem(400);
    for field in ["outboundFlightId", "customerId", "paymentToken"] {
        assert!(names_field(&p, field), "{field}: {p}");
    }
    let p = gw
        .post(
            "/v1/bookings",
            &json!({ "outboundFlightId": "x", "customerId": "c", "paymentToken": "visa" }),
        )
        .await
        .problem(400);
    assert!(
        names_field(&p, "outboundFlightId") && names_field(&p, "paymentToken"),
        "{p}"
    );
    let p = gw
        .post(
            "/v1/bookings",
            &json!({ "outboundFlightId": Uuid::now_v7(), "customerId": 7, "paymentToken": "tok_visa" }),
        )
        .await
        .problem(400);
    assert!(
        names_field(&p, "customerId"),
        "a wrong JSON type is named: {p}"
    );
    let p = gw.post("/v1/bookings", &json!([1, 2])).await.problem(400);
    assert!(names_field(&p, "(body)"), "{p}");
    let huge = format!("{{\"customerId\": \"{}\"}}", "x".repeat(70 * 1024));
    gw.admin(Call::new(Method::POST, "/v1/bookings").raw("application/json", huge))
        .await
        .problem(413);
    let p = gw.get("/v1/webhooks/not-a-uuid").await.problem(400);
    assert!(names_field(&p, "id"), "{p}");
    let p = gw
        .admin(Call::new(Method::POST, "/v1/bookings/not-a-uuid/cancel"))
        .await
        .problem(400);
    assert!(names_field(&p, "id"), "{p}");
    assert!(gw.recorder.published().is_empty());
}
