# hearth's entry points (see README.md, "Quick start"):
#   make serve   build and run the daemon on its defaults (127.0.0.1:9001, ~/.local/share/hearth)
#   make test    install what the tests need, then run every check and test
#   make bench   build everything and run hearth-bench (installs nginx for its peer)
# All run as root on a fresh Debian machine (environments need namespaces and cgroups).

CARGO ?= cargo
TARGET_TRIPLE := x86_64-unknown-linux-gnu
STATIC_SAMPLE := target/$(TARGET_TRIPLE)/release/hearth-sample-fn

.PHONY: serve bench test deps bench-deps build build-release lint unit api loom

VENV := target/venv

# Debian packages the build and the tests need: libseccomp for the sandbox, python3-venv for
# the boto3 / aws CLI suite; python3-pip, curl and nodejs for the runtime tests (awslambdaric
# installed from PyPI, the AWS tutorial's curl bootstrap, the Node.js runtime).
DEBS := libseccomp-dev pkg-config python3-venv python3-pip curl nodejs
deps:
	@if ! dpkg -s $(DEBS) >/dev/null 2>&1; then \
		echo "installing $(DEBS)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBS) >/dev/null; \
	fi

# The bench's peers: nginx (HTTP), bubblewrap, crun and runc (cold starts). Debian starts
# services on install; a policy-rc.d that refuses keeps nginx from starting one on port 80 (the
# bench runs its own on loopback).
BENCH_DEBS := nginx-light bubblewrap crun runc
bench-deps: deps
	@if ! dpkg -s $(BENCH_DEBS) >/dev/null 2>&1; then \
		echo "installing $(BENCH_DEBS) (nginx not started as a service)"; \
		created=; if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; created=1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BENCH_DEBS) >/dev/null; status=$$?; \
		if [ -n "$$created" ]; then rm -f /usr/sbin/policy-rc.d; fi; exit $$status; \
	fi

# Release build, plus the sample function linked statically (crt-static): native functions
# start faster without a dynamic loader, and the bench measures that build.
build-release: deps
	$(CARGO) build --release --workspace --locked
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release --locked \
		-p hearth-tests --bin hearth-sample-fn --target $(TARGET_TRIPLE)

serve: build-release
	./target/release/hearth serve $(ARGS)

bench: build-release bench-deps
	./target/release/hearth-bench $(ARGS)

build: deps
	$(CARGO) build --workspace --all-targets --locked

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

unit: build
	$(CARGO) test --workspace --locked

# The daemon driven by boto3 and the aws CLI (tests/api), in a virtualenv of pinned versions.
api: build
	@test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r tests/api/requirements.txt
	HEARTH_BIN=target/debug/hearth HEARTH_SAMPLE_FN=target/debug/hearth-sample-fn \
		$(VENV)/bin/python -m pytest -q -p no:cacheprovider tests/api runtimes/python/test_bootstraps.py

# Model checks of the ring/doorbell protocol and of admission (loom), in their own target dir.
loom: deps
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom $(CARGO) test --release --locked -p hearth-ipc --test loom
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom $(CARGO) test --release --locked -p hearth-scheduler --test loom

test: lint unit api loom
	@echo "hearth: all checks and tests passed"
