"""Malformed requests, sent as raw HTTP signed with botocore's SigV4 so that only the body (or
the path) is wrong; and the shape of Lambda's error answers."""

import json

import pytest

from support import (
    BAD_CONTENT_CODES,
    ROLE,
    RUNTIME,
    TOO_LARGE_CODES,
    VALIDATION_CODES,
    signed_request,
    send_large,
    unique_name,
)

CREATE_PATH = "/2015-03-31/functions"
# Lambda's CreateFunction request limit: a 50 MB zip, base64-encoded, plus the rest.
CREATE_REQUEST_LIMIT = 69_905_067


def assert_error_answer(resp, status, codes):
    assert resp.status == status, resp.describe()
    error_type = resp.error_type
    assert error_type, f"no x-amzn-ErrorType header: {resp.describe()}"
    code = error_type.split(":", 1)[0]
    assert code in codes, f"x-amzn-ErrorType {error_type!r}, expected one of {sorted(codes)}"
    doc = resp.json()
    assert isinstance(doc, dict), resp.describe()
    assert doc.get("message") or doc.get("Message"), f"error body has no message: {resp.describe()}"


def create_body(name, **overrides):
    doc = {
        "FunctionName": name,
        "Runtime": RUNTIME,
        "Role": ROLE,
        "Handler": "echo",
        "Code": {"ZipFile": "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="},
    }
    doc.update(overrides)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"FunctionName": "x",}', b"[1, 2", b'{"FunctionName": "unterminated'],
    ids=["bare-word", "trailing-comma", "open-array", "open-string"],
)
def test_invalid_json_body(hearth, body):
    resp = signed_request(hearth, "POST", CREATE_PATH, body)
    assert_error_answer(resp, 400, BAD_CONTENT_CODES)


def test_invalid_utf8_body(hearth):
    name = unique_name("utf8")
    body = create_body(name).replace(b'"Handler": "echo"', b'"Handler": "ec\xff\xfeho"')
    resp = signed_request(hearth, "POST", CREATE_PATH, body)
    assert_error_answer(resp, 400, BAD_CONTENT_CODES)


def test_json_that_is_not_an_object(hearth):
    resp = signed_request(hearth, "POST", CREATE_PATH, b'["FunctionName"]')
    assert resp.status == 400, resp.describe()
    assert resp.error_type, resp.describe()


def test_missing_required_member(hearth, lam):
    name = unique_name("norole")
    doc = json.loads(create_body(name))
    del doc["Role"]
    resp = signed_request(hearth, "POST", CREATE_PATH, json.dumps(doc).encode())
    assert_error_answer(resp, 400, VALIDATION_CODES | BAD_CONTENT_CODES)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name)


def test_member_of_the_wrong_type(hearth, lam):
    name = unique_name("wrongtype")
    resp = signed_request(hearth, "POST", CREATE_PATH, create_body(name, MemorySize="lots"))
    assert_error_answer(resp, 400, VALIDATION_CODES | BAD_CONTENT_CODES)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name)


def test_zip_file_that_is_not_base64(hearth, lam):
    name = unique_name("nob64")
    resp = signed_request(hearth, "POST", CREATE_PATH, create_body(name, Code={"ZipFile": "%%% not base64 %%%"}))
    assert_error_answer(resp, 400, VALIDATION_CODES | BAD_CONTENT_CODES)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name)


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/2015-03-31/no-such-thing"),
        ("GET", "/1999-01-01/functions"),
        ("POST", "/2015-03-31/functions/x/not-an-operation"),
        ("GET", "/"),
    ],
)
def test_unknown_route(hearth, method, path):
    resp = signed_request(hearth, method, path, b"{}" if method == "POST" else b"")
    assert resp.status == 404, resp.describe()
    assert resp.error_type.startswith("UnknownOperationException"), resp.describe()


def test_oversized_create_function_body(hearth, lam):
    name = unique_name("huge")
    prefix = create_body(name, Code={"ZipFile": "@"}).split(b"@")
    size = CREATE_REQUEST_LIMIT + 10 * 1024 * 1024
    filler = b"A" * (size - len(prefix[0]) - len(prefix[1]))
    body = prefix[0] + filler + prefix[1]
    assert len(body) == size
    resp = send_large(hearth, "POST", CREATE_PATH, body)
    assert resp.status == 413, resp.describe()
    assert resp.error_type.split(":", 1)[0] in TOO_LARGE_CODES, resp.describe()
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name)


def test_daemon_still_serves_after_bad_requests(hearth, lam, make_function):
    signed_request(hearth, "POST", CREATE_PATH, b"{garbage")
    signed_request(hearth, "GET", "/nowhere")
    name = make_function("echo")["FunctionName"]
    resp = lam.invoke(FunctionName=name, Payload=b'"still here"')
    assert resp["Payload"].read() == b'"still here"'


def test_errors_carry_a_request_id(lam):
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.get_function(FunctionName=unique_name("missing"))
    assert exc.value.response["ResponseMetadata"].get("RequestId"), exc.value.response
    assert lam.list_functions(MaxItems=1)["ResponseMetadata"].get("RequestId")


def test_not_found_error_body(hearth):
    name = unique_name("missing")
    resp = signed_request(hearth, "GET", f"/2015-03-31/functions/{name}")
    assert resp.status == 404, resp.describe()
    assert resp.error_type.startswith("ResourceNotFoundException"), resp.describe()
    doc = resp.json()
    message = doc.get("Message") or doc.get("message")
    assert message and name in message, doc
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.describe()
