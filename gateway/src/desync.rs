//! HTTP/1 desync (request smuggling) classification, as ALB's desync mitigation
//! does it: every request head is put in one of four classes by how differently two
//! HTTP implementations could read its framing and target.
//!
//! - **Compliant**: RFC 9110/9112 compliant.
//! - **Acceptable**: not compliant, but no known way for two parsers to disagree on
//!   where it ends or what it asks (a `Content-Length` on a GET, a bare LF, obs-text).
//! - **Ambiguous**: parsers are known to disagree (`Content_Length`, duplicated equal
//!   `Content-Length`s, a body on a GET by chunks, a `Connection` header naming a framing
//!   header, no `Host`).
//! - **Severe**: a smuggling attempt or framing nobody can read safely (different
//!   `Content-Length`s, `Transfer-Encoding` with `Content-Length` or with a coding this
//!   gateway does not decode, chunked twice, CR or NUL inside a field, obs-fold).
//!
//! The input is the request head exactly as it arrived (request line and header
//! lines, to the blank line), so this module has no HTTP library in it: it can be
//! tested and fuzzed alone. It never panics and is linear in the head's length.

/// The classes, in increasing order of risk (the derived `Ord` is that order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    Compliant,
    Acceptable,
    Ambiguous,
    Severe,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Compliant => "compliant",
            Class::Acceptable => "acceptable",
            Class::Ambiguous => "ambiguous",
            Class::Severe => "severe",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "compliant" => Class::Compliant,
            "acceptable" => Class::Acceptable,
            "ambiguous" => Class::Ambiguous,
            "severe" => Class::Severe,
            _ => return None,
        })
    }
}

/// Why a request is in its class. Names follow ALB's classification reasons where
/// ALB has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    None,
    // Acceptable
    BareLf,
    EmptyHeader,
    NonCompliantHeader,
    NonCompliantUri,
    NonCompliantVersion,
    SpaceInUri,
    UndefinedContentLengthSemantics,
    // Ambiguous
    AmbiguousUri,
    DuplicateContentLength,
    HopByHopFraming,
    MissingHost,
    SuspiciousHeader,
    UndefinedTransferEncodingSemantics,
    // Severe
    BadContentLength,
    BadHeader,
    BadMethod,
    BadRequestLine,
    BadTransferEncoding,
    BadUri,
    BothTeClPresent,
    DuplicateHost,
    MultipleContentLength,
    MultipleTransferEncodingChunked,
    ObsFold,
    TransferEncodingHttp10,
    WhitespaceInHeaderName,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::None => "none",
            Reason::BareLf => "bare_lf",
            Reason::EmptyHeader => "empty_header",
            Reason::NonCompliantHeader => "non_compliant_header",
            Reason::NonCompliantUri => "non_compliant_uri",
            Reason::NonCompliantVersion => "non_compliant_version",
            Reason::SpaceInUri => "space_in_uri",
            Reason::UndefinedContentLengthSemantics => "undefined_content_length_semantics",
            Reason::AmbiguousUri => "ambiguous_uri",
            Reason::DuplicateContentLength => "duplicate_content_length",
            Reason::HopByHopFraming => "hop_by_hop_framing",
            Reason::MissingHost => "missing_host",
            Reason::SuspiciousHeader => "suspicious_header",
            Reason::UndefinedTransferEncodingSemantics => "undefined_transfer_encoding_semantics",
            Reason::BadContentLength => "bad_content_length",
            Reason::BadHeader => "bad_header",
            Reason::BadMethod => "bad_method",
            Reason::BadRequestLine => "bad_request_line",
            Reason::BadTransferEncoding => "bad_transfer_encoding",
            Reason::BadUri => "bad_uri",
            Reason::BothTeClPresent => "both_te_cl_present",
            Reason::DuplicateHost => "duplicate_host",
            Reason::MultipleContentLength => "multiple_content_length",
            Reason::MultipleTransferEncodingChunked => "multiple_transfer_encoding_chunked",
            Reason::ObsFold => "obs_fold",
            Reason::TransferEncodingHttp10 => "transfer_encoding_http10",
            Reason::WhitespaceInHeaderName => "whitespace_in_header_name",
        }
    }

    pub fn class(self) -> Class {
        use Reason::*;
        match self {
            None => Class::Compliant,
            BareLf
            | EmptyHeader
            | NonCompliantHeader
            | NonCompliantUri
            | NonCompliantVersion
            | SpaceInUri
            | UndefinedContentLengthSemantics => Class::Acceptable,
            AmbiguousUri
            | DuplicateContentLength
            | HopByHopFraming
            | MissingHost
            | SuspiciousHeader
            | UndefinedTransferEncodingSemantics => Class::Ambiguous,
            BadContentLength
            | BadHeader
            | BadMethod
            | BadRequestLine
            | BadTransferEncoding
            | BadUri
            | BothTeClPresent
            | DuplicateHost
            | MultipleContentLength
            | MultipleTransferEncodingChunked
            | ObsFold
            | TransferEncodingHttp10
            | WhitespaceInHeaderName => Class::Severe,
        }
    }
}

/// A request's class and the (first) reason for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classification {
    pub class: Class,
    pub reason: Reason,
}

impl Classification {
    fn note(&mut self, r: Reason) {
        if r.class() > self.class {
            self.class = r.class();
            self.reason = r;
        }
    }
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn trim(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

/// What the request's framing headers said, gathered over the lines.
#[derive(Default)]
struct Framing {
    content_lengths: Vec<u64>,
    te_headers: usize,
    chunked: usize,
    /// The last transfer coding named, lower-cased, was `chunked`.
    last_chunked: bool,
    hosts: usize,
}

/// Classify one HTTP/1 request head (from the request line through the blank line;
/// anything after it is ignored).
pub fn classify(head: &[u8]) -> Classification {
    let mut c = Classification {
        class: Class::Compliant,
        reason: Reason::None,
    };
    let mut lines = Lines { rest: head };
    // RFC 9112 2.2: a server SHOULD ignore at least one empty line before the request.
    let request_line = loop {
        match lines.next(&mut c) {
            Some([]) => continue,
            Some(l) => break l,
            None => {
                c.note(Reason::BadRequestLine);
                return c;
            }
        }
    };
    let (method, version) = request_line_parts(request_line, &mut c);
    let mut f = Framing::default();
    let mut previous_was_header = false;
    while let Some(line) = lines.next(&mut c) {
        if line.is_empty() {
            break;
        }
        if matches!(line[0], b' ' | b'\t') {
            if trim(line).is_empty() {
                c.note(Reason::EmptyHeader);
            } else if previous_was_header {
                // RFC 9112 5.2: obsolete line folding; a server MUST reject it (or
                // unfold), and a folded framing header is how smuggling starts.
                c.note(Reason::ObsFold);
            } else {
                c.note(Reason::BadHeader);
            }
            continue;
        }
        previous_was_header = true;
        header_line(line, &mut f, &mut c);
    }
    framing_rules(method, version, &f, &mut c);
    c
}

/// Splits on LF, noting CR that does not end a line (severe) and bare LF (acceptable).
struct Lines<'a> {
    rest: &'a [u8],
}

impl<'a> Lines<'a> {
    fn next(&mut self, c: &mut Classification) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let (line, rest) = match self.rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&self.rest[..i], &self.rest[i + 1..]),
            None => (self.rest, &[][..]),
        };
        self.rest = rest;
        let line = match line.split_last() {
            Some((b'\r', l)) => l,
            _ => {
                c.note(Reason::BareLf);
                line
            }
        };
        Some(line)
    }
}

/// `METHOD SP TARGET SP VERSION`: returns the method and the version's minor digit.
fn request_line_parts<'a>(line: &'a [u8], c: &mut Classification) -> (&'a [u8], Option<u8>) {
    let Some(sp1) = line.iter().position(|&b| b == b' ') else {
        c.note(Reason::BadRequestLine);
        return (line, None);
    };
    let method = &line[..sp1];
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        c.note(Reason::BadMethod);
    }
    let rest = &line[sp1 + 1..];
    let Some(sp2) = rest.iter().rposition(|&b| b == b' ') else {
        c.note(Reason::BadRequestLine);
        return (method, None);
    };
    let (target, version) = (&rest[..sp2], &rest[sp2 + 1..]);
    // origin-form (`/path`), absolute-form (`http://host/path`), asterisk-form
    // (`OPTIONS *`) or authority-form (`CONNECT host:port`): anything else is read
    // differently by every server.
    let form_ok = match target.first() {
        Some(b'/') => true,
        Some(b'*') => target == b"*" && method == b"OPTIONS",
        Some(_) => method == b"CONNECT" || contains(target, b"://"),
        None => false,
    };
    if !form_ok {
        c.note(Reason::BadUri);
    }
    for &b in target {
        match b {
            0 | b'\r' => c.note(Reason::BadUri),
            b' ' => c.note(Reason::SpaceInUri),
            b'\t' | 0x01..=0x1f | 0x7f => c.note(Reason::AmbiguousUri),
            b'#' | 0x80..=0xff | b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}' => {
                c.note(Reason::NonCompliantUri)
            }
            _ => {}
        }
    }
    let minor = match version {
        b"HTTP/1.1" => Some(1),
        b"HTTP/1.0" => Some(0),
        v if v.starts_with(b"HTTP/") => {
            c.note(Reason::NonCompliantVersion);
            None
        }
        _ => {
            c.note(Reason::BadRequestLine);
            None
        }
    };
    (method, minor)
}

/// The header name, with what it would become where `_` or other punctuation is
/// read as `-` and case is folded: `content_length`, `Content-Length\x0b`.
fn looks_like(name: &[u8], target: &[u8]) -> bool {
    let mut it = name.iter().filter(|b| b.is_ascii_alphanumeric());
    target
        .iter()
        .filter(|b| b.is_ascii_alphanumeric())
        .all(|t| it.next().is_some_and(|n| n.eq_ignore_ascii_case(t)))
        && it.next().is_none()
}

fn header_line(line: &[u8], f: &mut Framing, c: &mut Classification) {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        c.note(Reason::BadHeader);
        return;
    };
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if name.is_empty() {
        c.note(Reason::BadHeader);
        return;
    }
    if name.iter().any(|&b| b == b' ' || b == b'\t') {
        // RFC 9112 5.1: a server MUST reject whitespace between name and colon.
        c.note(Reason::WhitespaceInHeaderName);
        return;
    }
    for &b in value {
        match b {
            0 | b'\r' => c.note(Reason::BadHeader),
            b'\t' => {}
            0x01..=0x1f | 0x7f | 0x80..=0xff => c.note(Reason::NonCompliantHeader),
            _ => {}
        }
    }
    let value = trim(value);
    let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
    if is(b"content-length") {
        content_length(value, f, c);
    } else if is(b"transfer-encoding") {
        transfer_encoding(value, f, c);
    } else if is(b"host") {
        f.hosts += 1;
    } else if is(b"connection") {
        // A proxy drops the headers `Connection` names before forwarding: naming a
        // framing header reframes the request for the next hop.
        let framing = value.split(|&b| b == b',').any(|t| {
            let t = trim(t);
            t.eq_ignore_ascii_case(b"content-length")
                || t.eq_ignore_ascii_case(b"transfer-encoding")
                || t.eq_ignore_ascii_case(b"host")
        });
        if framing {
            c.note(Reason::HopByHopFraming);
        }
    } else if looks_like(name, b"content-length") || looks_like(name, b"transfer-encoding") {
        c.note(Reason::SuspiciousHeader);
    }
    if !name.iter().all(|&b| is_tchar(b)) {
        c.note(Reason::NonCompliantHeader);
    }
}

fn content_length(value: &[u8], f: &mut Framing, c: &mut Classification) {
    for part in value.split(|&b| b == b',') {
        let part = trim(part);
        // 1*DIGIT, and small enough to mean something: no sign, no spaces, no hex.
        if part.is_empty() || part.len() > 18 || !part.iter().all(u8::is_ascii_digit) {
            c.note(Reason::BadContentLength);
            continue;
        }
        let n = part.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        f.content_lengths.push(n);
    }
}

fn transfer_encoding(value: &[u8], f: &mut Framing, c: &mut Classification) {
    f.te_headers += 1;
    let mut any = false;
    for coding in value.split(|&b| b == b',') {
        let coding = trim(coding);
        if coding.is_empty() {
            continue; // empty list elements are allowed (RFC 9110 5.6.1)
        }
        any = true;
        if coding.eq_ignore_ascii_case(b"chunked") {
            f.chunked += 1;
            f.last_chunked = true;
        } else {
            // gzip, deflate, compress, identity, or anything else: this gateway
            // decodes only chunked, and a coding it cannot remove is framing it
            // cannot vouch for (RFC 9112 6.1: 501 would also be allowed).
            c.note(Reason::BadTransferEncoding);
            f.last_chunked = false;
        }
    }
    if !any {
        c.note(Reason::BadTransferEncoding);
    }
}

fn framing_rules(method: &[u8], minor: Option<u8>, f: &Framing, c: &mut Classification) {
    let te = f.te_headers > 0;
    let bodiless = matches!(method, b"GET" | b"HEAD" | b"TRACE");
    if te {
        if !f.content_lengths.is_empty() {
            // ALB calls this Ambiguous; RFC 9112 6.1 lets a server refuse it, and the
            // classic CL.TE / TE.CL attacks are exactly this: refused here.
            c.note(Reason::BothTeClPresent);
        }
        if f.chunked > 1 {
            c.note(Reason::MultipleTransferEncodingChunked);
        }
        if !f.last_chunked {
            c.note(Reason::BadTransferEncoding);
        }
        if minor == Some(0) {
            c.note(Reason::TransferEncodingHttp10);
        }
        if bodiless {
            c.note(Reason::UndefinedTransferEncodingSemantics);
        }
    }
    if let Some((first, rest)) = f.content_lengths.split_first() {
        if rest.iter().any(|n| n != first) {
            c.note(Reason::MultipleContentLength);
        } else if !rest.is_empty() {
            c.note(Reason::DuplicateContentLength);
        }
        if bodiless && *first > 0 {
            c.note(Reason::UndefinedContentLengthSemantics);
        }
    }
    match f.hosts {
        0 if minor == Some(1) => c.note(Reason::MissingHost),
        0 | 1 => {}
        _ => c.note(Reason::DuplicateHost),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(raw: &str) -> (Class, &'static str) {
        let c = classify(raw.as_bytes());
        (c.class, c.reason.as_str())
    }

    #[test]
    fn a_plain_request_is_compliant() {
        assert_eq!(
            class("GET /a?b=c HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n"),
            (Class::Compliant, "none")
        );
        assert_eq!(
            class("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"),
            (Class::Compliant, "none")
        );
        assert_eq!(
            class("POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"),
            (Class::Compliant, "none")
        );
        assert_eq!(
            class("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
            (Class::Compliant, "none")
        );
    }

    #[test]
    fn the_worst_reason_wins() {
        assert_eq!(
            class("GET / HTTP/1.1\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            (Class::Severe, "multiple_content_length")
        );
    }

    #[test]
    fn smuggling_classics_are_severe() {
        for raw in [
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nX: a\r\n chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n",
            "GET /a\0b HTTP/1.1\r\nHost: x\r\n\r\n",
            "G(T / HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n",
            "GARBAGE\r\n\r\n",
        ] {
            assert_eq!(classify(raw.as_bytes()).class, Class::Severe, "{raw:?}");
        }
    }

    #[test]
    fn ambiguous_and_acceptable() {
        assert_eq!(
            class("POST / HTTP/1.1\r\nHost: x\r\nContent_Length: 5\r\n\r\n"),
            (Class::Ambiguous, "suspicious_header")
        );
        assert_eq!(
            class("POST / HTTP/1.1\r\nHost: x\r\ntransfer_encoding: chunked\r\n\r\n"),
            (Class::Ambiguous, "suspicious_header")
        );
        assert_eq!(
            class("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"),
            (Class::Ambiguous, "duplicate_content_length")
        );
        assert_eq!(
            class("GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"),
            (Class::Ambiguous, "undefined_transfer_encoding_semantics")
        );
        assert_eq!(
            class("GET / HTTP/1.1\r\nHost: x\r\nConnection: close, Content-Length\r\n\r\n"),
            (Class::Ambiguous, "hop_by_hop_framing")
        );
        assert_eq!(
            class("GET / HTTP/1.1\r\n\r\n"),
            (Class::Ambiguous, "missing_host")
        );
        assert_eq!(class("GET / HTTP/1.0\r\n\r\n"), (Class::Compliant, "none"));
        assert_eq!(
            class("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"),
            (Class::Acceptable, "undefined_content_length_semantics")
        );
        assert_eq!(
            class("GET / HTTP/1.1\nHost: x\n\n"),
            (Class::Acceptable, "bare_lf")
        );
        assert_eq!(
            class("GET / HTTP/1.1\r\nHost: x\r\nX-Name: Ren\u{e9}e\r\n\r\n"),
            (Class::Acceptable, "non_compliant_header")
        );
        assert_eq!(
            class("GET /a#frag HTTP/1.1\r\nHost: x\r\n\r\n"),
            (Class::Acceptable, "non_compliant_uri")
        );
    }

    #[test]
    fn lookalike_names_are_spotted_and_others_are_not() {
        assert!(looks_like(b"Content_Length", b"content-length"));
        assert!(looks_like(b"CONTENT.LENGTH", b"content-length"));
        assert!(!looks_like(b"Content-Lengths", b"content-length"));
        assert!(!looks_like(b"X-Content-Length", b"content-length"));
    }

    #[test]
    fn any_bytes_are_classified_without_panicking() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..2000 {
            let bytes: Vec<u8> = (0..len % 97)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    b"GET /HTP1.:\r\n \tchunkedContent-Length0123,\0"[(seed % 42) as usize]
                })
                .collect();
            let _ = classify(&bytes);
        }
    }
}
