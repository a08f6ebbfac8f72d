//! Process wiring: Pingora server and services, admin listener, background checks,
//! config watching, signals (SIGHUP reload, SIGTERM drain, SIGINT fast exit).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::HttpServerOptions;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora_core::services::listening::Service;
use tokio::signal::unix::{signal, SignalKind};
use tollgate_config::admin::Readiness;
use tollgate_config::gateway::{self, EnvOverrides};

use crate::admin::GatewayAdmin;
use crate::connection::{self, ListenerTable};
use crate::proxy::GatewayProxy;
use crate::state::State;
use crate::tls::{client_verifier, HandshakeCallbacks, SniResolver};
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::ListenerConfig;
use pingora_core::protocols::l4::stream::L4BufferSettings;

/// Run the gateway until shutdown. Returns an error for startup failures.
pub fn run(path: &Path) -> anyhow::Result<()> {
    let env = EnvOverrides::from_process_env();
    let loaded = gateway::load(path, &env)?;
    let cfg = loaded.config.clone();
    tollgate_config::telemetry::set_log_level(cfg.log_level.as_deref());
    let telemetry = tollgate_config::telemetry::Telemetry::start(
        &cfg.access_log,
        crate::state::some_route_logs(&cfg),
        cfg.tracing.as_ref(),
    )?;
    tollgate_config::metrics::publish_build_info("gateway_build_info");
    let state = State::new(path.to_path_buf(), env, loaded, telemetry)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;

    let admin_addr = tollgate_config::admin::spawn(
        cfg.admin_address,
        state.health.clone(),
        Arc::new(GatewayAdmin {
            state: state.clone(),
        }),
    )
    .map_err(|e| anyhow::anyhow!("admin listener {}: {e}", cfg.admin_address))?;
    crate::health::spawn(state.clone())?;
    spawn_sighup(state.clone())?;
    // Always watch; `server.watch_config` (reloadable) decides whether a change reloads.
    let st = state.clone();
    let _watch = tollgate_config::watch::watch_file(path, Duration::from_millis(200), move || {
        if st.snapshot.load().config.watch_config {
            let _ = st.reload("file");
        }
    })?;

    // Listeners are bound by Pingora when the server starts; check them first so a
    // taken port is a clear startup error rather than a panic in a service thread.
    for l in &cfg.listeners {
        std::net::TcpListener::bind(l.address)
            .map_err(|e| anyhow::anyhow!("listener {} ({}): {e}", l.name, l.address))?;
    }

    let conf = ServerConf {
        threads: cfg.threads,
        // Pingora sleeps this long in full after SIGTERM; our drain watcher exits as
        // soon as in-flight requests are done, so this is only the upper bound.
        grace_period_seconds: Some(cfg.grace_period.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        // Measured in benches/: without stealing, CPU per request is ~10% lower.
        work_stealing: cfg.work_stealing,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let conf = server.configuration.clone();

    // One service per `h2c` setting. Every connection first goes through
    // `connection`: which listener, PROXY protocol header, handshake accounting.
    let table = Arc::new(ListenerTable::new(&cfg.listeners));
    let clients = Arc::new(connection::ClientConnections::default());
    let open_connections = Arc::new(connection::OpenConnections::default());
    let default_max_connections = connection::default_max_connections();
    if cfg.max_connections.is_none() {
        tracing::info!(
            "server.limits.max_connections: {default_max_connections} (half the open-file limit; 0 means none)"
        );
    }
    for h2c in [false, true] {
        let group: Vec<_> = cfg.listeners.iter().filter(|l| l.h2c == h2c).collect();
        if group.is_empty() {
            continue;
        }
        let mut inner = pingora_proxy::http_proxy(
            &conf,
            GatewayProxy {
                state: state.clone(),
            },
        );
        let mut opts = HttpServerOptions::default();
        opts.h2c = h2c;
        inner.server_options = Some(opts);
        let app = connection::App {
            inner: Arc::new(inner),
            table: table.clone(),
            state: state.clone(),
            clients: clients.clone(),
            open: open_connections.clone(),
            default_max_connections,
        };
        let name = if h2c { "gateway-h2c" } else { "gateway" };
        let mut svc = Service::new(name.to_owned(), app);
        svc.endpoints()
            .set_pre_tls_callback(Arc::new(connection::PreTls {
                table: table.clone(),
            }));
        for l in group {
            let endpoint = ListenerConfig::tcp(l.address.to_string());
            let endpoint = match tls_settings(l, &state)? {
                Some(settings) => endpoint.tls(settings),
                None => endpoint,
            };
            svc.add_listener(endpoint.l4_buffer(unbuffered_reads()));
        }
        server.add_service(svc);
    }

    // Ready only once Pingora has bound every listener (it binds them on its own
    // runtimes after `run` starts): a load balancer must not send traffic earlier.
    spawn_ready_when_listening(
        state.clone(),
        cfg.listeners.iter().map(|l| l.address).collect(),
    )?;
    tracing::info!(
        version = %state.snapshot.load().version,
        admin = %admin_addr,
        listeners = ?cfg.listeners.iter().map(|l| l.address.to_string()).collect::<Vec<_>>(),
        zone = ?cfg.zone,
        "gateway started"
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(Drain { state }),
    });
    Ok(())
}

/// Pingora puts a 64 KiB read buffer in front of every accepted socket. HTTP/1 reads
/// into its own header buffer and rustls into its own record buffer, so the extra
/// buffer only costs memory: measured with one request then idle, ~100 KiB per plain
/// keep-alive connection with it and ~38 KiB without, ~76 KiB per TLS connection with
/// it and much less without, at the same CPU per request (benches/RESULTS.md).
fn unbuffered_reads() -> L4BufferSettings {
    L4BufferSettings {
        read: Some(0),
        write: None,
    }
}

/// Pingora TLS settings for a TLS listener (`None` for plain ones): our SNI resolver
/// (certificates from the current snapshot), ALPN, client certificate verification,
/// and callbacks that count handshakes.
fn tls_settings(l: &gateway::Listener, state: &State) -> anyhow::Result<Option<TlsSettings>> {
    let Some(t) = &l.tls else {
        return Ok(None);
    };
    let mut settings = TlsSettings::with_callbacks(Box::new(HandshakeCallbacks {
        listener: l.name.clone(),
    }))
    .map_err(|e| anyhow::anyhow!("listener {}: {e}", l.name))?;
    settings.set_cert_resolver(SniResolver::new(&l.name, state.snapshot.clone()));
    if t.http2 {
        settings.enable_h2();
    }
    if let Some(auth) = &t.client_auth {
        settings.set_client_cert_verifier(
            client_verifier(&l.name, auth).map_err(|e| anyhow::anyhow!("{e}"))?,
        );
    }
    Ok(Some(settings))
}

fn spawn_ready_when_listening(state: Arc<State>, addrs: Vec<SocketAddr>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("readiness".into())
        .spawn(move || {
            let probe = |a: &SocketAddr| {
                let mut a = *a;
                if a.ip().is_unspecified() {
                    a.set_ip(match a {
                        SocketAddr::V4(_) => IpAddr::from([127, 0, 0, 1]),
                        SocketAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
                    });
                }
                std::net::TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_ok()
            };
            while !addrs.iter().all(probe) {
                std::thread::sleep(Duration::from_millis(10));
            }
            state.health.set(Readiness::Ready);
            tracing::info!("listeners bound: ready");
        })?;
    Ok(())
}

fn spawn_sighup(state: Arc<State>) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("sighup".into())
        .spawn(move || {
            rt.block_on(async move {
                let Ok(mut hup) = signal(SignalKind::hangup()) else {
                    tracing::error!("cannot listen for SIGHUP; reload with POST /reload");
                    return;
                };
                while hup.recv().await.is_some() {
                    let st = state.clone();
                    let _ = tokio::task::spawn_blocking(move || st.reload("signal")).await;
                }
            })
        })?;
    Ok(())
}

/// SIGTERM: report not-ready, keep serving for `drain_delay` (so load balancers move
/// away), then let Pingora stop accepting, and exit as soon as in-flight requests are
/// done (Pingora's grace period is the upper bound). SIGINT: exit now.
struct Drain {
    state: Arc<State>,
}

#[async_trait]
impl ShutdownSignalWatch for Drain {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {
                tracing::info!("SIGINT: exiting now");
                return ShutdownSignal::FastShutdown;
            }
        }
        let (drain_delay, grace) = {
            let snap = self.state.snapshot.load();
            (snap.config.drain_delay, snap.config.grace_period)
        };
        self.state.health.set(Readiness::Draining);
        tracing::info!(
            "SIGTERM: draining; /readyz reports 503, serving for {drain_delay:?} more, then up to {grace:?} for in-flight requests"
        );
        tokio::select! {
            _ = tokio::time::sleep(drain_delay) => {}
            _ = term.recv() => tracing::info!("second SIGTERM: skipping the drain delay"),
            _ = int.recv() => return ShutdownSignal::FastShutdown,
        }
        let state = self.state.clone();
        let _ = std::thread::Builder::new()
            .name("drain".into())
            .spawn(move || exit_when_idle(&state, grace));
        ShutdownSignal::GracefulTerminate
    }
}

fn exit_when_idle(state: &State, grace: Duration) {
    let start = std::time::Instant::now();
    // Let the listeners close and connections already accepted reach the proxy.
    std::thread::sleep(Duration::from_millis(250));
    let mut idle_checks = 0;
    while start.elapsed() < grace {
        if state.in_flight() == 0 {
            idle_checks += 1;
            if idle_checks >= 3 {
                tracing::info!("drained: no request in flight, exiting");
                std::process::exit(0);
            }
        } else {
            idle_checks = 0;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    tracing::warn!(
        in_flight = state.in_flight(),
        "grace period over with requests still in flight, exiting"
    );
    std::process::exit(0);
}
