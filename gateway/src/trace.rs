//! Request ids and sampled warnings (trace context: `tollgate_config::telemetry`).

use http::HeaderValue;

use tollgate_config::telemetry::trace_context::put_hex;

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

/// Log a warning at most once per second per key (panic mode can hit every request).
pub fn warn_sampled(key: &str, msg: &str) {
    tollgate_config::telemetry::warn_every(key, format_args!("{msg}"));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn request_ids_are_32_hex_digits_and_differ() {
        let a = new_request_id();
        let b = new_request_id();
        assert_eq!(a.len(), 32);
        assert!(a.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_ne!(a, b);
    }
}
