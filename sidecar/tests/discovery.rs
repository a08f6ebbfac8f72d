//! EndpointSlice discovery of peer sidecars: sidecar A finds the peers of its
//! dependency from a fake Kubernetes API server (real list and watch JSON), each peer a
//! real sidecar in front of a backend-demo that says its id and zone. Peers in zone a
//! listen on 127.0.1.x, zone b on 127.0.2.x. Real processes, real mTLS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use backends_demo::kube_api::FakeKubeApi;
use backends_demo::pki::{CertSpec, TestCa};
use backends_demo::{free_addr, free_port, test_client, wait_until, Backend, Sidecar};
use common::{a_config, b_config, issue, start_in, MeshOpts, A_ID, B_ID};
use serde_json::{json, Value};

/// A backend-demo (`id`, `zone`) behind a peer sidecar whose inbound listens on `ip`.
struct Peer {
    _sidecar: Sidecar,
    _app: Backend,
    inbound: SocketAddr,
}

async fn peer(dir: &Path, id: &str, zone: &str, ip: &str) -> Peer {
    let app = Backend::builder()
        .id(id)
        .zone(zone)
        .ip(ip)
        .spawn()
        .await
        .unwrap();
    let inbound = free_addr(ip);
    let sidecar = start_in(
        dir,
        &b_config(&[A_ID.to_owned()]),
        &[
            ("INBOUND", inbound.to_string()),
            ("APP", app.addr().to_string()),
        ],
    )
    .await;
    Peer {
        _sidecar: sidecar,
        _app: app,
        inbound,
    }
}

/// An EndpointSlice of Service `payments` with one pod: the peer's IP, the Service port
/// `sidecar` pointing at its inbound listener (the app's port beside it, as a real
/// Service would list both), the pod's zone and state.
fn slice(name: &str, p: &Peer, zone: &str, state: &str) -> Value {
    let (ready, serving, terminating) = match state {
        "ready" => (true, true, false),
        "terminating" => (false, true, true),
        "not-ready" => (false, false, false),
        other => panic!("{other}"),
    };
    json!({
        "metadata": {
            "name": name,
            "labels": { "kubernetes.io/service-name": "payments" },
        },
        "addressType": "IPv4",
        "ports": [
            { "name": "http", "port": 8080, "protocol": "TCP" },
            { "name": "sidecar", "port": p.inbound.port(), "protocol": "TCP" },
        ],
        "endpoints": [{
            "addresses": [p.inbound.ip().to_string()],
            "conditions": { "ready": ready, "serving": serving, "terminating": terminating },
            "zone": zone,
        }],
    })
}

struct World {
    _ca: TestCa,
    dir: tempfile::TempDir,
    api: FakeKubeApi,
    pa: Peer,
    pb: Peer,
}

/// Certificates, the fake API server, and two peers: `pa` in zone a, `pb` in zone b,
/// both listed ready.
async fn world() -> World {
    let ca = TestCa::new("discovery-ca").unwrap();
    let dir = tempfile::tempdir().unwrap();
    ca.write_bundle(&dir.path().join("ca.crt")).unwrap();
    issue(&ca, dir.path(), "a", CertSpec::spiffe(A_ID));
    issue(&ca, dir.path(), "b", CertSpec::spiffe(B_ID));
    let api = FakeKubeApi::spawn("shop").await.unwrap();
    let pa = peer(dir.path(), "pa", "a", "127.0.1.1").await;
    let pb = peer(dir.path(), "pb", "b", "127.0.2.1").await;
    api.apply(slice("payments-a", &pa, "a", "ready"));
    api.apply(slice("payments-b", &pb, "b", "ready"));
    World {
        _ca: ca,
        dir,
        api,
        pa,
        pb,
    }
}

/// Sidecar A's config: dependency `app` discovered from Service `payments` through
/// `kubeconfig`, `static_endpoints` beside it (YAML list items, may be empty).
fn discovering(kubeconfig: &Path, static_endpoints: &str, policy: &str) -> String {
    a_config(&MeshOpts {
        dep_policy: policy.into(),
        ..Default::default()
    })
    .replace(
        "endpoints: [\"${B}\"]",
        &format!(
            "endpoints: [{static_endpoints}]\n    discover: {{ kubernetes: {{ service: payments, port: sidecar, kubeconfig: \"{}\" }} }}",
            kubeconfig.display()
        ),
    )
}

/// The ids of the backends that answered `n` calls; a failed call panics.
async fn answered_by(url: &str, n: usize) -> Result<BTreeSet<String>, String> {
    let c = test_client();
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        let r = c.get(url).send().await.map_err(|e| e.to_string())?;
        if r.status() != 200 {
            return Err(format!(
                "{} {:?}",
                r.status(),
                r.headers().get("x-sidecar-error")
            ));
        }
        seen.insert(r.headers()["x-backend-id"].to_str().unwrap().to_owned());
    }
    Ok(seen)
}

/// Wait until `n` calls in a row are answered by exactly `want`.
async fn wait_for(a: &Sidecar, url: &str, want: &[&str], what: &str) {
    let want: BTreeSet<String> = want.iter().map(|s| (*s).to_owned()).collect();
    let last = std::cell::RefCell::new(Ok(BTreeSet::new()));
    let done = wait_until(Duration::from_secs(15), || async {
        let got = answered_by(url, 20).await;
        let ok = got.as_ref().is_ok_and(|s| *s == want);
        *last.borrow_mut() = got;
        ok
    })
    .await;
    if let Err(e) = done {
        panic!(
            "{what}: wanted {want:?}, last {:?} ({e})\n{}",
            last.borrow(),
            a.log()
        );
    }
}

#[tokio::test]
async fn peers_come_from_endpoint_slices_and_calls_follow_the_slices() {
    let w = world().await;
    let kubeconfig = w.api.kubeconfig(w.dir.path()).unwrap();
    let out = free_addr("127.0.0.1");
    let a = start_in(
        w.dir.path(),
        &discovering(&kubeconfig, "", ""),
        &[("OUT", out.to_string())],
    )
    .await;
    let url = format!("http://{out}/");

    // Both pods of the slices, through their sidecars.
    wait_for(&a, &url, &["pa", "pb"], "both peers discovered").await;
    // Nothing resolved by DNS, nothing failed.
    assert!(!a.log().contains("no addresses"), "{}", a.log());
    assert_eq!(
        a.metric("sidecar_discovery_errors_total", &[("dependency", "app")])
            .await
            .unwrap(),
        0.0
    );
    let deps = a.admin_json("/dependencies").await.unwrap().to_string();
    assert!(deps.contains("\"zone\":\"b\""), "{deps}");

    // pb's pod turns not ready: calls go to pa only.
    w.api.apply(slice("payments-b", &w.pb, "b", "not-ready"));
    wait_for(&a, &url, &["pa"], "pb not ready").await;

    // pb back, pa's slice deleted (scaled down): calls go to pb only.
    w.api.apply(slice("payments-b", &w.pb, "b", "ready"));
    w.api.delete("payments-a");
    wait_for(&a, &url, &["pb"], "pa's slice deleted").await;

    // pa back; then terminating while pb is ready: pa gets nothing new.
    w.api.apply(slice("payments-a", &w.pa, "a", "ready"));
    wait_for(&a, &url, &["pa", "pb"], "pa's slice back").await;
    w.api.apply(slice("payments-a", &w.pa, "a", "terminating"));
    wait_for(&a, &url, &["pb"], "pa terminating").await;
    // Once no pod is ready, the terminating ones serve rather than nothing.
    w.api.apply(slice("payments-b", &w.pb, "b", "terminating"));
    wait_for(&a, &url, &["pa", "pb"], "only terminating pods left").await;
}

#[tokio::test]
async fn zone_aware_routing_uses_the_zones_of_the_slices() {
    let w = world().await;
    let kubeconfig = w.api.kubeconfig(w.dir.path()).unwrap();
    let out = free_addr("127.0.0.1");
    let yaml = discovering(&kubeconfig, "", "    zone_aware: {}")
        .replace("\nidentity:", "\nzone: a\nidentity:");
    let a = start_in(w.dir.path(), &yaml, &[("OUT", out.to_string())]).await;
    let url = format!("http://{out}/");
    let same = || async {
        a.metric(
            "sidecar_dependency_requests_total",
            &[("dependency", "app"), ("locality", "same_zone")],
        )
        .await
        .unwrap()
    };
    let cross = || async {
        a.metric(
            "sidecar_dependency_requests_total",
            &[("dependency", "app"), ("locality", "cross_zone")],
        )
        .await
        .unwrap()
    };

    // Both discovered (the zone-b slice too: wait for it before judging preference).
    wait_until(Duration::from_secs(15), || async {
        let deps = a.admin_json("/dependencies").await.unwrap().to_string();
        deps.contains(&w.pa.inbound.to_string()) && deps.contains(&w.pb.inbound.to_string())
    })
    .await
    .expect("both peers discovered");
    // Sidecar A is in zone a: calls stay with pa, the zone-a pod.
    let before = (same().await, cross().await);
    assert_eq!(
        answered_by(&url, 30).await,
        Ok(BTreeSet::from(["pa".to_owned()]))
    );
    assert_eq!(same().await - before.0, 30.0);
    assert_eq!(cross().await, before.1);
    assert_eq!(
        a.metric(
            "sidecar_dependency_requests_total",
            &[("dependency", "app"), ("locality", "unknown")]
        )
        .await
        .unwrap(),
        0.0,
        "every discovered endpoint has its slice's zone"
    );

    // Zone a's pod not ready: calls cross to zone b, and are counted as crossing.
    w.api.apply(slice("payments-a", &w.pa, "a", "not-ready"));
    wait_for(&a, &url, &["pb"], "zone a not ready").await;
    assert!(cross().await >= 20.0);
}

#[tokio::test]
async fn static_endpoints_are_merged_and_an_unreachable_api_is_counted() {
    let w = world().await;
    // Nothing listens there.
    let kubeconfig = w.dir.path().join("dead-kubeconfig.yaml");
    std::fs::write(
        &kubeconfig,
        format!("apiVersion: v1\nkind: Config\nclusters:\n- name: x\n  cluster: {{ server: \"http://127.0.0.1:{}\" }}\nusers:\n- name: x\n  user: {{}}\ncontexts:\n- name: x\n  context: {{ cluster: x, user: x, namespace: shop }}\ncurrent-context: x\n", free_port()),
    )
    .unwrap();
    let out = free_addr("127.0.0.1");
    let a = start_in(
        w.dir.path(),
        &discovering(&kubeconfig, &format!("\"{}\"", w.pa.inbound), ""),
        &[("OUT", out.to_string())],
    )
    .await;
    let url = format!("http://{out}/");
    wait_until(Duration::from_secs(15), || async {
        a.metric("sidecar_discovery_errors_total", &[("dependency", "app")])
            .await
            .unwrap()
            >= 2.0
    })
    .await
    .expect("failed watches are counted");
    // The static endpoint serves meanwhile; the warnings say what failed.
    assert_eq!(
        answered_by(&url, 5).await,
        Ok(BTreeSet::from(["pa".to_owned()]))
    );
    assert!(a.log().contains("EndpointSlices"), "{}", a.log());

    // The same static endpoint (pa) beside a working discovery that lists only pb:
    // calls reach both.
    w.api.delete("payments-a");
    let live = w.api.kubeconfig(w.dir.path()).unwrap();
    let out = free_addr("127.0.0.1");
    let merged = start_in(
        w.dir.path(),
        &discovering(&live, &format!("\"{}\"", w.pa.inbound), ""),
        &[("OUT", out.to_string())],
    )
    .await;
    wait_for(
        &merged,
        &format!("http://{out}/"),
        &["pa", "pb"],
        "static and discovered endpoints merged",
    )
    .await;
}
