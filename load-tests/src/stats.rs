//! What a run measured: end-to-end latency from each booking's intended send time to
//! its outcome (so a system that falls behind is charged for the wait: no
//! coordinated omission), per-second series, and the summary fields of the JSON.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds, up to an hour, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("these bounds are valid")
}

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Self::default();
        }
        Self {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// One second of a run.
#[derive(Debug, Clone)]
pub struct Second {
    pub sent: u64,
    pub settled: u64,
    pub latency: Histogram<u64>,
}

impl Second {
    fn new() -> Self {
        Self {
            sent: 0,
            settled: 0,
            latency: histogram(),
        }
    }
}

/// Everything recorded during a run.
#[derive(Debug)]
pub struct Recorder {
    pub latency: Histogram<u64>,
    /// From the intended send time to the system's acceptance (the gateway's 202,
    /// or the broker's confirm).
    pub accept: Histogram<u64>,
    pub seconds: Vec<Second>,
    pub confirmed: u64,
    pub failed: u64,
    pub sent: u64,
    pub send_errors: u64,
    /// When the last outcome arrived, from the start.
    pub last_outcome: Duration,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            latency: histogram(),
            accept: histogram(),
            seconds: Vec::new(),
            confirmed: 0,
            failed: 0,
            sent: 0,
            send_errors: 0,
            last_outcome: Duration::ZERO,
        }
    }
}

impl Recorder {
    fn second(&mut self, at: Duration) -> &mut Second {
        let i = usize::try_from(at.as_secs())
            .unwrap_or(usize::MAX)
            .min(24 * 3600);
        while self.seconds.len() <= i {
            self.seconds.push(Second::new());
        }
        &mut self.seconds[i]
    }

    pub fn sent(&mut self, at: Duration, accept: Duration) {
        self.sent += 1;
        let _ = self
            .accept
            .record(u64::try_from(accept.as_micros()).unwrap_or(u64::MAX).max(1));
        self.second(at).sent += 1;
    }

    pub fn settled(&mut self, confirmed: bool, latency: Duration, at: Duration) {
        if confirmed {
            self.confirmed += 1;
        } else {
            self.failed += 1;
        }
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let _ = self.latency.record(us);
        let second = self.second(at);
        second.settled += 1;
        let _ = second.latency.record(us);
        self.last_outcome = self.last_outcome.max(at);
    }
}

/// The fixed fields of `--json`, plus the run's settings and machine.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub mode: String,
    pub offered_rate: f64,
    pub achieved_rate: f64,
    pub duration_s: f64,
    pub sent: u64,
    pub confirmed: u64,
    pub failed: u64,
    pub lost: u64,
    pub latency_ms: Percentiles,
    /// From the intended send time to acceptance: the gateway's 202 (http mode) or
    /// the broker's publisher confirm (amqp, baseline).
    pub accept_latency_ms: Percentiles,
    /// Requests the system refused or that could not be sent (not bookings).
    pub send_errors: u64,
    /// Baseline only: the ceiling in bookings per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bookings_per_s: Option<f64>,
    pub settings: serde_json::Value,
    pub machine: Machine,
}

impl Summary {
    pub fn new(
        mode: &str,
        offered_rate: f64,
        send_window: Duration,
        r: &Recorder,
        settings: serde_json::Value,
    ) -> Self {
        let settled = r.confirmed + r.failed;
        // Throughput over the time the system took to settle what it was sent.
        let span = r.last_outcome.max(send_window).as_secs_f64().max(1e-9);
        Self {
            mode: mode.to_owned(),
            offered_rate,
            achieved_rate: settled as f64 / span,
            duration_s: send_window.as_secs_f64(),
            sent: r.sent,
            confirmed: r.confirmed,
            failed: r.failed,
            lost: r.sent.saturating_sub(settled),
            latency_ms: Percentiles::of(&r.latency),
            accept_latency_ms: Percentiles::of(&r.accept),
            send_errors: r.send_errors,
            bookings_per_s: None,
            settings,
            machine: Machine::read(),
        }
    }
}

/// The machine the run was made on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
}

impl Machine {
    pub fn read() -> Self {
        let memory_kib: f64 = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .map(str::to_owned)
            })
            .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
            .unwrap_or(0.0);
        Self {
            cores: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            memory_gib: (memory_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_is_sent_minus_settled_and_latency_is_from_intended_time() {
        let mut r = Recorder::default();
        for i in 0..4 {
            r.sent(Duration::from_millis(i * 100), Duration::from_millis(2));
        }
        r.settled(true, Duration::from_millis(10), Duration::from_millis(110));
        r.settled(
            false,
            Duration::from_millis(30),
            Duration::from_millis(1200),
        );
        let s = Summary::new(
            "amqp",
            4.0,
            Duration::from_secs(1),
            &r,
            serde_json::json!({}),
        );
        assert_eq!((s.sent, s.confirmed, s.failed, s.lost), (4, 1, 1, 2));
        assert!((s.latency_ms.max - 30.0).abs() < 0.1, "{:?}", s.latency_ms);
        assert!(
            (s.achieved_rate - 2.0 / 1.2).abs() < 0.01,
            "{}",
            s.achieved_rate
        );
        assert_eq!(r.seconds.len(), 2);
        assert_eq!(r.seconds[1].settled, 1);
    }
}
