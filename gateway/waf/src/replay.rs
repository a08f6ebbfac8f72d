//! Recorded traffic for `gateway waf replay`: parsing (pure) and a report of what a
//! policy would block, false-positive candidates first.
//!
//! Input formats, detected per file ([`parse`]):
//! * **JSON lines** (one request per line):
//!   `{"method": "POST", "target": "/p?q=1"` (or `"path"` + `"query"`),
//!   `"headers": {"Host": "a"}` (or `[["Host", "a"], ...]`), `"body": "text"` (or
//!   `"body_base64"`), `"client_ip": "203.0.113.9"`, `"route": "api"`, `"status": 200}`.
//!   Every field but the target/path is optional. Extra fields are kept in `extra`.
//! * **The gateway's access log** (JSON lines): `method`, `host`, `path` (with the query
//!   when `access_log.query` is on), `client`, `route`, `status`. It has no headers
//!   besides Host and no bodies, so only the path, query and method are replayed.
//! * **HAR** (`log.entries[].request`: `method`, `url`, `headers`, `postData.text`;
//!   `response.status`; `serverIPAddress` is not the client and is ignored).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use base64::Engine as _;
use serde::Serialize;
use serde_json::Value;

use crate::{Body, Outcome, Policy, Request, Scratch};

/// One recorded request, owned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recorded {
    /// Method (default GET).
    pub method: String,
    /// Path and query, percent-encoded as sent.
    pub target: Vec<u8>,
    /// Headers in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body, if recorded.
    pub body: Option<Vec<u8>>,
    /// Client address (default 0.0.0.0).
    pub client_ip: Option<IpAddr>,
    /// Route name, if recorded.
    pub route: Option<String>,
    /// Response status the request got when recorded.
    pub status: Option<u16>,
    /// 1-based line (JSON lines) or entry index (HAR).
    pub line: usize,
    /// Fields this module does not read (corpus labels, notes ...).
    pub extra: BTreeMap<String, Value>,
}

impl Recorded {
    /// Inspect this request with `policy`.
    pub fn inspect(&self, policy: &Policy, scratch: &mut Scratch) -> Outcome {
        let headers: Vec<(&str, &[u8])> = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        let req = self.request(&headers);
        policy.inspect(&req, scratch)
    }

    /// A [`Request`] view; `headers` comes from [`Recorded::header_refs`].
    pub fn request<'a>(&'a self, headers: &'a [(&'a str, &'a [u8])]) -> Request<'a> {
        Request {
            method: if self.method.is_empty() {
                "GET"
            } else {
                &self.method
            },
            target: &self.target,
            authority: None,
            headers,
            client_ip: self.client_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            body: self.body.as_deref().map(|b| Body {
                bytes: b,
                truncated: false,
            }),
        }
    }

    /// Borrowed headers for [`Recorded::request`].
    pub fn header_refs(&self) -> Vec<(&str, &[u8])> {
        self.headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect()
    }
}

/// A line or entry that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ReplayError {
    /// 1-based line (or HAR entry).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// What [`parse`] read: the requests, and the lines it skipped.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Requests in input order.
    pub requests: Vec<Recorded>,
    /// Lines that were not requests.
    pub errors: Vec<ReplayError>,
}

/// Parse a HAR file or JSON lines (simple format or access log), detected from the
/// content.
pub fn parse(text: &str) -> Parsed {
    let t = text.trim_start();
    if t.starts_with('{') {
        // A HAR file is one JSON document with `log.entries`.
        if let Ok(v) = serde_json::from_str::<Value>(t) {
            if v.get("log").and_then(|l| l.get("entries")).is_some() {
                return parse_har_value(&v);
            }
        }
    }
    parse_jsonl(text)
}

/// Parse JSON lines; blank lines and lines starting with `#` or `//` are skipped.
pub fn parse_jsonl(text: &str) -> Parsed {
    let mut out = Parsed::default();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with("//") {
            continue;
        }
        let res = serde_json::from_str::<Value>(l)
            .map_err(|e| e.to_string())
            .and_then(|v| from_line(&v));
        match res {
            Ok(mut r) => {
                r.line = i + 1;
                out.requests.push(r);
            }
            Err(message) => out.errors.push(ReplayError {
                line: i + 1,
                message,
            }),
        }
    }
    out
}

/// Parse a HAR document.
pub fn parse_har(text: &str) -> Parsed {
    match serde_json::from_str::<Value>(text) {
        Ok(v) => parse_har_value(&v),
        Err(e) => Parsed {
            requests: Vec::new(),
            errors: vec![ReplayError {
                line: e.line(),
                message: e.to_string(),
            }],
        },
    }
}

fn parse_har_value(v: &Value) -> Parsed {
    let mut out = Parsed::default();
    let entries = v
        .pointer("/log/entries")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    for (i, e) in entries.iter().enumerate() {
        let Some(req) = e.get("request") else {
            out.errors.push(ReplayError {
                line: i + 1,
                message: "entry without request".into(),
            });
            continue;
        };
        let url = req.get("url").and_then(Value::as_str).unwrap_or("/");
        let (host, target) = split_url(url);
        let mut headers = headers_of(req.get("headers"));
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            if let Some(h) = host {
                headers.push(("host".into(), h.as_bytes().to_vec()));
            }
        }
        // HTTP/2 pseudo-headers are not headers.
        headers.retain(|(k, _)| !k.starts_with(':'));
        let body = req
            .pointer("/postData/text")
            .and_then(Value::as_str)
            .map(|t| {
                let b64 =
                    req.pointer("/postData/encoding").and_then(Value::as_str) == Some("base64");
                if b64 {
                    base64::engine::general_purpose::STANDARD
                        .decode(t)
                        .unwrap_or_else(|_| t.as_bytes().to_vec())
                } else {
                    t.as_bytes().to_vec()
                }
            });
        out.requests.push(Recorded {
            method: req
                .get("method")
                .and_then(Value::as_str)
                .unwrap_or("GET")
                .to_owned(),
            target: target.into_bytes(),
            headers,
            body,
            client_ip: None,
            route: None,
            status: e
                .pointer("/response/status")
                .and_then(Value::as_u64)
                .and_then(|s| u16::try_from(s).ok())
                .filter(|s| *s > 0),
            line: i + 1,
            extra: BTreeMap::new(),
        });
    }
    out
}

/// `https://host:8443/p?q` → (Some("host:8443"), "/p?q"); a path stays a path.
fn split_url(url: &str) -> (Option<&str>, String) {
    match url.find("://") {
        Some(i) => {
            let rest = &url[i + 3..];
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            let path = &rest[end..];
            let path = if path.starts_with('?') {
                format!("/{path}")
            } else if path.is_empty() {
                "/".to_owned()
            } else {
                path.to_owned()
            };
            (Some(&rest[..end]), path)
        }
        None => (None, url.to_owned()),
    }
}

fn headers_of(v: Option<&Value>) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    match v {
        Some(Value::Object(m)) => {
            for (k, v) in m {
                match v {
                    Value::Array(vs) => {
                        for v in vs {
                            out.push((k.clone(), scalar(v).into_bytes()));
                        }
                    }
                    v => out.push((k.clone(), scalar(v).into_bytes())),
                }
            }
        }
        Some(Value::Array(items)) => {
            for it in items {
                match it {
                    // [name, value]
                    Value::Array(pair) if pair.len() == 2 => {
                        out.push((scalar(&pair[0]), scalar(&pair[1]).into_bytes()));
                    }
                    // HAR: {"name": .., "value": ..}
                    Value::Object(o) => {
                        if let (Some(n), Some(v)) = (o.get("name"), o.get("value")) {
                            out.push((scalar(n), scalar(v).into_bytes()));
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
    out
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    }
}

const KNOWN: &[&str] = &[
    "method",
    "target",
    "path",
    "query",
    "uri",
    "url",
    "headers",
    "body",
    "body_base64",
    "client_ip",
    "client",
    "remote_addr",
    "route",
    "status",
    "host",
    "user_agent",
];

fn from_line(v: &Value) -> Result<Recorded, String> {
    let o = v.as_object().ok_or("not a JSON object")?;
    let s = |k: &str| o.get(k).and_then(Value::as_str);
    let target = if let Some(t) = s("target").or_else(|| s("uri")) {
        t.to_owned()
    } else if let Some(u) = s("url") {
        split_url(u).1
    } else if let Some(p) = s("path") {
        match s("query").filter(|q| !q.is_empty()) {
            Some(q) => format!("{p}?{}", q.trim_start_matches('?')),
            None => p.to_owned(),
        }
    } else {
        return Err("no target, path, uri or url".into());
    };
    let mut headers = headers_of(o.get("headers"));
    // Access-log lines carry the host (and maybe the user agent) as fields.
    for (field, header) in [("host", "host"), ("user_agent", "user-agent")] {
        if let Some(h) = s(field).filter(|h| !h.is_empty()) {
            if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(header)) {
                headers.push((header.into(), h.as_bytes().to_vec()));
            }
        }
    }
    let body = if let Some(b) = s("body_base64") {
        Some(
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| format!("body_base64: {e}"))?,
        )
    } else {
        match o.get("body") {
            Some(Value::String(b)) => Some(b.as_bytes().to_vec()),
            Some(Value::Null) | None => None,
            // A JSON body written inline.
            Some(other) => Some(other.to_string().into_bytes()),
        }
    };
    let client_ip = s("client_ip")
        .or_else(|| s("client"))
        .or_else(|| s("remote_addr"))
        .and_then(|c| c.parse().ok());
    Ok(Recorded {
        method: s("method").unwrap_or("GET").to_owned(),
        target: target.into_bytes(),
        headers,
        body,
        client_ip,
        route: s("route").map(str::to_owned),
        status: o
            .get("status")
            .and_then(Value::as_u64)
            .and_then(|s| u16::try_from(s).ok()),
        line: 0,
        extra: o
            .iter()
            .filter(|(k, _)| !KNOWN.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    })
}

/// Samples kept per rule and per route.
pub const SAMPLES: usize = 5;

/// A request the policy would block.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Line or entry of the input.
    pub line: usize,
    /// Method and target (lossy UTF-8, at most 200 characters).
    pub request: String,
    /// Status it got when recorded.
    pub status: Option<u16>,
    /// Score.
    pub score: u32,
    /// `rule_id@argument` of each match.
    pub matches: Vec<String>,
}

/// Counts for one rule or route.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tally {
    /// Requests it matched (rule) or blocked (route).
    pub count: u64,
    /// Of those, requests that got a 2xx or 3xx when recorded: likely false positives.
    pub fp_candidates: u64,
    /// First few examples, false-positive candidates first.
    pub samples: Vec<Sample>,
}

/// What a policy would have done to recorded traffic.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Requests replayed.
    pub total: u64,
    /// Requests that would be blocked.
    pub blocked: u64,
    /// Blocked requests that succeeded (2xx/3xx) when recorded.
    pub fp_candidates: u64,
    /// By rule id (rules that matched a blocked request).
    pub by_rule: BTreeMap<String, Tally>,
    /// By route (`-` when not recorded).
    pub by_route: BTreeMap<String, Tally>,
}

impl Report {
    /// Count one replayed request.
    pub fn add(&mut self, r: &Recorded, o: &Outcome) {
        self.total += 1;
        if !o.would_block() {
            return;
        }
        self.blocked += 1;
        let fp = r.status.is_some_and(|s| (200..400).contains(&s));
        if fp {
            self.fp_candidates += 1;
        }
        let sample = Sample {
            line: r.line,
            request: format!("{} {}", r.method, String::from_utf8_lossy(&r.target))
                .chars()
                .take(200)
                .collect(),
            status: r.status,
            score: o.score,
            matches: o
                .matches
                .iter()
                .map(|m| format!("{}@{}", m.rule_id, m.argument))
                .collect(),
        };
        let mut seen: Vec<&str> = Vec::new();
        for m in &o.matches {
            if seen.contains(&&*m.rule_id) {
                continue;
            }
            seen.push(&m.rule_id);
            tally(
                self.by_rule.entry(m.rule_id.to_string()).or_default(),
                &sample,
                fp,
            );
        }
        let route = r.route.clone().unwrap_or_else(|| "-".into());
        tally(self.by_route.entry(route).or_default(), &sample, fp);
    }

    /// Rules sorted for printing: most false-positive candidates first, then most matches.
    pub fn rules_sorted(&self) -> Vec<(&str, &Tally)> {
        let mut v: Vec<_> = self.by_rule.iter().map(|(k, t)| (k.as_str(), t)).collect();
        v.sort_by(|a, b| {
            b.1.fp_candidates
                .cmp(&a.1.fp_candidates)
                .then(b.1.count.cmp(&a.1.count))
                .then(a.0.cmp(b.0))
        });
        v
    }

    /// Routes sorted the same way.
    pub fn routes_sorted(&self) -> Vec<(&str, &Tally)> {
        let mut v: Vec<_> = self.by_route.iter().map(|(k, t)| (k.as_str(), t)).collect();
        v.sort_by(|a, b| {
            b.1.fp_candidates
                .cmp(&a.1.fp_candidates)
                .then(b.1.count.cmp(&a.1.count))
                .then(a.0.cmp(b.0))
        });
        v
    }
}

fn tally(t: &mut Tally, s: &Sample, fp: bool) {
    t.count += 1;
    if fp {
        t.fp_candidates += 1;
    }
    if t.samples.len() < SAMPLES {
        t.samples.push(s.clone());
    } else if fp {
        // Keep false-positive candidates over true blocks.
        if let Some(i) = t
            .samples
            .iter()
            .position(|x| !x.status.is_some_and(|s| (200..400).contains(&s)))
        {
            t.samples[i] = s.clone();
        }
    }
    t.samples
        .sort_by_key(|x| !x.status.is_some_and(|s| (200..400).contains(&s)));
}

#[cfg(test)]
mod tests;
