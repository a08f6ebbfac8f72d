//! Outbound: one loopback listener per dependency (and an optional HTTP-proxy
//! listener choosing the dependency by Host), each call going through that
//! dependency's tower stack:
//!
//! ```text
//! bulkhead          fail fast at max_concurrent: protects the app's threads first
//!  -> fault         optional; injected delays hold a bulkhead slot like a slow dependency,
//!                   injected aborts never reach the breaker (not the dependency's failures)
//!  -> rate limit    optional; after the bulkhead and fault aborts so only calls about to go
//!                   out spend a token, before the breaker so a 429 never takes a probe slot
//!  -> breaker       one outcome per logical call; open = 503 without touching the network;
//!                   above the overall timeout so a hanging dependency counts as failed;
//!                   gRPC-aware (status in headers at once, in trailers at body end)
//!  -> timeout       overall deadline, retries and hedges included (504)
//!  -> retry         budgeted, backoff with jitter; idempotent or never-sent only
//!  -> hedge         optional; a second copy of a slow bodiless idempotent try, paid from
//!                   the retry budget; inside retry (one try), above the per-try timeout
//!                   (each copy its own deadline)
//!  -> timeout       per try
//!  -> balance       P2C over endpoints, outlier ejection, tried endpoints avoided
//!                   (so a hedge goes to another endpoint)
//!  -> pool          mTLS (peer SPIFFE id checked), HTTP/2 multiplexed
//! ```

pub mod balance;
pub mod client;
pub mod locality;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::Watcher;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tollgate_config::sidecar::Dependency;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

use self::balance::{Balance, Endpoints, Tried};
use self::client::MtlsConnector;
use crate::body::{boxed, Body};
use crate::error::{ProxyError, Reply};
use crate::identity::IdentityStore;
use crate::inbound::{ORIG_PROTO, ORIG_PROTO_HTTP2};
use crate::metrics::{status_class, METRICS};
use crate::resilience::{
    grpc, BreakerLayer, Bulkhead, BulkheadLayer, CircuitBreaker, FaultLayer, HedgeLayer,
    HedgePolicy, RateLimitLayer, RateLimiter, RetryLayer, RetryPolicy, TimeoutLayer,
};
use crate::state::State;
use crate::upgrade;

type Stack = BoxCloneSyncService<Request<Body>, Response<Body>, ProxyError>;

/// One dependency at run time. The bulkhead, breaker, retry policy (with its budget),
/// rate limiter, hedging policy and endpoint set are carried over from the previous
/// runtime on reload, so their state survives a change of unrelated settings.
pub struct DependencyRt {
    pub cfg: Dependency,
    pub endpoints: Arc<Endpoints>,
    pub bulkhead: Arc<Bulkhead>,
    pub breaker: Option<Arc<CircuitBreaker>>,
    pub retry: Option<Arc<RetryPolicy>>,
    pub rate_limit: Option<Arc<RateLimiter>>,
    pub hedge: Option<Arc<HedgePolicy>>,
    stack: Stack,
}

impl DependencyRt {
    pub fn build(
        cfg: &Dependency,
        prev: Option<&DependencyRt>,
        identity: &Arc<IdentityStore>,
    ) -> Self {
        let placement = locality::Placement {
            zone: cfg.own_zone.clone(),
            region: cfg.own_region.clone(),
            zone_aware: cfg.zone_aware,
        };
        let endpoints = match prev {
            Some(p) => {
                p.endpoints.set_outlier(cfg.outlier.clone());
                p.endpoints.set_placement(placement);
                p.endpoints.clone()
            }
            None => Endpoints::new(&cfg.name, cfg.outlier.clone(), placement),
        };
        let bulkhead = match prev {
            Some(p) => {
                p.bulkhead.resize(cfg.max_concurrent, cfg.queue);
                p.bulkhead.clone()
            }
            None => Bulkhead::new(cfg.max_concurrent, cfg.queue),
        };
        let breaker = match (&cfg.breaker, prev.and_then(|p| p.breaker.clone())) {
            (Some(b), Some(existing)) => {
                existing.reconfigure(b);
                Some(existing)
            }
            (Some(b), None) => {
                let name = cfg.name.clone();
                let gauge = METRICS.breaker_state.with_label_values(&[&name]);
                gauge.set(0);
                Some(Arc::new(
                    CircuitBreaker::new(b)
                        .with_name(&name)
                        .with_on_transition(move |from, to| {
                            gauge.set(to.gauge_value());
                            tracing::warn!(dependency = %name, "circuit breaker {} -> {}", from.as_str(), to.as_str());
                        }),
                ))
            }
            (None, _) => None,
        };
        let retry = match (&cfg.retry, prev.and_then(|p| p.retry.clone())) {
            (Some(r), Some(existing)) => {
                existing.reconfigure(r);
                Some(existing)
            }
            (Some(r), None) => Some(Arc::new(RetryPolicy::new(r))),
            (None, _) => None,
        };
        let rate_limit = match (cfg.rate_limit, prev.and_then(|p| p.rate_limit.clone())) {
            (Some(rate), Some(existing)) => {
                existing.reconfigure(rate);
                Some(existing)
            }
            (Some(rate), None) => Some(Arc::new(RateLimiter::new(rate))),
            (None, _) => None,
        };
        // Hedges share the retry budget when there is one, else have their own.
        let hedge_budget = retry.as_ref().map(|r| r.budget().clone());
        let hedge = match (cfg.hedge_after, prev.and_then(|p| p.hedge.clone())) {
            (Some(after), Some(existing)) => {
                existing.reconfigure(after, hedge_budget);
                Some(existing)
            }
            (Some(after), None) => Some(Arc::new(HedgePolicy::new(after, hedge_budget))),
            (None, _) => None,
        };
        let balance = Balance {
            endpoints: endpoints.clone(),
            client: client::client(MtlsConnector {
                identity: identity.clone(),
                server_identity: cfg.server_identity.as_str().into(),
                http2: cfg.http2,
                connect_timeout: cfg.connect_timeout,
            }),
            // Upgrades get an HTTP/1.1 connection of their own, whatever `protocol` says.
            upgrade_connector: MtlsConnector {
                identity: identity.clone(),
                server_identity: cfg.server_identity.as_str().into(),
                http2: false,
                connect_timeout: cfg.connect_timeout,
            },
            http2: cfg.http2,
        };
        // Order and reasons: see the diagram at the top of this file.
        let stack = ServiceBuilder::new()
            .layer(BulkheadLayer::shared(bulkhead.clone()))
            .option_layer(cfg.fault.clone().map(FaultLayer::new))
            .option_layer(rate_limit.clone().map(RateLimitLayer::new))
            .option_layer(breaker.clone().map(BreakerLayer::new))
            .layer(TimeoutLayer::call_deadline(cfg.timeout))
            .option_layer(retry.clone().map(RetryLayer::new))
            .option_layer(hedge.clone().map(HedgeLayer::new))
            .layer(TimeoutLayer::new(cfg.per_try_timeout))
            .service(balance);
        Self {
            cfg: cfg.clone(),
            endpoints,
            bulkhead,
            breaker,
            retry,
            rate_limit,
            hedge,
            stack: BoxCloneSyncService::new(stack),
        }
    }

    /// Send one call from the app through the stack.
    pub async fn call(&self, state: &State, mut req: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        // A WebSocket (or other HTTP/1.1 upgrade): the app's side of the stream, once
        // it has our 101, and the `Upgrade` header to carry on (hop-by-hop, stripped below).
        let upgrade = upgrade::is_upgrade_request(req.version(), req.headers()).then(|| {
            let protocol = req.headers().get(header::UPGRADE).cloned();
            (hyper::upgrade::on(&mut req), protocol)
        });
        let (mut parts, body) = req.into_parts();
        let grpc_call = grpc::is_grpc(&parts.headers);
        strip_hop_by_hop(&mut parts.headers);
        let app_upgrade = match upgrade {
            Some((on_upgrade, Some(protocol))) => {
                parts.headers.insert(header::UPGRADE, protocol);
                upgrade::set_connection_upgrade(&mut parts.headers);
                parts.extensions.insert(upgrade::UpgradeCall);
                Some(on_upgrade)
            }
            _ => None,
        };
        // Tell the peer's sidecar which HTTP version our app spoke (`app_protocol: auto`).
        parts.headers.remove(&ORIG_PROTO);
        if parts.version == http::Version::HTTP_2 {
            parts
                .headers
                .insert(ORIG_PROTO, HeaderValue::from_static(ORIG_PROTO_HTTP2));
        }
        let tried = Tried::default();
        parts.extensions.insert(tried.clone());
        // What the span and the access-log line need, taken only when one may be written.
        let (hop, details) = {
            let snap = state.snapshot.load();
            let hop =
                crate::telemetry::Hop::begin(&mut parts.headers, snap.config.tracing.as_ref());
            let details = (snap.config.access_log.enabled || hop.recording()).then(|| {
                let request_id = parts
                    .headers
                    .get(&crate::telemetry::X_REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                (
                    parts.method.clone(),
                    parts.uri.path().to_owned(),
                    request_id,
                )
            });
            (hop, details)
        };
        let req = Request::from_parts(parts, boxed(body));
        let name = self.cfg.name.as_str();
        let gauge = METRICS.in_flight.with_label_values(&[name]);
        gauge.inc();
        // Boxed with its type spelled out: holding the stack's own future across the
        // await trips rustc's higher-ranked `Send` check on the boxed body's error type.
        let fut: futures_util::future::BoxFuture<'static, Result<Response<Body>, ProxyError>> =
            Box::pin(self.stack.clone().oneshot(req));
        let result = fut.await;
        gauge.dec();
        METRICS
            .outbound_duration
            .with_label_values(&[name])
            .observe(started.elapsed().as_secs_f64());
        let (resp, outcome, error) = match result {
            Ok(mut resp) => {
                if let Some(app_side) = app_upgrade {
                    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                        self.relay(app_side, &mut resp);
                    }
                }
                let class = status_class(resp.status().as_u16());
                METRICS
                    .outbound_requests
                    .with_label_values(&[name, class])
                    .inc();
                let error = resp
                    .status()
                    .is_server_error()
                    .then(|| resp.status().to_string());
                (resp, class, error)
            }
            Err(e) => {
                METRICS
                    .outbound_requests
                    .with_label_values(&[name, e.kind()])
                    .inc();
                (
                    e.to_response(name, grpc_call),
                    e.kind(),
                    Some(e.to_string()),
                )
            }
        };
        if let Some((method, path, request_id)) = details {
            let status = resp.status().as_u16();
            let attempts = tried.0.lock().map_or(0, |v| v.len());
            if hop.recording() {
                use tollgate_config::telemetry::spans::{attr, attr_int, Kind};
                let mut attrs = crate::telemetry::http_attributes(&method, &path, status);
                attrs.push(attr("tollgate.dependency", name));
                attrs.push(attr_int("tollgate.attempts", attempts as i64));
                if error.is_some() {
                    attrs.push(attr("error.type", outcome));
                }
                let span_name = format!("{method} {name}");
                hop.end(
                    &state.telemetry,
                    span_name,
                    Kind::Client,
                    attrs,
                    error.clone(),
                );
            }
            let failed = error.is_some() || status >= 500;
            let log = state.telemetry.access_log.as_ref();
            if let Some(w) =
                log.filter(|_| state.snapshot.load().config.access_log.wants(None, failed))
            {
                let mut l = tollgate_config::telemetry::access_log::JsonLine::new();
                l.time("time", hop.start)
                    .opt_str("request_id", request_id.as_deref())
                    .bytes("trace_id", &hop.trace.trace_id_hex())
                    .str("dependency", name)
                    .str("method", method.as_str())
                    .str("path", &path)
                    .uint("status", u64::from(status))
                    .str("outcome", outcome)
                    .millis("duration_ms", started.elapsed())
                    .uint("attempts", attempts as u64)
                    .opt_str("breaker", self.breaker.as_ref().map(|b| b.state().as_str()));
                w.send(l.finish());
            }
        }
        resp
    }

    /// Splice the app's upgraded connection with the peer's, once the app has the 101.
    fn relay(&self, app_side: hyper::upgrade::OnUpgrade, resp: &mut Response<Body>) {
        let peer_side = hyper::upgrade::on(&mut *resp);
        // The endpoint counts the stream as in flight while it lives (least-loaded choice).
        let hold = resp.extensions_mut().remove::<balance::EndpointHold>();
        let name = self.cfg.name.clone();
        let active = METRICS.upgrades_active.with_label_values(&[&name]);
        let opened = METRICS.upgrades.with_label_values(&[&name]);
        let (active2, name2) = (active.clone(), name.clone());
        upgrade::spawn_relay(
            format!("dependency {name}"),
            app_side,
            peer_side,
            self.cfg.upgrade_idle_timeout,
            move || {
                opened.inc();
                active.inc();
            },
            move |s| {
                active2.dec();
                if let Some(bytes) = hold.and_then(|h| h.bytes) {
                    bytes.sent_bytes.inc_by(s.a_to_b);
                    bytes.received_bytes.inc_by(s.b_to_a);
                }
                METRICS
                    .upgrades_closed
                    .with_label_values(&[&name2, s.closed.as_str()])
                    .inc();
            },
        );
    }

    /// What `/dependencies` shows.
    pub fn status(&self) -> Value {
        let now = tollgate_config::outlier::now_ms();
        let eps: Vec<Value> = self
            .endpoints
            .current()
            .iter()
            .map(|m| {
                let e = &m.state;
                json!({
                    "address": e.address.to_string(),
                    "zone": m.at.zone,
                    "locality": m.locality.label(),
                    "ejected": e.is_ejected(now),
                    "ejections": e.ejections(),
                    "in_flight": e.in_flight(),
                    "requests": e.requests(),
                    "failures": e.failures(),
                })
            })
            .collect();
        json!({
            "name": self.cfg.name,
            "listen": self.cfg.listen.map(|a| a.to_string()),
            "server_identity": self.cfg.server_identity,
            "zone_aware": self.cfg.zone_aware.map(|z| z.min_local_healthy),
            "protocol": if self.cfg.http2 { "http2" } else { "http1" },
            "breaker": self.breaker.as_ref().map(|b| serde_json::to_value(b.snapshot()).unwrap_or_default()),
            "retry": self.retry.as_ref().map(|r| json!({
                "stats": serde_json::to_value(r.stats().snapshot()).unwrap_or_default(),
                "budget": serde_json::to_value(r.budget().snapshot()).unwrap_or_default(),
            })),
            "bulkhead": { "max_concurrent": self.cfg.max_concurrent, "stats": serde_json::to_value(self.bulkhead.stats().snapshot()).unwrap_or_default() },
            "rate_limit": self.rate_limit.as_ref().map(|r| serde_json::to_value(r.snapshot()).unwrap_or_default()),
            "hedge": self.hedge.as_ref().map(|h| serde_json::to_value(h.status()).unwrap_or_default()),
            "endpoints": eps,
        })
    }
}

fn strip_hop_by_hop(h: &mut http::HeaderMap) {
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
    ] {
        h.remove(name);
    }
    // `te: trailers` is the one TE HTTP/2 allows, and gRPC servers refuse a call
    // without it ("the client understands trailers": the status travels in them).
    if h.get(header::TE)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        h.remove(header::TE);
    }
    h.remove("keep-alive");
    h.remove("proxy-connection");
}

/// Serve one app connection on a dependency's own listener.
pub async fn serve_dependency_conn(state: Arc<State>, dependency: Arc<str>, tcp: TcpStream) {
    let watcher = state.connections.watcher();
    let svc = service_fn(move |req| {
        let (state, dep) = (state.clone(), dependency.clone());
        async move { Ok::<_, std::convert::Infallible>(route(&state, &dep, req).await) }
    });
    serve_plain(watcher, tcp, svc).await;
}

/// Serve one app connection on the HTTP-proxy listener (dependency named by Host).
pub async fn serve_proxy_conn(state: Arc<State>, tcp: TcpStream) {
    let watcher = state.connections.watcher();
    let svc = service_fn(move |req: Request<Incoming>| {
        let state = state.clone();
        async move {
            let host = req
                .uri()
                .host()
                .map(str::to_owned)
                .or_else(|| {
                    req.headers()
                        .get(header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .map(|h| h.rsplit_once(':').map_or(h, |(a, _)| a).to_owned())
                })
                .unwrap_or_default();
            Ok::<_, std::convert::Infallible>(route(&state, &host, req).await)
        }
    });
    serve_plain(watcher, tcp, svc).await;
}

async fn serve_plain<S>(watcher: Option<Watcher>, tcp: TcpStream, svc: S)
where
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<Body>,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    // None: shutting down, do not start serving a new connection.
    let Some(watcher) = watcher else {
        return;
    };
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // With upgrades: a WebSocket from the app is carried through (see `upgrade`).
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), svc);
    let _ = watcher.watch(conn.into_owned()).await;
}

async fn route(state: &State, dependency: &str, req: Request<Incoming>) -> Response<Body> {
    let dep = state.snapshot.load().dependencies.get(dependency).cloned();
    match dep {
        Some(d) => d.call(state, req).await,
        None => Reply {
            status: StatusCode::SERVICE_UNAVAILABLE,
            grpc_code: grpc::code::UNAVAILABLE,
            kind: "unknown_dependency",
            message: &format!("no dependency named {dependency:?}"),
            retry_after: None,
        }
        .into_response(grpc::is_grpc(req.headers())),
    }
}

/// Addresses a config wants outbound listeners on: (address, dependency).
pub fn wanted_listeners(state: &State) -> Vec<(SocketAddr, String)> {
    let snap = state.snapshot.load();
    let mut v: Vec<_> = snap
        .config
        .dependencies
        .values()
        .filter_map(|d| d.listen.map(|a| (a, d.name.clone())))
        .collect();
    v.sort();
    v
}
