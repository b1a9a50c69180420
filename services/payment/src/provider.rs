//! The payment provider adapter, and a simulated provider that behaves like a card
//! processor's test mode.

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
#[derive(Debug, Clone, Copy, Default)]
pub struct SimulatedProvider;

#[async_trait]
impl PaymentProvider for SimulatedProvider {
    async fn charge(&self, request: &ChargeRequest<'_>) -> Result<Charge, ProviderError> {
        let declined = |code: &str| {
            Err(ProviderError::Declined {
                code: code.to_owned(),
            })
        };
        match request.token.expose() {
            "tok_visa" | "tok_mastercard" => {
                // Deterministic per booking: the provider's idempotency key.
                let charge_id = format!("ch_{}", request.booking_id.simple());
                Ok(Charge {
                    receipt_url: format!("https://payments.example/receipts/{charge_id}"),
                    charge_id,
                })
            }
            "tok_chargeDeclined" => declined("card_declined"),
            "tok_chargeDeclinedInsufficientFunds" => declined("insufficient_funds"),
            _ => declined("invalid_token"),
        }
    }

    async fn refund(&self, charge_id: &str, _amount: i64) -> Result<String, ProviderError> {
        Ok(format!("re_{}", charge_id.trim_start_matches("ch_")))
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
        SimulatedProvider.charge(&request).await
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
    async fn the_same_booking_gets_the_same_charge() {
        let a = charge("tok_visa").await.expect("approved");
        let b = charge("tok_visa").await.expect("approved");
        assert_eq!(a, b);
    }
}
