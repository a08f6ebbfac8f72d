//! PROXY protocol v1 and v2, receiving side (HAProxy's `proxy-protocol.txt`): an L4
//! load balancer (AWS NLB, HAProxy, ...) writes one header before the client's bytes,
//! carrying the client's address. On a listener with `proxy_protocol: true` the
//! header is required; its source address replaces the socket's peer address, so
//! `X-Forwarded-For`, consistent hashing on the client IP and logs see the real
//! client. `LOCAL` (v2) and `UNKNOWN` (v1) headers, sent by load balancers for their
//! own health checks, keep the socket's address.
//!
//! Where it is read: see [`crate::connection`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::LazyLock;
use std::time::Duration;

use pingora_core::protocols::l4::socket::SocketAddr as PSocketAddr;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{GetSocketDigest, SocketDigest};
use prometheus::IntCounterVec;
use tokio::io::AsyncReadExt;
use tollgate_config::metrics as m;

/// A v1 header is at most 107 bytes, CRLF included.
const V1_MAX: usize = 107;
/// v2 headers may carry TLVs; real load balancers send tens of bytes. Longer headers
/// are refused rather than buffered.
const V2_MAX: usize = 4096;
const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_SIG: &[u8; 6] = b"PROXY ";
/// How long a connection may take to send its header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A complete header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Bytes the header took; what follows belongs to the client.
    pub len: usize,
    /// The client's address; `None` for `LOCAL`/`UNKNOWN`/non-IP headers.
    pub source: Option<SocketAddr>,
    pub version: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("connection does not start with a PROXY protocol header")]
    Missing,
    #[error("malformed PROXY protocol header")]
    Malformed,
    #[error("PROXY protocol header longer than {V2_MAX} bytes")]
    TooLong,
    #[error("unsupported PROXY protocol version or transport")]
    Unsupported,
}

impl HeaderError {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::TooLong => "too_long",
            Self::Unsupported => "unsupported",
        }
    }
}

/// Parse the start of a connection: `Ok(None)` if more bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<Header>, HeaderError> {
    let n = buf.len().min(V2_SIG.len());
    if buf[..n] == V2_SIG[..n] {
        return if buf.len() < 16 {
            Ok(None)
        } else {
            parse_v2(buf)
        };
    }
    let n = buf.len().min(V1_SIG.len());
    if buf[..n] == V1_SIG[..n] {
        return parse_v1(buf);
    }
    Err(HeaderError::Missing)
}

fn parse_v1(buf: &[u8]) -> Result<Option<Header>, HeaderError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(HeaderError::TooLong)
        } else {
            Ok(None)
        };
    };
    let line = std::str::from_utf8(&buf[V1_SIG.len()..end]).map_err(|_| HeaderError::Malformed)?;
    let mut parts = line.split(' ');
    let source = match parts.next() {
        Some("UNKNOWN") => None,
        Some(proto @ ("TCP4" | "TCP6")) => {
            let fields: Vec<&str> = parts.collect();
            let [src, dst, sport, dport] = fields[..] else {
                return Err(HeaderError::Malformed);
            };
            let (src, dst): (IpAddr, IpAddr) = (
                src.parse().map_err(|_| HeaderError::Malformed)?,
                dst.parse().map_err(|_| HeaderError::Malformed)?,
            );
            let v4 = proto == "TCP4";
            if src.is_ipv4() != v4 || dst.is_ipv4() != v4 {
                return Err(HeaderError::Malformed);
            }
            let port = |p: &str| {
                if p.is_empty() || p.len() > 5 || (p.len() > 1 && p.starts_with('0')) {
                    return Err(HeaderError::Malformed);
                }
                p.parse::<u16>().map_err(|_| HeaderError::Malformed)
            };
            let sport = port(sport)?;
            port(dport)?;
            Some(SocketAddr::new(src, sport))
        }
        _ => return Err(HeaderError::Malformed),
    };
    Ok(Some(Header {
        len: end + 2,
        source,
        version: 1,
    }))
}

fn parse_v2(buf: &[u8]) -> Result<Option<Header>, HeaderError> {
    let ver_cmd = buf[12];
    let fam = buf[13];
    let body = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if ver_cmd >> 4 != 2 {
        return Err(HeaderError::Unsupported);
    }
    let len = 16 + body;
    if len > V2_MAX {
        return Err(HeaderError::TooLong);
    }
    if buf.len() < len {
        return Ok(None);
    }
    let addr = &buf[16..len];
    let source = match ver_cmd & 0x0f {
        // LOCAL: the proxy's own connection (health checks); the body is ignored.
        0 => None,
        1 => match (fam >> 4, fam & 0x0f) {
            (0, _) => None,
            (_, 2) => return Err(HeaderError::Unsupported), // datagrams
            (1, _) => {
                let a = addr.get(..12).ok_or(HeaderError::Malformed)?;
                let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
                Some(SocketAddr::new(ip.into(), u16::from_be_bytes([a[8], a[9]])))
            }
            (2, _) => {
                let a = addr.get(..36).ok_or(HeaderError::Malformed)?;
                let mut ip = [0u8; 16];
                ip.copy_from_slice(&a[..16]);
                let port = u16::from_be_bytes([a[32], a[33]]);
                Some(SocketAddr::new(Ipv6Addr::from(ip).into(), port))
            }
            // AF_UNIX: no IP to report.
            (3, _) => None,
            _ => return Err(HeaderError::Unsupported),
        },
        _ => return Err(HeaderError::Unsupported),
    };
    Ok(Some(Header {
        len,
        source,
        version: 2,
    }))
}

struct Metrics {
    headers: IntCounterVec,
    errors: IntCounterVec,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    Metrics {
    headers: m::counter_vec(
        "gateway_proxy_protocol_headers_total",
        "PROXY protocol headers accepted, by listener and version (local: the load balancer's own connection)",
        &["listener", "version"],
    ),
    errors: m::counter_vec(
        "gateway_proxy_protocol_errors_total",
        "Connections closed because their PROXY protocol header was missing, malformed, too long, unsupported, late or cut short",
        &["listener", "reason"],
    ),
}
});

/// Read the header from a fresh connection, give any bytes read past it back to the
/// stream, and make the header's source the connection's peer address.
pub async fn accept(stream: &mut L4Stream, listener: &str) -> Result<Option<SocketAddr>, String> {
    let read = async {
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 512];
        loop {
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| ("io", e.to_string()))?;
            if n == 0 {
                return Err(("closed", "connection closed before the header".into()));
            }
            buf.extend_from_slice(&chunk[..n]);
            match parse(&buf) {
                Ok(None) => continue,
                Ok(Some(h)) => return Ok((h, buf)),
                Err(e) => return Err((e.reason(), e.to_string())),
            }
        }
    };
    let (header, buf) = match tokio::time::timeout(HEADER_TIMEOUT, read).await {
        Ok(Ok(v)) => v,
        Ok(Err((reason, msg))) => {
            METRICS.errors.with_label_values(&[listener, reason]).inc();
            return Err(msg);
        }
        Err(_) => {
            METRICS
                .errors
                .with_label_values(&[listener, "timeout"])
                .inc();
            return Err(format!(
                "no PROXY protocol header within {HEADER_TIMEOUT:?}"
            ));
        }
    };
    if let Some(rest) = buf.get(header.len..).filter(|r| !r.is_empty()) {
        stream.rewind(rest);
    }
    let version = match (header.version, header.source) {
        (_, None) => "local",
        (1, _) => "v1",
        _ => "v2",
    };
    METRICS
        .headers
        .with_label_values(&[listener, version])
        .inc();
    if let Some(src) = header.source {
        let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
        let _ = digest.peer_addr.set(Some(PSocketAddr::Inet(src)));
        stream.set_socket_digest(digest);
    }
    Ok(header.source)
}

#[cfg(test)]
mod tests;
