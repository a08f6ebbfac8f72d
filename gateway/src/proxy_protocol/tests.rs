#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
    let mut h = V2_SIG.to_vec();
    h.push(0x20 | cmd);
    h.push(fam);
    h.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    h.extend_from_slice(body);
    h
}

fn v4_body(src: [u8; 4], sport: u16) -> Vec<u8> {
    let mut b = src.to_vec();
    b.extend_from_slice(&[10, 0, 0, 1]);
    b.extend_from_slice(&sport.to_be_bytes());
    b.extend_from_slice(&443u16.to_be_bytes());
    b
}

#[test]
fn v1_tcp4_and_tcp6() {
    let h = parse(b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\nGET / HTTP/1.1\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(h.source, Some("203.0.113.7:51234".parse().unwrap()));
    assert_eq!(h.len, "PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n".len());
    assert_eq!(h.version, 1);
    let h = parse(b"PROXY TCP6 2001:db8::7 2001:db8::1 1 65535\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(h.source, Some("[2001:db8::7]:1".parse().unwrap()));
}

#[test]
fn v1_unknown_keeps_the_socket_address() {
    let h = parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap();
    assert_eq!((h.source, h.len), (None, 15));
    let h = parse(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(h.source, None);
}

#[test]
fn v1_needs_more_bytes_until_crlf() {
    let full = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n";
    for cut in 1..full.len() {
        assert_eq!(parse(&full[..cut]), Ok(None), "cut at {cut}");
    }
}

#[test]
fn v1_malformed_headers_are_refused() {
    for bad in [
        &b"PROXY TCP4 203.0.113.7 10.0.0.1 51234\r\n"[..],
        b"PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n",
        b"PROXY TCP6 203.0.113.7 10.0.0.1 1 2\r\n",
        b"PROXY TCP4 203.0.113.7 10.0.0.1 65536 2\r\n",
        b"PROXY TCP4 203.0.113.7 10.0.0.1 01 2\r\n",
        b"PROXY TCP4 203.0.113.7 10.0.0.1 -1 2\r\n",
        b"PROXY TCP4  203.0.113.7 10.0.0.1 1 2\r\n",
        b"PROXY UDP4 203.0.113.7 10.0.0.1 1 2\r\n",
        b"PROXY TCP4 999.0.113.7 10.0.0.1 1 2\r\n",
        b"PROXY \xff\r\n",
    ] {
        assert_eq!(
            parse(bad),
            Err(HeaderError::Malformed),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 120]].concat();
    assert_eq!(parse(&long), Err(HeaderError::TooLong));
}

#[test]
fn anything_else_is_missing() {
    assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(HeaderError::Missing));
    assert_eq!(parse(b"\x16\x03\x01"), Err(HeaderError::Missing));
    assert_eq!(parse(b"PROXX"), Err(HeaderError::Missing));
    assert_eq!(parse(b"\r\n\r\nX"), Err(HeaderError::Missing));
    // A prefix of either signature could still become a header.
    assert_eq!(parse(b"PRO"), Ok(None));
    assert_eq!(parse(b"\r\n\r\n\0"), Ok(None));
}

#[test]
fn v2_inet_inet6_local_unix() {
    let mut wire = v2(1, 0x11, &v4_body([203, 0, 113, 7], 51234));
    wire.extend_from_slice(b"GET / HTTP/1.1\r\n");
    let h = parse(&wire).unwrap().unwrap();
    assert_eq!(h.source, Some("203.0.113.7:51234".parse().unwrap()));
    assert_eq!((h.len, h.version), (28, 2));

    let mut b = vec![0u8; 36];
    b[..16].copy_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
    b[32..34].copy_from_slice(&8443u16.to_be_bytes());
    let h = parse(&v2(1, 0x21, &b)).unwrap().unwrap();
    assert_eq!(h.source, Some("[2001:db8::7]:8443".parse().unwrap()));

    // LOCAL (health checks of the load balancer itself), with or without a body.
    assert_eq!(parse(&v2(0, 0x00, &[])).unwrap().unwrap().source, None);
    assert_eq!(
        parse(&v2(0, 0x11, &v4_body([1, 2, 3, 4], 5)))
            .unwrap()
            .unwrap()
            .source,
        None
    );
    assert_eq!(
        parse(&v2(1, 0x31, &[0u8; 216])).unwrap().unwrap().source,
        None
    );
    assert_eq!(parse(&v2(1, 0x00, &[])).unwrap().unwrap().source, None);
}

#[test]
fn v2_with_tlvs_consumes_them() {
    let mut body = v4_body([198, 51, 100, 9], 1000);
    // PP2_TYPE_AWS (0xEA) with a VPC endpoint id, as NLB sends it.
    body.extend_from_slice(&[0xEA, 0x00, 0x0B, 0x01]);
    body.extend_from_slice(b"vpce-08d2b");
    let wire = v2(1, 0x11, &body);
    let h = parse(&wire).unwrap().unwrap();
    assert_eq!(h.len, wire.len());
    assert_eq!(h.source, Some("198.51.100.9:1000".parse().unwrap()));
}

#[test]
fn v2_needs_more_bytes_until_the_body_is_complete() {
    let wire = v2(1, 0x11, &v4_body([203, 0, 113, 7], 1));
    for cut in 1..wire.len() {
        assert_eq!(parse(&wire[..cut]), Ok(None), "cut at {cut}");
    }
}

#[test]
fn v2_bad_headers_are_refused() {
    // Address block shorter than the family needs.
    assert_eq!(parse(&v2(1, 0x11, &[1, 2, 3])), Err(HeaderError::Malformed));
    assert_eq!(parse(&v2(1, 0x21, &[0; 12])), Err(HeaderError::Malformed));
    // UDP, unknown family, unknown command, version 1 in the binary format.
    assert_eq!(
        parse(&v2(1, 0x12, &v4_body([1, 2, 3, 4], 5))),
        Err(HeaderError::Unsupported)
    );
    assert_eq!(parse(&v2(1, 0x41, &[0; 12])), Err(HeaderError::Unsupported));
    assert_eq!(parse(&v2(2, 0x11, &[0; 12])), Err(HeaderError::Unsupported));
    let mut wrong_version = v2(1, 0x11, &[0; 12]);
    wrong_version[12] = 0x11;
    assert_eq!(parse(&wrong_version), Err(HeaderError::Unsupported));
    // A declared length past the cap is refused before anything is buffered.
    let mut huge = V2_SIG.to_vec();
    huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
    assert_eq!(parse(&huge), Err(HeaderError::TooLong));
}

#[test]
fn random_input_never_panics_and_never_overreads() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let prefixes: [&[u8]; 3] = [b"", V1_SIG, V2_SIG];
    for i in 0..60_000 {
        let mut buf = prefixes[i % 3].to_vec();
        let extra = rng.random_range(0..120);
        buf.extend((0..extra).map(|_| rng.random::<u8>()));
        if let Ok(Some(h)) = parse(&buf) {
            assert!(h.len <= buf.len(), "{buf:?}");
        }
    }
}
