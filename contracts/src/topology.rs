//! Exchange, routing-key and queue names: the broker topology, in one place.
//!
//! - `commands` (direct): commands, routed by their name to the one queue that
//!   serves them.
//! - `events` (topic): events, routed by their name to every queue bound to it.
//!   Upstream subscribers bind their own queues here (`booking.*`).
//! - `dead-letter` (direct): dead letters, routed by the name of the queue they
//!   died in to the one shared dead-letter queue, `dead-letters` (and to the
//!   booking service's watch queue, for the two queues it watches).
//! - `retry` (headers): messages waiting to be retried, routed by their
//!   `retry-tier` header to the shared delay tier `retry.<ms>ms` of that delay;
//!   their routing key is the queue they go back to when the delay is over.
//!
//! Every name takes a prefix (`AIRLINE_PREFIX`, default `airline.`), so several
//! deployments, or several test runs, can share one broker without meeting.

use crate::messages::{Message, MessageKind, MessageType};

/// The default name prefix.
pub const DEFAULT_PREFIX: &str = "airline.";

/// The commands exchange (direct).
pub const COMMANDS_EXCHANGE: &str = "commands";
/// The events exchange (topic).
pub const EVENTS_EXCHANGE: &str = "events";
/// The dead-letter exchange (direct, routing key = the queue the message died in).
pub const DEAD_LETTER_EXCHANGE: &str = "dead-letter";
/// The consumer of a parking queue: operators, not a service.
pub const PARKING: &str = "operator";

/// The booking service's watch queue for its saga steps' dead letters.
pub const STEP_DEAD_LETTERED: &str = "booking.step-dead-lettered";

/// The retry exchange (headers): a message for a delay tier carries the tier in
/// [`RETRY_TIER_HEADER`] and, as its routing key, the work queue it goes back to.
pub const RETRY_EXCHANGE: &str = "retry";
/// The header naming the delay tier of a message on the retry exchange (`1000ms`).
/// Not `x-...`: a headers exchange ignores `x-` arguments when it matches with
/// `x-match: all`.
pub const RETRY_TIER_HEADER: &str = "retry-tier";
/// The one dead-letter queue of a deployment, shared by every work queue (the
/// convention of NServiceBus's `error` queue): bound to the dead-letter exchange
/// under every consumed work queue's broker name.
pub const DEAD_LETTERS: &str = "dead-letters";
/// The header naming the work queue (logical name) a dead letter died in.
pub const ORIGIN_QUEUE_HEADER: &str = "x-origin-queue";
/// The most queues one deployment may declare: six deployments side by side fit a
/// broker with the default limit of 1,024 open files (docs/benchmarks.md).
pub const MAX_QUEUES: usize = 40;

/// The suffix of a work queue's dead-letter queue in the old layout (one DLQ per
/// work queue), which `airline migrate` removes.
pub const DLQ_SUFFIX: &str = ".dlq";

/// A work queue: its name, the service consuming it and the messages bound to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSpec {
    /// The queue name without prefix.
    pub name: &'static str,
    /// The service that consumes it.
    pub consumer: &'static str,
    /// The message names routed to it.
    pub messages: &'static [&'static str],
    /// A watch queue: instead of the messages themselves, it receives a copy of each
    /// of them that is dead-lettered from its own queue (the dead-letter exchange,
    /// keyed by that queue's name). The booking saga holds on these.
    pub watches_dead_letters: bool,
}

impl QueueSpec {
    /// The message types this queue carries.
    pub fn message_types(&self) -> impl Iterator<Item = MessageType> + '_ {
        self.messages
            .iter()
            .filter_map(|name| Message::TYPES.iter().find(|t| t.name == *name).copied())
    }
}

/// `booking.requested`: starts a saga (booking).
pub const BOOKING_REQUESTED: QueueSpec = q("booking.requested", "booking", &["booking.requested"]);
/// `flight.reserve-seat` (catalog).
pub const RESERVE_SEAT: QueueSpec = q("flight.reserve-seat", "catalog", &["flight.reserve-seat"]);
/// `flight.release-seat` (catalog).
pub const RELEASE_SEAT: QueueSpec = q("flight.release-seat", "catalog", &["flight.release-seat"]);
/// `flight.seat-reserved`: a reply to the saga (booking).
pub const SEAT_RESERVED: QueueSpec =
    q("flight.seat-reserved", "booking", &["flight.seat-reserved"]);
/// `flight.seat-unavailable`: a reply to the saga (booking).
pub const SEAT_UNAVAILABLE: QueueSpec = q(
    "flight.seat-unavailable",
    "booking",
    &["flight.seat-unavailable"],
);
/// `flight.released`: a reply to the saga (booking).
pub const SEAT_RELEASED: QueueSpec = q("flight.released", "booking", &["flight.released"]);
/// `payment.collect` (payment).
pub const COLLECT_PAYMENT: QueueSpec = q("payment.collect", "payment", &["payment.collect"]);
/// `payment.refund` (payment).
pub const REFUND_PAYMENT: QueueSpec = q("payment.refund", "payment", &["payment.refund"]);
/// `payment.collected`: a reply to the saga (booking).
pub const PAYMENT_COLLECTED: QueueSpec = q("payment.collected", "booking", &["payment.collected"]);
/// `payment.declined`: a reply to the saga (booking).
pub const PAYMENT_DECLINED: QueueSpec = q("payment.declined", "booking", &["payment.declined"]);
/// `payment.refunded`: a reply to the saga (booking).
pub const PAYMENT_REFUNDED: QueueSpec = q("payment.refunded", "booking", &["payment.refunded"]);
/// Loyalty's subscription to `booking.confirmed` on the fan-out.
pub const LOYALTY_CONFIRMED: QueueSpec = q(
    "loyalty.booking-confirmed",
    "loyalty",
    &["booking.confirmed"],
);
/// Notify's subscription to the booking outcomes on the fan-out.
pub const NOTIFY_OUTCOMES: QueueSpec = q(
    "notify.booking-outcomes",
    "notify",
    &["booking.confirmed", "booking.failed", "booking.cancelled"],
);
/// Notify's subscription to `loyalty.awarded` on the fan-out.
pub const LOYALTY_AWARDED: QueueSpec = q("loyalty.awarded", "notify", &["loyalty.awarded"]);
/// `booking.cancel`: moves a confirmed booking's saga into cancellation (booking).
pub const CANCEL_BOOKING: QueueSpec = q("booking.cancel", "booking", &["booking.cancel"]);
/// Loyalty's subscription to `booking.cancelled` on the fan-out.
pub const LOYALTY_CANCELLED: QueueSpec = q(
    "loyalty.booking-cancelled",
    "loyalty",
    &["booking.cancelled"],
);
/// `notify.webhook-deliveries`: one signed POST each (notify).
pub const WEBHOOK_DELIVERIES: QueueSpec =
    q("notify.webhook-deliveries", "notify", &["webhook.deliver"]);
/// A forward step's command that was dead-lettered: the saga waiting on it is held
/// (not compensated) until an operator replays or discards it (booking).
pub const STEP_DEAD_LETTERED_QUEUE: QueueSpec = QueueSpec {
    name: STEP_DEAD_LETTERED,
    consumer: "booking",
    messages: &["flight.reserve-seat", "payment.collect"],
    watches_dead_letters: true,
};
/// The booking DLQ: sagas that cannot finish on their own, parked for an operator
/// with their whole state and history.
pub const BOOKING_DLQ: QueueSpec = q("booking.dlq", PARKING, &["booking.parked"]);

/// Every work queue. Point-to-point queues are named after the one message they
/// carry; a subscriber's queue on the fan-out is named `<service>.<purpose>`. Which
/// service consumes each is part of the contract (docs and the AsyncAPI document
/// say it); each service's descriptor pairs its queues with their handlers, and a
/// test holds the two together.
pub const QUEUES: &[QueueSpec] = &[
    BOOKING_REQUESTED,
    RESERVE_SEAT,
    RELEASE_SEAT,
    SEAT_RESERVED,
    SEAT_UNAVAILABLE,
    SEAT_RELEASED,
    COLLECT_PAYMENT,
    REFUND_PAYMENT,
    PAYMENT_COLLECTED,
    PAYMENT_DECLINED,
    PAYMENT_REFUNDED,
    LOYALTY_CONFIRMED,
    NOTIFY_OUTCOMES,
    LOYALTY_AWARDED,
    CANCEL_BOOKING,
    LOYALTY_CANCELLED,
    WEBHOOK_DELIVERIES,
    STEP_DEAD_LETTERED_QUEUE,
    BOOKING_DLQ,
];

const fn q(
    name: &'static str,
    consumer: &'static str,
    messages: &'static [&'static str],
) -> QueueSpec {
    QueueSpec {
        name,
        consumer,
        messages,
        watches_dead_letters: false,
    }
}

/// The queues services consume: every queue but the parking queues.
pub fn consumed_queues() -> impl Iterator<Item = &'static QueueSpec> {
    QUEUES.iter().filter(|q| q.consumer != PARKING)
}

/// The consumed queue of a logical name, if there is one.
#[must_use]
pub fn consumed_queue(logical: &str) -> Option<&'static QueueSpec> {
    consumed_queues().find(|q| q.name == logical)
}

/// How many queues a deployment declares besides its delay tiers: every queue of
/// [`QUEUES`] and the shared dead-letter queue.
#[must_use]
pub const fn queues_without_tiers() -> usize {
    QUEUES.len() + 1
}

/// The name of a delay tier (`1000ms`): the value of [`RETRY_TIER_HEADER`] and the
/// end of the tier queue's name.
#[must_use]
pub fn tier_name(delay: std::time::Duration) -> String {
    format!("{}ms", delay.as_millis())
}

/// The queues a service consumes (never a parking queue).
pub fn queues_of(service: &str) -> impl Iterator<Item = &'static QueueSpec> + '_ {
    QUEUES.iter().filter(move |q| q.consumer == service)
}

/// The logical exchange a message is published to.
#[must_use]
pub fn exchange_of(kind: MessageKind) -> &'static str {
    match kind {
        MessageKind::Command => COMMANDS_EXCHANGE,
        MessageKind::Event => EVENTS_EXCHANGE,
    }
}

/// Resolves logical names to broker names under a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    prefix: String,
}

impl Default for Names {
    fn default() -> Self {
        Self::new(DEFAULT_PREFIX)
    }
}

impl Names {
    /// Names under `prefix` (`airline.` by default; may be empty).
    #[must_use]
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The prefix.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A broker name for a logical exchange or queue name.
    #[must_use]
    pub fn resolve(&self, logical: &str) -> String {
        format!("{}{logical}", self.prefix)
    }

    /// The shared dead-letter queue of this deployment (`<prefix>dead-letters`).
    #[must_use]
    pub fn dead_letters(&self) -> String {
        self.resolve(DEAD_LETTERS)
    }

    /// The shared delay tier queue for `delay` (`<prefix>retry.1000ms`).
    #[must_use]
    pub fn tier(&self, delay: std::time::Duration) -> String {
        format!("{}{RETRY_EXCHANGE}.{}", self.prefix, tier_name(delay))
    }

    /// The old layout's dead-letter queue of a work queue (`<prefix><queue>.dlq`),
    /// for `airline migrate`, which removes it.
    #[must_use]
    pub fn old_dlq(&self, queue: &str) -> String {
        format!("{}{queue}{DLQ_SUFFIX}", self.prefix)
    }

    /// The old layout's retry tier of a work queue for `delay`
    /// (`<prefix><queue>.retry.1000ms`), for `airline migrate`, which removes it.
    #[must_use]
    pub fn old_tier(&self, queue: &str, delay: std::time::Duration) -> String {
        format!("{}{queue}.retry.{}", self.prefix, tier_name(delay))
    }

    /// The logical name of a prefixed broker name, if it carries this prefix.
    #[must_use]
    pub fn strip<'a>(&self, name: &'a str) -> Option<&'a str> {
        name.strip_prefix(&self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_named_queues_of_the_design_exist() {
        for name in [
            "booking.requested",
            "payment.collected",
            "flight.released",
            "loyalty.awarded",
        ] {
            assert!(QUEUES.iter().any(|q| q.name == name), "{name}");
        }
        let names = Names::default();
        assert_eq!(
            names.resolve("booking.requested"),
            "airline.booking.requested"
        );
        assert_eq!(names.dead_letters(), "airline.dead-letters");
        assert_eq!(
            names.tier(std::time::Duration::from_secs(2)),
            "airline.retry.2000ms"
        );
        assert_eq!(
            names.old_dlq("booking.requested"),
            "airline.booking.requested.dlq"
        );
        assert_eq!(
            names.old_tier("payment.collect", std::time::Duration::from_secs(2)),
            "airline.payment.collect.retry.2000ms"
        );
        // The shared queues cannot meet a queue of the topology.
        for q in QUEUES {
            assert_ne!(q.name, DEAD_LETTERS);
            assert!(!q.name.starts_with("retry."), "{}", q.name);
        }
    }

    #[test]
    fn every_binding_names_a_message_and_every_message_is_consumed() {
        for queue in QUEUES {
            assert_eq!(
                queue.message_types().count(),
                queue.messages.len(),
                "{}",
                queue.name
            );
        }
        for t in Message::TYPES {
            assert!(
                QUEUES.iter().any(|q| q.messages.contains(&t.name)),
                "{} has no queue",
                t.name
            );
        }
    }

    #[test]
    fn a_watch_queue_watches_point_to_point_queues() {
        for watch in QUEUES.iter().filter(|q| q.watches_dead_letters) {
            for m in watch.messages {
                let watched = QUEUES.iter().find(|q| q.name == *m).expect("a queue");
                assert_eq!(watched.messages, [*m], "{m} is a point-to-point queue");
            }
        }
    }

    #[test]
    fn a_command_has_exactly_one_queue() {
        for t in Message::TYPES
            .iter()
            .filter(|t| t.kind == MessageKind::Command)
        {
            let n = QUEUES
                .iter()
                .filter(|q| !q.watches_dead_letters && q.messages.contains(&t.name))
                .count();
            assert_eq!(n, 1, "{}", t.name);
        }
    }
}
