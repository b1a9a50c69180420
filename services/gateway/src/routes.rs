use std::collections::HashMap;

use airline_booking::saga::State as SagaState;
use airline_booking::views::{self, BookingView, Status};
use airline_catalog::flights::{self, Cursor, NewFlight, Search};
use airline_contracts::messages::{BookingRequested, CancelBooking};
use airline_contracts::{Message, PaymentToken};
use airline_runtime::outbox::{self, Cause};
use airline_runtime::validation::{FieldError, is_code3};
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::auth::{Caller, Scope};
use crate::extract::{Body, Checked, PathId, text};
use crate::{AppState, OPENAPI, Problem};

type Result<T, E = Problem> = std::result::Result<T, E>;

pub(crate) fn router(state: AppState) -> Router {
    let cors = cors(&state.config.cors_origins);
    let health = match &state.runtime {
        Some(rt) => airline_runtime::service::health_router(rt.clone()),
        None => Router::new()
            .route("/healthz", get(health_without_broker))
            .route("/metrics", get(metrics_without_broker))
            .with_state(state.clone()),
    };
    let admin = axum::middleware::from_fn(crate::auth::require_admin);
    let router = Router::new()
        .route(
            "/v1/flights",
            post(create_flight)
                .route_layer(admin.clone())
                .get(search_flights),
        )
        .route("/v1/flights/{id}", get(get_flight))
        .route("/v1/bookings", get(list_bookings).post(create_booking))
        .route("/v1/bookings/{id}", get(get_booking))
        .route("/v1/bookings/{id}/check-in", post(check_in))
        .route("/v1/bookings/{id}/cancel", post(cancel))
        .route("/v1/loyalty/{customer_id}", get(get_loyalty))
        .route("/openapi.json", get(openapi))
        .merge(crate::admin::router().route_layer(admin))
        .merge(crate::webhooks::router())
        .with_state(state.clone())
        .merge(health)
        .fallback(|| async { Problem::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            Problem::plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed",
                "this route does not take that method",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state,
            crate::auth::authenticate,
        ));
    // CORS sits outside the key check: a browser's preflight carries no key.
    let router = match cors {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(request_context))
}

/// `/healthz` of a gateway without a broker: the same answer as a gateway whose
/// broker is down.
async fn health_without_broker(State(s): State<AppState>) -> (StatusCode, Json<Value>) {
    let database = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(&s.pool),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({
            "status": "unavailable",
            "broker": "down",
            "database": if database { "up" } else { "down" },
        })),
    )
}

/// `/metrics` of a gateway without a broker: the metrics read the runtime.
async fn metrics_without_broker(State(s): State<AppState>) -> Result<Response> {
    s.runtime().map(|_| StatusCode::NO_CONTENT.into_response())
}

/// CORS for the configured origins (`AIRLINE_CORS_ORIGINS`); none: no CORS headers
/// at all, so browsers keep other origins' pages out.
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{HeaderName, Method};
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    let header = HeaderName::from_static;
    Some(
        tower_http::cors::CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
            .allow_headers([
                header::CONTENT_TYPE,
                header("x-api-key"),
                header("idempotency-key"),
                header("x-request-id"),
                header("x-operator"),
            ])
            .expose_headers([
                header::LOCATION,
                header::RETRY_AFTER,
                header("x-request-id"),
                header("ratelimit"),
                header("ratelimit-policy"),
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// Request bodies larger than this are refused with 413.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// How long a read may take before it is answered 503.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Takes the caller's `x-request-id` (or makes one), logs the request under it,
/// returns it, and bounds the request's time.
async fn request_context(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| Uuid::now_v7().to_string(), str::to_owned);
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let started = std::time::Instant::now();
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    // A command may commit and then be cut off, and its client retry and book
    // twice: only reads are bounded here; commands are bounded by the pool's acquire
    // timeout and the database's.
    let bounded = request.method() == axum::http::Method::GET;
    let mut request = request;
    request.extensions_mut().insert(RequestId(id.clone()));
    let run = next.run(request).instrument(span);
    let outcome = if bounded {
        tokio::time::timeout(REQUEST_TIMEOUT, run).await
    } else {
        Ok(run.await)
    };
    let mut response = match outcome {
        Ok(response) => response,
        Err(_) => Problem::plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "Timed out",
            "the request took too long; try again",
        )
        .into_response(),
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    let m = &airline_runtime::metrics::METRICS;
    m.http_requests
        .with_label_values(&[&route, &method, response.status().as_str()])
        .inc();
    m.http_seconds
        .with_label_values(&[&route, &method])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The request's `x-request-id` (a request extension): carried into the messages
/// the request sends.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(pub(crate) String);

impl RequestId {
    fn cause(&self) -> Cause {
        Cause {
            request_id: Some(self.0.clone()),
            ..Cause::default()
        }
    }
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Reads a JSON body, refusing other content types, oversized bodies and malformed
/// JSON with a problem.
pub(crate) fn json_body(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Value> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(Problem::plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported media type",
            "send the body as application/json",
        ));
    }
    let body = body.map_err(|e| Problem::plain(e.status(), "Unreadable body", e.body_text()))?;
    serde_json::from_slice(&body)
        .map_err(|e| Problem::field("(body)", format!("is not valid JSON: {e}")))
}

pub(crate) fn query(
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<HashMap<String, String>> {
    let m = q
        .map(|Query(m)| m)
        .map_err(|e| Problem::field("(query)", e.body_text()))?;
    for (k, v) in &m {
        no_nul(k, v)?;
        no_nul("(query)", k)?;
    }
    Ok(m)
}

/// PostgreSQL text cannot hold a NUL character: refuse it as the client's mistake,
/// before it reaches a query and comes back as a 500.
pub(crate) fn no_nul(name: &str, value: &str) -> Result<()> {
    if value.contains('\0') {
        return Err(Problem::field(name, "must not contain NUL characters"));
    }
    Ok(())
}

pub(crate) fn limit(q: &HashMap<String, String>) -> Result<i64> {
    match q.get("limit") {
        None => Ok(20),
        Some(s) => match s.parse::<i64>() {
            Ok(n) if (1..=100).contains(&n) => Ok(n),
            _ => Err(Problem::field("limit", "must be an integer from 1 to 100")),
        },
    }
}

fn created(location: String, body: Value, status: StatusCode) -> Response {
    let mut response = (status, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

impl Checked for NewFlight {
    // The catalog's own check reads the JSON and names every field at fault.
    type Raw = Value;

    fn check(raw: Value) -> Result<Self> {
        Self::from_json(&raw).map_err(Problem::invalid)
    }
}

async fn create_flight(State(s): State<AppState>, Body(new): Body<NewFlight>) -> Result<Response> {
    let flight = flights::create(&s.pool, &new).await?;
    let body = serde_json::to_value(&flight).map_err(|e| Problem::internal(&e.into()))?;
    Ok(created(
        format!("/v1/flights/{}", flight.id),
        body,
        StatusCode::CREATED,
    ))
}

async fn get_flight(
    State(s): State<AppState>,
    PathId(id): PathId,
) -> Result<Json<flights::Flight>> {
    flights::get(&s.pool, id)
        .await?
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no flight {id}")))
}

async fn search_flights(
    State(s): State<AppState>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<flights::Page<flights::Flight>>> {
    let q = query(q)?;
    let code = |name: &str| -> Result<Option<String>> {
        match q.get(name) {
            None => Ok(None),
            Some(c) if is_code3(c) => Ok(Some(c.clone())),
            Some(_) => Err(Problem::field(
                name,
                "must be three upper-case letters (IATA code)",
            )),
        }
    };
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    let departure_date = q
        .get("departureDate")
        .map(|d| time::Date::parse(d, &date_format))
        .transpose()
        .map_err(|_| Problem::field("departureDate", "must be a date, YYYY-MM-DD"))?;
    let cursor = q
        .get("cursor")
        .map(|c| {
            Cursor::parse(c)
                .ok_or_else(|| Problem::field("cursor", "is not a cursor this API gave out"))
        })
        .transpose()?;
    let search = Search {
        departure_airport_code: code("departureAirportCode")?,
        arrival_airport_code: code("arrivalAirportCode")?,
        departure_date,
        limit: limit(&q)?,
        cursor,
    };
    Ok(Json(flights::search(&s.pool, &search).await?))
}

/// The body of `POST /v1/bookings`, checked.
#[derive(Debug)]
struct NewBooking {
    outbound_flight_id: Uuid,
    customer_id: String,
    payment_token: PaymentToken,
}

/// The body of `POST /v1/bookings` as sent.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewBookingJson {
    outbound_flight_id: Option<String>,
    customer_id: Option<String>,
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

async fn create_booking(
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
    if flights::get(&s.pool, flight_id).await?.is_none() {
        return Err(Problem::unprocessable(
            "outboundFlightId",
            format!("no flight {flight_id}"),
        ));
    }
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
    });
    sqlx::query(
        "INSERT INTO gateway.booking_requests (id, customer_id, outbound_flight_id, created_at, api_key_id)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(booking_id)
    .bind(&customer_id)
    .bind(flight_id)
    .bind(requested_at)
    .bind(caller.key_id)
    .execute(&mut *tx)
    .await?;
    let pending = outbox::enqueue(&mut tx, "gateway", &request_id.cause(), &message).await?;
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

/// Whether `caller` may change booking `id`: its own bookings, or any with an
/// admin key. Someone else's booking reads as not found.
async fn owned(s: &AppState, caller: &Caller, id: Uuid) -> Result<()> {
    if caller.scope == Scope::Admin {
        return Ok(());
    }
    let owner: Option<Option<Uuid>> =
        sqlx::query_scalar("SELECT api_key_id FROM gateway.booking_requests WHERE id = $1")
            .bind(id)
            .fetch_optional(&s.pool)
            .await?;
    if owner.flatten() == Some(caller.key_id) {
        Ok(())
    } else {
        Err(Problem::not_found(format!("no booking {id}")))
    }
}

async fn cancel(
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
    let pending = outbox::enqueue(&mut tx, "gateway", &request_id.cause(), &message).await?;
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

async fn check_in(
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

async fn get_booking(State(s): State<AppState>, PathId(id): PathId) -> Result<Json<BookingView>> {
    if let Some(view) = view_of(&s, id).await? {
        return Ok(Json(view));
    }
    let row: Option<(String, Uuid, OffsetDateTime)> = sqlx::query_as(
        "SELECT customer_id, outbound_flight_id, created_at FROM gateway.booking_requests WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&s.pool)
    .await?;
    row.map(|(customer, flight, at)| Json(BookingView::pending(id, customer, flight, at)))
        .ok_or_else(|| Problem::not_found(format!("no booking {id}")))
}

async fn list_bookings(
    State(s): State<AppState>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<flights::Page<BookingView>>> {
    let q = query(q)?;
    let customer_id = q
        .get("customerId")
        .map(|c| c.trim())
        .filter(|c| !c.is_empty() && c.chars().count() <= 128)
        .ok_or_else(|| Problem::field("customerId", "is required, 1 to 128 characters"))?;
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
    let limit = limit(&q)?;
    // Bookings whose saga has started, and those the gateway accepted whose saga has
    // not started yet (a NULL state), newest first. Which states read as the
    // wanted status is the booking crate's rule (Status::states).
    let sql = format!(
        "SELECT * FROM (
             SELECT {cols}, {CANCEL_REQUESTED} FROM booking.bookings b WHERE customer_id = $1
             UNION ALL
             SELECT r.id, NULL::text AS state, r.outbound_flight_id, r.customer_id, NULL, NULL,
                    false, r.created_at, r.created_at, false
               FROM gateway.booking_requests r
              WHERE r.customer_id = $1
                AND NOT EXISTS (SELECT 1 FROM booking.bookings b WHERE b.id = r.id)
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

async fn get_loyalty(
    State(s): State<AppState>,
    Path(customer_id): Path<String>,
) -> Result<Json<airline_loyalty::Profile>> {
    no_nul("customerId", &customer_id)?;
    if customer_id.trim().is_empty() || customer_id.chars().count() > 128 {
        return Err(Problem::field(
            "customerId",
            "must have 1 to 128 characters",
        ));
    }
    Ok(Json(airline_loyalty::profile(&s.pool, &customer_id).await?))
}
