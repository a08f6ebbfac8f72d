//! Zone-aware endpoint choice, the same in both proxies: where an endpoint is relative
//! to this replica (a locality tier for choosing, a [`Locality`] for the cross-zone
//! traffic metrics), and which endpoints a request may go to.
//!
//! The rule: walk the tiers (own zone, own region, other regions), taking each tier's
//! available endpoints, and stop after the first tier whose own available share reaches
//! `min_local_healthy`. A degraded local zone keeps its healthy endpoints and is helped
//! by the next tier; a dead one is skipped. Below the threshold everywhere, every
//! available endpoint will do; with none available at all the caller fails open
//! (panic mode, as Envoy does) rather than refuse everyone.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::Percent;

/// How near an endpoint is, in the order endpoints are preferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    LocalZone = 0,
    LocalRegion = 1,
    Remote = 2,
}

impl Tier {
    /// The tier of an endpoint in `endpoint_zone`/`endpoint_region` seen from a replica
    /// in `zone`/`region`. An endpoint without a region is taken to be in ours (the
    /// common single-region case).
    pub fn of(
        zone: Option<&str>,
        region: Option<&str>,
        endpoint_zone: Option<&str>,
        endpoint_region: Option<&str>,
    ) -> Self {
        if let (Some(z), Some(ez)) = (zone, endpoint_zone) {
            if z == ez {
                return Self::LocalZone;
            }
        }
        match (region, endpoint_region) {
            (Some(r), Some(er)) if r == er => Self::LocalRegion,
            (_, None) if endpoint_zone.is_some() || zone.is_none() => Self::LocalRegion,
            (None, _) => Self::LocalRegion,
            _ => Self::Remote,
        }
    }
}

/// An endpoint's place relative to this replica, as the cross-zone metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locality {
    SameZone = 0,
    CrossZone = 1,
    CrossRegion = 2,
    /// This replica's or the endpoint's zone is not configured.
    Unknown = 3,
}

impl Locality {
    pub const LABELS: [&'static str; 4] = ["same_zone", "cross_zone", "cross_region", "unknown"];

    pub fn of(
        zone: Option<&str>,
        region: Option<&str>,
        endpoint_zone: Option<&str>,
        endpoint_region: Option<&str>,
    ) -> Self {
        let other_region = matches!((region, endpoint_region), (Some(a), Some(b)) if a != b);
        match (zone, endpoint_zone) {
            _ if other_region => Self::CrossRegion,
            (Some(a), Some(b)) if a == b => Self::SameZone,
            (Some(_), Some(_)) => Self::CrossZone,
            _ => Self::Unknown,
        }
    }

    pub fn label(self) -> &'static str {
        Self::LABELS[self as usize]
    }
}

/// `zone_aware:` as written, in the gateway's upstreams and the sidecar's dependencies.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ZoneAwareFile {
    /// Stay in the local zone while at least this share of its endpoints is healthy.
    #[serde(default = "default_min_local_healthy")]
    pub min_local_healthy: Percent,
}

fn default_min_local_healthy() -> Percent {
    Percent::new_const(50.0)
}

/// Validated `zone_aware`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ZoneAware {
    /// Fraction in 0..=1.
    pub min_local_healthy: f64,
}

impl From<&ZoneAwareFile> for ZoneAware {
    fn from(f: &ZoneAwareFile) -> Self {
        Self {
            min_local_healthy: f.min_local_healthy.fraction(),
        }
    }
}

/// The endpoints a request may go to: `push(i)` for each chosen index of `members`.
/// With `zone_aware`, by locality tiers (see the module doc); without, every available
/// one. Returns false when nothing was available: the caller then fails open over every
/// endpoint (panic mode). Allocation-free: it runs per request.
pub fn candidates<T>(
    members: &[T],
    zone_aware: Option<ZoneAware>,
    tier: impl Fn(&T) -> Tier,
    available: impl Fn(&T) -> bool,
    mut push: impl FnMut(u32),
) -> bool {
    let mut pushed = false;
    match zone_aware {
        Some(za) => {
            for t in [Tier::LocalZone, Tier::LocalRegion, Tier::Remote] {
                let (mut total, mut healthy) = (0usize, 0usize);
                for (i, m) in members.iter().enumerate() {
                    if tier(m) == t {
                        total += 1;
                        if available(m) {
                            healthy += 1;
                            pushed = true;
                            push(i as u32);
                        }
                    }
                }
                if total > 0 && healthy > 0 && healthy as f64 >= za.min_local_healthy * total as f64
                {
                    return true;
                }
            }
        }
        None => {
            for (i, m) in members.iter().enumerate() {
                if available(m) {
                    pushed = true;
                    push(i as u32);
                }
            }
        }
    }
    pushed
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// (tier, available) per endpoint; the chosen indices and whether any was.
    fn pick(members: &[(Tier, bool)], min: Option<f64>) -> (Vec<u32>, bool) {
        let mut out = Vec::new();
        let za = min.map(|m| ZoneAware {
            min_local_healthy: m,
        });
        let ok = candidates(members, za, |m| m.0, |m| m.1, |i| out.push(i));
        (out, ok)
    }

    use Tier::{LocalRegion as Region, LocalZone as Zone, Remote};

    #[test]
    fn stays_in_the_zone_while_enough_of_it_is_healthy() {
        let m = [(Zone, true), (Zone, true), (Region, true), (Region, true)];
        assert_eq!(pick(&m, Some(0.5)), (vec![0, 1], true));
        // Half of the zone down, 50% asked: still enough.
        let m = [(Zone, true), (Zone, false), (Region, true)];
        assert_eq!(pick(&m, Some(0.5)), (vec![0], true));
    }

    #[test]
    fn a_degraded_zone_is_helped_by_the_next_tier_and_a_dead_one_skipped() {
        let m = [(Zone, true), (Zone, false), (Zone, false), (Region, true)];
        assert_eq!(pick(&m, Some(0.5)), (vec![0, 3], true));
        let m = [(Zone, false), (Zone, false), (Region, true), (Remote, true)];
        assert_eq!(pick(&m, Some(0.5)), (vec![2], true));
        let m = [(Zone, false), (Region, false), (Remote, true)];
        assert_eq!(pick(&m, Some(0.5)), (vec![2], true));
    }

    #[test]
    fn without_zone_awareness_every_available_endpoint_and_none_means_panic() {
        let m = [(Zone, true), (Region, false), (Remote, true)];
        assert_eq!(pick(&m, None), (vec![0, 2], true));
        let dead = [(Zone, false), (Remote, false)];
        assert_eq!(pick(&dead, None), (vec![], false));
        assert_eq!(pick(&dead, Some(0.5)), (vec![], false));
    }

    #[test]
    fn tiers_and_localities() {
        let t = |z, r, ez, er| Tier::of(z, r, ez, er);
        assert_eq!(t(Some("a"), None, Some("a"), None), Tier::LocalZone);
        assert_eq!(t(Some("a"), None, Some("b"), None), Tier::LocalRegion);
        assert_eq!(
            t(Some("a"), Some("r1"), Some("b"), Some("r2")),
            Tier::Remote
        );
        assert_eq!(t(None, None, Some("b"), None), Tier::LocalRegion);
        let l = |z, ez| Locality::of(z, None, ez, None);
        assert_eq!(l(Some("a"), Some("a")), Locality::SameZone);
        assert_eq!(l(Some("a"), Some("b")), Locality::CrossZone);
        assert_eq!(l(Some("a"), None), Locality::Unknown);
        assert_eq!(
            Locality::of(Some("a"), Some("r1"), Some("b"), Some("r2")).label(),
            "cross_region"
        );
    }
}
