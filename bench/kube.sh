#!/usr/bin/env bash
# Kubernetes-path benchmark of relayctl: real kube-apiservers (kube-env), the
# `managed` example in token mode with N workload clusters, relayctl side by
# side with the raw client-go ceiling (tools/kube-bench) and with the
# OpenSSL + kubectl procedure a user would script (bench/kube-manual.sh).
#
# For each N it starts `kube-env up N+1` (mgmt + cluster-1..N), writes one
# config per fresh namespace (each context reached through
# `spec.connection.kubeconfig.context`), and runs, REPEATS times, interleaved
# (the tools take turns within each repetition, the starting tool rotating),
# every measured command as a whole process (wall time from `date +%s%N`):
#
#   op         relayctl                           ceiling (kube-bench ceiling)          kubectl (kube-manual.sh)
#   apply      apply --auto-approve, fresh ns     --op create; +observe: --observe;     create, fresh ns
#                                                 +observe +lock: --observe --lock
#   plan       plan --detailed-exitcode (rc 0)    --op list                             get
#   drift      mutate 10% tokens, then apply      mutate, then --op update [--lock]     -
#
# (mutations are not timed; "ceiling" is the bare writes, "+observe +lock" the
# least a tool with relayctl's safety must do: one LIST per cluster and a
# Lease on mgmt around the run), plus `ceiling --op none` (process start-up
# only). Then, once per tool and op, the same command
# through the L7 counting proxy (kube-bench proxy --l7) for HTTP requests
# per cluster. At LATENCY_AT (default the largest N) the same again through
# L4 proxies adding LATENCY per direction, with relayctl and the ceiling at
# each of PARALLELISMS; and at THROTTLE_AT (default the first N) a run
# through an L7 proxy answering every THROTTLE_EVERY-th request with 429 and
# `Retry-After: RETRY_AFTER`, reporting the client's wait before the retry.
#
# Usage:  bench/kube.sh [N...]                default: 10 15
# Env:    REPEATS=5  PARALLELISM=16  PARALLELISMS="1 4 16 64"  LATENCY=25ms (empty: skip)
#         LATENCY_AT=<N>  LATENCY_REPEATS=3  THROTTLE_AT=<N> (0: skip)  THROTTLE_EVERY=5  RETRY_AFTER=1
#         RELAYCTL_BIN  (default: `cargo build --release`, binary copied so later edits cannot change it)
#         RELAYCTL_COMMIT  what to print as the binary's commit (default: the repo's HEAD)
#         BASELINE_BIN  a second relayctl (e.g. a release build of an older commit), run
#                       as tool `relayctl-before` beside relayctl in every repetition, so
#                       that before/after ratios come from one run; BASELINE_COMMIT labels it
#         KUBE_ENV      (default: `cargo run -q -p relayctl-kube-env --bin kube-env --`)
#         KUBECTL       (default: `tools/kube-env/build.sh`/kubectl)
#         WORK=DIR (default: a tempdir)  KEEP=1 (keep WORK; apiservers are always stopped)
#         RESULTS=FILE  also write the raw TSV there
#
#         KUBE_ENV_MAX_APISERVERS=64  what KUBE_ENV's `up` accepts
#
# kube-env accepts at most 64 apiservers (N <= 63); each needs ~200 MiB.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
sizes=("$@")
[[ ${#sizes[@]} -gt 0 ]] || sizes=(10 15)
repeats=${REPEATS:-5}
par=${PARALLELISM:-16}
pars=(${PARALLELISMS:-1 4 16 64})
latency=${LATENCY-25ms}
lat_repeats=${LATENCY_REPEATS:-3}
largest=0
for n in "${sizes[@]}"; do ((n > largest)) && largest=$n; done
lat_at=${LATENCY_AT:-$largest}
thr_at=${THROTTLE_AT:-${sizes[0]}}
thr_every=${THROTTLE_EVERY:-5}
retry_after=${RETRY_AFTER:-1}
max_apiservers=${KUBE_ENV_MAX_APISERVERS:-64}
for n in "${sizes[@]}"; do
    if ((n + 1 > max_apiservers)); then
        echo "kube.sh: N=$n needs $((n + 1)) apiservers; kube-env up accepts at most $max_apiservers (crates/kube-env/src/main.rs, value_parser range 1..=64; KUBE_ENV_MAX_APISERVERS=M with a KUBE_ENV that accepts M)" >&2
        exit 2
    fi
done

work=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/relayctl-kube-bench.XXXXXX")}
mkdir -p "$work"
raw="$work/raw.tsv"
counts="$work/counts.tsv"
: >"$raw"
: >"$counts"
envs=()
proxy_pids=()
cleanup() {
    for p in "${proxy_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for e in "${envs[@]}"; do $kube_env down "$e" >/dev/null 2>&1 || true; done
    [[ -n ${KEEP:-} ]] || rm -rf "$work"
}
trap cleanup EXIT

# ---- tools ----
if [[ -n ${RELAYCTL_BIN:-} ]]; then
    relayctl=$RELAYCTL_BIN
else
    echo "# building the release binary" >&2
    (cd "$repo" && cargo build --release --quiet --bin relayctl)
    cp "${CARGO_TARGET_DIR:-$repo/target}/release/relayctl" "$work/relayctl"
    relayctl="$work/relayctl"
fi
kube_env=${KUBE_ENV:-"cargo run -q --manifest-path $repo/Cargo.toml -p relayctl-kube-env --bin kube-env --"}
kubectl=${KUBECTL:-"$("$repo/tools/kube-env/build.sh")/kubectl"}
kb=$("$repo/tools/kube-bench/build.sh")
manual="$repo/bench/kube-manual.sh"
commit=${RELAYCTL_COMMIT:-$(cd "$repo" && git rev-parse --short HEAD 2>/dev/null || echo unknown)}
base=${BASELINE_BIN:-}
base_commit=${BASELINE_COMMIT:-baseline}
echo "# relayctl $relayctl (repo at $commit), kube-bench $kb, kubectl $kubectl" >&2
[[ -n $base ]] && echo "# relayctl-before $base ($base_commit)" >&2
echo "# work dir $work" >&2
cd "$work"

# ---- helpers ----
# make_config DIR NAMESPACE N [directory]: the managed example, N workloads,
# each reached through its kubeconfig context (or the directory backend).
make_config() {
    local dir=$1 ns=$2 n=$3 backend=${4:-kube} i conn
    rm -rf "$dir"
    mkdir -p "$dir"
    sed "s/^  namespace: gloo-mesh$/  namespace: $ns/" "$repo/examples/clusters/managed/relay-trust.yaml" >"$dir/relay-trust.yaml"
    grep -q "namespace: $ns" "$dir/relay-trust.yaml" || { echo "kube.sh: could not set the namespace in relay-trust.yaml" >&2; exit 1; }
    conn() { [[ $backend == kube ]] && printf 'spec:\n  connection:\n    kubeconfig:\n      context: %s\n' "$1"; true; }
    { printf 'apiVersion: relayctl.dev/v1alpha1\nkind: ManagementCluster\nmetadata:\n  name: mgmt\n'; conn mgmt; } >"$dir/mgmt.yaml"
    for ((i = 1; i <= n; i++)); do
        { printf 'apiVersion: relayctl.dev/v1alpha1\nkind: WorkloadCluster\nmetadata:\n  name: cluster-%d\n' "$i"; conn "cluster-$i"; } >"$dir/cluster-$i.yaml"
    done
}

contexts_of() { # N -> mgmt,cluster-1,...
    local n=$1 i s=mgmt
    for ((i = 1; i <= n; i++)); do s+=",cluster-$i"; done
    echo "$s"
}

drifted_of() { # N -> cluster-1,cluster-11,... (ceil(N/10) of them)
    local n=$1 k i s=""
    k=$(((n + 9) / 10))
    for ((i = 1; i <= k; i++)); do s+="${s:+,}cluster-$((i * 10 - 9))"; done
    echo "$s"
}

# run KEY EXPECTED_RC CMD...: one timed whole-process run, appended to raw.tsv
# as N net P tool op rep wall_us rc inproc_us (the ceiling's own figure from
# its first client to its last answer, without process start-up; else -).
# KEY = "N net P tool op rep".
run() {
    local key=$1 want=$2 t0 t1 rc=0 inproc
    shift 2
    t0=$(date +%s%N)
    "$@" >"$work/last.out" 2>"$work/last.err" || rc=$?
    t1=$(date +%s%N)
    inproc=$(sed -n 's/.* wall_ms=\([0-9.]*\) .*/\1/p' "$work/last.out" | awk '{ printf "%.0f", $1 * 1000 }')
    printf '%s\t%s\t%s\t%s\n' "$(tr ' ' '\t' <<<"$key")" "$(((t1 - t0) / 1000))" "$rc" "${inproc:--}" >>"$raw"
    if [[ $rc != "$want" ]]; then
        echo "kube.sh: [$key] exit $rc, expected $want: $*" >&2
        tail -20 "$work/last.err" >&2
        exit 1
    fi
}

# start_proxy NAME KUBECONFIG ARGS...: a kube-bench proxy for every context;
# sets proxy_kc (its kubeconfig) and proxy_stats (stats address, L7 only).
start_proxy() {
    local name=$1 kc=$2
    shift 2
    local out="$work/proxy-$name.out"
    "$kb" proxy --kubeconfig "$kc" --out-kubeconfig "$work/kubeconfig-$name" "$@" >"$out" 2>&1 &
    proxy_pids+=($!)
    for _ in $(seq 100); do grep -qs '^ready$' "$out" && break; sleep 0.1; done
    grep -q '^ready$' "$out" || { echo "kube.sh: proxy $name did not start:" >&2; cat "$out" >&2; exit 1; }
    proxy_kc="$work/kubeconfig-$name"
    proxy_stats=$(awk '$1 == "stats" { print $2 }' "$out")
}

stop_proxies() {
    for p in "${proxy_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    proxy_pids=()
}

# record_counts N TOOL OP: per-cluster request counts from the L7 proxy into counts.tsv.
record_counts() {
    local n=$1 tool=$2 op=$3
    curl -sf "http://$proxy_stats/stats" >"$work/stats.json"
    curl -sf "http://$proxy_stats/log" >"$work/log-$n-$tool-$op.jsonl"
    jq -r --arg n "$n" --arg tool "$tool" --arg op "$op" '
        (.mgmt.requests) as $m
        | ([to_entries[] | select(.key != "mgmt") | .value.requests] | add) as $w
        | ([to_entries[] | select(.key != "mgmt")] | length) as $k
        | ([to_entries[] | .value.connections] | add) as $c
        | (.mgmt.connections) as $mc
        | ([to_entries[] | .value.requests] | add) as $t
        | [$n, $tool, $op, $m, ($w / $k), $t, "\($c) (mgmt \($mc))",
           (.mgmt.by | to_entries | map("\(.key)×\(.value)") | join(", ")),
           (.["cluster-1"].by | to_entries | map("\(.key)×\(.value)") | join(", "))] | @tsv' \
        "$work/stats.json" >>"$counts"
    curl -sf -X POST "http://$proxy_stats/reset" >/dev/null
}

# ---- per fleet size ----
for n in "${sizes[@]}"; do
    echo "# N=$n: starting kube-env with $((n + 1)) apiservers" >&2
    env_dir="$work/kenv-$n"
    t0=$(date +%s)
    $kube_env up $((n + 1)) "$env_dir" >/dev/null 2>"$work/kube-env-$n.log" || { cat "$work/kube-env-$n.log" >&2; exit 1; }
    envs+=("$env_dir")
    echo "# N=$n: up in $(($(date +%s) - t0)) s" >&2
    kc="$env_dir/kubeconfig"
    ctxs=$(contexts_of "$n")
    IFS=, read -r -a ctx_arr <<<"$ctxs"
    drifted=$(drifted_of "$n")

    # The bytes relayctl writes, for the ceiling: one apply on the directory backend.
    make_config "$work/cfg-payload" gloo-mesh "$n" directory
    "$relayctl" apply "$work/cfg-payload" --auto-approve --state-dir "$work/payload-state" -q >/dev/null

    g=(--kubeconfig "$kc" --state-dir "$work/state" -q)
    # A fresh namespace name per call (a file counter: callers use $(fresh ...)).
    echo 0 >"$work/ns-seq"
    fresh() {
        local k
        k=$(($(cat "$work/ns-seq") + 1))
        echo "$k" >"$work/ns-seq"
        echo "b$n-$1-$k"
    }

    # Warm-up (not recorded): page cache, kubectl's discovery cache, apiserver caches.
    ns=$(fresh w)
    make_config "$work/cfg" "$ns" "$n"
    "$relayctl" apply "$work/cfg" --auto-approve --parallelism "$par" "${g[@]}" >/dev/null
    "$kb" ceiling --kubeconfig "$kc" --contexts "$ctxs" --namespace "$(fresh w)" --parallelism "$par" --op create --payloads "$work/payload-state" -q >/dev/null
    "$manual" create "$kubectl" "$kc" "$(fresh w)" "${ctx_arr[@]}"

    # The converged namespace that plan, list and drift work on.
    conv=$(fresh conv)
    make_config "$work/cfg-conv" "$conv" "$n"
    "$relayctl" apply "$work/cfg-conv" --auto-approve --parallelism "$par" "${g[@]}" >/dev/null

    echo "# N=$n: $repeats interleaved repetitions" >&2
    for ((r = 1; r <= repeats; r++)); do
        echo "$n $r $(cut -d' ' -f1-3 /proc/loadavg)" >>"$work/load.txt"
        for ((s = 0; s < 7; s++)); do
            case $(((r + s) % 7)) in
            0)
                ns=$(fresh ra)
                make_config "$work/cfg-$r" "$ns" "$n"
                run "$n local $par relayctl apply $r" 0 "$relayctl" apply "$work/cfg-$r" --auto-approve --parallelism "$par" "${g[@]}"
                ;;
            1) run "$n local $par ceiling apply $r" 0 "$kb" ceiling --kubeconfig "$kc" --contexts "$ctxs" --namespace "$(fresh ca)" --parallelism "$par" --op create --payloads "$work/payload-state" -q ;;
            2) run "$n local $par ceiling-observe apply $r" 0 "$kb" ceiling --kubeconfig "$kc" --contexts "$ctxs" --namespace "$(fresh co)" --parallelism "$par" --op create --observe --payloads "$work/payload-state" -q ;;
            3) run "$n local 1 kubectl apply $r" 0 "$manual" create "$kubectl" "$kc" "$(fresh ka)" "${ctx_arr[@]}" ;;
            4) run "$n local $par ceiling-startup none $r" 0 "$kb" ceiling --kubeconfig "$kc" --contexts "$ctxs" --parallelism "$par" --op none -q ;;
            5) run "$n local $par ceiling-safe apply $r" 0 "$kb" ceiling --kubeconfig "$kc" --contexts "$ctxs" --namespace "$(fresh cs)" --parallelism "$par" --op create --observe --lock --payloads "$work/payload-state" -q ;;
            6)
                [[ -n $base ]] || continue
                ns=$(fresh rb)
                make_config "$work/cfg-b$r" "$ns" "$n"
                run "$n local $par relayctl-before apply $r" 0 "$base" apply "$work/cfg-b$r" --auto-approve --parallelism "$par" "${g[@]}"
                ;;
            esac
        done
        for ((s = 0; s < 4; s++)); do
            case $(((r + s) % 4)) in
            3) [[ -z $base ]] || run "$n local $par relayctl-before plan $r" 0 "$base" plan "$work/cfg-conv" --detailed-exitcode --parallelism "$par" "${g[@]}" ;;
            0) run "$n local $par relayctl plan $r" 0 "$relayctl" plan "$work/cfg-conv" --detailed-exitcode --parallelism "$par" "${g[@]}" ;;
            1) run "$n local $par ceiling plan $r" 0 "$kb" ceiling --kubeconfig "$kc" --contexts "$ctxs" --namespace "$conv" --parallelism "$par" --op list -q ;;
            2) run "$n local 1 kubectl plan $r" 0 "$manual" get "$kubectl" "$kc" "$conv" "${ctx_arr[@]}" ;;
            esac
        done
        # Drift: the ceilings repair first, relayctl last, so the namespace ends converged.
        "$kb" mutate --kubeconfig "$kc" --contexts "$drifted" --namespace "$conv"
        run "$n local $par ceiling drift $r" 0 "$kb" ceiling --kubeconfig "$kc" --contexts "$ctxs" --namespace "$conv" --parallelism "$par" --op update -q
        "$kb" mutate --kubeconfig "$kc" --contexts "$drifted" --namespace "$conv"
        run "$n local $par ceiling-safe drift $r" 0 "$kb" ceiling --kubeconfig "$kc" --contexts "$ctxs" --namespace "$conv" --parallelism "$par" --op update --lock -q
        if [[ -n $base ]]; then
            "$kb" mutate --kubeconfig "$kc" --contexts "$drifted" --namespace "$conv"
            run "$n local $par relayctl-before drift $r" 0 "$base" apply "$work/cfg-conv" --auto-approve --parallelism "$par" "${g[@]}"
        fi
        "$kb" mutate --kubeconfig "$kc" --contexts "$drifted" --namespace "$conv"
        run "$n local $par relayctl drift $r" 0 "$relayctl" apply "$work/cfg-conv" --auto-approve --parallelism "$par" "${g[@]}"
    done
    run "$n local $par relayctl check 1" 0 "$relayctl" plan "$work/cfg-conv" --detailed-exitcode "${g[@]}"

    # Requests per cluster, through the counting proxy.
    echo "# N=$n: counting requests through the L7 proxy" >&2
    start_proxy "count-$n" "$kc" --l7 --stats 127.0.0.1:0
    pk=$proxy_kc
    gp=(--kubeconfig "$pk" --state-dir "$work/state" -q)
    ns=$(fresh cnt)
    make_config "$work/cfg-cnt" "$ns" "$n"
    curl -sf -X POST "http://$proxy_stats/reset" >/dev/null
    "$relayctl" apply "$work/cfg-cnt" --auto-approve --parallelism "$par" "${gp[@]}" >/dev/null
    record_counts "$n" relayctl apply
    "$relayctl" plan "$work/cfg-cnt" --detailed-exitcode --parallelism "$par" "${gp[@]}" >/dev/null
    record_counts "$n" relayctl plan
    "$kb" mutate --kubeconfig "$kc" --contexts "$drifted" --namespace "$ns"
    curl -sf -X POST "http://$proxy_stats/reset" >/dev/null
    "$relayctl" apply "$work/cfg-cnt" --auto-approve --parallelism "$par" "${gp[@]}" >/dev/null
    record_counts "$n" relayctl drift
    if [[ -n $base ]]; then
        ns=$(fresh cntb)
        make_config "$work/cfg-cntb" "$ns" "$n"
        curl -sf -X POST "http://$proxy_stats/reset" >/dev/null
        "$base" apply "$work/cfg-cntb" --auto-approve --parallelism "$par" "${gp[@]}" >/dev/null
        record_counts "$n" relayctl-before apply
        "$base" plan "$work/cfg-cntb" --detailed-exitcode --parallelism "$par" "${gp[@]}" >/dev/null
        record_counts "$n" relayctl-before plan
        "$kb" mutate --kubeconfig "$kc" --contexts "$drifted" --namespace "$ns"
        curl -sf -X POST "http://$proxy_stats/reset" >/dev/null
        "$base" apply "$work/cfg-cntb" --auto-approve --parallelism "$par" "${gp[@]}" >/dev/null
        record_counts "$n" relayctl-before drift
    fi
    "$kb" ceiling --kubeconfig "$pk" --contexts "$ctxs" --namespace "$(fresh cnt)" --parallelism "$par" --op create --payloads "$work/payload-state" -q >/dev/null
    record_counts "$n" ceiling apply
    "$kb" ceiling --kubeconfig "$pk" --contexts "$ctxs" --namespace "$(fresh cnt)" --parallelism "$par" --op create --observe --payloads "$work/payload-state" -q >/dev/null
    record_counts "$n" ceiling-observe apply
    "$kb" ceiling --kubeconfig "$pk" --contexts "$ctxs" --namespace "$(fresh cnt)" --parallelism "$par" --op create --observe --lock --payloads "$work/payload-state" -q >/dev/null
    record_counts "$n" ceiling-safe apply
    "$kb" ceiling --kubeconfig "$pk" --contexts "$ctxs" --namespace "$ns" --parallelism "$par" --op list -q >/dev/null
    record_counts "$n" ceiling plan
    "$kb" mutate --kubeconfig "$kc" --contexts "$drifted" --namespace "$ns"
    curl -sf -X POST "http://$proxy_stats/reset" >/dev/null
    "$kb" ceiling --kubeconfig "$pk" --contexts "$ctxs" --namespace "$ns" --parallelism "$par" --op update -q >/dev/null
    record_counts "$n" ceiling drift
    "$kb" mutate --kubeconfig "$kc" --contexts "$drifted" --namespace "$ns"
    curl -sf -X POST "http://$proxy_stats/reset" >/dev/null
    "$kb" ceiling --kubeconfig "$pk" --contexts "$ctxs" --namespace "$ns" --parallelism "$par" --op update --lock -q >/dev/null
    record_counts "$n" ceiling-safe drift
    "$manual" create "$kubectl" "$pk" "$(fresh cnt)" "${ctx_arr[@]}"
    record_counts "$n" kubectl apply
    "$manual" get "$kubectl" "$pk" "$ns" "${ctx_arr[@]}"
    record_counts "$n" kubectl plan
    stop_proxies

    # 429 with Retry-After.
    if [[ $thr_at == "$n" ]]; then
        echo "# N=$n: every ${thr_every}th request answered 429, Retry-After ${retry_after}s" >&2
        start_proxy "throttle-$n" "$kc" --l7 --status-429-every "$thr_every" --retry-after "$retry_after" --stats 127.0.0.1:0
        gt=(--kubeconfig "$proxy_kc" --state-dir "$work/state" -q)
        for ((r = 1; r <= 3; r++)); do
            ns=$(fresh thr)
            make_config "$work/cfg-thr" "$ns" "$n"
            curl -sf -X POST "http://$proxy_stats/reset" >/dev/null
            run "$n throttle $par relayctl apply $r" 0 "$relayctl" apply "$work/cfg-thr" --auto-approve --parallelism "$par" "${gt[@]}"
            record_counts "$n" relayctl-429 "apply-$r"
            cp "$work/stats.json" "$work/throttle-relayctl-$r.json"
            if [[ -n $base ]]; then
                ns=$(fresh thrb)
                make_config "$work/cfg-thrb" "$ns" "$n"
                run "$n throttle $par relayctl-before apply $r" 0 "$base" apply "$work/cfg-thrb" --auto-approve --parallelism "$par" "${gt[@]}"
                record_counts "$n" relayctl-before-429 "apply-$r"
                cp "$work/stats.json" "$work/throttle-before-$r.json"
            fi
            run "$n throttle $par ceiling-observe apply $r" 0 "$kb" ceiling --kubeconfig "$proxy_kc" --contexts "$ctxs" --namespace "$(fresh thr)" --parallelism "$par" --op create --observe --payloads "$work/payload-state" -q
            record_counts "$n" ceiling-429 "apply-$r"
            cp "$work/stats.json" "$work/throttle-ceiling-$r.json"
        done
        jq -s '[.[] | to_entries[] | .value.retry_gaps_ms[]?] | sort' "$work"/throttle-relayctl-*.json >"$work/gaps-relayctl.json"
        jq -s '[.[] | to_entries[] | .value.retry_gaps_ms[]?] | sort' "$work"/throttle-ceiling-*.json >"$work/gaps-ceiling.json"
        [[ -z $base ]] || jq -s '[.[] | to_entries[] | .value.retry_gaps_ms[]?] | sort' "$work"/throttle-before-*.json >"$work/gaps-before.json"
        stop_proxies
    fi

    # Latency.
    if [[ -n $latency && $lat_at == "$n" ]]; then
        echo "# N=$n: $latency per direction, parallelism ${pars[*]}" >&2
        start_proxy "lat-$n" "$kc" --delay "$latency"
        lk=$proxy_kc
        gl=(--kubeconfig "$lk" --state-dir "$work/state" -q)
        for p in "${pars[@]}"; do
            lconv=$(fresh lconv)
            make_config "$work/cfg-lconv" "$lconv" "$n"
            "$relayctl" apply "$work/cfg-lconv" --auto-approve "${g[@]}" >/dev/null
            for ((r = 1; r <= lat_repeats; r++)); do
                ns=$(fresh la)
                make_config "$work/cfg-l$r" "$ns" "$n"
                run "$n lat $p relayctl apply $r" 0 "$relayctl" apply "$work/cfg-l$r" --auto-approve --parallelism "$p" "${gl[@]}"
                if [[ -n $base ]]; then
                    make_config "$work/cfg-lb$r" "$(fresh lb)" "$n"
                    run "$n lat $p relayctl-before apply $r" 0 "$base" apply "$work/cfg-lb$r" --auto-approve --parallelism "$p" "${gl[@]}"
                    run "$n lat $p relayctl-before plan $r" 0 "$base" plan "$work/cfg-lconv" --detailed-exitcode --parallelism "$p" "${gl[@]}"
                    "$kb" mutate --kubeconfig "$kc" --contexts "$drifted" --namespace "$lconv"
                    run "$n lat $p relayctl-before drift $r" 0 "$base" apply "$work/cfg-lconv" --auto-approve --parallelism "$p" "${gl[@]}"
                fi
                run "$n lat $p ceiling apply $r" 0 "$kb" ceiling --kubeconfig "$lk" --contexts "$ctxs" --namespace "$(fresh lc)" --parallelism "$p" --op create --payloads "$work/payload-state" -q
                run "$n lat $p ceiling-observe apply $r" 0 "$kb" ceiling --kubeconfig "$lk" --contexts "$ctxs" --namespace "$(fresh lo)" --parallelism "$p" --op create --observe --payloads "$work/payload-state" -q
                run "$n lat $p ceiling-safe apply $r" 0 "$kb" ceiling --kubeconfig "$lk" --contexts "$ctxs" --namespace "$(fresh ls)" --parallelism "$p" --op create --observe --lock --payloads "$work/payload-state" -q
                run "$n lat $p relayctl plan $r" 0 "$relayctl" plan "$work/cfg-lconv" --detailed-exitcode --parallelism "$p" "${gl[@]}"
                run "$n lat $p ceiling plan $r" 0 "$kb" ceiling --kubeconfig "$lk" --contexts "$ctxs" --namespace "$lconv" --parallelism "$p" --op list -q
                "$kb" mutate --kubeconfig "$kc" --contexts "$drifted" --namespace "$lconv"
                run "$n lat $p ceiling drift $r" 0 "$kb" ceiling --kubeconfig "$lk" --contexts "$ctxs" --namespace "$lconv" --parallelism "$p" --op update -q
                "$kb" mutate --kubeconfig "$kc" --contexts "$drifted" --namespace "$lconv"
                run "$n lat $p ceiling-safe drift $r" 0 "$kb" ceiling --kubeconfig "$lk" --contexts "$ctxs" --namespace "$lconv" --parallelism "$p" --op update --lock -q
                "$kb" mutate --kubeconfig "$kc" --contexts "$drifted" --namespace "$lconv"
                run "$n lat $p relayctl drift $r" 0 "$relayctl" apply "$work/cfg-lconv" --auto-approve --parallelism "$p" "${gl[@]}"
            done
        done
        for ((r = 1; r <= lat_repeats; r++)); do
            run "$n lat 1 kubectl apply $r" 0 "$manual" create "$kubectl" "$lk" "$(fresh lk)" "${ctx_arr[@]}"
            run "$n lat 1 kubectl plan $r" 0 "$manual" get "$kubectl" "$lk" "$lconv" "${ctx_arr[@]}"
        done
        stop_proxies
    fi

    $kube_env down "$env_dir" >/dev/null 2>&1 || true
    envs=()
done

[[ -n ${RESULTS:-} ]] && cp "$raw" "$RESULTS" && cp "$counts" "${RESULTS%.tsv}-requests.tsv"

# ---- report ----
echo
echo "relayctl at $commit${base:+, relayctl-before at $base_commit}; 1-minute load average at each repetition: $(awk '{ print $3 }' "$work/load.txt" | sort -n | sed -n '1p;$p' | paste -sd- -) (min-max); at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
awk -F'\t' '
function median(arr, n,   i, j, t, a) {
    for (i = 1; i <= n; i++) a[i] = arr[i]
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function med(k,   i, a) { for (i = 1; i <= c[k]; i++) a[i] = v[k, i]; return median(a, c[k]) }
function medin(k,   i, a) { for (i = 1; i <= c[k]; i++) a[i] = w[k, i]; return median(a, c[k]) }
function pairmed(ka, kb,   i, a, m) {   # median over repetitions of A/B (A and B ran in the same repetition)
    m = 0
    for (i = 1; i <= c[ka] && i <= c[kb]; i++) a[++m] = v[ka, i] / v[kb, i]
    return m ? median(a, m) : 0
}
function cell(k) { return (k in c) ? sprintf("%.0f", med(k) / 1000) : "–" }
function cellin(k) { return ((k in c) && w[k, 1] != "-") ? sprintf("%.0f", medin(k) / 1000) : "–" }
function ratio(a, b, f) { return ((a in c) && (b in c)) ? sprintf(f, pairmed(a, b)) : "–" }
function pct(a, b) { return ((a in c) && (b in c)) ? sprintf("%.0f %%", 100 * pairmed(a, b)) : "–" }
{
    # N net P tool op rep wall_us rc inproc_us; the kubectl procedure is sequential (P=1) whatever P.
    p = ($4 == "kubectl") ? "*" : $3
    k = $1 SUBSEP $2 SUBSEP p SUBSEP $4 SUBSEP $5
    c[k]++; v[k, c[k]] = $7; w[k, c[k]] = $9
    if (!(($1 SUBSEP $2) in seen)) { seen[$1 SUBSEP $2] = 1; order[++no] = $1 SUBSEP $2 }
    if (!(($1 SUBSEP $2 SUBSEP $3) in seenp) && $4 == "relayctl") { seenp[$1 SUBSEP $2 SUBSEP $3] = 1; ps[$1 SUBSEP $2] = ps[$1 SUBSEP $2] " " $3 }
}
END {
    split("apply plan drift", ops, " ")
    label["apply"] = "first apply"; label["plan"] = "converged plan"; label["drift"] = "drift repair (10%)"
    for (o = 1; o <= no; o++) {
        split(order[o], nn, SUBSEP); n = nn[1]; net = nn[2]
        if (net == "throttle") continue
        np = split(substr(ps[order[o]], 2), pl, " ")
        printf "\n### N=%s workloads, %s (medians, ms; ratios: median of the per-repetition ratios)\n\n", n, (net == "local" ? "loopback" : "through the latency proxy")
        printf "| op | parallelism | relayctl | relayctl-before | ceiling | ceiling in-process | ceiling +observe | ceiling +observe +lock | kubectl script | ceiling / relayctl | ceiling / relayctl-before | relayctl / ceiling | relayctl / ceiling +observe +lock | kubectl / relayctl |\n"
        printf "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        for (q = 1; q <= np; q++) for (i = 1; i <= 3; i++) {
            P = pl[q]
            r = n SUBSEP net SUBSEP P SUBSEP "relayctl" SUBSEP ops[i]
            if (!(r in c)) continue
            ce = n SUBSEP net SUBSEP P SUBSEP "ceiling" SUBSEP ops[i]
            co = n SUBSEP net SUBSEP P SUBSEP "ceiling-observe" SUBSEP ops[i]
            cs = n SUBSEP net SUBSEP P SUBSEP "ceiling-safe" SUBSEP ops[i]
            ku = n SUBSEP net SUBSEP "*" SUBSEP "kubectl" SUBSEP ops[i]
            rb = n SUBSEP net SUBSEP P SUBSEP "relayctl-before" SUBSEP ops[i]
            printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", label[ops[i]], P, cell(r), cell(rb), cell(ce), cellin(ce), cell(co), cell(cs), cell(ku),
                pct(ce, r), pct(ce, rb), ratio(r, ce, "%.2f"), ratio(r, cs, "%.2f"), ratio(ku, r, "%.1f")
        }
        st = n SUBSEP net SUBSEP pl[1] SUBSEP "ceiling-startup" SUBSEP "none"
        if (st in c) printf "\nceiling process with no request (`--op none`: Go start-up, client-go init, %s clients): %s ms\n", n + 1, cell(st)
    }
    for (o = 1; o <= no; o++) {
        split(order[o], nn, SUBSEP); n = nn[1]; net = nn[2]
        if (net != "throttle") continue
        np = split(substr(ps[order[o]], 2), pl, " ")
        r = n SUBSEP net SUBSEP pl[1] SUBSEP "relayctl" SUBSEP "apply"
        co = n SUBSEP net SUBSEP pl[1] SUBSEP "ceiling-observe" SUBSEP "apply"
        rb = n SUBSEP net SUBSEP pl[1] SUBSEP "relayctl-before" SUBSEP "apply"
        printf "\n### N=%s workloads, every Nth request answered 429\n\nfirst apply (medians): relayctl %s ms, relayctl-before %s ms, ceiling --observe %s ms\n", n, cell(r), cell(rb), cell(co)
    }
}' "$raw"

echo
echo "### HTTP requests per cluster (one run each, through the L7 counting proxy)"
echo
echo "| N | tool | op | mgmt | per workload | total | TCP/TLS connections | mgmt requests | cluster-1 requests |"
echo "|---:|---|---|---:|---:|---:|---:|---|---|"
awk -F'\t' '{ printf "| %s | %s | %s | %s | %.1f | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9 }' "$counts"
if [[ -f $work/gaps-relayctl.json ]]; then
    echo
    echo "429 (Retry-After ${retry_after}s): wait before the retried request, ms:"
    echo "  relayctl: $(jq -c '{n: length, min: min, median: (if length > 0 then .[length/2|floor] else null end), max: max}' "$work/gaps-relayctl.json")"
    [[ -f $work/gaps-before.json ]] && echo "  relayctl-before: $(jq -c '{n: length, min: min, median: (if length > 0 then .[length/2|floor] else null end), max: max}' "$work/gaps-before.json")"
    echo "  ceiling (client-go): $(jq -c '{n: length, min: min, median: (if length > 0 then .[length/2|floor] else null end), max: max}' "$work/gaps-ceiling.json")"
fi
