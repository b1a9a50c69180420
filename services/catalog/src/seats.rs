//! The saga's seat steps.
//!
//! Each booking gets at most one row in `catalog.seat_reservations`. The row is
//! inserted first (`ON CONFLICT DO NOTHING`): a second request for the same booking,
//! even under another message id and at the same moment, waits for the first and then
//! answers what the first decided, so one booking never takes two seats and a
//! release never gives back a seat that was not taken.

use airline_contracts::messages::{
    ReleaseSeat, ReserveSeat, SeatReleased, SeatReserved, SeatUnavailable,
};
use airline_contracts::{Message, SeatUnavailableReason};
use airline_runtime::{Handler, HandlerError, Incoming, async_trait};
use sqlx::{PgConnection, Row};

/// Reserves one seat: `seats_left - 1`, only if it is above zero.
#[derive(Debug, Clone, Copy)]
pub struct ReserveSeatHandler {
    /// Fault injection: refuse every reservation as `RESERVATION_FAILED`.
    pub fail: bool,
}

#[async_trait]
impl Handler for ReserveSeatHandler {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        msg: &Incoming,
    ) -> Result<Vec<Message>, HandlerError> {
        let Message::ReserveSeat(cmd) = &msg.message else {
            return Err(HandlerError::Rejected(
                "expected flight.reserve-seat".into(),
            ));
        };
        reserve(tx, cmd, self.fail).await
    }

    /// The flight's row is the hot one: batches take flights in one order.
    fn lock_key(&self, msg: &Incoming) -> String {
        flight_key(msg)
    }
}

fn flight_key(msg: &Incoming) -> String {
    match &msg.message {
        Message::ReserveSeat(cmd) => cmd.flight_id.to_string(),
        Message::ReleaseSeat(cmd) => cmd.flight_id.to_string(),
        other => other.booking_id().to_string(),
    }
}

async fn reserve(
    tx: &mut PgConnection,
    cmd: &ReserveSeat,
    fail: bool,
) -> Result<Vec<Message>, HandlerError> {
    let claimed = sqlx::query(
        "INSERT INTO catalog.seat_reservations (booking_id, flight_id, status)
         VALUES ($1, $2, 'pending') ON CONFLICT (booking_id) DO NOTHING",
    )
    .bind(cmd.booking_id)
    .bind(cmd.flight_id)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !claimed {
        return answer_again(tx, cmd).await;
    }
    let outcome = if fail {
        Err(SeatUnavailableReason::ReservationFailed)
    } else {
        let taken = sqlx::query(
            "UPDATE catalog.flights SET seats_left = seats_left - 1
              WHERE id = $1 AND seats_left > 0
          RETURNING ticket_price, ticket_currency",
        )
        .bind(cmd.flight_id)
        .fetch_optional(&mut *tx)
        .await?;
        match taken {
            Some(row) => Ok((row.try_get::<i64, _>(0)?, row.try_get::<String, _>(1)?)),
            None => {
                let exists = sqlx::query("SELECT 1 FROM catalog.flights WHERE id = $1")
                    .bind(cmd.flight_id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_some();
                Err(if exists {
                    SeatUnavailableReason::SoldOut
                } else {
                    SeatUnavailableReason::FlightNotFound
                })
            }
        }
    };
    let (status, refusal) = match &outcome {
        Ok(_) => ("reserved", None),
        Err(reason) => ("refused", Some(refusal_code(*reason))),
    };
    sqlx::query(
        "UPDATE catalog.seat_reservations SET status = $2, refusal = $3 WHERE booking_id = $1",
    )
    .bind(cmd.booking_id)
    .bind(status)
    .bind(refusal)
    .execute(&mut *tx)
    .await?;
    Ok(vec![reply(cmd, outcome)])
}

fn refusal_code(reason: SeatUnavailableReason) -> &'static str {
    match reason {
        SeatUnavailableReason::SoldOut => "SOLD_OUT",
        SeatUnavailableReason::FlightNotFound => "FLIGHT_NOT_FOUND",
        SeatUnavailableReason::ReservationFailed => "RESERVATION_FAILED",
    }
}

fn reply(cmd: &ReserveSeat, outcome: Result<(i64, String), SeatUnavailableReason>) -> Message {
    match outcome {
        Ok((ticket_price, ticket_currency)) => Message::SeatReserved(SeatReserved {
            booking_id: cmd.booking_id,
            flight_id: cmd.flight_id,
            ticket_price,
            ticket_currency,
        }),
        Err(reason) => Message::SeatUnavailable(SeatUnavailable {
            booking_id: cmd.booking_id,
            flight_id: cmd.flight_id,
            reason,
        }),
    }
}

/// A repeated reservation for a booking: answer what was decided the first time.
async fn answer_again(
    tx: &mut PgConnection,
    cmd: &ReserveSeat,
) -> Result<Vec<Message>, HandlerError> {
    let row = sqlx::query(
        "SELECT r.status, r.refusal, r.flight_id, f.ticket_price, f.ticket_currency
           FROM catalog.seat_reservations r
           LEFT JOIN catalog.flights f ON f.id = r.flight_id
          WHERE r.booking_id = $1",
    )
    .bind(cmd.booking_id)
    .fetch_one(&mut *tx)
    .await?;
    let status: String = row.try_get("status")?;
    let flight_id: uuid::Uuid = row.try_get("flight_id")?;
    if flight_id != cmd.flight_id {
        return Err(HandlerError::Rejected(format!(
            "booking {} already asked for a seat on flight {flight_id}",
            cmd.booking_id
        )));
    }
    match status.as_str() {
        "reserved" => Ok(vec![reply(
            cmd,
            Ok((
                row.try_get("ticket_price")?,
                row.try_get("ticket_currency")?,
            )),
        )]),
        "refused" => {
            let reason = match row.try_get::<Option<String>, _>("refusal")?.as_deref() {
                Some("FLIGHT_NOT_FOUND") => SeatUnavailableReason::FlightNotFound,
                Some("RESERVATION_FAILED") => SeatUnavailableReason::ReservationFailed,
                _ => SeatUnavailableReason::SoldOut,
            };
            Ok(vec![reply(cmd, Err(reason))])
        }
        // Released (or released before any reservation came, after the saga gave
        // up waiting): a reservation arriving now must not take a seat.
        "released" => Ok(vec![reply(
            cmd,
            Err(SeatUnavailableReason::ReservationFailed),
        )]),
        other => Err(HandlerError::Unexpected(anyhow::anyhow!(
            "seat reservation of booking {} is {other}",
            cmd.booking_id
        ))),
    }
}

/// Releases the booking's seat, once: `seats_left + 1` only if the booking held one.
#[derive(Debug, Clone, Copy)]
pub struct ReleaseSeatHandler {
    /// Fault injection: every release fails transiently.
    pub fail: bool,
}

#[async_trait]
impl Handler for ReleaseSeatHandler {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        msg: &Incoming,
    ) -> Result<Vec<Message>, HandlerError> {
        let Message::ReleaseSeat(cmd) = &msg.message else {
            return Err(HandlerError::Rejected(
                "expected flight.release-seat".into(),
            ));
        };
        if self.fail {
            return Err(HandlerError::Transient(anyhow::anyhow!(
                "release-seat fault injected"
            )));
        }
        Ok(vec![release(tx, cmd).await?])
    }

    fn lock_key(&self, msg: &Incoming) -> String {
        flight_key(msg)
    }
}

async fn release(tx: &mut PgConnection, cmd: &ReleaseSeat) -> sqlx::Result<Message> {
    // A release that comes before any reservation (the saga timed out waiting for
    // it) leaves a tombstone, so that the reservation, if it comes later, is refused.
    let tombstone = sqlx::query(
        "INSERT INTO catalog.seat_reservations (booking_id, flight_id, status, released_at)
         VALUES ($1, $2, 'released', now()) ON CONFLICT (booking_id) DO NOTHING",
    )
    .bind(cmd.booking_id)
    .bind(cmd.flight_id)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if tombstone {
        return Ok(Message::SeatReleased(SeatReleased {
            booking_id: cmd.booking_id,
            flight_id: cmd.flight_id,
            released: false,
        }));
    }
    let held = sqlx::query(
        "UPDATE catalog.seat_reservations SET status = 'released', released_at = now()
          WHERE booking_id = $1 AND status = 'reserved'
      RETURNING flight_id",
    )
    .bind(cmd.booking_id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(row) = &held {
        let flight_id: uuid::Uuid = row.try_get(0)?;
        sqlx::query("UPDATE catalog.flights SET seats_left = seats_left + 1 WHERE id = $1")
            .bind(flight_id)
            .execute(&mut *tx)
            .await?;
    }
    Ok(Message::SeatReleased(SeatReleased {
        booking_id: cmd.booking_id,
        flight_id: cmd.flight_id,
        released: held.is_some(),
    }))
}
