//! A route as the request path uses it: its config, its filters, and its action with
//! upstreams resolved, built once per snapshot.

use std::collections::HashMap;
use std::sync::Arc;

use tollgate_config::gateway::{Route, RouteAction};

use crate::balance::UpstreamRt;
use crate::filters::Filters;
use crate::metrics::RouteMetrics;
use crate::ratelimit::RateLimiter;
use crate::snapshot::BuildError;

#[derive(Debug)]
pub struct RouteRt {
    pub config: Route,
    pub filters: Filters,
    pub action: Action,
    pub metrics: RouteMetrics,
    /// `concurrency`, when set.
    pub concurrency: Option<Arc<crate::concurrency::ConcurrencyLimit>>,
    /// `idempotency`, when set (validation guarantees the Redis it needs).
    pub idempotency: Option<Arc<crate::idempotency::IdempotencyRt>>,
    pub fault: Option<Fault>,
}

/// `fault`, with its counters.
#[derive(Debug)]
pub struct Fault {
    pub cfg: tollgate_config::common::fault::Fault,
    pub delayed: prometheus::IntCounter,
    pub aborted: prometheus::IntCounter,
}

/// What a route does with a request its filters let through.
#[derive(Debug)]
pub enum Action {
    /// To one upstream, or split by weight across several.
    Forward(Forward),
    /// Answer with a redirect built from the request's URL.
    Redirect(tollgate_config::gateway::actions::Redirect),
    /// Answer with a fixed status and body.
    Fixed(tollgate_config::gateway::actions::FixedResponse),
}

#[derive(Debug)]
pub struct Forward {
    targets: Vec<(Arc<UpstreamRt>, u32)>,
    total_weight: u64,
}

impl RouteRt {
    pub fn build(
        route: &Route,
        upstreams: &HashMap<String, Arc<UpstreamRt>>,
        limiters: &HashMap<String, Arc<RateLimiter>>,
        auth: &crate::auth::Policies,
        redis: Option<&Arc<crate::ratelimit::redis::RedisStore>>,
        previous: Option<&RouteRt>,
    ) -> Result<Self, BuildError> {
        let action = match &route.action {
            RouteAction::Forward(targets) => {
                let targets = targets
                    .iter()
                    .map(|t| match upstreams.get(&t.upstream) {
                        Some(u) => Ok((u.clone(), t.weight)),
                        // Validation refuses this; a build never trusts it blindly.
                        None => Err(BuildError::Route {
                            route: route.name.clone(),
                            reason: format!("upstream {:?} is not defined", t.upstream),
                        }),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let total_weight = targets.iter().map(|(_, w)| u64::from(*w)).sum();
                if total_weight == 0 {
                    return Err(BuildError::Route {
                        route: route.name.clone(),
                        reason: "no upstream with a weight above 0".into(),
                    });
                }
                Action::Forward(Forward {
                    targets,
                    total_weight,
                })
            }
            RouteAction::Redirect(r) => Action::Redirect(r.clone()),
            RouteAction::Fixed(f) => Action::Fixed(f.clone()),
        };
        let idempotency = match (&route.idempotency, redis) {
            (None, _) => None,
            (Some(cfg), Some(redis)) => Some(Arc::new(crate::idempotency::IdempotencyRt::build(
                cfg.clone(),
                &route.name,
                redis.clone(),
            ))),
            (Some(_), None) => {
                return Err(BuildError::Route {
                    route: route.name.clone(),
                    reason: "idempotency needs a top-level redis".into(),
                })
            }
        };
        let counter = |kind: &str| {
            crate::metrics::METRICS
                .faults_injected
                .with_label_values(&[route.name.as_str(), kind])
        };
        Ok(Self {
            idempotency,
            fault: route.fault.clone().map(|cfg| Fault {
                cfg,
                delayed: counter("delay"),
                aborted: counter("abort"),
            }),
            filters: Filters::build(route, limiters, auth),
            action,
            metrics: RouteMetrics::new(&route.name),
            concurrency: route.concurrency.map(|c| {
                crate::concurrency::ConcurrencyLimit::build(
                    c,
                    previous.and_then(|p| p.concurrency.as_ref()),
                    "route",
                    &route.name,
                )
            }),
            config: route.clone(),
        })
    }
}

impl Forward {
    /// The upstream for one request: by weight when split.
    pub fn pick(&self) -> Option<&Arc<UpstreamRt>> {
        let r = match self.targets.len() {
            1 => 0,
            _ => rand::random_range(0..self.total_weight),
        };
        pick_weighted(&self.targets, r)
    }
}

/// The target whose weight range holds `r` (`r` < the total weight).
fn pick_weighted<T>(targets: &[(T, u32)], mut r: u64) -> Option<&T> {
    for (t, w) in targets {
        if r < u64::from(*w) {
            return Some(t);
        }
        r -= u64::from(*w);
    }
    targets.last().map(|(t, _)| t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_split_respects_zero_weights_and_ranges() {
        let t = [("a", 0u32), ("b", 5), ("c", 1)];
        for r in 0..5 {
            assert_eq!(pick_weighted(&t, r), Some(&"b"));
        }
        assert_eq!(pick_weighted(&t, 5), Some(&"c"));
        assert_eq!(pick_weighted::<&str>(&[], 0), None);
    }
}
