//! The gateway as an edge: API keys (401, 403), rate limits (429 and the RateLimit
//! headers), the admin routes' guard, and CORS.

use airline_gateway::auth::Scope;
use axum::http::Method;
use serde_json::{Value, json};

use crate::helpers::{Answer, Call, flight_body, gateway, gateway_with};

/// A problem+json answer that also carries its request id.
#[track_caller]
fn problem(answer: &Answer, status: u16) -> Value {
    assert!(answer.header("x-request-id").is_some());
    answer.problem(status)
}

#[tokio::test]
async fn without_a_live_key_a_client_gets_nowhere() {
    let gw = gateway().await;
    for path in [
        "/v1/flights",
        "/v1/bookings?customerId=c",
        "/v1/admin/dead-letters",
    ] {
        let answer = gw.send(Call::new(Method::GET, path)).await;
        assert_eq!(
            answer.header("www-authenticate"),
            Some("ApiKey header=\"x-api-key\"")
        );
        let p = problem(&answer, 401);
        assert!(
            p["detail"]
                .as_str()
                .is_some_and(|d| d.contains("x-api-key")),
            "{p}"
        );
    }
    let made_up = gw
        .send(Call::new(Method::GET, "/v1/flights").header(
            "x-api-key",
            "air_0000000000000000000000000000000000000000000000000000000000000000",
        ))
        .await;
    problem(&made_up, 401);
    // A booking without a key starts nothing.
    let answer = gw
        .send(Call::new(Method::POST, "/v1/bookings").json(
            &json!({"outboundFlightId": uuid::Uuid::now_v7(), "customerId": "c", "paymentToken": "tok_visa"}),
        ))
        .await;
    problem(&answer, 401);
    let requests: i64 = sqlx::query_scalar("SELECT count(*) FROM gateway.booking_requests")
        .fetch_one(&gw.pool)
        .await
        .expect("count");
    assert_eq!(requests, 0);
    assert!(gw.recorder.published().is_empty());
}

#[tokio::test]
async fn a_client_key_books_but_does_not_administer() {
    let gw = gateway().await;
    let flight = gw.create_flight(3).await;
    let key = gw.key("shop", Scope::Client, 100, 50).await;
    let as_client = |call: Call| {
        let key = key.clone();
        let gw = &gw;
        async move { gw.send(call.header("x-api-key", &key)).await }
    };
    let answer = as_client(Call::new(Method::GET, &format!("/v1/flights/{flight}"))).await;
    assert_eq!(answer.status(), 200);
    assert!(answer.header("ratelimit").is_some());
    let answer =
        as_client(Call::new(Method::POST, "/v1/bookings").json(
            &json!({"outboundFlightId": flight, "customerId": "c", "paymentToken": "tok_visa"}),
        ))
        .await;
    assert_eq!(answer.status(), 202);
    let answer = as_client(Call::new(Method::POST, "/v1/flights").json(&flight_body(3))).await;
    let p = problem(&answer, 403);
    assert!(
        p["detail"].as_str().is_some_and(|d| d.contains("admin")),
        "{p}"
    );
    assert!(
        answer.header("ratelimit").is_none() && answer.header("ratelimit-policy").is_none(),
        "a scope refusal carries no rate-limit headers"
    );
    for path in ["/v1/admin/dead-letters", "/v1/admin/dead-letters/1"] {
        let answer = as_client(Call::new(Method::GET, path)).await;
        problem(&answer, 403);
    }
    let answer = as_client(Call::new(Method::POST, "/v1/admin/dead-letters/drain")).await;
    problem(&answer, 403);
    for path in [
        "/v1/admin/dead-letters/7/replay",
        "/v1/admin/dead-letters/7/discard",
        "/v1/admin/dead-letters/replay",
    ] {
        let answer = as_client(Call::new(Method::POST, path)).await;
        problem(&answer, 403);
    }
    // Only those routes: a client searches flights, and a look-alike path is
    // simply not found.
    let answer = as_client(Call::new(Method::GET, "/v1/flights")).await;
    assert_eq!(answer.status(), 200);
    let answer = as_client(Call::new(Method::GET, "/v1/administrator")).await;
    problem(&answer, 404);
}

#[tokio::test]
async fn a_burst_of_200_admits_the_burst_then_the_rate() {
    let gw = gateway().await;
    let key = gw.key("flood", Scope::Client, 100, 50).await;
    let started = std::time::Instant::now();
    let answers =
        futures_util::future::join_all((0..200).map(|_| {
            gw.send(Call::new(Method::GET, "/v1/flights?limit=1").header("x-api-key", &key))
        }))
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut admitted = 0;
    let mut limited = Vec::new();
    for a in answers {
        match a.status().as_u16() {
            200 => admitted += 1,
            429 => limited.push(a),
            other => panic!("unexpected status {other}"),
        }
    }
    // The burst, plus what the rate refilled while the 200 were being answered.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let most = 50 + (100.0 * elapsed).ceil() as usize + 1;
    assert!(
        (50..=most).contains(&admitted),
        "{admitted} admitted in {elapsed:.3} s (expected 50..={most})"
    );
    assert_eq!(admitted + limited.len(), 200);
    let r = limited.pop().expect("some were limited");
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!(retry >= 1);
    assert_eq!(r.header("ratelimit-policy"), Some("\"default\";q=50;w=1"));
    let limit = r.header("ratelimit").expect("ratelimit").to_owned();
    assert!(limit.starts_with("\"default\";r=0;t="), "{limit}");
    let p = problem(&r, 429);
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.contains("100 requests per second")),
        "{p}"
    );
    // Another key is not slowed by the flood.
    let other = gw.key("calm", Scope::Client, 100, 50).await;
    let answer = gw
        .send(Call::new(Method::GET, "/v1/flights?limit=1").header("x-api-key", &other))
        .await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.header("ratelimit"), Some("\"default\";r=49;t=1"));
}

#[tokio::test]
async fn cors_is_off_unless_origins_are_configured() {
    let gw = gateway().await;
    let answer = gw
        .admin(Call::new(Method::GET, "/v1/flights").header("origin", "https://app.example.com"))
        .await;
    assert_eq!(answer.status(), 200);
    assert!(answer.header("access-control-allow-origin").is_none());
    drop(gw);

    let gw = gateway_with(|c| {
        c.http.cors_origins = vec!["https://app.example.com".into()];
    })
    .await;
    // A browser's preflight carries no key and is answered.
    let preflight = gw
        .send(
            Call::new(Method::OPTIONS, "/v1/bookings")
                .header("origin", "https://app.example.com")
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "x-api-key,content-type"),
        )
        .await;
    assert_eq!(preflight.status(), 200);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let allowed = preflight
        .header("access-control-allow-headers")
        .expect("allowed headers")
        .to_owned();
    assert!(allowed.contains("x-api-key"), "{allowed}");
    let answer = gw
        .admin(
            Call::new(Method::GET, "/v1/flights").header("origin", "https://elsewhere.example.com"),
        )
        .await;
    assert!(answer.header("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn without_a_broker_the_broker_routes_say_so() {
    let gw = gateway().await;
    let health = gw.send(Call::new(Method::GET, "/healthz")).await;
    assert_eq!(health.status(), 503);
    assert_eq!(
        health.json(),
        json!({ "status": "unavailable", "broker": "down", "database": "up" })
    );
    let drain = gw
        .admin(Call::new(Method::POST, "/v1/admin/dead-letters/drain").json(&json!({})))
        .await;
    problem(&drain, 503);
    // The rest needs only the database.
    let list = gw.get("/v1/admin/dead-letters").await;
    assert_eq!(list.status(), 200, "{}", list.text);
}
