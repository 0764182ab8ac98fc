# hearth's two entry points (see README.md, "Quick start"):
#   make bench   build everything and run hearth-bench on embedded defaults
#   make test    install what the tests need, then run every check and test
# Both run as root on a fresh Debian machine (environments need namespaces and cgroups).

CARGO ?= cargo
TARGET_TRIPLE := x86_64-unknown-linux-gnu
STATIC_SAMPLE := target/$(TARGET_TRIPLE)/release/hearth-sample-fn

.PHONY: bench test deps build build-release lint unit loom

# Debian packages the build and the tests need.
deps:
	@if ! dpkg -s libseccomp-dev >/dev/null 2>&1; then \
		echo "installing libseccomp-dev"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libseccomp-dev pkg-config >/dev/null; \
	fi

# Release build, plus the sample function linked statically (crt-static): native functions
# start faster without a dynamic loader, and the bench measures that build.
build-release: deps
	$(CARGO) build --release --workspace --locked
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release --locked \
		-p hearth-tests --bin hearth-sample-fn --target $(TARGET_TRIPLE)

bench: build-release
	./target/release/hearth-bench $(ARGS)

build: deps
	$(CARGO) build --workspace --all-targets --locked

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

unit: build
	$(CARGO) test --workspace --locked

# Model checks of the ring/doorbell protocol and of admission (loom), in their own target dir.
loom: deps
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom $(CARGO) test --release --locked -p hearth-ipc --test loom
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom $(CARGO) test --release --locked -p hearth-scheduler --test loom

test: lint unit loom
	@echo "hearth: all checks and tests passed"
