//! The per-request pass: IP lists, custom rules, then every argument through the
//! managed groups, then the decision.

use std::sync::Arc;

use crate::body::{self, BodyBufs, Kind, Sink, Src};
use crate::compile::{Policy, RuleSel};
use crate::custom::CustomAction;
use crate::groups::{
    det, java, loc, rfi, session, sqli_gate, ssrf, xss_gate, Group, Severity, View,
};
use crate::normalise::{is_plain, normalise, url_decode, NormBufs};
use crate::request::{cookies, pairs, Request};
use crate::score::{excerpt, Action, Deny, Match, Outcome};

mod args;
mod eval;

use args::{header_loc, same_site_referer, Arg};

/// Reusable buffers for [`Policy::inspect`]. Keep one per thread: once warm, a clean
/// request allocates nothing.
#[derive(Debug, Default)]
pub struct Scratch {
    w: Work,
    body: BodyBufs,
}

impl Scratch {
    /// Empty buffers; they grow to the largest request seen.
    pub fn new() -> Self {
        Self::default()
    }
}

#[derive(Debug, Default)]
pub(crate) struct Work {
    norm: NormBufs,
    marks: Vec<u64>,
    fired: Vec<u64>,
    det_fired: u64,
    hits: Vec<(u32, u32)>,
    tmp: Vec<u8>,
    tmp2: Vec<u8>,
    log4j: String,
    path: String,
}

struct Engine<'a, 'r> {
    p: &'a Policy,
    req: &'a Request<'r>,
    w: &'a mut Work,
    out: Outcome,
    deny: Option<Deny>,
    args: u32,
    stop: bool,
    referer_ok: Option<bool>,
}

impl Policy {
    /// Inspect a request: head, and the body if `req.body` is set.
    ///
    /// One call per request. The gateway calls it after reading the head, and, when
    /// [`Policy::wants_body`] says so, after pre-reading up to [`Policy::body_limit`]
    /// bytes of body (with `truncated` set if there was more).
    pub fn inspect(&self, req: &Request<'_>, scratch: &mut Scratch) -> Outcome {
        let Scratch { w, body } = scratch;
        let words = self.rules.len() / 64 + 1;
        w.fired.clear();
        w.fired.resize(words, 0);
        w.marks.clear();
        w.marks.resize(words, 0);
        w.det_fired = 0;
        let mut e = Engine {
            p: self,
            req,
            w,
            out: Outcome::default(),
            deny: None,
            args: 0,
            stop: false,
            referer_ok: None,
        };
        e.run(body);
        e.finish()
    }

    /// Whether the body of this request is worth reading before proxying: the policy
    /// inspects bodies and the content type is one it parses (not images, archives,
    /// octet-streams ...).
    pub fn wants_body(&self, req: &Request<'_>) -> bool {
        if self.groups == 0 && !self.custom_uses_body {
            return false;
        }
        let media = req.content_type().map(|c| c.0);
        self.over_limit_block || body::kind(media, b"x") != Kind::Skip
    }
}

impl Engine<'_, '_> {
    fn run(&mut self, bufs: &mut BodyBufs) {
        let p = self.p;
        let ip = self.req.client_ip;
        if p.deny_ips.iter().any(|n| n.contains(&ip)) {
            self.custom_hit(Arc::from("deny_ips"), Severity::Critical, ip.to_string());
            self.deny = Some(self.default_deny());
            if !p.detect {
                return;
            }
        } else if p.allow_ips.iter().any(|n| n.contains(&ip)) {
            self.out.action = Action::Allow;
            return;
        }
        if !p.custom.is_empty() || !p.exclusions.is_empty() {
            crate::normalise::clean_path(self.req.raw_path(), &mut self.w.path);
        }
        for rule in &p.custom {
            if !self.eval(&rule.when, bufs) {
                continue;
            }
            match &rule.action {
                CustomAction::Deny(d) => {
                    self.custom_hit(rule.id.clone(), Severity::Critical, String::new());
                    if self.deny.is_none() {
                        self.deny = Some(d.clone());
                    }
                    if !p.detect {
                        return;
                    }
                }
                CustomAction::Allow => {
                    self.custom_hit(rule.id.clone(), Severity::Notice, String::new());
                    self.out.action = Action::Allow;
                    return;
                }
                CustomAction::Count => {
                    self.custom_hit(rule.id.clone(), Severity::Notice, String::new());
                }
                CustomAction::Score(n) => {
                    self.custom_hit(rule.id.clone(), Severity::Notice, String::new());
                    self.out.score += n;
                }
                CustomAction::Label(l) => {
                    if !self.out.labels.contains(l) {
                        self.out.labels.push(l.clone());
                    }
                }
            }
        }
        if p.groups == 0 {
            return;
        }
        self.head();
        self.body(bufs);
    }

    fn finish(mut self) -> Outcome {
        let blocked = self.deny.is_some() || self.out.score >= self.p.threshold;
        if blocked && self.out.action != Action::Allow {
            if self.p.detect {
                self.out.detect_only = true;
            } else {
                let d = self.deny.take().unwrap_or_else(|| self.default_deny());
                self.out.action = Action::Block(d);
            }
        }
        self.out
    }

    fn default_deny(&self) -> Deny {
        Deny {
            status: self.p.block_status,
            body: None,
            headers: Arc::new([]),
        }
    }

    fn custom_hit(&mut self, id: Arc<str>, severity: Severity, value: String) {
        self.out.matches.push(Match {
            rule_id: id,
            group: Group::Custom,
            severity,
            argument: "request".into(),
            value,
        });
    }

    fn head(&mut self) {
        let req = self.req;
        let p = self.p;
        // Host: exactly one, or an authority.
        let hosts = req
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("host"))
            .count();
        if hosts == 0 && req.authority.is_none() {
            self.det(det::MISSING_HOST, Arg::Request, String::new());
        } else if hosts > 1 {
            self.det(det::DUPLICATE_HOST, Arg::Request, String::new());
        }
        if let Some(allowed) = &p.allowed_methods {
            if !allowed.iter().any(|m| m == req.method) {
                self.det(
                    det::METHOD,
                    Arg::Request,
                    req.method.chars().take(32).collect(),
                );
            }
        }
        let path = req.raw_path();
        if self.det_on(det::SESSION_PARAM) && session::session_in_path(path) {
            let ok = *self
                .referer_ok
                .get_or_insert_with(|| same_site_referer(req));
            if !ok {
                let v = excerpt(&String::from_utf8_lossy(path), 0);
                self.det(det::SESSION_PARAM, Arg::Path, v);
            }
        }
        self.arg(loc::PATH, Arg::Path, path, false, false);
        if let Some(q) = req.raw_query() {
            for (n, v) in pairs(q) {
                if self.stop {
                    break;
                }
                self.arg(loc::QNAME, Arg::Query(n), n, true, false);
                self.arg(loc::QUERY, Arg::Query(n), v, true, true);
            }
        }
        for &(name, value) in req.headers {
            if self.stop {
                break;
            }
            let l = header_loc(name);
            if l == 0 {
                continue;
            }
            if l == loc::COOKIE {
                for (n, v) in cookies(value) {
                    self.arg(loc::CNAME, Arg::Cookie(n), n, false, false);
                    self.arg(loc::COOKIE, Arg::Cookie(n), v, false, false);
                }
                continue;
            }
            self.arg(l, Arg::Header(name), value, false, false);
        }
    }

    fn body(&mut self, bufs: &mut BodyBufs) {
        let Some(b) = self.req.body else { return };
        let p = self.p;
        let (media, params) = match self.req.content_type() {
            Some((m, pr)) => (Some(m), pr),
            None => (None, &b""[..]),
        };
        if let Some(m) = media {
            if !self.content_type_allowed(m) {
                let v = String::from_utf8_lossy(&m[..m.len().min(64)]).into_owned();
                self.det(det::CONTENT_TYPE, Arg::Request, v);
            }
        }
        let over = b.truncated || b.bytes.len() > p.body_limit;
        if over {
            if p.over_limit_block {
                self.det(det::BODY_OVER_LIMIT, Arg::Request, String::new());
                self.deny.get_or_insert_with(|| Deny {
                    status: 413,
                    body: None,
                    headers: Arc::new([]),
                });
            }
            self.out.limited = true;
        }
        let bytes = &b.bytes[..b.bytes.len().min(p.body_limit)];
        if bytes.is_empty() {
            return;
        }
        let kind = body::kind(media, bytes);
        let walk = match kind {
            Kind::Skip => return,
            Kind::Raw => {
                self.arg(loc::RAWBODY, Arg::RawBody, bytes, false, true);
                return;
            }
            Kind::Form => body::form::walk(bytes, self),
            Kind::Json => body::json::walk(bytes, bufs, self),
            Kind::Multipart => body::multipart::walk(bytes, params, self),
            Kind::Xml => body::xml::walk(bytes, bufs, self),
        };
        if walk.external_entity {
            self.det(det::XXE_DTD, Arg::RawBody, String::new());
        }
        if walk.limited {
            self.out.limited = true;
            if !self.stop {
                self.det(det::LIMITS, Arg::RawBody, String::new());
            }
        }
        // A truncated body ends mid-document: that is not an error of the client.
        if walk.error && !over && !self.stop {
            self.det(det::BODY_PARSE, Arg::RawBody, String::new());
            self.arg(loc::RAWBODY, Arg::RawBody, bytes, false, false);
        }
    }

    fn content_type_allowed(&self, media: &[u8]) -> bool {
        let m = media;
        self.p.content_types.iter().any(|(t, prefix)| {
            let t = t.as_bytes();
            if *prefix {
                m.get(..t.len()).is_some_and(|p| p.eq_ignore_ascii_case(t))
            } else if let Some(star) = t.iter().position(|&c| c == b'*') {
                let (pre, suf) = (&t[..star], &t[star + 1..]);
                m.len() >= pre.len() + suf.len()
                    && m[..pre.len()].eq_ignore_ascii_case(pre)
                    && m[m.len() - suf.len()..].eq_ignore_ascii_case(suf)
            } else {
                m.eq_ignore_ascii_case(t)
            }
        })
    }

    /// Inspect one value. `counts`: it is an argument for `max_arguments`.
    fn arg(&mut self, l: u16, name: Arg<'_>, raw: &[u8], plus: bool, counts: bool) {
        if self.stop {
            return;
        }
        let p = self.p;
        if counts {
            self.args += 1;
            self.out.stats.arguments = self.args;
            if self.args > p.max_args {
                self.out.limited = true;
                self.det(
                    det::TOO_MANY_ARGS,
                    Arg::Request,
                    format!("> {}", p.max_args),
                );
                self.stop = true;
                return;
            }
        }
        let mut raw = raw;
        if raw.len() > p.max_arg_len {
            raw = &raw[..p.max_arg_len];
            self.out.limited = true;
            self.det(det::ARG_TOO_LONG, name, format!("{} bytes", raw.len()));
        }
        self.out.stats.bytes += raw.len() as u64;
        if l & (loc::QUERY | loc::BODY) != 0 {
            self.session_param(name, raw);
        }
        let last_segment = if l & loc::PATH != 0 {
            raw.rsplit(|&c| c == b'/').next().unwrap_or(raw)
        } else {
            raw
        };
        if java::deserialization(last_segment) {
            self.det(
                det::DESER,
                name,
                excerpt(&String::from_utf8_lossy(&raw[..raw.len().min(64)]), 0),
            );
        }
        // A scanner names itself in one plain word (`ZmEu`), a web shell in a plain
        // file name (`shell.php`): those always go on.
        // Structured headers (Accept, Cache-Control ...) only matter for payloads that
        // need one of these characters (`${jndi:`, `() {`, an escape).
        if l == loc::HSTRUCT
            && !raw
                .iter()
                .any(|c| matches!(c, b'$' | b'(' | b'%' | b'{' | b'#' | b'\\' | b'&'))
        {
            return;
        }
        if raw.is_empty() || (is_plain(raw) && l & (loc::UA | loc::FILENAME) == 0) {
            // A bare address is plain too: `?host=169.254.169.254`, `?u=2852039166`.
            if l & loc::ARGS != 0 && self.det_on(det::SSRF_METADATA) {
                if let Some(t) = ssrf::plain_address(raw) {
                    let d = if t == ssrf::Target::Metadata {
                        det::SSRF_METADATA
                    } else {
                        det::SSRF_INTERNAL
                    };
                    self.det(
                        d,
                        name,
                        String::from_utf8_lossy(raw).chars().take(64).collect(),
                    );
                }
            }
            return;
        }
        normalise(raw, plus, &mut self.w.norm);
        self.scan(l, name);
    }

    /// Run the table rules and detectors on the normalised value in `w.norm`.
    fn scan(&mut self, l: u16, name: Arg<'_>) {
        let nb = &self.w.norm;
        if nb.norm.is_empty() {
            return;
        }
        let text_loc = loc::ARGS | loc::PATH | loc::NAMES;
        let invalid = nb.invalid_utf8 && l & text_loc != 0;
        let nul = nb.had_nul && l & text_loc != 0;
        if invalid {
            self.det(det::INVALID_UTF8, name, String::new());
        }
        if nul {
            let v = excerpt(&self.w.norm.norm, 0);
            self.det(det::NUL, name, v);
        }
        self.table(l, name);
        let nb = &self.w.norm;
        let norm = nb.norm.as_str();
        let values = l & (loc::INPUT | loc::NAMES) != 0;
        // libinjection, where SQL or HTML could be.
        if values && self.det_on(det::SQLI) {
            let mut hit = None;
            if l & loc::PATH != 0 {
                // Each segment is its own value (`/items/1 or 1=1/edit`).
                for seg in norm.split('/') {
                    if !seg.is_empty() && sqli_gate(seg) {
                        if let Some(h) = crate::groups::sqli::libinjection(seg) {
                            hit = Some(h || hit == Some(true));
                        }
                    }
                }
            } else if sqli_gate(norm) {
                hit = crate::groups::sqli::libinjection(norm);
            }
            if let Some(injection) = hit {
                let v = excerpt(norm, 0);
                self.det(
                    if injection {
                        det::SQLI
                    } else {
                        det::SQLI_STATEMENT
                    },
                    name,
                    v,
                );
            }
        }
        let norm = self.w.norm.norm.as_str();
        if values
            && self.det_on(det::XSS)
            && xss_gate(norm)
            && libinjectionrs::detect_xss(norm.as_bytes()).is_injection()
        {
            let d = if norm.contains('<') {
                det::XSS
            } else {
                det::XSS_ATTRIBUTE
            };
            let v = excerpt(norm, 0);
            self.det(d, name, v);
        }
        let norm = self.w.norm.norm.as_str();
        if self.det_on(det::LOG4SHELL) && java::log4shell(norm, &mut self.w.log4j) {
            let v = excerpt(&self.w.norm.norm, 0);
            self.det(det::LOG4SHELL, name, v);
            self.deny.get_or_insert_with(|| Deny {
                status: self.p.block_status,
                body: None,
                headers: Arc::new([]),
            });
        }
        let norm = self.w.norm.norm.as_str();
        if l & (loc::ARGS | loc::HEADER | loc::PATH) != 0
            && self.det_on(det::SSRF_INTERNAL)
            && (crate::normalise::has_pair(norm.as_bytes(), b'/', b'/')
                || norm.starts_with(|c: char| c.is_ascii_digit() || c == '[' || c == 'l'))
        {
            let t = ssrf::classify(norm);
            let d = match t {
                ssrf::Target::Metadata => Some(det::SSRF_METADATA),
                ssrf::Target::Internal => Some(det::SSRF_INTERNAL),
                ssrf::Target::Private => Some(det::SSRF_PRIVATE),
                ssrf::Target::Public => None,
            };
            if let Some(d) = d {
                let v = excerpt(norm, 0);
                self.det(d, name, v);
            }
        }
        let norm = self.w.norm.norm.as_str();
        if l & loc::ARGS != 0 && self.det_on(det::RFI_INCLUDE) && rfi::is_remote_url(norm) {
            let tmp = &mut self.w.tmp;
            let n: &[u8] = match name {
                Arg::Query(raw) | Arg::Body(Src::Form, raw) => {
                    url_decode(raw, tmp, true);
                    tmp
                }
                Arg::Body(_, raw) => raw
                    .rsplit(|&c| matches!(c, b'.' | b':' | b'@'))
                    .next()
                    .unwrap_or(b""),
                _ => b"",
            };
            if std::str::from_utf8(n).is_ok_and(rfi::include_like) {
                let norm = self.w.norm.norm.as_str();
                let v = excerpt(norm, 0);
                self.det(det::RFI_INCLUDE, name, v);
            }
        }
    }

    /// Aho-Corasick over each view, then confirm the marked rules' regexes.
    fn table(&mut self, l: u16, name: Arg<'_>) {
        let p = self.p;
        let Some(ac) = &p.ac else { return };
        let Work {
            norm: nb,
            marks,
            fired,
            hits,
            ..
        } = &mut *self.w;
        hits.clear();
        let views: [(View, bool, &str); 4] = [
            (View::Norm, true, nb.norm.as_str()),
            (View::Sql, nb.has_sql, nb.sql.as_str()),
            (View::Shell, nb.has_shell, nb.shell.as_str()),
            (View::Path, nb.has_path, nb.path.as_str()),
        ];
        let distinct = |v: View| match v {
            View::Norm => true,
            View::Sql => nb.has_sql,
            View::Shell => nb.has_shell,
            View::Path => nb.has_path,
        };
        for m in marks.iter_mut() {
            *m = 0;
        }
        for &(view, present, text) in &views {
            if !present {
                continue;
            }
            for m in ac.find_overlapping_iter(text) {
                let Some(&ri) = p.ac_rule.get(m.pattern().as_usize()) else {
                    continue;
                };
                let ri = ri as usize;
                let (word, bit) = (ri / 64, 1u64 << (ri % 64));
                if marks[word] & bit != 0 || fired[word] & bit != 0 {
                    continue;
                }
                let rule = &p.rules[ri];
                // A rule reads its own view, or the norm view when its own is the same.
                let reads =
                    rule.def.view == view || (view == View::Norm && !distinct(rule.def.view));
                if !reads || rule.def.locs & l == 0 {
                    continue;
                }
                marks[word] |= bit;
                let target = views
                    .iter()
                    .find(|v| v.0 == rule.def.view && v.1)
                    .map_or(nb.norm.as_str(), |v| v.2);
                match &rule.re {
                    None => hits.push((ri as u32, m.start() as u32)),
                    Some(re) => {
                        if let Some(found) = re.find(target.as_bytes()) {
                            hits.push((ri as u32, found.start() as u32));
                        }
                    }
                }
            }
        }
        if hits.is_empty() {
            return;
        }
        let found: Vec<(u32, u32)> = hits.clone();
        for (ri, at) in found {
            let rule = &p.rules[ri as usize];
            let nb = &self.w.norm;
            let text = match rule.def.view {
                View::Sql if nb.has_sql => &nb.sql,
                View::Shell if nb.has_shell => &nb.shell,
                View::Path if nb.has_path => &nb.path,
                _ => &nb.norm,
            };
            let v = excerpt(text, at as usize);
            let d = rule.def;
            let multiline = d.group == Group::Rce && text.matches('\n').nth(1).is_some();
            let severity = if multiline {
                Severity::Warning
            } else {
                d.severity
            };
            if self.record(&rule.id.clone(), d.group, severity, name, v) {
                let (word, bit) = (ri as usize / 64, 1u64 << (ri % 64));
                self.w.fired[word] |= bit;
                if d.deny {
                    self.deny.get_or_insert_with(|| Deny {
                        status: p.block_status,
                        body: None,
                        headers: Arc::new([]),
                    });
                }
            }
        }
    }

    fn det_on(&self, d: usize) -> bool {
        self.w.det_fired & (1 << d) == 0 && self.p.detectors.get(d).is_some_and(|x| x.on)
    }

    fn det(&mut self, d: usize, name: Arg<'_>, value: String) {
        if !self.det_on(d) {
            return;
        }
        let Some(x) = self.p.detectors.get(d) else {
            return;
        };
        if self.record(&x.id.clone(), x.group, x.severity, name, value) {
            self.w.det_fired |= 1 << d;
        }
    }

    /// Add a match unless an exclusion covers it. Returns whether it was added.
    fn record(
        &mut self,
        id: &Arc<str>,
        group: Group,
        severity: Severity,
        name: Arg<'_>,
        value: String,
    ) -> bool {
        let argument = name.render();
        if self.excluded(id, group, &argument) {
            return false;
        }
        self.out.score += severity.score();
        self.out.matches.push(Match {
            rule_id: id.clone(),
            group,
            severity,
            argument,
            value,
        });
        true
    }

    fn excluded(&self, id: &str, group: Group, arg: &str) -> bool {
        let path = self.w.path.as_str();
        self.p.exclusions.iter().any(|x| {
            x.rules.iter().any(|s| match s {
                RuleSel::Group(g) => *g == group,
                RuleSel::Id(i) => i == id,
            }) && x.args.as_ref().is_none_or(|a| {
                a.iter().any(|(n, prefix)| {
                    if *prefix {
                        arg.starts_with(n.as_str())
                    } else {
                        arg == n
                    }
                })
            }) && x
                .paths
                .as_ref()
                .is_none_or(|ps| ps.iter().any(|p| path.starts_with(p.as_str())))
        })
    }

    /// A session id passed as a query or form argument, by a link from elsewhere.
    fn session_param(&mut self, name: Arg<'_>, raw: &[u8]) {
        let n = match name {
            Arg::Query(n) | Arg::Body(Src::Form, n) => n,
            _ => return,
        };
        if raw.is_empty() || !self.det_on(det::SESSION_PARAM) {
            return;
        }
        let Ok(n) = std::str::from_utf8(n) else {
            return;
        };
        if !session::session_name(n) {
            return;
        }
        let ok = *self
            .referer_ok
            .get_or_insert_with(|| same_site_referer(self.req));
        if !ok {
            let v = String::from_utf8_lossy(&raw[..raw.len().min(64)]).into_owned();
            self.det(det::SESSION_PARAM, name, v);
        }
    }
}

impl Sink for Engine<'_, '_> {
    fn name(&mut self, src: Src, name: &[u8], key: &[u8]) {
        // `{"constructor": {"prototype": ...}}`: two plain keys, one pollution.
        if src == Src::Json
            && key == b"prototype"
            && name.ends_with(b"constructor")
            && (name.len() == 11 || matches!(name[name.len() - 12], b'.' | b':'))
        {
            self.det(
                det::PROTO_KEY,
                Arg::Key(src, name, key),
                "constructor.prototype".into(),
            );
        }
        let arg = match src {
            Src::Json => Arg::Key(src, name, key),
            _ => Arg::Body(src, name),
        };
        self.arg(loc::BNAME, arg, key, src == Src::Form, false);
    }

    fn value(&mut self, src: Src, name: &[u8], value: &[u8]) -> bool {
        let l = if src == Src::MultipartFile {
            loc::FILENAME
        } else {
            loc::BODY
        };
        // Form and multipart fields become a framework's parameter map, so they count
        // against `max_arguments` like query arguments; JSON and XML values are bounded
        // by `body.limit` and the depth limit instead (a bulk JSON array is not an
        // attack).
        let counts = matches!(src, Src::Form | Src::Multipart);
        self.arg(l, Arg::Body(src, name), value, src == Src::Form, counts);
        !self.stop
    }
}
