//! `chart.svg`, written by hand: three panels over the run's seconds (requests sent per
//! second, error rate, p99 latency), fault windows shaded and labelled across them.

use std::fmt::Write as _;

use crate::record::{FaultWindow, Kind, Outcome, RunInfo};
use crate::report::percentile;

const W: f64 = 1100.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const PANEL: f64 = 150.0;
const GAP: f64 = 36.0;

struct Second {
    sent: usize,
    failed: usize,
    p99: f64,
}

fn seconds(outcomes: &[Outcome], n: usize) -> Vec<Second> {
    let mut lat: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut failed = vec![0; n];
    for o in outcomes.iter().filter(|o| o.kind != Kind::Ws) {
        let s = (o.sent_ms / 1000.0) as usize;
        if s < n {
            lat[s].push(o.latency_ms);
            failed[s] += usize::from(!o.ok());
        }
    }
    lat.into_iter()
        .zip(failed)
        .map(|(mut l, failed)| {
            l.sort_by(f64::total_cmp);
            Second {
                sent: l.len(),
                failed,
                p99: percentile(&l, 99.0),
            }
        })
        .collect()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A "nice" axis maximum at or above `v`.
fn nice(v: f64) -> f64 {
    let v = v.max(1e-9);
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

pub fn svg(outcomes: &[Outcome], windows: &[FaultWindow], info: &RunInfo) -> String {
    let n = info.duration_s.ceil().max(1.0) as usize;
    let secs = seconds(outcomes, n);
    let plot_w = W - LEFT - RIGHT;
    let x = |t: f64| LEFT + plot_w * t / n as f64;
    let height = TOP + 3.0 * PANEL + 2.0 * GAP + 40.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="18" font-size="14" font-weight="bold">Game day `{}`: {} req/s, {} topology</text>"#,
        esc(&info.schedule),
        info.rate,
        esc(&info.mode)
    );
    let bottom = TOP + 3.0 * PANEL + 2.0 * GAP;
    // Fault windows: shaded over all panels, labels staggered on two rows at the top.
    for (i, w) in windows.iter().enumerate() {
        let (x0, x1) = (
            x(w.start_ms / 1000.0),
            x((w.end_ms / 1000.0).max(w.start_ms / 1000.0 + 0.5)),
        );
        let fill = if w.skipped {
            "#dddddd"
        } else if w.operation {
            "#cfe3ff"
        } else {
            "#ffd9cc"
        };
        let _ = writeln!(
            s,
            r#"<rect x="{x0:.1}" y="{TOP}" width="{:.1}" height="{:.1}" fill="{fill}" opacity="0.7"/>"#,
            (x1 - x0).max(2.0),
            bottom - TOP
        );
        // Staggered on four rows so that neighbours do not overwrite each other.
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" fill="#803000" font-size="9">{}</text>"##,
            x0 + 1.0,
            TOP + 24.0 + (i % 4) as f64 * 10.0,
            esc(&w.label)
        );
    }
    let panels: [(&str, &str, Vec<f64>); 3] = [
        (
            "requests sent / s",
            "#1f5fbf",
            secs.iter().map(|s| s.sent as f64).collect(),
        ),
        (
            "error rate %",
            "#c0392b",
            secs.iter()
                .map(|s| {
                    if s.sent == 0 {
                        0.0
                    } else {
                        100.0 * s.failed as f64 / s.sent as f64
                    }
                })
                .collect(),
        ),
        (
            "p99 latency ms",
            "#2e8b57",
            secs.iter().map(|s| s.p99).collect(),
        ),
    ];
    for (p, (title, color, values)) in panels.iter().enumerate() {
        let y0 = TOP + p as f64 * (PANEL + GAP);
        // Headroom above the highest value, so a flat line does not sit on the frame.
        let max = nice(1.1 * values.iter().copied().fold(0.0, f64::max));
        let y = |v: f64| y0 + PANEL - PANEL * (v / max).min(1.0);
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{y0}" width="{plot_w}" height="{PANEL}" fill="none" stroke="#888"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-weight="bold">{title}</text>"#,
            LEFT + 4.0,
            y0 + 12.0
        );
        for k in 0..=4 {
            let v = max * f64::from(k) / 4.0;
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#444">{}</text><line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#eee"/>"##,
                LEFT - 4.0,
                y(v) + 4.0,
                if max >= 10.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.2}")
                },
                LEFT + plot_w,
                y(v),
                y(v)
            );
        }
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i as f64 + 0.5), y(*v)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
            points.join(" ")
        );
    }
    // Time axis.
    let step = if n > 120 { 30 } else { 10 };
    for t in (0..=n).step_by(step) {
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#444">{t}s</text>"##,
            x(t as f64),
            bottom + 14.0
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="{:.1}" fill="#444">shaded: faults (orange), operations (blue: reload, rotation, restart, upgrade), skipped (grey)</text>"##,
        bottom + 32.0
    );
    s.push_str("</svg>\n");
    s
}
