//! PostgreSQL: connect (creating the database if it is missing) and migrate.
//!
//! Each service owns a schema named after it and keeps its migrations in its own
//! crate. Every migrator runs on a connection whose `search_path` is its schema, so
//! each schema holds its own `_sqlx_migrations` table and the services' migration
//! histories never meet.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use backon::{ExponentialBuilder, Retryable};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

use crate::config::redact_url;

/// The messaging runtime's own migrations (schema `messaging`: inbox and outbox).
pub static MESSAGING_MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// Connects a pool, creating the database first if it does not exist. Retries for a
/// few seconds while the server is starting.
///
/// # Errors
/// One line naming the URL (password hidden) and what went wrong.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let shown = redact_url(url);
    let options = PgConnectOptions::from_str(url)
        .with_context(|| format!("DATABASE_URL {shown} is not a valid PostgreSQL URL"))?
        .disable_statement_logging();
    let retry = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(2))
        .with_max_times(6);
    (|| async { PgConnection::connect_with(&options).await })
        .retry(retry)
        .when(|e| !is_missing_database(e))
        .await
        .map(drop)
        .or_else(|e| {
            if is_missing_database(&e) {
                Ok(())
            } else {
                Err(e)
            }
        })
        .with_context(|| format!("cannot reach PostgreSQL at {shown}"))?;
    create_database_if_missing(&options)
        .await
        .with_context(|| format!("cannot create the database of {shown}"))?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options)
        .await
        .with_context(|| format!("cannot connect to PostgreSQL at {shown}"))
}

fn is_missing_database(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "3D000")
}

async fn create_database_if_missing(options: &PgConnectOptions) -> anyhow::Result<()> {
    let name = options.get_database().unwrap_or("postgres").to_owned();
    match PgConnection::connect_with(options).await {
        Ok(conn) => return Ok(conn.close().await?),
        Err(e) if is_missing_database(&e) => {}
        Err(e) => return Err(e.into()),
    }
    let mut admin = PgConnection::connect_with(&options.clone().database("postgres")).await?;
    // A database name cannot be a bind parameter; it is quoted as an identifier.
    let sql = format!("CREATE DATABASE {}", quote_ident(&name));
    match sqlx::raw_sql(&sql).execute(&mut admin).await {
        Ok(_) => tracing::info!(database = %name, "created the database"),
        Err(e)
            if e.as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| created_by_another(&c)) => {}
        Err(e) => return Err(e.into()),
    }
    admin.close().await?;
    Ok(())
}

/// Whether a `CREATE DATABASE` failed only because another process created the same
/// database at the same moment: 42P04 (duplicate_database) when the other had
/// committed, 23505 (unique_violation on `pg_database_datname_index`) when both
/// inserted their catalog row at once. Several binaries starting together on a fresh
/// database meet the second.
fn created_by_another(sqlstate: &str) -> bool {
    matches!(sqlstate, "42P04" | "23505")
}

/// Quotes a PostgreSQL identifier.
#[must_use]
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Runs `migrator` in `schema`, creating the schema first.
///
/// # Errors
/// When the schema cannot be created or a migration fails.
pub async fn migrate(pool: &PgPool, schema: &str, migrator: &Migrator) -> anyhow::Result<()> {
    let options = pool
        .connect_options()
        .as_ref()
        .clone()
        .options([("search_path", schema)]);
    let mut conn = PgConnection::connect_with(&options).await?;
    // Serialise schema creation between processes starting at once.
    sqlx::query("SELECT pg_advisory_lock(hashtext('airline.migrate'))")
        .execute(&mut conn)
        .await?;
    let result = async {
        let sql = format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(schema));
        sqlx::raw_sql(&sql).execute(&mut conn).await?;
        migrator
            .run(&mut conn)
            .await
            .with_context(|| format!("migrating schema {schema}"))
    }
    .await;
    sqlx::query("SELECT pg_advisory_unlock(hashtext('airline.migrate'))")
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    result
}

/// Vacuums the tables of `schemas` whose dead rows outnumber their live ones (and
/// number over 10,000), every 10 s until `shutdown`. Each service vacuums its own
/// schema and the messaging schema (the schemas of its descriptor).
///
/// The outbox is written and deleted at the rate of the traffic, and sagas are
/// updated several times each: with autovacuum off or lagging (it is off on some
/// machines this runs on), the relay's scans and the deadline sweep would wade
/// through ever more dead rows. `VACUUM (SKIP_LOCKED)` lets several processes do
/// this without waiting on each other.
pub async fn maintain(
    pool: PgPool,
    schemas: Vec<&'static str>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        let bloated: Vec<(String, String)> = match sqlx::query_as(
            "SELECT schemaname::text, relname::text FROM pg_stat_user_tables
              WHERE schemaname = ANY($1) AND n_dead_tup > 10000 AND n_dead_tup > n_live_tup",
        )
        .bind(&schemas)
        .fetch_all(&pool)
        .await
        {
            Ok(rows) => rows,
            Err(e) => {
                tracing::debug!(error = %e, "could not read table statistics");
                continue;
            }
        };
        for (schema, table) in bloated {
            let sql = format!(
                "VACUUM (SKIP_LOCKED, ANALYZE) {}.{}",
                quote_ident(&schema),
                quote_ident(&table)
            );
            match sqlx::raw_sql(&sql).execute(&pool).await {
                Ok(_) => tracing::info!(table = %format!("{schema}.{table}"), "vacuumed"),
                Err(e) => tracing::warn!(error = %e, table = %table, "vacuum failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_created_by_another_process_is_no_error() {
        assert!(created_by_another("42P04"));
        assert!(created_by_another("23505"));
        assert!(!created_by_another("42501"));
        assert!(!created_by_another("3D000"));
    }
}
