//! The OpenAPI document: generated from the router's handlers, served as is, and
//! checked in as services/gateway/openapi.json.

use axum::http::Method;
use serde_json::Value;

use crate::helpers::{Call, gateway};

const CHECKED_IN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");

#[test]
fn the_checked_in_openapi_document_is_the_generated_one() {
    let generated = airline_gateway::openapi();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(CHECKED_IN, format!("{generated}\n")).expect("openapi.json written");
        return;
    }
    let checked_in = std::fs::read_to_string(CHECKED_IN).unwrap_or_default();
    assert!(
        checked_in.trim_end() == generated,
        "services/gateway/openapi.json is not the document the gateway serves; \
         regenerate it with `UPDATE_OPENAPI=1 cargo test -p airline-gateway --test it openapi` \
         and commit the result"
    );
}

#[tokio::test]
async fn the_openapi_document_is_served_and_every_operation_is_routed() {
    let gw = gateway().await;
    let served = gw.send(Call::new(Method::GET, "/openapi.json")).await;
    assert_eq!(served.status(), 200);
    assert_eq!(served.text, airline_gateway::openapi());
    let doc = served.json();
    // The router is built from the same list (utoipa-axum's routes!), so every
    // route is documented by construction; the other way round, every documented
    // operation reaches a handler: not the fallback's 404 nor a 405.
    let paths = doc["paths"].as_object().expect("paths");
    let mut operations = 0;
    for (path, item) in paths {
        let uri = path
            .replace("{id}", "1")
            .replace("{customerId}", "cust-doc");
        for method in item.as_object().expect("a path item").keys() {
            let method: Method = method.to_uppercase().parse().expect("a method");
            let answer = gw.admin(Call::new(method.clone(), &uri)).await;
            let routed = answer.status() != 405
                && !(answer.status() == 404 && answer.text.contains("no such route"));
            assert!(
                routed,
                "{method} {path}: {} {}",
                answer.status(),
                answer.text
            );
            operations += 1;
        }
    }
    assert_eq!(operations, 24, "every route of the gateway");
    // Open routes need no key; everything else says it needs one.
    for open in ["/healthz", "/metrics", "/openapi.json"] {
        assert_eq!(
            doc["paths"][open]["get"]["security"],
            Value::Array(vec![]),
            "{open}"
        );
    }
    assert_eq!(doc["security"][0]["apiKey"], Value::Array(vec![]));
    assert_eq!(
        doc["components"]["securitySchemes"]["apiKey"]["name"],
        "x-api-key"
    );
}

#[test]
fn every_failure_reason_is_documented() {
    let doc: Value = serde_json::from_str(&airline_gateway::openapi()).expect("JSON");
    let reasons = &doc["components"]["schemas"]["Booking"]["properties"]["failureReason"]["enum"];
    for code in [
        "SOLD_OUT",
        "PAYMENT_DECLINED",
        "PAYMENT_TIMED_OUT",
        "SEAT_RESERVATION_TIMED_OUT",
        "COMPENSATION_FAILED",
    ] {
        assert!(
            reasons
                .as_array()
                .is_some_and(|r| r.iter().any(|c| c == code)),
            "{code} in {reasons}"
        );
    }
}

/// Serves a broker-less gateway on 127.0.0.1:$SERVE_PORT for $SERVE_SECS seconds
/// and prints an admin key: run by hand to point schemathesis at
/// (`cargo test -p airline-gateway --test it serve -- --ignored --nocapture`).
#[tokio::test]
#[ignore = "a server for manual runs of scripts/schemathesis"]
async fn serve() {
    let gw = gateway().await;
    gw.create_flight(5).await;
    let port = std::env::var("SERVE_PORT").unwrap_or_else(|_| "18080".into());
    let secs: u64 = std::env::var("SERVE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}"))
        .await
        .expect("the port");
    println!("AIRLINE_API_KEY={}", gw.key);
    let router = gw.router.clone();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(secs),
        axum::serve(listener, router),
    )
    .await;
}
