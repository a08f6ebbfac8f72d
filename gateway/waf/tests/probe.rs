//! Ad-hoc probe: `WAF_PROBE='value' cargo test -p tollgate-waf --test probe -- --nocapture`
#![allow(clippy::unwrap_used, clippy::expect_used)]
use tollgate_waf::{Policy, PolicySpec, Request, Scratch};

#[test]
fn probe() {
    let Ok(v) = std::env::var("WAF_PROBE") else {
        return;
    };
    let spec = PolicySpec {
        paranoia: std::env::var("WAF_PARANOIA")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(1),
        ..PolicySpec::default()
    };
    let p = Policy::compile(&spec).unwrap();
    let mut s = Scratch::new();
    for line in v.lines() {
        let enc: String = line.bytes().map(|b| format!("%{b:02X}")).collect();
        let target = format!("/p?v={enc}");
        let headers: &[(&str, &[u8])] = &[("host", b"h")];
        let req = Request {
            headers,
            ..Request::get(target.as_bytes(), "1.2.3.4".parse().unwrap())
        };
        let o = p.inspect(&req, &mut s);
        println!(
            "{:>3} {:?} {}",
            o.score,
            line,
            o.matches
                .iter()
                .map(|m| m.rule_id.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
    }
}

#[test]
fn fingerprints() {
    let Ok(v) = std::env::var("WAF_FP") else {
        return;
    };
    for line in v.lines() {
        let r = libinjectionrs::detect_sqli(line.to_lowercase().as_bytes());
        println!(
            "{} {:?} {:?}",
            r.is_injection(),
            r.fingerprint.map(|f| f.as_str().to_string()),
            line
        );
    }
}
