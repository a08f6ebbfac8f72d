//! Free ports picked at run time, so tests never hard-code one.
//!
//! A port is free when we look; something else may take it before the caller binds.
//! Binding port 0 would hand out a port from the kernel's ephemeral range, the same
//! range every outgoing connection of every other test takes its local port from, and
//! under a parallel test run one of those connections took a sidecar's listener port
//! between the pick and the bind ("Address already in use"). So ports are picked below
//! the ephemeral range, where only listeners live, starting at a per-process random
//! offset so that concurrent test processes walk different parts of it.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// Lowest port handed out: above the well-known and most registered service ports.
const FLOOR: u16 = 12_000;

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    free_addr("127.0.0.1").port()
}

/// `ip` with a TCP port free on it right now. Any 127.x.y.z works on Linux: tests use
/// 127.0.1.x for zone a, 127.0.2.x for zone b, 127.0.3.x for zone c.
///
/// Panics when `ip` is not an address or cannot be bound: in a test that is the failure.
pub fn free_addr(ip: &str) -> SocketAddr {
    if let Some((low, len)) = listener_range() {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let start = *process_offset();
        for _ in 0..len.min(512) {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let port = low + ((start + n) % len) as u16;
            if let Ok(l) = TcpListener::bind((ip, port)) {
                if let Ok(a) = l.local_addr() {
                    return a;
                }
            }
        }
    }
    let listener = TcpListener::bind((ip, 0))
        .unwrap_or_else(|e| panic!("cannot bind {ip}:0 to find a free port: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("cannot read the port bound on {ip}: {e}"))
}

/// `ip` with a TCP port `p` free on it right now, and `p + offset` free too and also
/// below the ephemeral range: for servers that open a second port at a fixed offset
/// (a Redis Cluster node's bus at +10000, which in the ephemeral range an outgoing
/// connection could hold, and the node would not start).
pub fn free_addr_with(ip: &str, offset: u16) -> SocketAddr {
    if let Some((low, len)) = listener_range() {
        let len = len.saturating_sub(u32::from(offset));
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let start = *process_offset();
        for _ in 0..len.min(2048) {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let port = low + ((start + n) % len.max(1)) as u16;
            let (Ok(a), Ok(_b)) = (
                TcpListener::bind((ip, port)),
                TcpListener::bind((ip, port + offset)),
            ) else {
                continue;
            };
            if let Ok(addr) = a.local_addr() {
                return addr;
            }
        }
    }
    panic!("no port p free on {ip} with p + {offset} free below the ephemeral range")
}

/// `[FLOOR, start of the ephemeral range)` as (first port, count), when it is usable.
fn listener_range() -> Option<(u16, u32)> {
    static RANGE: OnceLock<Option<(u16, u32)>> = OnceLock::new();
    *RANGE.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
        let ephemeral_low: u16 = text.split_whitespace().next()?.parse().ok()?;
        let len = u32::from(ephemeral_low.checked_sub(FLOOR)?);
        (len >= 1_000).then_some((FLOOR, len))
    })
}

fn process_offset() -> &'static u32 {
    static OFFSET: OnceLock<u32> = OnceLock::new();
    OFFSET.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish() as u32
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_and_its_companion_are_both_free() {
        let a = free_addr_with("127.0.0.1", 10_000);
        assert!(TcpListener::bind(("127.0.0.1", a.port() + 10_000)).is_ok());
    }

    #[test]
    fn addresses_on_other_loopback_ips() {
        let a = free_addr("127.0.2.1");
        assert_eq!(a.ip().to_string(), "127.0.2.1");
        assert_ne!(a.port(), 0);
        assert_ne!(free_port(), 0);
    }

    #[test]
    fn ports_come_from_below_the_ephemeral_range_and_do_not_repeat() {
        let Some((low, len)) = listener_range() else {
            return; // no such range on this kernel: port 0 is used instead
        };
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        for p in &ports {
            assert!(
                (low..low + len as u16).contains(p),
                "{p} outside {low}+{len}"
            );
        }
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            ports.len(),
            "a port was handed out twice: {ports:?}"
        );
    }
}
