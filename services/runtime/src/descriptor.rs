//! A service as one value: its name, schema, migrations, consumers, jobs and gauges.
//!
//! Each service crate exports one [`Service`]; the worker binaries, `airline up`,
//! the vacuum loop, the metrics and the chaos run's process list all read these
//! descriptors instead of lists written out by hand. The contracts' topology says
//! which service consumes each queue; a descriptor pairs each of its queues with
//! the handler that serves it, and [`Service::check`] (run at start and by the
//! tests) refuses a queue without a handler or a handler for a queue the service
//! does not own.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use airline_contracts::QueueSpec;
use airline_contracts::topology::queues_of;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::consumer::Handler;
use crate::outbox::RelaySignal;
use crate::service::Runtime;

/// Builds a queue's handler from the configuration and the database pool (no
/// broker: handlers can be built and called in database-only tests).
pub type HandlerFn = fn(&Config, &PgPool) -> anyhow::Result<Arc<dyn Handler>>;

/// A background job of a service (a scheduled sweep), run beside its consumers
/// until the token is cancelled. It may wake the service's relay after writing to
/// the outbox.
pub type JobFn =
    fn(Runtime, RelaySignal, CancellationToken) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// Reads a gauge's values (label values, value) when `/metrics` is scraped.
pub type GaugeReadFn = for<'a> fn(
    &'a PgPool,
) -> Pin<
    Box<dyn Future<Output = sqlx::Result<Vec<(Vec<String>, i64)>>> + Send + 'a>,
>;

/// A handler and the queues of a service it serves (one handler value serves them
/// all, so state it holds is shared between them).
#[derive(Debug, Clone, Copy)]
pub struct Consumer {
    /// The queues, as the contracts define them.
    pub queues: &'static [&'static QueueSpec],
    /// Builds the handler.
    pub handler: HandlerFn,
}

/// A gauge describing a service's state, read from its tables when scraped.
#[derive(Debug, Clone, Copy)]
pub struct Gauge {
    /// The metric's name, after the `airline_` prefix.
    pub name: &'static str,
    /// Its help text.
    pub help: &'static str,
    /// Its label names.
    pub labels: &'static [&'static str],
    /// Reads its values.
    pub read: GaugeReadFn,
}

/// A service: everything the runtime needs to migrate, run and observe it.
#[derive(Debug)]
pub struct Service {
    /// Its name: the database schema it owns, the producer of its outbox rows, the
    /// consumer named in the contracts' topology, and its binary `airline-<name>`.
    pub name: &'static str,
    /// Its schema's migrations.
    pub migrations: &'static Migrator,
    /// The services whose schemas it reads (migrated before it).
    pub reads: &'static [&'static Service],
    /// Its queues and their handlers: exactly the queues the contracts give it.
    pub consumers: &'static [Consumer],
    /// Its background jobs.
    pub jobs: &'static [JobFn],
    /// Gauges of its state for `/metrics`.
    pub gauges: &'static [Gauge],
}

impl Service {
    /// The binary that runs it on its own.
    #[must_use]
    pub fn binary(&self) -> String {
        format!("airline-{}", self.name)
    }

    /// Whether its consumers are exactly the queues the contracts give it, each
    /// once.
    ///
    /// # Errors
    /// A sentence naming the queue without a handler, or the handler without a
    /// queue of this service.
    pub fn check(&self) -> Result<(), String> {
        let served = || self.consumers.iter().flat_map(|c| c.queues.iter());
        for queue in queues_of(self.name) {
            match served().filter(|q| q.name == queue.name).count() {
                1 => {}
                0 => {
                    return Err(format!(
                        "service {} has no handler for its queue {}",
                        self.name, queue.name
                    ));
                }
                n => {
                    return Err(format!(
                        "service {} has {n} handlers for its queue {}",
                        self.name, queue.name
                    ));
                }
            }
        }
        if let Some(q) = served().find(|q| q.consumer != self.name) {
            return Err(format!(
                "service {} has a handler for {}, which {} consumes",
                self.name, q.name, q.consumer
            ));
        }
        Ok(())
    }

    /// This service after the services it reads, each once, in migration order.
    #[must_use]
    pub fn with_reads(&'static self) -> Vec<&'static Service> {
        let mut out = Vec::new();
        add_with_reads(self, &mut out);
        out
    }
}

fn add_with_reads(service: &'static Service, out: &mut Vec<&'static Service>) {
    if out.iter().any(|s| s.name == service.name) {
        return;
    }
    for read in service.reads {
        add_with_reads(read, out);
    }
    out.push(service);
}

/// `services` and the services they read, each once, every service after those it
/// reads.
#[must_use]
pub fn closure(services: &[&'static Service]) -> Vec<&'static Service> {
    let mut out = Vec::new();
    for s in services {
        add_with_reads(s, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::{HandlerError, Incoming};
    use airline_contracts::Message;
    use airline_contracts::topology::{RELEASE_SEAT, RESERVE_SEAT, SEAT_RESERVED};

    static NO_MIGRATIONS: Migrator = Migrator::DEFAULT;

    struct Nothing;

    #[async_trait::async_trait]
    impl Handler for Nothing {
        async fn handle(
            &self,
            _: &mut sqlx::PgConnection,
            _: &Incoming,
        ) -> Result<Vec<Message>, HandlerError> {
            Ok(Vec::new())
        }
    }

    fn nothing(_: &Config, _: &PgPool) -> anyhow::Result<Arc<dyn Handler>> {
        Ok(Arc::new(Nothing))
    }

    const CATALOG: Service = Service {
        name: "catalog",
        migrations: &NO_MIGRATIONS,
        reads: &[],
        consumers: &[
            Consumer {
                queues: &[&RESERVE_SEAT],
                handler: nothing,
            },
            Consumer {
                queues: &[&RELEASE_SEAT],
                handler: nothing,
            },
        ],
        jobs: &[],
        gauges: &[],
    };

    #[test]
    fn a_service_serves_exactly_its_queues() {
        assert_eq!(CATALOG.check(), Ok(()));
        let missing = Service {
            consumers: &CATALOG.consumers[..1],
            ..CATALOG
        };
        let err = missing.check().unwrap_err();
        assert!(
            err.contains("no handler for its queue flight.release-seat"),
            "{err}"
        );
        static FOREIGN: [Consumer; 2] = [
            Consumer {
                queues: &[&RESERVE_SEAT, &RELEASE_SEAT],
                handler: nothing,
            },
            Consumer {
                queues: &[&SEAT_RESERVED],
                handler: nothing,
            },
        ];
        let foreign = Service {
            consumers: &FOREIGN,
            ..CATALOG
        };
        let err = foreign.check().unwrap_err();
        assert!(
            err.contains("flight.seat-reserved, which booking consumes"),
            "{err}"
        );
    }

    #[test]
    fn reads_come_first_and_once() {
        const READER: Service = Service {
            name: "gateway",
            reads: &[&CATALOG, &CATALOG],
            consumers: &[],
            ..CATALOG
        };
        let names: Vec<_> = closure(&[&CATALOG, &READER, &READER])
            .iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["catalog", "gateway"]);
        assert_eq!(READER.binary(), "airline-gateway");
    }
}
