//! What clients read about bookings.

use serde::Serialize;
use sqlx::{PgExecutor, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::saga::State;

/// A booking as `GET /v1/bookings/{id}` shows it. The payment token is never part
/// of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BookingView {
    pub id: Uuid,
    /// PENDING, CONFIRMED, FAILED or CANCELLED.
    pub status: String,
    pub outbound_flight_id: Uuid,
    pub customer_id: String,
    pub booking_reference: Option<String>,
    /// A stable code (SOLD_OUT, PAYMENT_DECLINED, ...) once FAILED.
    pub failure_reason: Option<String>,
    pub checked_in: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl BookingView {
    /// A booking the gateway accepted whose saga has not started yet.
    #[must_use]
    pub fn pending(
        id: Uuid,
        customer_id: String,
        outbound_flight_id: Uuid,
        created_at: OffsetDateTime,
    ) -> Self {
        Self {
            id,
            status: "PENDING".into(),
            outbound_flight_id,
            customer_id,
            booking_reference: None,
            failure_reason: None,
            checked_in: false,
            created_at,
            updated_at: created_at,
        }
    }
}

/// The columns [`from_row`] reads, from `booking.bookings`.
pub const VIEW_COLUMNS: &str = "id, state, outbound_flight_id, customer_id, booking_reference, failure_reason, checked_in, created_at, updated_at";

/// Maps a row selected with [`VIEW_COLUMNS`].
///
/// # Errors
/// When a column is missing or of another type.
pub fn from_row(row: &sqlx::postgres::PgRow) -> sqlx::Result<BookingView> {
    let state: String = row.try_get("state")?;
    Ok(BookingView {
        id: row.try_get("id")?,
        status: State::parse(&state)
            .map_or("PENDING", State::status)
            .to_owned(),
        outbound_flight_id: row.try_get("outbound_flight_id")?,
        customer_id: row.try_get("customer_id")?,
        booking_reference: row.try_get("booking_reference")?,
        failure_reason: row.try_get("failure_reason")?,
        checked_in: row.try_get("checked_in")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// One booking, if its saga has started.
///
/// # Errors
/// Database errors.
pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<BookingView>> {
    let sql = format!("SELECT {VIEW_COLUMNS} FROM booking.bookings WHERE id = $1");
    sqlx::query(&sql)
        .bind(id)
        .fetch_optional(db)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// Marks a CONFIRMED booking checked in (again: no change). Returns whether the
/// booking is CONFIRMED.
///
/// # Errors
/// Database errors.
pub async fn check_in(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<bool> {
    Ok(sqlx::query(
        "UPDATE booking.bookings SET checked_in = true, updated_at = CASE WHEN checked_in THEN updated_at ELSE now() END
          WHERE id = $1 AND state = 'CONFIRMED'",
    )
    .bind(id)
    .execute(db)
    .await?
    .rows_affected()
        == 1)
}
