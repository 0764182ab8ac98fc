"""hearth's managed Python runtime: Lambda's Runtime API client for the python3.x runtimes.

hearth starts it as ``/usr/bin/python3 /var/runtime/python/bootstrap.py`` with cwd ``/var/task``.
It behaves like AWS's runtime (awslambdaric, which the python3.x managed runtimes run), so that
existing Lambda Python code runs unchanged:

* init: ``_HANDLER`` is ``module.function`` (the module may hold dots and a leading ``dir/``
  path); the module is imported from ``LAMBDA_TASK_ROOT`` (then the layer paths under /opt)
  and failures go to ``/runtime/init/error`` with Lambda's ``Runtime.*`` error types, after
  which the process exits with status 1;
* loop: ``GET /runtime/invocation/next``, call ``handler(event, context)``, then ``POST`` the
  JSON result to ``.../response`` or an error document to ``.../error``;
* logs: print is unbuffered, the root ``logging`` handler writes Lambda's
  ``[LEVEL]\\t<time>Z\\t<request id>\\t<message>`` lines, and both streams are flushed before
  every POST so the output is in the log before the invoker sees the result.

As a **zygote** (hearth passes a socket instead of a channel at ``HEARTH_CHANNEL_FD``), it
imports the handler once, then forks a new environment each time hearth asks, in
``libhearth_runtime.so``'s loop (ctypes; see runtimes/src/ffi.rs), which calls the interpreter's
own fork hooks as ``os.fork`` does; each child reads its
invocations from hearth's shared-memory channel and answers there, with the same handler
semantics (no HTTP). A failed import ends the zygote: hearth then starts environments from
nothing, which report the error as above.

Standard library only; runs on Python 3.8 and later. The modules it uses are imported before
the function's code is on the search path, so that a function's own file of the same name never
replaces them, as in Lambda; all but ``http.client``, which only the Runtime API client needs
and which is about a third of a bare zygote's memory (a zygote's children copy, at every fork,
the page-table entries of each page the zygote's imports filled). Its package ``http`` is
imported here, so that ``http.client`` still comes from the standard library when the function
(boto3, urllib3) or the client imports it later, as it does in Lambda, whose runtime imports it.
"""

import ctypes
import decimal
import gc
import http
import importlib
import json
import logging
import os
import re
import stat
import sys
import time
import traceback

RUNTIME_API_VERSION = "/2018-06-01"
ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"

# Lambda's fault types (awslambdaric's FaultException constants).
MARSHAL_ERROR = "Runtime.MarshalError"
UNMARSHAL_ERROR = "Runtime.UnmarshalError"
USER_CODE_SYNTAX_ERROR = "Runtime.UserCodeSyntaxError"
HANDLER_NOT_FOUND = "Runtime.HandlerNotFound"
IMPORT_MODULE_ERROR = "Runtime.ImportModuleError"
BUILT_IN_MODULE_CONFLICT = "Runtime.BuiltInModuleConflict"
MALFORMED_HANDLER_NAME = "Runtime.MalformedHandlerName"
LAMBDA_CONTEXT_UNMARSHAL_ERROR = "Runtime.LambdaContextUnmarshalError"


class FaultException(Exception):
    """An error the runtime itself diagnoses (bad handler name, unmarshalable result, ...)."""

    def __init__(self, exception_type, msg, trace=None):
        super().__init__(msg)
        self.exception_type = exception_type
        self.msg = msg
        self.trace = trace


class RuntimeApiError(Exception):
    """The Runtime API could not be reached or broke the protocol: the runtime cannot go on."""


# ---------------------------------------------------------------------------------------------
# JSON, the way awslambdaric marshals it
# ---------------------------------------------------------------------------------------------

# awslambdaric encodes with simplejson and writes a Decimal as its exact digits (a raw JSON
# number; NaN as NaN). The standard library has no raw JSON value, so a Decimal is first written
# as a string carrying a per-process marker, and the marked strings are then unquoted.
_DECIMAL_MARK = "__hearth_decimal_%s__:" % os.urandom(16).hex()
_DECIMAL_RE = re.compile('"%s([^"]*)"' % re.escape(_DECIMAL_MARK))


class _Encoder(json.JSONEncoder):
    def default(self, o):
        if isinstance(o, decimal.Decimal):
            return _DECIMAL_MARK + ("NaN" if o.is_nan() else str(o))
        return super().default(o)


def to_json(obj):
    """Serialise like Lambda's python runtime: UTF-8 (as python3.12+ does, ensure_ascii=False),
    falling back to ASCII escapes for strings that are not valid Unicode (lone surrogates)."""
    try:
        text = _Encoder(ensure_ascii=False).encode(obj)
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        text = _Encoder().encode(obj)
        data = text.encode("ascii")
    if _DECIMAL_MARK.encode() in data:
        data = _DECIMAL_RE.sub(r"\1", text).encode("utf-8")
    return data


def unmarshal_event(body, content_type):
    # awslambdaric decodes application/json and hands any other content type over as bytes.
    # hearth's Runtime API may leave Content-Type out: a missing one is taken as JSON.
    if content_type and content_type.split(";")[0].strip().lower() != "application/json":
        return body
    try:
        return json.loads(body)
    except Exception as e:
        raise FaultException(UNMARSHAL_ERROR, "Unable to unmarshal input: {}".format(e))


def marshal_response(response):
    if isinstance(response, bytes):
        return response, "application/unknown"
    try:
        return to_json(response), "application/json"
    except Exception as e:
        raise FaultException(MARSHAL_ERROR, "Unable to marshal response: {}".format(e))


# ---------------------------------------------------------------------------------------------
# The Runtime API client
# ---------------------------------------------------------------------------------------------


class RuntimeClient:
    """One persistent HTTP/1.1 connection to the Runtime API (no timeouts: a /next may wait for
    as long as the environment stays idle)."""

    def __init__(self, address):
        import http.client  # here, not above: a zygote's children never speak HTTP (module docs)

        self.address = address
        self.conn = http.client.HTTPConnection(address)
        self.used = False  # whether self.conn has carried a request already

    def _request(self, method, path, body=None, headers=None):
        for attempt in (1, 2):
            reused = self.used
            try:
                self.conn.request(method, RUNTIME_API_VERSION + path, body=body, headers=headers or {})
                self.used = True
                response = self.conn.getresponse()
                return response, response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                # A kept-alive connection the server closed while idle: the request never got
                # there, so it is sent once more on a new connection.
                self.conn.close()
                self.used = False
                if not reused or attempt == 2:
                    raise RuntimeApiError("{} {}: {}".format(method, path, e)) from e
            except (OSError, http.client.HTTPException) as e:
                self.conn.close()
                self.used = False
                raise RuntimeApiError("{} {}: {}".format(method, path, e)) from e

    def _post(self, path, body, headers):
        flush_output()
        response, data = self._request("POST", path, body, headers)
        if response.status // 100 != 2:
            # The invocation is over for the Runtime API either way (a late post for a timed-out
            # request, a response over the size limit): say so and serve the next one.
            write_stderr(
                "Runtime API refused POST {}: {} {}\n".format(path, response.status, data.decode("utf-8", "replace"))
            )

    def next_invocation(self):
        response, body = self._request("GET", "/runtime/invocation/next")
        if response.status != 200:
            raise RuntimeApiError(
                "GET /runtime/invocation/next: {} {}".format(response.status, body.decode("utf-8", "replace"))
            )
        return response.headers, body

    def post_init_error(self, error_result):
        # awslambdaric names the error type in the header as well as in the body.
        headers = {"Content-Type": "application/json", ERROR_TYPE_HEADER: error_result["errorType"]}
        self._post("/runtime/init/error", to_json(error_result), headers)

    def post_invocation_result(self, request_id, body, content_type):
        self._post("/runtime/invocation/{}/response".format(request_id), body, {"Content-Type": content_type})

    def post_invocation_error(self, request_id, error_result):
        # As awslambdaric (through aws-lambda-cpp): a JSON body and no error-type header; the
        # Runtime API reports the failure as Unhandled. (awslambdaric also sends an X-Ray cause
        # header; hearth has no X-Ray and a deep stack could outgrow its header limit.)
        path = "/runtime/invocation/{}/error".format(request_id)
        self._post(path, to_json(error_result), {"Content-Type": "application/json"})


# ---------------------------------------------------------------------------------------------
# Output and logging
# ---------------------------------------------------------------------------------------------


def generated_trace_id(request_id):
    """An X-Ray trace header for an invocation that came without one, as hearth-init makes it:
    ``Root=1-<seconds, 8 hex>-<24 hex of the request id>;Parent=<16 hex>;Sampled=0``."""
    digits = "".join(c for c in request_id if c in "0123456789abcdefABCDEF")
    root = digits[:24] if len(digits) >= 24 else "0" * 24
    parent = digits[16:32] if len(digits) >= 32 else "0" * 16
    return "Root=1-{:08x}-{};Parent={};Sampled=0".format(int(time.time()), root, parent)


class _Invocation(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_uint64),
        ("deadline_ms", ctypes.c_uint64),
        ("request_id", ctypes.c_char * 36),
        ("payload", ctypes.c_void_p),
        ("payload_len", ctypes.c_size_t),
        ("context", ctypes.c_void_p),
        ("context_len", ctypes.c_size_t),
    ]


def channel_headers(context, request_id, deadline_ms):
    """The Runtime API's headers of an invocation read from the channel: its context lines
    (``Name: value``), the request id and the deadline."""
    headers = {}
    for line in context.decode("utf-8", "replace").split("\n"):
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip()] = value.strip()
    headers["Lambda-Runtime-Aws-Request-Id"] = request_id
    headers["Lambda-Runtime-Deadline-Ms"] = str(deadline_ms)
    # hearth-init gives an invocation that came without a trace header one of its own; so
    # does a forked environment, which has no hearth-init.
    if not any(name.lower() == "lambda-runtime-trace-id" for name in headers):
        headers["Lambda-Runtime-Trace-Id"] = generated_trace_id(request_id)
    return headers


def warm_up():
    """Runs the runtime's own per-invocation code (never the handler) in the zygote before it
    forks, so that the interpreter's one-time work on that code is done once, there: a code
    object is rewritten for the specialising interpreter after a few calls, and types and dicts
    get the version tags its caches use at their first lookups. A child doing that itself would
    write to, and so copy, pages it shares with the zygote."""
    request_id = "00000000-0000-0000-0000-000000000000"
    context = (
        b"Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:000000000000:function:w\n"
        b"Content-Type: application/json"
    )
    for _ in range(16):
        headers = channel_headers(context, request_id, 0)
        create_context(headers, request_id).get_remaining_time_in_millis()
        event = unmarshal_event(b'{"warm": [1, 2.5, "up", null, true, {"k": "v"}]}', headers.get("Content-Type"))
        marshal_response(event)
        marshal_response(b"")


class ChannelClient:
    """hearth's shared-memory channel, in a child of a zygote: the same calls as
    RuntimeClient, answered through libhearth_runtime.so."""

    def __init__(self, lib, channel):
        self.lib = lib
        self.channel = channel
        self.current = None
        self.started = 0.0

    def next_invocation(self):
        invocation = _Invocation()
        rc = self.lib.hearth_channel_next(self.channel, ctypes.byref(invocation))
        if rc != 0:
            raise RuntimeApiError("reading the channel: errno {}".format(-rc))
        self.current = invocation.id
        self.started = time.monotonic()
        context = ctypes.string_at(invocation.context, invocation.context_len) if invocation.context_len else b""
        request_id = invocation.request_id.decode("ascii")
        headers = channel_headers(context, request_id, invocation.deadline_ms)
        body = ctypes.string_at(invocation.payload, invocation.payload_len) if invocation.payload_len else b""
        return headers, body

    def _respond(self, status, body):
        flush_output()
        run_us = int((time.monotonic() - self.started) * 1e6)
        rc = self.lib.hearth_channel_respond(self.channel, self.current, status, body, len(body), run_us)
        if rc != 0:
            raise RuntimeApiError("answering on the channel: errno {}".format(-rc))

    def post_invocation_result(self, request_id, body, content_type):
        self._respond(0, body)

    def post_invocation_error(self, request_id, error_result):
        self._respond(1, to_json(error_result))


def zygote_library():
    """libhearth_runtime.so when this process was started as a zygote, else None."""
    try:
        fd = int(os.environ.get("HEARTH_CHANNEL_FD", ""))
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            return None
    except (ValueError, OSError):
        return None
    lib = ctypes.CDLL(os.path.join(os.environ.get("LAMBDA_RUNTIME_DIR", "/var/runtime"), "libhearth_runtime.so"))
    lib.hearth_channel_next.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.hearth_channel_respond.argtypes = [
        ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64,
    ]
    return lib, fd


def become_environment(lib, fd):
    """The zygote: returns only in a forked child, with its channel.

    The loop runs in the library (hearth_zygote_serve), called through ``PyDLL`` so that it
    holds the interpreter lock, which the interpreter's fork hooks need: ``PyOS_BeforeFork``,
    ``PyOS_AfterFork_Parent`` and ``PyOS_AfterFork_Child`` run around each fork as ``os.fork``
    runs them (fork handlers registered with ``os.register_at_fork`` included; the child's once
    the child is set up and confined; the parent's once the zygote next wakes). No Python code
    runs in the zygote between a fork and its next wake-up: every page it wrote then would be
    copied first, while the child waits for the CPU it shares with the zygote."""
    warm_up()
    # Everything Init created moves to the collector's permanent generation: collections in
    # the children then never touch (and so never copy) the zygote's pages.
    gc.collect()
    gc.freeze()
    rc = lib.hearth_zygote_start(fd)
    if rc != 0:
        write_stderr("hearth python runtime: cannot be a zygote: errno {}\n".format(-rc))
        sys.exit(70)
    serve = ctypes.PyDLL(lib._name).hearth_zygote_serve
    hook = ctypes.CFUNCTYPE(None)
    serve.argtypes = [hook, hook, hook, ctypes.POINTER(ctypes.c_void_p)]
    hooks = [
        ctypes.cast(getattr(ctypes.pythonapi, name), hook)
        for name in ("PyOS_BeforeFork", "PyOS_AfterFork_Parent", "PyOS_AfterFork_Child")
    ]
    channel = ctypes.c_void_p()
    rc = serve(*hooks, ctypes.byref(channel))
    if rc == 0 and channel.value:
        return ChannelClient(lib, channel.value)
    if rc == 1:
        sys.exit(0)
    write_stderr("hearth python runtime: zygote: errno {}\n".format(-rc))
    sys.exit(70)


class Unbuffered:
    """Lambda makes print unbuffered: each write reaches the file at once."""

    def __init__(self, stream):
        self.stream = stream

    def __getattr__(self, attr):
        return getattr(self.stream, attr)

    def write(self, msg):
        n = self.stream.write(msg)
        self.stream.flush()
        return n

    def writelines(self, msgs):
        self.stream.writelines(msgs)
        self.stream.flush()


def flush_output():
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass


def write_stderr(text):
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except Exception:
        pass


_current_request_id = None  # for the logging filter; "" outside an invocation


class LambdaLoggerHandler(logging.Handler):
    def emit(self, record):
        try:
            sys.stdout.write(self.format(record))
        except Exception:
            self.handleError(record)


class LambdaLoggerFilter(logging.Filter):
    def filter(self, record):
        record.aws_request_id = _current_request_id or ""
        return True


def setup_logging():
    """The root handler Lambda installs: present from the start, so logging.basicConfig() is a
    no-op and ``logging.getLogger().setLevel(logging.INFO)`` is all a function needs. The root
    level is Python's default (WARNING) unless AWS_LAMBDA_LOG_LEVEL names one (TRACE = DEBUG)."""
    logging.Formatter.converter = time.gmtime
    handler = LambdaLoggerHandler()
    handler.setFormatter(
        logging.Formatter(
            "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n",
            "%Y-%m-%dT%H:%M:%S",
        )
    )
    handler.addFilter(LambdaLoggerFilter())
    root = logging.getLogger()
    level = os.environ.get("AWS_LAMBDA_LOG_LEVEL", "").upper()
    level = {"TRACE": "DEBUG"}.get(level, level)
    if level in ("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL", "FATAL"):
        root.setLevel(level)
    root.addHandler(handler)


def log_error(error_result):
    """Lambda's text-format error log: ``[ERROR] Type: message``, then the traceback lines.

    awslambdaric writes it through its log sink as one record; here it goes to stderr, one
    line per line (Lambda indents with no-break spaces for CloudWatch; plain spaces here)."""
    description = "[ERROR]"
    if error_result.get("errorType"):
        description += " " + error_result["errorType"]
    if error_result.get("errorMessage"):
        if error_result.get("errorType"):
            description += ":"
        description += " " + error_result["errorMessage"]
    lines = [description]
    stack_trace = error_result.get("stackTrace")
    if stack_trace is not None:
        lines.append("Traceback (most recent call last):")
        for element in stack_trace:
            lines.extend(element.splitlines() if element else [""])
    write_stderr("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def make_error(error_message, error_type, stack_trace, request_id=None):
    return {
        "errorMessage": error_message if error_message else "",
        "errorType": error_type if error_type else "",
        "requestId": request_id if request_id is not None else "",
        "stackTrace": stack_trace if stack_trace else [],
    }


def user_frames(tb):
    """The traceback from the first frame that is not this file's (as awslambdaric trims it),
    as (file, line, function, code) tuples: formatted without Python 3.11's ^^^ markers."""
    frames = [(f.filename, f.lineno, f.name, f.line) for f in traceback.extract_tb(tb)]
    for i, frame in enumerate(frames):
        if "/bootstrap.py" not in frame[0]:
            return frames[i:]
    return frames


def error_from_exception(exc, request_id=None):
    if isinstance(exc, FaultException):
        return make_error(exc.msg, exc.exception_type, exc.trace, request_id)
    return make_error(str(exc), type(exc).__name__, traceback.format_list(user_frames(exc.__traceback__)), request_id)


# ---------------------------------------------------------------------------------------------
# Init: the handler
# ---------------------------------------------------------------------------------------------


def set_sys_path(task_root):
    """Lambda's search order: the function's code, then the layers' python directories."""
    layer_site = "/opt/python/lib/python{}.{}/site-packages".format(*sys.version_info[:2])
    front = [task_root, layer_site, "/opt/python"]
    sys.path[:] = front + [p for p in sys.path if p not in front]


def load_handler(handler):
    try:
        modname, fname = handler.rsplit(".", 1)
    except ValueError as e:
        # "not enough values to unpack (expected 2, got 1)", Python's own words, as in Lambda.
        raise FaultException(MALFORMED_HANDLER_NAME, "Bad handler '{}': {}".format(handler, e))

    try:
        if modname.split(".")[0] in sys.builtin_module_names:
            raise FaultException(
                BUILT_IN_MODULE_CONFLICT, "Cannot use built-in module {} as a handler module".format(modname)
            )
        module = importlib.import_module(modname.replace("/", "."))
    except ImportError as e:
        raise FaultException(IMPORT_MODULE_ERROR, "Unable to import module '{}': {}".format(modname, e))
    except SyntaxError as e:
        trace = ['  File "%s" Line %s\n    %s' % (e.filename, e.lineno, e.text)]
        raise FaultException(
            USER_CODE_SYNTAX_ERROR, "Syntax error in module '{}': {}".format(modname, e), trace
        )

    try:
        return getattr(module, fname)
    except AttributeError:
        raise FaultException(HANDLER_NOT_FOUND, "Handler '{}' missing on module '{}'".format(fname, modname))


# ---------------------------------------------------------------------------------------------
# The context object
# ---------------------------------------------------------------------------------------------


class CognitoIdentity:
    __slots__ = ["cognito_identity_id", "cognito_identity_pool_id"]

    def __repr__(self):
        return "CognitoIdentity([cognito_identity_id={},cognito_identity_pool_id={}])".format(
            self.cognito_identity_id, self.cognito_identity_pool_id
        )


class Client:
    __slots__ = ["installation_id", "app_title", "app_version_name", "app_version_code", "app_package_name"]

    def __repr__(self):
        return "Client([{}])".format(",".join("{}={}".format(k, getattr(self, k)) for k in self.__slots__))


class ClientContext:
    __slots__ = ["custom", "env", "client"]

    def __repr__(self):
        return "ClientContext([custom={},env={},client={}])".format(self.custom, self.env, self.client)


def _obj_from_dict(cls, values):
    if values is None:
        return None
    obj = cls()
    for field in cls.__slots__:
        setattr(obj, field, values.get(field))
    return obj


class LambdaContext:
    """The ``context`` argument, with awslambdaric's attributes (memory_limit_in_mb is the
    environment variable's string, as in Lambda)."""

    def __init__(self, request_id, client_context, cognito_identity, deadline_ms, invoked_function_arn, tenant_id):
        self.aws_request_id = request_id
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.invoked_function_arn = invoked_function_arn
        self.tenant_id = tenant_id

        self.client_context = _obj_from_dict(ClientContext, client_context)
        if self.client_context is not None:
            self.client_context.client = _obj_from_dict(Client, self.client_context.client)

        self.identity = _obj_from_dict(CognitoIdentity, {})
        if cognito_identity is not None:
            self.identity.cognito_identity_id = cognito_identity.get("cognitoIdentityId")
            self.identity.cognito_identity_pool_id = cognito_identity.get("cognitoIdentityPoolId")

        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        remaining = self._deadline_ms - int(time.time() * 1000)
        return remaining if remaining > 0 else 0

    def log(self, msg):
        sys.stdout.write(str(msg))

    def __repr__(self):
        return (
            "LambdaContext([aws_request_id={},log_group_name={},log_stream_name={},function_name={},"
            "memory_limit_in_mb={},function_version={},invoked_function_arn={},client_context={},"
            "identity={},tenant_id={}])".format(
                self.aws_request_id,
                self.log_group_name,
                self.log_stream_name,
                self.function_name,
                self.memory_limit_in_mb,
                self.function_version,
                self.invoked_function_arn,
                self.client_context,
                self.identity,
                self.tenant_id,
            )
        )


def _parse_json_header(value, name):
    try:
        return json.loads(value)
    except Exception as e:
        raise FaultException(LAMBDA_CONTEXT_UNMARSHAL_ERROR, "Unable to parse {} JSON: {}".format(name, e))


def create_context(headers, request_id):
    client_context = headers.get("Lambda-Runtime-Client-Context")
    cognito_identity = headers.get("Lambda-Runtime-Cognito-Identity")
    try:
        deadline_ms = int(headers.get("Lambda-Runtime-Deadline-Ms") or 0)
    except ValueError:
        deadline_ms = 0
    return LambdaContext(
        request_id,
        _parse_json_header(client_context, "Client Context") if client_context else None,
        _parse_json_header(cognito_identity, "Cognito Identity") if cognito_identity else None,
        deadline_ms,
        headers.get("Lambda-Runtime-Invoked-Function-Arn"),
        headers.get("Lambda-Runtime-Aws-Tenant-Id"),
    )


# ---------------------------------------------------------------------------------------------
# The invocation loop
# ---------------------------------------------------------------------------------------------


def handle_invocation(client, request_handler, headers, body):
    global _current_request_id
    request_id = headers.get("Lambda-Runtime-Aws-Request-Id")
    if not request_id:
        raise RuntimeApiError("GET /runtime/invocation/next: no Lambda-Runtime-Aws-Request-Id header")
    _current_request_id = request_id

    # X-Ray's trace header reaches the function (and the AWS SDKs) through the environment.
    trace_id = headers.get("Lambda-Runtime-Trace-Id")
    if trace_id:
        os.environ["_X_AMZN_TRACE_ID"] = trace_id
    else:
        os.environ.pop("_X_AMZN_TRACE_ID", None)

    try:
        context = create_context(headers, request_id)
        event = unmarshal_event(body, headers.get("Content-Type"))
        response = request_handler(event, context)
        result, content_type = marshal_response(response)
    except Exception as e:
        error_result = error_from_exception(e, request_id)
        log_error(error_result)
        client.post_invocation_error(request_id, error_result)
    else:
        client.post_invocation_result(request_id, result, content_type)


def main():
    sys.stdout = Unbuffered(sys.stdout)
    sys.stderr = Unbuffered(sys.stderr)

    zygote = zygote_library()
    api = os.environ.get("AWS_LAMBDA_RUNTIME_API")
    if not api and zygote is None:
        write_stderr("hearth python runtime: AWS_LAMBDA_RUNTIME_API is not set\n")
        return 1
    set_sys_path(os.environ.get("LAMBDA_TASK_ROOT", "/var/task"))
    setup_logging()
    if zygote is not None:
        try:
            request_handler = load_handler(os.environ.get("_HANDLER", ""))
        except Exception as e:
            log_error(error_from_exception(e))
            return 1
        client = become_environment(*zygote)
        try:
            while True:
                headers, body = client.next_invocation()
                handle_invocation(client, request_handler, headers, body)
        except RuntimeApiError as e:
            write_stderr("hearth python runtime: {}\n".format(e))
            return 2
    client = RuntimeClient(api)

    try:
        try:
            request_handler = load_handler(os.environ.get("_HANDLER", ""))
        except Exception as e:
            error_result = error_from_exception(e)
            log_error(error_result)
            client.post_init_error(error_result)
            return 1

        while True:
            headers, body = client.next_invocation()
            handle_invocation(client, request_handler, headers, body)
    except RuntimeApiError as e:
        write_stderr("hearth python runtime: lost the Runtime API at {}: {}\n".format(api, e))
        return 2


if __name__ == "__main__":
    sys.exit(main())
