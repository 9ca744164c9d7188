#!/usr/bin/env bash
# Peak RSS of relayctl on the Kubernetes path, by fleet size and
# --parallelism: for each N, `kube-env up N+1`, then a first apply and a
# converged plan of the `managed` example (token mode) at each P, each in a
# fresh namespace, under GNU time (%M = peak RSS, KiB).
#
# Usage: bench/kube-rss.sh [N...]   default: 10 30
# Env:   PARALLELISMS="4 16"  RELAYCTL_BIN (default: cargo build --release)
#        KUBE_ENV (default: cargo run -p relayctl-kube-env --bin kube-env --)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
sizes=("$@")
[[ ${#sizes[@]} -gt 0 ]] || sizes=(10 30)
pars=(${PARALLELISMS:-4 16})
if [[ -n ${RELAYCTL_BIN:-} ]]; then
    relayctl=$RELAYCTL_BIN
else
    (cd "$repo" && cargo build --release --quiet --bin relayctl)
    relayctl="${CARGO_TARGET_DIR:-$repo/target}/release/relayctl"
fi
kube_env=${KUBE_ENV:-"cargo run -q --manifest-path $repo/Cargo.toml -p relayctl-kube-env --bin kube-env --"}
work=$(mktemp -d "${TMPDIR:-/tmp}/relayctl-kube-rss.XXXXXX")
env_dir=""
cleanup() {
    [[ -z $env_dir ]] || $kube_env down "$env_dir" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

make_config() { # DIR NAMESPACE N
    local dir=$1 ns=$2 n=$3 i
    rm -rf "$dir"
    mkdir -p "$dir"
    sed "s/^  namespace: gloo-mesh$/  namespace: $ns/" "$repo/examples/clusters/managed/relay-trust.yaml" >"$dir/relay-trust.yaml"
    printf 'apiVersion: relayctl.dev/v1alpha1\nkind: ManagementCluster\nmetadata:\n  name: mgmt\nspec:\n  connection:\n    kubeconfig:\n      context: mgmt\n' >"$dir/mgmt.yaml"
    for ((i = 1; i <= n; i++)); do
        printf 'apiVersion: relayctl.dev/v1alpha1\nkind: WorkloadCluster\nmetadata:\n  name: cluster-%d\nspec:\n  connection:\n    kubeconfig:\n      context: cluster-%d\n' "$i" "$i" >"$dir/cluster-$i.yaml"
    done
}

echo "| N | parallelism | first apply: peak RSS MiB | wall s | converged plan: peak RSS MiB | wall s |"
echo "|---:|---:|---:|---:|---:|---:|"
for n in "${sizes[@]}"; do
    env_dir="$work/kenv-$n"
    $kube_env up $((n + 1)) "$env_dir" >/dev/null 2>"$work/kube-env.log" || { cat "$work/kube-env.log" >&2; exit 1; }
    g=(--kubeconfig "$env_dir/kubeconfig" --state-dir "$work/state" -q)
    for p in "${pars[@]}"; do
        cfg="$work/cfg-$n-$p"
        make_config "$cfg" "rss-$n-$p" "$n"
        /usr/bin/time -f '%M %e' -o "$work/t" "$relayctl" apply "$cfg" --auto-approve --parallelism "$p" "${g[@]}" >/dev/null
        read -r a_rss a_wall <"$work/t"
        /usr/bin/time -f '%M %e' -o "$work/t" "$relayctl" plan "$cfg" --detailed-exitcode --parallelism "$p" "${g[@]}" >/dev/null
        read -r p_rss p_wall <"$work/t"
        printf '| %s | %s | %.1f | %s | %.1f | %s |\n' "$n" "$p" "$(echo "$a_rss / 1024" | bc -l)" "$a_wall" "$(echo "$p_rss / 1024" | bc -l)" "$p_wall"
    done
    $kube_env down "$env_dir" >/dev/null 2>&1 || true
    env_dir=""
done
