//! The catalog: flights and their seats.
//!
//! [`flights`] creates, finds and searches flights (the gateway calls it for the
//! flight routes); [`seats`] holds the two message handlers of the saga, reserve a
//! seat (atomic and conditional: never below zero) and release a seat (idempotent per
//! booking: a duplicate release never creates a seat).

pub mod flights;
pub mod seats;

use std::sync::Arc;

use airline_contracts::topology::{RELEASE_SEAT, RESERVE_SEAT};
use airline_runtime::{Consumer, Service};
use sqlx::migrate::Migrator;

/// The catalog schema's migrations.
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// The catalog service: schema `catalog`, the seat steps of the saga.
pub static SERVICE: Service = Service {
    name: "catalog",
    migrations: &MIGRATIONS,
    reads: &[],
    consumers: &[
        Consumer {
            queues: &[&RESERVE_SEAT],
            handler: |config, _| {
                Ok(Arc::new(seats::ReserveSeatHandler {
                    fail: config.fails(airline_runtime::config::FaultStep::ReserveSeat),
                }))
            },
        },
        Consumer {
            queues: &[&RELEASE_SEAT],
            handler: |config, _| {
                Ok(Arc::new(seats::ReleaseSeatHandler {
                    fail: config.fails(airline_runtime::config::FaultStep::ReleaseSeat),
                }))
            },
        },
    ],
    jobs: &[],
    gauges: &[],
};
