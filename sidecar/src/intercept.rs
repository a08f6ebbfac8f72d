//! Transparent outbound interception: the listener that the nftables rules of
//! `sidecar iptables install` ([`crate::nftables`]) redirect the app's outbound TCP to.
//!
//! Each accepted connection's original destination is read with `SO_ORIGINAL_DST`
//! (`IP6T_SO_ORIGINAL_DST` on the IPv6 listener; conntrack keeps it across the
//! redirect). A destination one dependency lists in `addresses` is served as HTTP
//! through that dependency's stack, exactly as its own `listen` port would be
//! (breaker, retries, mTLS to the peer). Any other destination is passed through
//! untouched (bytes copied both ways to the original destination; our own connection
//! is not redirected again because the rules exclude the sidecar's uid or gid) or
//! closed (`unknown: refuse`). A connection that was not redirected at all (made to
//! the interception port itself) is closed: passing it on would loop into ourselves.
//!
//! What is not intercepted: UDP, loopback destinations, the sidecar's own traffic, and
//! whatever `iptables install` was told to exclude (ports, CIDRs).

use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{getsockopt, sockopt};
use tokio::net::TcpStream;

use crate::metrics::METRICS;
use crate::state::State;

/// How long a passed-through connection waits to reach its original destination.
const PASSTHROUGH_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The destination the app asked for before the redirect, or `None` when the
/// connection was not redirected (no conntrack NAT entry, or it names ourselves).
pub fn original_destination(tcp: &TcpStream) -> std::io::Result<Option<SocketAddr>> {
    let local = tcp.local_addr()?;
    let orig = if local.is_ipv4() {
        let a = getsockopt(tcp, sockopt::OriginalDst).map_err(std::io::Error::from)?;
        SocketAddr::V4(SocketAddrV4::new(
            u32::from_be(a.sin_addr.s_addr).into(),
            u16::from_be(a.sin_port),
        ))
    } else {
        let a = getsockopt(tcp, sockopt::Ip6tOriginalDst).map_err(std::io::Error::from)?;
        SocketAddr::V6(SocketAddrV6::new(
            a.sin6_addr.s6_addr.into(),
            u16::from_be(a.sin6_port),
            a.sin6_flowinfo,
            a.sin6_scope_id,
        ))
    };
    Ok((orig != local).then_some(orig))
}

/// The dependency whose `addresses` list `dst`.
fn dependency_for(state: &State, dst: SocketAddr) -> Option<Arc<str>> {
    let snap = state.snapshot.load();
    snap.dependencies
        .values()
        .find(|d| d.cfg.addresses.contains(&dst))
        .map(|d| d.cfg.name.as_str().into())
}

fn count(outcome: &str) {
    METRICS.intercepted.with_label_values(&[outcome]).inc();
}

/// Serve one redirected connection.
pub async fn serve_conn(state: Arc<State>, tcp: TcpStream, peer: SocketAddr) {
    let dst = match original_destination(&tcp) {
        Ok(Some(dst)) => dst,
        Ok(None) => {
            count("not_redirected");
            tracing::warn!(%peer, "connection to the interception port that was not redirected: closed");
            return;
        }
        Err(e) => {
            count("error");
            tracing::warn!(%peer, "original destination unknown ({e}): closed");
            return;
        }
    };
    if let Some(dep) = dependency_for(&state, dst) {
        count("dependency");
        tracing::debug!(%peer, %dst, dependency = %dep, "intercepted");
        crate::outbound::serve_dependency_conn(state, dep, tcp).await;
        return;
    }
    let refuse = state
        .snapshot
        .load()
        .config
        .intercept
        .as_ref()
        .is_some_and(|i| i.refuse_unknown);
    if refuse {
        count("refused");
        tracing::debug!(%peer, %dst, "unknown destination refused");
        return;
    }
    count("passthrough");
    passthrough(tcp, dst).await;
}

/// Copy bytes both ways between the app and the original destination, untouched.
async fn passthrough(mut app: TcpStream, dst: SocketAddr) {
    let upstream = tokio::time::timeout(PASSTHROUGH_CONNECT_TIMEOUT, TcpStream::connect(dst)).await;
    let mut upstream = match upstream {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%dst, "passthrough connect: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(%dst, "passthrough connect: timed out");
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    if let Err(e) = tokio::io::copy_bidirectional(&mut app, &mut upstream).await {
        tracing::debug!(%dst, "passthrough: {e}");
    }
}
