//! Hot reload with real processes: under load, via file watch, SIGHUP and the admin API;
//! bad configs refused while the old one keeps serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use backends_demo::load::{summarize, Load, Sample};
use backends_demo::{test_client, wait_until, Backend, Gateway};

fn config(routes: &str, upstreams: &str) -> String {
    format!(
        r#"
listeners: [{{ name: http, address: "${{LISTEN}}" }}]
admin: {{ address: "${{ADMIN}}" }}
server: {{ threads: 1 }}
routes:
{routes}
upstreams:
{upstreams}
"#
    )
}

async fn version(gw: &Gateway) -> String {
    gw.admin_json("/config").await.unwrap()["version"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn reload_under_load_loses_nothing() {
    let a = Backend::builder().id("a").spawn().await.unwrap();
    let b = Backend::builder().id("b").spawn().await.unwrap();
    let c = Backend::builder().id("c").spawn().await.unwrap();
    let v1 = config(
        "  - { name: one, upstream: first, match: { path_prefix: /one } }",
        &format!(
            "  first: {{ endpoints: [{{ address: {} }}, {{ address: {} }}] }}",
            a.addr(),
            b.addr()
        ),
    );
    // v2 adds a route and an upstream, and removes endpoint a from `first`.
    let v2 = config(
        "  - { name: one, upstream: first, match: { path_prefix: /one } }\n  - { name: two, upstream: second, match: { path_prefix: /two } }",
        &format!(
            "  first: {{ endpoints: [{{ address: {} }}] }}\n  second: {{ endpoints: [{{ address: {} }}] }}",
            b.addr(),
            c.addr()
        ),
    );
    let gw = Gateway::start(&v1).await.unwrap();
    let load = Load::get(gw.url("/one/x"))
        .concurrency(4)
        .duration(Duration::from_secs(5))
        .spawn();
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        gw.write_config(if i % 2 == 0 { &v2 } else { &v1 }).unwrap();
        let (status, body) = gw.reload().await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let samples = load.join().await;
    println!("reload under load: {}", summarize(&samples));
    assert!(samples.len() >= 2000, "only {} requests", samples.len());
    assert!(samples.iter().all(Sample::is_ok), "{}", summarize(&samples));

    // Last write was v1: /two is gone again.
    let client = test_client();
    assert_eq!(
        client.get(gw.url("/two/")).send().await.unwrap().status(),
        404
    );
    gw.write_config(&v2).unwrap();
    gw.reload().await.unwrap();
    let r = client.get(gw.url("/two/")).send().await.unwrap();
    assert_eq!(r.headers()["x-backend-id"], "c");
}

#[tokio::test]
async fn bad_configs_are_refused_and_the_old_one_keeps_serving() {
    let a = Backend::builder().id("a").spawn().await.unwrap();
    let good = config(
        "  - { name: one, upstream: first }",
        &format!("  first: {{ endpoints: [{{ address: {} }}] }}", a.addr()),
    );
    let gw = Gateway::start(&good).await.unwrap();
    let v0 = version(&gw).await;
    let client = test_client();

    let cases = [
        (
            "broken yaml",
            "listeners: [\n  - { name: http\n".to_string(),
            "gateway.yaml:",
        ),
        (
            "unknown field",
            good.replace(
                "server: { threads: 1 }",
                "server: { threads: 1, treads: 2 }",
            ),
            "unknown field `treads`",
        ),
        (
            "undefined upstream",
            good.replace("upstream: first }", "upstream: nowhere }"),
            "routes[0].upstream: upstream \"nowhere\" is not defined",
        ),
    ];
    for (i, (what, text, expect)) in cases.iter().enumerate() {
        gw.write_config(text).unwrap();
        let (status, body) = gw.reload().await.unwrap();
        assert_eq!(status, 422, "{what}: {body}");
        let err = body["error"].as_str().unwrap();
        assert!(err.contains(expect), "{what}: {err}");
        assert!(
            err.contains("gateway.yaml:"),
            "{what} names the file and line: {err}"
        );
        assert_eq!(body["serving_version"], v0.as_str());
        // Still serving the old config.
        let r = client.get(gw.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{what}");
        assert_eq!(version(&gw).await, v0);
        let failures = gw
            .metric("config_reloads_total", &[("result", "failure")])
            .await
            .unwrap();
        assert!(
            failures >= (i + 1) as f64,
            "{what}: failure counted ({failures})"
        );
    }
    let cfg = gw.admin_json("/config").await.unwrap();
    assert!(cfg["last_reload_error"]
        .as_str()
        .unwrap()
        .contains("nowhere"));
    assert!(gw.log().contains("config reload refused"));
}

#[tokio::test]
async fn file_change_and_sighup_trigger_reloads() {
    let a = Backend::builder().id("a").spawn().await.unwrap();
    let base = |path: &str| {
        config(
            &format!("  - {{ name: one, upstream: first, match: {{ path_prefix: {path} }} }}"),
            &format!("  first: {{ endpoints: [{{ address: {} }}] }}", a.addr()),
        )
    };
    let mut gw = Gateway::start(&base("/v1")).await.unwrap();
    let client = test_client();
    let v0 = version(&gw).await;

    // The file watcher picks up an atomic rename-over.
    gw.write_config(&base("/v2")).unwrap();
    wait_until(Duration::from_secs(5), || async {
        version(&gw).await != v0
    })
    .await
    .unwrap();
    assert_eq!(
        client.get(gw.url("/v2/x")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        client.get(gw.url("/v1/x")).send().await.unwrap().status(),
        404
    );
    assert!(
        gw.metric(
            "config_reloads_total",
            &[("trigger", "file"), ("result", "success")]
        )
        .await
        .unwrap()
            >= 1.0
    );

    // SIGHUP (with the watcher off so only the signal can do it).
    let no_watch = base("/v3").replace(
        "server: { threads: 1 }",
        "server: { threads: 1, watch_config: false }",
    );
    gw.write_config(&no_watch).unwrap();
    wait_until(Duration::from_secs(5), || async {
        client.get(gw.url("/v3/x")).send().await.unwrap().status() == 200
    })
    .await
    .unwrap();
    let v3 = version(&gw).await;
    gw.write_config(&no_watch.replace("/v3", "/v4")).unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(version(&gw).await, v3, "watcher is off now");
    gw.proc().signal("HUP").unwrap();
    wait_until(Duration::from_secs(5), || async {
        client.get(gw.url("/v4/x")).send().await.unwrap().status() == 200
    })
    .await
    .unwrap();
    assert!(
        gw.metric(
            "config_reloads_total",
            &[("trigger", "signal"), ("result", "success")]
        )
        .await
        .unwrap()
            >= 1.0
    );
}

#[tokio::test]
async fn listener_changes_are_reported_as_needing_a_restart() {
    let a = Backend::builder().id("a").spawn().await.unwrap();
    let cfg = config(
        "  - { name: one, upstream: first }",
        &format!("  first: {{ endpoints: [{{ address: {} }}] }}", a.addr()),
    );
    let gw = Gateway::start(&cfg).await.unwrap();
    let port = backends_demo::free_port();
    let changed = cfg.replace(
        "listeners: [{ name: http, address: \"${LISTEN}\" }]",
        &format!("listeners: [{{ name: http, address: \"${{LISTEN}}\" }}, {{ name: more, address: \"127.0.0.1:{port}\" }}]"),
    );
    gw.write_config(&changed).unwrap();
    let (status, _) = gw.reload().await.unwrap();
    assert_eq!(status, 200);
    let c = gw.admin_json("/config").await.unwrap();
    assert_eq!(c["restart_required"], "listeners changed");
    assert_eq!(
        gw.metric("gateway_restart_required", &[]).await.unwrap(),
        1.0
    );
}

#[tokio::test]
async fn proxy_protocol_and_work_stealing_changes_need_a_restart() {
    let a = Backend::builder().id("a").spawn().await.unwrap();
    let cfg = config(
        "  - { name: one, upstream: first }",
        &format!("  first: {{ endpoints: [{{ address: {} }}] }}", a.addr()),
    );
    let gw = Gateway::start(&cfg).await.unwrap();
    let changed = cfg
        .replace(
            "listeners: [{ name: http, address: \"${LISTEN}\" }]",
            "listeners: [{ name: http, address: \"${LISTEN}\", proxy_protocol: true }]",
        )
        .replace(
            "server: { threads: 1 }",
            "server: { threads: 1, work_stealing: true }",
        );
    gw.write_config(&changed).unwrap();
    let (status, _) = gw.reload().await.unwrap();
    assert_eq!(status, 200);
    let c = gw.admin_json("/config").await.unwrap();
    assert_eq!(
        c["restart_required"],
        "listeners changed, server.work_stealing changed"
    );
    // Still serving as started: plain HTTP, no PROXY header expected.
    let r = test_client().get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
