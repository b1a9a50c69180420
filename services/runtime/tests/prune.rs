//! The inbox's pruning against the real PostgreSQL server: only rows older than the
//! retention go, in batches, and one process prunes a round at a time.

use std::time::Duration;

use airline_runtime::prune::{self, Pruned};
use airline_runtime::testing::TestDatabase;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

const WEEK: Duration = Duration::from_secs(7 * 86_400);

/// Inserts `n` inbox rows of `consumer` received `age` ago.
async fn rows(pool: &PgPool, consumer: &str, n: i32, age: &str) {
    sqlx::query(
        "INSERT INTO messaging.inbox (consumer, message_id, received_at)
         SELECT $1, gen_random_uuid()::text, now() - $3::interval FROM generate_series(1, $2)",
    )
    .bind(consumer)
    .bind(n)
    .bind(age)
    .execute(pool)
    .await
    .expect("inbox rows");
}

async fn count(pool: &PgPool, consumer: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM messaging.inbox WHERE consumer = $1")
        .bind(consumer)
        .fetch_one(pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn pruning_removes_only_rows_older_than_the_retention_in_batches() {
    let db = TestDatabase::create(&[]).await.expect("a test database");
    let pool = db.pool();
    rows(pool, "old", 12_000, "8 days").await;
    rows(pool, "edge", 10, "6 days 23 hours").await;
    rows(pool, "new", 3_000, "1 minute").await;
    let stop = CancellationToken::new();

    let mut conn = pool.acquire().await.expect("a connection");
    let pruned = prune::prune_inbox(&mut conn, WEEK, 5_000, &stop)
        .await
        .expect("pruned");
    assert_eq!(
        pruned,
        Pruned {
            rows: 12_000,
            batches: 3
        },
        "5,000 + 5,000 + 2,000"
    );
    assert_eq!(count(pool, "old").await, 0);
    assert_eq!(count(pool, "edge").await, 10, "younger than the retention");
    assert_eq!(count(pool, "new").await, 3_000);

    // Nothing left to prune: one statement that deletes nothing.
    let again = prune::prune_inbox(&mut conn, WEEK, 5_000, &stop)
        .await
        .expect("pruned");
    assert_eq!(
        again,
        Pruned {
            rows: 0,
            batches: 1
        }
    );

    // Stopped: the batch under way finishes, no further one starts.
    rows(pool, "old", 12_000, "8 days").await;
    stop.cancel();
    let stopped = prune::prune_inbox(&mut conn, WEEK, 5_000, &stop)
        .await
        .expect("pruned");
    assert_eq!(
        stopped,
        Pruned {
            rows: 5_000,
            batches: 1
        }
    );
}

#[tokio::test]
async fn one_process_prunes_a_round_and_vacuums_what_it_freed() {
    let db = TestDatabase::create(&[]).await.expect("a test database");
    let pool = db.pool();
    let stop = CancellationToken::new();
    rows(pool, "old", 30_000, "8 days").await;
    rows(pool, "new", 1_000, "1 second").await;
    let index: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_indexes
                         WHERE schemaname = 'messaging' AND indexname = 'inbox_received_at')",
    )
    .fetch_one(pool)
    .await
    .expect("catalog");
    assert!(index, "an index on received_at supports the prune");

    // Another process at it: this one skips the round.
    let mut other = pool.acquire().await.expect("a connection");
    sqlx::query("SELECT pg_advisory_lock(hashtext('airline.prune-inbox'))")
        .execute(&mut *other)
        .await
        .expect("lock");
    let skipped = prune::inbox_round(pool, WEEK, &stop)
        .await
        .expect("a round");
    assert_eq!(skipped, None);
    assert_eq!(count(pool, "old").await, 30_000);
    sqlx::query("SELECT pg_advisory_unlock(hashtext('airline.prune-inbox'))")
        .execute(&mut *other)
        .await
        .expect("unlock");
    drop(other);

    let round = prune::inbox_round(pool, WEEK, &stop)
        .await
        .expect("a round");
    assert_eq!(round.map(|p| p.rows), Some(30_000));
    assert_eq!(count(pool, "old").await, 0);
    assert_eq!(count(pool, "new").await, 1_000);
    let vacuums: i64 = sqlx::query_scalar(
        "SELECT vacuum_count FROM pg_stat_user_tables
          WHERE schemaname = 'messaging' AND relname = 'inbox'",
    )
    .fetch_one(pool)
    .await
    .expect("statistics");
    assert_eq!(vacuums, 1, "30,000 dead rows of 31,000 are worth a vacuum");
    // The lock was given back: the next round runs (and finds nothing).
    let next = prune::inbox_round(pool, WEEK, &stop)
        .await
        .expect("a round");
    assert_eq!(next.map(|p| p.rows), Some(0));
}
