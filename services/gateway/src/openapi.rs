//! The OpenAPI document, generated: the operations from the handlers'
//! `#[utoipa::path]` as they are routed (one list: the router), the schemas from
//! the types the handlers take and return, and the conventions every operation
//! shares (API key, rate-limit headers, request ids, the error answers) added
//! here once. `services/gateway/openapi.json` is a copy, held to it by a test.

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Required, Server};
use utoipa::{Modify, OpenApi, ToResponse, ToSchema};

/// What the document says before the operations.
const DESCRIPTION: &str = "The HTTP gateway of the airline booking backend (RabbitMQ + PostgreSQL).\n\nCommands are accepted with 202 once durable: `POST /v1/bookings` commits the booking.requested message to the gateway's outbox in the same transaction as its record of the request, and a relay publishes it to the broker with confirms right after. The booking saga then settles seat and payment asynchronously; poll the booking's Location to follow it.\n\nReads come from PostgreSQL. When the database is unavailable, requests that need it are answered 503.\n\nErrors are `application/problem+json` (RFC 9457) naming the field at fault in `invalidParams`. Unknown paths are answered 404 and unsupported methods 405, both as problems.\n\nEvery response carries x-request-id. Requests taking over 10 s are answered 503.\n\nEvery /v1 route needs an API key in `x-api-key` (`airline apikey create`): none or a revoked one gets 401, a client key on an admin route (creating flights, /v1/admin/*) 403. Each key has a token bucket (default 100 requests per second, bursts of 50): /v1 answers carry `RateLimit` and `RateLimit-Policy` (IETF draft-ietf-httpapi-ratelimit-headers), and over the limit the answer is 429 with `Retry-After`. /healthz, /metrics and /openapi.json need no key. CORS is off unless AIRLINE_CORS_ORIGINS names origins.\n\nThe x-request-id of a request travels as a header with every message of the flow it starts, and appears in every log line of its saga.";

/// The document's frame; [`crate::routes::router`] adds the operations.
#[derive(OpenApi)]
#[openapi(
    info(title = "Airline booking gateway", version = "0.1.0"),
    tags(
        (name = "flights", description = "The flight catalog."),
        (name = "bookings", description = "Booking requests and their outcome."),
        (name = "loyalty", description = "Loyalty points and levels."),
        (name = "operations", description = "Health and this document."),
        (name = "dead-letters", description = "The dead-letter store (as `airline dlq`): drain the DLQs, see failures grouped by cause, edit, replay once, discard. Admin scope."),
        (name = "webhooks", description = "Webhook endpoints of the calling API key: booking.confirmed, booking.failed, booking.cancelled and loyalty.awarded about its bookings, signed as Standard Webhooks (docs/webhooks.md)."),
    ),
    components(
        schemas(ProblemBody),
        responses(
            BadRequest, NotFound, UnsupportedMediaType, Unprocessable, InternalError,
            Unavailable, PayloadTooLarge, Conflict, Unauthorized, Forbidden, TooManyRequests
        )
    ),

)]
pub(crate) struct ApiDoc;

/// An `application/problem+json` body (RFC 9457).
#[derive(Debug, ToSchema)]
#[schema(as = Problem)]
#[allow(dead_code)] // documents the body [`crate::Problem`] writes
pub(crate) struct ProblemBody {
    /// Always `about:blank`: the status and title say what happened.
    #[schema(format = "uri-reference", pattern = "^about:blank$")]
    r#type: String,
    title: String,
    #[schema(minimum = 400, maximum = 599)]
    status: u16,
    detail: String,
    /// Every field at fault, by its JSON path, query parameter or header name.
    #[schema(rename = "invalidParams", min_items = 1)]
    invalid_params: Option<Vec<InvalidParam>>,
}

/// A field at fault.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub(crate) struct InvalidParam {
    name: String,
    reason: String,
}

fn header(
    description: &str,
    schema: impl Into<RefOr<utoipa::openapi::schema::Schema>>,
) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .description(Some(description))
        .schema(schema)
        .build()
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn rate_limit_headers(r: &mut Response) {
    r.headers.entry("RateLimit".into()).or_insert_with(|| header(
        "The key's token bucket now (IETF draft-ietf-httpapi-ratelimit-headers): `\"default\";r=<requests left>;t=<seconds until the bucket is full>`.",
        string(),
    ));
    r.headers
        .entry("RateLimit-Policy".into())
        .or_insert_with(|| {
            header(
                "The key's limit: `\"default\";q=<burst>;w=<seconds to refill the burst>`.",
                string(),
            )
        });
}

fn request_id_header(r: &mut Response) {
    r.headers.entry("x-request-id".into()).or_insert_with(|| {
        header(
            "The request's id: the caller's x-request-id, or one made by the gateway.",
            string(),
        )
    });
}

/// A problem answer: `status` and `title` fixed, `invalidParams` required when
/// the problem names fields.
fn problem(
    status: u16,
    title: Option<&str>,
    description: &str,
    names_fields: bool,
) -> ResponseBuilder {
    let schema: RefOr<utoipa::openapi::schema::Schema> = match title {
        None => Ref::from_schema_name("Problem").into(),
        Some(title) => {
            let mut fixed = ObjectBuilder::new()
                .property(
                    "status",
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .enum_values(Some([status])),
                )
                .property("title", string().enum_values(Some([title])));
            if names_fields {
                fixed = fixed.required("invalidParams");
            }
            utoipa::openapi::schema::Schema::AllOf(
                AllOfBuilder::new()
                    .item(Ref::from_schema_name("Problem"))
                    .item(fixed)
                    .build(),
            )
            .into()
        }
    };
    ResponseBuilder::new().description(description).content(
        "application/problem+json",
        ContentBuilder::new().schema(Some(schema)).build(),
    )
}

macro_rules! problem_responses {
    ($($name:ident = $build:expr;)*) => {$(
        #[doc = concat!("The `", stringify!($name), "` problem answer.")]
        #[derive(Debug)]
        pub(crate) struct $name;

        impl<'r> ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<Response>) {
                (stringify!($name), $build.into())
            }
        }
    )*};
}

fn limited(mut r: Response) -> Response {
    rate_limit_headers(&mut r);
    request_id_header(&mut r);
    r
}

problem_responses! {
    BadRequest = limited(problem(400, Some("Invalid request"), "Invalid input: malformed JSON, a missing or invalid field, path or query parameter. Every field at fault is named in invalidParams.", true).build());
    NotFound = limited(problem(404, Some("Not found"), "No such resource.", false).build());
    UnsupportedMediaType = limited(problem(415, Some("Unsupported media type"), "The body was not sent as application/json.", false).build());
    Unprocessable = limited(problem(422, Some("Unprocessable request"), "Well-formed, but refers to something that does not exist.", true).build());
    InternalError = limited(problem(500, Some("Internal error"), "The request failed; the cause is logged, never returned.", false).build());
    Unavailable = limited(problem(503, None, "The database (or, for the broker's routes, the broker) is unavailable, or the request took over 10 s; try again.", false).build());
    PayloadTooLarge = limited(problem(413, None, "The body is larger than 64 KiB.", false).build());
    Conflict = limited(problem(409, None, "The resource is not in a state that allows this.", false).build());
    Unauthorized = {
        let mut r = problem(401, None, "No x-api-key, or not a live key.", false)
            .header("WWW-Authenticate", header("`ApiKey header=\"x-api-key\"`.", string()))
            .build();
        request_id_header(&mut r);
        r
    };
    Forbidden = {
        let mut r = problem(403, None, "A client key on a route that needs an admin key (no rate-limit headers).", false).build();
        request_id_header(&mut r);
        r
    };
    TooManyRequests = limited(problem(429, None, "Over the key's rate: wait Retry-After seconds.", false)
        .header("Retry-After", header("Seconds to wait before the next request.", ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1))))
        .build());
}

/// What every operation shares, added once to the document the router made:
/// the x-request-id parameter and header, and for `/v1` the API key, the
/// rate-limit headers and the answers the edge gives (401, 429, 500, 503); the
/// open routes need no key.
#[derive(Debug)]
pub(crate) struct Conventions;

impl Modify for Conventions {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        doc.info.description = Some(DESCRIPTION.into());
        doc.servers = Some(vec![{
            let mut s = Server::new("http://127.0.0.1:8080");
            s.description = Some("Local gateway (AIRLINE_HTTP_ADDR).".into());
            s
        }]);
        let components = doc.components.get_or_insert_with(Default::default);
        let mut key = ApiKeyValue::with_description(
            crate::auth::HEADER,
            "An API key from `airline apikey create`. Every /v1 route needs one; creating flights and /v1/admin/* need an admin key. Each key has a token bucket (default 100 requests per second, bursts of 50).",
        );
        key.name = crate::auth::HEADER.into();
        components.add_security_scheme("apiKey", SecurityScheme::ApiKey(ApiKey::Header(key)));
        doc.security = Some(vec![SecurityRequirement::new(
            "apiKey",
            Vec::<String>::new(),
        )]);
        for (path, item) in &mut doc.paths.paths {
            let v1 = path.starts_with("/v1/");
            for op in operations(item) {
                conventions(op, v1);
            }
        }
    }
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.patch.as_mut(),
    ]
    .into_iter()
    .flatten()
}

fn conventions(op: &mut Operation, v1: bool) {
    op.parameters.get_or_insert_with(Vec::new).push(
        ParameterBuilder::new()
            .name("x-request-id")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some("Your id for this request (1 to 128 visible ASCII characters); one is made when absent. Returned in the x-request-id response header and logged with the request."))
            .schema(Some(string().min_length(Some(1)).max_length(Some(128))))
            .build(),
    );
    for response in op.responses.responses.values_mut() {
        if let RefOr::T(r) = response {
            request_id_header(r);
            if v1 {
                rate_limit_headers(r);
            }
        }
    }
    if v1 {
        for (status, name) in [
            ("401", "Unauthorized"),
            ("429", "TooManyRequests"),
            ("500", "InternalError"),
            ("503", "Unavailable"),
        ] {
            op.responses
                .responses
                .entry(status.into())
                .or_insert_with(|| Ref::from_response_name(name).into());
        }
    } else {
        op.security = Some(Vec::new());
    }
}

/// A page of flights.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // documents airline_catalog::flights::Page<Flight>
pub(crate) struct FlightPage {
    items: Vec<airline_catalog::flights::Flight>,
    /// The cursor of the next page; null on the last.
    next_cursor: Option<String>,
}

/// A page of bookings, newest first.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // documents airline_catalog::flights::Page<BookingView>
pub(crate) struct BookingPage {
    items: Vec<airline_booking::views::BookingView>,
    /// The cursor of the next page; null on the last.
    #[schema(format = Uuid)]
    next_cursor: Option<String>,
}

/// `/healthz`'s answer.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documents airline_runtime::service's health answer
pub(crate) struct Health {
    #[schema(schema_with = ok_or_unavailable)]
    status: String,
    #[schema(schema_with = up_or_down)]
    broker: String,
    #[schema(schema_with = up_or_down)]
    database: String,
}

fn ok_or_unavailable() -> ObjectBuilder {
    string().enum_values(Some(["ok", "unavailable"]))
}

fn up_or_down() -> ObjectBuilder {
    string().enum_values(Some(["up", "down"]))
}

/// The body of `POST /v1/flights`: every field is checked, all at fault named.
#[derive(Debug, ToSchema)]
#[schema(as = NewFlight)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // documents what airline_catalog::flights::NewFlight::from_json reads
pub(crate) struct NewFlightBody {
    #[schema(minimum = 1, maximum = 9999)]
    flight_number: i32,
    #[schema(pattern = "^[A-Z]{3}$", min_length = 3, max_length = 3)]
    departure_airport_code: String,
    #[schema(min_length = 1, max_length = 200)]
    departure_airport_name: String,
    #[schema(min_length = 1, max_length = 200)]
    departure_city: String,
    #[schema(min_length = 1, max_length = 100)]
    departure_locale: String,
    #[schema(format = DateTime, max_length = 64)]
    departure_date: String,
    #[schema(pattern = "^[A-Z]{3}$", min_length = 3, max_length = 3)]
    arrival_airport_code: String,
    #[schema(min_length = 1, max_length = 200)]
    arrival_airport_name: String,
    #[schema(min_length = 1, max_length = 200)]
    arrival_city: String,
    #[schema(min_length = 1, max_length = 100)]
    arrival_locale: String,
    #[schema(format = DateTime, max_length = 64)]
    arrival_date: String,
    #[schema(minimum = 1, maximum = 1_000_000)]
    ticket_price: i64,
    #[schema(pattern = "^[A-Z]{3}$", min_length = 3, max_length = 3)]
    ticket_currency: String,
    #[schema(minimum = 0, maximum = 10_000)]
    seat_capacity: i32,
}

/// A command accepted (202): the booking it is about and its status now.
#[derive(Debug, serde::Serialize, ToSchema)]
pub(crate) struct Accepted {
    pub(crate) id: uuid::Uuid,
    pub(crate) status: airline_booking::views::Status,
}

/// The body of `POST /v1/webhooks`.
#[derive(Debug, ToSchema)]
#[schema(as = NewWebhookEndpoint)]
#[allow(dead_code)] // documents what crate::webhooks reads
pub(crate) struct NewWebhookBody {
    /// An http or https URL; private addresses are refused unless allowed.
    #[schema(format = "uri", min_length = 1, max_length = 2000)]
    url: String,
    #[schema(schema_with = airline_notify::endpoints::event_types_schema)]
    events: Vec<String>,
}

/// A webhook endpoint just created, with its signing secret (shown once).
#[derive(Debug, ToSchema)]
#[schema(as = WebhookEndpointCreated)]
#[allow(dead_code)]
pub(crate) struct WebhookCreated {
    #[serde(flatten)]
    endpoint: airline_notify::endpoints::Endpoint,
    #[schema(pattern = "^whsec_[A-Za-z0-9+/]+={0,2}$")]
    secret: String,
}

/// The calling key's webhook endpoints.
#[derive(Debug, ToSchema)]
#[schema(as = WebhookEndpointList)]
#[allow(dead_code)]
pub(crate) struct WebhookList {
    items: Vec<airline_notify::endpoints::Endpoint>,
}

/// `GET /v1/admin/dead-letters`: counts per queue, groups by cause, and the
/// dead letters matching the filters.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documents what crate::admin answers
pub(crate) struct DeadLetterOverview {
    queues: Vec<airline_dead_letters::QueueCount>,
    groups: Vec<airline_dead_letters::Group>,
    items: Vec<airline_dead_letters::Summary>,
}

/// A bulk selection: a group, or `"all": true`, and filters.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documents what crate::admin reads
pub(crate) struct DeadLetterSelection {
    group: Option<String>,
    all: Option<bool>,
    queue: Option<String>,
    r#type: Option<String>,
    /// An RFC 3339 time or a duration like 30m, 24h.
    since: Option<String>,
}

/// An edit: `set` JSON paths to values, or replace the whole `body`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documents what crate::admin reads
pub(crate) struct DeadLetterEdit {
    set: Option<std::collections::HashMap<String, serde_json::Value>>,
    body: Option<serde_json::Value>,
}

/// The body of a drain: optionally one queue.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documents what crate::admin reads
pub(crate) struct DrainBody {
    queue: Option<String>,
}

/// How many dead letters a bulk discard discarded.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documents what crate::admin answers
pub(crate) struct Discarded {
    discarded: i64,
}
