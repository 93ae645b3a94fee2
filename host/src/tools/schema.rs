//! JSON Schema checks: a tool's arguments before it runs, and a task's result before it is
//! recorded. Schemas are compiled once, when agents.toml (or a task) is loaded, with the
//! `jsonschema` crate (draft detected from `$schema`, 2020-12 by default); remote `$ref`s are
//! never fetched.

use serde_json::Value;

/// At most this many violations are named in one error, so an error result stays short for
/// the model.
const MAX_REPORTED: usize = 3;

/// A compiled JSON Schema.
pub struct Schema {
    json: Value,
    validator: jsonschema::Validator,
}

impl Schema {
    /// Compiles `json`.
    ///
    /// # Errors
    /// `json` is not a valid schema (the message says where), or, when `object` is set, it
    /// does not describe a JSON object (`"type": "object"`, which both OpenAI APIs require of
    /// a tool's parameters).
    pub fn compile(json: Value, object: bool) -> Result<Self, String> {
        if object && json.get("type").and_then(Value::as_str) != Some("object") {
            return Err(
                "a tool's parameters must be an object schema (`type = \"object\"`)".into(),
            );
        }
        let validator = jsonschema::validator_for(&json)
            .map_err(|e| format!("not a valid JSON Schema: {e}"))?;
        Ok(Self { json, validator })
    }

    /// The schema as written, for the model.
    pub fn json(&self) -> &Value {
        &self.json
    }

    /// Checks `value`.
    ///
    /// # Errors
    /// Up to three violations, each with its JSON pointer, in words for the model, e.g.
    /// `/order: 42 is not of type "string"`.
    pub fn check(&self, value: &Value) -> Result<(), String> {
        let errors: Vec<String> = self
            .validator
            .iter_errors(value)
            .take(MAX_REPORTED + 1)
            .map(|e| {
                let path = e.instance_path().to_string();
                let path = if path.is_empty() { "/".into() } else { path };
                format!("{path}: {e}")
            })
            .collect();
        if errors.is_empty() {
            return Ok(());
        }
        let mut text = errors[..errors.len().min(MAX_REPORTED)].join("; ");
        if errors.len() > MAX_REPORTED {
            text.push_str("; …");
        }
        Err(text)
    }
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Schema").field(&self.json).finish()
    }
}

impl PartialEq for Schema {
    fn eq(&self, other: &Self) -> bool {
        self.json == other.json
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order_schema() -> Schema {
        Schema::compile(
            json!({"type": "object", "properties": {"order": {"type": "string", "pattern": "^[0-9]+$"}},
                   "required": ["order"], "additionalProperties": false}),
            true,
        )
        .expect("valid schema")
    }

    #[test]
    fn valid_arguments_pass() {
        assert_eq!(order_schema().check(&json!({"order": "1042"})), Ok(()));
    }

    #[test]
    fn violations_are_named_with_their_pointer() {
        let schema = order_schema();
        let err = schema.check(&json!({"order": 1042})).unwrap_err();
        assert!(err.starts_with("/order: "), "{err}");
        assert!(err.contains("string"), "{err}");
        let err = schema.check(&json!({})).unwrap_err();
        assert!(err.contains("order"), "{err}");
        let err = schema.check(&json!({"order": "1", "x": 1})).unwrap_err();
        assert!(err.contains('x'), "{err}");
    }

    #[test]
    fn bad_schemas_and_non_object_parameters_are_refused() {
        assert!(Schema::compile(json!({"type": "string"}), true).is_err());
        assert!(Schema::compile(json!({"type": "object", "minProperties": "x"}), true).is_err());
        assert!(Schema::compile(json!({"type": "string"}), false).is_ok());
    }
}
