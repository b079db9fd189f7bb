# Entry points. `make run` starts the system, `make test` runs every test against real MariaDB
# and Redis (started or installed by scripts/services.sh when needed).
SHELL := /bin/bash
CARGO ?= cargo
TEST_THREADS ?= 4

.PHONY: help build run test unit lint fmt services clean bench

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

build: ## Build every binary (debug)
	$(CARGO) build --workspace --bins

run: ## Run chat-api on :8080 and gateways on :8081/:8083 against local MariaDB and Redis
	scripts/run-local.sh

services: ## Start (or install) MariaDB and Redis when they are not answering
	scripts/services.sh

test: services build ## All tests: unit, then end-to-end against spawned binaries
	$(CARGO) test --workspace -- --test-threads=$(TEST_THREADS)

unit: ## Unit tests only (no services needed)
	$(CARGO) test --workspace --lib --bins

lint: ## rustfmt check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench: ## Send->delivered latency across two gateways (1,000 sequential messages)
	scripts/bench-latency.sh 1000

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
