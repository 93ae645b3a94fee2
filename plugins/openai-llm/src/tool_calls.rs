//! The tool calls of one streamed chat completion, assembled from their fragments. Chat
//! Completions streams each call as entries of `choices[0].delta.tool_calls`, keyed by `index`:
//! the first entry of an index carries `id`, `type` and `function.name`, and `function.arguments`
//! arrives as string fragments over that entry and the following ones. Several indexes are
//! parallel calls. The contract's `tool-call` output is whole, so the fragments are gathered here
//! and handed out in index order when the reply ends.

use std::collections::BTreeMap;

use serde_json::Value;
use switchboard_plugin_api::prelude::*;

/// Most calls one reply may ask for: OpenAI accepts at most 128 tools per request, and a model
/// calls each of them at most once or twice in a turn; a stream with more indexes is broken.
pub const MAX_CALLS: usize = 128;

/// Most bytes of one call's arguments: a model writes a few hundred; a megabyte is a runaway
/// stream, not arguments (and bounds what one reply can make the plugin hold).
pub const MAX_ARGUMENTS_BYTES: usize = 1 << 20;

/// Arguments of a call that streamed none: the empty object a call without parameters means.
const NO_ARGUMENTS: &str = "{}";

/// One call, as far as it has streamed.
#[derive(Debug, Default)]
struct Partial {
    id: String,
    name: String,
    arguments: String,
}

/// The calls of one reply, by `index`.
#[derive(Debug, Default)]
pub struct Assembler {
    calls: BTreeMap<u64, Partial>,
}

impl Assembler {
    /// Feeds one chunk's `delta.tool_calls` (an array of `{index, id?, type?, function: {name?,
    /// arguments?}}`; `null` is no entry).
    ///
    /// # Errors
    /// What is malformed, in words: not an array, an entry without a whole-number `index`, a
    /// field of the wrong type, a `type` other than `function`, an `id` or `name` that changes
    /// mid-call, more than [`MAX_CALLS`] indexes, arguments past [`MAX_ARGUMENTS_BYTES`].
    pub fn feed(&mut self, deltas: &Value) -> Result<(), String> {
        let entries = match deltas {
            Value::Null => return Ok(()),
            Value::Array(entries) => entries,
            other => return Err(format!("delta.tool_calls is not an array: {other}")),
        };
        for entry in entries {
            let index = entry
                .get("index")
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("a tool-call delta has no whole-number index: {entry}"))?;
            if let Some(kind) = text(entry.get("type"), index, "type")?
                && kind != "function"
            {
                return Err(format!(
                    "tool call {index}: type {kind:?} (only function tools are offered)"
                ));
            }
            let function = match entry.get("function") {
                None | Some(Value::Null) => None,
                Some(f @ Value::Object(_)) => Some(f),
                Some(other) => {
                    return Err(format!(
                        "tool call {index}: function is not an object: {other}"
                    ));
                }
            };
            let id = text(entry.get("id"), index, "id")?;
            let name = text(function.and_then(|f| f.get("name")), index, "function.name")?;
            let arguments = text(
                function.and_then(|f| f.get("arguments")),
                index,
                "function.arguments",
            )?;
            if !self.calls.contains_key(&index) && self.calls.len() == MAX_CALLS {
                return Err(format!("more than {MAX_CALLS} tool calls in one reply"));
            }
            let call = self.calls.entry(index).or_default();
            set_once(&mut call.id, id, index, "id")?;
            set_once(&mut call.name, name, index, "function.name")?;
            if let Some(fragment) = arguments {
                if call.arguments.len() + fragment.len() > MAX_ARGUMENTS_BYTES {
                    return Err(format!(
                        "tool call {index}: arguments past {MAX_ARGUMENTS_BYTES} bytes"
                    ));
                }
                call.arguments.push_str(fragment);
            }
        }
        Ok(())
    }

    /// The calls so far, in index order, and none left. A call that streamed no arguments
    /// gets `{}`.
    ///
    /// # Errors
    /// A call never got its `id` or its `function.name`.
    pub fn finish(&mut self) -> Result<Vec<ToolCall>, String> {
        std::mem::take(&mut self.calls)
            .into_iter()
            .map(|(index, call)| {
                if call.id.is_empty() {
                    return Err(format!("tool call {index} never got its id"));
                }
                if call.name.is_empty() {
                    return Err(format!(
                        "tool call {index} ({}) never got its function.name",
                        call.id
                    ));
                }
                Ok(ToolCall {
                    id: call.id,
                    name: call.name,
                    arguments: if call.arguments.is_empty() {
                        NO_ARGUMENTS.into()
                    } else {
                        call.arguments
                    },
                })
            })
            .collect()
    }
}

/// A string field of call `index`'s delta; absent or `null` is `None`.
fn text<'v>(value: Option<&'v Value>, index: u64, field: &str) -> Result<Option<&'v str>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!(
            "tool call {index}: {field} is not a string: {other}"
        )),
    }
}

/// Sets `slot` from the first entry that carries `value`; a later entry may repeat it but not
/// change it.
fn set_once(slot: &mut String, value: Option<&str>, index: u64, field: &str) -> Result<(), String> {
    match value {
        None | Some("") => Ok(()),
        Some(value) if slot.is_empty() => {
            value.clone_into(slot);
            Ok(())
        }
        Some(value) if value == slot => Ok(()),
        Some(value) => Err(format!(
            "tool call {index}: {field} changed mid-call ({slot:?}, then {value:?})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(id: &str, name: &str, arguments: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    #[test]
    fn fragments_join_per_index_and_calls_come_out_in_index_order() {
        let mut calls = Assembler::default();
        for delta in [
            json!([{"index": 1, "id": "call_b", "type": "function",
                    "function": {"name": "weather", "arguments": ""}}]),
            json!([{"index": 0, "id": "call_a", "type": "function",
                    "function": {"name": "order_status"}}]),
            json!([{"index": 1, "function": {"arguments": "{\"city\""}}]),
            json!([{"index": 0, "function": {"arguments": "{\"order\":"}},
                   {"index": 1, "function": {"arguments": ":\"Oslo\"}"}}]),
            json!([{"index": 0, "id": "call_a", "function": {"arguments": "\"1042\"}"}}]),
            Value::Null,
        ] {
            calls.feed(&delta).unwrap();
        }
        assert_eq!(
            calls.finish().unwrap(),
            [
                call("call_a", "order_status", r#"{"order":"1042"}"#),
                call("call_b", "weather", r#"{"city":"Oslo"}"#),
            ]
        );
        assert_eq!(calls.finish().unwrap(), [], "none left");
    }

    #[test]
    fn a_call_without_arguments_gets_the_empty_object() {
        let mut calls = Assembler::default();
        calls
            .feed(&json!([{"index": 0, "id": "c", "function": {"name": "hang_up", "arguments": null}}]))
            .unwrap();
        assert_eq!(calls.finish().unwrap(), [call("c", "hang_up", "{}")]);
    }

    #[test]
    fn malformed_deltas_are_errors_that_say_what() {
        for (delta, says) in [
            (json!({"index": 0}), "not an array"),
            (json!([{"id": "c"}]), "index"),
            (json!([{"index": -1}]), "index"),
            (json!([{"index": 0, "id": 7}]), "id is not a string"),
            (json!([{"index": 0, "type": "custom"}]), "\"custom\""),
            (
                json!([{"index": 0, "function": "f"}]),
                "function is not an object",
            ),
            (
                json!([{"index": 0, "function": {"arguments": {"a": 1}}}]),
                "arguments is not a string",
            ),
        ] {
            let e = Assembler::default().feed(&delta).unwrap_err();
            assert!(e.contains(says), "{delta}: {e}");
        }
        let mut calls = Assembler::default();
        calls.feed(&json!([{"index": 0, "id": "a"}])).unwrap();
        let e = calls.feed(&json!([{"index": 0, "id": "b"}])).unwrap_err();
        assert!(e.contains("changed"), "{e}");
    }

    #[test]
    fn calls_missing_an_id_or_a_name_are_errors() {
        let mut calls = Assembler::default();
        calls
            .feed(&json!([{"index": 0, "function": {"name": "f"}}]))
            .unwrap();
        assert!(calls.finish().unwrap_err().contains("id"));
        calls.feed(&json!([{"index": 0, "id": "c"}])).unwrap();
        assert!(calls.finish().unwrap_err().contains("function.name"));
    }

    #[test]
    fn runaway_streams_are_bounded() {
        let mut calls = Assembler::default();
        let many: Vec<Value> = (0..=MAX_CALLS).map(|i| json!({"index": i})).collect();
        assert!(
            calls
                .feed(&Value::Array(many))
                .unwrap_err()
                .contains("more than")
        );
        let mut calls = Assembler::default();
        let big = "x".repeat(MAX_ARGUMENTS_BYTES / 2 + 1);
        let fragment = json!([{"index": 0, "function": {"arguments": big}}]);
        calls.feed(&fragment).unwrap();
        assert!(calls.feed(&fragment).unwrap_err().contains("bytes"));
    }
}
