//! Tier 2 (root): functions on Lambda's Runtime API, end to end through the engine: hearth-init
//! serving `127.0.0.1:9001` in the environment, the managed Python and Node runtimes, the AWS
//! tutorial's shell bootstrap, and runtimes that break the API's rules. Each test asserts what a
//! Lambda user sees: the bytes returned, the error document and type, and the invocation's log
//! (`START` … `END`, `REPORT`).

use std::path::Path;
use std::time::Duration;

use hearth_scheduler::{FunctionError, Start};
#[path = "common/runtime.rs"]
mod runtime;

use runtime::{code, RuntimeFixture as Fixture};
use serde_json::Value;

fn fixture() -> Fixture {
    Fixture::start()
}

/// A Python function (hearth's managed runtime) with `handler` from `dir`.
fn python(f: &Fixture, name: &str, dir: &Path, handler: &str) {
    f.create(name, dir, |c| {
        c.handler = handler.into();
        c.command = "/usr/bin/python3".into();
        c.args = vec!["/var/runtime/python/bootstrap.py".into()];
    });
}

const PY_APP: &str = r#"
import os, time
started = time.time()

def handler(event, context):
    print("hello from", context.function_name)
    return {
        "event": event,
        "request_id": context.aws_request_id,
        "arn": context.invoked_function_arn,
        "remaining_ok": 0 < context.get_remaining_time_in_millis() <= 3000,
        "memory": context.memory_limit_in_mb,
        "api": os.environ["AWS_LAMBDA_RUNTIME_API"],
        "task_root": os.environ["LAMBDA_TASK_ROOT"],
        "cwd": os.getcwd(),
    }

def fail(event, context):
    raise ValueError("bad input: %s" % event["x"])
"#;

#[test]
fn python_handler_gets_the_event_and_lambdas_context() {
    let f = fixture();
    let dir = code(&[("app.py", PY_APP, false)]);
    python(&f, "py", dir.path(), "app.handler");
    let cold = f.invoke("py", br#"{"k": [1, 2]}"#).expect("invoke");
    assert_eq!(
        cold.outcome.error,
        None,
        "{}",
        String::from_utf8_lossy(&cold.payload)
    );
    assert_eq!(cold.outcome.start, Start::Cold);
    let body = cold.json();
    assert_eq!(body["event"], serde_json::json!({"k": [1, 2]}));
    assert_eq!(
        body["request_id"].as_str(),
        Some(hearth_scheduler::format_request_id(&cold.outcome.request_id).as_str())
    );
    assert_eq!(
        body["arn"],
        "arn:aws:lambda:us-east-1:123456789012:function:py"
    );
    assert_eq!(body["remaining_ok"], true);
    assert_eq!(body["memory"], "128");
    assert_eq!(body["api"], "127.0.0.1:9001");
    assert_eq!(
        (body["task_root"].as_str(), body["cwd"].as_str()),
        (Some("/var/task"), Some("/var/task"))
    );

    let request_id = body["request_id"].as_str().unwrap().to_owned();
    let log = &cold.log;
    assert!(
        log.starts_with(&format!("START RequestId: {request_id} Version: $LATEST\n")),
        "{log}"
    );
    assert!(log.contains("\nhello from py\n"), "{log}");
    assert!(
        log.contains(&format!(
            "\nEND RequestId: {request_id}\nREPORT RequestId: {request_id}\tDuration: "
        )),
        "{log}"
    );
    assert!(
        log.contains("\tMemory Size: 128 MB\tMax Memory Used: "),
        "{log}"
    );
    assert!(
        log.contains("\tInit Duration: ") && log.ends_with("Start: cold\t\n"),
        "{log}"
    );

    let warm = f.invoke("py", b"2").expect("invoke");
    assert_eq!(warm.outcome.start, Start::Warm);
    assert_eq!(warm.json()["event"], 2);
    assert!(
        !warm.log.contains("Init Duration") && warm.log.ends_with("Start: warm\t\n"),
        "{}",
        warm.log
    );

    let stored = f.stored_log(
        "py",
        &format!(
            "REPORT RequestId: {}",
            warm.json()["request_id"].as_str().unwrap()
        ),
    );
    assert_eq!(stored.matches("hello from py\n").count(), 2, "{stored}");
    assert!(stored.find(&request_id).unwrap() < stored.find("Start: warm").unwrap());
}

#[test]
fn python_exceptions_come_back_as_lambdas_error_document() {
    let f = fixture();
    let dir = code(&[("app.py", PY_APP, false)]);
    python(&f, "pyerr", dir.path(), "app.fail");
    let answer = f.invoke("pyerr", br#"{"x": 42}"#).expect("invoke");
    assert_eq!(answer.outcome.error, Some(FunctionError::Handled));
    let doc = answer.json();
    assert_eq!(doc["errorType"], "ValueError");
    assert_eq!(doc["errorMessage"], "bad input: 42");
    let trace = doc["stackTrace"].as_array().expect("stackTrace");
    assert!(
        trace.iter().any(|l| l.as_str().unwrap().contains("app.py")),
        "{doc}"
    );
    assert!(
        answer.log.contains("[ERROR] ValueError: bad input: 42"),
        "{}",
        answer.log
    );
    // The environment survives a handled error.
    let again = f.invoke("pyerr", br#"{"x": 1}"#).expect("invoke");
    assert_eq!(again.outcome.start, Start::Warm);
}

/// The AWS documentation's custom-runtime tutorial (`bootstrap` + `function.sh`). Only the
/// interpreter line differs: the tutorial's `#!/bin/sh` is bash on Amazon Linux, while Debian's
/// `/bin/sh` is dash, which has no `source`.
const TUTORIAL_BOOTSTRAP: &str = r#"#!/bin/bash

set -euo pipefail

# Initialization - load function handler
source $LAMBDA_TASK_ROOT/"$(echo $_HANDLER | cut -d. -f1).sh"

# Processing
while true
do
  HEADERS="$(mktemp)"
  # Get an event. The HTTP request will block until one is received
  EVENT_DATA=$(curl -sS -LD "$HEADERS" "http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation/next")

  # Extract request ID by scraping response headers received above
  REQUEST_ID=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)

  # Run the handler function from the script
  RESPONSE=$($(echo "$_HANDLER" | cut -d. -f2) "$EVENT_DATA")

  # Send the response
  curl "http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation/$REQUEST_ID/response"  -d "$RESPONSE"
done
"#;

const TUTORIAL_FUNCTION: &str = r#"function handler () {
  EVENT_DATA=$1
  echo "$EVENT_DATA" 1>&2;
  RESPONSE="Echoing request: '$EVENT_DATA'"

  echo $RESPONSE
}
"#;

#[test]
fn the_aws_tutorials_shell_bootstrap_runs() {
    let f = fixture();
    let dir = code(&[
        ("bootstrap", TUTORIAL_BOOTSTRAP, true),
        ("function.sh", TUTORIAL_FUNCTION, false),
    ]);
    f.create("tutorial", dir.path(), |c| {
        c.handler = "function.handler".into()
    });
    for i in 0..3 {
        let answer = f
            .invoke("tutorial", format!(r#"{{"n":{i}}}"#).as_bytes())
            .expect("invoke");
        assert_eq!(
            answer.outcome.error,
            None,
            "{}",
            String::from_utf8_lossy(&answer.payload)
        );
        assert_eq!(
            String::from_utf8_lossy(&answer.payload),
            format!(r#"Echoing request: '{{"n":{i}}}'"#)
        );
        // The handler echoes the event to stderr: it is in the invocation's log.
        assert!(
            answer.log.contains(&format!("{{\"n\":{i}}}\n")),
            "{}",
            answer.log
        );
    }
}

/// A runtime that breaks the Runtime API's rules on request (the event's `action`), and reports
/// the answers it got when asked to (`report`).
const HOSTILE_RUNTIME: &str = r#"#!/usr/bin/python3
import http.client, json, os, sys, time

api = os.environ["AWS_LAMBDA_RUNTIME_API"]
conn = http.client.HTTPConnection(api)

def call(method, path, body=None, headers={}):
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    return r.status, r.read(), r.getheaders()

mode = os.environ.get("MODE")
if mode == "exit_in_init":
    sys.exit(3)
if mode == "init_error":
    doc = json.dumps({"errorMessage": "cannot start", "errorType": "Custom.InitFailed"})
    call("POST", "/2018-06-01/runtime/init/error", doc, {"Lambda-Runtime-Function-Error-Type": "Custom.InitFailed"})
    sys.exit(1)
if mode == "never_next":
    time.sleep(3600)

seen = []
while True:
    status, body, headers = call("GET", "/2018-06-01/runtime/invocation/next")
    h = {k.lower(): v for k, v in headers}
    rid = h["lambda-runtime-aws-request-id"]
    base = "/2018-06-01/runtime/invocation/" + rid
    action = json.loads(body).get("action")
    if action == "twice":
        a = call("POST", base + "/response", b'"first"')
        b = call("POST", base + "/response", b'"second"')
        seen.append([a[0], b[0], json.loads(b[1])["errorType"]])
    elif action == "unknown_id":
        a = call("POST", "/2018-06-01/runtime/invocation/not-a-request/response", b'"x"')
        seen.append([a[0], json.loads(a[1])["errorType"]])
        call("POST", base + "/response", b'"after unknown"')
    elif action == "next_again":
        a = call("GET", "/2018-06-01/runtime/invocation/next")
        seen.append([a[0], json.loads(a[1])["errorType"]])
        call("POST", base + "/response", b'"after next"')
    elif action == "big":
        a = call("POST", base + "/response", b"x" * 6291557)
        seen.append([a[0], json.loads(a[1])["errorType"]])
    elif action == "error":
        doc = json.dumps({"errorMessage": "it broke", "errorType": "Custom.Error", "stackTrace": ["here"]})
        call("POST", base + "/error", doc, {"Lambda-Runtime-Function-Error-Type": "Custom.Error"})
    elif action == "text":
        call("POST", base + "/response", b"plain text, not JSON")
    elif action == "exit":
        sys.exit(7)
    elif action == "hang":
        time.sleep(3600)
    elif action == "report":
        call("POST", base + "/response", json.dumps(seen))
        seen = []
"#;

fn hostile(f: &Fixture, name: &str, mode: &str) -> tempfile::TempDir {
    let dir = code(&[("bootstrap", HOSTILE_RUNTIME, true)]);
    f.create(name, dir.path(), |c| {
        c.timeout = Duration::from_secs(2);
        if !mode.is_empty() {
            c.environment = vec![("MODE".into(), mode.into())];
        }
    });
    dir
}

fn report(f: &Fixture, name: &str) -> Value {
    let answer = f.invoke(name, br#"{"action": "report"}"#).expect("invoke");
    assert_eq!(answer.outcome.error, None);
    answer.json()
}

#[test]
fn runtime_api_rule_breaking_gets_lambdas_answers() {
    let f = fixture();
    let _code = hostile(&f, "rules", "");
    // Posting twice: the first answer counts, the second is refused.
    let answer = f
        .invoke("rules", br#"{"action": "twice"}"#)
        .expect("invoke");
    assert_eq!(answer.payload, br#""first""#);
    // An unknown request id while an invocation is in progress.
    let answer = f
        .invoke("rules", br#"{"action": "unknown_id"}"#)
        .expect("invoke");
    assert_eq!(answer.payload, br#""after unknown""#);
    // Asking for the next event before answering this one.
    let answer = f
        .invoke("rules", br#"{"action": "next_again"}"#)
        .expect("invoke");
    assert_eq!(answer.payload, br#""after next""#);
    assert_eq!(
        report(&f, "rules"),
        serde_json::json!([
            [202, 403, "InvalidStateTransition"],
            [400, "InvalidRequestID"],
            [403, "InvalidStateTransition"]
        ])
    );
    // A body that is not JSON is returned as it is, as Lambda does for custom runtimes.
    let answer = f.invoke("rules", br#"{"action": "text"}"#).expect("invoke");
    assert_eq!(
        (answer.outcome.error, answer.payload.as_slice()),
        (None, &b"plain text, not JSON"[..])
    );
    // An error posted to /error is the invocation's error document.
    let answer = f
        .invoke("rules", br#"{"action": "error"}"#)
        .expect("invoke");
    assert_eq!(answer.outcome.error, Some(FunctionError::Handled));
    assert_eq!(answer.json()["errorType"], "Custom.Error");
    assert_eq!(answer.json()["stackTrace"], serde_json::json!(["here"]));
    // An oversized response: 413 for the runtime, Function.ResponseSizeTooLarge for the caller.
    let answer = f.invoke("rules", br#"{"action": "big"}"#).expect("invoke");
    assert_eq!(
        answer.outcome.error,
        Some(FunctionError::ResponseSizeTooLarge(6_291_557))
    );
    assert_eq!(answer.json()["errorType"], "Function.ResponseSizeTooLarge");
    assert_eq!(
        report(&f, "rules"),
        serde_json::json!([[413, "RequestEntityTooLarge"]])
    );
    // All of that happened in one environment.
    let answer = f
        .invoke("rules", br#"{"action": "report"}"#)
        .expect("invoke");
    assert_eq!(answer.outcome.start, Start::Warm);
}

#[test]
fn a_runtime_that_exits_or_hangs_fails_only_its_invocation() {
    let f = fixture();
    let _code = hostile(&f, "dies", "");
    let answer = f.invoke("dies", br#"{"action": "exit"}"#).expect("invoke");
    assert!(
        matches!(answer.outcome.error, Some(FunctionError::Handled)),
        "{answer:?}"
    );
    let doc = answer.json();
    assert_eq!(doc["errorType"], "Runtime.ExitError");
    let message = doc["errorMessage"].as_str().unwrap();
    assert!(
        message.ends_with("Error: Runtime exited with error: exit status 7"),
        "{message}"
    );
    // The environment is gone: the next invocation gets a new one (started for it, or ahead
    // of it by the adaptive pool, which the first invocation's cold start set to one).
    let next = f
        .invoke("dies", br#"{"action": "report"}"#)
        .expect("invoke");
    assert!(
        matches!(next.outcome.start, Start::Cold | Start::Pool),
        "{:?}",
        next.outcome
    );
    assert_ne!(next.outcome.env_pid, answer.outcome.env_pid);

    let answer = f.invoke("dies", br#"{"action": "hang"}"#).expect("invoke");
    assert_eq!(answer.outcome.error, Some(FunctionError::Timedout));
    assert!(
        answer.log.contains("Task timed out after 2.00 seconds"),
        "{}",
        answer.log
    );
    // The timed-out environment is killed, and the next invocation runs elsewhere: in a new
    // environment, or warm in the one that served the report above if the adaptive pool had
    // started another ahead and that one took the hanging invocation.
    let hung = answer.outcome.env_pid;
    let next = f
        .invoke("dies", br#"{"action": "report"}"#)
        .expect("invoke");
    assert_eq!(next.outcome.error, None, "{:?}", next.outcome);
    assert_ne!(next.outcome.env_pid, hung);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while hearth_tests::process_exists(hung) {
        assert!(
            std::time::Instant::now() < deadline,
            "the timed-out environment {hung} is still running"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn init_failures_are_the_first_invocations_error() {
    let f = fixture();
    let _a = hostile(&f, "init-exit", "exit_in_init");
    let answer = f.invoke("init-exit", b"{}").expect("invoke");
    assert_eq!(answer.json()["errorType"], "Runtime.ExitError");
    assert!(answer.json()["errorMessage"]
        .as_str()
        .unwrap()
        .ends_with("exit status 3"));

    let _b = hostile(&f, "init-error", "init_error");
    let answer = f.invoke("init-error", b"{}").expect("invoke");
    assert_eq!(answer.outcome.error, Some(FunctionError::Handled));
    assert_eq!(
        answer.json(),
        serde_json::json!({"errorMessage": "cannot start", "errorType": "Custom.InitFailed"})
    );

    let _c = hostile(&f, "never-next", "never_next");
    let answer = f.invoke("never-next", b"{}").expect("invoke");
    assert_eq!(answer.outcome.error, Some(FunctionError::Timedout));

    // No bootstrap at all: Lambda's message names where it looked.
    let empty = code(&[("README", "no bootstrap here", false)]);
    f.create("no-bootstrap", empty.path(), |_| {});
    let answer = f.invoke("no-bootstrap", b"{}").expect("invoke");
    assert_eq!(answer.json()["errorType"], "Runtime.InvalidEntrypoint");
    assert!(
        answer.json()["errorMessage"]
            .as_str()
            .unwrap()
            .ends_with("Couldn't find valid bootstrap(s): [/var/task/bootstrap /opt/bootstrap]"),
        "{}",
        answer.json()
    );
}

#[test]
fn node_handlers_async_callback_and_es_modules() {
    let f = fixture();
    assert!(
        Path::new("/usr/bin/node").exists(),
        "node is not installed at /usr/bin/node (Debian package nodejs): the Node runtime cannot be tested"
    );
    let dir = code(&[
        (
            "index.js",
            "exports.handler = async (event, context) => { console.log('hi', event.n); return { n: event.n + 1, fn: context.functionName, left: context.getRemainingTimeInMillis() > 0 }; };\n\
             exports.cb = (event, context, callback) => callback(null, { via: 'callback' });\n\
             exports.bad = async () => { throw new TypeError('nope'); };\n",
            false,
        ),
        ("esm.mjs", "export const handler = async (event) => ({ esm: true, event });\n", false),
    ]);
    let node = |name: &str, handler: &str| {
        f.create(name, dir.path(), |c| {
            c.handler = handler.into();
            c.command = "/usr/bin/node".into();
            c.args = vec!["/var/runtime/node/bootstrap.mjs".into()];
        });
    };
    node("node-async", "index.handler");
    let answer = f.invoke("node-async", br#"{"n": 41}"#).expect("invoke");
    assert_eq!(
        answer.json(),
        serde_json::json!({"n": 42, "fn": "node-async", "left": true})
    );
    assert!(answer.log.contains("\tINFO\thi 41\n"), "{}", answer.log);
    node("node-cb", "index.cb");
    assert_eq!(
        f.invoke("node-cb", b"{}").unwrap().json(),
        serde_json::json!({"via": "callback"})
    );
    node("node-esm", "esm.handler");
    assert_eq!(
        f.invoke("node-esm", b"[1]").unwrap().json(),
        serde_json::json!({"esm": true, "event": [1]})
    );
    node("node-bad", "index.bad");
    let answer = f.invoke("node-bad", b"{}").unwrap();
    assert_eq!(answer.outcome.error, Some(FunctionError::Handled));
    assert_eq!(answer.json()["errorType"], "TypeError");
    assert_eq!(answer.json()["errorMessage"], "nope");
}

#[test]
fn layers_are_merged_read_only_under_opt_in_order() {
    let f = fixture();
    // Layer 1 brings a Python package and a bootstrap; layer 2 replaces one module of it.
    let first = code(&[
        ("python/shared.py", "WHO = 'layer one'\n", false),
        ("python/only_first.py", "X = 1\n", false),
        (
            "bootstrap",
            "#!/bin/sh\nexec /usr/bin/python3 /var/runtime/python/bootstrap.py\n",
            true,
        ),
    ]);
    let second = code(&[("python/shared.py", "WHO = 'layer two'\n", false)]);
    let app = code(&[(
        "app.py",
        "import shared, only_first, os\n\
         def handler(event, context):\n\
         \x20   try:\n\
         \x20       open('/opt/python/new.txt', 'w')\n\
         \x20       writable = True\n\
         \x20   except OSError:\n\
         \x20       writable = False\n\
         \x20   return {'who': shared.WHO, 'x': only_first.X, 'opt_writable': writable}\n",
        false,
    )]);
    // No bootstrap in the code: /opt/bootstrap (from layer one) runs, as in Lambda.
    f.create("layered", app.path(), |c| {
        c.handler = "app.handler".into();
        c.layers = vec![first.path().to_owned(), second.path().to_owned()];
    });
    let answer = f.invoke("layered", b"{}").expect("invoke");
    assert_eq!(
        answer.json(),
        serde_json::json!({"who": "layer two", "x": 1, "opt_writable": false}),
        "{}",
        answer.log
    );
    // One layer: bound directly.
    f.create("one-layer", app.path(), |c| {
        c.handler = "app.handler".into();
        c.layers = vec![first.path().to_owned()];
    });
    assert_eq!(
        f.invoke("one-layer", b"{}").unwrap().json()["who"],
        "layer one"
    );
}

/// An external extension: registers for INVOKE and SHUTDOWN, subscribes to the Telemetry API,
/// and writes what it receives to /tmp for the function to report. With `EXT_STALL_AFTER=n` it
/// stops asking for events after the n-th INVOKE.
const PROBE_EXTENSION: &str = r#"#!/usr/bin/python3
import http.client, http.server, json, os, sys, threading, time

api = os.environ["AWS_LAMBDA_RUNTIME_API"]
name = os.path.basename(sys.argv[0])
stall_after = int(os.environ.get("EXT_STALL_AFTER", "0"))
conn = http.client.HTTPConnection(api)
conn.request("POST", "/2020-01-01/extension/register",
             json.dumps({"events": ["INVOKE", "SHUTDOWN"]}), {"Lambda-Extension-Name": name})
r = conn.getresponse()
registered = {"status": r.status, "body": json.loads(r.read())}
ext_id = r.getheader("Lambda-Extension-Identifier")
with open("/tmp/ext-register.json", "w") as f:
    json.dump(registered, f)

class Telemetry(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with open("/tmp/telemetry.jsonl", "ab") as f:
            f.write(body + b"\n")
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass

server = http.server.HTTPServer(("127.0.0.1", 8080), Telemetry)
threading.Thread(target=server.serve_forever, daemon=True).start()
subscription = {"schemaVersion": "2022-12-13", "types": ["platform", "function"],
                "buffering": {"timeoutMs": 25},
                "destination": {"protocol": "HTTP", "URI": "http://sandbox.localdomain:8080"}}
conn.request("PUT", "/2022-07-01/telemetry", json.dumps(subscription), {"Lambda-Extension-Identifier": ext_id})
conn.getresponse().read()

invokes = 0
while True:
    conn.request("GET", "/2020-01-01/extension/event/next", headers={"Lambda-Extension-Identifier": ext_id})
    event = json.loads(conn.getresponse().read())
    with open("/tmp/ext-events.jsonl", "a") as f:
        f.write(json.dumps(event) + "\n")
    if event["eventType"] == "SHUTDOWN":
        print("extension got SHUTDOWN", event["shutdownReason"], flush=True)
        sys.exit(0)
    invokes += 1
    if stall_after and invokes >= stall_after:
        time.sleep(3600)
"#;

const PROBE_FUNCTION: &str = r#"
import json, os, time

def read(path):
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []

def handler(event, context):
    time.sleep(event.get("wait", 0))
    print("function line", context.aws_request_id)
    with open("/tmp/ext-register.json") as f:
        registered = json.load(f)
    batches = read("/tmp/telemetry.jsonl")
    return {
        "request_id": context.aws_request_id,
        "register": registered,
        "events": read("/tmp/ext-events.jsonl"),
        "telemetry": [item for batch in batches for item in batch],
        "wrapped": os.environ.get("WRAPPED"),
    }
"#;

fn probe(f: &Fixture, name: &str, env: &[(&str, &str)]) -> (tempfile::TempDir, tempfile::TempDir) {
    let layer = code(&[("extensions/probe", PROBE_EXTENSION, true)]);
    let app = code(&[
        ("app.py", PROBE_FUNCTION, false),
        (
            "wrapper.sh",
            "#!/bin/sh\nexport WRAPPED=yes\nexec \"$@\"\n",
            true,
        ),
    ]);
    f.create(name, app.path(), |c| {
        c.handler = "app.handler".into();
        c.command = "/usr/bin/python3".into();
        c.args = vec!["/var/runtime/python/bootstrap.py".into()];
        c.layers = vec![layer.path().to_owned()];
        c.timeout = Duration::from_secs(2);
        c.environment = env
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
    });
    (layer, app)
}

#[test]
fn extensions_get_invoke_and_shutdown_and_telemetry() {
    let f = fixture();
    let _code = probe(
        &f,
        "ext",
        &[("AWS_LAMBDA_EXEC_WRAPPER", "/var/task/wrapper.sh")],
    );
    let first = f.invoke("ext", b"{}").expect("invoke").json();
    assert_eq!(first["register"]["status"], 200);
    assert_eq!(first["register"]["body"]["functionName"], "ext");
    assert_eq!(first["register"]["body"]["handler"], "app.handler");
    assert_eq!(
        first["wrapped"], "yes",
        "AWS_LAMBDA_EXEC_WRAPPER started the runtime"
    );
    let id1 = first["request_id"].as_str().unwrap().to_owned();

    // The second invocation starts only after the extension asked for its next event, so the
    // first one's INVOKE is on file; telemetry batches arrive within their 25 ms window.
    let second = f.invoke("ext", br#"{"wait": 0.3}"#).expect("invoke").json();
    let invokes: Vec<&Value> = second["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["eventType"] == "INVOKE")
        .collect();
    assert_eq!(invokes[0]["requestId"], id1.as_str());
    assert_eq!(
        invokes[0]["invokedFunctionArn"],
        "arn:aws:lambda:us-east-1:123456789012:function:ext"
    );
    assert!(invokes[0]["deadlineMs"].as_u64().unwrap() > 1_600_000_000_000);
    let telemetry = second["telemetry"].as_array().unwrap();
    let of = |kind: &str| {
        telemetry
            .iter()
            .filter(|e| e["type"] == kind)
            .collect::<Vec<_>>()
    };
    assert!(
        of("platform.start")
            .iter()
            .any(|e| e["record"]["requestId"] == id1.as_str()),
        "{telemetry:?}"
    );
    assert!(of("platform.runtimeDone").iter().any(|e| e["record"]["requestId"] == id1.as_str() && e["record"]["status"] == "success"), "{telemetry:?}");
    assert!(
        of("platform.report")
            .iter()
            .any(|e| e["record"]["metrics"]["memorySizeMB"] == 128),
        "{telemetry:?}"
    );
    assert!(
        of("function")
            .iter()
            .any(|e| e["record"] == format!("function line {id1}").as_str()),
        "{telemetry:?}"
    );
    assert!(telemetry
        .iter()
        .all(|e| e["time"].as_str().is_some_and(|t| t.ends_with('Z'))));

    // Retiring the environment sends SHUTDOWN; the extension's last words reach the log.
    let started = std::time::Instant::now();
    f.engine
        .on_shard(0, |shard| {
            let function = shard.function("ext").unwrap();
            shard.retire_idle(&function);
        })
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    f.stored_log("ext", "extension got SHUTDOWN spindown");
}

#[test]
fn an_extension_that_stops_asking_delays_only_its_environment() {
    let f = fixture();
    let _code = probe(&f, "stall", &[("EXT_STALL_AFTER", "2")]);
    let _other = probe(&f, "neighbour", &[]);
    assert_eq!(f.invoke("stall", b"{}").unwrap().outcome.error, None);
    // The runtime answers the second invocation; the extension never asks for more.
    assert_eq!(f.invoke("stall", b"{}").unwrap().outcome.error, None);
    // The third cannot start in that environment: it times out, and the environment goes.
    let third = f.invoke("stall", b"{}").unwrap();
    assert_eq!(third.outcome.error, Some(FunctionError::Timedout));
    assert_eq!(f.invoke("neighbour", b"{}").unwrap().outcome.error, None);
    // A new environment (started for it, or ahead of it by the adaptive pool).
    let fourth = f.invoke("stall", b"{}").unwrap();
    assert_eq!(fourth.outcome.error, None);
    assert!(
        matches!(fourth.outcome.start, Start::Cold | Start::Pool),
        "{:?}",
        fourth.outcome
    );
    assert_ne!(fourth.outcome.env_pid, third.outcome.env_pid);
}

#[test]
fn init_gets_ten_seconds_before_the_invocation_timeout_starts() {
    let f = fixture();
    // A 1 s timeout, and an import that takes 1.5 s: Lambda's Init phase has its own 10 s.
    let dir = code(&[(
        "slow.py",
        "import time\ntime.sleep(1.5)\ndef handler(event, context):\n    return context.get_remaining_time_in_millis()\n",
        false,
    )]);
    python(&f, "slow-init", dir.path(), "slow.handler");
    let mut config = f.engine.function("slow-init").unwrap().config().clone();
    config.timeout = Duration::from_secs(1);
    f.engine.update_function(config).unwrap();
    let answer = f.invoke("slow-init", b"{}").expect("invoke");
    assert_eq!(
        answer.outcome.error,
        None,
        "{}",
        String::from_utf8_lossy(&answer.payload)
    );
    let remaining = answer.json().as_u64().unwrap();
    assert!(
        (500..=1000).contains(&remaining),
        "the timeout started after Init: {remaining} ms left"
    );
    assert!(answer.log.contains("\tInit Duration: 1"), "{}", answer.log);
}

/// A runtime on Python's urllib (which sends `Connection: close` on every request) that posts
/// its answers over a raw socket it half-closes after writing, as `nc -N` or a shell's
/// `/dev/tcp` would; its handler also tries to shrink its own stdout file.
const CLOSING_RUNTIME: &str = r#"#!/usr/bin/python3
import json, os, socket, urllib.request

api = os.environ["AWS_LAMBDA_RUNTIME_API"]
host, port = api.split(":")
while True:
    with urllib.request.urlopen(f"http://{api}/2018-06-01/runtime/invocation/next") as r:
        rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
        event = json.loads(r.read())
    print("event", event, flush=True)
    try:
        os.ftruncate(1, 0)
        shrink = "allowed"
    except OSError as e:
        shrink = e.strerror
    body = json.dumps({"event": event, "shrink": shrink}).encode()
    s = socket.create_connection((host, int(port)))
    s.sendall(b"POST /2018-06-01/runtime/invocation/%s/response HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (rid.encode(), len(body)) + body)
    s.shutdown(socket.SHUT_WR)
    answer = s.recv(4096)
    s.close()
    assert answer.startswith(b"HTTP/1.1 202"), answer
"#;

#[test]
fn connection_close_half_close_and_a_shrunk_stdout_are_handled() {
    let f = fixture();
    let dir = code(&[("bootstrap", CLOSING_RUNTIME, true)]);
    f.create("closing", dir.path(), |_| {});
    for i in 0..3 {
        let answer = f
            .invoke("closing", format!("{i}").as_bytes())
            .expect("invoke");
        assert_eq!(
            answer.outcome.error,
            None,
            "{}",
            String::from_utf8_lossy(&answer.payload)
        );
        // The output file is sealed against shrinking (the daemon maps it).
        assert_eq!(
            answer.json(),
            serde_json::json!({"event": i, "shrink": "Operation not permitted"})
        );
        assert!(
            answer.log.contains(&format!("event {i}\n")),
            "{}",
            answer.log
        );
    }
}
