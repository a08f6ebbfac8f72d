//! Micro-benchmarks of the gateway's per-request and per-reload hot paths:
//!
//! - `route_match/*`: `Router::find` over a table of 1,000 routes (exact hosts,
//!   wildcard hosts, host-less path prefixes, method and header conditions): a hit on
//!   the last-defined exact host, a hit on a wildcard that is scanned last (the
//!   suffixes are tried longest first) and a miss (every group is walked).
//! - `pick/*`: `UpstreamRt::pick` for round robin, least request (P2C) and consistent
//!   hash on a header key, on 12 endpoints in 3 zones with `zone_aware` on, on a first
//!   try and on a retry (one endpoint already tried).
//! - `reload/*`: what a hot reload costs for a realistic config (100 routes, 20
//!   upstreams of 6 endpoints with health checks): parse + validate (`from_str`),
//!   `Snapshot::build` carrying state over from the previous snapshot (the new one is
//!   dropped outside the timing), and both together (dropping the result included).
//!
//! - `auth/*`: a JWT policy's check of a request (`JwtAuth::verify`, keys from a JWKS
//!   file): the same token again (the verified-token cache: what a client's every
//!   request after its first costs) and a token never seen (the signature check), for
//!   RS256, ES256 and EdDSA.
//!
//! Run: `cargo bench -p gateway --bench hot_paths` (add `-- --quick` for a fast pass,
//! or `-- route_match` to run one group).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::hint::black_box;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use gateway_lib::balance::{HashKey, Tier, UpstreamRt};
use gateway_lib::routing::{MatchRequest, Router};
use gateway_lib::snapshot::Snapshot;
use http::{HeaderMap, HeaderValue, Method};
use tollgate_config::gateway::{from_str, EnvOverrides, Loaded};

const ROUTES: usize = 1_000;

fn env() -> EnvOverrides {
    EnvOverrides {
        zone: None,
        region: None,
    }
}

fn load(yaml: &str) -> Loaded {
    from_str(Path::new("bench.yaml"), yaml, &env()).expect("bench config is valid")
}

/// 1,000 routes, one upstream. Route `i` is, by `i % 4`:
/// 0. exact host `svc{i}.example.com` with path prefix `/api/v{i}/`;
/// 1. wildcard host `*.zone{i}.example.com`;
/// 2. no host, path prefix `/api/v{i}/`, methods GET/HEAD;
/// 3. exact host `svc{i}.example.com`, methods GET/POST, header `x-tenant: t{i}`.
///
/// The last route (999) is of kind 3.
fn routing_yaml() -> String {
    let mut y = String::from(
        "listeners: [{ name: http, address: 127.0.0.1:8080 }]\n\
         upstreams:\n  u: { endpoints: [{ address: 127.0.0.1:9000 }] }\n\
         routes:\n",
    );
    for i in 0..ROUTES {
        let m = match i % 4 {
            0 => format!("{{ host: svc{i}.example.com, path_prefix: /api/v{i}/ }}"),
            1 => format!("{{ host: \"*.zone{i}.example.com\" }}"),
            2 => format!("{{ path_prefix: /api/v{i}/, methods: [GET, HEAD] }}"),
            _ => format!(
                "{{ host: svc{i}.example.com, methods: [GET, POST], \
                 headers: [{{ name: x-tenant, exact: t{i} }}] }}"
            ),
        };
        writeln!(y, "  - {{ name: r{i}, upstream: u, match: {m} }}").unwrap();
    }
    y
}

fn bench_route_match(c: &mut Criterion) {
    let config = load(&routing_yaml()).config;
    assert_eq!(config.routes.len(), ROUTES);
    let routes = &config.routes;
    let router = Router::new(routes);

    let mut tenant = HeaderMap::new();
    tenant.insert("x-tenant", HeaderValue::from_static("t999"));
    let no_headers = HeaderMap::new();
    let get = Method::GET;

    let cases: [(&str, &str, &str, &HeaderMap, Option<&str>); 3] = [
        (
            "exact_host_last",
            "svc999.example.com",
            "/orders/42",
            &tenant,
            Some("r999"),
        ),
        // `.zone9.example.com` is the last of the shortest suffixes: scanned after the
        // 249 others.
        (
            "wildcard_host",
            "a.zone9.example.com",
            "/",
            &no_headers,
            Some("r9"),
        ),
        (
            "miss",
            "unknown.example.net",
            "/nothing/here",
            &no_headers,
            None,
        ),
    ];

    let mut g = c.benchmark_group("route_match/1000_routes");
    for (name, host, path, headers, want) in cases {
        let req = MatchRequest {
            host,
            path,
            query: None,
            method: &get,
            headers,
            client_ip: None,
        };
        let got = router.find(routes, &req).map(|i| routes[i].name.as_str());
        assert_eq!(got, want, "{name}");
        g.bench_function(name, |b| {
            b.iter(|| router.find(black_box(routes), black_box(&req)))
        });
    }
    g.finish();
}

/// Three upstreams, one per algorithm, each with 12 endpoints in 3 zones (4 per zone,
/// the gateway in `z1`), zone-aware.
fn balance_yaml() -> String {
    let endpoints = (1..=3)
        .flat_map(|zone| {
            (1..=4).map(move |host| {
                format!("{{ address: \"10.0.{zone}.{host}:8080\", zone: z{zone} }}")
            })
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut y = String::from(
        "zone: z1\n\
         listeners: [{ name: http, address: 127.0.0.1:8080 }]\n\
         routes: [{ name: r, upstream: round_robin }]\n\
         upstreams:\n",
    );
    for (name, balance) in [
        ("round_robin", "balance: round_robin"),
        ("least_request", "balance: least_request"),
        (
            "consistent_hash",
            "balance: consistent_hash, hash_on: { header: x-user }",
        ),
    ] {
        writeln!(
            y,
            "  {name}: {{ {balance}, zone_aware: {{ min_local_healthy: 50% }}, endpoints: [{endpoints}] }}"
        )
        .unwrap();
    }
    y
}

fn bench_pick(c: &mut Criterion) {
    let snapshot = Snapshot::build(load(&balance_yaml()), None).unwrap();
    // An endpoint in the local zone, as a retry after it failed would have.
    let tried: [SocketAddr; 1] = ["10.0.1.1:8080".parse().unwrap()];

    let mut g = c.benchmark_group("pick/12_endpoints_3_zones");
    for algo in ["round_robin", "least_request", "consistent_hash"] {
        let up: &Arc<UpstreamRt> = &snapshot.upstreams[algo];
        assert_eq!(up.set.load().members.len(), 12);
        let key = if algo == "consistent_hash" {
            HashKey::Bytes(b"user-1234567")
        } else {
            HashKey::None
        };
        let first = up.pick(key, &[], None).expect("an endpoint");
        assert!(!first.panic, "{algo}: every endpoint is healthy");
        assert_eq!(
            first.tier,
            Tier::LocalZone,
            "{algo}: zone-aware stays local"
        );
        for _ in 0..16 {
            let p = up.pick(key, &tried, None).expect("an endpoint");
            assert_ne!(
                p.address, tried[0],
                "{algo}: a retry avoids the tried endpoint"
            );
        }
        g.bench_function(format!("{algo}/first_try"), |b| {
            b.iter(|| up.pick(black_box(key), black_box(&[]), None))
        });
        g.bench_function(format!("{algo}/retry"), |b| {
            b.iter(|| up.pick(black_box(key), black_box(&tried), None))
        });
    }
    g.finish();
}

/// 100 routes over 20 upstreams of 6 endpoints (3 zones), with health checks and
/// outlier detection; a mix of the three algorithms, some zone-aware.
fn reload_yaml() -> String {
    let mut y = String::from(
        "zone: z1\n\
         region: r1\n\
         listeners:\n  - { name: http, address: 0.0.0.0:8080 }\n  - { name: alt, address: 0.0.0.0:8081, h2c: true }\n\
         admin: { address: 127.0.0.1:9901 }\n\
         server: { shutdown: { drain_delay: 1s, grace_period: 10s } }\n\
         routes:\n",
    );
    for i in 0..100 {
        let up = i % 20;
        let m = match i % 5 {
            0 => format!("{{ host: svc{i}.example.com, path_prefix: /api/v{i}/ }}"),
            1 => format!("{{ host: \"*.zone{i}.example.com\" }}"),
            2 => format!("{{ path_prefix: /api/v{i}/, methods: [GET, HEAD] }}"),
            3 => format!("{{ host: svc{i}.example.com, path_exact: /health/{i} }}"),
            _ => format!(
                "{{ host: svc{i}.example.com, methods: [GET, POST], \
                 headers: [{{ name: x-tenant, regex: \"^t{i}-\" }}] }}"
            ),
        };
        writeln!(
            y,
            "  - name: r{i}\n    match: {m}\n    upstream: u{up}\n    \
             timeouts: {{ connect: 250ms, read: 5s }}\n    \
             retry: {{ attempts: 3, on: [connect-failure, reset, 502, 503] }}"
        )
        .unwrap();
    }
    y.push_str("upstreams:\n");
    for u in 0..20 {
        let balance = match u % 3 {
            0 => "balance: round_robin",
            1 => "balance: least_request",
            _ => "balance: consistent_hash\n    hash_on: { header: x-user }",
        };
        writeln!(y, "  u{u}:\n    {balance}").unwrap();
        if u % 2 == 0 {
            y.push_str("    zone_aware: { min_local_healthy: 50% }\n");
        }
        y.push_str("    endpoints:\n");
        for e in 0..6 {
            let zone = e % 3 + 1;
            writeln!(
                y,
                "      - {{ address: \"10.{u}.{zone}.{e}:8080\", zone: z{zone}, weight: {} }}",
                e % 2 + 1
            )
            .unwrap();
        }
        y.push_str(
            "    health_check: { path: /healthz, interval: 1s, timeout: 300ms, healthy: 2, unhealthy: 2, expect: [2xx] }\n\
             \x20   outlier_detection: { consecutive_failures: 3, eject_for: 10s, max_ejected: 50% }\n",
        );
    }
    y
}

fn bench_reload(c: &mut Criterion) {
    let yaml = reload_yaml();
    let loaded = load(&yaml);
    assert_eq!(loaded.config.routes.len(), 100);
    assert_eq!(loaded.config.upstreams.len(), 20);
    assert!(loaded
        .config
        .upstreams
        .values()
        .all(|u| u.endpoints.len() == 6 && u.health_check.is_some()));
    let previous = Snapshot::build(loaded.clone(), None).unwrap();

    let mut g = c.benchmark_group("reload/100_routes_20_upstreams");
    g.bench_function("from_str", |b| {
        b.iter(|| from_str(Path::new("bench.yaml"), black_box(&yaml), &env()))
    });
    g.bench_function("snapshot_build", |b| {
        b.iter_batched(
            || loaded.clone(),
            |l| Snapshot::build(l, Some(black_box(&previous))),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("from_str+snapshot_build", |b| {
        b.iter(|| {
            let l = from_str(Path::new("bench.yaml"), black_box(&yaml), &env()).unwrap();
            Snapshot::build(l, Some(black_box(&previous)))
        })
    });
    g.finish();
}

/// Poll a future that never waits (a JWT check with its key at hand) to its end.
fn ready<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("the check waited: the key should be at hand"),
    }
}

fn bench_auth(c: &mut Criterion) {
    use backends_demo::auth::{jwks, now, SigningKey};
    use gateway_lib::auth::jwks::KeySet;
    use gateway_lib::auth::jwt::JwtAuth;
    use jsonwebtoken::Algorithm;
    use pingora_http::RequestHeader;

    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<SigningKey> = [
        ("rs", Algorithm::RS256),
        ("es", Algorithm::ES256),
        ("ed", Algorithm::EdDSA),
    ]
    .iter()
    .map(|(kid, alg)| SigningKey::generate(kid, *alg).unwrap())
    .collect();
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, jwks(&keys.iter().collect::<Vec<_>>())).unwrap();
    let policy = |cache: usize| {
        let yaml = format!(
            "listeners: [{{ name: h, address: 127.0.0.1:1 }}]\nupstreams: {{ u: {{ endpoints: [{{ address: 127.0.0.1:2 }}] }} }}\nauth:\n  jwt:\n    p:\n      issuer: https://idp.test\n      audiences: [api]\n      required_scopes: [read]\n      jwks: {{ file: {} }}\n      claims_to_headers: {{ sub: x-user-id }}\n      cache_entries: {cache}\nroutes: [{{ name: r, upstream: u, auth: {{ jwt: p }} }}]\n",
            file.display()
        );
        let p = load(&yaml).config.auth.jwt["p"].clone();
        JwtAuth::new(p.clone(), KeySet::get(&p.jwks).unwrap())
    };
    let claims = |n: u64| {
        serde_json::json!({ "iss": "https://idp.test", "aud": "api", "sub": format!("user-{n}"),
                            "scope": "read write", "exp": now() + 3600 })
    };
    let request = |token: &str| {
        let mut r = RequestHeader::build("GET", b"/api/orders", None).unwrap();
        r.insert_header("authorization", format!("Bearer {token}"))
            .unwrap();
        r
    };
    let mut g = c.benchmark_group("auth/jwt");
    let cached = policy(10_000);
    for key in &keys {
        let req = request(&key.sign(&claims(0)).unwrap());
        ready(cached.verify(&req)).unwrap().unwrap();
        g.bench_function(format!("{:?}/cached", key.alg), |b| {
            b.iter(|| ready(cached.verify(black_box(&req))).unwrap())
        });
    }
    let uncached = policy(0);
    for key in &keys {
        // A new token each time would mostly measure signing; the same token with the
        // cache off measures exactly the check of a token never seen.
        let req = request(&key.sign(&claims(1)).unwrap());
        assert!(!ready(uncached.verify(&req)).unwrap().unwrap().1);
        g.bench_function(format!("{:?}/first_sight", key.alg), |b| {
            b.iter(|| ready(uncached.verify(black_box(&req))).unwrap())
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    targets = bench_route_match, bench_pick, bench_reload, bench_auth
}
criterion_main!(benches);
