//! One HTTP/1.1 connection driven by hand: several requests on it, each response read
//! to its end (Content-Length bodies), so tests can see whether the gateway keeps a
//! connection open after answering.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

#[derive(Debug)]
pub struct RawResponse {
    pub status_line: String,
    pub status: u16,
    /// Names lower-cased here (see `raw_head` for the bytes as sent).
    pub headers: Vec<(String, String)>,
    pub raw_head: String,
    pub body: String,
    pub raw_body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl RawConn {
    pub fn open(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// Send `request` as is and read one response; `None` if the connection closed first.
    pub fn exchange(&mut self, request: &str) -> Option<RawResponse> {
        self.exchange_bytes(request.as_bytes())
    }

    pub fn exchange_bytes(&mut self, request: &[u8]) -> Option<RawResponse> {
        self.stream.write_all(request).ok()?;
        self.read_response()
    }

    fn fill(&mut self) -> Option<()> {
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk) {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Some(())
            }
        }
    }

    fn read_response(&mut self) -> Option<RawResponse> {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill()?;
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        let raw_head = head.clone();
        let mut lines = head.split("\r\n");
        let status_line = lines.next()?.to_owned();
        let status = status_line.get(9..12)?.parse().ok()?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while self.buf.len() < end + len {
            self.fill()?;
        }
        let raw_body = self.buf[end..end + len].to_vec();
        self.buf.drain(..end + len);
        Some(RawResponse {
            status_line,
            status,
            headers,
            raw_head,
            body: String::from_utf8_lossy(&raw_body).into_owned(),
            raw_body,
        })
    }

    /// Whether the peer closed the connection (reads EOF within the timeout).
    pub fn closed(&mut self) -> bool {
        self.fill().is_none()
    }
}
