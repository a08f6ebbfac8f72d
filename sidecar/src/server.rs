//! Process wiring: runtime, admin listener, identity and config watching, listeners
//! (reconciled after every reload: the sidecar owns its sockets, so new dependencies
//! get their listener without a restart), endpoint resolution, signals and drain.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinHandle;
use tollgate_config::admin::Readiness;
use tollgate_config::outlier::now_ms;
use tollgate_config::sidecar;

use crate::admin::SidecarAdmin;
use crate::identity::IdentityStore;
use crate::listener::{accept_loop, bind};
use crate::state::State;

pub fn run(path: &Path) -> anyhow::Result<()> {
    let loaded = sidecar::load(path)?;
    let identity = IdentityStore::load(&loaded.config.identity)?;
    let threads = loaded.config.threads;
    // One thread: a current-thread runtime, with no cross-thread wake-ups between the
    // thread blocked in `block_on` and a single worker (measured in benches/sidecar.sh).
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let rt = builder.enable_all().thread_name("sidecar").build()?;
    rt.block_on(serve(path, loaded, identity))
}

async fn serve(
    path: &Path,
    loaded: sidecar::Loaded,
    identity: Arc<IdentityStore>,
) -> anyhow::Result<()> {
    let cfg = loaded.config.clone();
    tollgate_config::telemetry::set_log_level(cfg.log_level.as_deref());
    let telemetry =
        tollgate_config::telemetry::Telemetry::start(&cfg.access_log, false, cfg.tracing.as_ref())?;
    tollgate_config::metrics::publish_build_info("sidecar_build_info");
    let state = State::new(path.to_path_buf(), loaded, identity.clone(), telemetry);
    crate::metrics::DependencyCollector::register(&state);
    let admin = tollgate_config::admin::spawn(
        cfg.admin_address,
        state.health.clone(),
        Arc::new(SidecarAdmin {
            state: state.clone(),
        }),
    )
    .map_err(|e| anyhow::anyhow!("admin listener {}: {e}", cfg.admin_address))?;
    let _identity_watch = identity.watch()?;
    let st = state.clone();
    let _config_watch =
        tollgate_config::watch::watch_file(path, Duration::from_millis(200), move || {
            let _ = st.reload("file");
        })?;

    // Static listeners: inbound, proxy and intercept need a restart to move.
    if let Some(inb) = &cfg.inbound {
        let l = bind(inb.listen, "inbound").await?;
        let st = state.clone();
        tokio::spawn(accept_loop(
            l,
            state.connections.stop_signal(),
            "inbound",
            move |tcp, peer| crate::inbound::serve_conn(st.clone(), tcp, peer),
        ));
    }
    if let Some(addr) = cfg.proxy_listen {
        let l = bind(addr, "proxy").await?;
        let st = state.clone();
        tokio::spawn(accept_loop(
            l,
            state.connections.stop_signal(),
            "proxy",
            move |tcp, _| crate::outbound::serve_proxy_conn(st.clone(), tcp),
        ));
    }
    if let Some(i) = &cfg.intercept {
        for addr in std::iter::once(i.listen).chain(i.listen_v6) {
            let l = bind(addr, "intercept").await?;
            let st = state.clone();
            tokio::spawn(accept_loop(
                l,
                state.connections.stop_signal(),
                "intercept",
                move |tcp, peer| crate::intercept::serve_conn(st.clone(), tcp, peer),
            ));
            tracing::info!("intercepting on {addr}");
        }
    }
    let mut listeners = Listeners::default();
    listeners.reconcile(&state).await?;

    // First resolution before declaring ready, so early calls have endpoints.
    // Discovery-only dependencies have nothing to resolve: their watch fills them.
    for dep in state.snapshot.load().dependencies.values() {
        if dep.cfg.endpoints.is_empty() {
            continue;
        }
        if let Err(e) = dep.endpoints.resolve(&dep.cfg.endpoints).await {
            tracing::warn!(dependency = %dep.cfg.name, "cannot resolve endpoints yet: {e}");
        }
    }
    tokio::spawn(background(state.clone(), listeners));
    tokio::spawn(crate::discovery::supervise(state.clone()));

    state.health.set(Readiness::Ready);
    tracing::info!(identity = %identity.spiffe_id(), admin = %admin, version = %state.snapshot.load().version, "sidecar started");

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let st = state.clone();
                let _ = tokio::task::spawn_blocking(move || st.reload("signal")).await;
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: exiting now");
                return Ok(());
            }
            _ = term.recv() => break,
        }
    }
    let (drain_delay, grace) = {
        let s = state.snapshot.load();
        (s.config.drain_delay, s.config.grace_period)
    };
    state.health.set(Readiness::Draining);
    tracing::info!("SIGTERM: draining; serving for {drain_delay:?} more, then up to {grace:?} for in-flight calls");
    tokio::select! {
        _ = tokio::time::sleep(drain_delay) => {}
        _ = term.recv() => {}
    }
    if state.connections.shutdown(grace).await {
        tracing::info!("drained, exiting");
    } else {
        tracing::warn!("grace period over with calls still in flight, exiting");
    }
    Ok(())
}

/// Outbound listeners by address, reconciled with the config after reloads.
#[derive(Default)]
struct Listeners {
    running: HashMap<SocketAddr, (String, JoinHandle<()>)>,
    version: String,
}

impl Listeners {
    async fn reconcile(&mut self, state: &Arc<State>) -> anyhow::Result<()> {
        let version = state.snapshot.load().version.clone();
        if version == self.version {
            return Ok(());
        }
        self.version = version;
        let wanted = crate::outbound::wanted_listeners(state);
        self.running.retain(|addr, (name, task)| {
            let keep = wanted.iter().any(|(a, n)| a == addr && n == name);
            if !keep {
                tracing::info!(dependency = %name, "closing listener {addr}");
                task.abort();
            }
            keep
        });
        let mut first_error = None;
        for (addr, name) in wanted {
            if self.running.contains_key(&addr) {
                continue;
            }
            match bind(addr, &format!("dependency {name}")).await {
                Ok(l) => {
                    let st = state.clone();
                    let dep: Arc<str> = name.as_str().into();
                    let task = tokio::spawn(accept_loop(
                        l,
                        state.connections.stop_signal(),
                        "outbound",
                        move |tcp, _| {
                            crate::outbound::serve_dependency_conn(st.clone(), dep.clone(), tcp)
                        },
                    ));
                    tracing::info!(dependency = %name, "listening on {addr}");
                    self.running.insert(addr, (name, task));
                }
                Err(e) => {
                    tracing::error!("{e}");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Listener reconciliation after reloads, and periodic resolution of static endpoints
/// (discovered ones come from `crate::discovery`).
async fn background(state: Arc<State>, mut listeners: Listeners) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut next_resolve: HashMap<String, u64> = HashMap::new();
    loop {
        tick.tick().await;
        let _ = listeners.reconcile(&state).await;
        let now = now_ms();
        let snap = state.snapshot.load_full();
        for (name, dep) in &snap.dependencies {
            if next_resolve.get(name).is_some_and(|t| *t > now) {
                continue;
            }
            next_resolve.insert(name.clone(), now + dep.cfg.resolve_every.as_millis() as u64);
            if dep.cfg.endpoints.is_empty() {
                // Discovery only (a reload may have removed the static endpoints):
                // nothing to resolve, nothing static to keep.
                dep.endpoints.update_resolved(Vec::new());
                continue;
            }
            let dep = dep.clone();
            tokio::spawn(async move {
                if let Err(e) = dep.endpoints.resolve(&dep.cfg.endpoints).await {
                    tracing::warn!(dependency = %dep.cfg.name, "endpoint resolution failed, keeping the last set: {e}");
                }
            });
        }
    }
}
