//! Outages: the broker's connections closed, the broker stopped, a process killed.
//! These tests restart shared services, so they run one at a time, in their own step
//! after the main suite (`scripts/test`).

#[path = "../it/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use airline_runtime::retry::RetryPolicy;
use helpers::{spawn_app, spawn_bare};
use serde_json::{Value, json};
use uuid::Uuid;

fn rabbitmqctl(args: &[&str]) {
    let status = Command::new("rabbitmqctl")
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("rabbitmqctl runs");
    assert!(status.success(), "rabbitmqctl {args:?}");
}

#[tokio::test]
async fn workers_go_on_after_the_broker_closes_their_connections() {
    let app = spawn_app().await;
    let flight = app.create_flight(10).await;
    let first = app.book(flight, "cust-before", "tok_visa").await;
    assert_eq!(app.settled(first).await["status"], "CONFIRMED");

    rabbitmqctl(&["close_all_connections", "outage test"]);
    let second = app.book(flight, "cust-after", "tok_visa").await;

    assert_eq!(app.settled(second).await["status"], "CONFIRMED");
    assert_eq!(app.seats_left(flight).await, 8);
}

#[tokio::test]
async fn bookings_accepted_while_the_broker_is_down_complete_when_it_returns() {
    let app = spawn_app().await;
    let flight = app.create_flight(10).await;
    let warm = app.book(flight, "cust-warm", "tok_visa").await;
    app.settled(warm).await;

    rabbitmqctl(&["stop_app"]);
    let mut accepted = Vec::new();
    for i in 0..3 {
        accepted.push(
            app.book(flight, &format!("cust-down-{i}"), "tok_visa")
                .await,
        );
    }
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);

    for booking in accepted {
        assert_eq!(app.settled(booking).await["status"], "CONFIRMED");
    }
    assert_eq!(app.seats_left(flight).await, 6);
}

struct System {
    child: Child,
    base: String,
}

fn start_system(database_url: &str, prefix: &str, port: u16) -> System {
    start_system_with(database_url, prefix, port, &[])
}

fn start_system_with(database_url: &str, prefix: &str, port: u16, env: &[(&str, &str)]) -> System {
    let child = Command::new(env!("CARGO_BIN_EXE_airline"))
        .args(["up", "--no-seed"])
        .envs(env.iter().copied())
        .env("DATABASE_URL", database_url)
        .env("AIRLINE_PREFIX", prefix)
        .env("AIRLINE_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("airline up starts");
    System {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

async fn until_healthy(http: &reqwest::Client, base: &str) {
    for _ in 0..600 {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{base} never became healthy");
}

async fn book(http: &reqwest::Client, base: &str, flight: &str, token: &str) -> Option<String> {
    let body =
        json!({ "outboundFlightId": flight, "customerId": "cust-kill", "paymentToken": token });
    let r = http
        .post(format!("{base}/v1/bookings"))
        .json(&body)
        .send()
        .await
        .ok()?;
    (r.status() == 202).then_some(())?;
    r.json::<Value>().await.ok()?["id"]
        .as_str()
        .map(str::to_owned)
}

/// `airline up` killed with SIGKILL while bookings flow with 20% transient payment
/// failures, then restarted: every accepted booking ends terminal, no DLQ holds
/// anything (nothing needed an operator), and seats, charges and points balance.
#[tokio::test]
async fn a_process_killed_mid_run_loses_nothing_and_doubles_nothing() {
    // The system under test is a separate `airline up` process; the bare app only
    // provides a fresh database and namespace, reads the books, and cleans up.
    let mut app = spawn_bare(|c| {
        c.retry.default =
            RetryPolicy::parse("attempts=10,base=50ms,cap=400ms", RetryPolicy::default())
                .expect("policy");
    })
    .await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let database_url = app.rt.config.database.url.clone();
    let prefix = app.rt.config.broker.prefix.clone();
    let http = app.http.clone();

    let faults = [
        ("AIRLINE_PAYMENT_FAILURE_RATE", "0.2"),
        ("AIRLINE_RETRY", "attempts=10,base=50ms,cap=400ms"),
    ];
    let mut system = start_system_with(&database_url, &prefix, port, &faults);
    until_healthy(&http, &system.base).await;
    app.base.clone_from(&system.base);
    let flight = app.create_flight(40).await.to_string();
    let mut accepted = Vec::new();
    for i in 0..60 {
        if i == 30 {
            system.child.kill().expect("SIGKILL");
            system.child.wait().expect("reaped");
            system = start_system_with(&database_url, &prefix, port, &faults);
            until_healthy(&http, &system.base).await;
        }
        let token = if i % 5 == 0 {
            "tok_chargeDeclined"
        } else {
            "tok_visa"
        };
        if let Some(id) = book(&http, &system.base, &flight, token).await {
            accepted.push(id.parse::<Uuid>().expect("uuid"));
        }
    }

    let mut confirmed = 0i64;
    for booking in &accepted {
        let settled = app.settled(*booking).await;
        assert!(
            settled["status"] == "CONFIRMED" || settled["status"] == "FAILED",
            "{settled}"
        );
        if settled["status"] == "CONFIRMED" {
            confirmed += 1;
        }
    }
    assert_eq!(accepted.len(), 60, "every request was accepted");
    let seats_left = app.seats_left(flight.parse().expect("uuid")).await;
    assert_eq!(seats_left, 40 - confirmed, "seats balance");
    // One payments row per booking (its primary key): captured exactly for the
    // confirmed ones, and nothing refunded, since no confirmation failed.
    let (captured, refunded): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'captured'), count(*) FILTER (WHERE status = 'refunded')
           FROM payment.payments",
    )
    .fetch_one(&app.rt.pool)
    .await
    .expect("payments");
    assert_eq!(
        (captured, refunded),
        (confirmed, 0),
        "one charge per confirmed booking"
    );
    app.eventually("every confirmed booking's points", || async {
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM loyalty.ledger")
            .fetch_one(&app.rt.pool)
            .await
            .expect("ledger");
        (rows == confirmed).then_some(())
    })
    .await;
    let audit = airline::audit::audit(&app.rt.pool)
        .await
        .expect("audit runs");
    assert!(audit.ok, "{}", airline::audit::render(&audit));
    let channel = app.rt.broker.create_channel().await.expect("channel");
    // The shared DLQ (every work queue's dead letters) and the booking DLQ.
    for name in [app.names.dead_letters(), app.names.resolve("booking.dlq")] {
        let declared = channel
            .queue_declare(
                name.clone().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .expect("queue exists");
        assert_eq!(declared.message_count(), 0, "{name} holds nothing");
    }
    let _ = system.child.kill();
    let _ = system.child.wait();
}

/// SIGTERM: stop taking deliveries, finish what is in flight, exit 0 (within the
/// 10 s a supervisor grants before it kills).
#[tokio::test]
async fn sigterm_stops_the_system_cleanly() {
    let mut app = spawn_bare(|_| {}).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let http = app.http.clone();
    let mut system = start_system(
        &app.rt.config.database.url,
        &app.rt.config.broker.prefix,
        port,
    );
    until_healthy(&http, &system.base).await;
    app.base.clone_from(&system.base);
    let flight = app.create_flight(5).await.to_string();
    let booking = book(&http, &system.base, &flight, "tok_visa")
        .await
        .expect("accepted");

    let pid = system.child.id().to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let mut exited = None;
    for _ in 0..200 {
        if let Some(status) = system.child.try_wait().expect("wait") {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = exited.expect("exited within 10 s of SIGTERM");
    assert!(status.success(), "exit status {status}");

    // Whatever was in flight was finished or left unacked for the next start.
    let mut system = start_system(
        &app.rt.config.database.url,
        &app.rt.config.broker.prefix,
        port,
    );
    until_healthy(&http, &system.base).await;
    let settled = app.settled(booking.parse().expect("uuid")).await;
    assert_eq!(settled["status"], "CONFIRMED");
    let _ = system.child.kill();
    let _ = system.child.wait();
}

fn postgres(action: &str) {
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("a local PostgreSQL cluster")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .max()
        .expect("a version");
    let status = Command::new("pg_ctlcluster")
        .args([
            "--skip-systemctl-redirect",
            &version,
            "main",
            action,
            "-m",
            "fast",
        ])
        .stdout(Stdio::null())
        .status()
        .expect("pg_ctlcluster runs");
    assert!(status.success(), "pg_ctlcluster {action}");
}

/// PostgreSQL stops under the workers: deliveries are held, never acked unprocessed
/// nor dead-lettered, and the bookings complete once it is back.
#[tokio::test]
async fn deliveries_wait_for_the_database_and_complete_when_it_returns() {
    let app = spawn_app().await;
    let flight = app.create_flight(10).await;
    let warm = app.book(flight, "cust-db-warm", "tok_visa").await;
    app.settled(warm).await;
    let requests: Vec<airline_contracts::Message> = (0..3)
        .map(|i| {
            airline_contracts::Message::BookingRequested(
                airline_contracts::messages::BookingRequested {
                    booking_id: Uuid::now_v7(),
                    outbound_flight_id: flight,
                    customer_id: format!("cust-db-{i}"),
                    payment_token: airline_contracts::PaymentToken::parse("tok_visa")
                        .expect("token"),
                    requested_at: time::OffsetDateTime::now_utc(),
                    api_key_id: None,
                },
            )
        })
        .collect();

    postgres("stop");
    let envelopes: Vec<_> = requests
        .iter()
        .map(|m| app.envelope(m, &Uuid::now_v7().to_string()))
        .collect();
    app.publish(&envelopes).await;
    // The consumer takes the deliveries (none left ready) while the database is away.
    let channel = app.rt.broker.create_channel().await.expect("channel");
    let ready = || async {
        channel
            .queue_declare(
                app.names.resolve("booking.requested").into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .expect("the queue exists")
            .message_count()
    };
    app.eventually("the deliveries to be taken", || async {
        (ready().await == 0).then_some(())
    })
    .await;
    postgres("start");

    for m in &requests {
        assert_eq!(app.settled(m.booking_id()).await["status"], "CONFIRMED");
    }
    assert_eq!(app.seats_left(flight).await, 6);
    let dlq = channel
        .queue_declare(
            app.names.dead_letters().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .expect("the DLQ exists");
    assert_eq!(
        dlq.message_count(),
        0,
        "nothing was dead-lettered for the outage"
    );
}
