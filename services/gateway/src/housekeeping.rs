//! The gateway's own rows are kept only while they answer something the booking
//! service's rows cannot, so that the gateway schema does not grow with traffic:
//!
//! - a request row makes a booking read PENDING until its saga has started; once
//!   `booking.bookings` has the booking (and its owner, which `booking.requested`
//!   carries), the row goes. A request whose saga never started (its message
//!   dead-lettered and not replayed, or discarded) goes after
//!   `AIRLINE_INBOX_RETENTION`;
//! - a cancel request makes a CONFIRMED booking read CANCELLING until the saga has
//!   taken the cancellation; once the booking has left CONFIRMED it is redundant
//!   (a second cancel gets 409 from the booking's state);
//! - an idempotency key answers repeats for [`IDEMPOTENCY_FOR`].
//!
//! Each is deleted in batches of [`prune::BATCH`] rows with `SKIP LOCKED`, so that
//! several gateways share the work. See docs/reliability.md, "Bounded tables".

use std::time::Duration;

use airline_runtime::prune::{self, Batch, Pruned};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// How long an `Idempotency-Key` answers as the first request did.
pub const IDEMPOTENCY_FOR: Duration = Duration::from_secs(24 * 3600);

/// How often the gateway tidies its tables.
const EVERY: Duration = Duration::from_secs(10);

// Requests whose booking exists, or that are older than the window ($2): the
// booking's owner is copied first when the booking lacks it (a booking made by a
// gateway or booking worker of before the owner travelled in the message), then
// the row is deleted, in one statement, so that every reader sees the owner in
// one place or the other.
const SETTLE_REQUESTS: &str = "WITH settled AS (
         SELECT r.id, r.api_key_id
           FROM gateway.booking_requests r
           LEFT JOIN booking.bookings b ON b.id = r.id
          WHERE b.id IS NOT NULL OR r.created_at < now() - make_interval(secs => $2)
          LIMIT $1
            FOR UPDATE OF r SKIP LOCKED
     ), owners AS (
         UPDATE booking.bookings b SET api_key_id = s.api_key_id
           FROM settled s
          WHERE b.id = s.id AND b.api_key_id IS NULL AND s.api_key_id IS NOT NULL
     )
     DELETE FROM gateway.booking_requests r USING settled s WHERE r.id = s.id";

// Cancel requests of bookings that have left CONFIRMED (the saga took them).
const SETTLE_CANCELS: &str = "DELETE FROM gateway.cancel_requests WHERE booking_id = ANY (ARRAY(
         SELECT c.booking_id
           FROM gateway.cancel_requests c
           JOIN booking.bookings b ON b.id = c.booking_id
          WHERE b.state <> 'CONFIRMED'
          LIMIT $1
            FOR UPDATE OF c SKIP LOCKED))";

// Idempotency keys older than $2.
const FORGET_KEYS: &str = "DELETE FROM gateway.idempotency_keys WHERE ctid = ANY (ARRAY(
         SELECT ctid FROM gateway.idempotency_keys
          WHERE created_at < now() - make_interval(secs => $2)
          LIMIT $1
            FOR UPDATE SKIP LOCKED))";

/// What one round deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tidied {
    /// Request rows of bookings that exist, or older than the window.
    pub requests: u64,
    /// Cancel requests the saga has taken.
    pub cancels: u64,
    /// Idempotency keys past [`IDEMPOTENCY_FOR`].
    pub keys: u64,
}

/// One round: settles request rows (`window`: how long a request whose saga has
/// not started is kept), cancel requests and old idempotency keys.
///
/// # Errors
/// When the database fails; what the earlier batches deleted stays deleted.
pub async fn tidy(
    pool: &PgPool,
    window: Duration,
    stop: &CancellationToken,
) -> sqlx::Result<Tidied> {
    let mut conn = pool.acquire().await?;
    let rows = |p: Pruned| p.rows;
    let requests = prune::in_batches(
        &mut conn,
        Batch {
            sql: SETTLE_REQUESTS,
            size: prune::BATCH,
            window: Some(window),
        },
        stop,
    )
    .await
    .map(rows)?;
    let cancels = prune::in_batches(
        &mut conn,
        Batch {
            sql: SETTLE_CANCELS,
            size: prune::BATCH,
            window: None,
        },
        stop,
    )
    .await
    .map(rows)?;
    let keys = prune::in_batches(
        &mut conn,
        Batch {
            sql: FORGET_KEYS,
            size: prune::BATCH,
            window: Some(IDEMPOTENCY_FOR),
        },
        stop,
    )
    .await
    .map(rows)?;
    Ok(Tidied {
        requests,
        cancels,
        keys,
    })
}

/// Runs [`tidy`] every 10 s until `stop`.
pub async fn run(pool: PgPool, window: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
        match tidy(&pool, window, &stop).await {
            Ok(t) => tracing::debug!(
                requests = t.requests,
                cancels = t.cancels,
                keys = t.keys,
                "tidied the gateway's tables"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "could not tidy the gateway's tables; will try again");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use airline_booking::saga::State;

    use super::*;

    #[test]
    fn cancel_requests_go_once_the_booking_has_left_confirmed() {
        assert!(SETTLE_CANCELS.contains(&format!("b.state <> '{}'", State::Confirmed.as_str())));
    }
}
