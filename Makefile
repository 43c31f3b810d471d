# meshfed — every target works on a fresh machine: scripts install what they need.
GO      ?= go
BIN     := bin/meshfed
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.Version=$(VERSION)

.PHONY: all build image run test test-short e2e bench fuzz lint docs clean

all: build

# Static (CGO_ENABLED=0), as in the image: the binary runs on any Linux, without libc.
build:
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/meshfed

## image: the container image (Dockerfile; needs a Docker engine)
IMAGE ?= meshfed/meshfed:$(VERSION)
image:
	docker build --build-arg VERSION=$(VERSION) -t $(IMAGE) .

## run: the local federation demo (embedded etcd, three simulated clusters, a failover drill)
run: build
	./hack/run.sh

## test: the whole suite (unit, in-process integration, kube-apiserver tier, manifests)
test:
	./hack/test.sh

## test-short: unit tests only, no kube-apiserver build
test-short:
	MESHFED_SKIP_KUBE=1 $(GO) test -race -short ./...

## e2e: the testbed on real networks (network namespaces, nftables; needs root), long forms
e2e: build
	./hack/e2e.sh

## bench: benchmark scripts, each printing ratios against a baseline measured in the same run
bench: build
	./hack/bench.sh

## fuzz: every Fuzz target for FUZZTIME (default 20s) each
fuzz:
	./hack/fuzz.sh

## lint: gofmt and go vet
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

## docs: regenerate docs/reference.md from the command tree (a test fails when it is stale)
docs:
	MESHFED_UPDATE_DOCS=1 $(GO) test ./cmd/meshfed -run TestReferenceDoc

clean:
	rm -rf bin
