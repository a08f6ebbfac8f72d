//! Active health checks and DNS discovery, run on one background thread.
//!
//! A single loop ticks every few milliseconds over the *current* snapshot and starts
//! a check for each endpoint whose check is due. Because it always reads the current
//! snapshot, reloads and DNS changes need no bookkeeping: new endpoints get checked,
//! removed ones are simply no longer visited.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_config::gateway::{DiscoverSource, Endpoint, HealthCheck};

use crate::balance::UpstreamRt;
use crate::metrics::METRICS;
use crate::state::State;
use tollgate_config::outlier::{now_ms, EndpointState, Transition};

const TICK: Duration = Duration::from_millis(20);

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// Start the background thread that runs health checks and discovery.
pub fn spawn(state: Arc<State>) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("health".into())
        .spawn(move || {
            rt.block_on(async move {
                let disc = tokio::spawn(discovery_loop(state.clone()));
                let kube = tokio::spawn(crate::kubernetes::supervise(state.clone()));
                let certs = tokio::spawn(certificate_loop(state.clone()));
                health_loop(state).await;
                disc.abort();
                kube.abort();
                certs.abort();
            })
        })?;
    Ok(())
}

async fn health_loop(state: Arc<State>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let snap = state.snapshot.load_full();
        let now = now_ms();
        for up in snap.upstreams.values() {
            let dropped = up.sweep_drained(now);
            if dropped > 0 {
                tracing::info!(
                    upstream = %up.cfg.name,
                    "{dropped} deregistered endpoint(s) drained and removed"
                );
            }
            let Some(hc) = up.cfg.health_check.clone() else {
                continue;
            };
            let set = up.set.load_full();
            for m in &set.members {
                let s = &m.state;
                if s.next_check_ms.load(Ordering::Relaxed) > now
                    || s.check_running.swap(true, Ordering::AcqRel)
                {
                    continue;
                }
                let up = up.clone();
                let s = s.clone();
                let zone = m.cfg.zone.clone().unwrap_or_default();
                let hc = hc.clone();
                tokio::spawn(async move {
                    run_check(&up, &s, &zone, &hc).await;
                });
            }
        }
    }
}

async fn run_check(up: &UpstreamRt, s: &Arc<EndpointState>, zone: &str, hc: &HealthCheck) {
    let result = match &hc.grpc_service {
        Some(service) => {
            let check = crate::grpc_health::check(s.address, service, up.tls.as_deref());
            tokio::time::timeout(hc.timeout, check)
                .await
                .unwrap_or_else(|_| Err(format!("timed out after {:?}", hc.timeout)))
        }
        None => check_once(s.address, hc, up.tls.as_deref())
            .await
            .and_then(|st| {
                if hc.accepts(st) {
                    Ok(())
                } else {
                    Err(format!("status {st}"))
                }
            }),
    };
    let ok = result.is_ok();
    let transition = s.observe_check(ok, hc.healthy, hc.unhealthy);
    let name = up.cfg.name.as_str();
    let addr = s.address.to_string();
    METRICS
        .endpoint_healthy
        .with_label_values(&[name, &addr, zone])
        .set(i64::from(s.is_healthy()));
    match transition {
        Transition::BecameUnhealthy => {
            METRICS
                .health_transitions
                .with_label_values(&[name, "unhealthy"])
                .inc();
            let why = result.err().unwrap_or_default();
            tracing::warn!(upstream = name, endpoint = %addr, zone, "endpoint unhealthy after {} failed checks: {why}", hc.unhealthy);
        }
        Transition::BecameHealthy => {
            METRICS
                .health_transitions
                .with_label_values(&[name, "healthy"])
                .inc();
            tracing::info!(upstream = name, endpoint = %addr, zone, "endpoint healthy again");
        }
        Transition::None => {}
    }
    s.next_check_ms
        .store(now_ms() + hc.interval.as_millis() as u64, Ordering::Relaxed);
    s.check_running.store(false, Ordering::Release);
}

/// One HTTP/1.1 GET; returns the status code.
pub async fn check_once(
    addr: SocketAddr,
    hc: &HealthCheck,
    tls: Option<&crate::tls::PeerTls>,
) -> Result<u16, String> {
    let fut = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut stream: Box<dyn Stream> = match tls {
            None => Box::new(tcp),
            Some(t) => {
                let name = rustls_pki_types::ServerName::try_from(t.sni.clone())
                    .map_err(|e| format!("sni {:?}: {e}", t.sni))?;
                let s = tokio_rustls::TlsConnector::from(t.health_client())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("tls: {e}"))?;
                Box::new(s)
            }
        };
        let host = hc
            .host
            .clone()
            .or_else(|| tls.map(|t| t.sni.clone()))
            .unwrap_or_else(|| addr.to_string());
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tollgate-health-check\r\nConnection: close\r\n\r\n",
            hc.path
        );
        stream
            .write_all(req.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = [0u8; 64];
        let mut n = 0;
        // Only the status line matters.
        while n < 12 {
            let r = stream
                .read(&mut buf[n..])
                .await
                .map_err(|e| format!("read: {e}"))?;
            if r == 0 {
                return Err("connection closed before a status line".to_string());
            }
            n += r;
        }
        parse_status(&buf[..n]).ok_or_else(|| "malformed status line".to_string())
    };
    match tokio::time::timeout(hc.timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {:?}", hc.timeout)),
    }
}

fn parse_status(b: &[u8]) -> Option<u16> {
    // "HTTP/1.1 200 ..."
    if !b.starts_with(b"HTTP/1.") {
        return None;
    }
    std::str::from_utf8(b.get(9..12)?).ok()?.parse().ok()
}

async fn discovery_loop(state: Arc<State>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut next_due: std::collections::HashMap<String, u64> = Default::default();
    loop {
        tick.tick().await;
        let snap = state.snapshot.load_full();
        let now = now_ms();
        for (name, up) in &snap.upstreams {
            let Some(d) = up.cfg.discover.clone() else {
                continue;
            };
            // Kubernetes discovery is a watch (`discovery::kubernetes`), not a poll.
            let DiscoverSource::Dns { host, port } = &d.source else {
                continue;
            };
            if next_due.get(name).is_some_and(|&t| t > now) {
                continue;
            }
            next_due.insert(name.clone(), now + d.every.as_millis() as u64);
            let target = format!("{host}:{port}");
            match tokio::net::lookup_host(target).await {
                Ok(addrs) => {
                    let mut found: Vec<Endpoint> = addrs
                        .map(|address| Endpoint {
                            address,
                            zone: d.zone.clone(),
                            region: d.region.clone(),
                            weight: 1,
                            draining: false,
                        })
                        .collect();
                    found.sort_by_key(|e| e.address);
                    found.dedup_by_key(|e| e.address);
                    if found.is_empty() {
                        // Keep the last good set: an empty answer is more likely a DNS
                        // hiccup than every pod gone.
                        METRICS.discovery_errors.with_label_values(&[name]).inc();
                        continue;
                    }
                    let n = found.len();
                    if up.update_discovered(found) {
                        tracing::info!(upstream = %name, "DNS discovery: {n} endpoints for {host}:{port}");
                    }
                }
                Err(e) => {
                    METRICS.discovery_errors.with_label_values(&[name]).inc();
                    tracing::warn!(upstream = %name, "DNS discovery of {host}:{port} failed, keeping the last set: {e}");
                }
            }
        }
    }
}

/// Certificate rotation: poll the files of every TLS listener (cheap `stat`s) and
/// reload a listener's certificates when any of them changed. Polling rather than
/// inotify catches every way files get replaced, including Secret symlink swaps.
/// The baseline is taken when the certificates are loaded, not by this loop, so a
/// write right after startup or during a reload is never mistaken for the baseline.
async fn certificate_loop(state: Arc<State>) {
    const EVERY: Duration = Duration::from_millis(500);
    loop {
        tokio::time::sleep(EVERY).await;
        let snap = state.snapshot.load_full();
        // Upstream client certificates (upstream mTLS): swapped in place, one by one.
        for up in snap.upstreams.values() {
            if let Some(t) = up.tls.as_ref().filter(|t| t.client_files_changed()) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let (t, name) = (t.clone(), up.cfg.name.clone());
                let _ = tokio::task::spawn_blocking(move || t.rotate_client(&name)).await;
            }
        }
        let changed = snap.certs.values().any(|c| c.files_changed());
        if changed {
            // Writers replace a key and its certificate one after the other: give the
            // second write a moment to land. If it lands later, the pair is refused
            // once and loaded on the next look.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let st = state.clone();
            let _ = tokio::task::spawn_blocking(move || st.rotate_certificates()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_parsing() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 503 x"), Some(503));
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status(b"HTTP/1.1 2"), None);
    }
}
