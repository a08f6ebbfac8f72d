//! Undo what attackers encode, into reusable buffers.
//!
//! One value goes through: up to [`URL_ROUNDS`] rounds of URL decoding (`%XX`,
//! `%uXXXX`, `+` as space where the value came from a query or form), JavaScript
//! escapes (`\x3c`, `\u003c`), HTML entities (named and numeric, with or without `;`),
//! NUL removal, Unicode NFKC (folds fullwidth and other compatibility forms) when not
//! ASCII, and lower case: the *norm* view. From it, views some groups need: *sql*
//! (comments `/**/` as spaces), *shell* (quotes and backslashes inside words dropped,
//! `$IFS` as a space) and *path* (backslashes as slashes, `//` and `/./` collapsed).
//! Every step is linear in its input and writes into [`NormBufs`], so a warm buffer set
//! allocates nothing.

use unicode_normalization::UnicodeNormalization;

/// Whether `s` has the byte pair `a b` (cheaper than a substring search on the short
/// values this engine sees).
pub(crate) fn has_pair(s: &[u8], a: u8, b: u8) -> bool {
    memchr::memchr_iter(a, s).any(|i| s.get(i + 1) == Some(&b))
}

/// Rounds of URL decoding: enough for double and triple encoding, bounded so a megabyte
/// of `%25` costs three linear passes.
pub const URL_ROUNDS: usize = 3;

/// Buffers for one value's views. Kept in [`crate::Scratch`].
#[derive(Debug, Default)]
pub struct NormBufs {
    a: Vec<u8>,
    b: Vec<u8>,
    /// Lower-cased, fully decoded text.
    pub norm: String,
    /// `norm` with SQL comments as spaces (`None`: same as `norm`).
    pub sql: String,
    /// `norm` with shell evasions undone.
    pub shell: String,
    /// `norm` as a path.
    pub path: String,
    /// Whether the views other than `norm` differ from it.
    pub has_sql: bool,
    /// See `has_sql`.
    pub has_shell: bool,
    /// See `has_sql`.
    pub has_path: bool,
    /// The decoded bytes were not UTF-8.
    pub invalid_utf8: bool,
    /// The decoded bytes held a NUL.
    pub had_nul: bool,
}

/// True for values that no rule can match after decoding: letters, digits, `_-.`,
/// except the few such words that are attacks (`__proto__`, `__class__`,
/// `class.module.classLoader`). Most clean values (ids, numbers, tokens, dates) take
/// this path.
pub fn is_plain(v: &[u8]) -> bool {
    const fn table() -> [bool; 256] {
        let mut t = [false; 256];
        let mut c = 0;
        while c < 256 {
            let b = c as u8;
            t[c] = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.';
            c += 1;
        }
        t
    }
    static PLAIN: [bool; 256] = table();
    let mut prev_underscore = false;
    let mut dot = false;
    for &c in v {
        if !PLAIN[c as usize] {
            return false;
        }
        if c == b'_' {
            if prev_underscore {
                return false;
            }
            prev_underscore = true;
        } else {
            prev_underscore = false;
            dot |= c == b'.';
        }
    }
    !(dot && v.windows(5).any(|w| w.eq_ignore_ascii_case(b"class")))
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn push_char(dst: &mut Vec<u8>, cp: u32) {
    let c = char::from_u32(cp).unwrap_or('\u{FFFD}');
    let mut tmp = [0u8; 4];
    dst.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
}

/// One round of URL decoding of `src` into `dst` (cleared). Returns whether anything
/// was decoded.
pub fn url_decode(src: &[u8], dst: &mut Vec<u8>, plus_space: bool) -> bool {
    dst.clear();
    dst.reserve(src.len());
    let mut changed = false;
    let mut i = 0;
    while i < src.len() {
        let c = src[i];
        if c == b'%' {
            if let (Some(h), Some(l)) = (
                src.get(i + 1).copied().and_then(hex),
                src.get(i + 2).copied().and_then(hex),
            ) {
                dst.push(h << 4 | l);
                i += 3;
                changed = true;
                continue;
            }
            if matches!(src.get(i + 1), Some(b'u' | b'U')) {
                let digits = src.get(i + 2..i + 6).unwrap_or(&[]);
                if digits.len() == 4 && digits.iter().all(|&d| hex(d).is_some()) {
                    let cp = digits
                        .iter()
                        .fold(0u32, |acc, &d| acc << 4 | u32::from(hex(d).unwrap_or(0)));
                    push_char(dst, cp);
                    i += 6;
                    changed = true;
                    continue;
                }
            }
        } else if c == b'+' && plus_space {
            dst.push(b' ');
            i += 1;
            changed = true;
            continue;
        }
        dst.push(c);
        i += 1;
    }
    changed
}

/// Decode JavaScript escapes `\xHH`, `\uHHHH` and `\u{H..}` of `src` into `dst`
/// (cleared); other backslashes stay (Windows paths, shell escapes). Returns whether
/// anything changed.
pub fn js_decode(src: &[u8], dst: &mut Vec<u8>) -> bool {
    dst.clear();
    dst.reserve(src.len());
    let mut changed = false;
    let mut i = 0;
    while i < src.len() {
        if src[i] == b'\\' {
            let hexes = |from: usize, n: usize| -> Option<u32> {
                let d = src.get(from..from + n)?;
                d.iter()
                    .try_fold(0u32, |acc, &c| hex(c).map(|v| acc << 4 | u32::from(v)))
            };
            match src.get(i + 1) {
                Some(b'x') => {
                    if let Some(cp) = hexes(i + 2, 2) {
                        push_char(dst, cp);
                        i += 4;
                        changed = true;
                        continue;
                    }
                }
                Some(b'u') if src.get(i + 2) == Some(&b'{') => {
                    let end = src[i + 3..].iter().take(7).position(|&c| c == b'}');
                    if let Some(n) = end.filter(|n| (1..=6).contains(n)) {
                        if let Some(cp) = hexes(i + 3, n) {
                            push_char(dst, cp);
                            i += 4 + n;
                            changed = true;
                            continue;
                        }
                    }
                }
                Some(b'u') => {
                    if let Some(cp) = hexes(i + 2, 4) {
                        push_char(dst, cp);
                        i += 6;
                        changed = true;
                        continue;
                    }
                }
                _ => {}
            }
        }
        dst.push(src[i]);
        i += 1;
    }
    changed
}

const ENTITIES: &[(&str, char)] = &[
    ("lt", '<'),
    ("gt", '>'),
    ("amp", '&'),
    ("quot", '"'),
    ("apos", '\''),
    ("nbsp", ' '),
    ("colon", ':'),
    ("semi", ';'),
    ("tab", '\t'),
    ("newline", '\n'),
    ("lpar", '('),
    ("rpar", ')'),
    ("sol", '/'),
    ("bsol", '\\'),
    ("comma", ','),
    ("period", '.'),
    ("excl", '!'),
    ("num", '#'),
    ("dollar", '$'),
    ("percnt", '%'),
    ("equals", '='),
    ("plus", '+'),
    ("grave", '`'),
    ("lsqb", '['),
    ("rsqb", ']'),
    ("lcub", '{'),
    ("rcub", '}'),
    ("lbrace", '{'),
    ("rbrace", '}'),
    ("verbar", '|'),
    ("ast", '*'),
    ("quest", '?'),
    ("commat", '@'),
];

/// Decode HTML entities of `src` into `dst` (cleared). Returns whether anything changed.
pub fn html_decode(src: &[u8], dst: &mut Vec<u8>) -> bool {
    dst.clear();
    dst.reserve(src.len());
    let mut changed = false;
    let mut i = 0;
    while i < src.len() {
        if src[i] == b'&' {
            if let Some((ch, used)) = entity_at(&src[i + 1..]) {
                push_char(dst, ch);
                i += 1 + used;
                changed = true;
                continue;
            }
        }
        dst.push(src[i]);
        i += 1;
    }
    changed
}

/// The entity after a `&`: its code point and the bytes it used (with the `;` if any).
fn entity_at(s: &[u8]) -> Option<(u32, usize)> {
    if s.first() == Some(&b'#') {
        let (radix, start) = match s.get(1) {
            Some(b'x' | b'X') => (16, 2),
            _ => (10, 1),
        };
        let mut cp: u32 = 0;
        let mut n = start;
        // Leading zeros are a known padding trick: accept any number, cap the value.
        while let Some(&d) = s.get(n) {
            let v = match (radix, d) {
                (16, _) => hex(d).map(u32::from),
                (_, b'0'..=b'9') => Some(u32::from(d - b'0')),
                _ => None,
            };
            let Some(v) = v else { break };
            cp = cp.saturating_mul(radix).saturating_add(v).min(0x11_0000);
            n += 1;
            if n > 40 {
                break;
            }
        }
        if n == start {
            return None;
        }
        if s.get(n) == Some(&b';') {
            n += 1;
        }
        return Some((cp, n));
    }
    let end = s
        .iter()
        .take(9)
        .position(|c| !c.is_ascii_alphabetic())
        .unwrap_or(s.len().min(9));
    let name = &s[..end];
    for (ent, ch) in ENTITIES {
        if name.eq_ignore_ascii_case(ent.as_bytes()) {
            let used = if s.get(end) == Some(&b';') {
                end + 1
            } else {
                end
            };
            return Some((*ch as u32, used));
        }
    }
    None
}

/// Fill `bufs` with every view of `raw`. `plus_space`: `+` means a space (query, form).
pub fn normalise(raw: &[u8], plus_space: bool, bufs: &mut NormBufs) {
    let NormBufs {
        a,
        b,
        norm,
        sql,
        shell,
        path,
        has_sql,
        has_shell,
        has_path,
        invalid_utf8,
        had_nul,
    } = bufs;
    a.clear();
    a.extend_from_slice(raw);
    // Only the first round turns `+` into a space: a `%2B` decoded later was meant as `+`.
    let mut plus = plus_space;
    for _ in 0..URL_ROUNDS {
        if !(a.contains(&b'%') || plus && a.contains(&b'+')) {
            break;
        }
        if !url_decode(a, b, plus) {
            break;
        }
        std::mem::swap(a, b);
        plus = false;
    }
    if (has_pair(a, b'\\', b'x') || has_pair(a, b'\\', b'u')) && js_decode(a, b) {
        std::mem::swap(a, b);
    }
    if a.contains(&b'&') && html_decode(a, b) {
        std::mem::swap(a, b);
        // Entities hiding percent escapes (`&#37;3C`): one more URL round.
        if a.contains(&b'%') && url_decode(a, b, false) {
            std::mem::swap(a, b);
        }
    }
    *had_nul = a.contains(&0);
    if *had_nul {
        a.retain(|&c| c != 0);
    }
    norm.clear();
    let text = match std::str::from_utf8(a) {
        Ok(t) => {
            *invalid_utf8 = false;
            t
        }
        Err(_) => {
            *invalid_utf8 = true;
            // Keep the ASCII an attacker hides between invalid bytes, and read
            // overlong encodings (`%c0%af` is `/`) as the ASCII they spell.
            b.clear();
            let mut i = 0;
            while i < a.len() {
                let c = a[i];
                let next = a.get(i + 1).copied().unwrap_or(0);
                if (c == 0xC0 || c == 0xC1) && next & 0xC0 == 0x80 {
                    b.push(((c & 0x1F) << 6) | (next & 0x3F));
                    i += 2;
                    continue;
                }
                if c == 0xE0 && next == 0x80 && a.get(i + 2).is_some_and(|t| t & 0xC0 == 0x80) {
                    b.push(a[i + 2] & 0x3F);
                    i += 3;
                    continue;
                }
                b.push(if c < 0x80 { c } else { b' ' });
                i += 1;
            }
            std::str::from_utf8(b).unwrap_or("")
        }
    };
    if text.is_ascii() {
        norm.push_str(text);
        norm.make_ascii_lowercase();
    } else {
        for c in text.nfkc() {
            // Look-alikes NFKC leaves: set minus and division slash as separators.
            let c = match c {
                '\u{2216}' | '\u{29F5}' | '\u{29F9}' => '\\',
                '\u{2215}' | '\u{2044}' | '\u{29F8}' => '/',
                c => c,
            };
            for l in c.to_lowercase() {
                norm.push(l);
            }
        }
    }
    // A view that came out the same as `norm` is not scanned again.
    *has_sql = sql_view(norm, sql) && sql != norm;
    *has_shell = shell_view(norm, shell) && shell != norm;
    *has_path = path_view(norm, path) && path != norm;
}

/// `/* ... */` as a space; MySQL's executable comments `/*!50000 ... */` keep their
/// content. `--` and `#` comments are left: libinjection reads them itself.
fn sql_view(norm: &str, out: &mut String) -> bool {
    out.clear();
    if !has_pair(norm.as_bytes(), b'/', b'*') {
        return false;
    }
    let mut rest = norm;
    while let Some(start) = rest.find("/*") {
        out.push_str(&rest[..start]);
        out.push(' ');
        let after = &rest[start + 2..];
        let Some(end) = after.find("*/") else {
            rest = "";
            break;
        };
        if let Some(body) = after[..end].strip_prefix('!') {
            out.push_str(body.trim_start_matches(|c: char| c.is_ascii_digit()));
            out.push(' ');
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    true
}

/// Shell evasions: `c'a't`, `c"a"t`, `c\at` drop the quote or backslash; `$IFS`,
/// `${IFS}`, `$IFS$9` and brace lists `{cat,/etc/passwd}` become spaces; `$@`, `$*`
/// and empty `''` vanish.
fn shell_view(norm: &str, out: &mut String) -> bool {
    out.clear();
    if !norm
        .bytes()
        .any(|c| matches!(c, b'\'' | b'"' | b'\\' | b'$' | b'{' | b'^'))
    {
        return false;
    }
    let s = norm.as_bytes();
    let mut i = 0;
    while i < s.len() {
        let rest = &s[i..];
        if rest.starts_with(b"${ifs}") {
            out.push(' ');
            i += 6;
        } else if rest.starts_with(b"$ifs") {
            out.push(' ');
            i += 4;
        } else if rest.len() >= 2
            && rest[0] == b'$'
            && (rest[1].is_ascii_digit() || rest[1] == b'@' || rest[1] == b'*')
        {
            i += 2;
        } else {
            match rest[0] {
                // `^` is cmd.exe's escape character (`c^a^l^c`).
                b'\'' | b'"' | b'\\' | b'^' => {}
                b'{' | b'}' | b',' => out.push(' '),
                _ => {
                    // Push the whole char (may be multi-byte).
                    let ch_len = utf8_len(rest[0]);
                    if let Some(chunk) = norm.get(i..i + ch_len) {
                        out.push_str(chunk);
                    }
                    i += ch_len;
                    continue;
                }
            }
            i += 1;
        }
    }
    true
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// Backslashes as slashes, runs of `/` as one, `/./` removed. `../` stays: it is what
/// the traversal rules look for.
fn path_view(norm: &str, out: &mut String) -> bool {
    out.clear();
    if !norm.contains(['\\', '/']) {
        return false;
    }
    let mut prev_slash = false;
    for c in norm.chars() {
        let c = if c == '\\' { '/' } else { c };
        if c == '/' {
            if prev_slash {
                continue;
            }
            prev_slash = true;
            out.push('/');
            if out.ends_with("/./") {
                out.truncate(out.len() - 2);
            }
        } else {
            prev_slash = false;
            out.push(c);
        }
    }
    if out.ends_with("/.") {
        out.pop();
    }
    true
}

#[cfg(test)]
mod tests;

/// The path as routing sees it: percent-decoded once, backslashes as slashes, `//`,
/// `.` and `..` segments resolved. Custom rules and exclusions match on this.
pub fn clean_path(raw: &[u8], out: &mut String) {
    let mut buf = Vec::new();
    let p: &[u8] = if url_decode(raw, &mut buf, false) {
        &buf
    } else {
        raw
    };
    let text = String::from_utf8_lossy(p);
    out.clear();
    out.push('/');
    for seg in text.split(['/', '\\']) {
        match seg {
            "" | "." => {}
            ".." => {
                let cut = out.trim_end_matches('/').rfind('/').unwrap_or(0);
                out.truncate(cut + 1);
            }
            s => {
                if !out.ends_with('/') {
                    out.push('/');
                }
                out.push_str(s);
            }
        }
    }
    if (text.ends_with('/') || text.ends_with("/.")) && !out.ends_with('/') {
        out.push('/');
    }
}
