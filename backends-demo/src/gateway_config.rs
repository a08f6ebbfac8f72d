//! Gateway configs for tests, built in code instead of hand-escaped YAML in every test:
//!
//! ```
//! # use backends_demo::GatewayConfig;
//! # use serde_json::json;
//! let yaml = GatewayConfig::new()
//!     .upstream("app", &["127.0.0.1:9000".parse().unwrap()])
//!     .route("all", "app")
//!     .route_with("api", "app", json!({ "match": { "path_prefix": "/api/" } }))
//!     .set("server.limits.max_request_header_bytes", 8192)
//!     .to_yaml();
//! assert!(yaml.contains("max_request_header_bytes: 8192"));
//! ```
//!
//! It starts with one plain listener `http` on `${LISTEN}`, the admin listener on
//! `${ADMIN}` and one worker thread (the placeholders [`crate::Gateway`] fills in).

use std::net::SocketAddr;

use serde_json::{json, Map, Value};

#[derive(Debug, Clone)]
pub struct GatewayConfig(Value);

impl Default for GatewayConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl GatewayConfig {
    pub fn new() -> Self {
        Self(json!({
            "listeners": [{ "name": "http", "address": "${LISTEN}" }],
            "admin": { "address": "${ADMIN}" },
            "server": { "threads": 1 },
            "routes": [],
            "upstreams": {},
        }))
    }

    /// Another listener (`{ name, address, ... }`).
    pub fn listener(mut self, listener: Value) -> Self {
        self.push("listeners", listener);
        self
    }

    /// Change the first listener (`${LISTEN}`): `extra`'s keys are added to it.
    pub fn main_listener(mut self, extra: Value) -> Self {
        if let Some(first) = self.0["listeners"].get_mut(0) {
            merge(first, extra);
        }
        self
    }

    pub fn route(self, name: &str, upstream: &str) -> Self {
        self.route_with(name, upstream, json!({}))
    }

    /// A route to `upstream` with `extra` keys (`match`, `retry`, `timeouts`, ...).
    pub fn route_with(mut self, name: &str, upstream: &str, extra: Value) -> Self {
        let mut r = json!({ "name": name, "upstream": upstream });
        merge(&mut r, extra);
        self.push("routes", r);
        self
    }

    /// A route given whole (`{ name, match, redirect | fixed_response | ... }`).
    pub fn raw_route(mut self, route: Value) -> Self {
        self.push("routes", route);
        self
    }

    pub fn upstream(self, name: &str, endpoints: &[SocketAddr]) -> Self {
        self.upstream_with(name, endpoints, json!({}))
    }

    /// An upstream with `extra` keys (`balance`, `health_check`, `tls`, ...).
    pub fn upstream_with(mut self, name: &str, endpoints: &[SocketAddr], extra: Value) -> Self {
        let eps: Vec<Value> = endpoints
            .iter()
            .map(|a| json!({ "address": a.to_string() }))
            .collect();
        let mut u = json!({ "endpoints": eps });
        merge(&mut u, extra);
        self.0["upstreams"][name] = u;
        self
    }

    /// Set a value at a dotted path (`server.limits.max_request_header_bytes`),
    /// creating the objects on the way.
    pub fn set(mut self, path: &str, value: impl Into<Value>) -> Self {
        let value = value.into();
        let mut at = &mut self.0;
        let mut keys = path.split('.').peekable();
        while let Some(k) = keys.next() {
            if !at.is_object() {
                *at = Value::Object(Map::new());
            }
            let Some(obj) = at.as_object_mut() else { break };
            if keys.peek().is_none() {
                obj.insert(k.to_owned(), value);
                break;
            }
            at = obj.entry(k.to_owned()).or_insert_with(|| json!({}));
        }
        self
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(&self.0).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// Push onto one of the top-level lists (always arrays: `new` makes them).
    fn push(&mut self, key: &str, item: Value) {
        if let Some(list) = self.0[key].as_array_mut() {
            list.push(item);
        }
    }
}

/// Add `extra`'s keys to `target` (objects merged key by key, anything else replaced).
fn merge(target: &mut Value, extra: Value) {
    match (target, extra) {
        (Value::Object(t), Value::Object(e)) => {
            for (k, v) in e {
                merge(t.entry(k).or_insert(Value::Null), v);
            }
        }
        (t, e) => *t = e,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn builds_a_config_the_gateway_accepts() {
        let a: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        let yaml = GatewayConfig::new()
            .upstream_with("app", &[a], json!({ "balance": "least_request" }))
            .route_with("api", "app", json!({ "match": { "path_prefix": "/api/" } }))
            .route("all", "app")
            .main_listener(json!({ "trusted_proxies": ["10.0.0.0/8"] }))
            .set("server.limits.max_request_header_bytes", 8192)
            .to_yaml()
            .replace("${LISTEN}", "127.0.0.1:1")
            .replace("${ADMIN}", "127.0.0.1:2");
        let loaded = tollgate_config::gateway::from_str(
            std::path::Path::new("t.yaml"),
            &yaml,
            &Default::default(),
        )
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let c = loaded.config;
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.max_request_header_bytes, 8192);
        assert_eq!(c.listeners[0].trusted_proxies.len(), 1);
        assert_eq!(c.upstreams["app"].endpoints[0].address, a);
    }
}
