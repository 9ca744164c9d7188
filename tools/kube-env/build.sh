#!/usr/bin/env bash
# Builds kube-apiserver, kubectl and etcd from Go modules into a cache outside
# the clone, and prints the directory that holds them.
#
# The cache key is the versions plus a digest of both go.sum files, so a bump
# or a changed dependency builds afresh and an unchanged tree is a cache hit in
# well under a second. Binaries are built into a temporary directory and moved
# into place with one rename, so an interrupted build never leaves a half cache.
#
# Environment:
#   RELAYCTL_KUBE_ENV_CACHE  cache root (default: ${XDG_CACHE_HOME:-~/.cache}/relayctl/kube-env)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/versions.env"

digest=$(cat "$here/apiserver/go.sum" "$here/etcd/go.sum" "$here/versions.env" | sha256sum | cut -c1-12)
cache_root="${RELAYCTL_KUBE_ENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/relayctl/kube-env}"
dest="$cache_root/k8s-${KUBERNETES_VERSION}_etcd-${ETCD_VERSION}_${digest}"

if [ -x "$dest/kube-apiserver" ] && [ -x "$dest/kubectl" ] && [ -x "$dest/etcd" ]; then
  echo "$dest"
  exit 0
fi

mkdir -p "$cache_root"
tmp=$(mktemp -d "$cache_root/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)

k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=v${KUBERNETES_VERSION}"
  k8s_ldflags+=" -X $pkg.gitMajor=${KUBERNETES_VERSION%%.*}"
  minor=${KUBERNETES_VERSION#*.}; k8s_ldflags+=" -X $pkg.gitMinor=${minor%%.*}"
  k8s_ldflags+=" -X $pkg.gitTreeState=clean"
done

export CGO_ENABLED=0
echo "building kube-apiserver and kubectl ${KUBERNETES_VERSION}, etcd ${ETCD_VERSION} into $dest" >&2
(cd "$here/apiserver" && go build -trimpath -ldflags "$k8s_ldflags" -o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver)
(cd "$here/apiserver" && go build -trimpath -ldflags "$k8s_ldflags" -o "$tmp/kubectl" k8s.io/kubernetes/cmd/kubectl)
(cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" .)

echo "built in $(( $(date +%s) - start ))s" >&2
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
echo "$dest"
