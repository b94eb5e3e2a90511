//! Replies as commands build them, and their encoding in the protocol the
//! connection chose with `HELLO` (RESP2 until it does).
//!
//! Commands build one [`Frame`] whatever the protocol, so each reply type
//! is decided once: a map, a set, a double or a boolean goes out as itself
//! in RESP3 and as Redis sends it in RESP2 (a flat array, an array, a bulk
//! string, an integer). The encoding itself is `redis-protocol`'s.

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::types::BytesFrame as Resp2;
use redis_protocol::resp3::types::{BytesFrame as Resp3, FrameMap, FrameSet};

/// The protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Resp2,
    Resp3,
}

impl Protocol {
    /// The version number `HELLO` and `CLIENT INFO` name.
    pub fn version(self) -> i64 {
        match self {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        }
    }
}

/// One reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `+OK`.
    Simple(&'static str),
    /// The whole error text, code first (`ERR …`, `WRONGTYPE …`).
    Error(String),
    Integer(i64),
    Bulk(Bytes),
    /// Nil: a missing key, an unset name.
    Null,
    Array(Vec<Frame>),
    /// Ordered as built (RESP2: a flat array of keys and values).
    Map(Vec<(Frame, Frame)>),
    /// RESP2: an array.
    Set(Vec<Frame>),
    /// RESP2: a bulk string of the number, as Redis prints it.
    Double(f64),
    /// RESP2: 1 or 0.
    Boolean(bool),
}

impl Frame {
    /// A bulk string of `text`.
    pub fn text(text: impl Into<String>) -> Frame {
        Frame::Bulk(Bytes::from(text.into()))
    }

    /// Whether this is an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Frame::Error(_))
    }

    fn resp2(self) -> Resp2 {
        match self {
            Frame::Simple(s) => Resp2::SimpleString(Bytes::from_static(s.as_bytes())),
            Frame::Error(e) => Resp2::Error(one_line(e).into()),
            Frame::Integer(i) => Resp2::Integer(i),
            Frame::Bulk(b) => Resp2::BulkString(b),
            Frame::Null => Resp2::Null,
            Frame::Array(items) | Frame::Set(items) => {
                Resp2::Array(items.into_iter().map(Frame::resp2).collect())
            }
            Frame::Map(pairs) => Resp2::Array(
                pairs
                    .into_iter()
                    .flat_map(|(k, v)| [k.resp2(), v.resp2()])
                    .collect(),
            ),
            Frame::Double(d) => Resp2::BulkString(Bytes::from(format_double(d))),
            Frame::Boolean(b) => Resp2::Integer(i64::from(b)),
        }
    }

    fn resp3(self) -> Resp3 {
        match self {
            Frame::Simple(s) => Resp3::SimpleString {
                data: Bytes::from_static(s.as_bytes()),
                attributes: None,
            },
            Frame::Error(e) => Resp3::SimpleError {
                data: one_line(e).into(),
                attributes: None,
            },
            Frame::Integer(data) => Resp3::Number {
                data,
                attributes: None,
            },
            Frame::Bulk(data) => Resp3::BlobString {
                data,
                attributes: None,
            },
            Frame::Null => Resp3::Null,
            Frame::Array(items) => Resp3::Array {
                data: items.into_iter().map(Frame::resp3).collect(),
                attributes: None,
            },
            Frame::Map(pairs) => Resp3::Map {
                data: pairs
                    .into_iter()
                    .map(|(k, v)| (k.resp3(), v.resp3()))
                    .collect::<FrameMap<_, _>>(),
                attributes: None,
            },
            Frame::Set(items) => Resp3::Set {
                data: items.into_iter().map(Frame::resp3).collect::<FrameSet<_>>(),
                attributes: None,
            },
            Frame::Double(data) => Resp3::Double {
                data,
                attributes: None,
            },
            Frame::Boolean(data) => Resp3::Boolean {
                data,
                attributes: None,
            },
        }
    }

    /// Appends the reply to `output` in `protocol`.
    pub fn encode(self, protocol: Protocol, output: &mut BytesMut) {
        let encoded = match protocol {
            Protocol::Resp2 => {
                redis_protocol::resp2::encode::extend_encode(output, &self.resp2(), false)
            }
            Protocol::Resp3 => {
                redis_protocol::resp3::encode::complete::extend_encode(output, &self.resp3(), false)
            }
        };
        if let Err(e) = encoded {
            tracing::error!(%e, "could not encode a reply");
            let failed = Frame::Error("ERR internal error encoding the reply".into());
            let _ = match protocol {
                Protocol::Resp2 => {
                    redis_protocol::resp2::encode::extend_encode(output, &failed.resp2(), false)
                }
                Protocol::Resp3 => redis_protocol::resp3::encode::complete::extend_encode(
                    output,
                    &failed.resp3(),
                    false,
                ),
            };
        }
    }
}

/// An error's text with CR and LF as spaces, as Redis sends errors that
/// quote a client's bytes: an error is one line, and a line break inside it
/// would end the reply early and leave the rest to be read as the next one.
fn one_line(e: String) -> String {
    if e.contains(['\r', '\n']) {
        e.replace(['\r', '\n'], " ")
    } else {
        e
    }
}

/// A double as Redis prints one in a RESP2 reply: the shortest text that
/// reads back as the same number (`1.5`, `3`, `inf`, `-inf`).
pub fn format_double(d: f64) -> String {
    if d.is_infinite() {
        if d > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        format!("{d}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(frame: Frame, protocol: Protocol) -> String {
        let mut out = BytesMut::new();
        frame.encode(protocol, &mut out);
        String::from_utf8(out.to_vec()).expect("text")
    }

    #[test]
    fn each_type_goes_out_as_redis_sends_it_in_either_protocol() {
        use Protocol::{Resp2, Resp3};
        let map = || Frame::Map(vec![(Frame::text("proto"), Frame::Integer(3))]);
        assert_eq!(wire(map(), Resp2), "*2\r\n$5\r\nproto\r\n:3\r\n");
        assert_eq!(wire(map(), Resp3), "%1\r\n$5\r\nproto\r\n:3\r\n");
        assert_eq!(wire(Frame::Null, Resp2), "$-1\r\n");
        assert_eq!(wire(Frame::Null, Resp3), "_\r\n");
        assert_eq!(wire(Frame::Double(1.5), Resp2), "$3\r\n1.5\r\n");
        assert_eq!(wire(Frame::Double(1.5), Resp3), ",1.5\r\n");
        assert_eq!(wire(Frame::Boolean(true), Resp2), ":1\r\n");
        assert_eq!(wire(Frame::Boolean(true), Resp3), "#t\r\n");
        let set = || Frame::Set(vec![Frame::text("a")]);
        assert_eq!(wire(set(), Resp2), "*1\r\n$1\r\na\r\n");
        assert_eq!(wire(set(), Resp3), "~1\r\n$1\r\na\r\n");
        let err = || Frame::Error("ERR no".into());
        assert_eq!(wire(err(), Resp2), "-ERR no\r\n");
        assert_eq!(wire(err(), Resp3), "-ERR no\r\n");
        let quoted = || Frame::Error("ERR unknown command 'a\r\nb'".into());
        assert_eq!(wire(quoted(), Resp2), "-ERR unknown command 'a  b'\r\n");
        assert_eq!(wire(quoted(), Resp3), "-ERR unknown command 'a  b'\r\n");
        assert_eq!(format_double(3.0), "3");
        assert_eq!(format_double(f64::NEG_INFINITY), "-inf");
    }
}
