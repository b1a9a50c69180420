//! The one declaration of every environment variable: README.md's configuration
//! table is these entries, row by row (a unit test compares the two).

use std::collections::BTreeSet;
use std::str::FromStr;

use super::{Config, FaultStep};
use crate::retry::{RetryPolicy, parse_duration};

/// How a variable's value is put into a [`Config`]; the error is the reason only
/// (the caller names the variable and the value).
type Setter = fn(&mut Config, &str) -> Result<(), String>;

/// One environment variable.
#[derive(Debug, Clone, Copy)]
pub struct Variable {
    /// The variable's name.
    pub name: &'static str,
    /// Its default, as README.md shows it: a value in backticks, or a note in
    /// parentheses when unset means "none".
    pub default: &'static str,
    /// What it does, as README.md says it.
    pub meaning: &'static str,
    /// `None` for the variables read elsewhere: `RUST_LOG` (the log filter) and the
    /// `AIRLINE_RETRY_<QUEUE>` family, one name per queue.
    pub(super) set: Option<Setter>,
}

/// Every variable, in README.md's order.
pub const VARIABLES: &[Variable] = &[
    Variable {
        name: "AMQP_URL",
        default: "`amqp://guest:guest@127.0.0.1:5672/%2f`",
        meaning: "the broker and vhost",
        set: Some(|c, v| {
            if !v.starts_with("amqp://") && !v.starts_with("amqps://") {
                return Err("must start with amqp:// or amqps://".into());
            }
            c.broker.url = v.to_owned();
            Ok(())
        }),
    },
    Variable {
        name: "DATABASE_URL",
        default: "`postgres://postgres@127.0.0.1:5432/airline`",
        meaning: "the database (created if missing)",
        set: Some(|c, v| {
            if !v.starts_with("postgres://") && !v.starts_with("postgresql://") {
                return Err("must start with postgres://".into());
            }
            c.database.url = v.to_owned();
            Ok(())
        }),
    },
    Variable {
        name: "AIRLINE_HTTP_ADDR",
        default: "`127.0.0.1:8080`",
        meaning: "the gateway, or a worker's `/healthz`",
        set: Some(|c, v| {
            c.http.addr = number(v, "expected host:port, e.g. 127.0.0.1:8080")?;
            Ok(())
        }),
    },
    Variable {
        name: "AIRLINE_PREFIX",
        default: "`airline.`",
        meaning: "put before every exchange and queue name",
        set: Some(|c, v| {
            if !v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return Err("may hold only letters, digits, '.', '_' and '-'".into());
            }
            c.broker.prefix = v.to_owned();
            Ok(())
        }),
    },
    Variable {
        name: "AIRLINE_PREFETCH",
        default: "`32`",
        meaning: "deliveries a consumer handles at once",
        set: Some(|c, v| {
            c.broker.prefetch = at_least_one(v, "expected 1 to 65535")?;
            Ok(())
        }),
    },
    Variable {
        name: "AIRLINE_DELIVERY_BATCH",
        default: "`16`",
        meaning: "ready deliveries of one queue handled in one transaction, a savepoint each (1: one per transaction; at most the prefetch)",
        set: Some(|c, v| {
            c.broker.delivery_batch = at_least_one(v, "expected 1 to 65535")?;
            Ok(())
        }),
    },
    Variable {
        name: "AIRLINE_DB_POOL",
        default: "`20`",
        meaning: "database connections per process",
        set: Some(|c, v| {
            c.database.pool = at_least_one(v, "expected a whole number")?;
            Ok(())
        }),
    },
    Variable {
        name: "AIRLINE_OUTBOX_BATCH",
        default: "`200`",
        meaning: "outbox rows published per relay transaction",
        set: Some(|c, v| {
            c.outbox.batch = at_least_one(v, "expected a whole number")?;
            Ok(())
        }),
    },
    Variable {
        name: "AIRLINE_FAULT_STEPS",
        default: "(none)",
        meaning: "saga steps that fail on purpose, for tests and chaos runs: `reserve-seat`, \
                  `reserve-booking`, `collect-payment`, `confirm-booking`, `refund-payment`, \
                  `release-seat`",
        set: Some(|c, v| {
            c.faults.steps = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(FaultStep::from_str)
                .collect::<Result<BTreeSet<_>, _>>()?;
            Ok(())
        }),
    },
    Variable {
        name: "AIRLINE_RETRY",
        default: "`attempts=4,base=1s,cap=30s`",
        meaning: "how transient handler errors are retried: deliveries in all, first delay, \
                  longest delay (each distinct delay of all the policies is a shared queue: \
                  at most 20)",
        set: Some(|c, v| {
            c.retry.default = RetryPolicy::parse(v, c.retry.default)?;
            Ok(())
        }),
    },
    Variable {
        name: "AIRLINE_RETRY_<QUEUE>",
        default: "`AIRLINE_RETRY`",
        meaning: "one queue's policy, e.g. \
                  `AIRLINE_RETRY_PAYMENT_COLLECT=attempts=6,base=500ms,cap=10s`",
        // One name per queue, read after `AIRLINE_RETRY` (see `Config::from_lookup`).
        set: None,
    },
    Variable {
        name: "AIRLINE_STEP_DEADLINE",
        default: "`10s`",
        meaning: "how long the saga waits for a seat step before compensating",
        set: Some(|c, v| {
            c.saga.step_deadline = parse_duration(v)?;
            Ok(())
        }),
    },
    Variable {
        name: "AIRLINE_PAYMENT_DEADLINE",
        default: "`30s`",
        meaning: "how long the saga waits for a payment step before compensating",
        set: Some(|c, v| {
            c.saga.payment_deadline = parse_duration(v)?;
            Ok(())
        }),
    },
    Variable {
        name: "AIRLINE_HOLD_DEADLINE",
        default: "`24h`",
        meaning: "how long a saga whose forward step was dead-lettered waits for a replay \
                  before compensating",
        set: Some(|c, v| {
            c.saga.hold_deadline = parse_duration(v)?;
            Ok(())
        }),
    },
    Variable {
        name: "AIRLINE_DLQ_MAX",
        default: "`100000`",
        meaning: "the most dead letters the store keeps; draining stops when full",
        set: Some(|c, v| {
            c.dead_letters.max = number(v, "expected a whole number")?;
            if c.dead_letters.max < 0 {
                return Err("must be 0 or more".into());
            }
            Ok(())
        }),
    },
    Variable {
        name: "AIRLINE_DLQ_RETENTION",
        default: "`14d`",
        meaning: "how long replayed and discarded dead letters are kept",
        set: Some(|c, v| {
            c.dead_letters.retention = parse_duration(v)?;
            Ok(())
        }),
    },
    Variable {
        name: "AIRLINE_INBOX_RETENTION",
        default: "`7d`",
        meaning: "how long inbox rows are kept to recognise a message delivered again \
                  (at least `1m`); older ones are pruned",
        set: Some(|c, v| {
            let retention = parse_duration(v)?;
            if retention < MIN_INBOX_RETENTION {
                return Err("must be at least 1m".into());
            }
            c.inbox.retention = retention;
            Ok(())
        }),
    },
    Variable {
        name: "AIRLINE_PAYMENT_LATENCY",
        default: "`0s`",
        meaning: "simulated payment provider latency per call",
        set: Some(|c, v| {
            c.payment.latency = parse_duration(v)?;
            Ok(())
        }),
    },
    Variable {
        name: "AIRLINE_PAYMENT_FAILURE_RATE",
        default: "`0`",
        meaning: "share (0 to 1) of simulated provider calls that fail transiently",
        set: Some(|c, v| {
            c.payment.failure_rate = v
                .parse()
                .ok()
                .filter(|r: &f64| (0.0..=1.0).contains(r))
                .ok_or("expected a number from 0 to 1")?;
            Ok(())
        }),
    },
    Variable {
        name: "AIRLINE_WEBHOOK_ALLOW_PRIVATE",
        default: "`false`",
        meaning: "`true` lets webhook URLs lead to loopback, private and link-local addresses \
                  (tests and local use only)",
        set: Some(|c, v| {
            c.webhooks.allow_private = number(v, "expected true or false")?;
            Ok(())
        }),
    },
    Variable {
        name: "AIRLINE_WEBHOOK_DISABLE_AFTER",
        default: "`24h`",
        meaning: "how long a webhook endpoint may keep failing before it is disabled",
        set: Some(|c, v| {
            c.webhooks.disable_after = parse_duration(v)?;
            Ok(())
        }),
    },
    Variable {
        name: "AIRLINE_CORS_ORIGINS",
        default: "(none: CORS off)",
        meaning: "comma-separated origins whose browser pages may call the gateway, e.g. \
                  `https://app.example.com`",
        set: Some(|c, v| {
            let origins: Vec<String> = v
                .split(',')
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .map(str::to_owned)
                .collect();
            if origins.iter().any(|o| {
                !(o.starts_with("http://") || o.starts_with("https://"))
                    || o.trim_start_matches("https://")
                        .trim_start_matches("http://")
                        .contains('/')
            }) {
                return Err(
                    "expected origins such as https://app.example.com, comma-separated".into(),
                );
            }
            c.http.cors_origins = origins;
            Ok(())
        }),
    },
    Variable {
        name: "RUST_LOG",
        default: "`info` (sqlx, lapin and amq_protocol at `warn`)",
        meaning: "log filter; logs go to stderr, never to stdout",
        // Read by `telemetry::init`.
        set: None,
    },
];

/// The shortest inbox retention accepted: below a minute, a broker redelivery
/// right after a consumer restart could already find its inbox row gone.
const MIN_INBOX_RETENTION: std::time::Duration = std::time::Duration::from_secs(60);

/// Parses `v`, or says `reason`.
fn number<T: FromStr>(v: &str, reason: &str) -> Result<T, String> {
    v.parse().map_err(|_| reason.to_owned())
}

/// Parses a count, which 0 would make useless.
fn at_least_one<T: FromStr + PartialOrd + From<u8>>(v: &str, reason: &str) -> Result<T, String> {
    let n: T = number(v, reason)?;
    if n < T::from(1) {
        return Err("must be at least 1".into());
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const README: &str = include_str!("../../../../README.md");

    /// The rows of README.md's configuration table: name, default, meaning.
    fn readme_rows() -> Vec<(String, String, String)> {
        let (_, section) = README
            .split_once("\n## Configuration\n")
            .expect("README has a Configuration section");
        section
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .skip(2) // the header and the |---| line
            .map(|row| {
                let cells: Vec<&str> = row
                    .trim()
                    .trim_matches('|')
                    .split('|')
                    .map(str::trim)
                    .collect();
                assert_eq!(cells.len(), 3, "README row `{row}` has three cells");
                (cells[0].into(), cells[1].into(), cells[2].into())
            })
            .collect()
    }

    #[test]
    fn readme_lists_every_variable_with_its_default_and_meaning() {
        let rows = readme_rows();
        let declared: Vec<(String, String, String)> = VARIABLES
            .iter()
            .map(|v| (format!("`{}`", v.name), v.default.into(), v.meaning.into()))
            .collect();
        let names = |rows: &[(String, String, String)]| -> Vec<String> {
            rows.iter().map(|r| r.0.clone()).collect()
        };
        assert_eq!(
            names(&rows),
            names(&declared),
            "README.md's configuration table and config::VARIABLES name different variables"
        );
        for (row, variable) in rows.iter().zip(&declared) {
            assert_eq!(row, variable, "README.md's row differs from VARIABLES");
        }
    }

    #[test]
    fn declared_defaults_are_the_defaults() {
        let default = format!("{:?}", Config::default());
        for variable in VARIABLES {
            let (Some(set), Some(value)) = (
                variable.set,
                variable
                    .default
                    .strip_prefix('`')
                    .and_then(|d| d.strip_suffix('`')),
            ) else {
                continue;
            };
            let mut c = Config::default();
            set(&mut c, value).expect("a default parses");
            assert_eq!(format!("{c:?}"), default, "{}", variable.name);
        }
    }

    #[test]
    fn every_variable_is_declared_once() {
        let names: BTreeSet<&str> = VARIABLES.iter().map(|v| v.name).collect();
        assert_eq!(names.len(), VARIABLES.len());
    }
}
