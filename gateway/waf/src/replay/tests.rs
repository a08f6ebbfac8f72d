#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::spec::PolicySpec;

#[test]
fn simple_jsonl_shapes() {
    let text = r#"
# comment
{"method":"POST","target":"/a?x=1","headers":{"Host":"h","X":["1","2"]},"body":"q=1","client_ip":"10.0.0.1","route":"api","status":200,"group":"sqli"}
{"path":"/b","query":"?y=2","headers":[["Host","h"]],"body_base64":"aGk="}
{"path":"/c","body":{"a":1}}
not json
{"method":"GET"}
"#;
    let p = parse(text);
    assert_eq!(p.requests.len(), 3);
    assert_eq!(p.errors.len(), 2);
    let a = &p.requests[0];
    assert_eq!(a.target, b"/a?x=1");
    assert_eq!(a.headers.len(), 3);
    assert_eq!(a.body.as_deref(), Some(&b"q=1"[..]));
    assert_eq!(a.status, Some(200));
    assert_eq!(a.route.as_deref(), Some("api"));
    assert_eq!(a.extra.get("group").and_then(|v| v.as_str()), Some("sqli"));
    assert_eq!(p.requests[1].target, b"/b?y=2");
    assert_eq!(p.requests[1].body.as_deref(), Some(&b"hi"[..]));
    assert_eq!(p.requests[2].body.as_deref(), Some(&br#"{"a":1}"#[..]));
    assert_eq!(p.errors[0].line, 6);
}

#[test]
fn access_log_lines() {
    let p = parse(
        r#"{"time":"2026-01-01T00:00:00.000Z","client":"203.0.113.5","method":"GET","host":"shop","path":"/p?id=1","route":"web","status":302}"#,
    );
    let r = &p.requests[0];
    assert_eq!(r.client_ip, Some("203.0.113.5".parse().unwrap()));
    assert_eq!(r.headers, vec![("host".to_string(), b"shop".to_vec())]);
    assert_eq!(r.status, Some(302));
}

#[test]
fn har() {
    let har = r#"{"log":{"version":"1.2","entries":[
      {"request":{"method":"POST","url":"https://shop.example:8443/login?next=%2F","headers":[{"name":":authority","value":"x"},{"name":"Content-Type","value":"application/x-www-form-urlencoded"}],"postData":{"mimeType":"application/x-www-form-urlencoded","text":"u=a&p=b"}},"response":{"status":200}},
      {"request":{"method":"GET","url":"https://shop.example?q=1","headers":[]},"response":{"status":0}}
    ]}}"#;
    let p = parse(har);
    assert_eq!(p.requests.len(), 2);
    let r = &p.requests[0];
    assert_eq!(r.target, b"/login?next=%2F");
    assert!(r
        .headers
        .iter()
        .any(|(k, v)| k == "host" && v == b"shop.example:8443"));
    assert!(!r.headers.iter().any(|(k, _)| k.starts_with(':')));
    assert_eq!(r.body.as_deref(), Some(&b"u=a&p=b"[..]));
    assert_eq!(p.requests[1].target, b"/?q=1");
    assert_eq!(p.requests[1].status, None);
}

#[test]
fn report_puts_false_positive_candidates_first() {
    let policy = Policy::compile(&PolicySpec::default()).unwrap();
    let mut scratch = Scratch::new();
    let text = r#"
{"target":"/a?q=%27%20or%201%3D1--","headers":{"host":"h"},"status":403,"route":"web"}
{"target":"/b?f=../../../../etc/passwd","headers":{"host":"h"},"status":200,"route":"api"}
{"target":"/c?q=hello","headers":{"host":"h"},"status":200,"route":"api"}
"#;
    let mut report = Report::default();
    for r in parse(text).requests {
        let o = r.inspect(&policy, &mut scratch);
        report.add(&r, &o);
    }
    assert_eq!(report.total, 3);
    assert_eq!(report.blocked, 2);
    assert_eq!(report.fp_candidates, 1);
    let routes = report.routes_sorted();
    assert_eq!(routes[0].0, "api");
    assert_eq!(routes[0].1.fp_candidates, 1);
    let rules = report.rules_sorted();
    assert!(rules[0].0.starts_with("lfi."), "{rules:?}");
    assert!(serde_json::to_string(&report).is_ok());
}
