# gerritflow: every target loops over the workspace's modules (`go test ./...`
# does not work at a go.work root).
GO      ?= go
MODULES := $(shell $(GO) list -m -f '{{.Dir}}' 2>/dev/null)
PKGS    := $(addsuffix /...,$(MODULES))
EMULATOR := deploy/local/node_modules/kinesis-local/package.json

.PHONY: all build test vet fmt dev npm deps fuzz clean help bench bench-trigger

all: build

help:
	@echo "make dev    - run the whole pipeline locally and show changes getting their votes"
	@echo "make test   - every test of every module (unit, stage, services, end to end)"
	@echo "make build  - build the services and tools into bin/"
	@echo "make fuzz   - fuzz the Gerrit event parser for FUZZTIME (default 60s)"
	@echo "make bench  - every benchmark (bench-trigger, ...); figures in docs/BENCHMARKS.md"

# The Kinesis emulator (npm kinesis-local), installed from the lock file.
npm: $(EMULATOR)
$(EMULATOR): deploy/local/package.json deploy/local/package-lock.json
	cd deploy/local && npm ci --no-audit --no-fund
	@touch $@

# Go modules of every workspace module (the go command would fetch them anyway;
# doing it first makes a network problem show as such).
deps:
	$(GO) mod download

build: deps
	$(GO) build -o bin/ ./services/bridge ./services/parser ./services/trigger ./services/monitor ./services/voter ./services/status ./cmd/gfctl ./cmd/gfdev

vet:
	$(GO) vet $(PKGS)

fmt:
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

test: deps npm fmt vet
	$(GO) test -race -count=1 -timeout 14m $(PKGS)
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 10s ./pkg/event

FUZZTIME ?= 60s
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME) ./pkg/event

# Benchmarks: each prints its figures last; docs/BENCHMARKS.md records them.
BENCH_OUT := $(shell mktemp -u /tmp/gerritflow-bench.XXXXXX)
bench: bench-trigger bench-bridge bench-monitor

bench-trigger: deps
	$(GO) test -run '^$$' -bench BenchmarkTriggerScaling -benchtime 1x -count 1 ./services/trigger/internal/trigger/ | tee $(BENCH_OUT)
	@grep '^one=' $(BENCH_OUT) | tail -1; rm -f $(BENCH_OUT)

# Kinesis consumption: the emulator's raw GetRecords rate and the bridge's
# rate into JetStream over the same records (docs/BENCHMARKS.md).
.PHONY: bench-bridge bench-monitor
bench-bridge: deps npm
	$(GO) test -run '^$$' -bench BenchmarkBridgeThroughput -benchtime 1x -count 1 -timeout 30m ./services/bridge/internal/bridge/ | tee $(BENCH_OUT)
	@grep -q '^ok' $(BENCH_OUT) || { rm -f $(BENCH_OUT); exit 1; }
	@grep '^bridge_rps=' $(BENCH_OUT) | tail -1; rm -f $(BENCH_OUT)

# Thousands of builds: one monitor process following 10 000 builds, with
# push notifications and poll only (docs/BENCHMARKS.md).
bench-monitor: deps
	$(GO) test -run '^$$' -bench BenchmarkMonitorBuilds -benchtime 1x -count 1 -timeout 60m ./services/monitor/ | tee $(BENCH_OUT)
	@grep -q '^ok' $(BENCH_OUT) || { rm -f $(BENCH_OUT); exit 1; }
	@grep '^poll_only ' $(BENCH_OUT) | tail -1; grep '^builds=' $(BENCH_OUT) | tail -1; rm -f $(BENCH_OUT)

dev: deps npm
	$(GO) run ./cmd/gfdev

clean:
	rm -rf bin .dev

# Reliability (docs/reliability.md). `make chaos` plays EVENTS Gerrit events
# while services are killed, NATS restarts and Jenkins/Gerrit fail, then checks
# that nothing was lost or done twice; its last line is the summary.
# `make soak DURATION=10m` keeps a steady load and prints every service
# process's memory and goroutines every 30s, then their growth.
.PHONY: chaos soak
EVENTS   ?= 2000
SEED     ?=
DURATION ?= 10m
chaos: deps npm
	$(GO) run ./cmd/gfdev chaos --events $(EVENTS) $(if $(SEED),--seed $(SEED))

soak: deps npm
	$(GO) run ./cmd/gfdev soak --duration $(DURATION)

# The status page in headless Chromium (cmd/gfdev/status_e2e_test.go, build
# tag `browser`, so not part of `make test`): the pipeline runs on the
# simulators, the page follows a change live, and 2 000 build sets are
# rendered. Installs Debian's chromium when none is on PATH. Screenshots go
# to ARTIFACTS (default docs/artifacts/, gitignored); the last line holds the
# browser's figures (docs/BENCHMARKS.md).
.PHONY: test-browser bench-status
ARTIFACTS ?= $(CURDIR)/docs/artifacts
test-browser: deps npm
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
		echo "chromium not found: installing Debian's chromium"; \
		if [ "$$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y chromium; }
	@mkdir -p $(ARTIFACTS)
	GERRITFLOW_BROWSER_TEST=1 ARTIFACTS=$(ARTIFACTS) $(GO) test -tags browser -count=1 -timeout 14m -v -run '^TestStatusPage' ./cmd/gfdev/ | tee $(BENCH_OUT)
	@grep -q '^ok' $(BENCH_OUT) || { rm -f $(BENCH_OUT); exit 1; }
	@grep '^browser sets=' $(BENCH_OUT) | tail -1; rm -f $(BENCH_OUT)

# The status page with 2 000 build sets in flight: load, page render, update
# latency and memory of the status process (docs/BENCHMARKS.md).
bench: bench-status
bench-status: deps
	$(GO) test -run '^$$' -bench BenchmarkStatusScale -benchtime 1x -count 1 ./services/status/ | tee $(BENCH_OUT)
	@grep '^sets=' $(BENCH_OUT) | tail -1; rm -f $(BENCH_OUT)
