//! Applying and reverting the schedule's faults at their times: process faults through
//! the topology's hooks, slow and failing backends through their fault knobs
//! (`POST /_fault?...`, `POST /_fault/clear`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::time::Instant;

use crate::record::FaultWindow;
use crate::schedule::{Entry, FaultKind, Zone};
use crate::topology::Topology;

/// Instant faults (a reload, a restart) are judged on what is sent this long after them.
pub const INSTANT_WINDOW: Duration = Duration::from_secs(8);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Run one entry: wait for its time, apply, wait `for`, revert. Never fails: what went
/// wrong is in the window's `error`.
pub async fn run(topo: Arc<Topology>, entry: Entry, start: Instant) -> FaultWindow {
    tokio::time::sleep_until(start + entry.at).await;
    let mut w = FaultWindow {
        label: entry.label(),
        kind: entry.fault.name().to_owned(),
        start_ms: ms(start.elapsed()),
        end_ms: 0.0,
        lasting: entry.fault.lasting(),
        single_zone: entry.fault.single_zone(),
        operation: entry.fault.operation(),
        error: None,
        skipped: false,
    };
    if entry.fault == FaultKind::CutZone && !topo.netns() {
        w.skipped = true;
        w.error = Some("skipped: no network namespaces (loopback mode)".into());
        w.end_ms = ms(entry.at + entry.lasts.unwrap_or_default());
        return w;
    }
    if entry.fault == FaultKind::KillRedis {
        // Losing Redis only means something if the gateways were using it.
        if let Err(e) = redis_in_use(&topo).await {
            w.error = Some(format!("{e:#}"));
        }
    }
    eprintln!("gameday: {:>6.1}s apply {}", w.start_ms / 1000.0, w.label);
    if let Err(e) = apply(&topo, &entry).await {
        add_error(&mut w, format!("apply: {e:#}"));
    }
    match entry.lasts {
        Some(d) => {
            tokio::time::sleep_until(start + entry.at + d).await;
            eprintln!(
                "gameday: {:>6.1}s revert {}",
                start.elapsed().as_secs_f64(),
                w.label
            );
            if let Err(e) = revert(&topo, &entry).await {
                add_error(&mut w, format!("revert: {e:#}"));
            }
            w.end_ms = ms(start.elapsed());
        }
        None => {
            w.end_ms = ms(start.elapsed().max(entry.at + INSTANT_WINDOW));
        }
    }
    w
}

fn add_error(w: &mut FaultWindow, e: String) {
    w.error = Some(match w.error.take() {
        Some(prev) => format!("{prev}; {e}"),
        None => e,
    });
}

fn zone(entry: &Entry) -> anyhow::Result<Zone> {
    entry.zone.context("no zone")
}

fn names(prefix: &str, z: Zone) -> [String; 2] {
    [1, 2].map(|i| format!("{prefix}-{}{i}", z.letter()))
}

async fn apply(topo: &Topology, entry: &Entry) -> anyhow::Result<()> {
    match entry.fault {
        FaultKind::KillZoneBackends => {
            let z = zone(entry)?;
            let (be, sc) = (names("be", z), names("sc", z));
            topo.hook("kill", &[&be[0], &be[1], &sc[0], &sc[1]]).await
        }
        FaultKind::FreezeEndpoint => topo.hook("stop", &[&names("be", zone(entry)?)[0]]).await,
        FaultKind::CutZone => topo.hook("cut", &[zone(entry)?.letter()]).await,
        FaultKind::SlowZone => {
            let latency = entry.latency.unwrap_or(Duration::from_millis(300));
            let q = format!("latency={}ms", latency.as_millis());
            knobs(topo, zone(entry)?, &format!("/_fault?{q}")).await
        }
        // The sidecars' dependency fails, not the backends: only what comes through the
        // sidecars (`/dep/`) is faulted; `/api/`, gateway -> backend directly, is not.
        FaultKind::FailDependency => {
            knobs(
                topo,
                zone(entry)?,
                "/_fault?status=503&rate=0.5&path_prefix=/dep/",
            )
            .await
        }
        FaultKind::ReloadConfig => topo.hook("reload", &[]).await,
        FaultKind::RotateCerts => topo.hook("rotate-certs", &[]).await,
        FaultKind::KillRedis => topo.hook("kill", &["redis"]).await,
        FaultKind::RestartGateway => {
            topo.hook("restart", &[&format!("gw-{}", zone(entry)?.letter())])
                .await
        }
        FaultKind::UpgradeGateway => {
            topo.hook("upgrade", &[&format!("gw-{}", zone(entry)?.letter())])
                .await
        }
    }
}

async fn revert(topo: &Topology, entry: &Entry) -> anyhow::Result<()> {
    match entry.fault {
        FaultKind::KillZoneBackends => {
            let z = zone(entry)?;
            let (be, sc) = (names("be", z), names("sc", z));
            topo.hook("start", &[&be[0], &be[1], &sc[0], &sc[1]]).await
        }
        FaultKind::FreezeEndpoint => topo.hook("cont", &[&names("be", zone(entry)?)[0]]).await,
        FaultKind::CutZone => topo.hook("restore", &[zone(entry)?.letter()]).await,
        FaultKind::SlowZone | FaultKind::FailDependency => {
            knobs(topo, zone(entry)?, "/_fault/clear").await
        }
        FaultKind::KillRedis => topo.hook("start", &["redis"]).await,
        FaultKind::ReloadConfig
        | FaultKind::RotateCerts
        | FaultKind::RestartGateway
        | FaultKind::UpgradeGateway => Ok(()),
    }
}

/// `POST path` to every backend of the zone.
async fn knobs(topo: &Topology, z: Zone, path: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()?;
    for b in topo.backends(z) {
        let r = client.post(format!("http://{b}{path}")).send().await?;
        if !r.status().is_success() {
            bail!("{b}{path}: {}", r.status());
        }
    }
    Ok(())
}

/// Every gateway reports `gateway_redis_available 1`: its rate limits are counted in
/// Redis, not locally.
async fn redis_in_use(topo: &Topology) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()?;
    for g in &topo.gateways {
        let text = client
            .get(format!("http://{}/metrics", g.admin))
            .send()
            .await?
            .text()
            .await?;
        if backends_demo::sum_metric(&text, "gateway_redis_available", &[]) < 1.0 {
            bail!(
                "Redis was not in use before this fault: gateway {} reports gateway_redis_available 0",
                g.zone
            );
        }
    }
    Ok(())
}
