use bytes::Bytes;
use http_body::Body as _;
use http_body_util::BodyExt;

use super::streamed;
use crate::body::full;
use crate::resilience::replay::Replay;

#[tokio::test]
async fn a_new_try_cuts_the_earlier_one_off_and_gets_everything() {
    let mut replay = Replay::new(streamed(&["a", "b", "c"]), 100);
    let mut first = replay.next_body();
    let frame = first.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "a");

    let second = replay.next_body();
    assert!(first.frame().await.unwrap().is_err(), "cut off");
    assert_eq!(
        second.collect().await.unwrap().to_bytes(),
        Bytes::from_static(b"abc")
    );
    assert!(replay.replayable());
    let third = replay.next_body();
    assert_eq!(
        third.collect().await.unwrap().to_bytes(),
        Bytes::from_static(b"abc")
    );
}

#[tokio::test]
async fn past_the_cap_it_streams_on_and_is_no_longer_replayable() {
    let mut replay = Replay::new(streamed(&["aaaa", "bbbb", "cccc"]), 6);
    let body = replay.next_body();
    assert_eq!(
        body.collect().await.unwrap().to_bytes(),
        Bytes::from_static(b"aaaabbbbcccc")
    );
    assert!(!replay.replayable());
}

#[tokio::test]
async fn the_last_try_keeps_no_copy_but_gets_the_kept_prefix() {
    let mut replay = Replay::new(streamed(&["aa", "bb", "cc"]), 100);
    let mut first = replay.next_body();
    let _ = first.frame().await;
    replay.last_try();
    let last = replay.next_body();
    assert_eq!(
        last.collect().await.unwrap().to_bytes(),
        Bytes::from_static(b"aabbcc")
    );
}

#[tokio::test]
async fn the_known_length_is_reported_as_it_goes() {
    let mut replay = Replay::new(full("hello"), 100);
    let mut body = replay.next_body();
    assert_eq!(body.size_hint().exact(), Some(5));
    assert!(!body.is_end_stream());
    let _ = body.frame().await;
    assert_eq!(body.size_hint().exact(), Some(0));
    assert!(body.frame().await.is_none());
    assert!(body.is_end_stream());
    let again = replay.next_body();
    assert_eq!(again.size_hint().exact(), Some(5));
}

#[tokio::test]
async fn an_empty_body_stays_empty_and_replayable() {
    let mut replay = Replay::new(crate::body::empty(), 0);
    assert!(replay.replayable());
    assert!(replay.next_body().is_end_stream());
    assert!(replay.next_body().is_end_stream());
}
