//! `gateway::proxy_protocol::parse` on arbitrary connection prefixes.
//!
//! Besides "never panics", checks what `proxy_protocol::accept` relies on when it
//! calls `parse` again after every read:
//! - a header never claims more bytes than it was given, and is self-delimiting:
//!   parsing exactly its bytes gives the same header;
//! - every shorter prefix of a complete header asks for more bytes (`Ok(None)`),
//!   so a header split across reads is neither refused nor mis-parsed;
//! - `Ok(None)` only for inputs shorter than the largest header (no unbounded
//!   buffering);
//! - v1 headers end with CRLF and are at most 107 bytes; v2 headers are at least 16
//!   and at most 4096 bytes.
#![no_main]

use gateway_lib::proxy_protocol::{parse, Header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(Some(h)) => check_header(data, h),
        Ok(None) => assert!(
            data.len() < 4096,
            "Ok(None) (need more bytes) for {} bytes",
            data.len()
        ),
        Err(_) => {}
    }
});

fn check_header(data: &[u8], h: Header) {
    assert!(
        h.len <= data.len(),
        "{h:?} longer than the {} input bytes",
        data.len()
    );
    match h.version {
        1 => {
            assert!(h.len <= 107, "v1 {h:?} longer than 107 bytes");
            assert!(
                data[..h.len].ends_with(b"\r\n"),
                "v1 {h:?} does not end with CRLF"
            );
        }
        2 => assert!((16..=4096).contains(&h.len), "v2 {h:?} length out of range"),
        v => panic!("version {v} in {h:?}"),
    }
    let exact = &data[..h.len];
    assert_eq!(
        parse(exact),
        Ok(Some(h)),
        "the header's own bytes parse differently"
    );
    for k in 0..h.len {
        assert_eq!(
            parse(&exact[..k]),
            Ok(None),
            "prefix of {k} bytes of a complete {h:?} does not ask for more"
        );
    }
}
