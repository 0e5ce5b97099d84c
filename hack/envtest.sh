#!/usr/bin/env bash
# Builds the envtest control plane (kube-apiserver and etcd) from Go modules and
# prints the directory to use as KUBEBUILDER_ASSETS.
#
# Nothing is downloaded from outside the Go module proxy. The binaries are
# cached per machine, outside the repository, under a key made of the versions,
# the platform and the tool modules' go.sum, so a second run does not rebuild
# and a change of version does. Concurrent callers (parallel test packages)
# serialise on a lock and share one build.
set -euo pipefail

KUBE_VERSION=v1.37.2
ETCD_VERSION=v3.6.16

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${SALLYPORT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sallyport}

# The versions above are the ones the tool modules pin; refuse to build a
# binary whose stamp would lie about what it is.
grep -Eq "k8s.io/kubernetes ${KUBE_VERSION}( |\$)" "$here/envtest/kube-apiserver/go.mod" ||
	{ echo "envtest.sh: hack/envtest/kube-apiserver/go.mod does not require k8s.io/kubernetes ${KUBE_VERSION}" >&2; exit 1; }
grep -Eq "go.etcd.io/etcd/server/v3 ${ETCD_VERSION}( |\$)" "$here/envtest/etcd/go.mod" ||
	{ echo "envtest.sh: hack/envtest/etcd/go.mod does not require etcd ${ETCD_VERSION}" >&2; exit 1; }

sum=$(cat "$here/envtest/kube-apiserver/go.sum" "$here/envtest/etcd/go.sum" | sha256sum | cut -c1-12)
dir="$cache_root/envtest/k8s-${KUBE_VERSION}-etcd-${ETCD_VERSION}-$(go env GOOS)-$(go env GOARCH)-${sum}"

if [[ -x "$dir/kube-apiserver" && -x "$dir/etcd" ]]; then
	echo "$dir"
	exit 0
fi

mkdir -p "$cache_root/envtest"
exec 9>"$cache_root/envtest/.lock"
flock 9
if [[ -x "$dir/kube-apiserver" && -x "$dir/etcd" ]]; then
	echo "$dir"
	exit 0
fi

tmp=$(mktemp -d "$cache_root/envtest/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

echo "envtest.sh: building etcd ${ETCD_VERSION} (under a minute the first time)" >&2
(cd "$here/envtest/etcd" && CGO_ENABLED=0 go build -trimpath \
	-ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=${ETCD_VERSION}" \
	-o "$tmp/etcd" .)

minor=${KUBE_VERSION#v1.}
minor=${minor%%.*}
echo "envtest.sh: building kube-apiserver ${KUBE_VERSION} (about 5 minutes on 2 cores the first time)" >&2
(cd "$here/envtest/kube-apiserver" && CGO_ENABLED=0 go build -trimpath \
	-ldflags "-s -w -X k8s.io/component-base/version.gitVersion=${KUBE_VERSION} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor} -X k8s.io/component-base/version.gitTreeState=clean" \
	-o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver)

# Publish atomically: a reader sees both binaries or neither.
rm -rf "$dir"
mv "$tmp" "$dir"
trap - EXIT
echo "$dir"
