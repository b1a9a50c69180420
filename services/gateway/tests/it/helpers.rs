//! A gateway per test: its own database, the router built from a state without a
//! broker, and a [`Recorder`] that shows what the gateway would have published.

use std::sync::Arc;

use airline_gateway::auth::{self, NewKey, Scope};
use airline_gateway::{AppState, Recorder};
use airline_runtime::Config;
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use sqlx::Connection as _;
use sqlx::PgPool;
use tower::ServiceExt as _;
use uuid::Uuid;

/// A broker address nothing listens on: the gateway must not need one.
const CLOSED_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:1/%2f";

fn base_database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/airline".into())
}

fn database_url(name: &str) -> String {
    let base = base_database_url();
    let (server, _) = base.rsplit_once('/').unwrap_or((&base, ""));
    format!("{server}/{name}")
}

/// Drops its database when dropped, even while a failed test unwinds.
struct Database(String);

impl Drop for Database {
    fn drop(&mut self) {
        let name = self.0.clone();
        // On a runtime of its own: the test's may be gone or blocked.
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&database_url("postgres")).await
                {
                    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    let _ = sqlx::query(&sql).execute(&mut admin).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// A gateway on a database of its own.
pub struct TestGateway {
    /// The router, as served.
    pub router: Router,
    /// The test's database.
    pub pool: PgPool,
    /// What the gateway handed to its publisher.
    pub recorder: Arc<Recorder>,
    /// An admin key without a practical rate limit.
    pub key: String,
    // Last: the pool closes before the database is dropped.
    _database: Database,
}

/// A gateway with the default configuration.
pub async fn gateway() -> TestGateway {
    gateway_with(|_| {}).await
}

/// A gateway after `configure` has changed its configuration.
pub async fn gateway_with(configure: impl FnOnce(&mut Config)) -> TestGateway {
    let name = format!("airline_gw_test_{}", Uuid::new_v4().simple());
    let mut config = Config::default();
    config.broker.url = CLOSED_AMQP_URL.into();
    config.database.url = database_url(&name);
    config.database.pool = 8;
    configure(&mut config);
    let pool = airline_runtime::db::connect(&config.database.url, config.database.pool)
        .await
        .expect("a database");
    let database = Database(name);
    let db = airline_runtime::db::migrate;
    db(
        &pool,
        "messaging",
        &airline_runtime::db::MESSAGING_MIGRATIONS,
    )
    .await
    .expect("messaging migrations");
    db(&pool, "catalog", &airline_catalog::MIGRATIONS)
        .await
        .expect("catalog migrations");
    db(&pool, "booking", &airline_booking::MIGRATIONS)
        .await
        .expect("booking migrations");
    db(&pool, "loyalty", &airline_loyalty::MIGRATIONS)
        .await
        .expect("loyalty migrations");
    db(&pool, "notify", &airline_notify::MIGRATIONS)
        .await
        .expect("notify migrations");
    db(&pool, "gateway", &airline_gateway::MIGRATIONS)
        .await
        .expect("gateway migrations");
    let recorder = Arc::new(Recorder::default());
    let state = AppState::without_broker(pool.clone(), config, recorder.clone());
    let router = airline_gateway::app(state);
    let (_, key) = auth::create(
        &pool,
        &NewKey {
            name: "test-admin".into(),
            scope: Scope::Admin,
            rate: 1_000_000,
            burst: 1_000_000,
        },
    )
    .await
    .expect("an admin key");
    TestGateway {
        router,
        pool,
        recorder,
        key,
        _database: database,
    }
}

/// An answer, its body read.
#[derive(Debug)]
pub struct Answer {
    /// The response's status and headers (its body is in `body`).
    pub head: Response<()>,
    /// The body as text.
    pub text: String,
}

impl Answer {
    /// The status.
    pub fn status(&self) -> StatusCode {
        self.head.status()
    }

    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.headers().get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// Checks that this is a problem+json answer with `status`; returns its body.
    #[track_caller]
    pub fn problem(&self, status: u16) -> Value {
        assert_eq!(self.status().as_u16(), status, "{}", self.text);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        self.json()
    }
}

/// A request to send with [`TestGateway::send`].
pub struct Call {
    builder: axum::http::request::Builder,
    body: Body,
}

impl Call {
    /// `method` on `uri`.
    pub fn new(method: Method, uri: &str) -> Self {
        Self {
            builder: Request::builder().method(method).uri(uri),
            body: Body::empty(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.builder = self.builder.header(name, value);
        self
    }

    /// A JSON body.
    pub fn json(self, body: &Value) -> Self {
        self.raw("application/json", body.to_string())
    }

    /// A body of any content type.
    pub fn raw(mut self, content_type: &str, body: impl Into<Body>) -> Self {
        self.builder = self.builder.header("content-type", content_type);
        self.body = body.into();
        self
    }
}

impl TestGateway {
    /// Sends `call` as is (no key unless it has one).
    pub async fn send(&self, call: Call) -> Answer {
        let request = call.builder.body(call.body).expect("a request");
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let (head, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .expect("a body");
        Answer {
            head: Response::from_parts(head, ()),
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// Sends `call` with the admin key.
    pub async fn admin(&self, call: Call) -> Answer {
        let key = self.key.clone();
        self.send(call.header("x-api-key", &key)).await
    }

    /// GET `uri` with the admin key.
    pub async fn get(&self, uri: &str) -> Answer {
        self.admin(Call::new(Method::GET, uri)).await
    }

    /// POST `body` to `uri` with the admin key.
    pub async fn post(&self, uri: &str, body: &Value) -> Answer {
        self.admin(Call::new(Method::POST, uri).json(body)).await
    }

    /// A new key of `scope` with the given limits.
    pub async fn key(&self, name: &str, scope: Scope, rate: u32, burst: u32) -> String {
        auth::create(
            &self.pool,
            &NewKey {
                name: name.into(),
                scope,
                rate,
                burst,
            },
        )
        .await
        .expect("a key")
        .1
    }

    /// Creates a flight with `seats` seats; returns its id.
    pub async fn create_flight(&self, seats: i64) -> Uuid {
        let answer = self.post("/v1/flights", &flight_body(seats)).await;
        assert_eq!(answer.status(), 201, "{}", answer.text);
        answer.json()["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("a flight id")
    }

    /// The message types the gateway handed to its publisher, oldest first.
    pub async fn published_types(&self) -> Vec<String> {
        let ids: Vec<i64> = self.recorder.published().iter().map(|p| p.id).collect();
        let mut types = Vec::new();
        for id in ids {
            let t: String =
                sqlx::query_scalar("SELECT message_type FROM messaging.outbox WHERE id = $1")
                    .bind(id)
                    .fetch_one(&self.pool)
                    .await
                    .expect("the outbox row");
            types.push(t);
        }
        types
    }
}

/// Whether a problem names `field` in its invalidParams and its detail.
pub fn names_field(problem: &Value, field: &str) -> bool {
    problem["invalidParams"]
        .as_array()
        .is_some_and(|a| a.iter().any(|p| p["name"] == field))
        && problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains(field))
}

/// A valid flight body with `seats` seats.
pub fn flight_body(seats: i64) -> Value {
    json!({
        "flightNumber": 1812, "departureAirportCode": "LGW", "departureAirportName": "London Gatwick",
        "departureCity": "London", "departureLocale": "Europe/London", "departureDate": "2027-01-15T08:00:00Z",
        "arrivalAirportCode": "MAD", "arrivalAirportName": "Madrid Barajas", "arrivalCity": "Madrid",
        "arrivalLocale": "Europe/Madrid", "arrivalDate": "2027-01-15T10:30:00Z", "ticketPrice": 120,
        "ticketCurrency": "EUR", "seatCapacity": seats
    })
}
