//! Binary upgrade with real processes: `gateway upgrade --config` takes the listening
//! sockets over from the running gateway under constant load, loses no request, and
//! serves a listener its config adds; the old process drains and exits 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use backends_demo::free_addr;
use backends_demo::load::{summarize, Load, Outcome};
use backends_demo::{test_client, Backend, Gateway};

fn config(backend: std::net::SocketAddr, extra_listener: bool) -> String {
    let listeners = if extra_listener {
        r#"[{ name: http, address: "${LISTEN}" }, { name: added, address: "${LISTEN2}" }]"#
    } else {
        r#"[{ name: http, address: "${LISTEN}" }]"#
    };
    format!(
        r#"
listeners: {listeners}
admin: {{ address: "${{ADMIN}}" }}
server: {{ threads: 1, shutdown: {{ drain_delay: 1s, grace_period: 10s }} }}
routes: [{{ name: all, upstream: app }}]
upstreams: {{ app: {{ endpoints: [{{ address: {backend} }}] }} }}
"#
    )
}

#[tokio::test]
async fn upgrade_under_load_loses_nothing_and_serves_an_added_listener() {
    let a = Backend::builder().id("a").spawn().await.unwrap();
    // Slow answers, so requests are in flight on the old process when it hands over.
    a.fault("latency=50ms").await.unwrap();
    let mut old = Gateway::start(&config(a.addr(), false)).await.unwrap();
    let old_version = old.admin_json("/config").await.unwrap()["version"]
        .as_str()
        .unwrap()
        .to_owned();

    let load = Load::get(old.url("/"))
        .concurrency(8)
        .duration(Duration::from_secs(12))
        .spawn();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let upgrade_at = load.elapsed();

    let added = free_addr("127.0.0.1");
    let mut new = old
        .upgrade(&config(a.addr(), true), &[("LISTEN2", added.to_string())])
        .await
        .unwrap();
    assert_ne!(new.proc().pid(), old.proc().pid());

    // The new process serves the listener only its config has.
    let r = test_client()
        .get(format!("http://{added}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-backend-id"], "a");

    // The old one stops accepting, drains and exits 0 (grace period 10s).
    let code = old.proc().wait_exit(Duration::from_secs(20)).await.unwrap();
    assert_eq!(code, Some(0), "{}", old.log());
    let samples = load.join().await;
    println!("upgrade under load: {}", summarize(&samples));

    // Zero failed requests: refused connections, resets and 5xx all count.
    let failed: Vec<_> = samples.iter().filter(|s| !s.is_ok()).collect();
    assert!(
        failed.is_empty(),
        "lost {} requests: {:?}\n{}\nold:\n{}\nnew:\n{}",
        failed.len(),
        failed.iter().take(5).collect::<Vec<_>>(),
        summarize(&samples),
        old.log(),
        new.log()
    );
    assert!(
        samples
            .iter()
            .filter(|s| s.at > upgrade_at && s.is_ok())
            .count()
            >= 100,
        "served through the upgrade: {}",
        summarize(&samples)
    );
    assert!(!samples
        .iter()
        .any(|s| matches!(s.outcome, Outcome::Refused)));

    // After the old process is gone, the new one serves both listeners, and its admin
    // (same address) shows the new config.
    for url in [new.url("/"), format!("http://{added}/")] {
        let r = test_client().get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
    }
    let cfg = new.admin_json("/config").await.unwrap();
    assert_ne!(cfg["version"].as_str().unwrap(), old_version);
    assert!(cfg["restart_required"].is_null(), "{cfg}");
    let info = new.admin_json("/upgrade").await.unwrap();
    assert_eq!(info["pid"].as_u64(), Some(u64::from(new.proc().pid())));
    assert_eq!(info["listeners"].as_array().unwrap().len(), 2);
    assert!(new.proc().is_running());
}

#[tokio::test]
async fn upgrade_is_refused_without_a_waiting_process_and_nothing_changes() {
    let a = Backend::builder().id("a").spawn().await.unwrap();
    let gw = Gateway::start(&config(a.addr(), false)).await.unwrap();
    // A stray POST /upgrade (nobody listens on the upgrade socket) is refused...
    let r = test_client()
        .post(gw.admin_url("/upgrade"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("no process waits"),
        "{body}"
    );
    // ...and the gateway keeps serving, ready, on its admin port.
    let r = test_client().get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = test_client()
        .get(gw.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
