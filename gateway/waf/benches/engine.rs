//! Engine cost per request with every managed group on (paranoia 1):
//! `cargo bench -p tollgate-waf --bench engine -- --warm-up-time 1 --measurement-time 3`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tollgate_waf::{Body, Policy, PolicySpec, Request, Scratch};

const HEADERS: &[(&str, &[u8])] = &[
    ("host", b"shop.example.com"),
    ("user-agent", b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"),
    ("accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"),
    ("accept-language", b"en-US,en;q=0.9,fr;q=0.8"),
    ("accept-encoding", b"gzip, deflate, br, zstd"),
    ("cookie", b"session=s%3Aj1k2l3m4n5.abcDEF123; _ga=GA1.2.1234567890.1715940000; theme=dark"),
    ("referer", b"https://shop.example.com/category/shoes?page=2"),
    ("sec-fetch-mode", b"navigate"),
];

fn json_4k() -> Vec<u8> {
    let mut items = Vec::new();
    let mut i = 0;
    loop {
        items.push(format!(
            r#"{{"id":"550e8400-e29b-41d4-a716-4466554400{i:02}","sku":"SKU-{i:05}","name":"Running shoe model {i}","qty":{i},"price":59.99,"color":"red","tags":["sale","summer"],"note":"Leave at the door, thanks!"}}"#
        ));
        i += 1;
        let body = format!(
            r#"{{"customer":{{"name":"Renée O'Connor","email":"renee@example.com"}},"items":[{}]}}"#,
            items.join(",")
        );
        if body.len() >= 4096 {
            return body.into_bytes();
        }
    }
}

fn bench(c: &mut Criterion) {
    let policy = Policy::compile(&PolicySpec::default()).unwrap();
    let mut scratch = Scratch::new();
    let ip: IpAddr = "203.0.113.7".parse().unwrap();

    let clean_get = Request {
        method: "GET",
        target: b"/products/search?q=red+running+shoes&size=42&page=2",
        authority: None,
        headers: HEADERS,
        client_ip: ip,
        body: None,
    };
    let o = policy.inspect(&clean_get, &mut scratch);
    assert!(o.matches.is_empty(), "{:?}", o.matches);

    let body = json_4k();
    let mut post_headers = HEADERS.to_vec();
    post_headers.push(("content-type", b"application/json"));
    let clean_post = Request {
        method: "POST",
        target: b"/api/v1/orders",
        authority: None,
        headers: &post_headers,
        client_ip: ip,
        body: Some(Body {
            bytes: &body,
            truncated: false,
        }),
    };
    let o = policy.inspect(&clean_post, &mut scratch);
    assert!(o.matches.is_empty(), "{:?}", o.matches);

    let attack_get = Request {
        target: b"/products/search?q=1%27%20UNION%20SELECT%20username%2Cpassword%20FROM%20users--&size=42&page=2",
        ..clean_get
    };
    assert!(policy.inspect(&attack_get, &mut scratch).is_blocked());

    let mut g = c.benchmark_group("waf");
    g.throughput(Throughput::Elements(1));
    g.bench_function("clean_get", |b| {
        b.iter(|| black_box(policy.inspect(black_box(&clean_get), &mut scratch)))
    });
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("clean_json_4k", |b| {
        b.iter(|| black_box(policy.inspect(black_box(&clean_post), &mut scratch)))
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("attack_get", |b| {
        b.iter(|| black_box(policy.inspect(black_box(&attack_get), &mut scratch)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
