//! W3C Trace Context (`traceparent`): parsing what callers send, formatting what we
//! send on, without allocating (this runs for every request).

use http::HeaderValue;

/// The trace a request belongs to, as the caller described it (or as we started it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: u128,
    /// The caller's span (0: we started the trace).
    pub parent_span_id: u64,
    pub sampled: bool,
}

impl TraceContext {
    /// The caller's context from its `traceparent`, or a new trace whose sampling is
    /// decided by `ratio` (parent-based sampling: a caller's decision is followed).
    pub fn from_header(traceparent: Option<&[u8]>, ratio: f64) -> Self {
        match traceparent.and_then(parse_traceparent) {
            Some(tc) => tc,
            None => {
                let trace_id = new_trace_id();
                Self {
                    trace_id,
                    parent_span_id: 0,
                    sampled: ratio_sampled(trace_id, ratio),
                }
            }
        }
    }

    /// `traceparent` for a request we send on behalf of span `span_id`.
    pub fn traceparent(&self, span_id: u64) -> HeaderValue {
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        put_hex(&mut out[3..35], self.trace_id);
        put_hex(&mut out[36..52], u128::from(span_id));
        if self.sampled {
            out[54] = b'1';
        }
        HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("0"))
    }

    /// The trace id as 32 hex digits (for logs).
    pub fn trace_id_hex(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        put_hex(&mut out, self.trace_id);
        out
    }
}

/// OpenTelemetry's TraceIdRatioBased sampler: the decision depends on the trace id
/// only, so every hop with the same ratio decides the same way.
pub fn ratio_sampled(trace_id: u128, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    let low = (trace_id as u64) >> 1;
    (low as f64) < ratio * (1u64 << 63) as f64
}

/// A `traceparent` value (version 00; later versions are read as 00, as the spec asks).
pub fn parse_traceparent(v: &[u8]) -> Option<TraceContext> {
    let tp = v.trim_ascii();
    // Upper-case hex is accepted (and sent on in lower case): lenient with callers.
    let hex = |s: &[u8]| s.iter().all(u8::is_ascii_hexdigit);
    let ok = tp.len() >= 55
        && (tp.len() == 55 || tp[55] == b'-')
        && tp[2] == b'-'
        && tp[35] == b'-'
        && tp[52] == b'-'
        && hex(&tp[..2])
        && !tp[..2].eq_ignore_ascii_case(b"ff")
        && (tp.len() == 55 || &tp[..2] != b"00")
        && hex(&tp[3..35])
        && hex(&tp[36..52])
        && hex(&tp[53..55]);
    if !ok {
        return None;
    }
    let trace_id = parse_hex(&tp[3..35])?;
    let parent = parse_hex(&tp[36..52])? as u64;
    if trace_id == 0 || parent == 0 {
        return None;
    }
    let flags = parse_hex(&tp[53..55])?;
    Some(TraceContext {
        trace_id,
        parent_span_id: parent,
        sampled: flags & 1 == 1,
    })
}

fn parse_hex(s: &[u8]) -> Option<u128> {
    s.iter().try_fold(0u128, |acc, &b| {
        let d = (b as char).to_digit(16)?;
        Some(acc << 4 | u128::from(d))
    })
}

/// Lower-case hex of `v` into `out` (most significant digit first).
pub fn put_hex(out: &mut [u8], mut v: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in out.iter_mut().rev() {
        *b = DIGITS[(v & 0xf) as usize];
        v >>= 4;
    }
}

pub fn new_trace_id() -> u128 {
    rand::random::<u128>().max(1)
}

pub fn new_span_id() -> u64 {
    rand::random::<u64>().max(1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_valid_traceparent_is_continued_with_its_sampling_flag() {
        let tc =
            parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(tc.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(tc.parent_span_id, 0x00f067aa0ba902b7);
        assert!(tc.sampled);
        let out = tc.traceparent(0xabc);
        assert_eq!(
            out.to_str().unwrap(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000abc-01"
        );
        let unsampled = TraceContext::from_header(
            Some(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
            1.0,
        );
        assert!(
            !unsampled.sampled,
            "the caller's decision wins over the ratio"
        );
        assert!(unsampled.traceparent(1).to_str().unwrap().ends_with("-00"));
        // A future version with more fields is read as version 00.
        assert!(parse_traceparent(
            b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"
        )
        .is_some());
    }

    #[test]
    fn invalid_traceparents_start_a_new_trace() {
        for bad in [
            &b"garbage"[..],
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert!(
                parse_traceparent(bad).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
            let tc = TraceContext::from_header(Some(bad), 0.0);
            assert_ne!(tc.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
            assert_eq!(tc.parent_span_id, 0);
            assert!(!tc.sampled);
        }
    }

    #[test]
    fn ratio_sampling_follows_the_ratio_and_the_trace_id() {
        let n = 20_000;
        let hits = (0..n)
            .filter(|_| ratio_sampled(new_trace_id(), 0.1))
            .count();
        assert!((1_500..2_500).contains(&hits), "{hits} of {n} at 10%");
        let id = new_trace_id();
        assert_eq!(ratio_sampled(id, 0.3), ratio_sampled(id, 0.3));
        assert!(ratio_sampled(id, 1.0));
        assert!(!ratio_sampled(id, 0.0));
    }
}
