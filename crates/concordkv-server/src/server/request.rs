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

use std::ops::Range;

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

/// One complete request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The command and its arguments; empty for a request with nothing to
    /// do (`*0\r\n`, an empty line).
    pub args: Vec<Bytes>,
    /// Whether it came as an inline line rather than a RESP array.
    pub inline: bool,
}

/// Parses requests off a connection's input buffer, keeping its progress
/// through a partial request between reads: a request that arrives in many
/// small pieces costs what it would in one, never a re-parse from its start.
///
/// Between calls the caller may only append to the buffer; the parser takes
/// each complete request off its front.
#[derive(Debug)]
pub struct RequestParser {
    max_request_bytes: usize,
    progress: Progress,
    /// Bytes examined so far (prefix lines, terminators, inline lines): the
    /// arguments' data is never looked at, and nothing is looked at twice.
    scanned: u64,
}

/// How far into the request at the front of the buffer the parser is.
#[derive(Debug, Default)]
enum Progress {
    /// Nothing of the next request seen yet.
    #[default]
    Start,
    /// An inline line; its first `searched` bytes hold no newline.
    Inline { searched: usize },
    /// A RESP array of bulk strings.
    Multibulk(Multibulk),
}

#[derive(Debug)]
struct Multibulk {
    /// Arguments claimed by the `*` line (0 until that line is complete).
    count: usize,
    /// Where the next unparsed byte is.
    at: usize,
    /// Bytes of the line at `at` already searched for its CR.
    line_searched: usize,
    /// The argument whose data is awaited: its span in the buffer.
    bulk: Option<Range<usize>>,
    /// Spans of the arguments complete so far.
    spans: Vec<Range<usize>>,
    /// Bytes the arguments claim together.
    claimed: usize,
}

impl RequestParser {
    /// A parser refusing requests that claim more than `max_request_bytes`.
    pub fn new(max_request_bytes: usize) -> RequestParser {
        RequestParser {
            max_request_bytes,
            progress: Progress::Start,
            scanned: 0,
        }
    }

    /// Bytes examined since the parser was made.
    pub fn scanned(&self) -> u64 {
        self.scanned
    }

    /// Takes one complete request off the front of `buf`, if there is one.
    /// `Ok(None)` means more bytes are needed. After an error the
    /// connection must be closed: the parser's state is not meaningful.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        if let Progress::Start = self.progress {
            match buf.first() {
                None => return Ok(None),
                Some(b'*') => {
                    self.scanned += 1;
                    self.progress = Progress::Multibulk(Multibulk {
                        count: 0,
                        at: 0,
                        line_searched: 0,
                        bulk: None,
                        spans: Vec::new(),
                        claimed: 0,
                    })
                }
                Some(_) => self.progress = Progress::Inline { searched: 0 },
            }
        }
        let parsed = match &mut self.progress {
            Progress::Start => unreachable!("set above"),
            Progress::Inline { searched } => parse_inline(buf, searched, &mut self.scanned),
            Progress::Multibulk(state) => {
                parse_multibulk(buf, state, self.max_request_bytes, &mut self.scanned)
            }
        };
        if !matches!(parsed, Ok(None)) {
            self.progress = Progress::Start;
        }
        parsed
    }
}

fn parse_multibulk(
    buf: &mut BytesMut,
    state: &mut Multibulk,
    max_request_bytes: usize,
    scanned: &mut u64,
) -> Result<Option<Request>, ProtocolError> {
    if state.at == 0 {
        let Some((count, at)) = read_prefix(buf, 0, &mut state.line_searched, scanned)? else {
            return Ok(None);
        };
        if count > MAX_ARGS {
            return Err(ProtocolError("invalid multibulk length".into()));
        }
        if count <= 0 {
            let _ = buf.split_to(at);
            return Ok(Some(Request {
                args: Vec::new(),
                inline: false,
            }));
        }
        state.count = count as usize;
        state.at = at;
        state.spans.reserve(state.count.min(64));
    }
    while state.spans.len() < state.count {
        let span = match state.bulk.clone() {
            Some(span) => span,
            None => {
                let Some(&marker) = buf.get(state.at) else {
                    return Ok(None);
                };
                // Checked when the line starts, not again while it arrives.
                if state.line_searched == 0 {
                    *scanned += 1;
                    if marker != b'$' {
                        return Err(ProtocolError(format!(
                            "expected '$', got '{}'",
                            char::from(marker).escape_default()
                        )));
                    }
                }
                let Some((len, data_at)) =
                    read_prefix(buf, state.at, &mut state.line_searched, scanned)?
                else {
                    return Ok(None);
                };
                let len = usize::try_from(len)
                    .map_err(|_| ProtocolError("invalid bulk length".into()))?;
                state.claimed = state.claimed.saturating_add(len);
                if len > max_request_bytes || state.claimed > max_request_bytes {
                    return Err(ProtocolError(format!(
                        "request larger than server.max_request_bytes ({max_request_bytes})"
                    )));
                }
                let span = data_at..data_at + len;
                state.bulk = Some(span.clone());
                span
            }
        };
        if buf.len() < span.end + 2 {
            return Ok(None);
        }
        *scanned += 2;
        if &buf[span.end..span.end + 2] != b"\r\n" {
            return Err(ProtocolError("bulk string not terminated by CRLF".into()));
        }
        state.at = span.end + 2;
        state.bulk = None;
        state.spans.push(span);
    }
    let request = buf.split_to(state.at).freeze();
    Ok(Some(Request {
        args: state
            .spans
            .drain(..)
            .map(|span| request.slice(span))
            .collect(),
        inline: false,
    }))
}

/// Reads `<marker><integer>\r\n` at `at`, resuming the search for its CR
/// after the `searched` bytes already looked at; returns the integer and
/// where the line ends, or `None` if the line is not complete yet.
fn read_prefix(
    buf: &BytesMut,
    at: usize,
    searched: &mut usize,
    scanned: &mut u64,
) -> Result<Option<(i64, usize)>, ProtocolError> {
    let window = &buf[at..buf.len().min(at + MAX_PREFIX_LINE)];
    let from = (*searched).max(1).min(window.len());
    let Some(cr) = window[from..]
        .iter()
        .position(|b| *b == b'\r')
        .map(|p| from + p)
    else {
        *scanned += (window.len() - from) as u64;
        *searched = window.len();
        return if window.len() == MAX_PREFIX_LINE {
            Err(ProtocolError("length prefix too long".into()))
        } else {
            Ok(None)
        };
    };
    *scanned += (cr + 1 - from) as u64;
    *searched = cr;
    if cr + 1 >= window.len() {
        return Ok(None);
    }
    *scanned += 1;
    if window[cr + 1] != b'\n' {
        return Err(ProtocolError("length prefix not terminated by CRLF".into()));
    }
    *searched = 0;
    let digits = std::str::from_utf8(&window[1..cr])
        .map_err(|_| ProtocolError("invalid length prefix".into()))?;
    let value: i64 = digits
        .parse()
        .map_err(|_| ProtocolError(format!("invalid length '{}'", digits.escape_default())))?;
    Ok(Some((value, at + cr + 2)))
}

fn parse_inline(
    buf: &mut BytesMut,
    searched: &mut usize,
    scanned: &mut u64,
) -> Result<Option<Request>, ProtocolError> {
    let window = &buf[..buf.len().min(MAX_INLINE_BYTES)];
    let from = (*searched).min(window.len());
    let Some(newline) = window[from..]
        .iter()
        .position(|b| *b == b'\n')
        .map(|p| from + p)
    else {
        *scanned += (window.len() - from) as u64;
        *searched = window.len();
        return if window.len() == MAX_INLINE_BYTES {
            Err(ProtocolError("too big inline request".into()))
        } else {
            Ok(None)
        };
    };
    *scanned += (newline + 1 - from) as u64;
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
    Ok(Some(Request { args, inline: true }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Result<Vec<Vec<Bytes>>, ProtocolError> {
        let mut buf = BytesMut::from(input);
        let mut parser = RequestParser::new(1 << 20);
        let mut out = Vec::new();
        while let Some(request) = parser.parse(&mut buf)? {
            out.push(request.args);
        }
        Ok(out)
    }

    fn parse_once(input: &[u8]) -> Result<Option<Request>, ProtocolError> {
        RequestParser::new(1 << 20).parse(&mut BytesMut::from(input))
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
            let mut parser = RequestParser::new(1 << 20);
            let mut buf = BytesMut::from(&full[..cut]);
            assert_eq!(parser.parse(&mut buf), Ok(None), "cut at {cut}");
            assert_eq!(
                buf.len(),
                cut,
                "nothing consumed from an incomplete request"
            );
            buf.extend_from_slice(&full[cut..]);
            let request = parser.parse(&mut buf).expect("valid").expect("complete");
            assert_eq!(request.args, vec![Bytes::from("GET"), Bytes::from("hello")]);
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn claimed_sizes_over_the_limit_are_refused_before_the_data_arrives() {
        assert!(parse_once(b"*1\r\n$999999999\r\n").is_err());
        let mut buf = b"*2\r\n$600000\r\n".to_vec();
        buf.extend_from_slice(&vec![b'a'; 600_000]);
        buf.extend_from_slice(b"\r\n$600000\r\n");
        assert!(parse_once(&buf).is_err(), "the sum of the arguments counts");
        assert!(parse_once(b"*99999999999\r\n").is_err());
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

    /// A request of `args` arguments of a few bytes each, and its length.
    fn many_args(args: usize) -> Vec<u8> {
        let mut out = format!("*{args}\r\n").into_bytes();
        for i in 0..args {
            let arg = format!("a{}", i % 1000);
            out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
        }
        out
    }

    #[test]
    fn a_request_fed_in_small_pieces_is_scanned_once() {
        let full = many_args(20_000);
        for piece in [1, 3, 7] {
            let mut parser = RequestParser::new(1 << 20);
            let mut buf = BytesMut::new();
            let mut parsed = None;
            for chunk in full.chunks(piece) {
                buf.extend_from_slice(chunk);
                if let Some(request) = parser.parse(&mut buf).expect("valid") {
                    parsed = Some(request);
                }
            }
            let request = parsed.expect("the whole request parsed");
            assert_eq!(request.args.len(), 20_000);
            assert_eq!(request.args[1234], Bytes::from("a234"));
            assert!(buf.is_empty());
            // Every byte of the prefixes and terminators at most once, the
            // arguments' data not at all.
            assert!(
                parser.scanned() <= full.len() as u64,
                "{} bytes examined for a {}-byte request fed {piece} at a time",
                parser.scanned(),
                full.len()
            );
        }
    }

    #[test]
    fn an_inline_line_fed_byte_by_byte_is_scanned_once() {
        let line = format!("{}\r\n", "x ".repeat(30_000));
        let mut parser = RequestParser::new(1 << 20);
        let mut buf = BytesMut::new();
        let mut parsed = None;
        for b in line.as_bytes() {
            buf.extend_from_slice(&[*b]);
            if let Some(request) = parser.parse(&mut buf).expect("valid") {
                parsed = Some(request);
            }
        }
        let request = parsed.expect("parsed");
        assert!(request.inline);
        assert_eq!(request.args.len(), 30_000);
        assert!(
            parser.scanned() <= line.len() as u64,
            "{}",
            parser.scanned()
        );
    }

    #[test]
    fn empty_requests_do_nothing() {
        assert_eq!(
            parse_all(b"*0\r\n\r\n").expect("parses"),
            vec![Vec::<Bytes>::new(), Vec::new()]
        );
    }
}
