# callback-router Makefile. `make help` lists the targets.

# Every tool (controller-gen, golangci-lint, helm, kustomize, helm-docs, kube-apiserver, promtool) is
# pinned by a committed tools module under hack/tools/<name> (go.mod + go.sum) and built
# read-only by hack/tool.sh into a cache outside the checkout, so a fresh machine needs only Go
# and the module proxy, and the go command can never pick another version.
TOOL = hack/tool.sh

CACHE_DIR  ?= $(or $(CALLBACK_ROUTER_CACHE),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/callback-router)

BIN      ?= bin/callback-router
ROUTES   ?= examples/routes.yaml
LISTEN   ?= :8080
SPOOL    ?= $(CACHE_DIR)/spool
GO_TEST_FLAGS ?= -race -count=1
FUZZTIME ?= 5s

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: ## Generate the CRD and RBAC manifests into config/ (and the chart's CRD copy).
	cg="$$($(TOOL) controller-gen)"; "$$cg" rbac:roleName=manager-role crd paths="./..." output:crd:artifacts:config=config/crd/bases
	rm -f charts/callback-router/files/crds/*.yaml
	cp config/crd/bases/*.yaml charts/callback-router/files/crds/

.PHONY: generate
generate: ## Generate DeepCopy methods.
	cg="$$($(TOOL) controller-gen)"; "$$cg" object:headerFile="hack/boilerplate.go.txt" paths="./..."

.PHONY: fmt
fmt: ## Run gofmt on the code.
	gofmt -s -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: lint
lint: ## Run golangci-lint (pinned, built from its tools module).
	@# --allow-serial-runners: a concurrent make run (another checkout, same cache) waits for the
	@# lint lock instead of failing with "parallel golangci-lint is running".
	gl="$$($(TOOL) golangci-lint)"; "$$gl" config verify; "$$gl" run --allow-serial-runners ./...

.PHONY: verify
verify: ## Fail if regenerating (make manifests generate) or gofmt would change any file.
	@test -z "$$(gofmt -s -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -s -l $$(git ls-files '*.go'); exit 1; }
	@# Compare against the working tree as it was, so uncommitted API changes that were
	@# regenerated pass, and a fresh checkout is checked against what is committed.
	@before=$$(mktemp -d); trap 'rm -rf "$$before"' EXIT; cp -a api config charts "$$before"/; \
	  $(MAKE) --no-print-directory manifests generate >/dev/null; \
	  for d in api config charts; do \
	    diff -r -u "$$before/$$d" "$$d" > "$$before/diff" || { \
	      echo "Generated files drifted (now regenerated in place; commit them):"; head -60 "$$before/diff"; exit 1; }; \
	  done; echo "verify: generated files and formatting are up to date"

.PHONY: envtest
envtest: ## Provide kube-apiserver and etcd for tests (built/cached once; prints the directory).
	@hack/envtest-assets.sh

.PHONY: test
.PHONY: tools-check
tools-check: ## Fail if a tools module (hack/tools/*) is incomplete or would resolve any version (read-only, seconds).
	@$(TOOL) --check

test: tools-check verify vet lint ## Run all tests against a real kube-apiserver and etcd, plus a short fuzz run.
	@assets="$$(hack/envtest-assets.sh)"; \
	  echo "envtest: $$("$$assets/kube-apiserver" --version), etcd $$("$$assets/etcd" --version | head -1 | sed 's/.*: //') from $$assets"
	@# The CRD validation tests run verbosely so the log shows them passing against the real API server.
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" go test $(GO_TEST_FLAGS) -v ./api/... | grep -v -E '^\s*=== (RUN|PAUSE|CONT)'
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" HELM="$$($(TOOL) helm)" KUSTOMIZE="$$($(TOOL) kustomize)" \
	  HELM_DOCS="$$($(TOOL) helm-docs)" KUBE_CONTROLLER_MANAGER="$$($(TOOL) kube-controller-manager)" \
	  PROMTOOL="$$($(TOOL) promtool)" go test $(GO_TEST_FLAGS) $$(go list ./... | grep -v '/api/')
	$(MAKE) fuzz FUZZTIME=$(FUZZTIME)

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each (default 5s; e.g. make fuzz FUZZTIME=5m).
	@for file in $$(git grep -l '^func Fuzz' -- '*_test.go'); do \
	  pkg=./$$(dirname $$file); \
	  for f in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$file); do \
	    echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
	    go test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

.PHONY: bench
bench: build ## Run the benchmarks and print the figures recorded in docs/benchmarks.md.
	go run ./hack/bench/receiver -bin $(BIN)
	go run ./hack/bench/spool
	go run ./hack/bench/filter
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" go run ./hack/bench/controller

##@ Build

.PHONY: build
build: ## Build the callback-router binary into bin/.
	CGO_ENABLED=0 go build -trimpath -o $(BIN) .

.PHONY: run
run: build ## Run the receiver standalone on examples/routes.yaml with a loopback backend, and send it a signed sample (no cluster needed).
	BIN=$(BIN) ROUTES=$(ROUTES) LISTEN=$(LISTEN) SPOOL=$(SPOOL) hack/run-standalone.sh

IMG ?= ghcr.io/callback-router/callback-router:dev
CONTAINER_TOOL ?= docker

.PHONY: docker-build
docker-build: ## Build the container image IMG (needs a container engine: Docker, or CONTAINER_TOOL=podman).
	$(CONTAINER_TOOL) build -t $(IMG) .

.PHONY: docker-push
docker-push: ## Push the container image IMG.
	$(CONTAINER_TOOL) push $(IMG)

.PHONY: chart
chart: ## Sync the chart's CRD copy from config/crd/bases and regenerate its README (helm-docs).
	rm -f charts/callback-router/files/crds/*.yaml
	cp config/crd/bases/*.yaml charts/callback-router/files/crds/
	"$$($(TOOL) helm-docs)" --chart-search-root charts --template-files README.md.gotmpl --log-level warning

.PHONY: test-monitoring
test-monitoring: ## Run only the dashboard and alert tests (test/monitoring: helm, promtool, a real receiver).
	HELM="$$($(TOOL) helm)" PROMTOOL="$$($(TOOL) promtool)" KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" \
	  go test $(GO_TEST_FLAGS) ./test/monitoring/...

.PHONY: test-install
test-install: ## Run only the chart and kustomize install tests (test/install) against envtest.
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" HELM="$$($(TOOL) helm)" KUSTOMIZE="$$($(TOOL) kustomize)" \
	  HELM_DOCS="$$($(TOOL) helm-docs)" KUBE_CONTROLLER_MANAGER="$$($(TOOL) kube-controller-manager)" \
	  go test $(GO_TEST_FLAGS) ./test/install/...

##@ Tools

.PHONY: tools
tools: ## Build every pinned tool into the cache (hack/tool.sh; prints their paths).
	@for t in controller-gen golangci-lint helm kustomize helm-docs kube-apiserver promtool; do $(TOOL) $$t; done
