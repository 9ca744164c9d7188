//! Shared helpers of the fuzz targets.

/// Whether the named invariant check is enabled. Every check is on unless its
/// name is listed in `RELAYCTL_FUZZ_SKIP` (comma-separated), which exists only
/// so a check that fails on a known, reported finding can be switched off in
/// the smoke run until the finding is fixed. Panics are always findings.
pub fn check_enabled(name: &str) -> bool {
    static SKIP: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let skip = SKIP.get_or_init(|| {
        std::env::var("RELAYCTL_FUZZ_SKIP")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    });
    !skip.iter().any(|s| s == name)
}
