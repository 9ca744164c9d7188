//! A YAML document as a tree that remembers where every node and key came from.
//!
//! serde stops at the first problem, but `validate` must report every problem
//! with its line and column. So each document is first read into this tree
//! (syntax errors are the only thing that can stop us here), then walked: the
//! tree answers "where is `spec.ca.mode`?" for every later diagnostic, and is
//! converted to JSON to deserialize the typed raw manifest.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// A line and column (both 1-based) inside one YAML file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
}

impl Position {
    fn of(location: &serde_saphyr::Location) -> Self {
        Self {
            line: location.line() as u32,
            column: location.column() as u32,
        }
    }
}

/// One YAML node with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// What the node holds.
    pub value: Value,
    /// Where it starts.
    pub position: Position,
}

/// The content of a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `~`, `null` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A number with a fraction.
    Float(f64),
    /// Any other scalar.
    String(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order, keys with their own positions.
    Map(Vec<(Key, Node)>),
}

/// A mapping key with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// The key text.
    pub name: String,
    /// Where the key starts.
    pub position: Position,
}

/// One step of a path into a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

impl Node {
    /// The node a path leads to, if it exists.
    pub fn get(&self, path: &[Step]) -> Option<&Node> {
        let Some((first, rest)) = path.split_first() else {
            return Some(self);
        };
        let child = match (&self.value, first) {
            (Value::Map(entries), Step::Key(name)) => entries
                .iter()
                .find(|(key, _)| &key.name == name)
                .map(|(_, node)| node),
            (Value::Seq(items), Step::Index(index)) => items.get(*index),
            _ => None,
        }?;
        child.get(rest)
    }

    /// The position of the key that a path ends in (so a diagnostic about an
    /// unknown field points at its name), or of the node, or of the deepest
    /// ancestor that exists.
    pub fn locate(&self, path: &[Step]) -> Position {
        let mut node = self;
        let mut position = self.position;
        for step in path {
            match (&node.value, step) {
                (Value::Map(entries), Step::Key(name)) => {
                    match entries.iter().find(|(key, _)| &key.name == name) {
                        Some((key, child)) => {
                            position = key.position;
                            node = child;
                        }
                        None => return position,
                    }
                }
                (Value::Seq(items), Step::Index(index)) => match items.get(*index) {
                    Some(child) => {
                        position = child.position;
                        node = child;
                    }
                    None => return position,
                },
                _ => return position,
            }
        }
        position
    }

    /// The position of the value (not the key) at `path`, or [`Node::locate`].
    pub fn locate_value(&self, path: &[Step]) -> Position {
        self.get(path)
            .map(|node| node.position)
            .unwrap_or_else(|| self.locate(path))
    }

    /// Converts to JSON, dropping positions, to feed serde.
    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::Seq(items) => {
                serde_json::Value::Array(items.iter().map(Node::to_json).collect())
            }
            Value::Map(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|(key, node)| (key.name.clone(), node.to_json()))
                    .collect(),
            ),
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Value>::deserialize(deserializer)?;
        Ok(Node {
            value: spanned.value,
            position: Position::of(&spanned.referenced),
        })
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Value>::deserialize(deserializer)?;
        let name = match spanned.value {
            Value::String(s) => s,
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Null => "null".to_owned(),
            Value::Seq(_) | Value::Map(_) => {
                return Err(de::Error::custom("mapping keys must be plain scalars"));
            }
        };
        Ok(Key {
            name,
            position: Position::of(&spanned.referenced),
        })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Value::deserialize(deserializer)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::String(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries: Vec<(Key, Node)> = Vec::new();
        while let Some(key) = map.next_key::<Key>()? {
            let value = map.next_value::<Node>()?;
            entries.push((key, value));
        }
        Ok(Value::Map(entries))
    }
}

/// A YAML syntax error with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// What the parser said.
    pub message: String,
    /// Where, when known.
    pub position: Option<Position>,
}

/// Largest manifest file accepted; manifests are small, and a huge file is a mistake.
pub const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;

/// Parses every document of one YAML file. Empty documents are skipped.
pub fn parse_documents(text: &str) -> Result<Vec<Node>, SyntaxError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(SyntaxError {
            message: format!(
                "file is {} bytes; manifests larger than {} bytes are refused",
                text.len(),
                MAX_FILE_BYTES
            ),
            position: None,
        });
    }
    // YAML 1.2 booleans only (a cluster named `no` stays a string), and a
    // repeated key is an error rather than a silent override.
    let options = serde_saphyr::options! {
        strict_booleans: true,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
    };
    let documents: Vec<Option<Node>> = serde_saphyr::from_multiple_with_options(text, options)
        .map_err(|err| {
            let position = err
                .location()
                .map(|loc| Position::of(&loc))
                .filter(|p| p.line > 0);
            SyntaxError {
                message: first_line(&err.to_string()),
                position,
            }
        })?;
    Ok(documents
        .into_iter()
        .flatten()
        .filter(|node| node.value != Value::Null)
        .collect())
}

/// The parser's message without its own `error: line L column C:` prefix
/// (we print the position ourselves).
fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or(text).trim();
    let line = line.strip_prefix("error: ").unwrap_or(line);
    match line
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(": "))
    {
        Some((_, message)) => message.to_owned(),
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Step {
        Step::Key(name.to_owned())
    }

    #[test]
    fn positions_point_at_keys_and_values() {
        let docs = parse_documents("a: 1\nb:\n  c: [x, y]\n  d: text\n").unwrap();
        let doc = &docs[0];
        assert_eq!(
            doc.locate(&[key("b"), key("d")]),
            Position { line: 4, column: 3 }
        );
        assert_eq!(
            doc.locate_value(&[key("b"), key("d")]),
            Position { line: 4, column: 6 }
        );
        assert_eq!(
            doc.get(&[key("b"), key("c"), Step::Index(1)])
                .unwrap()
                .value,
            Value::String("y".into())
        );
        assert_eq!(
            doc.locate(&[key("b"), key("missing")]),
            Position { line: 2, column: 1 }
        );
    }

    #[test]
    fn yaml_1_1_booleans_stay_strings() {
        let docs = parse_documents("a: [y, no, on, true]\n").unwrap();
        assert_eq!(
            docs[0].to_json(),
            serde_json::json!({"a": ["y", "no", "on", true]})
        );
    }

    #[test]
    fn duplicate_keys_are_an_error() {
        let err = parse_documents("a: 1\na: 2\n").unwrap_err();
        assert_eq!(err.position.map(|p| p.line), Some(2), "{err:?}");
    }

    #[test]
    fn several_documents_per_file() {
        let docs = parse_documents("a: 1\n---\nb: 2\n---\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].position.line, 3);
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let err = parse_documents("a: [1, 2\nb: c\n").unwrap_err();
        assert!(err.position.is_some(), "{err:?}");
    }

    #[test]
    fn json_conversion_keeps_structure() {
        let docs = parse_documents("a: {b: [1, true, ~, x]}\n").unwrap();
        assert_eq!(
            docs[0].to_json(),
            serde_json::json!({"a": {"b": [1, true, null, "x"]}})
        );
    }
}
