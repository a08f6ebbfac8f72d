//! `multipart/form-data`: field names, values and file names. The contents of
//! uploaded files are inspected only when they are XML or SVG (their DTD is XXE): a
//! script, a CSV or an image someone uploads is data, not an attack on this server.

use memchr::memmem;

use super::{Sink, Src, Walk};
use crate::request::ct_param;

/// Parts beyond this are not inspected.
const MAX_PARTS: usize = 1000;

pub(crate) fn walk(body: &[u8], ct_params: &[u8], sink: &mut dyn Sink) -> Walk {
    let mut walk = Walk::default();
    let Some(boundary) =
        ct_param(ct_params, "boundary").filter(|b| !b.is_empty() && b.len() <= 200)
    else {
        walk.error = true;
        return walk;
    };
    let mut delim = Vec::with_capacity(boundary.len() + 2);
    delim.extend_from_slice(b"--");
    delim.extend_from_slice(boundary);
    let finder = memmem::Finder::new(&delim);
    let mut starts = finder.find_iter(body);
    let Some(mut prev) = starts.next() else {
        walk.error = true;
        return walk;
    };
    let mut parts = 0;
    loop {
        let part_start = prev + delim.len();
        if body.get(part_start..part_start + 2) == Some(b"--") {
            return walk;
        }
        let next = starts.next();
        let part_end = next.unwrap_or(body.len());
        let part = body.get(part_start..part_end).unwrap_or(&[]);
        parts += 1;
        if parts > MAX_PARTS {
            walk.limited = true;
            return walk;
        }
        if !one_part(part, sink) {
            walk.limited = true;
            return walk;
        }
        match next {
            Some(n) => prev = n,
            // No closing delimiter: a truncated body or a malformed one.
            None => return walk,
        }
    }
}

/// Returns false to stop.
fn one_part(part: &[u8], sink: &mut dyn Sink) -> bool {
    let part = part
        .strip_prefix(b"\r\n")
        .or_else(|| part.strip_prefix(b"\n"))
        .unwrap_or(part);
    let (head, content) = match memmem::find(part, b"\r\n\r\n") {
        Some(i) => (&part[..i], &part[i + 4..]),
        None => match memmem::find(part, b"\n\n") {
            Some(i) => (&part[..i], &part[i + 2..]),
            None => (part, &b""[..]),
        },
    };
    let content = content
        .strip_suffix(b"\r\n")
        .or_else(|| content.strip_suffix(b"\n"))
        .unwrap_or(content);
    let mut name: &[u8] = b"";
    let mut filename: Option<&[u8]> = None;
    let mut xml = false;
    for line in head.split(|&c| c == b'\n') {
        let line = line.trim_ascii();
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let (h, v) = (line[..colon].trim_ascii(), &line[colon + 1..]);
        if h.eq_ignore_ascii_case(b"content-disposition") {
            let params = match memchr::memchr(b';', v) {
                Some(i) => &v[i + 1..],
                None => &b""[..],
            };
            name = ct_param(params, "name").unwrap_or(b"");
            filename = ct_param(params, "filename");
        } else if h.eq_ignore_ascii_case(b"content-type") {
            let t = v.trim_ascii();
            xml = contains_ci(t, b"xml") || contains_ci(t, b"svg");
        }
    }
    sink.name(Src::Multipart, name, name);
    if let Some(f) = filename {
        if !sink.value(Src::MultipartFile, name, f) {
            return false;
        }
    }
    // Fields are read; uploaded files are not (a script or a CSV someone uploads is
    // not an attack on this server), except XML and SVG, which a parser will read:
    // their DTD is XXE. Executable file names are checked above.
    let xml = xml
        || content.trim_ascii_start().starts_with(b"<?xml")
        || content.trim_ascii_start().starts_with(b"<!DOCTYPE");
    if filename.is_none() || xml {
        return sink.value(Src::Multipart, name, content);
    }
    true
}

fn contains_ci(h: &[u8], needle: &[u8]) -> bool {
    h.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[derive(Default)]
    struct Collect(Vec<(Src, String, String)>);
    impl Sink for Collect {
        fn name(&mut self, _: Src, _: &[u8], _: &[u8]) {}
        fn value(&mut self, src: Src, name: &[u8], v: &[u8]) -> bool {
            self.0.push((
                src,
                String::from_utf8_lossy(name).into(),
                String::from_utf8_lossy(v).into(),
            ));
            true
        }
    }

    #[test]
    fn fields_and_files() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhello world\r\n--XyZ\r\nContent-Disposition: form-data; name=\"avatar\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG<?php\r\n--XyZ\r\nContent-Disposition: form-data; name=\"notes\"; filename=\"n.txt\"\r\nContent-Type: text/plain\r\n\r\nsome text\r\n--XyZ--\r\n";
        let mut c = Collect::default();
        let w = walk(body, b" boundary=XyZ", &mut c);
        assert!(!w.error);
        let got: Vec<_> =
            c.0.iter()
                .map(|(s, n, v)| (*s, n.as_str(), v.as_str()))
                .collect();
        assert_eq!(
            got,
            [
                (Src::Multipart, "title", "hello world"),
                (Src::MultipartFile, "avatar", "a.png"),
                (Src::MultipartFile, "notes", "n.txt"),
            ]
        );
    }

    #[test]
    fn xml_and_svg_files_are_read() {
        let body = b"--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.svg\"\r\nContent-Type: image/svg+xml\r\n\r\n<svg/>\r\n--b\r\nContent-Disposition: form-data; name=\"g\"; filename=\"x.bin\"\r\n\r\n<?xml version=\"1.0\"?><a/>\r\n--b--";
        let mut c = Collect::default();
        walk(body, b"boundary=b", &mut c);
        let contents: Vec<_> =
            c.0.iter()
                .filter(|x| x.0 == Src::Multipart)
                .map(|x| x.2.as_str())
                .collect();
        assert_eq!(contents, ["<svg/>", "<?xml version=\"1.0\"?><a/>"]);
    }

    #[test]
    fn missing_boundary_is_an_error() {
        assert!(walk(b"abc", b"", &mut Collect::default()).error);
        assert!(walk(b"abc", b"boundary=zz", &mut Collect::default()).error);
    }
}
