//! The clients' view of the three gateways, as a network load balancer gives it: round
//! robin over the gateways whose health check (`GET /readyz` on the admin listener,
//! every 250 ms, 2 failures out, 2 passes in) passes; all of them when none does.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::topology::Gw;

const INTERVAL: Duration = Duration::from_millis(250);
const TIMEOUT: Duration = Duration::from_millis(250);
const THRESHOLD: u32 = 2;

pub struct Nlb {
    pub gateways: Vec<Gw>,
    healthy: Vec<AtomicBool>,
    next: AtomicUsize,
    /// Health transitions: (ms since start, gateway zone, healthy).
    pub events: Mutex<Vec<(f64, String, bool)>>,
}

impl Nlb {
    pub fn new(gateways: Vec<Gw>) -> Arc<Self> {
        let healthy = gateways.iter().map(|_| AtomicBool::new(true)).collect();
        Arc::new(Nlb {
            gateways,
            healthy,
            next: AtomicUsize::new(0),
            events: Mutex::new(Vec::new()),
        })
    }

    /// The next gateway for a new request, skipping `tried`: healthy ones first.
    pub fn pick(&self, tried: &[usize]) -> Option<usize> {
        let n = self.gateways.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let candidates = |need_healthy: bool| {
            (0..n).map(|k| (start + k) % n).find(|i| {
                !tried.contains(i) && (!need_healthy || self.healthy[*i].load(Ordering::Relaxed))
            })
        };
        candidates(true).or_else(|| candidates(false))
    }

    /// Health-check every gateway until the task is aborted.
    pub fn spawn_checks(self: &Arc<Self>, start: Instant) -> Vec<tokio::task::JoinHandle<()>> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(TIMEOUT)
            .pool_max_idle_per_host(0)
            .build()
            .unwrap_or_default();
        (0..self.gateways.len())
            .map(|i| {
                let (nlb, client) = (self.clone(), client.clone());
                tokio::spawn(async move {
                    let url = format!("http://{}/readyz", nlb.gateways[i].admin);
                    let (mut passes, mut fails) = (0u32, 0u32);
                    let mut tick = tokio::time::interval(INTERVAL);
                    loop {
                        tick.tick().await;
                        let ok =
                            matches!(client.get(&url).send().await, Ok(r) if r.status() == 200);
                        if ok {
                            passes += 1;
                            fails = 0;
                        } else {
                            fails += 1;
                            passes = 0;
                        }
                        let was = nlb.healthy[i].load(Ordering::Relaxed);
                        let now = if was {
                            fails < THRESHOLD
                        } else {
                            passes >= THRESHOLD
                        };
                        if now != was {
                            nlb.healthy[i].store(now, Ordering::Relaxed);
                            nlb.events
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .push((
                                    start.elapsed().as_secs_f64() * 1000.0,
                                    nlb.gateways[i].zone.clone(),
                                    now,
                                ));
                        }
                    }
                })
            })
            .collect()
    }
}
