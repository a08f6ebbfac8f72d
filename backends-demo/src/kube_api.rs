//! A small fake Kubernetes API server for discovery tests: EndpointSlices of one
//! namespace, served the way the real API server serves them (`list` with a resource
//! version, then `watch` streaming newline-delimited events from it), plus what tests
//! need to provoke: dropping every open watch, and expiring them with a `410 Gone`
//! error event so clients must re-list. No real API server can run on our machines.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{json, Value};
use tokio::sync::broadcast;

#[derive(Clone, Debug)]
enum Msg {
    Line(u64, String),
    Close,
}

struct Shared {
    namespace: String,
    slices: Mutex<BTreeMap<String, Value>>,
    /// Every event with its resource version, so a watch from version N gets what
    /// happened after N even if it connects late.
    log: Mutex<Vec<(u64, String)>>,
    rv: AtomicU64,
    live: broadcast::Sender<Msg>,
    lists: AtomicU64,
    watches: AtomicU64,
}

pub struct FakeKubeApi {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

type Body = BoxBody<Bytes, Infallible>;

impl FakeKubeApi {
    pub async fn spawn(namespace: &str) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            namespace: namespace.to_owned(),
            slices: Mutex::default(),
            log: Mutex::default(),
            rv: AtomicU64::new(100),
            live: broadcast::channel(1024).0,
            lists: AtomicU64::new(0),
            watches: AtomicU64::new(0),
        });
        let s = shared.clone();
        let task = crate::serve_in_process(listener, move |req| {
            let s = s.clone();
            async move { handle(&s, req) }
        });
        Ok(Self { addr, shared, task })
    }

    /// A kubeconfig pointing at this server (no credentials), written into `dir`.
    pub fn kubeconfig(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let path = dir.join("kubeconfig.yaml");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{ server: \"http://{}\" }}\nusers:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context: {{ cluster: fake, user: fake, namespace: {} }}\ncurrent-context: fake\n",
                self.addr, self.shared.namespace
            ),
        )?;
        Ok(path)
    }

    /// Create or replace an EndpointSlice (by `metadata.name`), as a controller would.
    pub fn apply(&self, mut slice: Value) {
        let name = slice["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut slices = lock(&self.shared.slices);
        let kind = if slices.contains_key(&name) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let rv = self.shared.rv.fetch_add(1, Ordering::SeqCst) + 1;
        slice["apiVersion"] = json!("discovery.k8s.io/v1");
        slice["kind"] = json!("EndpointSlice");
        slice["metadata"]["namespace"] = json!(self.shared.namespace);
        slice["metadata"]["resourceVersion"] = json!(rv.to_string());
        slice["metadata"]["uid"] = json!(format!("uid-{name}"));
        slices.insert(name, slice.clone());
        self.event(rv, json!({ "type": kind, "object": slice }));
    }

    pub fn delete(&self, name: &str) {
        let Some(mut slice) = lock(&self.shared.slices).remove(name) else {
            return;
        };
        let rv = self.shared.rv.fetch_add(1, Ordering::SeqCst) + 1;
        slice["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.event(rv, json!({ "type": "DELETED", "object": slice }));
    }

    fn event(&self, rv: u64, e: Value) {
        let line = format!("{e}\n");
        let mut log = lock(&self.shared.log);
        log.push((rv, line.clone()));
        let _ = self.shared.live.send(Msg::Line(rv, line));
    }

    /// End every open watch (a load balancer in front of the API server timing out).
    pub fn drop_watches(&self) {
        let _ = self.shared.live.send(Msg::Close);
    }

    /// Tell every open watch its resource version is too old (`410 Gone`, reason
    /// `Expired`), then end it; from now on a watch from any version before this
    /// moment is refused the same way, so the client has to list again.
    pub fn expire_watches(&self) {
        let rv = self.shared.rv.fetch_add(1, Ordering::SeqCst) + 1;
        let mut log = lock(&self.shared.log);
        log.clear();
        log.push((rv, String::new())); // the oldest version still watchable
        let _ = self.shared.live.send(Msg::Line(0, gone_line()));
        let _ = self.shared.live.send(Msg::Close);
    }

    pub fn lists(&self) -> u64 {
        self.shared.lists.load(Ordering::SeqCst)
    }

    pub fn watches(&self) -> u64 {
        self.shared.watches.load(Ordering::SeqCst)
    }
}

impl Drop for FakeKubeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn gone_line() -> String {
    format!(
        "{}\n",
        json!({ "type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "too old resource version", "reason": "Expired", "code": 410 } })
    )
}

fn full(status: StatusCode, body: Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn handle(s: &Shared, req: Request<Incoming>) -> Response<Body> {
    let want = format!(
        "/apis/discovery.k8s.io/v1/namespaces/{}/endpointslices",
        s.namespace
    );
    if req.uri().path() != want {
        return full(
            StatusCode::NOT_FOUND,
            json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "message": format!("{} not found", req.uri().path()), "reason": "NotFound", "code": 404 }),
        );
    }
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    if !watch {
        s.lists.fetch_add(1, Ordering::SeqCst);
        let slices = lock(&s.slices);
        let rv = s.rv.load(Ordering::SeqCst);
        return full(
            StatusCode::OK,
            json!({ "kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1",
                    "metadata": { "resourceVersion": rv.to_string() },
                    "items": slices.values().cloned().collect::<Vec<_>>() }),
        );
    }
    s.watches.fetch_add(1, Ordering::SeqCst);
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    {
        let log = lock(&s.log);
        let mut live = s.live.subscribe();
        let oldest = log.first().map_or(0, |(rv, _)| *rv);
        if from != 0 && from < oldest && log.first().is_some_and(|(_, l)| l.is_empty()) {
            // Expired: what the real server answers to a watch from a compacted version.
            let _ = tx.send(Bytes::from(gone_line()));
            drop(tx);
        } else {
            for (_, line) in log.iter().filter(|(rv, l)| *rv > from && !l.is_empty()) {
                let _ = tx.send(Bytes::from(line.clone()));
            }
            tokio::spawn(async move {
                loop {
                    match live.recv().await {
                        Ok(Msg::Line(rv, line)) if rv == 0 || rv > from => {
                            if tx.send(Bytes::from(line)).is_err() {
                                return;
                            }
                        }
                        Ok(Msg::Line(..)) => {}
                        Ok(Msg::Close) | Err(_) => return,
                    }
                }
            });
        }
    }
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}
