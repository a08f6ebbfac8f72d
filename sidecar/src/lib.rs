//! The mTLS sidecar: terminates and originates mTLS between services with SPIFFE
//! identities, and gives every outbound dependency its own timeouts, budgeted retries,
//! circuit breaker and concurrency limit, as a tower stack per dependency.
//!
//! It owns identity and TLS (`identity`), the inbound listener (`inbound`), the
//! outbound listeners and per-dependency stacks (`outbound`, `resilience`), transparent
//! interception (`intercept`, and the nftables rules of `sidecar iptables`: `nftables`),
//! EndpointSlice discovery of peer sidecars (`discovery`: the watch is shared with the
//! gateway),
//! and its admin endpoints. The config schema lives in `tollgate-config`.
#![forbid(unsafe_code)]

pub mod admin;
pub mod body;
pub mod discovery;
pub mod error;
pub mod identity;
pub mod inbound;
pub mod intercept;
pub mod listener;
pub mod metrics;
pub mod nftables;
pub mod outbound;
pub mod resilience;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod upgrade;
