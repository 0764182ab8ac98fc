"""PutFunctionConcurrency, GetFunctionConcurrency, DeleteFunctionConcurrency,
GetAccountSettings, and Put/Get/DeleteProvisionedConcurrencyConfig."""

import base64
import json
import threading

import pytest

from support import assert_error, invoke, poll, signed_request, unique_name

ACCOUNT_CONCURRENCY = 1000
MIN_UNRESERVED = 100
RESERVED_LIMIT_REASON = "ReservedFunctionConcurrentInvocationLimitExceeded"


def unreserved(lam) -> int:
    return lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"]


def assert_throttled(exc, reason=RESERVED_LIMIT_REASON):
    assert_error(exc, "TooManyRequestsException", 429)
    resp = exc.response
    assert resp["Error"]["Message"], resp
    # Reason and Type are modeled members of the error body; botocore lifts them to the top.
    assert resp.get("Reason") == reason, resp
    headers = resp["ResponseMetadata"]["HTTPHeaders"]
    assert "retry-after" in headers, headers
    assert int(headers["retry-after"]) >= 0, headers


# -- reserved concurrency ---------------------------------------------------------------------


def test_no_reserved_concurrency_by_default(lam, make_function):
    name = make_function("echo")["FunctionName"]
    resp = lam.get_function_concurrency(FunctionName=name)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert "ReservedConcurrentExecutions" not in resp


def test_put_get_delete_function_concurrency(lam, make_function):
    name = make_function("echo")["FunctionName"]
    put = lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=5)
    assert put["ReservedConcurrentExecutions"] == 5
    assert lam.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 5
    assert lam.get_function(FunctionName=name)["Concurrency"]["ReservedConcurrentExecutions"] == 5

    put = lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=2)
    assert put["ReservedConcurrentExecutions"] == 2
    assert lam.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 2

    deleted = lam.delete_function_concurrency(FunctionName=name)
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName=name)


def test_concurrency_of_unknown_function_is_not_found(lam):
    missing = unique_name("missing")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.put_function_concurrency(FunctionName=missing, ReservedConcurrentExecutions=1)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_concurrency(FunctionName=missing)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.delete_function_concurrency(FunctionName=missing)


def test_reserved_zero_throttles_every_invoke(lam, make_function):
    name = make_function("echo")["FunctionName"]
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    for _ in range(3):
        with pytest.raises(lam.exceptions.TooManyRequestsException) as exc:
            lam.invoke(FunctionName=name, Payload=b"{}")
        assert_throttled(exc.value)
    lam.delete_function_concurrency(FunctionName=name)
    _, body = invoke(lam, name, b'"free"')
    assert body == b'"free"'


def test_reserved_one_admits_one_invoke_at_a_time(lam, make_function):
    name = make_function("sleep", Timeout=10)["FunctionName"]
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    barrier = threading.Barrier(2)
    results = [None, None]

    def call(i):
        barrier.wait()
        try:
            results[i] = ("ok", invoke(lam, name, b"1000")[1])
        except lam.exceptions.TooManyRequestsException as exc:
            results[i] = ("throttled", exc)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    outcomes = sorted(r[0] for r in results if r)
    assert outcomes == ["ok", "throttled"], results
    ok = next(r for r in results if r[0] == "ok")
    throttled = next(r for r in results if r[0] == "throttled")
    assert ok[1] == b"slept 1000"
    assert_throttled(throttled[1])
    # the slot is free again
    _, body = invoke(lam, name, b"1")
    assert body == b"slept 1"


def test_reservation_must_leave_100_unreserved(lam, make_function):
    name = make_function("echo")["FunctionName"]
    before = unreserved(lam)
    allowed = before - MIN_UNRESERVED
    assert allowed >= 1, before
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=allowed + 1)
    assert_error(exc.value, "InvalidParameterValueException", 400)
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName=name)
    assert unreserved(lam) == before

    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=allowed)
    try:
        assert unreserved(lam) == MIN_UNRESERVED
    finally:
        lam.delete_function_concurrency(FunctionName=name)
    assert unreserved(lam) == before


def test_reservation_beyond_the_account_limit_is_refused(lam, make_function):
    name = make_function("echo")["FunctionName"]
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=ACCOUNT_CONCURRENCY + 1)


# -- GetAccountSettings -----------------------------------------------------------------------


def test_account_settings(lam, make_function):
    settings = lam.get_account_settings()
    assert settings["AccountLimit"]["ConcurrentExecutions"] == ACCOUNT_CONCURRENCY
    assert 0 <= settings["AccountLimit"]["UnreservedConcurrentExecutions"] <= ACCOUNT_CONCURRENCY
    assert settings["AccountUsage"]["FunctionCount"] >= 0


def test_account_settings_track_reservations_and_functions(lam, make_function):
    before = lam.get_account_settings()
    name = make_function("echo")["FunctionName"]
    after_create = lam.get_account_settings()
    assert after_create["AccountUsage"]["FunctionCount"] == before["AccountUsage"]["FunctionCount"] + 1

    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=50)
    assert unreserved(lam) == before["AccountLimit"]["UnreservedConcurrentExecutions"] - 50
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=20)
    assert unreserved(lam) == before["AccountLimit"]["UnreservedConcurrentExecutions"] - 20

    lam.delete_function(FunctionName=name)  # deleting the function returns its reservation
    after_delete = lam.get_account_settings()
    assert after_delete["AccountLimit"]["UnreservedConcurrentExecutions"] == (
        before["AccountLimit"]["UnreservedConcurrentExecutions"]
    )
    assert after_delete["AccountUsage"]["FunctionCount"] == before["AccountUsage"]["FunctionCount"]


# -- provisioned concurrency ------------------------------------------------------------------


def wait_ready(lam, name, qualifier, requested, timeout=30):
    return poll(
        lambda: lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=qualifier),
        lambda c: c.get("Status") in ("READY", "FAILED"),
        timeout,
        f"provisioned concurrency of {name}:{qualifier} to be READY",
        interval=0.25,
    )


@pytest.mark.parametrize("target", ["version", "alias"])
def test_provisioned_concurrency_lifecycle(lam, make_function, target):
    name = make_function("echo")["FunctionName"]
    lam.publish_version(FunctionName=name)
    qualifier = "1"
    if target == "alias":
        lam.create_alias(FunctionName=name, Name="warm", FunctionVersion="1")
        qualifier = "warm"

    with pytest.raises(lam.exceptions.ProvisionedConcurrencyConfigNotFoundException):
        lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=qualifier)

    put = lam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier=qualifier, ProvisionedConcurrentExecutions=2
    )
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert put["RequestedProvisionedConcurrentExecutions"] == 2
    assert put["Status"] in ("IN_PROGRESS", "READY")

    ready = wait_ready(lam, name, qualifier, 2)
    assert ready["Status"] == "READY", ready
    assert ready["RequestedProvisionedConcurrentExecutions"] == 2
    assert ready["AvailableProvisionedConcurrentExecutions"] == 2
    assert ready["AllocatedProvisionedConcurrentExecutions"] == 2

    resp, body = invoke(lam, name, b'"warm"', Qualifier=qualifier, LogType="Tail")
    assert (resp["ExecutedVersion"], body) == ("1", b'"warm"')
    # Served by an environment started ahead of it: its REPORT says so, with no Init Duration.
    report = base64.b64decode(resp["LogResult"]).decode()
    assert "\tStart: pool\t" in report and "Init Duration" not in report, report

    deleted = lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier=qualifier)
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(lam.exceptions.ProvisionedConcurrencyConfigNotFoundException) as exc:
        lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=qualifier)
    assert_error(exc.value, "ProvisionedConcurrencyConfigNotFoundException", 404)
    _, body = invoke(lam, name, b'"cold"', Qualifier=qualifier)
    assert body == b'"cold"'


def test_provisioned_concurrency_on_latest_is_refused(lam, make_function):
    # Lambda: "Provisioned Concurrency Configs cannot be applied to unpublished function versions."
    name = make_function("echo")["FunctionName"]
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="$LATEST",
                                               ProvisionedConcurrentExecutions=1)
    assert_error(exc.value, "InvalidParameterValueException", 400)


def test_provisioned_concurrency_on_missing_version_is_not_found(lam, make_function):
    name = make_function("echo")["FunctionName"]
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="5", ProvisionedConcurrentExecutions=1)


def test_provisioned_concurrency_cannot_exceed_reserved(lam, make_function):
    # Lambda: "Requested Provisioned Concurrency should not be greater than the
    # reservedConcurrentExecution for function"
    name = make_function("echo")["FunctionName"]
    lam.publish_version(FunctionName=name)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=2)
    lam.delete_function_concurrency(FunctionName=name)


def test_provisioned_concurrency_update_changes_the_request(lam, make_function):
    name = make_function("echo")["FunctionName"]
    lam.publish_version(FunctionName=name)
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=1)
    wait_ready(lam, name, "1", 1)
    put = lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=3)
    assert put["RequestedProvisionedConcurrentExecutions"] == 3
    ready = poll(
        lambda: lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="1"),
        lambda c: c.get("Status") == "READY" and c.get("AvailableProvisionedConcurrentExecutions") == 3,
        30,
        "3 provisioned environments",
        interval=0.25,
    )
    assert ready["RequestedProvisionedConcurrentExecutions"] == 3
    lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="1")


# -- how invocations were served ----------------------------------------------------------------


def served(hearth) -> dict:
    resp = signed_request(hearth, "GET", "/hearth/stats")
    assert resp.status == 200, resp.describe()
    stats = json.loads(resp.body)
    assert len(stats["Shards"]) >= 1, stats
    return stats["Total"]


def test_stats_count_how_invocations_were_served(hearth, lam, make_function):
    name = make_function("echo")["FunctionName"]
    before = served(hearth)
    invoke(lam, name, b'"first"')
    invoke(lam, name, b'"second"')
    after = served(hearth)
    started = lambda s: s["EnvironmentsStarted"]["Cold"] + s["EnvironmentsStarted"]["Zygote"]
    # The first call started an environment, the second found it warm.
    assert started(after) >= started(before) + 1, (before, after)
    assert after["Invocations"]["Warm"] >= before["Invocations"]["Warm"] + 1, (before, after)
    assert after["Environments"]["Live"] >= 1, after
