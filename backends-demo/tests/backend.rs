//! The real `backend-demo` binary, driven through the `Backend` helper.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use backends_demo::{bin_path, free_addr, test_client, wait_until, Backend};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;

async fn backend() -> Backend {
    Backend::builder().spawn().await.unwrap()
}

async fn get_json(url: &str) -> (u16, Value) {
    let resp = test_client().get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

async fn status_of(url: &str) -> u16 {
    test_client()
        .get(url)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn short_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap()
}

#[tokio::test]
async fn echoes_the_request_as_json() {
    let b = Backend::builder()
        .zone("b")
        .id("b7")
        .ip("127.0.2.1")
        .spawn()
        .await
        .unwrap();
    assert_eq!(b.addr().ip().to_string(), "127.0.2.1");
    assert_eq!((b.zone(), b.id()), ("b", "b7"));

    let resp = test_client()
        .post(b.url("/some/path?x=1&y=two"))
        .header("X-Custom", "hello")
        .header("x-multi", "one")
        .header("x-multi", "two")
        .body(vec![7u8; 1234])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["x-backend-id"], "b7");
    assert_eq!(h["x-backend-zone"], "b");
    assert_eq!(h["content-type"], "application/json");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["zone"], "b");
    assert_eq!(v["id"], "b7");
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/some/path");
    assert_eq!(v["query"], "x=1&y=two");
    assert_eq!(v["headers"]["x-custom"], "hello");
    assert_eq!(v["headers"]["x-multi"], "one, two");
    assert_eq!(v["headers"]["host"], b.addr().to_string());
    assert_eq!(v["body_bytes"], 1234);

    let (status, v) = get_json(&b.url("/")).await;
    assert_eq!(status, 200);
    assert_eq!(v["method"], "GET");
    assert_eq!(v["query"], Value::Null);
    assert_eq!(v["body_bytes"], 0);
}

#[tokio::test]
async fn speaks_h2c_with_prior_knowledge() {
    let b = backend().await;
    let stream = tokio::net::TcpStream::connect(b.addr()).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("http://{}/over/h2?q=1", b.addr()))
        .header("x-custom", "h2")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["path"], "/over/h2");
    assert_eq!(v["query"], "q=1");
    assert_eq!(v["headers"]["x-custom"], "h2");
}

#[tokio::test]
async fn health_check_toggles_without_touching_traffic() {
    let b = backend().await;
    let resp = test_client().get(b.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "ok");

    b.set_healthy(false).await.unwrap();
    let resp = test_client().get(b.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.text().await.unwrap(), "unhealthy");
    assert_eq!(status_of(&b.url("/work")).await, 200);

    b.set_healthy(true).await.unwrap();
    assert_eq!(status_of(&b.url("/healthz")).await, 200);
}

#[tokio::test]
async fn status_fault_applies_to_traffic_not_to_health_or_knobs() {
    let b = backend().await;
    b.fault("status=503").await.unwrap();
    for _ in 0..10 {
        let (status, v) = get_json(&b.url("/work")).await;
        assert_eq!(status, 503);
        assert_eq!(v["fault"], true);
        assert_eq!(v["id"], b.id());
    }
    assert_eq!(status_of(&b.url("/healthz")).await, 200);
    assert_eq!(status_of(&b.url("/_stats")).await, 200);

    b.clear_fault().await.unwrap();
    assert_eq!(status_of(&b.url("/work")).await, 200);
}

#[tokio::test]
async fn path_prefix_faults_only_the_paths_under_it() {
    let b = backend().await;
    b.fault("status=503&path_prefix=/dep/").await.unwrap();
    assert_eq!(status_of(&b.url("/dep/items/1")).await, 503);
    assert_eq!(status_of(&b.url("/api/orders")).await, 200);
    let resp = test_client()
        .post(b.url("/api/orders"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (_, knobs) = get_json(&b.url("/_fault")).await;
    assert_eq!(knobs["path_prefix"], "/dep/");

    // A new setting replaces the prefix too: this one faults every path.
    b.fault("status=500").await.unwrap();
    assert_eq!(status_of(&b.url("/api/orders")).await, 500);
    let resp = test_client()
        .post(b.url("/_fault?status=503&path_prefix=dep"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    b.clear_fault().await.unwrap();
    assert_eq!(status_of(&b.url("/dep/items/1")).await, 200);
}

#[tokio::test]
async fn status_fault_at_half_rate_hits_about_half() {
    let b = backend().await;
    b.fault("status=500&rate=0.5").await.unwrap();
    let client = test_client();
    let mut faulted = 0;
    for _ in 0..200 {
        let status = client.get(b.url("/work")).send().await.unwrap().status();
        match status.as_u16() {
            500 => faulted += 1,
            200 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert!((60..=140).contains(&faulted), "{faulted} of 200 faulted");
}

#[tokio::test]
async fn latency_fault_delays_answers() {
    let b = backend().await;
    b.fault("latency=200ms").await.unwrap();
    let start = Instant::now();
    assert_eq!(status_of(&b.url("/slow")).await, 200);
    assert!(start.elapsed() >= Duration::from_millis(200));

    let knobs: Value = test_client()
        .get(b.url("/_fault"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(knobs["latency"], "200ms");
    assert_eq!(knobs["status"], Value::Null);
}

#[tokio::test]
async fn hang_fault_never_answers() {
    let b = backend().await;
    b.fault("hang=true").await.unwrap();
    let err = short_client()
        .get(b.url("/stuck"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    // Health and knobs still answer, and the hung request shows as requested.
    assert_eq!(status_of(&b.url("/healthz")).await, 200);
    let stats = b.stats().await.unwrap();
    assert_eq!(stats.requests, 1);

    b.clear_fault().await.unwrap();
    assert_eq!(status_of(&b.url("/work")).await, 200);
}

#[tokio::test]
async fn reset_fault_closes_without_answer() {
    let b = backend().await;
    b.fault("reset=true").await.unwrap();
    let err = test_client().get(b.url("/work")).send().await.unwrap_err();
    assert!(!err.is_timeout(), "{err:?}");
    assert!(err.status().is_none(), "{err:?}");
    b.clear_fault().await.unwrap();
    assert_eq!(status_of(&b.url("/work")).await, 200);
}

#[tokio::test]
async fn bad_knobs_are_refused_with_400() {
    let b = backend().await;
    for query in [
        "status=abc",
        "rate=7&status=503",
        "latency=soon",
        "colour=red",
    ] {
        let resp = test_client()
            .post(b.url(&format!("/_fault?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{query}");
        assert!(!resp.text().await.unwrap().is_empty());
    }
    let resp = test_client()
        .post(b.url("/_health?ok=sometimes"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let err = b.fault("status=1000").await.unwrap_err();
    assert!(format!("{err:#}").contains("400"), "{err:#}");
    // Nothing half-applied.
    assert_eq!(status_of(&b.url("/work")).await, 200);
}

#[tokio::test]
async fn stats_count_normal_requests_only() {
    let b = backend().await;
    for _ in 0..5 {
        status_of(&b.url("/work")).await;
    }
    status_of(&b.url("/healthz")).await;
    b.clear_fault().await.unwrap();
    let stats = b.stats().await.unwrap();
    assert_eq!(stats.requests, 5);
    assert_eq!(stats.in_flight, 0);
}

#[tokio::test]
async fn crash_exits_with_code_1() {
    let mut b = backend().await;
    let _ = test_client().post(b.url("/_crash")).send().await;
    let code = b
        .proc()
        .unwrap()
        .wait_exit(Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(code, Some(1));
    assert!(!b.is_running());
}

#[tokio::test]
async fn sigterm_exits_0() {
    let mut b = backend().await;
    // A hung request must not hold up the exit.
    b.fault("hang=true").await.unwrap();
    let _ = short_client().get(b.url("/stuck")).send().await;
    let proc = b.proc().unwrap();
    proc.signal("TERM").unwrap();
    assert_eq!(
        proc.wait_exit(Duration::from_secs(5)).await.unwrap(),
        Some(0)
    );
    assert!(proc.log().contains("backend-demo listening on"));
}

#[tokio::test]
async fn freeze_and_thaw() {
    let mut b = backend().await;
    b.freeze().unwrap();
    let err = short_client().get(b.url("/work")).send().await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(b.is_running());
    b.thaw().unwrap();
    assert_eq!(status_of(&b.url("/work")).await, 200);
}

#[tokio::test]
async fn kill_and_restart_on_the_same_address() {
    let mut b = Backend::builder()
        .zone("c")
        .ip("127.0.3.1")
        .spawn()
        .await
        .unwrap();
    let addr = b.addr();
    b.set_healthy(false).await.unwrap();
    b.kill();
    assert!(!b.is_running());
    let err = test_client().get(b.url("/work")).send().await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");

    b.restart().await.unwrap();
    assert_eq!(b.addr(), addr);
    let (status, v) = get_json(&b.url("/work")).await;
    assert_eq!(status, 200);
    assert_eq!(v["zone"], "c");
    // A fresh process: healthy again.
    assert_eq!(status_of(&b.url("/healthz")).await, 200);
}

#[tokio::test]
async fn spawn_on_a_taken_port_fails_with_the_log() {
    let taken = std::net::TcpListener::bind(free_addr("127.0.0.1")).unwrap();
    let port = taken.local_addr().unwrap().port();
    let err = Backend::builder().port(port).spawn().await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("exited before it was ready"), "{msg}");
    assert!(msg.contains("in use"), "{msg}");
}

#[tokio::test]
async fn helpers() {
    assert!(bin_path("backend-demo").unwrap().is_file());
    let start = Instant::now();
    let err = wait_until(Duration::from_millis(100), || async { false }).await;
    assert!(err.is_err());
    assert!(start.elapsed() >= Duration::from_millis(100));
    let b = backend().await;
    backends_demo::http_get_ok(&b.url("/healthz"), Duration::from_secs(2))
        .await
        .unwrap();
    b.set_healthy(false).await.unwrap();
    assert!(
        backends_demo::http_get_ok(&b.url("/healthz"), Duration::from_millis(100))
            .await
            .is_err()
    );
}
