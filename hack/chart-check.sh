#!/usr/bin/env bash
# Lints and renders the Helm chart with Helm v4 (built from hack/helm as a Go
# tool, nothing downloaded from elsewhere): `helm lint --strict`, `helm
# template` with the defaults and with non-default values, and checks on what
# renders: its CRDs equal config/crd/bases, and no RBAC rule uses a wildcard.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

helm() { go tool -modfile=hack/helm/go.mod helm "$@"; }
chart=charts/sallyport
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "chart-check: helm lint --strict"
helm lint --strict "$chart"
helm lint --strict "$chart" --set replicaCount=3,leaderElection=true,metrics.secure=false,tokenIssuer.create=false,rbac.create=true

echo "chart-check: helm template (defaults, and non-default values)"
helm template sallyport "$chart" --namespace sallyport-system --include-crds >"$tmp/default.yaml"
helm template sp "$chart" --namespace ops \
	--set replicaCount=1,fullnameOverride=gate,tokenIssuer.create=false,podDisruptionBudget.enabled=false \
	--set serviceMonitor.enabled=true,networkPolicy.enabled=true,webhooks.policyFailurePolicy=Ignore \
	--set 'extraArgs={--zap-log-level=debug}' >"$tmp/custom.yaml"
grep -q 'name: gate' "$tmp/custom.yaml" || { echo "chart-check: fullnameOverride did not apply" >&2; exit 1; }
grep -q -- '--zap-log-level=debug' "$tmp/custom.yaml" || { echo "chart-check: extraArgs did not apply" >&2; exit 1; }
for kind in ServiceMonitor NetworkPolicy; do
	grep -q "^kind: $kind\$" "$tmp/custom.yaml" || { echo "chart-check: $kind not rendered when enabled" >&2; exit 1; }
	if grep -q "^kind: $kind\$" "$tmp/default.yaml"; then echo "chart-check: $kind rendered by default" >&2; exit 1; fi
done
grep -q 'failurePolicy: Ignore' "$tmp/custom.yaml" || { echo "chart-check: webhooks.policyFailurePolicy did not apply" >&2; exit 1; }

echo "chart-check: helm template with certManager.enabled"
helm template sallyport "$chart" --namespace sallyport-system --set certManager.enabled=true >"$tmp/certmanager.yaml"
for want in '^kind: Certificate$' '^kind: Issuer$' 'cert-manager.io/inject-ca-from: sallyport-system/sallyport-serving-cert' '--cert-management=external'; do
	grep -q -e "$want" "$tmp/certmanager.yaml" || { echo "chart-check: certManager.enabled renders no $want" >&2; exit 1; }
done
if grep -q -e '--cert-management=self' -e 'sallyport-certs' "$tmp/certmanager.yaml"; then
	echo "chart-check: certManager.enabled still renders the self-managed certificates' flags or RBAC" >&2
	exit 1
fi

echo "chart-check: the values schema refuses bad values"
for bad in webhooks.policyFailurePolicy=Sometimes replicaCount=0 ports.decision=70000 unknownKey=1 certManager.issuerRef.kind=Vault certManager.duration=90days usage.interval=often usage.window=30d; do
	if helm template sallyport "$chart" --set "$bad" >/dev/null 2>&1; then
		echo "chart-check: --set $bad rendered; values.schema.json should refuse it" >&2
		exit 1
	fi
done

echo "chart-check: the chart's CRDs equal config/crd/bases"
for f in config/crd/bases/*.yaml; do
	cmp -s "$f" "$chart/crds/$(basename "$f")" || { echo "chart-check: $chart/crds/$(basename "$f") differs from $f (run make manifests)" >&2; exit 1; }
done
if [[ $(find "$chart/crds" -name '*.yaml' | wc -l) -ne $(find config/crd/bases -name '*.yaml' | wc -l) ]]; then
	echo "chart-check: $chart/crds holds other files than config/crd/bases" >&2
	exit 1
fi

echo "chart-check: no wildcard in RBAC"
# Only Roles and ClusterRoles: a ValidatingAdmissionPolicy's apiVersions
# ["*"] means every version of one group, which is intended.
for f in "$tmp/default.yaml" config/rbac/*.yaml; do
	if awk '/^---/ { role = 0 } /^kind: (Cluster)?Role$/ { role = 1 } role && (/^[[:space:]]*-[[:space:]]*"?\*"?[[:space:]]*$/ || /\[[^]]*"\*"/) { print FILENAME ":" FNR ": " $0; found = 1 } END { exit !found }' "$f"; then
		echo "chart-check: wildcard in a Role or ClusterRole in $f" >&2
		exit 1
	fi
done
echo "chart-check: OK"
