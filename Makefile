# detour — build, test and demo targets.
# The two set-up commands on a fresh machine are `make demo` and `make test`;
# both install what they need (apt packages, Go builds) through `make deps`.

GO        ?= go
BIN       ?= bin
PKGS      ?= ./...
# A count, not a duration: with -fuzztime 20s Go 1.26's fuzz coordinator
# can report a bare "context deadline exceeded" at the deadline, with no
# crasher (golang/go#75804, fixed in Go 1.27; seen here in CI on
# FuzzLoadExtensions). A count has no deadline to race.
FUZZTIME  ?= 5000x
# A new interesting input is minimized for up to 60 s by default: with slow
# targets (the CLI parsers write files) that outlasts -fuzztime and Go
# reports "context deadline exceeded" as a failure. 1 s is plenty here.
FUZZFLAGS ?= -fuzztime $(FUZZTIME) -fuzzminimizetime 1s
BENCHTIME ?= 3s

.PHONY: all build test unit fuzz bench lint cross demo demo-netns deps e2e e2e-locked bench-cluster bench-cluster-locked cluster-up cluster-down cluster-status images clean

all: build

# build also installs the CLI as kubectl-detour, which makes `kubectl detour`
# work once bin/ is on PATH.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ ./cmd/...
	cp $(BIN)/detour $(BIN)/kubectl-detour

# deps installs the Debian packages that the tests and the local cluster use.
deps:
	bash tests/deps.sh

# unit runs the fast suite: unit tests plus the network-namespace integration
# tests (these need root; without it they skip and say so).
unit:
	$(GO) test -race -count=1 $(PKGS)

# fuzz runs every fuzz target for a bounded time; crashers found are kept
# under testdata/fuzz as regression seeds and run by `make unit` from then on.
fuzz:
	$(GO) test ./tunnel -run '^$$' -fuzz '^FuzzReadControlFrame$$' $(FUZZFLAGS)
	$(GO) test ./tunnel -run '^$$' -fuzz '^FuzzReadStreamHeader$$' $(FUZZFLAGS)
	$(GO) test ./webhook -run '^$$' -fuzz '^FuzzAdmission$$' $(FUZZFLAGS)
	$(GO) test ./agent -run '^$$' -fuzz '^FuzzHTTPRouting$$' $(FUZZFLAGS)
	$(GO) test ./agent -run '^$$' -fuzz '^FuzzParseRequestHead$$' $(FUZZFLAGS)
	$(GO) test ./agent -run '^$$' -fuzz '^FuzzH2MatchRequest$$' $(FUZZFLAGS)
	$(GO) test ./client/cli -run '^$$' -fuzz '^FuzzLoadConfig$$' $(FUZZFLAGS)
	$(GO) test ./client/cli -run '^$$' -fuzz '^FuzzLoadExtensions$$' $(FUZZFLAGS)
	$(GO) test ./client/internal/clusternet -run '^$$' -fuzz '^FuzzResolve$$' $(FUZZFLAGS)

# bench prints each detour path beside its baseline, measured in the same
# run (docs/benchmarks.md explains every figure). Needs root for the netns.
bench: build
	$(GO) test -run '^$$' -bench 'StreamThroughput' -benchtime 1s -count=1 ./tunnel/
	$(GO) test -run '^$$' -bench 'Passthrough|InterceptedBulk' -benchtime $(BENCHTIME) -count=1 ./tests/netns/
	$(GO) test -run '^$$' -bench 'HTTPRouting|H2CRouting' -benchtime $(BENCHTIME) -count=1 ./tests/netns/
	$(GO) test -run '^$$' -bench 'AgentRSS' -benchtime 1x -count=1 ./tests/netns/
	$(GO) test -run '^$$' -bench 'ClusterNetwork' -benchtime 1x -count=1 ./tests/netns/
	$(GO) test -run '^$$' -bench 'Admission' -benchtime 5000x -count=1 ./webhook/
	flock -o /tmp/detour-e2e.lock $(MAKE) --no-print-directory bench-cluster-locked

# bench-cluster measures intercepts on the local cluster against a raw
# port-forward to the same pod (BenchmarkClusterIntercept, BenchmarkClusterNewConnection).
bench-cluster: deps build
	flock -o /tmp/detour-e2e.lock $(MAKE) --no-print-directory bench-cluster-locked

bench-cluster-locked:
	$(GO) run ./tests/cluster up || { $(GO) run ./tests/cluster down; exit 1; }
	$(GO) test -tags e2e -run '^$$' -bench 'ClusterIntercept|ClusterNewConnection|ClusterNetworkBulk|PortForwardTransport|RemoteCluster' -benchtime 1x -count=1 -timeout 20m ./tests/e2e/ ; rc=$$?; \
	$(GO) run ./tests/cluster down; exit $$rc

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# cross builds the workstation side (the CLI and its daemon) for macOS and
# Windows and type-checks its packages and their tests there (go vet); the
# Linux-only parts (namespaces, the TUN stack) sit behind build tags and
# say so at run time. Running those tests needs those systems: not here.
CROSS ?= darwin/arm64 darwin/amd64 windows/amd64
cross:
	@for p in $(CROSS); do \
	  echo "cross: $$p"; \
	  GOOS=$${p%/*} GOARCH=$${p#*/} CGO_ENABLED=0 $(GO) build -o /dev/null ./cmd/detour || exit 1; \
	  GOOS=$${p%/*} GOARCH=$${p#*/} CGO_ENABLED=0 $(GO) vet ./cmd/detour ./client/... ./tunnel/... ./internal/... || exit 1; \
	done

# test is the README's test command and what .ci/run calls.
test: deps lint cross unit fuzz e2e

# demo is the README's main job: the local cluster (built on first use),
# detour installed, a data store (etcd) and a sample app, a personal intercept
# whose command (the local version, via intercept -- CMD) reads the store
# through the pod, side by side with the app; Ctrl-C leaves.
# The cluster stays up afterwards; `make cluster-down` removes it.
demo: deps build
	flock -o /tmp/detour-e2e.lock $(GO) run ./tests/clusterdemo -bin $(BIN)

# demo-netns shows the data path alone, in network namespaces, in seconds.
demo-netns: deps build
	$(GO) run ./tests/netns/demo -agent $(BIN)/detour-agent

# e2e runs the cluster suite: the local cluster comes up (binaries cached
# under /var/cache/detour by version), the tests run, the egress guard's drop
# counters are checked (they must be zero), and the cluster goes down. A lock
# keeps two suites from sharing, or tearing down, one cluster (flock -o: the
# cluster's daemons must not inherit, and so keep holding, the lock).
e2e: deps build
	flock -o /tmp/detour-e2e.lock $(MAKE) --no-print-directory e2e-locked

e2e-locked:
	$(GO) run ./tests/cluster up || { $(GO) run ./tests/cluster down; exit 1; }
	$(GO) test -count=1 -tags e2e -timeout 30m ./tests/e2e/... ; rc=$$?; \
	$(GO) run ./tests/cluster check-guard || rc=1; \
	$(GO) run ./tests/cluster down; exit $$rc

cluster-up: deps
	$(GO) run ./tests/cluster up

cluster-down:
	$(GO) run ./tests/cluster down

cluster-status:
	$(GO) run ./tests/cluster status

images: build
	$(GO) run ./tests/images

clean:
	rm -rf $(BIN)
