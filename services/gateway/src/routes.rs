use std::collections::HashMap;

use airline_catalog::flights::{self, Cursor, NewFlight, Search};
use airline_runtime::outbox::Cause;
use airline_runtime::validation::is_code3;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use serde_json::Value;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::extract::{Body, Checked, FromQuery, Params, PathId};
use crate::{AppState, Problem, bookings};
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

type Result<T, E = Problem> = std::result::Result<T, E>;

/// Every route with its OpenAPI operation: the one list the router and the
/// document are both made from.
fn api() -> OpenApiRouter<AppState> {
    let admin = axum::middleware::from_fn(crate::auth::require_admin);
    let (schemas, paths, create) = routes!(create_flight);
    OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .routes((schemas, paths, create.route_layer(admin.clone())))
        .routes(routes!(search_flights))
        .routes(routes!(get_flight))
        .routes(routes!(bookings::create_booking, bookings::list_bookings))
        .routes(routes!(bookings::get_booking))
        .routes(routes!(bookings::check_in))
        .routes(routes!(bookings::cancel))
        .routes(routes!(get_loyalty))
        .routes(routes!(healthz))
        .routes(routes!(metrics))
        .routes(routes!(openapi))
        .merge(crate::admin::router().route_layer(admin))
        .merge(crate::webhooks::router())
}

/// The router and its document, with the conventions every operation shares.
fn split() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    use utoipa::Modify as _;
    let (router, mut doc) = api().split_for_parts();
    crate::openapi::Conventions.modify(&mut doc);
    (router, doc)
}

/// The OpenAPI document, as `/openapi.json` serves it.
#[must_use]
pub fn document() -> String {
    split().1.to_pretty_json().unwrap_or_default()
}

/// The served document (a request extension).
#[derive(Debug, Clone)]
pub(crate) struct Document(std::sync::Arc<String>);

pub(crate) fn router(state: AppState) -> Router {
    let cors = cors(&state.config.http.cors_origins);
    let (api, doc) = split();
    let doc = Document(std::sync::Arc::new(
        doc.to_pretty_json().unwrap_or_default(),
    ));
    let router = api
        .with_state(state.clone())
        .fallback(|| async { Problem::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            Problem::plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed",
                "this route does not take that method",
            )
        })
        .layer(Extension(doc))
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

/// Health
///
/// 200 when the broker and the database answer, 503 otherwise (always 503 on a
/// gateway run without a broker).
#[utoipa::path(
    get, path = "/healthz", operation_id = "getHealth", tag = "operations",
    responses(
        (status = 200, description = "Healthy.", body = crate::openapi::Health),
        (status = 503, description = "The broker or the database is down.", body = crate::openapi::Health),
    )
)]
pub(crate) async fn healthz(State(s): State<AppState>) -> (StatusCode, Json<Value>) {
    let broker = s.runtime.as_ref().is_some_and(|rt| rt.broker.connected());
    airline_runtime::service::health(broker, &s.pool).await
}

/// Prometheus metrics (text exposition format)
#[utoipa::path(
    get, path = "/metrics", operation_id = "metrics", tag = "operations",
    responses(
        (status = 200, description = "The metrics.", body = String, content_type = "text/plain"),
        (status = 503, response = crate::openapi::Unavailable),
    )
)]
pub(crate) async fn metrics(State(s): State<AppState>) -> Result<Response> {
    let rt = s.runtime()?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        airline_runtime::metrics::METRICS.render(rt).await,
    )
        .into_response())
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
    pub(crate) fn cause(&self) -> Cause {
        Cause {
            request_id: Some(self.0.clone()),
            ..Cause::default()
        }
    }
}

/// This OpenAPI document
#[utoipa::path(
    get, path = "/openapi.json", operation_id = "getOpenApi", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API.", body = Object))
)]
pub(crate) async fn openapi(Extension(doc): Extension<Document>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.0.as_str().to_owned(),
    )
        .into_response()
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

pub(crate) fn created(location: String, body: Value, status: StatusCode) -> Response {
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

/// Create a flight
///
/// Validates every field and stores the flight synchronously. Needs an admin key.
#[utoipa::path(
    post, path = "/v1/flights", operation_id = "createFlight", tag = "flights",
    request_body(content = crate::openapi::NewFlightBody, description = "Sent as application/json (media-type parameters such as charset are allowed); any other Content-Type is answered 415."),
    responses(
        (status = 201, description = "The flight was created.", body = flights::Flight,
         headers(("Location" = String, description = "Path of the created flight."))),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
    )
)]
pub(crate) async fn create_flight(
    State(s): State<AppState>,
    Body(new): Body<NewFlight>,
) -> Result<Response> {
    let flight = flights::create(&s.pool, &new).await?;
    let body = serde_json::to_value(&flight).map_err(|e| Problem::internal(&e.into()))?;
    Ok(created(
        format!("/v1/flights/{}", flight.id),
        body,
        StatusCode::CREATED,
    ))
}

/// Read a flight
#[utoipa::path(
    get, path = "/v1/flights/{id}", operation_id = "getFlight", tag = "flights",
    params(("id" = Uuid, Path, description = "The flight's id (400 if not a UUID).")),
    responses(
        (status = 200, description = "The flight.", body = flights::Flight),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
    )
)]
pub(crate) async fn get_flight(
    State(s): State<AppState>,
    PathId(id): PathId,
) -> Result<Json<flights::Flight>> {
    flights::get(&s.pool, id)
        .await?
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no flight {id}")))
}

/// Search flights
///
/// Flights with at least one seat left, ordered by departure time then id, paged.
/// Every filter is optional.
#[utoipa::path(
    get, path = "/v1/flights", operation_id = "searchFlights", tag = "flights",
    params(
        ("departureAirportCode" = Option<String>, Query, description = "IATA code of the departure airport.", pattern = "^[A-Z]{3}$", example = "LGW"),
        ("arrivalAirportCode" = Option<String>, Query, description = "IATA code of the arrival airport.", pattern = "^[A-Z]{3}$", example = "MAD"),
        ("departureDate" = Option<time::Date>, Query, description = "Flights departing on this UTC date (YYYY-MM-DD).", example = "2027-01-11"),
        ("cursor" = Option<String>, Query, description = "The nextCursor of the previous page; opaque."),
        ("limit" = Option<i64>, Query, description = "Page size.", minimum = 1, maximum = 100),
    ),
    responses(
        (status = 200, description = "A page of flights.", body = crate::openapi::FlightPage),
        (status = 400, response = crate::openapi::BadRequest),
    )
)]
pub(crate) async fn search_flights(
    State(s): State<AppState>,
    Params(search): Params<Search>,
) -> Result<Json<flights::Page<flights::Flight>>> {
    Ok(Json(flights::search(&s.pool, &search).await?))
}

impl FromQuery for Search {
    fn from_query(q: &HashMap<String, String>) -> Result<Self> {
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
        Ok(Self {
            departure_airport_code: code("departureAirportCode")?,
            arrival_airport_code: code("arrivalAirportCode")?,
            departure_date,
            limit: limit(q)?,
            cursor,
        })
    }
}

/// Read a customer's loyalty profile
#[utoipa::path(
    get, path = "/v1/loyalty/{customerId}", operation_id = "getLoyaltyProfile", tag = "loyalty",
    params(("customerId" = String, Path, description = "The customer's id.", min_length = 1, max_length = 128)),
    responses(
        (status = 200, description = "The customer's points and level (0 points, bronze, for a customer never seen).", body = airline_loyalty::Profile),
        (status = 400, response = crate::openapi::BadRequest),
    )
)]
pub(crate) async fn get_loyalty(
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
