//! What each setting achieved, which setting is best for throughput, for latency
//! and balanced, and the tables that say so.

use std::fmt::Write as _;

use serde::Serialize;

use super::spec::Setting;
use crate::stats::Summary;

/// Achieved rates within this share of the best count as equal for throughput
/// (at one offered rate every setting that keeps up achieves about the offered
/// rate; the tie goes to the lower p99).
pub const THROUGHPUT_TIE: f64 = 0.01;

/// One setting's run.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    #[serde(flatten)]
    pub setting: Setting,
    pub achieved_rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub sent: u64,
    pub confirmed: u64,
    pub failed: u64,
    pub lost: u64,
    pub send_errors: u64,
    /// Why the setting has no figures (the system did not start, the run failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Outcome {
    /// A setting's figures from its run's summary.
    #[must_use]
    pub fn measured(setting: Setting, s: &Summary) -> Self {
        Self {
            setting,
            achieved_rate: s.achieved_rate,
            p50_ms: s.latency_ms.p50,
            p99_ms: s.latency_ms.p99,
            sent: s.sent,
            confirmed: s.confirmed,
            failed: s.failed,
            lost: s.lost,
            send_errors: s.send_errors,
            error: None,
        }
    }

    /// A setting that could not be measured.
    #[must_use]
    pub fn failed(setting: Setting, error: String) -> Self {
        Self {
            setting,
            achieved_rate: 0.0,
            p50_ms: 0.0,
            p99_ms: 0.0,
            sent: 0,
            confirmed: 0,
            failed: 0,
            lost: 0,
            send_errors: 0,
            error: Some(error),
        }
    }

    /// Only a run that settled everything it sent competes.
    #[must_use]
    pub fn eligible(&self) -> bool {
        self.error.is_none() && self.sent > 0 && self.lost == 0 && self.send_errors == 0
    }
}

/// The chosen settings, as indexes into the outcomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Picks {
    pub throughput: Option<usize>,
    pub latency: Option<usize>,
    pub balanced: Option<usize>,
}

/// Among the eligible outcomes: the highest achieved rate (within
/// [`THROUGHPUT_TIE`] of it, the lowest p99); the lowest p99 (ties: the higher
/// rate); and balanced, the highest `t × l` with `t` = achieved / best achieved
/// and `l` = best p99 / p99, both 1 for the best, so that a setting giving up 10%
/// of throughput must win more than 10% of p99 to be preferred. Every tie left goes
/// to the earlier setting (the defaults come first).
#[must_use]
pub fn pick(outcomes: &[Outcome]) -> Picks {
    let eligible: Vec<(usize, &Outcome)> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| o.eligible())
        .collect();
    if eligible.is_empty() {
        return Picks::default();
    }
    let p99 = |o: &Outcome| o.p99_ms.max(1e-6);
    let top = eligible
        .iter()
        .map(|(_, o)| o.achieved_rate)
        .fold(0.0_f64, f64::max);
    let low = eligible
        .iter()
        .map(|(_, o)| p99(o))
        .fold(f64::INFINITY, f64::min);
    let first_best =
        |better: &dyn Fn(&Outcome, &Outcome) -> bool,
         candidates: &mut dyn Iterator<Item = &(usize, &Outcome)>| {
            let mut best: Option<(usize, &Outcome)> = None;
            for (i, o) in candidates {
                if best.is_none_or(|(_, b)| better(o, b)) {
                    best = Some((*i, o));
                }
            }
            best.map(|(i, _)| i)
        };
    let throughput = first_best(
        &|o, b| p99(o) < p99(b),
        &mut eligible
            .iter()
            .filter(|(_, o)| o.achieved_rate >= top * (1.0 - THROUGHPUT_TIE)),
    );
    let latency = first_best(
        &|o, b| p99(o) < p99(b) || (p99(o) == p99(b) && o.achieved_rate > b.achieved_rate),
        &mut eligible.iter(),
    );
    let score = |o: &Outcome| (o.achieved_rate / top.max(1e-9)) * (low / p99(o));
    let balanced = first_best(&|o, b| score(o) > score(b), &mut eligible.iter());
    Picks {
        throughput,
        latency,
        balanced,
    }
}

/// What a row is best for: `throughput, latency, balanced`.
fn marks(picks: &Picks, i: usize) -> String {
    let mut m = Vec::new();
    for (pick, name) in [
        (picks.throughput, "throughput"),
        (picks.latency, "latency"),
        (picks.balanced, "balanced"),
    ] {
        if pick == Some(i) {
            m.push(name);
        }
    }
    m.join(", ")
}

fn note(o: &Outcome, picks: &Picks, i: usize) -> String {
    match &o.error {
        Some(e) => format!("failed: {e}"),
        None if !o.eligible() => "not eligible (lost or refused bookings)".into(),
        None => marks(picks, i),
    }
}

/// The three verdict lines: `best for throughput: prefetch=64 (251.3/s, p99 320 ms)`.
#[must_use]
pub fn verdict(outcomes: &[Outcome], picks: &Picks) -> Vec<String> {
    [
        ("best for throughput", picks.throughput),
        ("best for latency", picks.latency),
        ("best balanced", picks.balanced),
    ]
    .into_iter()
    .map(|(what, pick)| match pick.and_then(|i| outcomes.get(i)) {
        Some(o) => format!(
            "{what}: {} ({:.1}/s, p50 {:.1} ms, p99 {:.1} ms)",
            o.setting.label, o.achieved_rate, o.p50_ms, o.p99_ms
        ),
        None => format!("{what}: none (no setting settled every booking)"),
    })
    .collect()
}

fn columns(outcomes: &[Outcome]) -> Vec<String> {
    outcomes
        .first()
        .map(|o| o.setting.values.iter().map(|(n, _)| n.clone()).collect())
        .unwrap_or_default()
}

/// The plain-text table for the terminal.
#[must_use]
pub fn text_table(outcomes: &[Outcome], picks: &Picks) -> String {
    let names = columns(outcomes);
    let label_width = outcomes
        .iter()
        .map(|o| o.setting.label.len())
        .chain([7])
        .max()
        .unwrap_or(7);
    let mut out = format!("{:<label_width$}", "setting");
    for n in &names {
        let _ = write!(out, " {:>w$}", n, w = n.len().max(6));
    }
    let _ = writeln!(
        out,
        " {:>9} {:>8} {:>8} {:>5}  best for",
        "achieved", "p50 ms", "p99 ms", "lost"
    );
    for (i, o) in outcomes.iter().enumerate() {
        let _ = write!(out, "{:<label_width$}", o.setting.label);
        for (n, (_, v)) in names.iter().zip(&o.setting.values) {
            let _ = write!(out, " {:>w$}", v, w = n.len().max(6));
        }
        if o.error.is_some() {
            let _ = writeln!(
                out,
                " {:>9} {:>8} {:>8} {:>5}  {}",
                "-",
                "-",
                "-",
                "-",
                note(o, picks, i)
            );
        } else {
            let _ = writeln!(
                out,
                " {:>9.1} {:>8.1} {:>8.1} {:>5}  {}",
                o.achieved_rate,
                o.p50_ms,
                o.p99_ms,
                o.lost,
                note(o, picks, i)
            );
        }
    }
    for line in verdict(outcomes, picks) {
        let _ = writeln!(out, "{line}");
    }
    out
}

/// The markdown table (for docs/benchmarks.md), with the verdict under it.
#[must_use]
pub fn markdown_table(outcomes: &[Outcome], picks: &Picks, offered: f64) -> String {
    let names = columns(outcomes);
    let mut out = String::from("| setting |");
    for n in &names {
        let _ = write!(out, " {n} |");
    }
    out.push_str(" offered/s | achieved/s | p50 ms | p99 ms | lost | best for |\n|---|");
    out.push_str(&"---|".repeat(names.len() + 6));
    out.push('\n');
    for (i, o) in outcomes.iter().enumerate() {
        let _ = write!(out, "| {} |", o.setting.label);
        for (_, v) in &o.setting.values {
            let _ = write!(out, " {v} |");
        }
        if o.error.is_some() {
            let _ = writeln!(
                out,
                " {offered:.0} | - | - | - | - | {} |",
                note(o, picks, i)
            );
        } else {
            let _ = writeln!(
                out,
                " {offered:.0} | {:.1} | {:.1} | {:.1} | {} | {} |",
                o.achieved_rate,
                o.p50_ms,
                o.p99_ms,
                o.lost,
                note(o, picks, i)
            );
        }
    }
    out.push('\n');
    for line in verdict(outcomes, picks) {
        let _ = writeln!(out, "- {line}");
    }
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn outcome(label: &str, achieved: f64, p99: f64, lost: u64) -> Outcome {
        Outcome {
            setting: Setting {
                label: label.into(),
                env: Default::default(),
                values: vec![("prefetch".into(), label.into())],
            },
            achieved_rate: achieved,
            p50_ms: p99 / 3.0,
            p99_ms: p99,
            sent: 1000,
            confirmed: 900,
            failed: 100 - lost,
            lost,
            send_errors: 0,
            error: None,
        }
    }

    #[test]
    fn throughput_latency_and_balance_are_picked_apart() {
        let o = [
            outcome("defaults", 199.0, 300.0, 0),
            // The most throughput, a poor tail.
            outcome("a", 250.0, 900.0, 0),
            // The best tail, well below the rate.
            outcome("b", 150.0, 40.0, 0),
            // Close to the best rate with twice the best tail.
            outcome("c", 240.0, 80.0, 0),
            // Lost bookings never win, however good.
            outcome("d", 300.0, 10.0, 3),
        ];
        let p = pick(&o);
        assert_eq!(p.throughput, Some(1));
        assert_eq!(p.latency, Some(2));
        // b: 150/250 × 1 = 0.6; c: 240/250 × 40/80 = 0.48; a: 1 × 40/900 = 0.04.
        assert_eq!(p.balanced, Some(2));
        let o2 = [
            outcome("defaults", 199.0, 300.0, 0),
            outcome("a", 250.0, 900.0, 0),
            outcome("b", 100.0, 40.0, 0),
            outcome("c", 240.0, 60.0, 0),
        ];
        // c: 0.96 × 40/60 = 0.64 against b: 0.4.
        assert_eq!(pick(&o2).balanced, Some(3));
    }

    #[test]
    fn rates_within_one_percent_tie_and_the_tail_decides() {
        let o = [
            outcome("defaults", 199.8, 120.0, 0),
            outcome("a", 200.0, 300.0, 0),
            outcome("b", 199.5, 60.0, 0),
        ];
        let p = pick(&o);
        assert_eq!(p.throughput, Some(2));
        assert_eq!(p.latency, Some(2));
        assert_eq!(p.balanced, Some(2));
    }

    #[test]
    fn equal_results_go_to_the_earlier_setting_and_failures_to_none() {
        let o = [
            outcome("defaults", 100.0, 50.0, 0),
            outcome("a", 100.0, 50.0, 0),
        ];
        assert_eq!(
            pick(&o),
            Picks {
                throughput: Some(0),
                latency: Some(0),
                balanced: Some(0)
            }
        );
        let failed = [Outcome::failed(
            outcome("defaults", 0.0, 0.0, 0).setting,
            "did not start".into(),
        )];
        assert_eq!(pick(&failed), Picks::default());
        let lines = verdict(&failed, &Picks::default());
        assert!(lines[0].contains("none"), "{lines:?}");
    }

    #[test]
    fn the_tables_name_each_setting_and_what_it_is_best_for() {
        let mut o = vec![
            outcome("defaults", 199.0, 300.0, 0),
            outcome("prefetch=64", 250.0, 90.0, 0),
        ];
        o.push(Outcome::failed(
            outcome("prefetch=500", 0.0, 0.0, 0).setting,
            "not healthy".into(),
        ));
        let p = pick(&o);
        let text = text_table(&o, &p);
        assert!(text.contains("prefetch=64"), "{text}");
        assert!(text.contains("throughput, latency, balanced"), "{text}");
        assert!(text.contains("failed: not healthy"), "{text}");
        assert!(
            text.contains("best for throughput: prefetch=64 (250.0/s"),
            "{text}"
        );
        let md = markdown_table(&o, &p, 200.0);
        assert!(md.starts_with("| setting | prefetch | offered/s |"), "{md}");
        assert_eq!(md.lines().nth(1), Some("|---|---|---|---|---|---|---|---|"));
        assert!(
            md.contains("| prefetch=64 | prefetch=64 | 200 | 250.0 | 30.0 | 90.0 | 0 |"),
            "{md}"
        );
        assert!(md.contains("- best balanced: prefetch=64"), "{md}");
    }
}
