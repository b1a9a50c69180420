//! Loyalty: a points ledger with one row per confirmed booking, and one more when
//! a confirmed booking is cancelled (the revocation).
//!
//! Points equal the ticket price (one point per currency unit). Levels: bronze below
//! 50,000 points, silver from 50,000, gold from 100,000. The sample inserted a ledger
//! row on every redelivery; here the row is unique per booking, so a booking earns
//! its points once, and only a `booking.confirmed` earns any.

use std::sync::Arc;

use airline_contracts::Message;
use airline_contracts::messages::LoyaltyAwarded;
use airline_contracts::topology::{LOYALTY_CANCELLED, LOYALTY_CONFIRMED};
use airline_runtime::{Consumer, Handler, HandlerError, Incoming, Service, async_trait};
use serde::Serialize;
use sqlx::migrate::Migrator;
use sqlx::{PgConnection, PgExecutor};

/// The loyalty schema's migrations.
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// Points from which a customer is silver.
pub const SILVER: i64 = 50_000;
/// Points from which a customer is gold.
pub const GOLD: i64 = 100_000;

/// A customer's loyalty level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Bronze,
    Silver,
    Gold,
}

impl Level {
    /// The level of a points balance.
    #[must_use]
    pub fn of(points: i64) -> Self {
        if points >= GOLD {
            Self::Gold
        } else if points >= SILVER {
            Self::Silver
        } else {
            Self::Bronze
        }
    }

    /// The name used in JSON.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bronze => "bronze",
            Self::Silver => "silver",
            Self::Gold => "gold",
        }
    }
}

/// A customer's view: `GET /v1/loyalty/{customerId}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = LoyaltyProfile)]
pub struct Profile {
    #[schema(min_length = 1, max_length = 128)]
    pub customer_id: String,
    pub points: i64,
    #[schema(inline)]
    pub level: Level,
    /// Points still needed for the next level; 0 at gold.
    #[schema(minimum = 0)]
    pub remaining_points: i64,
}

impl Profile {
    /// The profile of a balance.
    #[must_use]
    pub fn new(customer_id: String, points: i64) -> Self {
        let level = Level::of(points);
        let remaining_points = match level {
            Level::Bronze => SILVER - points,
            Level::Silver => GOLD - points,
            Level::Gold => 0,
        };
        Self {
            customer_id,
            points,
            level,
            remaining_points,
        }
    }
}

async fn balance(db: impl PgExecutor<'_>, customer_id: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT COALESCE(SUM(CASE kind WHEN 'award' THEN points ELSE -points END), 0)::bigint
           FROM loyalty.ledger WHERE customer_id = $1",
    )
    .bind(customer_id)
    .fetch_one(db)
    .await
}

/// A customer's profile (zero points, bronze, for a customer never seen).
///
/// # Errors
/// Database errors.
pub async fn profile(db: impl PgExecutor<'_>, customer_id: &str) -> sqlx::Result<Profile> {
    Ok(Profile::new(
        customer_id.to_owned(),
        balance(db, customer_id).await?,
    ))
}

/// The loyalty service: schema `loyalty`, the points ledger.
pub static SERVICE: Service = Service {
    name: "loyalty",
    migrations: &MIGRATIONS,
    reads: &[],
    consumers: &[Consumer {
        queues: &[&LOYALTY_CONFIRMED, &LOYALTY_CANCELLED],
        handler: |_, _| Ok(Arc::new(AwardPoints)),
    }],
    jobs: &[],
    gauges: &[],
};

/// Credits a confirmed booking's points, once per booking.
#[derive(Debug, Clone, Copy)]
pub struct AwardPoints;

#[async_trait]
impl Handler for AwardPoints {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        msg: &Incoming,
    ) -> Result<Vec<Message>, HandlerError> {
        let confirmed = match &msg.message {
            Message::BookingConfirmed(confirmed) => confirmed,
            // The revocation takes back the ticket price, which is what the award
            // credited, so the two cancel out in whichever order they arrive.
            Message::BookingCancelled(c) => {
                if record(tx, c.booking_id, &c.customer_id, c.ticket_price, "revoke").await? {
                    tracing::info!(points = c.ticket_price, "points revoked");
                }
                return Ok(Vec::new());
            }
            _ => {
                return Err(HandlerError::Rejected(
                    "expected booking.confirmed or booking.cancelled".into(),
                ));
            }
        };
        let (booking, customer, points) = (
            confirmed.booking_id,
            &confirmed.customer_id,
            confirmed.ticket_price,
        );
        if !record(tx, booking, customer, points, "award").await? {
            return Ok(Vec::new());
        }
        let total = balance(&mut *tx, &confirmed.customer_id).await?;
        Ok(vec![Message::LoyaltyAwarded(LoyaltyAwarded {
            booking_id: confirmed.booking_id,
            customer_id: confirmed.customer_id.clone(),
            points: confirmed.ticket_price,
            total_points: total,
            level: Level::of(total).as_str().to_owned(),
        })])
    }
}

/// Writes a booking's ledger row of `kind` (`award` or `revoke`), once per booking
/// and kind; returns whether it was new.
async fn record(
    tx: &mut PgConnection,
    booking_id: sqlx::types::Uuid,
    customer_id: &str,
    points: i64,
    kind: &str,
) -> sqlx::Result<bool> {
    Ok(sqlx::query(
        "INSERT INTO loyalty.ledger (booking_id, customer_id, points, kind)
         VALUES ($1, $2, $3, $4) ON CONFLICT (booking_id, kind) DO NOTHING",
    )
    .bind(booking_id)
    .bind(customer_id)
    .bind(points)
    .bind(kind)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_remaining_points() {
        let cases = [
            (0, Level::Bronze, 50_000),
            (49_999, Level::Bronze, 1),
            (50_000, Level::Silver, 50_000),
            (99_999, Level::Silver, 1),
            (100_000, Level::Gold, 0),
            (250_000, Level::Gold, 0),
        ];
        for (points, level, remaining) in cases {
            let p = Profile::new("c".into(), points);
            assert_eq!(
                (p.level, p.remaining_points),
                (level, remaining),
                "{points}"
            );
        }
    }

    #[test]
    fn profile_json_uses_the_sample_names() {
        let json = serde_json::to_value(Profile::new("c-1".into(), 120)).expect("serialize");
        assert_eq!(
            json,
            serde_json::json!({"customerId": "c-1", "points": 120, "level": "bronze", "remainingPoints": 49_880})
        );
    }
}
