//! Typed deserialization that recovers from errors.
//!
//! serde stops at the first problem; a user fixing a manifest wants every
//! unknown field and every type error at once, each at its line. So the
//! located tree is converted to JSON and read with `serde_ignored` (which
//! collects unknown fields) and `serde_path_to_error` (which says where a
//! type error is); after each type error the field at fault is removed and
//! the document read again.

use serde::de::DeserializeOwned;

use crate::config::diag::{Code, Reporter, field_path};
use crate::config::node::{Node, Step, Value};

/// Deserializes a document into its raw type, reporting every unknown field
/// and the first type error with their positions.
pub(super) fn typed<T: DeserializeOwned>(r: &mut Reporter<'_>) -> Option<T> {
    let mut json = r.node.to_json();
    let mut unknown: Vec<Vec<Step>> = Vec::new();
    let mut type_errors = 0;
    // serde stops at the first type error; to report every one, the field at
    // fault is removed and the document read again. The document is dropped
    // if any was found, so no later rule runs on a half-read document.
    for pass in 0..MAX_TYPE_ERRORS {
        let result = {
            let mut on_ignored = |p: serde_ignored::Path<'_>| {
                if pass == 0 {
                    unknown.push(ignored_steps(&p));
                }
            };
            let ignored = serde_ignored::Deserializer::new(&json, &mut on_ignored);
            serde_path_to_error::deserialize::<_, T>(ignored)
        };
        match result {
            Ok(value) => {
                report_unknown(r, &unknown);
                return (type_errors == 0).then_some(value);
            }
            Err(err) => {
                let steps: Vec<Step> = err
                    .path()
                    .iter()
                    .filter_map(|segment| match segment {
                        serde_path_to_error::Segment::Map { key } => Some(Step::Key(key.clone())),
                        serde_path_to_error::Segment::Seq { index } => Some(Step::Index(*index)),
                        _ => None,
                    })
                    .collect();
                r.at_value(
                    &steps,
                    Code::InvalidType,
                    type_message(&err.inner().to_string(), r.node.get(&steps)),
                    Some(
                        "see the manifest reference for the expected shape of this field"
                            .to_owned(),
                    ),
                );
                type_errors += 1;
                if !remove_field(&mut json, &steps) {
                    break;
                }
            }
        }
    }
    report_unknown(r, &unknown);
    None
}

/// Type errors reported per document at most.
const MAX_TYPE_ERRORS: usize = 32;

/// Removes the mapping entry at `steps` (for a list element, the whole list,
/// so later indices keep their positions). False when there is nothing to remove.
fn remove_field(json: &mut serde_json::Value, steps: &[Step]) -> bool {
    let key_end = steps
        .iter()
        .rposition(|s| matches!(s, Step::Key(_)))
        .map_or(0, |i| i + 1);
    let Some((Step::Key(last), parent)) = steps[..key_end].split_last() else {
        return false;
    };
    let mut node = json;
    for step in parent {
        node = match (node, step) {
            (serde_json::Value::Object(map), Step::Key(k)) => match map.get_mut(k) {
                Some(child) => child,
                None => return false,
            },
            (serde_json::Value::Array(items), Step::Index(i)) => match items.get_mut(*i) {
                Some(child) => child,
                None => return false,
            },
            _ => return false,
        };
    }
    match node {
        serde_json::Value::Object(map) => map.remove(last).is_some(),
        _ => false,
    }
}

/// One diagnostic per unknown field, at its key.
fn report_unknown(r: &mut Reporter<'_>, unknown: &[Vec<Step>]) {
    for steps in unknown {
        let name = match steps.last() {
            Some(Step::Key(k)) => k.clone(),
            _ => "?".to_owned(),
        };
        let parent = field_path(&steps[..steps.len().saturating_sub(1)]);
        r.at_key(steps, Code::UnknownField, format!("unknown field `{name}`{}", if parent.is_empty() { String::new() } else { format!(" in `{parent}`") }), Some("check the spelling against the manifest reference (`relayctl schema` prints the JSON schema)".to_owned()));
    }
}

/// serde's type error without the value it quotes (`invalid type: string
/// "…", expected …`): a key or token pasted inline must not be echoed.
fn type_message(serde_message: &str, found: Option<&Node>) -> String {
    let Some((_, expected)) = serde_message.split_once(", expected ") else {
        return serde_message.to_owned();
    };
    let found = match found.map(|n| &n.value) {
        Some(Value::String(_)) => "a string",
        Some(Value::Int(_) | Value::Float(_)) => "a number",
        Some(Value::Bool(_)) => "a boolean",
        Some(Value::Null) => "nothing",
        Some(Value::Seq(_)) => "a list",
        Some(Value::Map(_)) => "a mapping",
        None => "something else",
    };
    let expected = expected
        .replace(
            "struct RawSource",
            "a material source (`{ file: ... }`, `{ env: ... }` or `{ secret: ... }`)",
        )
        .replace("struct Raw", "a mapping (")
        .replace("a sequence", "a list");
    let expected = if expected.starts_with("a mapping (") {
        "a mapping".to_owned()
    } else {
        expected
    };
    format!("expected {expected}, found {found}")
}

/// The path `serde_ignored` reports as steps into the document.
fn ignored_steps(p: &serde_ignored::Path<'_>) -> Vec<Step> {
    use serde_ignored::Path as P;
    match p {
        P::Root => Vec::new(),
        P::Seq { parent, index } => {
            let mut steps = ignored_steps(parent);
            steps.push(Step::Index(*index));
            steps
        }
        P::Map { parent, key } => {
            let mut steps = ignored_steps(parent);
            steps.push(Step::Key(key.clone()));
            steps
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            ignored_steps(parent)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::TrustSpec;
    use super::*;

    #[test]
    fn every_unknown_field_is_reported_at_its_key() {
        let spec = TrustSpec::test()
            .with("ca.moed", "managed")
            .with("serverr", "{ validity: 8760h }");
        let d = spec.reports(Code::UnknownField, "spec.ca.moed");
        assert_eq!(d.message, "unknown field `moed` in `spec.ca`");
        let d = spec.reports(Code::UnknownField, "spec.serverr");
        assert_eq!(d.message, "unknown field `serverr` in `spec`");
        assert_eq!(spec.codes(), [Code::UnknownField, Code::UnknownField]);
    }

    #[test]
    fn every_type_error_is_reported_and_the_document_dropped() {
        // The type errors hide the mode rule that the spec also breaks.
        let spec = TrustSpec::test()
            .with("prune", "[yes]")
            .with("server.dnsNames", "{ first: a }")
            .with("identityToken.enabled", "false");
        let d = spec.reports(Code::InvalidType, "spec.prune");
        assert_eq!(d.message, "expected a boolean, found a list");
        let d = spec.reports(Code::InvalidType, "spec.server.dnsNames");
        assert_eq!(d.message, "expected a list, found a mapping");
        assert_eq!(spec.codes(), [Code::InvalidType, Code::InvalidType]);
    }

    #[test]
    fn a_type_error_never_quotes_the_value() {
        let spec = TrustSpec::test()
            .with_mode("custom")
            .with("ca.root.privateKey", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC");
        let d = spec.reports(Code::InvalidType, "spec.ca.root.privateKey");
        assert!(
            d.message.starts_with("expected a material source"),
            "{}",
            d.message
        );
        assert!(d.message.ends_with("found a string"), "{}", d.message);
        assert!(!d.message.contains("MIIE"));
    }

    #[test]
    fn removing_a_list_element_removes_the_list() {
        let mut json = serde_json::json!({ "spec": { "dnsNames": ["a", 1], "prune": true } });
        let steps = [key("spec"), key("dnsNames"), Step::Index(1)];
        assert!(remove_field(&mut json, &steps));
        assert_eq!(json, serde_json::json!({ "spec": { "prune": true } }));
        assert!(!remove_field(
            &mut json,
            &[key("spec"), key("absent"), key("x")]
        ));
        assert!(!remove_field(&mut json, &[]));
    }

    #[test]
    fn serde_messages_without_an_expectation_pass_through() {
        assert_eq!(type_message("missing field `x`", None), "missing field `x`");
    }

    fn key(name: &str) -> Step {
        Step::Key(name.to_owned())
    }
}
