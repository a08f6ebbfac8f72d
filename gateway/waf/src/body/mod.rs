//! Body parsers. Each walks its format once, iteratively (no recursion, so nesting
//! depth costs heap, not stack), and hands every name and value to a [`Sink`]. They
//! never fail: what does not parse is reported (`Walk::error`) and the caller inspects
//! the raw body instead.

pub(crate) mod form;
pub(crate) mod json;
pub(crate) mod multipart;
pub(crate) mod xml;

/// Where a body argument came from; decides how its name is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Src {
    /// Form field; the name is raw (percent-encoded).
    Form,
    /// JSON; the name is the rendered path (`json:a.b[0]`).
    Json,
    /// Multipart field value; the name is the field name.
    Multipart,
    /// Multipart file name; the name is the field name.
    MultipartFile,
    /// XML text or attribute; the name is the rendered path (`xml:a.b@c`).
    Xml,
}

/// Receives a body's arguments.
pub(crate) trait Sink {
    /// A name (JSON key, form field name ...) found at `name`.
    fn name(&mut self, src: Src, name: &[u8], key: &[u8]);
    /// A value. Returns false to stop the walk (argument limit).
    fn value(&mut self, src: Src, name: &[u8], value: &[u8]) -> bool;
}

/// How a walk ended.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Walk {
    /// The body did not parse as its format.
    pub error: bool,
    /// A depth or count limit was reached.
    pub limited: bool,
    /// An XML DTD declared an external entity or external subset.
    pub external_entity: bool,
}

/// Nesting deeper than this is walked without building names.
pub(crate) const MAX_DEPTH: usize = 64;
/// Longest argument name built (JSON and XML paths).
pub(crate) const MAX_NAME: usize = 256;

/// Reusable buffers for the parsers.
#[derive(Debug, Default)]
pub(crate) struct BodyBufs {
    pub name: String,
    pub text: Vec<u8>,
    pub stack: Vec<usize>,
}

/// How a body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Form,
    Json,
    Multipart,
    Xml,
    /// Inspected as one value.
    Raw,
    /// Binary: not inspected.
    Skip,
}

/// The parser for a media type (lower-cased by the caller or not), sniffing the bytes
/// when there is none.
pub(crate) fn kind(media: Option<&[u8]>, bytes: &[u8]) -> Kind {
    let Some(m) = media.filter(|m| !m.is_empty()) else {
        return match bytes.trim_ascii_start().first() {
            Some(b'{' | b'[') => Kind::Json,
            Some(b'<') => Kind::Xml,
            Some(_) => Kind::Raw,
            None => Kind::Skip,
        };
    };
    let has = |n: &[u8]| m.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n));
    if has(b"x-www-form-urlencoded") {
        Kind::Form
    } else if has(b"multipart/form-data") {
        Kind::Multipart
    } else if has(b"json") {
        Kind::Json
    } else if has(b"xml") {
        Kind::Xml
    } else if has(b"image/")
        || has(b"audio/")
        || has(b"video/")
        || has(b"font/")
        || has(b"octet-stream")
        || has(b"protobuf")
        || has(b"grpc")
        || has(b"msgpack")
        || has(b"cbor")
        || has(b"zip")
        || has(b"pdf")
        || has(b"x-tar")
        || has(b"avro")
        || has(b"thrift")
    {
        Kind::Skip
    } else {
        Kind::Raw
    }
}
