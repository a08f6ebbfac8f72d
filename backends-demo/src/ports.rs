//! Free ports picked at run time, so tests never hard-code one.
//!
//! The port is free when we look; another process may take it before the caller binds.
//! Callers that spawn servers retry on "address in use" (see [`crate::Backend`]).

use std::net::{SocketAddr, TcpListener};

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    free_addr("127.0.0.1").port()
}

/// `ip` with a TCP port free on it right now. Any 127.x.y.z works on Linux: tests use
/// 127.0.1.x for zone a, 127.0.2.x for zone b, 127.0.3.x for zone c.
///
/// Panics when `ip` is not an address or cannot be bound: in a test that is the failure.
pub fn free_addr(ip: &str) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0))
        .unwrap_or_else(|e| panic!("cannot bind {ip}:0 to find a free port: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("cannot read the port bound on {ip}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_on_other_loopback_ips() {
        let a = free_addr("127.0.2.1");
        assert_eq!(a.ip().to_string(), "127.0.2.1");
        assert_ne!(a.port(), 0);
        assert_ne!(free_port(), 0);
    }
}
