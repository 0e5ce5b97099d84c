# sallyport Makefile. Tools run from their own modules under hack/, so the main
# go.mod carries only what the operator itself imports.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c

# Go test flags: CI runs the race detector; locally it is one variable away.
ifeq ($(CI),true)
TEST_FLAGS ?= -race -count=1
else
TEST_FLAGS ?= -race
endif
TEST_TIMEOUT ?= 30m

CONTROLLER_GEN := go tool -modfile=hack/tools/go.mod controller-gen
GOLANGCI_LINT := go tool -modfile=hack/lint/go.mod golangci-lint
KUSTOMIZE := go tool -modfile=hack/kustomize/go.mod kustomize

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/sallyport/sallyport/internal/version.Version=$(VERSION)

# The container image docker-build builds and deploy/build-installer name,
# and the tool that builds it.
IMG ?= sallyport:dev
# Optional parts of config/ that deploy and build-installer include.
COMPONENTS ?=
CONTAINER_TOOL ?= docker

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  %-14s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: generate
generate: ## Generate deepcopy code for the API types.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: manifests
manifests: ## Generate CRDs, RBAC and webhook configurations into config/ and the chart.
	$(CONTROLLER_GEN) rbac:roleName=manager crd webhook paths="./..." \
		output:crd:artifacts:config=config/crd/bases \
		output:rbac:artifacts:config=config/rbac \
		output:webhook:artifacts:config=config/webhook
	hack/sync-chart-crds.sh

.PHONY: fmt
fmt: ## Run gofmt on the code.
	gofmt -s -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: lint
lint: ## Run golangci-lint (built from hack/lint).
	$(GOLANGCI_LINT) run ./...

.PHONY: chart-check
chart-check: ## Lint and render the Helm chart with Helm v4 (built from hack/helm); check CRDs and RBAC.
	hack/chart-check.sh

.PHONY: verify
verify: ## Fail when generated code, manifests or formatting are out of date.
	hack/verify.sh

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME (default 30s) each.
	hack/fuzz.sh

.PHONY: envtest
envtest: ## Build (once per machine) the kube-apiserver and etcd for tests; print KUBEBUILDER_ASSETS.
	@hack/envtest.sh

.PHONY: test
test: ## Run the whole test suite (unit and envtest) against a real API server.
	TEST_FLAGS="$(TEST_FLAGS)" TEST_TIMEOUT="$(TEST_TIMEOUT)" hack/test.sh

##@ Build

.PHONY: build
build: ## Build bin/sallyport.
	CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o bin/sallyport ./cmd/sallyport

.PHONY: run
run: build ## Run the manager: against $KUBECONFIG when set, else on an embedded local control plane.
	hack/run.sh $(ARGS)

.PHONY: demo
demo: ## Walk through the two gates on an embedded local control plane: policies, tokens, decisions, decision log.
	hack/demo.sh

.PHONY: docker-build
docker-build: ## Build the container image IMG (default sallyport:dev) with CONTAINER_TOOL (default docker).
	$(CONTAINER_TOOL) build --build-arg VERSION=$(VERSION) -t $(IMG) .

##@ Deployment

.PHONY: install
install: ## Install the CRDs into the cluster of $KUBECONFIG.
	$(KUSTOMIZE) build config/crd | kubectl apply --server-side -f -

.PHONY: uninstall
uninstall: ## Remove the CRDs (and with them every policy) from the cluster of $KUBECONFIG.
	$(KUSTOMIZE) build config/crd | kubectl delete --ignore-not-found -f -

.PHONY: deploy
deploy: ## Deploy config/default (image IMG, optional COMPONENTS="certmanager prometheus network-policy") to the cluster of $KUBECONFIG.
	hack/render.sh --image $(IMG) $(addprefix --component ,$(COMPONENTS)) | kubectl apply --server-side -f -

.PHONY: undeploy
undeploy: ## Remove what deploy applied (CRDs and policies included) from the cluster of $KUBECONFIG.
	hack/render.sh --image $(IMG) $(addprefix --component ,$(COMPONENTS)) | kubectl delete --ignore-not-found -f -

.PHONY: build-installer
build-installer: ## Write dist/install.yaml: config/default in one file (image IMG, optional COMPONENTS).
	mkdir -p dist
	hack/render.sh --image $(IMG) $(addprefix --component ,$(COMPONENTS)) > dist/install.yaml.tmp
	mv dist/install.yaml.tmp dist/install.yaml
	@echo "Wrote dist/install.yaml (image $(IMG)); install with: kubectl apply --server-side -f dist/install.yaml"
