#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use super::*;

fn load_str(src: &str) -> Result<Loaded, ConfigError> {
    from_str(
        Path::new("gw.yaml"),
        src,
        &EnvOverrides {
            zone: None,
            region: None,
        },
    )
}

const GOOD: &str = r#"
zone: us-east-1a
region: us-east-1
listeners:
  - { name: http, address: 127.0.0.1:8080 }
admin: { address: 127.0.0.1:9901 }
routes:
  - name: api
    match: { host: "*.example.com", path_prefix: /v1/, methods: [GET, post], headers: [{ name: x-canary, exact: "yes" }] }
    split: [{ upstream: api, weight: 90 }, { upstream: api-v2, weight: 10 }]
    timeouts: { connect: 250ms, read: 5s, request: 10s }
    retry: { attempts: 3, on: [connect-failure, 502, 5xx] }
  - name: web
    upstream: api
upstreams:
  api:
    balance: consistent_hash
    hash_on: { header: x-user }
    zone_aware: { min_local_healthy: 60% }
    endpoints:
      - { address: 127.0.1.1:9000, zone: us-east-1a }
      - { address: 127.0.2.1:9000, zone: us-east-1b, weight: 3 }
    health_check: { path: /healthz, interval: 1s, timeout: 200ms, healthy: 1, unhealthy: 2, expect: ["2xx", "404"] }
    outlier_detection: { consecutive_failures: 3, eject_for: 10s, max_ejected: 30% }
  api-v2:
    balance: least_request
    discover: { dns: "localhost:9000", every: 2s, zone: us-east-1a }
"#;

#[test]
fn a_full_config_validates_into_runtime_types() {
    let c = load_str(GOOD).unwrap().config;
    assert_eq!(c.zone.as_deref(), Some("us-east-1a"));
    assert_eq!(c.listeners[0].address.port(), 8080);
    let api = &c.routes[0];
    assert_eq!(
        api.matcher.host,
        Some(HostMatch::Suffix(".example.com".into()))
    );
    assert_eq!(api.matcher.path, PathMatch::Prefix("/v1/".into()));
    assert_eq!(
        api.matcher.methods,
        vec![http::Method::GET, http::Method::POST]
    );
    assert_eq!(api.connect_timeout, std::time::Duration::from_millis(250));
    assert_eq!(api.retry.attempts, 3);
    assert!(api.retry.on_connect_failure && api.retry.on_5xx);
    assert_eq!(api.retry.statuses, vec![502]);
    let RouteAction::Forward(targets) = &api.action else {
        panic!("api forwards")
    };
    assert_eq!(targets.len(), 2);
    // Defaults: connect-failure retried once.
    assert_eq!(c.routes[1].retry, RetryPolicy::default());
    let up = &c.upstreams["api"];
    assert_eq!(
        up.balance,
        Balance::ConsistentHash(HashOn::Header(http::HeaderName::from_static("x-user")))
    );
    assert_eq!(up.zone_aware.unwrap().min_local_healthy, 0.6);
    assert_eq!(up.endpoints[1].weight, 3);
    let hc = up.health_check.as_ref().unwrap();
    assert!(hc.accepts(204) && hc.accepts(404) && !hc.accepts(301));
    assert_eq!(up.outlier.as_ref().unwrap().max_ejected, 0.3);
    let d = c.upstreams["api-v2"].discover.as_ref().unwrap();
    assert_eq!(
        d.source,
        crate::gateway::DiscoverSource::Dns {
            host: "localhost".into(),
            port: 9000
        }
    );
}

#[test]
fn kubernetes_discovery_is_checked() {
    let base =
        "listeners: [{ name: a, address: \"127.0.0.1:1\" }]\nroutes: [{ name: r, upstream: u }]\n";
    let ok = format!(
        "{base}upstreams:\n  u:\n    discover: {{ kubernetes: {{ service: web, namespace: shop, port: http, kubeconfig: kube.yaml }} }}\n"
    );
    let l = from_str(Path::new("/etc/gw/gw.yaml"), &ok, &EnvOverrides::default()).unwrap();
    let d = l.config.upstreams["u"].discover.clone().unwrap();
    assert_eq!(
        d.source,
        crate::gateway::DiscoverSource::Kubernetes(crate::gateway::KubernetesDiscover {
            service: "web".into(),
            namespace: Some("shop".into()),
            port: Some(crate::gateway::PortRef::Name("http".into())),
            kubeconfig: Some("/etc/gw/kube.yaml".into()),
        })
    );
    let numbered = ok.replace("port: http", "port: 8080");
    let l = from_str(Path::new("gw.yaml"), &numbered, &EnvOverrides::default()).unwrap();
    let d = l.config.upstreams["u"].discover.clone().unwrap();
    assert!(matches!(
        d.source,
        crate::gateway::DiscoverSource::Kubernetes(k) if k.port == Some(crate::gateway::PortRef::Number(8080))
    ));
    for (bad, field) in [
        (
            ok.replace("service: web", "service: Web_1"),
            "discover.kubernetes.service",
        ),
        (
            ok.replace("namespace: shop", "namespace: \"\""),
            "discover.kubernetes.namespace",
        ),
        (
            ok.replace("port: http", "port: 0"),
            "discover.kubernetes.port",
        ),
        (
            ok.replace("discover: {", "discover: { dns: \"web:80\","),
            "exactly one of `dns` and `kubernetes`",
        ),
    ] {
        let e = from_str(Path::new("gw.yaml"), &bad, &EnvOverrides::default()).unwrap_err();
        assert!(e.to_string().contains(field), "{bad}\n{e}");
    }
}

#[test]
fn env_overrides_zone() {
    let l = from_str(
        Path::new("gw.yaml"),
        GOOD,
        &EnvOverrides {
            zone: Some("eu-west-1c".into()),
            region: None,
        },
    )
    .unwrap();
    assert_eq!(l.config.zone.as_deref(), Some("eu-west-1c"));
}

fn err_of(src: &str) -> String {
    load_str(src).unwrap_err().to_string()
}

#[test]
fn unknown_field_names_line_and_path() {
    let e = err_of("listeners:\n  - name: http\n    address: 127.0.0.1:1\n    adress: x\n");
    assert!(e.starts_with("gw.yaml:4:"), "{e}");
    assert!(e.contains("listeners[0]"), "{e}");
    assert!(e.contains("unknown field `adress`"), "{e}");
}

#[test]
fn broken_yaml_names_line() {
    let e = err_of("listeners:\n  - name: http\n   address: [\n");
    assert!(e.starts_with("gw.yaml:"), "{e}");
    assert!(e.contains(':'), "{e}");
}

#[test]
fn undefined_upstream_points_at_the_route_field() {
    let src = "listeners: [{ name: h, address: 127.0.0.1:1 }]\nroutes:\n  - name: r\n    upstream: nope\nupstreams:\n  a: { endpoints: [{ address: 127.0.0.1:2 }] }\n";
    let e = err_of(src);
    assert!(
        e.starts_with(
            "gw.yaml:4:5: routes[0].upstream: upstream \"nope\" is not defined (defined: a)"
        ),
        "{e}"
    );
}

#[test]
fn bad_units_and_values_are_reported_with_their_field() {
    let e = err_of(
        "listeners: [{ name: h, address: 127.0.0.1:1 }]\nroutes:\n  - name: r\n    upstream: a\n    timeouts: { connect: 5 parsecs }\nupstreams:\n  a: { endpoints: [{ address: 127.0.0.1:2 }] }\n",
    );
    assert!(
        e.contains("routes[0].timeouts.connect: invalid duration"),
        "{e}"
    );
    assert_eq!(e.matches("routes[0]").count(), 1, "path printed once: {e}");

    let e = err_of("listeners: [{ name: h, address: localhost }]\n");
    assert!(e.contains("listeners[0].address"), "{e}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let src = r#"
listeners: [{ name: h, address: 127.0.0.1:1 }, { name: h, address: 127.0.0.1:1 }]
routes:
  - { name: r, upstream: a, match: { path_prefix: nope, host: "bad host" } }
  - { name: r, upstream: a, retry: { attempts: 0, on: [5xx, 404] } }
upstreams:
  a:
    balance: consistent_hash
    endpoints: [{ address: 127.0.0.1:2, weight: 0 }, { address: 127.0.0.1:2 }]
    zone_aware: {}
"#;
    let err = load_str(src).unwrap_err();
    let fields: Vec<_> = err.problems.iter().map(|p| p.field.as_str()).collect();
    for want in [
        "listeners[1].name",
        "listeners[1].address",
        "routes[0].match.host",
        "routes[0].match.path_prefix",
        "routes[1].name",
        "routes[1].retry.attempts",
        "routes[1].retry.on[1]",
        "upstreams.a.hash_on",
        "upstreams.a.zone_aware",
        "upstreams.a.endpoints[0].weight",
        "upstreams.a.endpoints[1].address",
    ] {
        assert!(fields.contains(&want), "missing {want} in {fields:?}");
    }
    assert!(err.problems.iter().all(|p| p.position.is_some()), "{err}");
}

#[test]
fn schema_mentions_the_main_sections() {
    let s = json_schema();
    for k in [
        "listeners",
        "routes",
        "upstreams",
        "health_check",
        "zone_aware",
    ] {
        assert!(s.contains(k), "{k}");
    }
}

#[test]
fn schema_lists_the_valid_values_of_enum_fields() {
    let schema: serde_json::Value = serde_json::from_str(&json_schema()).unwrap();
    // Every string a definition allows, whether written as `enum` or `oneOf` of `const`s.
    let values = |def: &str| -> Vec<String> {
        let d = &schema["$defs"][def];
        let mut out: Vec<String> = d["enum"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(
                d["oneOf"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| &v["const"]),
            )
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        out.sort();
        out
    };
    assert_eq!(values("TlsVersion"), ["1.2", "1.3"]);
    assert_eq!(values("ClientAuthMode"), ["optional", "required"]);
    assert_eq!(
        values("RetryCondition"),
        ["5xx", "connect-failure", "reset", "timeout"]
    );
}

#[test]
fn proxy_protocol_and_trusted_proxies_are_parsed() {
    let src = "listeners:\n  - { name: edge, address: 127.0.0.1:8080, proxy_protocol: true, trusted_proxies: [10.0.0.0/8, \"192.0.2.7\", \"2001:db8::/32\"] }\n";
    let c = load_str(src).unwrap().config;
    let l = &c.listeners[0];
    assert!(l.proxy_protocol);
    let nets: Vec<String> = l.trusted_proxies.iter().map(|n| n.to_string()).collect();
    assert_eq!(nets, ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]);
    let plain = load_str("listeners:\n  - { name: edge, address: 127.0.0.1:8080 }\n")
        .unwrap()
        .config;
    assert!(!plain.listeners[0].proxy_protocol);
    assert!(plain.listeners[0].trusted_proxies.is_empty());
}

#[test]
fn bad_trusted_proxies_are_reported_with_their_index() {
    let e = err_of(
        "listeners:\n  - { name: edge, address: 127.0.0.1:8080, trusted_proxies: [10.0.0.0/8, 10.1.2.3/8, nope] }\n",
    );
    assert!(
        e.contains("listeners[0].trusted_proxies[1]") && e.contains("did you mean 10.0.0.0/8"),
        "{e}"
    );
    assert!(
        e.contains("listeners[0].trusted_proxies[2]") && e.contains("not a CIDR"),
        "{e}"
    );
}

#[test]
fn work_stealing_is_off_unless_asked() {
    let base = "listeners:\n  - { name: edge, address: 127.0.0.1:8080 }\n";
    assert!(!load_str(base).unwrap().config.work_stealing);
    let on = format!("{base}server: {{ work_stealing: true }}\n");
    assert!(load_str(&on).unwrap().config.work_stealing);
    let e = err_of(&format!("{base}server: {{ work_stealing: maybe }}\n"));
    assert!(e.contains("work_stealing"), "{e}");
}

const TLS_LISTENER: &str = "listeners:\n  - name: https\n    address: 127.0.0.1:8443\n    tls:\n      certificates: [{ cert: a.pem, key: a.key }]\n";

#[test]
fn tls_version_and_client_auth_mode_parse_as_written() {
    for (written, tls13) in [
        ("\"1.2\"", false),
        ("\"1.3\"", true),
        ("1.2", false),
        ("1.3", true),
        ("'1.3'", true),
    ] {
        let src = format!("{TLS_LISTENER}      min_version: {written}\n");
        let c = load_str(&src).unwrap().config;
        assert_eq!(
            c.listeners[0].tls.as_ref().unwrap().min_tls13,
            tls13,
            "{written}"
        );
    }
    let c = load_str(TLS_LISTENER).unwrap().config;
    assert!(
        !c.listeners[0].tls.as_ref().unwrap().min_tls13,
        "default 1.2"
    );

    for (mode, required) in [("required", true), ("optional", false)] {
        let src = format!("{TLS_LISTENER}      client_auth: {{ mode: {mode}, ca: ca.pem }}\n");
        let c = load_str(&src).unwrap().config;
        let auth = c.listeners[0].tls.as_ref().unwrap().client_auth.clone();
        assert_eq!(auth.unwrap().required, required, "{mode}");
    }
    let src = format!("{TLS_LISTENER}      client_auth: {{ ca: ca.pem }}\n");
    let c = load_str(&src).unwrap().config;
    let auth = c.listeners[0].tls.as_ref().unwrap().client_auth.clone();
    assert!(auth.unwrap().required, "default required");
}

#[test]
fn a_bad_tls_version_names_line_field_and_valid_values() {
    let e = err_of(&format!("{TLS_LISTENER}      min_version: \"1.1\"\n"));
    assert_eq!(
        e,
        "gw.yaml:6:20: listeners[0].tls.min_version: unknown variant `1.1`, expected `1.2` or `1.3`"
    );
}

#[test]
fn a_bad_client_auth_mode_names_line_field_and_valid_values() {
    let e = err_of(&format!(
        "{TLS_LISTENER}      client_auth: {{ mode: sometimes, ca: ca.pem }}\n"
    ));
    assert_eq!(
        e,
        "gw.yaml:6:28: listeners[0].tls.client_auth.mode: unknown variant `sometimes`, expected `required` or `optional`"
    );
}

#[test]
fn a_bad_retry_condition_names_line_field_and_valid_values() {
    let src = "listeners: [{ name: h, address: 127.0.0.1:1 }]\nroutes:\n  - name: r\n    upstream: a\n    retry: { attempts: 2, on: [connect-failure, teapot] }\nupstreams:\n  a: { endpoints: [{ address: 127.0.0.1:2 }] }\n";
    assert_eq!(
        err_of(src),
        "gw.yaml:5:49: routes[0].retry.on[1]: unknown retry condition \"teapot\" (expected connect-failure, reset, timeout, 5xx or a status code)"
    );
}

/// Regression: a file without a `server:` section got `ServerFile::default()`, whose
/// derived `watch_config` was false, so its changes were never picked up (the
/// documented default is true).
#[test]
fn server_defaults_are_the_same_with_or_without_the_section() {
    let base = "listeners: [{ name: h, address: 127.0.0.1:1 }]\n";
    let without = load_str(base).unwrap().config;
    let with = load_str(&format!("{base}server: {{}}\n")).unwrap().config;
    assert!(without.watch_config && with.watch_config);
    assert!(!without.preserve_header_case && !with.preserve_header_case);
    assert_eq!(without.drain_delay, with.drain_delay);
    assert_eq!(
        without.max_request_header_bytes,
        with.max_request_header_bytes
    );
}

#[test]
fn route_concurrency_limits_are_checked() {
    let base = "listeners: [{ name: a, address: \"127.0.0.1:1\" }]\nupstreams: { u: { endpoints: [{ address: \"127.0.0.1:2\" }] } }\n";
    let ok = format!(
        "{base}routes: [{{ name: r, upstream: u, concurrency: {{ max: 10, queue: 5 }} }}]\n"
    );
    let l = from_str(Path::new("gw.yaml"), &ok, &EnvOverrides::default()).unwrap();
    let c = l.config.routes[0].concurrency.unwrap();
    assert_eq!(
        (c.max, c.queue, c.queue_timeout),
        (10, 5, std::time::Duration::from_secs(1))
    );
    for (bad, field) in [
        (ok.replace("max: 10", "max: 0"), "concurrency.max"),
        (
            ok.replace("queue: 5", "queue: 5, queue_timeout: 0"),
            "concurrency.queue_timeout",
        ),
        (
            ok.replace("queue: 5", "queue: 5, queue_timeout: 2m"),
            "concurrency.queue_timeout",
        ),
    ] {
        let e = from_str(Path::new("gw.yaml"), &bad, &EnvOverrides::default()).unwrap_err();
        assert!(e.to_string().contains(field), "{bad}\n{e}");
    }
}

const MINIMAL: &str = r#"
listeners: [{ name: http, address: 127.0.0.1:8080 }]
routes: [{ name: orders, upstream: api }]
upstreams: { api: { endpoints: [{ address: 127.0.0.1:9000 }] } }
"#;

/// `MINIMAL` with `extra` YAML appended to the route (and `top` at the top level).
fn with_route(extra: &str, top: &str) -> Result<Loaded, ConfigError> {
    let src = MINIMAL.replace(
        "routes: [{ name: orders, upstream: api }]",
        &format!("routes: [{{ name: orders, upstream: api {extra} }}]"),
    );
    load_str(&format!("{top}\n{src}"))
}

#[test]
fn idempotency_needs_redis_and_says_what_is_wrong() {
    let e = with_route(", idempotency: {}", "").unwrap_err().to_string();
    assert!(
        e.contains("routes[0].idempotency") && e.contains("needs a top-level `redis"),
        "{e}"
    );
    let redis = "redis: { url: redis://127.0.0.1:6379 }";
    let ok = with_route(", idempotency: {}", redis).unwrap();
    let i = ok.config.routes[0].idempotency.clone().unwrap();
    assert_eq!(i.methods, vec![http::Method::POST, http::Method::PATCH]);
    assert_eq!(
        i.identity,
        vec![
            KeyPart::ClientIp,
            KeyPart::Header(http::HeaderName::from_static("authorization"))
        ]
    );
    assert_eq!(i.lock_timeout, std::time::Duration::from_secs(60));
    for (bad, field, why) in [
        ("{ ttl: 0s }", "idempotency.ttl", "between 1s and 30 days"),
        (
            "{ methods: [] }",
            "idempotency.methods",
            "at least one method",
        ),
        (
            "{ methods: [POST, post] }",
            "idempotency.methods[1]",
            "listed twice",
        ),
        (
            "{ identity: [path] }",
            "idempotency.identity[0]",
            "not who asks",
        ),
        (
            "{ identity: [nope] }",
            "idempotency.identity[0]",
            "unknown key",
        ),
        (
            "{ max_response_bytes: 0 }",
            "idempotency.max_response_bytes",
            "between 1",
        ),
        ("{ in_flight: maybe }", "in_flight", "unknown variant"),
    ] {
        let e = with_route(&format!(", idempotency: {bad}"), redis)
            .unwrap_err()
            .to_string();
        assert!(e.contains(field) && e.contains(why), "{bad}: {e}");
    }
}

#[test]
fn faults_and_upstream_limits_are_checked() {
    let e = with_route(", fault: { abort_percent: 10% }", "")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("routes[0].fault.abort_percent: needs `abort_status`"),
        "{e}"
    );
    for (bad, why) in [
        (
            "adaptive_concurrency: { min_limit: 0 }",
            "min_limit <= max_limit",
        ),
        (
            "adaptive_concurrency: { min_limit: 50, max_limit: 10 }",
            "min_limit <= max_limit",
        ),
        (
            "adaptive_concurrency: { interval: 1ms }",
            "between 10ms and 60s",
        ),
        (
            "adaptive_concurrency: { interval: 1s, min_rtt_interval: 5s }",
            "ten intervals",
        ),
        ("concurrency: { max: 0 }", "upstreams.api.concurrency.max"),
    ] {
        let src = MINIMAL.replace(
            "address: 127.0.0.1:9000 }] }",
            &format!("address: 127.0.0.1:9000 }}], {bad} }}"),
        );
        let e = load_str(&src).unwrap_err().to_string();
        assert!(e.contains(why), "{bad}: {e}");
    }
}

#[test]
fn a_redis_ca_needs_tls_and_a_readable_pem() {
    let e = with_route("", "redis: { url: redis://127.0.0.1:6379, ca: ca.pem }")
        .unwrap_err()
        .to_string();
    assert!(e.contains("redis.ca") && e.contains("rediss://"), "{e}");
    let e = with_route(
        "",
        "redis: { url: rediss://127.0.0.1:6379, ca: /nonexistent/ca.pem }",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("redis.ca") && e.contains("/nonexistent/ca.pem"),
        "{e}"
    );
}

#[test]
fn sliding_windows_have_no_burst_and_bounded_counts() {
    for (policy, why) in [
        (
            "{ rate: 500/5m, algorithm: sliding_window, burst: 10 }",
            "has no burst",
        ),
        (
            "{ rate: 3000000/h, algorithm: sliding_window }",
            "at most 2000000",
        ),
        ("{ rate: 5/5m, algorithm: leaky }", "unknown variant"),
    ] {
        let e = with_route(
            ", rate_limit: p",
            &format!("rate_limits: {{ p: {policy} }}"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("rate_limits.p") && e.contains(why),
            "{policy}: {e}"
        );
    }
    let ok = with_route(
        ", rate_limit: p",
        "rate_limits: { p: { rate: 500/5m, algorithm: sliding_window } }",
    )
    .unwrap();
    let p = &ok.config.rate_limits["p"];
    assert_eq!((p.rate.count, p.rate.per.as_secs()), (500, 300));
}

const AUTH_BASE: &str = "listeners: [{ name: http, address: 127.0.0.1:8080 }]\nupstreams:\n  app: { endpoints: [{ address: 127.0.0.1:9000 }] }\n";

#[test]
fn auth_policies_validate_into_runtime_types() {
    let src = format!(
        "{AUTH_BASE}auth:\n  jwt:\n    api:\n      issuer: https://idp.example.com\n      jwks: {{ url: https://idp.example.com/jwks.json, min_refresh: 5s }}\n      audiences: [api]\n      algorithms: [RS256, EdDSA]\n      required_scopes: [read]\n      claims: [{{ claim: realm.roles, contains: admin }}, {{ claim: tenant, in: [a, b] }}]\n      tokens: [{{ cookie: session }}, {{ header: x-token }}]\n      claims_to_headers: {{ sub: X-User-Id }}\n  forward:\n    svc: {{ url: 'http://127.0.0.1:9100/check', response_headers: [x-user], cache_ttl: 5s }}\nrate_limits:\n  per_user: {{ rate: 10/s, key: claim:sub }}\nroutes:\n  - {{ name: a, upstream: app, auth: {{ jwt: api }}, rate_limit: per_user }}\n  - {{ name: b, upstream: app, auth: {{ forward: svc }} }}\n"
    );
    let cfg = load_str(&src).unwrap().config;
    let api = &cfg.auth.jwt["api"];
    assert_eq!(
        api.algorithms,
        vec![auth::JwtAlgorithm::RS256, auth::JwtAlgorithm::EdDSA]
    );
    assert_eq!(api.jwks.min_refresh, std::time::Duration::from_secs(5));
    assert_eq!(api.claims[0].claim, vec!["realm", "roles"]);
    assert_eq!(api.tokens[0], auth::TokenSource::Cookie("session".into()));
    assert_eq!(api.claims_to_headers[0].1.as_str(), "x-user-id");
    assert_eq!(
        cfg.auth.forward["svc"].cache_key.len(),
        2,
        "defaults to the sent headers"
    );
    assert_eq!(cfg.routes[0].auth, Some(auth::RouteAuth::Jwt("api".into())));
    assert_eq!(
        cfg.routes[1].auth,
        Some(auth::RouteAuth::Forward("svc".into()))
    );
}

#[test]
fn auth_mistakes_are_refused_with_their_field() {
    let jwt = |body: &str| {
        err_of(&format!(
            "{AUTH_BASE}auth:\n  jwt:\n    p:\n{body}routes: [{{ name: r, upstream: app, auth: {{ jwt: p }} }}]\n"
        ))
    };
    let e = jwt("      jwks: { file: k.json }\n      algorithms: [HS256, none, RS999]\n");
    assert!(
        e.contains("auth.jwt.p.algorithms[0]") && e.contains("algorithm confusion"),
        "{e}"
    );
    assert!(
        e.contains("auth.jwt.p.algorithms[1]") && e.contains("unsigned"),
        "{e}"
    );
    assert!(e.contains("unknown algorithm \"RS999\""), "{e}");
    let e = jwt("      jwks: { file: k.json, url: 'https://x/jwks' }\n");
    assert!(
        e.contains("auth.jwt.p.jwks") && e.contains("exactly one"),
        "{e}"
    );
    let e = jwt("      jwks: { discovery: true }\n");
    assert!(e.contains("auth.jwt.p.issuer"), "{e}");
    let e = jwt("      jwks: { url: 'ftp://x/jwks' }\n");
    assert!(e.contains("auth.jwt.p.jwks.url"), "{e}");
    let e = jwt("      jwks: { file: k.json }\n      claims_to_headers: { sub: content-length }\n");
    assert!(e.contains("claims_to_headers.sub"), "{e}");
    let e =
        jwt("      jwks: { file: k.json }\n      claims: [{ claim: a, equals: x, contains: y }]\n");
    assert!(e.contains("auth.jwt.p.claims[0]"), "{e}");

    let e = err_of(&format!(
        "{AUTH_BASE}routes: [{{ name: r, upstream: app, auth: {{ jwt: nope }} }}]\n"
    ));
    assert!(
        e.contains("routes[0].auth.jwt") && e.contains("not defined"),
        "{e}"
    );
    let e = err_of(&format!(
        "{AUTH_BASE}auth:\n  forward:\n    f: {{ url: 'http://127.0.0.1:1/' }}\nroutes: [{{ name: r, upstream: app, auth: {{ jwt: x, forward: f }} }}]\n"
    ));
    assert!(
        e.contains("routes[0].auth") && e.contains("exactly one"),
        "{e}"
    );
    // A limit keyed on claims needs a JWT policy on the route to have claims at all.
    let e = err_of(&format!(
        "{AUTH_BASE}rate_limits:\n  u: {{ rate: 1/s, key: claim:sub }}\nroutes: [{{ name: r, upstream: app, rate_limit: u }}]\n"
    ));
    assert!(
        e.contains("routes[0].rate_limit") && e.contains("keyed on claims"),
        "{e}"
    );
}
