//! The gateway as an edge: API keys (401, 403), rate limits (429 and the RateLimit
//! headers), and `airline apikey` as an operator uses it.

use airline_gateway::auth::Scope;
use serde_json::Value;

use crate::helpers::{client_with_key, spawn_app};

/// A problem+json answer that also carries its request id.
async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert!(response.headers().contains_key("x-request-id"));
    crate::helpers::problem(response, status).await
}

#[tokio::test]
async fn without_a_live_key_a_client_gets_nowhere() {
    let app = spawn_app().await;
    let anonymous = airline_runtime::http_client().build().expect("a client");
    for path in [
        "/v1/flights",
        "/v1/bookings?customerId=c",
        "/v1/admin/dead-letters",
    ] {
        let response = anonymous.get(app.url(path)).send().await.expect("sent");
        assert_eq!(
            response.headers()["www-authenticate"],
            "ApiKey header=\"x-api-key\""
        );
        let p = problem(response, 401).await;
        assert!(
            p["detail"]
                .as_str()
                .is_some_and(|d| d.contains("x-api-key")),
            "{p}"
        );
    }
    let made_up =
        client_with_key("air_0000000000000000000000000000000000000000000000000000000000000000");
    let response = made_up
        .get(app.url("/v1/flights"))
        .send()
        .await
        .expect("sent");
    problem(response, 401).await;
    // A booking without a key starts nothing.
    let response = anonymous
        .post(app.url("/v1/bookings"))
        .json(&serde_json::json!({"outboundFlightId": uuid::Uuid::now_v7(), "customerId": "c", "paymentToken": "tok_visa"}))
        .send()
        .await
        .expect("sent");
    problem(response, 401).await;
    let requests: i64 = sqlx::query_scalar("SELECT count(*) FROM gateway.booking_requests")
        .fetch_one(&app.rt.pool)
        .await
        .expect("count");
    assert_eq!(requests, 0);
    // Health, metrics and the API description stay open.
    for path in ["/healthz", "/metrics", "/openapi.json"] {
        let response = anonymous.get(app.url(path)).send().await.expect("sent");
        assert_eq!(response.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn a_client_key_books_but_does_not_administer() {
    let app = spawn_app().await;
    let flight = app.create_flight(3).await;
    let (_, client) = app.key("shop", Scope::Client, 100, 50).await;
    let response = client
        .get(app.url(&format!("/v1/flights/{flight}")))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("ratelimit"));
    let response = client
        .post(app.url("/v1/bookings"))
        .json(&serde_json::json!({"outboundFlightId": flight, "customerId": "c", "paymentToken": "tok_visa"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 202);
    let response = client
        .post(app.url("/v1/flights"))
        .json(&crate::helpers::flight_body(3))
        .send()
        .await
        .expect("sent");
    let p = problem(response, 403).await;
    assert!(
        p["detail"].as_str().is_some_and(|d| d.contains("admin")),
        "{p}"
    );
    for path in ["/v1/admin/dead-letters", "/v1/admin/dead-letters/1"] {
        let response = client.get(app.url(path)).send().await.expect("sent");
        problem(response, 403).await;
    }
    let response = client
        .post(app.url("/v1/admin/dead-letters/drain"))
        .send()
        .await
        .expect("sent");
    problem(response, 403).await;
}

#[tokio::test]
async fn a_burst_of_200_admits_the_burst_then_the_rate() {
    let app = spawn_app().await;
    let (_, client) = app.key("flood", Scope::Client, 100, 50).await;
    let url = app.url("/v1/flights?limit=1");
    let started = std::time::Instant::now();
    let responses = futures_util::future::join_all((0..200).map(|_| client.get(&url).send())).await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut admitted = 0;
    let mut limited = Vec::new();
    for r in responses {
        let r = r.expect("sent");
        match r.status().as_u16() {
            200 => admitted += 1,
            429 => limited.push(r),
            other => panic!("unexpected status {other}"),
        }
    }
    // The burst, plus what the rate refilled while the 200 were being answered.
    let most = 50 + (100.0 * elapsed).ceil() as usize + 1;
    assert!(
        (50..=most).contains(&admitted),
        "{admitted} admitted in {elapsed:.3} s (expected 50..={most})"
    );
    assert_eq!(admitted + limited.len(), 200);
    let r = limited.pop().expect("some were limited");
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!(retry >= 1);
    assert_eq!(r.headers()["ratelimit-policy"], "\"default\";q=50;w=1");
    let limit = r.headers()["ratelimit"].to_str().expect("ascii").to_owned();
    assert!(limit.starts_with("\"default\";r=0;t="), "{limit}");
    let p = problem(r, 429).await;
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.contains("100 requests per second")),
        "{p}"
    );
    // Another key is not slowed by the flood.
    let (_, other) = app.key("calm", Scope::Client, 100, 50).await;
    let response = other.get(&url).send().await.expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["ratelimit"], "\"default\";r=49;t=1");
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

#[tokio::test]
async fn cors_is_off_unless_origins_are_configured() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(app.url("/v1/flights"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-origin")
    );
    drop(app);

    let app = crate::helpers::spawn_app_with(|c| {
        c.http.cors_origins = vec!["https://app.example.com".into()];
    })
    .await;
    // A browser's preflight carries no key and is answered.
    let preflight = airline_runtime::http_client()
        .build()
        .expect("a client")
        .request(reqwest::Method::OPTIONS, app.url("/v1/bookings"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "x-api-key,content-type")
        .send()
        .await
        .expect("sent");
    assert_eq!(preflight.status(), 200);
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let allowed = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(allowed.contains("x-api-key"), "{allowed}");
    let response = app
        .http
        .get(app.url("/v1/flights"))
        .header("origin", "https://elsewhere.example.com")
        .send()
        .await
        .expect("sent");
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-origin")
    );
}
