//! Cross-protocol attacks: a web page can make a browser send HTTP to a
//! loopback port, and a RESP server reading it as inline commands would run
//! the body's lines. Like Redis, a connection whose command is `POST` or
//! `Host:`, or whose first line is an HTTP request line, is closed before
//! anything after it runs.

use bytes::Bytes;

/// Whether `args` (a request's command and arguments) is HTTP talking to
/// the RESP port; `first_inline` says it is the connection's first request
/// and came as an inline line, where an HTTP request line would be.
pub fn looks_like_http(args: &[Bytes], first_inline: bool) -> bool {
    let Some(command) = args.first() else {
        return false;
    };
    command.eq_ignore_ascii_case(b"POST")
        || command.eq_ignore_ascii_case(b"Host:")
        || (first_inline && is_request_line(args))
}

/// `METHOD target HTTP/x.y`, with an upper-case method token.
fn is_request_line(args: &[Bytes]) -> bool {
    let [method, _target, version] = args else {
        return false;
    };
    let method_ok = !method.is_empty() && method.iter().all(u8::is_ascii_uppercase);
    let version_ok = match version.strip_prefix(b"HTTP/") {
        Some([major, b'.', minor]) => major.is_ascii_digit() && minor.is_ascii_digit(),
        Some([major]) => major.is_ascii_digit(),
        _ => false,
    };
    method_ok && version_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<Bytes> {
        line.split_whitespace()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect()
    }

    #[test]
    fn http_request_lines_and_headers_are_recognised() {
        assert!(looks_like_http(&args("GET / HTTP/1.1"), true));
        assert!(looks_like_http(&args("PUT /x?y=1 HTTP/2"), true));
        assert!(looks_like_http(&args("post / HTTP/1.0"), false));
        assert!(looks_like_http(&args("host: localhost:6380"), false));
        assert!(looks_like_http(&args("HOST: x"), false));
    }

    #[test]
    fn ordinary_commands_are_not_http() {
        assert!(!looks_like_http(&args("SET key HTTP/1.1"), false));
        assert!(!looks_like_http(&args("set key HTTP/1.1"), true));
        assert!(!looks_like_http(&args("GET key"), true));
        assert!(!looks_like_http(&args("PING"), true));
        assert!(!looks_like_http(&[], true));
        assert!(!looks_like_http(&args("GET / HTTP/one"), true));
    }
}
