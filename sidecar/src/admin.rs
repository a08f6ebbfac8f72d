//! The sidecar's own admin endpoints: `/config`, `/dependencies`, `/identity`,
//! `POST /reload`. (`/healthz`, `/readyz`, `/metrics` and the status page, which renders
//! these endpoints, come from the shared listener.)

use std::sync::Arc;

use http::{Method, StatusCode};
use serde_json::{json, Value};
use tollgate_config::admin::{AdminHandler, AdminRequest, AdminResponse};

use crate::state::State;

pub struct SidecarAdmin {
    pub state: Arc<State>,
}

impl AdminHandler for SidecarAdmin {
    fn handle(&self, req: &AdminRequest) -> Option<AdminResponse> {
        let s = &self.state;
        match (&req.method, req.path.as_str()) {
            (&Method::GET, "/config") => {
                let snap = s.snapshot.load();
                let last_error = s
                    .last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                Some(AdminResponse::json(
                    StatusCode::OK,
                    &json!({
                        "version": snap.version,
                        "loaded_at_unix": snap.loaded_at_unix,
                        "file": s.path.display().to_string(),
                        "identity": s.identity.spiffe_id(),
                        "dependencies": snap.dependencies.keys().collect::<Vec<_>>(),
                        "last_reload_error": last_error,
                    }),
                ))
            }
            (&Method::GET, "/dependencies") => {
                let snap = s.snapshot.load();
                let mut names: Vec<_> = snap.dependencies.keys().collect();
                names.sort();
                let list: Vec<Value> = names
                    .into_iter()
                    .filter_map(|n| snap.dependencies.get(n).map(|d| d.status()))
                    .collect();
                Some(AdminResponse::json(
                    StatusCode::OK,
                    &json!({ "dependencies": list }),
                ))
            }
            (&Method::GET, "/identity") => {
                Some(AdminResponse::json(StatusCode::OK, &s.identity.status()))
            }
            (&Method::POST, "/reload") => Some(match s.reload("api") {
                Ok(Some(v)) => {
                    AdminResponse::json(StatusCode::OK, &json!({"result": "applied", "version": v}))
                }
                Ok(None) => AdminResponse::json(
                    StatusCode::OK,
                    &json!({"result": "unchanged", "version": s.snapshot.load().version}),
                ),
                Err(e) => AdminResponse::json(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &json!({"result": "refused", "error": e.to_string(),
                            "serving_version": s.snapshot.load().version}),
                ),
            }),
            _ => None,
        }
    }
}
