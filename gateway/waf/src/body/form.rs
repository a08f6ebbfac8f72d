//! `application/x-www-form-urlencoded`.

use super::{Sink, Src, Walk};
use crate::request::pairs;

pub(crate) fn walk(body: &[u8], sink: &mut dyn Sink) -> Walk {
    for (name, value) in pairs(body) {
        sink.name(Src::Form, name, name);
        if !sink.value(Src::Form, name, value) {
            return Walk {
                limited: true,
                ..Walk::default()
            };
        }
    }
    Walk::default()
}
