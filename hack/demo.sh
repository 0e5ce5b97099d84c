#!/usr/bin/env bash
# `make demo`: sallyport's two gates, end to end, on a laptop with no cluster.
#
# It builds bin/sallyport and bin/runlocal, starts the local control plane
# (kube-apiserver and etcd on loopback, the CRDs and webhooks installed, the
# manager serving the decision API without TLS on loopback), and applies the
# scenario in hack/demo/:
#
#   - billing/billing-worker may reach class "ledger" (ledger.read,
#     ledger.write, up to confidential data) through billing/billing-to-ledger;
#   - reports/report-builder may reach class "catalog" (catalog.read, public
#     data) through reports/reports-to-catalog, and class "ledger" (ledger.read,
#     up to internal data) through reports/reports-to-ledger;
#   - ledger/ledger-api (class ledger, confidential) denies every DELETE and
#     lets billing-to-ledger read and post entries; catalog/catalog-api (class
#     catalog, public) lets reports-to-catalog read anything.
#
# It then mints 10-minute tokens with `kubectl create token`, asks
# POST /v1/decide, and prints each answer with the gate, reason, policy and
# rule that decided it:
#
#   (a) billing-worker reads an entry of ledger-api:         ALLOWED (resource Matched, read-entries)
#   (b) report-builder uses its catalog token on ledger-api: connection ClassNotReachable
#   (c) billing-worker asks for scope ledger.admin:          connection ScopeNotReachable
#   (d) billing-worker deletes an entry:                     resource DeniedByRule (no-deletes)
#   (e) no token at all:                                     connection MissingCredential
#   (f) report-builder uses its ledger token on ledger-api:  connection ClassificationNotReachable
#   (g) report-builder reads catalog-api:                    ALLOWED (resource Matched, read-catalog)
#
# Then it shows the decision log lines of those decisions. Everything it
# started is stopped, and its temporary files removed, however it ends.
#
# The first run on a machine builds kube-apiserver and etcd from Go modules
# (hack/envtest.sh, about 5 minutes on 2 cores); later runs take seconds.
# Needs go, kubectl, curl and jq (installed with apt-get when missing and
# running as root on Debian). The ports are free loopback ports from
# DEMO_PORT_BASE (default 18080) upwards, so `make run` can keep running.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '\n==> %s\n' "$*"; }
die() {
	echo "demo.sh: $*" >&2
	exit 1
}

for tool in go kubectl curl; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done
if ! command -v jq >/dev/null 2>&1; then
	if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
		echo "demo.sh: installing jq from Debian's packages" >&2
		export DEBIAN_FRONTEND=noninteractive
		apt-get install -y --no-install-recommends jq >/dev/null 2>&1 ||
			{ apt-get update >/dev/null && apt-get install -y --no-install-recommends jq >/dev/null; }
	else
		die "jq is required (Debian: apt-get install jq)"
	fi
fi

# free_port prints the first port from $1 upwards that nothing on loopback
# listens on and that no earlier call handed out.
taken=" "
free_port() {
	local p=$1
	while [[ $taken == *" $p "* ]] || (: <"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do
		p=$((p + 1))
	done
	taken+="$p "
	echo "$p"
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sallyport-demo.XXXXXX")
runlocal_pid=""
cleanup() {
	local rc=$?
	if [[ -n $runlocal_pid ]] && kill -0 "$runlocal_pid" 2>/dev/null; then
		echo
		echo "==> Stopping the manager and the local control plane"
		kill -INT "$runlocal_pid" 2>/dev/null || true
		wait "$runlocal_pid" 2>/dev/null || true
	fi
	if ((rc != 0 && rc != 130 && rc != 143)) && [[ -s $tmp/runlocal.err ]]; then
		echo "demo.sh: failed; the last lines runlocal and the manager wrote:" >&2
		tail -n 30 "$tmp/runlocal.err" >&2
	fi
	rm -rf "$tmp"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "Building bin/sallyport and bin/runlocal"
echo "The first run on a machine also builds kube-apiserver and etcd (hack/envtest.sh): about 5 minutes on 2 cores."
make --no-print-directory build
go build -o bin/runlocal ./hack/runlocal
KUBEBUILDER_ASSETS=$(hack/envtest.sh)
export KUBEBUILDER_ASSETS

base=${DEMO_PORT_BASE:-18080}
decision_port=$(free_port "$base")
grpc_port=$(free_port "$((base + 1))")
probe_port=$(free_port "$((base + 2))")
metrics_port=$(free_port "$((base + 3))")
decide_url="http://127.0.0.1:$decision_port/v1/decide"
export KUBECONFIG=$tmp/kubeconfig

say "Starting the local control plane and the manager (output in $tmp)"
# The manager's stdout, and so the decision log (--decision-log=-), goes to
# runlocal's stdout.
bin/runlocal --samples=false \
	--kubeconfig-out "$KUBECONFIG" \
	--decision-bind-address "127.0.0.1:$decision_port" \
	--grpc-bind-address "127.0.0.1:$grpc_port" \
	--health-probe-bind-address "127.0.0.1:$probe_port" \
	--metrics-bind-address "127.0.0.1:$metrics_port" \
	--manager bin/sallyport \
	>"$tmp/runlocal.out" 2>"$tmp/runlocal.err" &
runlocal_pid=$!
for ((i = 0; ; i++)); do
	grep -q "sallyport is running" "$tmp/runlocal.out" && break
	kill -0 "$runlocal_pid" 2>/dev/null || die "runlocal exited before sallyport was running"
	((i < 600)) || die "sallyport was not running within 5 minutes"
	sleep 0.5
done
echo "Decision API at $decide_url"

say "Applying the scenario (hack/demo/)"
kubectl apply -f hack/demo/00-identities.yaml
kubectl apply -f hack/demo/10-connectionpolicies.yaml -f hack/demo/20-resourcepolicies.yaml
kubectl wait --for=condition=Ready --timeout=60s \
	-n billing connpol/billing-to-ledger
kubectl wait --for=condition=Ready --timeout=60s \
	-n reports connpol/reports-to-ledger connpol/reports-to-catalog
kubectl wait --for=condition=Ready --timeout=60s -n ledger respol/ledger-api
kubectl wait --for=condition=Ready --timeout=60s -n catalog respol/catalog-api
kubectl get connpol,respol -A

say "Minting 10-minute tokens, one per connection"
mint() { kubectl create token "$2" -n "$1" --audience "sallyport.dev/$1/$3" --duration 10m; }
billing_ledger=$(mint billing billing-worker billing-to-ledger)
reports_catalog=$(mint reports report-builder reports-to-catalog)
reports_ledger=$(mint reports report-builder reports-to-ledger)
echo "billing-worker  for billing/billing-to-ledger  (aud sallyport.dev/billing/billing-to-ledger)"
echo "report-builder  for reports/reports-to-catalog (aud sallyport.dev/reports/reports-to-catalog)"
echo "report-builder  for reports/reports-to-ledger  (aud sallyport.dev/reports/reports-to-ledger)"

# decide TOKEN NAMESPACE SERVICE ACTION PATH [SCOPE...] prints the answer of
# POST /v1/decide.
decide() {
	local token=$1 ns=$2 svc=$3 action=$4 name=$5
	shift 5
	jq -nc --arg token "$token" --arg ns "$ns" --arg svc "$svc" \
		--arg action "$action" --arg name "$name" --args '{
			credential: {token: $token},
			resource: {namespace: $ns, service: $svc, name: $name},
			action: $action,
			scopes: $ARGS.positional
		}' "$@" |
		curl -sS --fail-with-body "$decide_url" -H 'Content-Type: application/json' -d @-
}

# The policy snapshot the decision server serves follows the policies'
# status by a moment: ask until both policies of the first call are known.
for ((i = 0; ; i++)); do
	answer=$(decide "$billing_ledger" ledger ledger-api GET /entries/42 ledger.read)
	jq -e '.connection.reason != "NoConnectionPolicy" and .resource.reason != "NoResourcePolicy"' \
		<<<"$answer" >/dev/null && break
	((i < 40)) || die "the decision server did not serve the demo's policies within 20s: $answer"
	sleep 0.5
done

ids=()
# show LABEL ANSWER prints one line: the call, the verdict, the gate that
# decided it, the reason, and the policy and rule.
show() {
	local label=$1 answer=$2
	ids+=("$(jq -r .decisionID <<<"$answer")")
	jq -r --arg call "$label" '
		(if .connection.allowed | not then
			{gate: "connection", g: .connection}
		else
			{gate: "resource", g: .resource}
		end) as $d
		| "\($call)\n      -> \(if .allowed then "ALLOWED" else "DENIED " end)  gate=\($d.gate)  reason=\($d.g.reason)"
		  + "  policy=\($d.g.policy // "" | if . == "" then "-" else . end)"
		  + (if ($d.g.rule // "") != "" then "  rule=\($d.g.rule)" else "" end)
		  + (if .allowed then "  (connection \(.connection.policy))" else "" end)
		  + "\n      \($d.g.message // "")"
	' <<<"$answer"
}

say "Decisions (POST /v1/decide)"
show "(a) billing-worker  GET /entries/42 [ledger.read] on ledger/ledger-api" "$answer"
answer=$(decide "$reports_catalog" ledger ledger-api GET /entries/42 ledger.read)
show "(b) report-builder  GET /entries/42 [ledger.read] on ledger/ledger-api, with its token for reports-to-catalog" "$answer"
answer=$(decide "$billing_ledger" ledger ledger-api GET /entries/42 ledger.admin)
show "(c) billing-worker  GET /entries/42 [ledger.admin] on ledger/ledger-api" "$answer"
answer=$(decide "$billing_ledger" ledger ledger-api DELETE /entries/42 ledger.write)
show "(d) billing-worker  DELETE /entries/42 [ledger.write] on ledger/ledger-api" "$answer"
answer=$(decide "" ledger ledger-api GET /entries/42 ledger.read)
show "(e) no token        GET /entries/42 [ledger.read] on ledger/ledger-api" "$answer"
answer=$(decide "$reports_ledger" ledger ledger-api GET /entries/42 ledger.read)
show "(f) report-builder  GET /entries/42 [ledger.read] on ledger/ledger-api, with its token for reports-to-ledger" "$answer"
answer=$(decide "$reports_catalog" catalog catalog-api GET /products/7 catalog.read)
show "(g) report-builder  GET /products/7 [catalog.read] on catalog/catalog-api" "$answer"

say "The decision log lines of these decisions (--decision-log=-, the manager's stdout)"
ids_json=$(printf '%s\n' "${ids[@]}" | jq -Rsc 'split("\n") | map(select(. != ""))')
# log_lines prints the decision log lines of the decisions above.
log_lines() {
	{ grep '"schemaVersion"' "$tmp/runlocal.out" || true; } |
		jq -cR --argjson ids "$ids_json" 'fromjson? | select(.decisionID as $id | $ids | index($id))'
}
# Lines are written through a queue: wait until all of them are out.
for ((i = 0; ; i++)); do
	n=$(log_lines | wc -l)
	((n >= ${#ids[@]})) && break
	((i < 20)) || die "only $n of ${#ids[@]} decision log lines were written"
	sleep 0.25
done
log_lines | jq -c '{
	decisionID, allowed, identity, action, name: .target.name,
	connection: {policy: .connection.policy, reason: .connection.reason},
	resource: {policy: .resource.policy, reason: .resource.reason, rule: .resource.rule}
}'

echo
echo "Done. The scenario is in hack/demo/; the decision API is described in docs/decision-api.md."
