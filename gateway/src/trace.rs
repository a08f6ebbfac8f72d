//! Request ids, W3C trace context, and sampled warnings.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use tollgate_config::outlier::now_ms;

/// A random 128-bit id in hex.
pub fn new_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The `traceparent` to send upstream: same trace as the incoming one (when valid) with
/// a new span id for our hop; a new trace otherwise.
pub fn child_traceparent(incoming: Option<&str>) -> String {
    let span = rand::random::<u64>().max(1);
    if let Some(tp) = incoming {
        let parts: Vec<&str> = tp.trim().split('-').collect();
        if let [version, trace_id, _parent, flags] = parts[..] {
            let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
            if version == "00"
                && hex(trace_id, 32)
                && hex(flags, 2)
                && trace_id != "00000000000000000000000000000000"
            {
                return format!("00-{}-{span:016x}-{flags}", trace_id.to_ascii_lowercase());
            }
        }
    }
    format!("00-{:032x}-{span:016x}-01", rand::random::<u128>().max(1))
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
    use super::*;

    #[test]
    fn traceparent_keeps_the_trace() {
        let tp = child_traceparent(Some(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ));
        assert!(tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(tp.ends_with("-01"));
        assert!(!tp.contains("00f067aa0ba902b7"));
        let fresh = child_traceparent(Some("garbage"));
        assert_eq!(fresh.len(), 55);
        assert_eq!(new_request_id().len(), 32);
    }
}
