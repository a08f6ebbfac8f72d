//! Custom rule conditions, evaluated against the request.

use crate::body::{self, BodyBufs, Kind, Sink, Src};
use crate::custom::Field;
use crate::normalise::url_decode;
use crate::request::{cookies, pairs};

use super::Engine;

impl Engine<'_, '_> {
    pub(super) fn eval(&mut self, c: &crate::custom::Cond, bufs: &mut BodyBufs) -> bool {
        use crate::custom::Cond;
        match c {
            Cond::All(v) => v.iter().all(|c| self.eval(c, bufs)),
            Cond::Any(v) => v.iter().any(|c| self.eval(c, bufs)),
            Cond::Not(c) => !self.eval(c, bufs),
            Cond::Leaf(f, op) => self.leaf(f, op, bufs),
        }
    }

    fn leaf(&mut self, f: &Field, op: &crate::custom::Op, bufs: &mut BodyBufs) -> bool {
        let req = self.req;
        match f {
            Field::SourceIp => op.test_ip(req.client_ip),
            Field::Path => op.test(&self.w.path),
            Field::Method => op.test(req.method),
            Field::Host => {
                let h = req.authority.or_else(|| req.header("host")).unwrap_or(b"");
                let h = String::from_utf8_lossy(h);
                let h = match h.rsplit_once(':') {
                    Some((a, port))
                        if port.bytes().all(|c| c.is_ascii_digit()) && !a.ends_with(':') =>
                    {
                        a
                    }
                    _ => &h,
                };
                op.test(h)
            }
            Field::Header(n) => req
                .headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(n))
                .any(|(_, v)| op.test(&String::from_utf8_lossy(v))),
            Field::Cookie(n) => req
                .headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("cookie"))
                .flat_map(|(_, v)| cookies(v))
                .any(|(k, v)| k == n.as_bytes() && op.test(&String::from_utf8_lossy(v))),
            Field::Query(n) => {
                let Some(q) = req.raw_query() else {
                    return false;
                };
                for (k, v) in pairs(q) {
                    if let Some(n) = n {
                        url_decode(k, &mut self.w.tmp, true);
                        let key: &[u8] = if self.w.tmp.is_empty() && !k.is_empty() {
                            k
                        } else {
                            &self.w.tmp
                        };
                        if key != n.as_bytes() {
                            continue;
                        }
                    }
                    let val: &[u8] = if url_decode(v, &mut self.w.tmp2, true) {
                        &self.w.tmp2
                    } else {
                        v
                    };
                    if op.test(&String::from_utf8_lossy(val)) {
                        return true;
                    }
                }
                false
            }
            Field::Body(n) => {
                let Some(b) = req.body else { return false };
                let bytes = &b.bytes[..b.bytes.len().min(self.p.body_limit)];
                let (media, params) = match req.content_type() {
                    Some((m, p)) => (Some(m), p),
                    None => (None, &b""[..]),
                };
                let mut s = BodyMatch {
                    name: n.as_deref(),
                    op,
                    hit: false,
                    tmp: Vec::new(),
                };
                match body::kind(media, bytes) {
                    Kind::Form => {
                        body::form::walk(bytes, &mut s);
                    }
                    Kind::Json => {
                        body::json::walk(bytes, bufs, &mut s);
                    }
                    Kind::Multipart => {
                        body::multipart::walk(bytes, params, &mut s);
                    }
                    Kind::Xml => {
                        body::xml::walk(bytes, bufs, &mut s);
                    }
                    Kind::Raw => s.hit = n.is_none() && op.test(&String::from_utf8_lossy(bytes)),
                    Kind::Skip => {}
                }
                s.hit
            }
            Field::Label => self.out.labels.iter().any(|l| op.test(l)),
        }
    }
}

/// Finds a body argument by name for a custom rule.
struct BodyMatch<'a> {
    name: Option<&'a str>,
    op: &'a crate::custom::Op,
    hit: bool,
    tmp: Vec<u8>,
}

impl Sink for BodyMatch<'_> {
    fn name(&mut self, _: Src, _: &[u8], _: &[u8]) {}
    fn value(&mut self, src: Src, name: &[u8], value: &[u8]) -> bool {
        if src == Src::MultipartFile {
            return true;
        }
        if let Some(want) = self.name {
            let got: &[u8] = match src {
                Src::Json => name.strip_prefix(b"json:").unwrap_or(name),
                Src::Xml => name.strip_prefix(b"xml:").unwrap_or(name),
                Src::Form => {
                    if url_decode(name, &mut self.tmp, true) {
                        &self.tmp
                    } else {
                        name
                    }
                }
                _ => name,
            };
            if got != want.as_bytes() {
                return true;
            }
        }
        let v = if src == Src::Form && url_decode(value, &mut self.tmp, true) {
            String::from_utf8_lossy(&self.tmp).into_owned()
        } else {
            String::from_utf8_lossy(value).into_owned()
        };
        self.hit = self.op.test(&v);
        !self.hit
    }
}
