//! The `backend-demo` server: echoes every request as JSON, serves `/healthz`, and takes
//! fault knobs under `/_…` at run time.
//!
//! It is also the upstream of the load benchmarks, so the normal path stays lean: no
//! locks while no fault is set, the body is counted rather than buffered, and the JSON is
//! written in one allocation.

use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::ser::SerializeMap as _;
use serde::{Serialize, Serializer};
use tokio::net::TcpListener;

use crate::faults::{parse_health_query, Action, Faults, Knobs};

/// How `backend-demo` was asked to run.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub zone: String,
    pub id: String,
    /// Tokio worker threads.
    pub threads: usize,
    /// Serve HTTPS with this PEM certificate chain and key instead of plain HTTP.
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

/// A TLS acceptor for `--tls-cert/--tls-key` (TLS 1.2 and 1.3, ALPN http/1.1).
fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert.display()))?;
    let key =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// Everything the request handlers share.
#[derive(Debug)]
pub struct State {
    zone: String,
    id: String,
    zone_header: HeaderValue,
    id_header: HeaderValue,
    knobs: Knobs,
    requests: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
}

impl State {
    pub fn new(zone: &str, id: &str) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            zone: zone.to_owned(),
            id: id.to_owned(),
            zone_header: HeaderValue::from_str(zone).context("zone is not a valid header value")?,
            id_header: HeaderValue::from_str(id).context("id is not a valid header value")?,
            knobs: Knobs::default(),
            requests: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            peak_in_flight: AtomicU64::new(0),
        }))
    }

    pub fn knobs(&self) -> &Knobs {
        &self.knobs
    }
}

/// Run the server until SIGTERM or SIGINT (then return `Ok`, so the process exits 0).
pub fn run(config: ServerConfig) -> anyhow::Result<()> {
    let state = State::new(&config.zone, &config.id)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.threads.max(1))
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let local = listener.local_addr()?;
        announce(&format!(
            "backend-demo listening on {local} zone={} id={}",
            config.zone, config.id
        ));
        let tls = match &config.tls {
            Some((cert, key)) => Some(tls_acceptor(cert, key)?),
            None => None,
        };
        serve_with_tls(listener, state, tls, shutdown_signal()?).await;
        Ok::<_, anyhow::Error>(())
    })?;
    // Hung requests never finish by design; drop them rather than wait.
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}

fn announce(line: &str) {
    // Whoever spawned us may have closed stdout; that is not a reason to stop serving.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Accept connections on `listener` until `shutdown` completes. HTTP/1.1 with keep-alive
/// and h2c (prior knowledge) are told apart by the connection preface.
pub async fn serve(listener: TcpListener, state: Arc<State>, shutdown: impl Future<Output = ()>) {
    serve_with_tls(listener, state, None, shutdown).await
}

/// [`serve`], over TLS when an acceptor is given.
pub async fn serve_with_tls(
    listener: TcpListener,
    state: Arc<State>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // Usually EMFILE; back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let state = state.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(state.clone(), req));
            // An error here is a client going away or a `reset` fault: nothing to do.
            match tls {
                None => {
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
                Some(acceptor) => {
                    if let Ok(s) = acceptor.accept(stream).await {
                        let _ = builder.serve_connection(TokioIo::new(s), service).await;
                    }
                }
            }
        });
    }
}

/// Returned by the service to make hyper close the connection without answering.
#[derive(Debug)]
struct ResetConnection;

impl std::fmt::Display for ResetConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset by fault knob")
    }
}

impl std::error::Error for ResetConnection {}

type Resp = Response<Full<Bytes>>;

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Resp, ResetConnection> {
    let path = req.uri().path();
    let mut resp = if path == "/healthz" {
        health(&state)
    } else if path.starts_with("/_") {
        control(&state, req.method(), path, req.uri().query().unwrap_or(""))
    } else {
        normal(&state, req).await?
    };
    let headers = resp.headers_mut();
    headers.insert("x-backend-id", state.id_header.clone());
    headers.insert("x-backend-zone", state.zone_header.clone());
    Ok(resp)
}

fn health(state: &State) -> Resp {
    if state.knobs.healthy() {
        text(StatusCode::OK, "ok")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "unhealthy")
    }
}

/// The `/_…` endpoints: knobs, stats, crash. Faults never apply here.
fn control(state: &State, method: &Method, path: &str, query: &str) -> Resp {
    let knobs = &state.knobs;
    let set = |result: Result<(), crate::faults::KnobError>| match result {
        Ok(()) => json(StatusCode::OK, &knobs.view()),
        Err(e) => text(StatusCode::BAD_REQUEST, &format!("{e}\n")),
    };
    match (method, path) {
        (&Method::POST, "/_fault") => set(Faults::parse_query(query).map(|f| knobs.set_faults(f))),
        (&Method::POST, "/_fault/clear") => {
            knobs.set_faults(Faults::default());
            set(Ok(()))
        }
        (&Method::POST, "/_health") => {
            set(parse_health_query(query).map(|ok| knobs.set_healthy(ok)))
        }
        (&Method::GET, "/_fault" | "/_health") => json(StatusCode::OK, &knobs.view()),
        (&Method::GET, "/_stats") => json(
            StatusCode::OK,
            &serde_json::json!({
                "requests": state.requests.load(Ordering::Relaxed),
                "in_flight": state.in_flight.load(Ordering::Relaxed),
                "peak_in_flight": state.peak_in_flight.load(Ordering::Relaxed),
            }),
        ),
        (&Method::POST, "/_crash") => {
            // Answer first so the caller sees it landed, then go down hard.
            tokio::spawn(async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                std::process::exit(1);
            });
            json(StatusCode::OK, &serde_json::json!({ "crashing": true }))
        }
        (_, "/_fault" | "/_fault/clear" | "/_health" | "/_stats" | "/_crash") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(StatusCode::NOT_FOUND, "no such knob\n"),
    }
}

/// Counts a request as in flight for exactly as long as its handler lives, even when the
/// client goes away mid-way and hyper drops the handler.
struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn normal(state: &State, req: Request<Incoming>) -> Result<Resp, ResetConnection> {
    state.requests.fetch_add(1, Ordering::Relaxed);
    let _in_flight = InFlight::enter(&state.in_flight);
    state
        .peak_in_flight
        .fetch_max(state.in_flight.load(Ordering::Relaxed), Ordering::Relaxed);
    let faults = state.knobs.faults_for(req.uri().path());
    let action = faults.as_ref().and_then(Faults::roll);

    let (parts, body) = req.into_parts();
    let body_bytes = count_body(body).await.map_err(|_| ResetConnection)?;
    if let Some(latency) = faults.as_ref().and_then(Faults::roll_latency) {
        tokio::time::sleep(latency).await;
    }
    if let Some(per) = faults.as_ref().and_then(|f| f.load_latency) {
        let others = state.in_flight.load(Ordering::Relaxed).saturating_sub(1);
        tokio::time::sleep(per * u32::try_from(others).unwrap_or(u32::MAX)).await;
    }
    match action {
        None => {}
        Some(Action::Status(status)) => {
            return Ok(json(
                status,
                &serde_json::json!({ "fault": true, "id": state.id }),
            ))
        }
        Some(Action::Hang) => std::future::pending::<()>().await,
        Some(Action::Reset) => return Err(ResetConnection),
    }
    let echo = Echo {
        zone: &state.zone,
        id: &state.id,
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: EchoHeaders(&parts.headers),
        body_bytes,
    };
    Ok(json(StatusCode::OK, &echo))
}

async fn count_body(mut body: Incoming) -> Result<u64, hyper::Error> {
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            n += data.len() as u64;
        }
    }
    Ok(n)
}

#[derive(Serialize)]
struct Echo<'a> {
    zone: &'a str,
    id: &'a str,
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    headers: EchoHeaders<'a>,
    body_bytes: u64,
}

/// Headers as a JSON object: lowercase name to value, repeated values joined with ", ".
struct EchoHeaders<'a>(&'a HeaderMap);

impl Serialize for EchoHeaders<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.keys_len()))?;
        for name in self.0.keys() {
            let mut values = self.0.get_all(name).iter();
            let first = values
                .next()
                .map(|v| String::from_utf8_lossy(v.as_bytes()))
                .unwrap_or_default();
            match values.next() {
                None => map.serialize_entry(name.as_str(), &first)?,
                Some(second) => {
                    let mut joined = first.into_owned();
                    for v in std::iter::once(second).chain(values) {
                        joined.push_str(", ");
                        joined.push_str(&String::from_utf8_lossy(v.as_bytes()));
                    }
                    map.serialize_entry(name.as_str(), &joined)?;
                }
            }
        }
        map.end()
    }
}

fn json(status: StatusCode, body: &impl Serialize) -> Resp {
    let mut buf = Vec::with_capacity(512);
    match serde_json::to_writer(&mut buf, body) {
        Ok(()) => respond(status, "application/json", Bytes::from(buf)),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
    }
}

fn text(status: StatusCode, body: &str) -> Resp {
    respond(
        status,
        "text/plain; charset=utf-8",
        Bytes::copy_from_slice(body.as_bytes()),
    )
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Resp {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn echo_headers_lowercase_and_join_repeats() {
        let mut h = HeaderMap::new();
        h.append("X-Thing", HeaderValue::from_static("one"));
        h.append("x-thing", HeaderValue::from_static("two"));
        h.append("Host", HeaderValue::from_static("example"));
        h.append("x-bin", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let v = serde_json::to_value(EchoHeaders(&h)).unwrap();
        assert_eq!(v["x-thing"], "one, two");
        assert_eq!(v["host"], "example");
        assert_eq!(v["x-bin"], "caf\u{fffd}");
    }

    #[test]
    fn control_endpoints_refuse_bad_knobs_and_wrong_methods() {
        let state = State::new("a", "a1").unwrap();
        let r = control(&state, &Method::POST, "/_fault", "status=abc");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = control(&state, &Method::GET, "/_crash", "");
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        let r = control(&state, &Method::POST, "/_nope", "");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = control(&state, &Method::POST, "/_fault", "status=503&rate=0.5");
        assert_eq!(r.status(), StatusCode::OK);
        assert!(state.knobs().faults().is_some());
        let r = control(&state, &Method::POST, "/_fault/clear", "");
        assert_eq!(r.status(), StatusCode::OK);
        assert!(state.knobs().faults().is_none());
    }
}
