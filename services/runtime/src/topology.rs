//! The broker topology: exchanges, queues and bindings, declared by every process at
//! start, and the queues that make it up.
//!
//! A deployment (one prefix) declares, with the default configuration, 34 quorum
//! queues (at most [`MAX_QUEUES`]):
//!
//! - one work queue per [`QUEUES`] entry, and the booking DLQ (a parking queue);
//! - ONE dead-letter queue, `<prefix>dead-letters`, bound to the dead-letter exchange
//!   under every consumed queue's broker name: the consumers' own dead letters and
//!   the broker's (rejects, the delivery limit) land there, and each says which
//!   queue it died in ([`origin_of`]);
//! - shared delay tiers, `<prefix>retry.<ms>ms`, one per distinct delay of all the
//!   retry policies configured: a retry is published to the `<prefix>retry` headers
//!   exchange with the tier in `retry-tier` and its own work queue as routing key;
//!   the tier dead-letters it on expiry through the default exchange with that
//!   routing key, back to its queue.

use std::collections::BTreeSet;
use std::time::Duration;

use airline_contracts::topology::{
    COMMANDS_EXCHANGE, DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE, MAX_QUEUES, ORIGIN_QUEUE_HEADER,
    PARKING, QUEUES, RETRY_EXCHANGE, RETRY_TIER_HEADER, consumed_queue, consumed_queues,
    exchange_of, queues_without_tiers, tier_name,
};
use airline_contracts::{Names, QueueSpec};
use anyhow::Context as _;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

use crate::broker::DELIVERY_LIMIT;
use crate::config::{Config, retry_variable};

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.to_owned()))
}

/// Every distinct delay of the retry policies of the consumed queues, shortest
/// first: one shared tier queue each.
#[must_use]
pub fn tiers(config: &Config) -> Vec<Duration> {
    let set: BTreeSet<Duration> = consumed_queues()
        .flat_map(|q| config.retry_for(q.name).tiers())
        .collect();
    set.into_iter().collect()
}

/// The arguments of the message on the retry exchange that routes it to the tier of
/// `delay`: the header [`RETRY_TIER_HEADER`].
#[must_use]
pub fn tier_header(delay: Duration) -> (&'static str, AMQPValue) {
    (RETRY_TIER_HEADER, text(&tier_name(delay)))
}

/// Checks that the retry policies leave the deployment within [`MAX_QUEUES`]
/// queues. `is_set` tells which variables the environment sets.
///
/// # Errors
/// The variable to change (the set retry variable contributing the most tiers,
/// else `AIRLINE_RETRY`) and why.
pub fn check_queue_budget(
    config: &Config,
    is_set: impl Fn(&str) -> bool,
) -> Result<(), (String, String)> {
    let tiers = tiers(config);
    let total = queues_without_tiers() + tiers.len();
    if total <= MAX_QUEUES {
        return Ok(());
    }
    let mut blamed = ("AIRLINE_RETRY".to_owned(), 0);
    let default_used = consumed_queues().any(|q| !config.retry.overrides.contains_key(q.name));
    if default_used && is_set("AIRLINE_RETRY") {
        blamed.1 = config.retry.default.tiers().len();
    }
    for q in consumed_queues() {
        let variable = retry_variable(q.name);
        let n = config.retry_for(q.name).tiers().len();
        if is_set(&variable) && n > blamed.1 {
            blamed = (variable, n);
        }
    }
    let shown: Vec<String> = tiers.iter().map(|d| tier_name(*d)).collect();
    Err((
        blamed.0,
        format!(
            "the retry policies use {} distinct delays ({}), one shared delay queue each; with the {} other queues a deployment would declare {total} queues, over the limit of {MAX_QUEUES}: use fewer attempts, a lower cap, or delays the other policies use",
            tiers.len(),
            shown.join(", "),
            queues_without_tiers(),
        ),
    ))
}

/// Declares every exchange, queue and binding. Declaring is idempotent: every
/// service does it at start.
///
/// Work queues are durable quorum queues. A message rejected, or redelivered more
/// than [`DELIVERY_LIMIT`] times, is dead-lettered by the broker through the
/// dead-letter exchange, under the queue's own name, to the shared dead-letter
/// queue, at least once (`x-dead-letter-strategy`).
///
/// # Errors
/// When the broker refuses a declaration, e.g. a queue exists with other arguments.
pub async fn declare_topology(
    channel: &Channel,
    names: &Names,
    config: &Config,
) -> anyhow::Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    for (name, kind) in [
        (COMMANDS_EXCHANGE, ExchangeKind::Direct),
        (EVENTS_EXCHANGE, ExchangeKind::Topic),
        (DEAD_LETTER_EXCHANGE, ExchangeKind::Direct),
        (RETRY_EXCHANGE, ExchangeKind::Headers),
    ] {
        channel
            .exchange_declare(
                names.resolve(name).into(),
                kind,
                durable,
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("declaring exchange {}", names.resolve(name)))?;
    }
    let queue_options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let quorum = || table(&[("x-queue-type", text("quorum"))]);
    let dlx = names.resolve(DEAD_LETTER_EXCHANGE);
    let retry_exchange = names.resolve(RETRY_EXCHANGE);
    for delay in tiers(config) {
        let tier = names.tier(delay);
        // Expired messages are dead-lettered through the default exchange under
        // their own routing key: the work queue they were published for.
        let args = table(&[
            ("x-queue-type", text("quorum")),
            ("x-dead-letter-exchange", text("")),
            ("x-dead-letter-strategy", text("at-least-once")),
            ("x-overflow", text("reject-publish")),
        ]);
        channel
            .queue_declare(tier.clone().into(), queue_options, args)
            .await
            .with_context(|| format!("declaring queue {tier}"))?;
        let (header, value) = tier_header(delay);
        channel
            .queue_bind(
                tier.clone().into(),
                retry_exchange.clone().into(),
                "".into(),
                QueueBindOptions::default(),
                table(&[("x-match", text("all")), (header, value)]),
            )
            .await
            .with_context(|| format!("binding {tier} to {retry_exchange}"))?;
    }
    let dead_letters = names.dead_letters();
    channel
        .queue_declare(dead_letters.clone().into(), queue_options, quorum())
        .await
        .with_context(|| format!("declaring queue {dead_letters}"))?;
    for queue in QUEUES {
        let name = names.resolve(queue.name);
        if queue.consumer == PARKING {
            // A parking queue (the booking DLQ): read by operators, never consumed
            // by a service, so it is not dead-lettered and has no retries.
            channel
                .queue_declare(name.clone().into(), queue_options, quorum())
                .await
                .with_context(|| format!("declaring queue {name}"))?;
            bind_messages(channel, names, queue, &name).await?;
            continue;
        }
        channel
            .queue_bind(
                dead_letters.clone().into(),
                dlx.clone().into(),
                name.clone().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("binding {dead_letters} to the dead letters of {name}"))?;
        let args = table(&[
            ("x-queue-type", text("quorum")),
            ("x-dead-letter-exchange", text(&dlx)),
            ("x-dead-letter-routing-key", text(&name)),
            ("x-dead-letter-strategy", text("at-least-once")),
            ("x-overflow", text("reject-publish")),
            ("x-delivery-limit", AMQPValue::LongLongInt(DELIVERY_LIMIT)),
        ]);
        channel
            .queue_declare(name.clone().into(), queue_options, args)
            .await
            .with_context(|| format!("declaring queue {name}"))?;
        bind_messages(channel, names, queue, &name).await?;
    }
    Ok(())
}

async fn bind_messages(
    channel: &Channel,
    names: &Names,
    queue: &QueueSpec,
    name: &str,
) -> anyhow::Result<()> {
    if queue.watches_dead_letters {
        // A copy of what dies in each watched queue: the dead-letter exchange routes
        // by the name of the queue a message died in.
        for watched in queue.messages {
            channel
                .queue_bind(
                    name.into(),
                    names.resolve(DEAD_LETTER_EXCHANGE).into(),
                    names.resolve(watched).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .with_context(|| format!("binding {name} to the dead letters of {watched}"))?;
        }
        return Ok(());
    }
    for t in queue.message_types() {
        channel
            .queue_bind(
                name.into(),
                names.resolve(exchange_of(t.kind)).into(),
                t.name.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("binding {name} to {}", t.name))?;
    }
    Ok(())
}

/// Every queue [`declare_topology`] declares, by broker name (for tools and tests
/// that remove a namespace).
#[must_use]
pub fn declared_queues(names: &Names, config: &Config) -> Vec<String> {
    let mut out: Vec<String> = QUEUES.iter().map(|q| names.resolve(q.name)).collect();
    out.push(names.dead_letters());
    out.extend(tiers(config).into_iter().map(|d| names.tier(d)));
    out
}

/// Every exchange [`declare_topology`] declares, by broker name.
#[must_use]
pub fn declared_exchanges(names: &Names) -> Vec<String> {
    [
        COMMANDS_EXCHANGE,
        EVENTS_EXCHANGE,
        DEAD_LETTER_EXCHANGE,
        RETRY_EXCHANGE,
    ]
    .iter()
    .map(|x| names.resolve(x))
    .collect()
}

/// A queue of the old layout (one DLQ and one set of retry tiers per work queue),
/// which `airline migrate` removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OldQueue {
    /// Its broker name.
    pub name: String,
    /// The work queue it belonged to.
    pub queue: &'static QueueSpec,
    /// For a retry tier, its delay; `None` for a DLQ.
    pub tier: Option<Duration>,
}

/// The queues the old layout declared under `names` with `config`'s retry policies
/// or the default ones: each consumed queue's `<queue>.dlq` and its
/// `<queue>.retry.<ms>ms` tiers.
#[must_use]
pub fn old_layout_queues(names: &Names, config: &Config) -> Vec<OldQueue> {
    let defaults = Config::default();
    let mut out = Vec::new();
    for queue in consumed_queues() {
        out.push(OldQueue {
            name: names.old_dlq(queue.name),
            queue,
            tier: None,
        });
        let delays: BTreeSet<Duration> = [config, &defaults]
            .iter()
            .flat_map(|c| c.retry_for(queue.name).tiers())
            .collect();
        out.extend(delays.into_iter().map(|d| OldQueue {
            name: names.old_tier(queue.name, d),
            queue,
            tier: Some(d),
        }));
    }
    out
}

fn header_text(headers: &FieldTable, key: &str) -> Option<String> {
    match headers.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// The consumed queue a dead letter died in, first found of:
///
/// 1. the routing key it was delivered with, when it came through the dead-letter
///    exchange: our consumers publish there under their queue's name, and every
///    work queue's `x-dead-letter-routing-key` is its own name, so this is the queue
///    it has just died in (headers may have been copied along from an earlier
///    death: a watch queue's copy of another queue's dead letter);
/// 2. `x-origin-queue`, the logical name our consumers record (and `airline
///    migrate` on what it moves from an old DLQ);
/// 3. the newest entry of the broker's `x-death` that names a consumed queue (an
///    `expired` death in a delay tier is skipped), then `x-first-death-queue`;
/// 4. `x-queue`, the broker name our consumers recorded before `x-origin-queue`.
///
/// `None` when none names a consumed queue of this prefix.
#[must_use]
pub fn origin_of(
    names: &Names,
    headers: Option<&FieldTable>,
    routing_key: &str,
) -> Option<&'static QueueSpec> {
    let by_broker_name = |n: &str| names.strip(n).and_then(consumed_queue);
    if let Some(q) = by_broker_name(routing_key) {
        return Some(q);
    }
    let empty = FieldTable::default();
    let headers = headers.unwrap_or(&empty);
    if let Some(q) = header_text(headers, ORIGIN_QUEUE_HEADER).and_then(|n| consumed_queue(&n)) {
        return Some(q);
    }
    if let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") {
        let found = deaths.as_slice().iter().find_map(|d| match d {
            AMQPValue::FieldTable(t) => header_text(t, "queue").and_then(|n| by_broker_name(&n)),
            _ => None,
        });
        if found.is_some() {
            return found;
        }
    }
    header_text(headers, "x-first-death-queue")
        .and_then(|n| by_broker_name(&n))
        .or_else(|| header_text(headers, "x-queue").and_then(|n| by_broker_name(&n)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::FieldArray;

    #[test]
    fn a_deployment_declares_at_most_40_queues_with_the_default_configuration() {
        let config = Config::default();
        let names = Names::default();
        let queues = declared_queues(&names, &config);
        assert!(
            queues.len() <= MAX_QUEUES,
            "{} queues: {queues:?}",
            queues.len()
        );
        // 19 of the contracts, the shared DLQ, 14 tiers (1, 2 and 4 s; the
        // webhooks' 5 s to 1 h).
        assert_eq!(queues.len(), 34, "{queues:?}");
        let mut unique = queues.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), queues.len(), "no queue twice");
        assert!(queues.contains(&"airline.dead-letters".to_owned()));
        assert!(queues.contains(&"airline.retry.1000ms".to_owned()));
        assert!(queues.contains(&"airline.retry.3600000ms".to_owned()));
        assert!(
            !queues
                .iter()
                .any(|q| q.ends_with(".dlq") && q != "airline.booking.dlq")
        );
        assert_eq!(check_queue_budget(&config, |_| false), Ok(()));
        // The old layout: a DLQ per consumed queue (18) and three tiers each but
        // the webhooks' eleven (17 * 3 + 11), with the 19 queues of the contracts:
        // 99 queues.
        let old = old_layout_queues(&names, &config);
        assert_eq!(old.len() + QUEUES.len(), 99);
        assert!(old.iter().all(|q| !queues.contains(&q.name)));
        assert!(
            old.iter()
                .any(|q| q.name == "airline.payment.collect.retry.2000ms")
        );
        assert!(old.iter().any(|q| q.name == "airline.payment.collect.dlq"));
    }

    #[test]
    fn policies_with_too_many_delays_are_refused_naming_their_variable() {
        let config = Config::from_lookup(|k| {
            (k == "AIRLINE_RETRY_PAYMENT_COLLECT").then(|| "attempts=30,base=1ms,cap=1d".into())
        });
        let err = config.expect_err("over the limit").to_string();
        assert!(
            err.starts_with("AIRLINE_RETRY_PAYMENT_COLLECT=\"attempts=30,base=1ms,cap=1d\""),
            "{err}"
        );
        assert!(err.contains("over the limit of 40"), "{err}");
        let err = Config::from_lookup(|k| {
            (k == "AIRLINE_RETRY").then(|| "attempts=12,base=100ms,cap=1d".into())
        })
        .expect_err("with the webhooks' eleven, over the limit")
        .to_string();
        assert!(err.starts_with("AIRLINE_RETRY="), "{err}");
        // Shared delays cost nothing more.
        assert!(
            Config::from_lookup(|k| {
                (k == "AIRLINE_RETRY_PAYMENT_COLLECT").then(|| "attempts=12,base=5s,cap=1h".into())
            })
            .is_ok()
        );
    }

    fn headers(entries: &[(&str, AMQPValue)]) -> FieldTable {
        table(entries)
    }

    #[test]
    fn a_dead_letter_says_which_queue_it_died_in() {
        let names = Names::new("t.");
        let origin = |h: &FieldTable, key: &str| origin_of(&names, Some(h), key).map(|q| q.name);
        let shared = "t.dead-letters";
        // Through the dead-letter exchange: the routing key is the queue it died in,
        // whatever the headers copied from an earlier death say (a watch queue's
        // copy of a reserve-seat dead letter, dead-lettered by the broker).
        let copied = headers(&[
            (ORIGIN_QUEUE_HEADER, text("flight.reserve-seat")),
            ("x-queue", text("t.flight.reserve-seat")),
        ]);
        assert_eq!(
            origin(&copied, "t.booking.step-dead-lettered"),
            Some("booking.step-dead-lettered")
        );
        // Put straight into the shared DLQ (moved by `airline migrate`): headers.
        assert_eq!(origin(&copied, shared), Some("flight.reserve-seat"));
        let old = headers(&[("x-queue", text("t.flight.reserve-seat"))]);
        assert_eq!(origin(&old, shared), Some("flight.reserve-seat"));
        // Retried through a tier (an `expired` death), then dead-lettered by the
        // broker at its delivery limit: the newest death naming a work queue.
        let death = |queue: &str, reason: &str| {
            AMQPValue::FieldTable(headers(&[("queue", text(queue)), ("reason", text(reason))]))
        };
        let broker = headers(&[
            (
                "x-death",
                AMQPValue::FieldArray(FieldArray::from(vec![
                    death("t.retry.1000ms", "expired"),
                    death("t.payment.refund", "delivery_limit"),
                ])),
            ),
            ("x-first-death-queue", text("t.retry.1000ms")),
        ]);
        assert_eq!(origin(&broker, shared), Some("payment.refund"));
        assert_eq!(
            origin(&FieldTable::default(), "t.booking.requested"),
            Some("booking.requested")
        );
        // Another prefix's queue, a tier or a parking queue is no origin.
        assert_eq!(origin(&FieldTable::default(), "u.booking.requested"), None);
        assert_eq!(origin(&FieldTable::default(), "t.retry.1000ms"), None);
        assert_eq!(origin(&FieldTable::default(), "t.booking.dlq"), None);
        assert_eq!(origin(&FieldTable::default(), shared), None);
    }
}
