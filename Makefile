# Marlin: build, test, benchmark.
GO          ?= go
STATICCHECK ?= $(shell command -v staticcheck 2>/dev/null || echo $(shell $(GO) env GOPATH)/bin/staticcheck)
STATICCHECK_VERSION ?= v0.8.2
BIN         ?= bin

.PHONY: all build test race short lint tools bench bench-10m bench-quick clean

all: build test

build:
	$(GO) build ./...
	$(GO) build -o $(BIN)/marlin ./tools/marlin

# The test command (README, CI): vet, then every test with the race detector.
test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...

# Without the race detector (faster).
short:
	$(GO) test -count=1 -short ./...

race: test

tools:
	@test -x "$(STATICCHECK)" || $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

lint: tools
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

# Go benchmarks: engine and index micro-benchmarks (10 runs each, for benchstat).
bench:
	$(GO) test -run '^$$' -bench 'PutBatch|PutParallel|GetHit|GetMiss' -count=10 ./engine/
	$(GO) test -run '^$$' -bench . -count=10 ./index/

# The large run of issue 2: 10 million thin records, then 10 million 100-byte values.
bench-10m:
	$(GO) test -run '^$$' -bench Load10M -benchtime 1x -timeout 30m ./engine/
	MARLIN_BENCH_VALUE=100 $(GO) test -run '^$$' -bench Load10M -benchtime 1x -timeout 30m ./engine/

# Marlin beside Pebble, Badger, bbolt and a Go map (bench/peers, a module of
# its own): 10 million thin records, then 10 million 100-byte values. Each
# engine runs in its own process; prints one markdown table per size.
.PHONY: bench-peers bench-peers-quick
bench-peers:
	cd bench/peers && $(GO) run ./cmd/peerbench -keys 10000000 -value-size 8
	cd bench/peers && $(GO) run ./cmd/peerbench -keys 10000000 -value-size 100

# The same at 200,000 keys, to check it runs.
bench-peers-quick:
	cd bench/peers && $(GO) run ./cmd/peerbench -keys 200000 -gets 200000 -value-size 8

# One pass of each benchmark, to check they run.
bench-quick:
	$(GO) test -run '^$$' -bench . -benchtime 1x ./...

clean:
	rm -rf $(BIN)
