//! What becomes of a delivery, decided apart from the broker.
//!
//! The consumer decodes a delivery, runs its handler, and then carries out what
//! [`decide`] (or [`decide_undecodable`]) returns: the decision is a pure function
//! of the outcome, the attempt number and the queue's retry policy, so every branch
//! is tested here without lapin.

use std::time::Duration;

use super::{HandlerError, Outcome, is_unavailable};
use crate::outbox::Pending;
use crate::retry::RetryPolicy;

/// A delivery that could not be handled, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// A short stable code: `invalid-body`, `unknown-type`, `rejected`,
    /// `retries-exhausted`, ...
    pub kind: String,
    /// What went wrong, for a person.
    pub text: String,
    /// The booking, where known.
    pub booking_id: Option<String>,
    /// When retries ran out: the class of the last error (`transient`, `unexpected`).
    pub last_kind: Option<&'static str>,
}

impl Failure {
    /// A failure of `kind` without a booking.
    #[must_use]
    pub fn new(kind: &str, text: impl Into<String>) -> Self {
        Self {
            kind: kind.to_owned(),
            text: text.into(),
            booking_id: None,
            last_kind: None,
        }
    }
}

/// What the consumer does with a delivery.
#[derive(Debug, Clone)]
pub enum Settlement {
    /// Handled and committed: publish these outbox rows, then ack.
    Ack {
        /// The outbox rows the handler's commit wrote.
        publish: Vec<Pending>,
    },
    /// Handled before (same consumer, same message id): ack, nothing else.
    AckDuplicate,
    /// Failed in a way that may pass: park it in the retry tier of `delay`.
    Retry {
        /// The tier's nominal delay (jitter is added when it is parked).
        delay: Duration,
        /// Recorded in the copy's headers.
        failure: Failure,
    },
    /// Refused for good, or out of attempts: to the queue's dead-letter queue.
    DeadLetter(Failure),
    /// The database was unavailable as the consumer shut down: nack with requeue,
    /// so that another consumer (or this one, restarted) handles it.
    GiveBack,
    /// A copy on a dead-letter watch queue that is no step of a saga: ack and
    /// forget (the original is in its own dead-letter queue with the reason).
    Ignore,
}

impl Settlement {
    /// The outcome label of the delivery metric.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Self::Ack { .. } => "handled",
            Self::AckDuplicate => "duplicate",
            Self::Retry { .. } => "retried",
            Self::DeadLetter(_) => "dead_lettered",
            Self::GiveBack => "returned",
            Self::Ignore => "ignored",
        }
    }
}

/// What becomes of a decoded delivery of `booking_id`, delivered for the
/// `attempt`-th time (1 for the first), after its handler returned `result`.
///
/// The database being unavailable is only returned by the consumer once it is
/// shutting down (until then it holds the delivery and tries again), hence
/// [`Settlement::GiveBack`] for it.
#[must_use]
pub fn decide(
    result: Result<Outcome, HandlerError>,
    attempt: u32,
    booking_id: String,
    policy: &RetryPolicy,
) -> Settlement {
    let e = match result {
        Ok(Outcome::Handled(publish)) => return Settlement::Ack { publish },
        Ok(Outcome::Duplicate) => return Settlement::AckDuplicate,
        Err(e) => e,
    };
    if is_unavailable(&e) {
        return Settlement::GiveBack;
    }
    let mut failure = Failure::new(e.kind(), format!("{e:#}"));
    failure.booking_id = Some(booking_id);
    if e.is_permanent() {
        return Settlement::DeadLetter(failure);
    }
    if policy.may_retry(attempt) {
        return Settlement::Retry {
            delay: policy.delay(attempt),
            failure,
        };
    }
    failure.last_kind = Some(e.kind());
    failure.kind = "retries-exhausted".into();
    failure.text = format!("gave up after {attempt} attempts: {}", failure.text);
    Settlement::DeadLetter(failure)
}

/// What becomes of a delivery that could not be decoded: dead-lettered with the
/// reason, unless it came from a dead-letter watch queue ([`Settlement::Ignore`]).
#[must_use]
pub fn decide_undecodable(failure: Failure, watches_dead_letters: bool) -> Settlement {
    if watches_dead_letters {
        Settlement::Ignore
    } else {
        Settlement::DeadLetter(failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOKING: &str = "b0000000-0000-4000-8000-000000000001";

    fn policy(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            attempts,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(30),
        }
    }

    fn rejected() -> HandlerError {
        HandlerError::Rejected("no booking 42".into())
    }

    fn transient() -> HandlerError {
        HandlerError::Transient(anyhow::anyhow!("provider timed out"))
    }

    fn unexpected() -> HandlerError {
        HandlerError::Unexpected(anyhow::anyhow!("saga has no ticket price"))
    }

    fn unavailable() -> HandlerError {
        HandlerError::from(sqlx::Error::PoolTimedOut)
    }

    /// What a settlement comes to: its label, the retry delay, and the failure's
    /// kind, text, last kind and booking.
    type Summary = (&'static str, Option<Duration>, Option<FailureParts>);

    /// A failure's kind, text, last kind and booking.
    type FailureParts = (String, String, Option<&'static str>, Option<String>);

    /// An error to decide on, the attempt, the policy's attempts, and the summary
    /// expected.
    type Case = (fn() -> HandlerError, u32, u32, Summary);

    fn summary(s: &Settlement) -> Summary {
        let of = |f: &Failure| {
            Some((
                f.kind.clone(),
                f.text.clone(),
                f.last_kind,
                f.booking_id.clone(),
            ))
        };
        match s {
            Settlement::Retry { delay, failure } => (s.label(), Some(*delay), of(failure)),
            Settlement::DeadLetter(failure) => (s.label(), None, of(failure)),
            _ => (s.label(), None, None),
        }
    }

    #[test]
    fn every_error_kind_around_the_limit() {
        let secs = |n| Some(Duration::from_secs(n));
        let fail = |kind: &str, text: &str, last: Option<&'static str>| {
            Some((
                kind.to_owned(),
                text.to_owned(),
                last,
                Some(BOOKING.to_owned()),
            ))
        };
        let gave_up = |n: u32, text: &str, last: &'static str| {
            fail(
                "retries-exhausted",
                &format!("gave up after {n} attempts: {text}"),
                Some(last),
            )
        };
        const T: &str = "provider timed out";
        const U: &str = "saga has no ticket price";
        const R: &str = "no booking 42";
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            // Permanent: dead-lettered at once, whatever the attempt.
            (rejected, 1, 4, ("dead_lettered", None, fail("rejected", R, None))),
            (rejected, 3, 4, ("dead_lettered", None, fail("rejected", R, None))),
            (rejected, 4, 4, ("dead_lettered", None, fail("rejected", R, None))),
            (rejected, 9, 4, ("dead_lettered", None, fail("rejected", R, None))),
            // Transient: retried on doubling tiers until the attempts are used up.
            (transient, 1, 4, ("retried", secs(1), fail("transient", T, None))),
            (transient, 2, 4, ("retried", secs(2), fail("transient", T, None))),
            (transient, 3, 4, ("retried", secs(4), fail("transient", T, None))),
            (transient, 4, 4, ("dead_lettered", None, gave_up(4, T, "transient"))),
            (transient, 5, 4, ("dead_lettered", None, gave_up(5, T, "transient"))),
            (transient, 1, 1, ("dead_lettered", None, gave_up(1, T, "transient"))),
            // Unexpected: retried like transient errors.
            (unexpected, 1, 4, ("retried", secs(1), fail("unexpected", U, None))),
            (unexpected, 3, 4, ("retried", secs(4), fail("unexpected", U, None))),
            (unexpected, 4, 4, ("dead_lettered", None, gave_up(4, U, "unexpected"))),
            // The database away (only returned when shutting down): given back,
            // never dead-lettered, whatever the attempt.
            (unavailable, 1, 4, ("returned", None, None)),
            (unavailable, 4, 4, ("returned", None, None)),
            (unavailable, 9, 4, ("returned", None, None)),
        ];
        for (error, attempt, attempts, expected) in cases {
            let e = error();
            let label = format!("{} at attempt {attempt} of {attempts}", e.kind());
            let s = decide(Err(e), attempt, BOOKING.into(), &policy(attempts));
            assert_eq!(summary(&s), expected, "{label}");
        }
    }

    #[test]
    fn the_cap_bounds_the_delay() {
        let p = RetryPolicy {
            attempts: 10,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(5),
        };
        let s = decide(Err(transient()), 8, BOOKING.into(), &p);
        assert!(
            matches!(s, Settlement::Retry { delay, .. } if delay == Duration::from_secs(5)),
            "{s:?}"
        );
    }

    #[test]
    fn handled_and_duplicate_deliveries_are_acked() {
        let p = policy(4);
        for attempt in [1, 4, 9] {
            let s = decide(
                Ok(Outcome::Handled(Vec::new())),
                attempt,
                BOOKING.into(),
                &p,
            );
            assert!(
                matches!(&s, Settlement::Ack { publish } if publish.is_empty()),
                "{s:?}"
            );
            assert_eq!(s.label(), "handled");
            let s = decide(Ok(Outcome::Duplicate), attempt, BOOKING.into(), &p);
            assert!(matches!(s, Settlement::AckDuplicate), "{s:?}");
            assert_eq!(s.label(), "duplicate");
        }
    }

    #[test]
    fn an_unavailable_database_is_recognised_through_context() {
        let e = HandlerError::Unexpected(
            anyhow::Error::from(sqlx::Error::PoolClosed).context("loading the saga"),
        );
        let s = decide(Err(e), 4, BOOKING.into(), &policy(4));
        assert!(matches!(s, Settlement::GiveBack), "{s:?}");
        assert_eq!(s.label(), "returned");
    }

    #[test]
    fn undecodable_deliveries_are_dead_lettered_unless_watched() {
        let f = Failure::new("invalid-body", "expected value at line 1 column 1");
        let s = decide_undecodable(f.clone(), false);
        assert!(matches!(&s, Settlement::DeadLetter(d) if *d == f), "{s:?}");
        assert_eq!(s.label(), "dead_lettered");
        let s = decide_undecodable(f, true);
        assert!(matches!(s, Settlement::Ignore), "{s:?}");
        assert_eq!(s.label(), "ignored");
    }

    #[test]
    fn labels_of_failures() {
        let s = decide(Err(transient()), 1, BOOKING.into(), &policy(4));
        assert_eq!(s.label(), "retried");
        let s = decide(Err(rejected()), 1, BOOKING.into(), &policy(4));
        assert_eq!(s.label(), "dead_lettered");
    }
}
