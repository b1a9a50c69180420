//! Database-only tests of handlers (cargo feature `testing`).
//!
//! A service crate's tests create a [`TestDatabase`] (a database of their own on the
//! PostgreSQL server of `DATABASE_URL`, migrated for the services they name and
//! those they read), build a handler from the service's descriptor and call it
//! through [`TestDatabase::process`] (with the inbox and outbox, as the consumer
//! does) or [`crate::Handler::handle`] inside a transaction: no broker involved.
//! The database is dropped when the [`TestDatabase`] is, also when the test panics.

use std::sync::Arc;

use airline_contracts::{Message, QueueSpec};
use anyhow::Context as _;
use sqlx::{Connection as _, PgConnection, PgPool};

use crate::config::Config;
use crate::consumer::{self, Handler, HandlerError, Incoming, Outcome};
use crate::db;
use crate::descriptor::{Service, closure};

/// The PostgreSQL server of `DATABASE_URL` (its default when unset), without the
/// database part.
#[must_use]
pub fn server_url() -> String {
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/airline".into());
    match base.rsplit_once('/') {
        Some((server, _)) => server.to_owned(),
        None => base,
    }
}

/// A database of one test's own, migrated; dropped with it.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    pool: PgPool,
}

impl TestDatabase {
    /// Creates a fresh database and migrates the messaging schema, then `services`
    /// and the services they read, in order.
    ///
    /// # Errors
    /// When the server cannot be reached or a migration fails.
    pub async fn create(services: &[&'static Service]) -> anyhow::Result<Self> {
        let name = format!("airline_unit_{}", uuid::Uuid::new_v4().simple());
        let pool = db::connect(&format!("{}/{name}", server_url()), 5).await?;
        // From here on the database exists: dropping `this` removes it, also when a
        // migration below fails.
        let this = Self { name, pool };
        db::migrate(&this.pool, "messaging", &db::MESSAGING_MIGRATIONS).await?;
        for service in closure(services) {
            db::migrate(&this.pool, service.name, service.migrations).await?;
        }
        Ok(this)
    }

    /// The pool of the test database.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The handler `service`'s descriptor builds for `queue`.
    ///
    /// # Errors
    /// When the service does not consume `queue`, or its handler cannot be built.
    pub fn handler(
        &self,
        service: &'static Service,
        queue: &QueueSpec,
        config: &Config,
    ) -> anyhow::Result<Arc<dyn Handler>> {
        let consumer = service
            .consumers
            .iter()
            .find(|c| c.queues.iter().any(|q| q.name == queue.name))
            .with_context(|| format!("{} does not consume {}", service.name, queue.name))?;
        (consumer.handler)(config, &self.pool)
    }

    /// Handles `msg` as `service`'s consumer of `queue` does: with the inbox row
    /// (a second delivery of the same message id is [`Outcome::Duplicate`]) and the
    /// outbox rows, in one transaction.
    ///
    /// # Errors
    /// The handler's [`HandlerError`]; nothing was committed then.
    pub async fn process(
        &self,
        service: &'static Service,
        queue: &QueueSpec,
        handler: &dyn Handler,
        msg: &Incoming,
    ) -> Result<Outcome, HandlerError> {
        let consumer_key = format!("{}:{}", service.name, queue.name);
        consumer::process(&self.pool, &consumer_key, service.name, handler, msg).await
    }

    /// Runs `handler` on `msg` inside a transaction that is committed when it
    /// succeeds, without the inbox or outbox: returns the messages it sends.
    ///
    /// # Errors
    /// The handler's [`HandlerError`]; the transaction is rolled back then.
    pub async fn handle(
        &self,
        handler: &dyn Handler,
        msg: &Incoming,
    ) -> Result<Vec<Message>, HandlerError> {
        let mut tx = self.pool.begin().await?;
        let out = handler.handle(&mut tx, msg).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// The messages `producer` wrote to the outbox, oldest first.
    ///
    /// # Errors
    /// Database errors, or a row that does not decode.
    pub async fn sent(&self, producer: &str) -> anyhow::Result<Vec<Message>> {
        let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT message_type, body FROM messaging.outbox WHERE producer = $1 ORDER BY id",
        )
        .bind(producer)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|(t, body)| {
                Message::decode(Some(t), body)
                    .map_err(|e| anyhow::anyhow!("outbox row of type {t}: {e}"))
            })
            .collect()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on: the
        // database is dropped from a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut admin) =
                    PgConnection::connect(&format!("{}/postgres", server_url())).await
                {
                    let sql = format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        db::quote_ident(&name)
                    );
                    let _ = sqlx::raw_sql(&sql).execute(&mut admin).await;
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
}

/// A first delivery of `message`, with a fresh message id.
#[must_use]
pub fn incoming(message: Message) -> Incoming {
    incoming_with(message, &uuid::Uuid::new_v4().to_string(), 1)
}

/// The `attempt`-th delivery of `message` under `message_id` (the same id twice is
/// the same message delivered twice).
#[must_use]
pub fn incoming_with(message: Message, message_id: &str, attempt: u32) -> Incoming {
    Incoming {
        message_id: message_id.to_owned(),
        message,
        traceparent: None,
        attempt,
        request_id: None,
    }
}
