//! HTTP/1 desync mitigation (issue 18): the classifier's corpus (tests/data/desync.txt,
//! written by tests/data/make_desync_corpus.py from RFC 9110/9112, ALB's documented
//! reasons and published request-smuggling research) through the classifier alone,
//! then through a real gateway in each mode to a real backend: no severe request ever
//! reaches the backend, strictest forwards only compliant requests, and defensive closes
//! both connections after an ambiguous one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use backends_demo::{Backend, Gateway, GatewayConfig};
use gateway_lib::desync::{classify, Class};
use serde_json::json;

struct Case {
    class: Class,
    /// Pingora's parser refuses it before the gateway classifies it.
    parser_refuses: bool,
    /// Pingora percent-encodes its target before the gateway classifies it.
    parser_escapes: bool,
    raw: Vec<u8>,
    line: usize,
}

fn corpus() -> Vec<Case> {
    let text = include_str!("data/desync.txt");
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|(i, l)| {
            let mut parts = l.splitn(3, '\t');
            let class = Class::parse(parts.next().unwrap()).unwrap();
            let flags = parts.next().unwrap();
            Case {
                class,
                parser_refuses: flags == "P",
                parser_escapes: flags == "E",
                raw: unescape(parts.next().unwrap()),
                line: i + 1,
            }
        })
        .collect()
}

fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            match b[i + 1] {
                b'r' => out.push(b'\r'),
                b'n' => out.push(b'\n'),
                b't' => out.push(b'\t'),
                b'\\' => out.push(b'\\'),
                b'x' => {
                    out.push(u8::from_str_radix(&s[i + 2..i + 4], 16).unwrap());
                    i += 2;
                }
                c => panic!("bad escape \\{}", c as char),
            }
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

#[test]
fn the_classifier_puts_every_corpus_case_in_its_class() {
    let cases = corpus();
    assert!(cases.len() >= 250, "{} cases", cases.len());
    let mut wrong = Vec::new();
    let mut per_class = std::collections::BTreeMap::new();
    for c in &cases {
        *per_class.entry(c.class).or_insert(0) += 1;
        let got = classify(&c.raw);
        if got.class != c.class {
            wrong.push(format!(
                "line {}: want {:?}, got {:?} ({}): {:?}",
                c.line,
                c.class,
                got.class,
                got.reason.as_str(),
                String::from_utf8_lossy(&c.raw)
            ));
        }
    }
    println!("corpus: {per_class:?}");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// What came back: the status, the `Connection` header, and whether the backend
/// wrote it (it sets `x-backend-id`); `None` when the gateway closed without answering.
#[derive(Debug)]
struct Got {
    status: u16,
    connection: Option<String>,
    from_backend: bool,
}

fn send(addr: SocketAddr, raw: &[u8]) -> Option<Got> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(raw);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&out);
    let status = text.get(9..12)?.parse().ok()?;
    let header = |name: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name)
                .then(|| v.trim().to_ascii_lowercase())
        })
    };
    Some(Got {
        status,
        connection: header("connection"),
        from_backend: header("x-backend-id").is_some(),
    })
}

#[derive(Debug, PartialEq)]
enum Want {
    Forwarded,
    ForwardedClosed,
    Refused,
}

fn want(mode: &str, c: &Case) -> Want {
    if c.parser_refuses {
        return Want::Refused;
    }
    if c.parser_escapes {
        return Want::Forwarded;
    }
    match (c.class, mode) {
        (Class::Severe, _) => Want::Refused,
        (Class::Compliant, _) => Want::Forwarded,
        (_, "strictest") => Want::Refused,
        (Class::Ambiguous, "defensive") => Want::ForwardedClosed,
        _ => Want::Forwarded,
    }
}

#[tokio::test]
async fn each_mode_forwards_closes_or_refuses_by_class() {
    let cases = corpus();
    for mode in ["monitor", "defensive", "strictest"] {
        let backend = Backend::builder().id(mode).spawn().await.unwrap();
        let gw = Gateway::start(
            &GatewayConfig::new()
                .main_listener(json!({ "desync_mitigation": mode }))
                .upstream("app", &[backend.addr()])
                .route_with("all", "app", json!({ "retry": { "attempts": 1 } }))
                .to_yaml(),
        )
        .await
        .unwrap();
        let mut wrong = Vec::new();
        let mut forwarded = 0;
        for c in &cases {
            let w = want(mode, c);
            let got = send(gw.listen, &c.raw);
            // A forwarded request's answer is the backend's, whatever its status (a
            // backend may itself refuse what the gateway forwarded in `monitor`).
            let ok = match (&w, &got) {
                (Want::Forwarded, Some(g)) => g.from_backend,
                (Want::ForwardedClosed, Some(g)) => {
                    g.from_backend && g.connection.as_deref() == Some("close")
                }
                (Want::Refused, None) => true,
                (Want::Refused, Some(g)) => {
                    !g.from_backend
                        && g.status == 400
                        && (g.connection.as_deref() == Some("close") || c.class != Class::Severe)
                }
                _ => false,
            };
            if matches!(w, Want::Forwarded | Want::ForwardedClosed) {
                forwarded += 1;
            }
            if !ok {
                wrong.push(format!(
                    "line {} ({:?}): want {w:?}, got {got:?}: {:?}",
                    c.line,
                    c.class,
                    String::from_utf8_lossy(&c.raw)
                ));
            }
        }
        assert!(wrong.is_empty(), "mode {mode}:\n{}", wrong.join("\n"));
        // The backend saw exactly the forwarded requests: nothing refused, nothing
        // smuggled inside a body reached it.
        let seen = backend.stats().await.unwrap().requests;
        assert_eq!(seen, forwarded, "mode {mode}");
        let refused = gw
            .metric(
                "gateway_desync_requests_total",
                &[("mode", mode), ("class", "severe"), ("action", "refused")],
            )
            .await
            .unwrap();
        let severe_classified = cases
            .iter()
            .filter(|c| c.class == Class::Severe && !c.parser_refuses)
            .count();
        // Pingora's own checks refuse many severe requests before the gateway's guard
        // sees them (and count in its own logs); the rest are counted here.
        assert!(
            refused > 0.0 && refused as usize <= severe_classified,
            "{mode}: {refused} severe refusals counted of {severe_classified}"
        );
    }
}
