#!/usr/bin/env bash
# Builds scale-sim (benchmark-only Kubernetes API simulator) into a cache
# outside the clone and prints the binary's path. Same scheme as
# tools/kube-bench/build.sh: the cache key digests the Go version, go.mod,
# go.sum (when there is one; the module has no dependencies today) and every
# .go file, so an unchanged tree is a hit in milliseconds and an interrupted
# build never leaves a half-written entry (built in a temp dir, then renamed).
#
# Environment:
#   RELAYCTL_SCALE_SIM_CACHE  cache root (default: ${XDG_CACHE_HOME:-~/.cache}/relayctl/scale-sim)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

digest=$(
  cd "$here"
  sums=(go.mod)
  [ -f go.sum ] && sums+=(go.sum)
  { go env GOVERSION 2>/dev/null || echo unknown-go; find . -name '*.go' -type f | LC_ALL=C sort | xargs sha256sum "${sums[@]}"; } | sha256sum | cut -c1-16
)
cache_root="${RELAYCTL_SCALE_SIM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/relayctl/scale-sim}"
dest="$cache_root/$digest"

if [ -x "$dest/scale-sim" ]; then
  echo "$dest/scale-sim"
  exit 0
fi

mkdir -p "$cache_root"
tmp=$(mktemp -d "$cache_root/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo "building scale-sim into $dest" >&2
(cd "$here" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp/scale-sim" .)
echo "built in $(( $(date +%s) - start ))s" >&2
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
echo "$dest/scale-sim"
