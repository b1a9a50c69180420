//! Webhook endpoints in `notify.webhook_endpoints`: created, listed, read and
//! deleted by the gateway on behalf of an API key (its owner), read and updated by
//! deliveries. Every query of the API takes the owner, so one key never sees or
//! touches another's endpoints.

use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::destination::WebhookUrl;
use crate::signature::Secret;

/// The events an endpoint may subscribe to.
pub const EVENT_TYPES: &[&str] = &[
    "booking.confirmed",
    "booking.failed",
    "booking.cancelled",
    "loyalty.awarded",
];

/// An endpoint's subscriptions: at least one, each in [`EVENT_TYPES`], no repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTypes(Vec<String>);

impl EventTypes {
    /// Reads a JSON array of event names.
    ///
    /// # Errors
    /// A sentence saying what is wrong, for the `events` field.
    pub fn parse(value: &serde_json::Value) -> Result<Self, String> {
        let known = EVENT_TYPES.join(", ");
        let items = value
            .as_array()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| format!("must be a non-empty array of event types ({known})"))?;
        let mut events = Vec::with_capacity(items.len());
        for item in items {
            let name = item
                .as_str()
                .ok_or_else(|| format!("must hold event type names ({known})"))?;
            if !EVENT_TYPES.contains(&name) {
                let shown: String = name.chars().take(60).collect();
                return Err(format!("has unknown event type `{shown}` (known: {known})"));
            }
            if events.iter().any(|e| e == name) {
                return Err(format!("names `{name}` twice"));
            }
            events.push(name.to_owned());
        }
        Ok(Self(events))
    }

    /// The event names.
    #[must_use]
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

/// An endpoint as the API shows it: never its secret.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = WebhookEndpoint)]
pub struct Endpoint {
    /// The endpoint's id (UUIDv7).
    pub id: Uuid,
    /// Where deliveries are POSTed.
    #[schema(format = "uri")]
    pub url: String,
    /// The event types it receives.
    #[schema(schema_with = event_types_schema)]
    pub events: Vec<String>,
    /// `enabled` or `disabled`.
    #[schema(schema_with = endpoint_status_schema)]
    pub status: String,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
    /// The first failure of the current run of failures (none since a success).
    #[serde(with = "time::serde::rfc3339::option")]
    pub failing_since: Option<OffsetDateTime>,
    /// The last delivery it accepted.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_success_at: Option<OffsetDateTime>,
    /// The last delivery that failed.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_failure_at: Option<OffsetDateTime>,
    /// What went wrong the last time (a status code or a connection error).
    pub last_error: Option<String>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// The schema of a list of event types: one or more of [`EVENT_TYPES`], each once.
#[must_use]
pub fn event_types_schema() -> utoipa::openapi::Array {
    utoipa::openapi::ArrayBuilder::new()
        .items(
            utoipa::openapi::ObjectBuilder::new()
                .schema_type(utoipa::openapi::Type::String)
                .enum_values(Some(EVENT_TYPES.iter().copied())),
        )
        .min_items(Some(1))
        .unique_items(true)
        .build()
}

fn endpoint_status_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(["enabled", "disabled"]))
        .build()
}

const COLUMNS: &str = "id, url, events, status, disabled_reason, failing_since, \
                       last_success_at, last_failure_at, last_error, created_at";

/// Creates an endpoint for `owner` with a new secret; returns it and its secret,
/// which no other call returns.
///
/// # Errors
/// Database errors; the operating system's random source failing is reported as
/// an I/O error.
pub async fn create(
    pool: &PgPool,
    owner: Uuid,
    url: &WebhookUrl,
    events: &EventTypes,
) -> sqlx::Result<(Endpoint, Secret)> {
    let secret = Secret::generate().map_err(|e| sqlx::Error::Io(std::io::Error::other(e)))?;
    let endpoint = sqlx::query_as(&format!(
        "INSERT INTO notify.webhook_endpoints (id, api_key_id, url, events, secret)
         VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(owner)
    .bind(url.as_str())
    .bind(events.as_slice())
    .bind(secret.expose())
    .fetch_one(pool)
    .await?;
    Ok((endpoint, secret))
}

/// `owner`'s endpoints, oldest first.
///
/// # Errors
/// Database errors.
pub async fn list(pool: &PgPool, owner: Uuid) -> sqlx::Result<Vec<Endpoint>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM notify.webhook_endpoints
         WHERE api_key_id = $1 ORDER BY created_at, id"
    ))
    .bind(owner)
    .fetch_all(pool)
    .await
}

/// One of `owner`'s endpoints; `None` when it does not exist or is another's.
///
/// # Errors
/// Database errors.
pub async fn get(pool: &PgPool, owner: Uuid, id: Uuid) -> sqlx::Result<Option<Endpoint>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM notify.webhook_endpoints WHERE id = $1 AND api_key_id = $2"
    ))
    .bind(id)
    .bind(owner)
    .fetch_optional(pool)
    .await
}

/// Deletes one of `owner`'s endpoints; false when it does not exist or is
/// another's. Deliveries already queued for it are dropped when they come up.
///
/// # Errors
/// Database errors.
pub async fn delete(pool: &PgPool, owner: Uuid, id: Uuid) -> sqlx::Result<bool> {
    let done =
        sqlx::query("DELETE FROM notify.webhook_endpoints WHERE id = $1 AND api_key_id = $2")
            .bind(id)
            .bind(owner)
            .execute(pool)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// What a delivery needs to know about its endpoint.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) url: String,
    pub(crate) secret: Secret,
    pub(crate) status: String,
}

pub(crate) async fn target(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Target>> {
    let row: Option<(String, String, String)> =
        sqlx::query_as("SELECT url, secret, status FROM notify.webhook_endpoints WHERE id = $1")
            .bind(id)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(url, secret, status)| Target {
        url,
        secret: Secret::from_stored(secret),
        status,
    }))
}

/// The enabled endpoints that want `event_type` about `booking`: those of the API
/// key that made the booking. None for a booking no key made (published straight
/// onto the broker), and none without a query of the booking's and the gateway's
/// tables when no endpoint wants the event at all.
pub(crate) async fn subscribers(
    conn: &mut PgConnection,
    booking: Uuid,
    event_type: &str,
) -> sqlx::Result<Vec<Uuid>> {
    let any: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM notify.webhook_endpoints
                        WHERE status = 'enabled' AND $1 = ANY (events))",
    )
    .bind(event_type)
    .fetch_one(&mut *conn)
    .await?;
    if !any {
        return Ok(Vec::new());
    }
    // The owner is on the booking (booking.requested carries it); a booking made
    // before it did has it on the gateway's request row until the gateway settles
    // that row, which copies it over and deletes the row in one statement.
    sqlx::query_scalar(
        "SELECT e.id FROM notify.webhook_endpoints e
         WHERE e.api_key_id = COALESCE(
                   (SELECT api_key_id FROM booking.bookings WHERE id = $1),
                   (SELECT api_key_id FROM gateway.booking_requests WHERE id = $1))
           AND e.status = 'enabled' AND $2 = ANY (e.events)
         ORDER BY e.id",
    )
    .bind(booking)
    .bind(event_type)
    .fetch_all(conn)
    .await
}

/// A delivery was accepted: the endpoint's run of failures is over.
pub(crate) async fn record_success(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE notify.webhook_endpoints
         SET last_success_at = now(), failing_since = NULL WHERE id = $1",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// A delivery failed: records it, and disables the endpoint when it has been
/// failing for longer than `disable_after`. Returns the reason when this failure
/// disabled it.
pub(crate) async fn record_failure(
    pool: &PgPool,
    id: Uuid,
    error: &str,
    disable_after: std::time::Duration,
) -> sqlx::Result<Option<String>> {
    let disable_after = time::Duration::try_from(disable_after).unwrap_or(time::Duration::MAX);
    let now = OffsetDateTime::now_utc();
    let since = now
        .checked_sub(disable_after)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let reason = format!(
        "disabled at {} after failing for longer than {}: {error}",
        rfc3339(now),
        human(disable_after),
    );
    // `failing_since` on the right-hand side is the value before this update.
    let disabled: Option<Option<String>> = sqlx::query_scalar(
        "UPDATE notify.webhook_endpoints
         SET last_failure_at = $2,
             last_error = $3,
             failing_since = COALESCE(failing_since, $2),
             status = CASE WHEN failing_since < $4 THEN 'disabled' ELSE status END,
             disabled_reason = CASE WHEN failing_since < $4 AND status = 'enabled'
                                    THEN $5 ELSE disabled_reason END
         WHERE id = $1
         RETURNING CASE WHEN status = 'disabled' THEN disabled_reason END",
    )
    .bind(id)
    .bind(now)
    .bind(error)
    .bind(since)
    .bind(&reason)
    .fetch_optional(pool)
    .await?;
    Ok(disabled.flatten())
}

/// Disables an endpoint at its receiver's request (410 Gone).
pub(crate) async fn disable(conn: &mut PgConnection, id: Uuid, reason: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE notify.webhook_endpoints
         SET status = 'disabled', disabled_reason = $2, last_failure_at = now(), last_error = $2
         WHERE id = $1",
    )
    .bind(id)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(())
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn human(d: time::Duration) -> String {
    let s = d.whole_seconds();
    if s % 3600 == 0 && s >= 3600 {
        format!("{}h", s / 3600)
    } else if s % 60 == 0 && s >= 60 {
        format!("{}m", s / 60)
    } else if s >= 1 {
        format!("{s}s")
    } else {
        format!("{}ms", d.whole_milliseconds())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn event_lists_are_known_unique_and_not_empty() {
        let ok =
            EventTypes::parse(&json!(["booking.confirmed", "loyalty.awarded"])).expect("valid");
        assert_eq!(ok.as_slice(), ["booking.confirmed", "loyalty.awarded"]);
        for (bad, says) in [
            (json!([]), "non-empty"),
            (json!("booking.confirmed"), "non-empty"),
            (json!(null), "non-empty"),
            (json!([1]), "names"),
            (
                json!(["booking.requested"]),
                "unknown event type `booking.requested`",
            ),
            (json!(["booking.failed", "booking.failed"]), "twice"),
        ] {
            let error = EventTypes::parse(&bad).expect_err("refused");
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(human(time::Duration::hours(24)), "24h");
        assert_eq!(human(time::Duration::minutes(5)), "5m");
        assert_eq!(human(time::Duration::seconds(90)), "90s");
        assert_eq!(human(time::Duration::milliseconds(500)), "500ms");
    }
}
