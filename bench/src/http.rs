//! The front door under load: `hearth serve` started as users start it (its own process, SigV4
//! on), a warm native no-op function invoked over HTTP/1.1 keep-alive connections, and in the
//! same run the peers that bound it: a trivial TCP echo round trip on loopback
//! (`limit.tcp_echo`) and nginx answering a constant (`peer.nginx_static`), both driven by the
//! same load generator.
//!
//! The load generator is closed-loop: each connection has one request outstanding and sends
//! the next as soon as the answer is complete. One connection measures latency; 64 measure
//! throughput (one thread, epoll).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use hearth_scheduler::auth::{sign, SignedRequest};
use hearth_scheduler::AccessKey;
use serde_json::{json, Value};

use crate::report::Latencies;

/// The event every invocation sends.
const EVENT: &[u8] = br#"{"hello":"hearth"}"#;
/// The function the HTTP scenarios invoke: the sample function's `echo`.
const FUNCTION: &str = "bench-echo";

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `hearth serve` in its own process, on a fresh data directory.
pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
    key: AccessKey,
    _data: tempfile::TempDir,
}

impl Daemon {
    /// Starts the release `hearth` next to this benchmark's binary and creates the function.
    pub fn start(sample: &Path) -> Result<Self> {
        let exe = std::env::current_exe()?;
        let hearth = exe.with_file_name("hearth");
        if !hearth.exists() {
            bail!("{} is missing: run `make bench`", hearth.display());
        }
        let data = tempfile::tempdir()?;
        let mut child = Command::new(&hearth)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .env("HEARTH_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", hearth.display()))?;
        let stderr = child.stderr.take().context("daemon stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(addr) = line
                        .strip_prefix("hearth: listening on http://")
                        .and_then(|a| a.parse::<SocketAddr>().ok())
                    {
                        let _ = tx.send(addr);
                        sent = true;
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .context("hearth did not start listening within 30 s")?;
        let credentials = std::fs::read_to_string(data.path().join("credentials"))?;
        let value = |k: &str| {
            credentials
                .lines()
                .filter_map(|l| l.split_once('='))
                .find(|(key, _)| key.trim() == k)
                .map(|(_, v)| v.trim().to_owned())
                .unwrap_or_default()
        };
        let key = AccessKey {
            id: value("aws_access_key_id"),
            secret: value("aws_secret_access_key"),
        };
        let daemon = Self {
            child,
            addr,
            key,
            _data: data,
        };
        daemon.create_function(sample)?;
        Ok(daemon)
    }

    /// A complete signed request (the signature stays valid for five minutes).
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> Vec<u8> {
        let host = self.addr.to_string();
        let unsigned = SignedRequest {
            method,
            path,
            query: "",
            headers: &[],
            body,
        };
        let (date, authorization) = sign(
            &self.key,
            "us-east-1",
            "lambda",
            &unsigned,
            &host,
            now_unix(),
        );
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nX-Amz-Date: {date}\r\nAuthorization: {authorization}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        request
    }

    /// The signed invoke request the scenarios send.
    pub fn invoke_request(&self) -> Vec<u8> {
        self.request(
            "POST",
            &format!("/2015-03-31/functions/{FUNCTION}/invocations"),
            EVENT,
        )
    }

    fn create_function(&self, sample: &Path) -> Result<()> {
        let zip = zip_bootstrap(sample)?;
        let body = json!({
            "FunctionName": FUNCTION,
            "Runtime": "provided.al2023",
            "Role": "arn:aws:iam::000000000000:role/bench",
            "Handler": "echo",
            "Code": {"ZipFile": base64::engine::general_purpose::STANDARD.encode(zip)},
        })
        .to_string();
        let mut stream = TcpStream::connect(self.addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.write_all(&self.request("POST", "/2015-03-31/functions", body.as_bytes()))?;
        let mut reader = ResponseReader::default();
        let (status, response) = reader.read_one(&mut stream)?;
        if status != 201 {
            bail!(
                "CreateFunction answered {status}: {}",
                String::from_utf8_lossy(&response)
            );
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: signals our own child.
        unsafe { libc::kill(i32::try_from(self.child.id()).unwrap_or(0), libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn zip_bootstrap(sample: &Path) -> Result<Vec<u8>> {
    use zip::write::SimpleFileOptions;
    let mut out = std::io::Cursor::new(Vec::new());
    let mut writer = zip::ZipWriter::new(&mut out);
    writer.start_file(
        "bootstrap",
        SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .unix_permissions(0o755),
    )?;
    writer.write_all(&std::fs::read(sample)?)?;
    writer.finish()?;
    Ok(out.into_inner())
}

/// Reads HTTP/1.1 responses (status line, headers, `Content-Length` body) from a stream.
#[derive(Default)]
struct ResponseReader {
    buf: Vec<u8>,
}

impl ResponseReader {
    /// Parses one complete response at the front of the buffer: `(status, total length, body
    /// range)`.
    fn parse(&self) -> Option<(u16, usize, std::ops::Range<usize>)> {
        let end = self.buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = std::str::from_utf8(&self.buf[..end]).ok()?;
        let status = head.get(9..12)?.parse().ok()?;
        let length = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        (self.buf.len() >= end + length).then_some((status, end + length, end..end + length))
    }

    fn read_one(&mut self, stream: &mut impl Read) -> Result<(u16, Vec<u8>)> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            if let Some((status, total, body)) = self.parse() {
                let body = self.buf[body].to_vec();
                self.buf.drain(..total);
                return Ok((status, body));
            }
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                bail!("connection closed before a complete response");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Consumes one complete response if the buffer holds one; returns its status.
    fn take(&mut self) -> Option<u16> {
        let (status, total, _) = self.parse()?;
        self.buf.drain(..total);
        Some(status)
    }
}

/// One keep-alive connection, `n` requests one after the other.
pub fn one_connection(addr: SocketAddr, request: &[u8], n: u64) -> Result<(Latencies, Duration)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = ResponseReader::default();
    let mut lat = Latencies::new();
    for _ in 0..n / 10 + 100 {
        stream.write_all(request)?;
        check(reader.read_one(&mut stream)?.0)?;
    }
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        stream.write_all(request)?;
        let (status, _) = reader.read_one(&mut stream)?;
        lat.record(t.elapsed());
        check(status)?;
    }
    Ok((lat, started.elapsed()))
}

fn check(status: u16) -> Result<()> {
    if status == 200 {
        Ok(())
    } else {
        bail!("the server answered {status}")
    }
}

/// `connections` keep-alive connections, each with one request outstanding, for `duration`
/// (after a warm-up of a tenth of it). One thread, epoll.
pub fn many_connections(
    addr: SocketAddr,
    request: &[u8],
    connections: usize,
    duration: Duration,
) -> Result<(Latencies, Duration, u64)> {
    struct Conn {
        stream: TcpStream,
        reader: ResponseReader,
        sent_at: Instant,
    }
    // SAFETY: epoll_create1 returns a new fd or -1.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epoll < 0 {
        bail!("epoll_create1: {}", std::io::Error::last_os_error());
    }
    let mut conns = Vec::with_capacity(connections);
    for i in 0..connections {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        let mut event = libc::epoll_event {
            events: u32::try_from(libc::EPOLLIN).unwrap_or(1),
            u64: i as u64,
        };
        // SAFETY: registers a socket we own with our epoll instance.
        if unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, stream.as_raw_fd(), &mut event) }
            != 0
        {
            bail!("epoll_ctl: {}", std::io::Error::last_os_error());
        }
        conns.push(Conn {
            stream,
            reader: ResponseReader::default(),
            sent_at: Instant::now(),
        });
    }
    let result = (|| {
        let start = Instant::now();
        let warmup = duration / 10;
        let end = start + warmup + duration;
        for conn in &mut conns {
            conn.sent_at = Instant::now();
            conn.stream.write_all(request)?;
        }
        let mut lat = Latencies::new();
        let mut done = 0u64;
        let mut measured_from = None;
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; connections];
        let mut chunk = vec![0u8; 64 * 1024];
        while Instant::now() < end {
            // SAFETY: epoll_wait fills at most `events.len()` entries of our buffer.
            let n = unsafe {
                libc::epoll_wait(
                    epoll,
                    events.as_mut_ptr(),
                    i32::try_from(events.len()).unwrap_or(i32::MAX),
                    100,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                bail!("epoll_wait: {e}");
            }
            let now = Instant::now();
            if measured_from.is_none() && now >= start + warmup {
                measured_from = Some(now);
            }
            for event in &events[..usize::try_from(n).unwrap_or(0)] {
                let conn = &mut conns[usize::try_from(event.u64).unwrap_or(0)];
                let read = conn.stream.read(&mut chunk)?;
                if read == 0 {
                    bail!("the server closed a connection");
                }
                conn.reader.buf.extend_from_slice(&chunk[..read]);
                while let Some(status) = conn.reader.take() {
                    check(status)?;
                    if measured_from.is_some() {
                        lat.record(now.duration_since(conn.sent_at));
                        done += 1;
                    }
                    conn.sent_at = Instant::now();
                    conn.stream.write_all(request)?;
                }
            }
        }
        let elapsed = measured_from.map_or(Duration::ZERO, |t| t.elapsed());
        Ok((lat, elapsed, done))
    })();
    // SAFETY: closes our epoll fd.
    unsafe { libc::close(epoll) };
    result
}

/// A trivial TCP echo server on loopback: the floor of any request/response over TCP here.
pub struct EchoServer {
    pub addr: SocketAddr,
}

impl EchoServer {
    pub fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let _ = stream.set_nodelay(true);
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Ok(Self { addr })
    }
}

/// Round trips of `size`-byte messages through the echo server on one connection.
pub fn tcp_echo(server: &EchoServer, size: usize, n: u64) -> Result<(Latencies, Duration)> {
    let mut stream = TcpStream::connect(server.addr)?;
    stream.set_nodelay(true)?;
    let message = vec![b'x'; size];
    let mut back = vec![0u8; size];
    let mut lat = Latencies::new();
    for _ in 0..n / 10 + 100 {
        stream.write_all(&message)?;
        stream.read_exact(&mut back)?;
    }
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        stream.write_all(&message)?;
        stream.read_exact(&mut back)?;
        lat.record(t.elapsed());
    }
    Ok((lat, started.elapsed()))
}

/// nginx from Debian's package, on loopback, answering `return 200` with a body the size of
/// hearth's answer.
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Nginx {
    pub fn start() -> Result<Self> {
        let binary = ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .context("nginx is not installed: `make bench` installs Debian's nginx-light")?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = tempfile::tempdir()?;
        let body = String::from_utf8_lossy(EVENT).replace('"', "\\\"");
        let conf = format!(
            "daemon off;\nworker_processes auto;\npid {dir}/nginx.pid;\nerror_log stderr error;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {dir};\n  proxy_temp_path {dir};\n  fastcgi_temp_path {dir};\n  uwsgi_temp_path {dir};\n  scgi_temp_path {dir};\n  keepalive_requests 100000000;\n  server {{\n    listen 127.0.0.1:{port} reuseport;\n    location / {{ default_type application/json; return 200 \"{body}\"; }}\n  }}\n}}\n",
            dir = dir.path().display()
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("starting nginx")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                bail!("nginx did not start listening on {addr}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self {
            child,
            addr,
            _dir: dir,
        })
    }

    /// The request the load generator sends nginx: the same size and shape as the invoke.
    pub fn request(&self) -> Vec<u8> {
        let mut request = format!(
            "POST /2015-03-31/functions/{FUNCTION}/invocations HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            EVENT.len()
        )
        .into_bytes();
        request.extend_from_slice(EVENT);
        request
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: signals our own child (nginx's master stops its workers on SIGQUIT/SIGTERM).
        unsafe { libc::kill(i32::try_from(self.child.id()).unwrap_or(0), libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// Extra fields of a throughput line.
pub fn throughput_extra(connections: usize, done: u64) -> Value {
    json!({ "connections": connections, "requests": done })
}
