#!/usr/bin/env bash
# Fails when generated code, manifests, formatting or module files are out of
# date: regenerates everything (make generate manifests), checks gofmt and
# `go mod tidy` for every module, then fails if the work tree changed.
#
# Run it on a clean work tree (commit or stash first): any difference from
# HEAD afterwards is reported, whether generation or you made it.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${root}"

failed=()
fail() {
	failed+=("$1")
	echo "verify: FAIL: $1" >&2
}

echo "verify: make generate manifests"
make --no-print-directory generate manifests

echo "verify: gofmt -s"
gofiles=()
while IFS= read -r f; do
	# Skip files deleted in the work tree.
	if [[ -f "${f}" ]]; then
		gofiles+=("${f}")
	fi
done < <(git ls-files --cached --others --exclude-standard -- '*.go')
if ((${#gofiles[@]} > 0)); then
	mapfile -t unformatted < <(gofmt -s -l -- "${gofiles[@]}")
	if ((${#unformatted[@]} > 0)); then
		printf '  %s\n' "${unformatted[@]}" >&2
		fail "files not formatted with gofmt -s (run 'make fmt'): ${unformatted[*]}"
	fi
fi

# The main module and the tool modules under hack/ (tools, lint, helm,
# kustomize, bench/stalls, envtest/*).
modules=(.)
for mod in hack/tools hack/lint hack/helm hack/kustomize hack/bench/stalls hack/envtest/*/; do
	mod="${mod%/}"
	if [[ -f "${mod}/go.mod" ]]; then
		modules+=("${mod}")
	fi
done
for mod in "${modules[@]}"; do
	echo "verify: go mod tidy -diff (${mod})"
	if ! (cd "${mod}" && go mod tidy -diff); then
		fail "${mod}/go.mod or go.sum is not tidy (run 'cd ${mod} && go mod tidy')"
	fi
done

echo "verify: work tree"
if ! git diff --quiet --exit-code; then
	git diff --stat >&2
	fail "tracked files differ from HEAD after generation: $(git diff --name-only | tr '\n' ' ')"
fi
mapfile -t untracked < <(git ls-files --others --exclude-standard -- api config charts)
if ((${#untracked[@]} > 0)); then
	printf '  %s\n' "${untracked[@]}" >&2
	fail "generation left untracked files under api/, config/ or charts/ (commit them or remove their source): ${untracked[*]}"
fi

if ((${#failed[@]} > 0)); then
	echo >&2
	echo "verify: ${#failed[@]} check(s) failed:" >&2
	printf '  - %s\n' "${failed[@]}" >&2
	exit 1
fi
echo "verify: OK"
