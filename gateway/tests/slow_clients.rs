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

/// A kept-alive connection that has answered one request and now waits.
async fn idle_connection(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    s
}

/// Whether the gateway closed `s` (within a second).
async fn closed_by_gateway(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// At `server.limits.max_connections` a new connection takes the place of the oldest
/// idle one; when every connection is busy it is refused instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_limit_idle_connections_make_room() {
    let app = Backend::builder().id("app").spawn().await.unwrap();
    let gw = Gateway::start(
        &GatewayConfig::new()
            .set("server.limits.max_connections", 5)
            .upstream("app", &[app.addr()])
            .route("all", "app")
            .to_yaml(),
    )
    .await
    .unwrap();
    let mut idle = Vec::new();
    for _ in 0..5 {
        idle.push(idle_connection(gw.listen).await);
    }
    // A sixth client is served; the oldest idle connection was closed for it.
    let mut sixth = idle_connection(gw.listen).await;
    assert!(
        closed_by_gateway(&mut idle[0]).await,
        "the oldest idle one was shed"
    );
    assert!(!closed_by_gateway(&mut idle[4]).await, "only one was shed");
    assert_eq!(
        gw.metric(
            "gateway_connections_closed_total",
            &[("reason", "shed_idle")]
        )
        .await
        .unwrap(),
        1.0
    );

    // Five busy connections (slow answers): nothing to shed, a new one is refused.
    drop(idle);
    app.fault("latency=3s").await.unwrap();
    sixth
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut busy = vec![sixth];
    for _ in 0..4 {
        let mut s = TcpStream::connect(gw.listen).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        busy.push(s);
    }
    backends_demo::wait_until(Duration::from_secs(5), || async {
        app.stats().await.is_ok_and(|s| s.in_flight == 5)
    })
    .await
    .expect("five requests in flight");
    let mut refused = TcpStream::connect(gw.listen).await.unwrap();
    let _ = refused
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    assert!(
        closed_by_gateway(&mut refused).await,
        "refused when all are busy"
    );
    assert_eq!(
        gw.metric(
            "gateway_connections_closed_total",
            &[("reason", "max_connections")]
        )
        .await
        .unwrap(),
        1.0
    );
    // The busy ones were not touched: each gets its answer.
    for s in &mut busy {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    }
}

/// The gateway's resident memory (KiB) and open file descriptors.
fn footprint(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (rss, fds)
}

/// A trickling client from `source` (another loopback address).
async fn trickle_from(source: std::net::IpAddr, addr: std::net::SocketAddr) -> Duration {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((source, 0).into()).unwrap();
    let start = Instant::now();
    let Ok(mut s) = socket.connect(addr).await else {
        return start.elapsed();
    };
    if s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").await.is_err() {
        return start.elapsed();
    }
    let mut buf = [0u8; 256];
    while start.elapsed() < Duration::from_secs(30) {
        tokio::select! {
            r = s.read(&mut buf) => if matches!(r, Ok(0) | Err(_)) { return start.elapsed() },
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                if s.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    return start.elapsed();
                }
            }
        }
    }
    start.elapsed()
}

/// Slowloris at scale: 2,000 trickling connections from four addresses against a
/// 2 s head deadline and 300 connections per address. Each address gets its 300, the
/// rest are refused at once, every admitted one is cut at the deadline, normal
/// clients are served throughout, and the gateway's memory and descriptors come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousands_of_trickling_connections_are_cut_and_refused() {
    const PER_ADDRESS: usize = 500;
    let app = Backend::builder().id("app").spawn().await.unwrap();
    let mut gw = Gateway::start(
        &GatewayConfig::new()
            .set("server.limits.request_head_timeout", "2s")
            .set("server.limits.max_connections_per_client", 300)
            .upstream("app", &[app.addr()])
            .route("all", "app")
            .to_yaml(),
    )
    .await
    .unwrap();
    let pid = gw.proc().pid();
    let before = footprint(pid);
    let sources: Vec<std::net::IpAddr> = (2..6)
        .map(|i| std::net::Ipv4Addr::new(127, 0, 0, i).into())
        .collect();
    let slow: Vec<_> = sources
        .iter()
        .flat_map(|ip| (0..PER_ADDRESS).map(move |_| *ip))
        .map(|ip| tokio::spawn(trickle_from(ip, gw.listen)))
        .collect();
    let c = test_client();
    let start = Instant::now();
    let mut peak = before;
    let mut served = 0;
    while start.elapsed() < Duration::from_secs(4) {
        assert_eq!(c.get(gw.url("/")).send().await.unwrap().status(), 200);
        served += 1;
        let now = footprint(pid);
        peak = (peak.0.max(now.0), peak.1.max(now.1));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut held: Vec<Duration> = Vec::new();
    for t in slow {
        held.push(t.await.unwrap());
    }
    held.sort();
    let refused = held
        .iter()
        .filter(|d| **d < Duration::from_millis(1500))
        .count();
    let cut = held.len() - refused;
    let after = footprint(pid);
    let closed = |reason: &'static str| {
        let gw = &gw;
        async move {
            gw.metric("gateway_connections_closed_total", &[("reason", reason)])
                .await
                .unwrap()
        }
    };
    let (timeouts, per_client) = (
        closed("request_head_timeout").await,
        closed("per_client_limit").await,
    );
    println!(
        "{} trickling connections: {cut} held until cut (longest {:?}), {refused} refused at once; \
         {served} normal requests served meanwhile; gateway RSS {} -> {} -> {} KiB, fds {} -> {} -> {}; \
         closed: request_head_timeout {timeouts}, per_client_limit {per_client}",
        held.len(),
        held.last().unwrap(),
        before.0, peak.0, after.0, before.1, peak.1, after.1,
    );
    assert_eq!(
        per_client,
        (4 * (PER_ADDRESS - 300)) as f64,
        "each address held to 300"
    );
    assert_eq!(
        timeouts,
        (4 * 300) as f64,
        "every admitted one cut at the deadline"
    );
    assert!(
        *held.last().unwrap() < Duration::from_secs(10),
        "none held long"
    );
    assert!(
        peak.1 >= before.1 + 1000,
        "the connections were really open: {peak:?}"
    );
    assert!(
        after.1 <= before.1 + 20,
        "descriptors given back: {before:?} -> {after:?}"
    );
}

/// The deadline holds for every request of a kept-alive connection, not only the
/// first: a second head trickled after a prompt first request is cut too. (Pingora
/// serves all of a connection's requests in one call; the deadline restarts when a
/// request ends.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_second_request_on_a_kept_alive_connection_is_cut() {
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
    let mut s = idle_connection(gw.listen).await;
    let start = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").await.unwrap();
    let mut buf = [0u8; 256];
    let cut = loop {
        tokio::select! {
            r = s.read(&mut buf) => if matches!(r, Ok(0) | Err(_)) { break start.elapsed() },
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if s.write_all(b"X-Slow: 1\r\n").await.is_err() { break start.elapsed() }
            }
        }
        assert!(start.elapsed() < Duration::from_secs(10), "never cut");
    };
    assert!(cut < Duration::from_secs(5), "{cut:?}");
    assert_eq!(
        gw.metric(
            "gateway_connections_closed_total",
            &[("reason", "request_head_timeout")]
        )
        .await
        .unwrap(),
        1.0
    );
}

/// Send a POST head announcing `total` body bytes, then `chunk` bytes every `every`
/// until done or the gateway answers; returns the status line's code (0: closed
/// without an answer) and how long it took.
async fn trickle_body(
    addr: std::net::SocketAddr,
    total: usize,
    chunk: usize,
    every: Duration,
) -> (u16, Duration) {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: {total}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut sent = 0;
    let mut buf = vec![0u8; 4096];
    loop {
        tokio::select! {
            r = s.read(&mut buf) => {
                let n = r.unwrap_or(0);
                let code = std::str::from_utf8(&buf[..n]).ok()
                    .and_then(|t| t.get(9..12)).and_then(|c| c.parse().ok()).unwrap_or(0);
                return (code, start.elapsed());
            }
            _ = tokio::time::sleep(every), if sent < total => {
                let n = chunk.min(total - sent);
                if s.write_all(&vec![b'x'; n]).await.is_err() {
                    return (0, start.elapsed());
                }
                sent += n;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(20), "never answered");
    }
}

/// A request body must keep coming: a stalled one is cut after request_body_timeout,
/// one trickled below min_request_body_rate soon after, with 408; a slow but steady
/// upload above the rate is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_must_keep_a_minimum_pace() {
    let app = Backend::builder().id("app").spawn().await.unwrap();
    let gw = Gateway::start(
        &GatewayConfig::new()
            .set("server.limits.request_body_timeout", "1s")
            .set("server.limits.min_request_body_rate", 200)
            .upstream("app", &[app.addr()])
            .route("all", "app")
            .to_yaml(),
    )
    .await
    .unwrap();
    // Stalled after 10 bytes.
    let (code, took) = trickle_body(gw.listen, 1000, 10, Duration::from_secs(30)).await;
    assert_eq!(code, 408, "stalled body: {took:?}");
    println!("stalled body cut after {took:?}");
    // 10 bytes every 200 ms: 50 bytes/s, below the 200 asked for.
    let (code, took) = trickle_body(gw.listen, 100_000, 10, Duration::from_millis(200)).await;
    assert_eq!(code, 408, "trickled body: {took:?}");
    println!("trickled body cut after {took:?}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    // 200 bytes every 100 ms: 2000 bytes/s, served.
    let (code, _) = trickle_body(gw.listen, 3000, 200, Duration::from_millis(100)).await;
    assert_eq!(code, 200);
    assert_eq!(
        gw.metric(
            "gateway_rejected_requests_total",
            &[("reason", "request_body_timeout")]
        )
        .await
        .unwrap(),
        2.0
    );
}
