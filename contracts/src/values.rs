use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

/// A card token from the payment provider (`tok_...`), the only card data this system
/// ever holds. It is a secret: `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(transparent)]
#[schemars(
    description = "Payment provider card token: `tok_` followed by 1 to 60 ASCII letters, digits or underscores.",
    extend("pattern" = "^tok_[A-Za-z0-9_]{1,60}$")
)]
pub struct PaymentToken(String);

/// Why a string is not a [`PaymentToken`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentTokenError {
    /// It does not start with `tok_`.
    MissingPrefix,
    /// Nothing follows the prefix, or more than 60 characters do.
    BadLength,
    /// A character other than an ASCII letter, digit or underscore.
    BadCharacter,
}

impl fmt::Display for PaymentTokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::MissingPrefix => "must start with `tok_`",
            Self::BadLength => "must have 1 to 60 characters after `tok_`",
            Self::BadCharacter => "may hold only ASCII letters, digits and `_`",
        })
    }
}

impl std::error::Error for PaymentTokenError {}

impl PaymentToken {
    /// Parses a token, refusing anything that is not `tok_[A-Za-z0-9_]{1,60}`.
    ///
    /// # Errors
    /// [`PaymentTokenError`] says which rule the input broke.
    pub fn parse(raw: &str) -> Result<Self, PaymentTokenError> {
        let rest = raw
            .strip_prefix("tok_")
            .ok_or(PaymentTokenError::MissingPrefix)?;
        if rest.is_empty() || rest.len() > 60 {
            return Err(PaymentTokenError::BadLength);
        }
        if !rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(PaymentTokenError::BadCharacter);
        }
        Ok(Self(raw.to_owned()))
    }

    /// The token itself, for the payment provider and nothing else.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PaymentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PaymentToken(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for PaymentToken {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(|e| serde::de::Error::custom(format!("paymentToken {e}")))
    }
}

/// Why the catalog could not reserve a seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SeatUnavailableReason {
    /// The flight has no seat left.
    SoldOut,
    /// No flight has this id.
    FlightNotFound,
    /// The reservation step failed (fault injected with `AIRLINE_FAULT_STEPS`).
    ReservationFailed,
}

/// Why a booking ended FAILED: a stable code clients can switch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailureReason {
    /// The flight had no seat left.
    SoldOut,
    /// The flight does not exist.
    FlightNotFound,
    /// The seat could not be reserved for a technical reason.
    SeatReservationFailed,
    /// The booking could not be reserved.
    BookingReservationFailed,
    /// The card was declined.
    PaymentDeclined,
    /// The payment could not be collected for a technical reason.
    PaymentFailed,
    /// The booking could not be confirmed after payment; the payment was refunded.
    ConfirmationFailed,
    /// No answer to the seat reservation before its deadline; compensated.
    SeatReservationTimedOut,
    /// No answer from payment before its deadline; any charge is refunded.
    PaymentTimedOut,
    /// A compensation step did not finish before its deadline: the saga is parked
    /// in the booking DLQ for an operator.
    CompensationFailed,
}

impl FailureReason {
    /// The code as it appears in JSON and in the database.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SoldOut => "SOLD_OUT",
            Self::FlightNotFound => "FLIGHT_NOT_FOUND",
            Self::SeatReservationFailed => "SEAT_RESERVATION_FAILED",
            Self::BookingReservationFailed => "BOOKING_RESERVATION_FAILED",
            Self::PaymentDeclined => "PAYMENT_DECLINED",
            Self::PaymentFailed => "PAYMENT_FAILED",
            Self::ConfirmationFailed => "CONFIRMATION_FAILED",
            Self::SeatReservationTimedOut => "SEAT_RESERVATION_TIMED_OUT",
            Self::PaymentTimedOut => "PAYMENT_TIMED_OUT",
            Self::CompensationFailed => "COMPENSATION_FAILED",
        }
    }

    /// Parses a code written by [`FailureReason::as_str`].
    #[must_use]
    pub fn parse(code: &str) -> Option<Self> {
        [
            Self::SoldOut,
            Self::FlightNotFound,
            Self::SeatReservationFailed,
            Self::BookingReservationFailed,
            Self::PaymentDeclined,
            Self::PaymentFailed,
            Self::ConfirmationFailed,
            Self::SeatReservationTimedOut,
            Self::PaymentTimedOut,
            Self::CompensationFailed,
        ]
        .into_iter()
        .find(|r| r.as_str() == code)
    }
}

impl FailureReason {
    /// Whether this is a technical failure (as opposed to a business refusal:
    /// sold out, flight unknown, card declined).
    #[must_use]
    pub fn is_technical(self) -> bool {
        !matches!(
            self,
            Self::SoldOut | Self::FlightNotFound | Self::PaymentDeclined
        )
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payment_tokens_are_checked() {
        for good in [
            "tok_visa",
            "tok_mastercard",
            "tok_chargeDeclined",
            "tok_a_1",
        ] {
            assert!(PaymentToken::parse(good).is_ok(), "{good}");
        }
        let cases = [
            ("visa", PaymentTokenError::MissingPrefix),
            ("tok_", PaymentTokenError::BadLength),
            ("tok_visa!", PaymentTokenError::BadCharacter),
            ("tok_vi sa", PaymentTokenError::BadCharacter),
        ];
        for (bad, why) in cases {
            assert_eq!(PaymentToken::parse(bad), Err(why), "{bad}");
        }
        assert_eq!(
            PaymentToken::parse(&format!("tok_{}", "a".repeat(61))),
            Err(PaymentTokenError::BadLength)
        );
    }

    #[test]
    fn payment_tokens_never_show_in_debug() {
        let token = PaymentToken::parse("tok_visa").expect("valid");
        assert!(!format!("{token:?}").contains("visa"));
    }

    #[test]
    fn failure_reasons_round_trip() {
        for reason in [FailureReason::SoldOut, FailureReason::ConfirmationFailed] {
            assert_eq!(FailureReason::parse(reason.as_str()), Some(reason));
            let json = serde_json::to_string(&reason).expect("serialize");
            assert_eq!(json, format!("\"{}\"", reason.as_str()));
        }
    }
}
