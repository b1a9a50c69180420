//! `airline-load tune`: the pipeline at one offered rate (amqp mode) across worker
//! settings. For each setting it starts `airline up --no-seed` with that setting in
//! its environment, on a database and broker prefix of its own, waits for
//! `/healthz`, warms up, runs the load, stops the system and removes its queues and
//! database (on failure and Ctrl-C too) before the next one. Then it draws
//! throughput and p99 per setting in one chart and names the best setting for
//! throughput, for latency and the best balanced one. See docs/benchmarks.md.

mod chart;
mod spec;
mod verdict;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, FromArgMatches as _};
use futures_util::FutureExt as _;
use serde::Serialize;
use sqlx::Connection as _;
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};
use uuid::Uuid;

use crate::stats::{Machine, Summary};
use spec::{Setting, Sweep};
use verdict::{Outcome, Picks};

/// `airline-load tune`'s arguments.
#[derive(Debug, Clone, Args)]
pub struct TuneArgs {
    /// A variable and its values, `NAME=V1,V2,...`; repeat it for more variables.
    /// NAME: prefetch, db-pool, outbox-batch, delivery-batch (AIRLINE_PREFETCH,
    /// AIRLINE_DB_POOL, AIRLINE_OUTBOX_BATCH, AIRLINE_DELIVERY_BATCH) or any other
    /// AIRLINE_* variable.
    #[arg(long = "sweep", value_name = "NAME=V1,V2,...", required = true, value_parser = spec::parse_sweep)]
    sweeps: Vec<Sweep>,
    /// Run every combination of the values (at most 64 settings) instead of one
    /// variable at a time with the others at their defaults.
    #[arg(long)]
    grid: bool,
    /// Bookings per second offered to every setting.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// How long each setting is measured.
    #[arg(long, default_value = "30s", value_parser = crate::parse_duration)]
    duration: Duration,
    /// Load at the same rate before each measurement, not counted (0s: none).
    #[arg(long, default_value = "5s", value_parser = airline_runtime::retry::parse_duration)]
    warmup: Duration,
    /// How long to wait after the last send before counting a booking lost.
    #[arg(long, default_value = "30s", value_parser = crate::parse_duration)]
    drain_timeout: Duration,
    /// Flights each run creates for itself.
    #[arg(long, default_value_t = 20)]
    flights: u32,
    /// Share of bookings paid with a declined card (0 to 1).
    #[arg(long, default_value_t = 0.1)]
    decline_ratio: f64,
    /// The broker.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    amqp_url: String,
    /// The PostgreSQL server; each setting gets a database of its own on it, dropped
    /// afterwards.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/airline",
        hide_env_values = true
    )]
    database_url: String,
    /// Where the `airline` binary is (default: beside airline-load).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// The gateway port of the first setting; the next settings take the next ports.
    #[arg(long, default_value_t = 18950)]
    port: u16,
    /// Where the chart (tune.svg), the page (index.html), the tables (tune.md,
    /// tune.json) and each system's log go [default: load-tests/reports/tune-<time>]
    #[arg(long)]
    report: Option<PathBuf>,
    /// Print only the JSON of the results on standard output.
    #[arg(long)]
    json: bool,
}

/// Checks the arguments and the plan before anything starts.
///
/// # Errors
/// A message naming the bad argument (the caller exits 2).
pub fn validate(a: &TuneArgs) -> Result<(), String> {
    if !(a.rate > 0.0 && a.rate.is_finite()) {
        return Err("--rate must be above zero".into());
    }
    if !(0.0..=1.0).contains(&a.decline_ratio) {
        return Err("--decline-ratio must be between 0 and 1".into());
    }
    if a.flights == 0 {
        return Err("--flights must be at least 1".into());
    }
    let settings = spec::plan(&a.sweeps, a.grid, spec::inherited)?;
    if usize::from(a.port) + settings.len() > usize::from(u16::MAX) {
        return Err("--port leaves no room for one port per setting".into());
    }
    Ok(())
}

/// Runs every setting; returns lost bookings plus settings that could not be
/// measured (0: all settled).
///
/// # Errors
/// When the report cannot be written, or on Ctrl-C / SIGTERM (after cleaning up).
pub async fn run(a: TuneArgs) -> anyhow::Result<u64> {
    let settings = spec::plan(&a.sweeps, a.grid, spec::inherited).map_err(anyhow::Error::msg)?;
    let dir = a.report.clone().unwrap_or_else(|| {
        let stamp = time::OffsetDateTime::now_utc()
            .format(time::macros::format_description!(
                "[year][month][day]-[hour][minute][second]"
            ))
            .unwrap_or_else(|_| Uuid::new_v4().simple().to_string());
        PathBuf::from(format!("load-tests/reports/tune-{stamp}"))
    });
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)
        .with_context(|| format!("creating the report directory {}", logs.display()))?;
    let bin_dir = a
        .bin_dir
        .clone()
        .unwrap_or_else(crate::chaos::default_bin_dir);
    let each = a.warmup + a.duration;
    eprintln!(
        "tune: {} settings at {}/s, {:.0} s each plus start-up and drain (about {:.0} min); reports in {}",
        settings.len(),
        a.rate,
        each.as_secs_f64(),
        (settings.len() as f64 * (each.as_secs_f64() + 15.0) / 60.0).ceil(),
        dir.display()
    );
    // Registered now, before the first system starts: Ctrl-C or SIGTERM from here
    // on ends the current setting and removes it, then the run stops.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut stop = std::pin::pin!(async move {
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
    });
    let mut outcomes = Vec::new();
    let mut interrupted = false;
    for (i, setting) in settings.iter().enumerate() {
        let port = a.port + u16::try_from(i).unwrap_or(0);
        let mut system = match System::start(&a, &bin_dir, setting, port, &logs) {
            Ok(s) => {
                eprintln!(
                    "tune: [{}/{}] {} (database {}, prefix {}, port {port})",
                    i + 1,
                    settings.len(),
                    setting.label,
                    s.database,
                    s.prefix
                );
                s
            }
            Err(e) => {
                eprintln!("tune: {}: {e:#}", setting.label);
                outcomes.push(Outcome::failed(setting.clone(), format!("{e:#}")));
                continue;
            }
        };
        // A panic in a run is that setting's failure: the system is removed all the same.
        let run = std::panic::AssertUnwindSafe(system.measure(&a)).catch_unwind();
        let measured = tokio::select! {
            r = run => Some(r.unwrap_or_else(|_| Err(anyhow::anyhow!("the run panicked")))),
            () = &mut stop => None,
        };
        system.remove(&a.database_url).await;
        match measured {
            None => {
                interrupted = true;
                break;
            }
            Some(Ok(s)) => {
                eprintln!(
                    "tune: {}: {:.1}/s, p50 {:.1} ms, p99 {:.1} ms, lost {}",
                    setting.label, s.achieved_rate, s.latency_ms.p50, s.latency_ms.p99, s.lost
                );
                outcomes.push(Outcome::measured(setting.clone(), &s));
            }
            Some(Err(e)) => {
                eprintln!("tune: {}: {e:#}", setting.label);
                outcomes.push(Outcome::failed(setting.clone(), format!("{e:#}")));
            }
        }
    }
    let picks = verdict::pick(&outcomes);
    let document = write_report(&dir, &a, &outcomes, &picks, interrupted)?;
    if a.json {
        println!("{document}");
    } else {
        print!("{}", verdict::text_table(&outcomes, &picks));
    }
    eprintln!("tune: chart {}", dir.join("tune.svg").display());
    if interrupted {
        anyhow::bail!(
            "interrupted after {} of {} settings (their results are in {})",
            outcomes.len(),
            settings.len(),
            dir.display()
        );
    }
    Ok(outcomes
        .iter()
        .map(|o| o.lost + u64::from(o.error.is_some()))
        .sum())
}

/// The JSON of a sweep (tune.json, and `--json`).
#[derive(Serialize)]
struct Document<'a> {
    mode: &'static str,
    offered_rate: f64,
    duration_s: f64,
    warmup_s: f64,
    /// `one at a time` or `grid`.
    plan: &'static str,
    /// Stopped by Ctrl-C or SIGTERM before every setting ran.
    interrupted: bool,
    results: &'a [Outcome],
    /// The labels of the chosen settings.
    best: Best,
    machine: Machine,
}

#[derive(Serialize)]
struct Best {
    throughput: Option<String>,
    latency: Option<String>,
    balanced: Option<String>,
}

/// Writes tune.json, tune.md, tune.svg and index.html into `dir`; returns the JSON.
fn write_report(
    dir: &Path,
    a: &TuneArgs,
    outcomes: &[Outcome],
    picks: &Picks,
    interrupted: bool,
) -> anyhow::Result<String> {
    let label = |p: Option<usize>| {
        p.and_then(|i| outcomes.get(i))
            .map(|o| o.setting.label.clone())
    };
    let document = serde_json::to_string_pretty(&Document {
        mode: "amqp",
        offered_rate: a.rate,
        duration_s: a.duration.as_secs_f64(),
        warmup_s: a.warmup.as_secs_f64(),
        plan: if a.grid { "grid" } else { "one at a time" },
        interrupted,
        results: outcomes,
        best: Best {
            throughput: label(picks.throughput),
            latency: label(picks.latency),
            balanced: label(picks.balanced),
        },
        machine: Machine::read(),
    })?;
    let title = format!(
        "airline-load tune: amqp at {}/s, {:.0} s per setting",
        a.rate,
        a.duration.as_secs_f64()
    );
    let svg = chart::render(&title, a.rate, outcomes, picks);
    let md = verdict::markdown_table(outcomes, picks, a.rate);
    std::fs::write(dir.join("tune.json"), &document)?;
    std::fs::write(dir.join("tune.md"), &md)?;
    std::fs::write(dir.join("tune.svg"), &svg)?;
    let text = verdict::text_table(outcomes, picks)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    std::fs::write(
        dir.join("index.html"),
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>airline-load tune</title>\
             <style>body{{font-family:sans-serif;margin:2em}}pre{{background:#f6f6f6;padding:8px}}</style></head>\
             <body><h1>airline-load tune</h1><p>Open-loop amqp load at {} bookings/s, {:.0} s per setting after {:.0} s of warm-up; \
             each setting on a fresh <code>airline up --no-seed</code>, database and broker prefix; settings {}.{}</p>\
             {svg}<pre>{text}</pre></body></html>\n",
            a.rate,
            a.duration.as_secs_f64(),
            a.warmup.as_secs_f64(),
            if a.grid {
                "as a grid"
            } else {
                "one variable at a time from the defaults"
            },
            if interrupted {
                " Interrupted: not every setting ran."
            } else {
                ""
            },
        ),
    )?;
    Ok(document)
}

/// One `airline up --no-seed` of a setting, on its own database and prefix.
struct System {
    child: Child,
    bin_dir: PathBuf,
    env: Vec<(String, String)>,
    database: String,
    database_url: String,
    prefix: String,
    port: u16,
    log: PathBuf,
}

impl System {
    fn start(
        a: &TuneArgs,
        bin_dir: &Path,
        setting: &Setting,
        port: u16,
        logs: &Path,
    ) -> anyhow::Result<Self> {
        let id = &Uuid::new_v4().simple().to_string()[..12];
        let database = format!("airline_tune_{id}");
        let prefix = format!("tune.{id}.");
        let database_url = format!("{}/{database}", crate::chaos::server_of(&a.database_url));
        let mut env: Vec<(String, String)> = vec![
            ("AMQP_URL".into(), a.amqp_url.clone()),
            ("DATABASE_URL".into(), database_url.clone()),
            ("AIRLINE_PREFIX".into(), prefix.clone()),
            ("AIRLINE_HTTP_ADDR".into(), format!("127.0.0.1:{port}")),
        ];
        if std::env::var_os("RUST_LOG").is_none() {
            env.push(("RUST_LOG".into(), "warn".into()));
        }
        env.extend(setting.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let file: String = setting
            .label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "=-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let log = logs.join(format!("{file}.log"));
        let out = std::fs::File::create(&log)
            .with_context(|| format!("creating the log {}", log.display()))?;
        let binary = bin_dir.join("airline");
        let child = Command::new(&binary)
            .args(["up", "--no-seed"])
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            // Its own process group: a Ctrl-C on the terminal reaches the tuner, which
            // stops the system and cleans up, not the system behind its back.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} (build it first)", binary.display()))?;
        Ok(Self {
            child,
            bin_dir: bin_dir.to_owned(),
            env,
            database,
            database_url,
            prefix,
            port,
            log,
        })
    }

    /// Waits for `/healthz`, warms up, then measures.
    async fn measure(&mut self, a: &TuneArgs) -> anyhow::Result<Summary> {
        self.healthy(Duration::from_secs(120)).await?;
        if !a.warmup.is_zero() {
            let (w, _) = crate::execute("amqp", &self.run_args(a, a.warmup)?).await?;
            eprintln!(
                "tune:   warm-up {:.1}/s, p99 {:.1} ms",
                w.achieved_rate, w.latency_ms.p99
            );
        }
        let (summary, _) = crate::execute("amqp", &self.run_args(a, a.duration)?).await?;
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!(
                "airline up exited during the run ({status}); see {}",
                self.log.display()
            );
        }
        Ok(summary)
    }

    /// An amqp run's arguments (the defaults of `airline-load amqp`, then this
    /// system's namespace and the tune's load).
    fn run_args(&self, a: &TuneArgs, duration: Duration) -> anyhow::Result<crate::RunArgs> {
        let matches = crate::RunArgs::augment_args(clap::Command::new("tune"))
            .try_get_matches_from(["tune"])?;
        let mut r = crate::RunArgs::from_arg_matches(&matches)?;
        r.connection.amqp_url.clone_from(&a.amqp_url);
        r.connection.database_url.clone_from(&self.database_url);
        r.connection.prefix.clone_from(&self.prefix);
        r.connection.gateway_url = format!("http://127.0.0.1:{}", self.port);
        r.rate = a.rate;
        r.duration = duration;
        r.flights = a.flights;
        r.decline_ratio = a.decline_ratio;
        r.drain_timeout = a.drain_timeout;
        Ok(r)
    }

    async fn healthy(&mut self, within: Duration) -> anyhow::Result<()> {
        let client = airline_runtime::http_client()
            .timeout(Duration::from_secs(2))
            .build()?;
        let url = format!("http://127.0.0.1:{}/healthz", self.port);
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!(
                    "airline up exited before it was healthy ({status}): {}",
                    last_lines(&self.log, 5)
                );
            }
            if let Ok(r) = client.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        anyhow::bail!(
            "{url} not healthy within {} s; see {}",
            within.as_secs(),
            self.log.display()
        )
    }

    /// Stops the system (SIGTERM, then SIGKILL after 20 s), deletes its queues and
    /// exchanges (`airline teardown --yes`) and drops its database.
    async fn remove(mut self, server_url: &str) {
        if let Ok(None) = self.child.try_wait()
            && let Some(pid) = self.child.id()
        {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
            if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
                .await
                .is_err()
            {
                let _ = self.child.kill().await;
            }
        }
        let teardown = Command::new(self.bin_dir.join("airline"))
            .args(["teardown", "--yes"])
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .output()
            .await;
        match teardown {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "tune: could not remove the broker namespace {}: {}",
                self.prefix,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!(
                "tune: could not remove the broker namespace {}: {e}",
                self.prefix
            ),
        }
        let admin = format!("{}/postgres", crate::chaos::server_of(server_url));
        let dropped = async {
            let mut c = sqlx::PgConnection::connect(&admin).await?;
            sqlx::query(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.database
            ))
            .execute(&mut c)
            .await?;
            anyhow::Ok(())
        };
        if let Err(e) = dropped.await {
            eprintln!("tune: could not drop the database {}: {e:#}", self.database);
        }
    }
}

fn last_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}
