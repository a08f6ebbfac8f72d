//! What a backend receives, byte for byte: header-name case (lower-case by default,
//! as received with `server.preserve_header_case`) and the request target unchanged,
//! including the absolute form, which the URI does not reproduce. (A target that is
//! not UTF-8 never gets this far: Pingora's parser answers 400.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use backends_demo::{Gateway, GatewayConfig};
use common::raw_http::RawConn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

mod common;

/// A backend that answers every request with the raw bytes of its request head. (Tests
/// using it run on a multi-thread runtime: `RawConn` blocks its thread.)
async fn raw_echo() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        let req: Vec<u8> = head.drain(..end + 4).collect();
                        let resp =
                            format!(
                                "HTTP/1.1 200 Fine Thanks\r\nX-Backend-Header: b\r\nContent-Length: {}\r\n\r\n",
                                req.len()
                            );
                        if s.write_all(resp.as_bytes()).await.is_err()
                            || s.write_all(&req).await.is_err()
                        {
                            return;
                        }
                    }
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
    });
    addr
}

async fn gateway(backend: SocketAddr, preserve: bool) -> Gateway {
    Gateway::start(
        &GatewayConfig::new()
            .set("server.preserve_header_case", preserve)
            .upstream("raw", &[backend])
            .route("all", "raw")
            .to_yaml(),
    )
    .await
    .unwrap()
}

const REQUEST: &str =
    "GET /a?b=1 HTTP/1.1\r\nHost: app.test\r\nX-Custom-Header: v\r\nX-Request-Id: rid-1\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_case_is_lower_by_default_and_kept_on_request() {
    let backend = raw_echo().await;
    let gw = gateway(backend, false).await;
    let answer = RawConn::open(gw.listen).exchange(REQUEST).unwrap();
    // Responses too: lower-case names, the backend's reason phrase kept.
    assert_eq!(answer.status_line, "HTTP/1.1 200 Fine Thanks");
    assert!(
        answer.raw_head.contains("\r\nx-backend-header: b\r\n"),
        "{}",
        answer.raw_head
    );
    assert!(
        answer.raw_head.contains("\r\nx-request-id: rid-1\r\n"),
        "{}",
        answer.raw_head
    );
    let seen = answer.body;
    assert!(seen.starts_with("GET /a?b=1 HTTP/1.1\r\n"), "{seen}");
    assert!(seen.contains("\r\nx-custom-header: v\r\n"), "{seen}");
    assert!(seen.contains("\r\nx-request-id: rid-1\r\n"), "{seen}");
    assert!(
        seen.contains("\r\nx-forwarded-for: 127.0.0.1\r\n"),
        "{seen}"
    );
    assert!(seen.contains("\r\nx-forwarded-proto: http\r\n"), "{seen}");
    assert!(
        seen.contains("\r\nx-forwarded-host: app.test\r\n"),
        "{seen}"
    );
    assert!(seen.contains("\r\ntraceparent: 00-"), "{seen}");
    drop(gw);

    let gw = gateway(backend, true).await;
    let answer = RawConn::open(gw.listen).exchange(REQUEST).unwrap();
    assert_eq!(answer.status_line, "HTTP/1.1 200 Fine Thanks");
    assert!(
        answer.raw_head.contains("\r\nX-Backend-Header: b\r\n"),
        "{}",
        answer.raw_head
    );
    let seen = answer.body;
    assert!(seen.contains("\r\nX-Custom-Header: v\r\n"), "{seen}");
    assert!(seen.contains("\r\nHost: app.test\r\n"), "{seen}");
    assert!(seen.contains("rid-1\r\n"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_targets_are_passed_as_received() {
    let backend = raw_echo().await;
    let gw = gateway(backend, false).await;
    let mut c = RawConn::open(gw.listen);
    let seen = c
        .exchange("GET http://app.test/abs?x=1 HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .unwrap()
        .body;
    assert!(
        seen.starts_with("GET http://app.test/abs?x=1 HTTP/1.1\r\n"),
        "{seen}"
    );
    let seen = c
        .exchange("GET /caf%C3%A9/../x;p?q=%20&r HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .unwrap()
        .body;
    assert!(
        seen.starts_with("GET /caf%C3%A9/../x;p?q=%20&r HTTP/1.1\r\n"),
        "{seen}"
    );
}
