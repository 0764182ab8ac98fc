"""SigV4 authentication: the daemon's credentials file, wrong secrets, unknown keys, unsigned,
tampered, expired and mis-scoped requests. Lambda answers each refusal with HTTP 403."""

import datetime
import json
import stat
import urllib.error
import urllib.request
from unittest import mock

import pytest
from botocore.exceptions import ClientError

from support import ROLE, RUNTIME, send, sign, signed_request, unique_name


def test_credentials_file_is_a_private_shared_credentials_file(hearth):
    access_key, secret_key = hearth.credentials  # parses [default] with both keys
    assert access_key != secret_key
    assert len(secret_key) >= 20, "a secret key should not be guessable"
    mode = stat.S_IMODE(hearth.credentials_path.stat().st_mode)
    assert mode & 0o077 == 0, f"credentials file mode {oct(mode)} lets others read the secret"


def test_valid_credentials_work(lam):
    resp = lam.list_functions()
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert isinstance(resp["Functions"], list)


def test_wrong_secret_is_an_invalid_signature(hearth):
    access_key, secret_key = hearth.credentials
    client = hearth.client(access_key=access_key, secret_key=secret_key[:-1] + ("A" if secret_key[-1] != "A" else "B"))
    with pytest.raises(ClientError) as exc:
        client.list_functions()
    assert exc.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_unknown_access_key_is_unrecognized(hearth):
    _, secret_key = hearth.credentials
    client = hearth.client(access_key="AKIAIOSFODNN7EXAMPLE", secret_key=secret_key)
    with pytest.raises(ClientError) as exc:
        client.list_functions()
    assert exc.value.response["Error"]["Code"] == "UnrecognizedClientException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_refused_request_does_nothing(hearth, lam):
    access_key, secret_key = hearth.credentials
    bad = hearth.client(access_key=access_key, secret_key="x" * len(secret_key))
    name = unique_name("unauth")
    with pytest.raises(ClientError) as exc:
        bad.create_function(FunctionName=name, Runtime=RUNTIME, Role=ROLE, Handler="echo",
                            Code={"ZipFile": b"PK\x05\x06" + b"\x00" * 18})
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name)


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("GET", "/2015-03-31/functions", None),
        ("GET", "/2016-08-19/account-settings", None),
        ("GET", "/hearth/stats", None),
        ("POST", "/2015-03-31/functions/anything/invocations", b"{}"),
    ],
)
def test_unsigned_request_is_missing_authentication_token(hearth, method, path, body):
    req = urllib.request.Request(hearth.endpoint + path, data=body, method=method)
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=30)
    err = exc.value
    assert err.code == 403
    assert (err.headers.get("x-amzn-ErrorType") or "").startswith("MissingAuthenticationTokenException"), dict(
        err.headers
    )
    doc = json.loads(err.read())
    assert doc.get("message") or doc.get("Message"), doc


def test_body_changed_after_signing_is_an_invalid_signature(hearth, lam):
    name = unique_name("tamper")
    signed_body = json.dumps({"FunctionName": name + "x"}).encode()
    sent_body = json.dumps({"FunctionName": name + "y"}).encode()
    assert len(signed_body) == len(sent_body)
    resp = signed_request(hearth, "POST", "/2015-03-31/functions", signed_body, send_body=sent_body)
    assert resp.status == 403, resp.describe()
    assert resp.error_type.startswith("InvalidSignatureException"), resp.describe()


def test_signature_for_another_path_is_invalid(hearth):
    access_key, secret_key = hearth.credentials
    req = sign(hearth.endpoint, "GET", "/2016-08-19/account-settings", b"", access_key, secret_key)
    resp = send(hearth.endpoint, "GET", "/2015-03-31/functions", b"", dict(req.headers))
    assert resp.status == 403, resp.describe()
    assert resp.error_type.startswith("InvalidSignatureException"), resp.describe()


def test_expired_signature_is_refused(hearth):
    # AWS refuses a request whose X-Amz-Date is more than 5 minutes off: 403
    # InvalidSignatureException "Signature expired: ... is now earlier than ...".
    past = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(minutes=20)
    with mock.patch("botocore.auth.get_current_datetime", return_value=past):
        resp = signed_request(hearth, "GET", "/2015-03-31/functions")
    assert resp.status == 403, resp.describe()
    assert resp.error_type.startswith("InvalidSignatureException"), resp.describe()


def test_signature_for_another_service_is_refused(hearth):
    # AWS: 403 InvalidSignatureException "Credential should be scoped to correct service: 'lambda'."
    resp = signed_request(hearth, "GET", "/2015-03-31/functions", service="s3")
    assert resp.status == 403, resp.describe()
    assert resp.error_type.startswith("InvalidSignatureException"), resp.describe()


def test_garbage_authorization_header_is_refused(hearth):
    headers = {"Authorization": "AWS4-HMAC-SHA256 nonsense", "X-Amz-Date": "20240101T000000Z"}
    resp = send(hearth.endpoint, "GET", "/2015-03-31/functions", b"", headers)
    assert resp.status in (400, 403), resp.describe()
    assert resp.error_type, resp.describe()
