//! `airline`: run the whole system locally, migrate, seed.

use std::process::ExitCode;

use airline_runtime::service::{bind, main_with};
use clap::{Parser, Subcommand};

/// The airline booking pipeline. Reads AMQP_URL, DATABASE_URL, AIRLINE_HTTP_ADDR
/// and AIRLINE_PREFIX (see README.md).
#[derive(Debug, Parser)]
#[command(name = "airline", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the database if missing, migrate, declare the topology, seed the demo
    /// flights, then run the gateway and all five workers until Ctrl-C or SIGTERM.
    Up {
        /// Do not create the demo flights.
        #[arg(long)]
        no_seed: bool,
    },
    /// Create the database if missing, run every migration and declare the topology;
    /// remove the old broker layout's queues of AIRLINE_PREFIX (per-queue DLQs, whose
    /// dead letters are moved to the shared DLQ, and empty per-queue retry tiers).
    Migrate,
    /// Create the demo flights (idempotent).
    Seed,
    /// Check the books (seats, money, loyalty, sagas, messages) and exit 1 naming
    /// every violation. Run it when no booking is in flight.
    Audit {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Inspect sagas.
    #[command(subcommand)]
    Saga(SagaCommand),
    /// Drain, inspect, fix, replay and discard dead letters.
    #[command(subcommand)]
    Dlq(airline::dlq::DlqCommand),
    /// Create, list and revoke the gateway's API keys.
    #[command(subcommand)]
    Apikey(airline::apikey::ApiKeyCommand),
    /// Delete every queue and exchange under AIRLINE_PREFIX, messages included
    /// (for throw-away namespaces: tests, smoke runs).
    Teardown {
        /// Confirm that the messages in those queues may be deleted.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
enum SagaCommand {
    /// Everything about one booking's saga: state, every transition with its time,
    /// trigger and attempts, the seat, the charge and the refund.
    Show {
        /// The booking id.
        booking_id: uuid::Uuid,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Sagas not moved for a while, oldest first (stuck ones, with --state).
    List {
        /// Only this state.
        #[arg(long)]
        state: Option<airline::saga::SagaState>,
        /// Not moved for at least this long (a duration: 90s, 10m, 24h).
        #[arg(long, default_value = "0s", value_parser = airline_runtime::retry::parse_duration)]
        older_than: std::time::Duration,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    // Bad arguments: clap prints what was wrong and exits with status 2.
    let cli = Cli::parse();
    if matches!(cli.command, Command::Teardown { yes: false }) {
        eprintln!(
            "airline teardown deletes every queue under AIRLINE_PREFIX with its messages; add --yes to do it"
        );
        return ExitCode::from(2);
    }
    if matches!(cli.command, Command::Migrate) {
        // Looking for the old layout's queues: each one missing is a channel the
        // broker closes with "not found", which the client logs as an error.
        airline_runtime::telemetry::init_with(&["lapin::channel=off"]);
    }
    main_with(
        "airline",
        airline::SERVICES,
        move |rt, shutdown| async move {
            match cli.command {
                // Starting migrated every service's schema and declared the topology.
                Command::Migrate => {
                    let report = airline::upgrade::remove_old_layout(&rt).await?;
                    print!("{}", report.render(&rt.names.dead_letters()));
                    println!("database migrated and topology declared");
                }
                Command::Seed => {
                    let n = airline::seed(&rt).await?;
                    println!("{n} demo flights present");
                }
                Command::Audit { json } => {
                    let report = airline::audit::audit_all(&rt).await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&report)?);
                    } else {
                        print!("{}", airline::audit::render(&report));
                    }
                    anyhow::ensure!(
                        report.ok,
                        "{} invariant violation(s)",
                        report.violations.len()
                    );
                }
                Command::Saga(SagaCommand::Show { booking_id, json }) => {
                    let Some(saga) = airline::saga::show(&rt.pool, booking_id).await? else {
                        anyhow::bail!("no booking {booking_id}");
                    };
                    if json {
                        println!("{}", serde_json::to_string_pretty(&saga)?);
                    } else {
                        print!("{}", airline::saga::render(&saga));
                    }
                }
                Command::Saga(SagaCommand::List {
                    state,
                    older_than,
                    limit,
                    json,
                }) => {
                    let lines = airline::saga::list(
                        &rt.pool,
                        state.map(|s| s.0.as_str()),
                        older_than.as_secs_f64(),
                        limit,
                    )
                    .await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&lines)?);
                    } else {
                        for l in &lines {
                            println!(
                                "{}  {:<18} {:<26} {}",
                                l.booking_id,
                                l.state,
                                l.failure_reason.as_deref().unwrap_or(""),
                                l.updated_at
                            );
                        }
                        println!("{} saga(s)", lines.len());
                    }
                }
                Command::Dlq(command) => airline::dlq::run(&rt, command, shutdown).await?,
                Command::Apikey(command) => airline::apikey::run(&rt, command).await?,
                Command::Teardown { .. } => {
                    let n = airline::teardown(&rt).await?;
                    println!(
                        "deleted the {n} queues and the exchanges under {} (and the old layout's queues, if any)",
                        rt.names.prefix()
                    );
                }
                Command::Up { no_seed } => {
                    let listener = bind(&rt.config).await?;
                    if !no_seed {
                        let n = airline::seed(&rt).await?;
                        tracing::info!(
                            flights = n,
                            "demo flights present (a1000000-0000-4000-8000-00000000000N)"
                        );
                    }
                    tracing::info!(
                        addr = %rt.config.http.addr,
                        services = airline::SERVICES.len(),
                        "airline is up: the gateway and every worker; Ctrl-C to stop"
                    );
                    airline::run_all(&rt, listener, shutdown).await?;
                    tracing::info!("stopped");
                }
            }
            Ok(())
        },
    )
}
