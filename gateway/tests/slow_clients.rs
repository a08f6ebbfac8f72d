//! Slow and abusive clients (issue 17). Tried as a new user would: connections that
//! send a request line and then one header line every so often were held open
//! indefinitely, each holding memory and a file descriptor; a few thousand exhaust a
//! gateway. The whole request head must now arrive within
//! `server.limits.request_head_timeout`, and `max_connections_per_client` caps what one
//! address can hold, while normal clients keep being served.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use backends_demo::{test_client, Backend, Gateway, GatewayConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A client that sends a request line, then a header line every 300 ms, forever.
/// Returns when the gateway closes the connection, with how long it was held.
async fn trickle(addr: std::net::SocketAddr) -> Duration {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    if s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").await.is_err() {
        return start.elapsed();
    }
    let mut buf = [0u8; 256];
    loop {
        tokio::select! {
            r = s.read(&mut buf) => match r {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(_) => {} // an answer (408) before the close is fine
            },
            _ = tokio::time::sleep(Duration::from_millis(300)) => {
                if s.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    return start.elapsed();
                }
            }
        }
        if start.elapsed() > Duration::from_secs(20) {
            return start.elapsed();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trickling_request_heads_are_cut_at_the_deadline() {
    let app = Backend::builder().id("app").spawn().await.unwrap();
    let gw = Gateway::start(
        &GatewayConfig::new()
            .set("server.limits.request_head_timeout", "2s")
            .upstream("app", &[app.addr()])
            .route("all", "app")
            .to_yaml(),
    )
    .await
    .unwrap();
    let slow: Vec<_> = (0..200).map(|_| tokio::spawn(trickle(gw.listen))).collect();
    // Normal clients are served throughout.
    let c = test_client();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        assert_eq!(c.get(gw.url("/")).send().await.unwrap().status(), 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut held = Vec::new();
    for s in slow {
        held.push(s.await.unwrap());
    }
    let longest = held.iter().max().unwrap();
    println!("200 trickling connections held for at most {longest:?}");
    assert!(
        *longest < Duration::from_secs(5),
        "cut near the 2 s deadline, not held: {longest:?}"
    );
    assert!(
        held.iter().all(|h| *h >= Duration::from_millis(1500)),
        "not cut before the deadline: {held:?}"
    );
    assert!(
        gw.metric(
            "gateway_connections_closed_total",
            &[("reason", "request_head_timeout")]
        )
        .await
        .unwrap()
            >= 200.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_address_cannot_hold_more_than_its_share_of_connections() {
    let app = Backend::builder().id("app").spawn().await.unwrap();
    let gw = Gateway::start(
        &GatewayConfig::new()
            .set("server.limits.max_connections_per_client", 20)
            .upstream("app", &[app.addr()])
            .route("all", "app")
            .to_yaml(),
    )
    .await
    .unwrap();
    // 20 connections held open (each mid-way through a request head).
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(gw.listen).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The next one is closed at once.
    let mut extra = TcpStream::connect(gw.listen).await.unwrap();
    let _ = extra.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut buf)).await;
    assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "refused: {r:?}");
    assert!(
        gw.metric(
            "gateway_connections_closed_total",
            &[("reason", "per_client_limit")]
        )
        .await
        .unwrap()
            >= 1.0
    );
    // Released connections make room again.
    held.truncate(10);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        test_client()
            .get(gw.url("/"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// The deadline is per request head: a kept-alive connection whose requests each come
/// within it keeps being served, whatever its total age.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_alive_connections_with_prompt_requests_are_not_cut() {
    let app = Backend::builder().id("app").spawn().await.unwrap();
    let gw = Gateway::start(
        &GatewayConfig::new()
            .set("server.limits.request_head_timeout", "1s")
            .upstream("app", &[app.addr()])
            .route("all", "app")
            .to_yaml(),
    )
    .await
    .unwrap();
    let mut s = TcpStream::connect(gw.listen).await.unwrap();
    let mut buf = vec![0u8; 4096];
    for i in 0..5 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let n = s.read(&mut buf).await.unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "request {i} on the same connection"
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
}
