//! `tollgate_waf::Policy::inspect` on arbitrary requests: the bytes are split into a
//! target, header values and a body sent under each content type the engine parses.
//! Checks "never panics" and what the gateway relies on: a score at the threshold
//! blocks, excerpts stay short, and the work done is bounded by the policy's limits. Also feeds the bytes to the replay parsers.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tollgate_waf::{Action, Body, Policy, PolicySpec, Request, Scratch, MAX_VALUE};

const CONTENT_TYPES: &[&str] = &[
    "application/x-www-form-urlencoded",
    "application/json",
    "multipart/form-data; boundary=b",
    "application/xml",
    "text/plain",
    "application/octet-stream",
    "",
];

fn policy() -> &'static Policy {
    static P: OnceLock<Policy> = OnceLock::new();
    P.get_or_init(|| {
        let spec: PolicySpec = serde_json::from_str(
            r#"{
              "paranoia": 4,
              "body": { "limit": 8192 },
              "max_arguments": 200,
              "max_argument_length": 2048,
              "allowed_methods": ["GET", "POST"],
              "exclusions": [ { "rules": ["xss"], "arguments": ["json:html*"], "paths": ["/cms"] } ],
              "rules": [
                { "id": "l", "when": { "any": [ { "body": { "name": "*", "contains": "x" } }, { "query": { "name": "a", "regex": "^[0-9]+$" } } ] }, "action": { "label": "x" } },
                { "id": "c", "when": { "all": [ { "label": { "equals": "x" } }, { "not": { "header": { "name": "h1", "length_gt": 3 } } } ] }, "action": "count" },
                { "id": "s", "when": { "cookie": { "name": "k", "gt": 5 } }, "action": { "score": 1 } }
              ]
            }"#,
        )
        .expect("spec");
        Policy::compile(&spec).expect("compile")
    })
}

fuzz_target!(|data: &[u8]| {
    let p = policy();
    let mut parts = data.splitn(5, |&b| b == 0xff);
    let target = parts.next().unwrap_or(b"/");
    let h1 = parts.next().unwrap_or(b"");
    let h2 = parts.next().unwrap_or(b"");
    let cookie = parts.next().unwrap_or(b"");
    let body = parts.next().unwrap_or(b"");
    let ct = CONTENT_TYPES[data.first().map_or(0, |b| *b as usize) % CONTENT_TYPES.len()];
    let headers: [(&str, &[u8]); 6] = [
        ("host", b"example.com"),
        ("user-agent", h1),
        ("h1", h1),
        ("x-h2", h2),
        ("cookie", cookie),
        ("content-type", ct.as_bytes()),
    ];
    let n = if ct.is_empty() { 5 } else { 6 };
    let mut scratch = Scratch::new();
    for truncated in [false, true] {
        let req = Request {
            method: if truncated { "POST" } else { "PUT" },
            target,
            authority: None,
            headers: &headers[..n],
            client_ip: "192.0.2.1".parse().expect("ip"),
            body: Some(Body { bytes: body, truncated }),
        };
        let o = p.inspect(&req, &mut scratch);
        assert!(
            o.would_block() || o.score < 5 || o.action == Action::Allow,
            "score {} over the threshold without a block",
            o.score
        );
        for m in &o.matches {
            assert!(m.value.chars().count() <= MAX_VALUE, "{m}");
        }
        assert!(o.stats.arguments <= 201, "{:?}", o.stats);
        assert!(o.stats.bytes <= 3 * (data.len() as u64) + 64, "{:?}", o.stats);
        let _ = serde_json::to_string(&o).expect("serialize");
    }
    let text = String::from_utf8_lossy(data);
    let parsed = tollgate_waf::replay::parse(&text);
    for r in parsed.requests.iter().take(4) {
        let _ = r.inspect(p, &mut scratch);
    }
});
