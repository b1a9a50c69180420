//! Configuration from environment variables, with safe local defaults.
//!
//! Every variable is declared once, in [`VARIABLES`] (name, default, meaning and
//! how it is set); parsing walks that table, and a unit test holds README.md's
//! configuration table to it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use airline_contracts::QUEUES;
use airline_contracts::topology::DEFAULT_PREFIX;

use crate::retry::RetryPolicy;

mod variables;

pub use variables::{VARIABLES, Variable};

/// A step a fault can be injected into (`AIRLINE_FAULT_STEPS`), so that each
/// compensation chain can be run end to end. Off by default.
///
/// The four forward steps fail as a business outcome (the saga compensates); the two
/// compensation steps fail transiently on every try (their retries run out, and the
/// saga is parked when its deadline passes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultStep {
    /// `reserve-seat`: the catalog refuses the seat.
    ReserveSeat,
    /// `reserve-booking`: the booking cannot be reserved.
    ReserveBooking,
    /// `collect-payment`: the payment is declined.
    CollectPayment,
    /// `confirm-booking`: the booking cannot be confirmed.
    ConfirmBooking,
    /// `refund-payment`: the refund fails transiently, every time.
    RefundPayment,
    /// `release-seat`: the seat release fails transiently, every time.
    ReleaseSeat,
    /// `drain-commit`: not a saga step; `airline dlq drain` crashes after committing
    /// its first batch, before acking it (to test that nothing is stored twice).
    DrainCommit,
}

impl FaultStep {
    /// Every step, in the order error messages list them.
    pub const ALL: [Self; 7] = [
        Self::ReserveSeat,
        Self::ReserveBooking,
        Self::CollectPayment,
        Self::ConfirmBooking,
        Self::RefundPayment,
        Self::ReleaseSeat,
        Self::DrainCommit,
    ];

    /// The name `AIRLINE_FAULT_STEPS` uses.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::ReserveSeat => "reserve-seat",
            Self::ReserveBooking => "reserve-booking",
            Self::CollectPayment => "collect-payment",
            Self::ConfirmBooking => "confirm-booking",
            Self::RefundPayment => "refund-payment",
            Self::ReleaseSeat => "release-seat",
            Self::DrainCommit => "drain-commit",
        }
    }
}

impl std::fmt::Display for FaultStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for FaultStep {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|step| step.name() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|s| s.name()).collect();
                format!("unknown step `{s}`; known: {}", known.join(", "))
            })
    }
}

/// Everything a service reads from its environment, by concern. `Debug` hides the
/// passwords.
#[derive(Clone, Debug)]
pub struct Config {
    /// The broker and the names on it.
    pub broker: BrokerConfig,
    /// The database.
    pub database: DatabaseConfig,
    /// The HTTP listener.
    pub http: HttpConfig,
    /// The outbox relay.
    pub outbox: OutboxConfig,
    /// How transient handler errors are retried.
    pub retry: RetryConfig,
    /// The saga's deadlines.
    pub saga: SagaConfig,
    /// Faults injected on purpose.
    pub faults: FaultConfig,
    /// The dead-letter store.
    pub dead_letters: DeadLetterConfig,
    /// The inbox's de-duplication window.
    pub inbox: InboxConfig,
    /// The simulated payment provider.
    pub payment: PaymentConfig,
    /// Webhook deliveries.
    pub webhooks: WebhookConfig,
}

/// The broker section.
#[derive(Clone)]
pub struct BrokerConfig {
    /// `AMQP_URL`: the broker, with its vhost.
    pub url: String,
    /// `AIRLINE_PREFIX`: put before every exchange and queue name.
    pub prefix: String,
    /// `AIRLINE_PREFETCH`: unacknowledged deliveries per consumer, and so the
    /// number of messages a consumer handles at once.
    pub prefetch: u16,
    /// `AIRLINE_DELIVERY_BATCH`: the most ready deliveries of one queue handled in
    /// one transaction (1: each in its own).
    pub delivery_batch: u16,
}

/// The database section.
#[derive(Clone)]
pub struct DatabaseConfig {
    /// `DATABASE_URL`: the database; created if missing.
    pub url: String,
    /// `AIRLINE_DB_POOL`: database connections per process.
    pub pool: u32,
}

/// The HTTP section.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// `AIRLINE_HTTP_ADDR`: where the gateway, or a worker's /healthz, listens.
    pub addr: SocketAddr,
    /// `AIRLINE_CORS_ORIGINS`: comma-separated origins (`https://app.example.com`)
    /// whose browser pages may call the gateway; none (CORS off) by default.
    pub cors_origins: Vec<String>,
}

/// The outbox section.
#[derive(Clone, Debug)]
pub struct OutboxConfig {
    /// `AIRLINE_OUTBOX_BATCH`: outbox rows the relay publishes per transaction.
    pub batch: i64,
}

/// The retry section.
#[derive(Clone, Debug)]
pub struct RetryConfig {
    /// `AIRLINE_RETRY` (`attempts=4,base=1s,cap=30s`): how every queue retries.
    pub default: RetryPolicy,
    /// `AIRLINE_RETRY_<QUEUE>` (queue name in upper snake case, e.g.
    /// `AIRLINE_RETRY_PAYMENT_COLLECT`): a queue's own policy, by logical queue
    /// name; the webhook queue has one by default ([`WEBHOOK_RETRY`]).
    pub overrides: BTreeMap<String, RetryPolicy>,
}

/// The saga section.
#[derive(Clone, Debug)]
pub struct SagaConfig {
    /// `AIRLINE_STEP_DEADLINE`: how long the saga waits for a seat step.
    pub step_deadline: Duration,
    /// `AIRLINE_PAYMENT_DEADLINE`: how long the saga waits for a payment step.
    pub payment_deadline: Duration,
    /// `AIRLINE_HOLD_DEADLINE`: how long a saga whose forward step was
    /// dead-lettered is held for an operator (replay resumes it) before it is
    /// compensated anyway.
    pub hold_deadline: Duration,
}

/// The fault-injection section.
#[derive(Clone, Debug, Default)]
pub struct FaultConfig {
    /// `AIRLINE_FAULT_STEPS`: comma-separated steps that fail on purpose.
    pub steps: BTreeSet<FaultStep>,
}

/// The dead-letter store section.
#[derive(Clone, Debug)]
pub struct DeadLetterConfig {
    /// `AIRLINE_DLQ_MAX`: the most dead letters the store keeps; draining stops
    /// when it is full.
    pub max: i64,
    /// `AIRLINE_DLQ_RETENTION`: how long replayed and discarded dead letters are
    /// kept before draining deletes them.
    pub retention: Duration,
}

/// The inbox section.
#[derive(Clone, Debug)]
pub struct InboxConfig {
    /// `AIRLINE_INBOX_RETENTION`: how long an inbox row is kept, so that a second
    /// delivery of the same message is recognised; older rows are pruned.
    pub retention: Duration,
}

/// The simulated payment provider section.
#[derive(Clone, Debug)]
pub struct PaymentConfig {
    /// `AIRLINE_PAYMENT_LATENCY`: simulated provider latency per call.
    pub latency: Duration,
    /// `AIRLINE_PAYMENT_FAILURE_RATE`: share (0 to 1) of simulated provider calls
    /// that fail transiently.
    pub failure_rate: f64,
}

/// The webhook section.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// `AIRLINE_WEBHOOK_ALLOW_PRIVATE` (`true`/`false`): let webhook URLs lead to
    /// loopback, private and link-local addresses (tests and local use only).
    pub allow_private: bool,
    /// `AIRLINE_WEBHOOK_DISABLE_AFTER`: how long a webhook endpoint may keep
    /// failing before a failure disables it.
    pub disable_after: Duration,
}

/// How webhook deliveries retry unless `AIRLINE_RETRY_NOTIFY_WEBHOOK_DELIVERIES`
/// says otherwise (`AIRLINE_RETRY` does not apply to them): 5 s doubling up to an
/// hour, 16 attempts, about six and a half hours in all.
pub const WEBHOOK_RETRY: RetryPolicy = RetryPolicy {
    attempts: 16,
    base: Duration::from_secs(5),
    cap: Duration::from_secs(3600),
};

// Written out so that a new field cannot be left out of the output (the
// destructuring stops compiling), with the URL's password hidden.
impl std::fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            url,
            prefix,
            prefetch,
            delivery_batch,
        } = self;
        f.debug_struct("BrokerConfig")
            .field("url", &redact_url(url))
            .field("prefix", prefix)
            .field("prefetch", prefetch)
            .field("delivery_batch", delivery_batch)
            .finish()
    }
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self { url, pool } = self;
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_url(url))
            .field("pool", pool)
            .finish()
    }
}

/// A variable that is set but cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{name}={value:?} is not valid: {reason}")]
pub struct ConfigError {
    name: String,
    value: String,
    reason: String,
}

impl Default for Config {
    /// The defaults [`VARIABLES`] lists (a unit test holds the two together).
    fn default() -> Self {
        Self {
            broker: BrokerConfig {
                url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
                prefix: DEFAULT_PREFIX.into(),
                prefetch: 32,
                delivery_batch: 16,
            },
            database: DatabaseConfig {
                url: "postgres://postgres@127.0.0.1:5432/airline".into(),
                pool: 20,
            },
            http: HttpConfig {
                addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
                cors_origins: Vec::new(),
            },
            outbox: OutboxConfig { batch: 200 },
            retry: RetryConfig {
                default: RetryPolicy::default(),
                overrides: BTreeMap::from([(
                    "notify.webhook-deliveries".to_owned(),
                    WEBHOOK_RETRY,
                )]),
            },
            saga: SagaConfig {
                step_deadline: Duration::from_secs(10),
                payment_deadline: Duration::from_secs(30),
                hold_deadline: Duration::from_secs(24 * 3600),
            },
            faults: FaultConfig::default(),
            dead_letters: DeadLetterConfig {
                max: 100_000,
                retention: Duration::from_secs(14 * 24 * 3600),
            },
            inbox: InboxConfig {
                retention: Duration::from_secs(7 * 24 * 3600),
            },
            payment: PaymentConfig {
                latency: Duration::ZERO,
                failure_rate: 0.0,
            },
            webhooks: WebhookConfig {
                allow_private: false,
                disable_after: Duration::from_secs(24 * 3600),
            },
        }
    }
}

impl Config {
    /// Reads the environment; unset variables take their defaults.
    ///
    /// # Errors
    /// [`ConfigError`] names the first variable whose value cannot be used.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `lookup` (the environment, or a test's map).
    ///
    /// # Errors
    /// [`ConfigError`] names the first variable whose value cannot be used.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut config = Self::default();
        for variable in VARIABLES {
            let Some(set) = variable.set else { continue };
            if let Some(v) = lookup(variable.name) {
                set(&mut config, &v).map_err(|reason| invalid(variable.name, &v, &reason))?;
            }
        }
        // After `AIRLINE_RETRY`, which a queue's own policy starts from.
        for queue in QUEUES {
            let name = retry_variable(queue.name);
            if let Some(v) = lookup(&name) {
                let policy = RetryPolicy::parse(&v, config.retry_for(queue.name))
                    .map_err(|e| invalid(&name, &v, &e))?;
                config.retry.overrides.insert(queue.name.to_owned(), policy);
            }
        }
        // Each distinct retry delay is a shared queue: the deployment's queue budget.
        crate::topology::check_queue_budget(&config, |name| lookup(name).is_some()).map_err(
            |(name, reason)| invalid(&name, &lookup(&name).unwrap_or_default(), &reason),
        )?;
        Ok(config)
    }

    /// The retry policy of a queue (logical name).
    #[must_use]
    pub fn retry_for(&self, queue: &str) -> RetryPolicy {
        self.retry
            .overrides
            .get(queue)
            .copied()
            .unwrap_or(self.retry.default)
    }

    /// Whether a fault is injected into `step`.
    #[must_use]
    pub fn fails(&self, step: FaultStep) -> bool {
        self.faults.steps.contains(&step)
    }
}

// The value is shown redacted: a URL's password must not reach a log.
fn invalid(name: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError {
        name: name.to_owned(),
        value: redact_url(value),
        reason: reason.to_owned(),
    }
}

/// The variable that sets a queue's own retry policy: `payment.collect` →
/// `AIRLINE_RETRY_PAYMENT_COLLECT`.
#[must_use]
pub fn retry_variable(queue: &str) -> String {
    let upper: String = queue
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("AIRLINE_RETRY_{upper}")
}

/// A URL with its password replaced by `***`, for messages and logs.
#[must_use]
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // The last `@` ends the user info (a password may hold an unencoded `@`).
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_are_local() {
        let c = from(&[]).expect("defaults");
        assert_eq!(c.broker.url, "amqp://guest:guest@127.0.0.1:5672/%2f");
        assert_eq!(c.database.url, "postgres://postgres@127.0.0.1:5432/airline");
        assert_eq!(c.http.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.broker.prefix, "airline.");
        assert!(c.faults.steps.is_empty());
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = from(&[("AIRLINE_PREFETCH", "many")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("AIRLINE_PREFETCH=\"many\""), "{err}");
        let err = from(&[("AIRLINE_FAULT_STEPS", "explode")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown step `explode`"), "{err}");
        let err = from(&[("DATABASE_URL", "mysql://x")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("DATABASE_URL"), "{err}");
    }

    #[test]
    fn zero_and_negative_sizes_are_refused_by_name() {
        for name in [
            "AIRLINE_PREFETCH",
            "AIRLINE_DB_POOL",
            "AIRLINE_OUTBOX_BATCH",
        ] {
            let err = from(&[(name, "0")]).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{name}=\"0\"")), "{err}");
        }
        let err = from(&[("AIRLINE_DLQ_MAX", "-1")]).unwrap_err().to_string();
        assert!(err.starts_with("AIRLINE_DLQ_MAX="), "{err}");
        assert_eq!(
            from(&[("AIRLINE_DLQ_MAX", "0")])
                .expect("valid")
                .dead_letters
                .max,
            0
        );
    }

    #[test]
    fn fault_steps_parse() {
        let c = from(&[("AIRLINE_FAULT_STEPS", "confirm-booking, reserve-seat")]).expect("valid");
        assert!(
            c.fails(FaultStep::ConfirmBooking)
                && c.fails(FaultStep::ReserveSeat)
                && !c.fails(FaultStep::CollectPayment)
        );
    }

    #[test]
    fn fault_steps_name_themselves_and_list_the_known_ones() {
        for step in FaultStep::ALL {
            assert_eq!(step.name().parse::<FaultStep>(), Ok(step));
            assert_eq!(step.to_string(), step.name());
        }
        let err = from(&[("AIRLINE_FAULT_STEPS", "drain-commit,explode")])
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with(
                "unknown step `explode`; known: reserve-seat, reserve-booking, \
                 collect-payment, confirm-booking, refund-payment, release-seat, drain-commit"
            ),
            "{err}"
        );
        let c = from(&[("AIRLINE_FAULT_STEPS", " drain-commit ,, ")]).expect("valid");
        assert_eq!(
            c.faults.steps.into_iter().collect::<Vec<_>>(),
            [FaultStep::DrainCommit]
        );
    }

    #[test]
    fn retry_policies_per_queue() {
        let c = from(&[
            ("AIRLINE_RETRY", "attempts=3"),
            ("AIRLINE_RETRY_PAYMENT_COLLECT", "attempts=6,base=200ms"),
        ])
        .expect("valid");
        assert_eq!(c.retry_for("flight.reserve-seat").attempts, 3);
        let collect = c.retry_for("payment.collect");
        assert_eq!(
            (collect.attempts, collect.base),
            (6, Duration::from_millis(200))
        );
        let err = from(&[("AIRLINE_RETRY_PAYMENT_COLLECT", "attempts=x")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("AIRLINE_RETRY_PAYMENT_COLLECT="), "{err}");
        let err = from(&[("AIRLINE_PAYMENT_FAILURE_RATE", "2")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("AIRLINE_PAYMENT_FAILURE_RATE"), "{err}");
        let c = from(&[("AIRLINE_PAYMENT_DEADLINE", "3s")]).expect("valid");
        assert_eq!(c.saga.payment_deadline, Duration::from_secs(3));
    }

    #[test]
    fn durations_are_humantime_everywhere() {
        let c = from(&[
            ("AIRLINE_STEP_DEADLINE", "200ms"),
            ("AIRLINE_HOLD_DEADLINE", "1h 30m"),
            ("AIRLINE_DLQ_RETENTION", "14d"),
            ("AIRLINE_PAYMENT_LATENCY", "1.5s"),
            ("AIRLINE_RETRY", "attempts=4,base=1s,cap=30s"),
        ])
        .expect("valid");
        assert_eq!(c.saga.step_deadline, Duration::from_millis(200));
        assert_eq!(c.saga.hold_deadline, Duration::from_secs(5400));
        assert_eq!(c.dead_letters.retention, Duration::from_secs(14 * 86_400));
        assert_eq!(c.payment.latency, Duration::from_millis(1500));
        assert_eq!(c.retry.default, RetryPolicy::default());
        let err = from(&[("AIRLINE_HOLD_DEADLINE", "soon")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("AIRLINE_HOLD_DEADLINE=\"soon\""), "{err}");
    }

    #[test]
    fn the_inbox_keeps_a_week_unless_told_and_never_under_a_minute() {
        assert_eq!(
            from(&[]).expect("defaults").inbox.retention,
            Duration::from_secs(7 * 86_400)
        );
        let c = from(&[("AIRLINE_INBOX_RETENTION", "3m")]).expect("valid");
        assert_eq!(c.inbox.retention, Duration::from_secs(180));
        for bad in ["30s", "0s", "a while"] {
            let err = from(&[("AIRLINE_INBOX_RETENTION", bad)])
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("AIRLINE_INBOX_RETENTION="), "{err}");
        }
    }

    #[test]
    fn webhooks_have_their_own_retries_and_settings() {
        let c = from(&[("AIRLINE_RETRY", "attempts=2")]).expect("valid");
        assert_eq!(c.retry_for("notify.webhook-deliveries"), WEBHOOK_RETRY);
        assert!(!c.webhooks.allow_private);
        assert_eq!(c.webhooks.disable_after, Duration::from_secs(86_400));
        let c = from(&[
            (
                "AIRLINE_RETRY_NOTIFY_WEBHOOK_DELIVERIES",
                "base=100ms,cap=1s",
            ),
            ("AIRLINE_WEBHOOK_ALLOW_PRIVATE", "true"),
            ("AIRLINE_WEBHOOK_DISABLE_AFTER", "5m"),
        ])
        .expect("valid");
        let webhooks = c.retry_for("notify.webhook-deliveries");
        assert_eq!(
            (webhooks.attempts, webhooks.base),
            (WEBHOOK_RETRY.attempts, Duration::from_millis(100))
        );
        assert!(c.webhooks.allow_private);
        assert_eq!(c.webhooks.disable_after, Duration::from_secs(300));
        let err = from(&[("AIRLINE_WEBHOOK_ALLOW_PRIVATE", "yes")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("AIRLINE_WEBHOOK_ALLOW_PRIVATE="), "{err}");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("amqp://guest:secret@h:5672/%2f"),
            "amqp://guest:***@h:5672/%2f"
        );
        assert_eq!(
            redact_url("postgres://postgres@h/db"),
            "postgres://postgres@h/db"
        );
        let c = from(&[
            ("AMQP_URL", "amqp://u:secret@h:5672/%2f"),
            ("DATABASE_URL", "postgres://u:secret@h/db"),
        ])
        .expect("valid");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("secret") && shown.contains("u:***@h"),
            "{shown}"
        );
        let err = from(&[("DATABASE_URL", "mysql://u:secret@h/db")])
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secret"), "{err}");
    }
}
