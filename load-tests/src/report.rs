//! The HTML report: SVG charts drawn here, no JavaScript, opens from disk.

use std::fmt::Write as _;
use std::path::Path;

use crate::stats::{Percentiles, Recorder, Summary};

/// A named line of (x, y) points.
pub type Series = (String, Vec<(f64, f64)>);

const W: f64 = 720.0;
const H: f64 = 300.0;
const PAD: f64 = 50.0;
const COLOURS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A line chart (with point markers) of `series`, axes from zero.
#[must_use]
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let x_max = points
        .clone()
        .map(|p| p.0)
        .fold(0.0_f64, f64::max)
        .max(1e-9);
    let y_max = points.map(|p| p.1).fold(0.0_f64, f64::max).max(1e-9) * 1.1;
    let sx = |x: f64| PAD + x / x_max * (W - 2.0 * PAD);
    let sy = |y: f64| H - PAD - y / y_max * (H - 2.0 * PAD);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">
<text x="{}" y="18" text-anchor="middle" font-size="14">{}</text>
<line x1="{PAD}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{}" stroke="black"/>
<text x="{}" y="{}" text-anchor="middle">{}</text>
<text x="14" y="{}" text-anchor="middle" transform="rotate(-90 14 {})">{}</text>
"#,
        W / 2.0,
        escape(title),
        H - PAD,
        W - PAD,
        H - PAD,
        H - PAD,
        W / 2.0,
        H - 12.0,
        escape(x_label),
        H / 2.0,
        H / 2.0,
        escape(y_label),
    );
    for t in 0..=4 {
        let (xv, yv) = (x_max * f64::from(t) / 4.0, y_max * f64::from(t) / 4.0);
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text><line x1="{PAD}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#eee"/>"##,
            sx(xv),
            H - PAD + 16.0,
            short(xv),
            PAD - 4.0,
            sy(yv) + 4.0,
            short(yv),
            sy(yv),
            W - PAD,
            sy(yv),
        );
    }
    for (i, (name, pts)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = pts
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        for (x, y) in pts {
            let _ = write!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{colour}"/>"#,
                sx(*x),
                sy(*y)
            );
        }
        let _ = write!(
            svg,
            r#"<rect x="{}" y="{}" width="10" height="10" fill="{colour}"/><text x="{}" y="{}">{}</text>"#,
            W - PAD - 150.0,
            PAD + 16.0 * i as f64,
            W - PAD - 135.0,
            PAD + 9.0 + 16.0 * i as f64,
            escape(name)
        );
    }
    svg.push_str("</svg>");
    svg
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

/// Throughput, latency over time and the latency distribution of one run.
#[must_use]
pub fn run_charts(r: &Recorder) -> Vec<String> {
    let sent: Vec<(f64, f64)> = r
        .seconds
        .iter()
        .enumerate()
        .map(|(i, s)| (i as f64, s.sent as f64))
        .collect();
    let settled: Vec<(f64, f64)> = r
        .seconds
        .iter()
        .enumerate()
        .map(|(i, s)| (i as f64, s.settled as f64))
        .collect();
    let pct = |f: fn(&Percentiles) -> f64| -> Vec<(f64, f64)> {
        r.seconds
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.latency.is_empty())
            .map(|(i, s)| (i as f64, f(&Percentiles::of(&s.latency))))
            .collect()
    };
    let distribution: Vec<(f64, f64)> = [
        0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999, 1.0,
    ]
    .iter()
    .filter(|_| !r.latency.is_empty())
    .map(|q| (q * 100.0, r.latency.value_at_quantile(*q) as f64 / 1000.0))
    .collect();
    vec![
        line_chart(
            "Throughput",
            "seconds",
            "bookings per second",
            &[("sent".into(), sent), ("settled".into(), settled)],
        ),
        line_chart(
            "Latency over time (end to end, from intended send)",
            "seconds",
            "ms",
            &[
                ("p50".into(), pct(|p| p.p50)),
                ("p99".into(), pct(|p| p.p99)),
                ("max".into(), pct(|p| p.max)),
            ],
        ),
        line_chart(
            "Latency distribution",
            "percentile",
            "ms",
            &[("latency".into(), distribution)],
        ),
    ]
}

/// Writes `DIR/index.html` and `DIR/summary.json`.
///
/// # Errors
/// When the directory cannot be written.
pub fn write(
    dir: &Path,
    title: &str,
    summaries: &[Summary],
    charts: &[String],
    notes: &str,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:sans-serif;max-width:780px;margin:2em auto}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}pre{{background:#f6f6f6;padding:8px}}</style>\
         </head><body><h1>{t}</h1><p>{n}</p>",
        t = escape(title),
        n = escape(notes)
    );
    html.push_str("<table><tr><th>mode</th><th>offered/s</th><th>achieved/s</th><th>sent</th><th>confirmed</th><th>failed</th><th>lost</th><th>p50 ms</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>");
    for s in summaries {
        let l = s.latency_ms;
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{:.0}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td></tr>",
            escape(&s.mode),
            s.offered_rate,
            s.achieved_rate,
            s.sent,
            s.confirmed,
            s.failed,
            s.lost,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max
        );
    }
    html.push_str("</table>");
    for c in charts {
        html.push_str("<div>");
        html.push_str(c);
        html.push_str("</div>");
    }
    if let Some(first) = summaries.first() {
        let _ = write!(
            html,
            "<h2>Settings and machine</h2><pre>{}</pre>",
            escape(
                &serde_json::to_string_pretty(
                    &serde_json::json!({ "settings": first.settings, "machine": first.machine })
                )
                .unwrap_or_default()
            )
        );
    }
    html.push_str("</body></html>\n");
    std::fs::write(dir.join("index.html"), html)?;
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(summaries).unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_an_svg_with_its_series() {
        let svg = line_chart(
            "T <1>",
            "x",
            "y",
            &[("a".into(), vec![(0.0, 1.0), (1.0, 2.0)])],
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("T &lt;1&gt;"));
        assert_eq!(svg.matches("<circle").count(), 2);
    }
}
