//! The edge gateway: a Pingora proxy with strict hot-reloaded config, route matching,
//! and health-aware, zone-aware load balancing.
//!
//! This crate owns the request path (`proxy`), route matching (`routing`), endpoint
//! selection (`balance`, `endpoint`), active health checks and DNS discovery (`health`),
//! the running snapshot and reloads (`snapshot`, `state`), and process wiring (`server`).
//! It does not own the config schema (the `tollgate-config` crate) nor TLS yet.
#![forbid(unsafe_code)]

pub mod admin;
pub mod balance;
pub mod connection;
pub mod health;
pub mod metrics;
pub mod proxy;
pub mod proxy_protocol;
pub mod routing;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod tls;
pub mod trace;
