//! Who the client is: PROXY protocol v1/v2 on plain listeners (TLS listeners are in
//! tls.rs), and trusted proxies for `X-Forwarded-For` / `X-Forwarded-Proto`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use backends_demo::{free_addr, Backend, Gateway};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(backend: SocketAddr, listener_extra: &str, more_listeners: &str) -> String {
    format!(
        r#"
listeners:
  - {{ name: edge, address: "${{LISTEN}}" {listener_extra} }}
{more_listeners}
admin: {{ address: "${{ADMIN}}" }}
server: {{ threads: 1 }}
routes: [{{ name: all, upstream: app }}]
upstreams: {{ app: {{ endpoints: [{{ address: {backend} }}] }} }}
"#
    )
}

/// One HTTP/1.1 request on an open connection; the backend's echo of the headers it got.
async fn exchange(s: &mut TcpStream, extra_headers: &str) -> Value {
    let req = format!("GET /echo HTTP/1.1\r\nHost: app\r\n{extra_headers}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("response in time")
            .unwrap();
        assert!(n > 0, "connection closed mid-response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let head = text[..end].to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .expect("content-length")
            .trim()
            .parse()
            .unwrap();
        if buf.len() >= end + 4 + len {
            let v: Value = serde_json::from_slice(&buf[end + 4..end + 4 + len]).unwrap();
            return v["headers"].clone();
        }
    }
}

/// Whether the gateway closed the connection without answering.
async fn closed_without_answer(s: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

fn v2_header(cmd: u8, fam: u8, addr: &[u8]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x20 | cmd);
    h.push(fam);
    h.extend_from_slice(&u16::try_from(addr.len()).unwrap().to_be_bytes());
    h.extend_from_slice(addr);
    h
}

#[tokio::test]
async fn proxy_protocol_gives_the_backend_the_original_client_address() {
    let backend = Backend::builder().id("app").spawn().await.unwrap();
    let gw = Gateway::start(&config(
        backend.addr(),
        ", proxy_protocol: true, trusted_proxies: [10.0.0.0/8]",
        "",
    ))
    .await
    .unwrap();

    // v1, then keep-alive: every request of the connection carries the address.
    let mut s = TcpStream::connect(gw.listen).await.unwrap();
    s.write_all(b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 80\r\n")
        .await
        .unwrap();
    for _ in 0..3 {
        let h = exchange(&mut s, "").await;
        assert_eq!(h["x-forwarded-for"], "203.0.113.7");
    }

    // v2 over IPv6, the header and the request in one write.
    let mut addr = Vec::new();
    addr.extend_from_slice(
        &"2001:db8::7"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    addr.extend_from_slice(
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    addr.extend_from_slice(&4000u16.to_be_bytes());
    addr.extend_from_slice(&80u16.to_be_bytes());
    let mut wire = v2_header(1, 0x21, &addr);
    wire.extend_from_slice(b"GET /echo HTTP/1.1\r\nHost: app\r\n\r\n");
    let mut s = TcpStream::connect(gw.listen).await.unwrap();
    s.write_all(&wire).await.unwrap();
    let mut out = vec![0u8; 8192];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out[..n]);
    assert!(
        text.contains("\"x-forwarded-for\":\"2001:db8::7\""),
        "{text}"
    );

    // A header arriving in pieces is waited for.
    let mut s = TcpStream::connect(gw.listen).await.unwrap();
    s.write_all(b"PROXY TCP4 198.51").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(b".100.4 10.0.0.1 1 80\r\n").await.unwrap();
    assert_eq!(
        exchange(&mut s, "").await["x-forwarded-for"],
        "198.51.100.4"
    );

    // A LOCAL header (the load balancer's own health check) keeps the socket's address.
    let mut s = TcpStream::connect(gw.listen).await.unwrap();
    s.write_all(&v2_header(0, 0, &[])).await.unwrap();
    assert_eq!(exchange(&mut s, "").await["x-forwarded-for"], "127.0.0.1");

    // PROXY protocol then a trusted proxy (NLB in front of a CDN): the source is
    // trusted, so the client is what it puts in X-Forwarded-For.
    let mut s = TcpStream::connect(gw.listen).await.unwrap();
    s.write_all(b"PROXY TCP4 10.1.2.3 10.0.0.1 1 80\r\n")
        .await
        .unwrap();
    let h = exchange(&mut s, "X-Forwarded-For: 192.0.2.44\r\n").await;
    assert_eq!(h["x-forwarded-for"], "192.0.2.44, 10.1.2.3");

    // No header, or a broken one: closed without an answer, counted by reason.
    let mut s = TcpStream::connect(gw.listen).await.unwrap();
    s.write_all(b"GET /echo HTTP/1.1\r\nHost: app\r\n\r\n")
        .await
        .unwrap();
    assert!(closed_without_answer(&mut s).await);
    let mut s = TcpStream::connect(gw.listen).await.unwrap();
    s.write_all(b"PROXY TCP4 203.0.113.7 10.0.0.1 99999 80\r\n")
        .await
        .unwrap();
    assert!(closed_without_answer(&mut s).await);
    let errors = |reason: &'static str| {
        let gw = &gw;
        async move {
            gw.metric(
                "gateway_proxy_protocol_errors_total",
                &[("listener", "edge"), ("reason", reason)],
            )
            .await
            .unwrap()
        }
    };
    assert_eq!(errors("missing").await, 1.0);
    assert_eq!(errors("malformed").await, 1.0);
    let v1 = gw
        .metric(
            "gateway_proxy_protocol_headers_total",
            &[("listener", "edge"), ("version", "v1")],
        )
        .await
        .unwrap();
    assert_eq!(v1, 3.0);

    // And the listener still serves.
    let mut s = TcpStream::connect(gw.listen).await.unwrap();
    s.write_all(b"PROXY TCP4 203.0.113.8 10.0.0.1 1 80\r\n")
        .await
        .unwrap();
    assert_eq!(exchange(&mut s, "").await["x-forwarded-for"], "203.0.113.8");
    assert_eq!(backend.stats().await.unwrap().requests, 8);
}

#[tokio::test]
async fn only_trusted_proxies_may_set_forwarding_headers() {
    let backend = Backend::builder().id("app").spawn().await.unwrap();
    let untrusted = free_addr("127.0.0.1");
    let gw = Gateway::start(&config(
        backend.addr(),
        ", trusted_proxies: [127.0.0.0/8], redirect_https: true",
        &format!("  - {{ name: open, address: \"{untrusted}\", trusted_proxies: [10.0.0.0/8] }}"),
    ))
    .await
    .unwrap();
    let spoof = "X-Forwarded-For: 6.6.6.6, 198.51.100.1\r\nX-Forwarded-Proto: https\r\n";

    // From a trusted proxy: its list is extended, its scheme kept (so the HTTPS
    // redirect does not loop behind a TLS-terminating load balancer).
    let mut s = TcpStream::connect(gw.listen).await.unwrap();
    let h = exchange(&mut s, spoof).await;
    assert_eq!(h["x-forwarded-for"], "6.6.6.6, 198.51.100.1, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "https");

    // From anyone else: replaced.
    let mut s = TcpStream::connect(untrusted).await.unwrap();
    let h = exchange(&mut s, spoof).await;
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");

    // A reload changes who is trusted, without a restart.
    let yaml = config(
        backend.addr(),
        ", trusted_proxies: [127.0.0.0/8], redirect_https: true",
        &format!("  - {{ name: open, address: \"{untrusted}\", trusted_proxies: [127.0.0.1] }}"),
    );
    gw.write_config(&yaml).unwrap();
    let (status, body) = gw.reload().await.unwrap();
    assert_eq!(status, 200, "{body}");
    let mut s = TcpStream::connect(untrusted).await.unwrap();
    let h = exchange(&mut s, spoof).await;
    assert_eq!(h["x-forwarded-for"], "6.6.6.6, 198.51.100.1, 127.0.0.1");
    assert_eq!(backend.stats().await.unwrap().requests, 3);
}
