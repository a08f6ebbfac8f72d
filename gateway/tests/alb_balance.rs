//! ALB parity, load balancing (issue 18): sticky sessions (`lb_cookie`, `app_cookie`)
//! that hold across 1,000 requests and move only when their endpoint fails, slow start
//! and deregistration delay, shown by request counts through a real gateway.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use backends_demo::{test_client, wait_until, Backend, Gateway, GatewayConfig};
use serde_json::{json, Value};

/// GET `path` with `cookie`; the backend's id and the sticky cookie set, if any.
async fn get(gw: &Gateway, path: &str, cookie: &str) -> (String, Option<String>) {
    let mut req = test_client().get(gw.url(path));
    if !cookie.is_empty() {
        req = req.header("cookie", cookie);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let set = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("tollgate_sticky"));
    let id = r.headers()["x-backend-id"].to_str().unwrap().to_owned();
    (id, set.map(|c| c.split(';').next().unwrap().to_owned()))
}

async fn endpoint(gw: &Gateway, addr: std::net::SocketAddr) -> Option<Value> {
    let ups = gw.admin_json("/upstreams").await.unwrap();
    ups["upstreams"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["address"] == addr.to_string())
        .cloned()
}

#[tokio::test]
async fn lb_cookie_holds_for_a_thousand_requests_and_moves_only_on_failure() {
    let a = Backend::builder().id("a").spawn().await.unwrap();
    let b = Backend::builder().id("b").spawn().await.unwrap();
    let gw = Gateway::start(
        &GatewayConfig::new()
            .upstream_with(
                "app",
                &[a.addr(), b.addr()],
                json!({
                    "sticky": { "type": "lb_cookie", "duration": "1h" },
                    "health_check": { "path": "/healthz", "interval": "200ms", "healthy": 1, "unhealthy": 1 },
                }),
            )
            .route("all", "app")
            .to_yaml(),
    )
    .await
    .unwrap();

    let (first, cookie) = get(&gw, "/", "").await;
    let cookie = cookie.expect("the gateway issues its cookie");
    let r = test_client().get(gw.url("/")).send().await.unwrap();
    let raw = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        raw.contains("Max-Age=3600; HttpOnly; SameSite=Lax") && !raw.contains("Secure"),
        "sane flags, no Secure over plain HTTP: {raw}"
    );
    for i in 0..1000 {
        let (id, _) = get(&gw, &format!("/n/{i}"), &cookie).await;
        assert_eq!(id, first, "request {i} left its endpoint");
    }
    // Without the cookie, round robin spreads.
    let mut ids = std::collections::HashSet::new();
    for _ in 0..4 {
        ids.insert(get(&gw, "/", "").await.0);
    }
    assert_eq!(ids.len(), 2);

    // The sticky endpoint fails its health check: the client moves, without an error,
    // and gets a cookie for its new endpoint, which then holds.
    let (sticky, other) = if first == "a" { (&a, &b) } else { (&b, &a) };
    sticky.set_healthy(false).await.unwrap();
    wait_until(Duration::from_secs(5), || async {
        endpoint(&gw, sticky.addr()).await.unwrap()["healthy"] == false
    })
    .await
    .expect("marked unhealthy");
    let (moved, new_cookie) = get(&gw, "/", &cookie).await;
    assert_eq!(moved, other.id());
    let new_cookie = new_cookie.unwrap();
    assert_ne!(new_cookie, cookie);
    sticky.set_healthy(true).await.unwrap();
    wait_until(Duration::from_secs(5), || async {
        endpoint(&gw, sticky.addr()).await.unwrap()["healthy"] == true
    })
    .await
    .expect("healthy again");
    for _ in 0..50 {
        assert_eq!(get(&gw, "/", &new_cookie).await.0, other.id());
    }
}

#[tokio::test]
async fn app_cookie_sticks_only_while_the_application_cookie_is_sent() {
    let a = Backend::builder().id("a").spawn().await.unwrap();
    let b = Backend::builder().id("b").spawn().await.unwrap();
    let gw = Gateway::start(
        &GatewayConfig::new()
            .upstream_with(
                "app",
                &[a.addr(), b.addr()],
                json!({ "sticky": { "type": "app_cookie", "cookie": "JSESSIONID" } }),
            )
            .route("all", "app")
            .to_yaml(),
    )
    .await
    .unwrap();
    // No session cookie: no sticky cookie.
    assert_eq!(get(&gw, "/", "").await.1, None);
    let (first, ours) = get(&gw, "/", "JSESSIONID=s1").await;
    let ours = ours.expect("set once the application's cookie is there");
    assert!(ours.starts_with("tollgate_sticky_JSESSIONID="), "{ours}");
    let both = format!("JSESSIONID=s1; {ours}");
    for _ in 0..200 {
        assert_eq!(get(&gw, "/", &both).await.0, first);
    }
    // The session ended (no JSESSIONID): round robin again.
    let mut ids = std::collections::HashSet::new();
    for _ in 0..4 {
        ids.insert(get(&gw, "/", &ours).await.0);
    }
    assert_eq!(ids.len(), 2);
}

#[tokio::test]
async fn slow_start_ramps_a_new_endpoint() {
    let a = Backend::builder().id("a").spawn().await.unwrap();
    let b = Backend::builder().id("b").spawn().await.unwrap();
    let cfg = |eps: &[std::net::SocketAddr]| {
        GatewayConfig::new()
            .upstream_with("app", eps, json!({ "slow_start": "3s" }))
            .route("all", "app")
            .to_yaml()
    };
    let gw = Gateway::start(&cfg(&[a.addr()])).await.unwrap();
    gw.write_config(&cfg(&[a.addr(), b.addr()])).unwrap();
    assert_eq!(gw.reload().await.unwrap().0, 200);
    let start = Instant::now();
    // B's share per 750 ms window, from its registration.
    let mut windows = [[0u32; 2]; 5];
    while start.elapsed() < Duration::from_millis(3750) {
        let w = (start.elapsed().as_millis() / 750) as usize;
        let (id, _) = get(&gw, "/", "").await;
        windows[w.min(4)][usize::from(id == "b")] += 1;
    }
    let share = |w: [u32; 2]| f64::from(w[1]) / f64::from(w[0] + w[1]).max(1.0);
    let shares: Vec<f64> = windows.iter().map(|w| share(*w)).collect();
    println!("B's share per 750 ms since it joined: {shares:.2?} ({windows:?})");
    assert!(shares[0] < 0.2, "{shares:?}");
    assert!(shares[0] < shares[2] && shares[2] < shares[4], "{shares:?}");
    assert!(shares[4] > 0.35, "{shares:?}");
}

#[tokio::test]
async fn deregistration_delay_lets_requests_in_flight_finish() {
    let a = Backend::builder().id("a").spawn().await.unwrap();
    let b = Backend::builder().id("b").spawn().await.unwrap();
    let cfg = |eps: &[std::net::SocketAddr]| {
        GatewayConfig::new()
            .upstream_with("app", eps, json!({ "deregistration_delay": "30s" }))
            .route_with("all", "app", json!({ "timeouts": { "read": "10s" } }))
            .to_yaml()
    };
    let gw = Gateway::start(&cfg(&[a.addr()])).await.unwrap();
    a.fault("latency=1500ms").await.unwrap();
    let slow = tokio::spawn({
        let url = gw.url("/slow");
        async move { test_client().get(url).send().await.unwrap().status() }
    });
    wait_until(Duration::from_secs(5), || async {
        a.stats().await.unwrap().in_flight == 1
    })
    .await
    .expect("the slow request reached A");

    gw.write_config(&cfg(&[b.addr()])).unwrap();
    assert_eq!(gw.reload().await.unwrap().0, 200);
    let e = endpoint(&gw, a.addr())
        .await
        .expect("still listed while in use");
    assert_eq!(e["draining"], true, "{e}");
    assert_eq!(e["available"], false, "{e}");
    for _ in 0..20 {
        assert_eq!(get(&gw, "/", "").await.0, "b", "no new requests to A");
    }
    assert_eq!(slow.await.unwrap(), 200, "the request in flight finished");
    wait_until(Duration::from_secs(5), || async {
        endpoint(&gw, a.addr()).await.is_none()
    })
    .await
    .expect("removed once nothing uses it, well before the 30s delay");
}
