//! `gateway waf replay --config FILE --policy NAME RECORDED`: what a WAF policy would
//! block in recorded traffic (JSON lines, the gateway's access log, or a HAR file),
//! by rule and by route, false-positive candidates (requests that succeeded when
//! recorded) first. To try a policy, an exclusion or a paranoia change on yesterday's
//! traffic before switching it on. Nothing is sent anywhere.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tollgate_config::gateway::{self, EnvOverrides};
use tollgate_waf::replay::{self, Report, Tally};
use tollgate_waf::Scratch;

pub fn command() -> clap::Command {
    let replay = clap::Command::new("replay")
        .about(
            "Replay recorded requests (JSON lines, access log or HAR) through a WAF policy \
             and print what it would block, false-positive candidates first",
        )
        .arg(
            clap::Arg::new("config")
                .short('c')
                .long("config")
                .value_name("FILE")
                .required(true)
                .value_parser(clap::value_parser!(PathBuf)),
        )
        .arg(
            clap::Arg::new("policy")
                .long("policy")
                .value_name("NAME")
                .help("A policy under `waf` (default: each request's recorded route's policy)"),
        )
        .arg(
            clap::Arg::new("json")
                .long("json")
                .action(clap::ArgAction::SetTrue)
                .help("Print the report as JSON"),
        )
        .arg(
            clap::Arg::new("recorded")
                .value_name("RECORDED")
                .required(true)
                .value_parser(clap::value_parser!(PathBuf)),
        );
    clap::Command::new("waf")
        .about("WAF tools")
        .subcommand_required(true)
        .subcommand(replay)
}

pub fn run(m: &clap::ArgMatches) -> ExitCode {
    let Some(("replay", m)) = m.subcommand() else {
        return ExitCode::from(2);
    };
    let (Some(config), Some(recorded)) = (
        m.get_one::<PathBuf>("config"),
        m.get_one::<PathBuf>("recorded"),
    ) else {
        return ExitCode::from(2);
    };
    match replay_file(
        config,
        m.get_one::<String>("policy").map(String::as_str),
        recorded,
        m.get_flag("json"),
    ) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gateway waf replay: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The report as text (or JSON).
pub fn replay_file(
    config: &Path,
    policy: Option<&str>,
    recorded: &Path,
    json: bool,
) -> Result<String, String> {
    let loaded =
        gateway::load(config, &EnvOverrides::from_process_env()).map_err(|e| e.to_string())?;
    let routes = &loaded.config.routes;
    let named = match policy {
        Some(name) => Some(loaded.config.waf.get(name).cloned().ok_or_else(|| {
            let defined: Vec<&str> = loaded.config.waf.keys().map(String::as_str).collect();
            format!(
                "no WAF policy {name:?} in {} (defined: {})",
                config.display(),
                defined.join(", ")
            )
        })?),
        None => None,
    };
    let text =
        std::fs::read_to_string(recorded).map_err(|e| format!("{}: {e}", recorded.display()))?;
    let parsed = replay::parse(&text);
    let mut report = Report::default();
    let mut scratch = Scratch::new();
    let mut skipped = 0u64;
    for r in &parsed.requests {
        let policy = match (&named, r.route.as_deref()) {
            (Some(p), _) => p.clone(),
            (None, Some(route)) => match routes
                .iter()
                .find(|x| x.name == route)
                .and_then(|x| x.waf.as_ref())
            {
                Some(w) => w.policy.clone(),
                None => {
                    skipped += 1;
                    continue;
                }
            },
            (None, None) => {
                return Err(format!(
                    "line {}: the request names no route; give --policy NAME",
                    r.line
                ))
            }
        };
        let o = r.inspect(&policy, &mut scratch);
        report.add(r, &o);
    }
    if json {
        return serde_json::to_string_pretty(&report)
            .map(|s| s + "\n")
            .map_err(|e| e.to_string());
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} requests replayed, {} would be blocked, {} of them succeeded when recorded (false-positive candidates){}",
        report.total,
        report.blocked,
        report.fp_candidates,
        if skipped > 0 {
            format!("; {skipped} on routes without a WAF skipped")
        } else {
            String::new()
        }
    );
    for e in parsed.errors.iter().take(5) {
        let _ = writeln!(out, "  not a request, line {}: {}", e.line, e.message);
    }
    section(&mut out, "By rule", report.rules_sorted());
    section(&mut out, "By route", report.routes_sorted());
    Ok(out)
}

fn section(out: &mut String, title: &str, rows: Vec<(&str, &Tally)>) {
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{title} (false-positive candidates first):");
    for (name, t) in rows {
        let _ = writeln!(
            out,
            "  {name:<32} {:>6} blocked, {:>6} false-positive candidates",
            t.count, t.fp_candidates
        );
        for s in t.samples.iter().take(3) {
            let status = s.status.map_or_else(|| "-".to_owned(), |s| s.to_string());
            let _ = writeln!(
                out,
                "      line {:<6} [{status}] {} score {} {}",
                s.line,
                s.request,
                s.score,
                s.matches.join(" ")
            );
        }
    }
}
