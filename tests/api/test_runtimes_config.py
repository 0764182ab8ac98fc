"""Which runtimes CreateFunction and UpdateFunctionConfiguration accept.

hearth runs `provided`, `provided.al2`, `provided.al2023` (the function's own bootstrap),
`python3.8` ... `python3.13` (the host's /usr/bin/python3) and `nodejs18.x`, `nodejs20.x`,
`nodejs22.x` (the host's /usr/bin/node). A managed runtime is accepted only where its
interpreter is installed on the host; otherwise InvalidParameterValueException names what is
missing. Any other runtime is refused as Lambda words it: "Value X at 'runtime' failed to
satisfy constraint: Member must satisfy enum value set: [...]".

These tests only configure functions; invoking Python and Node functions is tested with the
runtimes themselves.
"""

import os

import pytest

from support import ROLE, assert_error, unique_name, wait_updated

OS_ONLY = ["provided", "provided.al2", "provided.al2023"]
PYTHON = [f"python3.{minor}" for minor in range(8, 14)]
NODE = ["nodejs18.x", "nodejs20.x", "nodejs22.x"]
INTERPRETER = {**{r: "/usr/bin/python3" for r in PYTHON}, **{r: "/usr/bin/node" for r in NODE}}
ENUM_PREFIX = "Member must satisfy enum value set: ["


def host_has(runtime: str) -> bool:
    program = INTERPRETER.get(runtime)
    return program is None or os.path.exists(program)


def assert_missing_interpreter(exc, runtime):
    assert_error(exc, "InvalidParameterValueException", 400)
    message = exc.response["Error"]["Message"]
    assert INTERPRETER[runtime] in message and runtime in message, message


@pytest.mark.parametrize("runtime", OS_ONLY + PYTHON + NODE)
def test_supported_runtimes_are_accepted_where_the_host_can_run_them(lam, make_function, runtime):
    name = unique_name("runtime")
    if not host_has(runtime):
        with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
            make_function("app.handler", name=name, Runtime=runtime)
        assert_missing_interpreter(exc.value, runtime)
        with pytest.raises(lam.exceptions.ResourceNotFoundException):
            lam.get_function(FunctionName=name)
        return
    resp = make_function("app.handler", name=name, Runtime=runtime)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert resp["Runtime"] == runtime
    assert lam.get_function_configuration(FunctionName=name)["Runtime"] == runtime


@pytest.mark.parametrize("runtime", ["python3.12", "nodejs20.x", "provided.al2023"])
def test_runtime_can_be_changed(lam, make_function, runtime):
    name = make_function("echo", Runtime="provided.al2")["FunctionName"]
    if not host_has(runtime):
        with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
            lam.update_function_configuration(FunctionName=name, Runtime=runtime)
        assert_missing_interpreter(exc.value, runtime)
        return
    resp = lam.update_function_configuration(FunctionName=name, Runtime=runtime, Handler="app.handler")
    assert resp["Runtime"] == runtime
    wait_updated(lam, name)
    assert lam.get_function_configuration(FunctionName=name)["Runtime"] == runtime
    # Published versions keep the runtime they were published with.
    assert lam.publish_version(FunctionName=name)["Runtime"] == runtime


@pytest.mark.parametrize("runtime", ["java21", "python2.7", "nodejs16.x", "python3.14", "go1.x", "ruby3.3", "cobol"])
def test_other_runtimes_are_refused_as_lambda_words_it(lam, make_function, runtime):
    name = unique_name("runtime")
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        make_function("echo", name=name, Runtime=runtime)
    assert_error(exc.value, "InvalidParameterValueException", 400)
    message = exc.value.response["Error"]["Message"]
    prefix = f"Value {runtime} at 'runtime' failed to satisfy constraint: {ENUM_PREFIX}"
    assert message.startswith(prefix), message
    listed = message[len(prefix):].rstrip("]").split(", ")
    assert set(listed) == set(OS_ONLY + PYTHON + NODE), listed
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name)


def test_update_to_an_unknown_runtime_is_refused(lam, make_function):
    name = make_function("echo")["FunctionName"]
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        lam.update_function_configuration(FunctionName=name, Runtime="java21")
    assert exc.value.response["Error"]["Message"].startswith("Value java21 at 'runtime' failed to satisfy constraint")
    assert lam.get_function_configuration(FunctionName=name)["Runtime"] == "provided.al2023"


def test_runtime_is_required(raw_lam):
    with pytest.raises(raw_lam.exceptions.InvalidParameterValueException):
        raw_lam.create_function(
            FunctionName=unique_name("no-runtime"), Role=ROLE, Handler="echo", Code={"ZipFile": b"PK\x05\x06" + b"\0" * 18}
        )
