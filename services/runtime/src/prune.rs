//! Bounded tables: rows that matter only for a while are deleted in small batches.
//!
//! `messaging.inbox` gets a row per delivery (nine per booking) and is needed only
//! to recognise a message delivered again. Rows older than `AIRLINE_INBOX_RETENTION`
//! are deleted [`BATCH`] at a time, each batch its own short statement, so that no
//! lock is held for long and no transaction grows with the backlog (the first run
//! on a table that was never pruned works through it batch by batch). Every worker
//! runs the job; a session advisory lock lets one process per database prune a
//! round, and the others skip it. See docs/reliability.md, "Bounded tables".

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

/// Rows deleted per statement.
pub const BATCH: i64 = 5_000;

/// What a pruning did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Rows deleted.
    pub rows: u64,
    /// Statements run (the last one deleted fewer than a full batch).
    pub batches: u32,
}

/// A statement that deletes at most `$1` rows (`size`), and, when `window` is
/// given, takes it in seconds as `$2`; it returns the rows it deleted.
#[derive(Debug, Clone, Copy)]
pub struct Batch {
    /// The statement.
    pub sql: &'static str,
    /// Rows per statement, bound as `$1`.
    pub size: i64,
    /// An age, bound in seconds as `$2`.
    pub window: Option<Duration>,
}

/// Runs `batch` on `conn` until a statement deletes fewer than `batch.size` rows,
/// or `stop` is cancelled between two statements.
///
/// # Errors
/// The first statement that fails; the batches before it stay deleted.
pub async fn in_batches(
    conn: &mut PgConnection,
    batch: Batch,
    stop: &CancellationToken,
) -> sqlx::Result<Pruned> {
    let mut pruned = Pruned::default();
    loop {
        let mut query = sqlx::query(batch.sql).bind(batch.size);
        if let Some(window) = batch.window {
            query = query.bind(window.as_secs_f64());
        }
        let deleted = query.execute(&mut *conn).await?.rows_affected();
        pruned.rows += deleted;
        pruned.batches += 1;
        if !full(deleted, batch.size) || stop.is_cancelled() {
            return Ok(pruned);
        }
    }
}

/// Whether a batch deleted as many rows as it could, so that more may be waiting.
fn full(deleted: u64, size: i64) -> bool {
    u64::try_from(size).is_ok_and(|size| deleted >= size)
}

// The ctids of a batch are taken and locked by the sub-select, and deleted by a
// TID scan in the same statement. A row being updated at that moment (a duplicate
// delivery bumping its counter) is skipped, not waited for.
const PRUNE_INBOX: &str = "DELETE FROM messaging.inbox WHERE ctid = ANY (ARRAY(
     SELECT ctid FROM messaging.inbox
      WHERE received_at < now() - make_interval(secs => $2)
      LIMIT $1
        FOR UPDATE SKIP LOCKED))";

/// Deletes the inbox rows received more than `retention` ago, `size` per statement.
///
/// # Errors
/// When a statement fails; the batches before it stay deleted.
pub async fn prune_inbox(
    conn: &mut PgConnection,
    retention: Duration,
    size: i64,
    stop: &CancellationToken,
) -> sqlx::Result<Pruned> {
    let batch = Batch {
        sql: PRUNE_INBOX,
        size,
        window: Some(retention),
    };
    in_batches(conn, batch, stop).await
}

/// Whether a table with `dead` dead and `live` live rows is worth vacuuming: over
/// 10,000 dead rows and over a tenth of the live ones. (The general vacuum loop,
/// `db::maintain`, waits until dead rows outnumber live ones, which a table pruned
/// a little every minute never reaches.)
fn needs_vacuum(dead: i64, live: i64) -> bool {
    dead > 10_000 && dead.saturating_mul(10) > live
}

/// One round of the inbox job on `pool`'s database: unless another process is at
/// it, prunes the inbox, then vacuums it when [`needs_vacuum`] says so (with
/// autovacuum off the freed space would otherwise never be reused, and the table
/// would grow for ever). `None` when another process holds the round.
///
/// # Errors
/// When the database fails; the lock goes with the connection then.
pub async fn inbox_round(
    pool: &PgPool,
    retention: Duration,
    stop: &CancellationToken,
) -> sqlx::Result<Option<Pruned>> {
    let mut conn = pool.acquire().await?;
    let locked: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext('airline.prune-inbox'))")
            .fetch_one(&mut *conn)
            .await?;
    if !locked {
        return Ok(None);
    }
    let result = prune_and_vacuum(&mut conn, retention, stop).await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock(hashtext('airline.prune-inbox'))")
        .execute(&mut *conn)
        .await;
    if result.is_err() || unlocked.is_err() {
        // A session lock lives as long as the session: end this one rather than
        // return it to the pool still holding the lock.
        conn.close_on_drop();
    }
    result.map(Some)
}

async fn prune_and_vacuum(
    conn: &mut PgConnection,
    retention: Duration,
    stop: &CancellationToken,
) -> sqlx::Result<Pruned> {
    let pruned = prune_inbox(conn, retention, BATCH, stop).await?;
    if pruned.rows == 0 {
        return Ok(pruned);
    }
    let (dead, live): (i64, i64) = sqlx::query_as(
        "SELECT coalesce(max(n_dead_tup), 0), coalesce(max(n_live_tup), 0)
           FROM pg_stat_user_tables WHERE schemaname = 'messaging' AND relname = 'inbox'",
    )
    .fetch_one(&mut *conn)
    .await?;
    // This round's deletions may not have reached the statistics yet.
    let dead = dead.max(i64::try_from(pruned.rows).unwrap_or(i64::MAX));
    if needs_vacuum(dead, live) {
        sqlx::query("VACUUM (SKIP_LOCKED, ANALYZE) messaging.inbox")
            .execute(&mut *conn)
            .await?;
        tracing::info!(dead, live, "vacuumed messaging.inbox");
    }
    Ok(pruned)
}

/// How often the inbox job runs: a tenth of the retention, between 5 s and a
/// minute, so that the table holds at most about one period's rows beyond it.
#[must_use]
pub fn period(retention: Duration) -> Duration {
    (retention / 10).clamp(Duration::from_secs(5), Duration::from_secs(60))
}

/// Prunes the inbox every [`period`] until `shutdown`. Every worker runs this
/// beside the vacuum loop: in one process (`airline up` runs five workers) only the
/// first loop per database works and the others return at once; between processes
/// the advisory lock of [`inbox_round`] keeps rounds from overlapping.
pub async fn prune_inbox_every(pool: PgPool, retention: Duration, shutdown: CancellationToken) {
    let Some(_claim) = Claim::take(&pool) else {
        return;
    };
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(period(retention)) => {}
        }
        match inbox_round(&pool, retention, &shutdown).await {
            Ok(Some(pruned)) if pruned.rows > 0 => tracing::info!(
                rows = pruned.rows,
                batches = pruned.batches,
                "pruned messaging.inbox"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not prune messaging.inbox; will try again"),
        }
    }
}

/// The databases this process prunes the inbox of, each by one loop.
static PRUNING: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// This process's one inbox loop for a database; released when dropped.
struct Claim(String);

impl Claim {
    fn take(pool: &PgPool) -> Option<Self> {
        let options = pool.connect_options();
        let database = format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or_default()
        );
        let mut pruning = PRUNING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pruning.contains(&database) {
            return None;
        }
        pruning.push(database.clone());
        Some(Self(database))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut pruning = PRUNING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pruning.retain(|d| *d != self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_batch_means_more_may_wait() {
        assert!(full(5_000, 5_000));
        assert!(!full(4_999, 5_000));
        assert!(!full(0, 5_000));
        assert!(!full(3, -1));
    }

    #[test]
    fn the_inbox_is_vacuumed_once_a_tenth_of_it_is_dead() {
        assert!(!needs_vacuum(9_000, 10_000), "too few dead rows to bother");
        assert!(needs_vacuum(20_000, 100_000));
        assert!(!needs_vacuum(20_000, 1_000_000));
        assert!(needs_vacuum(200_000, 1_000_000));
    }

    #[tokio::test]
    async fn one_loop_per_database_in_a_process() {
        let pool = |db: &str| {
            PgPool::connect_lazy(&format!("postgres://postgres@127.0.0.1:5432/{db}"))
                .expect("a lazy pool")
        };
        let first = Claim::take(&pool("a")).expect("the first loop works");
        assert!(Claim::take(&pool("a")).is_none(), "a second one returns");
        let other = Claim::take(&pool("b"));
        assert!(other.is_some(), "another database has its own");
        drop(first);
        assert!(Claim::take(&pool("a")).is_some(), "released when it stops");
    }

    #[test]
    fn the_job_runs_a_tenth_of_the_retention_apart_within_bounds() {
        assert_eq!(
            period(Duration::from_secs(7 * 86_400)),
            Duration::from_secs(60)
        );
        assert_eq!(period(Duration::from_secs(180)), Duration::from_secs(18));
        assert_eq!(period(Duration::from_secs(60)), Duration::from_secs(6));
        assert_eq!(period(Duration::from_secs(10)), Duration::from_secs(5));
    }
}
