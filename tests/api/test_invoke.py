"""Invoke: payloads, qualifiers and function names, logs, limits, and what each sample
behaviour looks like to a boto3 caller."""

import base64
import json
import threading
import time

import pytest
from botocore.exceptions import ClientError

from support import (
    INVOKE_PAYLOAD_LIMIT,
    TOO_LARGE_CODES,
    account_of,
    assert_error,
    invoke,
    make_zip,
    unique_name,
    wait_updated,
)


def error_document(body: bytes) -> dict:
    doc = json.loads(body)
    assert isinstance(doc, dict), body[:200]
    return doc


# -- plain invocations ------------------------------------------------------------------------


def test_echo_returns_the_event_bytes(lam, make_function):
    name = make_function("echo")["FunctionName"]
    payload = b'{"hello": "hearth", "n": [1, 2.5, null], "s": "\\u00e9\\n"}'
    resp, body = invoke(lam, name, payload)
    assert resp["StatusCode"] == 200
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert body == payload
    assert "FunctionError" not in resp
    assert resp["ExecutedVersion"] == "$LATEST"


def test_4mb_payload_round_trips_byte_identical(lam, make_function):
    name = make_function("echo")["FunctionName"]
    blob = bytes(range(32, 127)) * (4 * 1024 * 1024 // 95)
    payload = json.dumps({"data": blob.decode("ascii").replace("\\", "/").replace('"', "'")}).encode()
    assert len(payload) > 4_000_000
    _, body = invoke(lam, name, payload)
    assert len(body) == len(payload)
    assert body == payload


def test_dry_run_answers_204_without_running(lam, make_function):
    name = make_function("echo")["FunctionName"]
    resp, body = invoke(lam, name, b'{"dry": true}', InvocationType="DryRun")
    assert resp["StatusCode"] == 204
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert body == b""
    assert "FunctionError" not in resp


def test_dry_run_of_unknown_function_is_not_found(lam):
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName=unique_name("missing"), InvocationType="DryRun", Payload=b"{}")


def test_sleep_handler(lam, make_function):
    name = make_function("sleep")["FunctionName"]
    start = time.monotonic()
    _, body = invoke(lam, name, b"300")
    assert body == b"slept 300"
    assert time.monotonic() - start >= 0.3


def test_big_handler_answers_exactly_n_bytes(lam, make_function):
    name = make_function("big")["FunctionName"]
    _, body = invoke(lam, name, b"1048576")
    assert body == b"x" * 1048576
    _, body = invoke(lam, name, b"0")
    assert body == b""


def test_concurrent_invocations_do_not_cross(lam, make_function):
    name = make_function("echo")["FunctionName"]
    errors = []

    def worker(w):
        try:
            for i in range(5):
                payload = json.dumps({"worker": w, "i": i, "pad": "p" * (w * 1000)}).encode()
                _, body = invoke(lam, name, payload)
                if body != payload:
                    errors.append((w, i, body[:100]))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append((w, repr(exc)))

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "invocations hung"
    assert errors == []


# -- how a function names itself --------------------------------------------------------------


@pytest.fixture
def versioned(lam, make_function):
    """echo with version 1 and alias 'live' -> 1; $LATEST then changed to `big`."""
    created = make_function("echo")
    name = created["FunctionName"]
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    lam.update_function_configuration(FunctionName=name, Handler="big")
    wait_updated(lam, name)
    return created


@pytest.mark.parametrize(
    "form, qualifier, executed",
    [
        ("name", None, "$LATEST"),
        ("name", "$LATEST", "$LATEST"),
        ("name", "1", "1"),
        ("name", "live", "1"),
        ("name:qualifier", "1", "1"),
        ("name:qualifier", "live", "1"),
        ("arn", None, "$LATEST"),
        ("arn:qualifier", "1", "1"),
        ("arn:qualifier", "live", "1"),
        ("partial", None, "$LATEST"),
        ("partial:qualifier", "live", "1"),
    ],
)
def test_function_name_forms(lam, versioned, form, qualifier, executed):
    name = versioned["FunctionName"]
    arn = versioned["FunctionArn"]
    partial = f"{account_of(arn)}:function:{name}"
    function_name = {
        "name": name,
        "name:qualifier": f"{name}:{qualifier}",
        "arn": arn,
        "arn:qualifier": f"{arn}:{qualifier}",
        "partial": partial,
        "partial:qualifier": f"{partial}:{qualifier}",
    }[form]
    kwargs = {"Qualifier": qualifier} if form == "name" and qualifier else {}
    resp, body = invoke(lam, function_name, b"3", **kwargs)
    assert resp["ExecutedVersion"] == executed
    # version 1 is echo, $LATEST is big
    assert body == (b"3" if executed == "1" else b"xxx")


def test_qualifier_in_name_and_parameter_must_agree(lam, versioned):
    name = versioned["FunctionName"]
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.invoke(FunctionName=f"{name}:1", Qualifier="live", Payload=b"{}")
    resp, body = invoke(lam, f"{name}:1", b"2", Qualifier="1")
    assert (resp["ExecutedVersion"], body) == ("1", b"2")


@pytest.mark.parametrize("qualifier", ["7", "nope"])
def test_unknown_qualifier_is_not_found(lam, versioned, qualifier):
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.invoke(FunctionName=versioned["FunctionName"], Qualifier=qualifier, Payload=b"{}")
    assert_error(exc.value, "ResourceNotFoundException", 404)


def test_unknown_function_is_not_found(lam):
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.invoke(FunctionName=unique_name("missing"), Payload=b"{}")
    assert_error(exc.value, "ResourceNotFoundException", 404)


def test_arn_of_another_account_is_not_found(lam, make_function):
    created = make_function("echo")
    account = account_of(created["FunctionArn"])
    other = "000000000000" if account != "000000000000" else "111111111111"
    arn = created["FunctionArn"].replace(f":{account}:", f":{other}:")
    with pytest.raises(ClientError) as exc:
        lam.invoke(FunctionName=arn, Payload=b"{}")
    code = exc.value.response["Error"]["Code"]
    assert code in ("ResourceNotFoundException", "AccessDeniedException"), exc.value.response


# -- logs -------------------------------------------------------------------------------------


def test_log_type_tail_returns_base64_logs(lam, make_function):
    name = make_function("echo")["FunctionName"]
    resp, body = invoke(lam, name, b'"logged"', LogType="Tail")
    assert body == b'"logged"'
    assert "LogResult" in resp, resp
    decoded = base64.b64decode(resp["LogResult"], validate=True)
    assert len(decoded) <= 4096  # Lambda returns the last 4 KB
    log = decoded.decode("utf-8")
    # Lambda's platform lines for this request, with the id the response carries
    request_id = resp["ResponseMetadata"]["RequestId"]
    assert f"START RequestId: {request_id} Version: $LATEST" in log, log
    assert f"END RequestId: {request_id}" in log, log
    assert f"REPORT RequestId: {request_id}" in log, log
    assert "Duration: " in log, log


def test_no_log_result_without_tail(lam, make_function):
    name = make_function("echo")["FunctionName"]
    resp, _ = invoke(lam, name, b"{}")
    assert "LogResult" not in resp


# -- payload rules ----------------------------------------------------------------------------


def test_payload_over_6mb_is_refused(lam, make_function):
    name = make_function("echo")["FunctionName"]
    size = INVOKE_PAYLOAD_LIMIT + 100
    payload = b'"' + b"x" * (size - 2) + b'"'
    with pytest.raises(ClientError) as exc:
        lam.invoke(FunctionName=name, Payload=payload)
    assert_error(exc.value, TOO_LARGE_CODES, 413)
    # the function still works
    _, body = invoke(lam, name, b'"after"')
    assert body == b'"after"'


def test_payload_must_be_json(lam, make_function):
    # Lambda: 400 InvalidRequestContentException "Could not parse request body into json:
    # Could not parse payload into json: Unrecognized token ..."
    name = make_function("echo")["FunctionName"]
    for payload in (b"hello world", b"\xff\xfe\x00garbage", b'{"unterminated": '):
        with pytest.raises(lam.exceptions.InvalidRequestContentException) as exc:
            lam.invoke(FunctionName=name, Payload=payload)
        assert_error(exc.value, "InvalidRequestContentException", 400)


# -- function errors --------------------------------------------------------------------------


def test_handled_error(lam, make_function):
    name = make_function("error")["FunctionName"]
    payload = b'{"why": "boom"}'
    resp, body = invoke(lam, name, payload)
    assert resp["StatusCode"] == 200
    assert resp.get("FunctionError"), resp  # Lambda says "Unhandled" for runtime-reported errors
    doc = error_document(body)
    assert doc["errorType"] == "SampleError"
    assert doc["errorMessage"] == payload.decode()


def test_crash_is_a_runtime_exit_error(lam, make_function):
    name = make_function("crash")["FunctionName"]
    for _ in range(2):  # a crashed environment is replaced, not reused or left hanging
        resp, body = invoke(lam, name, b"{}")
        assert resp["StatusCode"] == 200
        assert resp.get("FunctionError"), resp
        doc = error_document(body)
        assert doc["errorType"] == "Runtime.ExitError", doc
        # Lambda: "RequestId: <id> Error: Runtime exited with error: signal: segmentation fault"
        assert "Runtime exited with error: signal: segmentation fault" in doc.get("errorMessage", ""), doc


def test_timeout(lam, make_function):
    name = make_function("hang", Timeout=1)["FunctionName"]
    start = time.monotonic()
    resp, body = invoke(lam, name, b"{}")
    elapsed = time.monotonic() - start
    assert resp["StatusCode"] == 200
    assert resp.get("FunctionError"), resp
    doc = error_document(body)
    assert doc["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 1.00 seconds" in doc.get("errorMessage", ""), doc
    assert 0.95 <= elapsed < 15, elapsed


def test_timeout_then_the_function_works_again(lam, make_function):
    name = make_function("sleep", Timeout=1)["FunctionName"]
    resp, body = invoke(lam, name, b"3000")
    assert resp.get("FunctionError"), resp
    assert error_document(body)["errorType"] == "Sandbox.Timedout"
    resp, body = invoke(lam, name, b"10")
    assert "FunctionError" not in resp
    assert body == b"slept 10"


def test_response_over_6mb_is_a_function_error(lam, make_function):
    # Lambda: FunctionError "Unhandled", errorType "Function.ResponseSizeTooLarge".
    name = make_function("big")["FunctionName"]
    resp, body = invoke(lam, name, str(7 * 1024 * 1024))
    assert resp["StatusCode"] == 200
    assert resp.get("FunctionError"), resp
    assert error_document(body)["errorType"] == "Function.ResponseSizeTooLarge"


@pytest.mark.parametrize(
    "files",
    [
        {"not-bootstrap": (b"#!/bin/sh\n", 0o755)},
        "bootstrap-not-executable",
    ],
    ids=["no-bootstrap", "bootstrap-not-executable"],
)
def test_unusable_bootstrap_is_an_invalid_entrypoint(lam, make_function, sample_binary, files):
    # Lambda: errorType "Runtime.InvalidEntrypoint" ("Couldn't find valid bootstrap(s)" or
    # "permission denied"); CreateFunction itself succeeds.
    if files == "bootstrap-not-executable":
        files = {"bootstrap": (sample_binary, 0o644)}
    name = make_function("echo", Code={"ZipFile": make_zip(files)})["FunctionName"]
    resp, body = invoke(lam, name, b"{}")
    assert resp["StatusCode"] == 200
    assert resp.get("FunctionError"), resp
    assert error_document(body)["errorType"] == "Runtime.InvalidEntrypoint"


# -- the environment a function sees ----------------------------------------------------------


def test_env_has_lambda_variables(lam, make_function):
    created = make_function("env", MemorySize=320, Environment={"Variables": {"MINE": "value", "OTHER": "x=y"}})
    name = created["FunctionName"]
    resp, body = invoke(lam, name, b"{}")
    assert "FunctionError" not in resp, body
    env = json.loads(body)
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == name
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "320"
    assert env["MINE"] == "value"
    assert env["OTHER"] == "x=y"


def test_env_has_standard_runtime_variables(lam, make_function):
    name = make_function("env")["FunctionName"]
    env = json.loads(invoke(lam, name, b"{}")[1])
    assert env["_HANDLER"] == "env"
    assert env["AWS_REGION"] == "us-east-1"
    assert env["LAMBDA_TASK_ROOT"] == "/var/task"


def test_function_does_not_see_the_daemon_credentials(hearth, lam, make_function):
    name = make_function("env")["FunctionName"]
    _, body = invoke(lam, name, b"{}")
    _, secret = hearth.credentials
    assert secret.encode() not in body
