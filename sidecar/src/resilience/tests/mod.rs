//! Tests of the resilience layers, driven by a scripted fake dependency and tokio's
//! paused clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backoff;
mod breaker;
mod budget;
mod bulkhead;
mod fault;
mod grpc;
mod hedge;
mod latency;
mod ratelimit;
mod replay;
mod retry;
mod timeout;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use crate::body::{boxed, empty, full, Body, BoxError};
use crate::error::ProxyError;

/// One scripted answer of the fake dependency.
#[derive(Debug, Clone)]
pub(super) enum Step {
    /// Read the whole request body, then answer with this status.
    Status(u16),
    /// Same, with one response header.
    WithHeader(u16, &'static str, &'static str),
    /// Answer without reading the request body.
    Early(u16),
    /// Read one frame of the request body, then answer.
    Partial(u16),
    /// Take this long, then answer.
    Sleep(Duration, u16),
    /// Wait for a permit of the fake's gate, then answer.
    Gated(u16),
    /// Never answer.
    Hang,
    Fail(ProxyError),
    /// Answer with what this makes (e.g. a gRPC response with trailers).
    Respond(fn() -> Response<Body>),
}

struct FakeState {
    script: Mutex<VecDeque<Step>>,
    calls: AtomicUsize,
    bodies: Mutex<Vec<Bytes>>,
    trailers: Mutex<Vec<Option<HeaderMap>>>,
    times: Mutex<Vec<Instant>>,
    gate: Arc<Semaphore>,
}

/// A fake dependency: answers from a script (its last step repeats), counts calls and
/// records what it received.
#[derive(Clone)]
pub(super) struct Fake {
    state: Arc<FakeState>,
}

pub(super) type FakeService =
    tower::util::BoxCloneService<Request<Body>, Response<Body>, ProxyError>;

impl Fake {
    pub(super) fn new(steps: impl IntoIterator<Item = Step>) -> Self {
        Self {
            state: Arc::new(FakeState {
                script: Mutex::new(steps.into_iter().collect()),
                calls: AtomicUsize::new(0),
                bodies: Mutex::default(),
                trailers: Mutex::default(),
                times: Mutex::default(),
                gate: Arc::new(Semaphore::new(0)),
            }),
        }
    }

    /// Replace what is left of the script.
    pub(super) fn then(&self, steps: impl IntoIterator<Item = Step>) {
        let mut script = self.state.script.lock().unwrap();
        script.clear();
        script.extend(steps);
    }

    pub(super) fn service(&self) -> FakeService {
        let state = Arc::clone(&self.state);
        tower::util::BoxCloneService::new(tower::service_fn(move |req: Request<Body>| {
            let state = Arc::clone(&state);
            async move {
                state.calls.fetch_add(1, Ordering::SeqCst);
                state.times.lock().unwrap().push(Instant::now());
                let step = {
                    let mut script = state.script.lock().unwrap();
                    if script.len() > 1 {
                        script.pop_front()
                    } else {
                        script.front().cloned()
                    }
                }
                .unwrap_or(Step::Status(200));
                let mut body = req.into_body();
                match step {
                    Step::Early(_) => {}
                    Step::Partial(_) => {
                        let mut got = Vec::new();
                        if let Some(Ok(frame)) = body.frame().await {
                            if let Ok(d) = frame.into_data() {
                                got.extend_from_slice(&d);
                            }
                        }
                        state.bodies.lock().unwrap().push(Bytes::from(got));
                    }
                    _ => {
                        let (bytes, trailers) = match body.collect().await {
                            Ok(c) => {
                                let trailers = c.trailers().cloned();
                                (c.to_bytes(), trailers)
                            }
                            Err(_) => (Bytes::from_static(b"<body error>"), None),
                        };
                        state.bodies.lock().unwrap().push(bytes);
                        state.trailers.lock().unwrap().push(trailers);
                    }
                }
                let code = match step {
                    Step::Status(c) | Step::Early(c) | Step::Partial(c) => c,
                    Step::WithHeader(c, name, value) => {
                        let mut r = status(c);
                        r.headers_mut().insert(
                            http::HeaderName::from_static(name),
                            http::HeaderValue::from_static(value),
                        );
                        return Ok(r);
                    }
                    Step::Sleep(d, c) => {
                        tokio::time::sleep(d).await;
                        c
                    }
                    Step::Gated(c) => {
                        state.gate.acquire().await.unwrap().forget();
                        c
                    }
                    Step::Hang => std::future::pending().await,
                    Step::Fail(e) => return Err(e),
                    Step::Respond(make) => return Ok(make()),
                };
                Ok(status(code))
            }
        }))
    }

    pub(super) fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    pub(super) fn bodies(&self) -> Vec<Bytes> {
        self.state.bodies.lock().unwrap().clone()
    }

    pub(super) fn trailers(&self) -> Vec<Option<HeaderMap>> {
        self.state.trailers.lock().unwrap().clone()
    }

    /// When each call arrived.
    pub(super) fn times(&self) -> Vec<Instant> {
        self.state.times.lock().unwrap().clone()
    }

    /// Let `n` gated calls answer.
    pub(super) fn release(&self, n: usize) {
        self.state.gate.add_permits(n);
    }
}

pub(super) fn status(code: u16) -> Response<Body> {
    Response::builder()
        .status(code)
        .body(full(format!("status {code}")))
        .unwrap()
}

pub(super) fn get() -> Request<Body> {
    request(Method::GET, empty())
}

pub(super) fn request(method: Method, body: Body) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri("http://dependency/path")
        .body(body)
        .unwrap()
}

/// A body of these chunks, of unknown length (like a chunked upload).
pub(super) fn streamed(chunks: &[&'static str]) -> Body {
    let frames: Vec<Result<Frame<Bytes>, BoxError>> = chunks
        .iter()
        .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
        .collect();
    boxed(StreamBody::new(futures_util::stream::iter(frames)))
}

/// Send one request through `svc`.
pub(super) async fn call<S>(svc: &S, req: Request<Body>) -> Result<Response<Body>, ProxyError>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = ProxyError> + Clone,
{
    svc.clone().oneshot(req).await
}

pub(super) async fn code<S>(svc: &S, req: Request<Body>) -> u16
where
    S: Service<Request<Body>, Response = Response<Body>, Error = ProxyError> + Clone,
{
    call(svc, req).await.unwrap().status().as_u16()
}

/// Let spawned tasks run until `cond` holds.
pub(super) async fn until(mut cond: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition never became true");
}
