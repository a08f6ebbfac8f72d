//! Per-request state, in small parts: who the client is, which route and upstream the
//! request took, its attempts at upstream endpoints, and how it ended.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::HeaderValue;
use tollgate_config::telemetry::trace_context::TraceContext;

use crate::attempts::Attempts;
use crate::balance::UpstreamRt;
use crate::filters::FilterState;
use crate::route::RouteRt;
use crate::snapshot::Snapshot;
use crate::state::State;

pub struct Ctx {
    pub started: Instant,
    /// The same moment on the wall clock (access-log time, span start).
    pub started_wall: SystemTime,
    /// The snapshot this request uses from start to end, whatever reloads happen.
    pub snap: Arc<Snapshot>,
    pub client: Client,
    pub ids: Ids,
    /// Index of the route the request matched (so its metrics count it, even when a
    /// filter then refuses it).
    pub matched: Option<usize>,
    /// What the route's forward action chose.
    pub routed: Option<Routed>,
    pub attempts: Attempts,
    pub filter_state: FilterState,
    /// Why the gateway answered itself, if it did (metric label).
    pub rejected: Option<&'static str>,
    /// The rejection's detail, for the access log.
    pub rejection_detail: Option<String>,
    /// The route's action answered itself (`redirect`, `fixed_response`).
    pub answered: Option<&'static str>,
    /// Why the request is not desync-compliant, when it is not (access log).
    pub desync: Option<crate::desync::Reason>,
    /// Ask the upstream to close its connection after this request (desync defence).
    pub close_upstream: bool,
    /// A request body the WAF inspects as it streams.
    pub waf_stream: Option<crate::waf::Streaming>,
    /// The WAF refused the body mid-stream: the answer `fail_to_proxy` gives.
    pub waf_block: Option<crate::filters::Rejection>,
    /// The client asked to upgrade the connection (WebSocket).
    pub upgrade: bool,
    /// The connection was upgraded: counted in `gateway_upgraded_connections` until
    /// the request (the whole upgraded stream) ends.
    pub upgraded: Option<crate::metrics::GaugeGuard>,
    /// The request's trace and this gateway's span in it.
    pub trace: TraceContext,
    pub span_id: u64,
    /// Spans are recorded for this request (tracing on and the trace sampled).
    pub record_spans: bool,
    /// `gateway_in_flight_requests` of the request's listener, while it runs.
    pub listener_in_flight: Option<crate::metrics::GaugeGuard>,
    /// The route's concurrency slot, held until the request ends.
    pub concurrency_slot: Option<tokio::sync::OwnedSemaphorePermit>,
    /// The request is the first of its idempotency key: its answer is captured.
    pub idempotency: Option<Box<crate::idempotency::Pending>>,
    /// The upstream's concurrency slot and adaptive-limit place, held until the end.
    pub upstream_slot: Option<tokio::sync::OwnedSemaphorePermit>,
    pub adaptive: Option<crate::adaptive::AdaptivePermit>,
    /// When the request body started arriving, and how much has.
    pub body_progress: Option<(Instant, u64)>,
    /// The request is a gRPC call (`crate::grpc`).
    pub grpc: Option<crate::grpc::Call>,
    _in_flight: RequestGuard,
}

impl Ctx {
    pub fn new(state: &Arc<State>) -> Self {
        // Pingora creates the context once the request head is read.
        crate::connection::head_read();
        state.request_started();
        Self {
            started: Instant::now(),
            started_wall: SystemTime::now(),
            snap: state.snapshot.load_full(),
            client: Client::default(),
            ids: Ids::default(),
            matched: None,
            routed: None,
            attempts: Attempts::default(),
            filter_state: FilterState::default(),
            rejected: None,
            rejection_detail: None,
            answered: None,
            desync: None,
            close_upstream: false,
            waf_stream: None,
            waf_block: None,
            upgrade: false,
            upgraded: None,
            trace: TraceContext::default(),
            span_id: 0,
            record_spans: false,
            listener_in_flight: None,
            concurrency_slot: None,
            idempotency: None,
            upstream_slot: None,
            adaptive: None,
            body_progress: None,
            grpc: None,
            _in_flight: RequestGuard(state.clone()),
        }
    }

    /// The route the request matched, if any.
    pub fn route(&self) -> Option<&RouteRt> {
        self.matched.and_then(|i| self.snap.routes.get(i))
    }

    pub fn route_name(&self) -> &str {
        self.route().map_or("", |r| r.config.name.as_str())
    }
}

/// Who is asking, and over what.
#[derive(Debug, Default)]
pub struct Client {
    /// Index of the listener the request arrived on (in the snapshot's config).
    pub listener: Option<usize>,
    /// The connection's peer (after PROXY protocol).
    pub peer: Option<IpAddr>,
    /// The peer is one of the listener's `trusted_proxies`.
    pub peer_trusted: bool,
    /// The client: the peer, or what trusted proxies say in `X-Forwarded-For`.
    pub ip: Option<IpAddr>,
    pub tls: bool,
    /// The verified client certificate's identity (edge mTLS).
    pub identity: Option<String>,
}

/// Request id and trace context, as sent upstream and answered to the client.
#[derive(Debug, Default)]
pub struct Ids {
    pub request_id: Option<HeaderValue>,
    pub traceparent: Option<HeaderValue>,
}

/// What a forwarded request chose on its route.
pub struct Routed {
    /// Host without port, lower case.
    pub host: String,
    pub upstream: Arc<UpstreamRt>,
    /// When the route's request timeout runs out.
    pub deadline: Option<Instant>,
}

/// Counts the request as in flight for graceful shutdown until dropped.
struct RequestGuard(Arc<State>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.request_finished();
        crate::connection::request_done();
    }
}
