//! The payment provider adapter, and a simulated provider that behaves like a card
//! processor's test mode.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use airline_contracts::PaymentToken;
use airline_runtime::async_trait;
use uuid::Uuid;

/// A charge to make: the booking id is the idempotency key, so asking twice never
/// charges twice at the provider either.
#[derive(Debug, Clone)]
pub struct ChargeRequest<'a> {
    pub booking_id: Uuid,
    pub token: &'a PaymentToken,
    pub amount: i64,
    pub currency: &'a str,
}

/// A captured charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub charge_id: String,
    pub receipt_url: String,
}

/// Why a provider call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The card was refused: an outcome, not a fault. `code` is the provider's.
    #[error("card declined: {code}")]
    Declined { code: String },
    /// The provider could not be reached or failed; trying again may succeed.
    #[error("payment provider unavailable: {0}")]
    Unavailable(String),
}

/// A card processor.
#[async_trait]
pub trait PaymentProvider: Send + Sync + std::fmt::Debug + 'static {
    /// Charges (authorises and captures) `request.amount`.
    ///
    /// # Errors
    /// [`ProviderError::Declined`] for a refused card, [`ProviderError::Unavailable`]
    /// when the provider failed.
    async fn charge(&self, request: &ChargeRequest<'_>) -> Result<Charge, ProviderError>;

    /// Refunds a captured charge in full; returns the refund id.
    ///
    /// # Errors
    /// [`ProviderError::Unavailable`] when the provider failed.
    async fn refund(&self, charge_id: &str, amount: i64) -> Result<String, ProviderError>;
}

/// Test-mode card processor: `tok_visa` and `tok_mastercard` are approved,
/// `tok_chargeDeclined` is declined (`card_declined`),
/// `tok_chargeDeclinedInsufficientFunds` is declined (`insufficient_funds`), and any
/// other token is refused as `invalid_token`.
///
/// Fault injection, off by default: every call waits `latency` and fails
/// transiently with probability `failure_rate`; `tok_flaky` fails transiently twice
/// per booking, then is approved; `tok_timeout` is approved only after
/// `timeout_delay` (set it past the saga's payment deadline).
#[derive(Debug, Default)]
pub struct SimulatedProvider {
    latency: Duration,
    failure_rate: f64,
    timeout_delay: Duration,
    flaky_calls: Mutex<HashMap<Uuid, u32>>,
}

impl SimulatedProvider {
    /// A provider with these faults.
    #[must_use]
    pub fn new(latency: Duration, failure_rate: f64, timeout_delay: Duration) -> Self {
        Self {
            latency,
            failure_rate,
            timeout_delay,
            flaky_calls: Mutex::default(),
        }
    }

    async fn faults(&self) -> Result<(), ProviderError> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        if self.failure_rate > 0.0 && fastrand::f64() < self.failure_rate {
            return Err(ProviderError::Unavailable(
                "simulated transient failure".into(),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl PaymentProvider for SimulatedProvider {
    async fn charge(&self, request: &ChargeRequest<'_>) -> Result<Charge, ProviderError> {
        self.faults().await?;
        let declined = |code: &str| {
            Err(ProviderError::Declined {
                code: code.to_owned(),
            })
        };
        match request.token.expose() {
            "tok_visa" | "tok_mastercard" => Ok(approved(request)),
            "tok_chargeDeclined" => declined("card_declined"),
            "tok_chargeDeclinedInsufficientFunds" => declined("insufficient_funds"),
            "tok_flaky" => {
                let calls = {
                    let mut calls = self
                        .flaky_calls
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    let n = calls.entry(request.booking_id).or_insert(0);
                    *n += 1;
                    *n
                };
                if calls <= 2 {
                    return Err(ProviderError::Unavailable(format!(
                        "tok_flaky failed call {calls} of 2"
                    )));
                }
                Ok(approved(request))
            }
            "tok_timeout" => {
                tokio::time::sleep(self.timeout_delay).await;
                Ok(approved(request))
            }
            _ => declined("invalid_token"),
        }
    }

    async fn refund(&self, charge_id: &str, _amount: i64) -> Result<String, ProviderError> {
        self.faults().await?;
        Ok(format!("re_{}", charge_id.trim_start_matches("ch_")))
    }
}

fn approved(request: &ChargeRequest<'_>) -> Charge {
    // Deterministic per booking: the provider's idempotency key.
    let charge_id = format!("ch_{}", request.booking_id.simple());
    Charge {
        receipt_url: format!("https://payments.example/receipts/{charge_id}"),
        charge_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn charge(token: &str) -> Result<Charge, ProviderError> {
        let token = PaymentToken::parse(token).expect("valid token");
        let request = ChargeRequest {
            booking_id: Uuid::nil(),
            token: &token,
            amount: 120,
            currency: "EUR",
        };
        SimulatedProvider::default().charge(&request).await
    }

    #[tokio::test]
    async fn test_mode_tokens_behave_as_documented() {
        assert!(charge("tok_visa").await.is_ok());
        assert!(charge("tok_mastercard").await.is_ok());
        let code = |r: Result<Charge, ProviderError>| match r {
            Err(ProviderError::Declined { code }) => code,
            other => panic!("expected a decline, got {other:?}"),
        };
        assert_eq!(code(charge("tok_chargeDeclined").await), "card_declined");
        assert_eq!(
            code(charge("tok_chargeDeclinedInsufficientFunds").await),
            "insufficient_funds"
        );
        assert_eq!(code(charge("tok_unknown").await), "invalid_token");
    }

    #[tokio::test]
    async fn tok_flaky_fails_twice_then_approves() {
        let provider = SimulatedProvider::default();
        let token = PaymentToken::parse("tok_flaky").expect("valid token");
        let request = ChargeRequest {
            booking_id: Uuid::now_v7(),
            token: &token,
            amount: 120,
            currency: "EUR",
        };
        assert!(matches!(
            provider.charge(&request).await,
            Err(ProviderError::Unavailable(_))
        ));
        assert!(matches!(
            provider.charge(&request).await,
            Err(ProviderError::Unavailable(_))
        ));
        assert!(provider.charge(&request).await.is_ok());
    }

    #[tokio::test]
    async fn a_failure_rate_of_one_always_fails() {
        let provider =
            SimulatedProvider::new(std::time::Duration::ZERO, 1.0, std::time::Duration::ZERO);
        let token = PaymentToken::parse("tok_visa").expect("valid token");
        let request = ChargeRequest {
            booking_id: Uuid::nil(),
            token: &token,
            amount: 120,
            currency: "EUR",
        };
        assert!(matches!(
            provider.charge(&request).await,
            Err(ProviderError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn the_same_booking_gets_the_same_charge() {
        let a = charge("tok_visa").await.expect("approved");
        let b = charge("tok_visa").await.expect("approved");
        assert_eq!(a, b);
    }
}
