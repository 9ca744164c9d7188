#!/usr/bin/env bash
# Two relayctl binaries side by side on the same converged directory-backend
# fleet: `plan --detailed-exitcode` of NEW against OLD. Runs alternate
# (OLD, NEW, OLD, NEW, ...) so that the machine's drift hits both alike; the
# figure that counts is the median of the per-pair ratios NEW/OLD.
#
# Usage:  bench/before-after.sh OLD_BIN NEW_BIN [SIZES...]   default sizes: 1000 3000
# Env:    RUNS=7 SCENARIO=managed-preprovisioned
#
# The fleet is made once per size with NEW (`apply`), so both read the same
# state; both must find it converged (exit 0). Wall time is taken with
# `date +%s%N` around each process. Nothing is left behind.

set -euo pipefail

old=$(realpath "$1")
new=$(realpath "$2")
shift 2
sizes=("$@")
[[ ${#sizes[@]} -gt 0 ]] || sizes=(1000 3000)
runs=${RUNS:-7}
scenario=${SCENARIO:-managed-preprovisioned}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

ms() { # command... -> wall milliseconds on stdout; the command must exit 0
  local t0 t1
  t0=$(date +%s%N)
  "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000000))
}

printf 'scenario\tN\told_median_ms\tnew_median_ms\tmedian_ratio_new_old\tmin_ratio\tmax_ratio\n'
for n in "${sizes[@]}"; do
  config="$tmp/config-$n"
  state="$tmp/state-$n"
  mkdir -p "$config"
  cp "$repo/examples/clusters/$scenario"/*.yaml "$config/"
  for i in $(seq 3 "$n"); do
    printf 'apiVersion: relayctl.dev/v1alpha1\nkind: WorkloadCluster\nmetadata:\n  name: cluster-%s\n' "$i" >"$config/cluster-$i.yaml"
  done
  "$new" apply "$config" --auto-approve --state-dir "$state" -q >/dev/null
  olds=() news=()
  for _ in $(seq "$runs"); do
    olds+=("$(ms "$old" plan "$config" --detailed-exitcode --state-dir "$state")")
    news+=("$(ms "$new" plan "$config" --detailed-exitcode --state-dir "$state")")
  done
  python3 - "$scenario" "$n" "${olds[*]}" "${news[*]}" <<'PY'
import statistics, sys
scenario, n, olds, news = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
olds = [int(x) for x in olds]; news = [int(x) for x in news]
ratios = [b / a for a, b in zip(olds, news)]
print(f"{scenario}\t{n}\t{statistics.median(olds)}\t{statistics.median(news)}\t{statistics.median(ratios):.2f}\t{min(ratios):.2f}\t{max(ratios):.2f}")
PY
done
