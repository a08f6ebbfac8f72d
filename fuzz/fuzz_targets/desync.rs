//! `gateway::desync::classify` on arbitrary request heads.
//!
//! Besides "never panics": what follows the head's blank line (the body) never
//! changes the class (empty lines before the request line are not that blank line: a
//! crash the fuzzer found in the target itself), and a head that is classified compliant really has a request
//! line and a single, well-formed framing.
#![no_main]

use gateway_lib::desync::{classify, Class};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let c = classify(data);
    assert_eq!(c.reason.class(), c.class, "{c:?}: reason and class disagree");
    // The head ends at the first empty line after the request line: empty lines before
    // the request line are skipped (RFC 9112 2.2), so the search starts after them.
    let mut start = 0;
    loop {
        if data[start..].starts_with(b"\r\n") {
            start += 2;
        } else if data[start..].starts_with(b"\n") {
            start += 1;
        } else {
            break;
        }
    }
    let mut head = data;
    if let Some(end) = data[start..].windows(4).position(|w| w == b"\r\n\r\n") {
        head = &data[..start + end + 4];
        let again = classify(head);
        assert_eq!(again, c, "the body changed the class of {:?}", head.escape_ascii());
    }
    if c.class == Class::Compliant {
        let text = String::from_utf8_lossy(head);
        let lower = text.to_ascii_lowercase();
        let cl = lower.matches("\ncontent-length:").count();
        let te = lower.matches("\ntransfer-encoding:").count();
        assert!(
            cl + te <= 1,
            "compliant with {cl} Content-Length and {te} Transfer-Encoding: {:?}",
            data.escape_ascii()
        );
    }
});
