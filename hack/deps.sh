#!/usr/bin/env bash
# Installs the system programs the test suite drives, when they are missing:
# nginx (Debian's, built with auth_request) for the forward-auth test. Go
# tools and the control plane come from Go modules (hack/envtest.sh).
set -euo pipefail

need=()
if ! command -v nginx >/dev/null 2>&1 && [[ ! -x /usr/sbin/nginx ]]; then
	need+=(nginx)
fi
if ((${#need[@]} == 0)); then
	exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
	echo "deps.sh: missing ${need[*]}; install them (Debian: apt-get install ${need[*]})" >&2
	exit 1
fi
echo "deps.sh: installing ${need[*]} from Debian's packages" >&2
export DEBIAN_FRONTEND=noninteractive
# The package's service is not started here: the tests run their own nginx.
apt-get install -y --no-install-recommends "${need[@]}" >/dev/null 2>&1 ||
	{ apt-get update >/dev/null && apt-get install -y --no-install-recommends "${need[@]}" >/dev/null; }
