//! HTTP/1.1 for the front door: request framing under RFC 9112's rules, and response writing.
//!
//! Parsing is allocation-free: [`parse_head`] runs `httparse` over the connection's buffer and
//! records where things are (byte ranges), so the invoke path reads the method, path and
//! headers in place. Framing rules enforced here, each answered with a status and a closed
//! connection because the next request's start can no longer be trusted:
//!
//! - `Transfer-Encoding` together with `Content-Length` → 400 (request smuggling);
//! - `Content-Length` repeated with different values, or not a plain decimal → 400;
//! - any transfer coding other than a single final `chunked` → 501;
//! - no `Host` in an HTTP/1.1 request → 400; HTTP versions other than 1.0/1.1 → 505;
//! - more than [`MAX_HEADERS`] headers or a head over [`MAX_HEAD_BYTES`] → 431;
//! - a body over the route's limit → 413 (decided before the body is read).

pub(crate) mod server;

use std::ops::Range;

/// Most header fields accepted in one request.
pub const MAX_HEADERS: usize = 64;
/// Largest request head (request line and headers).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Where one header is in the buffer.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HeaderPos {
    pub name: (u32, u32),
    pub value: (u32, u32),
}

/// How the body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `Content-Length` (0 when absent).
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head: positions into the connection buffer.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub method: (u32, u32),
    pub path: (u32, u32),
    pub query: (u32, u32),
    pub headers: [HeaderPos; MAX_HEADERS],
    pub header_count: usize,
    /// Bytes of the head, including the blank line.
    pub len: usize,
    pub framing: Framing,
    /// HTTP/1.0 without `Connection: keep-alive`, or `Connection: close`.
    pub close: bool,
    /// HTTP/1.0 (whose keep-alive must be confirmed in the response).
    pub http10: bool,
    pub expect_continue: bool,
}

fn range(p: (u32, u32)) -> Range<usize> {
    p.0 as usize..p.1 as usize
}

impl Head {
    pub(crate) fn method<'b>(&self, buf: &'b [u8]) -> &'b str {
        std::str::from_utf8(&buf[range(self.method)]).unwrap_or("")
    }

    pub(crate) fn path<'b>(&self, buf: &'b [u8]) -> &'b str {
        std::str::from_utf8(&buf[range(self.path)]).unwrap_or("")
    }

    pub(crate) fn query<'b>(&self, buf: &'b [u8]) -> &'b str {
        std::str::from_utf8(&buf[range(self.query)]).unwrap_or("")
    }

    /// Header `(name, value)` pairs.
    pub(crate) fn headers<'a, 'b: 'a>(
        &'a self,
        buf: &'b [u8],
    ) -> impl Iterator<Item = (&'b str, &'b [u8])> + 'a {
        self.headers[..self.header_count].iter().map(move |h| {
            (
                std::str::from_utf8(&buf[range(h.name)]).unwrap_or(""),
                &buf[range(h.value)],
            )
        })
    }

    /// The first value of header `name` (case-insensitive).
    pub(crate) fn header<'b>(&self, buf: &'b [u8], name: &str) -> Option<&'b [u8]> {
        self.headers(buf)
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

/// A request the parser refuses: answered with `status` and a closed connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub status: u16,
    pub message: &'static str,
}

const fn refuse(status: u16, message: &'static str) -> Refusal {
    Refusal { status, message }
}

/// Result of looking at the start of a buffer.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// More bytes are needed.
    Partial,
    /// A complete head.
    Head(Box<Head>),
}

fn offset(buf: &[u8], part: &[u8]) -> u32 {
    let start = (part.as_ptr() as usize).saturating_sub(buf.as_ptr() as usize);
    u32::try_from(start).unwrap_or(u32::MAX)
}

fn span(buf: &[u8], part: &[u8]) -> (u32, u32) {
    let start = offset(buf, part);
    (
        start,
        start.saturating_add(u32::try_from(part.len()).unwrap_or(u32::MAX)),
    )
}

/// Parses the request head at the start of `buf`.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Parsed, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let status = match request.parse(buf) {
        Ok(status) => status,
        Err(httparse::Error::TooManyHeaders) => return Err(refuse(431, "too many header fields")),
        Err(httparse::Error::Version) => return Err(refuse(505, "HTTP version not supported")),
        Err(_) => return Err(refuse(400, "malformed request")),
    };
    let len = match status {
        httparse::Status::Partial if buf.len() > MAX_HEAD_BYTES => {
            return Err(refuse(431, "request header fields too large"))
        }
        httparse::Status::Partial => return Ok(Parsed::Partial),
        httparse::Status::Complete(len) if len > MAX_HEAD_BYTES => {
            return Err(refuse(431, "request header fields too large"))
        }
        httparse::Status::Complete(len) => len,
    };
    let (Some(method), Some(target), Some(version)) =
        (request.method, request.path, request.version)
    else {
        return Err(refuse(400, "malformed request line"));
    };
    if !target.starts_with('/') {
        return Err(refuse(400, "the request target must be an absolute path"));
    }
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, query),
        None => (target, &target[target.len()..]),
    };
    let mut head = Head {
        method: span(buf, method.as_bytes()),
        path: span(buf, path.as_bytes()),
        query: span(buf, query.as_bytes()),
        headers: [HeaderPos::default(); MAX_HEADERS],
        header_count: 0,
        len,
        framing: Framing::Length(0),
        close: version == 0,
        http10: version == 0,
        expect_continue: false,
    };
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut host = false;
    for header in request.headers.iter() {
        let value = header.value;
        head.headers[head.header_count] = HeaderPos {
            name: span(buf, header.name.as_bytes()),
            value: span(buf, value),
        };
        head.header_count += 1;
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(value).unwrap_or("").trim();
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(refuse(400, "invalid Content-Length"));
            }
            let n: usize = text
                .parse()
                .map_err(|_| refuse(400, "invalid Content-Length"))?;
            if length.is_some_and(|old| old != n) {
                return Err(refuse(400, "conflicting Content-Length headers"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            // Codings are listed in order applied; only a single, final `chunked` is supported.
            let text = std::str::from_utf8(value).unwrap_or("");
            for coding in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                if chunked || !coding.eq_ignore_ascii_case("chunked") {
                    return Err(refuse(501, "unsupported transfer coding"));
                }
                chunked = true;
            }
        } else if name.eq_ignore_ascii_case("host") {
            host = true;
        } else if name.eq_ignore_ascii_case("connection") {
            let text = std::str::from_utf8(value).unwrap_or("");
            for token in text.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    head.close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") && version == 0 {
                    head.close = false;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            if value.eq_ignore_ascii_case(b"100-continue") {
                head.expect_continue = true;
            } else {
                return Err(refuse(417, "unsupported expectation"));
            }
        }
    }
    if transfer_encoding && length.is_some() {
        return Err(refuse(
            400,
            "Transfer-Encoding and Content-Length together are refused",
        ));
    }
    if transfer_encoding && !chunked {
        return Err(refuse(501, "unsupported transfer coding"));
    }
    if version == 1 && !host {
        return Err(refuse(400, "missing Host header"));
    }
    head.framing = if chunked {
        Framing::Chunked
    } else {
        Framing::Length(length.unwrap_or(0))
    };
    Ok(Parsed::Head(Box::new(head)))
}

/// Longest chunk-size line (size and extensions).
const MAX_CHUNK_LINE: usize = 1024;

/// Progress of decoding a chunked body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Chunked {
    /// More bytes are needed.
    Partial,
    /// The body is complete; the value is how many bytes of the input it used.
    Done(usize),
}

/// Decodes the chunked body at the start of `input` into `out` (cleared first), refusing a
/// body over `limit`. Trailers are read and ignored.
pub(crate) fn decode_chunked(
    input: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<Chunked, Refusal> {
    out.clear();
    let mut pos = 0;
    loop {
        let Some(line_end) = find_crlf(&input[pos..]) else {
            return if input.len() - pos > MAX_CHUNK_LINE {
                Err(refuse(400, "malformed chunk size"))
            } else {
                Ok(Chunked::Partial)
            };
        };
        if line_end > MAX_CHUNK_LINE {
            return Err(refuse(400, "chunk size line too long"));
        }
        let line = &input[pos..pos + line_end];
        let size_text = line.split(|&b| b == b';').next().unwrap_or(b"");
        let size_text = std::str::from_utf8(size_text)
            .map_err(|_| refuse(400, "malformed chunk size"))?
            .trim_end_matches([' ', '\t']);
        if size_text.is_empty()
            || size_text.len() > 8
            || !size_text.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(refuse(400, "malformed chunk size"));
        }
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| refuse(400, "malformed chunk size"))?;
        pos += line_end + 2;
        if size == 0 {
            // Trailer section: header lines until an empty line.
            let trailers = pos;
            loop {
                if pos - trailers > MAX_HEAD_BYTES {
                    return Err(refuse(431, "trailer section too large"));
                }
                let Some(end) = find_crlf(&input[pos..]) else {
                    return if input.len() - trailers > MAX_HEAD_BYTES {
                        Err(refuse(431, "trailer section too large"))
                    } else {
                        Ok(Chunked::Partial)
                    };
                };
                pos += end + 2;
                if end == 0 {
                    return Ok(Chunked::Done(pos));
                }
            }
        }
        if out.len() + size > limit {
            return Err(refuse(413, "request body too large"));
        }
        if input.len() < pos + size + 2 {
            return Ok(Chunked::Partial);
        }
        out.extend_from_slice(&input[pos..pos + size]);
        if &input[pos + size..pos + size + 2] != b"\r\n" {
            return Err(refuse(400, "malformed chunk"));
        }
        pos += size + 2;
    }
}

fn find_crlf(input: &[u8]) -> Option<usize> {
    input.windows(2).position(|w| w == b"\r\n")
}

/// Reason phrase of a status code.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        412 => "Precondition Failed",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// What a response says about its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Persist {
    /// HTTP/1.1 keep-alive: nothing to say.
    KeepAlive,
    /// An HTTP/1.0 client asked for keep-alive: confirm it.
    KeepAliveHttp10,
    /// `Connection: close`.
    Close,
}

impl Persist {
    pub(crate) fn new(close: bool, http10: bool) -> Self {
        match (close, http10) {
            (true, _) => Self::Close,
            (false, true) => Self::KeepAliveHttp10,
            (false, false) => Self::KeepAlive,
        }
    }
}

/// A response built by the control plane (the invoke path writes its own).
#[derive(Debug, Clone, Default)]
pub(crate) struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON response.
    pub(crate) fn json(status: u16, body: &serde_json::Value) -> Self {
        Self {
            status,
            headers: vec![("Content-Type", "application/json".into())],
            body: serde_json::to_vec(body).unwrap_or_default(),
        }
    }

    /// No body.
    pub(crate) fn empty(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Appends the response's bytes to `out`.
    pub(crate) fn write(&self, out: &mut Vec<u8>, request_id: &str, persist: Persist) {
        write_head(out, self.status, self.body.len(), request_id, persist);
        for (name, value) in &self.headers {
            push_header(out, name, value.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
    }
}

/// Appends a status line and the headers every response has; the caller adds its own headers
/// and the blank line.
pub(crate) fn write_head(
    out: &mut Vec<u8>,
    status: u16,
    content_length: usize,
    request_id: &str,
    persist: Persist,
) {
    use std::io::Write;
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nContent-Length: {content_length}\r\nx-amzn-RequestId: {request_id}\r\n",
        reason(status)
    );
    match persist {
        Persist::KeepAlive => {}
        Persist::KeepAliveHttp10 => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        Persist::Close => out.extend_from_slice(b"Connection: close\r\n"),
    }
}

/// Appends one header line.
pub(crate) fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Percent-decodes `input`; `None` if an escape is malformed or the result is not UTF-8.
pub(crate) fn percent_decode(input: &str) -> Option<String> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let text = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(text, 16).ok()?);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Query parameters, decoded; malformed pairs are skipped.
pub(crate) fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(k)?, percent_decode(v)?))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &[u8]) -> Result<Head, Refusal> {
        match parse_head(raw)? {
            Parsed::Head(h) => Ok(*h),
            Parsed::Partial => panic!("partial"),
        }
    }

    #[test]
    fn parses_a_request_in_place() {
        let raw = b"POST /2015-03-31/functions/f/invocations?Qualifier=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-Amz-Log-Type: Tail\r\n\r\nhello";
        let h = head(raw).unwrap();
        assert_eq!(h.method(raw), "POST");
        assert_eq!(h.path(raw), "/2015-03-31/functions/f/invocations");
        assert_eq!(h.query(raw), "Qualifier=1");
        assert_eq!(h.header(raw, "x-amz-log-type"), Some(&b"Tail"[..]));
        assert_eq!(h.framing, Framing::Length(5));
        assert_eq!(&raw[h.len..], b"hello");
        assert!(!h.close);
    }

    #[test]
    fn partial_heads_wait_for_more() {
        assert!(matches!(
            parse_head(b"GET / HTTP/1.1\r\nHo"),
            Ok(Parsed::Partial)
        ));
    }

    #[test]
    fn refuses_smuggling_and_bad_framing() {
        let cases: [(&[u8], u16); 8] = [
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 501),
            (b"GET / HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n", 400),
            (b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ];
        for (raw, status) in cases {
            assert_eq!(
                head(raw).map(|_| ()).unwrap_err().status,
                status,
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        let mut many = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..70 {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(head(&many).unwrap_err().status, 431);
        let huge = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 20_000]].concat();
        assert_eq!(parse_head(&huge).unwrap_err().status, 431);
    }

    #[test]
    fn decodes_chunked_bodies() {
        let mut out = Vec::new();
        let body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        assert_eq!(
            decode_chunked(body, &mut out, 100),
            Ok(Chunked::Done(body.len() - 4))
        );
        assert_eq!(out, b"hello world");
        assert_eq!(
            decode_chunked(&body[..12], &mut out, 100),
            Ok(Chunked::Partial)
        );
        assert_eq!(decode_chunked(body, &mut out, 8).unwrap_err().status, 413);
        assert_eq!(
            decode_chunked(b"zz\r\n", &mut out, 8).unwrap_err().status,
            400
        );
        assert_eq!(
            decode_chunked(b"2\r\nabX\r\n", &mut out, 8)
                .unwrap_err()
                .status,
            400
        );
        let long_extension = [b"1;".as_slice(), &[b'x'; 2000], b"\r\na\r\n"].concat();
        assert_eq!(
            decode_chunked(&long_extension, &mut out, 8)
                .unwrap_err()
                .status,
            400
        );
        let endless_trailers = [b"0\r\n".as_slice(), &b"X: y\r\n".repeat(4000)].concat();
        assert_eq!(
            decode_chunked(&endless_trailers, &mut out, 8)
                .unwrap_err()
                .status,
            431
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("fn%3Aprod").as_deref(), Some("fn:prod"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%+5"), None);
        assert_eq!(percent_decode("%ff"), None, "not UTF-8");
        let pairs: Vec<_> = query_pairs("tagKeys=a&tagKeys=b%20c&x").collect();
        assert_eq!(pairs[1], ("tagKeys".into(), "b c".into()));
        assert_eq!(pairs[2], ("x".into(), String::new()));
    }
}
