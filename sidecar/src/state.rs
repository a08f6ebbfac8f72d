//! Process-wide sidecar state: the config snapshot, identity, one runtime per
//! dependency (its stack and the shared state that must survive reloads: breaker,
//! retry budget, endpoints), and the reload procedure.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tollgate_config::admin::Health;
use tollgate_config::metrics::{reload_refused, unix_now, CONFIG_RELOADS};
use tollgate_config::sidecar::{self, SidecarConfig};
use tollgate_config::ConfigError;

use crate::identity::IdentityStore;
use crate::inbound::{app_client, AppClient};
use crate::listener::Connections;
use crate::outbound::DependencyRt;

pub struct Snapshot {
    pub config: SidecarConfig,
    pub version: String,
    pub loaded_at_unix: i64,
    pub dependencies: HashMap<String, Arc<DependencyRt>>,
}

pub struct State {
    pub path: PathBuf,
    pub snapshot: ArcSwap<Snapshot>,
    pub identity: Arc<IdentityStore>,
    pub health: Arc<Health>,
    pub connections: Connections,
    pub app_client: AppClient,
    reload_lock: Mutex<()>,
    pub last_error: Mutex<Option<String>>,
    /// The access-log writer and span exporter, started with the process.
    pub telemetry: tollgate_config::telemetry::Telemetry,
}

impl State {
    pub fn new(
        path: PathBuf,
        loaded: sidecar::Loaded,
        identity: Arc<IdentityStore>,
        telemetry: tollgate_config::telemetry::Telemetry,
    ) -> Arc<Self> {
        CONFIG_RELOADS
            .with_label_values(&["success", "startup"])
            .inc();
        tollgate_config::metrics::config_applied();
        let deps = build_dependencies(&loaded.config, None, &identity);
        Arc::new(Self {
            telemetry,
            path,
            snapshot: ArcSwap::from_pointee(Snapshot {
                config: loaded.config,
                version: loaded.version,
                loaded_at_unix: unix_now(),
                dependencies: deps,
            }),
            identity,
            health: Arc::new(Health::default()),
            connections: Connections::default(),
            app_client: app_client(),
            reload_lock: Mutex::new(()),
            last_error: Mutex::new(None),
        })
    }

    /// Reload the config file. Dependencies keep their breaker, budget and endpoints
    /// across the reload; only their policies change. Returns the new version, or
    /// `None` if the file did not change.
    pub fn reload(&self, trigger: &str) -> Result<Option<String>, ConfigError> {
        let _g = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.snapshot.load_full();
        let loaded = match sidecar::load(&self.path) {
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
            return Ok(None);
        }
        if loaded.config.identity != current.config.identity {
            tracing::warn!("identity file paths changed: restart the sidecar to apply them");
        }
        let cfg = &loaded.config;
        let listen = |i: &Option<sidecar::Intercept>| i.as_ref().map(|i| (i.listen, i.listen_v6));
        if listen(&cfg.intercept) != listen(&current.config.intercept) {
            tracing::warn!("intercept listeners changed: restart the sidecar to apply them (`unknown` and dependency addresses apply now)");
        }
        for why in self
            .telemetry
            .restart_needed(&cfg.access_log, false, cfg.tracing.as_ref())
        {
            tracing::warn!("{why}: restart the sidecar to apply it");
        }
        tollgate_config::telemetry::set_log_level(cfg.log_level.as_deref());
        let deps = build_dependencies(&loaded.config, Some(&current), &self.identity);
        let version = loaded.version.clone();
        self.snapshot.store(Arc::new(Snapshot {
            config: loaded.config,
            version: loaded.version,
            loaded_at_unix: unix_now(),
            dependencies: deps,
        }));
        CONFIG_RELOADS
            .with_label_values(&["success", trigger])
            .inc();
        tollgate_config::metrics::config_applied();
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
        tracing::info!(trigger, "config version {version} applied");
        Ok(Some(version))
    }
}

fn build_dependencies(
    cfg: &SidecarConfig,
    previous: Option<&Snapshot>,
    identity: &Arc<IdentityStore>,
) -> HashMap<String, Arc<DependencyRt>> {
    cfg.dependencies
        .iter()
        .map(|(name, d)| {
            let prev = previous.and_then(|p| p.dependencies.get(name));
            (
                name.clone(),
                Arc::new(DependencyRt::build(d, prev.map(|p| p.as_ref()), identity)),
            )
        })
        .collect()
}
