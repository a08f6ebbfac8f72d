//! Where a dependency's endpoints are relative to this sidecar, and the traffic that
//! crossed zones to reach them. The tiers, the `min_local_healthy` rule and the
//! locality labels are the gateway's, from `tollgate_config::common::locality`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use prometheus::IntCounter;
use tollgate_config::common::locality::{Locality, Tier, ZoneAware};
use tollgate_config::outlier::EndpointState;

use crate::body::{Body, BoxError};
use crate::metrics::METRICS;

/// This sidecar's place and the dependency's zone-aware policy (reloadable).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Placement {
    pub zone: Option<String>,
    pub region: Option<String>,
    pub zone_aware: Option<ZoneAware>,
}

/// Where one endpoint is, as resolved: its address and the zone written for it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Located {
    pub address: SocketAddr,
    pub zone: Option<String>,
    pub region: Option<String>,
}

/// One endpoint: its live state (kept across re-resolution) and where it is.
#[derive(Debug, Clone)]
pub struct Member {
    pub state: Arc<EndpointState>,
    pub at: Located,
    pub tier: Tier,
    pub locality: Locality,
}

impl Member {
    pub fn new(state: Arc<EndpointState>, at: Located, placement: &Placement) -> Self {
        let (z, r) = (placement.zone.as_deref(), placement.region.as_deref());
        let (ez, er) = (at.zone.as_deref(), at.region.as_deref());
        Self {
            tier: Tier::of(z, r, ez, er),
            locality: Locality::of(z, r, ez, er),
            state,
            at,
        }
    }
}

/// A dependency's traffic by locality: requests sent to endpoints (each try and hedge)
/// and request/response body bytes.
pub struct ZoneTraffic {
    by_locality: [Counters; 4],
}

#[derive(Clone)]
pub struct Counters {
    pub requests: IntCounter,
    pub sent_bytes: IntCounter,
    pub received_bytes: IntCounter,
}

impl ZoneTraffic {
    pub fn new(dependency: &str) -> Self {
        let counters = |l: &str| Counters {
            requests: METRICS
                .dependency_requests
                .with_label_values(&[dependency, l]),
            sent_bytes: METRICS
                .dependency_sent_bytes
                .with_label_values(&[dependency, l]),
            received_bytes: METRICS
                .dependency_received_bytes
                .with_label_values(&[dependency, l]),
        };
        Self {
            by_locality: Locality::LABELS.map(counters),
        }
    }

    pub fn of(&self, l: Locality) -> &Counters {
        // The enum's values index LABELS (0..=3).
        &self.by_locality[l as usize]
    }
}

pin_project_lite::pin_project! {
    /// A body that adds its data bytes to a counter as they pass.
    pub struct Counted {
        #[pin]
        inner: Body,
        counter: IntCounter,
    }
}

/// Count `body`'s bytes into `counter` as they are read.
pub fn counted(inner: Body, counter: IntCounter) -> Body {
    crate::body::boxed(Counted { inner, counter })
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.counter.inc_by(data.len() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn counted_bodies_add_their_bytes() {
        let c = IntCounter::new("t", "t").unwrap();
        let body = counted(crate::body::full("hello world"), c.clone());
        assert!(!body.is_end_stream());
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(got.len(), 11);
        assert_eq!(c.get(), 11);
    }

    #[test]
    fn members_are_placed_by_the_shared_rules() {
        let placement = Placement {
            zone: Some("a".into()),
            ..Placement::default()
        };
        let at = |z: &str| Located {
            address: "127.0.0.1:1".parse().unwrap(),
            zone: Some(z.into()),
            region: None,
        };
        let state = EndpointState::new("127.0.0.1:1".parse().unwrap());
        let here = Member::new(state.clone(), at("a"), &placement);
        let there = Member::new(state, at("b"), &placement);
        assert_eq!(
            (here.tier, here.locality),
            (Tier::LocalZone, Locality::SameZone)
        );
        assert_eq!(
            (there.tier, there.locality),
            (Tier::LocalRegion, Locality::CrossZone)
        );
    }
}
