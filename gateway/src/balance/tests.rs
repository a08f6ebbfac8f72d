#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use tollgate_config::gateway::{HashOn, Outlier, ZoneAware};

use super::*;
use tollgate_config::outlier::Transition;

fn ep(last: u8, zone: &str, weight: u32) -> Endpoint {
    Endpoint {
        address: SocketAddr::from(([127, 0, 0, last], 8000)),
        zone: Some(zone.into()),
        region: None,
        weight,
        draining: false,
    }
}

fn upstream(balance: Balance, zone_aware: Option<f64>, eps: Vec<Endpoint>) -> UpstreamRt {
    UpstreamRt::new(
        Upstream {
            name: "u".into(),
            balance,
            zone_aware: zone_aware.map(|f| ZoneAware {
                min_local_healthy: f,
            }),
            endpoints: eps,
            discover: None,
            health_check: None,
            outlier: None,
            tls: None,
            protocol: Default::default(),
            concurrency: None,
            adaptive_concurrency: None,
            sticky: None,
            slow_start: None,
            deregistration_delay: std::time::Duration::from_secs(300),
        },
        Some("a".into()),
        None,
        None,
    )
    .unwrap()
}

fn mark_down(u: &UpstreamRt, last: u8) {
    let set = u.set.load();
    let m = set
        .find(SocketAddr::from(([127, 0, 0, last], 8000)))
        .unwrap();
    assert_eq!(
        m.state.observe_check(false, 1, 1),
        Transition::BecameUnhealthy
    );
}

fn spread(u: &UpstreamRt, n: usize) -> HashMap<u8, usize> {
    let mut out = HashMap::new();
    for _ in 0..n {
        let p = u.pick(HashKey::None, &[], None).unwrap();
        let IpAddr::V4(ip) = p.address.ip() else {
            panic!()
        };
        *out.entry(ip.octets()[3]).or_default() += 1;
    }
    out
}

#[test]
fn weighted_round_robin_follows_weights() {
    let u = upstream(
        Balance::RoundRobin,
        None,
        vec![ep(1, "a", 1), ep(2, "a", 3)],
    );
    let s = spread(&u, 400);
    assert_eq!(s[&1], 100);
    assert_eq!(s[&2], 300);
}

#[test]
fn zone_aware_stays_local_then_spills() {
    let u = upstream(
        Balance::RoundRobin,
        Some(0.5),
        vec![ep(1, "a", 1), ep(2, "a", 1), ep(3, "b", 1), ep(4, "c", 1)],
    );
    let s = spread(&u, 100);
    assert_eq!(
        s.keys().copied().collect::<std::collections::BTreeSet<_>>(),
        [1, 2].into()
    );
    // One of two local down: 50% still meets the threshold, stay local.
    mark_down(&u, 1);
    let s = spread(&u, 100);
    assert_eq!(s.get(&2), Some(&100));
    // Whole local zone down: spill to the other zones.
    mark_down(&u, 2);
    let s = spread(&u, 100);
    assert_eq!(s.get(&1), None);
    assert_eq!(s.get(&2), None);
    assert_eq!(s[&3] + s[&4], 100);
}

#[test]
fn panic_mode_when_nothing_is_healthy() {
    let u = upstream(
        Balance::LeastRequest,
        None,
        vec![ep(1, "a", 1), ep(2, "b", 1)],
    );
    mark_down(&u, 1);
    assert!(!u.pick(HashKey::None, &[], None).unwrap().panic);
    mark_down(&u, 2);
    let p = u.pick(HashKey::None, &[], None).unwrap();
    assert!(p.panic);
    assert_eq!(spread(&u, 200).len(), 2, "fail open across all endpoints");
}

#[test]
fn retries_avoid_tried_endpoints() {
    let u = upstream(
        Balance::RoundRobin,
        None,
        vec![ep(1, "a", 1), ep(2, "a", 1)],
    );
    for _ in 0..20 {
        let first = u.pick(HashKey::None, &[], None).unwrap().address;
        let second = u.pick(HashKey::None, &[first], None).unwrap().address;
        assert_ne!(first, second);
    }
}

#[test]
fn least_request_prefers_idle_endpoints() {
    let u = upstream(
        Balance::LeastRequest,
        None,
        vec![ep(1, "a", 1), ep(2, "a", 1)],
    );
    let busy = u.set.load().members[0].state.clone();
    let _guards: Vec<_> = (0..10).map(|_| busy.begin()).collect();
    let s = spread(&u, 100);
    assert_eq!(s.get(&2), Some(&100));
}

#[test]
fn consistent_hash_is_sticky_and_remaps_minimally() {
    let eps: Vec<_> = (1..=5).map(|i| ep(i, "a", 1)).collect();
    let u = upstream(Balance::ConsistentHash(HashOn::ClientIp), None, eps.clone());
    let keys: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
    let before: Vec<SocketAddr> = keys
        .iter()
        .map(|k| {
            u.pick(HashKey::Bytes(k.as_bytes()), &[], None)
                .unwrap()
                .address
        })
        .collect();
    // Sticky.
    for (k, b) in keys.iter().zip(&before) {
        assert_eq!(
            u.pick(HashKey::Bytes(k.as_bytes()), &[], None)
                .unwrap()
                .address,
            *b
        );
    }
    // Balanced enough: each of 5 endpoints gets 10%..30% of keys.
    for i in 1..=5u8 {
        let n = before
            .iter()
            .filter(|a| a.ip() == IpAddr::from([127, 0, 0, i]))
            .count();
        assert!((100..=300).contains(&n), "endpoint {i} got {n}");
    }
    // Endpoint 3 goes down: only its keys move.
    mark_down(&u, 3);
    let gone = SocketAddr::from(([127, 0, 0, 3], 8000));
    for (k, b) in keys.iter().zip(&before) {
        let now = u
            .pick(HashKey::Bytes(k.as_bytes()), &[], None)
            .unwrap()
            .address;
        if *b != gone {
            assert_eq!(now, *b, "key {k} moved although its endpoint is up");
        } else {
            assert_ne!(now, gone);
        }
    }
}

#[test]
fn state_survives_rebuild() {
    let mut u = upstream(
        Balance::RoundRobin,
        None,
        vec![ep(1, "a", 1), ep(2, "a", 1)],
    );
    u.cfg.health_check = Some(hc());
    mark_down(&u, 1);
    let u2 = UpstreamRt::new(u.cfg.clone(), Some("a".into()), None, Some(&u)).unwrap();
    let set = u2.set.load();
    assert!(!set.members[0].state.is_healthy());
    assert!(Arc::ptr_eq(
        &set.members[1].state,
        &u.set.load().members[1].state
    ));
}

#[test]
fn ejected_endpoints_are_skipped() {
    let u = upstream(
        Balance::RoundRobin,
        None,
        vec![ep(1, "a", 1), ep(2, "a", 1)],
    );
    let o = Outlier {
        consecutive_failures: 1,
        eject_for: Duration::from_secs(30),
        max_eject_for: Duration::from_secs(60),
        max_ejected: 0.5,
    };
    u.set.load().members[0].state.eject(&o);
    assert_eq!(spread(&u, 50).get(&2), Some(&50));
}

#[test]
fn retries_spill_to_other_zones_when_local_endpoints_were_tried() {
    let u = upstream(
        Balance::RoundRobin,
        Some(0.5),
        vec![ep(1, "a", 1), ep(2, "a", 1), ep(3, "b", 1)],
    );
    let a1 = SocketAddr::from(([127, 0, 0, 1], 8000));
    let a2 = SocketAddr::from(([127, 0, 0, 2], 8000));
    // One local endpoint tried: 1 of 2 local left is still 50%, stay local.
    assert_eq!(u.pick(HashKey::None, &[a1], None).unwrap().address, a2);
    // Both local tried (the zone is down but checks have not noticed yet): go remote.
    let p = u.pick(HashKey::None, &[a1, a2], None).unwrap();
    assert_eq!(p.address, SocketAddr::from(([127, 0, 0, 3], 8000)));
    assert!(!p.panic);
}

#[test]
fn removing_the_health_check_clears_unhealthy_verdicts() {
    let mut u = upstream(Balance::RoundRobin, None, vec![ep(1, "a", 1)]);
    u.cfg.health_check = Some(hc());
    mark_down(&u, 1);
    let mut cfg = u.cfg.clone();
    cfg.health_check = None;
    let u2 = UpstreamRt::new(cfg, Some("a".into()), None, Some(&u)).unwrap();
    assert!(u2.set.load().members[0].state.is_healthy());
}

fn hc() -> tollgate_config::gateway::HealthCheck {
    tollgate_config::gateway::HealthCheck {
        path: "/".into(),
        host: None,
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        healthy: 1,
        unhealthy: 1,
        expect: vec![(200, 299)],
        grpc_service: None,
    }
}

#[test]
fn a_sticky_token_wins_while_its_endpoint_is_available() {
    let mut u = upstream(
        Balance::RoundRobin,
        None,
        vec![ep(1, "a", 1), ep(2, "a", 1), ep(3, "a", 1)],
    );
    u.cfg.health_check = Some(hc());
    let token = u.set.load().members[1].token;
    for _ in 0..50 {
        let p = u.pick(HashKey::None, &[], Some(token)).unwrap();
        assert_eq!(p.address.port(), 8000);
        assert_eq!(p.token, token);
        assert_eq!(p.address, SocketAddr::from(([127, 0, 0, 2], 8000)));
    }
    // Unhealthy: replaced, and the pick names the new endpoint's token.
    mark_down(&u, 2);
    let p = u.pick(HashKey::None, &[], Some(token)).unwrap();
    assert_ne!(p.address, SocketAddr::from(([127, 0, 0, 2], 8000)));
    assert_ne!(p.token, token);
    // A token nobody has: the algorithm decides.
    assert!(u.pick(HashKey::None, &[], Some(42)).is_some());
}

#[test]
fn slow_start_ramps_a_new_endpoints_share() {
    let mut u = upstream(Balance::RoundRobin, None, vec![ep(1, "a", 1)]);
    u.cfg.slow_start = Some(Duration::from_secs(100));
    // Endpoint 1 was there from the start; endpoint 2 joins now.
    u.cfg.endpoints.push(ep(2, "a", 1));
    let u2 = UpstreamRt::new(u.cfg.clone(), Some("a".into()), None, Some(&u)).unwrap();
    let s = spread(&u2, 2000);
    let new = s.get(&2).copied().unwrap_or(0);
    assert!(new <= 60, "a brand-new endpoint gets about 1%: {s:?}");
    // The same with least request.
    let mut cfg = u2.cfg.clone();
    cfg.balance = Balance::LeastRequest;
    let u3 = UpstreamRt::new(cfg, Some("a".into()), None, Some(&u2)).unwrap();
    let s = spread(&u3, 2000);
    assert!(s.get(&2).copied().unwrap_or(0) <= 100, "{s:?}");
}

#[test]
fn the_ramp_is_linear_and_ends() {
    assert_eq!(ramp_at(0, 5_000, 10_000), None, "there from the start");
    assert_eq!(ramp_at(1_000, 1_000, 10_000), Some(0.0));
    assert_eq!(ramp_at(1_000, 6_000, 10_000), Some(0.5));
    assert_eq!(ramp_at(1_000, 11_000, 10_000), None, "done");
    assert_eq!(ramp_at(9_000, 5_000, 10_000), Some(0.0), "not yet back");
}

#[test]
fn a_removed_endpoint_drains_while_in_use() {
    let u = upstream(
        Balance::RoundRobin,
        None,
        vec![ep(1, "a", 1), ep(2, "a", 1)],
    );
    let busy = u.set.load().members[1].state.hold();
    let mut cfg = u.cfg.clone();
    cfg.endpoints = vec![ep(1, "a", 1)];
    let u2 = UpstreamRt::new(cfg, Some("a".into()), None, Some(&u)).unwrap();
    let set = u2.set.load_full();
    assert_eq!(set.members.len(), 2, "kept while a request uses it");
    assert!(set.members[1].draining());
    for _ in 0..20 {
        assert_eq!(
            u2.pick(HashKey::None, &[], None).unwrap().address,
            SocketAddr::from(([127, 0, 0, 1], 8000)),
            "no new requests to a draining endpoint"
        );
    }
    assert_eq!(u2.sweep_drained(now_ms()), 0, "still in use");
    drop(busy);
    assert_eq!(u2.sweep_drained(now_ms()), 1);
    assert_eq!(u2.set.load().members.len(), 1);

    // Past the delay, it goes even while in use.
    let mut cfg = u2.cfg.clone();
    cfg.endpoints = vec![ep(1, "a", 1), ep(2, "a", 1)];
    cfg.deregistration_delay = Duration::from_millis(1);
    let u3 = UpstreamRt::new(cfg.clone(), Some("a".into()), None, Some(&u2)).unwrap();
    let _busy = u3.set.load().members[1].state.hold();
    cfg.endpoints = vec![ep(1, "a", 1)];
    let u4 = UpstreamRt::new(cfg, Some("a".into()), None, Some(&u3)).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(u4.sweep_drained(now_ms()), 1);
}
