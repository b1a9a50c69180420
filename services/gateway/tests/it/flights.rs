//! Flights over HTTP: creation, search paging, and problems naming the field.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{flight_body, gateway, names_field};

#[tokio::test]
async fn flights_are_created_found_and_searched_page_by_page() {
    let gw = gateway().await;
    let response = gw.post("/v1/flights", &flight_body(3)).await;
    assert_eq!(response.status(), 201);
    let location = response.header("location").expect("location").to_owned();
    let created = response.json();
    assert_eq!(
        location,
        format!("/v1/flights/{}", created["id"].as_str().expect("id"))
    );
    assert_eq!(gw.get(&location).await.json(), created);
    for _ in 0..2 {
        gw.create_flight(3).await;
    }
    gw.create_flight(0).await;

    let query = "/v1/flights?departureAirportCode=LGW&arrivalAirportCode=MAD&departureDate=2027-01-15&limit=2";
    let first = gw.get(query).await.json();
    assert_eq!(first["items"].as_array().map(Vec::len), Some(2));
    let cursor = first["nextCursor"].as_str().expect("a next page");
    let second = gw.get(&format!("{query}&cursor={cursor}")).await.json();
    assert_eq!(
        second["items"].as_array().map(Vec::len),
        Some(1),
        "the sold-out flight is not listed"
    );
    assert_eq!(second["nextCursor"], Value::Null);
    let other_day = gw
        .get("/v1/flights?departureAirportCode=LGW&departureDate=2027-01-16")
        .await
        .json();
    assert_eq!(other_day["items"], json!([]));
}

#[tokio::test]
async fn bad_flight_input_gets_problems_naming_the_field() {
    let gw = gateway().await;
    let mut body = flight_body(3);
    body["ticketPrice"] = json!("cheap");
    assert!(names_field(
        &gw.post("/v1/flights", &body).await.problem(400),
        "ticketPrice"
    ));
    let p = gw
        .get("/v1/flights?departureDate=15-01-2027")
        .await
        .problem(400);
    assert!(names_field(&p, "departureDate"));
    let p = gw
        .get("/v1/flights?departureAirportCode=london")
        .await
        .problem(400);
    assert!(names_field(&p, "departureAirportCode"));
    let p = gw.get("/v1/flights?limit=1000").await.problem(400);
    assert!(names_field(&p, "limit"));
    let p = gw.get("/v1/flights?cursor=garbage").await.problem(400);
    assert!(names_field(&p, "cursor"));
    assert!(names_field(
        &gw.get("/v1/flights/not-a-uuid").await.problem(400),
        "id"
    ));
    gw.get(&format!("/v1/flights/{}", Uuid::now_v7()))
        .await
        .problem(404);
    // PostgreSQL text cannot hold NUL: the client hears it, not a 500 (found by
    // schemathesis).
    let mut body = flight_body(3);
    body["departureCity"] = json!("Lon\u{0}don");
    assert!(names_field(
        &gw.post("/v1/flights", &body).await.problem(400),
        "departureCity"
    ));
    let p = gw
        .get("/v1/admin/dead-letters?queue=%00")
        .await
        .problem(400);
    assert!(names_field(&p, "queue"));
    let p = gw.get("/v1/loyalty/cust%00").await.problem(400);
    assert!(names_field(&p, "customerId"));
}
