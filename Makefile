# Entry points. `make run` starts the system, `make test` runs every test against real MariaDB
# and Redis (started or installed by scripts/services.sh when needed).
SHELL := /bin/bash
CARGO ?= cargo
TEST_THREADS ?= 4

.PHONY: help build run run-scaled run-cluster test-embedded test test-cluster unit lint fmt services cluster clean bench \
	deploy-refs compose-validate k8s-validate loadtest loadtest-smoke loadtest-smoke-load chaos test-browser openapi-check \
	fuzz-short fuzz-long capacity capacity-k8s

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

build: ## Build every binary (debug)
	$(CARGO) build --workspace --bins

run: ## Run the system: one process on SQLite + in-memory bus (:8080 web/api, :8081 ws); with DATABASE_URL/REDIS_URL set, the scaled binaries
	scripts/run-local.sh

run-scaled: ## Run chat-api on :8080 and gateways on :8081/:8083 against local MariaDB and Redis
	DATABASE_URL=$${DATABASE_URL:-mysql://root@127.0.0.1:3306/chat} REDIS_URL=$${REDIS_URL:-redis://127.0.0.1:6379} \
	  scripts/run-local.sh

run-cluster: cluster ## Like run-scaled, with REDIS_MODE=cluster on the local 6-node cluster
	DATABASE_URL=$${DATABASE_URL:-mysql://root@127.0.0.1:3306/chat} REDIS_MODE=cluster REDIS_URL=redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002 \
	  CHAT_REDIS_PREFIX=chat scripts/run-local.sh

services: ## Start (or install) MariaDB and Redis when they are not answering
	scripts/services.sh

cluster: ## Start the local Redis Cluster (127.0.0.1:7000-7005)
	deploy/local/redis-cluster.sh start

test: services cluster build ## Unit + e2e (standalone, embedded, cluster), browser (both topologies), OpenAPI, k6 and chat-load smokes
	$(CARGO) test --workspace -- --test-threads=$(TEST_THREADS)
	$(MAKE) test-embedded test-browser openapi-check
	$(MAKE) test-cluster
	LT_PROFILE=debug LT_NO_BUILD=1 LT_RESULTS_ROOT=.tmp/loadtest-results loadtest/smoke.sh
	LT_PROFILE=debug LT_NO_BUILD=1 LT_RESULTS_ROOT=.tmp/loadtest-results loadtest/smoke-load.sh

chaos: services build ## Chaos suite, full size: 240 clients, >= 10,000 messages, five faults (kill9_api among them), then the 15,000-client storm (docs/reliability.md)
	scripts/chaos.sh

# The second and third passes select test targets with --workspace rather than -p chat-testkit:
# the same feature set as the first pass, so nothing is compiled again.
TESTKIT_SUITES := $(patsubst crates/chat-testkit/tests/%.rs,--test %,$(wildcard crates/chat-testkit/tests/*.rs))

# The whole end-to-end suite again with every stack on the Redis Cluster. Skipped there:
# redis_outage_* cuts a TCP proxy in front of one Redis, which cluster clients (they connect to
# the nodes' own addresses) never use; cluster outages are covered by cluster_failover instead.
# The two cluster tests already ran in the first pass, and chaos_suite runs its own private Redis.
test-cluster: cluster build ## End-to-end suite with REDIS_MODE=cluster
	CHAT_TEST_REDIS_MODE=cluster $(CARGO) test --workspace $(TESTKIT_SUITES) -- --test-threads=$(TEST_THREADS) \
	  --skip redis_outage_gives_503_then_recovers --skip a_master_failover --skip users_on_every_master \
	  --skip chaos_suite --skip one_process_fans_out_across_its_gateways

# The API/WS suite again with every stack as one chat-embedded process (SQLite + in-memory bus).
# Skipped there: tests that stop one gateway of several (the gateways share one process), and the
# one that cuts Redis under a gateway. Not listed: suites built on several processes or on MySQL/
# Redis themselves (chaos, cluster*, drain, resilience, retry_across_gateways, worker_push).
EMBEDDED_SUITE := api_auth api_chats api_messages api_users_contacts api_web attachments concurrency \
	e2e_fanout embedded group_membership ordering presence receipts resume resume_log security_auth security_limits security_ws ws_gateway ws_limits
test-embedded: build ## API/WS end-to-end suite against chat-embedded (SQLite + in-memory bus)
	CHAT_TEST_STACK=embedded $(CARGO) test --workspace $(addprefix --test ,$(EMBEDDED_SUITE)) -- \
	  --test-threads=$(TEST_THREADS) --skip graceful_gateway_shutdown_moves_presence_correctly \
	  --skip killed_gateway_users_go_offline --skip a_logout_missed_while_the_subscription_was_down \
	  --skip gateway_http_routes_and_sigterm --skip after_its_subscription_is_back_a_gateway_trusts_the_log \
	  --skip while_a_write_is_late_to_publish_syncs_stay_on_the_database

test-browser: services ## Two users chat through the web client in headless chromium, scaled and embedded (screenshots: .tmp/browser-artifacts*/)
	tests/browser/run.sh
	STACK_MODE=embedded tests/browser/run.sh

openapi-check: services ## docs/openapi.yaml vs a running chat-api with schemathesis (no 5xx, responses match)
	scripts/openapi-check.sh

unit: ## Unit tests only (no services needed: the `live_*` tests, which talk to Redis, run in `make test`)
	$(CARGO) test --workspace --lib --bins -- --skip ::live_

lint: ## rustfmt check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fuzz-short: ## Fuzz the frame, envelope and cursor decoders briefly (CI; FUZZ_SECS=20 per target)
	scripts/fuzz.sh

fuzz-long: ## The longer fuzz run recorded in docs/security.md (FUZZ_SECS=180 per target)
	FUZZ_SECS=$${FUZZ_SECS:-180} scripts/fuzz.sh

bench: ## Send->delivered latency across two gateways (1,000 sequential messages)
	scripts/bench-latency.sh 1000

fmt:
	$(CARGO) fmt --all

VUS ?= 15000
SCRIPT ?= connect.js
DRIVER ?= k6
GATEWAYS ?= 2

loadtest: ## A load test on a fresh release stack: make loadtest VUS=15000 [SCRIPT=chat|churn|connect|storm] [DRIVER=k6|chat-load] [GATEWAYS=N]
	DRIVER=$(DRIVER) GATEWAYS=$(GATEWAYS) loadtest/run.sh $(SCRIPT) $(VUS)

loadtest-smoke: ## k6 smoke: chat.js, 200 VUs over two gateways; prints "k6-smoke: N passed, M failed"
	loadtest/smoke.sh

loadtest-smoke-load: ## chat-load smoke: churn, chat, connect, storm ~10 s each; prints "chat-load-smoke: N passed, M failed"
	loadtest/smoke-load.sh

deploy-refs: ## Binaries, ports, env vars, paths and metrics named in deploy/ and k8s/ exist in the code
	python3 deploy/check-references.py

compose-validate: deploy-refs ## Compose file (both profiles), HAProxy, Prometheus rules, Dockerfile lint
	bash deploy/validate-compose.sh

k8s-validate: deploy-refs ## kubernetes-validate --strict, CRD schemas, kustomization completeness
	bash k8s/validate.sh

# The capacity model (docs/capacity.md): make capacity USERS=1000000 ONLINE=0.3 MSGS_PER_USER_HOUR=20
# GROUP_MIX=0.1:20 [CONCURRENT=N instead of USERS] [ROUTING=per-user] [JSON=1]; any other flag of
# `chat-capacity plan --help` through CAPACITY_ARGS="...".
capacity: ## Capacity plan from measured unit costs: make capacity USERS=1000000 ONLINE=0.3 MSGS_PER_USER_HOUR=20 GROUP_MIX=0.1:20
	$(CARGO) run -q -p chat-capacity -- $(if $(JSON),--json) plan \
	  $(if $(USERS),--users $(USERS)) $(if $(CONCURRENT),--concurrent $(CONCURRENT)) \
	  $(if $(ONLINE),--online $(ONLINE)) $(if $(MSGS_PER_USER_HOUR),--msgs-per-user-hour $(MSGS_PER_USER_HOUR)) \
	  $(if $(GROUP_MIX),--group-mix $(GROUP_MIX)) $(if $(ROUTING),--routing $(ROUTING)) $(CAPACITY_ARGS)

capacity-k8s: ## Regenerate k8s/overlays/prod/capacity.yaml from the model (after docs/capacity-units.toml changes)
	$(CARGO) run -q -p chat-capacity -- k8s --concurrent 1000000 --group-mix 0.2:20 > k8s/overlays/prod/capacity.yaml

clean:
	$(CARGO) clean
