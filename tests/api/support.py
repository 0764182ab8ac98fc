"""Helpers shared by the API tests: zips, polling, raw SigV4-signed HTTP, error checks.

Everything here describes AWS Lambda as boto3/botocore see it; nothing is hearth-specific
except the paths in conftest.py.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import re
import select
import shutil
import socket
import sys
import time
import uuid
import zipfile
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, EndpointConnectionError

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/lambda"
RUNTIME = "provided.al2023"

# Lambda answers a request that breaks a model constraint (length, range, pattern) with a
# ValidationException ("1 validation error detected: Value ... failed to satisfy constraint"),
# and a semantically bad value with InvalidParameterValueException. Both are HTTP 400 client
# errors; which one a given limit uses is not documented, so tests of such limits accept both.
VALIDATION_CODES = {"ValidationException", "InvalidParameterValueException"}

# Lambda's names for a request body that is not JSON (or not UTF-8).
BAD_CONTENT_CODES = {
    "InvalidRequestContentException",
    "ValidationException",
    "InvalidParameterValueException",
    "SerializationException",
}

# The synchronous invoke request payload quota: 6 MB.
INVOKE_PAYLOAD_LIMIT = 6 * 1024 * 1024
# Lambda answers an oversized request with 413 and one of these (the modeled
# RequestTooLargeException, or the front end's RequestEntityTooLargeException).
TOO_LARGE_CODES = {"RequestTooLargeException", "RequestEntityTooLargeException"}

FIXED_ZIP_TIME = (2024, 1, 1, 0, 0, 0)


def unique_name(hint: str = "fn") -> str:
    """A function name unique to this run: [A-Za-z0-9-_], at most 64 characters."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "-", hint).strip("-_") or "fn"
    return f"{cleaned[:40]}-{uuid.uuid4().hex[:12]}"


def make_zip(files: dict[str, tuple[bytes, int]]) -> bytes:
    """A deterministic zip of {name: (content, unix mode)}."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, (content, mode) in files.items():
            info = zipfile.ZipInfo(name, date_time=FIXED_ZIP_TIME)
            info.create_system = 3  # unix, so that external_attr carries the mode
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, content)
    return buf.getvalue()


def other_zip(sample_binary: bytes) -> bytes:
    """The sample function with one more file: different bytes, so a different CodeSha256."""
    return make_zip({"bootstrap": (sample_binary, 0o755), "extra.txt": (b"second revision\n", 0o644)})


def code_sha256(zip_bytes: bytes) -> str:
    """Lambda's CodeSha256: the base64 of the SHA-256 of the deployment package."""
    return base64.b64encode(hashlib.sha256(zip_bytes).digest()).decode()


def poll(fetch, done, timeout: float, what: str, interval: float = 0.1):
    """Calls fetch() until done(value) or the deadline; fails with the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}; last value: {value!r}")
        time.sleep(interval)


def wait_active(lam, name: str, timeout: float = 30) -> dict:
    """Waits while the function's State is Pending (as boto3's function_active waiter does).

    A missing State is left to test_functions.py to report, so that one missing field does
    not fail every test."""
    config = poll(
        lambda: lam.get_function_configuration(FunctionName=name),
        lambda c: c.get("State") != "Pending",
        timeout,
        f"{name} to leave State Pending",
    )
    assert config.get("State") != "Failed", f"function {name} failed: {config.get('StateReason')}"
    return config


def wait_updated(lam, name: str, timeout: float = 30) -> dict:
    """Waits while LastUpdateStatus is InProgress (as boto3's function_updated waiter does)."""
    config = poll(
        lambda: lam.get_function_configuration(FunctionName=name),
        lambda c: c.get("LastUpdateStatus") != "InProgress",
        timeout,
        f"{name} to finish its update",
    )
    assert config.get("LastUpdateStatus") != "Failed", (
        f"update of {name} failed: {config.get('LastUpdateStatusReason')}"
    )
    return config


def invoke(lam, name: str, payload: bytes | str = b"{}", **kwargs) -> tuple[dict, bytes]:
    """Invokes and reads the whole payload; returns (response, payload bytes)."""
    if isinstance(payload, str):
        payload = payload.encode()
    resp = lam.invoke(FunctionName=name, Payload=payload, **kwargs)
    body = resp["Payload"].read()
    return resp, body


def error_of(exc: ClientError) -> tuple[str, int]:
    """(error code, HTTP status) of a botocore ClientError."""
    return exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"]


def assert_error(exc: ClientError, codes, status: int) -> None:
    if isinstance(codes, str):
        codes = {codes}
    code, got_status = error_of(exc)
    assert code in codes, f"error code {code!r}, expected one of {sorted(codes)}: {exc.response}"
    assert got_status == status, f"HTTP {got_status}, expected {status}: {exc.response}"


def account_of(function_arn: str) -> str:
    """The 12-digit account id of arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]."""
    parts = function_arn.split(":")
    assert len(parts) >= 7 and parts[:3] == ["arn", "aws", "lambda"], function_arn
    assert re.fullmatch(r"\d{12}", parts[4]), function_arn
    return parts[4]


# ---------------------------------------------------------------------------------------
# Raw HTTP, signed with botocore's SigV4 so that only what a test changes is wrong.


@dataclass
class RawResponse:
    status: int
    headers: Message  # case-insensitive .get()
    body: bytes

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    @property
    def error_type(self) -> str:
        return self.headers.get("x-amzn-ErrorType") or ""

    def describe(self) -> str:
        return f"HTTP {self.status}, headers {dict(self.headers)!r}, body {self.body[:500]!r}"


def sign(
    endpoint: str,
    method: str,
    path: str,
    body: bytes,
    access_key: str,
    secret_key: str,
    headers: dict | None = None,
    service: str = "lambda",
    region: str = REGION,
) -> AWSRequest:
    req = AWSRequest(method=method, url=endpoint + path, data=body, headers=dict(headers or {}))
    SigV4Auth(Credentials(access_key, secret_key), service, region).add_auth(req)
    return req


def send(endpoint: str, method: str, path: str, body: bytes, headers: dict, timeout: float = 60):
    """Sends exactly these headers and body with http.client; returns a RawResponse."""
    url = urlsplit(endpoint)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        return RawResponse(resp.status, resp.headers, data)
    finally:
        conn.close()


def signed_request(
    hearth,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict | None = None,
    send_body: bytes | None = None,
    **sign_kwargs,
) -> RawResponse:
    """Signs (method, path, body) with the daemon's credentials and sends it; send_body, when
    given, is sent instead of the signed body (a tampered request)."""
    access_key, secret_key = hearth.credentials
    headers = {"Content-Type": "application/json", **(headers or {})}
    req = sign(hearth.endpoint, method, path, body, access_key, secret_key, headers, **sign_kwargs)
    return send(hearth.endpoint, method, path, body if send_body is None else send_body, dict(req.headers))


def send_large(hearth, method: str, path: str, body: bytes, headers: dict | None = None) -> RawResponse:
    """Sends a signed request with a large body over a raw socket, stopping early if the server
    answers before the body is complete (an early 413 is legitimate), then reads the answer."""
    access_key, secret_key = hearth.credentials
    headers = {"Content-Type": "application/json", **(headers or {})}
    req = sign(hearth.endpoint, method, path, body, access_key, secret_key, headers)
    url = urlsplit(hearth.endpoint)
    sock = socket.create_connection((url.hostname, url.port), timeout=120)
    try:
        head = f"{method} {path} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Length: {len(body)}\r\n"
        for k, v in req.headers.items():
            if k.lower() not in ("host", "content-length"):
                head += f"{k}: {v}\r\n"
        head += "Connection: close\r\n\r\n"
        sock.sendall(head.encode())
        view = memoryview(body)
        chunk = 1 << 20
        try:
            for off in range(0, len(body), chunk):
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    break  # the server answered before the whole body arrived
                sock.sendall(view[off : off + chunk])
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading; its answer may still be readable
        resp = http.client.HTTPResponse(sock, method=method)
        try:
            resp.begin()
            data = resp.read()
        except (ConnectionResetError, http.client.RemoteDisconnected) as exc:
            pytest.fail(f"the connection was dropped without an HTTP answer to a {len(body)}-byte body: {exc!r}")
        return RawResponse(resp.status, resp.headers, data)
    finally:
        sock.close()


def aws_cli() -> str:
    """The aws CLI of this virtualenv (or on PATH)."""
    beside = Path(sys.executable).parent / "aws"
    if beside.exists():
        return str(beside)
    found = shutil.which("aws")
    if not found:
        pytest.fail("the aws CLI is not installed (pip install -r tests/api/requirements.txt)")
    return found


def delete_functions(hearth, names) -> None:
    """Deletes the functions a test made, through a fresh client (the daemon may have been
    restarted); names a test expected to be refused were never created."""
    if hearth.process is None or hearth.process.poll() is not None:
        return
    client = hearth.client()
    for name in names:
        try:
            client.delete_function(FunctionName=name)
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code not in ("ResourceNotFoundException", "InvalidParameterValueException", "ValidationException"):
                raise
        except EndpointConnectionError:
            return
