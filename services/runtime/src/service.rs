//! Starting a service: connect, migrate, declare, consume, serve /healthz, stop.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use airline_contracts::{Names, QueueSpec};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::broker::{self, Publisher};
use crate::config::Config;
use crate::consumer::{ConsumerContext, Handler, run_consumer};
use crate::db;
use crate::outbox::{Dispatcher, RelaySignal, run_relay, start_dispatcher};

/// The connections a process shares between its services.
#[derive(Clone)]
pub struct Runtime {
    /// The configuration it started with.
    pub config: Config,
    /// The database pool.
    pub pool: PgPool,
    /// The broker connection (automatic recovery on, and a watchdog).
    pub broker: broker::Broker,
    watchdog: CancellationToken,
    /// Broker names under the configured prefix.
    pub names: Names,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Connects to the database (creating it if missing) and the broker, migrates the
    /// messaging schema and declares the topology.
    ///
    /// # Errors
    /// One line naming what is unreachable.
    pub async fn start(config: Config, process_name: &str) -> anyhow::Result<Self> {
        let pool = db::connect(&config.database.url, config.database.pool).await?;
        db::migrate(&pool, "messaging", &db::MESSAGING_MIGRATIONS).await?;
        let broker = broker::Broker::connect(&config.broker.url, process_name).await?;
        let names = Names::new(config.broker.prefix.clone());
        let channel = broker.create_channel().await?;
        broker::declare_topology(&channel, &names, &config).await?;
        let _ = channel.close(200, "topology declared".into()).await;
        Ok(Self {
            config,
            pool,
            watchdog: {
                let watchdog = CancellationToken::new();
                tokio::spawn(broker.clone().watch(watchdog.clone()));
                watchdog
            },
            broker,
            names,
        })
    }

    /// Runs a service's migrations in its own schema.
    ///
    /// # Errors
    /// When a migration fails.
    pub async fn migrate(&self, schema: &str, migrator: &Migrator) -> anyhow::Result<()> {
        db::migrate(&self.pool, schema, migrator).await
    }

    /// Closes the broker connection and the pool.
    pub async fn close(&self) {
        self.watchdog.cancel();
        self.broker.close().await;
        self.pool.close().await;
    }
}

/// A service's consumers: which queue each handler serves.
pub type Handlers = Vec<(&'static QueueSpec, Arc<dyn Handler>)>;

/// Builds a service's consumers from the runtime's configuration.
pub type HandlersFn = fn(&Runtime) -> Handlers;

/// A background job of a service (a scheduled sweep), run beside its consumers
/// until the token is cancelled. It may wake the service's relay after writing to
/// the outbox.
pub type JobFn = fn(
    Runtime,
    RelaySignal,
    CancellationToken,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Starts `producer`'s outbox relay and dispatcher.
///
/// # Errors
/// When their publishing channels cannot be opened.
pub async fn start_outbox(
    rt: &Runtime,
    producer: &'static str,
    tasks: &tokio_util::task::TaskTracker,
    relay_stop: &CancellationToken,
) -> anyhow::Result<(RelaySignal, Dispatcher)> {
    let relay = start_relay(rt, producer, tasks, relay_stop).await?;
    let dispatcher = start_dispatcher(
        &rt.broker,
        rt.pool.clone(),
        rt.names.clone(),
        producer,
        tasks,
    )
    .await?;
    Ok((relay, dispatcher))
}

/// Starts the outbox relay of `producer` and returns the signal that wakes it.
///
/// # Errors
/// When its publishing channel cannot be opened.
pub async fn start_relay(
    rt: &Runtime,
    producer: &'static str,
    tasks: &tokio_util::task::TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<RelaySignal> {
    let signal: RelaySignal = Arc::new(Notify::new());
    let publisher = Publisher::open(&rt.broker).await?;
    tasks.spawn(run_relay(
        rt.pool.clone(),
        publisher,
        rt.names.clone(),
        producer.to_owned(),
        rt.config.outbox.batch,
        Arc::clone(&signal),
        shutdown.clone(),
    ));
    Ok(signal)
}

/// Runs a worker service (its relay and its consumers) until `shutdown`.
///
/// # Errors
/// When a consumer cannot start or loses the broker for good; the others are then
/// stopped too.
pub async fn run_worker(
    rt: &Runtime,
    service: &'static str,
    handlers: Handlers,
    jobs: &[JobFn],
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let tasks = tokio_util::task::TaskTracker::new();
    // The relay outlives the consumers: it stops after them, to publish what their
    // last commits wrote.
    let relay_stop = CancellationToken::new();
    let (relay, dispatcher) = start_outbox(rt, service, &tasks, &relay_stop).await?;
    tasks.spawn(db::maintain(rt.pool.clone(), shutdown.clone()));
    for job in jobs {
        tasks.spawn(job(rt.clone(), Arc::clone(&relay), shutdown.clone()));
    }
    let ctx = ConsumerContext {
        broker: rt.broker.clone(),
        pool: rt.pool.clone(),
        names: rt.names.clone(),
        service,
        prefetch: rt.config.broker.prefetch,
        config: rt.config.clone(),
        dispatcher,
    };
    let mut consumers = tokio::task::JoinSet::new();
    for (queue, handler) in handlers {
        consumers.spawn(run_consumer(ctx.clone(), queue, handler, shutdown.clone()));
    }
    let mut result = Ok(());
    while let Some(joined) = consumers.join_next().await {
        let outcome = joined.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(e) = outcome {
            tracing::error!(
                service,
                error = format!("{e:#}"),
                "consumer failed; stopping the service"
            );
            shutdown.cancel();
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    // Dropping the last dispatcher lets the deleter finish.
    drop(ctx);
    relay_stop.cancel();
    tasks.close();
    tasks.wait().await;
    result
}

/// `/healthz` (200 when the broker connection is up and the database answers) and
/// `/metrics` (Prometheus text format).
pub fn health_router(rt: Runtime) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(rt)
}

async fn metrics(
    State(rt): State<Runtime>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::metrics::METRICS.render(&rt).await,
    )
}

async fn healthz(State(rt): State<Runtime>) -> (StatusCode, axum::Json<serde_json::Value>) {
    let broker = rt.broker.connected();
    let database = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(&rt.pool),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    let up = |ok: bool| if ok { "up" } else { "down" };
    let status = if broker && database {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(serde_json::json!({
            "status": if status == StatusCode::OK { "ok" } else { "unavailable" },
            "broker": up(broker),
            "database": up(database),
        })),
    )
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Serves `router` on the configured address until `shutdown`.
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve(
    router: Router,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}

/// Binds the configured HTTP address, with an error that names it.
///
/// # Errors
/// When the address is taken or not local.
pub async fn bind(config: &Config) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(config.http.addr)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on AIRLINE_HTTP_ADDR={}: {e}",
                config.http.addr
            )
        })
}

/// The `main` of a service binary: reads the environment, connects, then runs
/// `body` until Ctrl-C or SIGTERM cancels its token. Configuration errors exit 2; an unreachable broker or database, or a
/// failure of `body`, prints one line and exits 1.
pub fn main_with<F, Fut>(process: &'static str, body: F) -> ExitCode
where
    F: FnOnce(Runtime, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    crate::telemetry::init();
    crate::install_tls();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{process}: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{process}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let rt = Runtime::start(config, process).await?;
        let shutdown = CancellationToken::new();
        let signal_token = shutdown.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutdown requested");
            signal_token.cancel();
        });
        let result = body(rt.clone(), shutdown).await;
        rt.close().await;
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{process}: {e:#}");
            // A refused request (a bad id, a bad edit) is the caller's mistake.
            if e.downcast_ref::<crate::dead_letters::Refusal>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The `main` of a worker binary: migrates the service's schema, serves /healthz
/// and runs the worker until Ctrl-C or SIGTERM.
pub fn worker_main(
    service: &'static str,
    migrations: &'static Migrator,
    handlers: HandlersFn,
    jobs: &'static [JobFn],
) -> ExitCode {
    let process: &'static str = Box::leak(format!("airline-{service}").into_boxed_str());
    main_with(process, move |rt, shutdown| async move {
        let listener = bind(&rt.config).await?;
        rt.migrate(service, migrations).await?;
        tracing::info!(service, addr = %rt.config.http.addr, "serving /healthz");
        let http = tokio::spawn(serve(health_router(rt.clone()), listener, shutdown.clone()));
        let result = run_worker(&rt, service, handlers(&rt), jobs, shutdown.clone()).await;
        shutdown.cancel();
        let _ = http.await;
        result
    })
}
