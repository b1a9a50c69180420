//! The catalog: flights and their seats.
//!
//! [`flights`] creates, finds and searches flights (the gateway calls it for the
//! flight routes); [`seats`] holds the two message handlers of the saga, reserve a
//! seat (atomic and conditional: never below zero) and release a seat (idempotent per
//! booking: a duplicate release never creates a seat).

pub mod flights;
pub mod seats;

use std::sync::Arc;

use airline_contracts::topology::queues_of;
use airline_runtime::{Handlers, Runtime};
use sqlx::migrate::Migrator;

/// The catalog schema's migrations.
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// The catalog's consumers.
#[must_use]
pub fn handlers(rt: &Runtime) -> Handlers {
    let fail_reserve = rt
        .config
        .fails(airline_runtime::config::FaultStep::ReserveSeat);
    queues_of("catalog")
        .map(|q| {
            let handler: Arc<dyn airline_runtime::Handler> = match q.name {
                "flight.reserve-seat" => Arc::new(seats::ReserveSeatHandler { fail: fail_reserve }),
                _ => Arc::new(seats::ReleaseSeatHandler {
                    fail: rt
                        .config
                        .fails(airline_runtime::config::FaultStep::ReleaseSeat),
                }),
            };
            (q, handler)
        })
        .collect()
}
