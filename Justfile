# The CI contract: `just ci` runs exactly what .ci/run runs after installing tools.
set shell := ["bash", "-euo", "pipefail", "-c"]

import? 'just/kube-env.just'
import? 'just/relay-sim.just'

# Everything CI checks.
ci: fmt-check lint schema-check test

# The whole test suite (the README's test command), real apiservers included.
test:
    cargo test --workspace

# Format the code.
fmt:
    cargo fmt --all

# Fail when the code is not formatted.
fmt-check:
    cargo fmt --all -- --check

# Clippy on every target, warnings are errors.
lint:
    cargo clippy --workspace --all-targets -- -D warnings

# Regenerate the committed JSON schema of the manifests.
schema:
    cargo run -q -- schema > schemas/relayctl.schema.json

# Fail when the committed JSON schema is stale.
schema-check:
    cargo test -q --test manifests committed_schema_is_fresh

# Build (or find in the cache) kube-apiserver, kubectl and etcd.
kube-env-build:
    tools/kube-env/build.sh

# Fuzzing (fuzz/README.md): cargo-fuzz on the nightly toolchain; builds go to
# fuzz/target, corpora to fuzz/corpus (generated), findings to fuzz/artifacts.
# Invariant checks that `fuzz-smoke` skips (comma-separated names, for a
# known finding not yet fixed); empty: every check runs.
fuzz_smoke_skip := ""

# Build the seed corpora under fuzz/corpus from fixtures, examples and fresh material.
fuzz-seed:
    fuzz/seed.sh

# Fuzz TARGET (manifests, material, secret_manifest, saved_plan) for SECONDS.
fuzz TARGET SECONDS:
    fuzz/run.sh {{TARGET}} {{SECONDS}}

# Every fuzz target for about 30 s; fails on a crash or a failed invariant check.
fuzz-smoke:
    #!/usr/bin/env bash
    set -euo pipefail
    export RELAYCTL_FUZZ_SKIP="{{fuzz_smoke_skip}}"
    [ -z "$RELAYCTL_FUZZ_SKIP" ] || echo "fuzz-smoke: skipping invariant checks with known findings: $RELAYCTL_FUZZ_SKIP" >&2
    mkdir -p fuzz/logs
    failed=()
    for target in manifests material secret_manifest saved_plan; do
      fuzz/run.sh "$target" 30 > "fuzz/logs/smoke-$target.log" 2>&1 || failed+=("$target")
      echo "fuzz-smoke: $target: $(grep -a '^#[0-9]' "fuzz/logs/smoke-$target.log" | tail -n 1 | tr -s ' \t' ' ' | cut -d' ' -f1-12)" >&2
    done
    if [ ${#failed[@]} -gt 0 ]; then
      for target in "${failed[@]}"; do
        echo "fuzz-smoke: $target FAILED; from fuzz/logs/smoke-$target.log:" >&2
        grep -a -m 1 -A 3 'panicked at\|==ERROR\|ERROR: libFuzzer' "fuzz/logs/smoke-$target.log" | cut -c1-400 >&2 || true
        grep -a -v '^Output of\|^\s*\[' "fuzz/logs/smoke-$target.log" | tail -n 30 | cut -c1-400 >&2 || true
      done
      exit 1
    fi
    echo "fuzz-smoke: 4 passed, 0 failed" >&2
