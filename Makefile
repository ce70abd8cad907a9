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
	$(GO) build -o bin/ ./services/bridge ./services/parser ./services/trigger ./services/monitor ./services/voter ./cmd/gfctl ./cmd/gfdev

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
bench: bench-trigger

bench-trigger: deps
	$(GO) test -run '^$$' -bench BenchmarkTriggerScaling -benchtime 1x -count 1 ./services/trigger/internal/trigger/ | tee $(BENCH_OUT)
	@grep '^one=' $(BENCH_OUT) | tail -1; rm -f $(BENCH_OUT)

dev: deps npm
	$(GO) run ./cmd/gfdev

clean:
	rm -rf bin .dev
