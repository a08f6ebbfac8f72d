//! Endpoints of one dependency and the last service of the stack: pick an endpoint
//! (least loaded of two random, skipping ejected ones and ones this call already
//! tried), send through the pool, feed outlier detection with the outcome.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use futures_util::future::BoxFuture;
use http::{header, HeaderValue, Request, Response, StatusCode, Uri, Version};
use tollgate_config::common::balance::p2c;
use tollgate_config::gateway::Outlier;
use tollgate_config::outlier::{count_ejected, now_ms, record_outcome, EndpointState, InFlight};
use tollgate_config::sidecar::HostPort;

use tower::ServiceExt;

use super::client::{classify, classify_connect, error_chain, MtlsConnector, PeerClient};
use super::locality::{counted, Counters, Located, Member, Placement, ZoneTraffic};
use crate::body::{boxed, Body};
use crate::error::ProxyError;
use crate::resilience::grpc;
use crate::resilience::timeout::Deadline;
use crate::upgrade::UpgradeCall;
use tollgate_config::common::locality;
use tollgate_config::common::locality::Locality;

/// Endpoints this call already tried (carried in request extensions across retries).
#[derive(Clone, Default, Debug)]
pub struct Tried(pub Arc<Mutex<Vec<SocketAddr>>>);

impl Tried {
    fn contains(&self, a: &SocketAddr) -> bool {
        self.0.lock().map(|v| v.contains(a)).unwrap_or(false)
    }
    fn push(&self, a: SocketAddr) {
        if let Ok(mut v) = self.0.lock() {
            v.push(a);
        }
    }
}

/// The live endpoint set of a dependency (re-resolved periodically, and/or discovered
/// from EndpointSlices), each endpoint placed relative to this sidecar's zone.
pub struct Endpoints {
    pub name: String,
    set: ArcSwap<Vec<Member>>,
    /// The last set from each source; `set` is their union.
    sources: Mutex<Sources>,
    outlier: ArcSwap<Option<Outlier>>,
    placement: ArcSwap<Placement>,
    /// Requests and bytes by locality (what crossed zones).
    pub traffic: ZoneTraffic,
}

impl Endpoints {
    pub fn new(name: &str, outlier: Option<Outlier>, placement: Placement) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_owned(),
            set: ArcSwap::from_pointee(Vec::new()),
            sources: Mutex::new(Sources::default()),
            outlier: ArcSwap::from_pointee(outlier),
            placement: ArcSwap::from_pointee(placement),
            traffic: ZoneTraffic::new(name),
        })
    }

    pub fn set_outlier(&self, o: Option<Outlier>) {
        self.outlier.store(Arc::new(o));
    }

    /// A reload may move this sidecar or change the policy: place every endpoint again.
    pub fn set_placement(&self, placement: Placement) {
        if **self.placement.load() == placement {
            return;
        }
        let set = self.set.load();
        let again = set
            .iter()
            .map(|m| Member::new(m.state.clone(), m.at.clone(), &placement))
            .collect();
        self.placement.store(Arc::new(placement));
        self.set.store(Arc::new(again));
    }

    pub fn current(&self) -> Arc<Vec<Member>> {
        self.set.load_full()
    }

    /// Replace the endpoints the static config resolved to; the discovered ones stay.
    pub fn update_resolved(&self, found: Vec<Located>) -> bool {
        self.update_source(|s| s.resolved = found)
    }

    /// Replace the endpoints discovery found; the statically configured ones stay.
    pub fn update_discovered(&self, found: Vec<Located>) -> bool {
        self.update_source(|s| s.discovered = found)
    }

    fn update_source(&self, change: impl FnOnce(&mut Sources)) -> bool {
        // Held across `update` so two sources changing at once cannot lose one.
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        change(&mut sources);
        let merged = sources
            .resolved
            .iter()
            .chain(&sources.discovered)
            .cloned()
            .collect();
        self.update(merged)
    }

    /// Replace the endpoint list, keeping state for addresses that remain. An address
    /// both sources list is kept once.
    fn update(&self, mut found: Vec<Located>) -> bool {
        found.sort();
        found.dedup_by(|a, b| a.address == b.address);
        let old = self.set.load();
        if old.iter().map(|m| &m.at).eq(found.iter()) {
            return false;
        }
        let placement = self.placement.load();
        let new = found
            .into_iter()
            .map(|at| {
                let state = old
                    .iter()
                    .find(|m| m.state.address == at.address)
                    .map(|m| m.state.clone())
                    .unwrap_or_else(|| EndpointState::new(at.address));
                Member::new(state, at, &placement)
            })
            .collect();
        self.set.store(Arc::new(new));
        true
    }

    /// Resolve `hosts` (IP literals need no lookup). Keeps the old set on total failure.
    pub async fn resolve(&self, hosts: &[HostPort]) -> Result<usize, String> {
        let mut found = Vec::new();
        let mut errors = Vec::new();
        for hp in hosts {
            let at = |address| Located {
                address,
                zone: hp.zone.clone(),
                region: hp.region.clone(),
            };
            if let Ok(ip) = hp.host.parse::<std::net::IpAddr>() {
                found.push(at(SocketAddr::new(ip, hp.port)));
                continue;
            }
            match tokio::net::lookup_host((hp.host.as_str(), hp.port)).await {
                Ok(it) => found.extend(it.map(at)),
                Err(e) => errors.push(format!("{hp}: {e}")),
            }
        }
        if found.is_empty() {
            return Err(if errors.is_empty() {
                "no addresses".into()
            } else {
                errors.join("; ")
            });
        }
        let n = found.len();
        if self.update_resolved(found) {
            tracing::info!(dependency = %self.name, "{n} endpoints");
        }
        Ok(n)
    }

    /// Choose an endpoint: by locality tiers when zone-aware (endpoints this call
    /// already tried count as unavailable, so a retry spills to the next tier rather
    /// than into the same dead zone), then the least loaded of two random.
    fn pick(&self, tried: Option<&Tried>) -> Option<Member> {
        let set = self.set.load();
        let now = now_ms();
        let zone_aware = self.placement.load().zone_aware;
        let up = |m: &Member| !m.state.is_ejected(now);
        let fresh = |m: &Member| tried.is_none_or(|t| !t.contains(&m.state.address));
        let mut cands: Vec<&Member> = Vec::new();
        let mut push = |i: u32| cands.extend(set.get(i as usize));
        if !locality::candidates(&set, zone_aware, |m| m.tier, |m| up(m) && fresh(m), &mut push)
            // Every available endpoint tried already: any of them again.
            && !locality::candidates(&set, zone_aware, |m| m.tier, up, &mut push)
        {
            // Every endpoint ejected cannot happen (max_ejected), but never fail closed.
            cands.extend(set.iter());
        }
        // Endpoints carry no weight here: compare in-flight counts alone.
        p2c(&cands, |m| {
            (u64::try_from(m.state.in_flight()).unwrap_or(0), 1)
        })
        .map(|m| (*m).clone())
    }

    fn record(&self, ep: &EndpointState, ok: bool) {
        let outlier = self.outlier.load();
        let census = || count_ejected(self.set.load().iter().map(|m| &*m.state), now_ms());
        if let Some(d) = record_outcome(ep, ok, outlier.as_ref().as_ref(), census) {
            tracing::warn!(dependency = %self.name, endpoint = %ep.address, "endpoint ejected for {d:?}");
        }
    }
}

#[derive(Default)]
struct Sources {
    /// `endpoints` from the config, resolved.
    resolved: Vec<Located>,
    /// From EndpointSlices.
    discovered: Vec<Located>,
}

/// The innermost service: endpoint choice and the call itself.
#[derive(Clone)]
pub struct Balance {
    pub endpoints: Arc<Endpoints>,
    pub client: PeerClient,
    /// HTTP/1.1 mTLS connections for upgrades, one per upgraded stream.
    pub upgrade_connector: MtlsConnector,
    pub http2: bool,
}

/// Keeps an upgraded stream counted as in flight on its endpoint (in the `101`'s
/// extensions until the relay takes it), and where its bytes are counted when the
/// endpoint's zone is known.
#[derive(Clone)]
pub struct EndpointHold {
    _in_flight: Arc<InFlight>,
    pub bytes: Option<Counters>,
}

impl Balance {
    /// An upgrade on an HTTP/1.1 mTLS connection of its own: the stream will own it.
    async fn upgrade(
        &self,
        ep: &Member,
        in_flight: InFlight,
        mut req: Request<Body>,
    ) -> Result<Response<Body>, ProxyError> {
        let bytes = (ep.locality != Locality::Unknown)
            .then(|| self.endpoints.traffic.of(ep.locality).clone());
        let ep = &ep.state;
        // HTTP/1.1 to one peer: origin-form target, Host kept from the app (or the peer's).
        let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
        *req.uri_mut() =
            Uri::try_from(pq).map_err(|e| ProxyError::Other(format!("bad request target: {e}")))?;
        *req.version_mut() = Version::HTTP_11;
        if !req.headers().contains_key(header::HOST) {
            if let Ok(h) = HeaderValue::from_str(&ep.address.to_string()) {
                req.headers_mut().insert(header::HOST, h);
            }
        }
        let target = Uri::builder()
            .scheme("https")
            .authority(ep.address.to_string())
            .path_and_query("/")
            .build()
            .map_err(|e| ProxyError::Other(format!("bad endpoint: {e}")))?;
        let result = async {
            let conn = self
                .upgrade_connector
                .clone()
                .oneshot(target)
                .await
                .map_err(|e| classify_connect(&*e))?;
            let (mut send, conn) = hyper::client::conn::http1::Builder::new()
                .handshake(conn)
                .await
                .map_err(|e| ProxyError::Connect(error_chain(&e)))?;
            tokio::spawn(async move {
                // Runs until the stream is over (the relay owns the upgraded io).
                let _ = conn.with_upgrades().await;
            });
            send.send_request(req)
                .await
                .map_err(|e| ProxyError::Reset(error_chain(&e)))
        }
        .await;
        match result {
            Ok(mut resp) => {
                self.endpoints.record(ep, resp.status().as_u16() < 500);
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                    resp.extensions_mut().insert(EndpointHold {
                        _in_flight: Arc::new(in_flight),
                        bytes,
                    });
                }
                Ok(resp.map(boxed))
            }
            Err(e) => {
                self.endpoints.record(ep, false);
                Err(e)
            }
        }
    }
}

impl tower::Service<Request<Body>> for Balance {
    type Response = Response<Body>;
    type Error = ProxyError;
    type Future = BoxFuture<'static, Result<Response<Body>, ProxyError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tried = req.extensions().get::<Tried>().cloned();
            let ep = this
                .endpoints
                .pick(tried.as_ref())
                .ok_or(ProxyError::NoEndpoints)?;
            if let Some(t) = &tried {
                t.push(ep.state.address);
            }
            let in_flight = ep.state.begin();
            let upgrade = req.extensions().get::<UpgradeCall>().is_some();
            // What crossed zones: every try counts; bodies when both zones are known.
            let traffic = this.endpoints.traffic.of(ep.locality);
            traffic.requests.inc();
            let received = (ep.locality != Locality::Unknown && !upgrade).then(|| {
                let sent = traffic.sent_bytes.clone();
                req = std::mem::take(&mut req).map(|b| counted(b, sent));
                traffic.received_bytes.clone()
            });
            let pq = req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            *req.uri_mut() = Uri::builder()
                .scheme("https")
                .authority(ep.state.address.to_string())
                .path_and_query(pq)
                .build()
                .map_err(|e| ProxyError::Other(format!("bad request target: {e}")))?;
            // A gRPC call's deadline goes on as the time left of it, this try included.
            if let Some(deadline) = req.extensions().get::<Deadline>().copied() {
                if grpc::is_grpc(req.headers()) {
                    let left = grpc::encode_timeout(deadline.remaining());
                    req.headers_mut().insert(grpc::GRPC_TIMEOUT, left);
                }
            }
            if upgrade {
                return this.upgrade(&ep, in_flight, req).await;
            }
            *req.version_mut() = if this.http2 {
                Version::HTTP_2
            } else {
                Version::HTTP_11
            };
            let result = this.client.request(req).await;
            drop(in_flight);
            let ep = &ep.state;
            match result {
                Ok(resp) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
                    this.endpoints.record(ep, false);
                    Err(ProxyError::UnexpectedUpgrade(ep.address.to_string()))
                }
                Ok(resp) => {
                    // gRPC carries UNAVAILABLE & co. in a 200; a trailers-only answer
                    // says so at the head, which is all an endpoint verdict waits for.
                    let ok = resp.status().as_u16() < 500 && !grpc::failed_at_head(&resp);
                    this.endpoints.record(ep, ok);
                    Ok(match received {
                        Some(c) => resp.map(|b| counted(boxed(b), c)),
                        None => resp.map(boxed),
                    })
                }
                Err(e) => {
                    let err = classify(&e);
                    this.endpoints.record(ep, false);
                    Err(err)
                }
            }
        })
    }
}
