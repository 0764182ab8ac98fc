"""The managed-runtime bootstraps (runtimes/python/bootstrap.py, runtimes/node/bootstrap.mjs)
against a real Runtime API server.

Each test starts a small Lambda Runtime API on a random loopback port (http.server, one thread
per connection), writes a function into a temporary task root, runs the real bootstrap as a
subprocess the way hearth does (cwd = task root, Lambda's environment, stdout and stderr into
files), queues events and checks what a Lambda user would see: the bytes posted as the
response, the error documents, the context, the log lines, and that the output was in the log
file when the result was posted.

Run: python -m pytest runtimes/python/test_bootstraps.py -q
"""

import datetime
import json
import os
import queue
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
PY_BOOTSTRAP = HERE / "bootstrap.py"
NODE_BOOTSTRAP = HERE.parent / "node" / "bootstrap.mjs"
# hearth runs the Python runtime with Debian's python3; HEARTH_RUNTIME_PYTHON tries another.
PYTHON = os.environ.get("HEARTH_RUNTIME_PYTHON") or (
    "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
)
NODE = "/usr/bin/node"
API = "/2018-06-01/runtime"
ERROR_TYPE = "Lambda-Runtime-Function-Error-Type"
WAIT = 15  # seconds: generous for a loaded CI machine; a passing test takes well under one

needs_node = pytest.mark.skipif(
    not os.path.exists(NODE),
    reason="/usr/bin/node is absent: the Node.js runtime tests need Node 18+ there (CI installs it)",
)

FUNCTION_ENV = {
    "AWS_LAMBDA_FUNCTION_NAME": "my-fn",
    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
    "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/my-fn",
    "AWS_LAMBDA_LOG_STREAM_NAME": "2024/01/01/[$LATEST]0123456789abcdef",
    "AWS_REGION": "eu-west-3",
    "LAMBDA_RUNTIME_DIR": "/var/runtime",
}
ARN = "arn:aws:lambda:eu-west-3:123456789012:function:my-fn"


# ---------------------------------------------------------------------------------------------
# A Runtime API
# ---------------------------------------------------------------------------------------------


class Post:
    def __init__(self, path, headers, body, stdout_at_post):
        self.path = path
        self.headers = headers
        self.body = body
        self.stdout_at_post = stdout_at_post  # the function's stdout file when the POST arrived

    def json(self):
        return json.loads(self.body)


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A runtime killed at the end of a test resets its connection: not worth a traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class RuntimeApi:
    """Hands out queued events on /next and records every POST."""

    def __init__(self, stdout_path):
        self.stdout_path = stdout_path
        self.events = queue.Queue()
        self.posts = queue.Queue()
        self.next_calls = 0
        self.client_addresses = []
        self.stopping = threading.Event()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as Lambda's Runtime API

            def log_message(self, *args):
                pass

            def reply(self, status, body=b"", headers=()):
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                api.client_addresses.append(self.client_address)
                if self.path != API + "/invocation/next":
                    return self.reply(404)
                api.next_calls += 1
                while True:
                    try:
                        headers, body = api.events.get(timeout=0.1)
                        break
                    except queue.Empty:
                        if api.stopping.is_set():
                            self.close_connection = True
                            return
                self.reply(200, body, headers)

            def do_POST(self):
                api.client_addresses.append(self.client_address)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                stdout = api.stdout_path.read_text(encoding="utf-8", errors="replace")
                api.posts.put(Post(self.path, self.headers, body, stdout))
                self.reply(202, b'{"status":"OK"}', [("Content-Type", "application/json")])

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.address = "127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def invoke(self, event, request_id=None, deadline_in_ms=3000, extra_headers=()):
        request_id = request_id or str(uuid.uuid4())
        body = event if isinstance(event, bytes) else json.dumps(event).encode()
        headers = [
            ("Content-Type", "application/json"),
            ("Lambda-Runtime-Aws-Request-Id", request_id),
            ("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + deadline_in_ms)),
            ("Lambda-Runtime-Invoked-Function-Arn", ARN),
        ]
        self.events.put((headers + list(extra_headers), body))
        return request_id

    def next_post(self):
        try:
            return self.posts.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError("the runtime posted nothing within %ss" % WAIT) from None

    def stop(self):
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()


class Function:
    """A runtime process serving one function, and its Runtime API."""

    def __init__(self, tmp_path, language, handler, files, env=None, api_address=None):
        self.task_root = tmp_path / "task"
        self.task_root.mkdir()
        for name, text in files.items():
            path = self.task_root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))
        self.stdout_path = tmp_path / "stdout.log"
        self.stderr_path = tmp_path / "stderr.log"
        self.stdout_path.touch()
        self.api = RuntimeApi(self.stdout_path)
        full_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "AWS_LAMBDA_RUNTIME_API": api_address or self.api.address,
            "_HANDLER": handler,
            "LAMBDA_TASK_ROOT": str(self.task_root),
            **FUNCTION_ENV,
            **(env or {}),
        }
        cmd = [PYTHON, str(PY_BOOTSTRAP)] if language == "python" else [NODE, str(NODE_BOOTSTRAP)]
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, cwd=self.task_root, env=full_env, stdout=out, stderr=err)

    def invoke(self, event, **kwargs):
        """Queue an event; returns (request id, the POST that answered it)."""
        request_id = self.api.invoke(event, **kwargs)
        return request_id, self.api.next_post()

    def wait_exit(self):
        try:
            return self.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            raise AssertionError("the runtime did not exit; stderr:\n" + self.stderr()) from None

    def stdout(self):
        return self.stdout_path.read_text(encoding="utf-8")

    def stderr(self):
        return self.stderr_path.read_text(encoding="utf-8")

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.api.stop()


@pytest.fixture
def start(tmp_path):
    started = []

    def start(language, handler, files, **kwargs):
        home = tmp_path / str(len(started))
        home.mkdir()
        fn = Function(home, language, handler, files, **kwargs)
        started.append(fn)
        return fn

    yield start
    for fn in started:
        fn.close()


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_log_time_is_now(stamp):
    """A log line's UTC timestamp (…T…Z) is within a minute of now."""
    when = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    assert abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds()) < 60


# ---------------------------------------------------------------------------------------------
# Python
# ---------------------------------------------------------------------------------------------

PY_CONTEXT_APP = """
    import os, sys, time

    def handler(event, context):
        first = context.get_remaining_time_in_millis()
        time.sleep(0.05)
        second = context.get_remaining_time_in_millis()
        cc = context.client_context
        return {
            "event": event,
            "first": first,
            "second": second,
            "request_id": context.aws_request_id,
            "arn": context.invoked_function_arn,
            "function_name": context.function_name,
            "function_version": context.function_version,
            "memory": context.memory_limit_in_mb,
            "log_group": context.log_group_name,
            "log_stream": context.log_stream_name,
            "identity": [context.identity.cognito_identity_id, context.identity.cognito_identity_pool_id],
            "client_context": None if cc is None else {
                "custom": cc.custom, "env": cc.env, "app_title": cc.client.app_title,
            },
            "trace": os.environ.get("_X_AMZN_TRACE_ID"),
            "cwd": os.getcwd(),
            "sys_path": sys.path[:3],
        }
"""


def test_python_channel_headers_and_the_zygote_warm_up():
    """The headers a forked environment makes from what the channel gives it, and the zygote's
    warm-up of the runtime's own per-invocation code, which leaves the process's environment as
    it found it."""
    script = textwrap.dedent(
        """
        import importlib.util, json, os, sys
        spec = importlib.util.spec_from_file_location("bootstrap", sys.argv[1])
        bootstrap = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bootstrap)
        before = dict(os.environ)
        bootstrap.warm_up()
        assert dict(os.environ) == before, "the warm-up changed the environment"
        given = bootstrap.channel_headers(
            b"Lambda-Runtime-Invoked-Function-Arn: arn:x\\nLambda-Runtime-Trace-Id: Root=1-abc\\n", "req-1", 1234
        )
        made = bootstrap.channel_headers(b"", "8f5e2b1c-0000-4000-8000-0123456789ab", 0)
        print(json.dumps([given, made]))
        """
    )
    out = subprocess.run([PYTHON, "-c", script, str(PY_BOOTSTRAP)], capture_output=True, text=True, timeout=WAIT)
    assert out.returncode == 0, out.stderr
    given, made = json.loads(out.stdout)
    assert given == {
        "Lambda-Runtime-Invoked-Function-Arn": "arn:x",
        "Lambda-Runtime-Trace-Id": "Root=1-abc",
        "Lambda-Runtime-Aws-Request-Id": "req-1",
        "Lambda-Runtime-Deadline-Ms": "1234",
    }
    assert made["Lambda-Runtime-Deadline-Ms"] == "0"
    assert re.fullmatch(
        r"Root=1-[0-9a-f]{8}-8f5e2b1c0000400080000123;Parent=80000123456789ab;Sampled=0",
        made["Lambda-Runtime-Trace-Id"],
    ), made


def test_python_response_and_context(start):
    fn = start("python", "app.handler", {"app.py": PY_CONTEXT_APP})
    client_context = {"custom": {"k": "v"}, "env": {"platform": "x"}, "client": {"app_title": "demo"}}
    identity = {"cognitoIdentityId": "id-1", "cognitoIdentityPoolId": "pool-1"}
    rid, post = fn.invoke(
        {"hello": "world"},
        extra_headers=[
            ("Lambda-Runtime-Trace-Id", "Root=1-5e1b4151-5ac6c58f5b5daa6532e4f2c5;Parent=1;Sampled=1"),
            ("Lambda-Runtime-Client-Context", json.dumps(client_context)),
            ("Lambda-Runtime-Cognito-Identity", json.dumps(identity)),
        ],
    )
    assert post.path == "%s/invocation/%s/response" % (API, rid)
    assert post.headers["Content-Type"] == "application/json"
    got = post.json()
    assert got["event"] == {"hello": "world"}
    assert got["request_id"] == rid and got["arn"] == ARN
    assert 0 < got["first"] <= 3000
    assert got["second"] <= got["first"] - 45, "remaining time must decrease as time passes"
    assert (got["function_name"], got["function_version"], got["memory"]) == ("my-fn", "$LATEST", "256")
    assert got["log_group"] == "/aws/lambda/my-fn"
    assert got["log_stream"] == FUNCTION_ENV["AWS_LAMBDA_LOG_STREAM_NAME"]
    assert got["identity"] == ["id-1", "pool-1"]
    assert got["client_context"] == {"custom": {"k": "v"}, "env": {"platform": "x"}, "app_title": "demo"}
    assert got["trace"].startswith("Root=1-5e1b4151")
    assert got["cwd"] == str(fn.task_root)
    layer_site = "/opt/python/lib/python%d.%d/site-packages" % fn_python_version()
    assert got["sys_path"] == [str(fn.task_root), layer_site, "/opt/python"]

    # A second invocation without the optional headers: no client context, an empty identity,
    # no trace id left over from the first.
    rid2, post2 = fn.invoke([1, 2, 3])
    got2 = post2.json()
    assert got2["request_id"] == rid2 and got2["event"] == [1, 2, 3]
    assert got2["client_context"] is None
    assert got2["identity"] == [None, None]
    assert got2["trace"] is None

    # One kept-alive connection carried every request.
    assert len(set(fn.api.client_addresses)) == 1


def fn_python_version():
    out = subprocess.run([PYTHON, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True, text=True)
    return tuple(int(x) for x in out.stdout.split())


@pytest.mark.parametrize(
    "expr, body",
    [
        ("None", b"null"),
        ("{'a': 1, 'b': [1, 2.5, None, True], 's': 'caf\\u00e9'}", '{"a": 1, "b": [1, 2.5, null, true], "s": "café"}'.encode()),
        ("{'price': Decimal('19.990'), 'qty': Decimal('3'), 'big': Decimal('1E+30')}", b'{"price": 19.990, "qty": 3, "big": 1E+30}'),
        ("'text'", b'"text"'),
    ],
)
def test_python_result_bytes(start, expr, body):
    fn = start("python", "app.handler", {"app.py": "from decimal import Decimal\ndef handler(e, c):\n    return %s\n" % expr})
    _, post = fn.invoke({})
    assert post.body == body


def test_python_modules_of_the_functions_own_never_replace_the_runtimes(start):
    # As in Lambda, where the runtime has imported them before the function's code is on the
    # path: a package's own http/ or decimal.py does not replace the standard library's for the
    # runtime nor for libraries such as urllib3 (http.client included, which the runtime imports
    # only once it needs it).
    files = {
        "http/__init__.py": "raise ImportError('the function package shadowed http')\n",
        "decimal.py": "raise ImportError('the function package shadowed decimal')\n",
        "app.py": "import http.client, decimal\n"
        "def handler(e, c):\n"
        "    return [http.client.__file__.startswith(__import__('sysconfig').get_path('stdlib')),\n"
        "            decimal.Decimal('1.50')]\n",
    }
    fn = start("python", "app.handler", files)
    _, post = fn.invoke({})
    assert post.body == b"[true, 1.50]"


def test_python_handler_exception(start):
    app = """\
        def handler(event, context):
            if event.get("fail"):
                helper()
            return "fine"

        def helper():
            raise ValueError("boom")
    """
    fn = start("python", "app.handler", {"app.py": app})
    rid, post = fn.invoke({"fail": True})
    assert post.path == "%s/invocation/%s/error" % (API, rid)
    assert ERROR_TYPE not in post.headers  # awslambdaric sends none: the invoker sees Unhandled
    path = str(fn.task_root / "app.py")
    assert post.json() == {
        "errorMessage": "boom",
        "errorType": "ValueError",
        "requestId": rid,
        "stackTrace": [
            '  File "%s", line 3, in handler\n    helper()\n' % path,
            '  File "%s", line 7, in helper\n    raise ValueError("boom")\n' % path,
        ],
    }
    assert "[ERROR] ValueError: boom\nTraceback (most recent call last):\n" in fn.stderr()
    assert '  File "%s", line 7, in helper\n    raise ValueError("boom")\n' % path in fn.stderr()

    # The runtime goes on serving.
    _, post = fn.invoke({})
    assert post.body == b'"fine"'


def test_python_marshal_error(start):
    fn = start("python", "app.handler", {"app.py": "def handler(e, c):\n    return {1, 2}\n"})
    rid, post = fn.invoke({})
    assert post.path.endswith("/%s/error" % rid)
    assert post.json() == {
        "errorMessage": "Unable to marshal response: Object of type set is not JSON serializable",
        "errorType": "Runtime.MarshalError",
        "requestId": rid,
        "stackTrace": [],
    }


def test_python_event_that_is_not_json(start):
    fn = start("python", "app.handler", {"app.py": "def handler(e, c):\n    print('handler called')\n"})
    rid, post = fn.invoke(b"not json")
    assert post.path.endswith("/%s/error" % rid)
    assert post.json()["errorType"] == "Runtime.UnmarshalError"
    assert post.json()["errorMessage"] == "Unable to unmarshal input: Expecting value: line 1 column 1 (char 0)"
    assert "handler called" not in fn.stdout()


@pytest.mark.parametrize(
    "handler, files, error_type, message",
    [
        ("app", {"app.py": "def handler(e, c): pass\n"}, "Runtime.MalformedHandlerName",
         "Bad handler 'app': not enough values to unpack (expected 2, got 1)"),
        ("missing.handler", {}, "Runtime.ImportModuleError", "Unable to import module 'missing': No module named 'missing'"),
        ("app.handler", {"app.py": "import not_installed_dependency\n"}, "Runtime.ImportModuleError",
         "Unable to import module 'app': No module named 'not_installed_dependency'"),
        ("app.nope", {"app.py": "def handler(e, c): pass\n"}, "Runtime.HandlerNotFound", "Handler 'nope' missing on module 'app'"),
        ("app.handler", {"app.py": "def handler(:\n"}, "Runtime.UserCodeSyntaxError", "Syntax error in module 'app': "),
        ("app.handler", {"app.py": "CONFIG = {}\nREGION = CONFIG['region']\n"}, "KeyError", "'region'"),
        ("sys.handler", {}, "Runtime.BuiltInModuleConflict", "Cannot use built-in module sys as a handler module"),
    ],
)
def test_python_init_errors(start, handler, files, error_type, message):
    fn = start("python", handler, files)
    post = fn.api.next_post()
    assert post.path == API + "/init/error"
    assert post.headers[ERROR_TYPE] == error_type
    doc = post.json()
    assert doc["errorType"] == error_type
    assert doc["errorMessage"].startswith(message)
    assert doc["requestId"] == ""
    assert fn.wait_exit() == 1
    assert fn.api.next_calls == 0
    assert ("[ERROR] %s: %s" % (error_type, message)) in fn.stderr()
    if error_type == "Runtime.UserCodeSyntaxError":
        assert doc["stackTrace"][0].startswith('  File "%s" Line 1' % (fn.task_root / "app.py"))
    if error_type == "KeyError":
        assert doc["stackTrace"][-1] == '  File "%s", line 2, in <module>\n    REGION = CONFIG[\'region\']\n' % (
            fn.task_root / "app.py"
        )


def test_python_handler_in_a_subdirectory(start):
    files = {"dir/sub/mod.py": "def fn(event, context):\n    return {'module': __name__, 'event': event}\n"}
    fn = start("python", "dir/sub.mod.fn", files)
    _, post = fn.invoke({"x": 1})
    assert post.json() == {"module": "dir.sub.mod", "event": {"x": 1}}


PY_LOGGING_APP = """
    import logging
    logger = logging.getLogger()
    if SET_INFO:
        logger.setLevel(logging.INFO)

    def handler(event, context):
        print("printed line")
        print("x" * 100000)
        logger.info("info %s", "message")
        logger.debug("debug message")
        logging.getLogger("child").warning("child warning")
        return "ok"
"""


@pytest.mark.parametrize(
    "set_info, env, shown, hidden",
    [
        (False, {}, ["WARNING"], ["INFO", "DEBUG"]),  # the root logger starts at WARNING
        (True, {}, ["WARNING", "INFO"], ["DEBUG"]),  # logger.setLevel works, the handler is there
        (False, {"AWS_LAMBDA_LOG_LEVEL": "DEBUG"}, ["WARNING", "INFO", "DEBUG"], []),
    ],
)
def test_python_logging(start, set_info, env, shown, hidden):
    app = "SET_INFO = %r\n" % set_info + textwrap.dedent(PY_LOGGING_APP)
    fn = start("python", "app.handler", {"app.py": app}, env=env)
    rid, post = fn.invoke({})
    assert post.body == b'"ok"'
    out = post.stdout_at_post  # everything below was in the file before the response was posted
    assert "printed line\n" + "x" * 100000 + "\n" in out
    lines = {
        "WARNING": r"\[WARNING\]\t(\S+)\t%s\tchild warning\n" % rid,
        "INFO": r"\[INFO\]\t(\S+)\t%s\tinfo message\n" % rid,
        "DEBUG": r"\[DEBUG\]\t(\S+)\t%s\tdebug message\n" % rid,
    }
    for level in shown:
        match = re.search(lines[level], out)
        assert match, "no %s line in %r" % (level, out[-500:])
        assert_log_time_is_now(match.group(1))
    for level in hidden:
        assert not re.search(lines[level], out)


def test_python_runtime_api_unreachable(start):
    fn = start("python", "app.handler", {"app.py": "def handler(e, c): pass\n"},
               api_address="127.0.0.1:%d" % closed_port())
    assert fn.wait_exit() != 0
    assert "Runtime API" in fn.stderr() and "Connection refused" in fn.stderr()


# ---------------------------------------------------------------------------------------------
# Node.js
# ---------------------------------------------------------------------------------------------

NODE_CONTEXT_APP = """
    exports.handler = async (event, context) => {
      const first = context.getRemainingTimeInMillis();
      await new Promise((r) => setTimeout(r, 50));
      return {
        event,
        first,
        second: context.getRemainingTimeInMillis(),
        requestId: context.awsRequestId,
        arn: context.invokedFunctionArn,
        functionName: context.functionName,
        functionVersion: context.functionVersion,
        memory: context.memoryLimitInMB,
        logGroup: context.logGroupName,
        logStream: context.logStreamName,
        identity: context.identity ?? null,
        clientContext: context.clientContext ?? null,
        trace: process.env._X_AMZN_TRACE_ID ?? null,
        waits: context.callbackWaitsForEmptyEventLoop,
        cwd: process.cwd(),
      };
    };
"""


@needs_node
def test_node_async_handler_and_context(start):
    fn = start("node", "index.handler", {"index.js": NODE_CONTEXT_APP})
    client_context = {"custom": {"k": "v"}, "client": {"app_title": "demo"}}
    identity = {"cognitoIdentityId": "id-1", "cognitoIdentityPoolId": "pool-1"}
    rid, post = fn.invoke(
        {"hello": "world"},
        extra_headers=[
            ("Lambda-Runtime-Trace-Id", "Root=1-5e1b4151-5ac6c58f5b5daa6532e4f2c5"),
            ("Lambda-Runtime-Client-Context", json.dumps(client_context)),
            ("Lambda-Runtime-Cognito-Identity", json.dumps(identity)),
        ],
    )
    assert post.path == "%s/invocation/%s/response" % (API, rid)
    got = post.json()
    assert got["event"] == {"hello": "world"}
    assert got["requestId"] == rid and got["arn"] == ARN
    assert 0 < got["first"] <= 3000
    assert got["second"] <= got["first"] - 45, "remaining time must decrease as time passes"
    assert (got["functionName"], got["functionVersion"], got["memory"]) == ("my-fn", "$LATEST", "256")
    assert got["logGroup"] == "/aws/lambda/my-fn"
    assert got["logStream"] == FUNCTION_ENV["AWS_LAMBDA_LOG_STREAM_NAME"]
    assert got["identity"] == identity and got["clientContext"] == client_context
    assert got["trace"] == "Root=1-5e1b4151-5ac6c58f5b5daa6532e4f2c5"
    assert got["waits"] is True
    assert got["cwd"] == str(fn.task_root)

    rid2, post2 = fn.invoke("second")
    got2 = post2.json()
    assert got2["requestId"] == rid2 and got2["event"] == "second"
    assert got2["identity"] is None and got2["clientContext"] is None and got2["trace"] is None
    assert len(set(fn.api.client_addresses)) == 1, "one kept-alive connection carries every request"


@needs_node
@pytest.mark.parametrize(
    "handler, files, kind",
    [
        ("app.handler", {"app.js": "exports.handler = async (e) => ({kind: 'cjs-js', e})"}, "cjs-js"),
        ("app.handler", {"app.mjs": "export const handler = async (e) => ({kind: 'mjs', e});"}, "mjs"),
        ("app.handler", {"app.cjs": "module.exports.handler = async (e) => ({kind: 'cjs', e});"}, "cjs"),
        (
            "app.handler",
            {
                "package.json": '{"type": "module"}',
                "app.js": "export async function handler(e) { return {kind: typeof import.meta.url, e}; }",
            },
            "string",  # an ES module: import.meta exists
        ),
        ("src/lib/app.handler", {"src/lib/app.js": "exports.handler = async (e) => ({kind: 'nested', e})"}, "nested"),
        ("app.handlers.main", {"app.js": "exports.handlers = {main: async (e) => ({kind: 'deep', e})}"}, "deep"),
    ],
)
def test_node_module_kinds(start, handler, files, kind):
    fn = start("node", handler, files)
    _, post = fn.invoke({"n": 1})
    assert post.json() == {"kind": kind, "e": {"n": 1}}


@needs_node
def test_node_result_bytes(start):
    fn = start("node", "app.handler", {"app.js": "exports.handler = async (e) => e.undef ? undefined : {a: 1, s: 'caf\\u00e9', n: null}"})
    _, post = fn.invoke({})
    assert post.body == '{"a":1,"s":"café","n":null}'.encode()
    _, post = fn.invoke({"undef": True})
    assert post.body == b"null"


NODE_CALLBACK_APP = """
    exports.handler = (event, context, callback) => {
      context.callbackWaitsForEmptyEventLoop = event.wait;
      // Work still pending after the callback: Lambda answers only once it is done, unless
      // callbackWaitsForEmptyEventLoop is false.
      setTimeout(() => console.log('late timer fired'), 300);
      setTimeout(() => callback(null, {via: 'callback', waits: context.callbackWaitsForEmptyEventLoop}), 10);
    };
"""


@needs_node
def test_node_callback_handler(start):
    fn = start("node", "app.handler", {"app.js": NODE_CALLBACK_APP})
    _, post = fn.invoke({"wait": True})
    assert post.json() == {"via": "callback", "waits": True}
    assert "late timer fired" in post.stdout_at_post

    _, post = fn.invoke({"wait": False})
    assert post.json() == {"via": "callback", "waits": False}
    assert post.stdout_at_post.count("late timer fired") == 1, "posted before the pending timer"


@needs_node
def test_node_sync_handler_without_callback_answers_null(start):
    # As in Lambda, a non-async handler's return value is not the result: it answers null once
    # the event loop is empty.
    fn = start("node", "app.handler", {"app.js": "exports.handler = (event, context) => 'ignored'"})
    _, post = fn.invoke({})
    assert post.body == b"null"


NODE_ERRORS_APP = """
    class BadThing extends Error {
      constructor(message) { super(message); this.name = 'BadThing'; }
    }
    exports.handler = async (event, context) => {
      switch (event.how) {
        case 'throw': throw new BadThing('nope');
        case 'string': throw 'plain string';
        case 'ok': return 'fine';
      }
    };
    exports.cb = (event, context, callback) => {
      if (event.how === 'sync') null.boom;
      callback(new Error('callback failed'));
    };
"""


@needs_node
@pytest.mark.parametrize(
    "handler, event, error_type, message, first_trace_line",
    [
        ("app.handler", {"how": "throw"}, "BadThing", "nope", "BadThing: nope"),
        ("app.handler", {"how": "string"}, "string", "plain string", None),
        ("app.cb", {"how": "callback"}, "Error", "callback failed", "Error: callback failed"),
        ("app.cb", {"how": "sync"}, "TypeError", "Cannot read properties of null (reading 'boom')", "TypeError: "),
    ],
)
def test_node_handler_errors(start, handler, event, error_type, message, first_trace_line):
    fn = start("node", handler, {"app.js": NODE_ERRORS_APP})
    rid, post = fn.invoke(event)
    assert post.path == "%s/invocation/%s/error" % (API, rid)
    assert ERROR_TYPE not in post.headers  # as Lambda's node runtime: the invoker sees Unhandled
    doc = post.json()
    assert set(doc) == {"errorType", "errorMessage", "trace"}
    assert (doc["errorType"], doc["errorMessage"]) == (error_type, message)
    if first_trace_line is None:
        assert doc["trace"] == []
    else:
        assert doc["trace"][0].startswith(first_trace_line)
        assert any(str(fn.task_root / "app.js") in line for line in doc["trace"][1:])
    # Logged as Lambda logs it, before the post (a thrown non-Error is logged as an Error).
    logged_type = error_type if first_trace_line else "Error"
    assert re.search(r"\t%s\tERROR\tInvoke Error \t\{\"errorType\":\"%s\",\"errorMessage\":\"%s\"" % (
        rid, logged_type, re.escape(message)), post.stdout_at_post)
    # The runtime goes on serving.
    if handler == "app.handler":
        _, post = fn.invoke({"how": "ok"})
        assert post.body == b'"fine"'


@needs_node
def test_node_event_that_is_not_json(start):
    fn = start("node", "app.handler", {"app.js": "exports.handler = async () => console.log('handler called')"})
    rid, post = fn.invoke(b"not json")
    assert post.path.endswith("/%s/error" % rid)
    assert post.json()["errorType"] == "SyntaxError"  # Lambda's node runtime fails with JSON.parse's error
    assert "JSON" in post.json()["errorMessage"]
    assert "handler called" not in fn.stdout()


@needs_node
def test_node_unserializable_result(start):
    fn = start("node", "app.handler", {"app.js": "exports.handler = async () => ({n: 1n})"})
    rid, post = fn.invoke({})
    assert post.path.endswith("/%s/error" % rid)
    assert post.json()["errorType"] == "Error"
    assert post.json()["errorMessage"] == "Unable to stringify response body"


@needs_node
def test_node_uncaught_exception_fails_the_invocation(start):
    app = "exports.handler = (e, c, cb) => { setTimeout(() => { throw new RangeError('late'); }, 10); };"
    fn = start("node", "app.handler", {"app.js": app})
    rid, post = fn.invoke({})
    assert post.path.endswith("/%s/error" % rid)
    assert post.json()["errorType"] == "RangeError" and post.json()["errorMessage"] == "late"
    assert fn.wait_exit() == 129


@needs_node
@pytest.mark.parametrize(
    "handler, files, error_type, message",
    [
        ("missing.handler", {}, "Runtime.ImportModuleError", "Error: Cannot find module 'missing'"),
        ("app.nope", {"app.js": "exports.handler = async () => 1"}, "Runtime.HandlerNotFound", "app.nope is undefined or not exported"),
        ("app.value", {"app.js": "exports.value = 42"}, "Runtime.HandlerNotFound", "app.value is not a function"),
        ("app", {"app.js": "exports.handler = async () => 1"}, "Runtime.MalformedHandlerName", "Bad handler"),
        ("app.handler", {"app.js": "exports.handler = async () => {"}, "Runtime.UserCodeSyntaxError", "SyntaxError: "),
        ("app.handler", {"app.mjs": "export const handler = ;"}, "Runtime.UserCodeSyntaxError", "SyntaxError: "),
        ("app.handler", {"app.js": "throw new TypeError('bad config')"}, "TypeError", "bad config"),
    ],
)
def test_node_init_errors(start, handler, files, error_type, message):
    fn = start("node", handler, files)
    post = fn.api.next_post()
    assert post.path == API + "/init/error"
    assert post.headers[ERROR_TYPE] == error_type
    doc = post.json()
    assert doc["errorType"] == error_type
    assert doc["errorMessage"].startswith(message)
    assert doc["trace"][0].startswith(error_type)
    assert fn.wait_exit() == 129
    assert fn.api.next_calls == 0
    # Logged as Lambda logs it: no request id yet.
    assert re.search(r"\tundefined\tERROR\tUncaught Exception \t\{\"errorType\":\"%s\"" % re.escape(error_type), fn.stdout())


NODE_LOGGING_APP = """
    console.log('at init');
    exports.handler = async () => {
      console.log('hello %s', 'world', 42);
      console.info({a: 1});
      console.warn('careful');
      console.error('bad', new Error('x').message);
      console.debug('details');
      console.log('y'.repeat(100000));
      return 'ok';
    };
"""


@needs_node
@pytest.mark.parametrize(
    "env, shown, hidden",
    [
        ({}, ["INFO\thello world 42", "INFO\t{ a: 1 }", "WARN\tcareful", "ERROR\tbad x", "DEBUG\tdetails"], []),
        ({"AWS_LAMBDA_LOG_LEVEL": "WARN"}, ["WARN\tcareful", "ERROR\tbad x"], ["INFO\thello", "DEBUG\tdetails"]),
    ],
)
def test_node_logging(start, env, shown, hidden):
    fn = start("node", "app.handler", {"app.js": NODE_LOGGING_APP}, env=env)
    rid, post = fn.invoke({})
    assert post.body == b'"ok"'
    out = post.stdout_at_post  # everything below was in the file before the response was posted
    for text in shown:
        match = re.search(r"^(\S+)\t%s\t%s\n" % (rid, re.escape(text)), out, re.M)
        assert match, "no %r line in %r" % (text, out[-500:])
        assert_log_time_is_now(match.group(1))
    for text in hidden:
        assert ("\t%s\t%s" % (rid, text)) not in out
    if not hidden:
        assert re.search(r"^\S+\tundefined\tINFO\tat init\n", out, re.M)
        assert "\t%s\tINFO\t%s\n" % (rid, "y" * 100000) in out


@needs_node
def test_node_runtime_api_unreachable(start):
    fn = start("node", "app.handler", {"app.js": "exports.handler = async () => 1"},
               api_address="127.0.0.1:%d" % closed_port())
    assert fn.wait_exit() != 0
    assert "Runtime API" in fn.stderr() and "ECONNREFUSED" in fn.stderr()
