//! The gateway's rows go once the booking service's rows answer for them: a request
//! row once its booking exists (its owner kept on the booking), a cancel request
//! once the saga has taken it, an idempotency key after 24 h; every read,
//! ownership check and repeat answers as before.

use std::time::Duration;

use airline_gateway::auth::Scope;
use airline_gateway::housekeeping::{Tidied, tidy};
use axum::http::Method;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{Answer, Call, TestGateway, gateway};

const WEEK: Duration = Duration::from_secs(7 * 86_400);

async fn as_key(gw: &TestGateway, key: &str, call: Call) -> Answer {
    gw.send(call.header("x-api-key", key)).await
}

async fn key_id(gw: &TestGateway, name: &str) -> Uuid {
    sqlx::query_scalar("SELECT id FROM gateway.api_keys WHERE name = $1")
        .bind(name)
        .fetch_one(&gw.pool)
        .await
        .expect("the key's id")
}

async fn count(gw: &TestGateway, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&gw.pool)
        .await
        .expect("count")
}

/// The booking service's row for a request, as it writes it from `booking.requested`
/// (`owner`: the message's `apiKeyId`; `None` as from an older booking worker).
async fn saga_started(gw: &TestGateway, id: Uuid, owner: Option<Uuid>, state: &str) {
    sqlx::query(
        "INSERT INTO booking.bookings (id, state, version, outbound_flight_id, customer_id, api_key_id)
         SELECT id, $2, 1, outbound_flight_id, customer_id, $3 FROM gateway.booking_requests WHERE id = $1",
    )
    .bind(id)
    .bind(state)
    .bind(owner)
    .execute(&gw.pool)
    .await
    .expect("a saga row");
}

async fn book(gw: &TestGateway, key: &str, customer: &str, flight: Uuid) -> Uuid {
    let answer = as_key(
        gw,
        key,
        Call::new(Method::POST, "/v1/bookings")
            .header("idempotency-key", &format!("order-{customer}"))
            .json(&json!({ "outboundFlightId": flight, "customerId": customer, "paymentToken": "tok_visa" })),
    )
    .await;
    assert_eq!(answer.status(), 202, "{}", answer.text);
    answer.json()["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("an id")
}

#[tokio::test]
async fn a_request_row_goes_once_its_booking_exists_and_its_owner_stays() {
    let gw = gateway().await;
    let stop = CancellationToken::new();
    let flight = gw.create_flight(5).await;
    let mine = gw.key("mine", Scope::Client, 1000, 1000).await;
    let theirs = gw.key("theirs", Scope::Client, 1000, 1000).await;
    let mine_id = key_id(&gw, "mine").await;
    let id = book(&gw, &mine, "cust-tidy", flight).await;

    // The request carries its owner to the booking service.
    let body: Vec<u8> = sqlx::query_scalar(
        "SELECT body FROM messaging.outbox WHERE message_type = 'booking.requested.v1'",
    )
    .fetch_one(&gw.pool)
    .await
    .expect("the outbox row");
    let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(body["apiKeyId"], mine_id.to_string());

    // Before the saga starts, nothing is settled: it reads PENDING.
    assert_eq!(
        tidy(&gw.pool, WEEK, &stop).await.expect("tidied"),
        Tidied::default()
    );
    assert_eq!(
        gw.get(&format!("/v1/bookings/{id}")).await.json()["status"],
        "PENDING"
    );

    saga_started(&gw, id, Some(mine_id), "CONFIRMED").await;
    let tidied = tidy(&gw.pool, WEEK, &stop).await.expect("tidied");
    assert_eq!(tidied.requests, 1);
    assert_eq!(
        count(&gw, "SELECT count(*) FROM gateway.booking_requests").await,
        0
    );

    // Read alone and in the list, once, as before.
    assert_eq!(
        gw.get(&format!("/v1/bookings/{id}")).await.json()["status"],
        "CONFIRMED"
    );
    let list = gw.get("/v1/bookings?customerId=cust-tidy").await.json();
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");
    // A repeat under the idempotency key answers the same booking.
    assert_eq!(book(&gw, &mine, "cust-tidy", flight).await, id);
    // Only its owner (or an admin) may cancel it.
    let cancel = Call::new(Method::POST, &format!("/v1/bookings/{id}/cancel"));
    as_key(&gw, &theirs, cancel).await.problem(404);
    let cancel = Call::new(Method::POST, &format!("/v1/bookings/{id}/cancel"));
    let answer = as_key(&gw, &mine, cancel).await;
    assert_eq!(answer.status(), 202, "{}", answer.text);
}

#[tokio::test]
async fn an_owner_only_on_the_request_row_is_copied_to_the_booking_first() {
    let gw = gateway().await;
    let stop = CancellationToken::new();
    let flight = gw.create_flight(5).await;
    let mine = gw.key("mine", Scope::Client, 1000, 1000).await;
    let theirs = gw.key("theirs", Scope::Client, 1000, 1000).await;
    let mine_id = key_id(&gw, "mine").await;
    let id = book(&gw, &mine, "cust-old", flight).await;
    // A booking worker of before the owner travelled in the message.
    saga_started(&gw, id, None, "CONFIRMED").await;
    assert_eq!(
        tidy(&gw.pool, WEEK, &stop).await.expect("tidied").requests,
        1
    );
    let owner: Option<Uuid> =
        sqlx::query_scalar("SELECT api_key_id FROM booking.bookings WHERE id = $1")
            .bind(id)
            .fetch_one(&gw.pool)
            .await
            .expect("the booking");
    assert_eq!(owner, Some(mine_id));
    let cancel = Call::new(Method::POST, &format!("/v1/bookings/{id}/cancel"));
    as_key(&gw, &theirs, cancel).await.problem(404);
    let cancel = Call::new(Method::POST, &format!("/v1/bookings/{id}/cancel"));
    assert_eq!(as_key(&gw, &mine, cancel).await.status(), 202);
}

#[tokio::test]
async fn a_request_whose_saga_never_started_goes_after_the_window() {
    let gw = gateway().await;
    let stop = CancellationToken::new();
    let flight = gw.create_flight(5).await;
    let (young, old) = (Uuid::now_v7(), Uuid::now_v7());
    for (id, age) in [(young, "1 hour"), (old, "8 days")] {
        sqlx::query(
            "INSERT INTO gateway.booking_requests (id, customer_id, outbound_flight_id, created_at)
             VALUES ($1, 'cust-orphan', $2, now() - $3::interval)",
        )
        .bind(id)
        .bind(flight)
        .bind(age)
        .execute(&gw.pool)
        .await
        .expect("a request");
    }
    assert_eq!(
        tidy(&gw.pool, WEEK, &stop).await.expect("tidied").requests,
        1
    );
    assert_eq!(
        gw.get(&format!("/v1/bookings/{young}")).await.json()["status"],
        "PENDING"
    );
    gw.get(&format!("/v1/bookings/{old}")).await.problem(404);
}

#[tokio::test]
async fn cancel_requests_go_once_taken_and_idempotency_keys_after_a_day() {
    let gw = gateway().await;
    let stop = CancellationToken::new();
    let flight = gw.create_flight(5).await;
    let mine = gw.key("mine", Scope::Client, 1000, 1000).await;
    let mine_id = key_id(&gw, "mine").await;
    let id = book(&gw, &mine, "cust-cancel", flight).await;
    saga_started(&gw, id, Some(mine_id), "CONFIRMED").await;
    let cancel = || Call::new(Method::POST, &format!("/v1/bookings/{id}/cancel"));
    assert_eq!(as_key(&gw, &mine, cancel()).await.status(), 202);

    // Not taken by the saga yet: kept, the booking reads CANCELLING.
    assert_eq!(
        tidy(&gw.pool, WEEK, &stop).await.expect("tidied").cancels,
        0
    );
    assert_eq!(
        gw.get(&format!("/v1/bookings/{id}")).await.json()["status"],
        "CANCELLING"
    );
    sqlx::query("UPDATE booking.bookings SET state = 'CANCEL_REFUNDING' WHERE id = $1")
        .bind(id)
        .execute(&gw.pool)
        .await
        .expect("the saga moves");
    assert_eq!(
        tidy(&gw.pool, WEEK, &stop).await.expect("tidied").cancels,
        1
    );
    assert_eq!(
        count(&gw, "SELECT count(*) FROM gateway.cancel_requests").await,
        0
    );
    assert_eq!(
        gw.get(&format!("/v1/bookings/{id}")).await.json()["status"],
        "CANCELLING"
    );
    as_key(&gw, &mine, cancel()).await.problem(409);

    // The booking's key is a day old: forgotten; a fresh one stays.
    assert_eq!(
        count(&gw, "SELECT count(*) FROM gateway.idempotency_keys").await,
        1
    );
    sqlx::query("UPDATE gateway.idempotency_keys SET created_at = now() - interval '25 hours'")
        .execute(&gw.pool)
        .await
        .expect("aged");
    book(&gw, &mine, "cust-fresh", flight).await;
    assert_eq!(tidy(&gw.pool, WEEK, &stop).await.expect("tidied").keys, 1);
    let left: Vec<String> = sqlx::query_scalar("SELECT key FROM gateway.idempotency_keys")
        .fetch_all(&gw.pool)
        .await
        .expect("keys");
    assert_eq!(left, ["order-cust-fresh"]);
}
