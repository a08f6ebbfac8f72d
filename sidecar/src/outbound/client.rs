//! The connection pool to peer sidecars: hyper's pooled client over our mTLS connector.
//! The connector verifies the peer's SPIFFE id on every new connection (with the
//! identity current at that moment, so rotation applies to new connections only);
//! ALPN picks HTTP/2 so one connection multiplexes many calls.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::body::{Body, BoxError};
use crate::error::ProxyError;
use crate::identity::IdentityStore;

pub type PeerClient = Client<MtlsConnector, Body>;

/// Builds mTLS connections to `https://IP:PORT` URIs.
#[derive(Clone)]
pub struct MtlsConnector {
    pub identity: Arc<IdentityStore>,
    pub server_identity: Arc<str>,
    pub http2: bool,
    pub connect_timeout: Duration,
}

pub fn client(connector: MtlsConnector) -> PeerClient {
    let http2 = connector.http2;
    let mut b = Client::builder(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(64)
        .http2_only(http2)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .http2_keep_alive_while_idle(true);
    b.build(connector)
}

impl tower::Service<Uri> for MtlsConnector {
    type Response = PeerConn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<PeerConn, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let addr: SocketAddr = uri
                .authority()
                .map(|a| a.as_str())
                .unwrap_or("")
                .parse()
                .map_err(|_| format!("endpoint {uri} is not IP:PORT"))?;
            let tcp = tokio::time::timeout(this.connect_timeout, TcpStream::connect(addr))
                .await
                .map_err(|_| {
                    format!(
                        "connect to {addr} timed out after {:?}",
                        this.connect_timeout
                    )
                })?
                .map_err(|e| format!("connect to {addr}: {e}"))?;
            let _ = tcp.set_nodelay(true);
            let config = this
                .identity
                .client_config(&this.server_identity, this.http2);
            let tls = TlsConnector::from(config)
                .connect(ServerName::IpAddress(addr.ip().into()), tcp)
                .await
                .map_err(|e| -> BoxError { Box::new(e) })?;
            Ok(PeerConn {
                io: TokioIo::new(tls),
            })
        })
    }
}

/// An established mTLS connection to a peer sidecar.
pub struct PeerConn {
    io: TokioIo<TlsStream<TcpStream>>,
}

impl Connection for PeerConn {
    fn connected(&self) -> Connected {
        let (_, session) = self.io.inner().get_ref();
        if session.alpn_protocol() == Some(b"h2") {
            Connected::new().negotiated_h2()
        } else {
            Connected::new()
        }
    }
}

impl hyper::rt::Read for PeerConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for PeerConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

/// Turn a client error into what the resilience layers reason about.
pub fn classify(err: &hyper_util::client::legacy::Error) -> ProxyError {
    let chain = error_chain(err);
    if let Some(reason) = h2_reason(err) {
        // The peer refused the stream before processing it: never reached the app.
        if reason == h2::Reason::REFUSED_STREAM {
            return ProxyError::Refused(chain);
        }
    }
    if find_source::<rustls::Error>(err).is_some() {
        return ProxyError::PeerIdentity(chain);
    }
    if err.is_connect() {
        return ProxyError::Connect(chain);
    }
    ProxyError::Reset(chain)
}

/// A connector error (TCP connect, TLS handshake, peer identity): never sent.
pub fn classify_connect(err: &(dyn std::error::Error + 'static)) -> ProxyError {
    let chain = error_chain(err);
    if find_source::<rustls::Error>(err).is_some() {
        return ProxyError::PeerIdentity(chain);
    }
    ProxyError::Connect(chain)
}

fn h2_reason(err: &(dyn std::error::Error + 'static)) -> Option<h2::Reason> {
    let e = find_source::<h2::Error>(err)?;
    // A GOAWAY that did not cover this stream means it was never processed.
    if e.is_go_away() && e.is_remote() && e.reason() == Some(h2::Reason::NO_ERROR) {
        return Some(h2::Reason::REFUSED_STREAM);
    }
    e.reason()
}

fn find_source<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(t) = inner.downcast_ref::<T>() {
                    return Some(t);
                }
            }
        }
        cur = e.source();
    }
    None
}

pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}
