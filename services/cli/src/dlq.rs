//! `airline dlq`: the operator's commands over the dead-letter store
//! ([`airline_dead_letters`]).

use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::time::Duration;

use airline_dead_letters::{self as store, Edit, Filter, Refusal, Selection};
use airline_runtime::Runtime;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

/// `airline dlq ...`
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Move dead letters from the broker's DLQs (the shared one and the booking DLQ)
    /// into the store, each recorded under the queue it died in (acked only after
    /// the commit). Stops, and says so, when the store holds AIRLINE_DLQ_MAX.
    Drain {
        /// Only the DLQ holding this queue's dead letters: `booking.dlq` for the
        /// booking DLQ; for a work queue (e.g. payment.collect) the shared DLQ,
        /// which holds every work queue's and is drained whole.
        #[arg(long)]
        queue: Option<String>,
        /// Keep draining every few seconds until Ctrl-C (a worker).
        #[arg(long)]
        follow: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Counts per queue and failures grouped by cause, newest first; with --group,
    /// the dead letters of that group.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Status: stored (default), replayed or discarded.
        #[arg(long, value_parser = ["stored", "replayed", "discarded"])]
        status: Option<String>,
        /// At most this many dead letters (with --group).
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Everything about one dead letter, body pretty-printed (secrets redacted).
    Show {
        /// The dead letter's id.
        id: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Send dead letters again, once: to the queue they died in, with a new message
    /// id linked to the original (x-causation-id). Edited bodies go instead of the
    /// original.
    Replay {
        /// One dead letter.
        #[arg(conflicts_with_all = ["group", "all"], required_unless_present_any = ["group", "all"])]
        id: Option<i64>,
        #[command(flatten)]
        filter: FilterArgs,
        /// Every stored dead letter matching the filters.
        #[arg(long)]
        all: bool,
        /// Send one dead letter again even if it was replayed or discarded.
        #[arg(long, requires = "id")]
        force: bool,
        /// Who is replaying (default: $USER).
        #[arg(long)]
        by: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Correct a stored dead letter's body; the next replay sends the edited copy.
    Edit {
        /// The dead letter's id.
        id: i64,
        /// Set a field: path=value (path like a.b.0.c; value JSON, or text).
        #[arg(
            long = "set",
            value_name = "PATH=VALUE",
            required_unless_present = "body",
            conflicts_with = "body"
        )]
        set: Vec<String>,
        /// Replace the whole body with this file's contents.
        #[arg(long, value_name = "FILE")]
        body: Option<std::path::PathBuf>,
        /// Who is editing (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
    /// Archive dead letters without sending them (kept for AIRLINE_DLQ_RETENTION).
    Discard {
        /// One dead letter.
        #[arg(conflicts_with_all = ["group", "all"], required_unless_present_any = ["group", "all"])]
        id: Option<i64>,
        #[command(flatten)]
        filter: FilterArgs,
        /// Every stored dead letter matching the filters.
        #[arg(long)]
        all: bool,
        /// Who is discarding (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
    /// Delete replayed and discarded dead letters resolved longer ago than this.
    Purge {
        /// A duration: 30m, 24h, 7d.
        #[arg(long, value_parser = parse_duration)]
        older_than: Duration,
    },
}

/// Which dead letters.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// A group id, from `airline dlq list`.
    #[arg(long)]
    group: Option<String>,
    /// The queue they died in (e.g. payment.collect).
    #[arg(long)]
    queue: Option<String>,
    /// Message type, with or without its version (payment.collect, payment.collect.v1).
    #[arg(long = "type")]
    message_type: Option<String>,
    /// Failed within this long (30m, 24h) or since this RFC 3339 time.
    #[arg(long, value_parser = parse_since)]
    since: Option<OffsetDateTime>,
}

impl FilterArgs {
    fn filter(&self, status: Option<String>) -> Filter {
        Filter {
            queue: self.queue.clone(),
            message_type: self.message_type.clone(),
            since: self.since,
            group: self.group.clone(),
            status,
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    airline_runtime::retry::parse_duration(s)
}

fn parse_since(s: &str) -> Result<OffsetDateTime, String> {
    if let Ok(t) = OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Ok(t);
    }
    let d = parse_duration(s).map_err(|e| format!("{e}, or an RFC 3339 time"))?;
    Ok(OffsetDateTime::now_utc() - d)
}

fn operator(by: Option<String>) -> String {
    by.or_else(|| std::env::var("USER").ok())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "cli".into())
}

/// A progress bar on a terminal (stderr), nothing otherwise.
fn progress(len: Option<u64>, what: &'static str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = len.map_or_else(ProgressBar::no_length, ProgressBar::new);
    let template = if len.is_some() {
        "{msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})"
    } else {
        "{msg} {pos} ({per_sec})"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what);
    bar
}

/// One dead letter, or the stored ones a group or `--all` (with filters) names.
fn selection(id: Option<i64>, filter: &FilterArgs, all: bool) -> Result<Selection, Refusal> {
    if let Some(id) = id {
        return Ok(Selection::One(id));
    }
    let f = filter.filter(None);
    if !all && f.group.is_none() {
        return Err(Refusal::Invalid(
            "name a dead letter, --group or --all".into(),
        ));
    }
    Ok(Selection::Matching(f))
}

async fn matching_count(rt: &Runtime, filter: &Filter) -> anyhow::Result<u64> {
    let groups = store::groups(&rt.pool, filter).await?;
    Ok(groups
        .iter()
        .map(|g| u64::try_from(g.count).unwrap_or(0))
        .sum())
}

/// Runs one `airline dlq` command.
///
/// # Errors
/// [`Refusal`] (exit status 2) for a bad id or edit; anything else exits 1.
pub async fn run(
    rt: &Runtime,
    command: DlqCommand,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    match command {
        DlqCommand::Drain {
            queue,
            follow,
            json,
        } => {
            let bar = progress(None, "draining");
            loop {
                let report = store::drain(rt, queue.as_deref(), &mut |n| bar.inc(n)).await?;
                if json {
                    println!("{}", serde_json::to_string(&report)?);
                } else if report.stored + report.already_stored + report.expired > 0 || !follow {
                    bar.suspend(|| {
                        println!(
                            "drained {} dead letter(s) into the store ({} already there); {} left in the broker; store {}/{}{}",
                            report.stored,
                            report.already_stored,
                            report.left_in_broker,
                            report.store_size,
                            report.store_max,
                            if report.expired > 0 {
                                format!("; {} expired ones deleted", report.expired)
                            } else {
                                String::new()
                            }
                        );
                        let shared = rt.names.dead_letters();
                        if let Some(q) = queue.as_deref()
                            && report.drained.contains(&shared)
                        {
                            println!(
                                "--queue {q}: {shared} holds the dead letters of every work queue, so it was drained whole; each is stored under the queue it died in (airline dlq list --queue {q})"
                            );
                        }
                    });
                }
                if report.full {
                    let full = format!(
                        "the dead-letter store is full ({} of AIRLINE_DLQ_MAX={}): draining stopped with {} dead letter(s) left in the broker; discard or purge (airline dlq discard, airline dlq purge), or raise AIRLINE_DLQ_MAX",
                        report.store_size, report.store_max, report.left_in_broker
                    );
                    if !follow {
                        bar.finish_and_clear();
                        anyhow::bail!(full);
                    }
                    tracing::warn!("{full}");
                }
                if !follow {
                    break;
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(if report.full { 30 } else { 2 })) => {}
                    () = shutdown.cancelled() => break,
                }
            }
            bar.finish_and_clear();
        }
        DlqCommand::List {
            filter,
            status,
            limit,
            json,
        } => {
            let f = filter.filter(status);
            if f.group.is_some() {
                let letters = store::list(&rt.pool, &f, limit).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&letters)?);
                } else {
                    println!(
                        "{:>8}  {:<26} {:<24} {:<20} {:<9} {:<36}",
                        "ID", "QUEUE", "TYPE", "KIND", "STATUS", "CORRELATION"
                    );
                    for l in &letters {
                        println!(
                            "{:>8}  {:<26} {:<24} {:<20} {:<9} {:<36}{}",
                            l.id,
                            l.queue,
                            l.message_type.as_deref().unwrap_or("-"),
                            l.error_kind,
                            l.status,
                            l.correlation_id.as_deref().unwrap_or("-"),
                            if l.edited { "  (edited)" } else { "" }
                        );
                    }
                    println!("{} dead letter(s)", letters.len());
                }
            } else {
                let counts = store::counts(&rt.pool).await?;
                let groups = store::groups(&rt.pool, &f).await?;
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(
                            &serde_json::json!({ "queues": counts, "groups": groups })
                        )?
                    );
                } else {
                    print!("{}", render_overview(&counts, &groups));
                }
            }
        }
        DlqCommand::Show { id, json } => {
            let detail = store::show(&rt.pool, id)
                .await?
                .ok_or(Refusal::NotFound(id))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&detail)?);
            } else {
                let s = &detail.summary;
                println!("dead letter {}  ({})", s.id, s.status);
                println!("  queue          {}", s.queue);
                println!(
                    "  type           {}",
                    s.message_type.as_deref().unwrap_or("-")
                );
                println!(
                    "  message id     {}",
                    s.message_id.as_deref().unwrap_or("-")
                );
                println!(
                    "  correlation    {}",
                    s.correlation_id.as_deref().unwrap_or("-")
                );
                println!(
                    "  published to   {} / {}",
                    detail.original_exchange, detail.original_routing_key
                );
                println!(
                    "  failed         {} ({})",
                    s.error_kind,
                    s.failed_at.map(|t| t.to_string()).unwrap_or_default()
                );
                println!("  error          {}", detail.error);
                println!("  group          {}", s.group);
                println!("  drained        {}", detail.drained_at);
                if detail.replays > 0 {
                    println!(
                        "  replayed       {} time(s), last {} by {} as {}",
                        detail.replays,
                        detail
                            .replayed_at
                            .map(|t| t.to_string())
                            .unwrap_or_default(),
                        detail.replayed_by.as_deref().unwrap_or("-"),
                        detail
                            .replay_message_id
                            .map(|m| m.to_string())
                            .unwrap_or_default()
                    );
                }
                if let Some(by) = &detail.discarded_by {
                    println!("  discarded      by {by}");
                }
                println!("  properties     {}", detail.properties);
                println!(
                    "  headers        {}",
                    serde_json::to_string_pretty(&detail.headers)?
                        .replace('\n', "\n                 ")
                );
                println!(
                    "  body           {}",
                    serde_json::to_string_pretty(&detail.body)?
                        .replace('\n', "\n                 ")
                );
                if let Some(edited) = &detail.edited_body {
                    println!(
                        "  edited body    (by {}; a replay sends this) {}",
                        detail.edited_by.as_deref().unwrap_or("-"),
                        serde_json::to_string_pretty(edited)?.replace('\n', "\n                 ")
                    );
                }
            }
        }
        DlqCommand::Replay {
            id,
            filter,
            all,
            force,
            by,
            json,
        } => {
            let by = operator(by);
            let selection = selection(id, &filter, all)?;
            let bar = match &selection {
                Selection::One(_) => ProgressBar::hidden(),
                Selection::Matching(f) => progress(Some(matching_count(rt, f).await?), "replaying"),
            };
            let report = store::replay(rt, &selection, &by, force, &mut |n| bar.inc(n)).await?;
            bar.finish_and_clear();
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("replayed {} dead letter(s)", report.replayed);
                for m in &report.message_ids {
                    println!("sent as message {m}");
                }
            }
        }
        DlqCommand::Edit { id, set, body, by } => {
            let edit = match body {
                Some(path) => Edit::Body(std::fs::read(&path).map_err(|e| {
                    Refusal::Invalid(format!("cannot read {}: {e}", path.display()))
                })?),
                None => Edit::Set(
                    set.iter()
                        .map(|kv| {
                            kv.split_once('=')
                                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                                .ok_or_else(|| {
                                    Refusal::Invalid(format!("--set {kv}: expected PATH=VALUE"))
                                })
                        })
                        .collect::<Result<_, _>>()?,
                ),
            };
            let shown = store::edit(&rt.pool, id, edit, &operator(by)).await?;
            println!("dead letter {id} edited; `airline dlq replay {id}` sends:");
            println!("{}", serde_json::to_string_pretty(&shown)?);
        }
        DlqCommand::Discard {
            id,
            filter,
            all,
            by,
        } => {
            let selection = selection(id, &filter, all)?;
            let n = store::discard(&rt.pool, &selection, &operator(by)).await?;
            println!(
                "discarded {n} dead letter(s); kept for {}s (AIRLINE_DLQ_RETENTION), then deleted",
                rt.config.dead_letters.retention.as_secs()
            );
        }
        DlqCommand::Purge { older_than } => {
            let n = store::purge(&rt.pool, older_than).await?;
            println!("deleted {n} replayed or discarded dead letter(s)");
        }
    }
    Ok(())
}

/// A readable table of counts and groups.
#[must_use]
fn render_overview(counts: &[store::QueueCount], groups: &[store::Group]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<28} {:>8} {:>9} {:>10}",
        "QUEUE", "STORED", "REPLAYED", "DISCARDED"
    );
    for c in counts {
        let _ = writeln!(
            out,
            "{:<28} {:>8} {:>9} {:>10}",
            c.queue, c.stored, c.replayed, c.discarded
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<11} {:>6}  {:<26} {:<20} {:<20} ERROR",
        "GROUP", "COUNT", "TYPE", "KIND", "LAST FAILED"
    );
    for g in groups {
        let last = g
            .last_failed_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let error: String = g.example_error.chars().take(100).collect();
        let _ = writeln!(
            out,
            "{:<11} {:>6}  {:<26} {:<20} {:<20} {error}",
            g.group,
            g.count,
            g.message_type.as_deref().unwrap_or("-"),
            g.error_kind,
            &last[..last.len().min(19)],
        );
    }
    let total: i64 = groups.iter().map(|g| g.count).sum();
    let _ = writeln!(out, "{} group(s), {total} dead letter(s)", groups.len());
    out
}
