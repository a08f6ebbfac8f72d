//! Operating the sidecar: hot reload keeps breaker state and opens new listeners,
//! SIGTERM drains, the HTTP-proxy listener, and per-endpoint ejection under the breaker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use backends_demo::pki::CertSpec;
use backends_demo::{free_addr, test_client, wait_until, Backend};
use common::*;

fn opts(policy: &str) -> MeshOpts {
    MeshOpts {
        dep_policy: policy
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| format!("    {}\n", l.trim()))
            .collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn reload_keeps_breaker_state_and_starts_new_listeners() {
    let breaker =
        "circuit_breaker: { failure_rate: 50%, min_requests: 5, window: 10s, open_for: 30s }";
    let m = Mesh::start(opts(breaker)).await;
    m.app.fault("status=503").await.unwrap();
    let c = test_client();
    for _ in 0..6 {
        c.get(m.url("/")).send().await.unwrap();
    }
    let state = |v: serde_json::Value| v["dependencies"][0]["breaker"]["state"].clone();
    assert_eq!(
        state(m.a.admin_json("/dependencies").await.unwrap()),
        "open"
    );

    // Reload with an unrelated change (timeout) and a second dependency on a new port.
    let out2 = free_addr("127.0.0.1");
    let mut o = opts(&format!("{breaker}\ntimeout: 3s"));
    o.dep_policy.push_str(&format!(
        "  second:\n    listen: \"{out2}\"\n    endpoints: [\"{}\"]\n    server_identity: \"{B_ID}\"\n",
        m.b_inbound
    ));
    let d = m.dir.path().display().to_string();
    let yaml = a_config(&o)
        .replace("cert: a.crt", &format!("cert: {d}/a.crt"))
        .replace("key: a.key", &format!("key: {d}/a.key"))
        .replace("trust_bundle: ca.crt", &format!("trust_bundle: {d}/ca.crt"));
    m.a.write_config(&yaml).unwrap();
    let (status, body) = m.a.reload().await.unwrap();
    assert_eq!(status, 200, "{body}");
    let deps = m.a.admin_json("/dependencies").await.unwrap();
    let app = deps["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "app")
        .unwrap()
        .clone();
    assert_eq!(
        app["breaker"]["state"], "open",
        "breaker state survives the reload: {app}"
    );

    // The new dependency's listener came up without a restart, and works.
    m.app.clear_fault().await.unwrap();
    wait_until(Duration::from_secs(5), || async {
        c.get(format!("http://{out2}/"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await
    .unwrap();

    // A broken config is refused; the old one keeps serving.
    m.a.write_config("identity: {}\n").unwrap();
    let (status, body) = m.a.reload().await.unwrap();
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        c.get(format!("http://{out2}/"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn sigterm_drains_in_flight_calls_and_exits_zero() {
    let mut m = Mesh::start(MeshOpts::default()).await;
    m.app.fault("latency=500ms").await.unwrap();
    let c = test_client();
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let (c, url) = (c.clone(), m.url("/"));
            tokio::spawn(async move { c.get(url).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    // Every call has reached the app (on a loaded machine 100 ms was not always
    // enough for the five to get through both sidecars before the signal).
    wait_until(Duration::from_secs(5), || async {
        m.app.stats().await.is_ok_and(|s| s.in_flight >= 5)
    })
    .await
    .expect("five calls in flight at the app");
    m.a.proc().signal("TERM").unwrap();
    m.b.proc().signal("TERM").unwrap();
    for h in calls {
        assert_eq!(h.await.unwrap().unwrap(), 200, "in-flight calls finish");
    }
    assert_eq!(
        m.a.proc().wait_exit(Duration::from_secs(6)).await.unwrap(),
        Some(0)
    );
    assert_eq!(
        m.b.proc().wait_exit(Duration::from_secs(6)).await.unwrap(),
        Some(0)
    );
}

#[tokio::test]
async fn http_proxy_listener_routes_by_host() {
    let m = Mesh::start(MeshOpts::default()).await;
    // A second sidecar "C" with only a proxy listener, calling B by name.
    let proxy = free_addr("127.0.0.1");
    let d = m.dir.path().display().to_string();
    issue(&m.ca, m.dir.path(), "c", CertSpec::spiffe(A_ID));
    let yaml = format!(
        r#"
identity: {{ cert: {d}/c.crt, key: {d}/c.key, trust_bundle: {d}/ca.crt }}
outbound:
  payments:
    endpoints: ["{}"]
    server_identity: "{B_ID}"
proxy: {{ listen: "{proxy}" }}
admin: {{ address: "${{ADMIN}}" }}
"#,
        m.b_inbound
    );
    let _c = backends_demo::Sidecar::start(&yaml, &[]).await.unwrap();
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://{proxy}")).unwrap())
        .build()
        .unwrap();
    let r = client.get("http://payments/orders").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let j: serde_json::Value = r.json().await.unwrap();
    assert_eq!(j["path"], "/orders");
    let r = client.get("http://unknown/").send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["x-sidecar-error"], "unknown_dependency");
}

#[tokio::test]
async fn a_bad_endpoint_is_ejected_without_tripping_the_dependency_breaker() {
    let m = Mesh::start(MeshOpts::default()).await;
    // A second B in front of a second app that always fails.
    let bad_app = Backend::builder().id("bad").spawn().await.unwrap();
    bad_app.fault("status=503").await.unwrap();
    let b2_in = free_addr("127.0.0.1");
    let _b2 = start_in(
        m.dir.path(),
        &b_config(&[A_ID.to_owned()]),
        &[
            ("INBOUND", b2_in.to_string()),
            ("APP", bad_app.addr().to_string()),
        ],
    )
    .await;
    let out = free_addr("127.0.0.1");
    let o = MeshOpts {
        dep_policy: "    outlier_detection: { consecutive_failures: 3, eject_for: 30s }\n    circuit_breaker: { failure_rate: 50%, min_requests: 10 }\n".into(),
        ..Default::default()
    };
    let yaml = a_config(&o).replace("endpoints: [\"${B}\"]", "endpoints: [\"${B}\", \"${B2}\"]");
    let a2 = start_in(
        m.dir.path(),
        &yaml,
        &[
            ("OUT", out.to_string()),
            ("B", m.b_inbound.to_string()),
            ("B2", b2_in.to_string()),
        ],
    )
    .await;
    let c = test_client();
    let mut fails = 0;
    for _ in 0..60 {
        if c.get(format!("http://{out}/"))
            .send()
            .await
            .unwrap()
            .status()
            != 200
        {
            fails += 1;
        }
    }
    assert!(fails <= 3, "only the calls before ejection fail: {fails}");
    let deps = a2.admin_json("/dependencies").await.unwrap();
    let d = &deps["dependencies"][0];
    assert_eq!(d["breaker"]["state"], "closed", "{d}");
    let ejected: Vec<_> = d["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ejected"] == true)
        .collect();
    assert_eq!(ejected.len(), 1, "{d}");
    assert_eq!(ejected[0]["address"], b2_in.to_string());
}
