//! The edge gateway: a Pingora proxy with strict hot-reloaded config, route matching,
//! and health-aware, zone-aware load balancing.
//!
//! This crate owns the request path: phase dispatch (`proxy`) over the per-request
//! context (`context`), client facts and forwarding headers (`forwarded`), listener
//! guards (`guards`), route matching (`routing`), routes and their actions (`route`),
//! route filters (`filters`), the one writer of the gateway's own answers (`respond`),
//! upstream attempts and retries (`attempts`), endpoint selection (`balance`). Around
//! it: TLS termination (`tls`), PROXY protocol (`proxy_protocol`, `connection`), active
//! health checks, DNS discovery and certificate rotation (`health`), the running
//! snapshot and reloads (`snapshot`, `state`), process wiring (`server`) and the binary
//! upgrade handoff (`upgrade`).
//! It does not own the config schema (the `tollgate-config` crate).
#![forbid(unsafe_code)]

pub mod adaptive;
pub mod admin;
pub mod attempts;
pub mod auth;
pub mod balance;
pub mod concurrency;
pub mod connection;
pub mod context;
pub mod desync;
pub mod filters;
pub mod forwarded;
pub mod grpc;
pub mod grpc_health;
pub mod guards;
pub mod health;
pub mod idempotency;
pub mod kubernetes;
pub mod metrics;
pub mod proxy;
pub mod proxy_protocol;
pub mod ratelimit;
pub mod replay;
pub mod respond;
pub mod route;
pub mod routing;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod sticky;
pub mod telemetry;
pub mod tls;
pub mod trace;
pub mod transform;
pub mod upgrade;
pub mod waf;
