#!/usr/bin/env bash
# Builds kube-bench into a cache outside the clone and prints the binary's path.
#
# The cache key is a digest over go.mod, go.sum, every .go file (names and
# contents) and the Go version, so any change builds afresh and an unchanged
# tree is a cache hit in milliseconds. The binary is built into a temporary
# directory that is renamed into place, so an interrupted build never leaves a
# half-written cache entry.
#
# Environment:
#   RELAYCTL_KUBE_BENCH_CACHE  cache root (default: ${XDG_CACHE_HOME:-~/.cache}/relayctl/kube-bench)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

digest=$(
  cd "$here"
  { go env GOVERSION 2>/dev/null || echo unknown-go; find . -name '*.go' -type f | LC_ALL=C sort | xargs sha256sum go.mod go.sum; } | sha256sum | cut -c1-16
)
cache_root="${RELAYCTL_KUBE_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/relayctl/kube-bench}"
dest="$cache_root/$digest"

if [ -x "$dest/kube-bench" ]; then
  echo "$dest/kube-bench"
  exit 0
fi

mkdir -p "$cache_root"
tmp=$(mktemp -d "$cache_root/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo "building kube-bench into $dest" >&2
(cd "$here" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp/kube-bench" .)
echo "built in $(( $(date +%s) - start ))s" >&2
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
echo "$dest/kube-bench"
