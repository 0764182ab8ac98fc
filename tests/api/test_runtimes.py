"""Functions on Lambda's managed runtimes, as a boto3 / aws CLI user sees them: Python
(`python3.12`, run on the host's /usr/bin/python3), Node (`nodejs20.x`, /usr/bin/node), a shell
`bootstrap` on `provided.al2023` speaking the Runtime API with curl, layers under /opt, the
invocation logs (`LogType=Tail` and `hearth logs`), Lambda's environment variables, and the
context of a published version and an alias.

What Lambda answers, as its documentation and its runtimes (awslambdaric, the Node runtime
interface client) describe it:
- a Python handler's return value is serialised with json.dumps (", " and ": " separators; from
  python3.12 on, non-ASCII characters are sent as UTF-8); Node's with JSON.stringify;
- an exception is `X-Amz-Function-Error: Unhandled` with the error document
  {"errorMessage", "errorType", "requestId", "stackTrace"}; a module that cannot be imported is
  `Runtime.ImportModuleError` ("Unable to import module 'M': No module named 'M'"), a missing
  function `Runtime.HandlerNotFound` ("Handler 'F' missing on module 'M'");
- the context: function_name, function_version, memory_limit_in_mb (a string, as awslambdaric
  reads it from the environment), invoked_function_arn (the ARN the caller used, with the
  version or alias it named), aws_request_id (the invoke response's x-amzn-RequestId),
  get_remaining_time_in_millis();
- each invocation's log record: `START RequestId: <id> Version: <version>`, what the function
  wrote, `END RequestId: <id>`, `REPORT RequestId: <id>\\tDuration: <ms, 2 decimals> ms\\t
  Billed Duration: <whole ms> ms\\tMemory Size: <n> MB\\tMax Memory Used: <n> MB\\t` with
  `Init Duration: <ms> ms\\t` on a cold start only (hearth adds `Start: cold|warm|pool|queued\\t`);
  `LogType=Tail` returns the last 4 KB of it, base64-encoded, in LogResult;
- layers are extracted under /opt (read-only), and Python imports /opt/python;
- the environment: _HANDLER, AWS_REGION, AWS_DEFAULT_REGION, AWS_EXECUTION_ENV
  (AWS_Lambda_<runtime>, not set on OS-only runtimes), AWS_LAMBDA_FUNCTION_NAME,
  AWS_LAMBDA_FUNCTION_MEMORY_SIZE, AWS_LAMBDA_FUNCTION_VERSION, AWS_LAMBDA_INITIALIZATION_TYPE,
  AWS_LAMBDA_LOG_GROUP_NAME (/aws/lambda/<name>), AWS_LAMBDA_RUNTIME_API, LAMBDA_TASK_ROOT
  (/var/task), LAMBDA_RUNTIME_DIR (/var/runtime), TZ (:UTC), then the function's own variables.
"""

import base64
import json
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from support import REGION, ROLE, aws_cli, delete_functions, invoke, make_zip, poll, unique_name, wait_active, wait_updated

PYTHON = "python3.12"
NODE = "nodejs20.x"
NODE_BIN = "/usr/bin/node"
REPO = Path(__file__).resolve().parents[2]
HEARTH_BIN = os.environ.get("HEARTH_BIN", str(REPO / "target" / "debug" / "hearth"))

PY_APP = '''\
import json, os, sys


def handler(event, context):
    print("hello from", context.function_name, event.get("n"))
    print("and a line on stderr", file=sys.stderr)
    return {
        "sum": sum(event.get("numbers", [])),
        "event": event,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "invoked_function_arn": context.invoked_function_arn,
        "aws_request_id": context.aws_request_id,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "log_group_name": context.log_group_name,
        "client_custom": context.client_context.custom if context.client_context else None,
    }


def fixed(event, context):
    return {"a": 1, "b": [1, 2.5, None], "s": "\\u00e9"}


def fail(event, context):
    raise ValueError("bad input: %s" % event["x"])


def env(event, context):
    return {
        "env": {k: v for k, v in os.environ.items()},
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
    }
'''

REPORT_RE = (
    r"REPORT RequestId: {rid}\tDuration: \d+\.\d\d ms\tBilled Duration: \d+ ms\t"
    r"Memory Size: {memory} MB\tMax Memory Used: \d+ MB\t"
)
INIT_RE = r"Init Duration: \d+\.\d\d ms\t"


def py_zip(extra: dict | None = None) -> bytes:
    files = {"app.py": (PY_APP.encode(), 0o644)}
    files.update(extra or {})
    return make_zip(files)


def tail_of(resp: dict) -> str:
    assert "LogResult" in resp, f"no LogResult in {resp}"
    return base64.b64decode(resp["LogResult"]).decode("utf-8")


def request_id(resp: dict) -> str:
    return resp["ResponseMetadata"]["RequestId"]


def body_json(body: bytes):
    try:
        return json.loads(body)
    except ValueError:
        pytest.fail(f"the function returned something that is not JSON: {body[:1000]!r}")


class Functions:
    """Functions of this module: created once where tests can share them, deleted at the end."""

    def __init__(self, hearth, client):
        self.hearth = hearth
        self.client = client
        self.names: list[str] = []

    def create(self, hint: str, runtime: str, handler: str, zip_bytes: bytes, **params) -> dict:
        name = unique_name(hint)
        self.names.append(name)
        resp = self.client.create_function(
            FunctionName=name,
            Runtime=runtime,
            Role=ROLE,
            Handler=handler,
            Code={"ZipFile": zip_bytes},
            **params,
        )
        wait_active(self.client, name)
        return resp

    def cleanup(self):
        delete_functions(self.hearth, self.names)


@pytest.fixture(scope="module")
def client(hearth):
    return hearth.client()


@pytest.fixture(scope="module")
def functions(hearth, client):
    made = Functions(hearth, client)
    yield made
    made.cleanup()


@pytest.fixture(scope="module")
def py_fn(functions):
    """app.handler on python3.12, 256 MB, shared by the tests that do not need a cold start."""
    return functions.create("py", PYTHON, "app.handler", py_zip(), MemorySize=256, Timeout=10)


# -- 1. Python ----------------------------------------------------------------------------------


def test_python_returns_json_from_event_and_context(client, py_fn):
    name, arn = py_fn["FunctionName"], py_fn["FunctionArn"]
    resp, body = invoke(client, name, b'{"n": 7, "numbers": [1, 2, 3.5]}')
    assert resp["StatusCode"] == 200
    assert "FunctionError" not in resp, body
    assert resp["ExecutedVersion"] == "$LATEST"
    doc = body_json(body)
    assert doc["sum"] == 6.5
    assert doc["event"] == {"n": 7, "numbers": [1, 2, 3.5]}
    assert doc["function_name"] == name
    assert doc["function_version"] == "$LATEST"
    assert doc["memory_limit_in_mb"] == "256"
    assert doc["invoked_function_arn"] == arn
    assert doc["aws_request_id"] == request_id(resp)
    assert 0 < doc["remaining_ms"] <= 10_000, doc["remaining_ms"]
    assert doc["log_group_name"] == f"/aws/lambda/{name}"


def test_client_context_reaches_the_handler(client, py_fn):
    # boto3 sends ClientContext base64-encoded (X-Amz-Client-Context), as the mobile SDKs do.
    ctx = {"custom": {"tenant": "blue", "n": 3}, "client": {"app_title": "t"}, "env": {}}
    encoded = base64.b64encode(json.dumps(ctx).encode()).decode()
    resp, body = invoke(client, py_fn["FunctionName"], b"{}", ClientContext=encoded)
    assert "FunctionError" not in resp, body
    assert body_json(body)["client_custom"] == {"tenant": "blue", "n": 3}
    # Not base64 JSON: refused before the function runs.
    with pytest.raises(client.exceptions.InvalidRequestContentException):
        client.invoke(FunctionName=py_fn["FunctionName"], Payload=b"{}", ClientContext="bm90IGpzb24=")


def test_python_response_bytes_are_json_dumps(functions, client):
    # python3.12 and later: json.dumps's separators, non-ASCII characters as UTF-8.
    name = functions.create("py-fixed", PYTHON, "app.fixed", py_zip())["FunctionName"]
    _, body = invoke(client, name, b"{}")
    assert body == '{"a": 1, "b": [1, 2.5, null], "s": "\u00e9"}'.encode("utf-8")


def test_python_exception_is_an_unhandled_error_document(functions, client):
    name = functions.create("py-fail", PYTHON, "app.fail", py_zip())["FunctionName"]
    resp, body = invoke(client, name, b'{"x": 42}', LogType="Tail")
    assert resp["StatusCode"] == 200
    assert resp.get("FunctionError") == "Unhandled", resp
    doc = body_json(body)
    assert set(doc) == {"errorMessage", "errorType", "requestId", "stackTrace"}, doc
    assert doc["errorType"] == "ValueError"
    assert doc["errorMessage"] == "bad input: 42"
    assert doc["requestId"] == request_id(resp)
    assert isinstance(doc["stackTrace"], list) and doc["stackTrace"], doc
    assert any("app.py" in line and "fail" in line for line in doc["stackTrace"]), doc["stackTrace"]
    log = tail_of(resp)
    assert "[ERROR] ValueError: bad input: 42" in log, log
    # The environment survives the error: the next invocation of it is warm and answers.
    resp, body = invoke(client, name, b'{"x": 1}', LogType="Tail")
    assert body_json(body)["errorMessage"] == "bad input: 1"
    assert "Start: warm\t" in tail_of(resp), tail_of(resp)


@pytest.mark.parametrize(
    "handler, error_type, message",
    [
        ("missing.handler", "Runtime.ImportModuleError", "Unable to import module 'missing': No module named 'missing'"),
        ("app.nope", "Runtime.HandlerNotFound", "Handler 'nope' missing on module 'app'"),
    ],
    ids=["missing-module", "missing-function"],
)
def test_python_init_errors(functions, client, handler, error_type, message):
    name = functions.create("py-init", PYTHON, handler, py_zip())["FunctionName"]
    for _ in range(2):  # Lambda tries the init again at the next invocation, and fails again
        resp, body = invoke(client, name, b"{}")
        assert resp["StatusCode"] == 200
        assert resp.get("FunctionError") == "Unhandled", (resp, body)
        doc = body_json(body)
        assert doc["errorType"] == error_type, doc
        assert doc["errorMessage"] == message, doc


def test_python_tail_log_frames_the_output(client, py_fn):
    name = py_fn["FunctionName"]
    resp, body = invoke(client, name, b'{"n": 99}', LogType="Tail")
    assert "FunctionError" not in resp, body
    rid = request_id(resp)
    assert body_json(body)["aws_request_id"] == rid
    log = tail_of(resp)
    start = f"START RequestId: {rid} Version: $LATEST\n"
    end = f"END RequestId: {rid}\n"
    assert log.startswith(start), log
    assert f"\nhello from {name} 99\n" in log, log
    assert "\nand a line on stderr\n" in log, log
    printed = log.index(f"hello from {name} 99")
    assert log.index(start) < printed < log.index(end), log
    report = log[log.index(end) + len(end):]
    assert re.fullmatch(REPORT_RE.format(rid=rid, memory=256) + rf"({INIT_RE})?Start: (cold|warm|pool|queued)\t\n?", report), report


def test_python_cold_then_warm(functions, client):
    name = functions.create("py-cold", PYTHON, "app.handler", py_zip())["FunctionName"]
    # One client, so one keep-alive connection: both invocations reach the same shard.
    cold, body = invoke(client, name, b'{"n": 1}', LogType="Tail")
    assert "FunctionError" not in cold, body
    warm, body = invoke(client, name, b'{"n": 2}', LogType="Tail")
    assert "FunctionError" not in warm, body
    cold_log, warm_log = tail_of(cold), tail_of(warm)
    cold_report = cold_log[cold_log.index("REPORT RequestId:"):]
    warm_report = warm_log[warm_log.index("REPORT RequestId:"):]
    assert re.fullmatch(REPORT_RE.format(rid=request_id(cold), memory=128) + INIT_RE + r"Start: cold\t\n?", cold_report), cold_report
    assert re.fullmatch(REPORT_RE.format(rid=request_id(warm), memory=128) + r"Start: warm\t\n?", warm_report), warm_report
    assert "Init Duration" not in warm_log, warm_log


# -- 2. Node ------------------------------------------------------------------------------------

NODE_INDEX = """\
exports.handler = async (event, context) => {
  console.log('hi', event.n);
  await new Promise((resolve) => setTimeout(resolve, 5));
  return { n: event.n + 1, fn: context.functionName, left: context.getRemainingTimeInMillis() > 0, id: context.awsRequestId };
};
exports.cb = (event, context, callback) => callback(null, { via: 'callback', event });
exports.bad = async () => { throw new TypeError('nope'); };
"""
NODE_ESM = "export const handler = async (event) => ({ esm: true, event });\n"


@pytest.fixture(scope="module")
def node_zip():
    if not os.path.exists(NODE_BIN):
        pytest.skip(f"{NODE_BIN} is missing (Debian package nodejs): hearth runs {NODE} on it")
    return make_zip({"index.js": (NODE_INDEX.encode(), 0o644), "esm.mjs": (NODE_ESM.encode(), 0o644)})


def test_node_async_handler(functions, client, node_zip):
    name = functions.create("node-async", NODE, "index.handler", node_zip)["FunctionName"]
    resp, body = invoke(client, name, b'{"n": 41}', LogType="Tail")
    assert "FunctionError" not in resp, body
    rid = request_id(resp)
    assert body == json.dumps({"n": 42, "fn": name, "left": True, "id": rid}, separators=(",", ":")).encode()
    log = tail_of(resp)
    assert re.search(rf"\n\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z\t{rid}\tINFO\thi 41\n", log), log


def test_node_callback_handler(functions, client, node_zip):
    name = functions.create("node-cb", NODE, "index.cb", node_zip)["FunctionName"]
    _, body = invoke(client, name, b'{"k": [1, "two"]}')
    assert body == b'{"via":"callback","event":{"k":[1,"two"]}}'


def test_node_es_module_handler(functions, client, node_zip):
    name = functions.create("node-esm", NODE, "esm.handler", node_zip)["FunctionName"]
    resp, body = invoke(client, name, b"[1, 2]")
    assert "FunctionError" not in resp, body
    assert body == b'{"esm":true,"event":[1,2]}'


def test_node_exception(functions, client, node_zip):
    name = functions.create("node-bad", NODE, "index.bad", node_zip)["FunctionName"]
    resp, body = invoke(client, name, b"{}")
    assert resp.get("FunctionError") == "Unhandled", resp
    doc = body_json(body)
    # The Node runtime's error document names its stack `trace` (Python's says `stackTrace`).
    assert set(doc) == {"errorType", "errorMessage", "trace"}, doc
    assert (doc["errorType"], doc["errorMessage"]) == ("TypeError", "nope"), doc
    assert doc["trace"][0] == "TypeError: nope", doc
    assert any("/var/task/index.js" in line for line in doc["trace"]), doc


# -- 3. provided.al2023 with a shell bootstrap --------------------------------------------------

SHELL_BOOTSTRAP = r"""#!/bin/sh
set -eu
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation"
while true; do
  HEADERS="$(mktemp)"
  EVENT=$(curl -sS -LD "$HEADERS" "$API/next")
  REQUEST_ID=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
  ARN=$(grep -Fi Lambda-Runtime-Invoked-Function-Arn "$HEADERS" | tr -d '[:space:]' | cut -d: -f2-)
  rm -f "$HEADERS"
  echo "shell got $EVENT" >&2
  case "$EVENT" in
    *fail*)
      curl -sS -o /dev/null -H "Lambda-Runtime-Function-Error-Type: Shell.Failed" \
        -d '{"errorMessage":"asked to fail","errorType":"Shell.Failed"}' "$API/$REQUEST_ID/error" ;;
    *)
      curl -sS -o /dev/null -d "{\"handler\":\"$_HANDLER\",\"id\":\"$REQUEST_ID\",\"arn\":\"$ARN\",\"event\":$EVENT}" \
        "$API/$REQUEST_ID/response" ;;
  esac
done
"""


@pytest.fixture(scope="module")
def shell_fn(functions):
    if not shutil.which("curl"):
        pytest.fail("curl is not installed: the shell bootstrap needs it")
    zip_bytes = make_zip({"bootstrap": (SHELL_BOOTSTRAP.encode(), 0o755)})
    return functions.create("shell", "provided.al2023", "function.handler", zip_bytes)


def test_shell_bootstrap_returns_what_it_posts(client, shell_fn):
    name, arn = shell_fn["FunctionName"], shell_fn["FunctionArn"]
    for i in range(3):
        event = f'{{"n":{i}}}'
        resp, body = invoke(client, name, event, LogType="Tail")
        assert "FunctionError" not in resp, body
        rid = request_id(resp)
        expected = f'{{"handler":"function.handler","id":"{rid}","arn":"{arn}","event":{event}}}'
        assert body == expected.encode()
        log = tail_of(resp)
        assert f"\nshell got {event}\n" in log, log
        assert ("Start: cold\t" if i == 0 else "Start: warm\t") in log, log


def test_shell_bootstrap_posts_an_error(client, shell_fn):
    resp, body = invoke(client, shell_fn["FunctionName"], b'{"fail": true}')
    assert resp.get("FunctionError") == "Unhandled", resp
    assert body_json(body) == {"errorMessage": "asked to fail", "errorType": "Shell.Failed"}


# -- 4. Layers ----------------------------------------------------------------------------------

LAYER_APP = '''\
import helper


def handler(event, context):
    try:
        open("/opt/python/new.txt", "w")
        writable = True
    except OSError:
        writable = False
    return {"value": helper.VALUE, "file": helper.__file__, "opt_writable": writable}
'''


def helper_layer(value: str) -> bytes:
    return make_zip({"python/helper.py": (f"VALUE = {value!r}\n".encode(), 0o644)})


def test_layer_python_package_and_update_to_a_new_version(functions, client):
    layer = unique_name("helper-layer")
    v1 = client.publish_layer_version(
        LayerName=layer, Content={"ZipFile": helper_layer("one")}, CompatibleRuntimes=[PYTHON]
    )
    assert v1["Version"] == 1
    name = functions.create(
        "py-layer", PYTHON, "app.handler",
        make_zip({"app.py": (LAYER_APP.encode(), 0o644)}),
        Layers=[v1["LayerVersionArn"]],
    )["FunctionName"]
    resp, body = invoke(client, name, b"{}")
    assert "FunctionError" not in resp, body
    assert body_json(body) == {"value": "one", "file": "/opt/python/helper.py", "opt_writable": False}

    v2 = client.publish_layer_version(
        LayerName=layer, Content={"ZipFile": helper_layer("two")}, CompatibleRuntimes=[PYTHON]
    )
    assert v2["Version"] == 2
    updated = client.update_function_configuration(FunctionName=name, Layers=[v2["LayerVersionArn"]])
    assert [entry["Arn"] for entry in updated["Layers"]] == [v2["LayerVersionArn"]]
    wait_updated(client, name)
    resp, body = invoke(client, name, b"{}", LogType="Tail")
    assert "FunctionError" not in resp, body
    assert body_json(body)["value"] == "two"
    # The change replaced the environment that had version 1.
    assert "Start: cold\t" in tail_of(resp), tail_of(resp)


# -- 5. Logs: `hearth logs` ---------------------------------------------------------------------


def hearth_logs(hearth, name: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [HEARTH_BIN, "logs", name, "--data-dir", str(hearth.data_dir), *extra],
        capture_output=True,
        timeout=30,
    )


def stored_log(hearth, name: str, contains: str, timeout: float = 5) -> str:
    """`hearth logs NAME` once its output holds `contains` (the shard flushes every 100 ms)."""

    def fetch():
        proc = hearth_logs(hearth, name)
        return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")

    code, out, err = poll(fetch, lambda r: contains in r[1], timeout, f"`hearth logs {name}` to show {contains!r}")
    assert code == 0, (code, out, err)
    return out


def records(text: str) -> list[dict]:
    """The START ... END / REPORT records of a log, in order."""
    found = []
    pattern = re.compile(
        r"START RequestId: (?P<id>\S+) Version: (?P<version>\S+)\n(?P<output>.*?)"
        r"END RequestId: (?P=id)\n(?P<report>REPORT RequestId: (?P=id)\t[^\n]*)\n",
        re.S,
    )
    for m in pattern.finditer(text):
        found.append(m.groupdict())
    return found


@pytest.fixture(scope="module")
def logged_fn(functions):
    return functions.create("py-logs", PYTHON, "app.handler", py_zip())


def test_hearth_logs_prints_every_invocation_in_order(hearth, client, logged_fn):
    name = logged_fn["FunctionName"]
    ids = []
    for n in range(3):
        resp, body = invoke(client, name, json.dumps({"n": n}))
        assert "FunctionError" not in resp, body
        ids.append(request_id(resp))
    text = stored_log(hearth, name, f"REPORT RequestId: {ids[-1]}")
    got = records(text)
    assert [r["id"] for r in got][:3] == ids, text
    for n, record in enumerate(got[:3]):
        assert record["version"] == "$LATEST"
        assert f"hello from {name} {n}\n" in record["output"], record
        assert "and a line on stderr\n" in record["output"], record
        assert re.fullmatch(
            REPORT_RE.format(rid=record["id"], memory=128) + (INIT_RE if n == 0 else "") + r"Start: (cold|warm)\t",
            record["report"],
        ), record["report"]
    # Nothing but records in the file.
    assert "".join(
        f"START RequestId: {r['id']} Version: {r['version']}\n{r['output']}END RequestId: {r['id']}\n{r['report']}\n"
        for r in got
    ) == text


def test_hearth_logs_follow_shows_a_new_invocation(hearth, client, logged_fn):
    name = logged_fn["FunctionName"]
    proc = subprocess.Popen(
        [HEARTH_BIN, "logs", name, "--follow", "--data-dir", str(hearth.data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out = b""
    try:
        time.sleep(0.5)  # let it print what is stored already and start following
        assert proc.poll() is None, (proc.returncode, proc.stderr.read())
        resp, body = invoke(client, name, b'{"n": "followed"}')
        assert "FunctionError" not in resp, body
        rid = request_id(resp)
        wanted = f"REPORT RequestId: {rid}\t".encode()
        deadline = time.monotonic() + 3
        fd = proc.stdout.fileno()
        while wanted not in out and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                out += chunk
        assert wanted in out, f"--follow did not show {rid} within 3 s of the invoke; it printed:\n{out.decode(errors='replace')}"
        text = out.decode("utf-8", "replace")
        assert f"START RequestId: {rid} Version: $LATEST\nhello from {name} followed\n" in text, text
        assert proc.poll() is None, "--follow exited on its own"
    finally:
        proc.kill()
        proc.wait(10)


def test_hearth_logs_of_an_unknown_function(hearth):
    name = unique_name("never-invoked")
    proc = hearth_logs(hearth, name)
    assert proc.returncode != 0, proc
    assert proc.stdout == b"", proc.stdout
    message = proc.stderr.decode("utf-8", "replace")
    assert name in message and "no logs" in message, message


# -- 6. Lambda's environment variables ----------------------------------------------------------


@pytest.fixture(scope="module")
def env_fn(functions):
    return functions.create(
        "py-env", PYTHON, "app.env", py_zip(),
        MemorySize=512,
        Environment={"Variables": {"GREETING": "hello world", "EMPTY": "", "JSONISH": '{"a": 1}'}},
    )


def test_lambda_environment_variables(client, env_fn):
    name = env_fn["FunctionName"]
    resp, body = invoke(client, name, b"{}")
    assert "FunctionError" not in resp, body
    env = body_json(body)["env"]
    expected = {
        "_HANDLER": "app.env",
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
        "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "LAMBDA_TASK_ROOT": "/var/task",
        "LAMBDA_RUNTIME_DIR": "/var/runtime",
        "TZ": ":UTC",
        "GREETING": "hello world",
        "EMPTY": "",
        "JSONISH": '{"a": 1}',
    }
    assert {k: env.get(k) for k in expected} == expected
    assert env.get("AWS_LAMBDA_LOG_STREAM_NAME"), env


def test_execution_env_names_the_managed_runtime(client, env_fn):
    # "AWS_EXECUTION_ENV – The runtime identifier, prefixed by AWS_Lambda_ (for example,
    # AWS_Lambda_java8). This environment variable is not defined for OS-only runtimes."
    _, body = invoke(client, env_fn["FunctionName"], b"{}")
    assert body_json(body)["env"].get("AWS_EXECUTION_ENV") == f"AWS_Lambda_{PYTHON}"


def test_changed_environment_reaches_the_function(client, env_fn):
    name = env_fn["FunctionName"]
    client.update_function_configuration(
        FunctionName=name,
        Environment={"Variables": {"GREETING": "changed", "EMPTY": "", "JSONISH": '{"a": 1}'}},
    )
    wait_updated(client, name)
    _, body = invoke(client, name, b"{}")
    assert body_json(body)["env"]["GREETING"] == "changed"


# -- 7. A published version and an alias --------------------------------------------------------


@pytest.fixture(scope="module")
def versioned_fn(functions, client):
    """app.env with version 1 (STAGE=one) and alias live -> 1; $LATEST then has STAGE=latest."""
    created = functions.create(
        "py-versions", PYTHON, "app.env", py_zip(), Environment={"Variables": {"STAGE": "one"}}
    )
    name = created["FunctionName"]
    assert client.publish_version(FunctionName=name)["Version"] == "1"
    client.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    client.update_function_configuration(FunctionName=name, Environment={"Variables": {"STAGE": "latest"}})
    wait_updated(client, name)
    return created


def check_qualified_invoke(client, kwargs, executed, invoked_arn, stage):
    resp = client.invoke(Payload=b"{}", LogType="Tail", **kwargs)
    body = resp["Payload"].read()
    assert "FunctionError" not in resp, body
    assert resp["ExecutedVersion"] == executed, kwargs
    assert resp["ResponseMetadata"]["HTTPHeaders"]["x-amz-executed-version"] == executed
    doc = body_json(body)
    assert doc["env"]["STAGE"] == stage, kwargs
    assert doc["function_version"] == executed, kwargs
    assert doc["env"]["AWS_LAMBDA_FUNCTION_VERSION"] == executed, kwargs
    rid = request_id(resp)
    assert tail_of(resp).startswith(f"START RequestId: {rid} Version: {executed}\n"), tail_of(resp)
    assert doc["invoked_function_arn"] == invoked_arn, kwargs


@pytest.mark.parametrize(
    "form, executed, suffix, stage",
    [
        ("name:1", "1", ":1", "one"),
        ("Qualifier=1", "1", ":1", "one"),
        ("unqualified", "$LATEST", "", "latest"),
    ],
)
def test_published_version_context(client, versioned_fn, form, executed, suffix, stage):
    name, arn = versioned_fn["FunctionName"], versioned_fn["FunctionArn"]
    kwargs = {
        "name:1": {"FunctionName": f"{name}:1"},
        "Qualifier=1": {"FunctionName": name, "Qualifier": "1"},
        "unqualified": {"FunctionName": name},
    }[form]
    check_qualified_invoke(client, kwargs, executed, arn + suffix, stage)


@pytest.mark.parametrize("form", ["name:live", "Qualifier=live"])
def test_alias_context(client, versioned_fn, form):
    # The context's invoked_function_arn is the ARN the caller used: the alias's, while the
    # version that ran (ExecutedVersion, function_version) is the alias's version.
    name, arn = versioned_fn["FunctionName"], versioned_fn["FunctionArn"]
    kwargs = {"FunctionName": f"{name}:live"} if form == "name:live" else {"FunctionName": name, "Qualifier": "live"}
    check_qualified_invoke(client, kwargs, "1", f"{arn}:live", "one")


# -- the aws CLI --------------------------------------------------------------------------------


def test_cli_invoke_python_with_tail_log(hearth, py_fn, tmp_path):
    access_key, secret_key = hearth.credentials
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        HOME=str(tmp_path),
        AWS_CONFIG_FILE=str(tmp_path / "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
        AWS_DEFAULT_REGION=REGION,
        AWS_PAGER="",
        AWS_ACCESS_KEY_ID=access_key,
        AWS_SECRET_ACCESS_KEY=secret_key,
    )
    name = py_fn["FunctionName"]
    payload = tmp_path / "event.json"
    payload.write_bytes(b'{"n": "cli", "numbers": [40, 2]}')
    out_file = tmp_path / "out.json"
    proc = subprocess.run(
        [aws_cli(), "--endpoint-url", hearth.endpoint, "--output", "json", "lambda", "invoke",
         "--function-name", name, "--payload", f"fileb://{payload}", "--log-type", "Tail", str(out_file)],
        env=env, capture_output=True, timeout=120,
    )
    assert proc.returncode == 0, proc
    result = json.loads(proc.stdout)
    assert result["StatusCode"] == 200
    assert "FunctionError" not in result, result
    doc = json.loads(out_file.read_bytes())
    assert (doc["sum"], doc["function_name"]) == (42, name)
    log = base64.b64decode(result["LogResult"]).decode()
    assert f"START RequestId: {doc['aws_request_id']} Version: $LATEST\n" in log, log
    assert f"\nhello from {name} cli\n" in log, log


# -- 5 (last: it restarts the daemon). The log survives a restart -------------------------------


def test_log_survives_a_daemon_restart(hearth, client, logged_fn):
    name = logged_fn["FunctionName"]
    resp, body = invoke(client, name, b'{"n": "before restart"}')
    assert "FunctionError" not in resp, body
    before = request_id(resp)
    # SIGTERM right away: what was logged must be on disk when the daemon has stopped.
    code = hearth.restart(hard=False)
    assert code == 0, f"hearth exited with status {code} on SIGTERM"
    proc = hearth_logs(hearth, name)
    text = proc.stdout.decode("utf-8", "replace")
    assert proc.returncode == 0, proc
    assert f"START RequestId: {before} Version: $LATEST\nhello from {name} before restart\n" in text, text
    assert f"REPORT RequestId: {before}\t" in text, text

    fresh = hearth.client()
    resp, body = invoke(fresh, name, b'{"n": "after restart"}')
    assert "FunctionError" not in resp, body
    after = request_id(resp)
    text = stored_log(hearth, name, f"REPORT RequestId: {after}\t")
    ids = [r["id"] for r in records(text)]
    assert before in ids and after in ids and ids.index(before) < ids.index(after), ids
    assert ids[-1] == after, ids
