//! WebSocket (HTTP/1.1 Upgrade) end to end, as a new user would try it: a real
//! WebSocket client -> sidecar A (outbound) -> mTLS -> sidecar B (inbound) -> a real
//! WebSocket echo server, then bytes both ways for as long as the stream lives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backends_demo::pki::{CertSpec, TestCa};
use backends_demo::{free_addr, test_client, wait_until, Sidecar};
use common::{a_config, b_config, issue, start_in, MeshOpts, A_ID, B_ID};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

async fn echo_server() -> (SocketAddr, Arc<AtomicU32>) {
    backends_demo::websocket::echo_server().await.unwrap()
}

async fn rogue_101_app() -> SocketAddr {
    backends_demo::websocket::rogue_101_app().await.unwrap()
}

/// Two sidecars in front of `app`; `dep_policy` goes into A's dependency block.
struct Pair {
    _dir: tempfile::TempDir,
    a: Sidecar,
    b: Sidecar,
    out: SocketAddr,
}

async fn pair(app: SocketAddr, protocol: &'static str, dep_policy: &str) -> Pair {
    let ca = TestCa::new("ws-ca").unwrap();
    let dir = tempfile::tempdir().unwrap();
    ca.write_bundle(&dir.path().join("ca.crt")).unwrap();
    issue(&ca, dir.path(), "a", CertSpec::spiffe(A_ID));
    issue(&ca, dir.path(), "b", CertSpec::spiffe(B_ID));
    let b_inbound = free_addr("127.0.0.1");
    let out = free_addr("127.0.0.1");
    let b = start_in(
        dir.path(),
        &b_config(&[A_ID.to_owned()]),
        &[("INBOUND", b_inbound.to_string()), ("APP", app.to_string())],
    )
    .await;
    let opts = MeshOpts {
        protocol,
        dep_policy: dep_policy.to_owned(),
        ..Default::default()
    };
    let a = start_in(
        dir.path(),
        &a_config(&opts),
        &[("OUT", out.to_string()), ("B", b_inbound.to_string())],
    )
    .await;
    Pair {
        _dir: dir,
        a,
        b,
        out,
    }
}

async fn echo(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    text: &str,
) -> String {
    ws.send(Message::text(text)).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("no echo within 5s")
        .expect("stream ended")
        .expect("websocket error");
    m.into_text().unwrap().to_string()
}

#[tokio::test]
async fn websocket_echo_through_two_sidecars_outlives_the_per_try_timeout() {
    // HTTP/2 between the sidecars is the default; HTTP/1.1 must work the same.
    for protocol in ["http2", "http1"] {
        let (app, handshakes) = echo_server().await;
        // A hedge after 1 ms would send every bodiless GET twice: never an upgrade.
        let p = pair(
            app,
            protocol,
            "    timeout: 600ms\n    per_try_timeout: 300ms\n    retry: { attempts: 3 }\n    hedge_after: 1ms",
        )
        .await;
        let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/chat", p.out))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{protocol}: handshake through the mesh: {e}\nA:\n{}\nB:\n{}",
                    p.a.log(),
                    p.b.log()
                )
            });
        assert_eq!(resp.status(), 101, "{protocol}");
        assert_eq!(echo(&mut ws, "hello").await, "hello", "{protocol}");
        assert_eq!(handshakes.load(Ordering::SeqCst), 1, "{protocol}");

        // Idle for longer than the per-try and the overall timeout: the stream lives on.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(
            echo(&mut ws, "still there").await,
            "still there",
            "{protocol}"
        );
        let big = "x".repeat(256 * 1024);
        assert_eq!(echo(&mut ws, &big).await.len(), big.len(), "{protocol}");

        let dep = [("dependency", "app")];
        assert_eq!(
            p.a.metric("sidecar_upgrades_total", &dep).await.unwrap(),
            1.0
        );
        assert_eq!(
            p.a.metric("sidecar_upgrades_active", &dep).await.unwrap(),
            1.0
        );
        // One handshake: neither retried nor hedged.
        assert_eq!(p.a.metric("sidecar_hedges_total", &dep).await.unwrap(), 0.0);
        assert_eq!(
            p.a.metric("sidecar_retries_total", &dep).await.unwrap(),
            0.0
        );
        assert_eq!(
            p.b.metric("sidecar_inbound_upgrades_total", &[])
                .await
                .unwrap(),
            1.0
        );

        // The close handshake, then the client hangs up as WebSocket clients do.
        ws.close(None).await.unwrap();
        while let Some(Ok(_)) = ws.next().await {}
        drop(ws);
        wait_until(Duration::from_secs(5), || async {
            p.a.metric("sidecar_upgrades_active", &dep).await.unwrap() == 0.0
        })
        .await
        .expect("the closed stream is no longer counted as active");
        let closed = [("dependency", "app"), ("reason", "closed")];
        assert_eq!(
            p.a.metric("sidecar_upgrades_closed_total", &closed)
                .await
                .unwrap(),
            1.0
        );

        // Plain calls on the same dependency are unaffected.
        let r = test_client()
            .get(format!("http://{}/plain", p.out))
            .send()
            .await
            .unwrap();
        assert_ne!(r.status(), 101, "{protocol}");
    }
}

#[tokio::test]
async fn an_idle_upgraded_stream_is_closed_after_upgrade_idle_timeout() {
    let (app, _) = echo_server().await;
    let p = pair(app, "http2", "    upgrade_idle_timeout: 700ms").await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/chat", p.out))
        .await
        .unwrap();
    assert_eq!(echo(&mut ws, "hello").await, "hello");
    let idle_from = Instant::now();
    // Nothing is sent: the sidecar must end the stream on its own.
    let end = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("the idle stream was not closed within 10s");
    assert!(
        !matches!(end, Some(Ok(Message::Text(_) | Message::Binary(_)))),
        "{end:?}"
    );
    let idle_for = idle_from.elapsed();
    assert!(
        idle_for >= Duration::from_millis(600),
        "closed after {idle_for:?}, before the idle timeout"
    );
    let idle = [("dependency", "app"), ("reason", "idle_timeout")];
    wait_until(Duration::from_secs(5), || async {
        p.a.metric("sidecar_upgrades_closed_total", &idle)
            .await
            .unwrap()
            == 1.0
    })
    .await
    .expect("the idle close is counted");
}

#[tokio::test]
async fn a_101_that_was_not_asked_for_is_refused() {
    let app = rogue_101_app().await;
    let p = pair(app, "http2", "").await;
    let r = test_client()
        .get(format!("http://{}/plain", p.out))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502, "{:?}", r.headers());
    assert_eq!(
        r.headers()
            .get("x-sidecar-error")
            .and_then(|v| v.to_str().ok()),
        Some("unexpected_upgrade"),
        "{:?}\nB:\n{}",
        r.headers(),
        p.b.log()
    );
}
