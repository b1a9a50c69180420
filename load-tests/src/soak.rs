//! `airline-load soak`: the pipeline at a steady rate for a long time, while the
//! row counts of every table that grows with traffic and the database's size are
//! sampled, so that one can see the bounded tables level off once the retention
//! window has passed (docs/reliability.md, "Bounded tables").

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use airline_contracts::Names;
use airline_contracts::topology::EVENTS_EXCHANGE;
use clap::Args;
use futures_util::future::BoxFuture;
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::oneshot;
use tokio::time::Instant;
use uuid::Uuid;

use crate::run::{self, Plan, Target};
use crate::stats::Summary;
use crate::targets::{Amqp, Http, Mix, in_share};
use crate::{RunArgs, keys, parse_duration, report, targets};

/// `airline-load soak`'s own options, after those of a run.
#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Time between two samples of the tables.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub every: Duration,
    /// Share of bookings sent through the gateway (POST /v1/bookings) instead of
    /// onto the broker, so that the gateway's request rows grow too (0 to 1).
    #[arg(long, default_value_t = 0.1)]
    pub http_share: f64,
    /// The system's inbox retention, to mark where the window ends in the report
    /// [env: AIRLINE_INBOX_RETENTION]
    #[arg(long, env = "AIRLINE_INBOX_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub retention: Duration,
}

/// What bounds a table's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// Rows are deleted after a while: the table should level off.
    Pruned,
    /// A business record per booking (or per event of one), kept: it grows with
    /// the bookings.
    Business,
}

/// The tables that grow with traffic, in the order the report shows them.
pub const TABLES: &[(&str, Bound)] = &[
    ("messaging.inbox", Bound::Pruned),
    ("messaging.outbox", Bound::Pruned),
    ("messaging.dead_letters", Bound::Pruned),
    ("gateway.booking_requests", Bound::Pruned),
    ("gateway.idempotency_keys", Bound::Pruned),
    ("gateway.cancel_requests", Bound::Pruned),
    ("booking.bookings", Bound::Business),
    ("booking.saga_history", Bound::Business),
    ("catalog.seat_reservations", Bound::Business),
    ("payment.payments", Bound::Business),
    ("payment.refunds", Bound::Business),
    ("loyalty.ledger", Bound::Business),
    ("notify.notifications", Bound::Business),
];

/// One table at one moment.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TableSample {
    pub rows: i64,
    /// With its indexes and TOAST.
    pub bytes: i64,
}

/// Every table and the database at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the first booking was due.
    pub at_s: f64,
    pub database_bytes: i64,
    /// In [`TABLES`]' order; `None` for a table this system does not have.
    pub tables: Vec<Option<TableSample>>,
}

/// How one table (or the database) moved over the run.
#[derive(Debug, Clone, Serialize)]
pub struct Trend {
    pub name: String,
    pub bound: Option<Bound>,
    pub start: i64,
    /// At the first sample at or after the retention window.
    pub at_window: Option<i64>,
    pub end: i64,
    pub peak: i64,
    /// Growth per second up to the window (from the start).
    pub early_per_s: f64,
    /// Growth per second over the last quarter of the samples taken while
    /// bookings were sent.
    pub late_per_s: f64,
}

impl Trend {
    /// Whether growth after the window is under a tenth of growth before it.
    #[must_use]
    pub fn levelled(&self) -> bool {
        self.at_window.is_some() && self.late_per_s <= self.early_per_s.abs() / 10.0
    }
}

/// The samples and what they show.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    pub every_s: f64,
    pub retention_s: f64,
    pub tables: Vec<String>,
    pub samples: Vec<Sample>,
    /// Rows per table.
    pub rows: Vec<Trend>,
    /// Bytes per table, then the database's.
    pub bytes: Vec<Trend>,
    /// Growth in bytes per second over the late samples, summed by bound.
    pub late_bytes_per_s: Growth,
}

/// Growth in bytes per second, summed by bound.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Growth {
    pub database: f64,
    pub pruned: f64,
    pub business: f64,
}

/// `points` are (seconds, value); `window` in seconds. `sending`: until when
/// bookings were sent (the late growth is measured before the drain).
fn trend(
    name: &str,
    bound: Option<Bound>,
    points: &[(f64, i64)],
    window: f64,
    sending: f64,
) -> Option<Trend> {
    let first = points.first()?;
    let last = points.last()?;
    let sent = points.iter().filter(|(t, _)| *t <= sending).count().max(1);
    let loaded = &points[..sent];
    let at = points.iter().find(|(t, _)| *t >= window);
    let slope = |a: &(f64, i64), b: &(f64, i64)| {
        if b.0 > a.0 {
            (b.1 - a.1) as f64 / (b.0 - a.0)
        } else {
            0.0
        }
    };
    let quarter = (loaded.len() - 1) * 3 / 4;
    Some(Trend {
        name: name.to_owned(),
        bound,
        start: first.1,
        at_window: at.map(|p| p.1),
        end: last.1,
        peak: points.iter().map(|p| p.1).max().unwrap_or(0),
        early_per_s: slope(first, at.unwrap_or(last)),
        late_per_s: slope(&loaded[quarter], &loaded[loaded.len() - 1]),
    })
}

impl SoakReport {
    fn new(every: Duration, retention: Duration, sending: Duration, samples: Vec<Sample>) -> Self {
        let window = retention.as_secs_f64();
        let sending = sending.as_secs_f64();
        let mut rows = Vec::new();
        let mut bytes = Vec::new();
        for (i, (name, bound)) in TABLES.iter().enumerate() {
            let of = |f: fn(&TableSample) -> i64| -> Vec<(f64, i64)> {
                samples
                    .iter()
                    .filter_map(|s| s.tables.get(i).copied().flatten().map(|t| (s.at_s, f(&t))))
                    .collect()
            };
            rows.extend(trend(name, Some(*bound), &of(|t| t.rows), window, sending));
            bytes.extend(trend(name, Some(*bound), &of(|t| t.bytes), window, sending));
        }
        let database: Vec<(f64, i64)> =
            samples.iter().map(|s| (s.at_s, s.database_bytes)).collect();
        bytes.extend(trend("database", None, &database, window, sending));
        let late = |bound: Option<Bound>| -> f64 {
            bytes
                .iter()
                .filter(|t| t.bound == bound)
                .map(|t| t.late_per_s)
                .sum()
        };
        let late_bytes_per_s = Growth {
            database: late(None),
            pruned: late(Some(Bound::Pruned)),
            business: late(Some(Bound::Business)),
        };
        Self {
            every_s: every.as_secs_f64(),
            retention_s: window,
            tables: TABLES.iter().map(|(n, _)| (*n).to_owned()).collect(),
            samples,
            rows,
            bytes,
            late_bytes_per_s,
        }
    }
}

/// Counts every table of [`TABLES`] and sizes the database.
async fn sample(pool: &PgPool, at: Duration) -> anyhow::Result<Sample> {
    let mut tables = Vec::with_capacity(TABLES.len());
    for (name, _) in TABLES {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(name)
            .fetch_one(pool)
            .await?;
        if !exists {
            tables.push(None);
            continue;
        }
        // The names are this file's constants, each `schema.table`.
        let (schema, table) = name.split_once('.').unwrap_or(("public", name));
        let sql = format!(
            "SELECT count(*), pg_total_relation_size($1::regclass) FROM {}.{}",
            airline_runtime::db::quote_ident(schema),
            airline_runtime::db::quote_ident(table)
        );
        let (rows, bytes): (i64, i64) = sqlx::query_as(&sql).bind(name).fetch_one(pool).await?;
        tables.push(Some(TableSample { rows, bytes }));
    }
    let database_bytes = sqlx::query_scalar("SELECT pg_database_size(current_database())")
        .fetch_one(pool)
        .await?;
    Ok(Sample {
        at_s: at.as_secs_f64(),
        database_bytes,
        tables,
    })
}

/// Samples every `every` from `start` until `stop` fires, then once more.
async fn sampler(
    pool: PgPool,
    start: Instant,
    every: Duration,
    mut stop: oneshot::Receiver<()>,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut next = start;
    loop {
        match sample(&pool, start.elapsed()).await {
            Ok(s) => {
                eprintln!(
                    "soak: {:>6.0} s  database {:>8.1} MiB  inbox {:>9}  requests {:>7}",
                    s.at_s,
                    mib(s.database_bytes),
                    s.tables[0].map_or(0, |t| t.rows),
                    s.tables[3].map_or(0, |t| t.rows),
                );
                samples.push(s);
            }
            Err(e) => eprintln!("soak: sampling failed: {e:#}"),
        }
        next += every;
        tokio::select! {
            _ = &mut stop => break,
            () = tokio::time::sleep_until(next) => {}
        }
    }
    if let Ok(s) = sample(&pool, start.elapsed()).await {
        samples.push(s);
    }
    samples
}

fn mib(bytes: i64) -> f64 {
    bytes as f64 / 1024.0 / 1024.0
}

/// A share of bookings through the gateway, the rest onto the broker.
struct Mixed {
    amqp: Amqp,
    http: Option<Http>,
    share: f64,
}

impl Target for Mixed {
    fn send(&self, i: u64) -> BoxFuture<'_, anyhow::Result<Uuid>> {
        match &self.http {
            Some(http) if in_share(i, self.share) => http.send(i),
            _ => self.amqp.send(i),
        }
    }
}

/// Checks the soak's own options.
///
/// # Errors
/// The option at fault.
pub fn validate(s: &SoakArgs) -> Result<(), String> {
    if !(0.0..=1.0).contains(&s.http_share) {
        return Err("--http-share must be between 0 and 1".into());
    }
    Ok(())
}

/// Runs the soak; returns the number of lost bookings.
///
/// # Errors
/// When the broker or database cannot be reached, or a report cannot be written.
pub async fn run(s: SoakArgs) -> anyhow::Result<u64> {
    let args = &s.run;
    let c = &args.connection;
    let connection =
        Arc::new(airline_runtime::broker::connect(&c.amqp_url, "airline-load-soak").await?);
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
    let (flights, _) = targets::create_flights(&pool, args.flights, args.seats, 0).await?;
    let mix = Mix {
        flights,
        sold_out: Vec::new(),
        decline_ratio: args.decline_ratio,
        sold_out_ratio: 0.0,
    };
    let http = if s.http_share > 0.0 {
        let key = keys::key_for_run(&pool, c.api_key.clone()).await?;
        Some(Http {
            client: keys::client(&key, None)?,
            base: c.gateway_url.trim_end_matches('/').to_owned(),
            mix: mix.clone(),
        })
    } else {
        None
    };
    let target = Arc::new(Mixed {
        amqp: Amqp::new(&connection, names.clone(), mix).await?,
        http,
        share: s.http_share,
    });
    let outcomes = run::listen(
        &connection,
        &names.resolve(EVENTS_EXCHANGE),
        &["booking.confirmed", "booking.failed"],
    )
    .await?;
    let start = Instant::now();
    let (stop, stopped) = oneshot::channel();
    let samples = tokio::spawn(sampler(pool.clone(), start, s.every, stopped));
    let recorder = run::drive(target, plan, outcomes, "soak").await;
    let _ = stop.send(());
    let samples = samples.await?;
    let settings = serde_json::json!({
        "rate": args.rate, "count": count, "flights": args.flights, "seats": args.seats,
        "decline_ratio": args.decline_ratio, "http_share": s.http_share, "prefix": c.prefix,
        "every_s": s.every.as_secs_f64(), "retention_s": s.retention.as_secs_f64(),
    });
    let summary = Summary::new("soak", args.rate, plan.window(), &recorder, settings);
    let soak = SoakReport::new(s.every, s.retention, plan.window(), samples);
    crate::print_table(std::slice::from_ref(&summary));
    println!();
    print!("{}", render(&soak));
    if let Some(path) = &args.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&serde_json::json!({ "run": summary, "soak": soak }))?,
        )?;
    }
    if let Some(dir) = &args.report {
        let mut charts = charts(&soak);
        charts.push(trends_html(&soak));
        charts.extend(report::run_charts(&recorder));
        report::write(
            dir,
            "airline-load soak",
            std::slice::from_ref(&summary),
            &charts,
            &format!(
                "Open-loop load at a steady rate; the tables that grow with traffic and the \
                 database size sampled every {} s (the retention window ends at {} s).",
                soak.every_s, soak.retention_s
            ),
        )?;
        std::fs::write(dir.join("soak.json"), serde_json::to_string_pretty(&soak)?)?;
        eprintln!("report: {}", dir.join("index.html").display());
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(summary.lost)
}

/// The samples and the trends, as text.
#[must_use]
pub fn render(soak: &SoakReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} samples, every {} s; the retention window ends at {} s",
        soak.samples.len(),
        soak.every_s,
        soak.retention_s
    );
    let _ = writeln!(
        out,
        "{:>7} {:>12} {:>10} {:>8} {:>9} {:>10} {:>12}",
        "t s", "database MiB", "inbox", "outbox", "requests", "bookings", "saga_history"
    );
    let rows = |s: &Sample, i: usize| s.tables.get(i).copied().flatten().map_or(0, |t| t.rows);
    for s in &soak.samples {
        let _ = writeln!(
            out,
            "{:>7.0} {:>12.1} {:>10} {:>8} {:>9} {:>10} {:>12}",
            s.at_s,
            mib(s.database_bytes),
            rows(s, 0),
            rows(s, 1),
            rows(s, 3),
            rows(s, 6),
            rows(s, 7)
        );
    }
    let _ = writeln!(
        out,
        "\n{:<27} {:>9} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9}  verdict",
        "rows", "bound", "start", "at window", "end", "peak", "before/s", "after/s"
    );
    for t in &soak.rows {
        let _ = writeln!(out, "{}", trend_line(t, 1.0));
    }
    let _ = writeln!(
        out,
        "\n{:<27} {:>9} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9}  verdict",
        "MiB", "bound", "start", "at window", "end", "peak", "KiB/s", "after"
    );
    for t in &soak.bytes {
        let _ = writeln!(out, "{}", trend_line(t, 1024.0 * 1024.0));
    }
    let g = soak.late_bytes_per_s;
    let _ = writeln!(
        out,
        "\nOver the last quarter of the sending: the database grew {:.1} KiB/s; the business \
         tables {:.1} KiB/s, the pruned tables {:.1} KiB/s.",
        g.database / 1024.0,
        g.business / 1024.0,
        g.pruned / 1024.0
    );
    out
}

fn verdict(t: &Trend) -> &'static str {
    match (t.at_window, t.bound) {
        (None, _) => "window not reached",
        (_, Some(Bound::Business)) => "grows with the bookings",
        _ if t.early_per_s == 0.0 && t.late_per_s == 0.0 => "unused",
        _ if t.levelled() => "levelled off",
        _ => "still growing",
    }
}

/// One trend's cells: name, bound, start, at window, end, peak, growth before and
/// after the window, verdict. Values are divided by `unit` (1 for rows; a MiB for
/// bytes, whose growth is then shown in KiB/s).
fn trend_cells(t: &Trend, unit: f64) -> [String; 9] {
    let rate = if unit > 1.0 { 1024.0 } else { 1.0 };
    let v = |x: i64| {
        if unit > 1.0 {
            format!("{:.1}", x as f64 / unit)
        } else {
            x.to_string()
        }
    };
    [
        t.name.clone(),
        match t.bound {
            Some(Bound::Pruned) => "pruned",
            Some(Bound::Business) => "business",
            None => "-",
        }
        .to_owned(),
        v(t.start),
        t.at_window.map_or("-".into(), v),
        v(t.end),
        v(t.peak),
        format!("{:.1}", t.early_per_s / rate),
        format!("{:.1}", t.late_per_s / rate),
        verdict(t).to_owned(),
    ]
}

fn trend_line(t: &Trend, unit: f64) -> String {
    let c = trend_cells(t, unit);
    format!(
        "{:<27} {:>9} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9}  {}",
        c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8]
    )
}

/// Charts of the pruned tables' rows, the business tables' rows and the sizes.
fn charts(soak: &SoakReport) -> Vec<String> {
    let series = |i: usize, f: fn(&TableSample) -> f64| -> Vec<(f64, f64)> {
        soak.samples
            .iter()
            .filter_map(|s| s.tables.get(i).copied().flatten().map(|t| (s.at_s, f(&t))))
            .collect()
    };
    let named = |indexes: &[usize], f: fn(&TableSample) -> f64| -> Vec<report::Series> {
        indexes
            .iter()
            .map(|&i| (TABLES[i].0.to_owned(), series(i, f)))
            .filter(|(_, points)| points.iter().any(|p| p.1 > 0.0))
            .collect()
    };
    let rows = |t: &TableSample| t.rows as f64;
    let sized = |bound: Bound| -> Vec<(f64, f64)> {
        soak.samples
            .iter()
            .map(|s| {
                let sum: i64 = s
                    .tables
                    .iter()
                    .zip(TABLES)
                    .filter(|(_, (_, b))| *b == bound)
                    .filter_map(|(t, _)| t.map(|t| t.bytes))
                    .sum();
                (s.at_s, mib(sum))
            })
            .collect()
    };
    let database: Vec<(f64, f64)> = soak
        .samples
        .iter()
        .map(|s| (s.at_s, mib(s.database_bytes)))
        .collect();
    vec![
        report::line_chart(
            "Rows of the pruned tables",
            "seconds",
            "rows",
            &named(&[0, 1, 3, 2], rows),
        ),
        report::line_chart(
            "Rows of the business tables (kept)",
            "seconds",
            "rows",
            &named(&[6, 7, 9, 12], rows),
        ),
        report::line_chart(
            "Database size",
            "seconds",
            "MiB",
            &[
                ("database".into(), database),
                ("pruned tables".into(), sized(Bound::Pruned)),
                ("business tables".into(), sized(Bound::Business)),
            ],
        ),
    ]
}

/// The trends as an HTML table.
fn trends_html(soak: &SoakReport) -> String {
    let escape = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;");
    let mut html = String::from(
        "<h2>Tables</h2><table><tr><th>table</th><th>bound</th><th>start</th><th>at window</th>\
         <th>end</th><th>peak</th><th>growth before the window, per s</th><th>after</th>\
         <th>verdict</th></tr>",
    );
    let rows = soak.rows.iter().map(|t| (t, 1.0, " rows"));
    let bytes = soak
        .bytes
        .iter()
        .map(|t| (t, 1024.0 * 1024.0, " MiB (KiB/s)"));
    for (t, unit, what) in rows.chain(bytes) {
        let mut cells = trend_cells(t, unit);
        cells[0].push_str(what);
        html.push_str("<tr>");
        for c in &cells {
            let _ = write!(html, "<td>{}</td>", escape(c));
        }
        html.push_str("</tr>");
    }
    html.push_str("</table>");
    let g = soak.late_bytes_per_s;
    let _ = write!(
        html,
        "<p>Over the last quarter of the sending: the database grew {:.1} KiB/s; the \
         business tables {:.1} KiB/s, the pruned tables {:.1} KiB/s.</p>",
        g.database / 1024.0,
        g.business / 1024.0,
        g.pruned / 1024.0
    );
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(values: &[i64]) -> Vec<(f64, i64)> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (i as f64 * 60.0, *v))
            .collect()
    }

    #[test]
    fn a_pruned_table_levels_off_after_the_window() {
        // Grows 100 rows/s for three minutes, then saws around 18,000.
        let inbox = points(&[
            0, 6_000, 12_000, 18_000, 17_500, 18_200, 17_900, 18_100, 18_000,
        ]);
        let t =
            trend("messaging.inbox", Some(Bound::Pruned), &inbox, 180.0, 480.0).expect("a trend");
        assert_eq!(t.at_window, Some(18_000));
        assert!((t.early_per_s - 100.0).abs() < 1e-9, "{t:?}");
        assert!(t.late_per_s.abs() < 10.0, "{t:?}");
        assert!(t.levelled());
        assert_eq!(verdict(&t), "levelled off");
        assert_eq!(t.peak, 18_200);
    }

    #[test]
    fn a_table_that_keeps_growing_is_said_to() {
        let grows = points(&[0, 100, 200, 300, 400, 500, 600, 700, 800]);
        let t = trend(
            "gateway.booking_requests",
            Some(Bound::Pruned),
            &grows,
            180.0,
            480.0,
        )
        .expect("a trend");
        assert!(!t.levelled());
        assert_eq!(verdict(&t), "still growing");
        let business = trend(
            "booking.bookings",
            Some(Bound::Business),
            &grows,
            180.0,
            480.0,
        )
        .expect("a trend");
        assert_eq!(verdict(&business), "grows with the bookings");
        let short = trend(
            "messaging.inbox",
            Some(Bound::Pruned),
            &grows,
            7.0 * 86_400.0,
            480.0,
        )
        .expect("a trend");
        assert_eq!(verdict(&short), "window not reached");
        assert!(trend("x", None, &[], 1.0, 1.0).is_none());
        // Shrinking after the last send (the drain) is no growth.
        let drained = points(&[0, 6_000, 12_000, 18_000, 18_000, 18_000, 9_000, 0, 0]);
        let t = trend(
            "messaging.inbox",
            Some(Bound::Pruned),
            &drained,
            180.0,
            300.0,
        )
        .expect("a trend");
        assert!(t.late_per_s.abs() < 1e-9, "{t:?}");
        assert!(t.levelled());
    }

    #[test]
    fn the_report_has_a_trend_per_table_and_the_database() {
        let sample = |at_s: f64, rows: i64| Sample {
            at_s,
            database_bytes: 8 << 20,
            tables: TABLES
                .iter()
                .map(|_| {
                    Some(TableSample {
                        rows,
                        bytes: rows * 100,
                    })
                })
                .collect(),
        };
        let soak = SoakReport::new(
            Duration::from_secs(30),
            Duration::from_secs(60),
            Duration::from_secs(120),
            vec![sample(0.0, 0), sample(60.0, 10), sample(120.0, 10)],
        );
        assert_eq!(soak.rows.len(), TABLES.len());
        assert_eq!(soak.bytes.len(), TABLES.len() + 1);
        let text = render(&soak);
        assert!(
            text.contains("messaging.inbox") && text.contains("levelled off"),
            "{text}"
        );
        assert!(trends_html(&soak).contains("<td>database MiB (KiB/s)</td>"));
    }
}
