//! Inbound: the mTLS listener in front of the local app.
//!
//! TLS handshake (client certificate required, chained to the trust bundle) ->
//! caller's SPIFFE id from its certificate -> allow-list (optionally per path prefix),
//! 403 otherwise -> the verified identity in a header (any copy from outside removed)
//! -> the local app over plain HTTP on loopback, HTTP/1.1 or cleartext HTTP/2 (h2c)
//! per `app_protocol`.
//!
//! `app_protocol: auto` gives the app the HTTP version the *calling app* used, not the
//! one between the sidecars (HTTP/2 by default, whatever the app spoke): the caller's
//! sidecar says "HTTP/2" in [`ORIG_PROTO`] when its app spoke HTTP/2, and a gRPC call
//! (HTTP/2 only, by its spec) goes as h2c even without it (a caller that is not one of
//! our sidecars). Everything else goes as HTTP/1.1, as before `app_protocol` existed,
//! so an HTTP/1.1-only app behind a sidecar keeps working.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderMap, HeaderName, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tollgate_config::sidecar::AppProtocol;

use crate::body::{boxed, Body};
use crate::error::{Reply, UNEXPECTED_UPGRADE};
use crate::identity::peer_spiffe_id;
use crate::metrics::{status_class, METRICS};
use crate::resilience::grpc;
use crate::state::State;
use crate::upgrade;

/// Set by the calling sidecar to `HTTP/2` when its app spoke HTTP/2; removed before the
/// request reaches the app.
pub const ORIG_PROTO: HeaderName = HeaderName::from_static("x-sidecar-orig-proto");
pub const ORIG_PROTO_HTTP2: &str = "HTTP/2";

/// Pools to the local app, one per HTTP version.
pub struct AppClient {
    http1: Client<HttpConnector, Body>,
    /// HTTP/2 with prior knowledge over plain TCP: one connection multiplexes the calls.
    h2c: Client<HttpConnector, Body>,
}

impl AppClient {
    async fn request(
        &self,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
        if req.version() == Version::HTTP_2 {
            self.h2c.request(req).await
        } else {
            self.http1.request(req).await
        }
    }
}

pub fn app_client() -> AppClient {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(1)));
    let build = |http2: bool| {
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .http2_only(http2)
            .build(http.clone())
    };
    AppClient {
        http1: build(false),
        h2c: build(true),
    }
}

/// The HTTP version the app gets a request in (see the module doc for `auto`).
pub fn app_version(protocol: AppProtocol, headers: &HeaderMap) -> Version {
    let caller_spoke_http2 = || {
        headers
            .get(&ORIG_PROTO)
            .is_some_and(|v| v.as_bytes() == ORIG_PROTO_HTTP2.as_bytes())
    };
    match protocol {
        AppProtocol::Http1 => Version::HTTP_11,
        AppProtocol::H2c => Version::HTTP_2,
        AppProtocol::Auto if caller_spoke_http2() || grpc::is_grpc(headers) => Version::HTTP_2,
        AppProtocol::Auto => Version::HTTP_11,
    }
}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve one accepted inbound connection.
pub async fn serve_conn(state: Arc<State>, tcp: TcpStream, peer: SocketAddr) {
    let acceptor = TlsAcceptor::from(state.identity.server_config());
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            METRICS
                .inbound_refused
                .with_label_values(&["handshake"])
                .inc();
            tracing::debug!(%peer, "inbound handshake refused: {e}");
            return;
        }
        Err(_) => {
            METRICS
                .inbound_refused
                .with_label_values(&["handshake_timeout"])
                .inc();
            return;
        }
    };
    let caller = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(peer_spiffe_id);
    let Some(caller) = caller else {
        METRICS
            .inbound_refused
            .with_label_values(&["no_spiffe_id"])
            .inc();
        tracing::info!(%peer, "inbound caller certificate has no SPIFFE id");
        return;
    };
    let caller: Arc<str> = caller.into();
    let Some(watcher) = state.connections.watcher() else {
        return;
    };
    let svc = service_fn(move |req| {
        let (state, caller) = (state.clone(), caller.clone());
        async move { Ok::<_, std::convert::Infallible>(handle(&state, &caller, req).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // With upgrades: a peer sidecar carries WebSockets on HTTP/1.1 (see `upgrade`).
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
    let _ = watcher.watch(conn.into_owned()).await;
}

/// An answer of the sidecar's own, in the caller's protocol (HTTP or gRPC).
fn reply(grpc_call: bool, status: StatusCode, kind: &'static str, message: &str) -> Response<Body> {
    let grpc_code = match status {
        StatusCode::GATEWAY_TIMEOUT => grpc::code::DEADLINE_EXCEEDED,
        StatusCode::SERVICE_UNAVAILABLE => grpc::code::UNAVAILABLE,
        other => grpc::code_of_http_status(other.as_u16()),
    };
    Reply {
        status,
        grpc_code,
        kind,
        message,
        retry_after: None,
    }
    .into_response(grpc_call)
}

async fn handle(state: &State, caller: &str, mut req: Request<Incoming>) -> Response<Body> {
    let snap = state.snapshot.load();
    let grpc_call = grpc::is_grpc(req.headers());
    let Some(inbound) = snap.config.inbound.as_ref() else {
        return reply(
            grpc_call,
            StatusCode::SERVICE_UNAVAILABLE,
            "inbound_not_configured",
            "inbound is not configured",
        );
    };
    if !inbound.allows(caller, req.uri().path()) {
        METRICS
            .inbound_requests
            .with_label_values(&[caller, "4xx"])
            .inc();
        METRICS
            .inbound_refused
            .with_label_values(&["not_allowed"])
            .inc();
        return reply(
            grpc_call,
            StatusCode::FORBIDDEN,
            "not_allowed",
            &format!(
                "caller {caller} is not allowed to call {}",
                req.uri().path()
            ),
        );
    }
    // The app must be able to trust this header: drop whatever came from outside.
    let headers = req.headers_mut();
    headers.remove(&inbound.identity_header);
    if let Ok(v) = http::HeaderValue::from_str(caller) {
        headers.insert(inbound.identity_header.clone(), v);
    }
    let pq = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let uri = Uri::builder()
        .scheme("http")
        .authority(inbound.forward_to.to_string())
        .path_and_query(pq)
        .build();
    let Ok(uri) = uri else {
        return reply(
            grpc_call,
            StatusCode::BAD_REQUEST,
            "bad_target",
            "bad request target",
        );
    };
    let authority = req.uri().authority().map(|a| a.to_string());
    // A WebSocket from the peer: our side of it, for when the app has switched too.
    let peer_upgrade = upgrade::is_upgrade_request(req.version(), req.headers())
        .then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let hop = crate::telemetry::Hop::begin(&mut parts.headers, snap.config.tracing.as_ref());
    let (method, path) = (parts.method.clone(), parts.uri.path().to_owned());
    parts.uri = uri;
    parts.version = match peer_upgrade {
        // An upgrade is HTTP/1.1 by nature, whatever `app_protocol` says.
        Some(_) => Version::HTTP_11,
        None => app_version(inbound.app_protocol, &parts.headers),
    };
    parts.headers.remove(&ORIG_PROTO);
    if parts.version == Version::HTTP_11 && !parts.headers.contains_key(header::HOST) {
        if let Some(a) = authority.and_then(|a| http::HeaderValue::from_str(&a).ok()) {
            parts.headers.insert(header::HOST, a);
        }
    }
    // A gRPC call's deadline: the sooner of the caller's and ours, passed on to the app.
    let timeout = match grpc::timeout(&parts.headers).filter(|_| grpc_call) {
        Some(t) => t.min(inbound.timeout),
        None => inbound.timeout,
    };
    if grpc_call {
        parts
            .headers
            .insert(grpc::GRPC_TIMEOUT, grpc::encode_timeout(timeout));
    }
    let fwd = Request::from_parts(parts, boxed(body));
    let mut error = None;
    let call = async {
        match peer_upgrade {
            Some(_) => upgrade_to_app(inbound.forward_to, fwd).await,
            None => state
                .app_client
                .request(fwd)
                .await
                .map_err(|e| e.to_string()),
        }
    };
    // `timeout` bounds the wait for the answer (a 101 included), never the stream.
    let (resp, status) = match tokio::time::timeout(timeout, call).await {
        Ok(Ok(mut r)) if r.status() == StatusCode::SWITCHING_PROTOCOLS => match peer_upgrade {
            Some(peer_side) => {
                relay_to_app(
                    caller,
                    peer_side,
                    hyper::upgrade::on(&mut r),
                    inbound.upgrade_idle_timeout,
                );
                (r.map(boxed), StatusCode::SWITCHING_PROTOCOLS)
            }
            None => {
                tracing::warn!(
                    "local app {}: 101 to a request that did not ask to upgrade",
                    inbound.forward_to
                );
                error = Some("local app switched protocols unasked".to_owned());
                let status = StatusCode::BAD_GATEWAY;
                let message = "local app switched protocols on a request that did not ask to";
                (
                    reply(grpc_call, status, UNEXPECTED_UPGRADE, message),
                    status,
                )
            }
        },
        Ok(Ok(r)) => {
            let status = r.status();
            (r.map(boxed), status)
        }
        Ok(Err(e)) => {
            tracing::warn!("local app {}: {e}", inbound.forward_to);
            error = Some(format!("local app unavailable: {e}"));
            let status = StatusCode::BAD_GATEWAY;
            let message = "local app unavailable";
            let r = reply(grpc_call, status, "app_unavailable", message);
            (r, status)
        }
        Err(_) => {
            error = Some("local app timed out".to_owned());
            let status = StatusCode::GATEWAY_TIMEOUT;
            let r = reply(grpc_call, status, "app_timeout", "local app timed out");
            (r, status)
        }
    };
    // The HTTP status of our own answers, even when a gRPC caller got it as a 200.
    let status = status.as_u16();
    let mut attrs = crate::telemetry::http_attributes(&method, &path, status);
    attrs.push(tollgate_config::telemetry::spans::attr(
        "tollgate.caller",
        caller,
    ));
    hop.end(
        &state.telemetry,
        format!("{method} inbound"),
        tollgate_config::telemetry::spans::Kind::Server,
        attrs,
        error.or_else(|| (status >= 500).then(|| format!("status {status}"))),
    );
    METRICS
        .inbound_requests
        .with_label_values(&[caller, status_class(status)])
        .inc();
    resp
}

/// An upgrade to the app on a connection of its own (the stream will own it).
async fn upgrade_to_app(app: SocketAddr, req: Request<Body>) -> Result<Response<Incoming>, String> {
    let tcp = TcpStream::connect(app)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (mut send, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    // HTTP/1.1 to the app: origin-form target (the Host header is already set).
    let (mut parts, body) = req.into_parts();
    parts.uri = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .map_err(|e| format!("bad request target: {e}"))?;
    send.send_request(Request::from_parts(parts, body))
        .await
        .map_err(|e| e.to_string())
}

fn relay_to_app(
    caller: &str,
    peer_side: hyper::upgrade::OnUpgrade,
    app_side: hyper::upgrade::OnUpgrade,
    idle: Duration,
) {
    let opened = METRICS.inbound_upgrades.with_label_values(&[caller]);
    upgrade::spawn_relay(
        format!("inbound from {caller}"),
        peer_side,
        app_side,
        idle,
        move || {
            opened.inc();
            METRICS.inbound_upgrades_active.inc();
        },
        |_| METRICS.inbound_upgrades_active.dec(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::from_static(k),
                    http::HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn auto_keeps_the_calling_apps_version() {
        let grpc = headers(&[("content-type", "application/grpc")]);
        let marked = headers(&[("x-sidecar-orig-proto", "HTTP/2")]);
        let plain = headers(&[("content-type", "application/json")]);
        let web = headers(&[("content-type", "application/grpc-web")]);
        assert_eq!(app_version(AppProtocol::Auto, &grpc), Version::HTTP_2);
        assert_eq!(app_version(AppProtocol::Auto, &marked), Version::HTTP_2);
        // HTTP/1.1 callers (and grpc-web, which is HTTP/1.1-friendly) as before.
        assert_eq!(app_version(AppProtocol::Auto, &plain), Version::HTTP_11);
        assert_eq!(app_version(AppProtocol::Auto, &web), Version::HTTP_11);
        assert_eq!(app_version(AppProtocol::Http1, &grpc), Version::HTTP_11);
        assert_eq!(app_version(AppProtocol::H2c, &plain), Version::HTTP_2);
    }
}
