//! The booking service: the saga orchestrator and the bookings.
//!
//! Each booking row is its saga: state, version, and a history of every transition
//! (`booking.saga_history`). [`saga`] decides, purely, what happens next; the
//! handlers here load the booking under a row lock, apply the decision, and return
//! the commands and events it calls for, which the runtime writes to the outbox in
//! the same transaction.

pub mod saga;
pub mod views;

use std::sync::Arc;

use std::time::Duration;

use airline_contracts::messages::{
    BookingCancelled, BookingConfirmed, BookingFailed, BookingParked, CollectPayment,
    RefundPayment, ReleaseSeat, ReserveSeat, SagaStep,
};
use airline_contracts::topology::{
    BOOKING_REQUESTED, CANCEL_BOOKING, PAYMENT_COLLECTED, PAYMENT_DECLINED, PAYMENT_REFUNDED,
    SEAT_RELEASED, SEAT_RESERVED, SEAT_UNAVAILABLE, STEP_DEAD_LETTERED_QUEUE,
};
use airline_contracts::{FailureReason, Message, PaymentToken};
use airline_runtime::outbox::{self, Cause};
use airline_runtime::{
    Config, Consumer, Gauge, Handler, HandlerError, Incoming, Runtime, Service, async_trait,
};
use saga::{Command, Decision, Input, LocalSteps, State};
use sqlx::migrate::Migrator;
use sqlx::{PgConnection, Row};
use time::OffsetDateTime;
use tracing::Instrument as _;
use uuid::Uuid;

/// The booking schema's migrations.
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// How long the saga waits in each waiting state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// For the catalog's seat steps.
    pub step: Duration,
    /// For payment's collect and refund.
    pub payment: Duration,
    /// How long a saga is held for an operator after its step was dead-lettered.
    pub hold: Duration,
}

impl Deadlines {
    /// From the runtime configuration.
    #[must_use]
    pub fn of(config: &Config) -> Self {
        Self {
            step: config.saga.step_deadline,
            payment: config.saga.payment_deadline,
            hold: config.saga.hold_deadline,
        }
    }

    /// The deadline of a state entered at `now`; none once terminal.
    #[must_use]
    pub fn of_state(&self, state: State, now: OffsetDateTime) -> Option<OffsetDateTime> {
        match state {
            State::ReservingSeat | State::ReleasingSeat => Some(now + self.step),
            State::CollectingPayment | State::RefundingPayment | State::CancelRefunding => {
                Some(now + self.payment)
            }
            State::CancelReleasingSeat => Some(now + self.step),
            State::Confirmed | State::Failed | State::Cancelled => None,
        }
    }
}

/// The booking service: schema `booking`, the saga orchestrator.
/// `booking.requested` starts sagas, every other queue carries a reply or a command
/// that moves one; the deadline sweeper moves those whose step took too long.
pub static SERVICE: Service = Service {
    name: "booking",
    migrations: &MIGRATIONS,
    reads: &[],
    consumers: &[
        Consumer {
            queues: &[&BOOKING_REQUESTED],
            handler: |config, _| {
                Ok(Arc::new(StartSaga {
                    deadlines: Deadlines::of(config),
                }))
            },
        },
        Consumer {
            queues: &[
                &SEAT_RESERVED,
                &SEAT_UNAVAILABLE,
                &SEAT_RELEASED,
                &PAYMENT_COLLECTED,
                &PAYMENT_DECLINED,
                &PAYMENT_REFUNDED,
                &CANCEL_BOOKING,
                &STEP_DEAD_LETTERED_QUEUE,
            ],
            handler: |config, _| {
                Ok(Arc::new(AdvanceSaga {
                    steps: LocalSteps::of(config),
                    deadlines: Deadlines::of(config),
                }))
            },
        },
    ],
    jobs: &[|rt, relay, shutdown| Box::pin(sweep_deadlines(rt, relay, shutdown))],
    gauges: &[Gauge {
        name: "sagas",
        help: "Bookings by saga state.",
        labels: &["state"],
        read: |pool| {
            Box::pin(async move {
                let rows: Vec<(String, i64)> =
                    sqlx::query_as("SELECT state, count(*) FROM booking.bookings GROUP BY state")
                        .fetch_all(pool)
                        .await?;
                Ok(rows
                    .into_iter()
                    .map(|(state, n)| (vec![state], n))
                    .collect())
            })
        },
    }],
};

impl LocalSteps {
    /// The local steps' outcomes as configured (fault injection).
    #[must_use]
    pub fn of(config: &Config) -> Self {
        Self {
            reserve_booking_fails: config.fails(airline_runtime::config::FaultStep::ReserveBooking),
            confirm_booking_fails: config.fails(airline_runtime::config::FaultStep::ConfirmBooking),
        }
    }
}

/// Starts a saga for `booking.requested`; a second request with the same booking id
/// changes nothing.
#[derive(Debug, Clone, Copy)]
pub struct StartSaga {
    /// Deadlines of the waiting states.
    pub deadlines: Deadlines,
}

#[async_trait]
impl Handler for StartSaga {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        msg: &Incoming,
    ) -> Result<Vec<Message>, HandlerError> {
        let Message::BookingRequested(req) = &msg.message else {
            return Err(HandlerError::Rejected("expected booking.requested".into()));
        };
        let decision = saga::start();
        let now = OffsetDateTime::now_utc();
        let trigger = Trigger::of(msg);
        // The saga and its first history row in one statement.
        let inserted = sqlx::query(
            "WITH started AS (
                 INSERT INTO booking.bookings
                     (id, customer_id, outbound_flight_id, payment_token, state, version, created_at,
                      deadline_at, request_id, api_key_id)
                 VALUES ($1, $2, $3, $4, $5, 1, $6, $7, $8, $13)
                 ON CONFLICT (id) DO NOTHING
                 RETURNING id)
             INSERT INTO booking.saga_history
                 (booking_id, version, from_state, to_state, trigger_type, trigger_message_id,
                  step_attempts, note)
             SELECT id, 1, NULL, $5, $9, $10, $11, $12 FROM started",
        )
        .bind(req.booking_id)
        .bind(&req.customer_id)
        .bind(req.outbound_flight_id)
        .bind(req.payment_token.expose())
        .bind(decision.next.as_str())
        .bind(req.requested_at)
        .bind(self.deadlines.of_state(decision.next, now))
        .bind(msg.request_id.as_deref())
        .bind(&trigger.kind)
        .bind(&trigger.message_id)
        .bind(trigger.step_attempts())
        .bind(history_note(&decision, &trigger))
        .bind(req.api_key_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !inserted {
            tracing::info!("booking already requested; nothing to do");
            return Ok(Vec::new());
        }
        Ok(vec![Message::ReserveSeat(ReserveSeat {
            booking_id: req.booking_id,
            flight_id: req.outbound_flight_id,
        })])
    }
}

/// Moves a saga on a reply from the catalog or payment.
#[derive(Debug, Clone, Copy)]
pub struct AdvanceSaga {
    /// Outcomes of the local steps (fault injection).
    pub steps: LocalSteps,
    /// Deadlines of the waiting states.
    pub deadlines: Deadlines,
}

/// A booking's saga as loaded for a transition.
#[derive(Debug)]
struct Saga {
    id: Uuid,
    customer_id: String,
    flight_id: Uuid,
    payment_token: Option<String>,
    state: State,
    version: i32,
    failure: Option<FailureReason>,
    ticket_price: Option<i64>,
    ticket_currency: Option<String>,
    reference: Option<String>,
    request_id: Option<String>,
    created_at: OffsetDateTime,
}

const SAGA_COLUMNS: &str =
    "id, customer_id, outbound_flight_id, payment_token, state, version, failure_reason,
    ticket_price, ticket_currency, booking_reference, request_id, created_at";

impl Saga {
    fn from_row(row: &sqlx::postgres::PgRow) -> Result<Self, HandlerError> {
        let state: String = row.try_get("state")?;
        Ok(Self {
            id: row.try_get("id")?,
            customer_id: row.try_get("customer_id")?,
            flight_id: row.try_get("outbound_flight_id")?,
            payment_token: row.try_get("payment_token")?,
            state: State::parse(&state).ok_or_else(|| {
                HandlerError::Unexpected(anyhow::anyhow!("unknown saga state {state}"))
            })?,
            version: row.try_get("version")?,
            failure: row
                .try_get::<Option<String>, _>("failure_reason")?
                .as_deref()
                .and_then(FailureReason::parse),
            ticket_price: row.try_get("ticket_price")?,
            ticket_currency: row.try_get("ticket_currency")?,
            reference: row.try_get("booking_reference")?,
            request_id: row.try_get("request_id")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// The trigger of a transition made by the deadline sweeper.
const DEADLINE: &str = "deadline";

/// What moved a saga, for its history.
#[derive(Debug)]
struct Trigger {
    kind: String,
    message_id: Option<String>,
    attempts: u32,
}

impl Trigger {
    /// The attempts, as the history's `step_attempts` column.
    fn step_attempts(&self) -> i32 {
        i32::try_from(self.attempts).unwrap_or(i32::MAX)
    }

    fn of(msg: &Incoming) -> Self {
        let attempts = match &msg.message {
            Message::PaymentCollected(m) => m.attempts,
            _ => 1,
        };
        let dead_lettered = matches!(
            msg.message,
            Message::ReserveSeat(_) | Message::CollectPayment(_)
        );
        Self {
            kind: if dead_lettered {
                format!("{} (dead-lettered)", msg.message.message_type())
            } else {
                msg.message.message_type().to_string()
            },
            message_id: Some(msg.message_id.clone()),
            attempts,
        }
    }
}

fn input_of(message: &Message) -> Option<Input> {
    Some(match message {
        Message::SeatReserved(_) => Input::SeatReserved,
        Message::SeatUnavailable(m) => Input::SeatUnavailable(m.reason),
        Message::PaymentCollected(_) => Input::PaymentCollected,
        // Payment can only decline or fail; any other code it sends is a failure.
        Message::PaymentDeclined(m) => Input::PaymentDeclined(match m.reason {
            FailureReason::PaymentDeclined => FailureReason::PaymentDeclined,
            _ => FailureReason::PaymentFailed,
        }),
        Message::PaymentRefunded(_) => Input::PaymentRefunded,
        Message::SeatReleased(_) => Input::SeatReleased,
        // Only on the watch queue: a copy of the saga's own command, dead-lettered.
        Message::ReserveSeat(_) => Input::StepDeadLettered(saga::Step::ReserveSeat),
        Message::CollectPayment(_) => Input::StepDeadLettered(saga::Step::CollectPayment),
        Message::CancelBooking(_) => Input::CancelRequested,
        _ => return None,
    })
}

#[async_trait]
impl Handler for AdvanceSaga {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        msg: &Incoming,
    ) -> Result<Vec<Message>, HandlerError> {
        let input = input_of(&msg.message)
            .ok_or_else(|| HandlerError::Rejected("not a reply of the booking saga".into()))?;
        let booking_id = msg.message.booking_id();
        let sql = format!("SELECT {SAGA_COLUMNS} FROM booking.bookings WHERE id = $1 FOR UPDATE");
        let row = sqlx::query(&sql)
            .bind(booking_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| HandlerError::Rejected(format!("no booking {booking_id}")))?;
        let mut saga = Saga::from_row(&row)?;
        let Some(decision) = saga::transition(saga.state, input, self.steps) else {
            tracing::info!(state = %saga.state, "reply does not apply to the saga's state; ignored");
            return Ok(Vec::new());
        };
        let mut charge_id = None;
        match &msg.message {
            Message::SeatReserved(m) if saga.ticket_price.is_none() => {
                saga.ticket_price = Some(m.ticket_price);
                saga.ticket_currency = Some(m.ticket_currency.clone());
            }
            Message::PaymentCollected(m) => charge_id = Some(m.charge_id.clone()),
            _ => {}
        }
        apply(
            tx,
            &mut saga,
            &decision,
            &Trigger::of(msg),
            charge_id,
            self.deadlines,
        )
        .await
    }
}

/// Applies a decision to a locked saga: new state, version, failure, deadline and
/// history; returns the messages the decision sends.
async fn apply(
    tx: &mut PgConnection,
    saga: &mut Saga,
    decision: &Decision,
    trigger: &Trigger,
    charge_id: Option<String>,
    deadlines: Deadlines,
) -> Result<Vec<Message>, HandlerError> {
    let from = saga.state;
    let failure_before = saga.failure;
    saga.failure = decision.failure.or(saga.failure);
    saga.state = decision.next;
    saga.version += 1;
    let now = OffsetDateTime::now_utc();
    let reference = if decision.commands.contains(&Command::PublishConfirmed) {
        Some(new_reference())
    } else {
        None
    };
    // The saga's new state and its history row in one statement.
    sqlx::query(
        "WITH moved AS (
             UPDATE booking.bookings
                SET state = $2, version = $3, failure_reason = $4, ticket_price = $5,
                    ticket_currency = $6, charge_id = COALESCE($7, charge_id),
                    booking_reference = COALESCE($8, booking_reference),
                    payment_token = CASE WHEN $9 THEN NULL ELSE payment_token END,
                    deadline_at = CASE WHEN $11 THEN $12 ELSE deadline_at END,
                    updated_at = $10
              WHERE id = $1
          RETURNING id)
         INSERT INTO booking.saga_history
             (booking_id, version, from_state, to_state, trigger_type, trigger_message_id,
              step_attempts, note)
         SELECT id, $3, $13, $2, $14, $15, $16, $17 FROM moved",
    )
    .bind(saga.id)
    .bind(saga.state.as_str())
    .bind(saga.version)
    .bind(saga.failure.map(FailureReason::as_str))
    .bind(saga.ticket_price)
    .bind(&saga.ticket_currency)
    .bind(&charge_id)
    .bind(&reference)
    // The card token is a secret: drop it once no step can need it.
    .bind(saga.state.is_terminal())
    .bind(now)
    // A new state gets a new deadline, a held saga the hold deadline, a step asked
    // for again at its deadline a new one; a late reply handled in place keeps its
    // deadline.
    .bind(from != saga.state || decision.hold || trigger.kind == DEADLINE)
    .bind(if decision.hold {
        Some(now + deadlines.hold)
    } else {
        deadlines.of_state(saga.state, now)
    })
    .bind(from.as_str())
    .bind(&trigger.kind)
    .bind(&trigger.message_id)
    .bind(trigger.step_attempts())
    .bind(history_note(decision, trigger))
    .execute(&mut *tx)
    .await?;
    tracing::info!(from = %from, to = %saga.state, "saga moved");
    if saga.state.is_terminal() && !from.is_terminal() {
        airline_runtime::metrics::METRICS
            .booking_seconds
            .with_label_values(&[saga.state.as_str()])
            .observe((now - saga.created_at).as_seconds_f64().max(0.0));
    }
    let mut out = Vec::with_capacity(decision.commands.len());
    for c in &decision.commands {
        out.push(match c {
            Command::Park => parked(tx, saga, from, failure_before, now).await?,
            other => command_message(saga, *other, reference.as_deref(), now)?,
        });
    }
    Ok(out)
}

async fn parked(
    tx: &mut PgConnection,
    saga: &Saga,
    stuck_in: State,
    original_failure: Option<FailureReason>,
    now: OffsetDateTime,
) -> Result<Message, HandlerError> {
    let rows = sqlx::query(
        "SELECT version, from_state, to_state, trigger_type, note, at
           FROM booking.saga_history WHERE booking_id = $1 ORDER BY id",
    )
    .bind(saga.id)
    .fetch_all(&mut *tx)
    .await?;
    let history = rows
        .iter()
        .map(|r| {
            Ok(SagaStep {
                version: r.try_get("version")?,
                from_state: r.try_get("from_state")?,
                to_state: r.try_get("to_state")?,
                trigger: r.try_get("trigger_type")?,
                note: r.try_get("note")?,
                at: r.try_get("at")?,
            })
        })
        .collect::<sqlx::Result<Vec<_>>>()?;
    Ok(Message::BookingParked(BookingParked {
        booking_id: saga.id,
        customer_id: saga.customer_id.clone(),
        outbound_flight_id: saga.flight_id,
        stuck_in: stuck_in.as_str().to_owned(),
        reason: FailureReason::CompensationFailed,
        original_failure,
        history,
        parked_at: now,
    }))
}

/// Sweeps sagas whose deadline has passed, every quarter of a second, until
/// `shutdown`. While the broker is unreachable no reply can arrive, so deadlines are
/// paused: the sweep waits, and when the broker is back every open deadline is
/// pushed back by the length of the outage.
async fn sweep_deadlines(
    rt: Runtime,
    relay: airline_runtime::outbox::RelaySignal,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let steps = LocalSteps::of(&rt.config);
    let deadlines = Deadlines::of(&rt.config);
    let mut broker_down_since: Option<tokio::time::Instant> = None;
    let mut db_down_since: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        if !rt.broker.connected() {
            broker_down_since.get_or_insert_with(tokio::time::Instant::now);
            continue;
        }
        if let Some(since) = broker_down_since {
            match extend_deadlines(&rt.pool, since.elapsed()).await {
                Ok(n) => {
                    tracing::info!(
                        sagas = n,
                        outage_ms = since.elapsed().as_millis(),
                        "broker back; deadlines pushed back"
                    );
                    broker_down_since = None;
                }
                Err(e) => tracing::warn!(
                    error = format!("{e:#}"),
                    "could not push deadlines back; will retry"
                ),
            }
            continue;
        }
        // Replies cannot be handled while the database is away either: the outage is
        // given back to the deadlines before the first sweep after it.
        if let Some(since) = db_down_since {
            match extend_deadlines(&rt.pool, since.elapsed()).await {
                Ok(n) => {
                    tracing::info!(sagas = n, "database back; deadlines pushed back");
                    db_down_since = None;
                }
                Err(e) => tracing::debug!(error = %e, "database still away"),
            }
            continue;
        }
        match sweep_once(&rt.pool, steps, deadlines, OffsetDateTime::now_utc()).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(sagas = n, "deadlines passed; compensating");
                relay.notify_one();
            }
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "deadline sweep failed; will retry"
            ),
        }
    }
}

/// Pushes every open deadline back by `outage`.
///
/// # Errors
/// Database errors.
pub async fn extend_deadlines(pool: &sqlx::PgPool, outage: Duration) -> sqlx::Result<u64> {
    let micros = i64::try_from(outage.as_micros()).unwrap_or(i64::MAX);
    Ok(sqlx::query(
        "UPDATE booking.bookings SET deadline_at = deadline_at + make_interval(secs => $1::double precision / 1e6)
          WHERE deadline_at IS NOT NULL AND state <> ALL($2)",
    )
    .bind(micros)
    .bind(views::terminal_states())
    .execute(pool)
    .await?
    .rows_affected())
}

/// Moves every saga whose deadline has passed by `now` (up to 100 at a time).
/// Returns how many moved. The sweeper passes the wall clock; tests pass a later
/// time instead of waiting for it.
///
/// # Errors
/// Database errors; nothing is committed then.
pub async fn sweep_once(
    pool: &sqlx::PgPool,
    steps: LocalSteps,
    deadlines: Deadlines,
    now: OffsetDateTime,
) -> anyhow::Result<usize> {
    let mut tx = pool.begin().await?;
    let sql = format!(
        "SELECT {SAGA_COLUMNS} FROM booking.bookings
          WHERE deadline_at <= $1 AND state <> ALL($2)
          ORDER BY deadline_at LIMIT 100
          FOR UPDATE SKIP LOCKED"
    );
    let rows = sqlx::query(&sql)
        .bind(now)
        .bind(views::terminal_states())
        .fetch_all(&mut *tx)
        .await?;
    let trigger = Trigger {
        kind: DEADLINE.into(),
        message_id: None,
        attempts: 1,
    };
    let mut moved = 0;
    for row in &rows {
        // One savepoint per saga: a saga that cannot be moved is logged and
        // skipped, and does not hold back every other deadline.
        let mut one = sqlx::Acquire::begin(&mut tx).await?;
        let step = async {
            let mut saga = Saga::from_row(row)?;
            let Some(decision) = saga::transition(saga.state, Input::DeadlinePassed, steps) else {
                return Ok::<_, HandlerError>(false);
            };
            let out = apply(&mut one, &mut saga, &decision, &trigger, None, deadlines).await?;
            let cause = Cause {
                request_id: saga.request_id.clone(),
                ..Cause::default()
            };
            for m in &out {
                outbox::enqueue(&mut one, SERVICE.name, &cause, m).await?;
            }
            Ok(true)
        }
        .instrument(tracing::info_span!(
            "deadline",
            booking_id = ?row.try_get::<Uuid, _>("id").ok(),
            request_id = row
                .try_get::<Option<String>, _>("request_id")
                .ok()
                .flatten()
                .unwrap_or_else(|| "-".into()),
        ))
        .await;
        match step {
            Ok(changed) => {
                one.commit().await?;
                moved += usize::from(changed);
            }
            Err(e) => {
                one.rollback().await?;
                let id: Option<Uuid> = row.try_get("id").ok();
                tracing::error!(booking_id = ?id, error = format!("{e:#}"), "cannot move this saga past its deadline; skipped");
            }
        }
    }
    tx.commit().await?;
    Ok(moved)
}

fn command_message(
    saga: &Saga,
    command: Command,
    reference: Option<&str>,
    now: OffsetDateTime,
) -> Result<Message, HandlerError> {
    let missing =
        |what: &str| HandlerError::Unexpected(anyhow::anyhow!("saga {} has no {what}", saga.id));
    Ok(match command {
        Command::ReserveSeat => Message::ReserveSeat(ReserveSeat {
            booking_id: saga.id,
            flight_id: saga.flight_id,
        }),
        Command::ReleaseSeat => Message::ReleaseSeat(ReleaseSeat {
            booking_id: saga.id,
            flight_id: saga.flight_id,
        }),
        Command::CollectPayment => {
            let token = saga
                .payment_token
                .as_deref()
                .ok_or_else(|| missing("payment token"))?;
            Message::CollectPayment(CollectPayment {
                booking_id: saga.id,
                customer_id: saga.customer_id.clone(),
                payment_token: PaymentToken::parse(token)
                    .map_err(|e| HandlerError::Rejected(format!("stored payment token {e}")))?,
                amount: saga.ticket_price.ok_or_else(|| missing("ticket price"))?,
                currency: saga
                    .ticket_currency
                    .clone()
                    .ok_or_else(|| missing("currency"))?,
            })
        }
        Command::RefundPayment => Message::RefundPayment(RefundPayment {
            booking_id: saga.id,
        }),
        Command::PublishConfirmed => Message::BookingConfirmed(BookingConfirmed {
            booking_id: saga.id,
            customer_id: saga.customer_id.clone(),
            outbound_flight_id: saga.flight_id,
            booking_reference: reference
                .ok_or_else(|| missing("booking reference"))?
                .to_owned(),
            ticket_price: saga.ticket_price.ok_or_else(|| missing("ticket price"))?,
            ticket_currency: saga
                .ticket_currency
                .clone()
                .ok_or_else(|| missing("currency"))?,
            confirmed_at: now,
        }),
        Command::PublishFailed => Message::BookingFailed(BookingFailed {
            booking_id: saga.id,
            customer_id: saga.customer_id.clone(),
            outbound_flight_id: saga.flight_id,
            reason: saga.failure.ok_or_else(|| missing("failure reason"))?,
            failed_at: now,
        }),
        Command::PublishCancelled => Message::BookingCancelled(BookingCancelled {
            booking_id: saga.id,
            customer_id: saga.customer_id.clone(),
            outbound_flight_id: saga.flight_id,
            booking_reference: saga.reference.clone(),
            ticket_price: saga.ticket_price.ok_or_else(|| missing("ticket price"))?,
            ticket_currency: saga
                .ticket_currency
                .clone()
                .ok_or_else(|| missing("currency"))?,
            cancelled_at: now,
        }),
        Command::Park => return Err(missing("park message (built with the history)")),
    })
}

/// The note of a history row: the decision's, with the failure or the attempts.
fn history_note(decision: &Decision, trigger: &Trigger) -> String {
    match (decision.failure, trigger.attempts) {
        (Some(f), _) => format!("{} [{f}]", decision.note),
        (None, n) if n > 1 => format!("{} (after {n} attempts)", decision.note),
        _ => decision.note.to_owned(),
    }
}

/// The booking reference alphabet: URL-safe, without look-alikes (0/O, 1/I).
const REFERENCE_ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// Six URL-safe characters from 30 random bits.
#[must_use]
pub fn reference_from(random: u32) -> String {
    (0..6)
        .map(|i| char::from(REFERENCE_ALPHABET[((random >> (i * 5)) & 31) as usize]))
        .collect()
}

/// A new booking reference. Not looked up first: the unique index refuses the
/// rare one already taken (30 random bits), the transaction fails, and the reply is
/// retried with a new one.
fn new_reference() -> String {
    let bytes = Uuid::new_v4().into_bytes();
    reference_from(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_six_url_safe_characters() {
        for seed in [0, 1, u32::MAX, 0xdead_beef] {
            let r = reference_from(seed);
            assert_eq!(r.len(), 6);
            assert!(r.bytes().all(|b| REFERENCE_ALPHABET.contains(&b)), "{r}");
        }
        assert_ne!(reference_from(1), reference_from(2));
    }
}
