#!/usr/bin/env bash
# Runs one fuzz target for a while: `just fuzz TARGET SECONDS`, or
#
#   fuzz/run.sh TARGET SECONDS [LIBFUZZER_FLAG...]
#
# TARGET is manifests, material, secret_manifest or saved_plan. Builds with
# `cargo +nightly fuzz` into fuzz/target (not the root target dir), seeds
# fuzz/corpus with fuzz/seed.sh when the target's corpus is empty, and fuzzes
# on fuzz/corpus/TARGET (written to) plus fuzz/seeds/TARGET and
# fuzz/regressions/TARGET (read only), one job, at most 2 GiB. A crash or a
# failed invariant check leaves its input in fuzz/artifacts/TARGET/ and makes
# the script exit non-zero; libFuzzer's log is fuzz/logs/TARGET/fuzz-0.log.
# The binaries are in fuzz/target/x86_64-unknown-linux-gnu/release/.
# RELAYCTL_FUZZ_SKIP=check[,check] switches named invariant checks off
# (fuzz/README.md); FUZZ_TOOLCHAIN picks the toolchain (default nightly).
set -euo pipefail
fuzz=$(cd "$(dirname "$0")" && pwd)
target=${1:?usage: fuzz/run.sh TARGET SECONDS [LIBFUZZER_FLAG...]}
seconds=${2:?usage: fuzz/run.sh TARGET SECONDS [LIBFUZZER_FLAG...]}
shift 2
case "$target" in
  manifests | material | secret_manifest | saved_plan) ;;
  *) echo "fuzz/run.sh: unknown target \`$target\` (manifests, material, secret_manifest, saved_plan)" >&2; exit 2 ;;
esac
if [ -z "$(ls -A "$fuzz/corpus/$target" 2>/dev/null)" ]; then
  "$fuzz/seed.sh"
fi
mkdir -p "$fuzz/corpus/$target" "$fuzz/seeds/$target" "$fuzz/regressions/$target" "$fuzz/logs/$target"
export CARGO_TARGET_DIR="$fuzz/target"
# With -jobs, libFuzzer writes the worker's output to fuzz-0.log in the
# working directory (and prints it when the job ends).
cd "$fuzz/logs/$target"
rm -f fuzz-0.log
# The manifests seeds include megabyte-long lines, which would make libFuzzer
# mutate megabyte inputs at ~20 exec/s; 16 KiB still allows lines well over
# the 4096-character bound. A later -max_len in the extra flags wins.
defaults=()
[ "$target" != manifests ] || defaults+=(-max_len=16384)
status=0
cargo "+${FUZZ_TOOLCHAIN:-nightly}" fuzz run --fuzz-dir "$fuzz" "$target" \
  "$fuzz/corpus/$target" "$fuzz/seeds/$target" "$fuzz/regressions/$target" \
  -- -max_total_time="$seconds" -rss_limit_mb=2048 -jobs=1 -timeout=60 -print_final_stats=1 ${defaults[@]+"${defaults[@]}"} "$@" || status=$?
if [ "$status" -ne 0 ]; then
  echo "fuzz/run.sh: $target failed (exit $status); inputs in fuzz/artifacts/$target/, log in fuzz/logs/$target/fuzz-0.log" >&2
fi
exit "$status"
