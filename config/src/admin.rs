//! The admin listener both proxies run: `/healthz`, `/readyz`, `/metrics`, the status
//! page (`/`, `/status`), plus the product's own endpoints (`/config`, `/upstreams`,
//! `/dependencies`, `POST /reload`, ...).
//!
//! It runs on its own thread and single-threaded runtime, so it keeps answering
//! (health probes, metrics scrapes) even when the proxy's workers are saturated.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

mod status;

/// Readiness as `/readyz` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Readiness {
    Starting = 0,
    Ready = 1,
    Draining = 2,
}

/// Process-wide liveness/readiness state, shared between the proxy and the admin listener.
#[derive(Debug)]
pub struct Health {
    state: AtomicU8,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            state: AtomicU8::new(Readiness::Starting as u8),
        }
    }
}

impl Health {
    pub fn set(&self, r: Readiness) {
        self.state.store(r as u8, Ordering::SeqCst);
    }
    pub fn get(&self) -> Readiness {
        match self.state.load(Ordering::SeqCst) {
            1 => Readiness::Ready,
            2 => Readiness::Draining,
            _ => Readiness::Starting,
        }
    }
}

/// A request to a product-specific admin endpoint.
pub struct AdminRequest {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
}

/// A response from a product-specific admin endpoint.
pub struct AdminResponse {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: String,
    /// Further headers; static, so no request data ever lands in a header.
    pub headers: &'static [(&'static str, &'static str)],
}

impl AdminResponse {
    pub fn json(status: StatusCode, value: &serde_json::Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: serde_json::to_string_pretty(value).unwrap_or_default() + "\n",
            headers: &[],
        }
    }
    pub fn text(status: StatusCode, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            headers: &[],
        }
    }
}

/// The product's own admin endpoints. Called on a blocking thread, so it may do blocking
/// work (a reload builds a whole config snapshot).
pub trait AdminHandler: Send + Sync + 'static {
    /// Return `None` for paths it does not serve (404).
    fn handle(&self, req: &AdminRequest) -> Option<AdminResponse>;
}

/// Bind the admin listener now (so a taken port fails startup) and serve it on a
/// dedicated thread.
pub fn spawn(
    addr: SocketAddr,
    health: Arc<Health>,
    handler: Arc<dyn AdminHandler>,
) -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)?;
    serve_on(listener, health, handler).map(|(local, _)| local)
}

/// Lets go of the admin port while the process keeps running: a gateway handing over
/// to its successor (binary upgrade) releases it so the new process can bind it.
#[derive(Debug, Clone, Default)]
pub struct Release {
    notify: Arc<tokio::sync::Notify>,
}

impl Release {
    /// Close the listening socket; connections already open get a moment to finish.
    pub fn release(&self) {
        self.notify.notify_one();
    }
}

/// Serve an already bound admin listener on a dedicated thread.
pub fn serve_on(
    std_listener: std::net::TcpListener,
    health: Arc<Health>,
    handler: Arc<dyn AdminHandler>,
) -> std::io::Result<(SocketAddr, Release)> {
    std_listener.set_nonblocking(true)?;
    let local = std_listener.local_addr()?;
    let release = Release::default();
    let released = release.notify.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || {
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(std_listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("admin listener: {e}");
                        return;
                    }
                };
                loop {
                    let accepted = tokio::select! {
                        a = listener.accept() => a,
                        _ = released.notified() => break,
                    };
                    let (stream, _) = match accepted {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!("admin accept: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let health = health.clone();
                    let handler = handler.clone();
                    tokio::spawn(async move {
                        let svc =
                            service_fn(move |req| serve(req, health.clone(), handler.clone()));
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
                drop(listener);
                tracing::info!("admin listener released");
                // Answers being written (the one that asked for the release) finish;
                // the process is on its way out, so nothing waits for longer ones.
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            });
        })?;
    Ok((local, release))
}

async fn serve(
    req: hyper::Request<Incoming>,
    health: Arc<Health>,
    handler: Arc<dyn AdminHandler>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let resp = match (method.clone(), path.as_str()) {
        (Method::GET | Method::HEAD, "/healthz") => AdminResponse::text(StatusCode::OK, "ok\n"),
        (Method::GET | Method::HEAD, "/readyz") => match health.get() {
            Readiness::Ready => AdminResponse::text(StatusCode::OK, "ready\n"),
            Readiness::Starting => {
                AdminResponse::text(StatusCode::SERVICE_UNAVAILABLE, "starting\n")
            }
            Readiness::Draining => {
                AdminResponse::text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            }
        },
        (Method::GET, "/metrics") => AdminResponse {
            status: StatusCode::OK,
            content_type: "text/plain; version=0.0.4",
            body: crate::metrics::encode_text(),
            headers: &[],
        },
        (Method::GET | Method::HEAD, "/" | "/status") => status::page(),
        _ => {
            let areq = AdminRequest {
                method,
                path,
                query: req.uri().query().map(str::to_owned),
            };
            let res = tokio::task::spawn_blocking(move || handler.handle(&areq)).await;
            match res {
                Ok(Some(r)) => r,
                Ok(None) => AdminResponse::text(StatusCode::NOT_FOUND, "not found\n"),
                Err(_) => {
                    AdminResponse::text(StatusCode::INTERNAL_SERVER_ERROR, "handler failed\n")
                }
            }
        }
    };
    let mut builder = Response::builder()
        .status(resp.status)
        .header(http::header::CONTENT_TYPE, resp.content_type);
    if resp.status == StatusCode::SERVICE_UNAVAILABLE {
        builder = builder.header(http::header::RETRY_AFTER, "1");
    }
    for (name, value) in resp.headers {
        builder = builder.header(*name, *value);
    }
    Ok(builder
        .body(Full::new(Bytes::from(resp.body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}
