# shardstream — the one entry point. CI runs `make test` (through .ci/run).
#
#   make demo         build, make a sample dataset, serve it, train 2 ranks × 2 epochs
#   make test         every test: lint (gofmt, vet, staticcheck, buf, ruff, mypy), proto drift, go test -race, pytest, chart
#   make bench-read   read path vs plain ranged GETs on a real MinIO
#   make bench-epoch  store bytes fetched per epoch through a loader, on MinIO
#   make bench-plan   planner benchmarks (10M chunks)
#   make bench-client the Python client against the Go client on one stream
#   make bench-fanin  one rank through 1, 2, 4 rate-limited loaders
#   make bench        shardstream against the S3 connector, Streaming, LitData, WebDataset
#   make proto        regenerate Go and Python code from proto/
#   make wheel        the Python client's wheel and sdist, into dist/
#
# Every tool is pinned and installed into .tools/bin (Go) or .venv (Python)
# by the targets below; the Go build cache and pip cache make re-runs fast.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

ROOT      := $(CURDIR)
TOOLS     := $(ROOT)/.tools/bin
VENV      := $(ROOT)/.venv
PY        := $(VENV)/bin/python
BIN       := $(ROOT)/bin/shardstream
BENCH_BIN := $(ROOT)/bin/shardstream-bench
BENCH_VENV := $(ROOT)/.bench-venv
GO        ?= go

# Pinned tool versions.
MINIO_VERSION              := v0.0.0-20260212201848-7aac2a2c5b7c
BUF_VERSION                := v1.75.0
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
STATICCHECK_VERSION        := v0.8.2
HELM_VERSION               := v4.3.2
# The Kubernetes version the chart's manifests are validated against
# (schemas from kubernetes-validate in .venv, offline).
KUBE_VERSION               := 1.33
PYTHON                     ?= python3

export PATH := $(TOOLS):$(PATH)
export SHARDSTREAM_MINIO := $(TOOLS)/minio
export SHARDSTREAM_BIN := $(BIN)

GO_SOURCES := $(shell find . -name '*.go' -not -path './.venv/*' -not -path './.tools/*' 2>/dev/null) go.mod go.sum

.PHONY: help
help:
	@sed -n '2,13p' Makefile | sed 's/^# \{0,1\}//'

# ---- tools -----------------------------------------------------------------

$(TOOLS)/minio:
	@echo "installing minio $(MINIO_VERSION) (a few minutes the first time)"
	GOBIN=$(TOOLS) $(GO) install github.com/minio/minio@$(MINIO_VERSION)

$(TOOLS)/buf:
	GOBIN=$(TOOLS) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)

$(TOOLS)/protoc-gen-go:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)

$(TOOLS)/protoc-gen-go-grpc:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

$(TOOLS)/staticcheck:
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

# helm links the Kubernetes client libraries: its first build took 14.5
# minutes on 2 cores shared with other builds (29 s once in the build cache).
$(TOOLS)/helm:
	@echo "installing helm $(HELM_VERSION) (up to a quarter of an hour the first time)"
	GOBIN=$(TOOLS) $(GO) install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)

.PHONY: tools
tools: $(TOOLS)/minio $(TOOLS)/buf $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc $(TOOLS)/staticcheck $(TOOLS)/helm

# The Python environment: pinned requirements, then the client in editable
# mode. The stamp is rebuilt when the requirements change.
$(VENV)/.stamp: clients/python/requirements-dev.txt clients/python/pyproject.toml
	@echo "setting up $(VENV) (torch is large: a few minutes the first time)"
	@start=$$(date +%s); \
	  $(PYTHON) -m venv $(VENV); \
	  $(VENV)/bin/pip install -q --upgrade pip==25.3; \
	  $(VENV)/bin/pip install -q -r clients/python/requirements-dev.txt; \
	  $(VENV)/bin/pip install -q --no-deps -e clients/python; \
	  echo "python environment ready in $$(( $$(date +%s) - start ))s"
	@touch $@

.PHONY: venv
venv: $(VENV)/.stamp

# ---- build -----------------------------------------------------------------

$(BIN): $(GO_SOURCES)
	@mkdir -p $(dir $@)
	$(GO) build -o $@ ./cmd/shardstream

.PHONY: build
build: $(BIN)

# The benchmarks' binary: apart from $(BIN) because it links test helpers.
$(BENCH_BIN): $(GO_SOURCES)
	@mkdir -p $(dir $@)
	$(GO) build -o $@ ./cmd/shardstream-bench

# The Python client's sdist and the wheel built from it, into dist/. With
# the venv's pinned setuptools (--no-isolation: nothing downloaded);
# tests/test_packaging.py builds them the same way and installs the wheel.
.PHONY: wheel
wheel: venv
	rm -rf dist/shardstream-*
	$(PY) -m build --no-isolation --outdir $(ROOT)/dist clients/python
	@ls -l dist/shardstream-*

# The client's tests at the lower bounds of pyproject.toml that install
# here (protobuf, numpy; docs/python-client.md). Downloads them from PyPI.
.PHONY: py-test-min-deps
py-test-min-deps: tools venv build
	./scripts/py-min-deps.sh

# ---- proto -----------------------------------------------------------------

PROTO_FILES := $(shell find proto -name '*.proto')

.PHONY: proto
proto: $(TOOLS)/buf $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc venv
	buf generate
	$(PY) -m grpc_tools.protoc -I proto --python_out=clients/python --pyi_out=clients/python \
	  --grpc_python_out=clients/python $(PROTO_FILES)

# Generated code must match the proto: regenerate into a scratch copy and
# compare with the checked-in files.
.PHONY: check-proto
check-proto: $(TOOLS)/buf $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc venv
	buf lint
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	  buf generate -o $$tmp; \
	  mkdir -p $$tmp/py; \
	  $(PY) -m grpc_tools.protoc -I proto --python_out=$$tmp/py --pyi_out=$$tmp/py \
	    --grpc_python_out=$$tmp/py $(PROTO_FILES); \
	  status=0; \
	  for f in $$(cd $$tmp && find proto -name '*.go'); do \
	    diff -u $$f $$tmp/$$f || status=1; done; \
	  for f in $$(cd $$tmp/py && find . -name '*_pb2*'); do \
	    diff -u clients/python/$$f $$tmp/py/$$f || status=1; done; \
	  if [ $$status -ne 0 ]; then echo "generated code drifted from proto/: run 'make proto'"; exit 1; fi; \
	  echo "generated code matches proto/"

# ---- lint ------------------------------------------------------------------

# The API may grow but not break: proto/baseline.binpb is the image of the
# last released API (refresh it with `make proto-baseline` at a release).
.PHONY: lint
lint: venv $(TOOLS)/staticcheck $(TOOLS)/buf
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	staticcheck ./...
	buf format --diff --exit-code
	buf breaking --against proto/baseline.binpb
	cd clients/python && $(VENV)/bin/ruff check . ../../examples ../../scripts && $(VENV)/bin/ruff format --check . ../../examples ../../scripts
	cd bench && $(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
	cd clients/python && $(VENV)/bin/mypy

# lint also checks that the production binary links no test code: the
# testing package (it registers -test.* flags and is dead weight) or a test
# helper such as internal/miniotest. Benchmarks that need those live in
# cmd/shardstream-bench.
lint: check-deps

.PHONY: check-deps
check-deps:
	@deps=$$($(GO) list -deps ./cmd/shardstream); \
	  bad=$$(grep -E '^testing(/|$$)|/internal/[a-z]*test$$' <<<"$$deps" || true); \
	  if [ -n "$$bad" ]; then echo "cmd/shardstream links test code:"; echo "$$bad"; exit 1; fi; \
	  echo "cmd/shardstream links no test code"

# ---- tests -----------------------------------------------------------------

.PHONY: test
test: tools venv build check-proto lint go-test py-test chart-test
	@echo "make test: all suites passed"

.PHONY: go-test
go-test: tools build
	$(GO) test -race -timeout 20m ./...

# Each test has a 5-minute limit (pyproject.toml); the suite as a whole 30
# minutes, so a hang fails here rather than running out CI's clock.
.PHONY: py-test
py-test: tools venv build
	cd clients/python && timeout -k 30 30m $(VENV)/bin/pytest -q --durations=8 tests
	cd bench && $(VENV)/bin/pytest -q -p no:cacheprovider peers/test_report.py

# The Helm chart: helm lint --strict and helm template of several value
# combinations, every object validated strictly (unknown fields fail)
# against the Kubernetes $(KUBE_VERSION) schemas, offline; render-time
# refusals; the binary's subcommands and flags the containers use; and
# broken manifests the validator must refuse. Seconds.
.PHONY: chart-test
chart-test: $(TOOLS)/helm venv $(BIN)
	HELM=$(TOOLS)/helm PY=$(PY) BIN=$(BIN) KUBE_VERSION=$(KUBE_VERSION) scripts/chart-test.sh

# Short fuzz runs of every fuzz target (the committed corpora run in go-test).
FUZZ_TIME ?= 15s
.PHONY: fuzz
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZ_TIME) $$pkg; \
	  done; done

# ---- demo and benchmarks ---------------------------------------------------

.PHONY: demo
demo: venv build
	PYTHON=$(PY) ./scripts/demo.sh

.PHONY: bench-read
bench-read: tools $(BENCH_BIN)
	$(BENCH_BIN) read --minio $(TOOLS)/minio

# One epoch of 1 GiB datasets of 64 and 512 MiB shards through a real
# loader at memory caches off, 256 MiB and 1 GiB (docs/benchmarks.md); about
# a minute on 2 cores. Only MinIO is needed, not every tool.
.PHONY: bench-epoch
bench-epoch: $(TOOLS)/minio $(BENCH_BIN)
	$(BENCH_BIN) epoch --minio $(TOOLS)/minio

# One local loader, one stream read by the Go client and by the Python
# client (columnar tensors with 0 and 2 DataLoader workers, sample dicts),
# small (0.5 KB) and token (8 KiB) samples (docs/benchmarks.md). The
# generated datasets are kept in .cache/bench-client.
.PHONY: bench-client
bench-client: venv $(BIN) $(BENCH_BIN)
	$(PY) clients/python/bench/bench_client.py --bin $(BIN) --bench-bin $(BENCH_BIN)

# One rank reading a 64 MiB in-memory dataset through 1, 2 and 4 in-process
# loaders, each limited to 20 MB/s (service.Config.SendBytesPerSecond);
# docs/benchmarks.md, "Fan-in". About 20 s; needs no tools.
.PHONY: bench-fanin
bench-fanin: $(BENCH_BIN)
	$(BENCH_BIN) fanin

# The peer benchmark (issue 14, docs/benchmarks.md "Against the peers"):
# MinIO on loopback, each workload in each system's format, every system
# pinned to one trainer core and unpinned, 3 repetitions; about 25 minutes
# on the 2 shared cores of the development machine (BENCH_ARGS='--reps 1
# --setups pinned' for a quick look). Its own environment, .bench-venv, holds the pinned peers
# (bench/peers/requirements.txt) and the client; the samples and formats
# are kept in .cache/bench-peers. Writes docs/benchmarks.png.
$(BENCH_VENV)/.stamp: bench/peers/requirements.txt clients/python/pyproject.toml
	@echo "setting up $(BENCH_VENV) (torch and the peers: ~7 minutes the first time)"
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q --upgrade pip==25.3
	$(BENCH_VENV)/bin/pip install -q -r bench/peers/requirements.txt
	$(BENCH_VENV)/bin/pip install -q --no-deps -e clients/python
	@touch $@

.PHONY: bench
bench: $(TOOLS)/minio $(BIN) $(BENCH_VENV)/.stamp
	$(BENCH_VENV)/bin/python -m bench.peers.driver --bin $(BIN) --minio $(TOOLS)/minio $(BENCH_ARGS)

# mypy --strict of the benchmark against the peers' packages (needs
# .bench-venv; `make lint` runs ruff on bench/ without it).
.PHONY: bench-lint
bench-lint: venv $(BENCH_VENV)/.stamp
	cd bench && $(VENV)/bin/mypy --python-executable $(BENCH_VENV)/bin/python peers

.PHONY: bench-plan
bench-plan:
	$(GO) test -run '^$$' -bench . -benchmem ./sampler/ ./shuffle/

.PHONY: proto-baseline
proto-baseline: $(TOOLS)/buf
	buf build -o proto/baseline.binpb

.PHONY: clean
clean:
	rm -rf bin
