//! Bad client input gets a 4xx and the gateway stays up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use backends_demo::{test_client, Backend, Gateway, GatewayConfig};

fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // A peer that refuses mid-send may reset; what it answered so far is what we check.
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
        if out.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(resp: &str) -> u16 {
    resp.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn malformed_and_hostile_requests_get_4xx() {
    let a = Backend::builder().id("a").spawn().await.unwrap();
    let gw = Gateway::start(
        &GatewayConfig::new()
            .set("server.limits.max_request_header_bytes", 8192)
            .upstream("app", &[a.addr()])
            .route("all", "app")
            .to_yaml(),
    )
    .await
    .unwrap();
    let addr = gw.listen;

    let cases: Vec<(&str, Vec<u8>, std::ops::RangeInclusive<u16>)> = vec![
        ("garbage request line", b"HELLO\r\n\r\n".to_vec(), 400..=400),
        ("bad version", b"GET / HTTP/9.9\r\nHost: x\r\n\r\n".to_vec(), 400..=505),
        (
            "CL and TE together",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            400..=400,
        ),
        (
            "conflicting content-lengths",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello".to_vec(),
            400..=400,
        ),
        (
            "headers over the configured limit",
            format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(10_000)).into_bytes(),
            431..=431,
        ),
        (
            "headers over the hard limit",
            format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(2_000_000)).into_bytes(),
            400..=431,
        ),
    ];
    for (what, req, want) in cases {
        let resp = raw(addr, &req);
        let status = status_of(&resp);
        assert!(
            want.contains(&status),
            "{what}: got {status}, wanted {want:?}: {:?}",
            resp.lines().next()
        );
    }
    let r = raw(
        addr,
        format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(10_000)
        )
        .as_bytes(),
    );
    assert!(
        r.contains("request header fields too large"),
        "says why: {r}"
    );

    // Still alive and serving.
    let ok = test_client().get(gw.url("/")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        a.stats().await.unwrap().requests,
        1,
        "no bad request reached the backend"
    );
}
