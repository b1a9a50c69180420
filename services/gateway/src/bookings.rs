//! `/v1/bookings`: requests go to the outbox (the saga takes them from there),
//! reads come from the booking saga's rows and the gateway's own records.

use airline_booking::saga::State as SagaState;
use airline_booking::views::{self, BookingView, Status};
use airline_catalog::flights;
use airline_contracts::messages::{BookingRequested, CancelBooking};
use airline_contracts::{Message, PaymentToken};
use airline_runtime::outbox;
use airline_runtime::validation::FieldError;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::{Extension, Json};
use serde_json::json;
use std::collections::HashMap;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::auth::{Caller, Scope};
use crate::extract::{Body, Checked, FromQuery, Params, PathId, text};
use crate::routes::{RequestId, created, limit};
use crate::{AppState, Problem};

type Result<T, E = Problem> = std::result::Result<T, E>;

/// The query of `GET /v1/bookings`, checked.
#[derive(Debug)]
pub(crate) struct ListQuery {
    customer_id: String,
    status: Option<Status>,
    cursor: Option<Uuid>,
    limit: i64,
}

impl FromQuery for ListQuery {
    fn from_query(q: &HashMap<String, String>) -> Result<Self> {
        let customer_id = q
            .get("customerId")
            .map(|c| c.trim())
            .filter(|c| !c.is_empty() && c.chars().count() <= 128)
            .ok_or_else(|| Problem::field("customerId", "is required, 1 to 128 characters"))?
            .to_owned();
        let status = q
            .get("status")
            .map(|st| {
                Status::parse(st).ok_or_else(|| {
                    Problem::field(
                        "status",
                        "must be PENDING, CONFIRMED, FAILED, CANCELLING or CANCELLED",
                    )
                })
            })
            .transpose()?;
        let cursor = q
            .get("cursor")
            .map(|c| {
                Uuid::parse_str(c)
                    .map_err(|_| Problem::field("cursor", "is not a cursor this API gave out"))
            })
            .transpose()?;
        Ok(Self {
            customer_id,
            status,
            cursor,
            limit: limit(q)?,
        })
    }
}

/// The body of `POST /v1/bookings`, checked.
#[derive(Debug)]
pub(crate) struct NewBooking {
    outbound_flight_id: Uuid,
    customer_id: String,
    payment_token: PaymentToken,
}

/// The body of `POST /v1/bookings` as sent: every field is required (they are
/// `Option`s here so that all missing ones are named at once).
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = BookingRequest)]
pub(crate) struct NewBookingJson {
    #[schema(value_type = Uuid)]
    outbound_flight_id: Option<String>,
    #[schema(value_type = String, min_length = 1, max_length = 128)]
    customer_id: Option<String>,
    /// `tok_` and up to 60 letters, digits or `_`.
    #[schema(value_type = String, pattern = "^tok_[A-Za-z0-9_]{1,60}$")]
    payment_token: Option<String>,
}

impl Checked for NewBooking {
    type Raw = NewBookingJson;

    fn check(raw: NewBookingJson) -> Result<Self> {
        let mut errors = Vec::new();
        let flight = text(&mut errors, "outboundFlightId", raw.outbound_flight_id, 64);
        let outbound_flight_id = flight.and_then(|id| {
            Uuid::parse_str(&id)
                .map_err(|_| errors.push(FieldError::new("outboundFlightId", "must be a UUID")))
                .ok()
        });
        let customer_id = text(&mut errors, "customerId", raw.customer_id, 128);
        let token = text(&mut errors, "paymentToken", raw.payment_token, 64);
        let payment_token = token.and_then(|t| {
            PaymentToken::parse(&t)
                .map_err(|e| errors.push(FieldError::new("paymentToken", e.to_string())))
                .ok()
        });
        match (outbound_flight_id, customer_id, payment_token) {
            (Some(outbound_flight_id), Some(customer_id), Some(payment_token)) => Ok(Self {
                outbound_flight_id,
                customer_id,
                payment_token,
            }),
            // Each missing value has recorded why.
            _ => Err(Problem::invalid(errors)),
        }
    }
}

/// Request a booking
///
/// Answers 202 once the booking.requested message is durable; the saga settles
/// the seat and the payment after. Send `Idempotency-Key` to make it safe to retry.
#[utoipa::path(
    post, path = "/v1/bookings", operation_id = "createBooking", tag = "bookings",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes the request safe to retry. On POST /v1/bookings: the first request under a key starts the booking; a repeat with the same body answers the same booking (202, same id); a repeat with another body gets 422. On cancel: a repeat answers 202 as the first did, even after the booking is CANCELLED. Keys belong to the API key that sent them and are kept at least 24 h.", min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    request_body(content = NewBookingJson, description = "Sent as application/json; any other Content-Type is answered 415."),
    responses(
        (status = 202, description = "Accepted: the booking is PENDING.", body = crate::openapi::Accepted,
         headers(("Location" = String, description = "Path where the booking can be read."))),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
        (status = 422, response = crate::openapi::Unprocessable),
    )
)]
pub(crate) async fn create_booking(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    Body(new): Body<NewBooking>,
) -> Result<Response> {
    let NewBooking {
        outbound_flight_id: flight_id,
        customer_id,
        payment_token,
    } = new;
    let idempotency_key = idempotency_key(&headers)?;
    let booking_id = Uuid::now_v7();
    let requested_at = OffsetDateTime::now_utc();
    let mut tx = s.pool.begin().await?;
    if let Some(key) = &idempotency_key {
        let fingerprint =
            fingerprint(&[&flight_id.to_string(), &customer_id, payment_token.expose()]);
        if let Claim::Repeat(first) =
            claim(&mut tx, &caller, "book", key, &fingerprint, booking_id).await?
        {
            tx.rollback().await?;
            return Ok(created(
                format!("/v1/bookings/{first}"),
                json!({ "id": first, "status": "PENDING" }),
                StatusCode::ACCEPTED,
            ));
        }
    }
    let message = Message::BookingRequested(BookingRequested {
        booking_id,
        outbound_flight_id: flight_id,
        customer_id: customer_id.clone(),
        payment_token,
        requested_at,
        api_key_id: Some(caller.key_id),
    });
    // The flight is checked by the insert itself: no row, no request.
    let inserted = sqlx::query(
        "INSERT INTO gateway.booking_requests (id, customer_id, outbound_flight_id, created_at, api_key_id)
         SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM catalog.flights WHERE id = $3)",
    )
    .bind(booking_id)
    .bind(&customer_id)
    .bind(flight_id)
    .bind(requested_at)
    .bind(caller.key_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        tx.rollback().await?;
        return Err(Problem::unprocessable(
            "outboundFlightId",
            format!("no flight {flight_id}"),
        ));
    }
    let pending =
        outbox::enqueue(&mut tx, crate::SERVICE.name, &request_id.cause(), &message).await?;
    tx.commit().await?;
    // Durable from here: answer now, publish right behind the answer.
    s.publisher.publish(pending);
    tracing::info!(booking_id = %booking_id, "booking accepted");
    Ok(created(
        format!("/v1/bookings/{booking_id}"),
        json!({ "id": booking_id, "status": "PENDING" }),
        StatusCode::ACCEPTED,
    ))
}

/// The `Idempotency-Key` header, if sent: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
        .map(|k| Some(k.to_owned()))
        .ok_or_else(|| {
            Problem::field(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            )
        })
}

/// What an idempotency key found.
enum Claim {
    /// The key is new: this request goes ahead.
    First,
    /// The same request was made before under this key, about this booking.
    Repeat(Uuid),
}

/// Claims `key` for `operation` by this caller, inside the request's transaction.
/// A concurrent request under the same key waits on the unique index for the
/// first to commit, then finds its row: one saga, whatever the race. The same key
/// with another request is refused with 422.
async fn claim(
    tx: &mut sqlx::PgConnection,
    caller: &Caller,
    operation: &str,
    key: &str,
    fingerprint: &str,
    booking_id: Uuid,
) -> Result<Claim> {
    let claimed = sqlx::query(
        "INSERT INTO gateway.idempotency_keys (key, fingerprint, booking_id, api_key_id, operation)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(key)
    .bind(fingerprint)
    .bind(booking_id)
    .bind(caller.key_id)
    .bind(operation)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if claimed {
        return Ok(Claim::First);
    }
    let (first_fingerprint, first_booking): (String, Uuid) = sqlx::query_as(
        "SELECT fingerprint, booking_id FROM gateway.idempotency_keys
          WHERE api_key_id = $1 AND operation = $2 AND key = $3",
    )
    .bind(caller.key_id)
    .bind(operation)
    .bind(key)
    .fetch_one(&mut *tx)
    .await?;
    if first_fingerprint != fingerprint {
        return Err(Problem::unprocessable(
            "Idempotency-Key",
            "was used before with another request",
        ));
    }
    Ok(Claim::Repeat(first_booking))
}

/// A SHA-256 of the request's fields: compares bodies without keeping the card token.
fn fingerprint(fields: &[&str]) -> String {
    // Each field followed by a NUL, as stored fingerprints were made: the empty
    // last part adds the final separator.
    let mut parts: Vec<&[u8]> = fields.iter().map(|f| f.as_bytes()).collect();
    parts.push(b"");
    airline_runtime::sha256_hex(&parts)
}

/// The API key that made booking `$1`: the booking's own record of it, or, until
/// the gateway has settled it (`housekeeping`), its request row's. One statement,
/// so that the settling (which copies and deletes at once) is never seen halfway.
const OWNER: &str = "SELECT COALESCE(
         (SELECT api_key_id FROM booking.bookings WHERE id = $1),
         (SELECT api_key_id FROM gateway.booking_requests WHERE id = $1))";

/// Whether `caller` may change booking `id`: its own bookings, or any with an
/// admin key. Someone else's booking reads as not found.
async fn owned(s: &AppState, caller: &Caller, id: Uuid) -> Result<()> {
    if caller.scope == Scope::Admin {
        return Ok(());
    }
    let owner: Option<Uuid> = sqlx::query_scalar(OWNER)
        .bind(id)
        .fetch_one(&s.pool)
        .await?;
    if owner == Some(caller.key_id) {
        Ok(())
    } else {
        Err(Problem::not_found(format!("no booking {id}")))
    }
}

/// Cancel a CONFIRMED booking
///
/// Answers 202 CANCELLING; the saga refunds the charge, gives the seat back and
/// revokes the points, then the booking reads CANCELLED.
#[utoipa::path(
    post, path = "/v1/bookings/{id}/cancel", operation_id = "cancelBooking", tag = "bookings",
    params(("id" = Uuid, Path, description = "The booking's id (400 if not a UUID)."), ("Idempotency-Key" = Option<String>, Header, description = "Makes the request safe to retry. On POST /v1/bookings: the first request under a key starts the booking; a repeat with the same body answers the same booking (202, same id); a repeat with another body gets 422. On cancel: a repeat answers 202 as the first did, even after the booking is CANCELLED. Keys belong to the API key that sent them and are kept at least 24 h.", min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    responses(
        (status = 202, description = "Accepted: the booking is CANCELLING.", body = crate::openapi::Accepted,
         headers(("Location" = String, description = "Path where the booking can be read."))),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
        (status = 422, response = crate::openapi::Unprocessable),
    )
)]
pub(crate) async fn cancel(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    PathId(id): PathId,
) -> Result<Response> {
    let idempotency_key = idempotency_key(&headers)?;
    owned(&s, &caller, id).await?;
    let accepted = |id: Uuid| {
        created(
            format!("/v1/bookings/{id}"),
            json!({ "id": id, "status": "CANCELLING" }),
            StatusCode::ACCEPTED,
        )
    };
    let mut tx = s.pool.begin().await?;
    if let Some(key) = &idempotency_key
        && let Claim::Repeat(first) =
            claim(&mut tx, &caller, "cancel", key, &id.to_string(), id).await?
    {
        tx.rollback().await?;
        return Ok(accepted(first));
    }
    // The booking row is locked until this request commits: of two cancellations
    // at once, the second sees the first's request and gets 409.
    let state: Option<String> =
        sqlx::query_scalar("SELECT state FROM booking.bookings WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(state) = state else {
        return Err(if owned_request(&mut tx, id).await? {
            conflict(id, Status::NOT_STARTED)
        } else {
            Problem::not_found(format!("no booking {id}"))
        });
    };
    let status = SagaState::parse(&state).map_or(Status::NOT_STARTED, Status::of);
    if status != Status::Confirmed {
        return Err(conflict(id, status));
    }
    let first = sqlx::query(
        "INSERT INTO gateway.cancel_requests (booking_id, api_key_id) VALUES ($1, $2)
         ON CONFLICT (booking_id) DO NOTHING",
    )
    .bind(id)
    .bind(caller.key_id)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !first {
        return Err(conflict(id, Status::Cancelling));
    }
    let message = Message::CancelBooking(CancelBooking {
        booking_id: id,
        requested_at: OffsetDateTime::now_utc(),
    });
    let pending =
        outbox::enqueue(&mut tx, crate::SERVICE.name, &request_id.cause(), &message).await?;
    tx.commit().await?;
    s.publisher.publish(pending);
    tracing::info!(booking_id = %id, "cancellation accepted");
    Ok(accepted(id))
}

async fn owned_request(tx: &mut sqlx::PgConnection, id: Uuid) -> Result<bool> {
    Ok(
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM gateway.booking_requests WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?
            > 0,
    )
}

fn conflict(id: Uuid, status: Status) -> Problem {
    let reason = match status {
        Status::Cancelling => "its cancellation is under way".to_owned(),
        Status::Cancelled => "it is cancelled already".to_owned(),
        Status::Failed => "it failed and was never charged or was refunded".to_owned(),
        other => format!("it is {other}; only a CONFIRMED booking can be cancelled"),
    };
    Problem::plain(
        StatusCode::CONFLICT,
        "Cannot cancel",
        format!("booking {id} cannot be cancelled: {reason}"),
    )
}

/// Check in a CONFIRMED booking before its flight departs
#[utoipa::path(
    post, path = "/v1/bookings/{id}/check-in", operation_id = "checkIn", tag = "bookings",
    params(("id" = Uuid, Path, description = "The booking's id (400 if not a UUID).")),
    responses(
        (status = 200, description = "Checked in (again: no change).", body = BookingView),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
    )
)]
pub(crate) async fn check_in(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathId(id): PathId,
) -> Result<Json<BookingView>> {
    owned(&s, &caller, id).await?;
    let Some(view) = view_of(&s, id).await? else {
        return Err(Problem::not_found(format!("no booking {id}")));
    };
    if view.status != Status::Confirmed {
        return Err(Problem::plain(
            StatusCode::CONFLICT,
            "Cannot check in",
            format!(
                "booking {id} is {}; only a CONFIRMED booking can check in",
                view.status
            ),
        ));
    }
    let departure = flights::get(&s.pool, view.outbound_flight_id)
        .await?
        .map(|f| f.departure_date);
    if departure.is_none_or(|d| d <= OffsetDateTime::now_utc()) {
        return Err(Problem::plain(
            StatusCode::CONFLICT,
            "Cannot check in",
            format!("the flight of booking {id} has departed"),
        ));
    }
    views::check_in(&s.pool, id).await?;
    views::get(&s.pool, id)
        .await?
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no booking {id}")))
}

/// A booking as its saga shows it, except that a CONFIRMED booking whose
/// cancellation the gateway has accepted reads CANCELLING at once, as the 202 said,
/// before the saga has taken the `booking.cancel` command.
async fn view_of(s: &AppState, id: Uuid) -> Result<Option<BookingView>> {
    let sql = format!(
        "SELECT {cols}, {CANCEL_REQUESTED} FROM booking.bookings b WHERE id = $1",
        cols = views::VIEW_COLUMNS
    );
    let row = sqlx::query(&sql).bind(id).fetch_optional(&s.pool).await?;
    Ok(row.as_ref().map(seen).transpose()?)
}

/// Whether the gateway accepted a cancellation of booking `b`, as a column.
const CANCEL_REQUESTED: &str = "EXISTS (SELECT 1 FROM gateway.cancel_requests c
                                 WHERE c.booking_id = b.id) AS cancel_requested";

/// A row with [`views::VIEW_COLUMNS`] and [`CANCEL_REQUESTED`], as the client sees
/// it ([`Status::seen`]).
fn seen(row: &sqlx::postgres::PgRow) -> sqlx::Result<BookingView> {
    use sqlx::Row as _;
    views::from_row_seen(row, row.try_get("cancel_requested")?)
}

/// Read a booking
#[utoipa::path(
    get, path = "/v1/bookings/{id}", operation_id = "getBooking", tag = "bookings",
    params(("id" = Uuid, Path, description = "The booking's id (400 if not a UUID).")),
    responses(
        (status = 200, description = "The booking as its saga shows it.", body = BookingView),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
    )
)]
pub(crate) async fn get_booking(
    State(s): State<AppState>,
    PathId(id): PathId,
) -> Result<Json<BookingView>> {
    // The saga's row, or the request's while the saga has not started, in one
    // statement: the request row goes once the booking exists, and two reads could
    // fall between the two.
    let sql = format!(
        "SELECT {cols}, {CANCEL_REQUESTED} FROM booking.bookings b WHERE id = $1
         UNION ALL
         {NOT_STARTED} AND r.id = $1",
        cols = views::VIEW_COLUMNS
    );
    let row = sqlx::query(&sql).bind(id).fetch_optional(&s.pool).await?;
    row.as_ref()
        .map(seen)
        .transpose()?
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no booking {id}")))
}

/// Requests the gateway accepted whose saga has not started yet (a NULL state),
/// with the columns of [`views::VIEW_COLUMNS`] and [`CANCEL_REQUESTED`]; a query
/// adds its own `AND ...`.
const NOT_STARTED: &str = "SELECT r.id, NULL::text AS state, r.outbound_flight_id, r.customer_id,
            NULL, NULL, false, r.created_at, r.created_at, false
       FROM gateway.booking_requests r
      WHERE NOT EXISTS (SELECT 1 FROM booking.bookings b WHERE b.id = r.id)";

/// List a customer's bookings
#[utoipa::path(
    get, path = "/v1/bookings", operation_id = "listBookings", tag = "bookings",
    params(
        ("customerId" = String, Query, description = "Whose bookings.", min_length = 1, max_length = 128),
        ("status" = Option<Status>, Query, description = "Only bookings a client sees in this status."),
        ("cursor" = Option<Uuid>, Query, description = "The nextCursor of the previous page."),
        ("limit" = Option<i64>, Query, description = "Page size.", minimum = 1, maximum = 100),
    ),
    responses(
        (status = 200, description = "A page of bookings, newest first.", body = crate::openapi::BookingPage),
        (status = 400, response = crate::openapi::BadRequest),
    )
)]
pub(crate) async fn list_bookings(
    State(s): State<AppState>,
    Params(q): Params<ListQuery>,
) -> Result<Json<flights::Page<BookingView>>> {
    let ListQuery {
        customer_id,
        status,
        cursor,
        limit,
    } = q;
    // Bookings whose saga has started, and those the gateway accepted whose saga has
    // not started yet (a NULL state), newest first. Which states read as the
    // wanted status is the booking crate's rule (Status::states).
    let sql = format!(
        "SELECT * FROM (
             SELECT {cols}, {CANCEL_REQUESTED} FROM booking.bookings b WHERE customer_id = $1
             UNION ALL
             {NOT_STARTED} AND r.customer_id = $1
         ) all_bookings
         WHERE (NOT $2
                OR (state IS NULL AND $3)
                OR (NOT cancel_requested AND state = ANY($4::text[]))
                OR (cancel_requested AND state = ANY($5::text[])))
           AND ($6::uuid IS NULL OR id < $6)
         ORDER BY id DESC
         LIMIT $7",
        cols = views::VIEW_COLUMNS,
    );
    let rows = sqlx::query(&sql)
        .bind(customer_id)
        .bind(status.is_some())
        .bind(status == Some(Status::NOT_STARTED))
        .bind(status.map(|st| st.states(false)).unwrap_or_default())
        .bind(status.map(|st| st.states(true)).unwrap_or_default())
        .bind(cursor)
        .bind(limit + 1)
        .fetch_all(&s.pool)
        .await?;
    let mut items = rows.iter().map(seen).collect::<sqlx::Result<Vec<_>>>()?;
    let page = usize::try_from(limit).unwrap_or(20);
    let more = items.len() > page;
    items.truncate(page);
    let next_cursor = if more {
        items.last().map(|b| b.id.to_string())
    } else {
        None
    };
    Ok(Json(flights::Page { items, next_cursor }))
}
