#!/usr/bin/env bash
# Fleet benchmark of relayctl on the directory backend (the embedded default).
#
# Builds the release binary once, then for each scenario and fleet size N
# generates a config of N WorkloadCluster files (as tests/cli.rs does: a copy
# of examples/clusters/<scenario> plus `cluster-N.yaml` with only
# apiVersion/kind/metadata.name) in a tempdir, and measures:
#
#   plan1     first `plan` (nothing exists yet)
#   apply1    first `apply --auto-approve` (state wiped before each repeat)
#   plan0     converged `plan --detailed-exitcode` (must exit 0, else we fail)
#   drift     delete one Secret on 10% of the workload clusters, then `apply`
#
# each REPEATS times (median reported), plus the converged plan with
# `--parallelism 1` vs the default (16) at the largest N. Wall time is taken
# with `date +%s%N` around the process; peak RSS with `/usr/bin/time -f %M`
# when available.
#
# Usage:  bench/fleet.sh [SIZES...]          default: 10 100 1000 3000
# Env:    REPEATS=3  SCENARIOS="managed managed-preprovisioned"
#         CARGO_TARGET_DIR (honoured; default <repo>/target)
#         RELAYCTL_BIN  a relayctl binary to measure instead of building one
#         TMPDIR        where config and state go (e.g. /dev/shm: tmpfs, no fsync cost)
#
# For 10,000 clusters: SCENARIOS=managed REPEATS=3 bench/fleet.sh 1000 10000
#         RESULTS=FILE  also write the raw TSV there
#
# Nothing is left behind: the tempdir is removed on exit.

set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
sizes=("$@")
[[ ${#sizes[@]} -gt 0 ]] || sizes=(10 100 1000 3000)
repeats=${REPEATS:-3}
scenarios=(${SCENARIOS:-managed managed-preprovisioned})
largest=0
for n in "${sizes[@]}"; do ((n > largest)) && largest=$n; done

if [[ -n ${RELAYCTL_BIN:-} ]]; then
    bin=$RELAYCTL_BIN
else
    echo "# building the release binary" >&2
    (cd "$repo" && cargo build --release --quiet --bin relayctl)
    bin="${CARGO_TARGET_DIR:-$repo/target}/release/relayctl"
fi
[[ -x $bin ]] || { echo "no binary at $bin" >&2; exit 1; }

gnu_time=""
if [[ -x /usr/bin/time ]] && /usr/bin/time -f %M true >/dev/null 2>&1; then
    gnu_time=/usr/bin/time
else
    echo "# /usr/bin/time (GNU) not found: peak RSS is not measured (apt-get install -y time)" >&2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/relayctl-bench.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT INT TERM

raw="$work/raw.tsv" # scenario N op repeat ms rss_kib
: >"$raw"

# run LABEL EXPECTED_RC -- relayctl args...: one timed run, appended to $raw.
run() {
    local scenario=$1 n=$2 op=$3 rep=$4 want=$5
    shift 5
    local t0 t1 rc=0 rss=-
    t0=$(date +%s%N)
    if [[ -n $gnu_time ]]; then
        "$gnu_time" -f %M -o "$work/rss" "$bin" "$@" >/dev/null 2>"$work/stderr" || rc=$?
    else
        "$bin" "$@" >/dev/null 2>"$work/stderr" || rc=$?
    fi
    t1=$(date +%s%N)
    if [[ $rc -ne $want ]]; then
        echo "FAIL: $scenario N=$n $op: exit $rc, want $want: relayctl $*" >&2
        tail -20 "$work/stderr" >&2
        exit 1
    fi
    [[ -n $gnu_time ]] && rss=$(tail -1 "$work/rss")
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$scenario" "$n" "$op" "$rep" \
        "$(((t1 - t0) / 1000))" "$rss" >>"$raw"
}

# make_fleet SCENARIO N DIR: a config folder of N workload clusters.
make_fleet() {
    local scenario=$1 n=$2 dir=$3
    rm -rf "$dir"
    mkdir -p "$dir"
    cp "$repo/examples/clusters/$scenario/relay-trust.yaml" \
        "$repo/examples/clusters/$scenario/mgmt.yaml" "$dir/"
    if [[ $scenario == managed-preprovisioned ]]; then
        # ECDSA P-256 everywhere (the example's root is RSA-4096): the bench
        # is about N, not about one RSA key generation.
        sed -i 's/key: rsa-4096/key: ecdsa-p256/' "$dir/relay-trust.yaml"
        grep -q 'key: ecdsa-p256' "$dir/relay-trust.yaml" || {
            echo "cannot switch the root key to ecdsa-p256" >&2
            exit 1
        }
    fi
    local i
    for ((i = 1; i <= n; i++)); do
        printf 'apiVersion: relayctl.dev/v1alpha1\nkind: WorkloadCluster\nmetadata:\n  name: cluster-%d\n' \
            "$i" >"$dir/cluster-$i.yaml"
    done
}

drift_secret() {
    case $1 in
    managed-preprovisioned) echo relay-client-tls-secret ;; # reissued: keygen + signing
    *) echo relay-identity-token-secret ;;
    esac
}

for scenario in "${scenarios[@]}"; do
    for n in "${sizes[@]}"; do
        echo "# $scenario N=$n" >&2
        config="$work/config"
        state="$work/state"
        make_fleet "$scenario" "$n" "$config"
        rm -rf "$state"
        g=(--state-dir "$state")

        for ((r = 1; r <= repeats; r++)); do
            run "$scenario" "$n" plan1 "$r" 0 plan "$config" "${g[@]}"
        done
        for ((r = 1; r <= repeats; r++)); do
            rm -rf "$state"
            run "$scenario" "$n" apply1 "$r" 0 apply "$config" --auto-approve "${g[@]}"
        done
        for ((r = 1; r <= repeats; r++)); do
            run "$scenario" "$n" plan0 "$r" 0 plan "$config" --detailed-exitcode "${g[@]}"
        done
        if ((n == largest)); then
            for ((r = 1; r <= repeats; r++)); do
                run "$scenario" "$n" plan0-p1 "$r" 0 plan "$config" --detailed-exitcode --parallelism 1 "${g[@]}"
            done
        fi
        secret=$(drift_secret "$scenario")
        k=$(((n + 9) / 10))
        for ((r = 1; r <= repeats; r++)); do
            for ((i = 1; i <= k; i++)); do
                rm "$state/cluster-$((i * 10 - 9))/gloo-mesh/$secret.yaml" # clusters 1, 11, 21, ...
            done
            run "$scenario" "$n" drift "$r" 0 apply "$config" --auto-approve "${g[@]}"
        done
        # The drift apply must have converged the fleet again.
        run "$scenario" "$n" check 1 0 plan "$config" --detailed-exitcode "${g[@]}"
        rm -rf "$state" "$config"
    done
done

[[ -n ${RESULTS:-} ]] && cp "$raw" "$RESULTS"

# Report: medians, per-cluster cost, ratios within this run.
awk -F'\t' -v sizes="${sizes[*]}" -v largest="$largest" '
function median(key,   n, i, j, t, a) {
    n = cnt[key]
    for (i = 1; i <= n; i++) a[i] = v[key, i]
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function maxrss(key,   i, m) {
    m = 0
    for (i = 1; i <= cnt[key]; i++) if (r[key, i] != "-" && r[key, i] + 0 > m) m = r[key, i] + 0
    return m ? sprintf("%.0f", m / 1024) : "-"
}
{
    key = $1 SUBSEP $2 SUBSEP $3
    cnt[key]++; v[key, cnt[key]] = $5 / 1000.0; r[key, cnt[key]] = $6
    if (!($1 in seen)) { seen[$1] = 1; order[++ns] = $1 }
}
END {
    nsz = split(sizes, sz, " ")
    split("plan1 apply1 plan0 drift", ops, " ")
    label["plan1"] = "first plan"; label["apply1"] = "first apply"
    label["plan0"] = "converged plan"; label["drift"] = "drift apply (10%)"
    for (s = 1; s <= ns; s++) {
        sc = order[s]
        printf "\n### %s\n\n", sc
        printf "| operation | N | median ms | ms / cluster | max RSS MiB |\n|---|---:|---:|---:|---:|\n"
        for (o = 1; o <= 4; o++) for (z = 1; z <= nsz; z++) {
            key = sc SUBSEP sz[z] SUBSEP ops[o]
            if (!(key in cnt)) continue
            m = median(key)
            printf "| %s | %d | %.1f | %.3f | %s |\n", label[ops[o]], sz[z], m, m / sz[z], maxrss(key)
        }
        if (nsz > 1) {
            printf "\nRatios between fleet sizes within this run (time ratio = N ratio means linear; marginal = (t2 - t1) / (N2 - N1)):\n\n"
            printf "| operation | sizes | N ratio | time ratio | marginal ms / added cluster |\n|---|---|---:|---:|---:|\n"
        }
        for (o = 1; o <= 4; o++) for (z = 2; z <= nsz; z++) {
            a = sc SUBSEP sz[z - 1] SUBSEP ops[o]; b = sc SUBSEP sz[z] SUBSEP ops[o]
            if (!(a in cnt) || !(b in cnt)) continue
            ma = median(a); mb = median(b)
            printf "| %s | %d -> %d | %.1f | %.2f | %.3f |\n", label[ops[o]], sz[z - 1], sz[z], sz[z] / sz[z - 1], mb / ma, (mb - ma) / (sz[z] - sz[z - 1])
        }
        a = sc SUBSEP largest SUBSEP "plan0"; b = sc SUBSEP largest SUBSEP "plan0-p1"
        if ((a in cnt) && (b in cnt))
            printf "\nConverged plan at N=%d: --parallelism 1 %.1f ms vs default (16) %.1f ms: %.2fx\n", largest, median(b), median(a), median(b) / median(a)
    }
}' "$raw"
