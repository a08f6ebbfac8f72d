//! `gateway::desync::classify` on arbitrary request heads.
//!
//! Besides "never panics": what follows the head's blank line (the body) never
//! changes the class, and a head that is classified compliant really has a request
//! line and a single, well-formed framing.
#![no_main]

use gateway_lib::desync::{classify, Class};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let c = classify(data);
    assert_eq!(c.reason.class(), c.class, "{c:?}: reason and class disagree");
    let mut head = data;
    if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
        head = &data[..end + 4];
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
