//! What happens to a connection between `accept()` and HTTP: which listener it came
//! in on, its PROXY protocol header, TLS handshake accounting.
//!
//! TLS listeners use Pingora's pre-TLS hook; plain listeners a thin [`ServerApp`]
//! wrapper around the HTTP proxy (Pingora has no hook there). Both look the listener
//! up by the connection's local address.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::listeners::PreTlsProcess;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{GetSocketDigest, Stream};
use pingora_core::server::ShutdownWatch;
use pingora_error::{Error, ErrorType};
use tollgate_config::gateway::Listener;

use crate::proxy_protocol;
use crate::tls::TLS_METRICS;

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
    /// `gateway_tls_handshakes_started_total` for this listener, resolved once.
    handshakes_started: prometheus::IntCounter,
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
                    handshakes_started: TLS_METRICS.started.with_label_values(&[&l.name]),
                })
                .collect(),
        }
    }

    fn find(&self, stream: &L4Stream) -> Option<&Entry> {
        let local = stream
            .get_socket_digest()
            .and_then(|d| d.local_addr().and_then(|a| a.as_inet()).copied())?;
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

/// Plain listeners: read the PROXY header where expected, then hand the connection
/// (and every keep-alive reuse of it) to the HTTP proxy.
pub struct App<A> {
    pub inner: Arc<A>,
    pub table: Arc<ListenerTable>,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for App<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // TLS streams were handled by the pre-TLS hook; plain ones are L4 streams.
        let stream = if stream.as_any().is::<L4Stream>() {
            let Ok(mut l4) = stream.into_any().downcast::<L4Stream>() else {
                return None;
            };
            if let Err(e) = prelude(self.table.find(&l4), &mut l4).await {
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
        let mut next = self.inner.process_new(stream, shutdown).await;
        while let Some(s) = next {
            next = self.inner.process_new(s, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}
