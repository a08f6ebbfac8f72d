//! gRPC health checks: one `grpc.health.v1.Health/Check` call over HTTP/2 (h2 with ALPN
//! when the upstream has `tls`, cleartext prior-knowledge h2c otherwise); the endpoint
//! is healthy iff the answer is SERVING.
//!
//! The two messages are built and read by hand rather than generated: the request is
//! one string field (1, `service`), the answer one enum field (1, `status`, SERVING =
//! 1), and a protobuf code generator would be a build dependency for 20 lines.

use std::net::SocketAddr;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderValue, Method, Request};
use tokio::net::TcpStream;

use crate::grpc::{status_code, GRPC_MESSAGE};

const PATH: &str = "/grpc.health.v1.Health/Check";
/// `HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: u64 = 1;
/// A health answer is two bytes; anything much larger is not one.
const MAX_ANSWER: usize = 64 * 1024;

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// One check of `service` at `addr`: `Ok` when SERVING, else why not.
pub async fn check(
    addr: SocketAddr,
    service: &str,
    tls: Option<&crate::tls::PeerTls>,
) -> Result<(), String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (io, authority): (Box<dyn Io>, String) = match tls {
        None => (Box::new(tcp), addr.to_string()),
        Some(t) => {
            let name = rustls_pki_types::ServerName::try_from(t.sni.clone())
                .map_err(|e| format!("sni {:?}: {e}", t.sni))?;
            let s = tokio_rustls::TlsConnector::from(t.health_client_h2())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("tls: {e}"))?;
            if s.get_ref().1.alpn_protocol() != Some(b"h2") {
                return Err("the endpoint did not negotiate HTTP/2 (ALPN h2)".into());
            }
            (Box::new(s), t.sni.clone())
        }
    };
    let (client, conn) = h2::client::handshake(io)
        .await
        .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    // The connection task ends when the client side is dropped, at the end of this call.
    let conn = tokio::spawn(conn);
    let result = call(client, tls.is_some(), &authority, service).await;
    conn.abort();
    result
}

async fn call(
    client: h2::client::SendRequest<Bytes>,
    tls: bool,
    authority: &str,
    service: &str,
) -> Result<(), String> {
    let mut client = client.ready().await.map_err(|e| format!("HTTP/2: {e}"))?;
    let scheme = if tls { "https" } else { "http" };
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("{scheme}://{authority}{PATH}"))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .header(http::header::USER_AGENT, "tollgate-health-check")
        .body(())
        .map_err(|e| format!("request: {e}"))?;
    let (resp, mut send) = client
        .send_request(req, false)
        .map_err(|e| format!("send: {e}"))?;
    send.send_data(frame(&request_message(service)), true)
        .map_err(|e| format!("send: {e}"))?;
    let resp = resp.await.map_err(|e| format!("response: {e}"))?;
    let (head, mut body) = resp.into_parts();
    if head.status != http::StatusCode::OK {
        return Err(format!("HTTP status {}", head.status.as_u16()));
    }
    if let Some(code) = status_code(&head.headers) {
        // Trailers-only: the call failed (NOT_FOUND: the service is unknown).
        return Err(status_error(code, head.headers.get(&GRPC_MESSAGE)));
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| format!("body: {e}"))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        buf.extend_from_slice(&chunk);
        if buf.len() > MAX_ANSWER {
            return Err("answer too large".into());
        }
    }
    let trailers = body
        .trailers()
        .await
        .map_err(|e| format!("trailers: {e}"))?
        .unwrap_or_default();
    match status_code(&trailers) {
        Some(0) => {}
        Some(code) => return Err(status_error(code, trailers.get(&GRPC_MESSAGE))),
        None => return Err("no grpc-status in the trailers".into()),
    }
    let status = serving_status(&buf).ok_or("malformed HealthCheckResponse")?;
    if status == SERVING {
        Ok(())
    } else {
        Err(format!("{} (status {status})", status_name(status)))
    }
}

fn status_error(code: u32, message: Option<&HeaderValue>) -> String {
    let message = message.and_then(|m| m.to_str().ok()).unwrap_or("");
    format!("grpc-status {code} {message}")
        .trim_end()
        .to_owned()
}

fn status_name(status: u64) -> &'static str {
    match status {
        0 => "UNKNOWN",
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "unrecognised status",
    }
}

/// `HealthCheckRequest { string service = 1; }`: empty for the server as a whole
/// (proto3 leaves a default value out).
fn request_message(service: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(service.len() + 6);
    if !service.is_empty() {
        m.push(0x0a); // field 1, length-delimited
        put_varint(&mut m, service.len() as u64);
        m.extend_from_slice(service.as_bytes());
    }
    m
}

/// A gRPC message on the wire: uncompressed flag, 4-byte big-endian length, message.
fn frame(message: &[u8]) -> Bytes {
    let mut b = Vec::with_capacity(message.len() + 5);
    b.push(0);
    b.extend_from_slice(&(message.len() as u32).to_be_bytes());
    b.extend_from_slice(message);
    Bytes::from(b)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint(b: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.first()?;
        b.advance(1);
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(v);
        }
    }
    None
}

/// The `status` (field 1) of the one framed `HealthCheckResponse` in `body`; an absent
/// field is its default, UNKNOWN (0). Unknown fields are skipped, as protobuf says.
fn serving_status(body: &[u8]) -> Option<u64> {
    let (&compressed, rest) = body.split_first()?;
    if compressed != 0 {
        return None;
    }
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let mut m = rest.get(4..4 + len)?;
    let mut status = 0;
    while !m.is_empty() {
        let key = varint(&mut m)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = varint(&mut m)?,
            (_, 0) => {
                varint(&mut m)?;
            }
            (_, 1) => m = m.get(8..)?,
            (_, 2) => {
                let n = usize::try_from(varint(&mut m)?).ok()?;
                m = m.get(n..)?;
            }
            (_, 5) => m = m.get(4..)?,
            _ => return None,
        }
    }
    Some(status)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn messages_are_encoded_and_read_by_hand() {
        assert_eq!(request_message(""), b"");
        assert_eq!(request_message("shop.Orders"), b"\x0a\x0bshop.Orders");
        assert_eq!(&frame(b"\x08\x01")[..], b"\0\0\0\0\x02\x08\x01");
        assert_eq!(serving_status(b"\0\0\0\0\x02\x08\x01"), Some(SERVING));
        assert_eq!(serving_status(b"\0\0\0\0\x02\x08\x02"), Some(2));
        // The default (UNKNOWN) is left out on the wire.
        assert_eq!(serving_status(b"\0\0\0\0\0"), Some(0));
        // An unknown field before it is skipped.
        assert_eq!(serving_status(b"\0\0\0\0\x05\x12\x01x\x08\x01"), Some(1));
        assert_eq!(serving_status(b"\0\0\0\0\x02\x08"), None);
        assert_eq!(serving_status(b"\x01\0\0\0\x02\x08\x01"), None);
        let mut long = Vec::new();
        put_varint(&mut long, 300);
        assert_eq!(long, [0xac, 0x02]);
        assert_eq!(varint(&mut &long[..]), Some(300));
    }
}
