"""hearth's boto3 / aws-CLI integration suite.

These tests drive a real `hearth serve` daemon through boto3, botocore and the `aws` CLI, and
check what AWS Lambda itself answers: the exact bytes a function returns, the exception
classes, HTTP status codes and headers that botocore's Lambda model (2015-03-31) describes.
A failure is a place where hearth differs from Lambda as its clients see it.

Running
-------
Build the daemon and the sample function, make a virtualenv with the pinned clients, run:

    cargo build --workspace                       # target/debug/hearth, target/debug/hearth-sample-fn
    python3 -m venv /tmp/apivenv                  # apt-get install -y python3-venv if missing
    /tmp/apivenv/bin/pip install -r tests/api/requirements.txt
    HEARTH_BIN=target/debug/hearth HEARTH_SAMPLE_FN=target/debug/hearth-sample-fn \\
        /tmp/apivenv/bin/pytest tests/api -q

Run as root (the daemon's environments need namespaces and cgroups). The `aws` CLI used by
test_cli.py is the one installed next to the running Python (the venv's bin/).

Environment
-----------
HEARTH_BIN         the daemon (default: <repo>/target/debug/hearth)
HEARTH_SAMPLE_FN   the sample native function, zipped as `bootstrap` (mode 0755)
                   (default: <repo>/target/debug/hearth-sample-fn)

Fixtures
--------
hearth         (session) one daemon: `$HEARTH_BIN serve --listen 127.0.0.1:PORT --data-dir DIR`,
               ready once its stderr prints "listening on". Has .endpoint, .data_dir, .process,
               .credentials (from DIR/credentials, an AWS shared-credentials file the daemon
               writes at first start), .client(), .restart(hard=True). Teardown sends SIGTERM
               and requires exit status 0 within 20 s.
lam            a boto3 Lambda client for it (us-east-1, no retries, 60 s read timeout).
raw_lam        the same without botocore's client-side parameter validation, to reach the
               server's own validation.
sample_zip     the sample function zipped as `bootstrap`.
make_function  factory: make_function("echo", MemorySize=256, ...) creates a uniquely named
               function (provided.al2023) and deletes it after the test.

The sample function's handler picks its behaviour: echo, error, sleep, crash, big, env, hang
(see tests/src/bin/hearth-sample-fn.rs). Invoke payloads are JSON, as Lambda requires.
"""

from __future__ import annotations

import configparser
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from support import REGION, ROLE, RUNTIME, delete_functions, make_zip, unique_name, wait_active

REPO = Path(__file__).resolve().parents[2]
HEARTH_BIN = os.environ.get("HEARTH_BIN", str(REPO / "target" / "debug" / "hearth"))
SAMPLE_FN = os.environ.get("HEARTH_SAMPLE_FN", str(REPO / "target" / "debug" / "hearth-sample-fn"))

READY_TIMEOUT = 30
STOP_TIMEOUT = 20
READY_MARKER = "listening on"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Hearth:
    """One `hearth serve` process on a fixed port and data dir, restartable."""

    def __init__(self, binary: str, data_dir: Path, log_dir: Path):
        self.binary = binary
        self.data_dir = Path(data_dir)
        self.log_dir = Path(log_dir)
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self._stderr: list[str] = []  # lines of the current process
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        if not os.access(self.binary, os.X_OK):
            pytest.fail(f"HEARTH_BIN {self.binary} is not an executable (build it, or set HEARTH_BIN)")
        self.starts += 1
        self._stderr = []
        self._ready = threading.Event()
        stdout = open(self.log_dir / f"stdout.{self.starts}.log", "wb")
        self.process = subprocess.Popen(
            [self.binary, "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", str(self.data_dir)],
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.PIPE,
        )
        stdout.close()
        log = open(self.log_dir / f"stderr.{self.starts}.log", "w", encoding="utf-8")
        self._reader = threading.Thread(
            target=self._drain, args=(self.process, self._stderr, self._ready, log), daemon=True
        )
        self._reader.start()
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._ready.wait(0.05):
            if self.process.poll() is not None:
                self._reader.join(2)
                pytest.fail(
                    f"hearth exited with status {self.process.returncode} before printing "
                    f"{READY_MARKER!r}; stderr:\n{self.stderr}"
                )
            if time.monotonic() >= deadline:
                self.process.kill()
                self.process.wait()
                pytest.fail(f"hearth did not print {READY_MARKER!r} within {READY_TIMEOUT}s; stderr:\n{self.stderr}")

    @staticmethod
    def _drain(process, lines, ready, log):
        # Keeps reading for the process's whole life so that a full pipe never blocks it.
        with log:
            for raw in iter(process.stderr.readline, b""):
                line = raw.decode("utf-8", "replace")
                lines.append(line)
                log.write(line)
                log.flush()
                if READY_MARKER in line:
                    ready.set()

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM; returns the exit status (fails the test if it does not exit in time)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"hearth did not exit within {timeout}s of SIGTERM; stderr:\n{self.stderr}")
        if self._reader:
            self._reader.join(5)
        return code

    def kill(self) -> None:
        """kill -9, as a crash or power loss would."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        if self._reader:
            self._reader.join(5)

    def restart(self, hard: bool = True) -> int | None:
        """Stops the daemon (kill -9 when hard, else SIGTERM) and starts it again on the same
        port and data dir. Returns the SIGTERM exit status, or None after a kill."""
        code = None
        if hard:
            self.kill()
        else:
            code = self.stop()
        self.start()
        return code

    # -- what tests use ------------------------------------------------------------------

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    @property
    def credentials_path(self) -> Path:
        return self.data_dir / "credentials"

    @property
    def credentials(self) -> tuple[str, str]:
        path = self.credentials_path
        if not path.is_file():
            pytest.fail(f"the daemon wrote no {path}; stderr:\n{self.stderr}")
        ini = configparser.ConfigParser()
        ini.read(path)
        if not ini.has_section("default"):
            pytest.fail(f"{path} has no [default] section: {path.read_text()!r}")
        section = ini["default"]
        for key in ("aws_access_key_id", "aws_secret_access_key"):
            if not section.get(key, "").strip():
                pytest.fail(f"{path} [default] has no {key}")
        return section["aws_access_key_id"].strip(), section["aws_secret_access_key"].strip()

    def client(self, access_key: str | None = None, secret_key: str | None = None, **config):
        default_ak, default_sk = self.credentials
        session = boto3.session.Session(
            aws_access_key_id=access_key or default_ak,
            aws_secret_access_key=secret_key or default_sk,
            region_name=REGION,
        )
        return session.client(
            "lambda",
            endpoint_url=self.endpoint,
            # One attempt in total: {"max_attempts": 1} would still allow one retry, which hides
            # throttles (429 is retried) and dropped connections.
            config=Config(retries={"total_max_attempts": 1}, read_timeout=60, connect_timeout=10, **config),
        )


@pytest.fixture(scope="session")
def hearth(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("hearth-data")
    log_dir = tmp_path_factory.mktemp("hearth-logs")
    daemon = Hearth(HEARTH_BIN, data_dir, log_dir)
    daemon.start()
    yield daemon
    if daemon.process is not None and daemon.process.poll() is None:
        code = daemon.stop()
        assert code == 0, f"hearth exited with status {code} on SIGTERM; stderr:\n{daemon.stderr}"


@pytest.fixture
def lam(hearth):
    return hearth.client()


@pytest.fixture
def raw_lam(hearth):
    """A client that sends out-of-range values as they are (no client-side validation)."""
    return hearth.client(parameter_validation=False)


@pytest.fixture(scope="session")
def sample_binary() -> bytes:
    path = Path(SAMPLE_FN)
    if not path.is_file():
        pytest.fail(f"HEARTH_SAMPLE_FN {path} does not exist (build it, or set HEARTH_SAMPLE_FN)")
    return path.read_bytes()


@pytest.fixture(scope="session")
def sample_zip(sample_binary) -> bytes:
    return make_zip({"bootstrap": (sample_binary, 0o755)})


class FunctionFactory:
    def __init__(self, hearth, lam, sample_zip, hint):
        self.hearth = hearth
        self.lam = lam
        self.sample_zip = sample_zip
        self.hint = hint
        self.names: list[str] = []

    def __call__(self, handler: str = "echo", *, name: str | None = None, wait: bool = True, **params) -> dict:
        """Creates a function and returns CreateFunction's response."""
        name = name or unique_name(self.hint)
        args = {
            "FunctionName": name,
            "Runtime": RUNTIME,
            "Role": ROLE,
            "Handler": handler,
            "Code": {"ZipFile": self.sample_zip},
        }
        args.update(params)
        self.track(name)
        resp = self.lam.create_function(**args)
        if wait:
            wait_active(self.lam, name)
        return resp

    def track(self, name: str) -> str:
        """Deletes `name` after the test too (for functions made another way)."""
        if name not in self.names:
            self.names.append(name)
        return name

    def cleanup(self) -> None:
        delete_functions(self.hearth, self.names)


@pytest.fixture
def make_function(hearth, lam, sample_zip, request):
    factory = FunctionFactory(hearth, lam, sample_zip, request.node.name)
    yield factory
    factory.cleanup()
