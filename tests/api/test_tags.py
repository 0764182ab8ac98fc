"""TagResource, UntagResource, ListTags (by function ARN), and tags given to CreateFunction."""

import pytest

from support import account_of, assert_error, unique_name


def test_tags_given_at_creation(lam, make_function):
    tags = {"team": "hearth", "cost-center": "42", "empty": ""}
    created = make_function("echo", Tags=tags)
    resp = lam.list_tags(Resource=created["FunctionArn"])
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert resp["Tags"] == tags
    assert lam.get_function(FunctionName=created["FunctionName"])["Tags"] == tags


def test_function_without_tags_lists_none(lam, make_function):
    created = make_function("echo")
    assert lam.list_tags(Resource=created["FunctionArn"]).get("Tags", {}) == {}


def test_tag_resource_adds_and_overwrites(lam, make_function):
    created = make_function("echo", Tags={"a": "1", "b": "2"})
    arn = created["FunctionArn"]
    resp = lam.tag_resource(Resource=arn, Tags={"b": "two", "c": "3"})
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert lam.list_tags(Resource=arn)["Tags"] == {"a": "1", "b": "two", "c": "3"}


def test_untag_resource_removes_only_the_given_keys(lam, make_function):
    created = make_function("echo", Tags={"a": "1", "b": "2", "c": "3"})
    arn = created["FunctionArn"]
    resp = lam.untag_resource(Resource=arn, TagKeys=["a", "c", "not-there"])
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert lam.list_tags(Resource=arn)["Tags"] == {"b": "2"}


def test_tags_with_special_characters(lam, make_function):
    created = make_function("echo")
    arn = created["FunctionArn"]
    tags = {"aws-cdk:path/with spaces": "v=1+2", "unicodé": "ça marche", "k@x.y": "a:b/c"}
    lam.tag_resource(Resource=arn, Tags=tags)
    assert lam.list_tags(Resource=arn)["Tags"] == tags
    lam.untag_resource(Resource=arn, TagKeys=["aws-cdk:path/with spaces", "unicodé"])
    assert lam.list_tags(Resource=arn)["Tags"] == {"k@x.y": "a:b/c"}


def test_tags_are_per_function(lam, make_function):
    one = make_function("echo", Tags={"owner": "one"})
    two = make_function("echo")
    lam.tag_resource(Resource=two["FunctionArn"], Tags={"owner": "two"})
    assert lam.list_tags(Resource=one["FunctionArn"])["Tags"] == {"owner": "one"}
    assert lam.list_tags(Resource=two["FunctionArn"])["Tags"] == {"owner": "two"}


def test_tags_of_unknown_function_are_not_found(lam, make_function):
    account = account_of(make_function("echo")["FunctionArn"])
    arn = f"arn:aws:lambda:us-east-1:{account}:function:{unique_name('missing')}"
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.list_tags(Resource=arn)
    assert_error(exc.value, "ResourceNotFoundException", 404)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.tag_resource(Resource=arn, Tags={"a": "1"})
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.untag_resource(Resource=arn, TagKeys=["a"])


def test_tags_are_deleted_with_the_function(lam, make_function):
    created = make_function("echo", Tags={"old": "yes"})
    name, arn = created["FunctionName"], created["FunctionArn"]
    lam.delete_function(FunctionName=name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.list_tags(Resource=arn)
    recreated = make_function("echo", name=name)
    assert recreated["FunctionArn"] == arn
    assert lam.list_tags(Resource=arn).get("Tags", {}) == {}
