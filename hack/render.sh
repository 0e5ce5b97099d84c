#!/usr/bin/env bash
# Renders config/default with kustomize (built from hack/kustomize as a Go
# tool) to stdout, for make deploy and make build-installer:
#
#   hack/render.sh [--image IMG] [--component NAME]...
#
# --image sets the manager's image (default: the one config/manager names).
# --component enables an optional component of config/ (certmanager,
# prometheus, network-policy), as uncommenting it in
# config/default/kustomization.yaml would. The committed files are never
# edited: the work happens on a copy.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

image=""
components=()
while (($# > 0)); do
	case "$1" in
	--image) image="${2:?--image needs a value}"; shift 2 ;;
	--image=*) image="${1#--image=}"; shift ;;
	--component) components+=("${2:?--component needs a value}"); shift 2 ;;
	--component=*) components+=("${1#--component=}"); shift ;;
	*) echo "render: unknown argument $1 (use --image IMG, --component NAME)" >&2; exit 2 ;;
	esac
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Built once into the temporary directory (from the build cache after the
# first time): `kustomize edit` works in the current directory, which `go
# tool` would have to be run from the module root for.
go -C "$root" build -modfile=hack/kustomize/go.mod -o "$tmp/kustomize" sigs.k8s.io/kustomize/kustomize/v5
kustomize() { "$tmp/kustomize" "$@"; }
cp -R "$root/config" "$tmp/config"

if [[ -n "$image" ]]; then
	(cd "$tmp/config/manager" && kustomize edit set image "controller=${image}")
fi
for c in "${components[@]}"; do
	if [[ ! -f "$tmp/config/$c/kustomization.yaml" ]]; then
		echo "render: no component config/$c" >&2
		exit 2
	fi
	(cd "$tmp/config/default" && kustomize edit add component "../$c")
done
kustomize build "$tmp/config/default"
