//! `airline-load`: drives the booking pipeline with open-loop load and reports honest
//! numbers. See `docs/benchmarks.md`.

mod chaos;
mod hostile;
mod keys;
mod report;
mod run;
mod soak;
mod stats;
mod targets;
mod tune;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use airline_contracts::Names;
use airline_contracts::topology::EVENTS_EXCHANGE;
use clap::{Args, Parser, Subcommand};
use run::{Plan, Target};
use stats::Summary;
use targets::{Amqp, Baseline, Http, Mix};

/// Open-loop load for the airline pipeline: bookings are sent on a fixed schedule
/// whether or not the system keeps up, and each latency runs from the booking's
/// intended send time to its outcome on the booking-outcome fan-out.
#[derive(Debug, Parser)]
#[command(name = "airline-load", version)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Publish booking requests straight onto the broker, as an upstream system.
    Amqp(RunArgs),
    /// POST /v1/bookings through the gateway.
    Http(RunArgs),
    /// GET /v1/flights searches through the gateway (request latency; with a
    /// rate-limited --api-key, answers over the limit (429) count as failed).
    Search(RunArgs),
    /// This machine's ceiling: a chain of raw hops (publish with confirm, consume,
    /// one small transaction, publish the next, ack) as long as a booking's critical
    /// path, with no application code.
    Baseline(RunArgs),
    /// Run one mode at several offered rates and chart throughput and p99 per rate.
    Sweep(SweepArgs),
    /// Bookings at a steady rate for a long time (mostly over the broker, a share
    /// through the gateway), sampling the tables that grow with traffic and the
    /// database size, to show them level off once the retention window has passed.
    Soak(soak::SoakArgs),
    /// Start the system as separate processes, drive bookings while killing and
    /// restarting workers, the broker and the database, then drain and audit.
    /// Exits 1 on any lost booking or invariant violation. Restarts RabbitMQ and
    /// PostgreSQL: run it on a machine of its own (see docs/reliability.md).
    Chaos(ChaosArgs),
    /// Good bookings over the broker (as `amqp`) while malformed, oversized, wrongly
    /// typed and replayed messages are published onto every work queue; checks that
    /// each bad one is dead-lettered with its reason. Exits 1 if one is not, or a
    /// good booking is lost.
    Hostile(HostileArgs),
    /// Run amqp load at one offered rate across worker settings (prefetch, pool,
    /// batch sizes), each on a fresh `airline up --no-seed`; chart throughput and
    /// p99 per setting and name the best for throughput, latency and balance.
    Tune(tune::TuneArgs),
}

#[derive(Debug, Clone, Args)]
struct HostileArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Rounds of bad messages (each round: every bad case on every work queue).
    #[arg(long, default_value_t = 20)]
    rounds: u32,
    /// Time between rounds.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    every: Duration,
}

#[derive(Debug, Clone, Args)]
struct ChaosArgs {
    /// The broker [env: AMQP_URL]
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    amqp_url: String,
    /// The PostgreSQL server; the run creates its own database on it and drops it
    /// afterwards [env: DATABASE_URL]
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/airline",
        hide_env_values = true
    )]
    database_url: String,
    /// Bookings per second.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// How long to send bookings while faults are injected (at least 30s).
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    duration: Duration,
    /// How long to wait after the last send before counting a booking lost.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// Where the built binaries are (default: beside airline-load).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// The gateway's port; the workers take the next five (and two more for the
    /// second copies).
    #[arg(long, default_value_t = 18900)]
    port: u16,
    /// Do not restart RabbitMQ and PostgreSQL (when others share them).
    #[arg(long)]
    no_restarts: bool,
    /// Keep the run's database and broker namespace for inspection.
    #[arg(long)]
    keep: bool,
    /// Each process's log goes to DIR/<run>/<process>.log.
    #[arg(long, default_value = "target/chaos-logs")]
    logs: PathBuf,
    /// Write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
struct Connection {
    /// The broker [env: AMQP_URL]
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    amqp_url: String,
    /// The database [env: DATABASE_URL]
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/airline",
        hide_env_values = true
    )]
    database_url: String,
    /// The gateway, for http mode [env: AIRLINE_GATEWAY_URL]
    #[arg(
        long,
        env = "AIRLINE_GATEWAY_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    gateway_url: String,
    /// The API key for http and search modes [env: AIRLINE_API_KEY]; without one, the
    /// run creates an admin key with no practical rate limit in the database.
    #[arg(long, env = "AIRLINE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// The system's name prefix [env: AIRLINE_PREFIX]
    #[arg(long, env = "AIRLINE_PREFIX", default_value = "airline.")]
    prefix: String,
}

#[derive(Debug, Clone, Args)]
struct RunArgs {
    #[command(flatten)]
    connection: Connection,
    /// Bookings per second offered.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// How long to send (e.g. 500ms, 10s, 2m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Send exactly this many bookings instead of --duration.
    #[arg(long)]
    count: Option<u64>,
    /// Flights the run creates for itself.
    #[arg(long, default_value_t = 20)]
    flights: u32,
    /// Seats on each of them (at most 10,000, the catalog's limit).
    #[arg(long, default_value_t = 10_000)]
    seats: u32,
    /// Share of bookings paid with a declined card (0 to 1).
    #[arg(long, default_value_t = 0.1)]
    decline_ratio: f64,
    /// Share of bookings sent to sold-out flights (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    sold_out_ratio: f64,
    /// How long to wait after the last send before counting a booking lost.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// Write the summary as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an HTML report with charts into this directory.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Prefetch of the baseline chain's consumers.
    #[arg(long, default_value_t = 64)]
    baseline_prefetch: u16,
}

#[derive(Debug, Clone, Args)]
struct SweepArgs {
    /// The mode to sweep: amqp, http or baseline.
    #[arg(long, default_value = "amqp", value_parser = ["amqp", "http", "search", "baseline"])]
    target: String,
    /// Offered rates, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "50,100,200,400")]
    rates: Vec<f64>,
    #[command(flatten)]
    run: RunArgs,
}

// The system's one duration format, above zero: a run of no time measures nothing.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = airline_runtime::retry::parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("`{}` must be above zero", s.trim()));
    }
    Ok(d)
}

fn validate(a: &RunArgs) -> Result<(), String> {
    if !(a.rate > 0.0 && a.rate.is_finite()) {
        return Err("--rate must be above zero".into());
    }
    for (name, v) in [
        ("--decline-ratio", a.decline_ratio),
        ("--sold-out-ratio", a.sold_out_ratio),
    ] {
        if !(0.0..=1.0).contains(&v) {
            return Err(format!("{name} must be between 0 and 1"));
        }
    }
    if a.flights == 0 {
        return Err("--flights must be at least 1".into());
    }
    if a.seats > 10_000 {
        return Err("--seats must be at most 10000 (the catalog's limit per flight)".into());
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let checked = match &cli.mode {
        Mode::Amqp(a) | Mode::Http(a) | Mode::Search(a) | Mode::Baseline(a) => validate(a),
        Mode::Sweep(s) => validate(&s.run),
        Mode::Soak(s) => validate(&s.run).and_then(|()| soak::validate(s)),
        Mode::Chaos(c) => validate_chaos(c),
        Mode::Hostile(h) => validate(&h.run),
        Mode::Tune(t) => tune::validate(t),
    };
    if let Err(e) = checked {
        eprintln!("airline-load: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("airline-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.mode)) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(lost) => {
            eprintln!(
                "airline-load: {lost} accepted bookings never settled (or invariants broken)"
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("airline-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(mode: Mode) -> anyhow::Result<u64> {
    match mode {
        Mode::Amqp(a) => single("amqp", a).await,
        Mode::Http(a) => single("http", a).await,
        Mode::Search(a) => single("search", a).await,
        Mode::Baseline(a) => single("baseline", a).await,
        Mode::Sweep(s) => sweep(s).await,
        Mode::Soak(s) => soak::run(s).await,
        Mode::Chaos(c) => chaos_run(c).await,
        Mode::Hostile(h) => hostile_run(h).await,
        Mode::Tune(t) => tune::run(t).await,
    }
}

/// Returns lost good bookings, plus one if a bad message was not dead-lettered as
/// expected.
async fn hostile_run(h: HostileArgs) -> anyhow::Result<u64> {
    let c = &h.run.connection;
    let connection = airline_runtime::broker::connect(&c.amqp_url, "airline-load-hostile").await?;
    let pool = airline_runtime::db::connect(&c.database_url, 2).await?;
    let names = Names::new(c.prefix.clone());
    let (flight, _) = targets::create_flights(&pool, 1, 10, 0).await?;
    let (good, bad) = tokio::join!(
        execute("amqp", &h.run),
        hostile::flood(&connection, &names, flight[0], h.rounds, h.every)
    );
    let (summary, _) = good?;
    let (cases, replayed) = bad?;
    let report = hostile::check(
        &connection,
        &names,
        &pool,
        cases,
        replayed,
        Duration::from_secs(60),
    )
    .await?;
    let _ = connection.close(200, "done".into()).await;
    println!("good bookings, meanwhile:");
    print_table(std::slice::from_ref(&summary));
    println!();
    print!("{}", hostile::render(&report));
    if let Some(path) = &h.run.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(
                &serde_json::json!({ "good": summary, "hostile": report }),
            )?,
        )?;
    }
    Ok(summary.lost + u64::from(!report.ok))
}

fn validate_chaos(c: &ChaosArgs) -> Result<(), String> {
    if !(c.rate > 0.0 && c.rate.is_finite()) {
        return Err("--rate must be above zero".into());
    }
    if c.duration < Duration::from_secs(30) {
        return Err("--duration must be at least 30s (the faults are spread over it)".into());
    }
    if c.port > u16::MAX - 8 {
        return Err("--port leaves no room for the workers' ports".into());
    }
    Ok(())
}

/// Returns the number of lost bookings plus violations (0 = passed).
async fn chaos_run(c: ChaosArgs) -> anyhow::Result<u64> {
    let report = chaos::run(chaos::Settings {
        amqp_url: c.amqp_url,
        database_url: c.database_url,
        rate: c.rate,
        duration: c.duration,
        drain_timeout: c.drain_timeout,
        bin_dir: c.bin_dir.unwrap_or_else(chaos::default_bin_dir),
        base_port: c.port,
        keep: c.keep,
        no_restarts: c.no_restarts,
        logs: c.logs,
    })
    .await?;
    print!("{}", chaos::render(&report));
    if let Some(path) = &c.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    if !report.violations.is_empty() {
        eprintln!(
            "airline-load: {} invariant violation(s)",
            report.violations.len()
        );
    }
    Ok(report.lost + report.violations.len() as u64)
}

async fn single(mode: &str, args: RunArgs) -> anyhow::Result<u64> {
    let (summary, charts) = execute(mode, &args).await?;
    print_table(std::slice::from_ref(&summary));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)?;
    }
    if let Some(dir) = &args.report {
        report::write(
            dir,
            &format!("airline-load {mode}"),
            std::slice::from_ref(&summary),
            &charts,
            "Open-loop load; latency from each booking's intended send time to its outcome.",
        )?;
        eprintln!("report: {}", dir.join("index.html").display());
    }
    Ok(summary.lost)
}

/// Runs one mode once; returns its summary and charts.
async fn execute(mode: &str, args: &RunArgs) -> anyhow::Result<(Summary, Vec<String>)> {
    let c = &args.connection;
    let connection = Arc::new(airline_runtime::broker::connect(&c.amqp_url, "airline-load").await?);
    let pool = airline_runtime::db::connect(&c.database_url, 4).await?;
    let names = Names::new(c.prefix.clone());
    let count = args
        .count
        .unwrap_or_else(|| (args.rate * args.duration.as_secs_f64()).round().max(1.0) as u64);
    let plan = Plan {
        rate: args.rate,
        count,
        drain_timeout: args.drain_timeout,
    };
    let settings = serde_json::json!({
        "rate": args.rate, "count": count, "flights": args.flights, "seats": args.seats,
        "decline_ratio": args.decline_ratio, "sold_out_ratio": args.sold_out_ratio, "prefix": c.prefix,
    });

    let mut baseline = None;
    let (target, outcomes): (Arc<dyn Target>, _) = match mode {
        "baseline" => {
            let chain =
                Arc::new(Baseline::start(&connection, &pool, args.baseline_prefetch).await?);
            let outcomes = run::listen(
                &connection,
                &chain.outcome_exchange(),
                &["baseline.confirmed"],
            )
            .await?;
            baseline = Some(Arc::clone(&chain));
            (chain, outcomes)
        }
        _ => {
            let sold_out = if args.sold_out_ratio > 0.0 { 2 } else { 0 };
            let (flights, full) =
                targets::create_flights(&pool, args.flights, args.seats, sold_out).await?;
            let mix = Mix {
                flights,
                sold_out: full,
                decline_ratio: args.decline_ratio,
                sold_out_ratio: args.sold_out_ratio,
            };
            let base = c.gateway_url.trim_end_matches('/').to_owned();
            if mode == "search" {
                // Each answer is its own outcome.
                let (answered, outcomes) = tokio::sync::mpsc::unbounded_channel();
                let key = keys::key_for_run(&pool, c.api_key.clone()).await?;
                let client = keys::client(&key, None)?;
                let target: Arc<dyn Target> = Arc::new(targets::Search {
                    client,
                    base,
                    answered,
                });
                (target, outcomes)
            } else {
                let outcomes = run::listen(
                    &connection,
                    &names.resolve(EVENTS_EXCHANGE),
                    &["booking.confirmed", "booking.failed"],
                )
                .await?;
                let target: Arc<dyn Target> = if mode == "http" {
                    let key = keys::key_for_run(&pool, c.api_key.clone()).await?;
                    Arc::new(Http {
                        client: keys::client(&key, None)?,
                        base,
                        mix,
                    })
                } else {
                    Arc::new(Amqp::new(&connection, names.clone(), mix).await?)
                };
                (target, outcomes)
            }
        }
    };
    let recorder = run::drive(target, plan, outcomes, mode).await;
    if let Some(chain) = baseline {
        chain.stop(&pool, &c.amqp_url).await;
    }
    let mut summary = Summary::new(mode, args.rate, plan.window(), &recorder, settings);
    if mode == "baseline" {
        summary.bookings_per_s = Some(summary.achieved_rate);
    }
    let charts = report::run_charts(&recorder);
    let _ = connection.close(200, "done".into()).await;
    Ok((summary, charts))
}

async fn sweep(s: SweepArgs) -> anyhow::Result<u64> {
    let mut summaries = Vec::new();
    for rate in &s.rates {
        let mut args = s.run.clone();
        args.rate = *rate;
        eprintln!("sweep: {} at {rate}/s", s.target);
        let (summary, _) = execute(&s.target, &args).await?;
        summaries.push(summary);
    }
    print_table(&summaries);
    // Sustainable: nothing lost, nothing refused, p99 under a second (the bar the
    // peer systems are measured against; docs/benchmarks.md).
    let healthy = || {
        summaries
            .iter()
            .filter(|x| x.lost == 0 && x.send_errors == 0 && x.latency_ms.p99 < 1000.0)
    };
    let best_throughput = healthy().max_by(|a, b| a.achieved_rate.total_cmp(&b.achieved_rate));
    let best_latency = healthy().min_by(|a, b| a.latency_ms.p99.total_cmp(&b.latency_ms.p99));
    let verdict = format!(
        "Best for throughput: offered {} -> {:.1}/s. Best for latency: offered {} -> p99 {:.1} ms.",
        best_throughput.map_or("-".into(), |x| format!("{:.0}/s", x.offered_rate)),
        best_throughput.map_or(0.0, |x| x.achieved_rate),
        best_latency.map_or("-".into(), |x| format!("{:.0}/s", x.offered_rate)),
        best_latency.map_or(0.0, |x| x.latency_ms.p99),
    );
    println!("{verdict}");
    let throughput: Vec<(f64, f64)> = summaries
        .iter()
        .map(|x| (x.offered_rate, x.achieved_rate))
        .collect();
    let p99: Vec<(f64, f64)> = summaries
        .iter()
        .map(|x| (x.offered_rate, x.latency_ms.p99))
        .collect();
    let charts = vec![
        report::line_chart(
            "Throughput per offered rate",
            "offered bookings/s",
            "achieved bookings/s",
            &[("achieved".into(), throughput)],
        ),
        report::line_chart(
            "p99 latency per offered rate",
            "offered bookings/s",
            "ms",
            &[("p99".into(), p99)],
        ),
    ];
    if let Some(path) = &s.run.json {
        std::fs::write(path, serde_json::to_string_pretty(&summaries)?)?;
    }
    if let Some(dir) = &s.run.report {
        report::write(
            dir,
            &format!("airline-load sweep ({})", s.target),
            &summaries,
            &charts,
            &verdict,
        )?;
        eprintln!("report: {}", dir.join("index.html").display());
    }
    Ok(summaries.iter().map(|x| x.lost).sum())
}

fn print_table(summaries: &[Summary]) {
    println!(
        "{:<9} {:>9} {:>9} {:>7} {:>9} {:>7} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "mode",
        "offered/s",
        "achieved",
        "sent",
        "confirmed",
        "failed",
        "lost",
        "p50 ms",
        "p90",
        "p99",
        "p99.9",
        "max"
    );
    for s in summaries {
        let l = s.latency_ms;
        println!(
            "{:<9} {:>9.0} {:>9.1} {:>7} {:>9} {:>7} {:>5} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            s.mode,
            s.offered_rate,
            s.achieved_rate,
            s.sent,
            s.confirmed,
            s.failed,
            s.lost,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max
        );
        let a = s.accept_latency_ms;
        println!(
            "          accepted in p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (from intended send to {})",
            a.p50,
            a.p99,
            a.max,
            match s.mode.as_str() {
                "http" => "the gateway's 202",
                "search" => "the gateway's answer",
                _ => "the broker's confirm",
            }
        );
        if s.send_errors > 0 {
            println!(
                "          {} sends failed (not counted as bookings)",
                s.send_errors
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("3h"), Ok(Duration::from_secs(3 * 3600)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("0s").is_err());
        // A unit is needed, as everywhere else.
        assert!(parse_duration("7").is_err());
    }
}
