//! Every command and event of the booking flow.
//!
//! Commands ask one service to do something and travel on the commands exchange;
//! events say that something happened and travel on the events exchange, where any
//! number of subscribers may bind. The routing key of a message is its name.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::values::{FailureReason, PaymentToken, SeatUnavailableReason};

/// Whether a message is a command (one consumer) or an event (fanned out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// Asks one service to act; published to the commands exchange.
    Command,
    /// Says what happened; published to the events exchange.
    Event,
}

/// A message's name and version, as carried in the AMQP `type` property.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageType {
    /// The name, also the routing key: `booking.requested`.
    pub name: &'static str,
    /// The contract version: bumped on any change that is not backward compatible.
    pub version: u32,
    /// Command or event.
    pub kind: MessageKind,
    /// The service that publishes it (`gateway` also stands for upstream systems).
    pub producer: &'static str,
    /// One sentence for the catalogue.
    pub summary: &'static str,
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.v{}", self.name, self.version)
    }
}

/// Why a delivery could not be decoded into a [`Message`]. Always permanent: the
/// same bytes will never decode, so such a message is dead-lettered at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The AMQP `type` property is absent.
    MissingType,
    /// The `type` property names no message of this contract.
    UnknownType(String),
    /// The message is known but not in this version.
    UnsupportedVersion {
        /// The message name.
        name: String,
        /// The version that was sent.
        version: String,
        /// The version this contract knows.
        known: u32,
    },
    /// The body is not valid JSON for the type, or a field is missing or invalid.
    InvalidBody {
        /// The type that was sent.
        message_type: String,
        /// What serde said, which names the field.
        reason: String,
    },
}

impl DecodeError {
    /// A short, stable code for the dead letter's `x-error-kind` header.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingType => "missing-type",
            Self::UnknownType(_) => "unknown-type",
            Self::UnsupportedVersion { .. } => "unsupported-version",
            Self::InvalidBody { .. } => "invalid-body",
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingType => f.write_str("the AMQP `type` property is missing"),
            Self::UnknownType(t) => write!(f, "unknown message type `{t}`"),
            Self::UnsupportedVersion {
                name,
                version,
                known,
            } => {
                write!(
                    f,
                    "message `{name}` has no version `v{version}` (this consumer knows v{known})"
                )
            }
            Self::InvalidBody {
                message_type,
                reason,
            } => write!(f, "body is not a valid `{message_type}`: {reason}"),
        }
    }
}

impl std::error::Error for DecodeError {}

macro_rules! messages {
    ($(
        $(#[doc = $doc:literal])+
        $variant:ident($payload:ident) = $name:literal v $version:literal, $kind:ident, from $producer:literal;
    )+) => {
        /// Every message of the contract, decoded.
        #[derive(Debug, Clone, PartialEq, Serialize)]
        #[serde(untagged)]
        pub enum Message {
            $( $(#[doc = $doc])+ $variant($payload), )+
        }

        impl Message {
            /// Every message type of the contract, in flow order.
            pub const TYPES: &'static [MessageType] = &[
                $( MessageType {
                    name: $name,
                    version: $version,
                    kind: MessageKind::$kind,
                    producer: $producer,
                    summary: concat!($($doc),+),
                }, )+
            ];

            /// The name, version and kind of this message.
            #[must_use]
            pub fn message_type(&self) -> MessageType {
                let name = match self { $( Self::$variant(_) => $name, )+ };
                *Self::TYPES
                    .iter()
                    .find(|t| t.name == name)
                    .unwrap_or(&Self::TYPES[0])
            }

            /// The booking this message belongs to (its correlation id).
            #[must_use]
            pub fn booking_id(&self) -> Uuid {
                match self { $( Self::$variant(m) => m.booking_id, )+ }
            }

            /// Decodes a body given the AMQP `type` property (`name.vN`).
            ///
            /// # Errors
            /// [`DecodeError`] when the type is missing, unknown or of another
            /// version, or the body does not match the type's schema.
            pub fn decode(message_type: Option<&str>, body: &[u8]) -> Result<Self, DecodeError> {
                let raw = message_type.ok_or(DecodeError::MissingType)?;
                let (name, version) = raw
                    .rsplit_once(".v")
                    .ok_or_else(|| DecodeError::UnknownType(raw.to_owned()))?;
                let invalid = |e: serde_json::Error| DecodeError::InvalidBody {
                    message_type: raw.to_owned(),
                    reason: e.to_string(),
                };
                match name {
                    $( $name => {
                        if version != stringify!($version) {
                            return Err(DecodeError::UnsupportedVersion {
                                name: name.to_owned(),
                                version: version.to_owned(),
                                known: $version,
                            });
                        }
                        serde_json::from_slice::<$payload>(body).map(Self::$variant).map_err(invalid)
                    } )+
                    _ => Err(DecodeError::UnknownType(raw.to_owned())),
                }
            }

            /// The JSON body.
            #[must_use]
            pub fn encode(&self) -> Vec<u8> {
                // Serializing these plain structs cannot fail: no maps with
                // non-string keys, no failing Serialize impls.
                serde_json::to_vec(self).unwrap_or_default()
            }

            /// The JSON Schema of every message body, by message type.
            #[must_use]
            pub fn schemas() -> Vec<(MessageType, schemars::Schema)> {
                vec![$( (
                    *Self::TYPES.iter().find(|t| t.name == $name).unwrap_or(&Self::TYPES[0]),
                    crate::schema::schema_of::<$payload>(),
                ), )+]
            }
        }

        $(
            impl From<$payload> for Message {
                fn from(m: $payload) -> Self {
                    Self::$variant(m)
                }
            }
        )+
    };
}

messages! {
    /// A client asked for a booking; starts the booking saga.
    BookingRequested(BookingRequested) = "booking.requested" v 1, Event, from "gateway";
    /// Reserve one seat on a flight for a booking (atomic, never below zero).
    ReserveSeat(ReserveSeat) = "flight.reserve-seat" v 1, Command, from "booking";
    /// A seat is held for the booking; carries the flight's ticket price.
    SeatReserved(SeatReserved) = "flight.seat-reserved" v 1, Event, from "catalog";
    /// No seat could be reserved for the booking.
    SeatUnavailable(SeatUnavailable) = "flight.seat-unavailable" v 1, Event, from "catalog";
    /// Give back the booking's seat (idempotent per booking).
    ReleaseSeat(ReleaseSeat) = "flight.release-seat" v 1, Command, from "booking";
    /// The booking's seat is free again (or was never held).
    SeatReleased(SeatReleased) = "flight.released" v 1, Event, from "catalog";
    /// Charge the booking's ticket price to its card token (once per booking).
    CollectPayment(CollectPayment) = "payment.collect" v 1, Command, from "booking";
    /// The ticket price was charged.
    PaymentCollected(PaymentCollected) = "payment.collected" v 1, Event, from "payment";
    /// The charge was refused; nothing was charged.
    PaymentDeclined(PaymentDeclined) = "payment.declined" v 1, Event, from "payment";
    /// Refund the booking's charge (once per booking).
    RefundPayment(RefundPayment) = "payment.refund" v 1, Command, from "booking";
    /// The booking's charge was refunded.
    PaymentRefunded(PaymentRefunded) = "payment.refunded" v 1, Event, from "payment";
    /// The booking is confirmed, paid, and has its booking reference.
    BookingConfirmed(BookingConfirmed) = "booking.confirmed" v 1, Event, from "booking";
    /// The booking failed; every step taken was compensated.
    BookingFailed(BookingFailed) = "booking.failed" v 1, Event, from "booking";
    /// Loyalty points were credited for a confirmed booking.
    LoyaltyAwarded(LoyaltyAwarded) = "loyalty.awarded" v 1, Event, from "loyalty";
    /// A saga that cannot finish on its own, parked in the booking DLQ for an operator.
    BookingParked(BookingParked) = "booking.parked" v 1, Event, from "booking";
    /// A client asked to cancel a confirmed booking; starts its cancellation.
    CancelBooking(CancelBooking) = "booking.cancel" v 1, Command, from "gateway";
    /// A cancellation finished: the charge refunded and the seat given back.
    BookingCancelled(BookingCancelled) = "booking.cancelled" v 1, Event, from "booking";
    /// Deliver one event to one webhook endpoint (notify's own work queue, retried
    /// with delays, dead-lettered when the endpoint keeps failing).
    DeliverWebhook(DeliverWebhook) = "webhook.deliver" v 1, Command, from "notify";
}

/// `booking.requested` v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BookingRequested {
    /// The booking id, chosen by the requester; also the saga id.
    pub booking_id: Uuid,
    /// The flight to book.
    pub outbound_flight_id: Uuid,
    /// The customer's id.
    pub customer_id: String,
    /// The card token to charge.
    pub payment_token: PaymentToken,
    /// When the client asked.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub requested_at: OffsetDateTime,
    /// The id (not the key) of the API key the gateway accepted the request under:
    /// the booking's owner, who may cancel it and whose webhooks hear about it.
    /// Absent when another system published the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_id: Option<Uuid>,
}

/// `flight.reserve-seat` v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReserveSeat {
    /// The booking that wants the seat.
    pub booking_id: Uuid,
    /// The flight.
    pub flight_id: Uuid,
}

/// `flight.seat-reserved` v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeatReserved {
    /// The booking holding the seat.
    pub booking_id: Uuid,
    /// The flight.
    pub flight_id: Uuid,
    /// The flight's ticket price in whole currency units: what payment will charge.
    pub ticket_price: i64,
    /// ISO 4217 currency code.
    pub ticket_currency: String,
}

/// `flight.seat-unavailable` v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeatUnavailable {
    /// The booking that wanted the seat.
    pub booking_id: Uuid,
    /// The flight.
    pub flight_id: Uuid,
    /// Why no seat was reserved.
    pub reason: SeatUnavailableReason,
}

/// `flight.release-seat` v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseSeat {
    /// The booking whose seat to give back.
    pub booking_id: Uuid,
    /// The flight.
    pub flight_id: Uuid,
}

/// `flight.released` v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeatReleased {
    /// The booking whose seat was given back.
    pub booking_id: Uuid,
    /// The flight.
    pub flight_id: Uuid,
    /// False when the booking held no seat (a duplicate release): nothing changed.
    pub released: bool,
}

/// `payment.collect` v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CollectPayment {
    /// The booking to charge for; at most one charge per booking.
    pub booking_id: Uuid,
    /// The paying customer.
    pub customer_id: String,
    /// The card token.
    pub payment_token: PaymentToken,
    /// The flight's ticket price, from the catalog, in whole currency units.
    pub amount: i64,
    /// ISO 4217 currency code.
    pub currency: String,
}

/// `payment.collected` v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentCollected {
    /// The booking paid for.
    pub booking_id: Uuid,
    /// The provider's charge id.
    pub charge_id: String,
    /// The amount charged.
    pub amount: i64,
    /// ISO 4217 currency code.
    pub currency: String,
    /// The provider's receipt.
    pub receipt_url: String,
    /// How many deliveries of `payment.collect` it took (1 when the first worked).
    #[serde(default = "one")]
    pub attempts: u32,
}

fn one() -> u32 {
    1
}

/// `payment.declined` v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentDeclined {
    /// The booking.
    pub booking_id: Uuid,
    /// The provider's decline code (`card_declined`, `insufficient_funds`, ...).
    pub decline_code: String,
    /// The booking failure this decline leads to.
    pub reason: FailureReason,
}

/// `payment.refund` v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefundPayment {
    /// The booking whose charge to refund.
    pub booking_id: Uuid,
}

/// `payment.refunded` v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRefunded {
    /// The booking.
    pub booking_id: Uuid,
    /// The provider's refund id; absent when there was no charge to refund.
    pub refund_id: Option<String>,
    /// The amount refunded (0 when there was no charge).
    pub amount: i64,
}

/// `booking.confirmed` v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BookingConfirmed {
    /// The booking.
    pub booking_id: Uuid,
    /// The customer.
    pub customer_id: String,
    /// The flight.
    pub outbound_flight_id: Uuid,
    /// Six URL-safe characters.
    pub booking_reference: String,
    /// The price paid.
    pub ticket_price: i64,
    /// ISO 4217 currency code.
    pub ticket_currency: String,
    /// When the booking was confirmed.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub confirmed_at: OffsetDateTime,
}

/// `booking.failed` v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BookingFailed {
    /// The booking.
    pub booking_id: Uuid,
    /// The customer.
    pub customer_id: String,
    /// The flight.
    pub outbound_flight_id: Uuid,
    /// Why it failed.
    pub reason: FailureReason,
    /// When the saga ended.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub failed_at: OffsetDateTime,
}

/// `loyalty.awarded` v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoyaltyAwarded {
    /// The confirmed booking that earned the points.
    pub booking_id: Uuid,
    /// The customer.
    pub customer_id: String,
    /// Points credited by this booking.
    pub points: i64,
    /// The customer's points after this award.
    pub total_points: i64,
    /// `bronze`, `silver` or `gold` after this award.
    pub level: String,
}

/// `booking.cancel` v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CancelBooking {
    /// The confirmed booking to cancel.
    pub booking_id: Uuid,
    /// When the client asked.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub requested_at: OffsetDateTime,
}

/// `booking.cancelled` v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BookingCancelled {
    /// The booking.
    pub booking_id: Uuid,
    /// The customer.
    pub customer_id: String,
    /// The flight.
    pub outbound_flight_id: Uuid,
    /// The booking reference it had.
    pub booking_reference: Option<String>,
    /// The ticket price, refunded in full; also the loyalty points to revoke.
    pub ticket_price: i64,
    /// ISO 4217 currency code.
    pub ticket_currency: String,
    /// When the cancellation finished.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub cancelled_at: OffsetDateTime,
}

/// `webhook.deliver` v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliverWebhook {
    /// The booking the event is about (the correlation id).
    pub booking_id: Uuid,
    /// The webhook endpoint to call.
    pub endpoint_id: Uuid,
    /// The event's id: the `webhook-id` header, the same on every attempt.
    pub event_id: Uuid,
    /// `booking.confirmed`, `booking.failed`, `booking.cancelled` or `loyalty.awarded`.
    pub event_type: String,
    /// The JSON payload to POST.
    pub payload: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requested() -> Message {
        Message::BookingRequested(BookingRequested {
            booking_id: Uuid::now_v7(),
            outbound_flight_id: Uuid::now_v7(),
            customer_id: "cust-1".into(),
            payment_token: PaymentToken::parse("tok_visa").expect("valid"),
            requested_at: OffsetDateTime::UNIX_EPOCH,
            api_key_id: None,
        })
    }

    #[test]
    fn a_request_names_its_api_key_only_when_it_has_one() {
        let Message::BookingRequested(mut request) = requested() else {
            unreachable!("a booking request")
        };
        let body = Message::BookingRequested(request.clone()).encode();
        let text = String::from_utf8(body).expect("utf-8");
        assert!(!text.contains("apiKeyId"), "{text}");
        // As the gateway sends it, and as an upstream system or an older gateway
        // sends it (no field): both decode.
        let key = Uuid::now_v7();
        request.api_key_id = Some(key);
        let body = Message::BookingRequested(request.clone()).encode();
        let back = Message::decode(Some("booking.requested.v1"), &body).expect("decodes");
        assert_eq!(back, Message::BookingRequested(request.clone()));
        let mut without: serde_json::Value = serde_json::from_slice(&body).expect("json");
        without.as_object_mut().expect("object").remove("apiKeyId");
        let back = Message::decode(Some("booking.requested.v1"), without.to_string().as_bytes())
            .expect("decodes");
        let Message::BookingRequested(back) = back else {
            unreachable!("a booking request")
        };
        assert_eq!(back.api_key_id, None);
    }

    #[test]
    fn messages_round_trip_through_type_and_body() {
        let message = requested();
        let kind = message.message_type();
        assert_eq!(kind.to_string(), "booking.requested.v1");
        let body = message.encode();
        let text = String::from_utf8(body.clone()).expect("utf-8");
        assert!(text.contains("\"outboundFlightId\""), "{text}");
        let back = Message::decode(Some(&kind.to_string()), &body).expect("decodes");
        assert_eq!(back, message);
    }

    #[test]
    fn decode_errors_say_why() {
        let body = requested().encode();
        assert_eq!(Message::decode(None, &body), Err(DecodeError::MissingType));
        assert!(matches!(
            Message::decode(Some("booking.exploded.v1"), &body),
            Err(DecodeError::UnknownType(_))
        ));
        assert!(matches!(
            Message::decode(Some("booking.requested.v9"), &body),
            Err(DecodeError::UnsupportedVersion { .. })
        ));
        let err = Message::decode(Some("booking.requested.v1"), b"{not json").unwrap_err();
        assert_eq!(err.code(), "invalid-body");
        let err = Message::decode(
            Some("booking.requested.v1"),
            br#"{"bookingId":"0190a4f0-0000-7000-8000-000000000000"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("outboundFlightId"), "{err}");
        let err = Message::decode(Some("flight.reserve-seat.v1"), b"{}").unwrap_err();
        assert!(err.to_string().contains("bookingId"), "{err}");
    }

    #[test]
    fn every_type_has_a_unique_name() {
        let mut names: Vec<_> = Message::TYPES.iter().map(|t| t.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Message::TYPES.len());
    }
}

/// `booking.parked` v1: everything an operator needs about a stuck saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BookingParked {
    /// The booking.
    pub booking_id: Uuid,
    /// The customer.
    pub customer_id: String,
    /// The flight.
    pub outbound_flight_id: Uuid,
    /// The state the saga was stuck in.
    pub stuck_in: String,
    /// Why it was parked (`COMPENSATION_FAILED`).
    pub reason: FailureReason,
    /// The failure being compensated when it got stuck, if any.
    pub original_failure: Option<FailureReason>,
    /// Every transition of the saga, oldest first.
    pub history: Vec<SagaStep>,
    /// When it was parked.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub parked_at: OffsetDateTime,
}

/// One transition of a saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SagaStep {
    /// The saga version after the step.
    pub version: i32,
    /// The state before (absent for the first step).
    pub from_state: Option<String>,
    /// The state after.
    pub to_state: String,
    /// The message type (or `deadline`) that caused it.
    pub trigger: String,
    /// What happened.
    pub note: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub at: OffsetDateTime,
}
