# crmauthz — make help lists the targets.
BIN      := bin/crmauthz
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
GO       ?= go
PGO      ?= auto
RUN_DATA ?= ./data/demo
PKGS     := ./...
# go test's own default is 10m per package binary: internal/server's tests took 5 min of it alone,
# niced at a load average of 13-15 on the 2-core machine (session 11); CI allows 90 min in all.
TEST_TIMEOUT ?= 30m
IMAGE    ?= crmauthz
IMAGE_TAG ?= $(VERSION)

.DEFAULT_GOAL := help

.PHONY: help build run test policy-test lint fmt bench bench-scale bench-go pgo fuzz clean image helm-lint dashboard traefik

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/crmauthz (static, CGO_ENABLED=0; PGO=bench/pgo/crmauthz.pgo for profile-guided optimisation)
	CGO_ENABLED=0 $(GO) build -trimpath -pgo=$(PGO) -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/crmauthz

run: build ## serve on 127.0.0.1:8181 (admin 127.0.0.1:8282) with examples/demo.ndjson loaded into a fresh ./data/demo
	rm -rf $(RUN_DATA)
	$(BIN) serve --data-dir $(RUN_DATA) --load-snapshot examples/demo.ndjson

test: build ## run every test (Go with -race in both modules, and the Rego policy tests)
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)
	cd tools && $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...
	$(BIN) policy test policies/

policy-test: build ## run the Rego policy tests with coverage
	$(BIN) policy test --coverage -v policies/

lint: bin/staticcheck ## gofmt check, go vet and staticcheck (both modules), and opa fmt check of the Rego policies
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	cd tools && $(GO) vet ./...
	bin/staticcheck $(PKGS)
	cd tools && ../bin/staticcheck ./...
	$(GO) run ./cmd/crmauthz policy fmt --check policies/

helm-lint: ## helm lint --strict the charts with every ci/*-values.yaml scenario (Helm SDK, no helm CLI needed)
	cd tools && $(GO) run ./helmlint ../charts/crmauthz ../charts/examples/app-with-sidecar

dashboard: ## regenerate charts/crmauthz/dashboards/crmauthz.json from tools/dashboard (Grafana Foundation SDK); a test checks it is current
	cd tools && $(GO) generate ./dashboard

# Traefik for the gateway test (cmd/crmauthz TestE2EGateways), built from its module through the Go
# module proxy with its own go.mod, like crmauthz-bench builds opa. v3.6.12 is the newest that
# builds so: v3.7's module lacks its nested module pkg/config/dynamic/ext, and the proxy refuses
# some of v3.7.13's dependencies.
TRAEFIK_VERSION ?= v3.6.12
TRAEFIK_BIN     := .cache/traefik/$(TRAEFIK_VERSION)/traefik
traefik: $(TRAEFIK_BIN) ## build Traefik TRAEFIK_VERSION into .cache/traefik/ once (minutes), for the gateway tests; .ci/run does

$(TRAEFIK_BIN):
	@mkdir -p $(@D)
	GOWORK=off GO111MODULE=on $(GO) mod download github.com/traefik/traefik/v3@$(TRAEFIK_VERSION)
	cd "$$($(GO) env GOMODCACHE)/github.com/traefik/traefik/v3@$(TRAEFIK_VERSION)" && \
	  GOWORK=off GOFLAGS='-mod=readonly -buildvcs=false' CGO_ENABLED=0 $(GO) build -trimpath \
	  -ldflags '-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$(TRAEFIK_VERSION)' -o $(CURDIR)/$@.part ./cmd/traefik
	mv $@.part $@

bin/staticcheck: tools/go.mod ## staticcheck, at the version tools/go.mod pins
	cd tools && $(GO) build -o ../bin/staticcheck honnef.co/go/tools/cmd/staticcheck

image: ## docker build the image IMAGE:IMAGE_TAG (default crmauthz:VERSION); needs a Docker engine
	docker build --build-arg VERSION=$(VERSION) -t $(IMAGE):$(IMAGE_TAG) .

fmt: ## format the Go code
	gofmt -w $$(git ls-files '*.go')

FUZZTIME ?= 30s
fuzz: ## run every Go fuzz target for FUZZTIME each (seed corpora run in make test)
	@set -e; for f in $$(grep -rl --include='*_test.go' '^func Fuzz' .); do \
	  pkg=$$(dirname $$f); \
	  for t in $$(grep -o '^func Fuzz[A-Za-z0-9_]*' $$f | cut -d' ' -f2); do \
	    echo "== $$pkg $$t ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

bench: build ## crmauthz vs opa run --server over HTTP on 1,000,000 records, one table; each step in 8 alternating slices per side (BENCH_FLAGS="--records 100000 --duration 5s", "--slices 1" the old way; see BENCHMARKS.md "Method")
	cd tools && $(GO) run ./crmauthz-bench run --crmauthz ../$(BIN) $(BENCH_FLAGS)

bench-scale: build ## the scale curve: 100,000, 1,000,000 and 10,000,000 records (SCALE_FLAGS="--records 100000,1000000"; see BENCHMARKS.md)
	cd tools && $(GO) run ./crmauthz-bench scale --crmauthz ../$(BIN) $(SCALE_FLAGS)

PGO_RECORDS ?= 100000 1000000
PGO_FLAGS   ?= --duration 8s --rates 5000 --saturation 32 --hot-set 0 --runs 2 --no-opa
pgo: build ## regenerate bench/pgo/crmauthz.pgo, crmauthz's CPU profile under crmauthz-bench's load (PGO_RECORDS records each); docs/operations.md "Profile-guided optimisation"
	rm -rf bin/pgo && mkdir -p bin/pgo
	cd tools && $(GO) build -o ../bin/pgo/crmauthz-bench ./crmauthz-bench
	cd tools && for n in $(PGO_RECORDS); do \
	  ../bin/pgo/crmauthz-bench run --crmauthz ../$(BIN) --records $$n $(PGO_FLAGS) --cpu-profile ../bin/pgo/$$n.pprof > ../bin/pgo/$$n.txt || exit 1; \
	done
	$(GO) tool pprof -proto $(foreach n,$(PGO_RECORDS),bin/pgo/$(n).pprof) > bin/pgo/crmauthz.pgo
	mv bin/pgo/crmauthz.pgo bench/pgo/crmauthz.pgo
	@ls -l bench/pgo/crmauthz.pgo

bench-go: ## in-process benchmarks (decision, batch, index, replication, 1,000,000-record snapshot load)
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

clean: ## remove bin/ and data/
	rm -rf bin data
