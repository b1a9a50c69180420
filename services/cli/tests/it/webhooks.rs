//! Webhooks end to end: an endpoint registered through the gateway, a booking made
//! with the same API key, and a receiver in the test that checks each delivery's
//! Standard Webhooks signature with its own HMAC.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use airline_contracts::messages::BookingFailed;
use airline_contracts::{FailureReason, Message};
use airline_runtime::retry::RetryPolicy;
use airline_runtime::{Config, Handler as _, Incoming};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac as _};
use serde_json::{Value, json};
use sha2::Sha256;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::helpers::{PATIENCE, TestApp, spawn_app, spawn_app_with};

const QUEUE: &str = "notify.webhook-deliveries";

/// Local receivers allowed, and retries 100 ms apart instead of 5 s.
fn local_and_quick(c: &mut Config) {
    c.webhooks.allow_private = true;
    c.retry.overrides.insert(
        QUEUE.into(),
        RetryPolicy {
            attempts: 4,
            base: Duration::from_millis(100),
            cap: Duration::from_millis(400),
        },
    );
}

/// One request the receiver got, and what it answered.
#[derive(Debug)]
pub(crate) struct Received {
    headers: HeaderMap,
    body: Bytes,
    answered: StatusCode,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{name} header"))
    }

    fn payload(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// Verifies the signature the way a receiver would, without the signing code:
    /// HMAC-SHA256 keyed with the decoded secret over `id.timestamp.body`.
    fn signed_with(&self, secret: &str) -> bool {
        let key = STANDARD
            .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
            .expect("base64");
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("an HMAC key");
        mac.update(self.header("webhook-id").as_bytes());
        mac.update(b".");
        mac.update(self.header("webhook-timestamp").as_bytes());
        mac.update(b".");
        mac.update(&self.body);
        let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        self.header("webhook-signature")
            .split(' ')
            .any(|s| s == expected)
    }
}

/// A webhook receiver on a free local port that answers 500 to its first
/// `failures` requests, then 204, and hands every request to the test.
pub(crate) struct Receiver {
    pub(crate) url: String,
    requests: mpsc::UnboundedReceiver<Received>,
}

impl Receiver {
    pub(crate) async fn start(failures: usize) -> Self {
        let (sent, requests) = mpsc::unbounded_channel();
        let left = Arc::new(AtomicUsize::new(failures));
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let (sent, left) = (sent.clone(), left.clone());
                async move {
                    let fail = left
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    let answered = if fail {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::NO_CONTENT
                    };
                    let _ = sent.send(Received {
                        headers,
                        body,
                        answered,
                    });
                    (answered, if fail { "receiver down" } else { "" })
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let url = format!("http://{}/hook", listener.local_addr().expect("bound"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, requests }
    }

    /// Takes every request that has come in so far; returns how many.
    pub(crate) fn drain(&mut self) -> usize {
        std::iter::from_fn(|| self.requests.try_recv().ok()).count()
    }

    async fn next(&mut self) -> Received {
        tokio::time::timeout(PATIENCE, self.requests.recv())
            .await
            .expect("a webhook request in time")
            .expect("the receiver runs")
    }
}

/// Registers an endpoint with `app.http`'s key; returns its id and secret.
pub(crate) async fn register(app: &TestApp, url: &str, events: &[&str]) -> (Uuid, String) {
    let response = app
        .post_json("/v1/webhooks", &json!({ "url": url, "events": events }))
        .await;
    assert_eq!(response.status(), 201);
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("Location");
    let body: Value = response.json().await.expect("json");
    let id: Uuid = body["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("id");
    assert_eq!(location, format!("/v1/webhooks/{id}"));
    assert_eq!(body["status"], "enabled");
    assert_eq!(body["url"], url);
    let secret = body["secret"].as_str().expect("the secret").to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    (id, secret)
}

async fn problem(response: reqwest::Response, status: u16, field: &str) -> Value {
    let body = crate::helpers::problem(response, status).await;
    assert!(
        body["invalidParams"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["name"] == field)),
        "names {field}: {body}"
    );
    body
}

#[tokio::test]
async fn a_confirmed_booking_and_its_points_reach_the_endpoint_signed() {
    let app = spawn_app_with(local_and_quick).await;
    // The first request fails, so one event is delivered twice.
    let mut receiver = Receiver::start(1).await;
    let (endpoint, secret) = register(
        &app,
        &receiver.url,
        &["booking.confirmed", "loyalty.awarded"],
    )
    .await;
    let shown = app.get_json(&format!("/v1/webhooks/{endpoint}")).await;
    let listed = app.get_json("/v1/webhooks").await;
    assert_eq!(listed["items"][0]["id"], endpoint.to_string());
    assert!(
        shown.get("secret").is_none() && listed["items"][0].get("secret").is_none(),
        "the secret is shown once"
    );

    let flight = app.create_flight(5).await;
    let booking = app.book(flight, "cust-webhooks", "tok_visa").await;
    assert_eq!(app.settled(booking).await["status"], "CONFIRMED");

    let mut requests = Vec::new();
    while ["booking.confirmed", "loyalty.awarded"].iter().any(|t| {
        !requests
            .iter()
            .any(|r: &Received| r.answered.is_success() && r.payload()["type"] == *t)
    }) {
        requests.push(receiver.next().await);
    }
    let now = OffsetDateTime::now_utc().unix_timestamp();
    for r in &requests {
        assert!(r.signed_with(&secret), "signature of {r:?}");
        assert_eq!(r.header("content-type"), "application/json");
        let sent_at: i64 = r.header("webhook-timestamp").parse().expect("seconds");
        assert!((now - sent_at).abs() < 300, "a current timestamp");
        let payload = r.payload();
        assert_eq!(payload["data"]["bookingId"], booking.to_string());
        assert!(
            OffsetDateTime::parse(
                payload["timestamp"].as_str().expect("timestamp"),
                &time::format_description::well_known::Rfc3339
            )
            .is_ok()
        );
        assert!(!String::from_utf8_lossy(&r.body).contains("tok_"));
    }
    let confirmed = requests
        .iter()
        .find(|r| r.payload()["type"] == "booking.confirmed")
        .expect("booking.confirmed");
    assert_eq!(
        confirmed.payload()["data"]["bookingReference"]
            .as_str()
            .map(str::len),
        Some(6)
    );
    let awarded = requests
        .iter()
        .find(|r| r.payload()["type"] == "loyalty.awarded")
        .expect("loyalty.awarded");
    assert!(awarded.payload()["data"]["points"].as_i64() > Some(0));

    let failed = &requests[0];
    assert_eq!(failed.answered, 500);
    let retried = requests[1..]
        .iter()
        .find(|r| r.header("webhook-id") == failed.header("webhook-id"))
        .expect("the failed event retried");
    assert_eq!(retried.body, failed.body, "a retry sends the same event");
    assert_eq!(requests.len(), 3, "two events, one of them twice");

    // The two events are delivered concurrently: the failure of one may be recorded
    // after the success of the other, and is cleared by its own retry's success.
    let status = app
        .eventually("the failure and the successes recorded", || async {
            let e = app.get_json(&format!("/v1/webhooks/{endpoint}")).await;
            let settled = !e["lastSuccessAt"].is_null()
                && !e["lastFailureAt"].is_null()
                && e["failingSince"].is_null();
            settled.then_some(e)
        })
        .await;
    assert_eq!(status["status"], "enabled");
    assert!(
        status["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("500") && e.contains("receiver down")),
        "{status}"
    );
}

#[tokio::test]
async fn a_delivery_the_receiver_fails_twice_arrives_on_the_third_attempt() {
    let app = spawn_app_with(local_and_quick).await;
    let mut receiver = Receiver::start(2).await;
    let (endpoint, secret) = register(&app, &receiver.url, &["booking.confirmed"]).await;

    let flight = app.create_flight(5).await;
    let booking = app.book(flight, "cust-retried", "tok_visa").await;

    let attempts = [
        receiver.next().await,
        receiver.next().await,
        receiver.next().await,
    ];
    let answered: Vec<u16> = attempts.iter().map(|r| r.answered.as_u16()).collect();
    assert_eq!(answered, [500, 500, 204]);
    for r in &attempts {
        assert!(r.signed_with(&secret));
        assert_eq!(r.header("webhook-id"), attempts[0].header("webhook-id"));
        assert_eq!(r.payload()["data"]["bookingId"], booking.to_string());
    }
    let status = app
        .eventually("the success recorded", || async {
            let e = app.get_json(&format!("/v1/webhooks/{endpoint}")).await;
            (!e["lastSuccessAt"].is_null()).then_some(e)
        })
        .await;
    assert!(status["failingSince"].is_null(), "{status}");
    assert!(!status["lastFailureAt"].is_null(), "{status}");
}

#[tokio::test]
async fn urls_leading_inside_the_network_are_refused_by_default() {
    let app = spawn_app().await;
    let receiver = Receiver::start(0).await;
    for (url, kind) in [
        (receiver.url.as_str(), "loopback"),
        ("http://10.0.0.1/", "private"),
        ("http://192.168.1.20:8080/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[::1]:9000/", "loopback"),
        ("http://[::ffff:10.0.0.1]/", "private"),
        ("http://2130706433/", "loopback"),
        ("http://localhost:9000/hook", "loopback"),
    ] {
        let response = app
            .post_json(
                "/v1/webhooks",
                &json!({ "url": url, "events": ["booking.confirmed"] }),
            )
            .await;
        let body = problem(response, 422, "url").await;
        assert!(
            body["detail"].as_str().is_some_and(|d| d.contains(kind)),
            "{url}: {body}"
        );
    }
    for (body, field) in [
        (
            json!({ "url": "ftp://example.com/", "events": ["booking.confirmed"] }),
            "url",
        ),
        (
            json!({ "url": "https://u:p@example.com/", "events": ["booking.confirmed"] }),
            "url",
        ),
        (json!({ "events": ["booking.confirmed"] }), "url"),
        (
            json!({ "url": "https://example.com/", "events": ["seat.sold"] }),
            "events",
        ),
        (
            json!({ "url": "https://example.com/", "events": [] }),
            "events",
        ),
    ] {
        problem(app.post_json("/v1/webhooks", &body).await, 400, field).await;
    }
    assert_eq!(app.get_json("/v1/webhooks").await, json!({ "items": [] }));
}

#[tokio::test]
async fn an_endpoint_that_keeps_failing_is_disabled_and_says_why() {
    let app = spawn_app_with(|c| {
        local_and_quick(c);
        // Disabled by the first failure after the first: no waiting in a test.
        c.webhooks.disable_after = Duration::ZERO;
    })
    .await;
    let mut receiver = Receiver::start(usize::MAX).await;
    let (endpoint, _) = register(
        &app,
        &receiver.url,
        &["booking.confirmed", "booking.failed"],
    )
    .await;
    let flight = app.create_flight(5).await;
    let booking = app.book(flight, "cust-unlucky", "tok_visa").await;
    assert_eq!(receiver.next().await.answered, 500);
    assert_eq!(receiver.next().await.answered, 500);

    let status = app
        .eventually("the endpoint disabled", || async {
            let e = app.get_json(&format!("/v1/webhooks/{endpoint}")).await;
            (e["status"] == "disabled").then_some(e)
        })
        .await;
    let reason = status["disabledReason"].as_str().expect("a reason");
    assert!(
        reason.contains("500") && reason.contains("failing for longer than"),
        "{reason}"
    );
    let dead = app.dead_letter(QUEUE).await;
    assert_eq!(crate::failures::text(&dead, "x-error-kind"), "rejected");
    assert!(crate::failures::text(&dead, "x-error").contains("is disabled"));

    // A disabled endpoint is sent nothing more: the next event fans out to no one.
    let mut tx = app.rt.pool.begin().await.expect("tx");
    let sent = airline_notify::LogNotification
        .handle(&mut tx, &failed_event(booking))
        .await
        .expect("handled");
    assert!(sent.is_empty(), "{sent:?}");
}

/// A `booking.failed` for `booking`, as the fan-out would deliver it to notify.
fn failed_event(booking: Uuid) -> Incoming {
    Incoming {
        message_id: Uuid::now_v7().to_string(),
        message: Message::BookingFailed(BookingFailed {
            booking_id: booking,
            customer_id: "cust".into(),
            outbound_flight_id: Uuid::now_v7(),
            reason: FailureReason::SoldOut,
            failed_at: OffsetDateTime::now_utc(),
        }),
        traceparent: None,
        attempt: 1,
        request_id: None,
    }
}

#[tokio::test]
async fn an_endpoint_is_its_keys_alone() {
    let app = spawn_app_with(local_and_quick).await;
    let receiver = Receiver::start(0).await;
    let (endpoint, _) = register(&app, &receiver.url, &["booking.failed"]).await;
    let (_, other) = app
        .key(
            "another-client",
            airline_gateway::auth::Scope::Client,
            1000,
            1000,
        )
        .await;
    let path = app.url(&format!("/v1/webhooks/{endpoint}"));
    let seen = other.get(&path).send().await.expect("sent");
    assert_eq!(seen.status(), 404);
    let deleted = other.delete(&path).send().await.expect("sent");
    assert_eq!(deleted.status(), 404);
    let listed: Value = other
        .get(app.url("/v1/webhooks"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(listed, json!({ "items": [] }));

    // Events about the other key's bookings do not reach this key's endpoint.
    let flight = app.create_flight(5).await;
    let mine = app.book(flight, "cust-mine", "tok_visa").await;
    let theirs: Value = other
        .post(app.url("/v1/bookings"))
        .json(&json!({ "outboundFlightId": flight, "customerId": "cust-theirs", "paymentToken": "tok_visa" }))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let theirs: Uuid = theirs["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("id");
    let mut tx = app.rt.pool.begin().await.expect("tx");
    let to_them = airline_notify::LogNotification
        .handle(&mut tx, &failed_event(theirs))
        .await
        .expect("handled");
    assert!(to_them.is_empty(), "{to_them:?}");
    let to_me = airline_notify::LogNotification
        .handle(&mut tx, &failed_event(mine))
        .await
        .expect("handled");
    match to_me.as_slice() {
        [Message::DeliverWebhook(d)] => {
            assert_eq!((d.endpoint_id, d.booking_id), (endpoint, mine));
            assert_eq!(
                d.event_id,
                airline_notify::event_id(endpoint, mine, "booking.failed")
            );
            assert_eq!(d.payload["type"], "booking.failed");
        }
        other => panic!("one delivery to my endpoint, got {other:?}"),
    }
    drop(tx);

    assert_eq!(
        app.get(&format!("/v1/webhooks/{endpoint}")).await.status(),
        200
    );
    let gone = app.http.delete(&path).send().await.expect("sent");
    assert_eq!(gone.status(), 204);
    assert_eq!(
        app.get(&format!("/v1/webhooks/{endpoint}")).await.status(),
        404
    );
}
