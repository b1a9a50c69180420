//! The booking saga's transition function: pure, no I/O, tested row by row against
//! the sample's state machine (the Step Functions flow of the "Serverless Airline"
//! sample, restated in docs/architecture.md).
//!
//! | state              | input              | local step              | next state         | sends            |
//! |--------------------|--------------------|-------------------------|--------------------|------------------|
//! | (start)            | booking requested  |                         | RESERVING_SEAT     | reserve seat     |
//! | RESERVING_SEAT     | seat reserved      | reserve booking ok      | COLLECTING_PAYMENT | collect payment  |
//! | RESERVING_SEAT     | seat reserved      | reserve booking fails   | RELEASING_SEAT     | release seat     |
//! | RESERVING_SEAT     | seat unavailable   |                         | FAILED             | booking failed   |
//! | COLLECTING_PAYMENT | payment collected  | confirm booking ok      | CONFIRMED          | booking confirmed|
//! | COLLECTING_PAYMENT | payment collected  | confirm booking fails   | REFUNDING_PAYMENT  | refund payment   |
//! | COLLECTING_PAYMENT | payment declined   | cancel booking          | RELEASING_SEAT     | release seat     |
//! | REFUNDING_PAYMENT  | payment refunded   | cancel booking          | RELEASING_SEAT     | release seat     |
//! | RELEASING_SEAT     | seat released      |                         | FAILED             | booking failed   |
//! | RESERVING_SEAT     | deadline passed    |                         | RELEASING_SEAT     | release seat     |
//! | COLLECTING_PAYMENT | deadline passed    | cancel booking          | REFUNDING_PAYMENT  | refund payment   |
//! | REFUNDING_PAYMENT  | deadline passed    | (compensation stuck)    | FAILED             | park, failed     |
//! | RELEASING_SEAT     | deadline passed    | (compensation stuck)    | FAILED             | park, failed     |
//! | REFUNDING_PAYMENT, RELEASING_SEAT, FAILED | payment collected | (late reply) | unchanged | refund payment |
//! | RELEASING_SEAT, FAILED | seat reserved  | (late reply)            | unchanged          | release seat     |
//! | FAILED             | payment refunded   | (after parking)         | FAILED             | release seat     |
//! | RESERVING_SEAT, COLLECTING_PAYMENT | step dead-lettered | (held)   | unchanged, hold deadline | nothing |
//!
//! A confirmed booking can be cancelled: that is a saga of its own, forward only.
//!
//! | state                 | input              | next state            | sends             |
//! |-----------------------|--------------------|-----------------------|-------------------|
//! | CONFIRMED             | cancel requested   | CANCEL_REFUNDING      | refund payment    |
//! | CANCEL_REFUNDING      | payment refunded   | CANCEL_RELEASING_SEAT | release seat      |
//! | CANCEL_RELEASING_SEAT | seat released      | CANCELLED             | booking cancelled |
//! | CANCEL_REFUNDING      | deadline passed    | unchanged, new deadline | refund payment (again) |
//! | CANCEL_RELEASING_SEAT | deadline passed    | unchanged, new deadline | release seat (again) |
//!
//! A cancellation cannot be undone and has nothing to compensate: a step that
//! misses its deadline is asked for again (refund and release are idempotent),
//! while payment's own retries and dead letters show an operator why. Loyalty
//! revokes the points when it hears `booking.cancelled`.
//!
//! Any other pair is a duplicate or stale reply and changes nothing. A timed-out
//! step is compensated as if it had succeeded (release and refund are idempotent
//! and safe when nothing was taken), so a reply that comes after its deadline is
//! undone too. A compensation that itself misses its deadline parks the saga in the
//! booking DLQ with its whole history, and the booking reads FAILED with
//! `COMPENSATION_FAILED`.
//!
//! A forward step whose command is dead-lettered (its retries ran out, or it was
//! refused) holds the saga instead: it stays in its state with the longer hold
//! deadline, so that an operator who replays the dead letter resumes it, and one
//! who discards it (or does nothing) sees it compensated at the hold deadline.

use std::fmt;

use airline_contracts::{FailureReason, SeatUnavailableReason};

/// Where a booking's saga is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Waiting for the catalog to reserve a seat.
    ReservingSeat,
    /// Seat held and booking reserved; waiting for payment.
    CollectingPayment,
    /// Confirmation failed after payment; waiting for the refund.
    RefundingPayment,
    /// Booking cancelled; waiting for the seat to be given back.
    ReleasingSeat,
    /// Terminal: paid and confirmed.
    Confirmed,
    /// Terminal: failed, every step compensated.
    Failed,
    /// A confirmed booking being cancelled; waiting for the refund.
    CancelRefunding,
    /// A confirmed booking being cancelled; refunded, waiting for the seat.
    CancelReleasingSeat,
    /// Terminal: cancelled after it was confirmed, refunded, seat given back.
    Cancelled,
}

impl State {
    /// Every state.
    pub const ALL: [Self; 9] = [
        Self::ReservingSeat,
        Self::CollectingPayment,
        Self::RefundingPayment,
        Self::ReleasingSeat,
        Self::Confirmed,
        Self::Failed,
        Self::CancelRefunding,
        Self::CancelReleasingSeat,
        Self::Cancelled,
    ];

    /// The name stored in the database.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReservingSeat => "RESERVING_SEAT",
            Self::CollectingPayment => "COLLECTING_PAYMENT",
            Self::RefundingPayment => "REFUNDING_PAYMENT",
            Self::ReleasingSeat => "RELEASING_SEAT",
            Self::Confirmed => "CONFIRMED",
            Self::Failed => "FAILED",
            Self::CancelRefunding => "CANCEL_REFUNDING",
            Self::CancelReleasingSeat => "CANCEL_RELEASING_SEAT",
            Self::Cancelled => "CANCELLED",
        }
    }

    /// Parses a stored name.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether the saga has ended (a confirmed booking's cancellation starts a new
    /// one).
    #[must_use]
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Confirmed | Self::Failed | Self::Cancelled)
    }

    /// The status a client sees: PENDING until the booking saga ends, CANCELLING
    /// while a cancellation runs.
    #[must_use]
    pub fn status(self) -> &'static str {
        crate::views::Status::of(self).as_str()
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reply from another service, as the saga sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// The catalog holds a seat.
    SeatReserved,
    /// The catalog could not hold a seat.
    SeatUnavailable(SeatUnavailableReason),
    /// Payment charged the card.
    PaymentCollected,
    /// Payment did not charge the card.
    PaymentDeclined(FailureReason),
    /// Payment refunded the charge.
    PaymentRefunded,
    /// The catalog gave the seat back.
    SeatReleased,
    /// The state's deadline passed with no reply (from the deadline sweeper).
    DeadlinePassed,
    /// A forward step's command was dead-lettered (its copy on the watch queue):
    /// an operator can replay it.
    StepDeadLettered(Step),
    /// The client asked to cancel the booking.
    CancelRequested,
}

/// The forward steps whose commands can be dead-lettered and hold the saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `flight.reserve-seat`.
    ReserveSeat,
    /// `payment.collect`.
    CollectPayment,
}

/// What the saga asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Ask the catalog for a seat.
    ReserveSeat,
    /// Ask payment to charge the ticket price.
    CollectPayment,
    /// Ask payment to refund.
    RefundPayment,
    /// Ask the catalog to give the seat back.
    ReleaseSeat,
    /// Publish `booking.confirmed`.
    PublishConfirmed,
    /// Publish `booking.failed`.
    PublishFailed,
    /// Publish `booking.parked` to the booking DLQ.
    Park,
    /// Publish `booking.cancelled`.
    PublishCancelled,
}

/// The outcomes of the saga's local steps (reserve booking, confirm booking), which
/// the orchestrator performs itself. They fail only when a fault is injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LocalSteps {
    /// "Reserve Booking" fails.
    pub reserve_booking_fails: bool,
    /// "Confirm Booking" fails.
    pub confirm_booking_fails: bool,
}

/// A transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The state after it.
    pub next: State,
    /// What to send.
    pub commands: Vec<Command>,
    /// Why the booking is failing, when this transition decides it (it replaces
    /// any reason decided before).
    pub failure: Option<FailureReason>,
    /// One line for the saga history.
    pub note: &'static str,
    /// The saga waits for an operator: its deadline becomes the hold deadline.
    pub hold: bool,
}

fn go(
    next: State,
    command: Command,
    failure: Option<FailureReason>,
    note: &'static str,
) -> Option<Decision> {
    Some(Decision {
        next,
        commands: vec![command],
        failure,
        note,
        hold: false,
    })
}

/// The first step of every saga.
#[must_use]
pub fn start() -> Decision {
    Decision {
        next: State::ReservingSeat,
        commands: vec![Command::ReserveSeat],
        failure: None,
        note: "booking requested; reserving a seat",
        hold: false,
    }
}

/// The saga's next step, or `None` when `input` does not apply to `state` (a
/// duplicate or stale reply: nothing changes).
#[must_use]
pub fn transition(state: State, input: Input, steps: LocalSteps) -> Option<Decision> {
    use Command as C;
    use State as S;
    match (state, input) {
        (S::ReservingSeat, Input::SeatReserved) if steps.reserve_booking_fails => go(
            S::ReleasingSeat,
            C::ReleaseSeat,
            Some(FailureReason::BookingReservationFailed),
            "seat reserved; reserving the booking failed: cancelling, releasing the seat",
        ),
        (S::ReservingSeat, Input::SeatReserved) => go(
            S::CollectingPayment,
            C::CollectPayment,
            None,
            "seat reserved; booking reserved; collecting payment",
        ),
        (S::ReservingSeat, Input::SeatUnavailable(reason)) => go(
            S::Failed,
            C::PublishFailed,
            Some(match reason {
                SeatUnavailableReason::SoldOut => FailureReason::SoldOut,
                SeatUnavailableReason::FlightNotFound => FailureReason::FlightNotFound,
                SeatUnavailableReason::ReservationFailed => FailureReason::SeatReservationFailed,
            }),
            "no seat reserved; booking failed",
        ),
        (S::CollectingPayment, Input::PaymentCollected) if steps.confirm_booking_fails => go(
            S::RefundingPayment,
            C::RefundPayment,
            Some(FailureReason::ConfirmationFailed),
            "payment collected; confirming the booking failed: refunding",
        ),
        (S::CollectingPayment, Input::PaymentCollected) => go(
            S::Confirmed,
            C::PublishConfirmed,
            None,
            "payment collected; booking confirmed",
        ),
        (S::CollectingPayment, Input::PaymentDeclined(reason)) => go(
            S::ReleasingSeat,
            C::ReleaseSeat,
            Some(reason),
            "payment not collected; booking cancelled; releasing the seat",
        ),
        (S::RefundingPayment, Input::PaymentRefunded) => go(
            S::ReleasingSeat,
            C::ReleaseSeat,
            None,
            "payment refunded; booking cancelled; releasing the seat",
        ),
        (S::ReleasingSeat, Input::SeatReleased) => go(
            S::Failed,
            C::PublishFailed,
            None,
            "seat released; booking failed",
        ),
        (S::ReservingSeat, Input::DeadlinePassed) => go(
            S::ReleasingSeat,
            C::ReleaseSeat,
            Some(FailureReason::SeatReservationTimedOut),
            "no seat reservation before the deadline; releasing any seat taken",
        ),
        (S::CollectingPayment, Input::DeadlinePassed) => go(
            S::RefundingPayment,
            C::RefundPayment,
            Some(FailureReason::PaymentTimedOut),
            "no payment answer before the deadline; booking cancelled; refunding any charge",
        ),
        (S::RefundingPayment | S::ReleasingSeat, Input::DeadlinePassed) => Some(Decision {
            next: S::Failed,
            commands: vec![C::Park, C::PublishFailed],
            failure: Some(FailureReason::CompensationFailed),
            note: "compensation did not finish before its deadline; parked in the booking DLQ",
            hold: false,
        }),
        (S::ReservingSeat, Input::StepDeadLettered(Step::ReserveSeat))
        | (S::CollectingPayment, Input::StepDeadLettered(Step::CollectPayment)) => Some(Decision {
            next: state,
            commands: Vec::new(),
            failure: None,
            note: "the step's command was dead-lettered; held for an operator until the hold deadline (replaying the dead letter resumes the saga)",
            hold: true,
        }),
        (S::Confirmed, Input::CancelRequested) => go(
            S::CancelRefunding,
            C::RefundPayment,
            None,
            "cancellation requested; refunding the payment",
        ),
        (S::CancelRefunding, Input::PaymentRefunded) => go(
            S::CancelReleasingSeat,
            C::ReleaseSeat,
            None,
            "payment refunded; releasing the seat",
        ),
        (S::CancelReleasingSeat, Input::SeatReleased) => go(
            S::Cancelled,
            C::PublishCancelled,
            None,
            "seat released; booking cancelled",
        ),
        (S::CancelRefunding, Input::DeadlinePassed) => go(
            state,
            C::RefundPayment,
            None,
            "no refund before the deadline; asking again",
        ),
        (S::CancelReleasingSeat, Input::DeadlinePassed) => go(
            state,
            C::ReleaseSeat,
            None,
            "no seat release before the deadline; asking again",
        ),
        (S::Failed, Input::PaymentRefunded) => go(
            state,
            C::ReleaseSeat,
            None,
            "refund arrived after the saga was parked; releasing the seat",
        ),
        (S::ReleasingSeat | S::Failed, Input::SeatReserved) => go(
            state,
            C::ReleaseSeat,
            None,
            "late seat reservation after the booking was cancelled; releasing it",
        ),
        (S::RefundingPayment | S::ReleasingSeat | S::Failed, Input::PaymentCollected) => go(
            state,
            C::RefundPayment,
            None,
            "late payment after the booking was cancelled; refunding it",
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
