//! Fault injection, for game days and chaos tests: a share of requests (optionally only
//! those carrying a header) is delayed, and a share is answered with a status without
//! reaching the backend. One file type, one validation and one decision, used by the
//! gateway (`routes[i].fault`) and the sidecar (`dependencies.NAME.fault`).

use std::time::Duration;

use http::{HeaderMap, HeaderName};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::units::{HumanDuration, Percent};

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultFile {
    /// Delay this share of requests by `delay`.
    #[serde(default)]
    pub delay: Option<HumanDuration>,
    #[serde(default)]
    pub delay_percent: Percent,
    /// Answer this share of requests with `abort_status` without forwarding them.
    #[serde(default)]
    pub abort_status: Option<u16>,
    #[serde(default)]
    pub abort_percent: Percent,
    /// Only requests carrying this header are eligible.
    #[serde(default)]
    pub only_with_header: Option<String>,
}

/// A checked `fault`.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub delay: Option<Duration>,
    pub delay_fraction: f64,
    pub abort_status: Option<u16>,
    pub abort_fraction: f64,
    pub only_with_header: Option<HeaderName>,
}

/// What to do to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Injected {
    pub delay: Option<Duration>,
    pub abort: Option<u16>,
}

impl Fault {
    /// Roll the dice for a request with these headers. Delay and abort are rolled
    /// independently; a request that gets both is delayed, then aborted.
    pub fn decide(&self, headers: &HeaderMap) -> Injected {
        let eligible = self
            .only_with_header
            .as_ref()
            .is_none_or(|h| headers.contains_key(h));
        if !eligible {
            return Injected::default();
        }
        Injected {
            delay: self
                .delay
                .filter(|d| !d.is_zero() && roll(self.delay_fraction)),
            abort: self.abort_status.filter(|_| roll(self.abort_fraction)),
        }
    }
}

/// Whether a request falls in the share `fraction` (`0.0..=1.0`).
fn roll(fraction: f64) -> bool {
    fraction >= 1.0 || (fraction > 0.0 && rand::random::<f64>() < fraction)
}

/// Check `f` (at `at`, e.g. `routes[0].fault`).
pub fn validate_fault(at: &str, f: &FaultFile, p: &mut Problems) -> Option<Fault> {
    if f.abort_status.is_none() && f.abort_percent.fraction() > 0.0 {
        p.push(format!("{at}.abort_percent"), "needs `abort_status`");
    }
    if f.delay.is_none() && f.delay_percent.fraction() > 0.0 {
        p.push(format!("{at}.delay_percent"), "needs `delay`");
    }
    if f.abort_status.is_some_and(|s| !(200..600).contains(&s)) {
        p.push(
            format!("{at}.abort_status"),
            "must be a status code 200..599",
        );
    }
    let only_with_header = match &f.only_with_header {
        None => None,
        Some(h) => match HeaderName::from_bytes(h.as_bytes()) {
            Ok(h) => Some(h),
            Err(_) => {
                p.push(format!("{at}.only_with_header"), "not a header name");
                return None;
            }
        },
    };
    Some(Fault {
        delay: f.delay.map(|d| d.get()),
        delay_fraction: f.delay_percent.fraction(),
        abort_status: f.abort_status,
        abort_fraction: f.abort_percent.fraction(),
        only_with_header,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn fault(yaml: &str) -> Result<Option<Fault>, Problems> {
        let f: FaultFile = serde_yaml::from_str(yaml).unwrap();
        let mut p = Problems::default();
        let out = validate_fault("fault", &f, &mut p);
        if p.is_empty() {
            Ok(out)
        } else {
            Err(p)
        }
    }

    #[test]
    fn shares_need_what_they_share() {
        let e = fault("{ abort_percent: 10% }").unwrap_err();
        assert!(format!("{e:?}").contains("needs `abort_status`"), "{e:?}");
        let e = fault("{ delay_percent: 10% }").unwrap_err();
        assert!(format!("{e:?}").contains("needs `delay`"), "{e:?}");
        let e = fault("{ abort_status: 99, abort_percent: 1% }").unwrap_err();
        assert!(format!("{e:?}").contains("200..599"), "{e:?}");
        let e = fault("{ only_with_header: 'a b' }").unwrap_err();
        assert!(format!("{e:?}").contains("not a header name"), "{e:?}");
    }

    #[test]
    fn decisions_follow_the_shares_and_the_header() {
        let f = fault("{ delay: 5ms, delay_percent: 100%, abort_status: 503, abort_percent: 100%, only_with_header: x-chaos }")
            .unwrap()
            .unwrap();
        assert_eq!(f.decide(&HeaderMap::new()), Injected::default());
        let mut h = HeaderMap::new();
        h.insert("x-chaos", http::HeaderValue::from_static("1"));
        assert_eq!(
            f.decide(&h),
            Injected {
                delay: Some(Duration::from_millis(5)),
                abort: Some(503)
            }
        );
        let half = fault("{ abort_status: 503, abort_percent: 50% }")
            .unwrap()
            .unwrap();
        let aborted = (0..4000)
            .filter(|_| half.decide(&HeaderMap::new()).abort.is_some())
            .count();
        assert!((1700..2300).contains(&aborted), "{aborted} of 4000");
    }
}
