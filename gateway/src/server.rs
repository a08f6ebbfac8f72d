//! Process wiring: Pingora server and services, admin listener, background checks,
//! config watching, signals (SIGHUP reload, SIGTERM drain, SIGINT fast exit, SIGUSR2
//! binary upgrade), and the
//! two ways to start: fresh (`gateway --config`) or taking over from a running gateway
//! (`gateway upgrade --config`, see `upgrade.rs`).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::HttpServerOptions;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{ExecutionPhase, RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora_core::services::listening::Service;
use tokio::signal::unix::{signal, SignalKind};
use tollgate_config::admin::Readiness;
use tollgate_config::gateway::{self, EnvOverrides};

use crate::admin::GatewayAdmin;
use crate::connection::{self, ListenerTable};
use crate::proxy::GatewayProxy;
use crate::state::State;
use crate::tls::{client_verifier, HandshakeCallbacks, SniResolver};
use crate::upgrade::{Handoff, Predecessor};
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::ListenerConfig;
use pingora_core::protocols::l4::stream::L4BufferSettings;

/// Run the gateway until shutdown. Returns an error for startup failures.
pub fn run(path: &Path) -> anyhow::Result<()> {
    start(path, None)
}

/// Take the listening sockets over from the gateway whose admin listens on `from`
/// (default: this config's admin address), then run until shutdown.
pub fn upgrade(path: &Path, from: Option<SocketAddr>) -> anyhow::Result<()> {
    start(path, Some(from))
}

fn start(path: &Path, upgrade_from: Option<Option<SocketAddr>>) -> anyhow::Result<()> {
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

    // Everything above checked the new config; only now is the old process asked.
    let predecessor = match upgrade_from {
        Some(from) => {
            let p = crate::upgrade::find(from.unwrap_or(cfg.admin_address))?;
            tracing::info!(pid = p.pid, socket = %p.socket.display(), "upgrade: taking over");
            p.prepare_socket()?;
            Some(p)
        }
        None => None,
    };
    let handoff = Arc::new(Handoff::new(
        state.health.clone(),
        cfg.upgrade_socket.clone(),
        cfg.listeners
            .iter()
            .map(|l| l.address.to_string())
            .collect(),
    ));
    let conf = ServerConf {
        threads: cfg.threads,
        // Pingora sleeps this long in full after SIGTERM; our drain watcher exits as
        // soon as in-flight requests are done, so this is only the upper bound.
        grace_period_seconds: Some(cfg.grace_period.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        // Measured in benches/: without stealing, CPU per request is ~10% lower.
        work_stealing: cfg.work_stealing,
        // On upgrade, first where the predecessor sends its sockets (it told us).
        upgrade_sock: match &predecessor {
            Some(p) => p.socket.display().to_string(),
            None => cfg.upgrade_socket.display().to_string(),
        },
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: predecessor.is_some(),
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    if let Some(p) = &predecessor {
        p.ask_when_listening()?;
    }
    // Upgrade: waits here for the old process's listening sockets (exits 1 if none come).
    server.bootstrap();
    if predecessor.is_some() {
        tracing::info!("upgrade: listening sockets received");
        // Pingora listens and sends on one path; from now on this process sends where
        // its own config says, for the next upgrade.
        server.configuration = Arc::new(crate::upgrade::with_upgrade_socket(
            &server.configuration,
            &cfg.upgrade_socket,
        )?);
    }
    let conf = server.configuration.clone();

    // On upgrade, the old process releases its admin port right after handing over.
    let admin_listener = match &predecessor {
        Some(_) => crate::upgrade::bind_admin(cfg.admin_address),
        None => std::net::TcpListener::bind(cfg.admin_address),
    }
    .map_err(|e| anyhow::anyhow!("admin listener {}: {e}", cfg.admin_address))?;
    let (admin_addr, admin_release) = tollgate_config::admin::serve_on(
        admin_listener,
        state.health.clone(),
        Arc::new(GatewayAdmin {
            state: state.clone(),
            upgrade: handoff.clone(),
        }),
    )
    .map_err(|e| anyhow::anyhow!("admin listener {}: {e}", cfg.admin_address))?;
    handoff.set_admin(admin_release);
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
    // (Those whose sockets came from the old process are bound already.)
    let inherited = |a: &SocketAddr| {
        predecessor
            .as_ref()
            .is_some_and(|p: &Predecessor| p.listeners.contains(&a.to_string()))
    };
    for l in cfg.listeners.iter().filter(|l| !inherited(&l.address)) {
        std::net::TcpListener::bind(l.address)
            .map_err(|e| anyhow::anyhow!("listener {} ({}): {e}", l.name, l.address))?;
    }

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
        upgraded_from = predecessor.as_ref().map(|p| p.pid),
        "gateway started"
    );
    let phases = std::sync::Mutex::new(Some(server.watch_execution_phase()));
    server.run(RunArgs {
        shutdown_signal: Box::new(Drain {
            state,
            handoff,
            phases,
        }),
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
            crate::upgrade::notify_systemd("READY=1");
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
                let (Ok(mut hup), Ok(mut usr2)) = (
                    signal(SignalKind::hangup()),
                    signal(SignalKind::user_defined2()),
                ) else {
                    tracing::error!("cannot listen for SIGHUP/SIGUSR2; reload with POST /reload");
                    return;
                };
                loop {
                    tokio::select! {
                        Some(()) = hup.recv() => {
                            let st = state.clone();
                            let _ = tokio::task::spawn_blocking(move || st.reload("signal")).await;
                        }
                        Some(()) = usr2.recv() => crate::upgrade::spawn_successor(&state.path),
                        else => return,
                    }
                }
            })
        })?;
    Ok(())
}

/// SIGTERM: report not-ready, keep serving for `drain_delay` (so load balancers move
/// away), then let Pingora stop accepting, and exit as soon as in-flight requests are
/// done (Pingora's grace period is the upper bound). SIGINT: exit now.
/// A successor's `POST /upgrade`: hand the listening sockets over, then the same drain
/// without the delay (the sockets keep being served by the new process).
struct Drain {
    state: Arc<State>,
    handoff: Arc<Handoff>,
    phases: std::sync::Mutex<Option<tokio::sync::broadcast::Receiver<ExecutionPhase>>>,
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
            _ = self.handoff.requested() => return self.hand_over(),
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

impl Drain {
    fn hand_over(&self) -> ShutdownSignal {
        self.state.health.set(Readiness::Draining);
        let grace = self.state.snapshot.load().config.grace_period;
        let phases = self.phases.lock().unwrap_or_else(|p| p.into_inner()).take();
        let state = self.state.clone();
        // Pingora sends the sockets, keeps accepting for its close timeout beside the
        // new process, then stops accepting: only then do in-flight requests run down.
        let _ = std::thread::Builder::new()
            .name("drain".into())
            .spawn(move || {
                if let Some(mut rx) = phases {
                    loop {
                        match rx.blocking_recv() {
                            Ok(ExecutionPhase::ShutdownStarted) => break,
                            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                        }
                    }
                }
                tracing::info!("upgrade: sockets handed over, no longer accepting; draining");
                exit_when_idle(&state, grace);
            });
        ShutdownSignal::GracefulUpgrade
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
