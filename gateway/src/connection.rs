//! What happens to a connection between `accept()` and HTTP: which listener it came
//! in on, its PROXY protocol header, TLS handshake accounting, and the limits that
//! keep slow or greedy clients from holding the gateway's connections: connections per
//! client address, and a deadline for each whole request head (slowloris).
//!
//! TLS listeners use Pingora's pre-TLS hook; plain listeners a thin [`ServerApp`]
//! wrapper around the HTTP proxy (Pingora has no hook there). Both look the listener
//! up by the connection's local address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::listeners::PreTlsProcess;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{GetSocketDigest, Stream};
use pingora_core::server::ShutdownWatch;
use pingora_error::{Error, ErrorType};
use tollgate_config::gateway::Listener;

use crate::metrics::METRICS;
use crate::proxy_protocol;
use crate::state::State;
use crate::tls::TLS_METRICS;

tokio::task_local! {
    /// Set once the request head of the current cycle has been read (Pingora then
    /// creates the request context, see `Ctx::new`).
    static HEAD_READ: Arc<AtomicBool>;
}

/// Called when a request context is created: the head it came with is complete.
pub fn head_read() {
    let _ = HEAD_READ.try_with(|seen| seen.store(true, Ordering::Relaxed));
}

/// The listeners as they were bound at startup (listeners need a restart to change).
#[derive(Debug, Default)]
pub struct ListenerTable {
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    address: SocketAddr,
    name: String,
    proxy_protocol: bool,
    /// Cleartext HTTP/2 accepted (prior knowledge).
    h2c: bool,
    /// `gateway_tls_handshakes_started_total` for this listener, resolved once.
    handshakes_started: prometheus::IntCounter,
    /// `gateway_connections_open` and `gateway_connections_accepted_total`.
    open: prometheus::IntGauge,
    accepted: prometheus::IntCounter,
}

impl ListenerTable {
    pub fn new<'a>(listeners: impl IntoIterator<Item = &'a Listener>) -> Self {
        Self {
            entries: listeners
                .into_iter()
                .map(|l| Entry {
                    address: l.address,
                    name: l.name.clone(),
                    proxy_protocol: l.proxy_protocol,
                    h2c: l.h2c,
                    handshakes_started: TLS_METRICS.started.with_label_values(&[&l.name]),
                    open: METRICS.connections_open.with_label_values(&[&l.name]),
                    accepted: METRICS.connections_accepted.with_label_values(&[&l.name]),
                })
                .collect(),
        }
    }

    fn find(&self, stream: &L4Stream) -> Option<&Entry> {
        self.find_by_digest(stream.get_socket_digest())
    }

    fn find_by_digest(
        &self,
        digest: Option<Arc<pingora_core::protocols::SocketDigest>>,
    ) -> Option<&Entry> {
        let local = digest.and_then(|d| d.local_addr().and_then(|a| a.as_inet()).copied())?;
        self.entries
            .iter()
            .find(|e| crate::snapshot::listens_on(e.address, local))
    }
}

/// Read the PROXY protocol header if the listener expects one.
async fn prelude(listener: Option<&Entry>, stream: &mut L4Stream) -> Result<(), String> {
    match listener {
        Some(e) if e.proxy_protocol => proxy_protocol::accept(stream, &e.name)
            .await
            .map(|_| ())
            .map_err(|err| format!("listener {}: {err}", e.name)),
        _ => Ok(()),
    }
}

/// Resolves when `timeout` has passed without the request head being read; never
/// once it has been (the request then runs to its end under its own timeouts).
///
/// On a kept-alive connection the time waiting for the next request counts too:
/// Pingora reads the next head itself, so the gateway cannot see its first byte. An
/// idle keep-alive connection is therefore closed after this long, as behind most load
/// balancers (ALB: 60 s).
async fn head_deadline(seen: &AtomicBool, timeout: Duration) {
    tokio::time::sleep(timeout).await;
    if seen.load(Ordering::Relaxed) {
        std::future::pending::<()>().await;
    }
}

/// Pingora's pre-TLS hook: count the handshake as started, read the PROXY header.
pub struct PreTls {
    pub table: Arc<ListenerTable>,
}

#[async_trait]
impl PreTlsProcess for PreTls {
    async fn process(&self, stream: &mut L4Stream) -> pingora_error::Result<()> {
        let listener = self.table.find(stream);
        if let Some(e) = listener {
            e.handshakes_started.inc();
        }
        prelude(listener, stream)
            .await
            .map_err(|e| Error::explain(ErrorType::HandshakeError, e))
    }
}

/// Read the PROXY header where expected (plain listeners), then hand the connection
/// (and every keep-alive reuse of it) to the HTTP proxy, within the client's
/// connection allowance and with a deadline for each request head.
pub struct App<A> {
    pub inner: Arc<A>,
    pub table: Arc<ListenerTable>,
    pub state: Arc<State>,
    pub clients: Arc<ClientConnections>,
}

/// Open connections per client address.
#[derive(Debug, Default)]
pub struct ClientConnections {
    open: Mutex<HashMap<IpAddr, u32>>,
}

/// One counted connection; uncounted when dropped.
struct ClientSlot {
    clients: Arc<ClientConnections>,
    ip: IpAddr,
}

impl ClientConnections {
    /// Count a connection from `ip`, unless it already holds `limit`.
    fn count(self: &Arc<Self>, ip: IpAddr, limit: u32) -> Option<ClientSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            clients: self.clone(),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.clients.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

fn closed(reason: &str) {
    METRICS
        .connections_closed
        .with_label_values(&[reason])
        .inc();
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for App<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // TLS streams were handled by the pre-TLS hook; plain ones are L4 streams.
        let mut h2c = false;
        let stream = if stream.as_any().is::<L4Stream>() {
            let Ok(mut l4) = stream.into_any().downcast::<L4Stream>() else {
                return None;
            };
            let listener = self.table.find(&l4);
            h2c = listener.is_some_and(|e| e.h2c);
            if let Err(e) = prelude(listener, &mut l4).await {
                let peer = l4.get_socket_digest().and_then(|d| d.peer_addr().cloned());
                crate::trace::warn_sampled(
                    "proxy_protocol",
                    &format!("closing connection from {peer:?}: {e}"),
                );
                return None;
            }
            l4 as Stream
        } else {
            stream
        };
        let listener = self.table.find_by_digest(stream.get_socket_digest());
        let _open = listener.map(|e| {
            e.accepted.inc();
            crate::metrics::GaugeGuard::new(&e.open)
        });
        let (limit, head_timeout) = {
            let snap = self.state.snapshot.load();
            (
                snap.config.max_connections_per_client,
                snap.config.request_head_timeout,
            )
        };
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        // Counted only when a limit is set: no lock per connection otherwise.
        let _slot = match peer.filter(|_| limit > 0) {
            Some(ip) => match self.clients.count(ip, limit) {
                Some(slot) => Some(slot),
                None => {
                    closed("per_client_limit");
                    crate::trace::warn_sampled(
                        "per_client_limit",
                        &format!("closing a connection from {ip}: it holds {limit} already"),
                    );
                    return None;
                }
            },
            None => None,
        };
        // HTTP/2 multiplexes requests and has its own flow control: the head deadline
        // is for HTTP/1, where one trickled head holds a whole connection. (An `h2c`
        // listener may get either; Pingora tells them apart after this point, so its
        // connections are not given a head deadline.)
        let h2 = h2c
            || stream
                .selected_alpn_proto()
                .is_some_and(|p| p == pingora_core::protocols::ALPN::H2);
        let mut next = Some(stream);
        while let Some(s) = next {
            if h2 {
                next = self.inner.process_new(s, shutdown).await;
                continue;
            }
            let seen = Arc::new(AtomicBool::new(false));
            let cycle = HEAD_READ.scope(seen.clone(), self.inner.process_new(s, shutdown));
            next = tokio::select! {
                n = cycle => n,
                () = head_deadline(&seen, head_timeout) => {
                    closed("request_head_timeout");
                    None
                }
            };
        }
        None
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}
