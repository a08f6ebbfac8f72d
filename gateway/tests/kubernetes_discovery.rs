//! EndpointSlice discovery against a fake Kubernetes API server (real list and watch
//! JSON, a dropped watch, a 410 Gone): zones and readiness from the slices drive
//! zone-aware balancing, terminating pods drain, and the gateway serves throughout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backends_demo::kube_api::FakeKubeApi;
use backends_demo::{free_port, test_client, wait_until, Backend, Gateway, GatewayConfig};
use serde_json::{json, Value};

/// An EndpointSlice as the EndpointSlice controller writes it.
fn slice(name: &str, port: u16, endpoints: &[(&str, &str, &str)]) -> Value {
    let eps: Vec<Value> = endpoints
        .iter()
        .map(|(ip, zone, state)| {
            let (ready, serving, terminating) = match *state {
                "ready" => (true, true, false),
                "terminating" => (false, true, true),
                "not-ready" => (false, false, false),
                other => panic!("{other}"),
            };
            json!({
                "addresses": [ip],
                "conditions": { "ready": ready, "serving": serving, "terminating": terminating },
                "zone": zone,
                "nodeName": format!("node-{zone}"),
                "targetRef": { "kind": "Pod", "namespace": "shop", "name": format!("web-{ip}") },
            })
        })
        .collect();
    json!({
        "metadata": {
            "name": name,
            "labels": { "kubernetes.io/service-name": "web", "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io" },
            "ownerReferences": [{ "apiVersion": "v1", "kind": "Service", "name": "web", "uid": "svc-uid", "controller": true, "blockOwnerDeletion": true }],
        },
        "addressType": "IPv4",
        "ports": [{ "name": "metrics", "port": 9100, "protocol": "TCP" }, { "name": "http", "port": port, "protocol": "TCP" }],
        "endpoints": eps,
    })
}

/// Which backends answer `n` requests, by id.
async fn spread(gw: &Gateway, n: usize) -> BTreeMap<String, usize> {
    let c = test_client();
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let r = c.get(gw.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let id = r.headers()["x-backend-id"].to_str().unwrap().to_owned();
        *seen.entry(id).or_insert(0) += 1;
    }
    seen
}

async fn wait_for_spread(gw: &Gateway, want: &[&str], what: &str) {
    let want: Vec<String> = want.iter().map(|s| (*s).to_owned()).collect();
    let mut last = BTreeMap::new();
    for _ in 0..100 {
        last = spread(gw, 12).await;
        if last.keys().cloned().collect::<Vec<_>>() == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: wanted only {want:?}, got {last:?}\n{}", gw.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_slices_drive_zones_readiness_and_draining() {
    let api = FakeKubeApi::spawn("shop").await.unwrap();
    let port = free_port();
    let mut backends = Vec::new();
    for (id, zone, ip) in [
        ("a1", "z1", "127.0.1.1"),
        ("a2", "z1", "127.0.1.2"),
        ("b1", "z2", "127.0.2.1"),
    ] {
        backends.push(
            Backend::builder()
                .id(id)
                .zone(zone)
                .ip(ip)
                .port(port)
                .spawn()
                .await
                .unwrap(),
        );
    }
    api.apply(slice(
        "web-z1",
        port,
        &[("127.0.1.1", "z1", "ready"), ("127.0.1.2", "z1", "ready")],
    ));
    api.apply(slice("web-z2", port, &[("127.0.2.1", "z2", "ready")]));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig(dir.path()).unwrap();
    let cfg = GatewayConfig::new()
        .set("zone", "z1")
        .route("web", "web")
        .upstream_with(
            "web",
            &[],
            json!({
                "balance": "round_robin",
                "zone_aware": {},
                "discover": { "kubernetes": {
                    "service": "web", "port": "http", "kubeconfig": kubeconfig.display().to_string(),
                } },
            }),
        );
    let gw = Gateway::start(&cfg.to_yaml()).await.unwrap();

    // The endpoints appear, with the zones the slices give them.
    wait_until(Duration::from_secs(10), || async {
        gw.admin_json("/upstreams").await.unwrap()["upstreams"][0]["total"] == 3
    })
    .await
    .expect("the three pods of the slices appear");
    let ups = gw.admin_json("/upstreams").await.unwrap();
    let zones: BTreeMap<String, String> = ups["upstreams"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["address"].as_str().unwrap().to_owned(),
                e["zone"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(zones[&format!("127.0.2.1:{port}")], "z2", "{ups}");
    assert_eq!(zones[&format!("127.0.1.1:{port}")], "z1");
    // Zone-aware: the local zone takes the traffic.
    wait_for_spread(&gw, &["a1", "a2"], "local zone first").await;

    // From here on, a client keeps sending: nothing below may fail a request.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, url) = (stop.clone(), gw.url("/"));
        tokio::spawn(async move {
            let c = test_client();
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => failed.push(r.status().to_string()),
                    Err(e) => failed.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (ok, failed)
        })
    };

    // Zone z1's pods turn not-ready: traffic moves to z2.
    api.apply(slice(
        "web-z1",
        port,
        &[
            ("127.0.1.1", "z1", "not-ready"),
            ("127.0.1.2", "z1", "not-ready"),
        ],
    ));
    wait_for_spread(&gw, &["b1"], "z1 not ready").await;

    // Back, then one z1 pod terminates: it drains (no new requests) while its
    // neighbour serves; it is still listed.
    api.apply(slice(
        "web-z1",
        port,
        &[
            ("127.0.1.1", "z1", "terminating"),
            ("127.0.1.2", "z1", "ready"),
        ],
    ));
    wait_for_spread(&gw, &["a2"], "a1 terminating").await;
    assert_eq!(
        gw.admin_json("/upstreams").await.unwrap()["upstreams"][0]["total"],
        3
    );

    // A dropped watch: the next change still arrives (the watch resumes).
    let watches = api.watches();
    api.drop_watches();
    wait_until(Duration::from_secs(10), || async {
        api.watches() > watches
    })
    .await
    .expect("the watch resumes");
    api.apply(slice(
        "web-z1",
        port,
        &[("127.0.1.1", "z1", "ready"), ("127.0.1.2", "z1", "ready")],
    ));
    wait_for_spread(&gw, &["a1", "a2"], "after a dropped watch").await;

    // 410 Gone: the client lists again, and changes keep arriving.
    let lists = api.lists();
    api.expire_watches();
    api.apply(slice(
        "web-z1",
        port,
        &[
            ("127.0.1.1", "z1", "ready"),
            ("127.0.1.2", "z1", "not-ready"),
        ],
    ));
    wait_until(Duration::from_secs(15), || async { api.lists() > lists })
        .await
        .expect("410 Gone makes the gateway list again");
    wait_for_spread(&gw, &["a1"], "after 410 Gone").await;

    // Slices deleted (Service scaled down in z1): only z2 is left.
    api.delete("web-z1");
    wait_for_spread(&gw, &["b1"], "z1 slice deleted").await;

    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = load.await.unwrap();
    assert!(ok > 50, "{ok}");
    assert!(
        failed.is_empty(),
        "{} failed requests: {failed:?}",
        failed.len()
    );
}

#[tokio::test]
async fn an_unreachable_api_server_is_retried_and_counted_and_requests_still_flow() {
    let app = Backend::builder().spawn().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there.
    let kubeconfig = dir.path().join("kubeconfig.yaml");
    std::fs::write(
        &kubeconfig,
        format!("apiVersion: v1\nkind: Config\nclusters:\n- name: x\n  cluster: {{ server: \"http://127.0.0.1:{}\" }}\nusers:\n- name: x\n  user: {{}}\ncontexts:\n- name: x\n  context: {{ cluster: x, user: x, namespace: shop }}\ncurrent-context: x\n", free_port()),
    )
    .unwrap();
    let cfg = GatewayConfig::new()
        .route("web", "web")
        .upstream_with(
            "web",
            &[app.addr()],
            json!({ "discover": { "kubernetes": { "service": "web", "kubeconfig": kubeconfig.display().to_string() } } }),
        );
    let gw = Gateway::start(&cfg.to_yaml()).await.unwrap();
    wait_until(Duration::from_secs(15), || async {
        gw.metric("gateway_discovery_errors_total", &[("upstream", "web")])
            .await
            .unwrap()
            >= 2.0
    })
    .await
    .expect("failed connections are counted");
    // The static endpoint keeps serving.
    assert_eq!(
        test_client()
            .get(gw.url("/"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(gw.log().contains("EndpointSlices"), "{}", gw.log());
}
