#!/usr/bin/env bash
# Stops what up.sh started in DIR (DIR/relay-sim/pids, "PID NAME" lines). Safe to run
# twice: only pids whose command line is relay-sim are signalled, so a pid
# reused by another process after a reboot is left alone.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
pids="$1/relay-sim/pids"
if [ ! -s "$pids" ]; then
  echo "relay-sim: nothing running in $1"
  rm -f "$pids"
  exit 0
fi

ours() { kill -0 "$1" 2>/dev/null && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q relay-sim; }

live=()
while read -r pid name; do
  if ours "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    live+=("$pid")
    echo "relay-sim: stopping $name (pid $pid)"
  fi
done <"$pids"

for _ in $(seq 50); do
  left=()
  for pid in ${live[@]+"${live[@]}"}; do ours "$pid" && left+=("$pid"); done
  [ ${#left[@]} -eq 0 ] && break
  sleep 0.1
done
for pid in ${left[@]+"${left[@]}"}; do
  echo "relay-sim: pid $pid ignored SIGTERM; killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
done
rm -f "$pids"
echo "relay-sim: stopped ${#live[@]} process(es)"
