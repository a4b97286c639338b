//! Validation helpers shared by every stage's configuration type.
//!
//! Each stage owns its config struct (serde, `deny_unknown_fields`) next to its runtime type, with a
//! `validate` method that returns the first [`InvalidValue`] it finds. The profile loader prefixes the
//! key with the stage's position (`stage[2].ratio`) and names the profile in the final [`crate::Error`].

/// A configuration value outside its allowed range or set.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidValue {
    /// The key, relative to the config struct (`ratio`, `bands[1].gain_db`).
    pub key: String,
    /// What is wrong and what is allowed.
    pub reason: String,
}

impl InvalidValue {
    /// A new invalid-value report.
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// The same report with `prefix.` put before the key.
    pub fn within(self, prefix: &str) -> Self {
        Self {
            key: format!("{prefix}.{}", self.key),
            reason: self.reason,
        }
    }
}

/// Checks that `value` is finite and inside `min..=max`; `unit` is appended to the message ("Hz", "dB").
pub fn check_range(
    key: &str,
    value: f64,
    min: f64,
    max: f64,
    unit: &str,
) -> Result<(), InvalidValue> {
    if value.is_finite() && (min..=max).contains(&value) {
        Ok(())
    } else {
        let unit = if unit.is_empty() {
            String::new()
        } else {
            format!(" {unit}")
        };
        Err(InvalidValue::new(
            key,
            format!("{value}{unit} is out of range; allowed {min}{unit} to {max}{unit}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_message_names_value_and_bounds() {
        let err = check_range("ratio", 200.0, 1.0, 100.0, "").unwrap_err();
        assert_eq!(err.key, "ratio");
        assert_eq!(err.reason, "200 is out of range; allowed 1 to 100");
        assert!(check_range("f", f64::NAN, 0.0, 1.0, "Hz").is_err());
        assert_eq!(err.within("stage[1]").key, "stage[1].ratio");
    }
}
