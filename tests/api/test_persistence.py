"""State survives a restart of the daemon on the same data dir: after kill -9 (a crash) and
after SIGTERM (which must exit 0). The credentials file is kept, not regenerated. Layers are
part of the state: their versions, their version counters, and the layers functions use."""

import threading

import pytest

from support import code_sha256, invoke, make_zip, poll, unique_name, wait_updated


def build_layer(lam):
    """A layer with versions 1 and 2, where 2 is deleted; returns version 1."""
    name = unique_name("persisted-layer")
    first = lam.publish_layer_version(
        LayerName=name,
        Content={"ZipFile": make_zip({"lib/kept.txt": (b"kept\n", 0o644)})},
        Description="layer v1",
        CompatibleRuntimes=["provided.al2023"],
    )
    lam.publish_layer_version(LayerName=name, Content={"ZipFile": make_zip({"lib/gone.txt": (b"gone\n", 0o644)})})
    lam.delete_layer_version(LayerName=name, VersionNumber=2)
    return first


def build_state(lam, make_function, sample_zip):
    layer = build_layer(lam)
    created = make_function(
        "echo",
        Description="persisted",
        MemorySize=256,
        Timeout=7,
        Environment={"Variables": {"KEEP": "me"}},
        Tags={"persist": "yes"},
        Layers=[layer["LayerVersionArn"]],
    )
    created["TestLayer"] = layer
    name = created["FunctionName"]
    assert lam.publish_version(FunctionName=name)["Version"] == "1"
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1", Description="kept")
    lam.update_function_configuration(FunctionName=name, Handler="big")
    wait_updated(lam, name)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=7)
    lam.tag_resource(Resource=created["FunctionArn"], Tags={"added": "later"})
    assert created["CodeSha256"] == code_sha256(sample_zip)
    return created


def check_state(lam, created, unreserved_before):
    name, arn = created["FunctionName"], created["FunctionArn"]

    config = lam.get_function_configuration(FunctionName=name)
    assert config["FunctionArn"] == arn
    assert config["Handler"] == "big"
    assert config["Description"] == "persisted"
    assert config["MemorySize"] == 256
    assert config["Timeout"] == 7
    assert config["Environment"]["Variables"] == {"KEEP": "me"}
    assert config["CodeSha256"] == created["CodeSha256"]
    assert config["CodeSize"] == created["CodeSize"]
    layer = created["TestLayer"]
    layers = [{"Arn": layer["LayerVersionArn"], "CodeSize": layer["Content"]["CodeSize"]}]
    assert config["Layers"] == layers

    v1 = lam.get_function_configuration(FunctionName=name, Qualifier="1")
    assert v1["Handler"] == "echo"
    assert v1["FunctionArn"] == arn + ":1"
    assert v1["Layers"] == layers
    versions = [v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]]
    assert versions == ["$LATEST", "1"]

    alias = lam.get_alias(FunctionName=name, Name="live")
    assert (alias["FunctionVersion"], alias["Description"]) == ("1", "kept")

    assert lam.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 7
    assert lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == unreserved_before - 7
    assert lam.list_tags(Resource=arn)["Tags"] == {"persist": "yes", "added": "later"}

    resp, body = invoke(lam, name, b"4")
    assert (resp["ExecutedVersion"], body) == ("$LATEST", b"xxxx")
    resp, body = invoke(lam, name, b'"v1"', Qualifier="1")
    assert (resp["ExecutedVersion"], body) == ("1", b'"v1"')
    resp, body = invoke(lam, name, b'"alias"', Qualifier="live")
    assert (resp["ExecutedVersion"], body) == ("1", b'"alias"')

    layer_name = layer["LayerArn"].rsplit(":", 1)[1]
    got = lam.get_layer_version(LayerName=layer_name, VersionNumber=1)
    assert (got["LayerVersionArn"], got["Description"], got["CreatedDate"], got["CompatibleRuntimes"]) == (
        layer["LayerVersionArn"], "layer v1", layer["CreatedDate"], ["provided.al2023"]
    )
    assert got["Content"]["CodeSha256"] == layer["Content"]["CodeSha256"]
    assert [v["Version"] for v in lam.list_layer_versions(LayerName=layer_name)["LayerVersions"]] == [1]
    # the layer's version counter was kept: deleted version 2 is not handed out again
    again = lam.publish_layer_version(LayerName=layer_name, Content={"ZipFile": make_zip({"x": (b"x", 0o644)})})
    assert again["Version"] == 3

    # the version counter was kept too: the next version is 2, not 1 again
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"KEEP": "changed"}})
    wait_updated(lam, name)
    assert lam.publish_version(FunctionName=name)["Version"] == "2"


@pytest.mark.parametrize("hard", [True, False], ids=["kill-9", "sigterm"])
def test_state_survives_restart(hearth, lam, make_function, sample_zip, hard):
    unreserved_before = lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"]
    created = build_state(lam, make_function, sample_zip)
    credentials_file = hearth.credentials_path.read_bytes()
    _, secret = hearth.credentials

    code = hearth.restart(hard=hard)
    if not hard:
        assert code == 0, f"hearth exited with status {code} on SIGTERM"

    assert hearth.credentials_path.read_bytes() == credentials_file, "the credentials were regenerated"
    assert secret not in hearth.stderr, "the restarted daemon printed the secret key again"
    check_state(hearth.client(), created, unreserved_before)


def test_deleted_function_stays_deleted(hearth, lam, make_function):
    kept = make_function("echo")["FunctionName"]
    gone = make_function("echo", Tags={"x": "y"})
    lam.delete_function(FunctionName=gone["FunctionName"])
    hearth.restart(hard=True)
    client = hearth.client()
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_function(FunctionName=gone["FunctionName"])
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.list_tags(Resource=gone["FunctionArn"])
    names = [f["FunctionName"] for p in client.get_paginator("list_functions").paginate() for f in p["Functions"]]
    assert gone["FunctionName"] not in names
    assert kept in names


def test_crash_during_an_invocation(hearth, lam, make_function):
    # kill -9 while an invocation runs: the caller's connection drops, and after the restart
    # the function works, its state is intact and the lost invocation holds no concurrency slot.
    name = make_function("sleep", Timeout=30)["FunctionName"]
    lam.publish_version(FunctionName=name)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    outcome = []

    def slow():
        try:
            outcome.append(invoke(hearth.client(), name, b"20000"))
        except Exception as exc:  # noqa: BLE001 - the connection is expected to drop
            outcome.append(exc)

    t = threading.Thread(target=slow)
    t.start()
    try:
        # the slow invocation is running once the single slot refuses a second one
        def probe():
            try:
                invoke(lam, name, b"1")
                return False
            except lam.exceptions.TooManyRequestsException:
                return True

        poll(probe, bool, 15, "the slow invocation to hold the only concurrency slot")
    finally:
        hearth.restart(hard=True)
        t.join(60)
    assert not t.is_alive()
    assert outcome and isinstance(outcome[0], Exception), f"the invocation survived kill -9: {outcome}"

    client = hearth.client()
    assert client.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 1
    _, body = invoke(client, name, b"10")
    assert body == b"slept 10"
    versions = [v["Version"] for v in client.list_versions_by_function(FunctionName=name)["Versions"]]
    assert versions == ["$LATEST", "1"]
