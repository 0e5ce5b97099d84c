#!/usr/bin/env bash
# `make test`: the whole suite, unit and envtest, against a real
# kube-apiserver and etcd built from Go modules by hack/envtest.sh (once per
# machine; later runs reuse the cached binaries).
#
# TEST_FLAGS (default -race) and TEST_TIMEOUT (default 30m) tune `go test`;
# extra arguments replace the package list: hack/test.sh ./internal/...
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

hack/deps.sh
KUBEBUILDER_ASSETS=$(hack/envtest.sh)
export KUBEBUILDER_ASSETS
echo "test.sh: KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"

go vet ./...

pkgs=("$@")
whole=0
if ((${#pkgs[@]} == 0)); then
	pkgs=(./...)
	whole=1
fi
# shellcheck disable=SC2086 # TEST_FLAGS is a list of flags.
go test ${TEST_FLAGS:--race} -timeout "${TEST_TIMEOUT:-30m}" "${pkgs[@]}"

# The trace tool of the load runs is a module of its own, outside ./...
if ((whole)); then
	# shellcheck disable=SC2086 # TEST_FLAGS is a list of flags.
	(cd hack/bench/stalls && go vet ./... && go test ${TEST_FLAGS:--race} ./...)
fi
