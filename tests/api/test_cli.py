"""The `aws` CLI (v1, from the same virtualenv) against the daemon."""

import functools
import json
import os
import subprocess


from support import REGION, ROLE, RUNTIME, aws_cli, code_sha256, make_zip, unique_name, wait_active


@functools.lru_cache(maxsize=None)
def raw_payload_args() -> tuple:
    """`--payload` as raw JSON: v2 needs --cli-binary-format raw-in-base64-out; v1 (the one PyPI
    has) sends blobs raw already and does not know that option."""
    version = subprocess.run([aws_cli(), "--version"], capture_output=True, timeout=60)
    text = (version.stdout + version.stderr).decode()
    return ("--cli-binary-format", "raw-in-base64-out") if text.startswith("aws-cli/2") else ()


def cli_env(tmp_path, **extra) -> dict:
    """A clean environment: no user config, credentials only as given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        HOME=str(tmp_path),
        AWS_CONFIG_FILE=str(tmp_path / "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
        AWS_DEFAULT_REGION=REGION,
        AWS_PAGER="",
    )
    env.update(extra)
    return env


def run_aws(hearth, env, *args, cwd=None) -> dict:
    cmd = [aws_cli(), "--endpoint-url", hearth.endpoint, "--output", "json", "--cli-read-timeout", "60", *args]
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, timeout=120)
    assert proc.returncode == 0, (
        f"{' '.join(args)} exited {proc.returncode}\nstdout: {proc.stdout.decode(errors='replace')}\n"
        f"stderr: {proc.stderr.decode(errors='replace')}"
    )
    out = proc.stdout.decode()
    return json.loads(out) if out.strip() else {}


def key_env(hearth, tmp_path) -> dict:
    access_key, secret_key = hearth.credentials
    return cli_env(tmp_path, AWS_ACCESS_KEY_ID=access_key, AWS_SECRET_ACCESS_KEY=secret_key)


def test_cli_create_and_invoke(hearth, make_function, sample_zip, tmp_path):
    env = key_env(hearth, tmp_path)
    zip_path = tmp_path / "function.zip"
    zip_path.write_bytes(sample_zip)
    name = make_function.track(unique_name("cli"))

    created = run_aws(
        hearth, env, "lambda", "create-function",
        "--function-name", name,
        "--runtime", RUNTIME,
        "--role", ROLE,
        "--handler", "echo",
        "--zip-file", f"fileb://{zip_path}",
    )
    assert created["FunctionName"] == name
    assert created["CodeSha256"] == code_sha256(sample_zip)
    wait_active(hearth.client(), name)

    payload = '{"from": "the aws cli", "n": 42}'
    out_file = tmp_path / "out.json"
    result = run_aws(
        hearth, env, "lambda", "invoke",
        "--function-name", name,
        "--payload", payload,
        *raw_payload_args(),
        str(out_file),
    )
    assert result["StatusCode"] == 200
    assert "FunctionError" not in result
    assert result["ExecutedVersion"] == "$LATEST"
    assert out_file.read_bytes() == payload.encode()


def test_cli_invoke_reports_a_function_error(hearth, make_function, tmp_path):
    name = make_function("error")["FunctionName"]
    out_file = tmp_path / "err.json"
    result = run_aws(
        hearth, key_env(hearth, tmp_path), "lambda", "invoke",
        "--function-name", name,
        "--payload", '"cli boom"',
        *raw_payload_args(),
        str(out_file),
    )
    assert result["StatusCode"] == 200
    assert result.get("FunctionError")
    doc = json.loads(out_file.read_bytes())
    assert doc["errorType"] == "SampleError"
    assert doc["errorMessage"] == '"cli boom"'


def test_cli_with_the_daemon_credentials_file(hearth, make_function, tmp_path):
    name = make_function("echo")["FunctionName"]
    env = cli_env(tmp_path, AWS_SHARED_CREDENTIALS_FILE=str(hearth.credentials_path))
    functions = run_aws(hearth, env, "lambda", "list-functions")["Functions"]
    assert name in [f["FunctionName"] for f in functions]
    config = run_aws(hearth, env, "lambda", "get-function-configuration", "--function-name", name)
    assert config["Handler"] == "echo"


def test_cli_error_exit_status(hearth, tmp_path):
    cmd = [aws_cli(), "--endpoint-url", hearth.endpoint, "lambda", "get-function",
           "--function-name", unique_name("missing")]
    proc = subprocess.run(cmd, env=key_env(hearth, tmp_path), capture_output=True, timeout=120)
    # The CLI exits 255 on a service error in v1 (installed here) and 254 in v2.
    assert proc.returncode in (254, 255), proc
    assert b"ResourceNotFoundException" in proc.stderr, proc.stderr


def test_cli_layers(hearth, make_function, tmp_path):
    env = key_env(hearth, tmp_path)
    layer = unique_name("cli-layer")
    (tmp_path / "layer.zip").write_bytes(make_zip({"lib/data.txt": (b"from the cli\n", 0o644)}))
    published = run_aws(
        hearth, env, "lambda", "publish-layer-version", "--layer-name", layer,
        "--zip-file", "fileb://layer.zip", "--compatible-runtimes", "python3.12", "provided.al2023",
        cwd=tmp_path,
    )
    assert published["Version"] == 1
    assert published["CompatibleRuntimes"] == ["python3.12", "provided.al2023"]
    versions = run_aws(hearth, env, "lambda", "list-layer-versions", "--layer-name", layer)["LayerVersions"]
    assert [v["LayerVersionArn"] for v in versions] == [published["LayerVersionArn"]]

    name = make_function("echo")["FunctionName"]
    updated = run_aws(
        hearth, env, "lambda", "update-function-configuration", "--function-name", name,
        "--layers", published["LayerVersionArn"],
    )
    assert updated["Layers"] == [{"Arn": published["LayerVersionArn"], "CodeSize": published["Content"]["CodeSize"]}]

    run_aws(hearth, env, "lambda", "delete-layer-version", "--layer-name", layer, "--version-number", "1")
    assert run_aws(hearth, env, "lambda", "list-layer-versions", "--layer-name", layer)["LayerVersions"] == []
