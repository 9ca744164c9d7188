//! Manifest validation: every invalid fixture's diagnostics (snapshots), every
//! example valid, the committed JSON schema fresh, and no input panics.

#![allow(clippy::unwrap_used)] // test helpers fail loudly

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use relayctl::config::diag::Code;
use relayctl::config::{self, ManifestFile};

fn read(path: &Path) -> Vec<ManifestFile> {
    relayctl::source::read_local(path).expect("fixture readable")
}

fn render(files: &[ManifestFile]) -> (Vec<config::Diagnostic>, String) {
    let diagnostics =
        config::validate(files, Path::new("tests/fixtures")).expect_err("fixture must be invalid");
    let sources: BTreeMap<PathBuf, String> = files
        .iter()
        .map(|f| (f.path.clone(), f.text.clone()))
        .collect();
    let text = config::diag::render(&diagnostics, &sources);
    (diagnostics, text)
}

#[test]
fn invalid_fixtures_report_their_rule_with_location_and_hint() {
    insta::glob!("fixtures/invalid/*.yaml", |path| {
        let relative = path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap();
        let files = read(relative);
        let (diagnostics, text) = render(&files);
        let rule = relative.file_stem().unwrap().to_str().unwrap();
        if !matches!(rule, "many-problems" | "empty" | "not-a-mapping") {
            assert!(
                diagnostics.iter().any(|d| d.code.as_str() == rule),
                "{rule}: expected a `{rule}` diagnostic, got:\n{text}"
            );
        }
        for d in &diagnostics {
            assert!(
                d.hint.is_some() || d.code == Code::NotAMapping,
                "{rule}: no hint in {d:?}"
            );
        }
        insta::assert_snapshot!(text);
    });
}

#[test]
fn every_code_in_the_invalid_fixture_snapshots_is_a_code() {
    let mut seen = 0;
    for entry in std::fs::read_dir("tests/snapshots").unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap();
        if !name.starts_with("manifests__invalid_fixtures_") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines() {
            let Some(code) = line
                .strip_prefix("error[")
                .and_then(|rest| rest.split_once(']'))
                .map(|(code, _)| code)
            else {
                continue;
            };
            assert!(
                Code::ALL.iter().any(|c| c.as_str() == code),
                "{name}: `{code}` is not a `Code`"
            );
            seen += 1;
        }
    }
    assert!(
        seen >= 24,
        "expected the invalid fixtures' snapshots, found {seen} codes"
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let files = read(Path::new("tests/fixtures/invalid/many-problems.yaml"));
    let (diagnostics, _) = render(&files);
    let codes: Vec<_> = diagnostics.iter().map(|d| d.code.as_str()).collect();
    for code in [
        "invalid-duration",
        "invalid-value",
        "token-mode-without-tokens",
        "renew-before-too-long",
        "unknown-field",
    ] {
        assert!(codes.contains(&code), "{code} missing from {codes:?}");
    }
    assert!(
        diagnostics
            .iter()
            .all(|d| d.position.is_some_and(|p| p.line > 0))
    );
}

#[test]
fn every_example_is_valid() {
    let mut seen = 0;
    for entry in std::fs::read_dir("examples/clusters").unwrap() {
        let dir = entry.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let files = read(&dir);
        for file in &files {
            assert!(
                file.text.starts_with("# yaml-language-server: $schema="),
                "{} lacks the schema comment",
                file.path.display()
            );
        }
        let config = config::validate(&files, &dir).unwrap_or_else(|d| {
            panic!("{} is invalid: {d:#?}", dir.display());
        });
        assert_eq!(config.management.name.as_str(), "mgmt");
        assert_eq!(config.workloads.len(), 2, "{}", dir.display());
        seen += 1;
    }
    assert!(
        seen >= 5,
        "expected at least five example scenarios, found {seen}"
    );
}

#[test]
fn committed_schema_is_fresh() {
    let committed = std::fs::read_to_string("schemas/relayctl.schema.json")
        .expect("schemas/relayctl.schema.json is committed");
    let generated = serde_json::to_string_pretty(&config::raw::json_schema()).unwrap() + "\n";
    assert!(
        committed == generated,
        "schemas/relayctl.schema.json is stale: run `just schema` and commit the result"
    );
}

#[test]
fn schema_accepts_the_examples_shape_and_rejects_unknown_fields() {
    let schema = config::raw::json_schema();
    let text = schema.to_string();
    for needle in [
        "RelayTrust",
        "ManagementCluster",
        "WorkloadCluster",
        "\"additionalProperties\":false",
        "ecdsa-p256",
        "preprovisioned",
    ] {
        assert!(text.contains(needle), "schema lacks {needle}");
    }
}

fn example_text() -> String {
    let files = read(Path::new("examples/clusters/managed"));
    files
        .iter()
        .map(|f| f.text.clone())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn validation_never_panics_on_arbitrary_text(text in "\\PC{0,400}") {
        let _ = config::validate(&[ManifestFile { path: "fuzz.yaml".into(), text }], Path::new(""));
    }

    #[test]
    fn validation_never_panics_on_mangled_examples(cut in 0usize..2000, insert in "[ :{}\\[\\],\\-\\n#*&!|>'\"a-z0-9]{0,12}") {
        let mut text = example_text();
        let at = cut.min(text.len());
        let at = (0..=at).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        text.insert_str(at, &insert);
        let _ = config::validate(&[ManifestFile { path: "fuzz.yaml".into(), text }], Path::new(""));
    }
}
