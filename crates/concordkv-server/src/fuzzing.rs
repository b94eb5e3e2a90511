//! The entry point of the `request` fuzz target (`fuzz/`) and its
//! regression test: arbitrary bytes from a client through the request
//! parser, which must return (an error is a fine answer) without panicking,
//! hanging, or allocating what a hostile length claims.

use bytes::BytesMut;

use crate::server::request::RequestParser;

/// The request limit the target parses with (the default's order).
const MAX_REQUEST_BYTES: usize = 1 << 20;

/// `data` as bytes from a client: every request parsed off it in turn, once
/// with all of it there and once arriving in pieces (sizes taken from the
/// data itself), and both must parse the same requests.
pub fn request(data: &[u8]) {
    let whole = parse_arriving(data, data.len().max(1));
    let piece = usize::from(data.first().copied().unwrap_or(1) % 16) + 1;
    let pieces = parse_arriving(data, piece);
    assert_eq!(
        whole, pieces,
        "the same bytes in pieces of {piece} parse differently"
    );
}

/// The requests parsed off `data` arriving `piece` bytes at a time, up to
/// the first error (`None` in the list), or what is left incomplete.
fn parse_arriving(data: &[u8], piece: usize) -> Vec<Option<Vec<bytes::Bytes>>> {
    let mut parser = RequestParser::new(MAX_REQUEST_BYTES);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in data.chunks(piece) {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            match parser.parse(&mut buf) {
                Ok(Some(request)) => {
                    assert!(
                        buf.len() < before,
                        "a request was taken without consuming input"
                    );
                    out.push(Some(request.args));
                }
                Ok(None) => break,
                Err(_) => {
                    out.push(None);
                    return out;
                }
            }
        }
    }
    out
}
