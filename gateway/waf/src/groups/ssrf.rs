//! Server-side request forgery: URLs (or bare hosts) that point at cloud metadata
//! services or the loopback, in every encoding an address parser accepts (decimal,
//! hex, octal, short forms, IPv6-mapped), and schemes an HTTP client should never be
//! handed (`gopher://`, `dict://`, `file://`).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::loc::*;
use super::Group::Ssrf as G;
use super::Severity::*;
use super::View::Norm;
use super::{rule, RuleDef};

/// A cloud metadata address or name, or a loopback address written to slip past
/// filters (hex, octal, IPv6) or aimed at a non-web service port.
pub(crate) const METADATA: &str = "ssrf.cloud_metadata";
/// Loopback, unspecified or link-local address in a URL.
pub(crate) const INTERNAL: &str = "ssrf.internal_address";
/// Private (RFC 1918) address in a URL.
pub(crate) const PRIVATE: &str = "ssrf.private_address";

pub(crate) const RULES: &[RuleDef] = &[
    rule(
        "ssrf.dangerous_scheme",
        G,
        Critical,
        1,
        ARGS | HEADER,
        Norm,
        &[
            "gopher:", "dict:", "file:", "ldap:", "tftp:", "netdoc:", "jar:", "sftp:", "ldaps:",
            "ldapi:",
        ],
        r"(?:^|[\s=(\[<'\x22])(?:gopher|dict|file|ldaps?|ldapi|tftp|netdoc|sftp)://|(?:^|[\s='\x22])jar:(?:https?|file|ftp):",
    ),
    rule(
        "ssrf.metadata_name",
        G,
        Critical,
        1,
        ARGS | HEADER | PATH,
        Norm,
        &[
            "metadata",
            "169.254.169.254",
            "instance-data",
            "100.100.100.200",
            "fd00:ec2::254",
            "169.254.170.2",
        ],
        r"\bmetadata\.(?:google\.internal|goog|azure\.com|tencentyun\.com|packet\.net)\b|\b(?:instance-data|metadata)(?:\.ec2\.internal)?(?::\d+)?/(?:latest|computemetadata|metadata|v1|openstack|hetzner|2009-04-04)|169\.254\.169\.254|169\.254\.170\.2\b|100\.100\.100\.200|fd00:ec2::254|/computemetadata/v1|/latest/(?:meta-data|user-data|api/token)|/metadata/(?:instance|identity)\b",
    ),
];

/// A plain value (letters, digits, `.-_`) that is an address of a metadata service or
/// the loopback: a dotted quad, a `0x` number, a metadata name, or the metadata address
/// as one decimal number. Numbers that only decode to an address by accident (`0.0`,
/// an id) are left alone.
pub(crate) fn plain_address(raw: &[u8]) -> Option<Target> {
    if raw.len() > 64 || raw.len() < 5 {
        return None;
    }
    let has = |n: &[u8]| raw.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n));
    let first = raw[0];
    let dotted_quad = first.is_ascii_digit()
        && raw.iter().filter(|&&c| c == b'.').count() == 3
        && raw.iter().all(|c| c.is_ascii_digit() || *c == b'.');
    let decimal = raw.len() >= 9 && raw.len() <= 10 && raw.iter().all(u8::is_ascii_digit);
    let named = matches!(first, b'0' | b'm' | b'M' | b'i' | b'I' | b'l' | b'L')
        && (has(b"0x") || has(b"metadata") || has(b"instance-data") || has(b"localhost"))
        || [&b".nip.io"[..], b".xip.io", b".sslip.io"]
            .iter()
            .any(|suffix| {
                raw.len() > suffix.len()
                    && raw[raw.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            });
    if !(dotted_quad || decimal || named) {
        return None;
    }
    // Only candidates get here: the allocation is off the clean path.
    let lower = std::str::from_utf8(raw).ok()?.to_ascii_lowercase();
    match classify_host(&lower) {
        Target::Metadata => Some(Target::Metadata),
        Target::Internal if !decimal => Some(Target::Internal),
        _ => None,
    }
}

/// What a host in a URL points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Metadata,
    Internal,
    Private,
    Public,
}

/// Whether a host is written in a form nobody types for a real service: numeric but
/// not dotted decimal, IPv6 for an IPv4 address, or an embedding DNS service.
fn obfuscated(host: &str) -> bool {
    let h = host.trim_end_matches('.');
    if h.starts_with('[') {
        return true;
    }
    if h.ends_with(".nip.io") || h.ends_with(".xip.io") || h.ends_with(".sslip.io") {
        return true;
    }
    if parse_inet_aton(h).is_some() {
        let parts: Vec<&str> = h.split('.').collect();
        let canonical = parts.len() == 4
            && parts.iter().all(|p| {
                p.bytes().all(|c| c.is_ascii_digit()) && (p.len() == 1 || !p.starts_with('0'))
            });
        return !canonical;
    }
    false
}

/// Ports of services an HTTP client has no business reaching (SSH, SMTP, Redis,
/// Memcached, databases, Docker, Kubernetes, Consul, Elasticsearch ...).
fn service_port(authority_with_port: &str) -> bool {
    let Some((_, port)) = authority_with_port.rsplit_once(':') else {
        return false;
    };
    matches!(
        port.parse::<u16>(),
        Ok(21
            | 22
            | 23
            | 25
            | 110
            | 111
            | 135
            | 139
            | 143
            | 445
            | 1433
            | 1521
            | 2375
            | 2376
            | 2379
            | 3306
            | 5432
            | 5984
            | 6379
            | 8500
            | 9000
            | 9200
            | 10250
            | 11211
            | 27017)
    )
}

/// Classify every URL authority in `norm` (after `scheme://` or a leading `//`), and a
/// whole value that is a bare address. Returns the worst target found.
pub(crate) fn classify(norm: &str) -> Target {
    let mut worst = Target::Public;
    let mut consider = |host: &str, full: &str| {
        let mut t = classify_host(host);
        if t == Target::Internal && (obfuscated(host) || service_port(full)) {
            t = Target::Metadata;
        }
        worst = match (worst, t) {
            (Target::Metadata, _) | (_, Target::Metadata) => Target::Metadata,
            (Target::Internal, _) | (_, Target::Internal) => Target::Internal,
            (Target::Private, _) | (_, Target::Private) => Target::Private,
            _ => Target::Public,
        };
    };
    let v = norm.trim();
    let mut found = false;
    let mut rest = v;
    let mut n = 0;
    while let Some(i) = rest.find("//") {
        n += 1;
        if n > 16 {
            break;
        }
        let before = &rest[..i];
        let after = &rest[i + 2..];
        // `scheme://` or a value starting with `//`.
        if before.ends_with(':') || (i == 0 && std::ptr::eq(rest, v)) {
            consider(authority(after), host_port(after));
            found = true;
        }
        rest = after;
    }
    if !found && v.len() <= 64 && !v.contains(' ') {
        // A bare host or address in a parameter (`?host=0x7f.1`).
        let h = authority(v);
        // The host is the whole value, or what precedes a path or port.
        let rest = v.as_bytes().get(h.len()..).unwrap_or(b"");
        if v.starts_with(h) && (rest.is_empty() || rest[0] == b'/' || rest[0] == b':') {
            let t = classify_host(h);
            if t != Target::Public && looks_like_address(h) {
                consider(h, host_port(v));
            }
        }
    }
    worst
}

fn looks_like_address(h: &str) -> bool {
    h.starts_with('[')
        || h.bytes()
            .all(|c| c.is_ascii_hexdigit() || c == b'.' || c == b'x')
        || h == "localhost"
        || h.ends_with(".internal")
}

/// The authority with its port (after userinfo).
fn host_port(s: &str) -> &str {
    let end = s.find(['/', '?', '#', '\\', ' ']).unwrap_or(s.len());
    let a = &s[..end];
    a.rfind('@').map_or(a, |at| &a[at + 1..])
}

/// The host part of an authority: up to `/`, `?`, `#`, `\`, whitespace; after the
/// last `@`; without the port.
fn authority(s: &str) -> &str {
    let end = s
        .find(['/', '?', '#', '\\', ' ', '\t', '\n', '"', '\'', '<', '>'])
        .unwrap_or(s.len());
    let mut a = &s[..end];
    if let Some(at) = a.rfind('@') {
        a = &a[at + 1..];
    }
    if a.starts_with('[') {
        return match a.find(']') {
            Some(e) => &a[..=e],
            None => a,
        };
    }
    match a.rfind(':') {
        Some(c) if a[c + 1..].bytes().all(|d| d.is_ascii_digit()) => &a[..c],
        _ => a,
    }
}

fn classify_host(host: &str) -> Target {
    let host = host.trim_end_matches('.');
    if host.is_empty() {
        return Target::Public;
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let inner = inner.split('%').next().unwrap_or(inner);
        return match inner.parse::<Ipv6Addr>() {
            Ok(a) => classify_v6(a),
            Err(_) => Target::Public,
        };
    }
    if let Some(a) = parse_inet_aton(host) {
        return classify_v4(a);
    }
    // Names that resolve to what they embed (nip.io, sslip.io ...), and well-known
    // internal names.
    for suffix in [
        ".nip.io",
        ".xip.io",
        ".sslip.io",
        ".traefik.me",
        ".localtest.me",
    ] {
        if let Some(prefix) = host.strip_suffix(suffix) {
            let embedded = prefix.rsplit(['-']).next().unwrap_or(prefix);
            let dotted = prefix.replace('-', ".");
            for cand in [embedded, prefix, dotted.as_str()] {
                let parts: Vec<&str> = cand.split('.').collect();
                if parts.len() >= 4 {
                    let tail = parts[parts.len() - 4..].join(".");
                    if let Some(a) = parse_inet_aton(&tail) {
                        return classify_v4(a);
                    }
                }
            }
            if suffix == ".localtest.me" {
                return Target::Internal;
            }
        }
    }
    if host == "localhost" || host.ends_with(".localhost") || host == "localtest.me" {
        return Target::Internal;
    }
    if host == "metadata.google.internal" || host == "metadata" || host == "instance-data" {
        return Target::Metadata;
    }
    Target::Public
}

/// Parse an IPv4 address the way `inet_aton` does: 1 to 4 parts, each decimal, `0x`
/// hex or `0` octal; the last part fills the remaining bytes.
pub(crate) fn parse_inet_aton(s: &str) -> Option<Ipv4Addr> {
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    let mut parts = [0u64; 4];
    let mut n = 0;
    for p in s.split('.') {
        if n == 4 || p.is_empty() {
            return None;
        }
        let v = if let Some(h) = p.strip_prefix("0x") {
            if h.is_empty() {
                0
            } else {
                u64::from_str_radix(h, 16).ok()?
            }
        } else if p.len() > 1 && p.starts_with('0') {
            u64::from_str_radix(&p[1..], 8).ok()?
        } else {
            p.parse::<u64>().ok()?
        };
        parts[n] = v;
        n += 1;
    }
    let v: u64 = match n {
        1 => parts[0],
        2 if parts[0] < 256 && parts[1] < (1 << 24) => parts[0] << 24 | parts[1],
        3 if parts[0] < 256 && parts[1] < 256 && parts[2] < (1 << 16) => {
            parts[0] << 24 | parts[1] << 16 | parts[2]
        }
        4 if parts.iter().all(|&p| p < 256) => {
            parts[0] << 24 | parts[1] << 16 | parts[2] << 8 | parts[3]
        }
        _ => return None,
    };
    u32::try_from(v).ok().map(Ipv4Addr::from)
}

fn classify_v4(a: Ipv4Addr) -> Target {
    let o = a.octets();
    if o == [169, 254, 169, 254] || o == [169, 254, 170, 2] || o == [100, 100, 100, 200] {
        Target::Metadata
    } else if a.is_loopback() || a.is_unspecified() || a.is_link_local() {
        Target::Internal
    } else if a.is_private() {
        Target::Private
    } else {
        Target::Public
    }
}

fn classify_v6(a: Ipv6Addr) -> Target {
    if let Some(v4) = a.to_ipv4_mapped().or_else(|| {
        // IPv4-compatible `::a.b.c.d` (deprecated, still parsed by many clients).
        let s = a.segments();
        (s[..6] == [0, 0, 0, 0, 0, 0] && !a.is_loopback() && !a.is_unspecified())
            .then(|| Ipv4Addr::from(u32::from(s[6]) << 16 | u32::from(s[7])))
    }) {
        return classify_v4(v4);
    }
    if a.segments() == [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254] {
        Target::Metadata
    } else if a.is_loopback() || a.is_unspecified() || (a.segments()[0] & 0xffc0) == 0xfe80 {
        Target::Internal
    } else if (a.segments()[0] & 0xfe00) == 0xfc00 {
        Target::Private
    } else {
        Target::Public
    }
}
