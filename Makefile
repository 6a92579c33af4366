# Faultline: `make demo` and `make test` are the two entry points on a fresh Debian 12 machine
# (run as root; a Rust toolchain is needed, see README.md).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
# rustup installs into ~/.cargo/bin, which a fresh shell may not have on PATH yet.
export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo

.PHONY: all build demo bench bench-agent test lint fmt deps deps-demo check-toolchain clean help

all: build

help:
	@echo "make demo   (root) a coordinator, 3 agents in network namespaces, a service, Prometheus,"
	@echo "            then an experiment whose error-rate guard aborts it; prints the report"
	@echo "make bench  coordinator benchmark with 100, 1,000 and 10,000 simulated agents (release build; JSON in target/bench/)"
	@echo "make bench-agent (root) the agent's apply/revert latency and data-path cost beside tc and"
	@echo "            iptables (release build; JSON in target/bench/agent.json)"
	@echo "make test   installs what the tests need (apt), then runs every test"
	@echo "make build  builds every binary (debug)"
	@echo "make lint   cargo fmt --check and clippy -D warnings"
	@echo "make deps   installs the Debian packages the tests need (scripts/install-deps.sh)"

check-toolchain:
	@command -v $(CARGO) >/dev/null 2>&1 || { \
	  echo "error: cargo not found. Install Rust (1.85 or newer), e.g.:" >&2; \
	  echo "  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y" >&2; \
	  exit 1; }

deps:
	scripts/install-deps.sh test

deps-demo:
	scripts/install-deps.sh demo

build: check-toolchain
	$(CARGO) build --workspace --bins

demo: check-toolchain deps-demo
	$(CARGO) build --workspace --bins
	scripts/demo.sh

# Fleet sizes and extra flags for faultline-sim bench, e.g.
# make bench BENCH_SIZES=100 BENCH_ARGS="--runs 5".
BENCH_SIZES ?= 100,1000,10000
BENCH_ARGS ?=

bench: check-toolchain
	$(CARGO) build --release -p faultline-coordinator -p faultline-tests --bins
	mkdir -p target/bench
	target/release/faultline-sim bench --coordinator-bin target/release/faultline-coordinator \
		--agents $(BENCH_SIZES) --json target/bench/coordinator.json $(BENCH_ARGS)

# Extra flags for faultline-agent-bench, e.g. make bench-agent BENCH_AGENT_ARGS="--runs 200".
BENCH_AGENT_ARGS ?=

bench-agent: check-toolchain
	scripts/install-deps.sh bench
	$(CARGO) build --release -p faultline-agent --bin faultline-agent --bin faultline-agent-bench
	mkdir -p target/bench
	target/release/faultline-agent-bench --agent-bin target/release/faultline-agent \
		--json target/bench/agent.json $(BENCH_AGENT_ARGS)

test: check-toolchain deps
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --no-fail-fast

lint: check-toolchain
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
