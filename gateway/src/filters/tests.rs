#![allow(clippy::unwrap_used)]
use super::*;

fn client(tls: bool) -> Client {
    Client {
        tls,
        ..Client::default()
    }
}

#[test]
fn hsts_is_sent_over_tls_only() {
    let f = Filters::from_list(vec![Filter::Hsts(Hsts::build("max-age=60").unwrap())]);
    let mut resp = ResponseHeader::build(200, None).unwrap();
    let state = FilterState::default();
    f.on_response(&client(false), &state, &mut resp).unwrap();
    assert!(resp.headers.get("strict-transport-security").is_none());
    f.on_response(&client(true), &state, &mut resp).unwrap();
    assert_eq!(resp.headers["strict-transport-security"], "max-age=60");
}

#[test]
fn a_route_without_request_filters_continues() {
    let f = Filters::from_list(vec![Filter::Hsts(Hsts::build("max-age=60").unwrap())]);
    let req = RequestHeader::build("GET", b"/", None).unwrap();
    let c = client(true);
    let view = RequestView {
        req: &req,
        client: &c,
        route: "r",
        claims: None,
    };
    let mut state = FilterState::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert!(matches!(
        rt.block_on(f.on_request(&view, &mut state)),
        Verdict::Continue
    ));
    assert!(!f.request && f.response);
}

#[test]
fn stages_are_in_the_documented_order() {
    let order = [
        Stage::IpList,
        Stage::Waf,
        Stage::ClientRateLimit,
        Stage::Authentication,
        Stage::ClaimRateLimit,
        Stage::Headers,
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]));
}
