//! Flights: validation, creation, look-up and search.

use airline_runtime::validation::{FieldError, Fields, is_code3};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgExecutor, Row};
use time::OffsetDateTime;
use uuid::Uuid;

/// A flight as the API shows it (the sample's camelCase fields). `seatCapacity` is
/// the number of seats left, as in the sample; `seatsTotal` the number it started with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Flight {
    pub id: Uuid,
    #[schema(minimum = 1, maximum = 9999)]
    pub flight_number: i32,
    #[schema(pattern = "^[A-Z]{3}$", min_length = 3, max_length = 3)]
    pub departure_airport_code: String,
    #[schema(min_length = 1, max_length = 200)]
    pub departure_airport_name: String,
    #[schema(min_length = 1, max_length = 200)]
    pub departure_city: String,
    #[schema(min_length = 1, max_length = 100)]
    pub departure_locale: String,
    #[serde(with = "time::serde::rfc3339")]
    pub departure_date: OffsetDateTime,
    #[schema(pattern = "^[A-Z]{3}$", min_length = 3, max_length = 3)]
    pub arrival_airport_code: String,
    #[schema(min_length = 1, max_length = 200)]
    pub arrival_airport_name: String,
    #[schema(min_length = 1, max_length = 200)]
    pub arrival_city: String,
    #[schema(min_length = 1, max_length = 100)]
    pub arrival_locale: String,
    #[serde(with = "time::serde::rfc3339")]
    pub arrival_date: OffsetDateTime,
    /// In the currency's minor unit.
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub ticket_price: i64,
    /// ISO 4217.
    #[schema(pattern = "^[A-Z]{3}$", min_length = 3, max_length = 3)]
    pub ticket_currency: String,
    /// Seats left.
    #[schema(minimum = 0)]
    pub seat_capacity: i32,
    /// Seats the flight started with.
    #[schema(minimum = 0, maximum = 10_000)]
    pub seats_total: i32,
}

/// A flight to create: only constructed through [`NewFlight::from_json`], so it is
/// always valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFlight(Flight);

impl NewFlight {
    /// Validates a `POST /v1/flights` body.
    ///
    /// # Errors
    /// Every invalid field, named.
    pub fn from_json(body: &Value) -> Result<Self, Vec<FieldError>> {
        let mut f = Fields::new(body);
        let flight_number = f.integer("flightNumber", 1, 9999);
        let code = |f: &mut Fields, name: &str, standard: &str| {
            let c = f.string(name, 3)?;
            if is_code3(&c) {
                Some(c)
            } else {
                f.error(
                    name,
                    format!("must be three upper-case letters ({standard} code)"),
                );
                None
            }
        };
        let departure_airport_code = code(&mut f, "departureAirportCode", "IATA");
        let arrival_airport_code = code(&mut f, "arrivalAirportCode", "IATA");
        let ticket_currency = code(&mut f, "ticketCurrency", "ISO 4217");
        let departure_airport_name = f.string("departureAirportName", 200);
        let departure_city = f.string("departureCity", 200);
        let departure_locale = f.string("departureLocale", 100);
        let departure_date = f.datetime("departureDate");
        let arrival_airport_name = f.string("arrivalAirportName", 200);
        let arrival_city = f.string("arrivalCity", 200);
        let arrival_locale = f.string("arrivalLocale", 100);
        let arrival_date = f.datetime("arrivalDate");
        let ticket_price = f.integer("ticketPrice", 1, 1_000_000);
        let seat_capacity = f.integer("seatCapacity", 0, 10_000);
        if let (Some(d), Some(a)) = (departure_date, arrival_date)
            && a <= d
        {
            f.error("arrivalDate", "must be after departureDate");
        }
        if let (Some(d), Some(a)) = (&departure_airport_code, &arrival_airport_code)
            && d == a
        {
            f.error(
                "arrivalAirportCode",
                "must differ from departureAirportCode",
            );
        }
        f.finish()?;
        // Every field is Some here: finish() fails when any check did.
        let missing = || vec![FieldError::new("(body)", "incomplete")];
        let seats = i32::try_from(seat_capacity.ok_or_else(missing)?).map_err(|_| missing())?;
        Ok(Self(Flight {
            id: Uuid::now_v7(),
            flight_number: i32::try_from(flight_number.ok_or_else(missing)?)
                .map_err(|_| missing())?,
            departure_airport_code: departure_airport_code.ok_or_else(missing)?,
            departure_airport_name: departure_airport_name.ok_or_else(missing)?,
            departure_city: departure_city.ok_or_else(missing)?,
            departure_locale: departure_locale.ok_or_else(missing)?,
            departure_date: departure_date.ok_or_else(missing)?,
            arrival_airport_code: arrival_airport_code.ok_or_else(missing)?,
            arrival_airport_name: arrival_airport_name.ok_or_else(missing)?,
            arrival_city: arrival_city.ok_or_else(missing)?,
            arrival_locale: arrival_locale.ok_or_else(missing)?,
            arrival_date: arrival_date.ok_or_else(missing)?,
            ticket_price: ticket_price.ok_or_else(missing)?,
            ticket_currency: ticket_currency.ok_or_else(missing)?,
            seat_capacity: seats,
            seats_total: seats,
        }))
    }

    /// The same flight under a fixed id (demo data, tests).
    #[must_use]
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.0.id = id;
        self
    }
}

const COLUMNS: &str =
    "id, flight_number, departure_airport_code, departure_airport_name, departure_city,
    departure_locale, departure_date, arrival_airport_code, arrival_airport_name, arrival_city,
    arrival_locale, arrival_date, ticket_price, ticket_currency, seats_left, seats_total";

fn from_row(row: &sqlx::postgres::PgRow) -> sqlx::Result<Flight> {
    Ok(Flight {
        id: row.try_get("id")?,
        flight_number: row.try_get("flight_number")?,
        departure_airport_code: row.try_get("departure_airport_code")?,
        departure_airport_name: row.try_get("departure_airport_name")?,
        departure_city: row.try_get("departure_city")?,
        departure_locale: row.try_get("departure_locale")?,
        departure_date: row.try_get("departure_date")?,
        arrival_airport_code: row.try_get("arrival_airport_code")?,
        arrival_airport_name: row.try_get("arrival_airport_name")?,
        arrival_city: row.try_get("arrival_city")?,
        arrival_locale: row.try_get("arrival_locale")?,
        arrival_date: row.try_get("arrival_date")?,
        ticket_price: row.try_get("ticket_price")?,
        ticket_currency: row.try_get("ticket_currency")?,
        seat_capacity: row.try_get("seats_left")?,
        seats_total: row.try_get("seats_total")?,
    })
}

/// Stores a new flight; with `ON CONFLICT DO NOTHING` so that seeding is idempotent.
/// Returns the stored flight (the existing one when the id was taken).
///
/// # Errors
/// Database errors.
pub async fn create(db: impl PgExecutor<'_> + Copy, new: &NewFlight) -> sqlx::Result<Flight> {
    let f = &new.0;
    sqlx::query(
        "INSERT INTO catalog.flights (id, flight_number, departure_airport_code, departure_airport_name,
             departure_city, departure_locale, departure_date, arrival_airport_code, arrival_airport_name,
             arrival_city, arrival_locale, arrival_date, ticket_price, ticket_currency, seats_left, seats_total)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(f.id)
    .bind(f.flight_number)
    .bind(&f.departure_airport_code)
    .bind(&f.departure_airport_name)
    .bind(&f.departure_city)
    .bind(&f.departure_locale)
    .bind(f.departure_date)
    .bind(&f.arrival_airport_code)
    .bind(&f.arrival_airport_name)
    .bind(&f.arrival_city)
    .bind(&f.arrival_locale)
    .bind(f.arrival_date)
    .bind(f.ticket_price)
    .bind(&f.ticket_currency)
    .bind(f.seat_capacity)
    .execute(db)
    .await?;
    get(db, f.id).await?.ok_or(sqlx::Error::RowNotFound)
}

/// One flight.
///
/// # Errors
/// Database errors.
pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<Flight>> {
    let sql = format!("SELECT {COLUMNS} FROM catalog.flights WHERE id = $1");
    sqlx::query(&sql)
        .bind(id)
        .fetch_optional(db)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// A flight search: every filter optional; only flights with a seat left.
#[derive(Debug, Clone, Default)]
pub struct Search {
    pub departure_airport_code: Option<String>,
    pub arrival_airport_code: Option<String>,
    /// Flights departing on this UTC date.
    pub departure_date: Option<time::Date>,
    /// Page size, 1 to 100.
    pub limit: i64,
    /// Where the previous page ended ([`Page::next_cursor`]).
    pub cursor: Option<Cursor>,
}

/// A position in the search order (departure time, then id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    departure: OffsetDateTime,
    id: Uuid,
}

impl Cursor {
    /// Parses a cursor given out by a previous page.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        let (nanos, id) = s.split_once('_')?;
        let departure = OffsetDateTime::from_unix_timestamp_nanos(nanos.parse().ok()?).ok()?;
        Some(Self {
            departure,
            id: Uuid::parse_str(id).ok()?,
        })
    }

    fn render(&self) -> String {
        format!(
            "{}_{}",
            self.departure.unix_timestamp_nanos(),
            self.id.simple()
        )
    }
}

/// A page of results.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Searches flights with seats left, ordered by departure, paged.
///
/// # Errors
/// Database errors.
pub async fn search(db: impl PgExecutor<'_>, q: &Search) -> sqlx::Result<Page<Flight>> {
    let day_start = q.departure_date.map(|d| d.midnight().assume_utc());
    let sql = format!(
        "SELECT {COLUMNS} FROM catalog.flights
          WHERE seats_left > 0
            AND ($1::text IS NULL OR departure_airport_code = $1)
            AND ($2::text IS NULL OR arrival_airport_code = $2)
            AND ($3::timestamptz IS NULL OR (departure_date >= $3 AND departure_date < $3 + interval '1 day'))
            AND ($4::timestamptz IS NULL OR (departure_date, id) > ($4, $5))
          ORDER BY departure_date, id
          LIMIT $6"
    );
    let rows = sqlx::query(&sql)
        .bind(&q.departure_airport_code)
        .bind(&q.arrival_airport_code)
        .bind(day_start)
        .bind(q.cursor.map(|c| c.departure))
        .bind(q.cursor.map(|c| c.id))
        .bind(q.limit + 1)
        .fetch_all(db)
        .await?;
    let mut items = rows
        .iter()
        .map(from_row)
        .collect::<sqlx::Result<Vec<_>>>()?;
    let more = items.len() > usize::try_from(q.limit).unwrap_or(0);
    items.truncate(usize::try_from(q.limit).unwrap_or(0));
    let next_cursor = more
        .then(|| {
            items.last().map(|f| {
                Cursor {
                    departure: f.departure_date,
                    id: f.id,
                }
                .render()
            })
        })
        .flatten();
    Ok(Page { items, next_cursor })
}

/// The demo flights `airline seed` creates (fixed ids, so seeding is idempotent).
#[must_use]
pub fn demo_flights() -> Vec<NewFlight> {
    let routes = [
        (
            1,
            "LGW",
            "London Gatwick",
            "London",
            "Europe/London",
            "MAD",
            "Madrid Barajas",
            "Madrid",
            "Europe/Madrid",
            120,
        ),
        (
            2,
            "MAD",
            "Madrid Barajas",
            "Madrid",
            "Europe/Madrid",
            "LGW",
            "London Gatwick",
            "London",
            "Europe/London",
            110,
        ),
        (
            3,
            "LGW",
            "London Gatwick",
            "London",
            "Europe/London",
            "CDG",
            "Paris Charles de Gaulle",
            "Paris",
            "Europe/Paris",
            90,
        ),
        (
            4,
            "CDG",
            "Paris Charles de Gaulle",
            "Paris",
            "Europe/Paris",
            "FCO",
            "Rome Fiumicino",
            "Rome",
            "Europe/Rome",
            140,
        ),
        (
            5,
            "FCO",
            "Rome Fiumicino",
            "Rome",
            "Europe/Rome",
            "LGW",
            "London Gatwick",
            "London",
            "Europe/London",
            160,
        ),
    ];
    routes
        .into_iter()
        .map(|(n, dc, dn, dcity, dl, ac, an, acity, al, price)| {
            let body = serde_json::json!({
                "flightNumber": 1800 + n,
                "departureAirportCode": dc, "departureAirportName": dn, "departureCity": dcity, "departureLocale": dl,
                "departureDate": format!("2027-01-{:02}T08:00:00Z", 10 + n),
                "arrivalAirportCode": ac, "arrivalAirportName": an, "arrivalCity": acity, "arrivalLocale": al,
                "arrivalDate": format!("2027-01-{:02}T10:30:00Z", 10 + n),
                "ticketPrice": price, "ticketCurrency": "EUR", "seatCapacity": 200,
            });
            let id = Uuid::from_u128(0xa1000000_0000_4000_8000_000000000000 + n);
            NewFlight::from_json(&body).map(|f| f.with_id(id))
        })
        .filter_map(Result::ok)
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn valid() -> Value {
        json!({
            "flightNumber": 1812, "departureAirportCode": "LGW", "departureAirportName": "London Gatwick",
            "departureCity": "London", "departureLocale": "Europe/London", "departureDate": "2027-01-15T08:00:00Z",
            "arrivalAirportCode": "MAD", "arrivalAirportName": "Madrid Barajas", "arrivalCity": "Madrid",
            "arrivalLocale": "Europe/Madrid", "arrivalDate": "2027-01-15T10:30:00Z", "ticketPrice": 120,
            "ticketCurrency": "EUR", "seatCapacity": 5
        })
    }

    #[test]
    fn a_valid_flight_parses() {
        let f = NewFlight::from_json(&valid()).expect("valid");
        assert_eq!(f.0.seat_capacity, 5);
        assert_eq!(f.0.seats_total, 5);
    }

    #[test]
    fn invalid_fields_are_named() {
        let cases = [
            ("departureAirportCode", json!("lgw")),
            ("ticketPrice", json!(12.5)),
            ("ticketPrice", json!(0)),
            ("seatCapacity", json!(-1)),
            ("departureDate", json!("tomorrow")),
            ("arrivalDate", json!("2027-01-15T07:00:00Z")),
            ("ticketCurrency", json!("euro")),
            ("flightNumber", json!("12")),
            ("arrivalCity", json!(null)),
        ];
        for (field, value) in cases {
            let mut body = valid();
            body[field] = value;
            let errors = NewFlight::from_json(&body).unwrap_err();
            assert!(
                errors.iter().any(|e| e.name == field),
                "{field}: {errors:?}"
            );
        }
    }

    #[test]
    fn demo_flights_are_valid_and_fixed() {
        let flights = demo_flights();
        assert_eq!(flights.len(), 5);
        assert_eq!(
            flights[0].0.id.to_string(),
            "a1000000-0000-4000-8000-000000000001"
        );
    }

    #[test]
    fn cursors_round_trip() {
        let c = Cursor {
            departure: OffsetDateTime::UNIX_EPOCH,
            id: Uuid::now_v7(),
        };
        assert_eq!(Cursor::parse(&c.render()), Some(c));
        assert_eq!(Cursor::parse("nonsense"), None);
    }
}
