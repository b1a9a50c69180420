//! The whole system in one process: every migration, the demo data, and
//! [`run_all`], which runs the gateway and the five workers together (`airline up`,
//! and the integration tests).

pub mod apikey;
pub mod audit;
pub mod dlq;
pub mod saga;

use airline_runtime::Runtime;
use airline_runtime::service::{HandlersFn, JobFn, run_worker};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Runs every service's migrations (the messaging schema is migrated at connect).
///
/// # Errors
/// When a migration fails.
pub async fn migrate_all(rt: &Runtime) -> anyhow::Result<()> {
    airline_gateway::migrate(rt).await?;
    rt.migrate("payment", &airline_payment::MIGRATIONS).await?;
    rt.migrate("notify", &airline_notify::MIGRATIONS).await
}

/// Creates the demo flights; running it again changes nothing. Returns how many
/// demo flights exist.
///
/// # Errors
/// Database errors.
pub async fn seed(rt: &Runtime) -> anyhow::Result<usize> {
    let flights = airline_catalog::flights::demo_flights();
    for flight in &flights {
        airline_catalog::flights::create(&rt.pool, flight).await?;
    }
    Ok(flights.len())
}

/// Runs the gateway on `listener` and the five workers until `shutdown`; if one
/// fails, the others are stopped and its error returned.
///
/// # Errors
/// The first service's failure.
pub async fn run_all(
    rt: &Runtime,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut services = tokio::task::JoinSet::new();
    {
        let (rt, shutdown) = (rt.clone(), shutdown.clone());
        services.spawn(async move { airline_gateway::run(&rt, listener, shutdown).await });
    }
    let workers: [(&'static str, HandlersFn, &'static [JobFn]); 5] = [
        ("catalog", airline_catalog::handlers, &[]),
        ("booking", airline_booking::handlers, airline_booking::JOBS),
        ("payment", airline_payment::handlers, &[]),
        ("loyalty", airline_loyalty::handlers, &[]),
        ("notify", airline_notify::handlers, &[]),
    ];
    for (service, handlers, jobs) in workers {
        let (rt, shutdown) = (rt.clone(), shutdown.clone());
        services
            .spawn(async move { run_worker(&rt, service, handlers(&rt), jobs, shutdown).await });
    }
    let mut result = Ok(());
    while let Some(joined) = services.join_next().await {
        if let Err(e) = joined.map_err(anyhow::Error::from).and_then(|r| r) {
            shutdown.cancel();
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    result
}

/// Deletes every queue and exchange of the runtime's namespace. Returns how many
/// queues were deleted.
///
/// # Errors
/// When the broker refuses.
pub async fn teardown(rt: &Runtime) -> anyhow::Result<usize> {
    use airline_contracts::topology::{COMMANDS_EXCHANGE, DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE};
    let channel = rt.broker.create_channel().await?;
    let queues = airline_runtime::broker::declared_queues(&rt.names, &rt.config);
    for q in &queues {
        channel
            .queue_delete(
                q.as_str().into(),
                lapin::options::QueueDeleteOptions::default(),
            )
            .await?;
    }
    for x in [COMMANDS_EXCHANGE, EVENTS_EXCHANGE, DEAD_LETTER_EXCHANGE] {
        channel
            .exchange_delete(
                rt.names.resolve(x).into(),
                lapin::options::ExchangeDeleteOptions::default(),
            )
            .await?;
    }
    let _ = channel.close(200, "teardown done".into()).await;
    Ok(queues.len())
}
