//! gRPC over HTTP/2 as both proxies read it, written once: status codes and which of
//! them are failures of the server (not answers about the caller's request), the
//! `grpc-timeout` deadline, `grpc-message` encoding, and what a response head says
//! about a call's outcome.
//!
//! A gRPC call answers HTTP 200 whatever happened; its real outcome is `grpc-status`,
//! sent either in the response headers (a "trailers-only" response: the call failed or
//! finished before any message) or in the trailers after the last message. Only the
//! statuses that say the server could not serve (UNAVAILABLE, DEADLINE_EXCEEDED,
//! RESOURCE_EXHAUSTED) are failures; INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED...
//! are answers about the request, as a 4xx is.
//!
//! `application/grpc-web` is not gRPC here: its status travels inside the body, not in
//! HTTP trailers, so it is classified by HTTP status only.
//!
//! What each proxy does with a classification (the sidecar's body wrapper that waits
//! for the trailers, the gateway's Pingora phases) stays in that proxy.

use std::time::Duration;

use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};

pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// gRPC's `Retry-After`: how long a client's retry policy should wait.
pub const GRPC_RETRY_PUSHBACK_MS: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// The gRPC status codes the proxies read or answer with (grpc/doc/statuscodes.md).
pub mod code {
    pub const OK: u32 = 0;
    pub const CANCELLED: u32 = 1;
    pub const UNKNOWN: u32 = 2;
    pub const DEADLINE_EXCEEDED: u32 = 4;
    pub const PERMISSION_DENIED: u32 = 7;
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    pub const UNIMPLEMENTED: u32 = 12;
    pub const INTERNAL: u32 = 13;
    pub const UNAVAILABLE: u32 = 14;
    pub const UNAUTHENTICATED: u32 = 16;
}

/// gRPC status codes that count as failures of the dependency.
pub const FAILURE_CODES: [u32; 3] = [
    code::DEADLINE_EXCEEDED,
    code::RESOURCE_EXHAUSTED,
    code::UNAVAILABLE,
];

pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The `grpc-timeout` of a request: 1 to 8 ASCII digits and a unit, `H` hours, `M`
/// minutes, `S` seconds, `m` milliseconds, `u` microseconds, `n` nanoseconds
/// (grpc/doc/PROTOCOL-HTTP2.md). `None` when absent or malformed: a malformed
/// deadline is ignored rather than taken as zero, so the configured timeout applies.
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(&GRPC_TIMEOUT)?.as_bytes();
    let (unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `d` as a `grpc-timeout` value: the finest unit that holds it in 8 digits, rounded
/// down (a deadline passed on must not be later than ours).
pub fn encode_timeout(d: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    let nanos = d.as_nanos();
    let (value, unit) = units
        .iter()
        .map(|&(per, unit)| (nanos / per, unit))
        .find(|&(value, _)| value <= MAX)
        .unwrap_or((MAX, 'H'));
    HeaderValue::from_str(&format!("{value}{unit}"))
        .unwrap_or_else(|_| HeaderValue::from_static("99999999H"))
}

/// The status a gRPC client gives an HTTP status that is not 200
/// (grpc/doc/http-grpc-status-mapping.md).
pub fn code_of_http_status(status: u16) -> u32 {
    match status {
        400 => code::INTERNAL,
        401 => code::UNAUTHENTICATED,
        403 => code::PERMISSION_DENIED,
        404 => code::UNIMPLEMENTED,
        429 | 502..=504 => code::UNAVAILABLE,
        _ => code::UNKNOWN,
    }
}

/// `grpc-message` is percent-encoded: bytes outside printable ASCII, and `%` itself.
pub fn encode_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What a response head says about a gRPC call's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcHead {
    /// Not a gRPC response (or not a 200, which is classified by its HTTP status).
    NotGrpc,
    /// Trailers-only: `grpc-status` is in the headers.
    Status(u32),
    /// The status will come in the trailers, at the end of the body.
    InTrailers,
}

/// `application/grpc`, `application/grpc+proto`, `application/grpc;...` (not grpc-web).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.get(.."application/grpc".len()).map(|p| (p, ct)))
        .is_some_and(|(prefix, ct)| {
            prefix.eq_ignore_ascii_case("application/grpc")
                && matches!(ct.as_bytes().get(prefix.len()), None | Some(b'+' | b';'))
        })
}

/// The `grpc-status` in `headers` (or trailers), if any and numeric.
pub fn status_code(headers: &HeaderMap) -> Option<u32> {
    headers
        .get(&GRPC_STATUS)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub fn is_failure_code(code: u32) -> bool {
    FAILURE_CODES.contains(&code)
}

/// Read a response head: its HTTP status and headers.
pub fn head(status: StatusCode, headers: &HeaderMap) -> GrpcHead {
    if status != StatusCode::OK || !is_grpc(headers) {
        return GrpcHead::NotGrpc;
    }
    match status_code(headers) {
        Some(code) => GrpcHead::Status(code),
        None => GrpcHead::InTrailers,
    }
}

/// A trailers-only gRPC response whose status is a failure of the server.
pub fn failed_at_head(status: StatusCode, headers: &HeaderMap) -> bool {
    matches!(head(status, headers), GrpcHead::Status(code) if is_failure_code(code))
}

/// The outcome a call's trailers give: a failure for a failure code, and for trailers
/// without a status (the server broke the protocol).
pub fn trailers_failed(trailers: &HeaderMap) -> bool {
    status_code(trailers).is_none_or(is_failure_code)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_parses_every_unit_and_refuses_malformed_values() {
        let parse = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("grpc-timeout", HeaderValue::from_static(v));
            timeout(&h)
        };
        let ms = Duration::from_millis;
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse("4S"), Some(Duration::from_secs(4)));
        assert_eq!(parse("250m"), Some(ms(250)));
        assert_eq!(parse("1500u"), Some(Duration::from_micros(1500)));
        assert_eq!(parse("99999999n"), Some(Duration::from_nanos(99_999_999)));
        assert_eq!(parse("0m"), Some(Duration::ZERO));
        for bad in [
            "",
            "S",
            "100",
            "123456789m",
            "1.5S",
            "-1S",
            "10s",
            "10 S",
            "1x",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(timeout(&HeaderMap::new()), None);

        // Written in the finest unit that fits in 8 digits, rounded down.
        for (d, want) in [
            (Duration::from_nanos(99_999_999), "99999999n"),
            (ms(100), "100000u"),
            (
                Duration::from_secs(100) + Duration::from_nanos(1),
                "100000m",
            ),
            (Duration::from_secs(1_000_000), "1000000S"),
            (Duration::from_secs(200_000_000), "3333333M"),
            (Duration::from_secs(u64::MAX), "99999999H"),
            (Duration::ZERO, "0n"),
        ] {
            assert_eq!(encode_timeout(d), want, "{d:?}");
        }
        // What is written parses back to at most the original.
        for d in [ms(1), ms(2500), Duration::from_secs(86_400)] {
            let mut h = HeaderMap::new();
            h.insert("grpc-timeout", encode_timeout(d));
            assert!(timeout(&h).unwrap() <= d);
        }
    }

    #[test]
    fn heads_and_trailers_classify() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            m
        };
        let grpc = h(&[("content-type", "application/grpc+proto")]);
        assert_eq!(head(StatusCode::OK, &grpc), GrpcHead::InTrailers);
        assert_eq!(head(StatusCode::BAD_GATEWAY, &grpc), GrpcHead::NotGrpc);
        let web = h(&[
            ("content-type", "application/grpc-web"),
            ("grpc-status", "14"),
        ]);
        assert_eq!(head(StatusCode::OK, &web), GrpcHead::NotGrpc);
        let only = h(&[("content-type", "application/grpc"), ("grpc-status", "14")]);
        assert_eq!(head(StatusCode::OK, &only), GrpcHead::Status(14));
        assert!(failed_at_head(StatusCode::OK, &only));
        let not_found = h(&[("content-type", "application/grpc"), ("grpc-status", "5")]);
        assert!(!failed_at_head(StatusCode::OK, &not_found));
        assert!(trailers_failed(&h(&[("grpc-status", "4")])));
        assert!(!trailers_failed(&h(&[("grpc-status", "0")])));
        assert!(trailers_failed(&HeaderMap::new()));
    }
}
