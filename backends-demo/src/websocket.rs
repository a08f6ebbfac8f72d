//! WebSocket peers for tests, in the test's own process: an echo server, and an app
//! that answers `101 Switching Protocols` to every request, asked or not.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A WebSocket echo server: every text or binary message comes back (pings are
/// answered by the library). Counts the handshakes it completed.
pub async fn echo_server() -> anyhow::Result<(SocketAddr, Arc<AtomicU32>)> {
    echo_server_on("127.0.0.1:0".parse()?).await
}

/// [`echo_server`] on a given address (the game day's WebSocket backends).
pub async fn echo_server_on(addr: SocketAddr) -> anyhow::Result<(SocketAddr, Arc<AtomicU32>)> {
    let l = TcpListener::bind(addr).await?;
    let addr = l.local_addr()?;
    let handshakes = Arc::new(AtomicU32::new(0));
    let count = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let (mut tx, mut rx) = ws.split();
                while let Some(Ok(m)) = rx.next().await {
                    if (m.is_text() || m.is_binary()) && tx.send(m).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok((addr, handshakes))
}

/// An app that answers `101 Switching Protocols` to every request, then sends a few
/// bytes that are not HTTP.
pub async fn rogue_101_app() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tcp
                    .write_all(
                        b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\nrogue bytes",
                    )
                    .await;
                let _ = tcp.read(&mut buf).await;
            });
        }
    });
    Ok(addr)
}
