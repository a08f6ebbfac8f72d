//! What happens to a connection between `accept()` and HTTP: which listener it came
//! in on, its PROXY protocol header, TLS handshake accounting, and the limits that
//! keep slow or greedy clients from holding the gateway's connections: connections per
//! client address, a deadline for each whole request head (slowloris), and a limit on
//! all connections at once, reached by shedding idle ones before refusing new ones.
//!
//! TLS listeners use Pingora's pre-TLS hook; plain listeners a thin [`ServerApp`]
//! wrapper around the HTTP proxy (Pingora has no hook there). Both look the listener
//! up by the connection's local address.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
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
    /// The HTTP/1 connection the current task serves: its requests mark it busy and
    /// idle (see `Ctx::new` and its drop).
    static CONN: Arc<Conn>;
}

/// A new connection, before its first request head is complete.
const FIRST: u8 = 0;
/// Serving a request.
const BUSY: u8 = 1;
/// Kept alive, waiting for the next request head.
const IDLE: u8 = 2;
/// Chosen to be shed: closes unless a request head arrived meanwhile.
const SHED: u8 = 3;

/// Called when a request context is created: the head it came with is complete.
pub fn head_read() {
    let _ = CONN.try_with(|c| c.phase.store(BUSY, Ordering::Relaxed));
}

/// How long the current client connection has been open (HTTP/1 and HTTP/2 served
/// by the gateway's own accept loop; `None` outside one).
pub fn age() -> Option<std::time::Duration> {
    CONN.try_with(|c| c.opened.elapsed()).ok()
}

/// Called when a request's context is dropped: the connection waits for the next
/// head, and the head deadline starts again.
pub fn request_done() {
    let _ = CONN.try_with(|c| {
        c.waiting_since_ms
            .store(c.opened.elapsed().as_millis() as u64, Ordering::Relaxed);
        c.phase.store(IDLE, Ordering::Relaxed);
    });
}

/// Every client connection open, by age, with its phase: what the gateway-wide
/// connection limit sheds from.
#[derive(Debug, Default)]
pub struct OpenConnections {
    next_id: AtomicU64,
    live: Mutex<BTreeMap<u64, Arc<Conn>>>,
}

#[derive(Debug)]
pub struct Conn {
    phase: AtomicU8,
    /// When the connection last started waiting for a request head (ms after `opened`).
    waiting_since_ms: AtomicU64,
    opened: std::time::Instant,
    shed: tokio::sync::Notify,
}

/// A registered connection; unregistered when dropped.
struct Registered {
    all: Arc<OpenConnections>,
    id: u64,
    conn: Arc<Conn>,
}

impl OpenConnections {
    /// Register a new connection within `limit` (0: none): at the limit, the oldest
    /// idle keep-alive connection, else the oldest still sending its first head, is
    /// told to close and the new one takes its place; `None` when all are busy.
    fn admit(self: &Arc<Self>, limit: usize) -> Option<Registered> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if limit > 0 && live.len() >= limit {
            // Marked so that it is not chosen twice, and only if it is still waiting
            // (a connection whose head just arrived is serving it: not a victim).
            let oldest = |phase: u8| {
                live.values().find(|c| {
                    c.phase
                        .compare_exchange(phase, SHED, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                })
            };
            let victim = oldest(IDLE).or_else(|| oldest(FIRST))?;
            victim.shed.notify_one();
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            phase: AtomicU8::new(FIRST),
            waiting_since_ms: AtomicU64::new(0),
            opened: std::time::Instant::now(),
            shed: tokio::sync::Notify::new(),
        });
        live.insert(id, conn.clone());
        Some(Registered {
            all: self.clone(),
            id,
            conn,
        })
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.live.lock().map_or(0, |l| l.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut live = self.all.live.lock().unwrap_or_else(|p| p.into_inner());
        live.remove(&self.id);
    }
}

/// Resolves once the connection was chosen to be shed while not serving a request.
async fn shed_signal(conn: &Conn) {
    loop {
        conn.shed.notified().await;
        if conn.phase.load(Ordering::Relaxed) == SHED {
            return;
        }
    }
}

/// The default gateway-wide connection limit: half the process's open-file limit
/// (the other half is for upstream connections, files and the admin listener), from
/// /proc/self/limits; none when it cannot be read or is unlimited.
pub fn default_max_connections() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            let line = t.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse::<usize>().ok()
        })
        .map_or(0, |soft| soft / 2)
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

/// Resolves when the connection has waited `timeout` for a request head: since it
/// opened, or since its last request ended (a kept-alive connection). Never while a
/// request is being served (it then runs under its own timeouts).
///
/// On a kept-alive connection the time waiting for the next request counts too:
/// Pingora reads the next head itself, so the gateway cannot see its first byte. An
/// idle keep-alive connection is therefore closed after this long, as behind most load
/// balancers (ALB: 60 s).
async fn head_deadline(conn: &Conn, timeout: Duration) {
    let timeout_ms = timeout.as_millis() as u64;
    loop {
        let now = conn.opened.elapsed().as_millis() as u64;
        let waited = now.saturating_sub(conn.waiting_since_ms.load(Ordering::Relaxed));
        let busy = conn.phase.load(Ordering::Relaxed) == BUSY;
        if !busy && waited >= timeout_ms {
            return;
        }
        let next_look = if busy {
            timeout_ms
        } else {
            timeout_ms - waited
        };
        tokio::time::sleep(Duration::from_millis(next_look.max(1))).await;
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
    pub open: Arc<OpenConnections>,
    /// `server.limits.max_connections` when not set: worked out once at startup.
    pub default_max_connections: usize,
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
        let (limit, head_timeout, max_connections) = {
            let snap = self.state.snapshot.load();
            (
                snap.config.max_connections_per_client,
                snap.config.request_head_timeout,
                snap.config
                    .max_connections
                    .map_or(self.default_max_connections, |m| m as usize),
            )
        };
        let Some(registered) = self.open.admit(max_connections) else {
            closed("max_connections");
            crate::trace::warn_sampled(
                "max_connections",
                &format!("closing a new connection: {max_connections} are open and all busy (server.limits.max_connections)"),
            );
            return None;
        };
        let conn = registered.conn.clone();
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
        if h2 {
            // Multiplexed: counted against the limit, never shed as idle, and HTTP/2
            // has its own flow control and timeouts.
            conn.phase.store(BUSY, Ordering::Relaxed);
            self.inner.process_new(stream, shutdown).await;
            return None;
        }
        // Pingora serves every keep-alive request of the connection in this one call.
        let serve = CONN.scope(conn.clone(), async {
            let mut next = Some(stream);
            while let Some(s) = next {
                next = self.inner.process_new(s, shutdown).await;
            }
        });
        tokio::select! {
            () = serve => {}
            () = head_deadline(&conn, head_timeout) => closed("request_head_timeout"),
            () = shed_signal(&conn) => closed("shed_idle"),
        }
        None
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}
