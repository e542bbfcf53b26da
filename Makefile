# weir: run `make help` for the targets.
SHELL := /bin/bash
CARGO ?= cargo
HTTP_ADDR ?= 127.0.0.1:8080
ADMIN_ADDR ?= 127.0.0.1:10254
UPSTREAM_ADDR ?= 127.0.0.1:9000

.DEFAULT_GOAL := help
.PHONY: help build run test test-deps lint fmt golden manifests bench bench-controller proxy-bench policy-bench tls-bench cpu-split

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## Build the weir binary (release)
	$(CARGO) build --locked --release -p weir

run: ## Serve deploy/examples/ on $(HTTP_ADDR) with an example echo upstream on $(UPSTREAM_ADDR)
	$(CARGO) build --locked -p weir -p weir-tests --bins
	@set -m; ./target/debug/weir-example-upstream $(UPSTREAM_ADDR) & up=$$!; \
	trap 'kill $$up 2>/dev/null' EXIT; \
	echo; echo "  weir is starting. In another terminal try:"; \
	echo "    curl -s -H 'Host: shop.example.com' http://$(HTTP_ADDR)/api/users/42"; \
	echo "    curl -s -H 'Host: partners.example.com' -H 'X-API-Key: demo-partner-key-change-me' http://$(HTTP_ADDR)/orders"; \
	echo "    curl -s -H 'Host: orders.example.com' -H \"Authorization: Bearer $$(sed -n 's/^#   TOKEN=//p' deploy/examples/orders.yaml)\" http://$(HTTP_ADDR)/orders"; \
	echo "    curl -s http://$(ADMIN_ADDR)/metrics | grep weir_requests_total"; \
	echo "  Edit deploy/examples/*.yaml and weir reloads. Ctrl-C stops both."; echo; \
	./target/debug/weir serve --manifests deploy/examples --http-addr $(HTTP_ADDR) --admin-addr $(ADMIN_ADDR) --log-format text

# One cargo invocation: it builds the weir binary and the test helpers with the
# same features as the tests (a separate `cargo build` first compiled much of
# the graph twice), and runs nothing until everything is built.
test: test-deps ## Run every test: unit, golden and end-to-end against the real binary; check the Dockerfile's build
	$(CARGO) test --locked --workspace
	bash tests/scripts/dockerfile-check.sh

# helm, kubernetes-validate, yamllint and k8s-crd-check for the chart tests
# (tests/tests/chart.rs looks here first), from the shared installer.
K8S_TOOLS_PREFIX ?= $(CURDIR)/target/k8s-tools
# kubectl comes from there too when the machine has none.
export PATH := $(PATH):$(K8S_TOOLS_PREFIX)/bin
K8S_TOOLS_INSTALLER ?= $(firstword $(wildcard $(CURDIR)/../shared/tools/install-k8s-tools $(CURDIR)/../../shared/tools/install-k8s-tools))

test-deps: ## Install what the tests run for real when missing: redis-server, helm, kubernetes-validate
	@[ -n "$(K8S_TOOLS_INSTALLER)" ] || { echo "install-k8s-tools not found in ../shared/tools; set K8S_TOOLS_INSTALLER to its path"; exit 1; }
	@[ -x "$(K8S_TOOLS_PREFIX)/bin/helm" ] && [ -x "$(K8S_TOOLS_PREFIX)/bin/kubernetes-validate" ] || { \
	  python3 -m pip --version >/dev/null 2>&1 && python3 -c 'import ensurepip, venv' 2>/dev/null || { \
	    echo "Installing python3-pip and python3-venv (install-k8s-tools needs them)"; \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); export DEBIAN_FRONTEND=noninteractive; \
	    { $$SUDO apt-get update -q && $$SUDO apt-get install -y -q --no-install-recommends python3-pip python3-venv; } >/dev/null; }; \
	  "$(K8S_TOOLS_INSTALLER)" --no-helm4 "$(K8S_TOOLS_PREFIX)"; }
	@command -v redis-server >/dev/null || { \
	  echo "Installing redis-server (the rate-limit tests start real Redis servers)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get install -y -q --no-install-recommends redis-server >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q --no-install-recommends redis-server >/dev/null; }; \
	  command -v redis-server >/dev/null || { echo "redis-server could not be installed; install it and rerun"; exit 1; }; }

lint: ## Check formatting and run clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

manifests: test-deps ## Regenerate deploy/weir.yaml from the Helm chart (and the CRDs from the Rust types)
	$(CARGO) run --locked -q -p weir-crd --bin crdgen
	UPDATE_MANIFESTS=1 $(CARGO) test --locked -p weir-tests --test chart rendered_manifest_is_fresh

golden: ## Regenerate the compiler's golden outputs (review the diff!)
	UPDATE_GOLDEN=1 $(CARGO) test --locked -p weir-compiler --test golden

bench: ## Criterion benchmarks: route matching, HTTP/1 codec, snapshot compile, JWT and API-key checks, local rate-limit decisions
	$(CARGO) bench --locked -p weir-proxy -p weir-compiler -p weir-auth -p weir-ratelimit

bench-controller: ## weir run with 5,000 Ingresses in the test API server: ready time, RSS, one-more-Ingress latency
	$(CARGO) build --locked --release -p weir -p weir-tests --bins
	./target/release/weir-controller-scale 5000

proxy-bench: build ## Whole-proxy benchmark beside nginx, haproxy and caddy (../shared/bench/proxy-bench)
	bash bench/proxy-bench.sh

MODE ?= ratelimit
policy-bench: ## What a GatewayPolicy costs the whole proxy, same-run ratio (MODE=jwt|ratelimit|local)
	bash bench/policy-bench.sh $(MODE)

tls-bench: ## HTTPS throughput beside nginx with the same certificate, same-run ratio (CLOSE=close: a handshake per request)
	bash bench/tls-bench.sh 5 8 $(CLOSE)

cpu-split: ## User and system CPU per proxied request and preemptions, weir beside nginx (B=other/weir for an A/B of two builds)
	bash bench/cpu-split.sh 3 5 $(B)
