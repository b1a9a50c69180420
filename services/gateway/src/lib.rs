//! The HTTP gateway: validates, publishes commands through its outbox, and serves
//! reads from PostgreSQL.
//!
//! `POST /v1/bookings` answers 202 once the `booking.requested` message is durable:
//! committed to the outbox in the same transaction as the gateway's record of the
//! request. The relay publishes it with confirms right after. Errors are
//! `application/problem+json` naming the field at fault. The OpenAPI document is
//! generated from the router's handlers ([`openapi`]); `openapi.json` is its copy.

mod admin;
pub mod auth;
mod bookings;
mod extract;
pub mod housekeeping;
mod openapi;
mod problem;
mod publisher;
mod routes;
mod webhooks;

use std::sync::Arc;

use airline_runtime::config::Config;
use airline_runtime::outbox::Dispatcher;
use airline_runtime::{Runtime, Service};
use axum::Router;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;

pub use problem::Problem;
pub use publisher::{Publisher, Recorder};

/// The gateway schema's migrations.
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

pub use routes::document as openapi;

/// Shared state of the handlers. It needs no broker: commands go to the outbox
/// and then to a [`Publisher`]; only the routes that work the broker itself
/// (dead-letter drain and replay, the broker's health) need a [`Runtime`], and
/// answer 503 without one.
#[derive(Clone, Debug)]
pub struct AppState {
    pool: PgPool,
    config: Arc<Config>,
    publisher: Arc<dyn Publisher>,
    runtime: Option<Runtime>,
    keys: Arc<auth::Keys>,
}

impl AppState {
    /// The state of a running gateway: `rt`'s pool, configuration and broker, and
    /// the outbox `dispatcher` publishing right behind each answer.
    #[must_use]
    pub fn new(rt: &Runtime, dispatcher: Dispatcher) -> Self {
        Self {
            pool: rt.pool.clone(),
            config: Arc::new(rt.config.clone()),
            publisher: Arc::new(dispatcher),
            runtime: Some(rt.clone()),
            keys: Arc::default(),
        }
    }

    /// A state without a broker (tests): committed outbox rows go to
    /// `publisher` (a [`Recorder`] lets the test read them), and the relay is
    /// not running.
    #[must_use]
    pub fn without_broker(pool: PgPool, config: Config, publisher: Arc<dyn Publisher>) -> Self {
        Self {
            pool,
            config: Arc::new(config),
            publisher,
            runtime: None,
            keys: Arc::default(),
        }
    }

    /// The runtime with its broker, or 503 when this gateway runs without one.
    pub(crate) fn runtime(&self) -> Result<&Runtime, Problem> {
        self.runtime.as_ref().ok_or_else(|| {
            Problem::plain(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "Service unavailable",
                "this gateway has no broker connection",
            )
        })
    }
}

/// The gateway: schema `gateway` (requests, idempotency and API keys); it reads
/// the flights, bookings, loyalty and webhook endpoints of the services named in
/// `reads`, whose schemas are migrated before its own. It consumes no queue.
pub static SERVICE: Service = Service {
    name: "gateway",
    migrations: &MIGRATIONS,
    reads: &[
        &airline_catalog::SERVICE,
        &airline_booking::SERVICE,
        &airline_loyalty::SERVICE,
        &airline_notify::SERVICE,
    ],
    consumers: &[],
    jobs: &[],
    gauges: &[],
};

/// The router over `state`.
pub fn app(state: AppState) -> Router {
    routes::router(state)
}

/// How long an `Idempotency-Key` answers as the first request did.
pub use housekeeping::IDEMPOTENCY_FOR;

/// Serves the gateway on `listener` until `shutdown`, with its outbox relay; the
/// relay publishes what is left after the server has stopped.
///
/// # Errors
/// When the relay cannot start or the server fails.
pub async fn run(
    rt: &Runtime,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let tasks = tokio_util::task::TaskTracker::new();
    let relay_stop = CancellationToken::new();
    let (_relay, dispatcher) =
        airline_runtime::service::start_outbox(rt, SERVICE.name, &tasks, &relay_stop).await?;
    // Replays an operator committed but did not get out (a crashed `airline dlq
    // replay`, or a replay over HTTP cut short).
    airline_runtime::service::start_relay(rt, airline_dead_letters::OPERATOR, &tasks, &relay_stop)
        .await?;
    tasks.spawn(housekeeping::run(
        rt.pool.clone(),
        rt.config.inbox.retention,
        relay_stop.clone(),
    ));
    tasks.spawn(airline_runtime::db::maintain(
        rt.pool.clone(),
        vec![SERVICE.name],
        relay_stop.clone(),
    ));
    let result =
        airline_runtime::service::serve(app(AppState::new(rt, dispatcher)), listener, shutdown)
            .await;
    relay_stop.cancel();
    tasks.close();
    tasks.wait().await;
    result
}
