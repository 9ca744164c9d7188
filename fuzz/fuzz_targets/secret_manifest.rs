//! The directory backend's Secret manifest parser on arbitrary bytes. Must
//! never panic.
//!
//! Invariant check `error-quotes-no-data`: when parsing fails and the input
//! reads as YAML with a `data:` map, the error (Display, its source chain and
//! Debug) contains none of that map's values. Checked for values of at least
//! 8 characters with no whitespace or backtick that are not all digits: the
//! error may legitimately quote the kind, the apiVersion, a data key and the
//! path, so a value that also occurs inside one of those, or inside a word of
//! the error's fixed text, is not counted (every quoted piece is wrapped in
//! backticks or spaces, so an occurrence of such a value lies inside one of
//! them). Values with whitespace or backticks are not checked.
#![no_main]

use std::collections::BTreeMap;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use relayctl::backend::directory::parse_secret_file;
use relayctl_fuzz::check_enabled;
use serde::Deserialize;

const PATH: &str = "s.yaml";

/// What the error may quote, read with the same coercion as the parser
/// (scalars as strings), so a quoted kind compares as the parser shows it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LooseMeta {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    api_version: Option<String>,
}

/// The data values, as strings when they all read as strings.
#[derive(Deserialize)]
struct LooseData {
    #[serde(default)]
    data: Option<BTreeMap<String, String>>,
}

/// The data values whatever they are (an error may come from one that is not
/// a string).
#[derive(Deserialize)]
struct AnyData {
    #[serde(default)]
    data: Option<BTreeMap<String, serde_json::Value>>,
}

fn scalar_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn checked(value: &str) -> bool {
    value.chars().count() >= 8
        && !value.chars().any(|c| c.is_whitespace() || c == '`')
        && !value.chars().all(|c| c.is_ascii_digit())
}

fuzz_target!(|data: &[u8]| {
    let Err(err) = parse_secret_file(Path::new(PATH), data) else {
        return;
    };
    let mut shown = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        shown.push('\n');
        shown.push_str(&s.to_string());
        source = s.source();
    }
    shown.push('\n');
    shown.push_str(&format!("{err:?}"));

    if !check_enabled("error-quotes-no-data") {
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let map: BTreeMap<String, String> =
        match serde_saphyr::from_str::<LooseData>(text).map(|d| d.data) {
            Ok(Some(map)) => map,
            Ok(None) => return,
            Err(_) => match serde_saphyr::from_str::<AnyData>(text).map(|d| d.data) {
                Ok(Some(map)) => map
                    .into_iter()
                    .filter_map(|(k, v)| scalar_text(&v).map(|v| (k, v)))
                    .collect(),
                _ => return,
            },
        };
    // What the error may quote.
    let mut pieces: Vec<String> = vec![PATH.to_owned()];
    if let Ok(meta) = serde_saphyr::from_str::<LooseMeta>(text) {
        pieces.extend(meta.kind);
        pieces.extend(meta.api_version);
    }
    pieces.extend(map.keys().cloned());
    // As the error shows them: escaped by `text::printable`, and in Debug.
    let shown_forms: Vec<String> = pieces
        .iter()
        .flat_map(|p| {
            let printable = relayctl::text::printable(p).into_owned();
            [format!("{printable:?}"), printable, format!("{p:?}")]
        })
        .collect();
    pieces.extend(shown_forms);
    for value in map.values() {
        if !checked(value) || !shown.contains(value.as_str()) {
            continue;
        }
        if pieces.iter().any(|p| p.contains(value.as_str())) {
            continue;
        }
        // Inside a word of the error's fixed text, e.g. `apiVersion`.
        if FIXED_WORDS.iter().any(|w| w.contains(value.as_str())) {
            continue;
        }
        panic!("error-quotes-no-data: the error quotes the data value {value:?}: {shown}");
    }
});

/// Words of the parser's fixed error text that a value could coincide with.
const FIXED_WORDS: &[&str] = &[
    "manifest:",
    "apiVersion",
    "apiVersion:",
    "Corrupt",
    "reason:",
    "\"s.yaml\",",
    "Secret",
    "base64",
    "column",
];
