//! Request ids, W3C trace context, and sampled warnings.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use http::HeaderValue;

use tollgate_config::outlier::now_ms;

/// Lower-case hex of `v` into `out` (most significant digit first).
fn put_hex(out: &mut [u8], mut v: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in out.iter_mut().rev() {
        *b = DIGITS[(v & 0xf) as usize];
        v >>= 4;
    }
}

/// A header value from bytes known to be visible ASCII (hex and dashes).
fn ascii_value(bytes: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(bytes).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// A random 128-bit id in hex (32 characters). Formatted on the stack: this runs for
/// every request.
pub fn new_request_id() -> HeaderValue {
    let mut buf = [0u8; 32];
    put_hex(&mut buf, rand::random::<u128>());
    ascii_value(&buf)
}

/// The `traceparent` to send upstream (`00-TRACE-SPAN-FLAGS`, 55 characters): same
/// trace as the incoming one (when valid) with a new span id for our hop; a new trace
/// otherwise.
pub fn child_traceparent(incoming: Option<&[u8]>) -> HeaderValue {
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-01";
    let hex = |s: &[u8]| s.iter().all(u8::is_ascii_hexdigit);
    let valid = incoming.map(<[u8]>::trim_ascii).filter(|tp| {
        tp.len() == 55
            && tp.starts_with(b"00-")
            && tp[35] == b'-'
            && tp[52] == b'-'
            && hex(&tp[3..35])
            && hex(&tp[36..52])
            && hex(&tp[53..55])
            && tp[3..35].iter().any(|&b| b != b'0')
    });
    match valid {
        Some(tp) => {
            out[3..35].copy_from_slice(&tp[3..35]);
            out[3..35].make_ascii_lowercase();
            out[53..55].copy_from_slice(&tp[53..55]);
            out[53..55].make_ascii_lowercase();
        }
        None => put_hex(&mut out[3..35], rand::random::<u128>().max(1)),
    }
    put_hex(&mut out[36..52], u128::from(rand::random::<u64>().max(1)));
    ascii_value(&out)
}

/// Log a warning at most once per second per key (panic mode can hit every request).
pub fn warn_sampled(key: &str, msg: &str) {
    static LAST: LazyLock<Mutex<HashMap<String, u64>>> = LazyLock::new(Default::default);
    let now = now_ms();
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let due = last.get(key).is_none_or(|&t| now >= t + 1000);
    if due {
        last.insert(key.to_owned(), now);
        drop(last);
        tracing::warn!(upstream = key, "{msg}");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tp(incoming: &str) -> String {
        child_traceparent(Some(incoming.as_bytes()))
            .to_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn traceparent_keeps_the_trace() {
        let t = tp("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert!(t.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{t}");
        assert!(t.ends_with("-01"));
        assert!(!t.contains("00f067aa0ba902b7"));
        assert_eq!(t.len(), 55);
        // Upper case is normalized, flags kept.
        let t = tp(" 00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-00 ");
        assert!(t.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{t}");
        assert!(t.ends_with("-00"), "{t}");
    }

    #[test]
    fn invalid_traceparents_start_a_new_trace() {
        for bad in [
            "garbage",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
        ] {
            let t = tp(bad);
            assert_eq!(t.len(), 55);
            assert!(
                !t.contains("4bf92f3577b34da6a3ce929d0e0e473"),
                "{bad} -> {t}"
            );
            assert!(t.starts_with("00-") && t.ends_with("-01"), "{t}");
            assert_ne!(&t[3..35], "00000000000000000000000000000000");
        }
        let none = child_traceparent(None);
        assert_eq!(none.len(), 55);
    }

    #[test]
    fn request_ids_are_32_hex_digits_and_differ() {
        let a = new_request_id();
        let b = new_request_id();
        assert_eq!(a.len(), 32);
        assert!(a.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_ne!(a, b);
    }
}
