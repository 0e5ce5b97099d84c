#!/usr/bin/env bash
# Copies the generated CRDs (config/crd/bases, written by `make manifests`)
# into the Helm chart's crds/ directory, which Helm installs before the
# templates and never templates. CRDs that no longer exist in config/ are
# removed from the chart. Idempotent; runs from any directory.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="${root}/config/crd/bases"
dst="${root}/charts/sallyport/crds"

if [[ ! -d "${src}" ]]; then
	echo "sync-chart-crds: ${src#"${root}/"} does not exist; run 'make manifests' first" >&2
	exit 1
fi

shopt -s nullglob
crds=("${src}"/*.yaml)
if ((${#crds[@]} == 0)); then
	echo "sync-chart-crds: no CRDs in ${src#"${root}/"}; run 'make manifests' first" >&2
	exit 1
fi

mkdir -p "${dst}"

# Remove CRDs the chart carries but config/ no longer generates.
for f in "${dst}"/*.yaml "${dst}"/*.yml; do
	if [[ ! -e "${src}/$(basename "${f}")" ]]; then
		rm -f -- "${f}"
		echo "sync-chart-crds: removed stale ${f#"${root}/"}"
	fi
done

# Copy new and changed CRDs; leave identical files alone so timestamps (and
# make) stay quiet.
for f in "${crds[@]}"; do
	out="${dst}/$(basename "${f}")"
	if [[ ! -f "${out}" ]] || ! cmp -s -- "${f}" "${out}"; then
		cp -- "${f}" "${out}"
		echo "sync-chart-crds: updated ${out#"${root}/"}"
	fi
done
