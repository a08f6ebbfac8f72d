#![allow(clippy::unwrap_used)]
use super::*;
use crate::context::Client;
use tollgate_config::units::Rate;

fn policy(key: Vec<KeyPart>, headers: HeadersMode) -> RateLimitPolicy {
    RateLimitPolicy {
        name: "p".into(),
        rate: Rate {
            count: 1,
            per: Duration::from_secs(60),
        },
        burst: 2,
        key,
        count_missing: false,
        max_keys: 1000,
        headers,
        store: tollgate_config::gateway::StoreFile::Local,
        on_store_error: tollgate_config::gateway::OnStoreError::FailOpen,
        algorithm: tollgate_config::gateway::Algorithm::Gcra,
    }
}

fn req(path: &str, headers: &[(&'static str, &str)]) -> RequestHeader {
    let mut r = RequestHeader::build("GET", path.as_bytes(), None).unwrap();
    for (k, v) in headers {
        r.append_header(*k, *v).unwrap();
    }
    r
}

fn client(ip: &str) -> Client {
    Client {
        ip: Some(ip.parse().unwrap()),
        ..Client::default()
    }
}

fn check(l: &RateLimiter, r: &RequestHeader, c: &Client) -> Verdict {
    let view = RequestView {
        req: r,
        client: c,
        route: "api",
        claims: None,
    };
    block_on(l.on_request(&view, &mut Headers::default()))
}

/// The local store never awaits: drive the future to completion in place.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(f)
}

use std::time::Duration;

#[test]
fn clients_are_limited_apart_and_the_429_says_when_to_come_back() {
    let l = RateLimiter::build(
        &policy(vec![KeyPart::ClientIp], HeadersMode::Limited),
        None,
        None,
    );
    let r = req("/", &[]);
    let (a, b) = (client("192.0.2.1"), client("192.0.2.2"));
    assert!(matches!(check(&l, &r, &a), Verdict::Continue));
    assert!(matches!(check(&l, &r, &a), Verdict::Continue));
    let Verdict::Reject(rej) = check(&l, &r, &a) else {
        panic!("third request of a burst of 2 must be refused")
    };
    assert_eq!(
        (rej.status, rej.reason, rej.keep_alive),
        (429, "rate_limited", true)
    );
    let wait = rej.retry_after.unwrap();
    assert!(
        wait > Duration::from_secs(59) && wait <= Duration::from_secs(60),
        "{wait:?}"
    );
    let h: Vec<_> = rej
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
        .collect();
    assert_eq!(h[0], ("ratelimit-policy", "\"p\";q=2;w=120"));
    assert_eq!(h[1].0, "ratelimit");
    assert!(h[1].1.starts_with("\"p\";r=0;t=1"), "{}", h[1].1);
    assert!(
        matches!(check(&l, &r, &b), Verdict::Continue),
        "another client has its own bucket"
    );
}

#[test]
fn a_request_missing_a_key_part_is_not_counted_unless_asked() {
    let key = vec![KeyPart::Header(HeaderName::from_static("x-api-key"))];
    let l = RateLimiter::build(&policy(key.clone(), HeadersMode::Off), None, None);
    let c = client("192.0.2.1");
    for _ in 0..5 {
        assert!(matches!(check(&l, &req("/", &[]), &c), Verdict::Continue));
    }
    assert_eq!(l.tracked_keys(), 0);
    let with = req("/", &[("x-api-key", "k1")]);
    check(&l, &with, &c);
    check(&l, &with, &c);
    let Verdict::Reject(rej) = check(&l, &with, &c) else {
        panic!("k1 limited")
    };
    assert!(rej.headers.is_empty(), "headers: off");

    let mut counted = policy(key, HeadersMode::Off);
    counted.count_missing = true;
    let l = RateLimiter::build(&counted, None, None);
    check(&l, &req("/", &[]), &c);
    check(&l, &req("/", &[]), &c);
    assert!(matches!(check(&l, &req("/", &[]), &c), Verdict::Reject(_)));
}

#[test]
fn keys_combine_parts_and_read_cookies_and_query_arguments() {
    let key = vec![
        KeyPart::Route,
        KeyPart::Cookie("session".into()),
        KeyPart::Query("tenant".into()),
    ];
    let l = RateLimiter::build(&policy(key, HeadersMode::Off), None, None);
    let c = client("192.0.2.1");
    let a = req("/x?tenant=a&b=1", &[("cookie", "x=1; session=s1")]);
    let b = req("/y?b=1&tenant=b", &[("cookie", "session=s1")]);
    check(&l, &a, &c);
    check(&l, &a, &c);
    assert!(matches!(check(&l, &a, &c), Verdict::Reject(_)));
    assert!(
        matches!(check(&l, &b, &c), Verdict::Continue),
        "another tenant"
    );
    assert_eq!(l.tracked_keys(), 2);
    assert_eq!(
        query_arg(&req("/?a=1&tenant", &[]), "tenant"),
        Some(&b""[..])
    );
    assert_eq!(query_arg(&req("/?tenantx=1", &[]), "tenant"), None);
}

#[test]
fn a_reload_keeps_the_counters_of_an_unchanged_key() {
    let p = policy(vec![KeyPart::ClientIp], HeadersMode::Off);
    let l = RateLimiter::build(&p, None, None);
    let (r, c) = (req("/", &[]), client("192.0.2.1"));
    check(&l, &r, &c);
    check(&l, &r, &c);
    let mut faster = p.clone();
    faster.headers = HeadersMode::All;
    let l2 = RateLimiter::build(&faster, Some(&l), None);
    assert!(
        matches!(check(&l2, &r, &c), Verdict::Reject(_)),
        "bucket carried over"
    );
    let mut other = p;
    other.key = vec![KeyPart::Path];
    let l3 = RateLimiter::build(&other, Some(&l2), None);
    assert!(
        matches!(check(&l3, &r, &c), Verdict::Continue),
        "new key: new buckets"
    );
}

#[test]
fn headers_on_every_response_report_the_most_restrictive_policy() {
    let l = RateLimiter::build(
        &policy(vec![KeyPart::ClientIp], HeadersMode::All),
        None,
        None,
    );
    let (r, c) = (req("/", &[]), client("192.0.2.1"));
    let mut h = Headers::default();
    let view = RequestView {
        req: &r,
        client: &c,
        route: "api",
        claims: None,
    };
    assert!(matches!(
        block_on(l.on_request(&view, &mut h)),
        Verdict::Continue
    ));
    assert_eq!(h.policy.as_ref().unwrap(), "\"p\";q=2;w=120");
    assert!(h
        .state
        .as_ref()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("\"p\";r=1;"));
}

#[test]
fn policy_names_are_escaped_as_structured_field_strings() {
    assert_eq!(sf_string("a\"b\\c\u{7}é"), "a\\\"b\\\\c");
}
