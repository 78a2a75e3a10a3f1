# Marlin: build, test, benchmark.
GO          ?= go
STATICCHECK ?= $(shell command -v staticcheck 2>/dev/null || echo $(shell $(GO) env GOPATH)/bin/staticcheck)
STATICCHECK_VERSION ?= v0.8.2
BIN         ?= bin

.PHONY: all build test test-gomemcache race short lint tools bench bench-10m bench-quick clean fuzz crash soak

all: build test

build:
	$(GO) build ./...
	$(GO) build -buildvcs=auto -o $(BIN)/marlin ./tools/marlin

# The test command (README, CI): vet, every test with the race detector in
# its short form, every test at full length without it (a bounded crash
# sweep, error sweep, corruption sweep, soak and 20 kills of a writing child
# process), gomemcache's own test suite against marlin serve, then each
# fuzz target for 10 s.
#
# The race detector slows the randomized long tests (sweeps, model, soak)
# tenfold: under it every test runs in its -short form, then every test
# runs again at full length without it.
#
# The engine's race run is split in two halves by test name, run at once:
# its tests run one after another, and two processes use both cores.
RACE = $(GO) test -race -short -count=1 -timeout 25m
test:
	@if [ "$${MARLIN_NO_MEMCACHED:-}" != 1 ]; then .ci/deps; fi
	$(GO) vet ./...
	$(RACE) $$($(GO) list ./... | grep -v '/engine$$')
	@a=$$(mktemp); b=$$(mktemp); \
	$(RACE) -run '^(Test|Fuzz|Example)[A-M]' ./engine/ >$$a 2>&1 & pa=$$!; \
	$(RACE) -run '^(Test|Fuzz|Example)[^A-M]' ./engine/ >$$b 2>&1; rb=$$?; \
	wait $$pa; ra=$$?; echo "== engine, race, tests A-M"; cat $$a; echo "== engine, race, the rest"; cat $$b; \
	rm -f $$a $$b; test $$ra -eq 0 -a $$rb -eq 0
	$(GO) test -count=1 -timeout 25m ./...
	$(MAKE) test-gomemcache
	$(MAKE) fuzz FUZZTIME=10s

# gomemcache's own client test suite (TestLocalhost of
# github.com/bradfitz/gomemcache/memcache, at go.mod's version), unchanged,
# against marlin serve on 127.0.0.1:11211; a skipped test fails. The port
# must be free: with CI=true a memcached service holding it is stopped.
test-gomemcache:
	GO=$(GO) server/testdata/gomemcache.sh

# Fuzz targets (package:target); make fuzz runs each for FUZZTIME.
FUZZ_TARGETS = ./segment:FuzzDecode ./segment:FuzzScan ./engine:FuzzSnapshotLoad ./engine:FuzzOpenMutatedSegment ./server:FuzzParseText ./server:FuzzParseMeta ./server:FuzzReadBinary ./server:FuzzTextSession ./keynorm:FuzzNormalize ./bundle:FuzzOpen ./bundle:FuzzGet
FUZZTIME ?= 60s

# A run that ends in the fuzzing engine's own "context deadline exceeded"
# with no failing input (its coordinator timing out on a loaded machine,
# not a finding) is run once more; a failing input always fails.
fuzz:
	@log=$$(mktemp); for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "== $$name ($$pkg), $(FUZZTIME)"; \
		for try in 1 2; do \
			if $(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 100x $$pkg >$$log 2>&1; then break; fi; \
			if [ $$try = 1 ] && grep -q 'context deadline exceeded' $$log && ! grep -q 'Failing input written' $$log; then \
				echo "(the fuzzing engine timed out with no failing input: once more)"; continue; fi; \
			cat $$log; rm -f $$log; exit 1; \
		done; \
		grep 'fuzz: elapsed' $$log | tail -n 1; \
	done; rm -f $$log

# The long crash tests: the crash sweep (every file operation of longer
# workloads, more seeds, three crash images per point, every check), the
# error sweep (every operation failed in turn), the corruption sweep (every
# byte), and N kills of a child process writing to real files.
# The full output is kept in crash.log.
N ?= 1000
crash:
	@if MARLIN_CRASH_SWEEP=long MARLIN_KILLS=$(N) $(GO) test -count=1 -timeout 6h -v \
		-run '^(TestCrashSweep|TestErrorSweep|TestCorruptionSweep|TestCorruptionSweepOpen|TestKillLoop)$$' ./engine/ >crash.log 2>&1; \
	then grep -E '^(--- |ok)|crash points|errors injected|damaged|kill loop' crash.log; \
	else grep -E '^(--- |FAIL)|Error|Messages|panic' crash.log | head -n 60; echo "see crash.log"; exit 1; fi

# The long soak test (issue 9): random seeds of the randomized,
# model-checked run of simulated hours (engine/soak_test.go) until SOAK has
# passed (a Go duration). The full output is kept in soak.log; the last line
# gives the simulated hours, operations, restarts, compactions, snapshots,
# checkpoints, segment id wraps and seeds run.
SOAK ?= 1h
soak:
	@if MARLIN_SOAK=$(SOAK) $(GO) test -count=1 -timeout 48h -v -run '^TestSoak$$' ./engine/ >soak.log 2>&1; \
	then grep -E '^(--- |ok)|soak summary' soak.log; \
	else grep -E -A60 '^(--- FAIL|FAIL|panic)|soak_test.go|soak: seed' soak.log | head -n 90; echo "see soak.log"; exit 1; fi

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
	$(GO) run ./internal/doccheck $(DOC_PACKAGES)

# The packages whose every exported identifier and field must have a doc
# comment (make lint).
DOC_PACKAGES = arena segment index vfs engine fill keynorm shared metrics server bench admin bundle

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

# The billion-key run (issue 10): load N thin records, restart, batched
# inserts at that size, cold uniform gets and updates from 64 goroutines
# with the page cache dropped (run as root), absent keys, hot zipfian gets,
# a cold full scan; prints one table. Needs about 60 GB of disk at 10^9
# (under TMPDIR, removed afterwards). bench-scale runs 10^7, 10^8 and 10^9
# one after another and prints their costs per key side by side.
# (N defaults to 10^9 here, whatever make crash's default is.)
BILLION_N = $(if $(filter command line environment,$(origin N)),$(N),1000000000)
# memcaslap against marlin serve and memcached, one after the other (issue
# 11): BENCH_SERVE="seconds threads concurrency rounds".
BENCH_SERVE ?= 20 2 32 5
.PHONY: bench-serve bench-serve-10m
bench-serve: build
	bench/serve/run.sh $(BENCH_SERVE)

# Ten million keys on disk against memcached, then data ten times the
# server's memory limit (root: a memory cgroup; about 12 GB of disk while
# it runs, deleted after). BENCH_SERVE_10M="keys seconds rounds".
bench-serve-10m: build
	bench/serve/big.sh $(BENCH_SERVE_10M)

.PHONY: bench-billion bench-scale
bench-billion: build
	$(BIN)/marlin scale --keys $(BILLION_N) --scan

bench-scale: build
	$(BIN)/marlin scale --keys 10000000,100000000,1000000000 --scan

# One pass of each benchmark, to check they run.
bench-quick:
	$(GO) test -run '^$$' -bench . -benchtime 1x ./...

clean:
	rm -rf $(BIN)

# Bundles (issue 13): 10 million pairs of 16-byte keys with 8-byte, then
# 100-byte values: build rate (from memory and from a tsv dump), bytes per
# key (exact and approximate), lookups per second of present and absent
# keys from 2 goroutines with the file cached, entries read per lookup,
# and a Go map of the same pairs, in one table per value size. About 4 GB
# of temporary files under TMPDIR, removed at the end.
.PHONY: bench-bundle
bench-bundle: build
	$(BIN)/marlin bundle bench --keys 10000000 --value-size 8,100

# The 100-million-pair run: thin pairs, 10 million lookups per figure, no
# Go map (it would need about 9 GB). About 15 GB of temporary files.
.PHONY: bench-bundle-100m
bench-bundle-100m: build
	$(BIN)/marlin bundle bench --keys 100000000 --value-size 8 --lookups 10000000 --go-map=false

# The same with 100-byte values: about 54 GB of temporary files at the
# peak (removed at the end) and 16 minutes.
.PHONY: bench-bundle-100m-100
bench-bundle-100m-100: build
	$(BIN)/marlin bundle bench --keys 100000000 --value-size 100 --lookups 10000000 --go-map=false
