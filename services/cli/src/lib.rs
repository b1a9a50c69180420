//! The whole system in one process: [`SERVICES`], the one list of every service's
//! descriptor; the demo data; and [`run_all`], which runs the gateway and the
//! workers together (`airline up`, and the integration tests).

pub mod apikey;
pub mod audit;
pub mod dlq;
pub mod saga;
pub mod upgrade;

use airline_runtime::service::run_worker;
use airline_runtime::{Runtime, Service};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Every service of the system: the gateway, then the workers. `airline up`, the
/// CLI's migrations, the chaos run's processes and the tests read this list.
pub static SERVICES: &[&Service] = &[
    &airline_gateway::SERVICE,
    &airline_catalog::SERVICE,
    &airline_booking::SERVICE,
    &airline_payment::SERVICE,
    &airline_loyalty::SERVICE,
    &airline_notify::SERVICE,
];

/// The services that consume queues (every one but the gateway).
pub fn workers() -> impl Iterator<Item = &'static Service> {
    SERVICES.iter().copied().filter(|s| !s.consumers.is_empty())
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

/// Runs the gateway on `listener` and every worker until `shutdown`; if one fails,
/// the others are stopped and its error returned.
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
    for service in workers() {
        let (rt, shutdown) = (rt.clone(), shutdown.clone());
        services.spawn(async move { run_worker(&rt, service, shutdown).await });
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

/// Deletes every queue and exchange of the runtime's namespace, and the old
/// layout's queues if there are any. Returns how many queues of the topology were
/// deleted.
///
/// # Errors
/// When the broker refuses.
pub async fn teardown(rt: &Runtime) -> anyhow::Result<usize> {
    use airline_runtime::broker::{declared_exchanges, declared_queues};
    let channel = rt.broker.create_channel().await?;
    let queues = declared_queues(&rt.names, &rt.config);
    let old = airline_runtime::topology::old_layout_queues(&rt.names, &rt.config);
    // Deleting a queue that does not exist succeeds.
    for q in queues.iter().chain(old.iter().map(|q| &q.name)) {
        channel
            .queue_delete(
                q.as_str().into(),
                lapin::options::QueueDeleteOptions::default(),
            )
            .await?;
    }
    for x in declared_exchanges(&rt.names) {
        channel
            .exchange_delete(
                x.as_str().into(),
                lapin::options::ExchangeDeleteOptions::default(),
            )
            .await?;
    }
    let _ = channel.close(200, "teardown done".into()).await;
    Ok(queues.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_queue_has_exactly_one_handler_in_the_descriptors() {
        for service in SERVICES {
            assert_eq!(service.check(), Ok(()), "{}", service.name);
        }
        for queue in airline_contracts::QUEUES {
            if queue.consumer == airline_contracts::topology::PARKING {
                continue;
            }
            let owners = SERVICES.iter().filter(|s| s.name == queue.consumer).count();
            assert_eq!(
                owners, 1,
                "{} is consumed by {}",
                queue.name, queue.consumer
            );
        }
    }

    #[test]
    fn service_names_are_unique() {
        let mut names: Vec<_> = SERVICES.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SERVICES.len());
    }

    /// No source file of the workspace grows past 800 lines (split a module before).
    #[test]
    fn no_source_file_is_over_800_lines() {
        fn walk(dir: &std::path::Path, long: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    if path.file_name().is_some_and(|n| n != "target") {
                        walk(&path, long);
                    }
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let lines = std::fs::read_to_string(&path).map_or(0, |s| s.lines().count());
                    if lines > 800 {
                        long.push(format!("{} ({lines} lines)", path.display()));
                    }
                }
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut long = Vec::new();
        for top in ["contracts", "services", "load-tests"] {
            walk(&root.join(top), &mut long);
        }
        assert!(long.is_empty(), "split these: {long:?}");
    }

    /// Every metric the Grafana dashboard in docs/ queries is served, the
    /// services' own gauges included.
    #[test]
    fn the_dashboard_uses_only_metrics_that_exist() {
        let dashboard = include_str!("../../../docs/grafana/airline-dashboard.json");
        let m = &*airline_runtime::metrics::METRICS;
        m.register(SERVICES);
        m.touch_all();
        let families = m.families();
        let mut used = 0;
        for (i, _) in dashboard.match_indices("airline_") {
            let name: String = dashboard[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let family = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            assert!(families.iter().any(|f| f == family), "{name} is not served");
            used += 1;
        }
        assert!(used >= 10, "the dashboard queries the metrics");
    }
}
