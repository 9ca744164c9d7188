//! Manifests: arbitrary bytes, split on 0x00 into up to three documents
//! (m0.yaml, m1.yaml, m2.yaml), through `config::validate`, and on error
//! through `config::diag::render`. Must never panic.
//!
//! Invariant check `rendered-line-bound`: no line of the rendered diagnostics
//! is `MAX_RENDERED_LINE` characters or longer, whatever the input (a
//! megabyte-long line or value must be elided, not echoed into a CI log).
#![no_main]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use relayctl::config::{ManifestFile, diag, validate};
use relayctl_fuzz::check_enabled;

/// Longest rendered line accepted by the `rendered-line-bound` check.
const MAX_RENDERED_LINE: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let files: Vec<ManifestFile> = data
        .splitn(3, |b| *b == 0)
        .enumerate()
        .map(|(i, part)| ManifestFile {
            path: PathBuf::from(format!("m{i}.yaml")),
            text: String::from_utf8_lossy(part).into_owned(),
        })
        .collect();
    let Err(diagnostics) = validate(&files, Path::new("")) else {
        return;
    };
    let sources: BTreeMap<PathBuf, String> = files
        .iter()
        .map(|f| (f.path.clone(), f.text.clone()))
        .collect();
    let rendered = diag::render(&diagnostics, &sources);
    assert!(
        !diagnostics.is_empty(),
        "validate returned Err with no diagnostic"
    );

    if check_enabled("rendered-line-bound") {
        let (number, longest) = rendered
            .lines()
            .enumerate()
            .map(|(n, line)| (n + 1, line.chars().count()))
            .max_by_key(|(_, len)| *len)
            .unwrap_or((0, 0));
        assert!(
            longest < MAX_RENDERED_LINE,
            "rendered-line-bound: line {number} of the rendered diagnostics has {longest} characters \
             (bound {MAX_RENDERED_LINE}); it starts: {:?}",
            rendered
                .lines()
                .nth(number.saturating_sub(1))
                .map(|l| l.chars().take(120).collect::<String>())
        );
    }
});
