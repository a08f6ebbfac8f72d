//! HTTP/1.1 upgrades (WebSocket) through the mesh.
//!
//! The app's `Upgrade` request goes through the dependency's stack like any call (so
//! the bulkhead, rate limit and breaker apply to the handshake), but to the peer sidecar
//! on a connection of its own: HTTP/1.1 over mTLS, never the pooled HTTP/2 one (see
//! `docs/sidecar.md` for why not RFC 8441 extended CONNECT). On the far side the inbound
//! sidecar does the same towards the app. Once both ends answered `101`, the two
//! upgraded connections are spliced: bytes copied both ways until either side closes
//! or nothing moved for `upgrade_idle_timeout`.
//!
//! The stack's timeouts bound the wait for the `101` only: the stream outlives them.
//! An upgrade is repeated only when it provably never reached the peer (as a
//! non-idempotent call), never hedged, and a `101` to a request that did not ask for
//! one is refused (the connection would be handed to a protocol nobody agreed on).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{header, HeaderMap, HeaderValue, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// Marks a request the app asked to upgrade (in its extensions): the balancer sends it
/// on a dedicated HTTP/1.1 connection and accepts a `101` for it.
#[derive(Debug, Clone, Copy)]
pub struct UpgradeCall;

/// Whether this HTTP/1.1 request asks to switch protocols (`Connection: upgrade` and an
/// `Upgrade` header). HTTP/2 has no `Upgrade` (RFC 9113 8.2.2).
pub fn is_upgrade_request(version: Version, headers: &HeaderMap) -> bool {
    version == Version::HTTP_11
        && headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The hop-by-hop headers an upgrade needs on the next hop: `Connection: upgrade`
/// (only that token) and the app's `Upgrade` (kept by the caller).
pub fn set_connection_upgrade(headers: &mut HeaderMap) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
}

/// Once both sides have switched protocols (the caller's after it got our `101`),
/// splice them in a task of their own; `opened` runs when both did, then `ended` when
/// the stream is over (with why and the bytes moved); neither when one side never
/// switched (the caller went away first). `what` names the stream in logs.
pub fn spawn_relay<O, E>(
    what: String,
    caller: OnUpgrade,
    callee: OnUpgrade,
    idle: Duration,
    opened: O,
    ended: E,
) where
    O: FnOnce() + Send + 'static,
    E: FnOnce(Spliced) + Send + 'static,
{
    tokio::spawn(async move {
        let (caller, callee) = match tokio::join!(caller, callee) {
            (Ok(a), Ok(b)) => (a, b),
            (a, b) => {
                let e = a
                    .err()
                    .or(b.err())
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                tracing::debug!("{what}: upgrade not completed: {e}");
                return;
            }
        };
        opened();
        let s = splice(TokioIo::new(caller), TokioIo::new(callee), idle).await;
        tracing::debug!(
            closed = s.closed.as_str(),
            sent = s.a_to_b,
            received = s.b_to_a,
            "{what}: upgraded stream ended"
        );
        ended(s);
    });
}

/// Why a spliced stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Both sides closed (or one closed and the other followed).
    Closed,
    /// No byte either way for the idle timeout.
    IdleTimeout,
    /// A read or write failed (a reset, a broken TLS session).
    Error,
}

impl Closed {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::IdleTimeout => "idle_timeout",
            Self::Error => "error",
        }
    }
}

/// Bytes moved and when the last one did.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }
    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// What a splice did: why it ended and the bytes each way.
#[derive(Debug, Clone, Copy)]
pub struct Spliced {
    pub closed: Closed,
    pub a_to_b: u64,
    pub b_to_a: u64,
}

/// Copy bytes both ways between `a` and `b` until both directions are done, one
/// fails, or nothing moved for `idle`. A side that closes its write half has that
/// passed on (shutdown) while the other direction goes on. Both directions are polled
/// concurrently, so a full buffer one way never stalls the other.
pub async fn splice<A, B>(a: A, b: B, idle: Duration) -> Spliced
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let activity = Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    };
    let (a_to_b, b_to_a) = (AtomicU64::new(0), AtomicU64::new(0));
    let closed = {
        let both = futures_util::future::join(
            pump(&mut ar, &mut bw, &activity, &a_to_b),
            pump(&mut br, &mut aw, &activity, &b_to_a),
        );
        let watchdog = async {
            loop {
                let due = activity.last() + idle;
                tokio::time::sleep_until(due).await;
                if activity.last() + idle <= Instant::now() {
                    return;
                }
            }
        };
        tokio::select! {
            (x, y) = both => if x.is_ok() && y.is_ok() { Closed::Closed } else { Closed::Error },
            () = watchdog => Closed::IdleTimeout,
        }
    };
    // Best effort: tell both sides we are done (a TLS close_notify towards the peer).
    let bye = Duration::from_secs(1);
    let _ = tokio::time::timeout(bye, aw.shutdown()).await;
    let _ = tokio::time::timeout(bye, bw.shutdown()).await;
    Spliced {
        closed,
        a_to_b: a_to_b.load(Ordering::Relaxed),
        b_to_a: b_to_a.load(Ordering::Relaxed),
    }
}

async fn pump<R, W>(
    r: &mut R,
    w: &mut W,
    activity: &Activity,
    count: &AtomicU64,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return w.shutdown().await;
        }
        activity.touch();
        w.write_all(&buf[..n]).await?;
        w.flush().await?;
        activity.touch();
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn an_upgrade_needs_both_headers_and_http1() {
        let ws = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert!(is_upgrade_request(Version::HTTP_11, &ws));
        assert!(!is_upgrade_request(Version::HTTP_2, &ws));
        let no_token = headers(&[("connection", "keep-alive"), ("upgrade", "websocket")]);
        assert!(!is_upgrade_request(Version::HTTP_11, &no_token));
        let no_upgrade = headers(&[("connection", "upgrade")]);
        assert!(!is_upgrade_request(Version::HTTP_11, &no_upgrade));
    }

    #[tokio::test(start_paused = true)]
    async fn splice_copies_both_ways_and_ends_when_idle() {
        let (app, app_side) = tokio::io::duplex(64);
        let (peer, peer_side) = tokio::io::duplex(64);
        let task = tokio::spawn(splice(app_side, peer_side, Duration::from_secs(10)));
        let (mut app_r, mut app_w) = tokio::io::split(app);
        let (mut peer_r, mut peer_w) = tokio::io::split(peer);
        // More than the duplex buffers hold, both ways at once: neither direction stalls.
        let up = vec![1u8; 1000];
        let down = vec![2u8; 1000];
        let (mut got_up, mut got_down) = (vec![0u8; 1000], vec![0u8; 1000]);
        let (w1, w2, r1, r2) = tokio::join!(
            app_w.write_all(&up),
            peer_w.write_all(&down),
            peer_r.read_exact(&mut got_up),
            app_r.read_exact(&mut got_down),
        );
        for r in [w1, w2, r1.map(drop), r2.map(drop)] {
            r.unwrap();
        }
        assert_eq!((got_up, got_down), (up, down));
        // Activity 9 s apart keeps it open; then 10 s of silence closes it.
        tokio::time::sleep(Duration::from_secs(9)).await;
        app_w.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        peer_r.read_exact(&mut one).await.unwrap();
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(!task.is_finished());
        let s = task.await.unwrap();
        assert_eq!(s.closed, Closed::IdleTimeout);
        assert_eq!((s.a_to_b, s.b_to_a), (1001, 1000));
    }

    #[tokio::test]
    async fn a_close_on_one_side_reaches_the_other() {
        let (app, app_side) = tokio::io::duplex(64);
        let (peer, peer_side) = tokio::io::duplex(64);
        let task = tokio::spawn(splice(app_side, peer_side, Duration::from_secs(60)));
        let (mut app_r, mut app_w) = tokio::io::split(app);
        let (mut peer_r, mut peer_w) = tokio::io::split(peer);
        app_w.shutdown().await.unwrap();
        let mut rest = Vec::new();
        peer_r.read_to_end(&mut rest).await.unwrap();
        // The other direction still works after a half-close.
        peer_w.write_all(b"last words").await.unwrap();
        peer_w.shutdown().await.unwrap();
        let mut got = Vec::new();
        app_r.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"last words");
        assert_eq!(task.await.unwrap().closed, Closed::Closed);
    }
}
