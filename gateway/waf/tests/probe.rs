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

/// Minimum time per inspection over many small batches (less sensitive to a busy
/// machine than a mean): `WAF_TIMING=1 cargo test --release -p tollgate-waf --test probe timing -- --nocapture`
#[test]
fn timing() {
    if std::env::var("WAF_TIMING").is_err() {
        return;
    }
    let t = std::time::Instant::now();
    let p = Policy::compile(&PolicySpec::default()).unwrap();
    println!("compile: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    let mut s = Scratch::new();
    let headers: &[(&str, &[u8])] = &[
        ("host", b"shop.example.com"),
        ("user-agent", b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"),
        ("accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"),
        ("accept-language", b"en-US,en;q=0.9,fr;q=0.8"),
        ("accept-encoding", b"gzip, deflate, br, zstd"),
        ("cookie", b"session=s%3Aj1k2l3m4n5.abcDEF123; _ga=GA1.2.1234567890.1715940000; theme=dark"),
        ("referer", b"https://shop.example.com/category/shoes?page=2"),
        ("sec-fetch-mode", b"navigate"),
        ("content-type", b"application/json"),
    ];
    let mut items = Vec::new();
    let mut i = 0;
    let body = loop {
        items.push(format!(r#"{{"id":"550e8400-e29b-41d4-a716-4466554400{i:02}","sku":"SKU-{i:05}","name":"Running shoe model {i}","qty":{i},"price":59.99,"color":"red","tags":["sale","summer"],"note":"Leave at the door, thanks!"}}"#));
        i += 1;
        let b = format!(
            r#"{{"customer":{{"name":"Renée O'Connor","email":"renee@example.com"}},"items":[{}]}}"#,
            items.join(",")
        );
        if b.len() >= 4096 {
            break b;
        }
    };
    let get = Request {
        headers: &headers[..8],
        ..Request::get(
            b"/products/search?q=red+running+shoes&size=42&page=2",
            "1.2.3.4".parse().unwrap(),
        )
    };
    let post = Request {
        method: "POST",
        headers,
        body: Some(tollgate_waf::Body {
            bytes: body.as_bytes(),
            truncated: false,
        }),
        ..Request::get(b"/api/v1/orders", "1.2.3.4".parse().unwrap())
    };
    for (name, req) in [("clean_get", get), ("clean_json_4k", post)] {
        let mut best = f64::MAX;
        // Short batches: on a busy machine a long one always contains a preemption.
        for _ in 0..2000 {
            let t = std::time::Instant::now();
            for _ in 0..10 {
                std::hint::black_box(p.inspect(std::hint::black_box(&req), &mut s));
            }
            best = best.min(t.elapsed().as_secs_f64() / 10.0);
        }
        println!("{name}: {:.2} us (min of 2000 batches of 10)", best * 1e6);
    }
}

/// `WAF_REPLAY=file.jsonl cargo test -p tollgate-waf --test probe replay -- --nocapture`
#[test]
fn replay() {
    let Ok(path) = std::env::var("WAF_REPLAY") else {
        return;
    };
    let p = Policy::compile(&PolicySpec::default()).unwrap();
    let mut s = Scratch::new();
    let text = std::fs::read_to_string(path).unwrap();
    for r in tollgate_waf::replay::parse(&text).requests {
        let o = r.inspect(&p, &mut s);
        println!(
            "{:>3} {} {} {}",
            o.score,
            r.line,
            String::from_utf8_lossy(&r.target)
                .chars()
                .take(100)
                .collect::<String>(),
            o.matches
                .iter()
                .map(|m| m.rule_id.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
    }
}
