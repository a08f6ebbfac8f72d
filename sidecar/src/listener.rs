//! Listener plumbing shared by the inbound, outbound and proxy listeners: accept
//! loops that stop on drain, and graceful connection tracking so in-flight calls
//! finish before the process exits.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Tracks every served connection and stops accept loops.
pub struct Connections {
    graceful: Mutex<Option<GracefulShutdown>>,
    stop_tx: watch::Sender<bool>,
}

impl Default for Connections {
    fn default() -> Self {
        Self {
            graceful: Mutex::new(Some(GracefulShutdown::new())),
            stop_tx: watch::channel(false).0,
        }
    }
}

impl Connections {
    /// A watcher for a new connection; `None` once shutdown started.
    pub fn watcher(&self) -> Option<Watcher> {
        self.graceful
            .lock()
            .ok()
            .and_then(|g| g.as_ref().map(GracefulShutdown::watcher))
    }

    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop_tx.subscribe()
    }

    /// Stop accepting, ask every connection to finish (HTTP/1: close after the current
    /// response; HTTP/2: GOAWAY), and wait up to `grace` for them.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        let _ = self.stop_tx.send(true);
        let g = self.graceful.lock().ok().and_then(|mut g| g.take());
        match g {
            Some(g) => tokio::time::timeout(grace, g.shutdown()).await.is_ok(),
            None => true,
        }
    }
}

/// Accept connections until `stop` turns true, handing each to `serve`.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
    name: &'static str,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((s, peer)) => {
                    let _ = s.set_nodelay(true);
                    tokio::spawn(serve(s, peer));
                }
                Err(e) => {
                    // EMFILE and friends: back off rather than spin.
                    tracing::warn!(listener = name, "accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => {
                if *stop.borrow() {
                    tracing::info!(listener = name, "stopped accepting");
                    return;
                }
            }
        }
    }
}

/// A bound listener, or an error naming what it is for.
pub async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("{what} listener {addr}: {e}"))
}

pub type Shared<T> = Arc<T>;
