//! Tier 2 (root): the daemon's HTTP front door against hostile and broken clients, over raw
//! sockets (`std::net::TcpStream`, `std::os::unix::net::UnixStream`): bytes written, bytes read.
//!
//! Every check asserts what a client sees: the status line, the `x-amzn-ErrorType` header, the
//! `{"Type", "message"}` body, whether the connection was closed after the response (a read
//! returns 0), and that the daemon is still alive and serving afterwards.
//!
//! Most tests share one `hearth serve --insecure-no-auth` daemon (short client timeouts: head
//! 500 ms, body 500 ms, idle 1 s) with a warm `echo` function; each test uses its own
//! connections. The drain, authentication and unix-socket tests start daemons of their own and
//! stop them with SIGTERM, requiring exit status 0.
//!
//! Groups, in order: framing refused · chunked bodies · smuggling · pipelining, `Expect`,
//! persistence · bad bodies and routes · oversized requests · slow clients · nothing leaked ·
//! SIGTERM drain · authentication · unix socket.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use hearth_tests::{require_root, workspace_binary};
use serde_json::{json, Value};

// ----- limits and timings ---------------------------------------------------------------------

/// The shared daemon's client timeouts, in its config file.
const HEAD_TIMEOUT_MS: u64 = 500;
const BODY_TIMEOUT_MS: u64 = 500;
const IDLE_TIMEOUT_MS: u64 = 1000;
const HEAD_TIMEOUT: Duration = Duration::from_millis(HEAD_TIMEOUT_MS);
const BODY_TIMEOUT: Duration = Duration::from_millis(BODY_TIMEOUT_MS);
const IDLE_TIMEOUT: Duration = Duration::from_millis(IDLE_TIMEOUT_MS);
/// How long an ordinary response may take (a cold start included).
const ANSWER_WITHIN: Duration = Duration::from_secs(15);
/// How long a connection may stay open after a response that must close it.
const CLOSE_WITHIN: Duration = Duration::from_secs(3);
/// Lambda's synchronous payload limit, hearth's asynchronous one.
const MAX_SYNC: usize = 6 * 1024 * 1024;
const MAX_ASYNC: usize = 1024 * 1024;
/// The shared daemon's warm function (handler `echo`).
const ECHO: &str = "echo";

// ----- a stored zip of the sample function, base64 ----------------------------------------------

/// CRC-32 (IEEE, reflected), bit by bit.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

fn le16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn le32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// A zip holding one file, `name`, STORED (no compression), with unix `mode`: local file header,
/// data, central directory, end of central directory.
fn stored_zip(name: &str, data: &[u8], mode: u32) -> Vec<u8> {
    let crc = crc32(data);
    let size = u32::try_from(data.len()).expect("small enough for a zip without zip64");
    let name_len = u16::try_from(name.len()).expect("short name");
    let (time, date) = (0u16, 0x21u16); // 1980-01-01 00:00
    let mut zip = Vec::with_capacity(data.len() + 128);
    // Local file header.
    le32(&mut zip, 0x0403_4b50);
    le16(&mut zip, 20); // version needed to extract
    le16(&mut zip, 0); // flags
    le16(&mut zip, 0); // method: stored
    le16(&mut zip, time);
    le16(&mut zip, date);
    le32(&mut zip, crc);
    le32(&mut zip, size); // compressed size
    le32(&mut zip, size); // uncompressed size
    le16(&mut zip, name_len);
    le16(&mut zip, 0); // extra field length
    zip.extend_from_slice(name.as_bytes());
    zip.extend_from_slice(data);
    // Central directory.
    let directory_start = u32::try_from(zip.len()).expect("small zip");
    le32(&mut zip, 0x0201_4b50);
    le16(&mut zip, 3 << 8 | 20); // made by: unix, so the external attributes carry the mode
    le16(&mut zip, 20); // version needed to extract
    le16(&mut zip, 0); // flags
    le16(&mut zip, 0); // method: stored
    le16(&mut zip, time);
    le16(&mut zip, date);
    le32(&mut zip, crc);
    le32(&mut zip, size);
    le32(&mut zip, size);
    le16(&mut zip, name_len);
    le16(&mut zip, 0); // extra field length
    le16(&mut zip, 0); // comment length
    le16(&mut zip, 0); // disk number
    le16(&mut zip, 0); // internal attributes
    le32(&mut zip, (0o100_000 | mode) << 16); // external attributes: regular file, mode
    le32(&mut zip, 0); // offset of the local header
    zip.extend_from_slice(name.as_bytes());
    let directory_len = u32::try_from(zip.len()).expect("small zip") - directory_start;
    // End of central directory.
    le32(&mut zip, 0x0605_4b50);
    le16(&mut zip, 0); // this disk
    le16(&mut zip, 0); // disk with the directory
    le16(&mut zip, 1); // entries on this disk
    le16(&mut zip, 1); // entries
    le32(&mut zip, directory_len);
    le32(&mut zip, directory_start);
    le16(&mut zip, 0); // comment length
    zip
}

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = byte(0) << 16 | byte(1) << 8 | byte(2);
        for i in 0..4 {
            if i <= chunk.len() {
                let index = usize::try_from((n >> (18 - 6 * i)) & 63).expect("six bits");
                out.push(char::from(ALPHABET[index]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The sample function zipped as `bootstrap` (mode 0755), base64-encoded: `Code.ZipFile`.
fn sample_zip_base64() -> &'static str {
    static ZIP: OnceLock<String> = OnceLock::new();
    ZIP.get_or_init(|| {
        let binary = std::fs::read(workspace_binary("hearth-sample-fn")).expect("read the sample");
        base64(&stored_zip("bootstrap", &binary, 0o755))
    })
}

// ----- requests -----------------------------------------------------------------------------

/// An HTTP/1.1 request with `Host`, the given headers, and `Content-Length` for a body (and for
/// every POST or PUT).
fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: hearth\r\n");
    for (name, value) in headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        let _ = write!(head, "Content-Length: {}\r\n", body.len());
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    raw
}

fn invoke_path(function: &str) -> String {
    format!("/2015-03-31/functions/{function}/invocations")
}

/// A synchronous invoke of `function` with `event`.
fn invoke_request(function: &str, event: &[u8]) -> Vec<u8> {
    request("POST", &invoke_path(function), &[], event)
}

/// CreateFunction's body for the sample function.
fn create_body(name: &str, handler: &str) -> Vec<u8> {
    json!({
        "FunctionName": name,
        "Runtime": "provided.al2023",
        "Role": "arn:aws:iam::123456789012:role/x",
        "Handler": handler,
        "Timeout": 30,
        "Code": {"ZipFile": sample_zip_base64()},
    })
    .to_string()
    .into_bytes()
}

/// At most `max` bytes of `bytes`, readable, for assertion messages.
fn lossy(bytes: &[u8], max: usize) -> String {
    let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(max)]).into_owned();
    if bytes.len() > max {
        format!("{shown:?}... ({} bytes)", bytes.len())
    } else {
        format!("{shown:?}")
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Deterministic pseudo-random bytes (xorshift64).
fn garbage(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed.to_le_bytes()[0]
        })
        .collect()
}

// ----- responses ----------------------------------------------------------------------------

/// One response as read off the wire.
#[derive(Debug)]
struct Response {
    status: u16,
    status_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the response says `Connection: close`.
    fn says_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }

    /// The response, readable, for assertion messages.
    fn show(&self) -> String {
        let mut text = self.status_line.clone();
        for (name, value) in &self.headers {
            let _ = write!(text, " | {name}: {value}");
        }
        let _ = write!(text, " | body {}", lossy(&self.body, 400));
        text
    }
}

/// Why no (complete) response was read.
#[derive(Debug)]
enum ReadError {
    /// Nothing more arrived before the deadline.
    Timeout,
    /// The peer closed the connection (a read returned 0).
    Closed,
    /// The read failed (e.g. the connection was reset).
    Failed(std::io::Error),
    /// The bytes are not an HTTP response.
    Malformed(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout => write!(f, "nothing more arrived in time"),
            Self::Closed => write!(f, "the connection was closed"),
            Self::Failed(e) => write!(f, "read failed: {e}"),
            Self::Malformed(m) => write!(f, "malformed response: {m}"),
        }
    }
}

fn is_reset(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
    )
}

// ----- connections --------------------------------------------------------------------------

/// Where a daemon listens.
#[derive(Debug, Clone)]
enum Endpoint {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

#[derive(Debug)]
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn set_read_timeout(&self, timeout: Duration) -> std::io::Result<()> {
        match self {
            Self::Tcp(s) => s.set_read_timeout(Some(timeout)),
            Self::Unix(s) => s.set_read_timeout(Some(timeout)),
        }
    }

    fn set_write_timeout(&self, timeout: Duration) -> std::io::Result<()> {
        match self {
            Self::Tcp(s) => s.set_write_timeout(Some(timeout)),
            Self::Unix(s) => s.set_write_timeout(Some(timeout)),
        }
    }

    fn try_clone(&self) -> std::io::Result<Self> {
        Ok(match self {
            Self::Tcp(s) => Self::Tcp(s.try_clone()?),
            Self::Unix(s) => Self::Unix(s.try_clone()?),
        })
    }

    fn shutdown_write(&self) -> std::io::Result<()> {
        match self {
            Self::Tcp(s) => s.shutdown(Shutdown::Write),
            Self::Unix(s) => s.shutdown(Shutdown::Write),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Tcp(s) => s.read(buf),
            Self::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Tcp(s) => s.write(buf),
            Self::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Tcp(s) => s.flush(),
            Self::Unix(s) => s.flush(),
        }
    }
}

/// A client connection: raw bytes out, responses parsed in, with deadlines on every read.
#[derive(Debug)]
struct Client {
    stream: Stream,
    /// Received and not yet consumed.
    buf: Vec<u8>,
}

impl Client {
    fn connect(endpoint: &Endpoint) -> std::io::Result<Self> {
        let stream = match endpoint {
            Endpoint::Tcp(addr) => {
                let s = TcpStream::connect_timeout(addr, Duration::from_secs(5))?;
                s.set_nodelay(true)?;
                Stream::Tcp(s)
            }
            Endpoint::Unix(path) => Stream::Unix(UnixStream::connect(path)?),
        };
        stream.set_write_timeout(Duration::from_secs(60))?;
        Ok(Self {
            stream,
            buf: Vec::new(),
        })
    }

    /// Writes all of `bytes` in one `write_all`.
    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    #[track_caller]
    fn send_ok(&mut self, bytes: &[u8]) {
        if let Err(e) = self.send(bytes) {
            panic!("sending {} failed: {e}", lossy(bytes, 200));
        }
    }

    /// Reads once more into the buffer, waiting until `deadline` at most.
    fn fill(&mut self, deadline: Instant) -> Result<(), ReadError> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ReadError::Timeout);
            }
            self.stream
                .set_read_timeout(left.max(Duration::from_millis(1)))
                .map_err(ReadError::Failed)?;
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ReadError::Closed),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(ReadError::Timeout)
                }
                Err(e) => return Err(ReadError::Failed(e)),
            }
        }
    }

    /// Reads one response (an interim `1xx` one included): the head up to CRLFCRLF, then exactly
    /// `Content-Length` body bytes. Bytes after it stay buffered for the next call.
    fn read_response(&mut self, within: Duration) -> Result<Response, ReadError> {
        let deadline = Instant::now() + within;
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if self.buf.len() > 64 * 1024 {
                return Err(ReadError::Malformed("a head over 64 KiB".into()));
            }
            self.fill(deadline)?;
        };
        let head = String::from_utf8(self.buf[..head_end - 4].to_vec())
            .map_err(|_| ReadError::Malformed(format!("head {}", lossy(&self.buf, 300))))?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("").to_owned();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        let status = parts.next().and_then(|s| s.parse::<u16>().ok());
        let (true, Some(status)) = (version.starts_with("HTTP/1."), status) else {
            return Err(ReadError::Malformed(format!("status line {status_line:?}")));
        };
        let mut headers = Vec::new();
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                return Err(ReadError::Malformed(format!("header line {line:?}")));
            };
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        let length = if (100..200).contains(&status) {
            0
        } else {
            let value = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| v.as_str())
                .ok_or_else(|| ReadError::Malformed(format!("no Content-Length in {head:?}")))?;
            value
                .parse::<usize>()
                .map_err(|_| ReadError::Malformed(format!("Content-Length {value:?}")))?
        };
        self.buf.drain(..head_end);
        while self.buf.len() < length {
            self.fill(deadline)?;
        }
        let body: Vec<u8> = self.buf.drain(..length).collect();
        Ok(Response {
            status,
            status_line,
            headers,
            body,
        })
    }

    /// [`Client::read_response`], panicking with `what` if there is none.
    #[track_caller]
    fn response(&mut self, what: &str) -> Response {
        match self.read_response(ANSWER_WITHIN) {
            Ok(r) => r,
            Err(e) => panic!(
                "{what}: no response: {e} (buffered: {})",
                lossy(&self.buf, 300)
            ),
        }
    }

    /// Ok when the peer closes the connection (a read returns 0, or the connection is reset)
    /// within `within` without sending anything more.
    fn closed_within(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            if !self.buf.is_empty() {
                return Err(format!(
                    "more bytes instead of a close: {}",
                    lossy(&self.buf, 400)
                ));
            }
            match self.fill(deadline) {
                Ok(()) => {}
                Err(ReadError::Closed) => return Ok(()),
                Err(ReadError::Failed(e)) if is_reset(&e) => return Ok(()),
                Err(ReadError::Timeout) => {
                    return Err(format!("the connection is still open after {within:?}"))
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    #[track_caller]
    fn assert_closed(&mut self, what: &str) {
        if let Err(e) = self.closed_within(CLOSE_WITHIN) {
            panic!("{what}: {e}");
        }
    }
}

// ----- assertions ---------------------------------------------------------------------------

/// Asserts `response` is an error in Lambda's shape with `status`: an `x-amzn-ErrorType`
/// header, a request id, and a JSON body `{"Type": "User"|"Service", "message": "..."}`.
/// Returns the error type and the message.
#[track_caller]
fn assert_error_shape(response: &Response, status: u16) -> (String, String) {
    let shown = response.show();
    assert_eq!(response.status, status, "{shown}");
    let error_type = response
        .header("x-amzn-ErrorType")
        .unwrap_or_else(|| panic!("no x-amzn-ErrorType header: {shown}"));
    assert!(!error_type.is_empty(), "empty x-amzn-ErrorType: {shown}");
    assert!(
        response
            .header("x-amzn-RequestId")
            .is_some_and(|v| !v.is_empty()),
        "no x-amzn-RequestId: {shown}"
    );
    let body: Value = serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("the error body is not JSON ({e}): {shown}"));
    let expected_type = if status >= 500 { "Service" } else { "User" };
    assert_eq!(body["Type"], expected_type, "{shown}");
    let message = body["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no string \"message\": {shown}"));
    assert!(!message.is_empty(), "empty message: {shown}");
    (error_type.to_owned(), message.to_owned())
}

/// [`assert_error_shape`] with a given error type; returns the message.
#[track_caller]
fn assert_error(response: &Response, status: u16, error_type: &str) -> String {
    let (actual, message) = assert_error_shape(response, status);
    assert_eq!(actual, error_type, "{}", response.show());
    message
}

/// Asserts a successful invoke answered `body`.
#[track_caller]
fn assert_answer(response: &Response, body: &[u8]) {
    assert_eq!(response.status, 200, "{}", response.show());
    assert_eq!(
        response.header("X-Amz-Executed-Version"),
        Some("$LATEST"),
        "{}",
        response.show()
    );
    assert!(
        response.body == body,
        "expected the body {}, got {}",
        lossy(body, 200),
        response.show()
    );
}

/// Sends `raw` on a fresh connection to the shared daemon and asserts it is refused with
/// `status`: an error response saying `Connection: close`, then the connection closed, with
/// nothing else sent (so nothing hidden in the bytes was answered).
#[track_caller]
fn assert_refused(raw: &[u8], status: u16) -> Response {
    let what = lossy(raw, 300);
    let mut client = shared().connect();
    // A refusal may come (and the connection close) before everything is written.
    if let Err(e) = client.send(raw) {
        assert!(is_reset(&e), "sending {what}: {e}");
    }
    let response = match client.read_response(ANSWER_WITHIN) {
        Ok(r) => r,
        Err(e) => panic!("{what}: no response: {e}"),
    };
    assert_error_shape(&response, status);
    assert!(
        response.says_close(),
        "{what}: the refusal does not say Connection: close: {}",
        response.show()
    );
    client.assert_closed(&format!("after refusing {what}"));
    response
}

// ----- processes and cgroups ------------------------------------------------------------------

/// Live processes of function `function`'s environments: processes running the sample function
/// (`/var/task/bootstrap`) whose environment says `AWS_LAMBDA_FUNCTION_NAME=<function>`.
/// (Matching the function name keeps the count free of other tests' environments.)
fn environment_pids(function: &str) -> Vec<i32> {
    let marker = format!("AWS_LAMBDA_FUNCTION_NAME={function}");
    let sample = workspace_binary("hearth-sample-fn");
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let dir = entry.path();
        let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
        let exe = std::fs::read_link(dir.join("exe")).ok();
        if !contains(&cmdline, b"bootstrap") && exe.as_deref() != Some(sample.as_path()) {
            continue;
        }
        let environ = std::fs::read(dir.join("environ")).unwrap_or_default();
        if environ.split(|&b| b == 0).any(|v| v == marker.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

/// cgroup directories of daemon `pid`: `<mount>/hearth/pid-<pid>-*` under `/sys/fs/cgroup`
/// (cgroup v2 at the root, v1 and the v2 `unified` mount one level down).
fn daemon_cgroups(pid: i32) -> Vec<PathBuf> {
    let prefix = format!("pid-{pid}-");
    let root = Path::new("/sys/fs/cgroup");
    let mut parents = vec![root.join("hearth")];
    if let Ok(entries) = std::fs::read_dir(root) {
        parents.extend(entries.flatten().map(|e| e.path().join("hearth")));
    }
    parents
        .iter()
        .filter_map(|p| std::fs::read_dir(p).ok())
        .flat_map(|entries| entries.flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

// ----- daemons ------------------------------------------------------------------------------

/// How to start a daemon.
#[derive(Debug, Clone)]
struct Options {
    /// The `--config` file's JSON.
    config: Value,
    /// Verify signatures (no `--insecure-no-auth`).
    auth: bool,
    /// Listen on `unix:<dir>/hearth.sock` instead of `127.0.0.1:0`.
    unix: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            config: json!({"shards": 2}),
            auth: false,
            unix: false,
        }
    }
}

/// A running `hearth serve`. Its stderr is drained by a thread into `stderr`. Dropped while
/// still running, it gets SIGTERM, then SIGKILL after 5 s.
#[derive(Debug)]
struct Daemon {
    child: Mutex<Child>,
    pid: i32,
    endpoint: Endpoint,
    stderr: Arc<Mutex<String>>,
    /// Holds `config.json`, `data/` (the data directory) and maybe `hearth.sock`.
    dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts a daemon and waits (30 s at most) for `hearth: listening on ...` on its stderr.
    fn start(options: &Options) -> Self {
        require_root();
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("config.json");
        std::fs::write(&config, options.config.to_string()).expect("write config.json");
        let listen = if options.unix {
            format!("unix:{}", dir.path().join("hearth.sock").display())
        } else {
            "127.0.0.1:0".to_owned()
        };
        let mut command = Command::new(workspace_binary("hearth"));
        command
            .arg("serve")
            .arg("--listen")
            .arg(&listen)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if !options.auth {
            command.arg("--insecure-no-auth");
        }
        let on_parent_death = || {
            // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag of the calling (child) process;
            // it is async-signal-safe and touches no memory shared with the parent.
            let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
            if rc == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        };
        // SAFETY: the hook runs between fork and exec and only calls prctl (see above). The
        // daemon drains and stops if this test process dies without stopping it.
        unsafe { command.pre_exec(on_parent_death) };
        let mut child = command.spawn().expect("start hearth serve");
        let pid = i32::try_from(child.id()).expect("pid");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = mpsc::channel::<String>();
        {
            let pipe = child.stderr.take().expect("stderr pipe");
            let log = stderr.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(pipe);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match reader.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let text = String::from_utf8_lossy(&line);
                    if let Some(address) = text.trim_end().strip_prefix("hearth: listening on ") {
                        let _ = ready_tx.send(address.to_owned());
                    }
                    let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
                    if log.len() < 4 << 20 {
                        log.push_str(&text);
                    }
                }
            });
        }
        let address = match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(address) => address,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = stderr.lock().unwrap_or_else(PoisonError::into_inner);
                panic!("hearth serve did not say it is listening ({e}); stderr:\n{log}");
            }
        };
        let endpoint = if let Some(path) = address.strip_prefix("unix:") {
            Endpoint::Unix(PathBuf::from(path))
        } else {
            let addr = address.strip_prefix("http://").unwrap_or(&address);
            Endpoint::Tcp(addr.parse().unwrap_or_else(|e| {
                panic!("the listening line names {address:?}, not an address: {e}")
            }))
        };
        Self {
            child: Mutex::new(child),
            pid,
            endpoint,
            stderr,
            dir,
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn try_connect(&self) -> std::io::Result<Client> {
        Client::connect(&self.endpoint)
    }

    #[track_caller]
    fn connect(&self) -> Client {
        self.try_connect()
            .unwrap_or_else(|e| panic!("connecting to {:?}: {e}", self.endpoint))
    }

    /// Sends `raw` on a fresh connection and reads the response.
    #[track_caller]
    fn call(&self, raw: &[u8]) -> Response {
        let mut client = self.connect();
        client.send_ok(raw);
        client.response(&lossy(raw, 200))
    }

    #[track_caller]
    fn invoke(&self, function: &str, event: &[u8]) -> Response {
        self.call(&invoke_request(function, event))
    }

    /// Creates a function running the sample with `handler`; asserts 201.
    #[track_caller]
    fn create_function(&self, name: &str, handler: &str) {
        let mut client = self.connect();
        client.send_ok(&request(
            "POST",
            "/2015-03-31/functions",
            &[("Content-Type", "application/json")],
            &create_body(name, handler),
        ));
        let response = match client.read_response(Duration::from_secs(120)) {
            Ok(r) => r,
            Err(e) => panic!("CreateFunction {name}: no response: {e}"),
        };
        assert_eq!(
            response.status,
            201,
            "CreateFunction {name}: {}",
            response.show()
        );
    }

    /// Whether the process is still running (not exited, not a zombie).
    fn is_running(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        matches!(child.try_wait(), Ok(None))
    }

    fn signal(&self, signal: i32) {
        if self.is_running() {
            // SAFETY: kill(2) on our own child, which has not been reaped (checked above, under
            // the same lock discipline: only this struct reaps it).
            unsafe { libc::kill(self.pid, signal) };
        }
    }

    /// Waits up to `within` for the process to exit.
    fn wait_exit(&self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            {
                let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
                if let Ok(Some(status)) = child.try_wait() {
                    return Some(status);
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asserts the process exited with status 0 within 20 s (SIGTERM sent already) and said
    /// `hearth: stopped`.
    #[track_caller]
    fn assert_stops_cleanly(&self) {
        let Some(status) = self.wait_exit(Duration::from_secs(20)) else {
            panic!(
                "hearth did not exit within 20 s of SIGTERM; stderr:\n{}",
                self.stderr()
            );
        };
        assert!(
            status.success(),
            "hearth exited with {status} after SIGTERM; stderr:\n{}",
            self.stderr()
        );
        // The stderr thread may still be reading the last lines.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.stderr().contains("hearth: stopped") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            self.stderr().contains("hearth: stopped"),
            "no 'hearth: stopped' on stderr:\n{}",
            self.stderr()
        );
    }

    /// SIGTERM, then [`Daemon::assert_stops_cleanly`].
    #[track_caller]
    fn stop(&self) {
        self.signal(libc::SIGTERM);
        self.assert_stops_cleanly();
    }

    /// Ends the process if it still runs: SIGTERM, SIGKILL after `grace`.
    fn kill(&self, grace: Duration) {
        self.signal(libc::SIGTERM);
        if self.wait_exit(grace).is_none() {
            let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill(Duration::from_secs(5));
    }
}

/// The daemon most tests share, with a warm `echo` function. It is started from a thread that
/// lives as long as the test process (`PR_SET_PDEATHSIG` fires when the *thread* that started a
/// process ends), and stopped at exit by an `atexit` handler, which also removes its directory.
fn shared() -> &'static Daemon {
    static SHARED: OnceLock<Daemon> = OnceLock::new();
    extern "C" fn stop_shared() {
        if let Some(daemon) = SHARED.get() {
            daemon.kill(Duration::from_secs(20));
            let _ = std::fs::remove_dir_all(daemon.dir.path());
        }
    }
    SHARED.get_or_init(|| {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("hearth-keeper".into())
            .spawn(move || {
                let options = Options {
                    config: json!({
                        "head_timeout_ms": HEAD_TIMEOUT_MS,
                        "body_timeout_ms": BODY_TIMEOUT_MS,
                        "idle_timeout_ms": IDLE_TIMEOUT_MS,
                        "shards": 2,
                    }),
                    ..Options::default()
                };
                let started = std::panic::catch_unwind(|| Daemon::start(&options));
                let failed = started.is_err();
                let _ = tx.send(started);
                if !failed {
                    loop {
                        std::thread::park();
                    }
                }
            })
            .expect("spawn the keeper thread");
        let daemon = match rx.recv().expect("the keeper thread answers") {
            Ok(daemon) => daemon,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        // SAFETY: registers a plain `extern "C" fn` to run at exit; it only uses `SHARED`,
        // which lives for the whole process.
        unsafe { libc::atexit(stop_shared) };
        daemon.create_function(ECHO, "echo");
        let warm = daemon.invoke(ECHO, b"\"warm\"");
        assert_answer(&warm, b"\"warm\"");
        daemon
    })
}

// ===== framing refused: a status, then a closed connection =====================================

#[test]
fn transfer_encoding_with_content_length_is_refused() {
    let raw = format!(
        "POST {} HTTP/1.1\r\nHost: hearth\r\nTransfer-Encoding: chunked\r\nContent-Length: 7\r\n\r\n7\r\n\"hello\"\r\n0\r\n\r\n",
        invoke_path(ECHO)
    );
    assert_refused(raw.as_bytes(), 400);
}

#[test]
fn conflicting_content_lengths_are_refused() {
    let raw = format!(
        "POST {} HTTP/1.1\r\nHost: hearth\r\nContent-Length: 7\r\nContent-Length: 8\r\n\r\n\"hello\" ",
        invoke_path(ECHO)
    );
    assert_refused(raw.as_bytes(), 400);
}

#[test]
fn content_length_that_is_not_a_plain_number_is_refused() {
    for value in [
        "+5",
        "5, 5",
        "-5",
        "0x5",
        "5 5",
        "",
        "5a",
        "99999999999999999999999",
    ] {
        let raw = format!(
            "POST {} HTTP/1.1\r\nHost: hearth\r\nContent-Length: {value}\r\n\r\n\"abc\"",
            invoke_path(ECHO)
        );
        assert_refused(raw.as_bytes(), 400);
    }
}

#[test]
fn unsupported_transfer_codings_are_not_implemented() {
    for coding in ["gzip, chunked", "xchunked"] {
        let raw = format!(
            "POST {} HTTP/1.1\r\nHost: hearth\r\nTransfer-Encoding: {coding}\r\n\r\n7\r\n\"hello\"\r\n0\r\n\r\n",
            invoke_path(ECHO)
        );
        assert_refused(raw.as_bytes(), 501);
    }
}

#[test]
fn whitespace_before_a_header_colon_is_refused() {
    let raw = format!(
        "POST {} HTTP/1.1\r\nHost: hearth\r\nTransfer-Encoding : chunked\r\n\r\n7\r\n\"hello\"\r\n0\r\n\r\n",
        invoke_path(ECHO)
    );
    assert_refused(raw.as_bytes(), 400);
}

#[test]
fn malformed_chunk_sizes_are_refused() {
    for body in [
        "zz\r\nhello\r\n0\r\n\r\n",
        "-7\r\n\"hello\"\r\n0\r\n\r\n",
        "7x\r\n\"hello\"\r\n0\r\n\r\n",
    ] {
        let raw = format!(
            "POST {} HTTP/1.1\r\nHost: hearth\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
            invoke_path(ECHO)
        );
        assert_refused(raw.as_bytes(), 400);
    }
}

#[test]
fn chunk_data_not_followed_by_crlf_is_refused() {
    let raw = format!(
        "POST {} HTTP/1.1\r\nHost: hearth\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n\"hello\"XX0\r\n\r\n",
        invoke_path(ECHO)
    );
    assert_refused(raw.as_bytes(), 400);
}

#[test]
fn http11_without_host_is_refused() {
    let raw = format!(
        "POST {} HTTP/1.1\r\nContent-Length: 7\r\n\r\n\"hello\"",
        invoke_path(ECHO)
    );
    assert_refused(raw.as_bytes(), 400);
}

#[test]
fn other_http_versions_are_not_supported() {
    assert_refused(b"GET / HTTP/2.0\r\nHost: hearth\r\n\r\n", 505);
}

#[test]
fn absolute_form_targets_are_refused() {
    assert_refused(b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400);
}

#[test]
fn more_than_64_headers_get_431() {
    let head = |count: usize| {
        // Host is the first of `count` header fields.
        let mut raw = "GET /nope HTTP/1.1\r\nHost: hearth\r\n".to_owned();
        for i in 1..count {
            let _ = write!(raw, "X-Filler-{i}: y\r\n");
        }
        raw.push_str("\r\n");
        raw.into_bytes()
    };
    assert_refused(&head(65), 431);
    assert_refused(&head(200), 431);
    // 64 are served (here: an unknown route).
    let response = shared().call(&head(64));
    assert_error(&response, 404, "UnknownOperationException");
}

#[test]
fn a_20_kb_header_gets_431() {
    let raw = format!(
        "GET /nope HTTP/1.1\r\nHost: hearth\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert_refused(raw.as_bytes(), 431);
}

#[test]
fn binary_garbage_gets_400_or_a_close_but_never_a_hang() {
    let mut inputs = vec![
        garbage(4096, 0x9e37_79b9_7f4a_7c15),
        garbage(100, 42),
        vec![0u8; 512],
        // A TLS ClientHello's start.
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
        b"\r\n\r\n\r\n\r\n".to_vec(),
        b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
    ];
    inputs.push(
        [
            b"POST / HTTP/1.1\r\nHost: x\r\n".as_slice(),
            &garbage(300, 7),
        ]
        .concat(),
    );
    for input in inputs {
        let what = lossy(&input, 80);
        let mut client = shared().connect();
        if let Err(e) = client.send(&input) {
            assert!(is_reset(&e), "{what}: {e}");
        }
        match client.read_response(Duration::from_secs(5)) {
            Ok(response) => {
                // Input that could still be the start of a request (blank lines before a
                // request line are allowed) waits for the head timeout: 408.
                let status = if response.status == 408 { 408 } else { 400 };
                assert_error_shape(&response, status);
                client.assert_closed(&format!("after garbage {what}"));
            }
            Err(ReadError::Closed) => {}
            Err(ReadError::Failed(e)) if is_reset(&e) => {}
            Err(e) => panic!("garbage {what}: neither a 400 nor a close: {e}"),
        }
    }
    // Still serving.
    assert_answer(
        &shared().invoke(ECHO, b"\"after garbage\""),
        b"\"after garbage\"",
    );
}

// ===== chunked bodies ========================================================================

#[test]
fn a_chunked_invoke_body_is_decoded() {
    let mut client = shared().connect();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: hearth\r\nTransfer-Encoding: chunked\r\n\r\n",
        invoke_path(ECHO)
    );
    // Two chunks, in two writes; an extension on the second, a trailer at the end.
    client.send_ok(format!("{head}4\r\n\"hel\r\n").as_bytes());
    std::thread::sleep(Duration::from_millis(50));
    client.send_ok(b"3;ext=1\r\nlo\"\r\n0\r\nX-Trailer: t\r\n\r\n");
    let response = client.response("chunked invoke");
    assert_answer(&response, b"\"hello\"");
    assert!(!response.says_close(), "{}", response.show());
    // The body was consumed exactly: the connection serves the next request.
    client.send_ok(&invoke_request(ECHO, b"\"next\""));
    assert_answer(&client.response("after a chunked request"), b"\"next\"");
}

// ===== request smuggling ===================================================================

/// A hidden request that would be answered (200, ListFunctions) if it were ever parsed.
const HIDDEN: &str = "GET /2015-03-31/functions HTTP/1.1\r\nHost: hearth\r\n\r\n";

#[test]
fn cl_te_smuggling_is_refused_and_the_hidden_request_never_answered() {
    // A front end using Content-Length forwards all; one using chunked would stop at `0`.
    let body = format!("0\r\n\r\n{HIDDEN}");
    let raw = format!(
        "POST {} HTTP/1.1\r\nHost: hearth\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
        invoke_path(ECHO),
        body.len()
    );
    assert_refused(raw.as_bytes(), 400);
}

#[test]
fn te_cl_smuggling_is_refused_and_the_hidden_request_never_answered() {
    // A front end using chunked forwards all; one using Content-Length: 4 would stop at `5c\r\n`.
    let hidden_chunk = format!("{:x}\r\n{HIDDEN}\r\n0\r\n\r\n", HIDDEN.len());
    let raw = format!(
        "POST {} HTTP/1.1\r\nHost: hearth\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{hidden_chunk}",
        invoke_path(ECHO)
    );
    assert_refused(raw.as_bytes(), 400);
}

#[test]
fn obfuscated_transfer_encodings_are_refused_and_the_hidden_request_never_answered() {
    let path = invoke_path(ECHO);
    let cases = [
        // Lowercase name, CL first.
        (
            format!("POST {path} HTTP/1.1\r\nHost: hearth\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n{HIDDEN}"),
            400,
        ),
        // A second Transfer-Encoding header some parsers ignore.
        (
            format!("POST {path} HTTP/1.1\r\nHost: hearth\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: cow\r\n\r\n0\r\n\r\n{HIDDEN}"),
            501,
        ),
        // Two lengths: which one does the next hop believe?
        (
            format!("POST {path} HTTP/1.1\r\nHost: hearth\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{HIDDEN}", HIDDEN.len()),
            400,
        ),
    ];
    for (raw, status) in cases {
        assert_refused(raw.as_bytes(), status);
    }
}

// ===== pipelining, Expect, persistence =========================================================

#[test]
fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let mut raw = invoke_request(ECHO, b"\"first\"");
    raw.extend(request("GET", "/nope", &[], b""));
    raw.extend(invoke_request(ECHO, b"\"third\""));
    let mut client = shared().connect();
    client.send_ok(&raw);
    assert_answer(&client.response("first pipelined"), b"\"first\"");
    assert_error(
        &client.response("second pipelined"),
        404,
        "UnknownOperationException",
    );
    assert_answer(&client.response("third pipelined"), b"\"third\"");
    // Still open and serving.
    client.send_ok(&invoke_request(ECHO, b"\"fourth\""));
    assert_answer(&client.response("after the pipeline"), b"\"fourth\"");
}

#[test]
fn a_flood_of_pipelined_requests_is_answered_without_exhausting_the_daemon() {
    // 20,000 requests in one stream, each answered at once (404): the front door must work
    // through them iteratively, not by nesting a call per request.
    const N: usize = 20_000;
    let one = request("GET", "/nope", &[], b"");
    let raw = one.repeat(N);
    let mut client = shared().connect();
    let writer = {
        let mut stream = client.stream.try_clone().expect("clone stream");
        std::thread::spawn(move || stream.write_all(&raw))
    };
    for i in 0..N {
        let response = client.response(&format!("pipelined request {i}"));
        assert_eq!(response.status, 404, "{}", response.show());
    }
    writer.join().expect("writer").expect("sending the flood");
    client.send_ok(&invoke_request(ECHO, b"\"after the flood\""));
    assert_answer(&client.response("after the flood"), b"\"after the flood\"");
}

#[test]
fn expect_100_continue_gets_continue_before_the_body() {
    let event = b"\"continued\"";
    let mut client = shared().connect();
    client.send_ok(
        format!(
            "POST {} HTTP/1.1\r\nHost: hearth\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            invoke_path(ECHO),
            event.len()
        )
        .as_bytes(),
    );
    let interim = client.response("waiting for 100 Continue");
    assert_eq!(interim.status, 100, "{}", interim.show());
    assert!(interim.body.is_empty());
    client.send_ok(event);
    assert_answer(&client.response("after 100 Continue"), event);

    // A body over the limit is refused at once, without a 100 Continue.
    let mut client = shared().connect();
    client.send_ok(
        format!(
            "POST {} HTTP/1.1\r\nHost: hearth\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            invoke_path(ECHO),
            MAX_SYNC + 1
        )
        .as_bytes(),
    );
    let response = client.response("an oversized Expect: 100-continue");
    assert_error(&response, 413, "RequestTooLargeException");
    client.assert_closed("after refusing an oversized body");
}

#[test]
fn connection_close_is_honoured() {
    let mut client = shared().connect();
    client.send_ok(&request(
        "POST",
        &invoke_path(ECHO),
        &[("Connection", "close")],
        b"\"bye\"",
    ));
    let response = client.response("Connection: close");
    assert_answer(&response, b"\"bye\"");
    assert!(response.says_close(), "{}", response.show());
    client.assert_closed("after Connection: close");
}

#[test]
fn http10_closes_unless_keep_alive_is_asked_for() {
    let raw = format!(
        "POST {} HTTP/1.0\r\nContent-Length: 5\r\n\r\n\"one\"",
        invoke_path(ECHO)
    );
    let mut client = shared().connect();
    client.send_ok(raw.as_bytes());
    assert_answer(&client.response("HTTP/1.0"), b"\"one\"");
    client.assert_closed("after an HTTP/1.0 request without keep-alive");

    let raw = format!(
        "POST {} HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\n\"two\"",
        invoke_path(ECHO)
    );
    let mut client = shared().connect();
    client.send_ok(raw.as_bytes());
    let response = client.response("HTTP/1.0 keep-alive");
    assert_answer(&response, b"\"two\"");
    assert!(!response.says_close(), "{}", response.show());
    client.send_ok(raw.as_bytes());
    assert_answer(&client.response("second HTTP/1.0 keep-alive"), b"\"two\"");
}

#[test]
fn http11_connections_are_kept_alive_by_default() {
    let mut client = shared().connect();
    for event in [&b"\"a\""[..], b"\"b\"", b"{\"c\": [1, 2]}"] {
        client.send_ok(&invoke_request(ECHO, event));
        let response = client.response("keep-alive");
        assert_answer(&response, event);
        assert!(!response.says_close(), "{}", response.show());
    }
}

// ===== bad bodies and routes ===================================================================

#[test]
fn bad_control_bodies_are_invalid_request_content() {
    let create = |body: &[u8], content_type: &str| {
        request(
            "POST",
            "/2015-03-31/functions",
            &[("Content-Type", content_type)],
            body,
        )
    };
    let cases: [(&str, Vec<u8>); 4] = [
        (
            "invalid JSON",
            create(b"{\"FunctionName\": ", "application/json"),
        ),
        (
            "invalid UTF-8",
            create(b"{\"FunctionName\": \"\xff\xfe\"}", "application/json"),
        ),
        (
            "a JSON array",
            create(b"[\"FunctionName\", \"f\"]", "application/json"),
        ),
        (
            "a form",
            create(
                b"FunctionName=f&Runtime=provided.al2023&Handler=echo",
                "application/x-www-form-urlencoded",
            ),
        ),
    ];
    // One keep-alive connection: an API error does not end it.
    let mut client = shared().connect();
    for (what, raw) in cases {
        client.send_ok(&raw);
        let response = client.response(what);
        let message = assert_error(&response, 400, "InvalidRequestContentException");
        assert!(!response.says_close(), "{what}: {}", response.show());
        assert!(!message.is_empty(), "{what}");
    }
    let missing_name = json!({
        "Runtime": "provided.al2023",
        "Role": "arn:aws:iam::123456789012:role/x",
        "Handler": "echo",
        "Code": {"ZipFile": "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="},
    });
    client.send_ok(&create(
        missing_name.to_string().as_bytes(),
        "application/json",
    ));
    assert_error(
        &client.response("no FunctionName"),
        400,
        "InvalidParameterValueException",
    );
}

#[test]
fn events_that_are_not_json_are_invalid_request_content() {
    let mut client = shared().connect();
    // Empty and bare JSON values are events.
    for event in [&b""[..], b"300", b"null", b"[1,2]"] {
        client.send_ok(&invoke_request(ECHO, event));
        assert_answer(&client.response(&lossy(event, 50)), event);
    }
    // JSON is UTF-8 (RFC 8259 section 8.1): a string holding the byte 0xff is not JSON.
    for event in [&b"hello"[..], b"{\"a\": ", b"[1, 2", b"\"\xff\""] {
        client.send_ok(&invoke_request(ECHO, event));
        let response = client.response(&lossy(event, 50));
        assert_error(&response, 400, "InvalidRequestContentException");
    }
}

#[test]
fn unknown_routes_are_unknown_operations() {
    for (method, path) in [
        ("GET", "/nope"),
        ("DELETE", "/2015-03-31/functions"),
        ("GET", "/"),
        ("PATCH", "/2015-03-31/functions/echo"),
    ] {
        let response = shared().call(&request(method, path, &[], b""));
        assert_error(&response, 404, "UnknownOperationException");
    }
}

#[test]
fn a_bad_percent_escape_in_a_function_name_is_invalid() {
    let response = shared().call(&request(
        "POST",
        "/2015-03-31/functions/f%zz/invocations",
        &[],
        b"{}",
    ));
    assert_error(&response, 400, "InvalidParameterValueException");
    let response = shared().call(&request("GET", "/2015-03-31/functions/f%zz", &[], b""));
    assert_error(&response, 400, "InvalidParameterValueException");
}

#[test]
fn unknown_functions_are_not_found_with_their_arn() {
    let response = shared().invoke("no-such-function", b"{}");
    let message = assert_error(&response, 404, "ResourceNotFoundException");
    assert!(
        message.contains("arn:aws:lambda:") && message.contains("no-such-function"),
        "{message}"
    );
    let response = shared().call(&request(
        "GET",
        "/2015-03-31/functions/no-such-function",
        &[],
        b"",
    ));
    let message = assert_error(&response, 404, "ResourceNotFoundException");
    assert!(message.contains("arn:aws:lambda:"), "{message}");
}

// ===== oversized requests ====================================================================

/// Sends only a head declaring a body over the limit, and asserts a 413 with `error_type` and a
/// close, before any body byte is sent.
#[track_caller]
fn assert_too_large(head: &str, error_type: &str) {
    let mut client = shared().connect();
    client.send_ok(head.as_bytes());
    let response = client.response(head);
    assert_error(&response, 413, error_type);
    assert!(response.says_close(), "{}", response.show());
    client.assert_closed(&format!("after refusing {head:?}"));
}

#[test]
fn an_oversized_sync_invoke_is_refused_before_its_body() {
    assert_too_large(
        &format!(
            "POST {} HTTP/1.1\r\nHost: hearth\r\nContent-Length: {}\r\n\r\n",
            invoke_path(ECHO),
            MAX_SYNC + 1
        ),
        "RequestTooLargeException",
    );
    // A chunked body declaring a chunk over the limit is refused before the chunk's data.
    assert_too_large(
        &format!(
            "POST {} HTTP/1.1\r\nHost: hearth\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
            invoke_path(ECHO),
            MAX_SYNC + 1
        ),
        "RequestTooLargeException",
    );
}

#[test]
fn an_oversized_async_invoke_is_refused_before_its_body() {
    assert_too_large(
        &format!(
            "POST {} HTTP/1.1\r\nHost: hearth\r\nX-Amz-Invocation-Type: Event\r\nContent-Length: {}\r\n\r\n",
            invoke_path(ECHO),
            MAX_ASYNC + 1
        ),
        "RequestTooLargeException",
    );
    // The largest asynchronous event is accepted.
    let event = [b"\"".as_slice(), &vec![b'a'; MAX_ASYNC - 2], b"\""].concat();
    let response = shared().call(&request(
        "POST",
        &invoke_path(ECHO),
        &[("X-Amz-Invocation-Type", "Event")],
        &event,
    ));
    assert_eq!(response.status, 202, "{}", response.show());
}

#[test]
fn an_oversized_control_request_is_refused_before_its_body() {
    assert_too_large(
        "POST /2015-03-31/functions HTTP/1.1\r\nHost: hearth\r\nContent-Type: application/json\r\nContent-Length: 80000000\r\n\r\n",
        "RequestEntityTooLargeException",
    );
}

#[test]
fn the_largest_sync_event_is_echoed_byte_for_byte() {
    let event = [b"\"".as_slice(), &vec![b'x'; MAX_SYNC - 2], b"\""].concat();
    assert_eq!(event.len(), MAX_SYNC);
    let mut client = shared().connect();
    client.send_ok(&invoke_request(ECHO, &event));
    let response = match client.read_response(Duration::from_secs(60)) {
        Ok(r) => r,
        Err(e) => panic!("a 6 MiB event: no response: {e}"),
    };
    assert_eq!(response.status, 200, "{}", response.show());
    assert_eq!(response.body.len(), event.len(), "{}", response.show());
    assert!(response.body == event, "the echoed bytes differ");
}

// ===== slow clients ==========================================================================

/// Asserts `client` gets a 408 and a close, `at_least` to 3 s after `since`.
#[track_caller]
fn assert_timed_out(client: &mut Client, since: Instant, at_least: Duration, what: &str) {
    let response = match client.read_response(Duration::from_secs(5)) {
        Ok(r) => r,
        Err(e) => panic!(
            "{what}: no 408 within 5 s: {e} ({:?} after the last write)",
            since.elapsed()
        ),
    };
    let elapsed = since.elapsed();
    assert_error_shape(&response, 408);
    assert!(response.says_close(), "{what}: {}", response.show());
    client.assert_closed(what);
    assert!(
        elapsed >= at_least.saturating_sub(Duration::from_millis(50))
            && elapsed <= Duration::from_secs(3),
        "{what}: the 408 came after {elapsed:?} (timeout {at_least:?})"
    );
}

#[test]
fn a_partial_head_then_silence_gets_408() {
    let mut client = shared().connect();
    let start = Instant::now();
    client.send_ok(
        format!(
            "POST {} HTTP/1.1\r\nHost: hearth\r\nContent-Le",
            invoke_path(ECHO)
        )
        .as_bytes(),
    );
    assert_timed_out(&mut client, start, HEAD_TIMEOUT, "partial head");
}

#[test]
fn a_head_trickled_byte_by_byte_still_times_out() {
    // Slowloris: a byte every 100 ms keeps the connection busy but the head never completes.
    let mut client = shared().connect();
    let start = Instant::now();
    let head = format!("POST {} HTTP/1.1\r\nHost: hearth\r\n", invoke_path(ECHO));
    let mut refused = None;
    for byte in head.as_bytes() {
        if start.elapsed() > Duration::from_secs(3) {
            break;
        }
        // A write fails once the daemon has answered and closed; the answer is read below.
        if client.send(std::slice::from_ref(byte)).is_err() {
            break;
        }
        match client.read_response(Duration::from_millis(100)) {
            Ok(response) => {
                refused = Some(response);
                break;
            }
            Err(ReadError::Timeout) => {}
            Err(e) => panic!(
                "trickled head: {e} before any response ({:?} after the first byte)",
                start.elapsed()
            ),
        }
    }
    let response = match refused {
        Some(response) => response,
        None => match client.read_response(Duration::from_secs(1)) {
            Ok(response) => response,
            Err(e) => panic!("no 408 while the head trickled in: {e}"),
        },
    };
    let elapsed = start.elapsed();
    assert_error_shape(&response, 408);
    client.assert_closed("after a trickled head");
    assert!(
        elapsed >= HEAD_TIMEOUT - Duration::from_millis(50) && elapsed <= Duration::from_secs(2),
        "the 408 came after {elapsed:?}"
    );
}

#[test]
fn a_stalled_body_gets_408() {
    let mut client = shared().connect();
    let start = Instant::now();
    client.send_ok(
        format!(
            "POST {} HTTP/1.1\r\nHost: hearth\r\nContent-Length: 100\r\n\r\n\"123456789",
            invoke_path(ECHO)
        )
        .as_bytes(),
    );
    assert_timed_out(&mut client, start, BODY_TIMEOUT, "stalled body");
}

#[test]
fn idle_connections_are_closed_after_the_idle_timeout() {
    // After a request.
    let mut client = shared().connect();
    let start = Instant::now();
    client.send_ok(&invoke_request(ECHO, b"\"idle\""));
    assert_answer(&client.response("before idling"), b"\"idle\"");
    client.assert_closed("an idle keep-alive connection");
    let elapsed = start.elapsed();
    assert!(
        elapsed >= IDLE_TIMEOUT - Duration::from_millis(200) && elapsed <= Duration::from_secs(3),
        "closed after {elapsed:?} (idle timeout {IDLE_TIMEOUT:?})"
    );
    // A connection that never sends a byte.
    let mut silent = shared().connect();
    let start = Instant::now();
    silent.assert_closed("a connection that never sent anything");
    let elapsed = start.elapsed();
    assert!(
        elapsed >= IDLE_TIMEOUT - Duration::from_millis(200),
        "closed after {elapsed:?}"
    );
}

#[test]
fn slow_clients_do_not_hold_up_others() {
    let daemon = shared();
    let path = invoke_path(ECHO);
    let mut slow = Vec::new();
    for i in 0..16 {
        let mut client = daemon.connect();
        let partial = if i % 2 == 0 {
            format!("POST {path} HTTP/1.1\r\nHost: hearth\r\nContent-Len")
        } else {
            format!("POST {path} HTTP/1.1\r\nHost: hearth\r\nContent-Length: 50\r\n\r\n\"abc")
        };
        client.send_ok(partial.as_bytes());
        slow.push(client);
    }
    let stalled = Instant::now();
    // Served while all of them are stalled.
    let response = daemon.invoke(ECHO, b"\"not held up\"");
    let served = stalled.elapsed();
    assert_answer(&response, b"\"not held up\"");
    assert!(
        served < HEAD_TIMEOUT,
        "a warm invoke took {served:?} beside stalled clients"
    );
    for (i, client) in slow.iter_mut().enumerate() {
        let response = match client.read_response(Duration::from_secs(5)) {
            Ok(r) => r,
            Err(e) => panic!(
                "slow client {i}: no 408: {e} ({:?} after stalling)",
                stalled.elapsed()
            ),
        };
        assert_error_shape(&response, 408);
        let timed_out = stalled.elapsed();
        assert!(
            served < timed_out,
            "the normal invoke took {served:?}: not answered before slow client {i} timed out ({timed_out:?})"
        );
        client.assert_closed(&format!("slow client {i}"));
    }
}

// ===== nothing leaked, nothing crashed ===========================================================

#[test]
fn bad_requests_start_no_environment_and_leave_the_daemon_serving() {
    let daemon = shared();
    let name = "http-untouched";
    daemon.create_function(name, "echo");
    assert_eq!(
        environment_pids(name),
        Vec::<i32>::new(),
        "before any invoke"
    );
    let path = invoke_path(name);
    let battery: Vec<(Vec<u8>, u16)> = vec![
        (
            format!("POST {path} HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{{}}").into_bytes(),
            400,
        ),
        (
            format!("POST {path} HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{{}}").into_bytes(),
            400,
        ),
        (
            format!("POST {path} HTTP/1.1\r\nHost: h\r\nContent-Length: +2\r\n\r\n{{}}").into_bytes(),
            400,
        ),
        (
            format!("POST {path} HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n").into_bytes(),
            501,
        ),
        (
            format!("POST {path} HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n").into_bytes(),
            400,
        ),
        (
            format!("POST {path} HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n").into_bytes(),
            400,
        ),
        (
            format!("POST {path} HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{{}}XX0\r\n\r\n").into_bytes(),
            400,
        ),
        (format!("POST {path} HTTP/1.1\r\nContent-Length: 2\r\n\r\n{{}}").into_bytes(), 400),
        (format!("POST {path} HTTP/2.0\r\nHost: h\r\nContent-Length: 2\r\n\r\n{{}}").into_bytes(), 505),
        (
            format!("POST http://h{path} HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{{}}").into_bytes(),
            400,
        ),
        (
            format!("POST {path} HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n", MAX_SYNC + 1).into_bytes(),
            413,
        ),
        (
            format!("POST {path} HTTP/1.1\r\nHost: h\r\nX-Amz-Invocation-Type: Event\r\nContent-Length: {}\r\n\r\n", MAX_ASYNC + 1).into_bytes(),
            413,
        ),
        // Smuggled: a valid invoke of the function hidden in a refused request.
        (
            {
                let hidden = String::from_utf8(invoke_request(name, b"{}")).unwrap();
                format!("POST {path} HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{hidden}", hidden.len() + 5).into_bytes()
            },
            400,
        ),
    ];
    for (raw, status) in &battery {
        assert_refused(raw, *status);
    }
    // Errors that keep the connection: not JSON, a bad invocation type.
    let mut client = daemon.connect();
    client.send_ok(&invoke_request(name, b"not json"));
    assert_error(
        &client.response("a non-JSON event"),
        400,
        "InvalidRequestContentException",
    );
    client.send_ok(&request(
        "POST",
        &path,
        &[("X-Amz-Invocation-Type", "Sometimes")],
        b"{}",
    ));
    assert_error(
        &client.response("a bad invocation type"),
        400,
        "InvalidParameterValueException",
    );
    drop(client);
    // A stalled body: here it only has to end (its 408 is checked by a_stalled_body_gets_408).
    let mut partial = daemon.connect();
    partial.send_ok(
        format!("POST {path} HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n{{").as_bytes(),
    );
    match partial.read_response(Duration::from_secs(5)) {
        Ok(response) => {
            assert_error_shape(&response, 408);
            partial.assert_closed("a stalled body");
        }
        Err(ReadError::Closed) => {}
        Err(ReadError::Failed(e)) if is_reset(&e) => {}
        Err(e) => panic!("a stalled body: {e}"),
    }
    // Garbage.
    let mut junk = daemon.connect();
    let _ = junk.send(&garbage(2048, 99));
    let _ = junk.stream.shutdown_write();
    let _ = junk.read_response(Duration::from_secs(5));

    assert!(
        daemon.is_running(),
        "the daemon died; stderr:\n{}",
        daemon.stderr()
    );
    assert_eq!(
        environment_pids(name),
        Vec::<i32>::new(),
        "bad requests started an environment"
    );
    // It still serves; and the probe does see an environment once one runs.
    assert_answer(&daemon.invoke(name, b"\"finally\""), b"\"finally\"");
    assert!(
        !environment_pids(name).is_empty(),
        "no environment found for {name} after a real invoke: the process probe is broken"
    );
    assert!(daemon.is_running());
}

// ===== placement (env_cpus) ==================================================================

#[test]
fn env_cpus_same_as_shard_in_the_config_keeps_environments_on_the_shards_cpu() {
    hearth_tests::require_two_cpus("placement");
    let daemon = Daemon::start(&Options {
        config: json!({"shards": 1, "env_cpus": "same_as_shard"}),
        ..Options::default()
    });
    let shard = hearth_tests::thread_named(&daemon.pid.to_string(), "hearth-shard-0")
        .expect("the daemon's shard thread");
    let shard_cpu = hearth_tests::allowed_cpus(shard).expect("the shard thread's CPUs");
    assert_eq!(shard_cpu.len(), 1, "the shard is pinned to one CPU");
    let name = "http-same-as-shard";
    daemon.create_function(name, "echo");
    // One call at a time: placed by load (the default), it would run on another CPU.
    for _ in 0..3 {
        assert_answer(&daemon.invoke(name, br#"{"pinned":1}"#), br#"{"pinned":1}"#);
    }
    let placed: Vec<(i32, Vec<usize>)> = environment_pids(name)
        .into_iter()
        .filter_map(|pid| hearth_tests::allowed_cpus(pid).map(|cpus| (pid, cpus)))
        .collect();
    assert!(
        !placed.is_empty(),
        "no environment process found for {name}"
    );
    for (pid, cpus) in placed {
        assert_eq!(
            cpus, shard_cpu,
            "environment {pid} may run on {cpus:?}, its shard only on {shard_cpu:?}"
        );
    }
}

#[test]
fn an_unknown_env_cpus_value_stops_the_daemon_with_the_accepted_ones() {
    // The configuration is read before anything needs root.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.json");
    std::fs::write(&config, r#"{"env_cpus": "sideways"}"#).expect("write config.json");
    let mut child = Command::new(workspace_binary("hearth"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--insecure-no-auth",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hearth serve");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for hearth serve") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("hearth serve accepted env_cpus \"sideways\" and kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert!(!status.success(), "hearth serve exited 0: {stderr}");
    for expected in ["sideways", "same_as_shard", "adaptive"] {
        assert!(stderr.contains(expected), "{expected:?} not in: {stderr}");
    }
}

// ===== SIGTERM drains ========================================================================

#[test]
fn sigterm_finishes_in_flight_invocations_then_stops_everything() {
    let daemon = Daemon::start(&Options {
        config: json!({"shards": 2, "idle_timeout_ms": 60_000}),
        ..Options::default()
    });
    let name = "http-drain-sleep";
    daemon.create_function(name, "sleep");
    // Warm, so the invocation below is running when the signal comes.
    let warm = daemon.invoke(name, b"0");
    assert_answer(&warm, b"slept 0");
    assert!(
        !environment_pids(name).is_empty(),
        "no environment process found for {name}"
    );
    assert!(
        !daemon_cgroups(daemon.pid).is_empty(),
        "no cgroup pid-{}-* found under /sys/fs/cgroup/*/hearth",
        daemon.pid
    );
    // An idle keep-alive connection, to be closed by the drain.
    let mut idle = daemon.connect();
    idle.send_ok(&request("GET", "/2015-03-31/functions", &[], b""));
    assert_eq!(idle.response("ListFunctions").status, 200);

    let mut busy = daemon.connect();
    busy.send_ok(&invoke_request(name, b"1500"));
    std::thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    daemon.signal(libc::SIGTERM);

    idle.assert_closed("an idle connection once the drain started");
    std::thread::sleep(Duration::from_millis(200));
    // New connections are refused: connect fails, or the connection closes without a response.
    for attempt in 0..3 {
        let Ok(mut late) = daemon.try_connect() else {
            continue;
        };
        if late
            .send(&invoke_request(name, b"1"))
            .is_err_and(|e| !is_reset(&e))
        {
            panic!("late connection {attempt}: the write failed oddly");
        }
        if let Err(e) = late.closed_within(Duration::from_secs(3)) {
            panic!("a connection made during the drain (attempt {attempt}): {e}");
        }
    }
    let response = match busy.read_response(Duration::from_secs(10)) {
        Ok(r) => r,
        Err(e) => panic!("the in-flight invocation got no answer: {e}"),
    };
    let answered = signalled.elapsed();
    assert_answer(&response, b"slept 1500");
    assert!(
        answered >= Duration::from_millis(900),
        "answered {answered:?} after SIGTERM: the sleep cannot have finished"
    );
    busy.assert_closed("the in-flight connection after its answer during the drain");

    daemon.assert_stops_cleanly();
    let deadline = Instant::now() + Duration::from_secs(1);
    while !environment_pids(name).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        environment_pids(name),
        Vec::<i32>::new(),
        "environment processes outlived the daemon"
    );
    assert_eq!(
        daemon_cgroups(daemon.pid),
        Vec::<PathBuf>::new(),
        "cgroups outlived the daemon"
    );
}

// ===== authentication ========================================================================

#[test]
fn unsigned_requests_are_refused_when_signatures_are_required() {
    let daemon = Daemon::start(&Options {
        auth: true,
        ..Options::default()
    });
    let credentials = std::fs::read_to_string(daemon.data_dir().join("credentials"))
        .expect("the daemon writes <data-dir>/credentials at first start");
    assert!(
        credentials.contains("aws_access_key_id") && credentials.contains("aws_secret_access_key"),
        "{credentials}"
    );
    let mut client = daemon.connect();
    client.send_ok(&request("GET", "/2015-03-31/functions", &[], b""));
    assert_error(
        &client.response("unsigned ListFunctions"),
        403,
        "MissingAuthenticationTokenException",
    );
    client.send_ok(&invoke_request("anything", b"{}"));
    assert_error(
        &client.response("unsigned Invoke"),
        403,
        "MissingAuthenticationTokenException",
    );
    let create = json!({
        "FunctionName": "sneaky",
        "Runtime": "provided.al2023",
        "Role": "arn:aws:iam::123456789012:role/x",
        "Handler": "echo",
        "Code": {"ZipFile": "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="},
    });
    client.send_ok(&request(
        "POST",
        "/2015-03-31/functions",
        &[],
        create.to_string().as_bytes(),
    ));
    assert_error(
        &client.response("unsigned CreateFunction"),
        403,
        "MissingAuthenticationTokenException",
    );
    // Framing is still checked first.
    drop(client);
    let mut client = daemon.connect();
    client.send_ok(b"GET / HTTP/1.1\r\n\r\n");
    assert_error_shape(&client.response("no Host"), 400);
    client.assert_closed("no Host");
    daemon.stop();
}

// ===== unix socket ===========================================================================

#[test]
fn a_unix_socket_listener_serves_the_same_api() {
    let daemon = Daemon::start(&Options {
        unix: true,
        ..Options::default()
    });
    let Endpoint::Unix(socket) = daemon.endpoint.clone() else {
        panic!("expected a unix endpoint, got {:?}", daemon.endpoint);
    };
    assert_eq!(socket, daemon.dir.path().join("hearth.sock"));
    assert!(socket.exists(), "{} is missing", socket.display());
    let name = "http-unix-echo";
    daemon.create_function(name, "echo");
    let mut client = daemon.connect();
    for event in [&b"\"over a unix socket\""[..], b"{\"n\": 1}"] {
        client.send_ok(&invoke_request(name, event));
        assert_answer(&client.response("invoke over a unix socket"), event);
    }
    client.send_ok(&request("GET", "/nope", &[], b""));
    assert_error(
        &client.response("GET /nope"),
        404,
        "UnknownOperationException",
    );
    drop(client);
    let mut client = daemon.connect();
    client.send_ok(
        format!(
            "POST {} HTTP/1.1\r\nContent-Length: 2\r\n\r\n{{}}",
            invoke_path(name)
        )
        .as_bytes(),
    );
    assert_error_shape(&client.response("no Host over a unix socket"), 400);
    client.assert_closed("no Host over a unix socket");
    daemon.stop();
    assert!(
        !socket.exists(),
        "{} is left after SIGTERM",
        socket.display()
    );
}
