//! Open-loop load: request `i` is sent at `i / rate` seconds whatever is still
//! outstanding (a slowed service cannot slow the client down and hide its latency), each
//! with its own timeout. The mix, by request number: 50% `GET /api/items/N`, 20%
//! `GET /dep/items/N` (through the sidecars), 15% `POST /api/orders` with an
//! `Idempotency-Key`, 15% without. A request whose connection is refused (or cannot be
//! made) by one gateway goes to the next one, as a client behind an NLB would see it:
//! nothing was sent, so that is safe for every method.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use crate::nlb::Nlb;
use crate::record::{Cause, Kind, Outcome};

/// The client's limit for one request, retries on other gateways included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

pub fn kind_of(i: u64) -> Kind {
    match i % 20 {
        0..=9 => Kind::Get,
        10..=13 => Kind::GetDep,
        14..=16 => Kind::PostKey,
        _ => Kind::Post,
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default()
}

/// Send `rate` requests a second for `duration`; every outcome goes to `out`.
pub async fn run(
    nlb: Arc<Nlb>,
    rate: u32,
    duration: Duration,
    start: Instant,
    out: mpsc::UnboundedSender<Outcome>,
) {
    let client = client();
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let total = (duration.as_secs_f64() * f64::from(rate)) as u64;
    let run_id = std::process::id();
    let mut tick = tokio::time::interval_at(start, interval);
    // Open loop: a late tick (a busy machine) is caught up, not skipped.
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    for i in 0..total {
        tick.tick().await;
        let (nlb, client, out) = (nlb.clone(), client.clone(), out.clone());
        tokio::spawn(async move {
            let o = one(&nlb, &client, i, run_id, start).await;
            let _ = out.send(o);
        });
    }
}

async fn one(nlb: &Nlb, client: &reqwest::Client, i: u64, run_id: u32, start: Instant) -> Outcome {
    let kind = kind_of(i);
    let sent = start.elapsed();
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut tried = Vec::new();
    let mut outcome = Outcome {
        sent_ms: sent.as_secs_f64() * 1000.0,
        latency_ms: 0.0,
        kind,
        gateway: String::new(),
        nlb_retries: 0,
        status: 0,
        cause: Cause::Refused,
        backend_zone: String::new(),
    };
    while let Some(g) = nlb.pick(&tried) {
        tried.push(g);
        let gw = &nlb.gateways[g];
        outcome.gateway = gw.zone.clone();
        outcome.nlb_retries = (tried.len() - 1) as u32;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            outcome.cause = Cause::Timeout;
            break;
        }
        let req = match kind {
            Kind::Get => client.get(format!("http://{}/api/items/{i}", gw.addr)),
            Kind::GetDep => client.get(format!("http://{}/dep/items/{i}", gw.addr)),
            Kind::PostKey | Kind::Post | Kind::Ws => {
                let r = client
                    .post(format!("http://{}/api/orders", gw.addr))
                    .header("content-type", "application/json")
                    .body(format!("{{\"order\":{i}}}"));
                if kind == Kind::PostKey {
                    r.header("idempotency-key", format!("gameday-{run_id}-{i}"))
                } else {
                    r
                }
            }
        };
        match req.timeout(left).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                outcome.status = status;
                outcome.backend_zone = r
                    .headers()
                    .get("x-backend-zone")
                    .and_then(|v| v.to_str().ok())
                    .map(|z| z.trim_start_matches("us-east-1").to_owned())
                    .unwrap_or_default();
                outcome.cause = match r.bytes().await {
                    Ok(_) if (200..300).contains(&status) => Cause::Ok,
                    Ok(_) => Cause::Status,
                    Err(e) if e.is_timeout() => Cause::Timeout,
                    Err(_) => Cause::Reset,
                };
                break;
            }
            Err(e) if e.is_connect() => {
                outcome.cause = Cause::Refused;
                continue;
            }
            Err(e) if e.is_timeout() => {
                outcome.cause = Cause::Timeout;
                break;
            }
            Err(_) => {
                outcome.cause = Cause::Reset;
                break;
            }
        }
    }
    outcome.latency_ms = (start.elapsed() - sent).as_secs_f64() * 1000.0;
    outcome
}

/// A WebSocket through the gateways that echoes one message a second until `until`;
/// each echo is an outcome, a broken socket one failed outcome, and it reconnects
/// (through the NLB, like any client).
pub async fn websocket(
    nlb: Arc<Nlb>,
    n: u32,
    start: Instant,
    until: Duration,
    out: mpsc::UnboundedSender<Outcome>,
) {
    let mut ws = None;
    let mut gateway = String::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut seq = 0u64;
    while start.elapsed() < until {
        tick.tick().await;
        let sent = start.elapsed();
        let mut outcome = Outcome {
            sent_ms: sent.as_secs_f64() * 1000.0,
            latency_ms: 0.0,
            kind: Kind::Ws,
            gateway: gateway.clone(),
            nlb_retries: 0,
            status: 101,
            cause: Cause::Ok,
            backend_zone: String::new(),
        };
        if ws.is_none() {
            let Some(g) = nlb.pick(&[]) else { continue };
            gateway = nlb.gateways[g].zone.clone();
            outcome.gateway = gateway.clone();
            let url = format!("ws://{}/ws/echo?client={n}", nlb.gateways[g].addr);
            match tokio::time::timeout(REQUEST_TIMEOUT, tokio_tungstenite::connect_async(url)).await
            {
                Ok(Ok((s, _))) => ws = Some(s),
                Ok(Err(_)) => outcome.cause = Cause::Refused,
                Err(_) => outcome.cause = Cause::Timeout,
            }
        }
        if let Some(s) = ws.as_mut() {
            seq += 1;
            let msg = format!("gameday ws {n} {seq}");
            let echoed = tokio::time::timeout(REQUEST_TIMEOUT, async {
                s.send(tokio_tungstenite::tungstenite::Message::text(msg.clone()))
                    .await?;
                while let Some(m) = s.next().await {
                    if m?.to_text().is_ok_and(|t| t == msg) {
                        return Ok(());
                    }
                }
                Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed)
            })
            .await;
            match echoed {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    outcome.cause = Cause::Reset;
                    ws = None;
                }
                Err(_) => {
                    outcome.cause = Cause::Timeout;
                    ws = None;
                }
            }
        }
        outcome.latency_ms = (start.elapsed() - sent).as_secs_f64() * 1000.0;
        let _ = out.send(outcome);
    }
}
