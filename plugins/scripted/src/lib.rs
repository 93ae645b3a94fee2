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
//! Caller context: when the agent has a `caller_context` and the caller was found, the host
//! passes their row as `caller.COLUMN` parameters. An intent's optional `caller_reply` may name
//! them as slots (`"Your order {caller.order} is {caller.order_status}."`); it is used when
//! every `{caller.*}` slot it names is known for this call, and `reply` otherwise.
//!
//! To use a real model instead, point the agent's LLM stage at any OpenAI-compatible
//! `/v1/chat/completions` endpoint (see the repository README).

#![forbid(unsafe_code)]

use serde::Deserialize;
use switchboard_plugin_api::prelude::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    intents: Vec<Intent>,
    #[serde(default)]
    slots: std::collections::BTreeMap<String, String>,
    fallback: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Intent {
    name: String,
    keywords: Vec<String>,
    reply: String,
    /// The reply for a caller the host found in the agent's lookup file, with `{caller.*}`
    /// slots; `reply` when one of them is unknown.
    #[serde(default)]
    caller_reply: Option<String>,
}

/// One call's scripted conversation.
pub struct Scripted {
    /// (intent name, keyword word lists, filled reply), in file order.
    intents: Vec<(String, Vec<Vec<String>>, String)>,
    fallback: String,
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
            if intent.keywords.is_empty() {
                return Err(PluginError::InvalidConfig(format!(
                    "intents.{}: no keywords",
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
            intents.push((intent.name.clone(), keywords, reply));
        }
        Ok(Self {
            intents,
            fallback: fill(&settings.fallback, "fallback")?,
        })
    }

    fn handle(&mut self, input: LlmInput) -> Result<Vec<LlmOutput>, PluginError> {
        let LlmInput::Reply(history) = input else {
            return Ok(Vec::new());
        };
        let said = history
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| words(&m.content))
            .unwrap_or_default();
        let reply = self.answer(&said);
        let mut out: Vec<LlmOutput> = sentences(reply)
            .into_iter()
            .map(LlmOutput::TextDelta)
            .collect();
        out.push(LlmOutput::Done);
        Ok(out)
    }
}

impl Scripted {
    /// The reply for what the caller said (as lowercase words).
    fn answer(&self, said: &[String]) -> &str {
        let mut best: Option<(usize, &str, &str)> = None;
        for (name, keywords, reply) in &self.intents {
            let score = keywords.iter().filter(|k| contains(said, k)).count();
            if score > 0 && best.is_none_or(|(s, _, _)| score > s) {
                best = Some((score, name, reply));
            }
        }
        match best {
            Some((_, name, reply)) => {
                host::log(LogLevel::Debug, &format!("intent {name}"));
                reply
            }
            None => &self.fallback,
        }
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
fn fill_slots(
    text: &str,
    slots: &std::collections::BTreeMap<String, String>,
    whose: &str,
) -> Result<String, PluginError> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else {
            return Err(PluginError::InvalidConfig(format!(
                "{whose}: unclosed {{ in {text:?}"
            )));
        };
        let name = &rest[start + 1..start + len];
        let value = slots.get(name).ok_or_else(|| {
            PluginError::InvalidConfig(format!(
                "{whose}: slot {{{name}}} is not in slots (known: {})",
                slots.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        out.push_str(value);
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The slots `text` names that `slots` lacks.
fn missing_slots<'t>(
    text: &'t str,
    slots: &std::collections::BTreeMap<String, String>,
) -> Vec<&'t str> {
    let mut missing = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        let name = &rest[start + 1..start + len];
        if !slots.contains_key(name) {
            missing.push(name);
        }
        rest = &rest[start + len + 1..];
    }
    missing
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
