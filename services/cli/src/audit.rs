//! `airline audit`: checks the books. Run it when the pipeline has drained (no
//! booking in flight): every check below is an invariant of a quiet system.

use airline_booking::saga::State;
use airline_booking::views::terminal_states;
use airline_contracts::FailureReason;
use serde::Serialize;
use sqlx::PgPool;

/// Bookings in one state.
const BY_STATE: &str = "SELECT count(*) FROM booking.bookings WHERE state = $1";

/// One broken invariant.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Violation {
    /// Which check: `seats`, `money`, `loyalty`, `sagas`, `messages`.
    pub check: &'static str,
    /// What is wrong, naming the flight, booking or customer.
    pub detail: String,
}

/// What the audit found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub violations: Vec<Violation>,
    pub stats: Stats,
}

/// Sizes worth watching.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub bookings: i64,
    pub confirmed: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub in_flight: i64,
    pub inbox_rows: i64,
    pub outbox_rows: i64,
    pub duplicates_absorbed: i64,
}

/// A value a check binds, named by the booking crate rather than written out here.
#[derive(Debug, Clone, Copy)]
enum Param {
    /// A saga state's stored name.
    State(State),
    /// The stored names of the terminal states, as `text[]`.
    Terminal,
    /// A failure reason's name.
    Reason(FailureReason),
}

const CONFIRMED: Param = Param::State(State::Confirmed);
const FAILED: Param = Param::State(State::Failed);
const CANCELLED: Param = Param::State(State::Cancelled);
const PARKED: Param = Param::Reason(FailureReason::CompensationFailed);

/// Each check: a name, a query returning one text row per violation, and what it
/// binds as `$1`, `$2`, ….
const CHECKS: &[(&str, &str, &[Param])] = &[
    (
        "seats",
        "SELECT format('flight %s: %s seats taken but %s bookings hold one', f.id, f.seats_total - f.seats_left, count(r.booking_id))
           FROM catalog.flights f
           LEFT JOIN catalog.seat_reservations r ON r.flight_id = f.id AND r.status = 'reserved'
          GROUP BY f.id, f.seats_total, f.seats_left
         HAVING f.seats_total - f.seats_left <> count(r.booking_id)",
        &[],
    ),
    (
        "seats",
        "SELECT format('booking %s is %s but still holds a seat on flight %s', b.id, b.state, r.flight_id)
           FROM catalog.seat_reservations r JOIN booking.bookings b ON b.id = r.booking_id
          WHERE r.status = 'reserved'
            AND (b.state = $1 OR (b.state = $2 AND b.failure_reason IS DISTINCT FROM $3))",
        &[CANCELLED, FAILED, PARKED],
    ),
    (
        "seats",
        "SELECT format('booking %s is %s without a seat', b.id, b.state)
           FROM booking.bookings b
           LEFT JOIN catalog.seat_reservations r ON r.booking_id = b.id AND r.status = 'reserved'
          WHERE b.state = $1 AND r.booking_id IS NULL",
        &[CONFIRMED],
    ),
    (
        "seats",
        "SELECT format('flight %s has %s seats left of %s', id, seats_left, seats_total)
           FROM catalog.flights WHERE seats_left < 0 OR seats_left > seats_total",
        &[],
    ),
    (
        "money",
        "SELECT format('booking %s is %s but its charge %s is captured and not refunded', b.id, b.state, p.charge_id)
           FROM payment.payments p JOIN booking.bookings b ON b.id = p.booking_id
          WHERE p.status = 'captured'
            AND (b.state = $1 OR (b.state = $2 AND b.failure_reason IS DISTINCT FROM $3))",
        &[CANCELLED, FAILED, PARKED],
    ),
    (
        "money",
        "SELECT format('booking %s is %s but its payment is %s', b.id, b.state, coalesce(p.status, 'missing'))
           FROM booking.bookings b LEFT JOIN payment.payments p ON p.booking_id = b.id
          WHERE b.state = $1 AND p.status IS DISTINCT FROM 'captured'",
        &[CONFIRMED],
    ),
    (
        "money",
        "SELECT format('booking %s: refunded %s of a charge of %s', r.booking_id, r.amount, coalesce(p.amount, 0))
           FROM payment.refunds r LEFT JOIN payment.payments p ON p.booking_id = r.booking_id
          WHERE r.amount > coalesce(p.amount, 0)
             OR (p.status = 'refunded' AND r.amount <> p.amount)",
        &[],
    ),
    (
        "loyalty",
        "WITH earned AS (
             SELECT customer_id, sum(ticket_price) AS points FROM booking.bookings
              WHERE state = $1 GROUP BY customer_id),
         credited AS (
             SELECT customer_id, sum(CASE kind WHEN 'award' THEN points ELSE -points END) AS points
               FROM loyalty.ledger GROUP BY customer_id)
         SELECT format('customer %s has %s points for %s of confirmed tickets',
                       coalesce(e.customer_id, c.customer_id), coalesce(c.points, 0), coalesce(e.points, 0))
           FROM earned e FULL JOIN credited c ON c.customer_id = e.customer_id
          WHERE coalesce(e.points, 0) <> coalesce(c.points, 0)",
        &[CONFIRMED],
    ),
    (
        "sagas",
        "SELECT format('booking %s has waited in %s since its deadline %s', id, state, deadline_at)
           FROM booking.bookings
          WHERE state <> ALL($1) AND deadline_at < now() - interval '5 seconds'",
        &[Param::Terminal],
    ),
    (
        "messages",
        "SELECT format('outbox row %s (%s from %s) unsent since %s', id, routing_key, producer, created_at)
           FROM messaging.outbox WHERE created_at < now() - interval '60 seconds'",
        &[],
    ),
];

/// Binds `params` to `query` in order.
fn bind<'q, O>(
    mut query: sqlx::query::QueryScalar<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    params: &[Param],
) -> sqlx::query::QueryScalar<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    for p in params {
        query = match p {
            Param::State(s) => query.bind(s.as_str()),
            Param::Terminal => query.bind(terminal_states()),
            Param::Reason(r) => query.bind(r.as_str()),
        };
    }
    query
}

/// Runs every check.
///
/// # Errors
/// Database errors (a missing schema: run `airline migrate`).
pub async fn audit(pool: &PgPool) -> anyhow::Result<Report> {
    let mut violations = Vec::new();
    for (check, sql, params) in CHECKS {
        let rows: Vec<String> = bind(sqlx::query_scalar(sql), params)
            .fetch_all(pool)
            .await?;
        violations.extend(rows.into_iter().map(|detail| Violation { check, detail }));
    }
    let count = |sql: &'static str, params: &'static [Param]| async move {
        bind(sqlx::query_scalar::<_, i64>(sql), params)
            .fetch_one(pool)
            .await
    };
    let stats = Stats {
        bookings: count("SELECT count(*) FROM booking.bookings", &[]).await?,
        confirmed: count(BY_STATE, &[CONFIRMED]).await?,
        failed: count(BY_STATE, &[FAILED]).await?,
        cancelled: count(BY_STATE, &[CANCELLED]).await?,
        in_flight: count(
            "SELECT count(*) FROM booking.bookings WHERE state <> ALL($1)",
            &[Param::Terminal],
        )
        .await?,
        inbox_rows: count("SELECT count(*) FROM messaging.inbox", &[]).await?,
        outbox_rows: count("SELECT count(*) FROM messaging.outbox", &[]).await?,
        duplicates_absorbed: count(
            "SELECT coalesce(sum(duplicates), 0)::bigint FROM messaging.inbox",
            &[],
        )
        .await?,
    };
    Ok(Report {
        ok: violations.is_empty(),
        violations,
        stats,
    })
}

/// [`audit`], plus the check that needs the broker: every booking that failed with
/// `COMPENSATION_FAILED` was parked, and its record is in the booking DLQ or the
/// dead-letter store.
///
/// # Errors
/// Database or broker errors.
pub async fn audit_all(rt: &airline_runtime::Runtime) -> anyhow::Result<Report> {
    let mut report = audit(&rt.pool).await?;
    let unstored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM booking.bookings b
          WHERE b.failure_reason = 'COMPENSATION_FAILED'
            AND NOT EXISTS (SELECT 1 FROM messaging.dead_letters d
                             WHERE d.queue = 'booking.dlq' AND d.correlation_id = b.id::text)",
    )
    .fetch_one(&rt.pool)
    .await?;
    if unstored > 0 {
        let waiting = airline_dead_letters::depth(rt, &rt.names.resolve("booking.dlq"))
            .await
            .map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX));
        if unstored > waiting {
            report.violations.push(Violation {
                check: "sagas",
                detail: format!(
                    "{unstored} booking(s) failed with COMPENSATION_FAILED are not in the dead-letter store, and the booking DLQ holds only {waiting}"
                ),
            });
            report.ok = false;
        }
    }
    Ok(report)
}

/// The report for a person.
#[must_use]
pub fn render(report: &Report) -> String {
    let s = &report.stats;
    let mut out = format!(
        "bookings {} (confirmed {}, failed {}, cancelled {}, in flight {}); inbox {} rows, {} duplicates absorbed; outbox {} rows\n",
        s.bookings,
        s.confirmed,
        s.failed,
        s.cancelled,
        s.in_flight,
        s.inbox_rows,
        s.duplicates_absorbed,
        s.outbox_rows
    );
    for check in ["seats", "money", "loyalty", "sagas", "messages"] {
        let found: Vec<&Violation> = report
            .violations
            .iter()
            .filter(|v| v.check == check)
            .collect();
        if found.is_empty() {
            out.push_str(&format!("{check:<9} ok\n"));
        } else {
            out.push_str(&format!("{check:<9} {} violation(s)\n", found.len()));
            for v in found {
                out.push_str(&format!("          {}\n", v.detail));
            }
        }
    }
    out
}
