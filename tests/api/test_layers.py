"""Lambda layers: PublishLayerVersion, GetLayerVersion, GetLayerVersionByArn, ListLayers,
ListLayerVersions, DeleteLayerVersion, and `Layers` on CreateFunction /
UpdateFunctionConfiguration / PublishVersion.

What Lambda answers, as botocore's model (2015-03-31) and Lambda itself describe it:
- version numbers count 1, 2, 3... per layer name and are never reused, even after deletes;
- a missing layer version is ResourceNotFoundException (404), "The resource you requested does
  not exist."; ListLayerVersions of an unknown layer is an empty list; DeleteLayerVersion is
  idempotent (204);
- a function may use at most 5 layers ("Cannot reference more than 5 layers."), each an
  existing layer version ("Layer version ARN does not exist.", InvalidParameterValueException);
- a function keeps working after a layer version it uses is deleted.

Nothing here needs the layer's files inside an environment (/opt): tests of that belong with the
runtime tests.
"""

import hashlib
import re
import urllib.request

import pytest
from botocore.exceptions import ClientError

from support import (
    assert_error,
    code_sha256,
    invoke,
    make_zip,
    unique_name,
    wait_updated,
)

DATE_RE = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000"
NOT_FOUND_MESSAGE = "The resource you requested does not exist."


def layer_arn_re(name, version=None):
    pattern = r"arn:aws:lambda:us-east-1:\d{12}:layer:" + re.escape(name)
    if version is not None:
        pattern += f":{version}"
    return pattern


def layer_zip(tag: str) -> bytes:
    """A small layer: different bytes (so a different CodeSha256) for each tag."""
    return make_zip(
        {
            "lib/data.txt": (f"layer {tag}\n".encode(), 0o644),
            "bin/tool": (b"#!/bin/sh\necho tool\n", 0o755),
        }
    )


@pytest.fixture
def layer_name(request):
    return unique_name("layer-" + request.node.name)


def publish(lam, name, tag="a", **params):
    return lam.publish_layer_version(LayerName=name, Content={"ZipFile": layer_zip(tag)}, **params)


def message_of(exc: ClientError) -> str:
    return exc.response["Error"]["Message"]


# -- PublishLayerVersion ----------------------------------------------------------------------


def test_publish_returns_the_new_version(lam, layer_name):
    content = layer_zip("publish")
    resp = lam.publish_layer_version(
        LayerName=layer_name,
        Description="shared helpers",
        Content={"ZipFile": content},
        CompatibleRuntimes=["python3.12", "provided.al2023"],
        CompatibleArchitectures=["x86_64"],
        LicenseInfo="MIT",
    )
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert re.fullmatch(layer_arn_re(layer_name), resp["LayerArn"]), resp["LayerArn"]
    assert resp["LayerVersionArn"] == resp["LayerArn"] + ":1"
    assert resp["Version"] == 1
    assert resp["Description"] == "shared helpers"
    assert re.fullmatch(DATE_RE, resp["CreatedDate"]), resp["CreatedDate"]
    assert resp["CompatibleRuntimes"] == ["python3.12", "provided.al2023"]
    assert resp["CompatibleArchitectures"] == ["x86_64"]
    assert resp["LicenseInfo"] == "MIT"
    assert resp["Content"]["CodeSha256"] == code_sha256(content)
    assert resp["Content"]["CodeSize"] == len(content)
    # Content.Location is a presigned URL: a plain GET downloads the archive.
    with urllib.request.urlopen(resp["Content"]["Location"], timeout=60) as download:
        assert download.read() == content


def test_publish_omits_fields_not_given(lam, layer_name):
    resp = publish(lam, layer_name)
    assert resp["Description"] == ""
    for key in ("CompatibleRuntimes", "CompatibleArchitectures", "LicenseInfo"):
        assert key not in resp, resp


def test_layer_name_may_be_an_arn(lam, layer_name):
    first = publish(lam, layer_name)
    second = publish(lam, first["LayerArn"], tag="b")
    assert second["LayerArn"] == first["LayerArn"]
    assert second["Version"] == 2
    got = lam.get_layer_version(LayerName=first["LayerArn"], VersionNumber=2)
    assert got["LayerVersionArn"] == second["LayerVersionArn"]


def test_versions_count_up_and_are_never_reused(lam, layer_name):
    assert [publish(lam, layer_name, tag=t)["Version"] for t in "ab"] == [1, 2]
    lam.delete_layer_version(LayerName=layer_name, VersionNumber=2)
    assert publish(lam, layer_name, tag="c")["Version"] == 3
    for n in (1, 3):
        lam.delete_layer_version(LayerName=layer_name, VersionNumber=n)
    # Every version is gone; the layer's next number is still 4.
    resp = publish(lam, layer_name, tag="d")
    assert resp["Version"] == 4
    assert resp["LayerVersionArn"].endswith(f":layer:{layer_name}:4")


def test_same_content_twice_makes_two_versions(lam, layer_name):
    first, second = publish(lam, layer_name), publish(lam, layer_name)
    assert (first["Version"], second["Version"]) == (1, 2)
    assert first["Content"]["CodeSha256"] == second["Content"]["CodeSha256"]


@pytest.mark.parametrize(
    "params",
    [
        {"CompatibleRuntimes": ["cobol85"]},
        {"CompatibleArchitectures": ["mips"]},
        {"CompatibleRuntimes": ["provided"] * 16},
        {"CompatibleArchitectures": ["x86_64", "arm64", "x86_64"]},
    ],
    ids=["unknown-runtime", "unknown-architecture", "16-runtimes", "3-architectures"],
)
def test_publish_checks_compatibility_lists(raw_lam, layer_name, params):
    with pytest.raises(ClientError) as exc:
        publish(raw_lam, layer_name, **params)
    assert_error(exc.value, "ValidationException", 400)
    assert "validation error detected" in message_of(exc.value)
    with pytest.raises(raw_lam.exceptions.ResourceNotFoundException):
        raw_lam.get_layer_version(LayerName=layer_name, VersionNumber=1)


def test_publish_accepts_runtimes_this_host_does_not_run(lam, layer_name):
    # CompatibleRuntimes is metadata: any runtime Lambda knows is accepted.
    resp = publish(lam, layer_name, CompatibleRuntimes=["java21", "ruby3.3"])
    assert resp["CompatibleRuntimes"] == ["java21", "ruby3.3"]


def test_publish_refuses_a_bad_zip(lam, layer_name):
    with pytest.raises(ClientError) as exc:
        lam.publish_layer_version(LayerName=layer_name, Content={"ZipFile": b"not a zip"})
    assert_error(exc.value, {"InvalidZipFileException", "InvalidParameterValueException"}, 400)
    assert "Could not unzip uploaded file" in message_of(exc.value)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_layer_version(LayerName=layer_name, VersionNumber=1)


def test_publish_needs_content(raw_lam, layer_name):
    with pytest.raises(ClientError) as exc:
        raw_lam.publish_layer_version(LayerName=layer_name)
    assert_error(exc.value, {"ValidationException", "InvalidParameterValueException"}, 400)


def test_bad_layer_name_is_refused(raw_lam):
    with pytest.raises(ClientError) as exc:
        raw_lam.publish_layer_version(LayerName="no spaces allowed", Content={"ZipFile": layer_zip("x")})
    assert_error(exc.value, "ValidationException", 400)
    assert "at 'layerName' failed to satisfy constraint" in message_of(exc.value)


# -- GetLayerVersion, GetLayerVersionByArn ----------------------------------------------------


def test_get_layer_version_matches_publish(lam, layer_name):
    published = publish(lam, layer_name, Description="d", CompatibleRuntimes=["nodejs20.x"], LicenseInfo="Apache-2.0")
    for got in (
        lam.get_layer_version(LayerName=layer_name, VersionNumber=1),
        lam.get_layer_version_by_arn(Arn=published["LayerVersionArn"]),
    ):
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 200
        for key in ("LayerArn", "LayerVersionArn", "Version", "Description", "CreatedDate",
                    "CompatibleRuntimes", "LicenseInfo"):
            assert got[key] == published[key], key
        assert got["Content"]["CodeSha256"] == published["Content"]["CodeSha256"]
        assert got["Content"]["CodeSize"] == published["Content"]["CodeSize"]
        with urllib.request.urlopen(got["Content"]["Location"], timeout=60) as download:
            assert download.read() == layer_zip("a")


def test_missing_layer_versions_are_not_found(lam, layer_name):
    published = publish(lam, layer_name)
    arn = published["LayerArn"]
    cases = [
        lambda: lam.get_layer_version(LayerName=unique_name("never-published"), VersionNumber=1),
        lambda: lam.get_layer_version(LayerName=layer_name, VersionNumber=2),
        lambda: lam.get_layer_version_by_arn(Arn=arn + ":2"),
        lambda: lam.get_layer_version_by_arn(Arn=arn.replace(layer_name, unique_name("never")) + ":1"),
    ]
    lam.delete_layer_version(LayerName=layer_name, VersionNumber=1)
    cases.append(lambda: lam.get_layer_version(LayerName=layer_name, VersionNumber=1))
    cases.append(lambda: lam.get_layer_version_by_arn(Arn=published["LayerVersionArn"]))
    for call in cases:
        with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
            call()
        assert_error(exc.value, "ResourceNotFoundException", 404)
        assert message_of(exc.value) == NOT_FOUND_MESSAGE


def test_version_zero_is_invalid(lam, layer_name):
    publish(lam, layer_name)
    for call in (lam.get_layer_version, lam.delete_layer_version):
        with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
            call(LayerName=layer_name, VersionNumber=0)
        assert_error(exc.value, "InvalidParameterValueException", 400)
        assert message_of(exc.value) == "Layer Version Cannot be less than 1"


def test_get_by_arn_needs_a_version_arn(lam, layer_name):
    arn = publish(lam, layer_name)["LayerArn"]
    for bad in (arn, "arn:aws:lambda:us-east-1:123:layer:x:1", "not-an-arn"):
        with pytest.raises(ClientError) as exc:
            lam.get_layer_version_by_arn(Arn=bad)
        assert_error(exc.value, "ValidationException", 400)
        assert "at 'arn' failed to satisfy constraint" in message_of(exc.value)


# -- DeleteLayerVersion -----------------------------------------------------------------------


def test_delete_is_idempotent(lam, layer_name):
    publish(lam, layer_name)
    for _ in range(2):
        resp = lam.delete_layer_version(LayerName=layer_name, VersionNumber=1)
        assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204
    resp = lam.delete_layer_version(LayerName=unique_name("never-published"), VersionNumber=7)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204


# -- ListLayerVersions, ListLayers ------------------------------------------------------------


def test_list_layer_versions_newest_first(lam, layer_name):
    published = [
        publish(lam, layer_name, tag="1", CompatibleRuntimes=["python3.12"]),
        publish(lam, layer_name, tag="2", Description="second", CompatibleRuntimes=["nodejs20.x"]),
        publish(lam, layer_name, tag="3", CompatibleRuntimes=["python3.12", "nodejs20.x"], LicenseInfo="MIT"),
    ]
    resp = lam.list_layer_versions(LayerName=layer_name)
    items = resp["LayerVersions"]
    assert [v["Version"] for v in items] == [3, 2, 1]
    assert "NextMarker" not in resp
    for item, pub in zip(items, reversed(published)):
        assert item["LayerVersionArn"] == pub["LayerVersionArn"]
        assert item["Description"] == pub["Description"]
        assert item["CreatedDate"] == pub["CreatedDate"]
        assert item["CompatibleRuntimes"] == pub["CompatibleRuntimes"]
        assert "Content" not in item and "LayerArn" not in item, item
    assert items[0]["LicenseInfo"] == "MIT" and "LicenseInfo" not in items[1]

    python = lam.list_layer_versions(LayerName=layer_name, CompatibleRuntime="python3.12")["LayerVersions"]
    assert [v["Version"] for v in python] == [3, 1]
    assert lam.list_layer_versions(LayerName=layer_name, CompatibleRuntime="java21")["LayerVersions"] == []
    assert lam.list_layer_versions(LayerName=layer_name, CompatibleArchitecture="x86_64")["LayerVersions"] == []

    lam.delete_layer_version(LayerName=layer_name, VersionNumber=2)
    assert [v["Version"] for v in lam.list_layer_versions(LayerName=layer_name)["LayerVersions"]] == [3, 1]
    # By ARN too.
    by_arn = lam.list_layer_versions(LayerName=published[0]["LayerArn"])["LayerVersions"]
    assert [v["Version"] for v in by_arn] == [3, 1]


def test_list_layer_versions_pages(lam, layer_name):
    for tag in "abcde":
        publish(lam, layer_name, tag=tag)
    seen, marker, pages = [], None, 0
    while True:
        params = {"LayerName": layer_name, "MaxItems": 2}
        if marker:
            params["Marker"] = marker
        resp = lam.list_layer_versions(**params)
        pages += 1
        assert len(resp["LayerVersions"]) <= 2
        seen += [v["Version"] for v in resp["LayerVersions"]]
        marker = resp.get("NextMarker")
        if not marker:
            break
    assert (seen, pages) == ([5, 4, 3, 2, 1], 3)
    paginated = [
        v["Version"]
        for page in lam.get_paginator("list_layer_versions").paginate(
            LayerName=layer_name, PaginationConfig={"PageSize": 2}
        )
        for v in page["LayerVersions"]
    ]
    assert paginated == [5, 4, 3, 2, 1]


def test_list_layer_versions_of_an_unknown_layer_is_empty(lam):
    resp = lam.list_layer_versions(LayerName=unique_name("never-published"))
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert resp["LayerVersions"] == []


def all_layers(lam, **params):
    return {
        layer["LayerName"]: layer
        for page in lam.get_paginator("list_layers").paginate(**params)
        for layer in page["Layers"]
    }


def test_list_layers_shows_the_latest_matching_version(lam, layer_name):
    v1 = publish(lam, layer_name, tag="1", CompatibleRuntimes=["python3.12"], CompatibleArchitectures=["x86_64"])
    v2 = publish(lam, layer_name, tag="2", CompatibleRuntimes=["nodejs20.x"], Description="node")

    layer = all_layers(lam)[layer_name]
    assert layer["LayerArn"] == v1["LayerArn"]
    latest = layer["LatestMatchingVersion"]
    assert latest["LayerVersionArn"] == v2["LayerVersionArn"]
    assert (latest["Version"], latest["Description"], latest["CompatibleRuntimes"]) == (2, "node", ["nodejs20.x"])
    assert latest["CreatedDate"] == v2["CreatedDate"]

    python = all_layers(lam, CompatibleRuntime="python3.12")[layer_name]["LatestMatchingVersion"]
    assert python["LayerVersionArn"] == v1["LayerVersionArn"]
    x86 = all_layers(lam, CompatibleArchitecture="x86_64")[layer_name]["LatestMatchingVersion"]
    assert x86["Version"] == 1
    assert layer_name not in all_layers(lam, CompatibleRuntime="java21")
    assert layer_name not in all_layers(lam, CompatibleRuntime="nodejs20.x", CompatibleArchitecture="x86_64")

    # A layer whose versions are all deleted is not listed.
    for n in (1, 2):
        lam.delete_layer_version(LayerName=layer_name, VersionNumber=n)
    assert layer_name not in all_layers(lam)


def test_list_layers_pages(lam):
    names = [unique_name(f"page-{i}") for i in range(3)]
    for name in names:
        publish(lam, name)
    listed = []
    for page in lam.get_paginator("list_layers").paginate(PaginationConfig={"PageSize": 1}):
        assert len(page["Layers"]) <= 1
        listed += [layer["LayerName"] for layer in page["Layers"]]
    assert listed == sorted(listed) and len(listed) == len(set(listed))
    assert set(names) <= set(listed)


@pytest.mark.parametrize("params", [{"CompatibleRuntime": "cobol85"}, {"CompatibleArchitecture": "mips"}])
def test_list_filters_are_checked(lam, layer_name, params):
    publish(lam, layer_name)
    for call in (lambda: lam.list_layers(**params), lambda: lam.list_layer_versions(LayerName=layer_name, **params)):
        with pytest.raises(ClientError) as exc:
            call()
        assert_error(exc.value, "ValidationException", 400)


# -- Layers on functions ----------------------------------------------------------------------


def layer_entries(*published):
    return [{"Arn": p["LayerVersionArn"], "CodeSize": p["Content"]["CodeSize"]} for p in published]


def test_function_layers_on_create_update_and_publish(lam, make_function, layer_name):
    a = publish(lam, layer_name + "-a")
    b = publish(lam, layer_name + "-b", tag="b")
    created = make_function("echo", Layers=[b["LayerVersionArn"], a["LayerVersionArn"]])
    name = created["FunctionName"]
    # In the order given: Lambda applies them in that order.
    assert created["Layers"] == layer_entries(b, a)
    assert lam.get_function(FunctionName=name)["Configuration"]["Layers"] == layer_entries(b, a)
    assert lam.get_function_configuration(FunctionName=name)["Layers"] == layer_entries(b, a)
    listed = {f["FunctionName"]: f for p in lam.get_paginator("list_functions").paginate() for f in p["Functions"]}
    assert listed[name]["Layers"] == layer_entries(b, a)

    assert lam.publish_version(FunctionName=name)["Layers"] == layer_entries(b, a)

    updated = lam.update_function_configuration(FunctionName=name, Layers=[a["LayerVersionArn"]])
    assert updated["Layers"] == layer_entries(a)
    wait_updated(lam, name)
    assert lam.get_function_configuration(FunctionName=name)["Layers"] == layer_entries(a)
    # The published version keeps the layers it was published with.
    assert lam.get_function_configuration(FunctionName=name, Qualifier="1")["Layers"] == layer_entries(b, a)

    # A change that does not name Layers keeps them; an empty list removes them.
    lam.update_function_configuration(FunctionName=name, Description="other")
    wait_updated(lam, name)
    assert lam.get_function_configuration(FunctionName=name)["Layers"] == layer_entries(a)
    cleared = lam.update_function_configuration(FunctionName=name, Layers=[])
    assert "Layers" not in cleared, cleared
    wait_updated(lam, name)
    assert "Layers" not in lam.get_function_configuration(FunctionName=name)

    _, body = invoke(lam, name, b'"with layers"', Qualifier="1")
    assert body == b'"with layers"'


def test_function_without_layers_shows_none(make_function):
    assert "Layers" not in make_function("echo")


def test_at_most_five_layers(lam, make_function, layer_name):
    versions = [publish(lam, f"{layer_name}-{i}", tag=str(i))["LayerVersionArn"] for i in range(6)]
    name = unique_name("six-layers")
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        make_function("echo", name=name, Layers=versions)
    assert_error(exc.value, "InvalidParameterValueException", 400)
    assert message_of(exc.value) == "Cannot reference more than 5 layers."
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name)

    five = make_function("echo", Layers=versions[:5])
    assert [layer["Arn"] for layer in five["Layers"]] == versions[:5]
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        lam.update_function_configuration(FunctionName=five["FunctionName"], Layers=versions)
    assert message_of(exc.value) == "Cannot reference more than 5 layers."
    assert len(lam.get_function_configuration(FunctionName=five["FunctionName"])["Layers"]) == 5


def test_unknown_layer_version_is_refused(lam, make_function, layer_name):
    published = publish(lam, layer_name)
    missing = [
        published["LayerArn"] + ":2",
        published["LayerArn"].replace(layer_name, unique_name("never-published")) + ":1",
    ]
    for arn in missing:
        name = unique_name("unknown-layer")
        with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
            make_function("echo", name=name, Layers=[arn])
        assert_error(exc.value, "InvalidParameterValueException", 400)
        assert message_of(exc.value) == f"Layer version {arn} does not exist."
        with pytest.raises(lam.exceptions.ResourceNotFoundException):
            lam.get_function(FunctionName=name)

    fn = make_function("echo")["FunctionName"]
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        lam.update_function_configuration(FunctionName=fn, Layers=[published["LayerVersionArn"], missing[0]])
    assert message_of(exc.value) == f"Layer version {missing[0]} does not exist."
    assert "Layers" not in lam.get_function_configuration(FunctionName=fn)


def test_malformed_layer_arn_is_a_validation_error(lam, make_function, layer_name):
    layer_arn = publish(lam, layer_name)["LayerArn"]
    for bad in (layer_arn, "not-an-arn"):  # a layer ARN without its version is not a version ARN
        with pytest.raises(ClientError) as exc:
            make_function("echo", name=unique_name("bad-layer"), Layers=[bad])
        assert_error(exc.value, "ValidationException", 400)
        assert "at 'layers' failed to satisfy constraint" in message_of(exc.value)


def test_two_versions_of_one_layer_are_refused(lam, make_function, layer_name):
    v1, v2 = publish(lam, layer_name)["LayerVersionArn"], publish(lam, layer_name, tag="b")["LayerVersionArn"]
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        make_function("echo", name=unique_name("same-layer"), Layers=[v1, v2])
    assert message_of(exc.value) == (
        "Two different versions of the same layer are not allowed to be referenced in the same "
        f"function. {v1} and {v2} are versions of the same layer."
    )


def test_function_keeps_working_after_its_layer_version_is_deleted(hearth, lam, make_function, layer_name):
    content = layer_zip("kept")
    published = lam.publish_layer_version(LayerName=layer_name, Content={"ZipFile": content})
    arn = published["LayerVersionArn"]
    name = make_function("echo", Layers=[arn])["FunctionName"]
    lam.delete_layer_version(LayerName=layer_name, VersionNumber=1)
    # Collect garbage: deleting another function makes the daemon drop unused code.
    other = make_function("echo")["FunctionName"]
    lam.delete_function(FunctionName=other)

    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_layer_version(LayerName=layer_name, VersionNumber=1)
    assert lam.get_function_configuration(FunctionName=name)["Layers"] == layer_entries(published)
    # The layer's extracted files are still in the code store (its address is the zip's SHA-256).
    tree = hearth.data_dir / "code" / "trees" / hashlib.sha256(content).hexdigest()
    assert tree.is_dir(), f"{tree} was removed while {name} uses it"
    _, body = invoke(lam, name, b'"still here"')
    assert body == b'"still here"'
    # A deleted version cannot be added to a function.
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        make_function("echo", name=unique_name("deleted-layer"), Layers=[arn])

    # ...and after a restart, which installs every stored function again.
    hearth.restart(hard=True)
    client = hearth.client()
    assert client.get_function_configuration(FunctionName=name)["Layers"] == layer_entries(published)
    _, body = invoke(client, name, b'"after restart"')
    assert body == b'"after restart"'
    assert tree.is_dir()

    # Once no function uses it, the code goes too.
    client.delete_function(FunctionName=name)
    assert not tree.exists()


@pytest.mark.parametrize("hard", [True, False], ids=["kill-9", "sigterm"])
def test_layers_survive_restart(hearth, lam, layer_name, hard):
    v1 = publish(lam, layer_name, tag="1", Description="one", CompatibleRuntimes=["python3.12"], LicenseInfo="MIT")
    publish(lam, layer_name, tag="2")
    lam.delete_layer_version(LayerName=layer_name, VersionNumber=2)

    code = hearth.restart(hard=hard)
    if not hard:
        assert code == 0, f"hearth exited with status {code} on SIGTERM"
    client = hearth.client()

    got = client.get_layer_version(LayerName=layer_name, VersionNumber=1)
    for key in ("LayerArn", "LayerVersionArn", "Version", "Description", "CreatedDate", "CompatibleRuntimes",
                "LicenseInfo"):
        assert got[key] == v1[key], key
    assert got["Content"]["CodeSha256"] == v1["Content"]["CodeSha256"]
    with urllib.request.urlopen(got["Content"]["Location"], timeout=60) as download:
        assert download.read() == layer_zip("1")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_layer_version(LayerName=layer_name, VersionNumber=2)
    assert [v["Version"] for v in client.list_layer_versions(LayerName=layer_name)["LayerVersions"]] == [1]
    # The counter survived too: version 2 is not handed out again.
    assert publish(client, layer_name, tag="3")["Version"] == 3


def test_layers_count_in_account_code_size(lam, layer_name):
    before = lam.get_account_settings()["AccountUsage"]["TotalCodeSize"]
    size = publish(lam, layer_name, tag="size")["Content"]["CodeSize"]
    assert lam.get_account_settings()["AccountUsage"]["TotalCodeSize"] == before + size


def test_layer_arns_use_the_functions_account(lam, make_function, layer_name):
    fn_arn = make_function("echo")["FunctionArn"]
    layer_arn = publish(lam, layer_name)["LayerArn"]
    assert layer_arn.split(":")[4] == fn_arn.split(":")[4]
