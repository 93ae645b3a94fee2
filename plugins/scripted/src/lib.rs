//! Scripted dialogue: the language-model stage of a pipeline agent, answered by a script
//! instead of a model. It is named honestly: it understands nothing; it matches keywords.
//!
//! For each caller turn it takes the caller's last message, finds the intent whose keywords it
//! contains most (ties go to the intent listed first), and replies with that intent's text, its
//! `{slot}` placeholders filled from `slots`. No intent matched: the `fallback` reply. The reply
//! streams one sentence per `text-delta`, so a pipeline's speech starts on the first sentence.
//!
//! Settings (the agent's `pipeline.llm.settings` in agents.toml):
//! ```json
//! { "intents": [ { "name": "hours", "keywords": ["hours", "open", "what time"],
//!                  "reply": "We are open {hours}." } ],
//!   "slots": { "hours": "nine to five, Monday to Friday" },
//!   "fallback": "Sorry, I can tell you our opening hours." }
//! ```
//! Keywords match whole words, case-insensitively; a keyword of several words matches them in
//! sequence. A reply that names a slot `slots` lacks is refused at `open`, naming both.
//!
//! Keypad: a pipeline agent's caller who presses keys has a turn `DTMF: <keys>` (e.g.
//! `DTMF: 1`, collected until `#` or a pause). An intent's `keys` (`["1"]`) choose it for such a
//! turn ("press one for our opening hours"); a keypad turn no intent's `keys` name is matched by
//! its words like speech, and its digits fill `{digits}`. An intent needs `keywords` or `keys`.
//!
//! Caller context: when the agent has a `caller_context` and the caller was found, the host
//! passes their row as `caller.COLUMN` parameters. An intent's optional `caller_reply` may name
//! them as slots (`"Your order {caller.order} is {caller.order_status}."`); it is used when
//! every `{caller.*}` slot it names is known for this call, and `reply` otherwise.
//!
//! Tools: an intent may call one of the agent's tools and speak from its result.
//! ```json
//! { "name": "order", "keywords": ["order"],
//!   "reply": "Which order number? Say it digit by digit.",
//!   "tool": { "name": "order_status", "arguments": { "order": "{digits}" } },
//!   "result_reply": "Order {result.order} is {result.status}, arriving {result.delivery.eta}.",
//!   "error_reply": "Sorry, I could not find order {digits}." }
//! ```
//! - `tool.arguments` is a JSON object whose strings are templates: `{digits}` is the longest
//!   run of digits in the caller's utterance, written ("1042", "10-42") or spoken ("one zero
//!   four two", "one oh four two", "ten forty-two"); `{caller.COLUMN}` a caller-context
//!   column; `{slot}` one of `slots`.
//! - When the caller's turn picks the intent, the agent has the tool (the `tools` input) and
//!   every placeholder of the arguments has a value, the reply is a `tool-call` (ids `call_1`,
//!   `call_2`, … per call) then `done`; otherwise it is the intent's plain `reply` (which can
//!   ask for what is missing, e.g. the number).
//! - The host runs the call and asks for the continuation (the history ends with the tool's
//!   result): the caller hears `result_reply` filled from the tool's JSON output —
//!   `{result.FIELD}` for a top-level field, `{result.a.b}` for a nested one (`{result.items.0}`
//!   indexes an array); strings as they are, numbers and booleans as JSON writes them — and
//!   from `{digits}`, `{caller.*}` and slots as the call's turn had them.
//! - A failed call (a result that is the host's `{"error": …}` object or not JSON), or a
//!   `result_reply` naming a field the output lacks, gives `error_reply` (optional; default:
//!   "Sorry, I couldn't look that up just now. Please try again in a moment."). `error_reply`
//!   may name `{digits}`, `{caller.*}` and slots, not `{result.*}`.
//! - At `open`, a placeholder nothing can fill is refused, naming the key and the
//!   placeholders; so are a `tool` without `result_reply`, a `result_reply` or `error_reply`
//!   without `tool`, and a tool name outside `[A-Za-z0-9_-]{1,64}`.
//!
//! To use a real model instead, point the agent's LLM stage at any OpenAI-compatible
//! `/v1/chat/completions` endpoint (see the repository README).

#![forbid(unsafe_code)]

mod digits;
mod template;

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::Value;
use switchboard_plugin_api::prelude::*;

/// What a caller hears when a tool failed and the intent has no `error_reply` (or its
/// `error_reply` cannot be filled on this call).
pub const DEFAULT_ERROR_REPLY: &str =
    "Sorry, I couldn't look that up just now. Please try again in a moment.";

/// The placeholder a tool's arguments and replies fill with the number the caller said.
const DIGITS: &str = "digits";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    intents: Vec<Intent>,
    #[serde(default)]
    slots: BTreeMap<String, String>,
    fallback: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Intent {
    name: String,
    #[serde(default)]
    keywords: Vec<String>,
    /// Keypad entries that choose the intent (`"1"`, `"0#"` is `"0"`): a pipeline agent's
    /// caller turn `DTMF: <keys>`.
    #[serde(default)]
    keys: Vec<String>,
    reply: String,
    /// The reply for a caller the host found in the agent's lookup file, with `{caller.*}`
    /// slots; `reply` when one of them is unknown.
    #[serde(default)]
    caller_reply: Option<String>,
    /// A tool to call, when the agent has it and its arguments can be filled.
    #[serde(default)]
    tool: Option<ToolUse>,
    /// What the caller hears when the tool answered, with `{result.*}` placeholders.
    #[serde(default)]
    result_reply: Option<String>,
    /// What the caller hears when the tool failed ([`DEFAULT_ERROR_REPLY`] when absent).
    #[serde(default)]
    error_reply: Option<String>,
}

/// How the host hands a pipeline agent a keypad turn: a user message `DTMF: <keys>`.
const KEYPAD_PREFIX: &str = "DTMF: ";

/// An intent's `tool` setting.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolUse {
    /// The tool's name, as the agent declares it.
    name: String,
    /// The call's arguments: a JSON object whose strings are templates.
    #[serde(default)]
    arguments: serde_json::Map<String, Value>,
}

/// An intent, ready to answer.
struct Compiled {
    name: String,
    /// Keyword word lists.
    keywords: Vec<Vec<String>>,
    /// Keypad entries that choose it.
    keys: Vec<String>,
    /// The plain reply, slots filled.
    reply: String,
    tool: Option<ToolStep>,
}

/// An intent's tool call, validated at open.
struct ToolStep {
    name: String,
    /// A JSON object whose strings are templates.
    arguments: Value,
    /// Template of the reply from the tool's output.
    result_reply: String,
    /// Template of the reply when the tool failed.
    error_reply: String,
}

/// The tool call waiting for its result.
struct Pending {
    /// The call's id.
    id: String,
    /// The intent that made it (index in `Scripted::intents`).
    intent: usize,
    /// The placeholder values of the turn that made it (slots, `caller.*`, `digits`).
    values: BTreeMap<String, String>,
}

/// One call's scripted conversation.
pub struct Scripted {
    /// In file order.
    intents: Vec<Compiled>,
    fallback: String,
    /// The slots and this call's `caller.*` parameters, by placeholder name.
    known: BTreeMap<String, String>,
    /// Names of the tools the agent has given (the `tools` input).
    tools: BTreeSet<String>,
    /// Tool calls made on this call so far (their ids are `call_1`, `call_2`, …).
    calls_made: u32,
    /// The last tool call made, until the next caller turn.
    pending: Option<Pending>,
}

impl Llm for Scripted {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "scripted".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description:
                "Scripted dialogue: keyword intents with slot-filled replies (not a language model)"
                    .into(),
            input_format: AudioFormat {
                encoding: AudioEncoding::Pcm16,
                sample_rate: 8000,
            },
        }
    }

    fn open(config: SessionConfig) -> Result<Self, PluginError> {
        let settings: Settings = serde_json::from_str(&config.settings)
            .map_err(|e| PluginError::InvalidConfig(format!("scripted settings: {e}")))?;
        let fill = |text: &str, whose: &str| fill_slots(text, &settings.slots, whose);
        // The slots plus the caller's `caller.*` parameters, for `caller_reply`.
        let mut with_caller = settings.slots.clone();
        with_caller.extend(
            config
                .call
                .parameters
                .iter()
                .filter(|(name, _)| name.starts_with("caller."))
                .cloned(),
        );
        let mut intents = Vec::new();
        for intent in &settings.intents {
            if intent.keywords.is_empty() && intent.keys.is_empty() {
                return Err(PluginError::InvalidConfig(format!(
                    "intents.{}: no keywords and no keys",
                    intent.name
                )));
            }
            let keywords = intent.keywords.iter().map(|k| words(k)).collect();
            let mut reply = fill(&intent.reply, &format!("intents.{}.reply", intent.name))?;
            if let Some(caller_reply) = &intent.caller_reply {
                let whose = format!("intents.{}.caller_reply", intent.name);
                let missing = missing_slots(caller_reply, &with_caller);
                if let Some(name) = missing.iter().find(|n| !n.starts_with("caller.")) {
                    return Err(PluginError::InvalidConfig(format!(
                        "{whose}: slot {{{name}}} is not in slots"
                    )));
                }
                if missing.is_empty() {
                    reply = fill_slots(caller_reply, &with_caller, &whose)?;
                }
            }
            intents.push(Compiled {
                name: intent.name.clone(),
                keywords,
                keys: intent.keys.clone(),
                reply,
                tool: tool_step(intent, &settings.slots)?,
            });
        }
        Ok(Self {
            intents,
            fallback: fill(&settings.fallback, "fallback")?,
            known: with_caller,
            tools: BTreeSet::new(),
            calls_made: 0,
            pending: None,
        })
    }

    fn handle(&mut self, input: LlmInput) -> Result<Vec<LlmOutput>, PluginError> {
        let history = match input {
            LlmInput::Reply(history) => history,
            LlmInput::Tools(tools) => {
                self.tools = tools.into_iter().map(|t| t.name).collect();
                return Ok(Vec::new());
            }
            _ => return Ok(Vec::new()),
        };
        let reply = match history.last() {
            Some(last) if last.role == Role::Tool => self.result_reply(&history),
            last => {
                self.pending = None;
                let user = history.iter().rev().find(|m| m.role == Role::User);
                let said = user.map(|m| words(&m.content)).unwrap_or_default();
                // A keypad turn chooses by its keys, else by its words (its digits fill
                // `{digits}` either way).
                let keyed = user
                    .and_then(|m| m.content.strip_prefix(KEYPAD_PREFIX))
                    .and_then(|keys| {
                        self.intents
                            .iter()
                            .position(|i| i.keys.iter().any(|k| k == keys))
                    });
                let intent = keyed.or_else(|| self.intent(&said));
                if last.is_some_and(|m| m.role == Role::User)
                    && let Some(intent) = intent
                    && let Some(call) = self.tool_call(intent, &said)
                {
                    return Ok(vec![LlmOutput::ToolCall(call), LlmOutput::Done]);
                }
                intent
                    .map_or(&self.fallback, |i| &self.intents[i].reply)
                    .clone()
            }
        };
        let mut out: Vec<LlmOutput> = sentences(&reply)
            .into_iter()
            .map(LlmOutput::TextDelta)
            .collect();
        out.push(LlmOutput::Done);
        Ok(out)
    }
}

impl Scripted {
    /// The intent for what the caller said (as lowercase words): the one whose keywords it
    /// contains most, the first of equals; `None` when no keyword matched.
    fn intent(&self, said: &[String]) -> Option<usize> {
        let mut best: Option<(usize, usize)> = None;
        for (i, intent) in self.intents.iter().enumerate() {
            let score = intent.keywords.iter().filter(|k| contains(said, k)).count();
            if score > 0 && best.is_none_or(|(s, _)| score > s) {
                best = Some((score, i));
            }
        }
        let (_, i) = best?;
        host::log(LogLevel::Debug, &format!("intent {}", self.intents[i].name));
        Some(i)
    }

    /// The tool call intent `i` makes for what the caller said: `None` when it has no tool, the
    /// agent does not have that tool, or an argument names a placeholder with no value on this
    /// turn (no number said, a `caller.*` column unknown); the intent's `reply` is said then.
    fn tool_call(&mut self, i: usize, said: &[String]) -> Option<ToolCall> {
        let step = self.intents[i].tool.as_ref()?;
        if !self.tools.contains(&step.name) {
            host::log(
                LogLevel::Debug,
                &format!("tool {} is not the agent's: plain reply", step.name),
            );
            return None;
        }
        let mut values = self.known.clone();
        if let Some(number) = digits::digits(said) {
            values.insert(DIGITS.into(), number);
        }
        let arguments = fill_json(&step.arguments, &values)?;
        self.calls_made += 1;
        let id = format!("call_{}", self.calls_made);
        host::log(
            LogLevel::Debug,
            &format!(
                "intent {} calls tool {} ({id})",
                self.intents[i].name, step.name
            ),
        );
        let call = ToolCall {
            id: id.clone(),
            name: step.name.clone(),
            arguments: arguments.to_string(),
        };
        self.pending = Some(Pending {
            id,
            intent: i,
            values,
        });
        Some(call)
    }

    /// What the caller hears once the tool answered (`history` ends with tool messages).
    fn result_reply(&self, history: &[Message]) -> String {
        let found = self.pending.as_ref().and_then(|pending| {
            let result = history
                .iter()
                .rev()
                .take_while(|m| m.role == Role::Tool)
                .find(|m| m.tool_call_id.as_deref() == Some(pending.id.as_str()))?;
            Some((pending, result))
        });
        let Some((pending, result)) = found else {
            host::log(
                LogLevel::Warn,
                "a tool result for a call this script did not make: the default error reply",
            );
            return DEFAULT_ERROR_REPLY.into();
        };
        let Some(step) = &self.intents[pending.intent].tool else {
            return DEFAULT_ERROR_REPLY.into();
        };
        let value = |name: &str| pending.values.get(name).cloned();
        let error_reply =
            || template::render(&step.error_reply, value).unwrap_or(DEFAULT_ERROR_REPLY.into());
        let output = match tool_output(&result.content) {
            Ok(output) => output,
            Err(why) => {
                host::log(LogLevel::Info, &format!("tool {}: {why}", step.name));
                return error_reply();
            }
        };
        let with_result = |name: &str| match name.strip_prefix("result.") {
            Some(path) => result_field(&output, path),
            None => value(name),
        };
        template::render(&step.result_reply, with_result).unwrap_or_else(|missing| {
            host::log(
                LogLevel::Info,
                &format!("tool {}: no {{{missing}}} for result_reply", step.name),
            );
            error_reply()
        })
    }
}

/// Intent `intent`'s tool step, its templates checked against what they may name.
///
/// # Errors
/// [`PluginError::InvalidConfig`] naming the key: `result_reply` or `error_reply` without a
/// `tool`, a `tool` without `result_reply`, a bad tool name, a placeholder the script cannot
/// fill.
fn tool_step(
    intent: &Intent,
    slots: &BTreeMap<String, String>,
) -> Result<Option<ToolStep>, PluginError> {
    let name = &intent.name;
    let invalid = |m: String| PluginError::InvalidConfig(format!("intents.{name}.{m}"));
    let Some(tool) = &intent.tool else {
        return match (&intent.result_reply, &intent.error_reply) {
            (None, None) => Ok(None),
            (Some(_), _) => Err(invalid(
                "result_reply: there is no tool to reply from".into(),
            )),
            (None, Some(_)) => Err(invalid("error_reply: there is no tool to fail".into())),
        };
    };
    let valid_name = (1..=64).contains(&tool.name.len())
        && tool
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid_name {
        return Err(invalid(format!(
            "tool.name: {:?} is not 1–64 of A–Z, a–z, 0–9, _ and -",
            tool.name
        )));
    }
    let Some(result_reply) = &intent.result_reply else {
        return Err(invalid(
            "result_reply: a tool needs one (what the caller hears from its output)".into(),
        ));
    };
    let arguments = Value::Object(tool.arguments.clone());
    let mut templates = Vec::new();
    json_strings(&arguments, "tool.arguments", &mut templates);
    for (key, text) in &templates {
        check_placeholders(text, slots, false).map_err(|e| invalid(format!("{key}: {e}")))?;
    }
    check_placeholders(result_reply, slots, true)
        .map_err(|e| invalid(format!("result_reply: {e}")))?;
    let error_reply = intent
        .error_reply
        .clone()
        .unwrap_or_else(|| DEFAULT_ERROR_REPLY.into());
    check_placeholders(&error_reply, slots, false)
        .map_err(|e| invalid(format!("error_reply: {e}")))?;
    Ok(Some(ToolStep {
        name: tool.name.clone(),
        arguments,
        result_reply: result_reply.clone(),
        error_reply,
    }))
}

/// The strings inside `value`, each with its key path under `path`
/// (`tool.arguments.order`, `tool.arguments.items.0`).
fn json_strings<'v>(value: &'v Value, path: &str, out: &mut Vec<(String, &'v str)>) {
    match value {
        Value::String(s) => out.push((path.to_string(), s)),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                json_strings(item, &format!("{path}.{i}"), out);
            }
        }
        Value::Object(fields) => {
            for (key, item) in fields {
                json_strings(item, &format!("{path}.{key}"), out);
            }
        }
        _ => {}
    }
}

/// Refuses the placeholders of a tool template that nothing fills: the known ones are `slots`,
/// `{digits}`, `{caller.*}`, and with `results` `{result.*}`.
///
/// # Errors
/// The unknown names (or an unclosed `{`), in words.
fn check_placeholders(
    text: &str,
    slots: &BTreeMap<String, String>,
    results: bool,
) -> Result<(), String> {
    let unknown: Vec<String> = template::placeholders(text)?
        .into_iter()
        .filter(|name| {
            let caller = name.strip_prefix("caller.").is_some_and(|c| !c.is_empty());
            let result = results && name.strip_prefix("result.").is_some_and(|r| !r.is_empty());
            !(slots.contains_key(*name) || *name == DIGITS || caller || result)
        })
        .map(|name| format!("{{{name}}}"))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let mut known = vec![format!("{{{DIGITS}}}"), "{caller.COLUMN}".to_string()];
    if results {
        known.insert(0, "{result.FIELD}".into());
    }
    known.extend(slots.keys().map(|k| format!("{{{k}}}")));
    Err(format!(
        "unknown placeholder{} {} (known: {})",
        if unknown.len() == 1 { "" } else { "s" },
        unknown.join(", "),
        known.join(", ")
    ))
}

/// `template` (a JSON value whose strings are templates) filled from `values`; `None` when a
/// placeholder has no value.
fn fill_json(template: &Value, values: &BTreeMap<String, String>) -> Option<Value> {
    Some(match template {
        Value::String(s) => Value::String(template::render(s, |n| values.get(n).cloned()).ok()?),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| fill_json(item, values))
                .collect::<Option<_>>()?,
        ),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| Some((k.clone(), fill_json(v, values)?)))
                .collect::<Option<_>>()?,
        ),
        other => other.clone(),
    })
}

/// A tool message's content as a tool output: JSON that is not an error.
///
/// # Errors
/// The host's error form (an object with an `error` key) or text that is not JSON, in words.
fn tool_output(content: &str) -> Result<Value, String> {
    let value: Value =
        serde_json::from_str(content).map_err(|e| format!("the result is not JSON ({e})"))?;
    match value.get("error") {
        Some(error) => Err(format!("the tool failed: {error}")),
        None => Ok(value),
    }
}

/// Field `path` (`status`, `delivery.eta`, `items.0.name`) of a tool output, as words: a string
/// as it is, a number or a boolean as JSON writes it; `None` for anything else or nothing.
fn result_field(output: &Value, path: &str) -> Option<String> {
    let mut at = output;
    for key in path.split('.') {
        at = match at {
            Value::Object(fields) => fields.get(key)?,
            Value::Array(items) => items.get(key.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    match at {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Lowercase words of `text` (letters, digits and apostrophes).
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// True when `needle` occurs in `haystack` as consecutive words.
fn contains(haystack: &[String], needle: &[String]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Replaces each `{slot}` in `text`.
///
/// # Errors
/// [`PluginError::InvalidConfig`] naming `whose`: an unclosed `{`, or a slot `slots` lacks.
fn fill_slots(
    text: &str,
    slots: &BTreeMap<String, String>,
    whose: &str,
) -> Result<String, PluginError> {
    template::placeholders(text)
        .map_err(|e| PluginError::InvalidConfig(format!("{whose}: {e}")))?;
    template::render(text, |name| slots.get(name).cloned()).map_err(|name| {
        PluginError::InvalidConfig(format!(
            "{whose}: slot {{{name}}} is not in slots (known: {})",
            slots.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })
}

/// The slots `text` names that `slots` lacks (none when a `{` is unclosed: filling it says so).
fn missing_slots<'t>(text: &'t str, slots: &BTreeMap<String, String>) -> Vec<&'t str> {
    template::placeholders(text)
        .unwrap_or_default()
        .into_iter()
        .filter(|name| !slots.contains_key(*name))
        .collect()
}

/// `text` cut after each `.`, `!` or `?` that ends a sentence, each piece keeping its spacing.
fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        current.push(c);
        if matches!(c, '.' | '!' | '?') && chars.peek().is_none_or(|n| n.is_whitespace()) {
            while chars.peek().is_some_and(|n| n.is_whitespace()) {
                current.extend(chars.next());
            }
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

switchboard_plugin_api::export_plugin!(llm: Scripted);
