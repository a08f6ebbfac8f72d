//! The world around the proxies: the `backend-demo` server (echo JSON, health check,
//! fault knobs: status, latency, hang, reset, crash) and the helpers that tests, the demo
//! and the benches use to stand it up: free ports, finding and building workspace
//! binaries, child processes that die with their owner, polling, and gateway configs
//! built in code (`GatewayConfig`). It does not proxy or route; nothing in the proxies
//! depends on it outside tests and benches.

#![forbid(unsafe_code)]

mod backend;
mod bins;
pub mod browser;
pub mod faults;
mod gateway;
mod gateway_config;
pub mod kube_api;
pub mod load;
pub mod otlp;
pub mod pki;
mod poll;
mod ports;
mod process;
mod redis;
pub mod server;

pub use backend::{Backend, BackendBuilder, Stats};
pub use bins::bin_path;
pub use gateway::{sum_metric, Gateway, ProxyProc, Sidecar};
pub use gateway_config::GatewayConfig;
pub use poll::{http_get_ok, test_client, wait_until};
pub use ports::{free_addr, free_port};
pub use process::Proc;
pub use redis::Redis;
