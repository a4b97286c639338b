//! Reading the deploy files' YAML: documents, paths into a value, scalars as text, and the list of
//! problems every check adds to.

use serde::Deserialize;
use serde_yaml::Value;

/// Every document of a YAML stream (`---` separated); empty documents are left out.
pub fn documents(text: &str) -> Result<Vec<Value>, serde_yaml::Error> {
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value = Value::deserialize(document)?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

/// The value at `path` (mapping keys) under `value`.
pub fn at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |value, key| value.get(*key))
}

/// A scalar as text: strings as they are, numbers and booleans written out.
pub fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The text at `path`.
pub fn text_at(value: &Value, path: &[&str]) -> Option<String> {
    at(value, path).and_then(text)
}

/// The items of the sequence at `path` (none when it is absent or not a sequence).
pub fn items<'a>(value: &'a Value, path: &[&str]) -> &'a [Value] {
    at(value, path)
        .and_then(Value::as_sequence)
        .map_or(&[], Vec::as_slice)
}

/// The string items of a sequence, or the words of a string (compose's `command: "a b"`).
pub fn words(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Sequence(items)) => items.iter().filter_map(text).collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// `true` when every `key: value` of `selector` is in `labels` (and `selector` has at least one).
pub fn selects(selector: Option<&Value>, labels: Option<&Value>) -> bool {
    let (Some(Value::Mapping(selector)), Some(Value::Mapping(labels))) = (selector, labels) else {
        return false;
    };
    !selector.is_empty()
        && selector
            .iter()
            .all(|(key, value)| labels.get(key).and_then(text) == text(value))
}

/// What the checks found wrong, each saying where.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<String>);

impl Problems {
    /// Adds one.
    pub fn add(&mut self, problem: impl Into<String>) {
        self.0.push(problem.into());
    }

    /// Adds several.
    pub fn extend(&mut self, problems: impl IntoIterator<Item = String>) {
        self.0.extend(problems);
    }

    /// `true` when some problem contains `part`.
    pub fn mentions(&self, part: &str) -> bool {
        self.0.iter().any(|p| p.contains(part))
    }

    /// Panics with every problem when there is any.
    pub fn assert_none(&self, what: &str) {
        assert!(
            self.0.is_empty(),
            "{what}: {} problem(s)\n  {}",
            self.0.len(),
            self.0.join("\n  ")
        );
    }
}
