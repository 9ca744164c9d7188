#!/usr/bin/env bash
# Kubernetes-path benchmark of relayctl at fleet sizes no real test bed here
# can hold (1,000 and 10,000 clusters), against the SCALE SIMULATOR
# (tools/scale-sim): one process of ours answering the few API calls relayctl
# makes, for N+1 virtual clusters (mgmt, cluster-1..N), with LATENCY added per
# direction to every request (25ms: 50 ms round trip) and 4×LATENCY to every
# new TLS connection. BENCHMARKS ONLY: correctness is tested on real
# kube-apiservers (kube-env), never on the simulator; `cargo test` does not
# run this.
#
# For each N and each parallelism P, on a fresh namespace:
#   apply   relayctl apply --auto-approve            (first apply: everything created)
#   plan    relayctl plan --detailed-exitcode        (converged: exit 0)
#   drift   10 % of the clusters get one data key overwritten (by the
#           simulator itself, not timed), then relayctl apply repairs them
# each a whole process, wall time from `date +%s%N`, peak RSS from
# `/usr/bin/time -f %M`, and the requests the simulator answered during that
# command (total, per workload cluster, on mgmt, new TLS connections).
#
# Usage:  bench/kube-sim.sh [N...]          default: 1000 10000
# Env:    PARALLELISMS="16 64"  LATENCY=25ms  REPEATS=1
#         RELAYCTL_BIN  relayctl binary (default: `cargo build --release` of this
#                       checkout, CARGO_TARGET_DIR or ./target; copied so later
#                       edits cannot change it)
#         KUBECONFIG_SPLIT=K  give every manifest `spec.connection.kubeconfig.path`,
#                       a file of at most K workload contexts (mgmt in a file of
#                       its own) instead of one kubeconfig for the whole fleet.
#                       Default: 0 (one file of N+1 contexts, 2.9 MB at 10,000:
#                       read since 9097afe; before it, above 9,500 contexts
#                       kube's parser refused it as "not a valid kubeconfig").
#         RESULTS=FILE  also write the raw TSV there (and the load beside it)
#         WORK=DIR (default: a tempdir)  KEEP=1 keep WORK
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
sizes=("$@")
[[ ${#sizes[@]} -gt 0 ]] || sizes=(1000 10000)
pars=(${PARALLELISMS:-16 64})
latency=${LATENCY-25ms}
repeats=${REPEATS:-1}

work=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/relayctl-kube-sim.XXXXXX")}
mkdir -p "$work"
raw="$work/raw.tsv"
printf 'N\tlatency\tparallelism\top\trep\twall_ms\tpeak_rss_kib\trc\trequests\treq_per_workload\treq_mgmt\ttls_handshakes\tby_request_cluster-1\n' >"$raw"
sim_pid=""
cleanup() {
    [[ -z $sim_pid ]] || kill "$sim_pid" 2>/dev/null || true
    [[ -n ${KEEP:-} ]] || rm -rf "$work"
}
trap cleanup EXIT

if [[ -n ${RELAYCTL_BIN:-} ]]; then
    relayctl=$RELAYCTL_BIN
else
    echo "# building the release binary" >&2
    (cd "$repo" && cargo build --release --quiet --bin relayctl)
    cp "${CARGO_TARGET_DIR:-$repo/target}/release/relayctl" "$work/relayctl"
    relayctl="$work/relayctl"
fi
sim=$("$repo/tools/scale-sim/build.sh")
commit=$(cd "$repo" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
echo "# relayctl $relayctl (repo at $commit), scale-sim $sim, work $work" >&2
echo "# $(nproc) cores, $(awk '/MemTotal/ {print int($2/1024) " MiB"}' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# make_config DIR NAMESPACE N [KUBECONFIG_DIR SPLIT]: the `managed` example,
# N workloads, each reached through its kubeconfig context (as bench/kube.sh
# writes it); with SPLIT > 0, each manifest also names its kubeconfig file.
make_config() {
    local dir=$1 ns=$2 n=$3 kd=${4:-} split=${5:-0} i mpath="" wpath=""
    if ((split > 0)); then mpath="      path: $kd/mgmt\n"; fi
    rm -rf "$dir"
    mkdir -p "$dir"
    sed "s/^  namespace: gloo-mesh$/  namespace: $ns/" "$repo/examples/clusters/managed/relay-trust.yaml" >"$dir/relay-trust.yaml"
    grep -q "namespace: $ns" "$dir/relay-trust.yaml" || { echo "kube-sim.sh: could not set the namespace" >&2; exit 1; }
    printf "apiVersion: relayctl.dev/v1alpha1\nkind: ManagementCluster\nmetadata:\n  name: mgmt\nspec:\n  connection:\n    kubeconfig:\n      context: mgmt\n$mpath" >"$dir/mgmt.yaml"
    for ((i = 1; i <= n; i++)); do
        if ((split > 0)); then wpath="      path: $kd/part-$(((i - 1) / split))\n"; fi
        printf "apiVersion: relayctl.dev/v1alpha1\nkind: WorkloadCluster\nmetadata:\n  name: cluster-%d\nspec:\n  connection:\n    kubeconfig:\n      context: cluster-%d\n$wpath" "$i" "$i" >"$dir/cluster-$i.yaml"
    done
}

drifted_of() { # N -> cluster-1,cluster-11,... (ceil(N/10) of them)
    local n=$1 k i s=""
    k=$(((n + 9) / 10))
    for ((i = 1; i <= k; i++)); do s+="${s:+,}cluster-$((i * 10 - 9))"; done
    echo "$s"
}

# run N P OP REP WANT_RC CMD...: one timed process; appends a row to raw.tsv.
run() {
    local n=$1 p=$2 op=$3 rep=$4 want=$5 t0 t1 rc=0 rss counts
    shift 5
    curl -sf -X POST "http://$stats/reset" >/dev/null
    t0=$(date +%s%N)
    /usr/bin/time -f %M -o "$work/rss" "$@" >"$work/last.out" 2>"$work/last.err" || rc=$?
    t1=$(date +%s%N)
    rss=$(tail -1 "$work/rss")
    curl -sf "http://$stats/stats" >"$work/stats-$n-$p-$op-$rep.json"
    counts=$(jq -r '
        (.clusters | to_entries) as $e
        | ([$e[] | .value.requests] | add) as $t
        | ([$e[] | select(.key != "mgmt") | .value.requests] | add) as $w
        | ([$e[] | select(.key != "mgmt")] | length) as $k
        | [$t, (($w / $k) * 100 | round / 100), .clusters.mgmt.requests, .handshakes,
           (.clusters["cluster-1"].by | to_entries | map("\(.key)×\(.value)") | join(", "))] | @tsv' \
        "$work/stats-$n-$p-$op-$rep.json")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$latency" "$p" "$op" "$rep" "$(((t1 - t0) / 1000000))" "$rss" "$rc" "$counts" >>"$raw"
    echo "# N=$n P=$p $op rep $rep: $(((t1 - t0) / 1000000)) ms, peak RSS $rss KiB, rc $rc" >&2
    if [[ $rc != "$want" ]]; then
        echo "kube-sim.sh: [N=$n P=$p $op] exit $rc, expected $want: $*" >&2
        tail -20 "$work/last.err" >&2
        exit 1
    fi
}

for n in "${sizes[@]}"; do
    echo "# N=$n: starting the simulator ($((n + 1)) virtual clusters, $latency per direction)" >&2
    simdir="$work/sim-$n"
    split=${KUBECONFIG_SPLIT:-0}
    ((split == 0)) || echo "# N=$n: kubeconfig split into files of $split contexts" >&2
    "$sim" --clusters "$n" --latency "${latency:-0s}" --dir "$simdir" --split "$split" --stats 127.0.0.1:0 >"$work/sim-$n.out" 2>&1 &
    sim_pid=$!
    for _ in $(seq 100); do grep -qs '^ready$' "$work/sim-$n.out" && break; sleep 0.1; done
    grep -q '^ready$' "$work/sim-$n.out" || { echo "kube-sim.sh: simulator did not start:" >&2; cat "$work/sim-$n.out" >&2; exit 1; }
    stats=$(awk '$1 == "stats" { print $2 }' "$work/sim-$n.out")
    kc="$simdir/kubeconfig"
    drifted=$(drifted_of "$n")
    g=(--kubeconfig "$kc" --state-dir "$work/state" -q)
    for p in "${pars[@]}"; do
        for ((r = 1; r <= repeats; r++)); do
            ns="sim$n-p$p-r$r"
            make_config "$work/cfg" "$ns" "$n" "$simdir/kubeconfigs" "$split"
            echo "$n $p $r $(cut -d' ' -f1-3 /proc/loadavg)" >>"$work/load.txt"
            run "$n" "$p" apply "$r" 0 "$relayctl" apply "$work/cfg" --auto-approve --parallelism "$p" "${g[@]}"
            run "$n" "$p" plan "$r" 0 "$relayctl" plan "$work/cfg" --detailed-exitcode --parallelism "$p" "${g[@]}"
            m=$(curl -sf -X POST "http://$stats/mutate?namespace=$ns&clusters=$drifted")
            echo "# $m" >&2
            run "$n" "$p" drift "$r" 0 "$relayctl" apply "$work/cfg" --auto-approve --parallelism "$p" "${g[@]}"
            run "$n" "$p" check "$r" 0 "$relayctl" plan "$work/cfg" --detailed-exitcode --parallelism "$p" "${g[@]}"
        done
    done
    kill "$sim_pid" 2>/dev/null || true
    wait "$sim_pid" 2>/dev/null || true
    sim_pid=""
done

column -t -s $'\t' "$raw"
echo "# load (N P rep 1/5/15 min):" && cat "$work/load.txt"
if [[ -n ${RESULTS:-} ]]; then
    cp "$raw" "$RESULTS"
    cp "$work/load.txt" "${RESULTS%.tsv}.load.txt"
fi
