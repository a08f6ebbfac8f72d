use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::resilience::{backoff_cap, full_jitter, full_jitter_with};

const MS: Duration = Duration::from_millis(1);

#[test]
fn cap_doubles_from_min_up_to_max() {
    let caps: Vec<_> = (1..=6).map(|n| backoff_cap(n, 25 * MS, 250 * MS)).collect();
    assert_eq!(
        caps,
        [25 * MS, 50 * MS, 100 * MS, 200 * MS, 250 * MS, 250 * MS]
    );
    // Retry 0 is taken as the first.
    assert_eq!(backoff_cap(0, 25 * MS, 250 * MS), 25 * MS);
}

#[test]
fn cap_never_overflows() {
    assert_eq!(backoff_cap(u32::MAX, 25 * MS, 250 * MS), 250 * MS);
    assert_eq!(
        backoff_cap(u32::MAX, Duration::MAX, Duration::MAX),
        Duration::MAX
    );
    let _ = full_jitter(u32::MAX, Duration::MAX, Duration::MAX);
}

#[test]
fn zero_min_means_no_wait() {
    assert_eq!(full_jitter(3, Duration::ZERO, 250 * MS), Duration::ZERO);
}

#[test]
fn full_jitter_spreads_uniformly_below_the_cap() {
    let mut rng = StdRng::seed_from_u64(7);
    for n in 1..=6 {
        let cap = backoff_cap(n, 25 * MS, 250 * MS);
        let samples: Vec<Duration> = (0..2000)
            .map(|_| full_jitter_with(&mut rng, n, 25 * MS, 250 * MS))
            .collect();
        assert!(
            samples.iter().all(|d| *d <= cap),
            "retry {n}: above {cap:?}"
        );
        let mean = samples.iter().sum::<Duration>().as_secs_f64() / samples.len() as f64;
        let ratio = mean / cap.as_secs_f64();
        assert!((0.4..0.6).contains(&ratio), "retry {n}: mean/cap = {ratio}");
        // Full jitter, not "half jitter": waits near zero happen.
        assert!(samples.iter().any(|d| *d < cap / 20), "retry {n}");
        assert!(samples.iter().any(|d| *d > cap * 19 / 20), "retry {n}");
    }
}
