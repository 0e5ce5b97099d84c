#!/usr/bin/env bash
# Control-plane benchmark on envtest (docs/benchmarks-controlplane.md says
# what it measures and holds the results): 1,000 policies applied at once
# until all are Ready, and the propagation latency of a changed rule to
# /v1/decide and to the status. A wrapper around
# `go run ./hack/bench/controlplane` that records the machine and its load,
# keeps the raw outputs as small text files and summarises the CPU profiles.
#
#   hack/bench/controlplane.sh [RESULTS_DIR] [-- flags of hack/bench/controlplane]
#
# RESULTS_DIR (default docs/bench-results/controlplane-<UTC date>) receives
# machine.txt, summary.txt (the printed table), the per-sample
# *.tsv files and cpu-*.top.txt (pprof -top of each phase). The binary
# profiles and the operator's log stay in a temporary directory, printed at
# the end. Flags after -- go to the program, e.g. `-- -changes 50`.
#
# The control plane's binaries come from hack/envtest.sh (built from Go
# modules on a machine's first run, about 6 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

results=docs/bench-results/controlplane-$(date -u +%F)
if [[ $# -gt 0 && $1 != -- ]]; then
	results=$1
	shift
fi
[[ ${1:-} == -- ]] && shift

work=$(mktemp -d "${TMPDIR:-/tmp}/sallyport-bench-controlplane.XXXXXX")
mkdir -p "$results"

# Build first, so the compile is not part of the measured run's load.
go build -o "$work/controlplane" ./hack/bench/controlplane

{
	echo "date:        $(date -u +%FT%TZ)"
	echo "commit:      $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
	echo "go:          $(go env GOVERSION)"
	echo "cpu:         $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
	echo "memory:      $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
	echo "kernel:      $(uname -sr)"
	echo "uptime before: $(uptime)"
} >"$results/machine.txt"

"$work/controlplane" -out "$work" -profile "$@"

echo "uptime after:  $(uptime)" >>"$results/machine.txt"
cp "$work"/summary.txt "$work"/*.tsv "$results/"
for p in "$work"/cpu-*.pprof; do
	[[ -e $p ]] || continue
	go tool pprof -top -nodecount=40 "$work/controlplane" "$p" >"$results/$(basename "${p%.pprof}").top.txt" 2>/dev/null
done
echo "results: $results; profiles and the operator log: $work" >&2
