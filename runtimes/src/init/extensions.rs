//! Lambda's Extensions API (`/2020-01-01/extension/…`) and Telemetry API (`/2022-07-01/telemetry`)
//! as hearth-init serves them.
//!
//! External extensions are the executables in `/opt/extensions`, started (in name order) before
//! the runtime, which starts once each has registered (or exited). Internal extensions register
//! from the runtime's own process during Init. An extension subscribed to `INVOKE` gets each
//! invocation's event when the runtime does; the environment takes its next invocation only when
//! the runtime and every such extension have asked for their next event. On `SIGTERM` (the
//! scheduler retiring the environment) extensions subscribed to `SHUTDOWN` get that event and up
//! to 2 s to ask for their next event (or exit) before the environment ends.
//!
//! Telemetry subscribers get `platform.start`, `platform.runtimeDone`, `platform.report` and the
//! function's output lines (`function`), POSTed in batches as JSON arrays to the HTTP endpoint
//! they subscribed with, from a thread of their own, so a slow subscriber delays nobody else.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// Where external extensions live.
pub(crate) const EXTENSIONS_DIR: &str = "/opt/extensions";
/// How long extensions get after `SHUTDOWN`.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A registered extension.
#[derive(Debug)]
pub(crate) struct Extension {
    pub id: String,
    pub name: String,
    pub invoke: bool,
    pub shutdown: bool,
    /// The connection whose `GET /event/next` waits.
    pub waiter: Option<u64>,
    /// Events not yet handed over.
    pub queue: VecDeque<Vec<u8>>,
}

impl Extension {
    /// Waiting for its next event, with nothing queued: done with the last one.
    pub(crate) fn idle(&self) -> bool {
        self.waiter.is_some() && self.queue.is_empty()
    }
}

/// The external extensions' executables, in name order.
pub(crate) fn discover() -> Vec<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let mut found: Vec<PathBuf> = std::fs::read_dir(EXTENSIONS_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .collect();
    found.sort();
    found
}

/// The events an extension may register for, from its registration body.
pub(crate) fn parse_events(body: &[u8]) -> Result<(bool, bool), String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let events = value
        .get("events")
        .and_then(Value::as_array)
        .ok_or("the body must hold an \"events\" array")?;
    let (mut invoke, mut shutdown) = (false, false);
    for event in events {
        match event.as_str() {
            Some("INVOKE") => invoke = true,
            Some("SHUTDOWN") => shutdown = true,
            other => return Err(format!("unknown event type {other:?}")),
        }
    }
    Ok((invoke, shutdown))
}

/// The `INVOKE` event.
pub(crate) fn invoke_event(request_id: &str, deadline_ms: u64, arn: &str, trace: &str) -> Vec<u8> {
    json!({
        "eventType": "INVOKE",
        "deadlineMs": deadline_ms,
        "requestId": request_id,
        "invokedFunctionArn": arn,
        "tracing": {"type": "X-Amzn-Trace-Id", "value": trace},
    })
    .to_string()
    .into_bytes()
}

/// The `SHUTDOWN` event.
pub(crate) fn shutdown_event(deadline_ms: u64) -> Vec<u8> {
    json!({"eventType": "SHUTDOWN", "shutdownReason": "spindown", "deadlineMs": deadline_ms})
        .to_string()
        .into_bytes()
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// RFC 3339 time with milliseconds, UTC, as the Telemetry API writes it.
pub(crate) fn rfc3339(ms: u64) -> String {
    format!("{}Z", hearth_ipc::utc_timestamp(ms))
}

/// What a telemetry event is about (subscribers choose among these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Platform,
    Function,
}

/// A subscription: where to POST and what.
#[derive(Debug, Clone)]
pub(crate) struct Subscription {
    host: String,
    port: u16,
    path: String,
    platform: bool,
    function: bool,
    max_items: usize,
    timeout: Duration,
}

/// Parses a `PUT /2022-07-01/telemetry` body.
pub(crate) fn parse_subscription(body: &[u8]) -> Result<Subscription, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let destination = value.get("destination").ok_or("missing destination")?;
    if destination.get("protocol").and_then(Value::as_str) != Some("HTTP") {
        return Err("hearth supports the HTTP destination protocol only".into());
    }
    let uri = destination
        .get("URI")
        .and_then(Value::as_str)
        .ok_or("missing destination.URI")?;
    let rest = uri
        .strip_prefix("http://")
        .ok_or("the URI must be http://")?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = authority.rsplit_once(':').unwrap_or((authority, "80"));
    if !matches!(
        host,
        "sandbox.localdomain" | "sandbox" | "localhost" | "127.0.0.1"
    ) {
        return Err(format!(
            "the destination must be in the environment, not {host}"
        ));
    }
    let port: u16 = port.parse().map_err(|_| format!("bad port in {uri}"))?;
    let types: Vec<&str> = value
        .get("types")
        .and_then(Value::as_array)
        .map(|t| t.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let buffering = value.get("buffering");
    let number = |key: &str, default: u64| {
        buffering
            .and_then(|b| b.get(key))
            .and_then(Value::as_u64)
            .unwrap_or(default)
    };
    Ok(Subscription {
        host: "127.0.0.1".into(),
        port,
        path: format!("/{path}"),
        platform: types.contains(&"platform"),
        function: types.contains(&"function"),
        max_items: usize::try_from(number("maxItems", 1000).clamp(1, 10_000)).unwrap_or(1000),
        timeout: Duration::from_millis(number("timeoutMs", 1000).clamp(25, 30_000)),
    })
}

enum Message {
    Subscribe(Subscription),
    Event(Kind, Value),
}

/// The telemetry thread's handle.
#[derive(Debug)]
pub(crate) struct Telemetry {
    sender: mpsc::Sender<Message>,
    /// Some subscriber wants the function's output.
    pub wants_function: bool,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Subscribe(_) => "Subscribe",
            Self::Event(..) => "Event",
        })
    }
}

impl Telemetry {
    /// Starts the delivery thread.
    pub(crate) fn start() -> Option<Self> {
        let (sender, receiver) = mpsc::channel();
        std::thread::Builder::new()
            .name("hearth-telemetry".into())
            .spawn(move || deliver(&receiver))
            .ok()?;
        Some(Self {
            sender,
            wants_function: false,
        })
    }

    pub(crate) fn subscribe(&mut self, subscription: Subscription) {
        self.wants_function |= subscription.function;
        let _ = self.sender.send(Message::Subscribe(subscription));
    }

    /// Queues an event `{time, type, record}`.
    pub(crate) fn event(&self, kind: Kind, kind_name: &str, record: Value) {
        let event = json!({"time": rfc3339(now_ms()), "type": kind_name, "record": record});
        let _ = self.sender.send(Message::Event(kind, event));
    }
}

struct Subscriber {
    subscription: Subscription,
    batch: Vec<Value>,
    since: Option<Instant>,
}

fn deliver(messages: &mpsc::Receiver<Message>) {
    let mut subscribers: Vec<Subscriber> = Vec::new();
    loop {
        let wait = subscribers
            .iter()
            .filter_map(|s| {
                s.since
                    .map(|t| s.subscription.timeout.saturating_sub(t.elapsed()))
            })
            .min()
            .unwrap_or(Duration::from_secs(3600));
        match messages.recv_timeout(wait) {
            Ok(Message::Subscribe(subscription)) => subscribers.push(Subscriber {
                subscription,
                batch: Vec::new(),
                since: None,
            }),
            Ok(Message::Event(kind, event)) => {
                for s in &mut subscribers {
                    let wanted = match kind {
                        Kind::Platform => s.subscription.platform,
                        Kind::Function => s.subscription.function,
                    };
                    if wanted {
                        s.batch.push(event.clone());
                        s.since.get_or_insert_with(Instant::now);
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                for s in &mut subscribers {
                    flush(s);
                }
                return;
            }
        }
        for s in &mut subscribers {
            let due = s
                .since
                .is_some_and(|t| t.elapsed() >= s.subscription.timeout);
            if due || s.batch.len() >= s.subscription.max_items {
                flush(s);
            }
        }
    }
}

/// POSTs a subscriber's batch; a subscriber that is not listening loses it, as in Lambda.
fn flush(s: &mut Subscriber) {
    s.since = None;
    if s.batch.is_empty() {
        return;
    }
    let body = Value::Array(std::mem::take(&mut s.batch)).to_string();
    let sub = &s.subscription;
    let Ok(mut stream) = TcpStream::connect((sub.host.as_str(), sub.port)) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: sandbox.localdomain:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        sub.path,
        sub.port,
        body.len()
    );
    if stream.write_all(request.as_bytes()).is_ok() {
        let mut sink = [0u8; 512];
        let _ = stream.read(&mut sink);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_709_251_200_123), "2024-03-01T00:00:00.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn registration_and_subscription_bodies() {
        assert_eq!(
            parse_events(br#"{"events":["INVOKE","SHUTDOWN"]}"#),
            Ok((true, true))
        );
        assert_eq!(parse_events(br#"{"events":[]}"#), Ok((false, false)));
        assert!(parse_events(br#"{"events":["BOGUS"]}"#).is_err());
        assert!(parse_events(b"nope").is_err());
        let s = parse_subscription(
            br#"{"schemaVersion":"2022-12-13","types":["platform","function"],"buffering":{"timeoutMs":50},"destination":{"protocol":"HTTP","URI":"http://sandbox.localdomain:8080/telemetry"}}"#,
        )
        .unwrap();
        assert_eq!(
            (s.port, s.path.as_str(), s.platform, s.function),
            (8080, "/telemetry", true, true)
        );
        assert_eq!(s.timeout, Duration::from_millis(50));
        assert!(parse_subscription(
            br#"{"destination":{"protocol":"HTTP","URI":"http://example.com:80/"}}"#
        )
        .is_err());
        assert!(parse_subscription(br#"{"destination":{"protocol":"TCP","port":9}}"#).is_err());
    }
}
