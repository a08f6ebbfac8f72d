//! What a run leaves in its directory: every request's outcome (`outcomes.csv`), the
//! fault windows as they happened (`faults.json`) and the run's settings (`run.json`).
//! The report is computed from these files alone, so `gameday report DIR` can be run
//! again later.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

/// The kinds of request in the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `GET /api/...`: gateway -> backend.
    Get,
    /// `GET /dep/...`: gateway -> edge sidecar -> mTLS -> backend sidecar -> backend.
    GetDep,
    /// `POST /api/orders` with an `Idempotency-Key`.
    PostKey,
    /// `POST /api/orders` without one.
    Post,
    /// One message echoed over a WebSocket.
    Ws,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Get => "get",
            Kind::GetDep => "get_dep",
            Kind::PostKey => "post_key",
            Kind::Post => "post",
            Kind::Ws => "ws",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Kind::Get, Kind::GetDep, Kind::PostKey, Kind::Post, Kind::Ws]
            .into_iter()
            .find(|k| k.name() == s)
    }

    /// An idempotent HTTP method (GET): the gateway may retry it anywhere.
    pub fn idempotent(self) -> bool {
        matches!(self, Kind::Get | Kind::GetDep)
    }

    /// A client may send it again after a failure without risk of doing it twice.
    pub fn safe_to_retry(self) -> bool {
        matches!(self, Kind::Get | Kind::GetDep | Kind::PostKey)
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Ok,
    /// An answer that is not 2xx (the status is in `status`).
    Status,
    /// No connection to any gateway (refused or connect timeout on every try).
    Refused,
    /// The connection broke after the request was sent.
    Reset,
    /// No answer within the client's timeout.
    Timeout,
}

impl Cause {
    pub fn name(self) -> &'static str {
        match self {
            Cause::Ok => "ok",
            Cause::Status => "status",
            Cause::Refused => "refused",
            Cause::Reset => "reset",
            Cause::Timeout => "timeout",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            Cause::Ok,
            Cause::Status,
            Cause::Refused,
            Cause::Reset,
            Cause::Timeout,
        ]
        .into_iter()
        .find(|c| c.name() == s)
    }
}

/// One request (or WebSocket message), as the client saw it.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// When it was due to be sent, since the start of the load.
    pub sent_ms: f64,
    pub latency_ms: f64,
    pub kind: Kind,
    /// Zone of the gateway that answered (or was tried last).
    pub gateway: String,
    /// Gateways tried before this one after a refused connection (the NLB's retry).
    pub nlb_retries: u32,
    pub status: u16,
    pub cause: Cause,
    /// Zone of the backend that answered, when one did.
    pub backend_zone: String,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.cause == Cause::Ok
    }

    /// `status 503`, `reset`, ...: the cause as the report counts it.
    pub fn cause_label(&self) -> String {
        match self.cause {
            Cause::Status => format!("status {}", self.status),
            c => c.name().to_owned(),
        }
    }
}

pub const CSV_HEADER: &str =
    "sent_ms,latency_ms,kind,gateway,nlb_retries,status,cause,backend_zone,idempotent,safe_to_retry";

impl Outcome {
    pub fn csv_line(&self) -> String {
        format!(
            "{:.1},{:.2},{},{},{},{},{},{},{},{}",
            self.sent_ms,
            self.latency_ms,
            self.kind.name(),
            self.gateway,
            self.nlb_retries,
            self.status,
            self.cause.name(),
            self.backend_zone,
            self.kind.idempotent(),
            self.kind.safe_to_retry()
        )
    }

    fn from_csv(line: &str) -> Option<Self> {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() < 8 {
            return None;
        }
        Some(Outcome {
            sent_ms: f[0].parse().ok()?,
            latency_ms: f[1].parse().ok()?,
            kind: Kind::parse(f[2])?,
            gateway: f[3].to_owned(),
            nlb_retries: f[4].parse().ok()?,
            status: f[5].parse().ok()?,
            cause: Cause::parse(f[6])?,
            backend_zone: f[7].to_owned(),
        })
    }
}

pub fn write_outcomes(path: &Path, outcomes: &[Outcome]) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = std::io::BufWriter::new(file);
    writeln!(w, "{CSV_HEADER}")?;
    for o in outcomes {
        writeln!(w, "{}", o.csv_line())?;
    }
    w.flush()?;
    Ok(())
}

pub fn read_outcomes(path: &Path) -> anyhow::Result<Vec<Outcome>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate().skip(1) {
        let line = line?;
        match Outcome::from_csv(&line) {
            Some(o) => out.push(o),
            None => bail!("{}: line {}: not an outcome: {line}", path.display(), i + 1),
        }
    }
    out.sort_by(|a, b| a.sent_ms.total_cmp(&b.sent_ms));
    Ok(out)
}

/// A fault as it happened.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultWindow {
    pub label: String,
    pub kind: String,
    /// When it was applied, since the start of the load.
    pub start_ms: f64,
    /// When it was reverted (lasting faults) or when its action finished.
    pub end_ms: f64,
    /// Planned length (`for`), if it lasts.
    pub lasting: bool,
    pub single_zone: bool,
    pub operation: bool,
    /// Why it was not applied, or what went wrong applying or reverting it.
    pub error: Option<String>,
    pub skipped: bool,
}

/// The run's settings and anything the report must say about how it ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo {
    pub schedule: String,
    pub rate: u32,
    pub duration_s: f64,
    pub mode: String,
    pub websockets: u32,
    pub notes: Vec<String>,
    /// NLB health transitions: (ms since start, gateway zone, healthy).
    pub nlb_events: Vec<(f64, String, bool)>,
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}
