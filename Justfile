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
