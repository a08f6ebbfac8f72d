//! Edge authentication through a real gateway (issue 19): JWT verification against a
//! real JWKS endpoint (rotation, IdP outage, every rejection kind), claims to headers
//! and to rate-limit keys, and forward-auth against a real authorization service.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use backends_demo::auth::{self, AuthService, JwksServer, SigningKey};
use backends_demo::{Backend, Gateway, GatewayConfig};
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

struct Answer {
    status: u16,
    www: Option<String>,
    body: String,
}

impl Answer {
    /// The backend's echo of the request's headers.
    fn echoed(&self, header: &str) -> Option<String> {
        let v: Value = serde_json::from_str(&self.body).ok()?;
        v["headers"][header].as_str().map(str::to_owned)
    }
}

async fn get(url: &str, headers: &[(&str, &str)]) -> Answer {
    let client = reqwest::Client::new();
    let mut req = client.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("gateway answers");
    let www = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    Answer {
        status: resp.status().as_u16(),
        www,
        body: resp.text().await.unwrap(),
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn jwt_policies_check_tokens_rotate_keys_and_survive_an_idp_outage() {
    let rsa = SigningKey::generate("rsa-1", Algorithm::RS256).unwrap();
    let pss = SigningKey::generate("pss-1", Algorithm::PS256).unwrap();
    let ed = SigningKey::generate("ed-1", Algorithm::EdDSA).unwrap();
    let ec384 = SigningKey::generate("ec-384", Algorithm::ES384).unwrap();
    let later = SigningKey::generate("ec-2", Algorithm::ES256).unwrap();
    let idp = JwksServer::spawn(auth::jwks(&[&rsa, &pss, &ed, &ec384]))
        .await
        .unwrap();
    let backend = Backend::builder().id("app").spawn().await.unwrap();

    let gw = Gateway::start(
        &GatewayConfig::new()
            .upstream("app", &[backend.addr()])
            .set(
                "auth.jwt.api",
                json!({
                    "issuer": idp.issuer(),
                    "jwks": { "url": idp.url(), "min_refresh": "1s" },
                    "audiences": ["api", "api2"],
                    "required_scopes": ["read"],
                    "claims": [{ "claim": "tenant", "in": ["acme", "globex"] }],
                    "claims_to_headers": { "sub": "x-user-id", "tenant": "x-tenant", "org.tier": "x-tier" },
                }),
            )
            .set(
                "auth.jwt.discovered",
                json!({ "issuer": idp.issuer(), "jwks": { "discovery": true } }),
            )
            .set(
                "auth.jwt.cookie",
                json!({
                    "jwks": { "url": idp.url(), "min_refresh": "1s" },
                    "tokens": [{ "cookie": "session" }],
                    "optional": true,
                    "forward_token": false,
                    "claims_to_headers": { "sub": "x-user-id" },
                }),
            )
            .set(
                "rate_limits.per_user",
                json!({ "rate": "2/m", "burst": 2, "key": "claim:sub" }),
            )
            .route_with("api", "app", json!({ "match": { "path_prefix": "/api/" }, "auth": { "jwt": "api" } }))
            .route_with(
                "limited",
                "app",
                json!({ "match": { "path_prefix": "/limited/" }, "auth": { "jwt": "discovered" }, "rate_limit": "per_user" }),
            )
            .route_with("public", "app", json!({ "match": { "path_prefix": "/public/" }, "auth": { "jwt": "cookie" } }))
            .to_yaml(),
    )
    .await
    .unwrap();
    let api = gw.url("/api/items");
    let iss = idp.issuer();
    let now = auth::now();
    let good = json!({ "iss": iss, "aud": "api", "sub": "alice", "tenant": "acme",
                       "scope": "read write", "exp": now + 600, "org": { "tier": "gold" } });
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let without = |k: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(k);
        c
    };

    // Valid, with every key type: the backend gets the identity headers, and the
    // client's own x-user-id is replaced, never passed on.
    for key in [&rsa, &pss, &ed, &ec384] {
        let t = key.sign(&good).unwrap();
        let r = get(
            &api,
            &[("authorization", &bearer(&t)), ("x-user-id", "mallory")],
        )
        .await;
        assert_eq!(r.status, 200, "{:?}: {}", key.alg, r.body);
        assert_eq!(
            r.echoed("x-user-id").as_deref(),
            Some("alice"),
            "{}",
            r.body
        );
        assert_eq!(r.echoed("x-tenant").as_deref(), Some("acme"));
        assert_eq!(r.echoed("x-tier").as_deref(), Some("gold"));
        assert_eq!(
            r.echoed("authorization"),
            Some(bearer(&t)),
            "token forwarded"
        );
    }
    // The same token again: from the verified-token cache.
    let t = rsa.sign(&good).unwrap();
    assert_eq!(
        get(&api, &[("authorization", &bearer(&t))]).await.status,
        200
    );
    let cached = gw
        .metric(
            "gateway_auth_decisions_total",
            &[("policy", "api"), ("decision", "cached")],
        )
        .await
        .unwrap();
    assert!(cached >= 1.0, "cached decisions: {cached}");
    // `aud` as a list, one of them accepted; `scp` as a list.
    let t = rsa.sign(&with("aud", json!(["other", "api2"]))).unwrap();
    assert_eq!(
        get(&api, &[("authorization", &bearer(&t))]).await.status,
        200
    );

    // Each refusal, with its status, RFC 6750 challenge and counted decision.
    let forged_hs = auth::hs256(&good, "rsa-1", rsa.public_jwk_text().as_bytes()).unwrap();
    let mut tampered = rsa.sign(&good).unwrap();
    let payload_at = tampered.find('.').unwrap() + 3;
    let flipped = if &tampered[payload_at..=payload_at] == "A" {
        "B"
    } else {
        "A"
    };
    tampered.replace_range(payload_at..=payload_at, flipped);
    let cases: Vec<(&str, Option<String>, u16, &str, &str)> = vec![
        ("no token", None, 401, "missing", "Bearer realm=\"api\""),
        (
            "expired",
            Some(rsa.sign(&with("exp", json!(now - 120))).unwrap()),
            401,
            "expired",
            "error=\"invalid_token\"",
        ),
        ("expired within leeway is fine", None, 0, "", ""),
        (
            "not yet valid",
            Some(rsa.sign(&with("nbf", json!(now + 600))).unwrap()),
            401,
            "not_yet_valid",
            "invalid_token",
        ),
        (
            "no exp",
            Some(rsa.sign(&without("exp")).unwrap()),
            401,
            "no_expiry",
            "invalid_token",
        ),
        (
            "wrong issuer",
            Some(
                rsa.sign(&with("iss", json!("https://evil.example")))
                    .unwrap(),
            ),
            401,
            "wrong_issuer",
            "invalid_token",
        ),
        (
            "wrong audience",
            Some(rsa.sign(&with("aud", json!("billing"))).unwrap()),
            401,
            "wrong_audience",
            "invalid_token",
        ),
        (
            "missing scope",
            Some(rsa.sign(&with("scope", json!("write"))).unwrap()),
            403,
            "insufficient_scope",
            "error=\"insufficient_scope\", scope=\"read\"",
        ),
        (
            "claim not in list",
            Some(rsa.sign(&with("tenant", json!("initech"))).unwrap()),
            403,
            "claim_mismatch",
            "",
        ),
        (
            "alg none",
            Some(auth::unsigned(&good)),
            401,
            "bad_algorithm",
            "invalid_token",
        ),
        (
            "HS256 with the public key",
            Some(forged_hs),
            401,
            "bad_algorithm",
            "invalid_token",
        ),
        (
            "tampered payload",
            Some(tampered),
            401,
            "bad_signature",
            "invalid_token",
        ),
        (
            "not a JWT",
            Some("abc.def".into()),
            401,
            "malformed",
            "invalid_token",
        ),
    ];
    for (what, token, status, decision, challenge) in cases {
        if status == 0 {
            let t = rsa.sign(&with("exp", json!(now - 30))).unwrap();
            let r = get(&api, &[("authorization", &bearer(&t))]).await;
            assert_eq!(r.status, 200, "{what}: {}", r.body);
            continue;
        }
        let auth_header = token.as_deref().map(bearer);
        let headers: Vec<(&str, &str)> = auth_header
            .as_deref()
            .map(|h| vec![("authorization", h)])
            .unwrap_or_default();
        let r = get(&api, &headers).await;
        assert_eq!(r.status, status, "{what}: {}", r.body);
        let www = r.www.clone().unwrap_or_default();
        assert!(www.contains(challenge), "{what}: WWW-Authenticate {www:?}");
        assert!(
            r.body.contains("api:"),
            "{what}: body names the policy: {}",
            r.body
        );
        let n = gw
            .metric(
                "gateway_auth_decisions_total",
                &[("policy", "api"), ("decision", decision)],
            )
            .await
            .unwrap();
        assert!(n >= 1.0, "{what}: decision {decision} not counted");
    }

    // NumericDate may have a fraction; a date that is not a number is malformed.
    let t = rsa.sign(&with("exp", json!(now as f64 + 600.5))).unwrap();
    assert_eq!(
        get(&api, &[("authorization", &bearer(&t))]).await.status,
        200
    );
    let t = rsa.sign(&with("nbf", json!("yesterday"))).unwrap();
    let r = get(&api, &[("authorization", &bearer(&t))]).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("not a well-formed JWT"), "{}", r.body);

    // Claims as rate-limit keys: alice has 2 per minute, bob his own 2.
    let limited = gw.url("/limited/x");
    let alice = rsa.sign(&good).unwrap();
    let bob = rsa.sign(&with("sub", json!("bob"))).unwrap();
    for _ in 0..2 {
        assert_eq!(
            get(&limited, &[("authorization", &bearer(&alice))])
                .await
                .status,
            200
        );
    }
    assert_eq!(
        get(&limited, &[("authorization", &bearer(&alice))])
            .await
            .status,
        429
    );
    assert_eq!(
        get(&limited, &[("authorization", &bearer(&bob))])
            .await
            .status,
        200
    );
    // An unauthenticated request never reaches the claim limit: 401 first.
    assert_eq!(get(&limited, &[]).await.status, 401);

    // Optional policy, token in a cookie, not forwarded: absent is fine (and a forged
    // identity header is still removed), present is verified and removed.
    let public = gw.url("/public/page");
    let r = get(&public, &[("x-user-id", "mallory")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.echoed("x-user-id"), None, "{}", r.body);
    let cookie = format!("theme=dark; session={}; lang=en", rsa.sign(&good).unwrap());
    let r = get(&public, &[("cookie", &cookie)]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.echoed("x-user-id").as_deref(), Some("alice"));
    assert_eq!(
        r.echoed("cookie").as_deref(),
        Some("theme=dark; lang=en"),
        "{}",
        r.body
    );
    let r = get(&public, &[("cookie", "session=garbage")]).await;
    assert_eq!(r.status, 401, "a bad token is refused even when optional");

    // Rotation: a token from a key the IdP does not publish yet is refused; once the
    // IdP publishes it, the next such token triggers a refetch and passes. Unknown kids
    // refetch at most once per min_refresh.
    let rotated = later.sign(&good).unwrap();
    let before = idp.fetches();
    for _ in 0..5 {
        let r = get(&api, &[("authorization", &bearer(&rotated))]).await;
        assert_eq!(r.status, 401, "{}", r.body);
    }
    assert!(
        idp.fetches() - before <= 1,
        "5 unknown-kid requests within min_refresh fetched {} times",
        idp.fetches() - before
    );
    idp.set_jwks(auth::jwks(&[&rsa, &pss, &ed, &ec384, &later]));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = get(&api, &[("authorization", &bearer(&rotated))]).await;
    assert_eq!(r.status, 200, "after rotation: {}", r.body);

    // The IdP goes down: fetches fail, the last good keys keep verifying.
    idp.set_up(false);
    let errors = || async {
        gw.metric(
            "gateway_auth_jwks_fetches_total",
            &[("source", &idp.url()), ("result", "error")],
        )
        .await
        .unwrap()
    };
    let unknown = SigningKey::generate("nowhere", Algorithm::ES256).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while errors().await < 1.0 && Instant::now() < deadline {
        // An unknown kid makes the gateway fetch (at most once a second).
        let _ = get(
            &api,
            &[("authorization", &bearer(&unknown.sign(&good).unwrap()))],
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(errors().await >= 1.0, "no failed fetch recorded");
    let fresh = rsa.sign(&with("sub", json!("carol"))).unwrap();
    let r = get(&api, &[("authorization", &bearer(&fresh))]).await;
    assert_eq!(r.status, 200, "last good keys kept: {}", r.body);
    assert_eq!(r.echoed("x-user-id").as_deref(), Some("carol"));
    let keys = gw
        .metric("gateway_auth_jwks_keys", &[("source", &idp.url())])
        .await
        .unwrap();
    assert_eq!(keys, 5.0);
}

#[tokio::test]
async fn forward_auth_allows_denies_caches_and_times_out() {
    let svc = AuthService::spawn().await.unwrap();
    let backend = Backend::builder().id("app").spawn().await.unwrap();
    let logs = tempfile::tempdir().unwrap();
    let access_log = logs.path().join("access.log");
    let gw = Gateway::start(
        &GatewayConfig::new()
            .set(
                "access_log",
                json!({ "enabled": true, "path": access_log.display().to_string() }),
            )
            .upstream("app", &[backend.addr()])
            .set(
                "auth.forward.strict",
                json!({ "url": svc.url(), "response_headers": ["x-auth-user"],
                        "timeout": "500ms", "cache_ttl": "30s" }),
            )
            .set(
                "auth.forward.lenient",
                json!({ "url": svc.url(), "timeout": "300ms", "on_error": "allow" }),
            )
            .route_with("strict", "app", json!({ "match": { "path_prefix": "/strict/" }, "auth": { "forward": "strict" } }))
            .route_with("lenient", "app", json!({ "match": { "path_prefix": "/lenient/" }, "auth": { "forward": "lenient" } }))
            .to_yaml(),
    )
    .await
    .unwrap();
    let strict = gw.url("/strict/orders?id=7");

    // Allowed: the service saw the request's method, URI and host; the backend gets
    // the copied header (not the others, and not the client's forgery).
    let r = get(
        &strict,
        &[
            ("authorization", "Bearer allow-bob"),
            ("x-auth-user", "mallory"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.echoed("x-auth-user").as_deref(),
        Some("bob"),
        "{}",
        r.body
    );
    assert_eq!(r.echoed("x-not-copied"), None);
    let seen = svc.last_headers().unwrap();
    assert_eq!(seen["x-forwarded-method"], "GET");
    assert_eq!(seen["x-forwarded-uri"], "/strict/orders?id=7");
    assert_eq!(seen["authorization"], "Bearer allow-bob");
    assert!(seen.get("x-forwarded-host").is_some());
    // The same credentials again: the cached decision, the service not asked.
    let calls = svc.calls();
    let r = get(&strict, &[("authorization", "Bearer allow-bob")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.echoed("x-auth-user").as_deref(), Some("bob"));
    assert_eq!(svc.calls(), calls, "a cached decision asks nobody");
    // The same credentials on another path are asked about: the service sees the URI,
    // so its answer for one path is not reused for another.
    let r = get(
        &gw.url("/strict/admin"),
        &[("authorization", "Bearer allow-bob")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(svc.calls(), calls + 1, "another URI is another decision");

    // Denied: the service's own answer, as it wrote it.
    let r = get(&strict, &[("authorization", "Bearer nope")]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.www.as_deref(), Some("Basic realm=\"svc\""));
    assert_eq!(r.body, "denied by svc");

    // The service too slow: 503 under on_error: deny, through under on_error: allow.
    let started = Instant::now();
    let r = get(&strict, &[("authorization", "Bearer slow")]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "timed out at 500ms"
    );
    let r = get(&gw.url("/lenient/x"), &[("authorization", "Bearer slow")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    for (policy, decision) in [
        ("strict", "ok"),
        ("strict", "cached"),
        ("strict", "denied"),
        ("strict", "error"),
        ("lenient", "error_allowed"),
    ] {
        let n = gw
            .metric(
                "gateway_auth_decisions_total",
                &[("policy", policy), ("decision", decision)],
            )
            .await
            .unwrap();
        assert!(n >= 1.0, "{policy}/{decision} not counted");
    }
    // The decision is in the access log, and a refusal's cause with it.
    let mut lines: Vec<Value> = Vec::new();
    for _ in 0..50 {
        let text = std::fs::read_to_string(&access_log).unwrap_or_default();
        lines = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        // Six requests, each logged when it ends.
        if lines.len() >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let decisions: Vec<&str> = lines.iter().filter_map(|l| l["auth"].as_str()).collect();
    for d in ["ok", "cached", "denied", "error", "error_allowed"] {
        assert!(decisions.contains(&d), "{d} not logged: {decisions:?}");
    }
    let denied = lines.iter().find(|l| l["auth"] == "denied").unwrap();
    assert_eq!(denied["rejection"], "auth_denied", "{denied}");
    assert!(
        denied["rejection_detail"]
            .as_str()
            .unwrap()
            .contains("answered 401"),
        "{denied}"
    );
}
