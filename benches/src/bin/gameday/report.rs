//! `report.md` and `chart.svg` from a run directory: per fault window, what was sent,
//! what failed and why, latency percentiles and the time until the error rate came back
//! to baseline; availability as nines; the goals, each PASS or FAIL.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;

use crate::chart;
use crate::record::{read_json, read_outcomes, FaultWindow, Kind, Outcome, RunInfo};

/// Requests sent in the first seconds (connections being made) are not the baseline.
const WARMUP_MS: f64 = 2000.0;
/// How long after a lasting fault is reverted its effects are still counted.
const AFTER_MS: f64 = 3000.0;
/// Failed requests listed one by one in the report.
const MAX_LISTED: usize = 40;

pub struct Summary {
    pub idempotent_availability: f64,
    pub all_availability: f64,
    pub goals_passed: bool,
    pub markdown: String,
}

pub fn write(dir: &Path) -> anyhow::Result<Summary> {
    let outcomes = read_outcomes(&dir.join("outcomes.csv"))?;
    let windows: Vec<FaultWindow> = read_json(&dir.join("faults.json"))?;
    let info: RunInfo = read_json(&dir.join("run.json"))?;
    let summary = build(&outcomes, &windows, &info);
    std::fs::write(dir.join("report.md"), &summary.markdown)
        .with_context(|| format!("writing {}/report.md", dir.display()))?;
    let svg = chart::svg(&outcomes, &windows, &info);
    std::fs::write(dir.join("chart.svg"), svg)
        .with_context(|| format!("writing {}/chart.svg", dir.display()))?;
    Ok(summary)
}

fn http(o: &&Outcome) -> bool {
    o.kind != Kind::Ws
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // Nearest rank; the epsilon keeps 99.9% of 1000 at 999 despite rounding.
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn latencies<'a>(it: impl Iterator<Item = &'a Outcome>) -> Vec<f64> {
    let mut v: Vec<f64> = it.map(|o| o.latency_ms).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// `99.95% (3.3 nines)`.
pub fn nines(ok: usize, total: usize) -> String {
    if total == 0 {
        return "n/a (no requests)".into();
    }
    let a = ok as f64 / total as f64;
    if ok == total {
        return format!("100% ({total} of {total}, no failure)");
    }
    format!(
        "{:.3}% ({:.1} nines; {} of {total} failed)",
        a * 100.0,
        -(1.0 - a).log10(),
        total - ok
    )
}

fn ratio(ok: usize, total: usize) -> f64 {
    if total == 0 {
        1.0
    } else {
        ok as f64 / total as f64
    }
}

fn in_window(o: &Outcome, from: f64, to: f64) -> bool {
    o.sent_ms >= from && o.sent_ms < to
}

/// Seconds from `w.start` until the per-second error rate stayed at baseline for 3 s.
fn recovery(outcomes: &[Outcome], w: &FaultWindow, baseline: f64, run_end: f64) -> String {
    let normal = |from: f64| {
        let b: Vec<&Outcome> = outcomes
            .iter()
            .filter(http)
            .filter(|o| in_window(o, from, from + 1000.0))
            .collect();
        let failed = b.iter().filter(|o| !o.ok()).count();
        failed == 0 || (failed as f64 / b.len().max(1) as f64) <= (2.0 * baseline).max(0.01)
    };
    let mut k = 0.0;
    while w.start_ms + k + 3000.0 <= run_end {
        let t = w.start_ms + k;
        if normal(t) && normal(t + 1000.0) && normal(t + 2000.0) {
            return if k == 0.0 {
                "0 s (no rise)".into()
            } else {
                format!("{:.0} s", k / 1000.0)
            };
        }
        k += 1000.0;
    }
    "not by the end".into()
}

fn causes(failed: &[&Outcome]) -> String {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for o in failed {
        *by.entry(o.cause_label()).or_default() += 1;
    }
    if by.is_empty() {
        return "-".into();
    }
    by.iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A non-idempotent failure not in flight at an apply or revert moment.
fn unexplained_post_failures<'a>(outcomes: &'a [Outcome], w: &FaultWindow) -> Vec<&'a Outcome> {
    let moments = if w.lasting {
        vec![w.start_ms, w.end_ms]
    } else {
        vec![w.start_ms]
    };
    let to = if w.lasting {
        w.end_ms + AFTER_MS
    } else {
        w.end_ms
    };
    outcomes
        .iter()
        .filter(|o| matches!(o.kind, Kind::Post | Kind::PostKey) && !o.ok())
        .filter(|o| in_window(o, w.start_ms, to))
        .filter(|o| {
            !moments
                .iter()
                .any(|m| o.sent_ms <= m + 100.0 && o.sent_ms + o.latency_ms >= *m)
        })
        .collect()
}

pub fn build(outcomes: &[Outcome], windows: &[FaultWindow], info: &RunInfo) -> Summary {
    let run_end = info.duration_s * 1000.0;
    let first_fault = windows.iter().map(|w| w.start_ms).fold(run_end, f64::min);
    let base: Vec<&Outcome> = outcomes
        .iter()
        .filter(http)
        .filter(|o| in_window(o, WARMUP_MS, first_fault))
        .collect();
    let base_failed = base.iter().filter(|o| !o.ok()).count();
    let baseline = base_failed as f64 / base.len().max(1) as f64;

    let mut md = String::new();
    let _ = writeln!(md, "# Game day report: schedule `{}`\n", info.schedule);
    let _ = writeln!(
        md,
        "{} requests/s open-loop for {:.0} s ({} topology), {} WebSocket(s). Mix: 50% `GET /api/` \
         (gateway -> backend), 20% `GET /dep/` (gateway -> edge sidecar -> mTLS -> backend sidecar -> backend), \
         15% `POST /api/orders` with `Idempotency-Key`, 15% without. Clients reach the three gateways \
         round robin over the ones whose `/readyz` passes (an NLB's health check: every 250 ms, 2 to change), \
         and a request whose connection is refused or cannot be made goes to the next gateway (nothing was \
         sent, so that is safe for any method).\n",
        info.rate, info.duration_s, info.mode, info.websockets
    );
    for n in &info.notes {
        let _ = writeln!(md, "- note: {n}");
    }
    for pair in windows.windows(2) {
        let end = |w: &FaultWindow| {
            if w.lasting {
                w.end_ms + AFTER_MS
            } else {
                w.end_ms
            }
        };
        if pair[1].start_ms < end(&pair[0]) {
            let _ = writeln!(
                md,
                "- note: the windows of {} and {} overlap: a failure in both is counted in both",
                pair[0].label, pair[1].label
            );
        }
    }

    // Availability.
    let idem: Vec<&Outcome> = outcomes.iter().filter(|o| o.kind.idempotent()).collect();
    let all: Vec<&Outcome> = outcomes.iter().filter(http).collect();
    let idem_ok = idem.iter().filter(|o| o.ok()).count();
    let all_ok = all.iter().filter(|o| o.ok()).count();
    let ws: Vec<&Outcome> = outcomes.iter().filter(|o| o.kind == Kind::Ws).collect();
    let ws_ok = ws.iter().filter(|o| o.ok()).count();
    let nlb_retried = all.iter().filter(|o| o.nlb_retries > 0).count();
    let _ = writeln!(md, "\n## Availability\n");
    let _ = writeln!(md, "| requests | availability |\n|---|---|");
    let _ = writeln!(md, "| idempotent (GET) | {} |", nines(idem_ok, idem.len()));
    let _ = writeln!(md, "| all HTTP | {} |", nines(all_ok, all.len()));
    for k in [Kind::Get, Kind::GetDep, Kind::PostKey, Kind::Post] {
        let of: Vec<&&Outcome> = all.iter().filter(|o| o.kind == k).collect();
        let ok = of.iter().filter(|o| o.ok()).count();
        let _ = writeln!(md, "| `{}` | {} |", k.name(), nines(ok, of.len()));
    }
    if !ws.is_empty() {
        let _ = writeln!(md, "| WebSocket echoes | {} |", nines(ws_ok, ws.len()));
    }
    let _ = writeln!(
        md,
        "\nBaseline (before the first fault, after {:.0} s of warm-up): {} requests, {} failed. \
         Requests that went to another gateway after a refused connection: {nlb_retried}.",
        WARMUP_MS / 1000.0,
        base.len(),
        base_failed
    );

    // Per fault window.
    let _ = writeln!(md, "\n## Fault windows\n");
    let _ = writeln!(
        md,
        "A window is from the fault until it was reverted (lasting faults, plus {:.0} s after) or {:.0} s \
         after a one-off action. Failures by cause; *unsafe* = failed requests a client could not \
         safely send again (a `POST` without `Idempotency-Key` that may have been processed). \
         Latency is over every request sent in the window.\n",
        AFTER_MS / 1000.0,
        crate::faults::INSTANT_WINDOW.as_secs_f64()
    );
    let _ = writeln!(
        md,
        "| fault | from | to | sent | ok | failed (by cause) | failed safe / unsafe to retry | p50 | p99 | p99.9 | back to baseline |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|");
    let mut goal1 = Vec::new();
    let mut goal2 = Vec::new();
    let mut goal3 = Vec::new();
    let mut goal4 = Vec::new();
    for w in windows {
        let to = if w.lasting {
            w.end_ms + AFTER_MS
        } else {
            w.end_ms
        };
        let sent: Vec<&Outcome> = outcomes
            .iter()
            .filter(http)
            .filter(|o| in_window(o, w.start_ms, to))
            .collect();
        let failed: Vec<&Outcome> = sent.iter().copied().filter(|o| !o.ok()).collect();
        let safe = failed.iter().filter(|o| o.kind.safe_to_retry()).count();
        let lat = latencies(sent.iter().copied());
        let mut label = w.label.clone();
        if let Some(e) = &w.error {
            label.push_str(&format!(" ({e})"));
        }
        let _ = writeln!(
            md,
            "| {label} | {:.1} s | {:.1} s | {} | {} | {} | {safe} / {} | {:.1} ms | {:.1} ms | {:.1} ms | {} |",
            w.start_ms / 1000.0,
            to / 1000.0,
            sent.len(),
            sent.len() - failed.len(),
            causes(&failed),
            failed.len() - safe,
            percentile(&lat, 50.0),
            percentile(&lat, 99.0),
            percentile(&lat, 99.9),
            if w.skipped { "-".into() } else { recovery(outcomes, w, baseline, run_end) },
        );
        if w.skipped {
            continue;
        }
        if w.single_zone {
            let late = outcomes
                .iter()
                .filter(|o| o.kind.idempotent() && !o.ok())
                .filter(|o| in_window(o, w.start_ms + 1000.0, w.end_ms))
                .count();
            goal1.push((w.label.clone(), late));
        }
        if w.operation {
            goal2.push((w.label.clone(), failed.len()));
        }
        if w.kind == "kill_redis" {
            // A fault that did not happen as planned proves nothing: it fails the goal.
            let broken = usize::from(w.error.is_some());
            goal3.push((w.label.clone(), failed.len() + broken));
        }
        goal4.push((
            w.label.clone(),
            unexplained_post_failures(outcomes, w).len(),
        ));
    }

    // Goals.
    let _ = writeln!(md, "\n## Goals\n");
    let mut all_pass = true;
    let mut goal = |md: &mut String, title: &str, rows: &[(String, usize)], what: &str| {
        let bad: Vec<String> = rows
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(l, n)| format!("{l}: {n}"))
            .collect();
        let verdict = if rows.is_empty() {
            "NOT TESTED (no such fault in this schedule)".to_owned()
        } else if bad.is_empty() {
            "PASS".to_owned()
        } else {
            all_pass = false;
            format!("FAIL ({what}: {})", bad.join("; "))
        };
        let _ = writeln!(md, "- **{verdict}**: {title}");
    };
    goal(
        &mut md,
        "no failed idempotent request after the first second of any single-zone fault",
        &goal1,
        "failed GETs sent after the first second",
    );
    goal(
        &mut md,
        "no request lost to reloads, certificate rotations, rolling restarts or upgrades",
        &goal2,
        "failed requests",
    );
    goal(
        &mut md,
        "Redis loss causes no errors (fail-open)",
        &goal3,
        "failed requests",
    );
    goal(
        &mut md,
        "failures of non-idempotent requests limited to those in flight at the moment of a fault",
        &goal4,
        "failed POSTs sent after the fault began, not in flight at its start or revert",
    );

    let _ = writeln!(
        md,
        "\nReading them: the first second of a zone fault is how long detection takes (the NLB's and \
         the gateways' health checks, a connection already open into a cut zone). A `POST` is never \
         retried by the gateway once sent (it may have been processed), so one sent to a backend that \
         is frozen, cut off or answering 5xx fails until that backend is taken out; with an \
         `Idempotency-Key` the client may send it again."
    );

    // Every failure, for the review (the first ones when there are many).
    let failures: Vec<&Outcome> = outcomes.iter().filter(|o| !o.ok()).collect();
    if !failures.is_empty() {
        let _ = writeln!(md, "\n## Failed requests\n");
        let _ = writeln!(md, "| sent at | kind | gateway | cause | latency | safe to retry | during |\n|---|---|---|---|---|---|---|");
        for o in failures.iter().take(MAX_LISTED) {
            let during: Vec<&str> = windows
                .iter()
                .filter(|w| {
                    let to = if w.lasting {
                        w.end_ms + AFTER_MS
                    } else {
                        w.end_ms
                    };
                    in_window(o, w.start_ms, to)
                })
                .map(|w| w.label.as_str())
                .collect();
            let _ = writeln!(
                md,
                "| {:.3} s | `{}` | {} | {} | {:.0} ms | {} | {} |",
                o.sent_ms / 1000.0,
                o.kind.name(),
                o.gateway,
                o.cause_label(),
                o.latency_ms,
                if o.kind.safe_to_retry() { "yes" } else { "no" },
                if during.is_empty() {
                    "-".to_owned()
                } else {
                    during.join(", ")
                }
            );
        }
        if failures.len() > MAX_LISTED {
            let _ = writeln!(
                md,
                "\n... and {} more in `outcomes.csv`.",
                failures.len() - MAX_LISTED
            );
        }
    }

    // NLB transitions.
    if !info.nlb_events.is_empty() {
        let _ = writeln!(md, "\n## The NLB's view\n");
        for (t, z, healthy) in &info.nlb_events {
            let _ = writeln!(
                md,
                "- {:.1} s: gateway {z} {}",
                t / 1000.0,
                if *healthy {
                    "healthy again"
                } else {
                    "taken out (health check failed)"
                }
            );
        }
    }
    let _ = writeln!(
        md,
        "\n![request rate, error rate and p99 over time](chart.svg)\n\nRaw data: `outcomes.csv` (one line per \
         request: send time, latency, kind, gateway, NLB retries, status, cause, backend zone), \
         `faults.json`, `run.json`, the processes' logs in `logs/`."
    );
    Summary {
        idempotent_availability: ratio(idem_ok, idem.len()),
        all_availability: ratio(all_ok, all.len()),
        goals_passed: all_pass,
        markdown: md,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::record::Cause;

    fn o(sent_ms: f64, kind: Kind, cause: Cause) -> Outcome {
        Outcome {
            sent_ms,
            latency_ms: 10.0,
            kind,
            gateway: "a".into(),
            nlb_retries: 0,
            status: if cause == Cause::Ok { 200 } else { 503 },
            cause,
            backend_zone: "a".into(),
        }
    }

    #[test]
    fn percentiles_and_nines() {
        let v: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 500.0);
        assert_eq!(percentile(&v, 99.0), 990.0);
        assert_eq!(percentile(&v, 99.9), 999.0);
        assert!(
            nines(999, 1000).contains("3.0 nines"),
            "{}",
            nines(999, 1000)
        );
        assert!(nines(5, 5).starts_with("100%"));
    }

    #[test]
    fn goals_fail_plainly() {
        let mut outcomes: Vec<Outcome> = (0..400)
            .map(|i| o(f64::from(i) * 50.0, Kind::Get, Cause::Ok))
            .collect();
        // A GET failing 3 s into a zone fault, and one in its first second (allowed).
        outcomes.push(o(10_500.0, Kind::Get, Cause::Status));
        outcomes.push(o(13_000.0, Kind::Get, Cause::Reset));
        outcomes.sort_by(|a, b| a.sent_ms.total_cmp(&b.sent_ms));
        let w = FaultWindow {
            label: "kill_zone_backends b".into(),
            kind: "kill_zone_backends".into(),
            start_ms: 10_000.0,
            end_ms: 15_000.0,
            lasting: true,
            single_zone: true,
            operation: false,
            error: None,
            skipped: false,
        };
        let info = RunInfo {
            schedule: "t".into(),
            rate: 20,
            duration_s: 20.0,
            mode: "netns".into(),
            websockets: 0,
            notes: vec![],
            nlb_events: vec![],
        };
        let s = build(&outcomes, &[w], &info);
        assert!(!s.goals_passed);
        assert!(
            s.markdown.contains(
                "FAIL (failed GETs sent after the first second: kill_zone_backends b: 1)"
            ),
            "{}",
            s.markdown
        );
        assert!(s.markdown.contains("NOT TESTED"));
    }
}
