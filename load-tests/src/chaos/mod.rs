//! `airline-load chaos`: the system as separate processes from the built binaries,
//! driven at a steady rate while faults are injected (workers killed and restarted,
//! a second copy of workers, broker connections closed, RabbitMQ and PostgreSQL
//! restarted, the payment provider slowed past its deadline); then the pipeline is
//! drained and the books audited. Every accepted booking must settle and the audit
//! must find nothing. See docs/reliability.md.

mod faults;
mod system;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::process::Command;
use uuid::Uuid;

use faults::{FaultKind, GATEWAY, PAYMENT, TWICE, schedule, second};
use system::{System, postgres_cluster, run_tool};

/// The settings of a chaos run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub amqp_url: String,
    /// The PostgreSQL server (the run makes its own database on it).
    pub database_url: String,
    pub rate: f64,
    pub duration: Duration,
    pub drain_timeout: Duration,
    pub bin_dir: PathBuf,
    pub base_port: u16,
    /// Keep the run's database and broker namespace afterwards.
    pub keep: bool,
    /// Skip the faults that restart RabbitMQ and PostgreSQL (shared servers).
    pub no_restarts: bool,
    /// Where each process's log goes (`<key>.log`).
    pub logs: PathBuf,
}

/// One fault, as injected.
#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    /// Seconds since the first booking was sent.
    pub at_s: f64,
    pub fault: String,
    /// How long the fault took to inject (and, for restarts, to come back).
    pub took_s: f64,
}

/// The run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosReport {
    pub rate: f64,
    pub duration_s: f64,
    /// Bookings the gateway answered 202.
    pub accepted: u64,
    /// Requests that got no 202 (the gateway refused or was unreachable): not
    /// bookings, the client knows.
    pub refused: u64,
    /// Accepted bookings in a terminal state at the end.
    pub settled: u64,
    /// Accepted bookings not terminal after the drain timeout, or missing.
    pub lost: u64,
    pub confirmed: u64,
    pub failed: u64,
    /// Failed bookings by reason.
    pub failure_reasons: HashMap<String, u64>,
    /// Sagas held by a dead-lettered step at some point.
    pub held: u64,
    /// Duplicate deliveries the inboxes recognised and ignored.
    pub duplicates_absorbed: i64,
    /// The audit's violations (each `check: detail`).
    pub violations: Vec<String>,
    pub faults: Vec<Fault>,
    /// Seconds from the last send until every accepted booking settled.
    pub drain_s: f64,
    pub database: String,
    pub prefix: String,
}

/// The deadlines a chaos run gives the system: the seat steps' default (10 s); the
/// payment deadline shortened from 30 s to 10 s and the hold deadline from 24 h to
/// 30 s, so that a slow provider and a held saga settle within the run.
const DEADLINES: &[(&str, &str)] = &[
    ("AIRLINE_STEP_DEADLINE", "10s"),
    ("AIRLINE_PAYMENT_DEADLINE", "10s"),
    ("AIRLINE_HOLD_DEADLINE", "30s"),
];

/// The slow-provider fault: every provider call takes longer than the payment
/// deadline, for a while.
const SLOW_PAYMENT_LATENCY: &str = "11s";
const SLOW_PAYMENT_FOR: Duration = Duration::from_secs(14);

pub(crate) fn server_of(database_url: &str) -> String {
    let without_query = database_url.split('?').next().unwrap_or(database_url);
    match without_query.rsplit_once('/') {
        Some((server, _)) if server.contains("://") && !server.ends_with('/') => server.to_owned(),
        _ => without_query.trim_end_matches('/').to_owned(),
    }
}

async fn healthy(client: &reqwest::Client, port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            && r.status().is_success()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// The booking mix: mostly approvals, some declines, flaky cards and sold-out flights.
fn booking_body(i: u64, open: &[Uuid], full: Uuid) -> Value {
    let (flight, token) = match i % 20 {
        0 | 10 => (full, "tok_visa"),
        1 | 11 => (open[i as usize % open.len()], "tok_chargeDeclined"),
        2 | 12 => (open[i as usize % open.len()], "tok_flaky"),
        _ => (open[i as usize % open.len()], "tok_visa"),
    };
    json!({ "outboundFlightId": flight, "customerId": format!("chaos-{}", i % 500), "paymentToken": token })
}

type Accepted = Arc<Mutex<Vec<Uuid>>>;

/// Sends bookings open-loop at `rate` for `duration`; returns the accepted ids and
/// the number refused.
async fn drive(
    client: reqwest::Client,
    gateway: String,
    rate: f64,
    duration: Duration,
    open: Vec<Uuid>,
    full: Uuid,
) -> (Vec<Uuid>, u64) {
    let accepted: Accepted = Arc::default();
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = (rate * duration.as_secs_f64()).round() as u64;
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        let (client, url, accepted, refused) = (
            client.clone(),
            format!("{gateway}/v1/bookings"),
            Arc::clone(&accepted),
            Arc::clone(&refused),
        );
        let body = booking_body(i, &open, full);
        tasks.spawn(async move {
            let answer = client.post(url).json(&body).send().await;
            let id = match answer {
                Ok(r) if r.status() == reqwest::StatusCode::ACCEPTED => r
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|v| v["id"].as_str().and_then(|s| s.parse().ok())),
                _ => None,
            };
            match id {
                Some(id) => accepted
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(id),
                None => {
                    refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let ids = std::mem::take(&mut *accepted.lock().unwrap_or_else(PoisonError::into_inner));
    (ids, refused.load(std::sync::atomic::Ordering::Relaxed))
}

async fn unsettled(pool: &PgPool, ids: &[Uuid]) -> anyhow::Result<u64> {
    let settled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM booking.bookings WHERE id = ANY($1) AND state IN ('CONFIRMED', 'FAILED')",
    )
    .bind(ids)
    .fetch_one(pool)
    .await?;
    Ok(ids.len() as u64 - u64::try_from(settled).unwrap_or(0))
}

/// Runs the whole chaos run.
///
/// # Errors
/// When the system cannot be started or the database cannot be read; a lost booking
/// or a violation is a finding, in the report, not an error.
pub async fn run(settings: Settings) -> anyhow::Result<ChaosReport> {
    let id = Uuid::new_v4().simple().to_string();
    let database = format!("airline_chaos_{}", &id[..12]);
    let prefix = format!("chaos.{}.", &id[..12]);
    let database_url = format!("{}/{database}", server_of(&settings.database_url));
    let mut env: Vec<(String, String)> = vec![
        ("AMQP_URL".into(), settings.amqp_url.clone()),
        ("DATABASE_URL".into(), database_url.clone()),
        ("AIRLINE_PREFIX".into(), prefix.clone()),
        ("RUST_LOG".into(), "warn".into()),
        // Up to eight processes at once, and PostgreSQL's 100 connections.
        ("AIRLINE_DB_POOL".into(), "8".into()),
    ];
    env.extend(
        DEADLINES
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let logs = settings.logs.join(&id[..12]);
    std::fs::create_dir_all(&logs)
        .with_context(|| format!("creating the log directory {}", logs.display()))?;
    eprintln!("chaos: process logs in {}", logs.display());
    let mut system = System {
        bin_dir: settings.bin_dir.clone(),
        logs,
        env: env.clone(),
        base_port: settings.base_port,
        running: HashMap::new(),
        next_port: settings.base_port,
    };
    let result = run_inside(&settings, &mut system, &database_url, &database, &prefix).await;
    system.stop_all().await;
    if !settings.keep {
        let teardown = Command::new(settings.bin_dir.join("airline"))
            .args(["teardown", "--yes"])
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .await;
        if let Err(e) = teardown {
            eprintln!("chaos: could not remove the broker namespace {prefix}: {e}");
        }
        if let Ok(mut admin) =
            sqlx::PgConnection::connect(&format!("{}/postgres", server_of(&settings.database_url)))
                .await
        {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
            ))
            .execute(&mut admin)
            .await;
        }
    }
    result
}

use sqlx::Connection as _;

#[allow(clippy::too_many_lines)] // one timeline, read top to bottom
async fn run_inside(
    settings: &Settings,
    system: &mut System,
    database_url: &str,
    database: &str,
    prefix: &str,
) -> anyhow::Result<ChaosReport> {
    let client = airline_runtime::http_client()
        .timeout(Duration::from_secs(10))
        .build()?;
    // The gateway first: it creates the database and migrates what it reads.
    system.spawn(GATEWAY.name, GATEWAY, &[])?;
    anyhow::ensure!(
        healthy(&client, settings.base_port, Duration::from_secs(60)).await,
        "the gateway did not become healthy"
    );
    let mut workers = 0;
    for w in airline::workers() {
        system.spawn(w.name, w, &[])?;
        workers += 1;
    }
    for port in settings.base_port + 1..=settings.base_port + workers {
        anyhow::ensure!(
            healthy(&client, port, Duration::from_secs(60)).await,
            "a worker did not become healthy (port {port})"
        );
    }
    let pool = airline_runtime::db::connect(database_url, 4).await?;
    let (open, full) = crate::targets::create_flights(&pool, 4, 10_000, 1).await?;
    let key = crate::keys::key_for_run(&pool, None).await?;
    let client = crate::keys::client(&key, Some(Duration::from_secs(10)))?;
    let gateway = format!("http://127.0.0.1:{}", settings.base_port);
    eprintln!(
        "chaos: {} bookings/s for {:.0} s on {database} / {prefix}",
        settings.rate,
        settings.duration.as_secs_f64()
    );

    let started = Instant::now();
    let sender = tokio::spawn(drive(
        client.clone(),
        gateway.clone(),
        settings.rate,
        settings.duration,
        open,
        full[0],
    ));

    let d = settings.duration.as_secs_f64();
    let mut faults = Vec::new();
    let mut slow_payment_until = None;
    for (share, fault) in schedule(!settings.no_restarts) {
        let at = Duration::from_secs_f64(d * share);
        if let Some(wait) = at.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        if let Some(crash) = system.crashed() {
            eprintln!("chaos: unplanned: {crash}");
            faults.push(Fault {
                at_s: started.elapsed().as_secs_f64(),
                fault: format!("unplanned: {crash}"),
                took_s: 0.0,
            });
        }
        let at_s = started.elapsed().as_secs_f64();
        let t = Instant::now();
        match fault {
            FaultKind::Kill(w) => {
                system.kill(w.name).await;
                system.spawn(w.name, w, &[])?;
            }
            FaultKind::SecondCopies => {
                for w in TWICE {
                    system.spawn(&second(w), w, &[])?;
                }
            }
            FaultKind::StopSecondCopies => {
                for w in TWICE {
                    system.terminate(&second(w)).await;
                }
            }
            FaultKind::CloseConnections => {
                run_tool("rabbitmqctl", &["close_all_connections", "chaos run"]).await?;
            }
            FaultKind::RestartRabbitMq => {
                run_tool("rabbitmqctl", &["stop_app"]).await?;
                tokio::time::sleep(Duration::from_secs(3)).await;
                run_tool("rabbitmqctl", &["start_app"]).await?;
                run_tool("rabbitmqctl", &["await_startup"]).await?;
            }
            FaultKind::RestartPostgres => {
                let cluster = postgres_cluster()?;
                run_tool(
                    "pg_ctlcluster",
                    &[
                        "--skip-systemctl-redirect",
                        &cluster,
                        "main",
                        "stop",
                        "-m",
                        "fast",
                    ],
                )
                .await?;
                tokio::time::sleep(Duration::from_secs(3)).await;
                run_tool(
                    "pg_ctlcluster",
                    &["--skip-systemctl-redirect", &cluster, "main", "start"],
                )
                .await?;
            }
            FaultKind::SlowPayment => {
                // Every charge now takes longer than the saga waits for it.
                system.kill(PAYMENT.name).await;
                system.spawn(
                    PAYMENT.name,
                    PAYMENT,
                    &[("AIRLINE_PAYMENT_LATENCY", SLOW_PAYMENT_LATENCY.to_owned())],
                )?;
                slow_payment_until = Some(Instant::now() + SLOW_PAYMENT_FOR);
            }
        }
        faults.push(Fault {
            at_s,
            fault: fault.to_string(),
            took_s: t.elapsed().as_secs_f64(),
        });
        eprintln!("chaos: {at_s:6.1} s  {fault}");
    }
    if let Some(until) = slow_payment_until {
        tokio::time::sleep_until(until.into()).await;
        let at_s = started.elapsed().as_secs_f64();
        system.terminate(PAYMENT.name).await;
        system.spawn(PAYMENT.name, PAYMENT, &[])?;
        faults.push(Fault {
            at_s,
            fault: "payment provider back to normal (payment restarted)".into(),
            took_s: 0.0,
        });
        eprintln!("chaos: {at_s:6.1} s  payment provider back to normal");
    }
    let (accepted, refused) = sender.await?;
    let sent_at = Instant::now();
    if let Some(crash) = system.crashed() {
        faults.push(Fault {
            at_s: started.elapsed().as_secs_f64(),
            fault: format!("unplanned: {crash}"),
            took_s: 0.0,
        });
    }
    eprintln!(
        "chaos: sending done: {} accepted, {refused} refused; draining",
        accepted.len()
    );

    let mut left = unsettled(&pool, &accepted).await.unwrap_or(u64::MAX);
    while left > 0 && sent_at.elapsed() < settings.drain_timeout {
        tokio::time::sleep(Duration::from_millis(500)).await;
        left = unsettled(&pool, &accepted).await.unwrap_or(left);
    }
    let drain_s = sent_at.elapsed().as_secs_f64();
    // Let the last compensations and awards land before the audit.
    let quiet_for = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                let n: i64 = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap_or(1);
                if n == 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    quiet_for("SELECT count(*) FROM messaging.outbox").await;

    let rows: Vec<(String, Option<String>, i64)> = sqlx::query_as(
        "SELECT state, failure_reason, count(*) FROM booking.bookings WHERE id = ANY($1)
          GROUP BY state, failure_reason",
    )
    .bind(&accepted)
    .fetch_all(&pool)
    .await?;
    let mut report = ChaosReport {
        rate: settings.rate,
        duration_s: d,
        accepted: accepted.len() as u64,
        refused,
        settled: 0,
        lost: left,
        confirmed: 0,
        failed: 0,
        failure_reasons: HashMap::new(),
        held: 0,
        duplicates_absorbed: 0,
        violations: Vec::new(),
        faults,
        drain_s,
        database: database.to_owned(),
        prefix: prefix.to_owned(),
    };
    for (state, reason, n) in rows {
        let n = u64::try_from(n).unwrap_or(0);
        match state.as_str() {
            "CONFIRMED" => report.confirmed += n,
            "FAILED" => {
                report.failed += n;
                *report
                    .failure_reasons
                    .entry(reason.unwrap_or_default())
                    .or_default() += n;
            }
            _ => {}
        }
    }
    report.settled = report.confirmed + report.failed;
    report.held = sqlx::query_scalar::<_, i64>(
        "SELECT count(DISTINCT booking_id) FROM booking.saga_history WHERE trigger_type LIKE '%(dead-lettered)'",
    )
    .fetch_one(&pool)
    .await
    .map_or(0, |n| u64::try_from(n).unwrap_or(0));
    report.duplicates_absorbed =
        sqlx::query_scalar("SELECT coalesce(sum(duplicates), 0)::bigint FROM messaging.inbox")
            .fetch_one(&pool)
            .await
            .unwrap_or(0);
    pool.close().await;

    let audit = Command::new(settings.bin_dir.join("airline"))
        .args(["audit", "--json"])
        .envs(system.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .await
        .context("running airline audit")?;
    let parsed: Value = serde_json::from_slice(&audit.stdout).with_context(|| {
        format!(
            "airline audit printed no report: {}",
            String::from_utf8_lossy(&audit.stderr)
        )
    })?;
    report.violations = parsed["violations"]
        .as_array()
        .map(|v| {
            v.iter()
                .map(|x| {
                    format!(
                        "{}: {}",
                        x["check"].as_str().unwrap_or("?"),
                        x["detail"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(report)
}

/// The report for a person.
#[must_use]
pub fn render(r: &ChaosReport) -> String {
    let mut out = String::new();
    out.push_str("faults injected:\n");
    for f in &r.faults {
        out.push_str(&format!(
            "  {:7.1} s  {} ({:.1} s)\n",
            f.at_s, f.fault, f.took_s
        ));
    }
    let mut reasons: Vec<_> = r.failure_reasons.iter().collect();
    reasons.sort();
    out.push_str(&format!(
        "bookings: {} accepted at {}/s over {:.0} s ({} refused at the door)\n\
         settled:  {} ({} confirmed, {} failed: {})\n\
         lost:     {} (must be 0)\n\
         held by a dead-lettered step: {}; duplicate deliveries absorbed: {}\n\
         drained {:.1} s after the last booking was sent\n\
         violations: {} (must be 0)\n",
        r.accepted,
        r.rate,
        r.duration_s,
        r.refused,
        r.settled,
        r.confirmed,
        r.failed,
        reasons
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        r.lost,
        r.held,
        r.duplicates_absorbed,
        r.drain_s,
        r.violations.len(),
    ));
    for v in &r.violations {
        out.push_str(&format!("  {v}\n"));
    }
    out
}

/// The directory of the running binary, where cargo puts its siblings.
#[must_use]
pub fn default_bin_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target/release"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_part_of_a_database_url() {
        assert_eq!(
            server_of("postgres://postgres@127.0.0.1:5432/airline"),
            "postgres://postgres@127.0.0.1:5432"
        );
        assert_eq!(
            server_of("postgres://u:p@db:5432/x?sslmode=disable"),
            "postgres://u:p@db:5432"
        );
    }

    #[test]
    fn every_worker_is_killed_once_and_the_timeline_is_in_order() {
        let timeline = schedule(true);
        for w in airline::workers() {
            let kills = timeline
                .iter()
                .filter(|(_, f)| matches!(f, FaultKind::Kill(k) if k.name == w.name))
                .count();
            assert_eq!(kills, 1, "{}", w.name);
        }
        assert!(timeline.windows(2).all(|w| w[0].0 <= w[1].0));
        assert!(timeline.iter().all(|(share, _)| (0.0..1.0).contains(share)));
        assert_eq!(timeline.len(), schedule(false).len() + 2);
        assert_eq!(
            FaultKind::SecondCopies.to_string(),
            "second copy of booking and payment"
        );
    }

    #[test]
    fn the_mix_has_every_kind_of_booking() {
        let open = vec![Uuid::now_v7(), Uuid::now_v7()];
        let full = Uuid::now_v7();
        let bodies: Vec<Value> = (0..20).map(|i| booking_body(i, &open, full)).collect();
        let count = |f: &dyn Fn(&Value) -> bool| bodies.iter().filter(|b| f(b)).count();
        assert_eq!(count(&|b| b["outboundFlightId"] == json!(full)), 2);
        assert_eq!(count(&|b| b["paymentToken"] == "tok_chargeDeclined"), 2);
        assert_eq!(count(&|b| b["paymentToken"] == "tok_flaky"), 2);
        assert_eq!(count(&|b| b["paymentToken"] == "tok_visa"), 16);
    }
}
