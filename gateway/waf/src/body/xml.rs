//! XML: text and attribute values named by element path (`xml:order.item@id`), and
//! the DTD: an `<!ENTITY` with `SYSTEM`/`PUBLIC`, or an external DTD subset, is XXE.
//! A scanner, not a validating parser: it never resolves anything.

use memchr::memmem;

use super::{BodyBufs, Sink, Src, Walk, MAX_DEPTH, MAX_NAME};

const ROOT: &str = "xml:";

pub(crate) fn walk(body: &[u8], bufs: &mut BodyBufs, sink: &mut dyn Sink) -> Walk {
    let BodyBufs { name, stack, .. } = bufs;
    let mut walk = Walk::default();
    name.clear();
    name.push_str(ROOT);
    stack.clear();
    let mut depth = 0usize;
    let mut i = 0;
    let n = body.len();
    while i < n {
        let Some(lt) = memchr::memchr(b'<', &body[i..]) else {
            let text = body[i..].trim_ascii();
            if !text.is_empty() && !sink.value(Src::Xml, name.as_bytes(), text) {
                walk.limited = true;
            }
            break;
        };
        let text = body[i..i + lt].trim_ascii();
        if !text.is_empty() && !sink.value(Src::Xml, name.as_bytes(), text) {
            walk.limited = true;
            return walk;
        }
        i += lt;
        let rest = &body[i..];
        if rest.starts_with(b"<!--") {
            i += memmem::find(rest, b"-->").map_or(rest.len(), |e| e + 3);
        } else if rest.starts_with(b"<![CDATA[") {
            let end = memmem::find(rest, b"]]>").unwrap_or(rest.len());
            let cdata = rest.get(9..end).unwrap_or(&[]);
            if !sink.value(Src::Xml, name.as_bytes(), cdata) {
                walk.limited = true;
                return walk;
            }
            i += (end + 3).min(rest.len());
        } else if rest.starts_with(b"<?") {
            i += memmem::find(rest, b"?>").map_or(rest.len(), |e| e + 2);
        } else if rest.len() >= 9 && rest[..9].eq_ignore_ascii_case(b"<!doctype") {
            let end = doctype_end(rest);
            if external(&rest[..end]) {
                walk.external_entity = true;
            }
            i += end;
        } else if rest.starts_with(b"</") {
            i += memchr::memchr(b'>', rest).map_or(rest.len(), |e| e + 1);
            depth = depth.saturating_sub(1);
            if depth < stack.len() {
                if let Some(len) = stack.pop() {
                    name.truncate(len);
                }
            }
        } else if rest.starts_with(b"<!") {
            // A stray declaration outside a DOCTYPE.
            let end = memchr::memchr(b'>', rest).map_or(rest.len(), |e| e + 1);
            if external(&rest[..end]) {
                walk.external_entity = true;
            }
            i += end;
        } else {
            let (end, self_closing) = tag_end(rest);
            let tag = &rest[1..end.saturating_sub(if self_closing { 2 } else { 1 }).max(1)];
            let tag_name_len = tag
                .iter()
                .position(|c| c.is_ascii_whitespace() || *c == b'/' || *c == b'>')
                .unwrap_or(tag.len());
            let tag_name = &tag[..tag_name_len];
            if tag_name.is_empty() {
                walk.error = true;
                i += 1;
                continue;
            }
            let before = name.len();
            if depth < MAX_DEPTH {
                if name.len() < MAX_NAME {
                    if name.len() > ROOT.len() {
                        name.push('.');
                    }
                    name.push_str(&String::from_utf8_lossy(tag_name));
                }
            } else {
                walk.limited = true;
            }
            sink.name(Src::Xml, name.as_bytes(), tag_name);
            if !attributes(&tag[tag_name_len..], name, sink) {
                walk.limited = true;
                return walk;
            }
            if self_closing {
                name.truncate(before);
            } else {
                if depth < MAX_DEPTH {
                    stack.push(before);
                }
                depth += 1;
            }
            i += end;
        }
    }
    walk
}

/// Index after the `>` closing a tag (quotes respected), and whether it is `/>`.
fn tag_end(s: &[u8]) -> (usize, bool) {
    let mut quote = 0u8;
    for (j, &c) in s.iter().enumerate().skip(1) {
        if quote != 0 {
            if c == quote {
                quote = 0;
            }
        } else if c == b'"' || c == b'\'' {
            quote = c;
        } else if c == b'>' {
            return (j + 1, j > 0 && s[j - 1] == b'/');
        }
    }
    (s.len(), false)
}

/// Index after a DOCTYPE, internal subset `[...]` included.
fn doctype_end(s: &[u8]) -> usize {
    let mut in_subset = false;
    let mut quote = 0u8;
    for (j, &c) in s.iter().enumerate() {
        if quote != 0 {
            if c == quote {
                quote = 0;
            }
            continue;
        }
        match c {
            b'"' | b'\'' => quote = c,
            b'[' => in_subset = true,
            b']' => in_subset = false,
            b'>' if !in_subset => return j + 1,
            _ => {}
        }
    }
    s.len()
}

/// A declaration that loads something from outside: `<!ENTITY x SYSTEM`, a parameter
/// entity, or `<!DOCTYPE x SYSTEM/PUBLIC "...">`.
fn external(decl: &[u8]) -> bool {
    let lower: Vec<u8> = decl
        .iter()
        .take(64 * 1024)
        .map(u8::to_ascii_lowercase)
        .collect();
    let has = |n: &[u8]| memmem::find(&lower, n).is_some();
    (has(b"<!entity") && (has(b"system") || has(b"public") || has(b"<!entity %")))
        || (lower.starts_with(b"<!doctype") && {
            // External subset: SYSTEM/PUBLIC before any `[`.
            let head = lower.split(|&c| c == b'[').next().unwrap_or(&[]);
            memmem::find(head, b"system").is_some() || memmem::find(head, b"public").is_some()
        })
}

fn attributes(mut s: &[u8], name: &mut String, sink: &mut dyn Sink) -> bool {
    let base = name.len();
    loop {
        s = s.trim_ascii_start();
        let Some(eq) = memchr::memchr(b'=', s) else {
            return true;
        };
        let attr = s[..eq].trim_ascii();
        let after = s[eq + 1..].trim_ascii_start();
        let (value, rest) = match after.first() {
            Some(&q @ (b'"' | b'\'')) => match memchr::memchr(q, &after[1..]) {
                Some(e) => (&after[1..1 + e], &after[2 + e..]),
                None => (&after[1..], &b""[..]),
            },
            _ => {
                let e = after
                    .iter()
                    .position(|c| c.is_ascii_whitespace())
                    .unwrap_or(after.len());
                (&after[..e], &after[e..])
            }
        };
        sink.name(Src::Xml, name.as_bytes(), attr);
        if name.len() < MAX_NAME {
            name.push('@');
            name.push_str(&String::from_utf8_lossy(attr));
        }
        let go_on = sink.value(Src::Xml, name.as_bytes(), value);
        name.truncate(base);
        if !go_on {
            return false;
        }
        s = rest;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[derive(Default)]
    struct Collect(Vec<(String, String)>);
    impl Sink for Collect {
        fn name(&mut self, _: Src, _: &[u8], _: &[u8]) {}
        fn value(&mut self, _: Src, name: &[u8], v: &[u8]) -> bool {
            self.0.push((
                String::from_utf8_lossy(name).into(),
                String::from_utf8_lossy(v).into(),
            ));
            true
        }
    }

    fn run(s: &str) -> (Vec<(String, String)>, Walk) {
        let mut c = Collect::default();
        let w = walk(s.as_bytes(), &mut BodyBufs::default(), &mut c);
        (c.0, w)
    }

    #[test]
    fn text_and_attributes() {
        let (got, w) = run(
            r#"<?xml version="1.0"?><order id="7"><item sku='a b'>Two &amp; three</item><!-- c --><note><![CDATA[<b>x</b>]]></note><e/></order>"#,
        );
        assert!(!w.external_entity);
        let got: Vec<_> = got.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(
            got,
            [
                ("xml:order@id", "7"),
                ("xml:order.item@sku", "a b"),
                ("xml:order.item", "Two &amp; three"),
                ("xml:order.note", "<b>x</b>"),
            ]
        );
    }

    #[test]
    fn xxe() {
        assert!(run(r#"<?xml version="1.0"?><!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><foo>&xxe;</foo>"#).1.external_entity);
        assert!(
            run(r#"<!DOCTYPE foo [<!ENTITY % p PUBLIC "x" "http://evil/x.dtd"> %p;]><foo/>"#)
                .1
                .external_entity
        );
        assert!(
            run(r#"<!DOCTYPE foo SYSTEM "http://evil/x.dtd"><foo/>"#)
                .1
                .external_entity
        );
        assert!(
            !run(r#"<!DOCTYPE html><html><body>hi</body></html>"#)
                .1
                .external_entity
        );
        assert!(
            !run(r#"<!DOCTYPE note [<!ENTITY writer "Donald">]><note>&writer;</note>"#)
                .1
                .external_entity
        );
    }
}
