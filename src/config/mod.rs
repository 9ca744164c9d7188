//! Manifests: YAML text to a validated model, with every problem located.
