#!/usr/bin/env bash
# Starts one relay-sim server (context mgmt) and one agent per other context of
# a kube-env (DIR/kubeconfig, as `just kube-env-up N DIR` writes it), in the
# background. Logs go to DIR/relay-sim/*.log, pids to DIR/relay-sim/pids.
#
# usage: up.sh DIR [server flag...]    e.g. up.sh /tmp/env --generate-ca
#
# Environment:
#   RELAY_SIM_REGISTER=1     install crd-kubernetescluster.yaml, create a
#                            KubernetesCluster per workload context and pass
#                            --require-registration to the server
#   RELAY_SIM_AGENT_ARGS     extra agent flags, e.g. "--reload restart --interval 1s"
#   RELAY_SIM_MGMT_CONTEXT   management context (default mgmt)
#   RELAY_SIM_NAMESPACE      relay namespace (default gloo-mesh)
#   KUBECTL                  kubectl to use (default: the kube-env build's)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

[ $# -ge 1 ] || { echo "usage: $0 DIR [server flag...]" >&2; exit 2; }
dir="$(cd "$1" && pwd)"; shift
kubeconfig="$dir/kubeconfig"
[ -f "$kubeconfig" ] || { echo "relay-sim-up: no $kubeconfig (start one with: just kube-env-up N $dir)" >&2; exit 1; }
state="$dir/relay-sim"
pids="$state/pids"
mgmt="${RELAY_SIM_MGMT_CONTEXT:-mgmt}"
ns="${RELAY_SIM_NAMESPACE:-gloo-mesh}"

# Refuse to start twice: a second server would fight over nothing, but two
# agents per cluster would both own relay-client-tls-secret.
if [ -s "$pids" ]; then
  while read -r pid _; do
    if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q relay-sim; then
      echo "relay-sim-up: already running in $dir (pid $pid); run: just relay-sim-down $dir" >&2
      exit 1
    fi
  done <"$pids"
fi
mkdir -p "$state"
: >"$pids"

bin="$("$here/build.sh")"
kubectl="${KUBECTL:-$("$repo/tools/kube-env/build.sh")/kubectl}"
k() { "$kubectl" --kubeconfig "$kubeconfig" "$@"; }

contexts="$(k config get-contexts -o name)"
grep -qx "$mgmt" <<<"$contexts" || { echo "relay-sim-up: no context $mgmt in $kubeconfig" >&2; exit 1; }
workloads="$(grep -vx "$mgmt" <<<"$contexts" || true)"

server_args=("$@")
if [ "${RELAY_SIM_REGISTER:-}" = 1 ]; then
  k --context "$mgmt" apply -f "$here/crd-kubernetescluster.yaml" >/dev/null
  k --context "$mgmt" wait --for condition=established --timeout=60s crd/kubernetesclusters.admin.gloo.solo.io >/dev/null
  k --context "$mgmt" create namespace "$ns" 2>/dev/null || true
  for c in $workloads; do
    printf 'apiVersion: admin.gloo.solo.io/v2\nkind: KubernetesCluster\nmetadata: {name: %s, namespace: %s}\nspec: {}\n' "$c" "$ns" |
      k --context "$mgmt" apply -f - >/dev/null
  done
  server_args+=(--require-registration)
fi

# field NAME LOGFILE: a string field of the first event (the "listening" line).
field() { sed -n "1s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" "$2"; }

# start NAME LOG ARGS...: one detached process (own session, so closing the
# terminal does not stop it), recorded in the pids file, and wait for its
# "listening" line.
start() {
  local name=$1 log=$2; shift 2
  setsid "$bin" "$@" </dev/null >"$log" 2>"${log%.log}.stderr.log" &
  local pid=$!
  echo "$pid $name" >>"$pids"  # "PID NAME", as kube-env writes DIR/pids
  for _ in $(seq 100); do
    [ -s "$log" ] && return 0
    kill -0 "$pid" 2>/dev/null || { echo "relay-sim-up: $name exited:" >&2; cat "${log%.log}.stderr.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "relay-sim-up: $name printed nothing in 10 s (see ${log%.log}.stderr.log)" >&2
  exit 1
}

start server "$state/server.log" server --kubeconfig "$kubeconfig" --context "$mgmt" --namespace "$ns" \
  --listen 127.0.0.1:0 --status 127.0.0.1:0 ${server_args[@]+"${server_args[@]}"}
addr="$(field addr "$state/server.log")"
echo "server   relay $addr  status http://$(field status "$state/server.log")/status  log $state/server.log"

# shellcheck disable=SC2086 # RELAY_SIM_AGENT_ARGS is a list of flags
for c in $workloads; do
  start "agent-$c" "$state/agent-$c.log" agent --kubeconfig "$kubeconfig" --context "$c" --cluster "$c" \
    --namespace "$ns" --server "$addr" --status 127.0.0.1:0 ${RELAY_SIM_AGENT_ARGS:-}
  echo "agent    $c  status http://$(field status "$state/agent-$c.log")/status  log $state/agent-$c.log"
done
echo "logs (JSON lines; stderr in *.stderr.log) in $state; stop with: just relay-sim-down $dir"
