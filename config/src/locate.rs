//! Find where a field path (`routes[1].upstream`) sits in a YAML document.
//!
//! serde's YAML values carry no positions, so semantic validation errors (an undefined
//! upstream, a duplicate name) would otherwise have no line number. This walks the
//! document's events once, only when an error needs a position.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column in the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

enum Frame {
    Map {
        key: Option<String>,
        expect_key: bool,
    },
    Seq {
        index: usize,
    },
}

struct Recorder {
    stack: Vec<Frame>,
    /// Path of each node -> position of the node (for map entries: the key's position).
    positions: HashMap<String, Position>,
}

impl Recorder {
    fn path(&self) -> String {
        let mut out = String::new();
        for frame in &self.stack {
            match frame {
                Frame::Map { key: Some(k), .. } => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
                Frame::Map { key: None, .. } => {}
                Frame::Seq { index } => {
                    out.push('[');
                    out.push_str(&index.to_string());
                    out.push(']');
                }
            }
        }
        out
    }

    /// A value node (scalar or container start) was seen at `pos`.
    fn value_seen(&mut self, pos: Position) {
        let path = self.path();
        self.positions.entry(path).or_insert(pos);
    }

    /// A value finished: advance the enclosing container.
    fn value_done(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Map { key, expect_key }) => {
                *key = None;
                *expect_key = true;
            }
            Some(Frame::Seq { index }) => *index += 1,
            None => {}
        }
    }
}

impl MarkedEventReceiver for Recorder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Position {
            line: mark.line(),
            column: mark.col() + 1,
        };
        let expecting_key = matches!(
            self.stack.last(),
            Some(Frame::Map {
                expect_key: true,
                ..
            })
        );
        match ev {
            Event::Scalar(value, ..) if expecting_key => {
                if let Some(Frame::Map { key, expect_key }) = self.stack.last_mut() {
                    *key = Some(value);
                    *expect_key = false;
                }
                let path = self.path();
                self.positions.entry(path).or_insert(pos);
            }
            Event::Scalar(..) | Event::Alias(..) => {
                self.value_seen(pos);
                self.value_done();
            }
            Event::MappingStart(..) => {
                if !expecting_key {
                    self.value_seen(pos);
                }
                self.stack.push(Frame::Map {
                    key: None,
                    expect_key: true,
                });
            }
            Event::SequenceStart(..) => {
                if !expecting_key {
                    self.value_seen(pos);
                }
                self.stack.push(Frame::Seq { index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.value_done();
            }
            _ => {}
        }
    }
}

/// Position of `path` in `source`, or of its closest existing ancestor
/// (an error about a missing field points at the object that lacks it).
pub fn locate(source: &str, path: &str) -> Option<Position> {
    let mut rec = Recorder {
        stack: Vec::new(),
        positions: HashMap::new(),
    };
    // A document that does not parse has no positions to offer; the parse error has its own.
    Parser::new_from_str(source).load(&mut rec, false).ok()?;
    let mut p = path.to_owned();
    loop {
        if let Some(pos) = rec.positions.get(&p) {
            return Some(*pos);
        }
        let cut = p.rfind(['.', '['])?;
        p.truncate(cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
listeners:
  - name: http
    address: 0.0.0.0:8080
routes:
  - name: a
    upstream: x
  - name: b
    match: { host: b.example.com }
    upstream: y
upstreams:
  x:
    endpoints: [{ address: 127.0.0.1:1 }]
";

    #[test]
    fn finds_nested_fields() {
        let at = |p| locate(DOC, p).map(|p| (p.line, p.column));
        assert_eq!(at("listeners[0].address"), Some((3, 5)));
        assert_eq!(at("routes[1].upstream"), Some((9, 5)));
        assert_eq!(at("routes[1].match.host"), Some((8, 14)));
        assert_eq!(at("upstreams.x.endpoints[0].address"), Some((12, 19)));
        // Missing leaf: falls back to the closest ancestor that exists.
        assert_eq!(
            locate(DOC, "routes[0].timeouts.connect").map(|p| p.line),
            Some(5)
        );
    }
}
