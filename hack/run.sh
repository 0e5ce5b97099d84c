#!/usr/bin/env bash
# `make run`: runs the manager (bin/sallyport, built by make build).
#
# With $KUBECONFIG set, it installs the CRDs into that cluster and runs the
# manager against it with the admission webhooks off (the API server could not
# reach them on this machine; the controllers still report a policy that does
# not compile as Ready=False).
#
# Without it, it starts the local control plane the tests use (hack/runlocal):
# kube-apiserver and etcd on loopback, the CRDs and webhooks installed, the
# samples applied, and the kubeconfig written to bin/local/kubeconfig.
#
# Extra arguments go to the manager: make run ARGS="--zap-log-level=debug".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -n "${KUBECONFIG:-}" ]]; then
	echo "run.sh: installing the CRDs into the cluster of \$KUBECONFIG ($KUBECONFIG)"
	kubectl apply --server-side --field-manager=sallyport-run -k config/crd
	exec bin/sallyport manager \
		--enable-webhooks=false \
		--metrics-bind-address=127.0.0.1:8080 \
		--health-probe-bind-address=127.0.0.1:8081 \
		--decision-bind-address=127.0.0.1:8443 \
		--grpc-bind-address=127.0.0.1:9001 \
		--decision-insecure \
		--shutdown-delay=0 \
		--zap-devel "$@"
fi

# The first run on a machine builds kube-apiserver (about 5 minutes on 2 cores).
hack/envtest.sh >/dev/null
go build -o bin/runlocal ./hack/runlocal
if (($# > 0)); then
	exec bin/runlocal -- "$@"
fi
exec bin/runlocal
