//! Process-wide gateway state: the current snapshot, readiness, in-flight count, and
//! the reload procedure every trigger (file watch, SIGHUP, `POST /reload`) goes through.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tollgate_config::admin::Health;
use tollgate_config::gateway::{self, EnvOverrides, GatewayConfig};
use tollgate_config::metrics::{reload_refused, CONFIG_RELOADS};
use tollgate_config::ConfigError;

use crate::metrics::METRICS;
use crate::snapshot::{BuildError, Snapshot};
use crate::tls::TLS_METRICS;

pub struct State {
    pub path: PathBuf,
    pub env: EnvOverrides,
    /// Shared with the TLS acceptors, which pick certificates from it.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub health: Arc<Health>,
    in_flight: AtomicI64,
    reload_lock: Mutex<()>,
    /// Why the config on disk is not fully applied (listeners/threads changed), if so.
    pub restart_required: Mutex<Option<String>>,
    pub last_error: Mutex<Option<String>>,
    /// The config the process started with: what listeners/threads actually are.
    startup: GatewayConfig,
    /// The access-log writer and span exporter, started with the process.
    pub telemetry: tollgate_config::telemetry::Telemetry,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    Applied { version: String },
    Unchanged { version: String },
}

impl State {
    /// Build the first snapshot (every certificate and CA file loaded and checked).
    pub fn new(
        path: PathBuf,
        env: EnvOverrides,
        loaded: gateway::Loaded,
        telemetry: tollgate_config::telemetry::Telemetry,
    ) -> Result<Arc<Self>, BuildError> {
        let startup = loaded.config.clone();
        let snapshot = Snapshot::build(loaded, None)?;
        snapshot.certs.values().for_each(|c| c.publish());
        CONFIG_RELOADS
            .with_label_values(&["success", "startup"])
            .inc();
        tollgate_config::metrics::config_applied();
        Ok(Arc::new(Self {
            telemetry,
            startup,
            path,
            env,
            snapshot: Arc::new(ArcSwap::from_pointee(snapshot)),
            health: Arc::new(Health::default()),
            in_flight: AtomicI64::new(0),
            reload_lock: Mutex::new(()),
            restart_required: Mutex::new(None),
            last_error: Mutex::new(None),
        }))
    }

    /// Load the file, build a whole snapshot and swap it in. On any error the old
    /// snapshot keeps serving; the error is logged and counted.
    pub fn reload(&self, trigger: &str) -> Result<ReloadOutcome, ConfigError> {
        // One reload at a time: two triggers at once must not interleave builds.
        let _guard = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.snapshot.load_full();
        let loaded = match gateway::load(&self.path, &self.env) {
            Ok(l) => l,
            Err(e) => {
                reload_refused(trigger, &current.version, &e, &self.last_error);
                return Err(e);
            }
        };
        if loaded.version == current.version {
            CONFIG_RELOADS
                .with_label_values(&["unchanged", trigger])
                .inc();
            return Ok(ReloadOutcome::Unchanged {
                version: current.version.clone(),
            });
        }
        let restart = restart_needed(&self.startup, &loaded.config, &self.telemetry);
        let version = loaded.version.clone();
        // Everything the config names is loaded here, before anything changes: on any
        // error the running snapshot (routes, upstreams, certificates) stays as it is.
        let next = match Snapshot::build(loaded, Some(&current)) {
            Ok(next) => next,
            Err(e) => {
                if let Some(listener) = e.listener() {
                    TLS_METRICS
                        .reloads
                        .with_label_values(&[listener, "failure"])
                        .inc();
                }
                reload_refused(trigger, &current.version, &e, &self.last_error);
                return Err(ConfigError::other(&self.path, e.to_string()));
            }
        };
        tollgate_config::telemetry::set_log_level(next.config.log_level.as_deref());
        self.snapshot.store(Arc::new(next));
        for c in self.snapshot.load().certs.values() {
            c.publish();
        }
        CONFIG_RELOADS
            .with_label_values(&["success", trigger])
            .inc();
        tollgate_config::metrics::config_applied();
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
        METRICS.restart_required.set(i64::from(restart.is_some()));
        match &restart {
            Some(why) => tracing::warn!(
                trigger,
                "config version {version} applied except: {why}; apply it without dropping a connection with `gateway upgrade --config FILE` (or restart)"
            ),
            None => tracing::info!(trigger, "config version {version} applied"),
        }
        *self
            .restart_required
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = restart;
        Ok(ReloadOutcome::Applied { version })
    }

    /// Certificate rotation: reload the certificates of every TLS listener whose files
    /// changed. Serialized with reloads, so a rotation never lands in a snapshot that
    /// is being replaced.
    pub fn rotate_certificates(&self) {
        let _guard = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        for c in self.snapshot.load().certs.values() {
            c.rotate();
        }
    }

    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
    }

    pub fn request_finished(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::SeqCst)
    }
}

/// Whether some route turns the access log on by itself.
pub fn some_route_logs(c: &GatewayConfig) -> bool {
    c.routes.iter().any(|r| r.access_log.enabled == Some(true))
}

/// What a reload cannot apply to a running Pingora server (it cannot add or remove
/// listening sockets, nor resize its runtimes): a new process does, `gateway upgrade`.
fn restart_needed(
    old: &GatewayConfig,
    new: &GatewayConfig,
    telemetry: &tollgate_config::telemetry::Telemetry,
) -> Option<String> {
    let mut why =
        telemetry.restart_needed(&new.access_log, some_route_logs(new), new.tracing.as_ref());
    let shapes = |c: &GatewayConfig| {
        c.listeners
            .iter()
            .map(|l| {
                format!(
                    "{:?}",
                    (
                        &l.name,
                        l.address,
                        l.h2c,
                        l.proxy_protocol,
                        l.tls.as_ref().map(|t| (t.http2, &t.client_auth))
                    )
                )
            })
            .collect::<Vec<_>>()
    };
    if shapes(old) != shapes(new) {
        why.push("listeners changed");
    }
    if old.admin_address != new.admin_address {
        why.push("admin.address changed");
    }
    if old.threads != new.threads {
        why.push("server.threads changed");
    }
    if old.work_stealing != new.work_stealing {
        why.push("server.work_stealing changed");
    }
    (!why.is_empty()).then(|| why.join(", "))
}
