//! HTTP/1.1 for the Runtime API: requests parsed incrementally from a connection's buffer
//! (`httparse` for the head; `Content-Length` and chunked bodies), responses written whole.
//!
//! The peer is the function's runtime: hostile like everything in the environment, but all it
//! can break is its own environment. Limits still apply so that a runtime cannot make hearth-init
//! buffer without bound: a 16 KiB head, 64 headers, and bodies over the caller's limit are read
//! and dropped (their size is still reported, for Lambda's `RequestEntityTooLarge`).

/// Largest request head.
pub(crate) const MAX_HEAD: usize = 16 * 1024;

/// A request, with its body (empty when it was over the limit: see `body_len`).
#[derive(Debug, Default)]
pub(crate) struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Length of the body as sent (larger than `body.len()` when it was dropped).
    pub body_len: u64,
    /// The client asked to close the connection after this request.
    pub close: bool,
}

impl Request {
    /// The first header named `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What [`Parser::feed`] found.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// A whole request.
    Request(Request),
    /// The bytes are not HTTP/1.1 this parser accepts; answer 400 and close.
    Invalid(&'static str),
}

#[derive(Debug)]
enum State {
    Head,
    /// A `Content-Length` body: bytes still to come.
    Fixed {
        request: Request,
        remaining: u64,
    },
    /// A chunked body.
    Chunked {
        request: Request,
        chunk: Chunk,
    },
}

#[derive(Debug, Clone, Copy)]
enum Chunk {
    /// Reading a chunk-size line.
    Size,
    /// Inside a chunk: bytes still to come, then CRLF.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last (zero) chunk: trailer lines up to an empty one.
    Trailer,
}

/// Incremental parser for one connection.
#[derive(Debug)]
pub(crate) struct Parser {
    state: State,
    max_body: usize,
}

impl Parser {
    /// A parser that keeps bodies of up to `max_body` bytes.
    pub(crate) fn new(max_body: usize) -> Self {
        Self {
            state: State::Head,
            max_body,
        }
    }

    /// Consumes what it can from the front of `buf` and returns the next complete request, if
    /// any. Call again while it returns requests (pipelining).
    pub(crate) fn feed(&mut self, buf: &mut Vec<u8>) -> Parsed {
        loop {
            match &mut self.state {
                State::Head => {
                    let mut headers = [httparse::EMPTY_HEADER; 64];
                    let mut head = httparse::Request::new(&mut headers);
                    let used = match head.parse(buf) {
                        Ok(httparse::Status::Complete(n)) => n,
                        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                            return Parsed::Invalid("request head too large")
                        }
                        Ok(httparse::Status::Partial) => return Parsed::Incomplete,
                        Err(_) => return Parsed::Invalid("malformed request head"),
                    };
                    if head.version != Some(1) && head.version != Some(0) {
                        return Parsed::Invalid("unsupported HTTP version");
                    }
                    let mut request = Request {
                        method: head.method.unwrap_or_default().to_owned(),
                        path: head.path.unwrap_or_default().to_owned(),
                        close: head.version == Some(0),
                        ..Request::default()
                    };
                    let mut length: Option<u64> = None;
                    let mut chunked = false;
                    for h in head.headers.iter() {
                        let Ok(value) = std::str::from_utf8(h.value) else {
                            return Parsed::Invalid("header value is not UTF-8");
                        };
                        let value = value.trim().to_owned();
                        if h.name.eq_ignore_ascii_case("content-length") {
                            match value.parse::<u64>() {
                                Ok(n) if length.is_none_or(|l| l == n) => length = Some(n),
                                _ => return Parsed::Invalid("bad Content-Length"),
                            }
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            if !value.eq_ignore_ascii_case("chunked") {
                                return Parsed::Invalid("unsupported Transfer-Encoding");
                            }
                            chunked = true;
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            request.close = value.eq_ignore_ascii_case("close");
                        }
                        request.headers.push((h.name.to_owned(), value));
                    }
                    if chunked && length.is_some() {
                        return Parsed::Invalid("both Content-Length and chunked");
                    }
                    buf.drain(..used);
                    self.state = match (chunked, length) {
                        (true, _) => State::Chunked {
                            request,
                            chunk: Chunk::Size,
                        },
                        (false, Some(n)) if n > 0 => State::Fixed {
                            request,
                            remaining: n,
                        },
                        _ => return Parsed::Request(request),
                    };
                }
                State::Fixed { request, remaining } => {
                    let took = take_body(request, buf, *remaining, self.max_body);
                    if took == 0 {
                        return Parsed::Incomplete;
                    }
                    *remaining -= took;
                    if *remaining == 0 {
                        return Parsed::Request(self.finish());
                    }
                }
                State::Chunked { request, chunk } => match *chunk {
                    Chunk::Size | Chunk::Trailer => {
                        let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
                            if buf.len() > 4096 {
                                return Parsed::Invalid("chunk line too long");
                            }
                            return Parsed::Incomplete;
                        };
                        let line = buf[..end].to_vec();
                        buf.drain(..end + 2);
                        if matches!(chunk, Chunk::Trailer) {
                            if line.is_empty() {
                                return Parsed::Request(self.finish());
                            }
                            continue;
                        }
                        let size = std::str::from_utf8(&line)
                            .ok()
                            .and_then(|l| l.split(';').next())
                            .and_then(|s| u64::from_str_radix(s.trim(), 16).ok());
                        *chunk = match size {
                            Some(0) => Chunk::Trailer,
                            Some(n) => Chunk::Data(n),
                            None => return Parsed::Invalid("bad chunk size"),
                        };
                    }
                    Chunk::Data(remaining) => {
                        let took = take_body(request, buf, remaining, self.max_body);
                        if took == 0 {
                            return Parsed::Incomplete;
                        }
                        *chunk = match remaining - took {
                            0 => Chunk::DataEnd,
                            n => Chunk::Data(n),
                        };
                    }
                    Chunk::DataEnd => {
                        if buf.len() < 2 {
                            return Parsed::Incomplete;
                        }
                        if &buf[..2] != b"\r\n" {
                            return Parsed::Invalid("chunk data not followed by CRLF");
                        }
                        buf.drain(..2);
                        *chunk = Chunk::Size;
                    }
                },
            }
        }
    }

    fn finish(&mut self) -> Request {
        match std::mem::replace(&mut self.state, State::Head) {
            State::Fixed { request, .. } | State::Chunked { request, .. } => request,
            State::Head => Request::default(),
        }
    }
}

/// Moves up to `remaining` body bytes from the front of `buf` into `request` (see [`keep`]);
/// returns how many.
fn take_body(request: &mut Request, buf: &mut Vec<u8>, remaining: u64, max: usize) -> u64 {
    let take = usize::try_from(remaining)
        .unwrap_or(usize::MAX)
        .min(buf.len());
    keep(request, &buf[..take], max);
    buf.drain(..take);
    take as u64
}

/// Appends body bytes, keeping at most `max` (the rest is only counted).
fn keep(request: &mut Request, bytes: &[u8], max: usize) {
    request.body_len += bytes.len() as u64;
    if request.body_len <= max as u64 {
        request.body.extend_from_slice(bytes);
    } else if !request.body.is_empty() {
        // Over the limit: drop what was kept so memory stays bounded.
        request.body = Vec::new();
    }
}

/// A complete response: status line, `Content-Length`, the given header lines (each ending in
/// CRLF), and the body.
pub(crate) fn response(
    status: u16,
    extra_headers: &[u8],
    content_type: &str,
    body: &[u8],
) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Request Entity Too Large",
        500 => "Internal Server Error",
        _ => "Unknown",
    };
    let mut out = Vec::with_capacity(128 + extra_headers.len() + body.len());
    out.extend_from_slice(format!("HTTP/1.1 {status} {reason}\r\n").as_bytes());
    out.extend_from_slice(extra_headers);
    if !content_type.is_empty() {
        out.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(bytes: &[u8], max: usize) -> Vec<Request> {
        let mut parser = Parser::new(max);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        // One byte at a time: every state must cope with partial input.
        for b in bytes {
            buf.push(*b);
            loop {
                match parser.feed(&mut buf) {
                    Parsed::Request(r) => out.push(r),
                    Parsed::Incomplete => break,
                    Parsed::Invalid(why) => panic!("{why}"),
                }
            }
        }
        out
    }

    #[test]
    fn pipelined_requests_with_fixed_and_chunked_bodies() {
        let raw = b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n\
POST /a/response HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
POST /b/response HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: v\r\n\r\n";
        let reqs = parse_all(raw, 100);
        assert_eq!(reqs.len(), 3);
        assert_eq!(reqs[0].method, "GET");
        assert_eq!(reqs[0].header("host"), Some("x"));
        assert_eq!(reqs[1].body, b"hello");
        assert_eq!(reqs[2].body, b"abcde");
        assert_eq!(reqs[2].body_len, 5);
    }

    #[test]
    fn oversized_bodies_are_counted_not_kept() {
        let mut raw = b"POST /r HTTP/1.1\r\nContent-Length: 10\r\n\r\n".to_vec();
        raw.extend_from_slice(b"0123456789");
        raw.extend_from_slice(b"GET /n HTTP/1.1\r\n\r\n");
        let reqs = parse_all(&raw, 4);
        assert_eq!(reqs.len(), 2, "the connection stays usable");
        assert!(reqs[0].body.is_empty());
        assert_eq!(reqs[0].body_len, 10);
        assert_eq!(reqs[1].path, "/n");
    }

    #[test]
    fn malformed_input_is_refused() {
        for raw in [
            &b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"NOT HTTP\r\n\r\n",
        ] {
            let mut parser = Parser::new(100);
            let mut buf = raw.to_vec();
            assert!(
                matches!(parser.feed(&mut buf), Parsed::Invalid(_)),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        let mut parser = Parser::new(100);
        let mut buf = vec![b'a'; MAX_HEAD + 1];
        assert!(matches!(parser.feed(&mut buf), Parsed::Invalid(_)));
    }
}
