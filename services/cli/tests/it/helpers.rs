//! A whole system per test: its own database, its own broker namespace (a unique
//! prefix on every exchange and queue), the gateway on a free port and the five
//! workers, all in this process. Dropping the app deletes its queues, exchanges and
//! database, also when the test failed.

use std::collections::BTreeMap;
use std::time::Duration;

use airline_contracts::topology::{COMMANDS_EXCHANGE, EVENTS_EXCHANGE};
use airline_contracts::{Message, Names};
use airline_runtime::broker::{Envelope, Publisher};
use airline_runtime::{Config, Runtime};
use futures_util::StreamExt as _;
use lapin::options::{BasicGetOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use serde_json::{Value, json};
use sqlx::Row;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The retry policy of a test system unless its test sets another: the default's
/// four attempts, at one short delay. Each distinct delay is a shared delay queue,
/// so a single delay keeps each test's broker namespace small (the default's three
/// delays and the webhooks' eleven would add 13 queues to every test system,
/// created and deleted again a few seconds later) and its retries quick.
pub const TEST_RETRY: &str = "attempts=4,base=200ms,cap=200ms";

/// How long a test waits for the system to reach a state before failing.
pub const PATIENCE: Duration = Duration::from_secs(60);

fn base_database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/airline".into())
}

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn database_url(name: &str) -> String {
    let base = base_database_url();
    let (server, _) = base.rsplit_once('/').unwrap_or((&base, ""));
    format!("{server}/{name}")
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub rt: Runtime,
    pub names: Names,
    shutdown: CancellationToken,
    services: Option<tokio::task::JoinHandle<()>>,
    database: String,
    /// Dead letters taken off the shared DLQ by [`TestApp::dead_letter`] for
    /// another queue than the one it waited for.
    dead_letters: std::sync::Mutex<Vec<lapin::message::BasicGetMessage>>,
}

/// Starts a system with the default configuration.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a system after `configure` has changed its configuration.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    spawn(configure, true).await
}

/// A database and broker namespace, migrated and declared, with no service running
/// in this process: for tests that run the system as separate processes (set
/// `base` to their gateway).
#[allow(dead_code)] // used by the outage tests, which include this file
pub async fn spawn_bare(configure: impl FnOnce(&mut Config)) -> TestApp {
    spawn(configure, false).await
}

async fn spawn(configure: impl FnOnce(&mut Config), run_services: bool) -> TestApp {
    // Logs only when asked for (RUST_LOG=... cargo test): they go to stderr, past
    // the test harness's capture.
    if std::env::var_os("RUST_LOG").is_some() {
        airline_runtime::telemetry::init();
    }
    let id = Uuid::new_v4().simple().to_string();
    let database = format!("airline_test_{id}");
    let mut config = Config::default();
    config.broker.url = amqp_url();
    config.database.url = database_url(&database);
    config.broker.prefix = format!("test.{}.", &id[..12]);
    config.database.pool = 12;
    config.retry = airline_runtime::config::RetryConfig {
        default: airline_runtime::retry::RetryPolicy::parse(TEST_RETRY, Default::default())
            .expect("a policy"),
        overrides: Default::default(),
    };
    configure(&mut config);
    let rt = Runtime::start(config, "airline-test", airline::SERVICES)
        .await
        .expect("system starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let base = format!("http://{}", listener.local_addr().expect("bound"));
    let shutdown = CancellationToken::new();
    let services = run_services.then(|| start_services(&rt, listener, &shutdown));
    let (_, key) = airline_gateway::auth::create(
        &rt.pool,
        &airline_gateway::auth::NewKey {
            name: "test-admin".into(),
            scope: airline_gateway::auth::Scope::Admin,
            rate: 1_000_000,
            burst: 1_000_000,
        },
    )
    .await
    .expect("an admin key");
    TestApp {
        base,
        http: client_with_key(&key),
        names: rt.names.clone(),
        rt,
        shutdown,
        services,
        database,
        dead_letters: std::sync::Mutex::default(),
    }
}

/// Checks that `response` is a problem+json answer with `status`; returns its body.
#[allow(dead_code)] // used by some test binaries only
pub async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    response.json().await.expect("problem body")
}

/// An HTTP client that sends `key` as `x-api-key` on every request.
pub fn client_with_key(key: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "x-api-key",
        reqwest::header::HeaderValue::from_str(key).expect("a key is ASCII"),
    );
    airline_runtime::http_client()
        .default_headers(headers)
        .build()
        .expect("an HTTP client")
}

fn start_services(
    rt: &Runtime,
    listener: tokio::net::TcpListener,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let (rt, shutdown) = (rt.clone(), shutdown.clone());
    tokio::spawn(async move {
        if let Err(e) = airline::run_all(&rt, listener, shutdown).await {
            eprintln!("test system stopped: {e:#}");
        }
    })
}

#[allow(dead_code)] // used by some test binaries only
impl TestApp {
    /// A new key of `scope` with the given limits, and a client that sends it.
    pub async fn key(
        &self,
        name: &str,
        scope: airline_gateway::auth::Scope,
        rate: u32,
        burst: u32,
    ) -> (String, reqwest::Client) {
        let (_, key) = airline_gateway::auth::create(
            &self.rt.pool,
            &airline_gateway::auth::NewKey {
                name: name.into(),
                scope,
                rate,
                burst,
            },
        )
        .await
        .expect("a key");
        let client = client_with_key(&key);
        (key, client)
    }

    /// Stops the services, then starts them again on the same database and broker
    /// namespace with `configure` applied to the configuration (e.g. an outage over).
    pub async fn restart_with(&mut self, configure: impl FnOnce(&mut Config)) {
        self.shutdown.cancel();
        if let Some(running) = self.services.take() {
            running.await.expect("services stopped");
        }
        let mut config = self.rt.config.clone();
        configure(&mut config);
        let rt = Runtime::start(config, "airline-test", airline::SERVICES)
            .await
            .expect("system starts again");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        self.base = format!("http://{}", listener.local_addr().expect("bound"));
        self.shutdown = CancellationToken::new();
        self.services = Some(start_services(&rt, listener, &self.shutdown));
        let old = std::mem::replace(&mut self.rt, rt);
        old.close().await;
    }

    /// Runs the `airline` binary on this app's database and namespace with extra
    /// environment variables; returns its exit code, stdout and stderr.
    pub fn cli(&self, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_airline"))
            .args(args)
            .env("DATABASE_URL", &self.rt.config.database.url)
            .env("AMQP_URL", &self.rt.config.broker.url)
            .env("AIRLINE_PREFIX", self.names.prefix())
            .env("RUST_LOG", "warn")
            .env("AIRLINE_RETRY", TEST_RETRY)
            .env("AIRLINE_RETRY_NOTIFY_WEBHOOK_DELIVERIES", TEST_RETRY)
            .envs(env.iter().copied())
            .output()
            .expect("airline runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let mut queues = airline_runtime::broker::declared_queues(&self.names, &self.rt.config);
        // `airline` run as a subprocess (`cli`) declares the tiers of TEST_RETRY,
        // whatever policy this test's system has.
        let cli = Config {
            retry: airline_runtime::config::RetryConfig {
                default: airline_runtime::retry::RetryPolicy::parse(TEST_RETRY, Default::default())
                    .expect("a policy"),
                overrides: Default::default(),
            },
            ..Config::default()
        };
        queues.extend(airline_runtime::broker::declared_queues(&self.names, &cli));
        // Systems run as processes (the outage tests) declare the default tiers.
        queues.extend(airline_runtime::broker::declared_queues(
            &self.names,
            &Config::default(),
        ));
        // What a test of `airline migrate` declared of the old layout.
        queues.extend(
            airline_runtime::topology::old_layout_queues(&self.names, &self.rt.config)
                .into_iter()
                .map(|q| q.name),
        );
        queues.sort();
        queues.dedup();
        let exchanges = airline_runtime::broker::declared_exchanges(&self.names);
        let database = self.database.clone();
        // Clean up on a runtime of its own: this may run while a failed test unwinds.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok(conn) = lapin::Connection::connect(&amqp_url(), Default::default()).await
                {
                    if let Ok(ch) = conn.create_channel().await {
                        for name in queues {
                            let _ = ch
                                .queue_delete(name.into(), QueueDeleteOptions::default())
                                .await;
                        }
                        for x in exchanges {
                            let _ = ch
                                .exchange_delete(x.into(), ExchangeDeleteOptions::default())
                                .await;
                        }
                    }
                    let _ = conn.close(200, "test done".into()).await;
                }
                if let Ok(mut admin) = sqlx::PgConnection::connect(&database_url("postgres")).await
                {
                    let sql = format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)");
                    let _ = sqlx::query(&sql).execute(&mut admin).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

use sqlx::Connection as _;

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

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.expect("json")
    }

    /// Creates a flight with `seats` seats; returns its id.
    pub async fn create_flight(&self, seats: i64) -> Uuid {
        let response = self.post_json("/v1/flights", &flight_body(seats)).await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.expect("json");
        body["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("flight id")
    }

    pub async fn seats_left(&self, flight: Uuid) -> i64 {
        self.get_json(&format!("/v1/flights/{flight}")).await["seatCapacity"]
            .as_i64()
            .expect("seats")
    }

    /// Books `flight` through the gateway; returns the booking id.
    pub async fn book(&self, flight: Uuid, customer: &str, token: &str) -> Uuid {
        let response = self
            .post_json(
                "/v1/bookings",
                &json!({ "outboundFlightId": flight, "customerId": customer, "paymentToken": token }),
            )
            .await;
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["status"], "PENDING");
        body["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("booking id")
    }

    /// Waits until the booking leaves PENDING; returns it. A booking published
    /// straight onto the broker is unknown (404) until its saga starts.
    pub async fn settled(&self, booking: Uuid) -> Value {
        self.eventually(&format!("booking {booking} to settle"), || async {
            let response = self.get(&format!("/v1/bookings/{booking}")).await;
            if response.status() == 404 {
                return None;
            }
            assert_eq!(response.status(), 200);
            let b: Value = response.json().await.expect("json");
            (b["status"] != "PENDING").then_some(b)
        })
        .await
    }

    /// Polls `check` until it gives a value, failing the test after [`PATIENCE`].
    pub async fn eventually<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The saga's states in order, from its history.
    pub async fn saga_states(&self, booking: Uuid) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT to_state FROM booking.saga_history WHERE booking_id = $1 ORDER BY version",
        )
        .bind(booking)
        .fetch_all(&self.rt.pool)
        .await
        .expect("history")
    }

    /// Publishes envelopes straight onto the broker, as an upstream system would.
    pub async fn publish(&self, envelopes: &[Envelope]) {
        let publisher = Publisher::open(&self.rt.broker).await.expect("channel");
        publisher.publish_all(envelopes).await.expect("published");
        let _ = publisher.channel().close(200, "done".into()).await;
    }

    /// An envelope for `message` under this app's names.
    pub fn envelope(&self, message: &Message, message_id: &str) -> Envelope {
        airline_runtime::broker::envelope_for(&self.names, message, message_id, "test")
    }

    /// Waits for one dead letter that died in work queue `queue` (logical name),
    /// taken off the shared DLQ; returns it. The dead letters of other queues taken
    /// off meanwhile are kept for later calls.
    pub async fn dead_letter(&self, queue: &str) -> lapin::message::BasicGetMessage {
        let channel = self.rt.broker.create_channel().await.expect("channel");
        let shared = self.names.dead_letters();
        let message = self
            .eventually(&format!("a dead letter of {queue} in {shared}"), || async {
                loop {
                    {
                        let mut stash = self.dead_letters.lock().expect("stash");
                        let found = stash.iter().position(|m| {
                            airline_runtime::topology::origin_of(
                                &self.names,
                                m.delivery.properties.headers().as_ref(),
                                m.delivery.routing_key.as_str(),
                            )
                            .is_some_and(|q| q.name == queue)
                        });
                        if let Some(i) = found {
                            return Some(stash.remove(i));
                        }
                    }
                    let got = channel
                        .basic_get(shared.as_str().into(), BasicGetOptions { no_ack: true })
                        .await
                        .expect("basic.get")?;
                    self.dead_letters.lock().expect("stash").push(got);
                }
            })
            .await;
        let _ = channel.close(200, "done".into()).await;
        message
    }

    /// Waits for one message in queue `dlq` (a broker name); returns it.
    pub async fn dead_letter_from(&self, dlq: &str) -> lapin::message::BasicGetMessage {
        let channel = self.rt.broker.create_channel().await.expect("channel");
        let dlq = dlq.to_owned();
        let message = self
            .eventually(&format!("a dead letter in {dlq}"), || async {
                channel
                    .basic_get(dlq.clone().into(), BasicGetOptions { no_ack: true })
                    .await
                    .expect("basic.get")
            })
            .await;
        let _ = channel.close(200, "done".into()).await;
        message
    }

    /// Every table that records an effect, as one comparable value.
    pub async fn books(&self) -> BTreeMap<String, Value> {
        let queries = [
            (
                "flights",
                "SELECT id::text, seats_left::text FROM catalog.flights ORDER BY id",
            ),
            (
                "seats",
                "SELECT booking_id::text, status FROM catalog.seat_reservations ORDER BY booking_id",
            ),
            (
                "bookings",
                "SELECT id::text, state || ':' || version || ':' || COALESCE(failure_reason, '') FROM booking.bookings ORDER BY id",
            ),
            (
                "history",
                "SELECT booking_id::text, count(*)::text FROM booking.saga_history GROUP BY booking_id ORDER BY booking_id",
            ),
            (
                "payments",
                "SELECT booking_id::text, status FROM payment.payments ORDER BY booking_id",
            ),
            (
                "refunds",
                "SELECT booking_id::text, amount::text FROM payment.refunds ORDER BY booking_id",
            ),
            (
                "ledger",
                "SELECT booking_id::text, kind || ':' || points FROM loyalty.ledger ORDER BY booking_id, kind",
            ),
            (
                "notifications",
                "SELECT booking_id::text || ':' || event_type, id::text FROM notify.notifications ORDER BY 1",
            ),
        ];
        let mut books = BTreeMap::new();
        for (name, sql) in queries {
            let rows = sqlx::query(sql).fetch_all(&self.rt.pool).await.expect(name);
            let pairs: Vec<Value> = rows
                .iter()
                .map(|r| {
                    json!([
                        r.try_get::<String, _>(0).expect("text"),
                        r.try_get::<String, _>(1).expect("text")
                    ])
                })
                .collect();
            books.insert(name.to_owned(), Value::Array(pairs));
        }
        books
    }

    /// Total duplicate deliveries the inboxes have absorbed.
    pub async fn duplicates_absorbed(&self) -> i64 {
        sqlx::query_scalar("SELECT COALESCE(SUM(duplicates), 0)::bigint FROM messaging.inbox")
            .fetch_one(&self.rt.pool)
            .await
            .expect("inbox")
    }

    /// A queue that receives a copy of every message published in this namespace.
    pub async fn tap(&self) -> Tap {
        let channel = self.rt.broker.create_channel().await.expect("channel");
        let queue = channel
            .queue_declare(
                "".into(),
                lapin::options::QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .expect("tap queue");
        let name = queue.name().to_string();
        let bind = |exchange: &str, key: &str| {
            let (channel, name, exchange, key) = (
                channel.clone(),
                name.clone(),
                self.names.resolve(exchange),
                key.to_owned(),
            );
            async move {
                channel
                    .queue_bind(
                        name.into(),
                        exchange.into(),
                        key.into(),
                        Default::default(),
                        Default::default(),
                    )
                    .await
                    .expect("bind tap");
            }
        };
        bind(EVENTS_EXCHANGE, "#").await;
        for t in Message::TYPES
            .iter()
            .filter(|t| t.kind == airline_contracts::MessageKind::Command)
        {
            bind(COMMANDS_EXCHANGE, t.name).await;
        }
        let consumer = channel
            .basic_consume(
                name.into(),
                "tap".into(),
                lapin::options::BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .expect("consume tap");
        Tap {
            _channel: channel,
            consumer,
        }
    }
}

pub struct Tap {
    _channel: lapin::Channel,
    consumer: lapin::Consumer,
}

impl Tap {
    /// Waits for the next `n` messages published in the namespace.
    pub async fn take(&mut self, n: usize) -> Vec<lapin::message::Delivery> {
        let mut out = Vec::new();
        while out.len() < n {
            match tokio::time::timeout(PATIENCE, self.consumer.next()).await {
                Ok(Some(Ok(d))) => out.push(d),
                other => panic!("tap got {} of {n} messages, then {other:?}", out.len()),
            }
        }
        out
    }
}
