//! WebSockets through the gateway (issue 18), as a new user would try them: echo of
//! text, binary, ping/pong and close; an idle WebSocket outlives the route's read
//! timeout (it was cut at it, without a close frame); the route's `upgrade_idle`
//! timeout ends idle ones; upgraded connections are counted; a 101 the client did not
//! ask for is refused; SIGTERM gives open WebSockets the grace period.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use backends_demo::websocket::{echo_server, rogue_101_app};
use backends_demo::{Gateway, GatewayConfig};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next(ws: &mut Ws) -> Option<Message> {
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        Ok(Some(Ok(m))) => Some(m),
        Ok(_) => None,
        Err(_) => panic!("nothing within 5s"),
    }
}

async fn echo(ws: &mut Ws, m: Message) {
    ws.send(m.clone()).await.unwrap();
    assert_eq!(next(ws).await, Some(m));
}

async fn gateway(app: std::net::SocketAddr, route: serde_json::Value, shutdown: bool) -> Gateway {
    let mut cfg = GatewayConfig::new()
        .upstream("ws", &[app])
        .route_with("ws", "ws", route);
    if shutdown {
        cfg = cfg
            .set("server.shutdown.drain_delay", "0s")
            .set("server.shutdown.grace_period", "3s");
    }
    Gateway::start(&cfg.to_yaml()).await.unwrap()
}

#[tokio::test]
async fn an_idle_websocket_outlives_the_read_timeout() {
    let (app, handshakes) = echo_server().await.unwrap();
    let gw = gateway(app, json!({ "timeouts": { "read": "1s" } }), false).await;
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/chat", gw.listen))
        .await
        .expect("handshake through the gateway");
    assert_eq!(resp.status(), 101);
    echo(&mut ws, Message::text("hello")).await;
    echo(&mut ws, Message::binary(vec![0u8, 1, 2, 255])).await;
    ws.send(Message::Ping(b"p".to_vec().into())).await.unwrap();
    assert_eq!(
        next(&mut ws).await,
        Some(Message::Pong(b"p".to_vec().into()))
    );
    assert_eq!(
        gw.metric("gateway_upgraded_connections", &[("route", "ws")])
            .await
            .unwrap(),
        1.0
    );

    // Idle for 2.5 read timeouts: still open.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    echo(&mut ws, Message::text("still here")).await;

    ws.send(Message::Close(None)).await.unwrap();
    assert!(
        matches!(next(&mut ws).await, Some(Message::Close(_)) | None),
        "the close handshake completes"
    );
    backends_demo::wait_until(Duration::from_secs(5), || async {
        gw.metric("gateway_upgraded_connections", &[("route", "ws")])
            .await
            .unwrap()
            == 0.0
    })
    .await
    .expect("the upgraded connection is no longer counted once closed");
    assert_eq!(
        gw.metric("gateway_upgrades_total", &[("route", "ws")])
            .await
            .unwrap(),
        1.0
    );
    assert_eq!(handshakes.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn upgrade_idle_ends_an_idle_websocket() {
    let (app, _) = echo_server().await.unwrap();
    let gw = gateway(app, json!({ "timeouts": { "upgrade_idle": "1s" } }), false).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/", gw.listen))
        .await
        .unwrap();
    echo(&mut ws, Message::text("a")).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let _ = ws.send(Message::text("late")).await;
    assert!(
        !matches!(next(&mut ws).await, Some(Message::Text(_))),
        "an upgraded connection idle past upgrade_idle is closed"
    );
}

#[tokio::test]
async fn a_101_nobody_asked_for_is_refused() {
    let app = rogue_101_app().await.unwrap();
    let gw = gateway(app, json!({ "retry": { "attempts": 1 } }), false).await;
    let r = backends_demo::test_client()
        .get(gw.url("/plain"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502, "{:?}", r.text().await);
}

#[tokio::test]
async fn sigterm_gives_open_websockets_the_grace_period() {
    let (app, _) = echo_server().await.unwrap();
    let mut gw = gateway(app, json!({}), true).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/", gw.listen))
        .await
        .unwrap();
    echo(&mut ws, Message::text("before")).await;
    gw.proc().signal("TERM").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    echo(&mut ws, Message::text("during the grace period")).await;
    let code = gw.proc().wait_exit(Duration::from_secs(10)).await.unwrap();
    assert_eq!(code, Some(0), "{}", gw.log());
    assert!(
        !matches!(next(&mut ws).await, Some(Message::Text(_))),
        "closed when the gateway exits"
    );
}
