//! What clients read about bookings.

use serde::Serialize;
use sqlx::{PgExecutor, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use airline_contracts::FailureReason;

use crate::saga::State;

/// The status a client sees of a booking: the one place that maps the saga's
/// states to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// Accepted; the booking saga has not ended (or not started).
    Pending,
    /// Paid and confirmed.
    Confirmed,
    /// Failed, every step compensated.
    Failed,
    /// A confirmed booking whose cancellation is under way.
    Cancelling,
    /// Cancelled after it was confirmed: refunded, seat given back.
    Cancelled,
}

impl Status {
    /// Every status.
    pub const ALL: [Self; 5] = [
        Self::Pending,
        Self::Confirmed,
        Self::Failed,
        Self::Cancelling,
        Self::Cancelled,
    ];

    /// The status of a booking whose saga has not started yet.
    pub const NOT_STARTED: Self = Self::Pending;

    /// The name the API shows.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Confirmed => "CONFIRMED",
            Self::Failed => "FAILED",
            Self::Cancelling => "CANCELLING",
            Self::Cancelled => "CANCELLED",
        }
    }

    /// Parses a name the API shows.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The status of a saga in `state`: PENDING until the booking saga ends,
    /// CANCELLING while a cancellation runs.
    #[must_use]
    pub fn of(state: State) -> Self {
        match state {
            State::Confirmed => Self::Confirmed,
            State::Failed => Self::Failed,
            State::Cancelled => Self::Cancelled,
            State::CancelRefunding | State::CancelReleasingSeat => Self::Cancelling,
            State::ReservingSeat
            | State::CollectingPayment
            | State::RefundingPayment
            | State::ReleasingSeat => Self::Pending,
        }
    }

    /// The status a client sees when the gateway may have accepted a cancellation
    /// the saga has not taken yet: a CONFIRMED booking then reads CANCELLING at
    /// once, as the cancel's 202 said.
    #[must_use]
    pub fn seen(state: State, cancel_requested: bool) -> Self {
        match Self::of(state) {
            Self::Confirmed if cancel_requested => Self::Cancelling,
            status => status,
        }
    }

    /// The stored state names that read as this status (see [`Status::seen`]), to
    /// bind as a `text[]` in a query.
    #[must_use]
    pub fn states(self, cancel_requested: bool) -> Vec<&'static str> {
        State::ALL
            .into_iter()
            .filter(|st| Self::seen(*st, cancel_requested) == self)
            .map(State::as_str)
            .collect()
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The stored names of the states in which a saga has ended, to bind as a
/// `text[]` in a query.
#[must_use]
pub fn terminal_states() -> Vec<&'static str> {
    State::ALL
        .into_iter()
        .filter(|st| st.is_terminal())
        .map(State::as_str)
        .collect()
}

/// The schema of [`BookingView::failure_reason`]: null, or one of the contracts'
/// [`FailureReason`] codes, read from its serde definition so that a new reason
/// is documented the moment it exists.
fn failure_reason_schema() -> utoipa::openapi::Object {
    let mut codes: Vec<serde_json::Value> = serde_variants::<FailureReason>()
        .into_iter()
        .map(serde_json::Value::from)
        .collect();
    codes.push(serde_json::Value::Null);
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            utoipa::openapi::Type::String,
            utoipa::openapi::Type::Null,
        ]))
        .enum_values(Some(codes))
        .description(Some("A stable code once FAILED."))
        .build()
}

/// The names an enum's variants have in JSON, as its `Deserialize` declares them.
fn serde_variants<'de, T: serde::Deserialize<'de>>() -> Vec<&'static str> {
    /// A deserializer that only asks the enum for its variants' names.
    struct Variants(Vec<&'static str>);

    #[derive(Debug)]
    struct Stop;

    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("variants read")
        }
    }

    impl std::error::Error for Stop {}

    impl serde::de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Self
        }
    }

    impl<'de> serde::Deserializer<'de> for &mut Variants {
        type Error = Stop;

        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }

        fn deserialize_enum<V: serde::de::Visitor<'de>>(
            self,
            _name: &'static str,
            variants: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Stop> {
            self.0.extend_from_slice(variants);
            Err(Stop)
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map struct identifier ignored_any
        }
    }

    let mut variants = Variants(Vec::new());
    let _ = T::deserialize(&mut variants);
    variants.0
}

/// A booking as `GET /v1/bookings/{id}` shows it. The payment token is never part
/// of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Booking)]
pub struct BookingView {
    pub id: Uuid,
    /// What the client sees of its saga.
    pub status: Status,
    pub outbound_flight_id: Uuid,
    #[schema(min_length = 1, max_length = 128)]
    pub customer_id: String,
    /// Six characters, once CONFIRMED.
    #[schema(pattern = "^[A-Z2-9]{6}$")]
    pub booking_reference: Option<String>,
    /// A stable code (SOLD_OUT, PAYMENT_DECLINED, ...) once FAILED.
    #[schema(schema_with = failure_reason_schema)]
    pub failure_reason: Option<String>,
    pub checked_in: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// The columns [`from_row`] reads, from `booking.bookings`.
pub const VIEW_COLUMNS: &str = "id, state, outbound_flight_id, customer_id, booking_reference, failure_reason, checked_in, created_at, updated_at";

/// Maps a row selected with [`VIEW_COLUMNS`].
///
/// # Errors
/// When a column is missing or of another type.
pub fn from_row(row: &sqlx::postgres::PgRow) -> sqlx::Result<BookingView> {
    from_row_seen(row, false)
}

/// Maps a row selected with [`VIEW_COLUMNS`] as [`Status::seen`] shows it; a NULL
/// or unknown `state` is a saga not started yet.
///
/// # Errors
/// When a column is missing or of another type.
pub fn from_row_seen(
    row: &sqlx::postgres::PgRow,
    cancel_requested: bool,
) -> sqlx::Result<BookingView> {
    let state: Option<String> = row.try_get("state")?;
    Ok(BookingView {
        id: row.try_get("id")?,
        status: state
            .as_deref()
            .and_then(State::parse)
            .map_or(Status::NOT_STARTED, |st| Status::seen(st, cancel_requested)),
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
          WHERE id = $1 AND state = $2",
    )
    .bind(id)
    .bind(State::Confirmed.as_str())
    .execute(db)
    .await?
    .rows_affected()
        == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_reads_as_exactly_one_status() {
        for cancel_requested in [false, true] {
            let mut seen: Vec<&str> = Status::ALL
                .into_iter()
                .flat_map(|s| s.states(cancel_requested))
                .collect();
            seen.sort_unstable();
            let mut all: Vec<&str> = State::ALL.into_iter().map(State::as_str).collect();
            all.sort_unstable();
            assert_eq!(seen, all);
        }
        assert_eq!(
            Status::Cancelling.states(true),
            ["CONFIRMED", "CANCEL_REFUNDING", "CANCEL_RELEASING_SEAT"]
        );
        assert!(Status::Confirmed.states(true).is_empty());
        assert_eq!(terminal_states(), ["CONFIRMED", "FAILED", "CANCELLED"]);
        assert_eq!(Status::parse("CANCELLING"), Some(Status::Cancelling));
        assert_eq!(Status::parse("REQUESTED"), None);
        let reasons = serde_variants::<FailureReason>();
        assert!(reasons.contains(&"PAYMENT_TIMED_OUT") && reasons.contains(&"SOLD_OUT"));
        assert!(
            reasons
                .iter()
                .all(|r| FailureReason::parse(r).is_some_and(|f| f.as_str() == *r)),
            "{reasons:?}"
        );
    }
}
