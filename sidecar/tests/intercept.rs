//! Transparent interception in a network namespace this test creates: an app's plain
//! `curl http://10.77.0.1:8080/` (the dependency's "service address", on a veth inside
//! the namespace) is redirected by the rules of `sidecar iptables install` to sidecar A,
//! which sends it through the dependency's stack (retries, mTLS) to sidecar B and the
//! backend; an address no dependency lists is passed through untouched (or refused);
//! after `sidecar iptables uninstall` no tollgate table is left.
//!
//! Everything runs inside the namespace (`ip netns exec`): the backends, both
//! sidecars, and curl as the app. Sidecar A runs with a group of its own (gid 1337,
//! `setpriv --regid`) that the rules exclude, so its own connections are not
//! redirected back into it. Needs root (CI runs as root); skipped with a message when
//! `ip netns add` is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use backends_demo::pki::{CertSpec, TestCa};
use backends_demo::{bin_path, free_addr, sum_metric, wait_until, Proc};
use common::{b_config, issue, A_ID, B_ID};

/// The group sidecar A runs with, excluded by the rules.
const SIDECAR_GID: &str = "1337";
/// The dependency's service address (a ClusterIP:port in Kubernetes).
const SERVICE: &str = "10.77.0.1:8080";
/// Another address in the namespace, no dependency's: a plain backend listens there.
const OTHER_IP: &str = "10.77.0.2";

/// A network namespace, deleted on drop (even when the test fails).
struct Netns {
    name: String,
}

impl Netns {
    /// `None` when namespaces cannot be made here (not root).
    fn create() -> Option<Self> {
        let name = format!("tg-{}", std::process::id());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "skipped: `ip netns add` failed (needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Self { name })
    }

    fn command(&self, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Run `args` in the namespace; panics when it cannot be started.
    fn run(&self, args: &[&str]) -> Output {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c.output().unwrap()
    }

    fn ok(&self, args: &[&str]) {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `curl` in the namespace as the app would: (HTTP status or 0, body, curl's exit code).
    async fn curl(&self, args: &[&str]) -> (u16, String, i32) {
        let out = tokio::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.name,
                "curl",
                "-sS",
                "--max-time",
                "5",
            ])
            .args(["-w", "\n%{http_code}"])
            .args(args)
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (
            code.trim().parse().unwrap_or(0),
            body.to_owned(),
            out.status.code().unwrap_or(-1),
        )
    }

    async fn get(&self, url: &str) -> (u16, String) {
        let (status, body, _) = self.curl(&[url]).await;
        (status, body)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn spawn(mut cmd: Command, name: &str) -> Proc {
    cmd.env("RUST_LOG", "info");
    Proc::spawn(cmd, name).unwrap()
}

async fn wait_ready(ns: &Netns, admin: &str, proc: &mut Proc) {
    let url = format!("http://{admin}/readyz");
    let ready = wait_until(Duration::from_secs(20), || {
        let url = url.clone();
        async move { ns.get(&url).await.0 == 200 }
    })
    .await;
    ready.unwrap_or_else(|e| panic!("{} not ready: {e}\n{}", proc.name(), proc.log()));
}

async fn metric(ns: &Netns, admin: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let (status, text) = ns.get(&format!("http://{admin}/metrics")).await;
    assert_eq!(status, 200);
    sum_metric(&text, name, labels)
}

fn a_config(dir: &Path, listen: &str, b: &str, admin: &str, unknown: &str) -> String {
    let d = dir.display();
    format!(
        r#"
identity: {{ cert: {d}/a.crt, key: {d}/a.key, trust_bundle: {d}/ca.crt }}
intercept: {{ listen: "{listen}", unknown: {unknown} }}
outbound:
  app:
    addresses: ["{SERVICE}"]
    endpoints: ["{b}"]
    server_identity: "{B_ID}"
    retry: {{ attempts: 10, backoff: 1ms..5ms, budget: 100% }}
admin: {{ address: "{admin}" }}
server: {{ shutdown: {{ drain_delay: 0s, grace_period: 1s }} }}
"#
    )
}

#[tokio::test]
async fn an_apps_plain_calls_are_intercepted_and_the_rules_removed() {
    let Some(ns) = Netns::create() else {
        return;
    };
    ns.ok(&["ip", "link", "set", "lo", "up"]);
    // A veth pair inside the namespace carries the "service" addresses (this kernel
    // has no dummy interfaces); they are local, and not loopback, as a ClusterIP is not.
    ns.ok(&[
        "ip", "link", "add", "tgsvc0", "type", "veth", "peer", "name", "tgsvc1",
    ]);
    ns.ok(&["ip", "link", "set", "tgsvc0", "up"]);
    ns.ok(&["ip", "link", "set", "tgsvc1", "up"]);
    ns.ok(&["ip", "addr", "add", "10.77.0.1/32", "dev", "tgsvc0"]);
    ns.ok(&[
        "ip",
        "addr",
        "add",
        &format!("{OTHER_IP}/32"),
        "dev",
        "tgsvc0",
    ]);

    let ca = TestCa::new("intercept-ca").unwrap();
    let dir = tempfile::tempdir().unwrap();
    ca.write_bundle(&dir.path().join("ca.crt")).unwrap();
    issue(&ca, dir.path(), "a", CertSpec::spiffe(A_ID));
    issue(&ca, dir.path(), "b", CertSpec::spiffe(B_ID));
    // Ports picked in our namespace; the new one has nothing listening at all.
    let port = || free_addr("127.0.0.1").port();
    let (app, other) = (
        format!("127.0.0.1:{}", port()),
        format!("{OTHER_IP}:{}", port()),
    );
    let (b_in, b_admin) = (
        format!("127.0.0.1:{}", port()),
        format!("127.0.0.1:{}", port()),
    );
    let (a_listen, a_admin) = (
        format!("127.0.0.1:{}", port()),
        format!("127.0.0.1:{}", port()),
    );

    let demo = bin_path("backend-demo").unwrap();
    let sidecar = bin_path("sidecar").unwrap();
    let mut c = ns.command(&demo);
    c.args(["--listen", &app, "--zone", "z", "--id", "app"]);
    let _app = spawn(c, "backend-app");
    let mut c = ns.command(&demo);
    c.args(["--listen", &other, "--zone", "z", "--id", "other"]);
    let _other = spawn(c, "backend-other");

    let b_yaml = b_config(&[A_ID.into()])
        .replace(
            "cert: b.crt",
            &format!("cert: {}/b.crt", dir.path().display()),
        )
        .replace(
            "key: b.key",
            &format!("key: {}/b.key", dir.path().display()),
        )
        .replace(
            "trust_bundle: ca.crt",
            &format!("trust_bundle: {}/ca.crt", dir.path().display()),
        )
        .replace("${INBOUND}", &b_in)
        .replace("${APP}", &app)
        .replace("${ADMIN}", &b_admin);
    std::fs::write(dir.path().join("b.yaml"), b_yaml).unwrap();
    let mut c = ns.command(&sidecar);
    c.arg("--config").arg(dir.path().join("b.yaml"));
    let mut b = spawn(c, "sidecar-b");

    let a_path = dir.path().join("a.yaml");
    std::fs::write(
        &a_path,
        a_config(dir.path(), &a_listen, &b_in, &a_admin, "passthrough"),
    )
    .unwrap();
    // Sidecar A: root's uid (it reads root's files) with a group of its own.
    let mut c = ns.command(Path::new("setpriv"));
    c.args(["--regid", SIDECAR_GID, "--clear-groups"])
        .arg(&sidecar)
        .arg("--config")
        .arg(&a_path);
    let mut a = spawn(c, "sidecar-a");
    wait_ready(&ns, &b_admin, &mut b).await;
    wait_ready(&ns, &a_admin, &mut a).await;
    wait_until(Duration::from_secs(10), || async {
        ns.get(&format!("http://{app}/healthz")).await.0 == 200
            && ns.get(&format!("http://{other}/healthz")).await.0 == 200
    })
    .await
    .expect("backends up");

    // Before the rules: the service address is nobody's (curl cannot connect).
    assert_eq!(ns.get(&format!("http://{SERVICE}/")).await.0, 0);

    let a_port = a_listen.rsplit_once(':').unwrap().1;
    let out = ns.run(&[
        sidecar.to_str().unwrap(),
        "iptables",
        "install",
        "--port",
        a_port,
        "--gid",
        SIDECAR_GID,
        "--no-ipv6",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ruleset = String::from_utf8_lossy(&ns.run(&["nft", "list", "ruleset"]).stdout).into_owned();
    println!("{ruleset}");
    assert!(ruleset.contains("table ip tollgate"), "{ruleset}");

    // Half the backend's answers fail; the dependency's retries (attempts 10) hide it.
    let (status, _, _) = ns
        .curl(&[
            "-X",
            "POST",
            &format!("http://{app}/_fault?status=503&rate=0.3"),
        ])
        .await;
    assert_eq!(status, 200);
    const CALLS: usize = 20;
    for i in 0..CALLS {
        let (status, body) = ns.get(&format!("http://{SERVICE}/orders/{i}")).await;
        assert_eq!(status, 200, "call {i}: {body}\n{}", a.log());
        let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(echo["id"], "app");
        assert_eq!(echo["path"], format!("/orders/{i}"));
        // Through sidecar B: it verified A's certificate and says so.
        assert_eq!(echo["headers"]["x-client-spiffe-id"], A_ID, "{body}");
    }
    let dep = [("dependency", "app")];
    let retries = metric(&ns, &a_admin, "sidecar_retries_total", &dep).await;
    assert!(
        retries >= 1.0,
        "no retries for {CALLS} calls with 30% failing"
    );
    let intercepted = |outcome: &'static str| {
        let (ns, a_admin) = (&ns, &a_admin);
        async move {
            metric(
                ns,
                a_admin,
                "sidecar_intercepted_connections_total",
                &[("outcome", outcome)],
            )
            .await
        }
    };
    assert_eq!(intercepted("dependency").await, CALLS as f64);
    println!("{CALLS} intercepted calls, all 200, {retries} retries");

    // An address no dependency lists: passed through untouched, to the other backend.
    let (status, body) = ns.get(&format!("http://{other}/x")).await;
    assert_eq!(status, 200, "{body}\n{}", a.log());
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["id"], "other");
    assert!(
        echo["headers"].get("x-client-spiffe-id").is_none(),
        "{body}"
    );
    assert_eq!(intercepted("passthrough").await, 1.0);

    // `unknown: refuse` (a reload): the same call is closed without an answer.
    std::fs::write(
        &a_path,
        a_config(dir.path(), &a_listen, &b_in, &a_admin, "refuse"),
    )
    .unwrap();
    wait_until(Duration::from_secs(10), || async {
        ns.get(&format!("http://{other}/x")).await.0 == 0
    })
    .await
    .expect("unknown destinations refused after the reload");
    assert!(intercepted("refused").await >= 1.0);
    assert_eq!(ns.get(&format!("http://{SERVICE}/")).await.0, 200);

    // Uninstall: no tollgate table, the service address is nobody's again; twice is fine.
    for _ in 0..2 {
        let out = ns.run(&[sidecar.to_str().unwrap(), "iptables", "uninstall"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ruleset = String::from_utf8_lossy(&ns.run(&["nft", "list", "ruleset"]).stdout).into_owned();
    assert!(!ruleset.contains("tollgate"), "{ruleset}");
    assert_eq!(ns.get(&format!("http://{SERVICE}/")).await.0, 0);
    assert_eq!(ns.get(&format!("http://{other}/x")).await.0, 200);
}
