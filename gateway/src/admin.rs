//! The gateway's own admin endpoints: `/config`, `/upstreams`, `/certificates`,
//! `POST /reload`, `GET`/`POST /upgrade` (binary upgrade handoff, see `upgrade.rs`). (`/healthz`, `/readyz`, `/metrics` and the status page are served by
//! the shared admin listener.)

use std::sync::Arc;

use http::{Method, StatusCode};
use serde_json::{json, Value};
use tollgate_config::admin::{AdminHandler, AdminRequest, AdminResponse};

use crate::state::{ReloadOutcome, State};
use crate::upgrade::Handoff;
use tollgate_config::outlier::now_ms;

pub struct GatewayAdmin {
    pub state: Arc<State>,
    pub upgrade: Arc<Handoff>,
}

impl AdminHandler for GatewayAdmin {
    fn handle(&self, req: &AdminRequest) -> Option<AdminResponse> {
        match (&req.method, req.path.as_str()) {
            (&Method::GET, "/config") => Some(AdminResponse::json(StatusCode::OK, &self.config())),
            (&Method::GET, "/upstreams") => {
                Some(AdminResponse::json(StatusCode::OK, &self.upstreams()))
            }
            (&Method::GET, "/certificates") => {
                Some(AdminResponse::json(StatusCode::OK, &self.certificates()))
            }
            (&Method::GET, "/upgrade") => {
                Some(AdminResponse::json(StatusCode::OK, &self.upgrade.info()))
            }
            (&Method::POST, "/upgrade") => Some(match self.upgrade.request() {
                Ok(v) => AdminResponse::json(StatusCode::ACCEPTED, &v),
                Err(e) => AdminResponse::json(
                    StatusCode::CONFLICT,
                    &json!({ "result": "refused", "error": e }),
                ),
            }),
            (&Method::POST, "/reload") => Some(match self.state.reload("api") {
                Ok(ReloadOutcome::Applied { version }) => AdminResponse::json(
                    StatusCode::OK,
                    &json!({ "result": "applied", "version": version }),
                ),
                Ok(ReloadOutcome::Unchanged { version }) => AdminResponse::json(
                    StatusCode::OK,
                    &json!({ "result": "unchanged", "version": version }),
                ),
                Err(e) => AdminResponse::json(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &json!({ "result": "refused", "error": e.to_string(),
                             "serving_version": self.state.snapshot.load().version }),
                ),
            }),
            _ => None,
        }
    }
}

impl GatewayAdmin {
    fn config(&self) -> Value {
        let snap = self.state.snapshot.load();
        let lock = |m: &std::sync::Mutex<Option<String>>| {
            m.lock().unwrap_or_else(|p| p.into_inner()).clone()
        };
        json!({
            "version": snap.version,
            "loaded_at_unix": snap.loaded_at_unix,
            "file": self.state.path.display().to_string(),
            "zone": snap.config.zone,
            "region": snap.config.region,
            "routes": snap.config.routes.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
            "upstreams": snap.upstreams.keys().cloned().collect::<Vec<_>>(),
            "restart_required": lock(&self.state.restart_required),
            "last_reload_error": lock(&self.state.last_error),
        })
    }

    /// The server certificates in service, from the snapshot's tables: the same
    /// `not_after` the expiry metric exports (read once, when the files were loaded).
    fn certificates(&self) -> Value {
        let snap = self.state.snapshot.load();
        let now = tollgate_config::metrics::unix_now();
        let mut listeners: Vec<_> = snap.certs.values().collect();
        listeners.sort_by(|a, b| a.listener.cmp(&b.listener));
        let list: Vec<Value> = listeners
            .into_iter()
            .flat_map(|lc| {
                let table = lc.table.load();
                table
                    .certs
                    .iter()
                    .map(|c| {
                        json!({
                            "listener": lc.listener,
                            // The `certificate` label of the expiry metric.
                            "certificate": c.names.first(),
                            "names": c.names,
                            "serial": c.serial,
                            "not_after": c.not_after_unix,
                            "days_left": (c.not_after_unix - now).div_euclid(86_400),
                        })
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        json!({ "certificates": list })
    }

    fn upstreams(&self) -> Value {
        let snap = self.state.snapshot.load();
        let now = now_ms();
        let mut names: Vec<_> = snap.upstreams.keys().collect();
        names.sort();
        let list: Vec<Value> = names
            .into_iter()
            .filter_map(|name| {
                let up = snap.upstreams.get(name)?;
                let set = up.set.load();
                let endpoints: Vec<Value> = set
                    .members
                    .iter()
                    .map(|m| {
                        let s = &m.state;
                        let ejected = s.is_ejected(now);
                        json!({
                            "address": m.cfg.address.to_string(),
                            "zone": m.cfg.zone,
                            "region": m.cfg.region,
                            "weight": m.cfg.weight,
                            "locality": format!("{:?}", m.tier),
                            "healthy": s.is_healthy(),
                            "ejected": ejected,
                            "ejected_for_ms": if ejected { s.ejected_until_ms() - now } else { 0 },
                            "ejections": s.ejections(),
                            "available": s.is_available(now) && !m.draining(),
                            "draining": m.draining(),
                            "drain_left_ms": s.drain_until_ms().map(|t| t.saturating_sub(now)),
                            "in_flight": s.in_flight(),
                            "active": s.active(),
                            "requests": s.requests(),
                            "failures": s.failures(),
                        })
                    })
                    .collect();
                let available = set
                    .members
                    .iter()
                    .filter(|m| m.state.is_available(now) && !m.draining())
                    .count();
                Some(json!({
                    "name": name,
                    "balance": format!("{:?}", up.cfg.balance),
                    "zone_aware": up.cfg.zone_aware.map(|z| z.min_local_healthy),
                    "available": available,
                    "total": set.members.len(),
                    "panic": available == 0 && !set.members.is_empty(),
                    "endpoints": endpoints,
                }))
            })
            .collect();
        json!({ "zone": snap.config.zone, "upstreams": list })
    }
}
