//! Workload identity: the certificate, key and trust bundle this sidecar speaks mTLS
//! with, and the TLS configurations built from them.
//!
//! The identity is the certificate's SPIFFE URI SAN. [`IdentityStore`] holds the current
//! identity as one immutable snapshot (material + server config + per-peer client
//! configs) behind an `ArcSwap`; a reload validates the files completely off the hot
//! path and swaps the snapshot, or keeps the old one and says why. Listeners ask for the
//! current config per connection, so a rotation applies to new connections and leaves
//! established ones alone.
//!
//! Authorization (which caller may call what) is not here: the inbound HTTP layer
//! decides it from [`peer_spiffe_id`] of the verified peer certificate.

mod load;
mod tls;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, LazyLock, Mutex, PoisonError, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus::{IntCounterVec, IntGauge};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::UnixTime;
use rustls::{ClientConfig, CommonState, ServerConfig};
use tollgate_config::metrics::{counter_vec, gauge, unix_now};
use tollgate_config::sidecar::IdentityPaths;
use tollgate_config::watch::{watch_file, WatchHandle};

pub use load::{peer_spiffe_id, IdentityError, IdentityFile};
pub use tls::provider;

use load::{rfc3339, Material, RawFiles};
use tls::ClientBase;

/// `sidecar_identity_reloads_total{result="success|failure|unchanged"}`
static RELOADS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "sidecar_identity_reloads_total",
        "Identity (certificate, key, trust bundle) reload attempts by result",
        &["result"],
    )
});

/// Unix time at which the served certificate expires (alert well before it).
static CERT_EXPIRY: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "sidecar_identity_cert_expiry_timestamp_seconds",
        "Unix time at which the sidecar's workload certificate expires",
    )
});

/// Quiet period after a file event before reloading: a rotation touches several files.
const WATCH_DEBOUNCE: Duration = Duration::from_millis(200);

/// The SPIFFE id of the peer of an established TLS connection (see [`peer_spiffe_id`]).
pub fn connection_peer_id(conn: &CommonState) -> Option<String> {
    conn.peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(peer_spiffe_id)
}

/// Validate the identity files as a reload would (for `sidecar validate`) and return the
/// SPIFFE id they carry.
pub fn check_files(paths: &IdentityPaths) -> Result<String, IdentityError> {
    let raw = RawFiles::read(paths)?;
    let snapshot = Snapshot::build(paths, raw, &provider())?;
    Ok(snapshot.material.spiffe_id.clone())
}

/// The sidecar's current identity and TLS configurations, hot-swappable.
pub struct IdentityStore {
    paths: IdentityPaths,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<Snapshot>,
    /// One reload at a time: three file watchers may fire for one rotation.
    reloading: Mutex<()>,
    last_error: Mutex<Option<ReloadFailure>>,
}

struct ReloadFailure {
    message: String,
    at: i64,
}

/// One validated identity and everything built from it; replaced whole on rotation.
struct Snapshot {
    files: RawFiles,
    material: Material,
    server: Arc<ServerConfig>,
    client_base: ClientBase,
    /// Client configs by peer identity, `[http/1.1, h2]`. Cached so connections to one
    /// peer share a TLS session cache (resumption), and kept apart per identity because
    /// a resumed session skips certificate verification: a session verified for one
    /// identity must never be resumed where another is expected. Dropped with the
    /// snapshot, so a rotation starts from full handshakes.
    clients: RwLock<HashMap<String, [Option<Arc<ClientConfig>>; 2]>>,
    loaded_at: i64,
}

impl Snapshot {
    fn build(
        paths: &IdentityPaths,
        files: RawFiles,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Self, IdentityError> {
        let material = Material::build(paths, &files, provider, UnixTime::now())?;
        let server = Arc::new(tls::server_config(&material, provider)?);
        let client_base = ClientBase::new(&material, provider)?;
        Ok(Self {
            files,
            material,
            server,
            client_base,
            clients: RwLock::new(HashMap::new()),
            loaded_at: unix_now(),
        })
    }
}

impl IdentityStore {
    /// Load and validate the identity files; the sidecar cannot start without them.
    pub fn load(paths: &IdentityPaths) -> Result<Arc<Self>, IdentityError> {
        let provider = provider();
        let snapshot = Snapshot::build(paths, RawFiles::read(paths)?, &provider)?;
        CERT_EXPIRY.set(snapshot.material.not_after);
        tracing::info!(
            spiffe_id = %snapshot.material.spiffe_id,
            serial = %snapshot.material.serial,
            not_after = %rfc3339(snapshot.material.not_after),
            "workload identity loaded"
        );
        Ok(Arc::new(Self {
            paths: paths.clone(),
            provider,
            current: ArcSwap::from_pointee(snapshot),
            reloading: Mutex::new(()),
            last_error: Mutex::new(None),
        }))
    }

    /// Re-read the three files. `Ok(true)`: a new identity now serves new connections;
    /// `Ok(false)`: nothing changed. On any error the previous identity keeps serving,
    /// and the error is logged, counted and shown in [`Self::status`].
    pub fn reload(&self) -> Result<bool, IdentityError> {
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let result = self.try_reload();
        let label = match &result {
            Ok(true) => "success",
            Ok(false) => "unchanged",
            Err(_) => "failure",
        };
        RELOADS.with_label_values(&[label]).inc();
        let mut last_error = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match &result {
            Ok(changed) => {
                *last_error = None;
                if *changed {
                    let current = self.current.load();
                    let m = &current.material;
                    CERT_EXPIRY.set(m.not_after);
                    tracing::info!(
                        spiffe_id = %m.spiffe_id,
                        serial = %m.serial,
                        not_after = %rfc3339(m.not_after),
                        "workload identity rotated; new connections use it"
                    );
                }
            }
            Err(e) => {
                tracing::error!("identity reload refused, still serving the previous one: {e}");
                *last_error = Some(ReloadFailure {
                    message: e.to_string(),
                    at: unix_now(),
                });
            }
        }
        result
    }

    fn try_reload(&self) -> Result<bool, IdentityError> {
        let files = RawFiles::read(&self.paths)?;
        if files == self.current.load().files {
            return Ok(false);
        }
        let snapshot = Snapshot::build(&self.paths, files, &self.provider)?;
        self.current.store(Arc::new(snapshot));
        Ok(true)
    }

    /// Reload when any of the three files changes (written in place, renamed over, or a
    /// Kubernetes `..data` symlink swap). Watching stops when the handle is dropped; the
    /// watch does not keep the store alive.
    pub fn watch(self: &Arc<Self>) -> notify::Result<IdentityWatch> {
        let mut files: Vec<&Path> = vec![&self.paths.cert];
        for p in [&self.paths.key, &self.paths.trust_bundle] {
            if !files.contains(&p.as_path()) {
                files.push(p);
            }
        }
        let mut handles = Vec::with_capacity(files.len());
        for file in files {
            let store = Arc::downgrade(self);
            handles.push(watch_file(file, WATCH_DEBOUNCE, move || {
                if let Some(store) = store.upgrade() {
                    // Logged, counted and kept for status() by reload itself.
                    let _ = store.reload();
                }
            })?);
        }
        Ok(IdentityWatch { _handles: handles })
    }

    /// Our SPIFFE id.
    pub fn spiffe_id(&self) -> String {
        self.current.load().material.spiffe_id.clone()
    }

    /// The inbound TLS configuration of the current identity. Call it per accepted
    /// connection: that is what makes a rotation apply to new connections.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current.load().server.clone()
    }

    /// The outbound TLS configuration toward a peer sidecar that must present
    /// `server_identity`, offering ALPN `h2` when `http2`, else `http/1.1`. Cached per
    /// (identity, http2) until the next rotation; call it per new connection. The
    /// server name given to the connector is only sent as SNI: peers are verified by
    /// SPIFFE id, never by DNS name.
    pub fn client_config(&self, server_identity: &str, http2: bool) -> Arc<ClientConfig> {
        let snapshot = self.current.load();
        let slot = usize::from(http2);
        let cached = snapshot
            .clients
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(server_identity)
            .and_then(|both| both.get(slot).cloned().flatten());
        if let Some(config) = cached {
            return config;
        }
        let config = Arc::new(snapshot.client_base.config(server_identity, http2));
        let mut clients = snapshot
            .clients
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let both = clients.entry(server_identity.to_string()).or_default();
        match both.get_mut(slot) {
            // Another thread may have raced us here: keep the first, share its sessions.
            Some(Some(existing)) => existing.clone(),
            Some(empty) => empty.insert(config).clone(),
            None => config,
        }
    }

    /// Unix time at which the current certificate expires.
    pub fn not_after_unix(&self) -> i64 {
        self.current.load().material.not_after
    }

    /// For the admin endpoint: who we are, which certificate serves, until when, and
    /// whether the last reload failed.
    pub fn status(&self) -> serde_json::Value {
        let current = self.current.load();
        let m = &current.material;
        let last_error = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        serde_json::json!({
            "spiffe_id": m.spiffe_id,
            "serial": m.serial,
            "not_before": rfc3339(m.not_before),
            "not_after": rfc3339(m.not_after),
            "not_after_unix": m.not_after,
            "chain_length": m.certified_key.cert.len(),
            "trust_bundle_certs": m.bundle_size,
            "loaded_at": rfc3339(current.loaded_at),
            "files": {
                "cert": self.paths.cert.display().to_string(),
                "key": self.paths.key.display().to_string(),
                "trust_bundle": self.paths.trust_bundle.display().to_string(),
            },
            "last_reload_error": last_error.as_ref().map(|e| e.message.clone()),
            "last_reload_error_at": last_error.as_ref().map(|e| rfc3339(e.at)),
        })
    }
}

impl std::fmt::Debug for IdentityStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityStore")
            .field("paths", &self.paths)
            .field("spiffe_id", &self.spiffe_id())
            .finish_non_exhaustive()
    }
}

/// Keeps the identity files watched; dropping it stops watching.
pub struct IdentityWatch {
    _handles: Vec<WatchHandle>,
}

#[cfg(test)]
mod tests;
