# flowlens. `make` lists the targets. `make run` and `make test` install what they need (apt, go install)
# on a fresh Debian machine and skip what is already there.

GO      ?= go
# ip, nft, tc and bpftool live in sbin, which a non-login root shell may not have on its PATH.
export PATH := $(PATH):/usr/local/sbin:/usr/sbin:/sbin
BIN     := bin
# The flow store hands large writes to DuckDB as Arrow record batches, which duckdb-go builds only with
# this tag; without it (a plain `go test`) the store uses its appender path: same results, slower.
export GOFLAGS += -tags=duckdb_arrow
BINARIES := flow-exporter
# Kernel tests need root; CI runs as root. Packages run one at a time: the kernel tests of one package
# attach host-wide programs and time real connections, and two cores are easily oversubscribed.
TESTFLAGS ?= -count=1 -p 1 -timeout 30m

.DEFAULT_GOAL := help
# A failing command inside a pipeline (go test | tee) must fail the target.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## install system packages and tools (clang, bpftool, libbpf-dev, iproute2, nftables, protoc, nats-server); mount tracefs
	@scripts/install-deps.sh
	@scripts/install-nats-server.sh

.PHONY: generate
generate: deps ## rebuild generated code (bpf2go objects and bindings, protobuf) with the pinned tools
	$(GO) generate ./bpf/...
	scripts/gen-proto.sh

.PHONY: build
build: ## build every binary into bin/
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./exporter/cmd/flow-exporter ./collector/cmd/flow-collector ./flowctl/cmd/flowctl ./sonar/cmd/sonar ./injector/cmd/flowlens-injector

.PHONY: run
run: deps build ## build and start the single-machine default: flow-collector and a host-scope flow-exporter
	@scripts/run.sh

.PHONY: envtest
envtest: ## build and cache kube-apiserver and etcd for the Kubernetes tests (envtest); skipped when cached
	@scripts/install-envtest.sh

.PHONY: helm
helm: ## install helm v3.22.0 into $(go env GOPATH)/bin (go install; skipped when present)
	@scripts/install-helm.sh

.PHONY: manifests
manifests: helm ## render deployments/helm/flowlens into deployments/manifests/flowlens.yaml
	@deployments/manifests/generate.sh

.PHONY: test
test: deps envtest helm ## install what the tests need and run them all (kernel tests need root)
	@scripts/install-chromium.sh
	$(GO) vet ./...
	# The console's browser test keeps its screenshots in artifacts/console/.
	FLOWLENS_ARTIFACTS=$(CURDIR)/artifacts $(GO) test $(TESTFLAGS) ./...
	GOFLAGS= $(GO) test $(TESTFLAGS) ./collector/store # the store's path without the Arrow tag

.PHONY: bench
bench: deps build envtest ## run the benchmarks one package at a time and print their figures
	@scripts/install-chromium.sh
	$(GO) test -p 1 -run '^$$' -bench . -count=1 -timeout 30m ./... | tee bench.out | grep -E '^(figure|Benchmark|ok|FAIL|---)'
	@echo "full output in bench.out"

.PHONY: bench-attribution
bench-attribution: ## attribution accuracy under IP churn: heartbeats vs event-only and latest-owner on one simulated trace (~5 s)
	$(GO) run ./sonar/cmd/attribution-bench | tee bench-attribution.out

.PHONY: lint
lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

.PHONY: clean
clean: ## remove built binaries
	rm -rf $(BIN)
