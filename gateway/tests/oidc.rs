//! OpenID Connect login through real gateways (issue 19), against a real OpenID
//! Provider (`oidc-provider` from npm) driven by a scripted browser: login with PKCE,
//! identity headers, a second replica reading the same session, a token refresh, a
//! tampered cookie, logout at the gateway and the provider, and the provider's JWT
//! access tokens through a JWT policy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use backends_demo::oidc::{Browser, OpenIdProvider, Page};
use backends_demo::{free_addr, Backend, Gateway, GatewayConfig};
use serde_json::{json, Value};

fn echoed(page: &Page, header: &str) -> Option<String> {
    let v: Value = serde_json::from_str(&page.body).ok()?;
    v["headers"][header].as_str().map(str::to_owned)
}

#[tokio::test]
async fn oidc_login_refresh_replicas_and_logout() {
    let backend = Backend::builder().id("app").spawn().await.unwrap();
    let (addr_a, addr_b) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let callbacks: Vec<String> = [addr_a, addr_b]
        .iter()
        .flat_map(|a| {
            [
                format!("http://{a}/oauth2/callback"),
                format!("http://{a}/deny/callback"),
            ]
        })
        .collect();
    let idp = OpenIdProvider::spawn(
        &callbacks,
        &[format!("http://{addr_a}/bye")],
        Duration::from_secs(4),
    )
    .await
    .unwrap();
    let issuer = idp.issuer();
    // `openssl rand -base64 32`, fixed: both replicas hold the same key.
    let key = "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=";
    let config = |addr: std::net::SocketAddr| {
        GatewayConfig::new()
            .main_listener(json!({ "address": addr.to_string() }))
            .upstream("app", &[backend.addr()])
            .set(
                "auth.oidc.web",
                json!({
                    "issuer": issuer, "client_id": "gateway", "client_secret": "gateway-secret",
                    "session_keys": [key], "refresh_before": "2s", "post_logout_redirect": "/bye",
                    "claims_to_headers": { "sub": "x-user-id", "email": "x-user-email" },
                }),
            )
            .set(
                "auth.oidc.strict",
                json!({
                    "issuer": issuer, "client_id": "gateway", "client_secret": "gateway-secret",
                    "session_keys": [key], "on_unauthenticated": "deny",
                    "redirect_path": "/deny/callback", "logout_path": "/deny/logout",
                }),
            )
            .set(
                "auth.jwt.api",
                json!({
                    "issuer": issuer, "jwks": { "discovery": true },
                    "audiences": ["https://api.test"], "required_scopes": ["read"],
                    "claims_to_headers": { "client_id": "x-client" },
                }),
            )
            .raw_route(json!({ "name": "bye", "match": { "path": "/bye" },
                               "fixed_response": { "status": 200, "body": "bye" } }))
            .route_with(
                "api",
                "app",
                json!({ "match": { "path_prefix": "/api/" }, "auth": { "jwt": "api" } }),
            )
            .route_with(
                "deny",
                "app",
                json!({ "match": { "path_prefix": "/deny/" }, "auth": { "oidc": "strict" } }),
            )
            .route_with(
                "web",
                "app",
                // Only /app/: the callback and logout paths are answered before
                // routing, whatever the routes match.
                json!({ "match": { "path_prefix": "/app/" }, "auth": { "oidc": "web" } }),
            )
            .to_yaml()
    };
    let gw_a = Gateway::start(&config(addr_a)).await.unwrap();
    let gw_b = Gateway::start(&config(addr_b)).await.unwrap();
    let a = |p: &str| format!("http://{addr_a}{p}");
    let b = |p: &str| format!("http://{addr_b}{p}");
    let mut browser = Browser::new();

    // 1. No session: to the provider, with PKCE, state and nonce.
    let first = browser.get(&a("/app/page?x=1")).await.unwrap();
    assert_eq!(first.status, 302, "{first:?}");
    let to_idp = first.location.clone().unwrap();
    assert!(to_idp.starts_with(&format!("{issuer}/auth?")), "{to_idp}");
    for p in [
        "response_type=code",
        "client_id=gateway",
        "code_challenge_method=S256",
        "state=",
        "nonce=",
        "scope=openid%20email%20profile",
    ] {
        assert!(to_idp.contains(p), "{p} missing in {to_idp}");
    }
    let login_cookie = |b: &Browser| {
        b.cookies
            .keys()
            .any(|k| k.starts_with("tollgate_session_login_"))
    };
    assert!(login_cookie(&browser), "{:?}", browser.cookies);
    // A second login started meanwhile (another tab) gets its own login cookie.
    let other_tab = browser.get(&a("/app/other-tab")).await.unwrap();
    assert_eq!(other_tab.status, 302);
    let logins = browser
        .cookies
        .keys()
        .filter(|k| k.starts_with("tollgate_session_login_"))
        .count();
    assert_eq!(logins, 2, "{:?}", browser.cookies);

    // 2. The provider's login and consent pages, then back through the callback to
    // where the browser was going, with the identity headers.
    let login = browser.follow(&to_idp).await.unwrap();
    assert!(
        login.body.contains("name=\"login\""),
        "login page: {}",
        login.body
    );
    let consent = browser
        .submit(&login, &[("login", "alice"), ("password", "any")])
        .await
        .unwrap();
    let landed = if consent.body.contains("prompt\" value=\"consent\"") {
        browser.submit(&consent, &[]).await.unwrap()
    } else {
        consent
    };
    assert_eq!(landed.status, 200, "{landed:?}\n{}", idp.log());
    assert_eq!(landed.url, a("/app/page?x=1"));
    assert_eq!(echoed(&landed, "x-user-id").as_deref(), Some("alice"));
    assert_eq!(
        echoed(&landed, "x-user-email").as_deref(),
        Some("alice@example.com")
    );
    assert!(
        browser.cookies.contains_key("tollgate_session-0"),
        "{:?}",
        browser.cookies
    );
    let logins = browser
        .cookies
        .keys()
        .filter(|k| k.starts_with("tollgate_session_login_"))
        .count();
    assert_eq!(
        logins, 1,
        "this login's cookie cleared, the other tab's kept: {:?}",
        browser.cookies
    );
    assert!(browser.cookies.values().all(|v| v.len() < 4000));
    let logged_in = Instant::now();

    // 3. The client cannot set identity headers; the other replica reads the session.
    let p = browser
        .get_with(&a("/app/me"), &[("x-user-id", "mallory")])
        .await
        .unwrap();
    assert_eq!(echoed(&p, "x-user-id").as_deref(), Some("alice"));
    let p = browser.get(&b("/app/elsewhere")).await.unwrap();
    assert_eq!(p.status, 200, "replica b: {p:?}");
    assert_eq!(echoed(&p, "x-user-id").as_deref(), Some("alice"));

    // 4. Tokens live 4 s, refreshed within 2 s of expiry: past 2.5 s the next request
    // refreshes (a new cookie), and past the old expiry the session still works.
    tokio::time::sleep(Duration::from_millis(2500).saturating_sub(logged_in.elapsed())).await;
    let p = browser.get(&a("/app/refresh")).await.unwrap();
    assert_eq!(p.status, 200, "{p:?}");
    assert!(
        p.set_cookies
            .iter()
            .any(|c| c.starts_with("tollgate_session-0=")),
        "{p:?}"
    );
    assert_eq!(echoed(&p, "x-user-id").as_deref(), Some("alice"));
    let refreshed = gw_a
        .metric(
            "gateway_auth_decisions_total",
            &[("policy", "web"), ("decision", "refreshed")],
        )
        .await
        .unwrap();
    assert!(refreshed >= 1.0, "refreshed: {refreshed}\n{}", gw_a.log());
    tokio::time::sleep(Duration::from_millis(5000).saturating_sub(logged_in.elapsed())).await;
    let p = browser.get(&b("/app/later")).await.unwrap();
    assert_eq!(p.status, 200, "after the first tokens expired: {p:?}");
    assert_eq!(echoed(&p, "x-user-id").as_deref(), Some("alice"));

    // 5. A tampered session is no session.
    let good = browser.cookies["tollgate_session-0"].clone();
    let mut bad = good.clone().into_bytes();
    bad[20] = if bad[20] == b'A' { b'B' } else { b'A' };
    browser
        .cookies
        .insert("tollgate_session-0".into(), String::from_utf8(bad).unwrap());
    let p = browser.get(&a("/app/x")).await.unwrap();
    assert_eq!(p.status, 302, "tampered cookie: {p:?}");
    browser.cookies.insert("tollgate_session-0".into(), good);

    // 6. on_unauthenticated: deny answers 401 instead of redirecting.
    let p = Browser::new().get(&a("/deny/x")).await.unwrap();
    assert_eq!(p.status, 401, "{p:?}");

    // 7. The provider's JWT access tokens pass a JWT policy (keys by discovery).
    let token = idp.api_token("read").await.unwrap();
    let r = reqwest::Client::new()
        .get(a("/api/orders"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["headers"]["x-client"], "gateway");

    // 8. Logout: the session cookie goes, the provider ends its session and sends the
    // browser to the post-logout page; the next visit starts a new login.
    let out = browser.get(&a("/oauth2/logout")).await.unwrap();
    assert_eq!(out.status, 302, "{out:?}");
    let end = out.location.clone().unwrap();
    assert!(
        end.starts_with(&format!("{issuer}/session/end?")) && end.contains("id_token_hint="),
        "{end}"
    );
    assert!(
        !browser.cookies.contains_key("tollgate_session-0"),
        "{:?}",
        browser.cookies
    );
    let confirm = browser.follow(&end).await.unwrap();
    let done = browser
        .submit(&confirm, &[("logout", "yes")])
        .await
        .unwrap();
    assert_eq!(done.url, a("/bye"), "{done:?}");
    assert_eq!(done.body, "bye");
    let p = browser.get(&a("/app/page")).await.unwrap();
    assert_eq!(p.status, 302);
    assert!(p.location.unwrap().starts_with(&format!("{issuer}/auth?")));
    for decision in ["login_redirect", "login_done", "ok", "logout"] {
        let n = gw_a
            .metric(
                "gateway_auth_decisions_total",
                &[("policy", "web"), ("decision", decision)],
            )
            .await
            .unwrap();
        assert!(n >= 1.0, "{decision} not counted");
    }
    drop(gw_b);
}
