use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::resilience::latency::{bucket_of, upper_edge, LatencyWindow, BUCKETS};

const WINDOW: Duration = Duration::from_secs(10);

#[test]
fn buckets_are_contiguous_and_within_a_sixteenth() {
    let mut last = 0;
    for v in (0..5_000u64).chain((5_000..70_000_000).step_by(997)) {
        let b = bucket_of(v);
        assert!(b >= last, "{v}: bucket {b} after {last}");
        assert!(
            v > 5_000 || b <= last + 1,
            "{v}: skipped from {last} to {b}"
        );
        last = b;
        let edge = upper_edge(b);
        if v > upper_edge(BUCKETS - 1) {
            assert_eq!(b, BUCKETS - 1, "{v}: beyond the range, in the last bucket");
            continue;
        }
        assert!(edge >= v, "{v} above its bucket's edge {edge}");
        assert!(
            (edge - v) as f64 <= v as f64 / 16.0 + 1.0,
            "{v}: edge {edge} too far"
        );
    }
    assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn percentiles_of_a_known_spread() {
    let t0 = Instant::now();
    let w = LatencyWindow::with_origin(WINDOW, t0);
    assert_eq!(w.quantile_at(0.95, t0), None, "nothing recorded");
    for n in 1..=1000 {
        w.record_at(ms(n), t0);
    }
    for (q, want) in [(0.5, 500.0), (0.95, 950.0), (0.99, 990.0), (0.999, 999.0)] {
        let got = w.quantile_at(q, t0).unwrap();
        assert_eq!(got.samples, 1000);
        let got = got.value.as_secs_f64() * 1000.0;
        assert!(
            got >= want && got <= want * 1.0625,
            "p{}: {got} ms, want about {want}",
            q * 100.0
        );
    }
}

#[test]
fn a_few_slow_tries_move_p99_not_p95() {
    let t0 = Instant::now();
    let w = LatencyWindow::with_origin(WINDOW, t0);
    for _ in 0..97 {
        w.record_at(ms(4), t0);
    }
    for _ in 0..3 {
        w.record_at(ms(300), t0);
    }
    let p95 = w.quantile_at(0.95, t0).unwrap().value;
    let p99 = w.quantile_at(0.99, t0).unwrap().value;
    assert!(p95 >= ms(4) && p95 < ms(5), "{p95:?}");
    assert!(p99 >= ms(300) && p99 < ms(320), "{p99:?}");
}

#[test]
fn history_covers_this_window_and_the_one_before() {
    let t0 = Instant::now();
    let w = LatencyWindow::with_origin(WINDOW, t0);
    for _ in 0..10 {
        w.record_at(ms(100), t0);
    }
    // Next window: both count.
    let t1 = t0 + WINDOW + ms(1);
    for _ in 0..10 {
        w.record_at(ms(1), t1);
    }
    let q = w.quantile_at(0.5, t1).unwrap();
    assert_eq!(q.samples, 20);
    assert!(w.quantile_at(0.99, t1).unwrap().value >= ms(100));
    // Two windows on, the first is forgotten (even before its slot is reused)...
    let t2 = t0 + 2 * WINDOW + ms(1);
    let q = w.quantile_at(0.99, t2).unwrap();
    assert_eq!(q.samples, 10);
    assert!(q.value < ms(2), "{q:?}");
    // ...and its slot is cleared when recording there again.
    w.record_at(ms(7), t2);
    let q = w.quantile_at(0.5, t2).unwrap();
    assert_eq!(q.samples, 11);
    // Three windows on, only what was recorded in the last two remains.
    assert_eq!(
        w.quantile_at(0.5, t0 + 3 * WINDOW + ms(1)).unwrap().samples,
        1
    );
    assert_eq!(w.quantile_at(0.5, t0 + 4 * WINDOW + ms(1)), None);
}

#[test]
fn concurrent_recording_loses_nothing_within_a_window() {
    let t0 = Instant::now();
    let w = Arc::new(LatencyWindow::with_origin(Duration::from_secs(3600), t0));
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let w = Arc::clone(&w);
            std::thread::spawn(move || {
                for n in 0..10_000u64 {
                    w.record_at(Duration::from_micros(n * (i + 1)), t0);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(w.quantile_at(0.5, t0).unwrap().samples, 40_000);
}
