//! The gateway's gRPC settings, file layer: the HTTP version spoken to an upstream's
//! endpoints and the gRPC health check. (Retryable gRPC methods are the shared
//! `retry.grpc_methods`, see [`crate::common::retry`].)

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `upstreams.X.protocol`: the HTTP version spoken to the endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (over TLS when `tls` is set).
    #[default]
    Http1,
    /// HTTP/2 over TLS, negotiated with ALPN: needs `tls`. What gRPC servers behind
    /// TLS speak.
    H2,
    /// Cleartext HTTP/2 with prior knowledge (no upgrade, no ALPN): what plain gRPC
    /// servers speak. Not with `tls`.
    H2c,
}

impl UpstreamProtocol {
    pub fn is_http2(self) -> bool {
        matches!(self, Self::H2 | Self::H2c)
    }
}

/// `health_check.grpc`: call `grpc.health.v1.Health/Check` instead of an HTTP GET.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrpcHealthCheckFile {
    /// The service asked about (`""`, the default, is the server as a whole). The
    /// endpoint is healthy while it answers SERVING.
    #[serde(default)]
    pub service: String,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    use crate::gateway::{from_str, EnvOverrides, Loaded};

    fn load(upstream: &str, retry: &str) -> Result<Loaded, String> {
        let src = format!(
            r#"
listeners: [{{ name: h2c, address: 127.0.0.1:8080, h2c: true }}]
admin: {{ address: 127.0.0.1:9901 }}
routes: [{{ name: grpc, upstream: app{retry} }}]
upstreams:
  app:
    endpoints: [{{ address: 127.0.0.1:50051 }}]
{upstream}
"#
        );
        let env = EnvOverrides {
            zone: None,
            region: None,
        };
        from_str(Path::new("gw.yaml"), &src, &env).map_err(|e| e.to_string())
    }

    #[test]
    fn protocol_grpc_health_check_and_retried_methods_parse() {
        let l = load(
            "    protocol: h2c\n    health_check: { grpc: { service: shop.Orders } }",
            r#", retry: { attempts: 2, grpc_methods: ["/shop.Orders/Get"] }"#,
        )
        .unwrap();
        let up = &l.config.upstreams["app"];
        assert_eq!(up.protocol, super::UpstreamProtocol::H2c);
        let hc = up.health_check.as_ref().unwrap();
        assert_eq!(hc.grpc_service.as_deref(), Some("shop.Orders"));
        let retry = &l.config.routes[0].retry;
        assert!(retry.grpc_methods.matches("/shop.Orders/Get"));
        assert!(!retry.grpc_methods.matches("/shop.Orders/Put"));
        // Defaults: HTTP/1.1, an HTTP health check, no gRPC method retried.
        let l = load("    health_check: {}", "").unwrap();
        let up = &l.config.upstreams["app"];
        assert_eq!(up.protocol, super::UpstreamProtocol::Http1);
        assert_eq!(up.health_check.as_ref().unwrap().grpc_service, None);
        assert!(l.config.routes[0].retry.grpc_methods.is_empty());
    }

    #[test]
    fn h2_needs_tls_and_h2c_refuses_it() {
        let e = load("    protocol: h2", "").unwrap_err();
        assert!(e.contains("upstreams.app.protocol"), "{e}");
        assert!(e.contains("h2 is HTTP/2 over TLS"), "{e}");
        let e = load("    protocol: h2c\n    tls: { sni: a.example }", "").unwrap_err();
        assert!(e.contains("h2c is cleartext HTTP/2"), "{e}");
        let e = load(
            "",
            r#", retry: { attempts: 2, grpc_methods: ["shop.Orders/Get"] }"#,
        )
        .unwrap_err();
        assert!(e.contains("routes[0].retry.grpc_methods[0]"), "{e}");
        assert!(load("    protocol: h2\n    tls: { sni: a.example }", "").is_ok());
    }
}
