//! The chaos run's faults and their timeline, from the services' descriptors.

use std::fmt;

use airline_runtime::Service;

/// The gateway, which creates the database and is started first.
pub(super) static GATEWAY: &Service = &airline_gateway::SERVICE;
/// The worker whose provider the slow-provider fault slows.
pub(super) static PAYMENT: &Service = &airline_payment::SERVICE;
/// The workers run twice for a while (competing consumers).
pub(super) static TWICE: [&Service; 2] = [&airline_booking::SERVICE, &airline_payment::SERVICE];

/// A fault of the run's timeline.
#[derive(Debug, Clone, Copy)]
pub(super) enum FaultKind {
    /// `kill -9` a worker, then start it again.
    Kill(&'static Service),
    /// Start a second copy of [`TWICE`].
    SecondCopies,
    /// Stop those second copies.
    StopSecondCopies,
    /// `rabbitmqctl close_all_connections`.
    CloseConnections,
    /// `rabbitmqctl stop_app`, a pause, `start_app`.
    RestartRabbitMq,
    /// `pg_ctlcluster … stop -m fast`, a pause, `start`.
    RestartPostgres,
    /// Restart payment with every provider call slower than the payment deadline.
    SlowPayment,
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Kill(s) => write!(f, "kill -9 {}, restart", s.name),
            Self::SecondCopies => {
                write!(f, "second copy of {}", TWICE.map(|s| s.name).join(" and "))
            }
            Self::StopSecondCopies => f.write_str("stop the second copies"),
            Self::CloseConnections => f.write_str("close every broker connection"),
            Self::RestartRabbitMq => f.write_str("restart RabbitMQ"),
            Self::RestartPostgres => f.write_str("restart PostgreSQL"),
            Self::SlowPayment => f.write_str("payment provider slower than the payment deadline"),
        }
    }
}

/// The timeline: each fault at a share of the run. Every worker is killed once.
pub(super) fn schedule(restarts: bool) -> Vec<(f64, FaultKind)> {
    let mut schedule: Vec<(f64, FaultKind)> = airline::workers()
        .enumerate()
        .map(|(i, w)| (0.08 + 0.06 * i as f64, FaultKind::Kill(w)))
        .collect();
    schedule.extend([
        (0.34, FaultKind::SecondCopies),
        (0.44, FaultKind::CloseConnections),
        (0.52, FaultKind::StopSecondCopies),
        (0.80, FaultKind::SlowPayment),
    ]);
    if restarts {
        schedule.push((0.60, FaultKind::RestartRabbitMq));
        schedule.push((0.74, FaultKind::RestartPostgres));
    }
    schedule.sort_by(|a, b| a.0.total_cmp(&b.0));
    schedule
}

/// The key of a service's second copy.
pub(super) fn second(service: &Service) -> String {
    format!("{}-2", service.name)
}
