//! Configuration from environment variables, with safe local defaults.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use airline_contracts::QUEUES;
use airline_contracts::topology::DEFAULT_PREFIX;

use crate::retry::RetryPolicy;

/// The saga steps a fault can be injected into (`AIRLINE_FAULT_STEPS`), so that each
/// compensation chain can be run end to end. Off by default.
///
/// The four forward steps fail as a business outcome (the saga compensates); the two
/// compensation steps fail transiently on every try (their retries run out, and the
/// saga is parked when its deadline passes).
pub const FAULT_STEPS: &[&str] = &[
    "reserve-seat",
    "reserve-booking",
    "collect-payment",
    "confirm-booking",
    "refund-payment",
    "release-seat",
    // Not a saga step: `airline dlq drain` crashes after committing its first batch,
    // before acking it (to test that nothing is stored twice).
    "drain-commit",
];

/// Everything a service reads from its environment. `Debug` hides the passwords.
#[derive(Clone)]
pub struct Config {
    /// `AMQP_URL`: the broker, with its vhost.
    pub amqp_url: String,
    /// `DATABASE_URL`: the database; created if missing.
    pub database_url: String,
    /// `AIRLINE_HTTP_ADDR`: where the gateway, or a worker's /healthz, listens.
    pub http_addr: SocketAddr,
    /// `AIRLINE_PREFIX`: put before every exchange and queue name.
    pub prefix: String,
    /// `AIRLINE_PREFETCH`: unacknowledged deliveries per consumer, and so the
    /// number of messages a consumer handles at once.
    pub prefetch: u16,
    /// `AIRLINE_DB_POOL`: database connections per process.
    pub db_pool: u32,
    /// `AIRLINE_OUTBOX_BATCH`: outbox rows the relay publishes per transaction.
    pub outbox_batch: i64,
    /// `AIRLINE_FAULT_STEPS`: comma-separated saga steps that fail on purpose.
    pub fault_steps: BTreeSet<String>,
    /// `AIRLINE_RETRY` (`attempts=4,base=1s,cap=30s`): how every queue retries.
    pub retry: RetryPolicy,
    /// `AIRLINE_RETRY_<QUEUE>` (queue name in upper snake case, e.g.
    /// `AIRLINE_RETRY_PAYMENT_COLLECT`): a queue's own policy.
    pub retry_overrides: BTreeMap<String, RetryPolicy>,
    /// `AIRLINE_STEP_DEADLINE`: how long the saga waits for a seat step.
    pub step_deadline: Duration,
    /// `AIRLINE_PAYMENT_DEADLINE`: how long the saga waits for a payment step.
    pub payment_deadline: Duration,
    /// `AIRLINE_HOLD_DEADLINE`: how long a saga whose forward step was
    /// dead-lettered is held for an operator (replay resumes it) before it is
    /// compensated anyway.
    pub hold_deadline: Duration,
    /// `AIRLINE_DLQ_MAX`: the most dead letters the store keeps; draining stops
    /// when it is full.
    pub dlq_max: i64,
    /// `AIRLINE_DLQ_RETENTION`: how long replayed and discarded dead letters are
    /// kept before draining deletes them.
    pub dlq_retention: Duration,
    /// `AIRLINE_PAYMENT_LATENCY`: simulated provider latency per call.
    pub payment_latency: Duration,
    /// `AIRLINE_PAYMENT_FAILURE_RATE`: share (0 to 1) of simulated provider calls
    /// that fail transiently.
    pub payment_failure_rate: f64,
    /// `AIRLINE_CORS_ORIGINS`: comma-separated origins (`https://app.example.com`)
    /// whose browser pages may call the gateway; none (CORS off) by default.
    pub cors_origins: Vec<String>,
    /// `AIRLINE_WEBHOOK_ALLOW_PRIVATE` (`true`/`false`): let webhook URLs lead to
    /// loopback, private and link-local addresses (tests and local use only).
    pub webhook_allow_private: bool,
    /// `AIRLINE_WEBHOOK_DISABLE_AFTER`: how long a webhook endpoint may keep
    /// failing before a failure disables it.
    pub webhook_disable_after: Duration,
}

/// How webhook deliveries retry unless `AIRLINE_RETRY_NOTIFY_WEBHOOK_DELIVERIES`
/// says otherwise (`AIRLINE_RETRY` does not apply to them): 5 s doubling up to an
/// hour, 16 attempts, about six and a half hours in all.
pub const WEBHOOK_RETRY: RetryPolicy = RetryPolicy {
    attempts: 16,
    base: Duration::from_secs(5),
    cap: Duration::from_secs(3600),
};

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("amqp_url", &redact_url(&self.amqp_url))
            .field("database_url", &redact_url(&self.database_url))
            .field("http_addr", &self.http_addr)
            .field("prefix", &self.prefix)
            .field("prefetch", &self.prefetch)
            .field("db_pool", &self.db_pool)
            .field("outbox_batch", &self.outbox_batch)
            .field("fault_steps", &self.fault_steps)
            .field("retry", &self.retry)
            .field("retry_overrides", &self.retry_overrides)
            .field("step_deadline", &self.step_deadline)
            .field("payment_deadline", &self.payment_deadline)
            .field("hold_deadline", &self.hold_deadline)
            .field("dlq_max", &self.dlq_max)
            .field("dlq_retention", &self.dlq_retention)
            .field("payment_latency", &self.payment_latency)
            .field("payment_failure_rate", &self.payment_failure_rate)
            .field("cors_origins", &self.cors_origins)
            .field("webhook_allow_private", &self.webhook_allow_private)
            .field("webhook_disable_after", &self.webhook_disable_after)
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
    fn default() -> Self {
        Self {
            amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            database_url: "postgres://postgres@127.0.0.1:5432/airline".into(),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            prefix: DEFAULT_PREFIX.into(),
            prefetch: 32,
            db_pool: 20,
            outbox_batch: 200,
            fault_steps: BTreeSet::new(),
            retry: RetryPolicy::default(),
            retry_overrides: BTreeMap::from([(
                "notify.webhook-deliveries".to_owned(),
                WEBHOOK_RETRY,
            )]),
            step_deadline: Duration::from_secs(10),
            payment_deadline: Duration::from_secs(30),
            hold_deadline: Duration::from_secs(24 * 3600),
            dlq_max: 100_000,
            dlq_retention: Duration::from_secs(14 * 24 * 3600),
            payment_latency: Duration::ZERO,
            payment_failure_rate: 0.0,
            cors_origins: Vec::new(),
            webhook_allow_private: false,
            webhook_disable_after: Duration::from_secs(24 * 3600),
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
        if let Some(v) = lookup("AMQP_URL") {
            if !v.starts_with("amqp://") && !v.starts_with("amqps://") {
                return Err(invalid(
                    "AMQP_URL",
                    &v,
                    "must start with amqp:// or amqps://",
                ));
            }
            config.amqp_url = v;
        }
        if let Some(v) = lookup("DATABASE_URL") {
            if !v.starts_with("postgres://") && !v.starts_with("postgresql://") {
                return Err(invalid(
                    "DATABASE_URL",
                    &redact_url(&v),
                    "must start with postgres://",
                ));
            }
            config.database_url = v;
        }
        parse_into(
            &lookup,
            "AIRLINE_HTTP_ADDR",
            &mut config.http_addr,
            "expected host:port, e.g. 127.0.0.1:8080",
        )?;
        parse_into(
            &lookup,
            "AIRLINE_PREFETCH",
            &mut config.prefetch,
            "expected 1 to 65535",
        )?;
        parse_into(
            &lookup,
            "AIRLINE_DB_POOL",
            &mut config.db_pool,
            "expected a whole number",
        )?;
        parse_into(
            &lookup,
            "AIRLINE_OUTBOX_BATCH",
            &mut config.outbox_batch,
            "expected a whole number",
        )?;
        parse_into(
            &lookup,
            "AIRLINE_DLQ_MAX",
            &mut config.dlq_max,
            "expected a whole number",
        )?;
        if config.dlq_max < 0 {
            return Err(invalid("AIRLINE_DLQ_MAX", "negative", "must be 0 or more"));
        }
        if config.prefetch == 0 || config.db_pool == 0 || config.outbox_batch <= 0 {
            return Err(invalid(
                "AIRLINE_PREFETCH/AIRLINE_DB_POOL/AIRLINE_OUTBOX_BATCH",
                "0",
                "must be at least 1",
            ));
        }
        if let Some(v) = lookup("AIRLINE_PREFIX") {
            if !v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return Err(invalid(
                    "AIRLINE_PREFIX",
                    &v,
                    "may hold only letters, digits, '.', '_' and '-'",
                ));
            }
            config.prefix = v;
        }
        if let Some(v) = lookup("AIRLINE_FAULT_STEPS") {
            for step in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                if !FAULT_STEPS.contains(&step) {
                    let known = FAULT_STEPS.join(", ");
                    return Err(invalid(
                        "AIRLINE_FAULT_STEPS",
                        &v,
                        &format!("unknown step `{step}`; known: {known}"),
                    ));
                }
                config.fault_steps.insert(step.to_owned());
            }
        }
        if let Some(v) = lookup("AIRLINE_RETRY") {
            config.retry = RetryPolicy::parse(&v, config.retry)
                .map_err(|e| invalid("AIRLINE_RETRY", &v, &e))?;
        }
        for queue in QUEUES {
            let name = retry_variable(queue.name);
            if let Some(v) = lookup(&name) {
                let policy = RetryPolicy::parse(&v, config.retry_for(queue.name))
                    .map_err(|e| invalid_owned(&name, &v, &e))?;
                config.retry_overrides.insert(queue.name.to_owned(), policy);
            }
        }
        for (name, slot) in [
            ("AIRLINE_STEP_DEADLINE", &mut config.step_deadline),
            ("AIRLINE_PAYMENT_DEADLINE", &mut config.payment_deadline),
            ("AIRLINE_PAYMENT_LATENCY", &mut config.payment_latency),
            ("AIRLINE_HOLD_DEADLINE", &mut config.hold_deadline),
            ("AIRLINE_DLQ_RETENTION", &mut config.dlq_retention),
            (
                "AIRLINE_WEBHOOK_DISABLE_AFTER",
                &mut config.webhook_disable_after,
            ),
        ] {
            if let Some(v) = lookup(name) {
                *slot = crate::retry::parse_duration(&v).map_err(|e| invalid(name, &v, &e))?;
            }
        }
        if let Some(v) = lookup("AIRLINE_PAYMENT_FAILURE_RATE") {
            config.payment_failure_rate = v
                .parse()
                .ok()
                .filter(|r: &f64| (0.0..=1.0).contains(r))
                .ok_or_else(|| {
                    invalid(
                        "AIRLINE_PAYMENT_FAILURE_RATE",
                        &v,
                        "expected a number from 0 to 1",
                    )
                })?;
        }
        parse_into(
            &lookup,
            "AIRLINE_WEBHOOK_ALLOW_PRIVATE",
            &mut config.webhook_allow_private,
            "expected true or false",
        )?;
        if let Some(v) = lookup("AIRLINE_CORS_ORIGINS") {
            let origins: Vec<String> = v
                .split(',')
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .map(str::to_owned)
                .collect();
            if let Some(bad) = origins.iter().find(|o| {
                !(o.starts_with("http://") || o.starts_with("https://"))
                    || o.trim_start_matches("https://")
                        .trim_start_matches("http://")
                        .contains('/')
            }) {
                return Err(invalid(
                    "AIRLINE_CORS_ORIGINS",
                    bad,
                    "expected origins such as https://app.example.com, comma-separated",
                ));
            }
            config.cors_origins = origins;
        }
        Ok(config)
    }

    /// The retry policy of a queue (logical name).
    #[must_use]
    pub fn retry_for(&self, queue: &str) -> RetryPolicy {
        self.retry_overrides
            .get(queue)
            .copied()
            .unwrap_or(self.retry)
    }

    /// Whether a fault is injected into `step` (one of [`FAULT_STEPS`]).
    #[must_use]
    pub fn fails(&self, step: &str) -> bool {
        self.fault_steps.contains(step)
    }
}

fn invalid(name: &'static str, value: &str, reason: &str) -> ConfigError {
    invalid_owned(name, value, reason)
}

fn invalid_owned(name: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError {
        name: name.to_owned(),
        value: value.to_owned(),
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

fn parse_into<T: FromStr>(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    slot: &mut T,
    reason: &str,
) -> Result<(), ConfigError> {
    if let Some(v) = lookup(name) {
        *slot = v.parse().map_err(|_| invalid(name, &v, reason))?;
    }
    Ok(())
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
        assert_eq!(c.amqp_url, "amqp://guest:guest@127.0.0.1:5672/%2f");
        assert_eq!(c.database_url, "postgres://postgres@127.0.0.1:5432/airline");
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.prefix, "airline.");
        assert!(c.fault_steps.is_empty());
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
    fn fault_steps_parse() {
        let c = from(&[("AIRLINE_FAULT_STEPS", "confirm-booking, reserve-seat")]).expect("valid");
        assert!(
            c.fails("confirm-booking") && c.fails("reserve-seat") && !c.fails("collect-payment")
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
        assert_eq!(c.payment_deadline, Duration::from_secs(3));
    }

    #[test]
    fn webhooks_have_their_own_retries_and_settings() {
        let c = from(&[("AIRLINE_RETRY", "attempts=2")]).expect("valid");
        assert_eq!(c.retry_for("notify.webhook-deliveries"), WEBHOOK_RETRY);
        assert!(!c.webhook_allow_private);
        assert_eq!(c.webhook_disable_after, Duration::from_secs(86_400));
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
        assert!(c.webhook_allow_private);
        assert_eq!(c.webhook_disable_after, Duration::from_secs(300));
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
    }
}
