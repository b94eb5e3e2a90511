//! Reading client requests: RESP arrays of bulk strings, and inline commands.
//!
//! Replies are encoded with the `redis-protocol` crate, but requests are
//! parsed here: its decoder accepts any frame, recursing once per nested
//! array with no depth limit (a request of nested `*1\r\n` overflows the
//! stack), and allocates arrays by their claimed count before the data is
//! there. Clients only ever send a flat array of bulk strings (Redis's own
//! server accepts nothing else), so this parser accepts exactly that; it
//! checks every claimed length against the request limit before waiting
//! for the bytes, and never allocates by a claimed size.

use bytes::{Bytes, BytesMut};

/// Most arguments one request may claim (Redis's own limit).
const MAX_ARGS: i64 = 1024 * 1024;
/// Longest inline command line, and longest length prefix line.
const MAX_INLINE_BYTES: usize = 64 * 1024;
/// A length prefix line (`*123\r\n`, `$456\r\n`) is never longer than this.
const MAX_PREFIX_LINE: usize = 32;

/// Why a request was refused; the connection is closed after the reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub String);

/// Takes one complete request off the front of `buf`, if there is one.
/// `Ok(None)` means more bytes are needed; an empty argument list is a
/// request with nothing to do (`*0\r\n`, an empty line).
pub fn parse_request(
    buf: &mut BytesMut,
    max_request_bytes: usize,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] == b'*' {
        parse_multibulk(buf, max_request_bytes)
    } else {
        parse_inline(buf)
    }
}

fn parse_multibulk(
    buf: &mut BytesMut,
    max_request_bytes: usize,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let Some((count, mut at)) = read_prefix(buf, 0, b'*')? else {
        return Ok(None);
    };
    if count > MAX_ARGS {
        return Err(ProtocolError("invalid multibulk length".into()));
    }
    if count <= 0 {
        let _ = buf.split_to(at);
        return Ok(Some(Vec::new()));
    }
    let mut spans = Vec::with_capacity((count as usize).min(64));
    let mut claimed = 0usize;
    for _ in 0..count {
        if at >= buf.len() {
            return Ok(None);
        }
        if buf[at] != b'$' {
            return Err(ProtocolError(format!(
                "expected '$', got '{}'",
                char::from(buf[at]).escape_default()
            )));
        }
        let Some((len, data_at)) = read_prefix(buf, at, b'$')? else {
            return Ok(None);
        };
        let len = usize::try_from(len).map_err(|_| ProtocolError("invalid bulk length".into()))?;
        claimed = claimed.saturating_add(len);
        if len > max_request_bytes || claimed > max_request_bytes {
            return Err(ProtocolError(format!(
                "request larger than server.max_request_bytes ({max_request_bytes})"
            )));
        }
        let end = data_at + len;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(ProtocolError("bulk string not terminated by CRLF".into()));
        }
        spans.push(data_at..end);
        at = end + 2;
    }
    let request = buf.split_to(at).freeze();
    Ok(Some(
        spans.into_iter().map(|span| request.slice(span)).collect(),
    ))
}

/// Reads `<marker><integer>\r\n` at `at`; returns the integer and where the
/// line ends, or `None` if the line is not complete yet.
fn read_prefix(
    buf: &BytesMut,
    at: usize,
    marker: u8,
) -> Result<Option<(i64, usize)>, ProtocolError> {
    debug_assert_eq!(buf[at], marker);
    let window = &buf[at..buf.len().min(at + MAX_PREFIX_LINE)];
    let Some(cr) = window.iter().position(|b| *b == b'\r') else {
        return if window.len() == MAX_PREFIX_LINE {
            Err(ProtocolError("length prefix too long".into()))
        } else {
            Ok(None)
        };
    };
    if cr + 1 >= window.len() {
        return Ok(None);
    }
    if window[cr + 1] != b'\n' {
        return Err(ProtocolError("length prefix not terminated by CRLF".into()));
    }
    let digits = std::str::from_utf8(&window[1..cr])
        .map_err(|_| ProtocolError("invalid length prefix".into()))?;
    let value: i64 = digits
        .parse()
        .map_err(|_| ProtocolError(format!("invalid length '{}'", digits.escape_default())))?;
    Ok(Some((value, at + cr + 2)))
}

fn parse_inline(buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let window = &buf[..buf.len().min(MAX_INLINE_BYTES)];
    let Some(newline) = window.iter().position(|b| *b == b'\n') else {
        return if window.len() == MAX_INLINE_BYTES {
            Err(ProtocolError("too big inline request".into()))
        } else {
            Ok(None)
        };
    };
    let line = buf.split_to(newline + 1).freeze();
    let text = line.slice(..newline);
    let mut args = Vec::new();
    let mut start = None;
    for (i, b) in text.iter().enumerate() {
        match (b.is_ascii_whitespace(), start) {
            (true, Some(s)) => {
                args.push(text.slice(s..i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        args.push(text.slice(s..));
    }
    Ok(Some(args))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Result<Vec<Vec<Bytes>>, ProtocolError> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(args) = parse_request(&mut buf, 1 << 20)? {
            out.push(args);
        }
        Ok(out)
    }

    #[test]
    fn pipelined_multibulk_and_inline_requests() {
        let got =
            parse_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\nPING\r\n*1\r\n$4\r\nPING\r\n")
                .expect("parses");
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[0],
            vec![Bytes::from("SET"), Bytes::from("k"), Bytes::new()]
        );
        assert_eq!(got[1], vec![Bytes::from("PING")]);
        assert_eq!(got[2], vec![Bytes::from("PING")]);
    }

    #[test]
    fn every_split_point_waits_for_more_bytes() {
        let full = b"*2\r\n$3\r\nGET\r\n$5\r\nhello\r\n";
        for cut in 0..full.len() {
            let mut buf = BytesMut::from(&full[..cut]);
            assert_eq!(parse_request(&mut buf, 1 << 20), Ok(None), "cut at {cut}");
            assert_eq!(
                buf.len(),
                cut,
                "nothing consumed from an incomplete request"
            );
        }
    }

    #[test]
    fn claimed_sizes_over_the_limit_are_refused_before_the_data_arrives() {
        let mut buf = BytesMut::from(&b"*1\r\n$999999999\r\n"[..]);
        assert!(parse_request(&mut buf, 1 << 20).is_err());
        let mut buf = BytesMut::from(&b"*2\r\n$600000\r\n"[..]);
        buf.extend_from_slice(&vec![b'a'; 600_000]);
        buf.extend_from_slice(b"\r\n$600000\r\n");
        assert!(
            parse_request(&mut buf, 1 << 20).is_err(),
            "the sum of the arguments counts"
        );
        let mut buf = BytesMut::from(&b"*99999999999\r\n"[..]);
        assert!(parse_request(&mut buf, 1 << 20).is_err());
    }

    #[test]
    fn nested_arrays_and_garbage_are_protocol_errors() {
        assert!(parse_all(b"*1\r\n*1\r\n*1\r\n$1\r\na\r\n").is_err());
        assert!(parse_all(b"*1\r\n$3\r\nabcXY").is_err());
        assert!(parse_all(b"*x\r\n").is_err());
        assert!(parse_all(b"*1\r\n$-5\r\n").is_err());
        let mut long = b"*1\r\n$".to_vec();
        long.extend(std::iter::repeat_n(b'1', 100));
        assert!(parse_all(&long).is_err());
    }

    #[test]
    fn empty_requests_do_nothing() {
        assert_eq!(
            parse_all(b"*0\r\n\r\n").expect("parses"),
            vec![Vec::<Bytes>::new(), Vec::new()]
        );
    }
}
