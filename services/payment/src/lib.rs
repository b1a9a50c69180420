//! Payment: charges and refunds, at most one of each per booking.
//!
//! The amount charged is the one in `payment.collect`, which the orchestrator took
//! from the catalog's `flight.seat-reserved` (the flight's ticket price), never from
//! the client. A booking's row in `payment.payments` is claimed before the provider
//! is called, so a duplicate collect, even concurrent and under another message id,
//! answers the first outcome and never charges twice.

pub mod provider;

use std::sync::Arc;

use airline_contracts::messages::{
    CollectPayment, PaymentCollected, PaymentDeclined, PaymentRefunded, RefundPayment,
};
use airline_contracts::topology::{COLLECT_PAYMENT, REFUND_PAYMENT};
use airline_contracts::{FailureReason, Message};
use airline_runtime::{Config, Consumer, Handler, HandlerError, Incoming, Service, async_trait};
use provider::{ChargeRequest, PaymentProvider, ProviderError, SimulatedProvider};
use sqlx::migrate::Migrator;
use sqlx::{PgConnection, Row};

/// The payment schema's migrations.
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// The payment service: schema `payment`, charges and refunds.
pub static SERVICE: Service = Service {
    name: "payment",
    migrations: &MIGRATIONS,
    reads: &[],
    // One provider for collects and refunds: it keeps each token's failures.
    consumers: &[Consumer {
        queues: &[&COLLECT_PAYMENT, &REFUND_PAYMENT],
        handler: |config, _| Ok(Arc::new(Payments::simulated(config))),
    }],
    jobs: &[],
    gauges: &[],
};

impl Payments {
    /// Payments against the simulated provider, as configured.
    #[must_use]
    pub fn simulated(c: &Config) -> Self {
        // tok_timeout answers after the saga has given up waiting, and well before the
        // refund that follows runs out of time itself.
        let timeout_delay = c.saga.payment_deadline.mul_f64(1.5);
        Self {
            provider: Arc::new(SimulatedProvider::new(
                c.payment.latency,
                c.payment.failure_rate,
                timeout_delay,
            )),
            fail_collect: c.fails(airline_runtime::config::FaultStep::CollectPayment),
            fail_refund: c.fails(airline_runtime::config::FaultStep::RefundPayment),
        }
    }
}

/// Collects and refunds.
#[derive(Debug, Clone)]
pub struct Payments {
    /// The card processor.
    pub provider: Arc<dyn PaymentProvider>,
    /// Fault injection: every collect fails as `PAYMENT_FAILED`.
    pub fail_collect: bool,
    /// Fault injection: every refund fails transiently.
    pub fail_refund: bool,
}

#[async_trait]
impl Handler for Payments {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        msg: &Incoming,
    ) -> Result<Vec<Message>, HandlerError> {
        match &msg.message {
            Message::CollectPayment(cmd) => {
                self.collect(tx, cmd, msg.attempt).await.map(|m| vec![m])
            }
            Message::RefundPayment(cmd) => self.refund(tx, cmd).await.map(|m| vec![m]),
            _ => Err(HandlerError::Rejected(
                "expected payment.collect or payment.refund".into(),
            )),
        }
    }

    /// Each collect and refund calls the provider: never several in one transaction.
    fn batches(&self) -> bool {
        false
    }
}

impl Payments {
    async fn collect(
        &self,
        tx: &mut PgConnection,
        cmd: &CollectPayment,
        attempt: u32,
    ) -> Result<Message, HandlerError> {
        if cmd.amount <= 0 {
            return Err(HandlerError::Rejected(format!(
                "amount {} is not positive",
                cmd.amount
            )));
        }
        let claimed = sqlx::query(
            "INSERT INTO payment.payments (booking_id, customer_id, status, amount, currency)
             VALUES ($1, $2, 'pending', $3, $4) ON CONFLICT (booking_id) DO NOTHING",
        )
        .bind(cmd.booking_id)
        .bind(&cmd.customer_id)
        .bind(cmd.amount)
        .bind(&cmd.currency)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !claimed {
            return self.answer_again(tx, cmd).await;
        }
        let outcome = if self.fail_collect {
            Err(("processing_error".to_owned(), FailureReason::PaymentFailed))
        } else {
            let request = ChargeRequest {
                booking_id: cmd.booking_id,
                token: &cmd.payment_token,
                amount: cmd.amount,
                currency: &cmd.currency,
            };
            match self.provider.charge(&request).await {
                Ok(charge) => Ok(charge),
                Err(ProviderError::Declined { code }) => {
                    Err((code, FailureReason::PaymentDeclined))
                }
                // Retried on the broker; the claimed row rolls back with the rest.
                Err(e @ ProviderError::Unavailable(_)) => {
                    return Err(HandlerError::Transient(e.into()));
                }
            }
        };
        match outcome {
            Ok(charge) => {
                sqlx::query(
                    "UPDATE payment.payments SET status = 'captured', charge_id = $2, receipt_url = $3,
                            updated_at = now() WHERE booking_id = $1",
                )
                .bind(cmd.booking_id)
                .bind(&charge.charge_id)
                .bind(&charge.receipt_url)
                .execute(&mut *tx)
                .await?;
                Ok(collected(
                    cmd,
                    charge.charge_id,
                    charge.receipt_url,
                    attempt,
                ))
            }
            Err((code, reason)) => {
                sqlx::query(
                    "UPDATE payment.payments SET status = 'declined', decline_code = $2, failure = $3,
                            updated_at = now() WHERE booking_id = $1",
                )
                .bind(cmd.booking_id)
                .bind(&code)
                .bind(reason.as_str())
                .execute(&mut *tx)
                .await?;
                Ok(declined(cmd, code, reason))
            }
        }
    }

    /// A repeated collect: the first outcome again, and no second charge.
    async fn answer_again(
        &self,
        tx: &mut PgConnection,
        cmd: &CollectPayment,
    ) -> Result<Message, HandlerError> {
        let row = sqlx::query(
            "SELECT status, charge_id, receipt_url, decline_code, failure
               FROM payment.payments WHERE booking_id = $1",
        )
        .bind(cmd.booking_id)
        .fetch_one(&mut *tx)
        .await?;
        let status: String = row.try_get("status")?;
        match status.as_str() {
            "captured" | "refunded" => Ok(collected(
                cmd,
                row.try_get::<Option<String>, _>("charge_id")?
                    .unwrap_or_default(),
                row.try_get::<Option<String>, _>("receipt_url")?
                    .unwrap_or_default(),
                1,
            )),
            // The booking was cancelled before any charge: never charge it now.
            "cancelled" => Ok(declined(
                cmd,
                "cancelled".into(),
                FailureReason::PaymentFailed,
            )),
            "declined" => {
                let reason = row
                    .try_get::<Option<String>, _>("failure")?
                    .as_deref()
                    .and_then(FailureReason::parse)
                    .unwrap_or(FailureReason::PaymentDeclined);
                let code = row
                    .try_get::<Option<String>, _>("decline_code")?
                    .unwrap_or_default();
                Ok(declined(cmd, code, reason))
            }
            other => Err(HandlerError::Unexpected(anyhow::anyhow!(
                "payment of booking {} is {other}",
                cmd.booking_id
            ))),
        }
    }

    async fn refund(
        &self,
        tx: &mut PgConnection,
        cmd: &RefundPayment,
    ) -> Result<Message, HandlerError> {
        if self.fail_refund {
            return Err(HandlerError::Transient(anyhow::anyhow!(
                "refund-payment fault injected"
            )));
        }
        let claimed = sqlx::query(
            "INSERT INTO payment.refunds (booking_id, amount) VALUES ($1, 0) ON CONFLICT (booking_id) DO NOTHING",
        )
        .bind(cmd.booking_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !claimed {
            let row =
                sqlx::query("SELECT refund_id, amount FROM payment.refunds WHERE booking_id = $1")
                    .bind(cmd.booking_id)
                    .fetch_one(&mut *tx)
                    .await?;
            return Ok(Message::PaymentRefunded(PaymentRefunded {
                booking_id: cmd.booking_id,
                refund_id: row.try_get("refund_id")?,
                amount: row.try_get("amount")?,
            }));
        }
        // Claim the booking's payment row too: a collect in flight holds it, so this
        // waits for its outcome; with no collect yet, it leaves a 'cancelled'
        // tombstone that stops a later collect from charging.
        sqlx::query(
            "INSERT INTO payment.payments (booking_id, status, amount) VALUES ($1, 'cancelled', 0)
             ON CONFLICT (booking_id) DO NOTHING",
        )
        .bind(cmd.booking_id)
        .execute(&mut *tx)
        .await?;
        let payment = sqlx::query(
            "SELECT charge_id, amount FROM payment.payments
              WHERE booking_id = $1 AND status = 'captured' FOR UPDATE",
        )
        .bind(cmd.booking_id)
        .fetch_optional(&mut *tx)
        .await?;
        let (refund_id, charge_id, amount) = match payment {
            None => (None, None, 0),
            Some(row) => {
                let charge_id: String = row.try_get("charge_id")?;
                let amount: i64 = row.try_get("amount")?;
                let refund_id = self
                    .provider
                    .refund(&charge_id, amount)
                    .await
                    .map_err(|e| HandlerError::Transient(e.into()))?;
                sqlx::query(
                    "UPDATE payment.payments SET status = 'refunded', updated_at = now() WHERE booking_id = $1",
                )
                .bind(cmd.booking_id)
                .execute(&mut *tx)
                .await?;
                (Some(refund_id), Some(charge_id), amount)
            }
        };
        sqlx::query("UPDATE payment.refunds SET refund_id = $2, charge_id = $3, amount = $4 WHERE booking_id = $1")
            .bind(cmd.booking_id)
            .bind(&refund_id)
            .bind(&charge_id)
            .bind(amount)
            .execute(&mut *tx)
            .await?;
        Ok(Message::PaymentRefunded(PaymentRefunded {
            booking_id: cmd.booking_id,
            refund_id,
            amount,
        }))
    }
}

fn collected(
    cmd: &CollectPayment,
    charge_id: String,
    receipt_url: String,
    attempts: u32,
) -> Message {
    Message::PaymentCollected(PaymentCollected {
        booking_id: cmd.booking_id,
        charge_id,
        amount: cmd.amount,
        currency: cmd.currency.clone(),
        receipt_url,
        attempts,
    })
}

fn declined(cmd: &CollectPayment, decline_code: String, reason: FailureReason) -> Message {
    Message::PaymentDeclined(PaymentDeclined {
        booking_id: cmd.booking_id,
        decline_code,
        reason,
    })
}
