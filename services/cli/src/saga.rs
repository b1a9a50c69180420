//! `airline saga show` and `airline saga list`: any booking's saga, for operators.

use airline_booking::saga::State;
use serde::Serialize;
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// Everything about one saga.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SagaDetail {
    pub booking_id: Uuid,
    pub customer_id: String,
    pub outbound_flight_id: Uuid,
    pub state: String,
    pub version: i32,
    pub failure_reason: Option<String>,
    pub booking_reference: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub deadline_at: Option<time::OffsetDateTime>,
    pub steps: Vec<Step>,
    /// The seat: `reserved`, `released`, `refused`, or none.
    pub seat: Option<String>,
    /// The charge: status, amount, charge id.
    pub charge: Option<Charge>,
    /// The refunded amount, if a refund was made.
    pub refunded: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub version: i32,
    pub from_state: Option<String>,
    pub to_state: String,
    pub trigger: String,
    pub trigger_message_id: Option<String>,
    pub attempts: i32,
    pub note: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: time::OffsetDateTime,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Charge {
    pub status: String,
    pub amount: i64,
    pub charge_id: Option<String>,
}

/// One saga, or `None` when no booking has this id.
///
/// # Errors
/// Database errors.
pub async fn show(pool: &PgPool, id: Uuid) -> anyhow::Result<Option<SagaDetail>> {
    let Some(b) = sqlx::query(
        "SELECT id, customer_id, outbound_flight_id, state, version, failure_reason, booking_reference, deadline_at
           FROM booking.bookings WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let steps = sqlx::query(
        "SELECT version, from_state, to_state, trigger_type, trigger_message_id, step_attempts, note, at
           FROM booking.saga_history WHERE booking_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        Ok(Step {
            version: r.try_get("version")?,
            from_state: r.try_get("from_state")?,
            to_state: r.try_get("to_state")?,
            trigger: r.try_get("trigger_type")?,
            trigger_message_id: r.try_get("trigger_message_id")?,
            attempts: r.try_get("step_attempts")?,
            note: r.try_get("note")?,
            at: r.try_get("at")?,
        })
    })
    .collect::<sqlx::Result<Vec<_>>>()?;
    let seat: Option<String> =
        sqlx::query_scalar("SELECT status FROM catalog.seat_reservations WHERE booking_id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    let charge =
        sqlx::query("SELECT status, amount, charge_id FROM payment.payments WHERE booking_id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?
            .map(|r| -> sqlx::Result<Charge> {
                Ok(Charge {
                    status: r.try_get("status")?,
                    amount: r.try_get("amount")?,
                    charge_id: r.try_get("charge_id")?,
                })
            })
            .transpose()?;
    let refunded: Option<i64> =
        sqlx::query_scalar("SELECT amount FROM payment.refunds WHERE booking_id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    Ok(Some(SagaDetail {
        booking_id: b.try_get("id")?,
        customer_id: b.try_get("customer_id")?,
        outbound_flight_id: b.try_get("outbound_flight_id")?,
        state: b.try_get("state")?,
        version: b.try_get("version")?,
        failure_reason: b.try_get("failure_reason")?,
        booking_reference: b.try_get("booking_reference")?,
        deadline_at: b.try_get("deadline_at")?,
        steps,
        seat,
        charge,
        refunded,
    }))
}

/// The saga for a person.
#[must_use]
pub fn render(s: &SagaDetail) -> String {
    let mut out = format!(
        "booking {}  customer {}  flight {}\nstate {} (version {}){}{}\n",
        s.booking_id,
        s.customer_id,
        s.outbound_flight_id,
        s.state,
        s.version,
        s.failure_reason
            .as_ref()
            .map(|r| format!("  reason {r}"))
            .unwrap_or_default(),
        s.booking_reference
            .as_ref()
            .map(|r| format!("  reference {r}"))
            .unwrap_or_default(),
    );
    out.push_str(&format!(
        "seat {}  charge {}  refund {}\n",
        s.seat.as_deref().unwrap_or("none"),
        s.charge
            .as_ref()
            .map(|c| format!(
                "{} {} ({})",
                c.status,
                c.amount,
                c.charge_id.as_deref().unwrap_or("-")
            ))
            .unwrap_or_else(|| "none".into()),
        s.refunded.map_or("none".into(), |r| r.to_string()),
    ));
    for step in &s.steps {
        out.push_str(&format!(
            "  v{:<2} {}  {:>18} -> {:<18} {:<26} {}\n",
            step.version,
            step.at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            step.from_state.as_deref().unwrap_or("(start)"),
            step.to_state,
            step.trigger,
            step.note
        ));
    }
    out
}

/// One line of `saga list`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SagaLine {
    pub booking_id: Uuid,
    pub state: String,
    pub failure_reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: time::OffsetDateTime,
}

/// A saga state as the CLI takes it (`--state`): every state of
/// [`State::ALL`], by its stored name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SagaState(pub State);

const SAGA_STATES: [SagaState; State::ALL.len()] = {
    let mut out = [SagaState(State::ALL[0]); State::ALL.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = SagaState(State::ALL[i]);
        i += 1;
    }
    out
};

impl clap::ValueEnum for SagaState {
    fn value_variants<'a>() -> &'a [Self] {
        &SAGA_STATES
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.0.as_str()))
    }
}

/// Sagas in `state` (any when `None`) not moved for `older_than_secs`, oldest first.
///
/// # Errors
/// Database errors.
pub async fn list(
    pool: &PgPool,
    state: Option<&str>,
    older_than_secs: f64,
    limit: i64,
) -> anyhow::Result<Vec<SagaLine>> {
    let rows = sqlx::query(
        "SELECT id, state, failure_reason, updated_at FROM booking.bookings
          WHERE ($1::text IS NULL OR state = $1)
            AND updated_at <= now() - make_interval(secs => $2)
          ORDER BY updated_at LIMIT $3",
    )
    .bind(state)
    .bind(older_than_secs)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            Ok(SagaLine {
                booking_id: r.try_get("id")?,
                state: r.try_get("state")?,
                failure_reason: r.try_get("failure_reason")?,
                updated_at: r.try_get("updated_at")?,
            })
        })
        .collect::<sqlx::Result<Vec<_>>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum as _;

    #[test]
    fn every_saga_state_is_offered_by_its_stored_name() {
        assert_eq!(SagaState::value_variants().len(), State::ALL.len());
        for state in State::ALL {
            let parsed = SagaState::from_str(state.as_str(), false);
            assert_eq!(parsed, Ok(SagaState(state)));
        }
        assert!(SagaState::from_str("STUCK", false).is_err());
    }
}
