//! The floor for the gateway's benchmarks: a Pingora 0.9 HTTP proxy with no features,
//! built with the same release profile and allocator as the gateway. Every request
//! goes to one upstream over pooled keep-alive connections; nothing is added, checked
//! or counted.
//!
//!   bare-pingora LISTEN UPSTREAM [THREADS [steal|nosteal]]
//!   bare-pingora 127.0.0.1:18087 127.0.0.1:18081 1 nosteal
//!
//! `nosteal` (the default, as the gateway's) runs one single-threaded scheduler per
//! thread; `steal` is Pingora's default work-stealing runtime.

use std::process::ExitCode;

use async_trait::async_trait;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora_error::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(listen), Some(upstream)) = (args.first(), args.get(1)) else {
        eprintln!("usage: bare-pingora LISTEN UPSTREAM [THREADS [steal|nosteal]]");
        return ExitCode::from(2);
    };
    let threads = match args.get(2).map(|t| t.parse::<usize>()) {
        None => 1,
        Some(Ok(t)) if t > 0 => t,
        Some(_) => {
            eprintln!("THREADS must be a positive integer");
            return ExitCode::from(2);
        }
    };
    let work_stealing = match args.get(3).map(String::as_str) {
        None | Some("nosteal") => false,
        Some("steal") => true,
        Some(other) => {
            eprintln!("expected steal or nosteal, not {other:?}");
            return ExitCode::from(2);
        }
    };
    let conf = ServerConf {
        threads,
        work_stealing,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut svc = pingora_proxy::http_proxy_service(
        &server.configuration,
        Bare {
            upstream: upstream.clone(),
        },
    );
    svc.add_tcp(listen);
    server.add_service(svc);
    server.run_forever()
}
