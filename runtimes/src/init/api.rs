//! The Runtime API server and the process supervision of `hearth-init` (see the module docs of
//! [`crate::init`]).

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hearth_ipc::{error_document, GuestChannel, ResponseStatus, MAX_PAYLOAD};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::extensions::{self, Extension, Kind, Telemetry, SHUTDOWN_GRACE};
use super::http::{self, Parsed, Parser, Request};

/// Where the Runtime API listens, inside the environment's own network namespace.
const LISTEN: &str = "127.0.0.1:9001";
const RUNTIME_PREFIX: &str = "/2018-06-01/runtime/";
const EXTENSION_PREFIX: &str = "/2020-01-01/extension/";
const TELEMETRY_PATH: &str = "/2022-07-01/telemetry";
/// How long hearth-init waits for a peer to read an answer before dropping the connection.
const SEND_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);
/// Function output read per invocation for telemetry subscribers.
const TELEMETRY_OUTPUT_MAX: usize = 256 << 10;
/// Request ids remembered after their answer, to tell "answered twice" from "unknown".
const ANSWERED_KEPT: usize = 16;

/// An invocation taken off the ring.
#[derive(Debug)]
struct Invocation {
    id: u64,
    request_id: String,
    deadline_ms: u64,
    context: Vec<u8>,
    payload: Vec<u8>,
    taken: Instant,
}

#[derive(Debug)]
enum FromRing {
    Invocation(Invocation),
    Broken(String),
}

/// The invocation the runtime is working on.
#[derive(Debug)]
struct Current {
    id: u64,
    request_id: String,
    taken: Instant,
}

/// Why the environment must end; the next invocation is answered with it first.
#[derive(Debug)]
enum Fatal {
    /// An error document as posted by the runtime (`/init/error`).
    Document(Vec<u8>),
    /// `errorType`, and the message after `RequestId: <id> Error: `.
    Error(&'static str, String),
}

impl Fatal {
    fn document(&self, request_id: &str) -> Vec<u8> {
        match self {
            Self::Document(doc) => doc.clone(),
            Self::Error(kind, message) => {
                error_document(kind, &format!("RequestId: {request_id} Error: {message}"))
            }
        }
    }
}

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    parser: Parser,
    /// The peer shut its side (or asked to close): close once its last answer is sent.
    close_after: bool,
    /// The peer shut its side: no more reading (a closed socket stays readable).
    eof: bool,
}

struct Init {
    channel: Arc<Mutex<GuestChannel>>,
    to_ring: mpsc::Sender<()>,
    from_ring: mpsc::Receiver<FromRing>,
    wake: UnixStream,
    signals: SignalFd,
    listener: Option<TcpListener>,
    conns: HashMap<u64, Conn>,
    next_conn: u64,
    runtime: Option<Pid>,
    /// Exit code once the runtime has exited.
    exit_code: i32,
    /// The connection whose `GET /next` waits for an invocation.
    waiter: Option<u64>,
    /// The ring thread has been asked for the next invocation.
    asked: bool,
    /// An invocation taken off the ring and not yet handed to the runtime.
    pending: Option<Invocation>,
    current: Option<Current>,
    answered: VecDeque<String>,
    /// Set at the runtime's first `/next`.
    init_done: bool,
    fatal: Option<Fatal>,
    /// The runtime, until every external extension has registered.
    deferred_runtime: Option<(std::path::PathBuf, Vec<OsString>)>,
    /// External extension processes: pid, name, registered.
    extension_processes: Vec<(Pid, String, bool)>,
    extensions: Vec<Extension>,
    telemetry: Option<Telemetry>,
    /// Where telemetry has read the function's output up to (in the shared output file).
    output_read: u64,
    /// `SIGTERM` came: the environment ends at this instant at the latest.
    shutdown: Option<Instant>,
    /// The last invocation's ARN and trace header, for extension events.
    invoked: (String, String),
    /// When the runtime got the current invocation.
    handed: Option<Instant>,
}

/// Runs hearth-init with `argv` = the runtime's program and arguments. Never returns.
pub fn run(argv: Vec<OsString>) -> ! {
    match Init::start(&argv) {
        Ok(mut init) => init.serve(),
        Err(e) => {
            eprintln!("hearth-init: {e}");
            exit(70)
        }
    }
}

#[allow(clippy::exit)] // pid 1 of the environment: exiting ends it, which is the point
fn exit(code: i32) -> ! {
    let _ = io::stdout().flush();
    std::process::exit(code)
}

fn lock(channel: &Mutex<GuestChannel>) -> MutexGuard<'_, GuestChannel> {
    channel
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The ring thread: waits for the next request whenever the main thread asks for one.
fn ring_thread(
    channel: Arc<Mutex<GuestChannel>>,
    asks: mpsc::Receiver<()>,
    events: mpsc::Sender<FromRing>,
    mut wake: UnixStream,
) {
    while asks.recv().is_ok() {
        let event = {
            let mut channel = lock(&channel);
            match channel.wait_next() {
                Ok(request) => FromRing::Invocation(Invocation {
                    id: request.id,
                    request_id: hearth_ipc::format_request_id(&request.request_id),
                    deadline_ms: request.deadline_ms,
                    context: channel.context(&request).to_vec(),
                    payload: channel.payload(&request).to_vec(),
                    taken: Instant::now(),
                }),
                Err(e) => FromRing::Broken(e.to_string()),
            }
        };
        let broken = matches!(event, FromRing::Broken(_));
        if events.send(event).is_err() || wake.write_all(&[1]).is_err() || broken {
            return;
        }
    }
}

impl Init {
    fn start(argv: &[OsString]) -> Result<Self, String> {
        // SIGCHLD is read from a signalfd; threads and the runtime start after the mask is set
        // (std resets the mask in the processes it spawns).
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        mask.add(Signal::SIGTERM);
        mask.thread_block()
            .map_err(|e| format!("blocking SIGCHLD: {e}"))?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| format!("signalfd: {e}"))?;
        let channel = attach_shared()?;
        let channel = Arc::new(Mutex::new(channel));
        let (wake, wake_ring) =
            UnixStream::pair().map_err(|e| format!("creating the wake socket: {e}"))?;
        wake.set_nonblocking(true)
            .map_err(|e| format!("wake socket: {e}"))?;
        let (to_ring, asks) = mpsc::channel();
        let (events, from_ring) = mpsc::channel();
        let ring_channel = channel.clone();
        std::thread::Builder::new()
            .name("hearth-ring".into())
            .spawn(move || ring_thread(ring_channel, asks, events, wake_ring))
            .map_err(|e| format!("starting the ring thread: {e}"))?;
        let mut init = Self {
            channel,
            to_ring,
            from_ring,
            wake,
            signals,
            listener: None,
            conns: HashMap::new(),
            next_conn: 0,
            runtime: None,
            exit_code: 0,
            waiter: None,
            asked: false,
            pending: None,
            current: None,
            answered: VecDeque::new(),
            init_done: false,
            fatal: None,
            deferred_runtime: None,
            extension_processes: Vec::new(),
            extensions: Vec::new(),
            telemetry: None,
            output_read: 0,
            shutdown: None,
            invoked: (String::new(), String::new()),
            handed: None,
        };
        match TcpListener::bind(LISTEN).and_then(|l| l.set_nonblocking(true).map(|()| l)) {
            Ok(listener) => init.listener = Some(listener),
            Err(e) => {
                init.fail(Fatal::Error(
                    "Runtime.Unknown",
                    format!("hearth-init could not listen on {LISTEN}: {e}"),
                ));
                return Ok(init);
            }
        }
        // External extensions start first; the runtime once each has registered.
        for path in extensions::discover() {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match std::process::Command::new(&path).current_dir("/").spawn() {
                Ok(child) => {
                    if let Ok(pid) = i32::try_from(child.id()) {
                        init.extension_processes
                            .push((Pid::from_raw(pid), name, false));
                    }
                }
                Err(e) => {
                    init.fail(Fatal::Error(
                        "Extension.LaunchError",
                        format!("fork/exec {}: {e}", path.display()),
                    ));
                    return Ok(init);
                }
            }
        }
        match super::resolve_program(argv) {
            Ok((program, args)) => {
                init.deferred_runtime = Some(wrapped(program, args));
                init.start_runtime_when_ready();
            }
            Err(message) => init.fail(Fatal::Error("Runtime.InvalidEntrypoint", message)),
        }
        Ok(init)
    }

    /// Starts the runtime once no external extension is still to register.
    fn start_runtime_when_ready(&mut self) {
        if self
            .extension_processes
            .iter()
            .any(|(_, _, registered)| !registered)
        {
            return;
        }
        let Some((program, args)) = self.deferred_runtime.take() else {
            return;
        };
        // Lambda starts the runtime in the function's code directory.
        match std::process::Command::new(&program)
            .args(&args)
            .current_dir("/var/task")
            .spawn()
        {
            Ok(child) => self.runtime = i32::try_from(child.id()).ok().map(Pid::from_raw),
            Err(e) => self.fail(Fatal::Error(
                "Runtime.InvalidEntrypoint",
                format!("fork/exec {}: {e}", program.display()),
            )),
        }
    }

    fn serve(&mut self) -> ! {
        let mut ready: Vec<u64> = Vec::new();
        loop {
            let ids: Vec<u64> = self.conns.keys().copied().collect();
            let (signals, wake, listener) = {
                let mut fds = vec![
                    PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.wake.as_fd(), PollFlags::POLLIN),
                ];
                if let Some(l) = &self.listener {
                    fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
                }
                let first_conn = fds.len();
                let ids: Vec<u64> = ids
                    .into_iter()
                    .filter(|id| self.conns.get(id).is_some_and(|c| !c.eof))
                    .collect();
                for id in &ids {
                    if let Some(c) = self.conns.get(id) {
                        fds.push(PollFd::new(c.stream.as_fd(), PollFlags::POLLIN));
                    }
                }
                let timeout = match self.shutdown {
                    Some(deadline) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        PollTimeout::try_from(left.as_millis().saturating_add(1))
                            .unwrap_or(PollTimeout::MAX)
                    }
                    None => PollTimeout::NONE,
                };
                match poll(&mut fds, timeout) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => {
                        eprintln!("hearth-init: poll: {e}");
                        exit(70);
                    }
                }
                let hit = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
                ready.clear();
                ready.extend(
                    ids.iter()
                        .zip(&fds[first_conn..])
                        .filter(|(_, f)| hit(f))
                        .map(|(id, _)| *id),
                );
                (
                    hit(&fds[0]),
                    hit(&fds[1]),
                    self.listener.is_some() && hit(&fds[2]),
                )
            };
            if self.shutdown.is_some_and(|d| Instant::now() >= d) {
                // Extensions that did not finish in time are killed with the environment.
                exit(0);
            }
            if signals {
                self.reap();
            }
            if wake {
                self.take_from_ring();
            }
            if listener {
                self.accept();
            }
            for id in std::mem::take(&mut ready) {
                self.read(id);
            }
        }
    }

    // ----- processes ----------------------------------------------------------------------

    /// Reaps every exited child (pid 1 adopts orphans); the runtime's exit ends the environment.
    fn reap(&mut self) {
        while let Ok(Some(info)) = self.signals.read_signal() {
            if info.ssi_signo == Signal::SIGTERM as u32 {
                self.begin_shutdown();
            }
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => {
                    if let Some(i) = self
                        .extension_processes
                        .iter()
                        .position(|(pid, _, _)| Some(*pid) == status.pid())
                    {
                        let (_, name, registered) = self.extension_processes.remove(i);
                        self.extension_exited(&name, registered);
                        continue;
                    }
                    if status.pid().is_some() && status.pid() == self.runtime {
                        let (code, text) = match status {
                            WaitStatus::Exited(_, code) => (code, format!("exit status {code}")),
                            WaitStatus::Signaled(_, sig, _) => {
                                (128 + sig as i32, format!("signal: {}", signal_name(sig)))
                            }
                            _ => continue,
                        };
                        self.runtime = None;
                        self.exit_code = if code == 0 { 1 } else { code };
                        self.runtime_exited(text);
                    }
                }
            }
        }
    }

    /// An external extension ended. Before registering, the runtime no longer waits for it;
    /// after, the environment is reset as Lambda does (`Extension.Crash`), except during shutdown.
    fn extension_exited(&mut self, name: &str, registered: bool) {
        if !registered {
            self.start_runtime_when_ready();
            return;
        }
        self.extensions.retain(|e| e.name != name);
        if self.shutdown.is_some() {
            self.check_shutdown_done();
            return;
        }
        self.fail(Fatal::Error(
            "Extension.Crash",
            format!("extension {name} exited"),
        ));
    }

    /// `SIGTERM`: the scheduler retires this environment. Extensions subscribed to `SHUTDOWN`
    /// get it and [`SHUTDOWN_GRACE`] to finish; without any, the environment ends now.
    fn begin_shutdown(&mut self) {
        if self.shutdown.is_some() {
            return;
        }
        if let Some(pid) = self.runtime {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        }
        let deadline_ms = extensions::now_ms() + 2000;
        let mut any = false;
        for i in 0..self.extensions.len() {
            if self.extensions[i].shutdown {
                any = true;
                self.extensions[i]
                    .queue
                    .push_back(extensions::shutdown_event(deadline_ms));
                self.deliver_extension(i);
            }
        }
        if !any {
            exit(0);
        }
        self.shutdown = Some(Instant::now() + SHUTDOWN_GRACE);
    }

    /// During shutdown: every `SHUTDOWN` subscriber has asked for its next event (or exited).
    fn check_shutdown_done(&mut self) {
        if self.shutdown.is_some()
            && self
                .extensions
                .iter()
                .filter(|e| e.shutdown)
                .all(Extension::idle)
        {
            exit(0);
        }
    }

    fn runtime_exited(&mut self, status: String) {
        if self.shutdown.is_some() {
            return;
        }
        // An invocation the ring thread already took counts as in flight.
        self.take_from_ring();
        let fatal = Fatal::Error(
            "Runtime.ExitError",
            format!("Runtime exited with error: {status}"),
        );
        if self.current.is_none() && self.pending.is_none() && (self.asked || self.init_done) {
            // Idle, waiting for work: nothing to answer. The scheduler sees the environment end
            // and starts a fresh one for the next invocation.
            exit(self.exit_code);
        }
        self.fail(fatal);
    }

    /// The environment cannot serve: answer the invocation in flight (or the next one) with
    /// `fatal`, then exit.
    fn fail(&mut self, fatal: Fatal) {
        if self.fatal.is_none() {
            self.fatal = Some(fatal);
        }
        if let Some(current) = self.current.take() {
            self.answer_fatal(current.id, &current.request_id, current.taken);
        } else if let Some(pending) = self.pending.take() {
            self.answer_fatal(pending.id, &pending.request_id, pending.taken);
        } else if !self.asked {
            let mut channel = lock(&self.channel);
            if channel.foreign_progress() {
                // The runtime read the ring itself (a native bootstrap on fd 3) and is gone:
                // answer the request it took, if that is clear, else just end.
                let taken = channel.take_over();
                drop(channel);
                match taken {
                    Ok(Some(request)) => {
                        let id = hearth_ipc::format_request_id(&request.request_id);
                        self.answer_fatal(request.id, &id, Instant::now());
                    }
                    _ => exit(if self.exit_code == 0 {
                        1
                    } else {
                        self.exit_code
                    }),
                }
            }
            drop(channel);
            self.asked = true;
            let _ = self.to_ring.send(());
        }
    }

    fn answer_fatal(&mut self, id: u64, request_id: &str, taken: Instant) -> ! {
        let doc = self
            .fatal
            .as_ref()
            .map(|f| f.document(request_id))
            .unwrap_or_default();
        let mut channel = lock(&self.channel);
        channel.mark_last();
        let _ = channel.respond_timed(id, ResponseStatus::Unhandled, &doc, micros(taken));
        drop(channel);
        if let Some(pid) = self.runtime {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        }
        exit(if self.exit_code == 0 {
            1
        } else {
            self.exit_code
        })
    }

    fn take_from_ring(&mut self) {
        let mut drain = [0u8; 64];
        while matches!(self.wake.read(&mut drain), Ok(n) if n > 0) {}
        while let Ok(event) = self.from_ring.try_recv() {
            match event {
                FromRing::Broken(e) => {
                    eprintln!("hearth-init: the channel is unusable: {e}");
                    exit(70);
                }
                FromRing::Invocation(invocation) => {
                    self.asked = false;
                    if self.fatal.is_some() {
                        self.answer_fatal(invocation.id, &invocation.request_id, invocation.taken);
                    }
                    self.invoked = (
                        header_value(&invocation.context, "lambda-runtime-invoked-function-arn")
                            .unwrap_or_default(),
                        header_value(&invocation.context, "lambda-runtime-trace-id")
                            .unwrap_or_else(|| trace_id(&invocation.request_id)),
                    );
                    let event = extensions::invoke_event(
                        &invocation.request_id,
                        invocation.deadline_ms,
                        &self.invoked.0,
                        &self.invoked.1,
                    );
                    for i in 0..self.extensions.len() {
                        if self.extensions[i].invoke {
                            self.extensions[i].queue.push_back(event.clone());
                            self.deliver_extension(i);
                        }
                    }
                    if let Some(telemetry) = &self.telemetry {
                        let version =
                            std::env::var("AWS_LAMBDA_FUNCTION_VERSION").unwrap_or_default();
                        telemetry.event(
                            Kind::Platform,
                            "platform.start",
                            serde_json::json!({"requestId": invocation.request_id, "version": version}),
                        );
                    }
                    self.pending = Some(invocation);
                    self.deliver();
                }
            }
        }
    }

    // ----- connections --------------------------------------------------------------------

    fn accept(&mut self) {
        let Some(listener) = &self.listener else {
            return;
        };
        loop {
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    // Out of fds (the runtime holds them all): the listener stays readable,
                    // so do not spin on it.
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    return;
                }
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let _ = stream.set_nodelay(true);
            self.next_conn += 1;
            self.conns.insert(
                self.next_conn,
                Conn {
                    stream,
                    buf: Vec::new(),
                    // Room for a maximal response; anything larger is counted and dropped.
                    parser: Parser::new(MAX_PAYLOAD as usize),
                    close_after: false,
                    eof: false,
                },
            );
        }
    }

    /// Whether connection `id` holds a `GET /next` (runtime or extension) not yet answered.
    fn parked(&self, id: u64) -> bool {
        self.waiter == Some(id) || self.extensions.iter().any(|e| e.waiter == Some(id))
    }

    /// Closes `id` now, or once its parked request is answered.
    fn close_when_done(&mut self, id: u64) {
        if self.parked(id) {
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.close_after = true;
            }
        } else {
            self.close(id);
        }
    }

    /// After an answer to a parked request: closes the connection if its peer is done.
    fn answered_parked(&mut self, id: u64) {
        if self.conns.get(&id).is_some_and(|c| c.close_after) {
            self.close(id);
        }
    }

    fn read(&mut self, id: u64) {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            let Some(conn) = self.conns.get_mut(&id) else {
                return;
            };
            match conn.stream.read(&mut chunk) {
                Ok(0) => {
                    // Half-closed: what it sent before still gets answered.
                    conn.eof = true;
                    break;
                }
                Ok(n) => conn.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close(id),
            }
        }
        loop {
            let Some(conn) = self.conns.get_mut(&id) else {
                return;
            };
            match conn.parser.feed(&mut conn.buf) {
                Parsed::Incomplete => {
                    if conn.eof {
                        self.close_when_done(id);
                    }
                    return;
                }
                Parsed::Invalid(why) => {
                    let doc = error_document("InvalidRequest", why);
                    self.send(
                        id,
                        &http::response(400, b"Connection: close\r\n", "application/json", &doc),
                    );
                    return self.close(id);
                }
                Parsed::Request(request) => {
                    let close = request.close;
                    self.handle(id, request);
                    if close {
                        return self.close_when_done(id);
                    }
                }
            }
        }
    }

    fn close(&mut self, id: u64) {
        self.conns.remove(&id);
        if self.waiter == Some(id) {
            self.waiter = None;
        }
        for extension in &mut self.extensions {
            if extension.waiter == Some(id) {
                extension.waiter = None;
            }
        }
    }

    /// Writes a whole response. The socket is non-blocking; a runtime that stops reading only
    /// stalls its own environment, so waiting for room is fine.
    fn send(&mut self, id: u64, mut bytes: &[u8]) -> bool {
        let Some(conn) = self.conns.get_mut(&id) else {
            return false;
        };
        let started = Instant::now();
        while !bytes.is_empty() {
            match conn.stream.write(bytes) {
                Ok(0) => return false,
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if started.elapsed() > SEND_PATIENCE {
                        // A peer that reads nothing for this long is not coming back.
                        self.close(id);
                        return false;
                    }
                    let mut fds = [PollFd::new(conn.stream.as_fd(), PollFlags::POLLOUT)];
                    let _ = poll(&mut fds, PollTimeout::from(100u16));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close(id);
                    return false;
                }
            }
        }
        true
    }

    fn reply(&mut self, id: u64, status: u16, body: &[u8]) {
        self.send(id, &http::response(status, b"", "application/json", body));
    }

    fn reply_error(&mut self, id: u64, status: u16, kind: &str, message: &str) {
        self.reply(id, status, &error_document(kind, message));
    }

    // ----- the Runtime API ----------------------------------------------------------------

    fn handle(&mut self, conn: u64, request: Request) {
        if let Some(route) = request.path.strip_prefix(EXTENSION_PREFIX) {
            let route = route.split('?').next().unwrap_or_default().to_owned();
            return self.handle_extension(conn, &route, &request);
        }
        if request.path.split('?').next() == Some(TELEMETRY_PATH) {
            return self.subscribe_telemetry(conn, &request);
        }
        let Some(route) = request.path.strip_prefix(RUNTIME_PREFIX) else {
            return self.reply_error(conn, 404, "NotFound", "unknown API path");
        };
        let route = route.split('?').next().unwrap_or_default().to_owned();
        match (request.method.as_str(), route.as_str()) {
            ("GET", "invocation/next") => self.next(conn),
            ("POST", "init/error") => self.init_error(conn, &request),
            ("POST", path) => match path
                .strip_prefix("invocation/")
                .and_then(|p| p.rsplit_once('/'))
            {
                Some((id, "response")) => self.respond(conn, id, &request, false),
                Some((id, "error")) => self.respond(conn, id, &request, true),
                _ => self.reply_error(conn, 404, "NotFound", "unknown API path"),
            },
            (_, "invocation/next" | "init/error") => {
                self.reply_error(conn, 405, "MethodNotAllowed", "method not allowed")
            }
            _ => self.reply_error(conn, 404, "NotFound", "unknown API path"),
        }
    }

    fn next(&mut self, conn: u64) {
        if self.current.is_some() {
            return self.reply_error(
                conn,
                403,
                "InvalidStateTransition",
                "State transition from RuntimeInvoking to RuntimeReady failed for runtime. Error: the invocation in progress has not been answered",
            );
        }
        if let Some(other) = self.waiter.filter(|&w| w != conn) {
            // A second /next while one waits: the newer connection takes over.
            self.close(other);
        }
        self.init_done = true;
        self.waiter = Some(conn);
        if self.pending.is_some() {
            self.deliver();
        } else {
            self.ask_ring_when_ready();
        }
    }

    /// Asks the ring thread for the next invocation once the runtime waits for it and every
    /// extension subscribed to `INVOKE` is done with the last one (Lambda's rule for when an
    /// invocation, and Init, is over).
    fn ask_ring_when_ready(&mut self) {
        let extensions_done = self
            .extensions
            .iter()
            .filter(|e| e.invoke)
            .all(Extension::idle);
        let registering = self.extension_processes.iter().any(|(_, _, r)| !r);
        if self.waiter.is_some()
            && self.pending.is_none()
            && self.current.is_none()
            && !self.asked
            && extensions_done
            && !registering
            && self.shutdown.is_none()
        {
            self.asked = true;
            let _ = self.to_ring.send(());
        }
    }

    // ----- the Extensions and Telemetry APIs ------------------------------------------------

    fn handle_extension(&mut self, conn: u64, route: &str, request: &Request) {
        let id = request
            .header("Lambda-Extension-Identifier")
            .map(str::to_owned);
        let index = id
            .as_deref()
            .and_then(|id| self.extensions.iter().position(|e| e.id == id));
        match (request.method.as_str(), route, index) {
            ("POST", "register", _) => self.register_extension(conn, request),
            ("GET", "event/next", Some(i)) => {
                self.extensions[i].waiter = Some(conn);
                self.deliver_extension(i);
                self.check_shutdown_done();
                self.ask_ring_when_ready();
            }
            ("POST", "init/error" | "exit/error", Some(i)) => {
                let kind = request
                    .header("Lambda-Extension-Function-Error-Type")
                    .unwrap_or("Extension.Unknown")
                    .to_owned();
                let name = self.extensions[i].name.clone();
                self.reply(conn, 202, br#"{"status":"OK"}"#);
                let message = if route == "init/error" {
                    format!("extension {name} failed to initialise")
                } else {
                    format!("extension {name} reported an error and is exiting")
                };
                let fatal = if kind.starts_with("Extension.") {
                    Fatal::Document(error_document(&kind, &message))
                } else {
                    Fatal::Document(error_document(&format!("Extension.{kind}"), &message))
                };
                self.fail(fatal);
            }
            (_, "register" | "event/next" | "init/error" | "exit/error", None)
                if route != "register" =>
            {
                self.reply_error(
                    conn,
                    403,
                    "Extension.UnknownExtensionIdentifier",
                    "missing or unknown Lambda-Extension-Identifier",
                );
            }
            _ => self.reply_error(conn, 404, "NotFound", "unknown API path"),
        }
    }

    fn register_extension(&mut self, conn: u64, request: &Request) {
        let Some(name) = request.header("Lambda-Extension-Name").map(str::to_owned) else {
            return self.reply_error(
                conn,
                400,
                "InvalidRequest",
                "the Lambda-Extension-Name header is required",
            );
        };
        if self.init_done || self.extensions.iter().any(|e| e.name == name) {
            return self.reply_error(
                conn,
                403,
                "Extension.InvalidStateTransition",
                "extensions register once, during Init",
            );
        }
        let (invoke, shutdown) = match extensions::parse_events(&request.body) {
            Ok(events) => events,
            Err(e) => return self.reply_error(conn, 400, "InvalidRequest", &e),
        };
        let id = extension_id(self.extensions.len());
        self.extensions.push(Extension {
            id: id.clone(),
            name: name.clone(),
            invoke,
            shutdown,
            waiter: None,
            queue: VecDeque::new(),
        });
        let env = |k: &str| std::env::var(k).unwrap_or_default();
        let body = serde_json::json!({
            "functionName": env("AWS_LAMBDA_FUNCTION_NAME"),
            "functionVersion": env("AWS_LAMBDA_FUNCTION_VERSION"),
            "handler": env("_HANDLER"),
        });
        let header = format!("Lambda-Extension-Identifier: {id}\r\n");
        self.send(
            conn,
            &http::response(
                200,
                header.as_bytes(),
                "application/json",
                body.to_string().as_bytes(),
            ),
        );
        if let Some(process) = self
            .extension_processes
            .iter_mut()
            .find(|(_, n, registered)| *n == name && !registered)
        {
            process.2 = true;
            self.start_runtime_when_ready();
        }
    }

    /// Hands extension `i` its next queued event if it waits for one.
    fn deliver_extension(&mut self, i: usize) {
        let extension = &mut self.extensions[i];
        let Some(conn) = extension.waiter else { return };
        let Some(event) = extension.queue.pop_front() else {
            return;
        };
        extension.waiter = None;
        let header = format!("Lambda-Extension-Event-Identifier: {}\r\n", extension.id);
        let response = http::response(200, header.as_bytes(), "application/json", &event);
        self.send(conn, &response);
        self.answered_parked(conn);
    }

    fn subscribe_telemetry(&mut self, conn: u64, request: &Request) {
        if request.method != "PUT" {
            return self.reply_error(conn, 405, "MethodNotAllowed", "method not allowed");
        }
        let known = request
            .header("Lambda-Extension-Identifier")
            .is_some_and(|id| self.extensions.iter().any(|e| e.id == id));
        if !known {
            return self.reply_error(
                conn,
                403,
                "Extension.UnknownExtensionIdentifier",
                "missing or unknown Lambda-Extension-Identifier",
            );
        }
        match extensions::parse_subscription(&request.body) {
            Ok(subscription) => {
                if self.telemetry.is_none() {
                    self.telemetry = Telemetry::start();
                }
                if let Some(telemetry) = self.telemetry.as_mut() {
                    telemetry.subscribe(subscription);
                }
                self.send(conn, &http::response(200, b"", "text/plain", b"OK"));
            }
            Err(e) => self.reply_error(conn, 400, "ValidationError", &e),
        }
    }

    /// Telemetry for a finished invocation: the function's output lines, `runtimeDone`,
    /// `report`.
    fn telemetry_done(&mut self, request_id: &str, status: &str, produced: u64) {
        let Some(telemetry) = &self.telemetry else {
            return;
        };
        if telemetry.wants_function {
            for line in read_new_output(&mut self.output_read).split('\n') {
                if !line.is_empty() {
                    telemetry.event(Kind::Function, "function", serde_json::Value::from(line));
                }
            }
        }
        let ms = self
            .handed
            .map_or(0.0, |t| t.elapsed().as_secs_f64() * 1000.0);
        let memory: u64 = std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
            .ok()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        telemetry.event(
            Kind::Platform,
            "platform.runtimeDone",
            serde_json::json!({"requestId": request_id, "status": status,
                "metrics": {"durationMs": ms, "producedBytes": produced}}),
        );
        telemetry.event(
            Kind::Platform,
            "platform.report",
            serde_json::json!({"requestId": request_id, "status": status,
                "metrics": {"durationMs": ms, "billedDurationMs": ms.ceil(), "memorySizeMB": memory}}),
        );
    }

    /// Hands the pending invocation to the waiting runtime.
    fn deliver(&mut self) {
        let (Some(conn), Some(invocation)) = (self.waiter, self.pending.as_ref()) else {
            return;
        };
        let mut headers = format!(
            "Lambda-Runtime-Aws-Request-Id: {}\r\nLambda-Runtime-Deadline-Ms: {}\r\n",
            invocation.request_id, invocation.deadline_ms
        )
        .into_bytes();
        headers.extend_from_slice(&context_headers(&invocation.context));
        if !contains_header(&invocation.context, b"lambda-runtime-trace-id") {
            headers.extend_from_slice(
                format!(
                    "Lambda-Runtime-Trace-Id: {}\r\n",
                    trace_id(&invocation.request_id)
                )
                .as_bytes(),
            );
        }
        let response = http::response(200, &headers, "application/json", &invocation.payload);
        self.waiter = None;
        let sent = self.send(conn, &response);
        self.answered_parked(conn);
        if sent {
            if let Some(invocation) = self.pending.take() {
                self.handed = Some(Instant::now());
                self.current = Some(Current {
                    id: invocation.id,
                    request_id: invocation.request_id,
                    taken: invocation.taken,
                });
            }
        }
    }

    fn respond(&mut self, conn: u64, request_id: &str, request: &Request, error: bool) {
        let Some(current) = self.current.take_if(|c| c.request_id == request_id) else {
            return if self.answered.iter().any(|r| r == request_id) || self.current.is_none() {
                self.reply_error(
                    conn,
                    403,
                    "InvalidStateTransition",
                    "State transition from RuntimeResponseSent to RuntimeResponseSent failed for runtime. Error: no invocation in progress has this request id",
                )
            } else {
                self.reply_error(conn, 400, "InvalidRequestID", "Invalid request ID")
            };
        };
        let run_us = micros(current.taken);
        let answered = if request.body_len > u64::from(MAX_PAYLOAD) {
            lock(&self.channel).respond_too_large(current.id, request.body_len, run_us)
        } else if error {
            let doc = if request.body.is_empty() {
                let kind = request
                    .header("Lambda-Runtime-Function-Error-Type")
                    .unwrap_or("Unhandled");
                error_document(kind, "")
            } else {
                request.body.clone()
            };
            lock(&self.channel).respond_timed(current.id, ResponseStatus::Unhandled, &doc, run_us)
        } else {
            lock(&self.channel).respond_timed(current.id, ResponseStatus::Ok, &request.body, run_us)
        };
        if let Err(e) = answered {
            eprintln!("hearth-init: the channel is unusable: {e}");
            exit(70);
        }
        let status = if error { "error" } else { "success" };
        self.telemetry_done(&current.request_id, status, request.body_len);
        if self.answered.len() == ANSWERED_KEPT {
            self.answered.pop_front();
        }
        self.answered.push_back(current.request_id);
        if request.body_len > u64::from(MAX_PAYLOAD) {
            let message = format!("Exceeded maximum allowed payload size ({MAX_PAYLOAD} bytes).");
            self.reply_error(conn, 413, "RequestEntityTooLarge", &message);
        } else {
            self.reply(conn, 202, br#"{"status":"OK"}"#);
        }
    }

    fn init_error(&mut self, conn: u64, request: &Request) {
        if self.init_done {
            return self.reply_error(
                conn,
                403,
                "InvalidStateTransition",
                "State transition from RuntimeReady to RuntimeInitError failed for runtime. Error: init has finished",
            );
        }
        let doc = if request.body.is_empty() {
            let kind = request
                .header("Lambda-Runtime-Function-Error-Type")
                .unwrap_or("Runtime.Unknown");
            error_document(kind, "")
        } else {
            request.body.clone()
        };
        self.reply(conn, 202, br#"{"status":"OK"}"#);
        self.fail(Fatal::Document(doc));
    }
}

/// Attaches to the channel through a new fd of its own, leaving the inherited one (fd 3) open
/// for the runtime, which may read the ring itself (a native `provided` bootstrap).
fn attach_shared() -> Result<GuestChannel, String> {
    let number: u32 = std::env::var(hearth_ipc::CHANNEL_FD_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{} is not set", hearth_ipc::CHANNEL_FD_ENV))?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/self/fd/{number}"))
        .map_err(|e| format!("opening the channel (fd {number}): {e}"))?;
    GuestChannel::from_fd(file.into()).map_err(|e| format!("attaching to the channel: {e}"))
}

/// Lambda's `AWS_LAMBDA_EXEC_WRAPPER`: a managed runtime (not a `bootstrap`) is started as
/// `WRAPPER RUNTIME ARGS…`, so the wrapper can set up an internal extension first.
fn wrapped(
    program: std::path::PathBuf,
    args: Vec<OsString>,
) -> (std::path::PathBuf, Vec<OsString>) {
    let bootstrap = program.file_name().is_some_and(|n| n == "bootstrap");
    match std::env::var_os("AWS_LAMBDA_EXEC_WRAPPER") {
        Some(wrapper) if !wrapper.is_empty() && !bootstrap => {
            let mut all = vec![program.into_os_string()];
            all.extend(args);
            (wrapper.into(), all)
        }
        _ => (program, args),
    }
}

/// The value of header `lowercase_name` in a context block.
fn header_value(context: &[u8], lowercase_name: &str) -> Option<String> {
    let text = std::str::from_utf8(context).ok()?;
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case(lowercase_name)
            .then(|| value.trim().to_owned())
    })
}

/// An extension identifier: unique in this environment and hard to guess for another process.
fn extension_id(n: usize) -> String {
    let mut bytes = [0u8; 16];
    if let Ok(mut random) = std::fs::File::open("/dev/urandom") {
        let _ = random.read_exact(&mut bytes);
    }
    bytes[0] ^= u8::try_from(n & 0xff).unwrap_or(0);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    hearth_ipc::format_request_id(&bytes)
}

/// What the function wrote to its output (the shared file behind fd 1) since `read`, at most
/// [`TELEMETRY_OUTPUT_MAX`] bytes, up to the first unwritten (zero) byte. The scheduler rewinds
/// the file when it has read enough; then reading starts over at 0.
fn read_new_output(read: &mut u64) -> String {
    let stdout = io::stdout();
    let fd = stdout.as_fd();
    let Ok(written) = nix::unistd::lseek(fd, 0, nix::unistd::Whence::SeekCur) else {
        return String::new();
    };
    let written = u64::try_from(written).unwrap_or(0);
    if written < *read {
        *read = 0;
    }
    let want = usize::try_from(written - *read)
        .unwrap_or(usize::MAX)
        .min(TELEMETRY_OUTPUT_MAX);
    let mut buf = vec![0u8; want];
    let offset = i64::try_from(*read).unwrap_or(i64::MAX);
    let n = nix::sys::uio::pread(fd, &mut buf, offset).unwrap_or(0);
    buf.truncate(n);
    if let Some(end) = buf.iter().position(|&b| b == 0) {
        buf.truncate(end);
    }
    *read = written;
    String::from_utf8_lossy(&buf).into_owned()
}

/// Microseconds since `since`.
fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// The context's header lines, each checked to be `Name: value` without control characters (the
/// scheduler writes them; a line that is not well-formed is dropped rather than injected).
fn context_headers(context: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(context.len());
    for line in context.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let well_formed = line.contains(&b':')
            && line
                .iter()
                .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b));
        if well_formed {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

fn contains_header(context: &[u8], lowercase_name: &[u8]) -> bool {
    context.split(|&b| b == b'\n').any(|l| {
        l.len() > lowercase_name.len()
            && l[..lowercase_name.len()].eq_ignore_ascii_case(lowercase_name)
    })
}

/// An X-Ray trace header for an invocation that came without one, in X-Ray's format.
fn trace_id(request_id: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let hex: String = request_id.chars().filter(char::is_ascii_hexdigit).collect();
    format!(
        "Root=1-{now:08x}-{};Parent={};Sampled=0",
        hex.get(..24).unwrap_or("000000000000000000000000"),
        hex.get(16..32).unwrap_or("0000000000000000")
    )
}

fn signal_name(signal: Signal) -> &'static str {
    match signal {
        Signal::SIGKILL => "killed",
        Signal::SIGSEGV => "segmentation fault",
        Signal::SIGABRT => "aborted",
        Signal::SIGTERM => "terminated",
        Signal::SIGBUS => "bus error",
        Signal::SIGILL => "illegal instruction",
        Signal::SIGFPE => "floating point exception",
        Signal::SIGSYS => "bad system call",
        other => other.as_str(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_lines_become_headers_and_injections_are_dropped() {
        let ctx = b"Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:r:1:function:f\nbad\r\nX: a\x01b\nLambda-Runtime-Client-Context: {\"a\":1}\n";
        assert_eq!(
            context_headers(ctx),
            b"Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:r:1:function:f\r\nLambda-Runtime-Client-Context: {\"a\":1}\r\n"
        );
        assert!(contains_header(
            b"Lambda-Runtime-Trace-Id: x\n",
            b"lambda-runtime-trace-id"
        ));
        assert!(!contains_header(ctx, b"lambda-runtime-trace-id"));
    }

    #[test]
    fn trace_ids_have_xrays_shape() {
        let t = trace_id("12345678-9abc-def0-0102-030405060708");
        assert!(t.starts_with("Root=1-"), "{t}");
        assert!(
            t.contains("-123456789abcdef001020304;Parent=0102030405060708;Sampled=0"),
            "{t}"
        );
    }

    #[test]
    fn fatal_documents_name_the_request() {
        let doc = Fatal::Error(
            "Runtime.ExitError",
            "Runtime exited with error: exit status 3".into(),
        )
        .document("r-1");
        assert_eq!(
            String::from_utf8(doc).unwrap(),
            r#"{"errorMessage":"RequestId: r-1 Error: Runtime exited with error: exit status 3","errorType":"Runtime.ExitError"}"#
        );
    }
}
