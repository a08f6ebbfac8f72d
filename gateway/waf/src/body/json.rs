//! JSON: every key and string value, named by its path (`json:user.tags[2]`).
//! Lenient and iterative: a syntax error ends the walk with `error` set.

use std::fmt::Write;

use super::{BodyBufs, Sink, Src, Walk, MAX_DEPTH, MAX_NAME};

const ROOT: &str = "json:";

struct Frame {
    object: bool,
    path_len: usize,
    index: usize,
}

pub(crate) fn walk(body: &[u8], bufs: &mut BodyBufs, sink: &mut dyn Sink) -> Walk {
    let BodyBufs { name, text, .. } = bufs;
    let mut walk = Walk::default();
    name.clear();
    name.push_str(ROOT);
    // Frames beyond MAX_DEPTH are counted, not stored.
    let mut stack: Vec<Frame> = Vec::new();
    let mut overflow = 0usize;
    let mut expect_key = false;
    let mut i = 0;
    let n = body.len();
    while i < n {
        let c = body[i];
        match c {
            b' ' | b'\t' | b'\r' | b'\n' | b':' => i += 1,
            b'{' | b'[' => {
                i += 1;
                if stack.len() >= MAX_DEPTH {
                    overflow += 1;
                    walk.limited = true;
                    expect_key = c == b'{';
                    continue;
                }
                let path_len = name.len();
                stack.push(Frame {
                    object: c == b'{',
                    path_len,
                    index: 0,
                });
                if c == b'{' {
                    expect_key = true;
                } else {
                    expect_key = false;
                    if name.len() < MAX_NAME {
                        name.push_str("[0]");
                    }
                }
            }
            b'}' | b']' => {
                i += 1;
                if overflow > 0 {
                    overflow -= 1;
                    continue;
                }
                match stack.pop() {
                    Some(f) if f.object == (c == b'}') => name.truncate(f.path_len),
                    _ => {
                        walk.error = true;
                        return walk;
                    }
                }
                expect_key = false;
            }
            b',' => {
                i += 1;
                if overflow > 0 {
                    continue;
                }
                match stack.last_mut() {
                    Some(f) => {
                        name.truncate(f.path_len);
                        if f.object {
                            expect_key = true;
                        } else {
                            f.index += 1;
                            if name.len() < MAX_NAME {
                                let _ = write!(name, "[{}]", f.index);
                            }
                        }
                    }
                    None => {
                        walk.error = true;
                        return walk;
                    }
                }
            }
            b'"' => {
                let Some(next) = string(body, i + 1, text) else {
                    walk.error = true;
                    return walk;
                };
                i = next;
                let in_object = stack.last().is_some_and(|f| f.object) && overflow == 0;
                if expect_key && in_object {
                    sink.name(Src::Json, name.as_bytes(), text);
                    if name.len() < MAX_NAME {
                        if name.len() > ROOT.len() {
                            name.push('.');
                        }
                        match std::str::from_utf8(text) {
                            Ok(t) => name.push_str(t),
                            Err(_) => name.push_str(&String::from_utf8_lossy(text)),
                        }
                    }
                    expect_key = false;
                } else if expect_key {
                    // A key below the depth limit: still a name worth checking.
                    sink.name(Src::Json, name.as_bytes(), text);
                    expect_key = false;
                } else if !sink.value(Src::Json, name.as_bytes(), text) {
                    walk.limited = true;
                    return walk;
                }
            }
            _ => {
                // Numbers, true, false, null: nothing to inspect.
                let start = i;
                while i < n
                    && !matches!(
                        body[i],
                        b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n' | b':'
                    )
                {
                    i += 1;
                }
                let lit = &body[start..i];
                let ok = matches!(lit, b"true" | b"false" | b"null")
                    || lit.iter().all(|c| {
                        c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E')
                    });
                if !ok {
                    walk.error = true;
                    return walk;
                }
            }
        }
    }
    if !stack.is_empty() || overflow > 0 {
        walk.error = true;
    }
    walk
}

/// Unescape the string starting after its opening quote into `out`; returns the index
/// after the closing quote.
fn string(b: &[u8], mut i: usize, out: &mut Vec<u8>) -> Option<usize> {
    out.clear();
    loop {
        // Copy the run up to the next quote or backslash at once.
        let rest = b.get(i..)?;
        let j = memchr::memchr2(b'"', b'\\', rest)?;
        out.extend_from_slice(&rest[..j]);
        i += j;
        if b[i] == b'"' {
            return Some(i + 1);
        }
        let e = *b.get(i + 1)?;
        i += 2;
        match e {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'u' => {
                let cp = hex4(b.get(i..i + 4)?)?;
                i += 4;
                let cp = if (0xD800..0xDC00).contains(&cp)
                    && b.get(i) == Some(&b'\\')
                    && b.get(i + 1) == Some(&b'u')
                {
                    match b.get(i + 2..i + 6).and_then(hex4) {
                        Some(lo) if (0xDC00..0xE000).contains(&lo) => {
                            i += 6;
                            0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00)
                        }
                        _ => cp,
                    }
                } else {
                    cp
                };
                let ch = char::from_u32(cp).unwrap_or('\u{FFFD}');
                let mut tmp = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut tmp).as_bytes());
            }
            other => out.push(other),
        }
    }
}

fn hex4(h: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(h).ok()?;
    u32::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[derive(Default)]
    struct Collect(Vec<(String, String, bool)>);
    impl Sink for Collect {
        fn name(&mut self, _: Src, name: &[u8], key: &[u8]) {
            self.0.push((
                String::from_utf8_lossy(name).into(),
                String::from_utf8_lossy(key).into(),
                true,
            ));
        }
        fn value(&mut self, _: Src, name: &[u8], v: &[u8]) -> bool {
            self.0.push((
                String::from_utf8_lossy(name).into(),
                String::from_utf8_lossy(v).into(),
                false,
            ));
            true
        }
    }

    fn run(s: &str) -> (Vec<(String, String, bool)>, Walk) {
        let mut c = Collect::default();
        let w = walk(s.as_bytes(), &mut BodyBufs::default(), &mut c);
        (c.0, w)
    }

    #[test]
    fn paths_keys_and_values() {
        let (got, w) =
            run(r#"{"user":{"address":[{"street":"Main \u0027St"}, "x"]},"n":1,"ok":true}"#);
        assert!(!w.error);
        let values: Vec<_> = got
            .iter()
            .filter(|g| !g.2)
            .map(|g| (g.0.as_str(), g.1.as_str()))
            .collect();
        assert_eq!(
            values,
            [
                ("json:user.address[0].street", "Main 'St"),
                ("json:user.address[1]", "x")
            ]
        );
        let keys: Vec<_> = got.iter().filter(|g| g.2).map(|g| g.1.as_str()).collect();
        assert_eq!(keys, ["user", "address", "street", "n", "ok"]);
    }

    #[test]
    fn top_level_string_and_errors() {
        let (got, w) = run(r#""hi""#);
        assert!(!w.error);
        assert_eq!(got[0].0, "json:");
        assert!(run(r#"{"a": nope}"#).1.error);
        assert!(run(r#"{"a": "x""#).1.error);
        assert!(run(r#"{"a": ["x"}"#).1.error);
    }

    #[test]
    fn deep_nesting_is_limited_not_recursed() {
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        let (_, w) = run(&deep);
        assert!(w.limited && !w.error);
        let deep = format!("{}\"$ne\"{}", "[".repeat(100_000), "]".repeat(100_000));
        let (got, _) = run(&deep);
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn surrogate_pairs() {
        let (got, _) = run(r#"["\ud83d\ude00"]"#);
        assert_eq!(got[0].1, "😀");
    }
}
