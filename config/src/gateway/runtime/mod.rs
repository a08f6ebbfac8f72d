//! Runtime types: the gateway's validated configuration. Durations are parsed,
//! addresses resolved to socket addresses, regexes compiled, references between
//! routes and upstreams checked. Built from [`super::file`] types by [`validate`].
//!
//! One module per concern: [`listener`], [`route`], [`upstream`]; this one holds the
//! whole config and the top-level check that runs them in order.

mod listener;
mod route;
mod upstream;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub use self::listener::*;
pub use self::route::*;
pub use self::upstream::*;
use super::file::GatewayFile;
pub use crate::common::outlier_detection::Outlier;
use crate::common::parse_socket_addr;
use crate::error::Problems;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub zone: Option<String>,
    pub region: Option<String>,
    pub listeners: Vec<Listener>,
    pub admin_address: SocketAddr,
    pub threads: usize,
    pub work_stealing: bool,
    pub drain_delay: Duration,
    pub grace_period: Duration,
    pub max_request_header_bytes: usize,
    pub max_request_line_bytes: usize,
    /// WAF policies by name (routes hold their own, exclusions included).
    pub waf: BTreeMap<String, std::sync::Arc<tollgate_waf::Policy>>,
    /// Authentication policies (routes name theirs in `route.auth`).
    pub auth: crate::gateway::auth::AuthPolicies,
    pub max_header_field_bytes: usize,
    pub client_idle_timeout: Duration,
    pub keepalive_duration: Duration,
    pub drop_invalid_header_fields: bool,
    pub watch_config: bool,
    /// Deadline for a whole request head.
    pub request_head_timeout: Duration,
    /// Connections per client address (0: unlimited).
    pub max_connections_per_client: u32,
    /// `server.limits.max_connections`: `None` for the default (half the open-file
    /// limit, worked out by the gateway), `Some(0)` for no limit.
    pub max_connections: Option<u32>,
    pub request_body_timeout: Duration,
    /// Bytes per second; 0: off.
    pub min_request_body_rate: u64,
    /// Keep the header-name case of proxied requests and responses.
    pub preserve_header_case: bool,
    pub routes: Vec<Route>,
    pub upstreams: BTreeMap<String, Upstream>,
    /// Rate-limit policies by name.
    pub rate_limits: BTreeMap<String, crate::gateway::ratelimit::RateLimitPolicy>,
    pub redis: Option<crate::gateway::ratelimit::RedisConfig>,
    pub access_log: crate::common::telemetry::AccessLog,
    pub tracing: Option<crate::common::telemetry::Tracing>,
    /// `server.log_level`, checked.
    pub log_level: Option<String>,
    /// `server.upgrade_socket`, resolved (see `upgrade_socket.rs`).
    pub upgrade_socket: std::path::PathBuf,
}

/// Values taken from the environment rather than the file.
#[derive(Debug, Clone, Default)]
pub struct EnvOverrides {
    pub zone: Option<String>,
    pub region: Option<String>,
}

impl EnvOverrides {
    pub fn from_process_env() -> Self {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Self {
            zone: get("GATEWAY_ZONE"),
            region: get("GATEWAY_REGION"),
        }
    }
}

/// Check a parsed file and build the runtime config, collecting every problem found.
/// Relative certificate paths are taken relative to `base_dir` (the config's directory).
pub fn validate(
    file: GatewayFile,
    env: &EnvOverrides,
    base_dir: &Path,
) -> Result<GatewayConfig, Problems> {
    let mut p = Problems::default();

    let zone = env.zone.clone().or(file.zone);
    let region = env.region.clone().or(file.region);

    let listeners = validate_listeners(&file.listeners, base_dir, &mut p);
    let admin_address = match parse_socket_addr(&file.admin.address) {
        Ok(a) => {
            if listeners.iter().any(|l| l.address == a) {
                p.push("admin.address", format!("{a} is also a traffic listener"));
            }
            a
        }
        Err(e) => {
            p.push("admin.address", e.to_string());
            SocketAddr::from(([127, 0, 0, 1], 9901))
        }
    };

    let threads = match file.server.threads {
        Some(0) => {
            p.push("server.threads", "must be at least 1");
            1
        }
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    if file.server.limits.request_head_timeout.get() < Duration::from_millis(100) {
        p.push(
            "server.limits.request_head_timeout",
            "must be at least 100ms",
        );
    }
    if file.server.limits.request_body_timeout.get() < Duration::from_millis(100) {
        p.push(
            "server.limits.request_body_timeout",
            "must be at least 100ms",
        );
    }
    let max_request_header_bytes = file.server.limits.max_request_header_bytes;
    if !(1024..=1024 * 1024).contains(&max_request_header_bytes) {
        p.push(
            "server.limits.max_request_header_bytes",
            "must be between 1024 and 1048576",
        );
    }

    let limits = &file.server.limits;
    for (field, v) in [
        ("max_request_line_bytes", limits.max_request_line_bytes),
        ("max_header_field_bytes", limits.max_header_field_bytes),
    ] {
        if !(256..=1024 * 1024).contains(&v) {
            p.push(
                format!("server.limits.{field}"),
                "must be between 256 and 1048576",
            );
        }
    }
    if limits.client_idle_timeout.get() < Duration::from_secs(1) {
        p.push("server.limits.client_idle_timeout", "must be at least 1s");
    }
    if limits.keepalive_duration.get() < Duration::from_secs(1) {
        p.push("server.limits.keepalive_duration", "must be at least 1s");
    }

    // Upstreams first, so routes can be checked against them.
    let mut upstreams = BTreeMap::new();
    for (name, u) in &file.upstreams {
        if let Some(up) = validate_upstream(name, u, zone.as_deref(), base_dir, &mut p) {
            upstreams.insert(name.clone(), up);
        }
    }
    let rate_limits = crate::gateway::ratelimit::validate_policies(
        &file.rate_limits,
        file.redis.as_ref(),
        &mut p,
    );
    let redis = file
        .redis
        .as_ref()
        .map(|r| crate::gateway::ratelimit::validate_redis(r, base_dir, &mut p));
    let access_log =
        crate::common::telemetry::validate_access_log(file.access_log.as_ref(), base_dir, &mut p);
    let tracing =
        crate::common::telemetry::validate_tracing(file.tracing.as_ref(), "gateway", &mut p);
    let log_level = crate::telemetry::validate_log_level(
        "server.log_level",
        file.server.log_level.as_deref(),
        &mut p,
    );
    let upgrade_socket = super::upgrade_socket::validate(
        file.server.upgrade_socket.as_deref(),
        admin_address,
        base_dir,
        &mut p,
    );
    let waf = crate::gateway::waf::Policies::compile(&file.waf, &mut p);
    let auth = crate::gateway::auth::validate(&file.auth, base_dir, &mut p);
    let routes = validate_routes(
        &file.routes,
        &file.upstreams,
        &file.rate_limits,
        &waf,
        &file.auth,
        file.redis.is_some(),
        &mut p,
    );

    if !p.is_empty() {
        return Err(p);
    }
    Ok(GatewayConfig {
        zone,
        region,
        listeners,
        admin_address,
        threads,
        work_stealing: file.server.work_stealing,
        drain_delay: file.server.shutdown.drain_delay.get(),
        grace_period: file.server.shutdown.grace_period.get(),
        max_request_header_bytes,
        max_request_line_bytes: file.server.limits.max_request_line_bytes,
        waf: waf.by_name(),
        auth,
        max_header_field_bytes: file.server.limits.max_header_field_bytes,
        client_idle_timeout: file.server.limits.client_idle_timeout.get(),
        keepalive_duration: file.server.limits.keepalive_duration.get(),
        drop_invalid_header_fields: file.server.limits.drop_invalid_header_fields,
        watch_config: file.server.watch_config,
        request_head_timeout: file.server.limits.request_head_timeout.get(),
        max_connections_per_client: file.server.limits.max_connections_per_client,
        max_connections: file.server.limits.max_connections,
        request_body_timeout: file.server.limits.request_body_timeout.get(),
        min_request_body_rate: file.server.limits.min_request_body_rate,
        preserve_header_case: file.server.preserve_header_case,
        routes,
        upstreams,
        rate_limits,
        redis,
        access_log,
        tracing,
        log_level,
        upgrade_socket,
    })
}
