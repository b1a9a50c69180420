//! Delayed retries on the broker, without plugins.
//!
//! A delivery whose handler fails transiently is copied, body untouched, to a delay
//! tier shared by every queue of the deployment: a quorum queue
//! `<prefix>retry.<delay>ms` holding messages for a time (the message's
//! `expiration`, the tier's delay with ±20% jitter) and dead-lettering them, when it
//! expires, back to their work queue through the default exchange (the copy is
//! published to the `retry` headers exchange with its work queue as routing key; see
//! [`crate::topology`]). Delays double from the policy's base delay up to its cap;
//! the attempt count and the first and last failure times travel in `x-attempts`,
//! `x-first-failure-at` and `x-last-failure-at`. When the attempts are used up the
//! message goes to the deployment's dead-letter queue instead.

use std::time::Duration;

/// How a queue retries: at most `attempts` deliveries in all (the first included),
/// waiting `base`, `2 × base`, `4 × base`, ... capped at `cap` between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Deliveries in all, the first included; 1 means never retry.
    pub attempts: u32,
    /// The first delay.
    pub base: Duration,
    /// The longest delay.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    /// The sample's shape: first retry after about 1 s, doubling; here three
    /// retries (1 s, 2 s, 4 s) where the sample made two.
    fn default() -> Self {
        Self {
            attempts: 4,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(30),
        }
    }
}

/// How far the actual delay may stray from the tier's, either way.
pub const JITTER: f64 = 0.2;

impl RetryPolicy {
    /// The nominal delay before retry number `retry` (1 for the first retry).
    #[must_use]
    pub fn delay(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1).min(20));
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// Every distinct tier delay this policy uses.
    #[must_use]
    pub fn tiers(&self) -> Vec<Duration> {
        let mut tiers: Vec<Duration> = (1..self.attempts).map(|r| self.delay(r)).collect();
        tiers.dedup();
        tiers
    }

    /// Whether a message that has failed `failures` times may be tried again.
    #[must_use]
    pub fn may_retry(&self, failures: u32) -> bool {
        failures < self.attempts
    }

    /// Parses `attempts=4,base=1s,cap=30s` (any subset; durations as [`parse_duration`]).
    ///
    /// # Errors
    /// A sentence saying which part is wrong.
    pub fn parse(spec: &str, mut policy: Self) -> Result<Self, String> {
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}` is not key=value"))?;
            match key.trim() {
                "attempts" => {
                    policy.attempts =
                        value
                            .trim()
                            .parse()
                            .ok()
                            .filter(|n| *n >= 1)
                            .ok_or_else(|| {
                                format!("attempts `{value}` is not a whole number of at least 1")
                            })?;
                }
                "base" => policy.base = parse_duration(value)?,
                "cap" => policy.cap = parse_duration(value)?,
                other => return Err(format!("unknown key `{other}` (attempts, base, cap)")),
            }
        }
        if policy.base.is_zero() || policy.cap < policy.base {
            return Err("base must be above zero and cap at least base".into());
        }
        Ok(policy)
    }
}

/// Parses a duration in humantime's format (`500ms`, `2s`, `5m`, `24h`, `14d`,
/// `1h 30m`, `1.5s`), the one format of every duration the system reads.
///
/// # Errors
/// A sentence naming the value.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let v = value.trim();
    humantime::parse_duration(v)
        .map_err(|e| format!("`{v}` is not a duration like 500ms, 2s, 5m, 24h or 14d ({e})"))
}

/// The delay with jitter, from a random number in `0.0..1.0`.
#[must_use]
pub fn jittered(delay: Duration, random: f64) -> Duration {
    delay.mul_f64(1.0 - JITTER + 2.0 * JITTER * random.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_every_unit_and_refuse_the_rest() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("14d"), Ok(Duration::from_secs(14 * 86_400)));
        // humantime's format: fractions, weeks and combinations are durations too.
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1w"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration(" 1h 30m "), Ok(Duration::from_secs(5400)));
        for bad in [
            "",
            "5",
            "-1s",
            "99999999999999999999d",
            "soon",
            "1x",
            "2s,3s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn delays_double_from_the_base_up_to_the_cap() {
        let p = RetryPolicy::default();
        let secs: Vec<u64> = (1..=3).map(|r| p.delay(r).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4]);
        let capped = RetryPolicy {
            attempts: 10,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(5),
        };
        assert_eq!(capped.delay(9), Duration::from_secs(5));
        assert_eq!(capped.tiers().len(), 4, "1, 2, 4 and 5 s");
        assert!(p.may_retry(3) && !p.may_retry(4));
    }

    #[test]
    fn jitter_stays_within_a_fifth() {
        let d = Duration::from_secs(10);
        assert_eq!(jittered(d, 0.0), Duration::from_secs(8));
        assert_eq!(jittered(d, 1.0), Duration::from_secs(12));
        assert_eq!(jittered(d, 0.5), d);
    }

    #[test]
    fn policies_parse_and_refuse_nonsense() {
        let p = RetryPolicy::parse("attempts=6, base=500ms, cap=10s", RetryPolicy::default())
            .expect("valid");
        assert_eq!(
            p,
            RetryPolicy {
                attempts: 6,
                base: Duration::from_millis(500),
                cap: Duration::from_secs(10)
            }
        );
        assert!(RetryPolicy::parse("attempts=0", RetryPolicy::default()).is_err());
        assert!(RetryPolicy::parse("base=soon", RetryPolicy::default()).is_err());
        assert!(RetryPolicy::parse("colour=blue", RetryPolicy::default()).is_err());
        assert!(RetryPolicy::parse("base=10s,cap=1s", RetryPolicy::default()).is_err());
        assert_eq!(
            RetryPolicy::parse("attempts=4,base=1s,cap=30s", RetryPolicy::default()),
            Ok(RetryPolicy::default())
        );
        let long = RetryPolicy::parse("base=200ms,cap=24h", RetryPolicy::default()).expect("valid");
        assert_eq!(
            (long.base, long.cap),
            (Duration::from_millis(200), Duration::from_secs(86_400))
        );
    }
}
