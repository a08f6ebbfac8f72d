//! Endpoint selection: health, zone-aware locality tiers, panic mode, then the
//! upstream's algorithm (weighted round robin, least request P2C, consistent hash).
//!
//! Order of decisions for one pick:
//! 1. Available endpoints = passing active health checks and not ejected.
//! 2. Zone-aware: walk locality tiers (own zone, own region, other regions), taking the
//!    available endpoints of each tier, and stop after the first tier whose own
//!    available share reaches `min_local_healthy`. So a degraded local zone keeps its
//!    healthy endpoints but is helped by the next tier; a dead one is skipped.
//! 3. If nothing is available at all: panic mode, pick among every endpoint (fail open,
//!    as Envoy does) rather than answer 503 to everyone.
//! 4. Endpoints already tried by this request are skipped while others remain.

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tollgate_config::common::locality;
use tollgate_config::gateway::{Balance, Endpoint, Upstream};

use crate::metrics::{Locality, UpstreamMetrics};
use tollgate_config::outlier::{now_ms, EndpointState};

/// Locality tier of an endpoint relative to this gateway (shared with the sidecar).
pub use tollgate_config::common::locality::Tier;

#[derive(Debug)]
pub struct Member {
    pub cfg: Endpoint,
    pub tier: Tier,
    /// Where the endpoint is, for the cross-zone traffic metrics.
    pub locality: Locality,
    pub state: Arc<EndpointState>,
    /// What a sticky cookie names this endpoint by (the same on every replica).
    pub token: u64,
}

impl Member {
    /// Removed from the upstream, finishing its requests.
    pub fn draining(&self) -> bool {
        self.cfg.draining || self.state.drain_until_ms().is_some()
    }
}

/// An immutable set of endpoints with precomputed locality and hash ring.
#[derive(Debug)]
pub struct EndpointSet {
    pub members: Vec<Member>,
    /// Consistent-hash ring: (point, member index), sorted by point.
    ring: Vec<(u64, u32)>,
}

const RING_POINTS_PER_WEIGHT: u32 = 100;

impl EndpointSet {
    /// Build from endpoint configs, reusing live state from `previous` for addresses
    /// that are still present.
    ///
    /// An endpoint of `previous` that is gone but still has requests using it stays,
    /// draining (no new requests), until they end or `deregistration_delay` passes.
    pub fn build(
        endpoints: &[Endpoint],
        zone: Option<&str>,
        region: Option<&str>,
        consistent_hash: bool,
        previous: Option<&EndpointSet>,
        deregistration_delay: std::time::Duration,
    ) -> Self {
        let mut members: Vec<Member> = endpoints
            .iter()
            .map(|e| {
                let state = previous
                    .and_then(|p| p.members.iter().find(|m| m.cfg.address == e.address))
                    .map(|m| m.state.clone())
                    .unwrap_or_else(|| {
                        let s = EndpointState::new(e.address);
                        if previous.is_none() {
                            // There from the start: nothing to ramp up from.
                            s.set_available_since(0);
                        }
                        s
                    });
                // Back in the set: no longer draining.
                state.set_draining(None);
                Member {
                    tier: tier_of(e, zone, region),
                    locality: Locality::of(zone, region, e.zone.as_deref(), e.region.as_deref()),
                    token: hash64(&e.address),
                    cfg: e.clone(),
                    state,
                }
            })
            .collect();
        let now = now_ms();
        for gone in previous
            .into_iter()
            .flat_map(|p| &p.members)
            .filter(|m| !endpoints.iter().any(|e| e.address == m.cfg.address))
        {
            gone.state
                .set_draining(Some(now + deregistration_delay.as_millis() as u64));
            if gone.state.active() > 0 && gone.state.drain_until_ms().is_some_and(|t| t > now) {
                members.push(Member {
                    tier: gone.tier,
                    locality: gone.locality,
                    token: gone.token,
                    cfg: gone.cfg.clone(),
                    state: gone.state.clone(),
                });
            }
        }
        let ring = if consistent_hash {
            build_ring(&members)
        } else {
            Vec::new()
        };
        Self { members, ring }
    }

    pub fn find(&self, addr: SocketAddr) -> Option<&Member> {
        self.members.iter().find(|m| m.cfg.address == addr)
    }
}

fn tier_of(e: &Endpoint, zone: Option<&str>, region: Option<&str>) -> Tier {
    Tier::of(zone, region, e.zone.as_deref(), e.region.as_deref())
}

pub fn hash64<T: Hash + ?Sized>(v: &T) -> u64 {
    // SipHash with fixed keys: stable across processes, so every gateway replica maps a
    // key to the same endpoint.
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new_with_keys(0x5475_6c6c, 0x6761_7465);
    v.hash(&mut h);
    h.finish()
}

fn build_ring(members: &[Member]) -> Vec<(u64, u32)> {
    let mut ring = Vec::new();
    for (i, m) in members.iter().enumerate() {
        let points = RING_POINTS_PER_WEIGHT.saturating_mul(m.cfg.weight.min(100));
        for p in 0..points {
            // Points depend only on the address, so an endpoint leaving moves only its keys.
            ring.push((hash64(&(m.cfg.address, p)), i as u32));
        }
    }
    ring.sort_unstable();
    ring
}

/// Live upstream: its config and its current endpoint set (swapped by DNS discovery).
#[derive(Debug)]
pub struct UpstreamRt {
    pub cfg: Upstream,
    pub set: ArcSwap<EndpointSet>,
    /// Endpoints found by DNS discovery (kept across reloads while `discover` is unchanged).
    pub discovered: ArcSwap<Vec<Endpoint>>,
    pub zone: Option<String>,
    pub region: Option<String>,
    pub metrics: UpstreamMetrics,
    /// TLS to the endpoints, when configured.
    pub tls: Option<Arc<crate::tls::PeerTls>>,
    /// `concurrency`: requests in flight to the upstream, from every route.
    pub concurrency: Option<Arc<crate::concurrency::ConcurrencyLimit>>,
    /// `adaptive_concurrency`.
    pub adaptive: Option<Arc<crate::adaptive::AdaptiveLimit>>,
    rr: AtomicUsize,
}

/// Result of a pick.
#[derive(Debug)]
pub struct Pick {
    pub state: Arc<EndpointState>,
    pub address: SocketAddr,
    pub tier: Tier,
    pub locality: Locality,
    /// The endpoint's sticky-cookie token.
    pub token: u64,
    /// True when no endpoint was available and health was ignored.
    pub panic: bool,
}

/// What the request offers for hashing.
#[derive(Debug, Clone, Copy)]
pub enum HashKey<'a> {
    None,
    Bytes(&'a [u8]),
    Ip(IpAddr),
}

impl UpstreamRt {
    /// The zone of one of the current endpoints (for logs and spans).
    pub fn zone_of(&self, addr: SocketAddr) -> Option<String> {
        self.set.load().find(addr).and_then(|m| m.cfg.zone.clone())
    }

    pub fn new(
        cfg: Upstream,
        zone: Option<String>,
        region: Option<String>,
        previous: Option<&UpstreamRt>,
    ) -> Result<Self, crate::tls::TlsError> {
        // Keep discovered endpoints if discovery is configured the same way.
        let discovered = match previous {
            Some(p) if p.cfg.discover == cfg.discover => (**p.discovered.load()).clone(),
            _ => Vec::new(),
        };
        let prev_set = previous.map(|p| p.set.load_full());
        if cfg.health_check.is_none() {
            // No check will ever run again to clear an "unhealthy" verdict carried over
            // from the previous config.
            if let Some(p) = &prev_set {
                p.members.iter().for_each(|m| m.state.reset_health());
            }
        }
        let all = merge_endpoints(&cfg.endpoints, &discovered);
        let set = EndpointSet::build(
            &all,
            zone.as_deref(),
            region.as_deref(),
            matches!(cfg.balance, Balance::ConsistentHash(_)),
            prev_set.as_deref(),
            cfg.deregistration_delay,
        );
        // Loaded here and only here: an upstream configured with TLS is never built
        // without it (the whole snapshot is refused instead).
        let tls = match &cfg.tls {
            Some(t) => Some(Arc::new(crate::tls::peer_tls(&cfg.name, t)?)),
            None => None,
        };
        Ok(Self {
            tls,
            concurrency: cfg.concurrency.map(|c| {
                crate::concurrency::ConcurrencyLimit::build(
                    c,
                    previous.and_then(|p| p.concurrency.as_ref()),
                    "upstream",
                    &cfg.name,
                )
            }),
            adaptive: cfg.adaptive_concurrency.map(|a| {
                crate::adaptive::AdaptiveLimit::build(
                    a,
                    &cfg.name,
                    previous.and_then(|p| p.adaptive.as_ref()),
                )
            }),
            metrics: UpstreamMetrics::new(&cfg.name),
            cfg,
            set: ArcSwap::from_pointee(set),
            discovered: ArcSwap::from_pointee(discovered),
            zone,
            region,
            rr: AtomicUsize::new(0),
        })
    }

    /// Replace the discovered endpoints (DNS refresh), keeping live state.
    /// Returns true if the set changed.
    pub fn update_discovered(&self, found: Vec<Endpoint>) -> bool {
        if **self.discovered.load() == found {
            return false;
        }
        let prev = self.set.load_full();
        let all = merge_endpoints(&self.cfg.endpoints, &found);
        let set = EndpointSet::build(
            &all,
            self.zone.as_deref(),
            self.region.as_deref(),
            matches!(self.cfg.balance, Balance::ConsistentHash(_)),
            Some(&prev),
            self.cfg.deregistration_delay,
        );
        self.set.store(Arc::new(set));
        self.discovered.store(Arc::new(found));
        true
    }

    /// Drop draining endpoints whose requests have ended or whose deregistration
    /// delay has passed. Returns how many were dropped.
    pub fn sweep_drained(&self, now: u64) -> usize {
        let set = self.set.load();
        let done = |m: &Member| {
            m.state
                .drain_until_ms()
                .is_some_and(|t| now >= t || m.state.active() <= 0)
                && !self
                    .cfg
                    .endpoints
                    .iter()
                    .any(|e| e.address == m.cfg.address)
                && !self
                    .discovered
                    .load()
                    .iter()
                    .any(|e| e.address == m.cfg.address)
        };
        let n = set.members.iter().filter(|m| done(m)).count();
        if n == 0 {
            return 0;
        }
        let keep: Vec<Member> = set
            .members
            .iter()
            .filter(|m| !done(m))
            .map(|m| Member {
                tier: m.tier,
                locality: m.locality,
                token: m.token,
                cfg: m.cfg.clone(),
                state: m.state.clone(),
            })
            .collect();
        let ring = if set.ring.is_empty() {
            Vec::new()
        } else {
            build_ring(&keep)
        };
        self.set.store(Arc::new(EndpointSet {
            members: keep,
            ring,
        }));
        n
    }

    /// Choose an endpoint, avoiding `tried` when possible; `sticky`, the token a
    /// sticky-session cookie names, wins while its endpoint is available (whatever
    /// its locality tier: a session matters more than a zone). Allocation-free for up
    /// to 32 endpoints (runs per request).
    pub fn pick(
        &self,
        key: HashKey<'_>,
        tried: &[SocketAddr],
        sticky: Option<u64>,
    ) -> Option<Pick> {
        let set = self.set.load();
        let members = &set.members;
        if members.is_empty() {
            return None;
        }
        let now = now_ms();
        if let Some(m) = sticky.and_then(|t| {
            members.iter().find(|m| {
                m.token == t
                    && m.state.is_available(now)
                    && !m.draining()
                    && !tried.contains(&m.cfg.address)
            })
        }) {
            return Some(Pick {
                state: m.state.clone(),
                address: m.cfg.address,
                tier: m.tier,
                locality: m.locality,
                token: m.token,
                panic: false,
            });
        }
        let mut candidates: Candidates = Candidates::new();
        // Endpoints this request already tried count as unavailable, so a retry spills
        // to the next locality tier rather than hitting the same dead zone again.
        let mut panic = !self.candidates(members, now, tried, &mut candidates);
        if panic && !tried.is_empty() {
            candidates.clear();
            panic = !self.candidates(members, now, &[], &mut candidates);
        }
        // Prefer endpoints this request has not tried yet.
        if !tried.is_empty() && candidates.len() > 1 {
            let fresh: Candidates = candidates
                .iter()
                .copied()
                .filter(|&i| !tried.contains(&members[i as usize].cfg.address))
                .collect();
            if !fresh.is_empty() {
                candidates = fresh;
            }
        }
        let ramp = self
            .cfg
            .slow_start
            .map(|d| (now, d.as_millis().max(1) as u64));
        let idx = match &self.cfg.balance {
            Balance::RoundRobin => self.weighted_rr(members, &candidates, ramp),
            Balance::LeastRequest => p2c(members, &candidates, ramp),
            Balance::ConsistentHash(_) => {
                let h = match key {
                    HashKey::None => None,
                    HashKey::Bytes(b) => Some(hash64(b)),
                    HashKey::Ip(ip) => Some(hash64(&ip)),
                };
                match h {
                    Some(h) => ring_lookup(&set.ring, h, &candidates),
                    None => p2c(members, &candidates, None),
                }
            }
        }?;
        let m = &members[idx as usize];
        Some(Pick {
            state: m.state.clone(),
            address: m.cfg.address,
            tier: m.tier,
            locality: m.locality,
            token: m.token,
            panic,
        })
    }

    /// Fill `out` with the indices to choose from. Returns false in panic mode.
    fn candidates(
        &self,
        members: &[Member],
        now: u64,
        tried: &[SocketAddr],
        out: &mut Candidates,
    ) -> bool {
        let available = |m: &Member| {
            m.state.is_available(now) && !m.draining() && !tried.contains(&m.cfg.address)
        };
        // The locality tiers and the min_local_healthy rule: one implementation, shared.
        if locality::candidates(
            members,
            self.cfg.zone_aware,
            |m| m.tier,
            available,
            |i| out.push(i),
        ) {
            return true;
        }
        // Panic mode: nothing looks available; fail open across every endpoint.
        out.clear();
        out.extend(0..members.len() as u32);
        false
    }

    fn weighted_rr(
        &self,
        members: &[Member],
        candidates: &[u32],
        ramp: Option<(u64, u64)>,
    ) -> Option<u32> {
        // While an endpoint ramps up, a weighted random draw over the effective
        // weights (round robin over scaled weights would send runs of a thousand).
        if let Some((now, len)) = ramp {
            let ramping = candidates
                .iter()
                .any(|&i| ramp_fraction(&members[i as usize], now, len).is_some());
            if ramping {
                let weight = |i: u32| effective_weight(&members[i as usize], ramp);
                let total: u64 = candidates.iter().map(|&i| weight(i)).sum();
                return pick_by_weight(candidates, weight, rand::random_range(0..total.max(1)));
            }
        }
        let weight = |i: u32| u64::from(members[i as usize].cfg.weight);
        let total: u64 = candidates.iter().map(|&i| weight(i)).sum();
        if total == 0 {
            return candidates.first().copied();
        }
        pick_by_weight(
            candidates,
            weight,
            (self.rr.fetch_add(1, Relaxed) as u64) % total,
        )
    }
}

/// The candidate whose weight range holds `pos`.
fn pick_by_weight(candidates: &[u32], weight: impl Fn(u32) -> u64, mut pos: u64) -> Option<u32> {
    for &i in candidates {
        let w = weight(i);
        if pos < w {
            return Some(i);
        }
        pos -= w;
    }
    candidates.last().copied()
}

fn merge_endpoints(static_eps: &[Endpoint], discovered: &[Endpoint]) -> Vec<Endpoint> {
    let mut all = static_eps.to_vec();
    for d in discovered {
        if !all.iter().any(|e| e.address == d.address) {
            all.push(d.clone());
        }
    }
    all
}

/// Indices of the endpoints a pick chooses from.
type Candidates = smallvec::SmallVec<[u32; 32]>;

/// Weight units per configured weight point: slow start needs a fine ramp.
const WEIGHT_SCALE: u64 = 1000;

/// How far through its slow start the endpoint is (0..1), or `None` when it is not
/// ramping. Endpoints present when the gateway started (available since 0) do not ramp.
fn ramp_fraction(m: &Member, now: u64, len: u64) -> Option<f64> {
    ramp_at(m.state.available_since_ms(), now, len)
}

fn ramp_at(since: u64, now: u64, len: u64) -> Option<f64> {
    let elapsed = now.saturating_sub(since);
    (since != 0 && elapsed < len).then(|| elapsed as f64 / len as f64)
}

/// The endpoint's weight now, scaled by [`WEIGHT_SCALE`]: during slow start
/// (`ramp` = now and the ramp's length, ms), in proportion to the time since it became
/// available, from 1% up.
fn effective_weight(m: &Member, ramp: Option<(u64, u64)>) -> u64 {
    let full = u64::from(m.cfg.weight) * WEIGHT_SCALE;
    match ramp.and_then(|(now, len)| ramp_fraction(m, now, len)) {
        Some(f) => ((full as f64 * f) as u64).max(full / 100).max(1),
        None => full,
    }
}

/// Power of two choices on in-flight requests per unit of weight. With slow start the
/// load is (in flight + 1) per effective weight, so an idle endpoint still ramping is
/// not always the less loaded one.
fn p2c(members: &[Member], candidates: &[u32], ramp: Option<(u64, u64)>) -> Option<u32> {
    tollgate_config::common::balance::p2c(candidates, |&i| {
        let m = &members[i as usize];
        let in_flight = u64::try_from(m.state.in_flight()).unwrap_or(0);
        match ramp {
            None => (in_flight, m.cfg.weight),
            Some(_) => (
                (in_flight + 1) * WEIGHT_SCALE,
                u32::try_from(effective_weight(m, ramp)).unwrap_or(u32::MAX),
            ),
        }
    })
    .copied()
}

fn ring_lookup(ring: &[(u64, u32)], h: u64, candidates: &[u32]) -> Option<u32> {
    if ring.is_empty() {
        return candidates.first().copied();
    }
    let start = ring.partition_point(|(p, _)| *p < h);
    // Walk clockwise to the first point owned by an eligible endpoint.
    for k in 0..ring.len() {
        let (_, idx) = ring[(start + k) % ring.len()];
        if candidates.contains(&idx) {
            return Some(idx);
        }
    }
    candidates.first().copied()
}

#[cfg(test)]
mod tests;
