//! The gateway as an edge with the system running: open routes, `airline apikey`
//! as an operator uses it, request ids across the flow (401, 403, 429 and CORS are
//! tested on the gateway alone, services/gateway/tests/it/edge.rs).

use serde_json::Value;

use crate::helpers::{client_with_key, spawn_app};

#[tokio::test]
async fn health_metrics_and_the_api_description_stay_open() {
    // The 401s themselves are tested on the gateway alone
    // (services/gateway/tests/it/edge.rs); /healthz needs the broker up.
    let app = spawn_app().await;
    let anonymous = airline_runtime::http_client().build().expect("a client");
    // Health, metrics and the API description stay open.
    for path in ["/healthz", "/metrics", "/openapi.json"] {
        let response = anonymous.get(app.url(path)).send().await.expect("sent");
        assert_eq!(response.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn operators_create_list_and_revoke_keys() {
    let app = spawn_app().await;
    let (code, out, err) = app.cli(
        &[
            "apikey",
            "create",
            "--name",
            "partner-1",
            "--rate",
            "5",
            "--burst",
            "2",
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{err}");
    let key = out
        .lines()
        .last()
        .expect("the key is the last line")
        .to_owned();
    assert!(key.starts_with("air_"), "{out}");
    let client = client_with_key(&key);
    let response = client
        .get(app.url("/v1/flights"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["ratelimit-policy"],
        "\"default\";q=2;w=1"
    );

    let (code, out, _) = app.cli(&["apikey", "list"], &[]);
    assert_eq!(code, Some(0));
    assert!(out.contains("partner-1") && out.contains("client"), "{out}");
    assert!(!out.contains(&key), "the list must not show the key");
    let stored: String =
        sqlx::query_scalar("SELECT key_hash FROM gateway.api_keys WHERE name = 'partner-1'")
            .fetch_one(&app.rt.pool)
            .await
            .expect("stored");
    assert_ne!(stored, key);
    assert!(!stored.contains(&key[4..]), "only a hash is stored");

    let (code, _, err) = app.cli(&["apikey", "create", "--name", "partner-1"], &[]);
    assert_eq!(code, Some(2), "a name in use: {err}");
    assert!(err.contains("exists already"), "{err}");
    let (code, _, err) = app.cli(&["apikey", "create", "--name", "bad name!"], &[]);
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = app.cli(&["apikey", "revoke", "nobody"], &[]);
    assert_eq!(code, Some(2), "{err}");

    let (code, out, err) = app.cli(&["apikey", "revoke", "partner-1"], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("revoked partner-1"));
    // The gateway trusts what it read for a few seconds; then the key is refused.
    app.eventually("the revoked key to be refused", || async {
        let response = client
            .get(app.url("/v1/flights"))
            .send()
            .await
            .expect("sent");
        (response.status() == 401).then_some(())
    })
    .await;
}

fn request_id_of(d: &lapin::message::Delivery) -> Option<String> {
    let headers = d.properties.headers().as_ref()?;
    match headers.inner().get("x-request-id")? {
        lapin::types::AMQPValue::LongString(s) => Some(s.to_string()),
        _ => None,
    }
}

#[tokio::test]
async fn the_request_id_travels_with_every_message_of_the_flow() {
    let app = spawn_app().await;
    let flight = app.create_flight(3).await;
    let mut tap = app.tap().await;
    let response = app
        .http
        .post(app.url("/v1/bookings"))
        .header("x-request-id", "req-book-42")
        .json(&serde_json::json!({"outboundFlightId": flight, "customerId": "c-rid", "paymentToken": "tok_visa"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.headers()["x-request-id"], "req-book-42");
    let booking: uuid::Uuid = response.json::<Value>().await.expect("json")["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("id");
    // requested, reserve-seat, seat-reserved, collect, collected, confirmed, awarded
    let booked = tap.take(7).await;
    for d in &booked {
        assert_eq!(
            request_id_of(d).as_deref(),
            Some("req-book-42"),
            "{:?}",
            d.properties.kind()
        );
        assert_eq!(
            d.properties
                .correlation_id()
                .as_ref()
                .map(|c| c.to_string()),
            Some(booking.to_string())
        );
    }
    let response = app
        .http
        .post(app.url(&format!("/v1/bookings/{booking}/cancel")))
        .header("x-request-id", "req-cancel-7")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 202);
    // cancel, refund, refunded, release-seat, released, cancelled
    let cancelled = tap.take(6).await;
    let kinds: Vec<String> = cancelled
        .iter()
        .map(|d| {
            d.properties
                .kind()
                .as_ref()
                .map(|k| k.to_string())
                .unwrap_or_default()
        })
        .collect();
    assert!(
        kinds.contains(&"booking.cancelled.v1".to_owned()),
        "{kinds:?}"
    );
    for d in &cancelled {
        assert_eq!(
            request_id_of(d).as_deref(),
            Some("req-cancel-7"),
            "{kinds:?}"
        );
    }
}
