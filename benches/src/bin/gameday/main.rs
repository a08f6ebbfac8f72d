//! `gameday`: drives a game day against the topology `deploy/gameday/gameday.sh` brings
//! up (three zones, each with two backends behind sidecars and a gateway; Redis; an NLB
//! in the client), and reports what the clients saw.
//!
//! ```text
//! gameday run --run-dir DIR --schedule FILE   load + faults, then the report
//! gameday report DIR                          report.md and chart.svg again from DIR
//! gameday certs DIR [--rotate]                the sidecars' identities (used by gameday.sh)
//! gameday ws-echo --listen ADDR               the WebSocket echo server behind /ws
//! gameday check FILE                          validate a schedule
//! ```

#![forbid(unsafe_code)]

mod certs;
mod chart;
mod faults;
mod load;
mod nlb;
mod record;
mod report;
mod schedule;
mod topology;

use std::path::PathBuf;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio::time::Instant;

use crate::nlb::Nlb;
use crate::record::{write_json, write_outcomes, RunInfo};
use crate::schedule::Schedule;
use crate::topology::Topology;

#[derive(Debug, Parser)]
#[command(about = "Game day: fault schedule, open-loop load, availability report")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a schedule against the topology in RUN_DIR, then write the report there.
    Run {
        #[arg(long)]
        run_dir: PathBuf,
        #[arg(long)]
        schedule: PathBuf,
    },
    /// Write report.md and chart.svg from a run directory (and print the report).
    Report { run_dir: PathBuf },
    /// Write the sidecars' certificates (or, with --rotate, install the next ones).
    Certs {
        dir: PathBuf,
        #[arg(long)]
        rotate: bool,
    },
    /// A WebSocket echo server (the backend of the gateways' /ws route).
    WsEcho {
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
    /// Validate a schedule file.
    Check { schedule: PathBuf },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match args.cmd {
        Cmd::Run { run_dir, schedule } => {
            let schedule = Schedule::load(&schedule)?;
            rt.block_on(run(run_dir, schedule))
        }
        Cmd::Report { run_dir } => {
            let s = report::write(&run_dir)?;
            println!("{}", s.markdown);
            Ok(())
        }
        Cmd::Certs { dir, rotate } => certs::run(&dir, rotate),
        Cmd::WsEcho { listen } => rt.block_on(ws_echo(listen)),
        Cmd::Check { schedule } => {
            let s = Schedule::load(&schedule)?;
            println!(
                "{}: ok ({} faults over {:?})",
                schedule.display(),
                s.faults.len(),
                s.duration
            );
            Ok(())
        }
    }
}

async fn run(run_dir: PathBuf, schedule: Schedule) -> anyhow::Result<()> {
    let topo = Arc::new(Topology::load(&run_dir)?);
    let nlb = Nlb::new(topo.gateways.clone());
    // One second for the health checks to settle before the first request.
    let start = Instant::now() + Duration::from_secs(1);
    let checks = nlb.spawn_checks(start);
    tokio::time::sleep_until(start).await;
    eprintln!(
        "gameday: schedule {} ({:?}, {} req/s, {} faults) against {}",
        schedule.name,
        schedule.duration,
        schedule.rate,
        schedule.faults.len(),
        run_dir.display()
    );

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for n in 0..schedule.websockets {
        tasks.push(tokio::spawn(load::websocket(
            nlb.clone(),
            n,
            start,
            schedule.duration,
            tx.clone(),
        )));
    }
    let fault_tasks: Vec<_> = schedule
        .faults
        .iter()
        .map(|e| tokio::spawn(faults::run(topo.clone(), e.clone(), start)))
        .collect();
    let collector = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Some(o) = rx.recv().await {
            all.push(o);
        }
        all
    });
    load::run(nlb.clone(), schedule.rate, schedule.duration, start, tx).await;
    let mut windows = Vec::new();
    for t in fault_tasks {
        windows.push(t.await.context("a fault task panicked")?);
    }
    for t in tasks {
        let _ = t.await;
    }
    // Every request has a 5 s deadline: the last ones are in within it.
    let mut outcomes = tokio::time::timeout(Duration::from_secs(10), collector)
        .await
        .context("requests still outstanding 10 s after the end")??;
    for c in checks {
        c.abort();
    }
    outcomes.sort_by(|a, b| a.sent_ms.total_cmp(&b.sent_ms));

    let mut notes = Vec::new();
    if !topo.netns() {
        notes.push("loopback topology (no network namespaces): zone cuts were skipped".to_owned());
    }
    let info = RunInfo {
        schedule: schedule.name.clone(),
        rate: schedule.rate,
        duration_s: schedule.duration.as_secs_f64(),
        mode: topo.mode.clone(),
        websockets: schedule.websockets,
        notes,
        nlb_events: nlb
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone(),
    };
    write_outcomes(&run_dir.join("outcomes.csv"), &outcomes)?;
    write_json(&run_dir.join("faults.json"), &windows)?;
    write_json(&run_dir.join("run.json"), &info)?;
    let s = report::write(&run_dir)?;
    println!("{}", s.markdown);
    println!(
        "report: {}/report.md, chart: {}/chart.svg",
        run_dir.display(),
        run_dir.display()
    );
    // For scripts and the CI test: one line to parse.
    println!(
        "GAMEDAY idempotent_availability={:.6} all_availability={:.6} goals={}",
        s.idempotent_availability,
        s.all_availability,
        if s.goals_passed { "pass" } else { "fail" }
    );
    Ok(())
}

async fn ws_echo(listen: std::net::SocketAddr) -> anyhow::Result<()> {
    backends_demo::websocket::echo_server_on(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    std::future::pending().await
}
