//! `outlier_detection`, the same block in a gateway upstream and a sidecar dependency:
//! its file type, its validated form and the checks between them. The live state it
//! drives (failure streaks, ejections) is in [`crate::outlier`].

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::units::{HumanDuration, Percent};

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutlierFile {
    /// Consecutive failed requests (connect errors, resets, 5xx) before ejection.
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    /// First ejection lasts this long; each further ejection of the same endpoint lasts
    /// one more multiple of it, up to `max_eject_for`.
    #[serde(default = "default_eject_for")]
    pub eject_for: HumanDuration,
    #[serde(default = "default_max_eject_for")]
    pub max_eject_for: HumanDuration,
    /// Never eject more than this share of the upstream's endpoints.
    #[serde(default = "default_max_ejected")]
    pub max_ejected: Percent,
}

fn default_consecutive_failures() -> u32 {
    5
}
fn default_eject_for() -> HumanDuration {
    HumanDuration::from_secs(30)
}
fn default_max_eject_for() -> HumanDuration {
    HumanDuration::from_secs(300)
}
fn default_max_ejected() -> Percent {
    Percent::new_const(50.0)
}

/// Passive health: when to eject an endpoint, for how long, and how many at most.
#[derive(Debug, Clone, PartialEq)]
pub struct Outlier {
    pub consecutive_failures: u32,
    pub eject_for: Duration,
    pub max_eject_for: Duration,
    /// Fraction in 0..=1.
    pub max_ejected: f64,
}

/// Check an `outlier_detection` block; `at` is its field path.
pub fn validate_outlier(at: &str, o: &OutlierFile, p: &mut Problems) -> Outlier {
    if o.consecutive_failures == 0 {
        p.push(format!("{at}.consecutive_failures"), "must be at least 1");
    }
    if o.eject_for.get().is_zero() {
        p.push(format!("{at}.eject_for"), "must be above 0");
    }
    if o.max_eject_for < o.eject_for {
        p.push(format!("{at}.max_eject_for"), "must be at least eject_for");
    }
    Outlier {
        consecutive_failures: o.consecutive_failures,
        eject_for: o.eject_for.get(),
        max_eject_for: o.max_eject_for.get(),
        max_ejected: o.max_ejected.fraction(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_checks() {
        let mut p = Problems::default();
        let o: OutlierFile = serde_yaml::from_str("{}").unwrap();
        let rt = validate_outlier("o", &o, &mut p);
        assert!(p.is_empty());
        assert_eq!(
            rt,
            Outlier {
                consecutive_failures: 5,
                eject_for: Duration::from_secs(30),
                max_eject_for: Duration::from_secs(300),
                max_ejected: 0.5,
            }
        );
        let o: OutlierFile =
            serde_yaml::from_str("{ consecutive_failures: 0, eject_for: 0, max_eject_for: 0 }")
                .unwrap();
        validate_outlier("o", &o, &mut p);
        assert_eq!(p.len(), 2, "0 failures and a zero eject_for");
        let o: OutlierFile = serde_yaml::from_str("{ eject_for: 10s, max_eject_for: 5s }").unwrap();
        validate_outlier("o", &o, &mut p);
        assert_eq!(p.len(), 3, "max_eject_for below eject_for");
    }
}
