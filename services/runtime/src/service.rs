//! Starting a service: connect, migrate, declare, consume, serve /healthz, stop.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use airline_contracts::Names;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::broker::{self, Publisher};
use crate::config::Config;
use crate::consumer::{ConsumerContext, run_consumer};
use crate::db;
use crate::descriptor::{Service, closure};
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
    /// The services this process runs, and those they read, each once.
    services: Vec<&'static Service>,
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
    /// messaging schema and the schemas of `services` and of the services they read
    /// (each once), and declares the topology.
    ///
    /// # Errors
    /// One line naming what is unreachable, or the migration that failed.
    pub async fn start(
        config: Config,
        process_name: &str,
        services: &[&'static Service],
    ) -> anyhow::Result<Self> {
        let pool = db::connect(&config.database.url, config.database.pool).await?;
        db::migrate(&pool, "messaging", &db::MESSAGING_MIGRATIONS).await?;
        let services = closure(services);
        for service in &services {
            db::migrate(&pool, service.name, service.migrations).await?;
        }
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
            services,
        })
    }

    /// The services this process runs and those they read, each once.
    #[must_use]
    pub fn services(&self) -> &[&'static Service] {
        &self.services
    }

    /// Closes the broker connection and the pool.
    pub async fn close(&self) {
        self.watchdog.cancel();
        self.broker.close().await;
        self.pool.close().await;
    }
}

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

/// Runs a worker service (its relay, its consumers, its jobs, the vacuuming of its
/// schema and the pruning of the inbox) until `shutdown`.
///
/// # Errors
/// When its descriptor does not match the contracts, a handler cannot be built, or
/// a consumer cannot start or loses the broker for good; the others are then
/// stopped too.
pub async fn run_worker(
    rt: &Runtime,
    descriptor: &'static Service,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    descriptor.check().map_err(anyhow::Error::msg)?;
    let service = descriptor.name;
    let mut handlers = Vec::with_capacity(descriptor.consumers.len());
    for c in descriptor.consumers {
        let handler = (c.handler)(&rt.config, &rt.pool)
            .map_err(|e| e.context(format!("building the handlers of {service}")))?;
        handlers.extend(c.queues.iter().map(|q| (*q, Arc::clone(&handler))));
    }
    let tasks = tokio_util::task::TaskTracker::new();
    // The relay outlives the consumers: it stops after them, to publish what their
    // last commits wrote.
    let relay_stop = CancellationToken::new();
    let (relay, dispatcher) = start_outbox(rt, service, &tasks, &relay_stop).await?;
    tasks.spawn(db::maintain(
        rt.pool.clone(),
        vec!["messaging", service],
        shutdown.clone(),
    ));
    tasks.spawn(crate::prune::prune_inbox_every(
        rt.pool.clone(),
        rt.config.inbox.retention,
        shutdown.clone(),
    ));
    for job in descriptor.jobs {
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
    health(rt.broker.connected(), &rt.pool).await
}

/// The `/healthz` answer: 200 when the broker connection is up and the database
/// answers within 2 s, 503 otherwise, with each part's state.
pub async fn health(broker: bool, pool: &PgPool) -> (StatusCode, axum::Json<serde_json::Value>) {
    let database = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(pool),
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

/// The `main` of a binary that runs `services`: reads the environment, connects,
/// migrates, then runs `body` until Ctrl-C or SIGTERM cancels its token.
/// Configuration errors exit 2; an unreachable broker or database, or a failure of
/// `body`, prints one line and exits 1.
pub fn main_with<F, Fut>(process: &'static str, services: &[&'static Service], body: F) -> ExitCode
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
        let rt = Runtime::start(config, process, services).await?;
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
            if e.downcast_ref::<crate::Refusal>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The `main` of a worker binary: migrates the service's schema, serves /healthz
/// and runs the worker until Ctrl-C or SIGTERM.
pub fn worker_main(service: &'static Service) -> ExitCode {
    let process: &'static str = Box::leak(service.binary().into_boxed_str());
    main_with(process, &[service], move |rt, shutdown| async move {
        let listener = bind(&rt.config).await?;
        tracing::info!(service = service.name, addr = %rt.config.http.addr, "serving /healthz");
        let http = tokio::spawn(serve(health_router(rt.clone()), listener, shutdown.clone()));
        let result = run_worker(&rt, service, shutdown.clone()).await;
        shutdown.cancel();
        let _ = http.await;
        result
    })
}
