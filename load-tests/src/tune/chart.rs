//! The tuning chart: one bar of achieved throughput per setting (left axis, the
//! offered rate dashed across) and p99 as a line over them (right axis, in ms;
//! logarithmic when the tails differ by more than 20 times), as Lambda Power
//! Tuning draws cost and time per memory size. Plain SVG, no script.

use std::fmt::Write as _;

use super::verdict::{Outcome, Picks};

const TOP: f64 = 70.0;
const BOTTOM: f64 = 16.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 60.0;
const PLOT_H: f64 = 220.0;
const BAR: &str = "#1f77b4";
const LINE: &str = "#d62728";

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn short(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The top of an axis of four even ticks that reaches `v`, each tick a round
/// number (1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 × 10^k).
fn nice_top(v: f64) -> f64 {
    let v = v.max(1e-3);
    let step = 10_f64.powf((v / 4.0).log10().floor());
    [1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .iter()
        .map(|m| m * step * 4.0)
        .find(|top| *top >= v)
        .unwrap_or(v)
}

/// The right axis: linear from zero, or decades when the tails are far apart.
struct Scale {
    log: bool,
    lo: f64,
    hi: f64,
}

impl Scale {
    fn of(values: &[f64]) -> Self {
        let max = values.iter().copied().fold(0.0_f64, f64::max).max(1e-3);
        let min = values
            .iter()
            .copied()
            .filter(|v| *v > 0.0)
            .fold(f64::INFINITY, f64::min)
            .min(max);
        if max / min > 20.0 {
            Self {
                log: true,
                lo: 10_f64.powf(min.log10().floor()),
                hi: 10_f64.powf(max.log10().ceil()),
            }
        } else {
            Self {
                log: false,
                lo: 0.0,
                hi: nice_top(max * 1.05),
            }
        }
    }

    /// 0 at the bottom of the plot, 1 at the top.
    fn at(&self, v: f64) -> f64 {
        if self.log {
            ((v.max(self.lo).log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10()))
                .clamp(0.0, 1.0)
        } else {
            (v / self.hi).clamp(0.0, 1.0)
        }
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let (a, b) = (
                self.lo.log10().round() as i32,
                self.hi.log10().round() as i32,
            );
            (a..=b).map(|e| 10_f64.powi(e)).collect()
        } else {
            (0..=4).map(|t| self.hi * f64::from(t) / 4.0).collect()
        }
    }
}

/// The chart of `outcomes` at `offered` bookings/s; the picked settings' labels
/// are bold and marked [T] (throughput), [L] (latency), [B] (balanced).
#[must_use]
pub fn render(title: &str, offered: f64, outcomes: &[Outcome], picks: &Picks) -> String {
    let n = outcomes.len().max(1);
    // Each label is one line per changed variable, under its bar: the slot is as
    // wide as the longest line (about 7 px a character).
    let lines: Vec<Vec<&str>> = outcomes
        .iter()
        .map(|o| o.setting.label.split(' ').collect())
        .collect();
    let longest = lines.iter().flatten().map(|l| l.len()).max().unwrap_or(0);
    let slot = (longest as f64 * 7.0 + 12.0).max(70.0);
    let w = (LEFT + RIGHT + slot * n as f64).max(640.0);
    let plot_w = w - LEFT - RIGHT;
    let slot = plot_w / n as f64;
    let rows = lines.iter().map(Vec::len).max().unwrap_or(1) + 1;
    let h = TOP + PLOT_H + BOTTOM + 14.0 * rows as f64;
    let base = TOP + PLOT_H;
    let measured: Vec<&Outcome> = outcomes.iter().filter(|o| o.error.is_none()).collect();
    let rate_max = nice_top(
        measured
            .iter()
            .map(|o| o.achieved_rate)
            .fold(offered, f64::max)
            * 1.05,
    );
    let y_rate = |v: f64| base - (v / rate_max).clamp(0.0, 1.0) * PLOT_H;
    let p99s: Vec<f64> = measured.iter().map(|o| o.p99_ms).collect();
    let scale = Scale::of(&p99s);
    let y_p99 = |v: f64| base - scale.at(v) * PLOT_H;
    let x = |i: usize| LEFT + slot * (i as f64 + 0.5);

    let p99_legend = format!(
        "p99 ms (right{})",
        if scale.log { ", log scale" } else { "" }
    );
    let second = LEFT + 14.0 + 7.0 * 26.0;
    let third = second + 24.0 + 7.0 * p99_legend.len() as f64;
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" font-family="sans-serif" font-size="12">
<text x="{:.1}" y="18" text-anchor="middle" font-size="14">{}</text>
<rect x="{LEFT}" y="30" width="10" height="10" fill="{BAR}"/><text x="{:.1}" y="39">achieved bookings/s (left)</text>
<line x1="{second:.1}" y1="35" x2="{:.1}" y2="35" stroke="{LINE}" stroke-width="2"/><circle cx="{:.1}" cy="35" r="3" fill="{LINE}"/><text x="{:.1}" y="39">{p99_legend}</text>
<line x1="{third:.1}" y1="35" x2="{:.1}" y2="35" stroke="#555" stroke-dasharray="4 3"/><text x="{:.1}" y="39">offered {}/s</text>
<text x="{LEFT}" y="56" fill="#555">T best throughput, L best latency, B best balanced</text>
"##,
        w / 2.0,
        escape(title),
        LEFT + 14.0,
        second + 20.0,
        second + 10.0,
        second + 24.0,
        third + 20.0,
        third + 24.0,
        short(offered),
    );
    // Axes and grid: rate ticks on the left, p99 ticks on the right.
    let _ = write!(
        svg,
        r#"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{base}" stroke="black"/><line x1="{LEFT}" y1="{base}" x2="{:.1}" y2="{base}" stroke="black"/><line x1="{:.1}" y1="{TOP}" x2="{:.1}" y2="{base}" stroke="{LINE}"/>"#,
        w - RIGHT,
        w - RIGHT,
        w - RIGHT,
    );
    for t in 0..=4 {
        let v = rate_max * f64::from(t) / 4.0;
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            w - RIGHT,
            LEFT - 4.0,
            y_rate(v) + 4.0,
            short(v),
            y = y_rate(v),
        );
    }
    for v in scale.ticks() {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" fill="{LINE}">{}</text>"#,
            w - RIGHT + 4.0,
            y_p99(v) + 4.0,
            short(v),
        );
    }
    let _ = write!(
        svg,
        r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#555" stroke-dasharray="4 3"/>"##,
        w - RIGHT,
        y = y_rate(offered),
    );
    // One bar per setting, its label under it.
    let bar_w = (slot * 0.55).min(60.0);
    for (i, o) in outcomes.iter().enumerate() {
        let cx = x(i);
        if o.error.is_none() {
            let y = y_rate(o.achieved_rate);
            let _ = write!(
                svg,
                r#"<rect x="{:.1}" y="{y:.1}" width="{bar_w:.1}" height="{:.1}" fill="{BAR}" opacity="{}"><title>{}: {:.1}/s, p99 {:.1} ms, lost {}</title></rect><text x="{cx:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
                cx - bar_w / 2.0,
                base - y,
                if o.eligible() { "0.85" } else { "0.35" },
                escape(&o.setting.label),
                o.achieved_rate,
                o.p99_ms,
                o.lost,
                y - 3.0,
                short(o.achieved_rate),
            );
        } else {
            let _ = write!(
                svg,
                r##"<text x="{cx:.1}" y="{:.1}" text-anchor="middle" fill="#999">failed</text>"##,
                base - 6.0
            );
        }
        let mut mark = String::new();
        for (pick, letter) in [
            (picks.throughput, 'T'),
            (picks.latency, 'L'),
            (picks.balanced, 'B'),
        ] {
            if pick == Some(i) {
                mark.push(letter);
            }
        }
        let weight = if mark.is_empty() {
            ""
        } else {
            r#" font-weight="bold""#
        };
        let mut y = base + 16.0;
        if !mark.is_empty() {
            let _ = write!(
                svg,
                r#"<text x="{cx:.1}" y="{y:.1}" text-anchor="middle"{weight}>[{mark}]</text>"#
            );
            y += 14.0;
        }
        for line in &lines[i] {
            let _ = write!(
                svg,
                r#"<text x="{cx:.1}" y="{y:.1}" text-anchor="middle"{weight}>{}</text>"#,
                escape(line)
            );
            y += 14.0;
        }
    }
    // The p99 line over the bars.
    let points: Vec<(f64, f64)> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| o.error.is_none())
        .map(|(i, o)| (x(i), y_p99(o.p99_ms)))
        .collect();
    let path: Vec<String> = points
        .iter()
        .map(|(a, b)| format!("{a:.1},{b:.1}"))
        .collect();
    let _ = write!(
        svg,
        r#"<polyline fill="none" stroke="{LINE}" stroke-width="2" points="{}"/>"#,
        path.join(" ")
    );
    for ((px, py), o) in points.iter().zip(measured) {
        let _ = write!(
            svg,
            r#"<circle cx="{px:.1}" cy="{py:.1}" r="3.5" fill="{LINE}"><title>p99 {:.1} ms</title></circle><text x="{:.1}" y="{:.1}" fill="{LINE}" font-size="10" stroke="white" stroke-width="3" paint-order="stroke">{}</text>"#,
            o.p99_ms,
            px + 6.0,
            py - 6.0,
            short(o.p99_ms),
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::super::verdict::tests::outcome;
    use super::super::verdict::{Outcome, pick};
    use super::*;

    #[test]
    fn one_bar_and_one_point_per_measured_setting() {
        let mut o = vec![
            outcome("defaults", 199.0, 300.0, 0),
            outcome("prefetch=<64>", 250.0, 90.0, 0),
        ];
        o.push(Outcome::failed(
            outcome("prefetch=500", 0.0, 0.0, 0).setting,
            "not healthy".into(),
        ));
        let svg = render("tune at 200/s", 200.0, &o, &pick(&o));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(!svg.contains("<script"));
        assert_eq!(svg.matches("<rect x=").count(), 1 + 2, "legend + 2 bars");
        assert_eq!(svg.matches("<circle").count(), 1 + 2, "legend + 2 points");
        assert!(svg.contains("prefetch=&lt;64&gt;"), "labels are escaped");
        assert!(svg.contains(">[TLB]</text>"), "{svg}");
        assert!(svg.contains(">failed<"));
        assert!(svg.contains("offered 200/s"));
        assert!(!svg.contains("log scale"));
    }

    #[test]
    fn axes_end_on_round_numbers() {
        assert!((nice_top(105.0) - 120.0).abs() < 1e-9);
        assert!((nice_top(52.0) - 60.0).abs() < 1e-9);
        assert!((nice_top(19_000.0) - 20_000.0).abs() < 1e-6);
        assert!((nice_top(0.9) - 1.0).abs() < 1e-9);
        assert!((nice_top(400.0) - 400.0).abs() < 1e-9);
    }

    #[test]
    fn far_apart_tails_get_a_log_axis() {
        let o = [
            outcome("defaults", 200.0, 40.0, 0),
            outcome("a", 150.0, 5000.0, 0),
        ];
        let svg = render("t", 200.0, &o, &pick(&o));
        assert!(svg.contains("log scale"));
        let s = Scale::of(&[40.0, 5000.0]);
        assert_eq!(s.ticks(), [10.0, 100.0, 1000.0, 10000.0]);
        assert!((s.at(100.0) - 1.0 / 3.0).abs() < 1e-9);
        assert!(s.at(10.0).abs() < 1e-9 && (s.at(10_000.0) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn an_empty_or_failed_sweep_still_draws() {
        let svg = render("t", 100.0, &[], &Picks::default());
        assert!(svg.ends_with("</svg>"));
        let failed = [Outcome::failed(
            outcome("defaults", 0.0, 0.0, 0).setting,
            "x".into(),
        )];
        let svg = render("t", 100.0, &failed, &Picks::default());
        assert!(svg.contains(">failed<") && !svg.contains("NaN"));
    }
}
