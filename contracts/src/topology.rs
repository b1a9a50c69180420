//! Exchange, routing-key and queue names: the broker topology, in one place.
//!
//! - `commands` (direct): commands, routed by their name to the one queue that
//!   serves them.
//! - `events` (topic): events, routed by their name to every queue bound to it.
//!   Upstream subscribers bind their own queues here (`booking.*`).
//! - `dead-letter` (direct): dead letters, routed by the name of the queue they
//!   died in to that queue's `.dlq`.
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

/// The suffix of a work queue's dead-letter queue.
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

/// Every work queue. Point-to-point queues are named after the one message they
/// carry; a subscriber's queue on the fan-out is named `<service>.<purpose>`.
pub const QUEUES: &[QueueSpec] = &[
    q("booking.requested", "booking", &["booking.requested"]),
    q("flight.reserve-seat", "catalog", &["flight.reserve-seat"]),
    q("flight.release-seat", "catalog", &["flight.release-seat"]),
    q("flight.seat-reserved", "booking", &["flight.seat-reserved"]),
    q(
        "flight.seat-unavailable",
        "booking",
        &["flight.seat-unavailable"],
    ),
    q("flight.released", "booking", &["flight.released"]),
    q("payment.collect", "payment", &["payment.collect"]),
    q("payment.refund", "payment", &["payment.refund"]),
    q("payment.collected", "booking", &["payment.collected"]),
    q("payment.declined", "booking", &["payment.declined"]),
    q("payment.refunded", "booking", &["payment.refunded"]),
    q(
        "loyalty.booking-confirmed",
        "loyalty",
        &["booking.confirmed"],
    ),
    q(
        "notify.booking-outcomes",
        "notify",
        &["booking.confirmed", "booking.failed", "booking.cancelled"],
    ),
    q("loyalty.awarded", "notify", &["loyalty.awarded"]),
    q("booking.cancel", "booking", &["booking.cancel"]),
    q(
        "loyalty.booking-cancelled",
        "loyalty",
        &["booking.cancelled"],
    ),
    q("notify.webhook-deliveries", "notify", &["webhook.deliver"]),
    // A forward step's command that was dead-lettered: the saga waiting on it is
    // held (not compensated) until an operator replays or discards it.
    QueueSpec {
        name: STEP_DEAD_LETTERED,
        consumer: "booking",
        messages: &["flight.reserve-seat", "payment.collect"],
        watches_dead_letters: true,
    },
    // The booking DLQ: sagas that cannot finish on their own, parked for an operator
    // with their whole state and history.
    q("booking.dlq", PARKING, &["booking.parked"]),
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

    /// The dead-letter queue of a work queue.
    #[must_use]
    pub fn dlq(&self, queue: &str) -> String {
        format!("{}{queue}{DLQ_SUFFIX}", self.prefix)
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
        assert_eq!(
            names.dlq("booking.requested"),
            "airline.booking.requested.dlq"
        );
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
