#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use super::*;

const GOOD: &str = r#"
identity: { cert: tls.crt, key: tls.key, trust_bundle: /etc/mtls/ca.crt }
inbound:
  listen: 0.0.0.0:15001
  forward_to: 127.0.0.1:8080
  allow:
    - spiffe://cluster.local/ns/shop/sa/frontend
    - { id: spiffe://cluster.local/ns/ops/sa/admin, path_prefix: /admin }
outbound:
  payments:
    listen: 127.0.0.1:15101
    endpoints: [payments-0.payments:15001, "10.0.0.7:15001"]
    server_identity: spiffe://cluster.local/ns/shop/sa/payments
    timeout: 2s
    per_try_timeout: 500ms
    retry: { attempts: 3, backoff: 25ms..250ms, budget: 20%, on: [5xx, reset, connect-failure, 429] }
    circuit_breaker: { failure_rate: 50%, min_requests: 20, window: 10s, open_for: 5s, half_open_probes: 3, slow_call: 1s, slow_call_rate: 80% }
    max_concurrent: 100
admin: { address: 127.0.0.1:15000 }
"#;

#[test]
fn full_config_validates() {
    let c = from_str(Path::new("/etc/sidecar/s.yaml"), GOOD)
        .unwrap()
        .config;
    assert_eq!(c.identity.cert, Path::new("/etc/sidecar/tls.crt"));
    assert_eq!(c.identity.trust_bundle, Path::new("/etc/mtls/ca.crt"));
    let inb = c.inbound.as_ref().unwrap();
    assert!(inb.allows("spiffe://cluster.local/ns/shop/sa/frontend", "/x"));
    assert!(inb.allows("spiffe://cluster.local/ns/ops/sa/admin", "/admin/x"));
    assert!(!inb.allows("spiffe://cluster.local/ns/ops/sa/admin", "/orders"));
    assert!(!inb.allows("spiffe://evil/x", "/"));
    let d = &c.dependencies["payments"];
    assert_eq!(d.endpoints[0].host, "payments-0.payments");
    assert_eq!(d.per_try_timeout, Duration::from_millis(500));
    let r = d.retry.as_ref().unwrap();
    assert_eq!(
        (r.backoff_min, r.backoff_max),
        (Duration::from_millis(25), Duration::from_millis(250))
    );
    assert!(r.on_5xx && r.on_reset && r.on_connect_failure && !r.on_timeout);
    assert_eq!(r.statuses, vec![429]);
    let b = d.breaker.as_ref().unwrap();
    assert_eq!(b.slow_call_rate, Some(0.8));
    assert!(d.http2);
}

#[test]
fn problems_are_reported_with_fields() {
    let bad = r#"
identity: { cert: a, key: b, trust_bundle: c }
inbound: { listen: 127.0.0.1:1, forward_to: 127.0.0.1:2, allow: [frontend] }
outbound:
  x:
    endpoints: [nope]
    server_identity: payments
    retry: { backoff: 1s..10ms }
admin: { address: 127.0.0.1:1 }
"#;
    let err = from_str(Path::new("s.yaml"), bad).unwrap_err();
    let fields: Vec<_> = err.problems.iter().map(|p| p.field.as_str()).collect();
    for want in [
        "inbound.allow[0]",
        "inbound.listen",
        "outbound.x.listen",
        "outbound.x.endpoints[0]",
        "outbound.x.server_identity",
        "outbound.x.retry.backoff",
    ] {
        assert!(fields.contains(&want), "missing {want}: {err}");
    }
}

#[test]
fn unknown_fields_are_errors() {
    let e = from_str(
        Path::new("s.yaml"),
        "identity: { cert: a, key: b, trust_bundle: c, extra: 1 }\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("unknown field `extra`"), "{e}");
    assert!(e.starts_with("s.yaml:1:"), "{e}");
}

#[test]
fn a_bad_retry_condition_names_line_field_and_valid_values() {
    let src = "identity: { cert: a, key: b, trust_bundle: c }\nproxy: { listen: 127.0.0.1:3 }\noutbound:\n  x:\n    endpoints: [\"10.0.0.1:1\"]\n    server_identity: spiffe://td/x\n    retry: { on: [5xx, resets] }\n";
    let e = from_str(Path::new("s.yaml"), src).unwrap_err().to_string();
    assert_eq!(
        e,
        "s.yaml:7:24: outbound.x.retry.on[1]: unknown retry condition \"resets\" (expected connect-failure, reset, timeout, 5xx or a status code)"
    );
}

#[test]
fn addresses_and_outlier_detection_are_checked_as_in_the_gateway() {
    let src = "identity: { cert: a, key: b, trust_bundle: c }\nproxy: { listen: localhost:3 }\noutbound:\n  x:\n    endpoints: [\"10.0.0.1:1\"]\n    server_identity: spiffe://td/x\n    outlier_detection: { consecutive_failures: 0 }\n";
    let e = from_str(Path::new("s.yaml"), src).unwrap_err().to_string();
    assert!(
        e.contains("proxy.listen: \"localhost:3\" is not an IP:PORT address (e.g. 0.0.0.0:8080, [::1]:8080)"),
        "{e}"
    );
    assert!(
        e.contains("outbound.x.outlier_detection.consecutive_failures: must be at least 1"),
        "{e}"
    );
}

#[test]
fn app_protocol_defaults_to_auto_and_takes_http1_or_h2c() {
    let c = from_str(Path::new("s.yaml"), GOOD).unwrap().config;
    assert_eq!(c.inbound.unwrap().app_protocol, AppProtocol::Auto);
    for (written, want) in [
        ("http1", AppProtocol::Http1),
        ("h2c", AppProtocol::H2c),
        ("auto", AppProtocol::Auto),
    ] {
        let src = GOOD.replace(
            "  forward_to: 127.0.0.1:8080\n",
            &format!("  forward_to: 127.0.0.1:8080\n  app_protocol: {written}\n"),
        );
        let c = from_str(Path::new("s.yaml"), &src).unwrap().config;
        assert_eq!(c.inbound.unwrap().app_protocol, want, "{written}");
    }
}

#[test]
fn a_bad_app_protocol_names_line_field_and_valid_values() {
    let src = "identity: { cert: a, key: b, trust_bundle: c }\ninbound:\n  listen: 127.0.0.1:1\n  forward_to: 127.0.0.1:2\n  app_protocol: http2\n";
    let e = from_str(Path::new("s.yaml"), src).unwrap_err().to_string();
    assert!(e.starts_with("s.yaml:5:"), "{e}");
    assert!(e.contains("inbound.app_protocol"), "{e}");
    assert!(
        e.contains("unknown variant `http2`, expected one of `auto`, `http1`, `h2c`"),
        "{e}"
    );
}

#[test]
fn grpc_methods_are_checked_with_the_form_to_write() {
    let src = "identity: { cert: a, key: b, trust_bundle: c }\nproxy: { listen: 127.0.0.1:3 }\noutbound:\n  x:\n    endpoints: [\"10.0.0.1:1\"]\n    server_identity: spiffe://td/x\n    retry: { grpc_methods: [/shop.Orders/Get, shop.Orders/*] }\n";
    let e = from_str(Path::new("s.yaml"), src).unwrap_err().to_string();
    assert!(
        e.contains("outbound.x.retry.grpc_methods[1]: \"shop.Orders/*\" is not a gRPC method: write /package.Service/Method, or /package.Service/* for all its methods"),
        "{e}"
    );
    assert!(!e.contains("grpc_methods[0]"), "{e}");
    let ok = src.replace("shop.Orders/*", "/shop.Stock/*");
    let c = from_str(Path::new("s.yaml"), &ok).unwrap().config;
    let m = &c.dependencies["x"].retry.as_ref().unwrap().grpc_methods;
    assert!(m.matches("/shop.Orders/Get") && m.matches("/shop.Stock/Reserve"));
    assert!(!m.matches("/shop.Orders/Put"));
}

#[test]
fn upgrade_idle_timeouts_default_to_an_hour_and_are_checked() {
    let c = from_str(Path::new("s.yaml"), GOOD).unwrap().config;
    let hour = Duration::from_secs(3600);
    assert_eq!(c.inbound.as_ref().unwrap().upgrade_idle_timeout, hour);
    assert_eq!(c.dependencies["payments"].upgrade_idle_timeout, hour);

    let set = GOOD
        .replace(
            "  forward_to: 127.0.0.1:8080\n",
            "  forward_to: 127.0.0.1:8080\n  upgrade_idle_timeout: 10m\n",
        )
        .replace(
            "    max_concurrent: 100\n",
            "    max_concurrent: 100\n    upgrade_idle_timeout: 90s\n",
        );
    let c = from_str(Path::new("s.yaml"), &set).unwrap().config;
    assert_eq!(
        c.inbound.as_ref().unwrap().upgrade_idle_timeout,
        Duration::from_secs(600)
    );
    assert_eq!(
        c.dependencies["payments"].upgrade_idle_timeout,
        Duration::from_secs(90)
    );

    let zero = set.replace("10m", "0s").replace("90s", "0ms");
    let e = from_str(Path::new("s.yaml"), &zero)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("inbound.upgrade_idle_timeout: must be above 0"),
        "{e}"
    );
    assert!(
        e.contains("outbound.payments.upgrade_idle_timeout: must be above 0"),
        "{e}"
    );
    let junk = set.replace("90s", "forever");
    let e = from_str(Path::new("s.yaml"), &junk)
        .unwrap_err()
        .to_string();
    assert!(e.contains("outbound.payments.upgrade_idle_timeout"), "{e}");
}

const ZONED: &str = r#"
zone: us-east-1a
identity: { cert: a, key: b, trust_bundle: c }
proxy: { listen: 127.0.0.1:3 }
outbound:
  x:
    endpoints:
      - { address: "10.0.1.7:15001", zone: us-east-1a }
      - { address: payments.b:15001, zone: us-east-1b, region: us-east-1 }
      - "10.0.3.7:15001"
    server_identity: spiffe://td/x
    zone_aware: { min_local_healthy: 60% }
"#;

#[test]
fn endpoints_carry_zones_and_the_sidecar_knows_its_own() {
    let none = SidecarEnv::default();
    let c = from_str_with_env(Path::new("s.yaml"), ZONED, &none)
        .unwrap()
        .config;
    assert_eq!(c.zone.as_deref(), Some("us-east-1a"));
    let d = &c.dependencies["x"];
    assert_eq!(d.own_zone.as_deref(), Some("us-east-1a"));
    assert_eq!(d.zone_aware.unwrap().min_local_healthy, 0.6);
    let zones: Vec<_> = d.endpoints.iter().map(|e| e.zone.as_deref()).collect();
    assert_eq!(zones, [Some("us-east-1a"), Some("us-east-1b"), None]);
    assert_eq!(d.endpoints[1].host, "payments.b");
    assert_eq!(d.endpoints[1].region.as_deref(), Some("us-east-1"));
    // SIDECAR_ZONE wins over the file, as GATEWAY_ZONE does in the gateway.
    let env = SidecarEnv {
        zone: Some("us-east-1b".into()),
        region: None,
    };
    let c = from_str_with_env(Path::new("s.yaml"), ZONED, &env)
        .unwrap()
        .config;
    assert_eq!(c.dependencies["x"].own_zone.as_deref(), Some("us-east-1b"));
    // Zone-aware is off unless asked for.
    let off = ZONED.replace("    zone_aware: { min_local_healthy: 60% }\n", "");
    let c = from_str_with_env(Path::new("s.yaml"), &off, &none)
        .unwrap()
        .config;
    assert_eq!(c.dependencies["x"].zone_aware, None);
}

#[test]
fn zone_aware_needs_both_zones_and_says_how() {
    let none = SidecarEnv::default();
    let no_own = ZONED.replace("zone: us-east-1a\nidentity", "identity");
    let e = from_str_with_env(Path::new("s.yaml"), &no_own, &none)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("outbound.x.zone_aware: needs the sidecar's own zone: set top-level `zone:` or SIDECAR_ZONE"),
        "{e}"
    );
    let env = SidecarEnv {
        zone: Some("us-east-1a".into()),
        region: None,
    };
    assert!(from_str_with_env(Path::new("s.yaml"), &no_own, &env).is_ok());

    let unzoned = "zone: a\nidentity: { cert: a, key: b, trust_bundle: c }\nproxy: { listen: 127.0.0.1:3 }\noutbound:\n  x:\n    endpoints: [\"10.0.0.1:1\", { address: \"10.0.0.2:1\" }]\n    server_identity: spiffe://td/x\n    zone_aware: {}\n";
    let e = from_str_with_env(Path::new("s.yaml"), unzoned, &none)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("outbound.x.zone_aware: no endpoint has a zone: write endpoints as { address: HOST:PORT, zone: ZONE }"),
        "{e}"
    );

    let typo = ZONED.replace("zone: us-east-1b, region", "zones: us-east-1b, region");
    let e = from_str_with_env(Path::new("s.yaml"), &typo, &none)
        .unwrap_err()
        .to_string();
    assert!(e.contains("outbound.x.endpoints"), "{e}");

    let blank = ZONED.replace("zone: us-east-1a\nidentity", "zone: \" \"\nidentity");
    let e = from_str_with_env(Path::new("s.yaml"), &blank, &none)
        .unwrap_err()
        .to_string();
    assert!(e.contains("zone: must not be empty"), "{e}");
}

fn with_hedge(hedge: &str) -> Result<Loaded, crate::error::ConfigError> {
    let src = format!(
        "identity: {{ cert: a, key: b, trust_bundle: c }}\nproxy: {{ listen: 127.0.0.1:3 }}\noutbound:\n  x:\n    endpoints: [\"10.0.0.1:1\"]\n    server_identity: spiffe://td/x\n    hedge_after: {hedge}\n"
    );
    from_str(Path::new("s.yaml"), &src)
}

fn hedge(hedge: &str) -> HedgeAfter {
    with_hedge(hedge).unwrap().config.dependencies["x"]
        .hedge_after
        .unwrap()
}

#[test]
fn hedge_after_takes_a_duration_a_percentile_or_both_bounds() {
    // The old form keeps working.
    assert_eq!(hedge("50ms"), HedgeAfter::Fixed(Duration::from_millis(50)));
    assert_eq!(
        hedge("p95"),
        HedgeAfter::Percentile {
            quantile: 0.95,
            min: Duration::from_millis(10),
            max: Duration::from_millis(500)
        }
    );
    let HedgeAfter::Percentile { quantile, min, max } =
        hedge("{ percentile: p99.9, min: 2ms, max: 1s }")
    else {
        panic!("not a percentile");
    };
    assert!((quantile - 0.999).abs() < 1e-9);
    assert_eq!(
        (min, max),
        (Duration::from_millis(2), Duration::from_secs(1))
    );
    assert_eq!(hedge("{ percentile: p50 }").label(), "p50");
    assert_eq!(hedge("50ms").label(), "50ms");
}

#[test]
fn a_bad_hedge_after_says_which_forms_are_accepted() {
    for (value, want) in [
        ("p42", "expected p50 .. p99.9"),
        ("p100", "expected p50 .. p99.9"),
        ("pfast", "is not a percentile"),
        ("fast", "such as p95"),
        ("50", "a duration (50ms), a percentile (p95)"),
        ("{ percentile: p95, floor: 1ms }", "unknown field `floor`"),
        ("{ min: 1ms }", "missing field `percentile`"),
    ] {
        let e = with_hedge(value).unwrap_err().to_string();
        assert!(e.contains(want), "{value}: {e}");
        assert!(e.starts_with("s.yaml:7:"), "{value}: {e}");
    }
    for (value, field) in [
        ("0s", "outbound.x.hedge_after"),
        (
            "{ percentile: p95, min: 1s, max: 10ms }",
            "outbound.x.hedge_after.min",
        ),
        (
            "{ percentile: p95, min: 0s, max: 0s }",
            "outbound.x.hedge_after.max",
        ),
    ] {
        let e = with_hedge(value).unwrap_err();
        let fields: Vec<_> = e.problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, [field], "{value}: {e}");
    }
}

const INTERCEPTED: &str = r#"
identity: { cert: a, key: b, trust_bundle: c }
intercept: { listen: 127.0.0.1:15006, listen_v6: "[::1]:15006", unknown: refuse }
outbound:
  payments:
    addresses: ["10.96.0.10:8080", "[fd00::10]:8080"]
    endpoints: ["10.0.0.1:15001"]
    server_identity: spiffe://td/payments
"#;

#[test]
fn intercepted_dependencies_need_no_listener_of_their_own() {
    let c = from_str(Path::new("s.yaml"), INTERCEPTED).unwrap().config;
    let i = c.intercept.unwrap();
    assert_eq!(i.listen.to_string(), "127.0.0.1:15006");
    assert_eq!(i.listen_v6.unwrap().to_string(), "[::1]:15006");
    assert!(i.refuse_unknown);
    let d = &c.dependencies["payments"];
    assert_eq!(d.listen, None);
    let addrs: Vec<String> = d.addresses.iter().map(|a| a.to_string()).collect();
    assert_eq!(addrs, ["10.96.0.10:8080", "[fd00::10]:8080"]);
    // Unknown destinations are passed through unless told otherwise.
    let passthrough = INTERCEPTED.replace(", unknown: refuse", "");
    let c = from_str(Path::new("s.yaml"), &passthrough).unwrap().config;
    assert!(!c.intercept.unwrap().refuse_unknown);
}

#[test]
fn intercept_problems_name_their_fields() {
    let err = |src: &str| {
        let e = from_str(Path::new("s.yaml"), src).unwrap_err();
        e.problems
            .iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let e = err(&INTERCEPTED.replace("\"[::1]:15006\"", "\"[::1]:15007\""));
    assert!(
        e.contains("intercept.listen_v6: must be an IPv6 address on the same port"),
        "{e}"
    );
    let e = err(&INTERCEPTED.replace("10.96.0.10:8080", "127.0.0.1:8080"));
    assert!(
        e.contains("outbound.payments.addresses[0]: loopback"),
        "{e}"
    );
    let e = err(&INTERCEPTED.replace("[fd00::10]:8080", "10.96.0.10:8080"));
    assert!(
        e.contains("outbound.payments.addresses[1]: address 10.96.0.10:8080 is listed by two"),
        "{e}"
    );
    let e = err(&INTERCEPTED.replace(
        "intercept: { listen: 127.0.0.1:15006, listen_v6: \"[::1]:15006\", unknown: refuse }\n",
        "",
    ));
    assert!(
        e.contains("outbound.payments.addresses: needs a top-level `intercept`"),
        "{e}"
    );
    let e = err(&INTERCEPTED.replace("unknown: refuse", "unknown: drop"));
    assert!(e.contains("passthrough") && e.contains("refuse"), "{e}");
}

const DISCOVERED: &str = "zone: a\nidentity: { cert: a, key: b, trust_bundle: c }\nproxy: { listen: 127.0.0.1:3 }\noutbound:\n  x:\n    discover: { kubernetes: { service: payments, namespace: shop, port: sidecar, kubeconfig: kube.yaml } }\n    server_identity: spiffe://td/x\n    zone_aware: {}\n";

#[test]
fn discovery_replaces_or_joins_the_static_endpoints() {
    let l = from_str(Path::new("/etc/sidecar/s.yaml"), DISCOVERED).unwrap();
    let d = &l.config.dependencies["x"];
    assert!(d.endpoints.is_empty());
    assert_eq!(
        d.discover,
        Some(KubernetesDiscover {
            service: "payments".into(),
            namespace: Some("shop".into()),
            port: Some(PortRef::Name("sidecar".into())),
            kubeconfig: Some("/etc/sidecar/kube.yaml".into()),
        })
    );
    // zone_aware needs no zoned static endpoint: the slices carry the zones.
    assert!(d.zone_aware.is_some());

    let both = DISCOVERED.replace(
        "    server_identity",
        "    endpoints: [\"10.0.0.1:15001\"]\n    server_identity",
    );
    let l = from_str(Path::new("s.yaml"), &both).unwrap();
    let d = &l.config.dependencies["x"];
    assert_eq!(d.endpoints.len(), 1);
    assert!(d.discover.is_some());
}

#[test]
fn a_dependency_needs_endpoints_or_discover_and_discovery_is_checked() {
    let neither = DISCOVERED.replace(
        "    discover: { kubernetes: { service: payments, namespace: shop, port: sidecar, kubeconfig: kube.yaml } }\n",
        "",
    );
    let e = from_str(Path::new("s.yaml"), &neither)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("outbound.x.endpoints: needs `endpoints` or `discover`"),
        "{e}"
    );
    // One problem, not a second one about zones of endpoints that do not exist.
    assert_eq!(e.matches("outbound.x").count(), 1, "{e}");
    for (bad, want) in [
        (
            DISCOVERED.replace("service: payments", "service: Pay_1"),
            "outbound.x.discover.kubernetes.service",
        ),
        (
            DISCOVERED.replace("port: sidecar", "port: 0"),
            "outbound.x.discover.kubernetes.port",
        ),
        (
            DISCOVERED.replace("namespace: shop", "namespace: \"\""),
            "outbound.x.discover.kubernetes.namespace",
        ),
        (
            DISCOVERED.replace("{ kubernetes: {", "{ dns: x, kubernetes: {"),
            "unknown field `dns`",
        ),
        (
            DISCOVERED.replace("service: payments", "servce: payments"),
            "unknown field `servce`",
        ),
    ] {
        let e = from_str(Path::new("s.yaml"), &bad).unwrap_err().to_string();
        assert!(e.contains(want), "{bad}\n{e}");
    }
}
