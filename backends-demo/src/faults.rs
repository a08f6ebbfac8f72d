//! Fault knobs: what `POST /_fault?…` and `POST /_health?…` accept, and the state they set.
//!
//! A fault setting replaces the previous one as a whole, so the state after a call is
//! exactly what its query says (`POST /_fault?latency=200ms` also clears an earlier
//! `status=503`). At most one of `status`, `hang`, `reset` is allowed: they are different
//! answers to the same request, and picking a precedence silently would surprise.
//! `path_prefix=/dep/` confines the whole setting to requests whose path starts with it;
//! the others are answered as if no fault were set.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use http::StatusCode;
use serde::Serialize;
use tollgate_config::units::{format_duration, parse_duration};

/// What a faulted request gets instead of the echo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Answer this status with a small JSON body.
    Status(StatusCode),
    /// Never answer; keep the connection open.
    Hang,
    /// Close the connection without an answer.
    Reset,
}

/// One complete fault setting.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// Delay before every normal request is answered (faulted or not; under
    /// `path_prefix` only, when set).
    pub latency: Option<Duration>,
    /// Added delay per other request in flight: a backend that slows down as load
    /// grows, as a saturated one does (`load_latency=5ms`: 10 others, +50 ms).
    pub load_latency: Option<Duration>,
    /// What the faulted share of requests gets.
    pub action: Option<Action>,
    /// The share of normal requests that get `action`, in `0.0..=1.0`.
    pub rate: f64,
    /// The share of normal requests delayed by `latency` (default all): a backend with
    /// a slow tail, as a replica with a long GC pause or a cold cache has.
    pub latency_rate: f64,
    /// Only normal requests whose path starts with this are faulted (default all): a
    /// failing dependency that only one route's traffic reaches.
    pub path_prefix: Option<Arc<str>>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            latency: None,
            load_latency: None,
            action: None,
            rate: 1.0,
            latency_rate: 1.0,
            path_prefix: None,
        }
    }
}

/// A knob value that was refused; the message goes back to the caller with a 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnobError(String);

impl fmt::Display for KnobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KnobError {}

fn bad(msg: impl Into<String>) -> KnobError {
    KnobError(msg.into())
}

/// `key=value` pairs of a query string; a key without `=` has the value `""`.
fn pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

fn parse_bool(key: &str, value: &str) -> Result<bool, KnobError> {
    match value {
        // A bare `hang` reads as `hang=true`.
        "" | "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(bad(format!("{key}: expected true or false, got {value:?}"))),
    }
}

impl Faults {
    /// Parse the query of `POST /_fault`. An empty query means no faults.
    pub fn parse_query(query: &str) -> Result<Self, KnobError> {
        let mut status = None;
        let mut rate = None;
        let mut latency = None;
        let mut latency_rate = None;
        let mut load_latency = None;
        let mut hang = None;
        let mut reset = None;
        let mut path_prefix = None;
        for (key, value) in pairs(query) {
            let already = match key {
                "status" => status.replace(parse_status(value)?).is_some(),
                "rate" => rate.replace(parse_rate(value)?).is_some(),
                "latency" => latency
                    .replace(parse_duration(value).map_err(|e| bad(format!("latency: {e}")))?)
                    .is_some(),
                "latency_rate" => latency_rate.replace(parse_rate(value)?).is_some(),
                "load_latency" => load_latency
                    .replace(
                        parse_duration(value).map_err(|e| bad(format!("load_latency: {e}")))?,
                    )
                    .is_some(),
                "hang" => hang.replace(parse_bool(key, value)?).is_some(),
                "reset" => reset.replace(parse_bool(key, value)?).is_some(),
                "path_prefix" => path_prefix.replace(parse_path_prefix(value)?).is_some(),
                _ => {
                    return Err(bad(format!(
                        "unknown knob {key:?}: expected status, rate, latency, latency_rate, load_latency, hang, reset or path_prefix"
                    )))
                }
            };
            if already {
                return Err(bad(format!("{key} given twice")));
            }
        }
        let mut actions = [
            status.map(Action::Status),
            hang.filter(|h| *h).map(|_| Action::Hang),
            reset.filter(|r| *r).map(|_| Action::Reset),
        ]
        .into_iter()
        .flatten();
        let action = actions.next();
        if actions.next().is_some() {
            return Err(bad("choose one of status, hang=true, reset=true"));
        }
        if rate.is_some() && action.is_none() {
            return Err(bad(
                "rate applies to status, hang or reset (latency applies to every request)",
            ));
        }
        if latency_rate.is_some() && latency.is_none() {
            return Err(bad("latency_rate applies to latency"));
        }
        let faults = Self {
            latency_rate: latency_rate.unwrap_or(1.0),
            latency: latency.filter(|d: &Duration| !d.is_zero()),
            load_latency: load_latency.filter(|d: &Duration| !d.is_zero()),
            action,
            rate: rate.unwrap_or(1.0),
            path_prefix,
        };
        if faults.path_prefix.is_some() && faults.is_none() {
            return Err(bad(
                "path_prefix applies to status, hang, reset, latency or load_latency",
            ));
        }
        Ok(faults)
    }

    /// Whether a normal request to `path` is subject to this setting.
    pub fn applies_to(&self, path: &str) -> bool {
        match self.path_prefix.as_deref() {
            Some(prefix) => path.starts_with(prefix),
            None => true,
        }
    }

    /// No knob set: requests are answered as if faults did not exist.
    pub fn is_none(&self) -> bool {
        self.latency.is_none() && self.load_latency.is_none() && self.action.is_none()
    }

    /// Roll the dice for one request: its delay, if it falls in the delayed share.
    pub fn roll_latency(&self) -> Option<Duration> {
        let latency = self.latency?;
        (self.latency_rate >= 1.0 || rand::random::<f64>() < self.latency_rate).then_some(latency)
    }

    /// Roll the dice for one request: its action, if it falls in the faulted share.
    pub fn roll(&self) -> Option<Action> {
        let action = self.action?;
        (self.rate >= 1.0 || rand::random::<f64>() < self.rate).then_some(action)
    }
}

fn parse_status(value: &str) -> Result<StatusCode, KnobError> {
    value
        .parse::<u16>()
        .ok()
        .filter(|s| (200..=599).contains(s))
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| {
            bad(format!(
                "status: expected a number in 200..=599, got {value:?}"
            ))
        })
}

fn parse_path_prefix(value: &str) -> Result<Arc<str>, KnobError> {
    // Compared with the request's path as it arrives (not percent-decoded).
    if !value.starts_with('/') {
        return Err(bad(format!(
            "path_prefix: expected a path starting with /, got {value:?}"
        )));
    }
    Ok(value.into())
}

fn parse_rate(value: &str) -> Result<f64, KnobError> {
    value
        .parse::<f64>()
        .ok()
        .filter(|r| (0.0..=1.0).contains(r))
        .ok_or_else(|| bad(format!("rate: expected a number in 0..=1, got {value:?}")))
}

/// Parse the query of `POST /_health`: `ok=true` or `ok=false`.
pub fn parse_health_query(query: &str) -> Result<bool, KnobError> {
    let mut ok = None;
    for (key, value) in pairs(query) {
        match key {
            "ok" if ok.is_none() => ok = Some(parse_bool(key, value)?),
            "ok" => return Err(bad("ok given twice")),
            _ => return Err(bad(format!("unknown knob {key:?}: expected ok"))),
        }
    }
    ok.ok_or_else(|| bad("missing ok=true or ok=false"))
}

/// The knobs as the server holds them: read on every request, written rarely.
#[derive(Debug)]
pub struct Knobs {
    // Lets the hot path skip the lock while no fault is set (the benchmark case).
    active: AtomicBool,
    faults: RwLock<Faults>,
    healthy: AtomicBool,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            active: AtomicBool::new(false),
            faults: RwLock::new(Faults::default()),
            healthy: AtomicBool::new(true),
        }
    }
}

impl Knobs {
    /// The current faults, or `None` when there are none.
    pub fn faults(&self) -> Option<Faults> {
        if !self.active.load(Ordering::Acquire) {
            return None;
        }
        Some(
            self.faults
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }

    /// The faults that apply to a normal request to `path`, or `None`.
    pub fn faults_for(&self, path: &str) -> Option<Faults> {
        self.faults().filter(|f| f.applies_to(path))
    }

    /// Replace the fault setting as a whole.
    pub fn set_faults(&self, faults: Faults) {
        let active = !faults.is_none();
        let mut slot = self.faults.write().unwrap_or_else(PoisonError::into_inner);
        *slot = faults;
        self.active.store(active, Ordering::Release);
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn set_healthy(&self, ok: bool) {
        self.healthy.store(ok, Ordering::Relaxed);
    }

    /// What the knob endpoints answer: the whole current state.
    pub fn view(&self) -> KnobsView {
        let f = self.faults().unwrap_or_default();
        KnobsView {
            status: match f.action {
                Some(Action::Status(s)) => Some(s.as_u16()),
                _ => None,
            },
            rate: f.rate,
            latency: f.latency.map(format_duration),
            latency_rate: f.latency_rate,
            load_latency: f.load_latency.map(format_duration),
            hang: f.action == Some(Action::Hang),
            reset: f.action == Some(Action::Reset),
            path_prefix: f.path_prefix.as_deref().map(str::to_owned),
            healthy: self.healthy(),
        }
    }
}

/// JSON shape of the knob state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KnobsView {
    pub status: Option<u16>,
    pub rate: f64,
    pub latency: Option<String>,
    pub latency_rate: f64,
    pub load_latency: Option<String>,
    pub hang: bool,
    pub reset: bool,
    pub path_prefix: Option<String>,
    pub healthy: bool,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(q: &str) -> Faults {
        Faults::parse_query(q).unwrap()
    }

    fn refused(q: &str) -> String {
        Faults::parse_query(q).unwrap_err().to_string()
    }

    #[test]
    fn status_rate_latency() {
        let f = parse("status=503&rate=0.5&latency=200ms");
        assert_eq!(
            f.action,
            Some(Action::Status(StatusCode::SERVICE_UNAVAILABLE))
        );
        assert_eq!(f.rate, 0.5);
        assert_eq!(f.latency, Some(Duration::from_millis(200)));
    }

    #[test]
    fn rate_defaults_to_all() {
        let f = parse("status=500");
        assert_eq!(f.rate, 1.0);
        assert_eq!(f.latency, None);
    }

    #[test]
    fn empty_query_is_no_fault() {
        assert!(parse("").is_none());
        assert!(parse("latency=0").is_none());
        assert!(parse("hang=false&reset=false").is_none());
    }

    #[test]
    fn hang_and_reset() {
        assert_eq!(parse("hang=true").action, Some(Action::Hang));
        assert_eq!(parse("hang").action, Some(Action::Hang));
        assert_eq!(parse("reset=1&rate=0.25").action, Some(Action::Reset));
        assert_eq!(parse("latency=2s").latency, Some(Duration::from_secs(2)));
        assert_eq!(
            parse("load_latency=5ms").load_latency,
            Some(Duration::from_millis(5))
        );
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        assert!(refused("status=abc").contains("status"));
        assert!(refused("status=99").contains("200..=599"));
        assert!(refused("status=600").contains("200..=599"));
        assert!(refused("status=503&rate=2").contains("rate"));
        assert!(refused("status=503&rate=-0.1").contains("rate"));
        assert!(refused("status=503&rate=NaN").contains("rate"));
        assert!(refused("latency=fast").contains("latency"));
        assert!(refused("hang=maybe").contains("hang"));
        assert!(refused("color=red").contains("unknown knob"));
        assert!(refused("status=503&status=500").contains("twice"));
        assert!(refused("status=503&hang=true").contains("choose one"));
        assert!(refused("rate=0.5").contains("rate applies"));
        assert!(refused("latency_rate=0.5").contains("latency_rate applies"));
        assert!(refused("latency=1s&latency_rate=3").contains("rate"));
        assert!(refused("status=503&path_prefix=dep/").contains("starting with /"));
        assert!(refused("status=503&path_prefix=").contains("starting with /"));
        assert!(refused("status=503&path_prefix=/a/&path_prefix=/b/").contains("twice"));
        assert!(refused("path_prefix=/dep/").contains("path_prefix applies"));
        assert!(refused("latency=0&path_prefix=/dep/").contains("path_prefix applies"));
    }

    #[test]
    fn path_prefix_confines_every_knob() {
        let all = parse("status=503");
        assert_eq!(all.path_prefix, None);
        assert!(all.applies_to("/api/orders") && all.applies_to("/"));

        let dep = parse("status=503&rate=0.5&path_prefix=/dep/");
        assert_eq!(dep.path_prefix.as_deref(), Some("/dep/"));
        assert_eq!(dep.rate, 0.5);
        assert!(dep.applies_to("/dep/items/7"));
        assert!(dep.applies_to("/dep/"));
        assert!(!dep.applies_to("/dep"));
        assert!(!dep.applies_to("/api/orders"));
        assert!(!dep.applies_to("/api/dep/x"));

        for q in [
            "hang=true&path_prefix=/dep/",
            "reset=true&path_prefix=/dep/",
            "latency=200ms&path_prefix=/dep/",
            "load_latency=5ms&path_prefix=/dep/",
        ] {
            let f = parse(q);
            assert!(f.applies_to("/dep/x") && !f.applies_to("/api/x"), "{q}");
        }

        let knobs = Knobs::default();
        knobs.set_faults(dep);
        assert!(knobs.faults_for("/dep/items/1").is_some());
        assert!(knobs.faults_for("/api/orders").is_none());
        assert!(knobs.faults_for("/healthz").is_none());
        assert_eq!(knobs.view().path_prefix.as_deref(), Some("/dep/"));
    }

    #[test]
    fn a_setting_without_path_prefix_drops_the_earlier_one() {
        let knobs = Knobs::default();
        knobs.set_faults(parse("status=503&path_prefix=/dep/"));
        assert!(knobs.faults_for("/api/orders").is_none());
        knobs.set_faults(parse("latency=200ms"));
        assert_eq!(knobs.view().path_prefix, None);
        assert_eq!(knobs.view().status, None);
        assert!(knobs.faults_for("/api/orders").is_some());
        knobs.set_faults(Faults::default());
        assert!(knobs.faults_for("/dep/x").is_none());
    }

    #[test]
    fn roll_respects_rate() {
        let never = parse("status=503&rate=0");
        assert!((0..1000).all(|_| never.roll().is_none()));
        let always = parse("status=503");
        assert!((0..1000).all(|_| always.roll().is_some()));
        let half = parse("status=503&rate=0.5");
        let hits = (0..10_000).filter(|_| half.roll().is_some()).count();
        assert!((4000..6000).contains(&hits), "{hits}");
    }

    #[test]
    fn latency_rate_delays_a_share() {
        let all = parse("latency=50ms");
        assert!((0..1000).all(|_| all.roll_latency() == Some(Duration::from_millis(50))));
        let tail = parse("latency=50ms&latency_rate=0.05");
        let hits = (0..10_000)
            .filter(|_| tail.roll_latency().is_some())
            .count();
        assert!((300..700).contains(&hits), "{hits}");
        assert!(parse("status=503").roll_latency().is_none());
    }

    #[test]
    fn health_query() {
        assert!(!parse_health_query("ok=false").unwrap());
        assert!(parse_health_query("ok=true").unwrap());
        assert!(parse_health_query("").is_err());
        assert!(parse_health_query("ok=perhaps").is_err());
        assert!(parse_health_query("ok=true&x=1").is_err());
    }

    #[test]
    fn knobs_view_round_trip() {
        let knobs = Knobs::default();
        assert_eq!(knobs.faults(), None);
        knobs.set_faults(parse("status=502&rate=0.5&latency=1s"));
        let v = knobs.view();
        assert_eq!(v.status, Some(502));
        assert_eq!(v.rate, 0.5);
        assert_eq!(v.latency.as_deref(), Some("1s"));
        knobs.set_faults(Faults::default());
        assert_eq!(knobs.faults(), None);
        knobs.set_healthy(false);
        assert!(!knobs.view().healthy);
    }
}
