//! Header transforms. HSTS: `Strict-Transport-Security` on responses sent over TLS
//! (RFC 6797 8.1: a browser ignores it over plain HTTP, so it is not sent there).

use http::header::STRICT_TRANSPORT_SECURITY;
use http::HeaderValue;
use pingora_http::ResponseHeader;

use crate::context::Client;

#[derive(Debug)]
pub struct Hsts {
    value: HeaderValue,
}

impl Hsts {
    /// From the validated `max-age=...; includeSubDomains` text; `None` if it is not
    /// a header value (validation only produces ASCII, so never in practice).
    pub fn build(value: &str) -> Option<Self> {
        HeaderValue::from_str(value)
            .ok()
            .map(|value| Self { value })
    }

    pub fn on_response(
        &self,
        client: &Client,
        resp: &mut ResponseHeader,
    ) -> pingora_error::Result<()> {
        if client.tls {
            resp.insert_header(STRICT_TRANSPORT_SECURITY, self.value.clone())?;
        }
        Ok(())
    }
}
