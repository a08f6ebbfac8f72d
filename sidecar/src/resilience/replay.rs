//! A request body that can be sent again. The first try streams the body straight
//! through (no added latency, no stall for a client that waits for the response before
//! it finishes its request) while keeping a copy of up to `max` bytes; a later try
//! replays the copy, then continues from the original body where the earlier try left
//! it. Once the copy would exceed `max` it is dropped and the body is no longer
//! replayable: such a request is delivered intact but not retried.
//!
//! Only one try reads at a time: starting a new try cuts the earlier one off (its body
//! ends with an error, so a connection still sending it is not reused).

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body as _, Frame, SizeHint};

use crate::body::{boxed, empty, Body, BoxError};

pub(crate) enum Replay {
    /// No body: every try gets an empty one.
    Empty,
    /// Declared larger than the cap: sent once, never replayed.
    Once(Option<Body>),
    Tee(Arc<Mutex<Shared>>),
}

pub(crate) struct Shared {
    source: Option<Body>,
    chunks: Vec<Bytes>,
    buffered: usize,
    max: usize,
    trailers: Option<HeaderMap>,
    ended: bool,
    error: Option<String>,
    /// The copy outgrew `max` and was dropped.
    capped: bool,
    /// The last try is under way: nothing more to keep.
    frozen: bool,
    /// Which try's body may read.
    reader: u64,
    /// The waker of a reader waiting on the source, to wake it when cut off.
    waiting: Option<Waker>,
    exact: Option<u64>,
}

impl Replay {
    pub(crate) fn new(body: Body, max: usize) -> Self {
        if body.is_end_stream() {
            return Self::Empty;
        }
        let hint = body.size_hint();
        if hint.lower() > max as u64 {
            return Self::Once(Some(body));
        }
        Self::Tee(Arc::new(Mutex::new(Shared {
            exact: hint.exact(),
            source: Some(body),
            chunks: Vec::new(),
            buffered: 0,
            max,
            trailers: None,
            ended: false,
            error: None,
            capped: false,
            frozen: false,
            reader: 0,
            waiting: None,
        })))
    }

    /// Whether another try could be given the whole body.
    pub(crate) fn replayable(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Once(_) => false,
            Self::Tee(shared) => {
                let s = lock(shared);
                !s.capped && s.error.is_none()
            }
        }
    }

    /// No try will follow the next one: stop keeping a copy.
    pub(crate) fn last_try(&self) {
        if let Self::Tee(shared) = self {
            lock(shared).frozen = true;
        }
    }

    /// The body for the next try. An earlier try's body stops yielding data.
    pub(crate) fn next_body(&mut self) -> Body {
        match self {
            Self::Empty => empty(),
            Self::Once(body) => body.take().unwrap_or_else(|| boxed(ReplayBody::failed())),
            Self::Tee(shared) => {
                let (reader, cut_off) = {
                    let mut s = lock(shared);
                    s.reader += 1;
                    (s.reader, s.waiting.take())
                };
                if let Some(waker) = cut_off {
                    waker.wake();
                }
                boxed(ReplayBody {
                    shared: Some(Arc::clone(shared)),
                    reader,
                    pos: 0,
                    yielded: 0,
                    trailers_sent: false,
                })
            }
        }
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One try's view of the body.
struct ReplayBody {
    /// `None`: a body that only fails.
    shared: Option<Arc<Mutex<Shared>>>,
    reader: u64,
    /// Next chunk of the copy to send.
    pos: usize,
    yielded: u64,
    trailers_sent: bool,
}

impl ReplayBody {
    fn failed() -> Self {
        Self {
            shared: None,
            reader: 0,
            pos: 0,
            yielded: 0,
            trailers_sent: false,
        }
    }
}

impl http_body::Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(shared) = &this.shared else {
            return Poll::Ready(Some(Err(
                "request body already sent and not replayable".into()
            )));
        };
        let mut s = lock(shared);
        if s.reader != this.reader {
            return Poll::Ready(Some(Err("request body taken over by a retry".into())));
        }
        if let Some(chunk) = s.chunks.get(this.pos).cloned() {
            this.pos += 1;
            this.yielded += chunk.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if s.ended {
            if !this.trailers_sent {
                if let Some(t) = s.trailers.clone() {
                    this.trailers_sent = true;
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
            }
            return Poll::Ready(None);
        }
        if let Some(e) = &s.error {
            return Poll::Ready(Some(Err(e.clone().into())));
        }
        let Some(source) = s.source.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(source).poll_frame(cx) {
            Poll::Pending => {
                if !s.waiting.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    s.waiting = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            Poll::Ready(None) => {
                s.ended = true;
                s.source = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                s.error = Some(e.to_string());
                s.source = None;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    if !s.capped && !s.frozen {
                        if s.buffered.saturating_add(data.len()) > s.max {
                            s.capped = true;
                            s.chunks = Vec::new();
                            s.buffered = 0;
                            this.pos = 0;
                        } else {
                            s.buffered += data.len();
                            s.chunks.push(data.clone());
                            this.pos += 1;
                        }
                    }
                    this.yielded += data.len() as u64;
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Err(frame) => {
                    if let Some(t) = frame.trailers_ref() {
                        s.trailers = Some(t.clone());
                        this.trailers_sent = true;
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        let Some(shared) = &self.shared else {
            return false;
        };
        let s = lock(shared);
        s.reader == self.reader
            && self.pos >= s.chunks.len()
            && s.ended
            && (self.trailers_sent || s.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        let exact = self.shared.as_ref().and_then(|shared| lock(shared).exact);
        match exact {
            Some(n) => SizeHint::with_exact(n.saturating_sub(self.yielded)),
            None => SizeHint::default(),
        }
    }
}
