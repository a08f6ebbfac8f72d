//! The world around the proxies: the `backend-demo` server (echo JSON, health check,
//! fault knobs: status, latency, hang, reset, crash) and the helpers that tests, the demo
//! and the benches use to stand it up: free ports, finding and building workspace
//! binaries, child processes that die with their owner, polling, and gateway configs
//! built in code (`GatewayConfig`). It does not proxy or route; nothing in the proxies
//! depends on it outside tests and benches.

#![forbid(unsafe_code)]

pub mod auth;
mod backend;
mod bins;
pub mod browser;
pub mod faults;
mod gateway;
mod gateway_config;
pub mod grpc;
pub mod kube_api;
pub mod load;
pub mod oidc;
pub mod otlp;
pub mod pki;
mod poll;
mod ports;
mod process;
mod redis;
pub mod server;
pub mod websocket;

pub use backend::{Backend, BackendBuilder, Stats};
pub use bins::bin_path;
pub use gateway::{sum_metric, Gateway, ProxyProc, Sidecar};
pub use gateway_config::GatewayConfig;
pub use poll::{http_get_ok, test_client, wait_until};
pub use ports::{free_addr, free_port};
pub use process::Proc;
pub use redis::{Redis, RedisCluster};

/// Serve HTTP/1.1 and HTTP/2 on `listener` inside this process (test doubles: the OTLP
/// receiver, the fake Kubernetes API), until the returned task is aborted.
pub(crate) fn serve_in_process<F, Fut, B>(
    listener: tokio::net::TcpListener,
    handle: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = http::Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let handle = handle.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let fut = handle(req);
                    async move { Ok::<_, std::convert::Infallible>(fut.await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                .await;
            });
        }
    })
}
