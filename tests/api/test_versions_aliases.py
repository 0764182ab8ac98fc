"""PublishVersion, ListVersionsByFunction, CreateAlias, GetAlias, UpdateAlias, DeleteAlias,
ListAliases, and alias routing."""

import json
from collections import Counter

import pytest
from botocore.exceptions import ClientError

from support import VALIDATION_CODES, assert_error, invoke, other_zip, unique_name, wait_updated


def publish_two_versions(lam, make_function, handler="echo"):
    """A function with versions 1 and 2 that differ in one environment variable."""
    created = make_function(handler, Environment={"Variables": {"RELEASE": "one"}})
    name = created["FunctionName"]
    assert lam.publish_version(FunctionName=name)["Version"] == "1"
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"RELEASE": "two"}})
    wait_updated(lam, name)
    assert lam.publish_version(FunctionName=name)["Version"] == "2"
    return created


# -- PublishVersion / ListVersionsByFunction ---------------------------------------------------


def test_publish_version(lam, make_function):
    created = make_function("echo", MemorySize=192)
    name = created["FunctionName"]
    resp = lam.publish_version(FunctionName=name, Description="first release")
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert resp["Version"] == "1"
    assert resp["FunctionArn"] == created["FunctionArn"] + ":1"
    assert resp["Description"] == "first release"
    assert resp["CodeSha256"] == created["CodeSha256"]
    assert resp["MemorySize"] == 192
    assert resp["Handler"] == "echo"


def test_versions_count_up(lam, make_function):
    name = make_function("echo")["FunctionName"]
    for expected in ("1", "2", "3"):
        lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"RELEASE": expected}})
        wait_updated(lam, name)
        assert lam.publish_version(FunctionName=name)["Version"] == expected


def test_publishing_unchanged_function_returns_the_existing_version(lam, make_function):
    name = make_function("echo")["FunctionName"]
    first = lam.publish_version(FunctionName=name)
    again = lam.publish_version(FunctionName=name)
    assert first["Version"] == "1"
    assert again["Version"] == "1"
    assert again["FunctionArn"] == first["FunctionArn"]
    versions = [v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]]
    assert versions == ["$LATEST", "1"]


def test_list_versions_by_function(lam, make_function):
    created = publish_two_versions(lam, make_function)
    name = created["FunctionName"]
    versions = lam.list_versions_by_function(FunctionName=name)["Versions"]
    assert [v["Version"] for v in versions] == ["$LATEST", "1", "2"]
    by_version = {v["Version"]: v for v in versions}
    assert by_version["$LATEST"]["FunctionArn"] == created["FunctionArn"] + ":$LATEST"
    assert by_version["1"]["FunctionArn"] == created["FunctionArn"] + ":1"
    assert by_version["1"]["Environment"]["Variables"] == {"RELEASE": "one"}
    assert by_version["2"]["Environment"]["Variables"] == {"RELEASE": "two"}


def test_list_versions_of_unknown_function_is_not_found(lam):
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.list_versions_by_function(FunctionName=unique_name("missing"))


def test_publish_version_of_unknown_function_is_not_found(lam):
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.publish_version(FunctionName=unique_name("missing"))


def test_published_version_keeps_its_configuration(lam, make_function):
    name = make_function("env", MemorySize=128)["FunctionName"]
    lam.publish_version(FunctionName=name)
    lam.update_function_configuration(FunctionName=name, MemorySize=256)
    wait_updated(lam, name)

    assert lam.get_function_configuration(FunctionName=name, Qualifier="1")["MemorySize"] == 128
    resp, body = invoke(lam, name, Qualifier="1")
    assert resp["ExecutedVersion"] == "1"
    v1 = json.loads(body)
    assert v1["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "128"
    assert v1["AWS_LAMBDA_FUNCTION_VERSION"] == "1"

    resp, body = invoke(lam, name)
    assert resp["ExecutedVersion"] == "$LATEST"
    latest = json.loads(body)
    assert latest["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert latest["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"


def test_published_version_keeps_its_handler_and_code(lam, make_function, sample_binary):
    created = make_function("echo")
    name = created["FunctionName"]
    lam.publish_version(FunctionName=name)
    lam.update_function_code(FunctionName=name, ZipFile=other_zip(sample_binary))
    wait_updated(lam, name)
    lam.update_function_configuration(FunctionName=name, Handler="big")
    wait_updated(lam, name)

    assert lam.get_function_configuration(FunctionName=name, Qualifier="1")["CodeSha256"] == created["CodeSha256"]
    _, body = invoke(lam, name, b"4", Qualifier="1")
    assert body == b"4"
    _, body = invoke(lam, name, b"4")
    assert body == b"xxxx"


# -- Aliases ----------------------------------------------------------------------------------


def test_create_and_get_alias(lam, make_function):
    created = publish_two_versions(lam, make_function)
    name = created["FunctionName"]
    resp = lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1", Description="production")
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert resp["AliasArn"] == created["FunctionArn"] + ":live"
    assert resp["Name"] == "live"
    assert resp["FunctionVersion"] == "1"
    assert resp["Description"] == "production"
    assert resp["RevisionId"]

    got = lam.get_alias(FunctionName=name, Name="live")
    for key in ("AliasArn", "Name", "FunctionVersion", "Description", "RevisionId"):
        assert got[key] == resp[key], key


def test_invoke_alias_runs_its_version(lam, make_function):
    name = publish_two_versions(lam, make_function, handler="env")["FunctionName"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    resp, body = invoke(lam, name, Qualifier="live")
    assert resp["ExecutedVersion"] == "1"
    env = json.loads(body)
    assert env["RELEASE"] == "one"
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "1"


def test_update_alias_moves_invocations(lam, make_function):
    name = publish_two_versions(lam, make_function)["FunctionName"]
    created = lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    updated = lam.update_alias(FunctionName=name, Name="live", FunctionVersion="2", Description="moved")
    assert updated["FunctionVersion"] == "2"
    assert updated["Description"] == "moved"
    assert updated["RevisionId"] != created["RevisionId"]
    assert lam.get_alias(FunctionName=name, Name="live")["FunctionVersion"] == "2"
    resp, body = invoke(lam, name, b'"moved"', Qualifier="live")
    assert resp["ExecutedVersion"] == "2"
    assert body == b'"moved"'


def test_update_alias_with_stale_revision_id(lam, make_function):
    name = publish_two_versions(lam, make_function)["FunctionName"]
    created = lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    lam.update_alias(FunctionName=name, Name="live", Description="bump")
    with pytest.raises(lam.exceptions.PreconditionFailedException) as exc:
        lam.update_alias(FunctionName=name, Name="live", FunctionVersion="2", RevisionId=created["RevisionId"])
    assert_error(exc.value, "PreconditionFailedException", 412)
    assert lam.get_alias(FunctionName=name, Name="live")["FunctionVersion"] == "1"


def test_list_aliases(lam, make_function):
    name = publish_two_versions(lam, make_function)["FunctionName"]
    lam.create_alias(FunctionName=name, Name="blue", FunctionVersion="1")
    lam.create_alias(FunctionName=name, Name="green", FunctionVersion="2")
    aliases = lam.list_aliases(FunctionName=name)["Aliases"]
    assert sorted((a["Name"], a["FunctionVersion"]) for a in aliases) == [("blue", "1"), ("green", "2")]
    only_two = lam.list_aliases(FunctionName=name, FunctionVersion="2")["Aliases"]
    assert [a["Name"] for a in only_two] == ["green"]


def test_delete_alias(lam, make_function):
    name = publish_two_versions(lam, make_function)["FunctionName"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    resp = lam.delete_alias(FunctionName=name, Name="live")
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_alias(FunctionName=name, Name="live")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName=name, Qualifier="live", Payload=b"{}")
    assert lam.list_aliases(FunctionName=name)["Aliases"] == []


def test_duplicate_alias_is_a_conflict(lam, make_function):
    name = publish_two_versions(lam, make_function)["FunctionName"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    with pytest.raises(lam.exceptions.ResourceConflictException) as exc:
        lam.create_alias(FunctionName=name, Name="live", FunctionVersion="2")
    assert_error(exc.value, "ResourceConflictException", 409)
    assert lam.get_alias(FunctionName=name, Name="live")["FunctionVersion"] == "1"


def test_unknown_alias_is_not_found(lam, make_function):
    name = make_function("echo")["FunctionName"]
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.get_alias(FunctionName=name, Name="nope")
    assert_error(exc.value, "ResourceNotFoundException", 404)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.update_alias(FunctionName=name, Name="nope", FunctionVersion="$LATEST")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.delete_alias(FunctionName=name, Name="nope")


def test_alias_to_missing_version_is_not_found(lam, make_function):
    name = make_function("echo")["FunctionName"]
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.create_alias(FunctionName=name, Name="live", FunctionVersion="9")


def test_alias_of_unknown_function_is_not_found(lam):
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.create_alias(FunctionName=unique_name("missing"), Name="live", FunctionVersion="1")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.list_aliases(FunctionName=unique_name("missing"))


def test_numeric_alias_name_is_refused(lam, make_function):
    name = publish_two_versions(lam, make_function)["FunctionName"]
    with pytest.raises(ClientError) as exc:
        lam.create_alias(FunctionName=name, Name="2", FunctionVersion="1")
    assert_error(exc.value, VALIDATION_CODES, 400)


def test_version_used_by_an_alias_cannot_be_deleted(lam, make_function):
    # Lambda: ResourceConflictException "Unable to delete version because the following
    # aliases reference it: [live]"
    name = publish_two_versions(lam, make_function)["FunctionName"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.delete_function(FunctionName=name, Qualifier="1")
    assert lam.get_function(FunctionName=name, Qualifier="1")["Configuration"]["Version"] == "1"


# -- Routing ----------------------------------------------------------------------------------


def test_weighted_alias_runs_both_versions(lam, make_function):
    name = publish_two_versions(lam, make_function)["FunctionName"]
    resp = lam.create_alias(
        FunctionName=name,
        Name="canary",
        FunctionVersion="1",
        RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}},
    )
    assert resp["RoutingConfig"] == {"AdditionalVersionWeights": {"2": 0.5}}
    assert lam.get_alias(FunctionName=name, Name="canary")["RoutingConfig"] == {
        "AdditionalVersionWeights": {"2": 0.5}
    }
    runs = 80
    executed = Counter()
    for i in range(runs):
        resp, body = invoke(lam, name, str(i), Qualifier="canary")
        assert body == str(i).encode()
        executed[resp["ExecutedVersion"]] += 1
    assert set(executed) == {"1", "2"}, executed
    # Binomial(80, 0.5): outside [20, 60] has probability below 1e-5.
    assert 20 <= executed["2"] <= 60, executed


def test_alias_weight_zero_runs_only_the_primary(lam, make_function):
    name = publish_two_versions(lam, make_function)["FunctionName"]
    lam.create_alias(FunctionName=name, Name="canary", FunctionVersion="1",
                     RoutingConfig={"AdditionalVersionWeights": {"2": 0.0}})
    executed = Counter(invoke(lam, name, "{}", Qualifier="canary")[0]["ExecutedVersion"] for _ in range(30))
    assert executed == Counter({"1": 30})


def test_update_alias_routing(lam, make_function):
    name = publish_two_versions(lam, make_function)["FunctionName"]
    lam.create_alias(FunctionName=name, Name="canary", FunctionVersion="1",
                     RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}})
    updated = lam.update_alias(FunctionName=name, Name="canary", RoutingConfig={"AdditionalVersionWeights": {}})
    assert not updated.get("RoutingConfig", {}).get("AdditionalVersionWeights")
    executed = Counter(invoke(lam, name, "{}", Qualifier="canary")[0]["ExecutedVersion"] for _ in range(20))
    assert executed == Counter({"1": 20})


# -- SnapStart ----------------------------------------------------------------------------------


def test_snap_start_is_kept_but_said_to_be_off(lam, make_function):
    """hearth has no checkpoint/restore: a template asking for SnapStart still deploys, and the
    function's configuration says plainly that it is off and why."""
    created = make_function("echo", SnapStart={"ApplyOn": "PublishedVersions"})
    assert created["SnapStart"] == {"ApplyOn": "PublishedVersions", "OptimizationStatus": "Off"}
    assert "no checkpoint/restore" in created["StateReason"]
    name = created["FunctionName"]
    version = lam.publish_version(FunctionName=name)
    assert version["SnapStart"] == {"ApplyOn": "PublishedVersions", "OptimizationStatus": "Off"}
    assert "CRIU" in version["StateReason"]
    _, body = invoke(lam, name, b'"still served"', Qualifier=version["Version"])
    assert body == b'"still served"'

    lam.update_function_configuration(FunctionName=name, SnapStart={"ApplyOn": "None"})
    wait_updated(lam, name)
    latest = lam.get_function_configuration(FunctionName=name)
    assert latest["SnapStart"] == {"ApplyOn": "None", "OptimizationStatus": "Off"}
    assert "StateReason" not in latest

    with pytest.raises(ClientError) as exc:
        lam.update_function_configuration(FunctionName=name, SnapStart={"ApplyOn": "Always"})
    assert_error(exc.value, VALIDATION_CODES, 400)
    assert "snapStart.applyOn" in str(exc.value)
