//! OpenAI chat completions: the language-model stage of a pipeline agent, backed by
//! `POST /chat/completions` with `stream: true` on OpenAI or on any server that speaks it
//! (llama.cpp's `llama-server`, Ollama, vLLM…: set `base_url` to its `/v1`), reached through
//! the host's HTTP I/O.
//!
//! Each `reply(history)` sends the whole history (the host owns it) and streams the answer back
//! as `text-delta`s, one per content delta as its server-sent event arrives, then `done`. A new
//! `reply` abandons the one in progress; `cancel` (barge-in) cancels its request, and any of its
//! events still in flight are dropped. An upstream failure — a non-2xx status, a failed or cut
//! connection, an `error` object in the stream, a stream that ends before `data: [DONE]` (or a
//! `finish_reason`), or bytes that are not an event stream of JSON chunks — is an
//! [`PluginError::Upstream`] (or `unauthorized`, `rate-limited`) from the `handle` that saw it.
//!
//! Settings (the agent's LLM `settings`; all optional):
//! - `base_url` (`"https://api.openai.com/v1"`): the API root;
//! - `model` (`"gpt-4o-mini"`): for local servers, the model name they serve;
//! - `temperature` (0–2; the server's default when absent);
//! - `max_tokens`: most tokens per reply (the server's default when absent).
//!
//! Secrets: `api_key`, sent as `Authorization: Bearer …`; without one no header is sent (local
//! servers). The agent's `allowed_hosts` must include the `base_url` host.
//!
//! Protocol: the OpenAI API reference, "Create chat completion" and "The chat completion chunk
//! object" (developers.openai.com/api/reference/resources/chat/subresources/completions): data-only
//! server-sent events of `chat.completion.chunk` objects, content in `choices[0].delta.content`,
//! ended by `data: [DONE]`.

#![forbid(unsafe_code)]

use openai_http::sse::{self, Event};
use openai_http::{Api, DEFAULT_BASE_URL, Progress, Response, error_message, request_of};
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_plugin_api::prelude::*;

/// What errors name this upstream call.
const WHAT: &str = "OpenAI chat completion";

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    base_url: String,
    model: String,
    temperature: Option<f64>,
    max_tokens: Option<u32>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.into(),
            model: "gpt-4o-mini".into(),
            temperature: None,
            max_tokens: None,
        }
    }
}

/// The reply in progress.
struct Reply {
    response: Response,
    events: sse::Parser,
    /// A chunk carried a `finish_reason`: the reply is whole even if `[DONE]` never comes.
    finished: bool,
}

/// One call's conversation.
pub struct OpenAiLlm {
    api: Api,
    settings: Settings,
    reply: Option<Reply>,
}

impl Llm for OpenAiLlm {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "openai-llm".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "OpenAI-compatible chat completions (/chat/completions), streamed".into(),
            // Not used by a language model; the contract requires one.
            input_format: AudioFormat {
                encoding: AudioEncoding::Pcm16,
                sample_rate: 16_000,
            },
        }
    }

    fn open(config: SessionConfig) -> Result<Self, PluginError> {
        let settings: Settings = serde_json::from_str(&config.settings)
            .map_err(|e| PluginError::InvalidConfig(format!("openai-llm settings: {e}")))?;
        if settings.model.is_empty() {
            return Err(PluginError::InvalidConfig(
                "openai-llm settings: model is empty".into(),
            ));
        }
        if let Some(t) = settings.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(PluginError::InvalidConfig(format!(
                "openai-llm settings: temperature {t} is outside 0–2"
            )));
        }
        Ok(Self {
            api: Api::new(&settings.base_url)?,
            settings,
            reply: None,
        })
    }

    fn handle(&mut self, input: LlmInput) -> Result<Vec<LlmOutput>, PluginError> {
        let mut out = Vec::new();
        match input {
            LlmInput::Reply(history) => {
                self.abandon();
                let id = self.api.post(
                    "/chat/completions",
                    "application/json",
                    &[("Accept", "text/event-stream")],
                    self.request(&history).to_string().into_bytes(),
                )?;
                self.reply = Some(Reply {
                    response: Response::new(id, WHAT),
                    events: sse::Parser::new(),
                    finished: false,
                });
            }
            LlmInput::Cancel | LlmInput::Hangup => self.abandon(),
            // Function calling through Chat Completions is not wired in this plugin yet: the
            // model is not offered the tools, so it never calls one.
            LlmInput::Tools(tools) if !tools.is_empty() => host::log(
                LogLevel::Warn,
                "openai-llm does not offer tools to the model yet; the agent's tools are unused",
            ),
            LlmInput::Tools(_) => {}
            LlmInput::Io(event) => {
                let current = self.reply.as_ref().map(|r| r.response.id);
                if request_of(&event).is_some() && request_of(&event) == current {
                    // Taken out: an error or the end of the reply leaves none in progress.
                    if let Some(mut reply) = self.reply.take()
                        && !on_event(&mut reply, event, &mut out)?
                    {
                        self.reply = Some(reply);
                    }
                }
            }
        }
        Ok(out)
    }
}

impl OpenAiLlm {
    /// Cancels the reply in progress, if any; its late events are ignored.
    fn abandon(&mut self) {
        if let Some(reply) = self.reply.take() {
            host::cancel(reply.response.id);
        }
    }

    /// The request body for `history`.
    fn request(&self, history: &[Message]) -> Value {
        let messages: Vec<Value> = history
            .iter()
            .map(|m| {
                let role = match m.role {
                    Role::System => "system",
                    Role::User => "user",
                    Role::Assistant => "assistant",
                    Role::Tool => "tool",
                };
                let mut message = json!({ "role": role, "content": m.content });
                if let Some(id) = &m.tool_call_id {
                    message["tool_call_id"] = json!(id);
                }
                if !m.tool_calls.is_empty() {
                    message["tool_calls"] = m
                        .tool_calls
                        .iter()
                        .map(|c| {
                            json!({
                                "id": c.id,
                                "type": "function",
                                "function": { "name": c.name, "arguments": c.arguments },
                            })
                        })
                        .collect();
                }
                message
            })
            .collect();
        let mut body = json!({
            "model": self.settings.model,
            "messages": messages,
            "stream": true,
        });
        if let Some(t) = self.settings.temperature {
            body["temperature"] = json!(t);
        }
        if let Some(n) = self.settings.max_tokens {
            body["max_tokens"] = json!(n);
        }
        body
    }
}

/// Feeds one event of the reply's request; returns true when the reply is complete (`done`
/// pushed).
///
/// # Errors
/// Any upstream failure (see the module docs).
fn on_event(
    reply: &mut Reply,
    event: IoEvent,
    out: &mut Vec<LlmOutput>,
) -> Result<bool, PluginError> {
    let garbled = |e: sse::SseError| PluginError::Upstream(format!("{WHAT}: {e}"));
    match reply.response.on_event(event)? {
        Progress::Nothing => Ok(false),
        Progress::Data(bytes) => {
            let events = reply.events.feed(&bytes).map_err(garbled)?;
            on_sse(reply, events, out)
        }
        Progress::Done => {
            let events = reply.events.finish().map_err(garbled)?;
            if on_sse(reply, events, out)? {
                Ok(true)
            } else if reply.finished {
                out.push(LlmOutput::Done);
                Ok(true)
            } else {
                Err(PluginError::Upstream(format!(
                    "{WHAT}: the stream ended before data: [DONE] (reply cut short)"
                )))
            }
        }
    }
}

/// Turns server-sent events into outputs; true at `data: [DONE]`.
fn on_sse(
    reply: &mut Reply,
    events: Vec<Event>,
    out: &mut Vec<LlmOutput>,
) -> Result<bool, PluginError> {
    for event in events {
        let data = event.data.trim();
        if data == "[DONE]" {
            out.push(LlmOutput::Done);
            return Ok(true);
        }
        let chunk: Value = serde_json::from_str(data).map_err(|e| {
            PluginError::Upstream(if event.event == "error" {
                format!("{WHAT}: error event: {data}")
            } else {
                format!("{WHAT}: an event is not JSON: {e}")
            })
        })?;
        if chunk.get("error").is_some() || event.event == "error" {
            let message = error_message(data.as_bytes()).unwrap_or_else(|| data.to_string());
            return Err(PluginError::Upstream(format!(
                "{WHAT}: error mid-reply: {message}"
            )));
        }
        // Chunks with no choices (e.g. a usage chunk) carry no text.
        let Some(choice) = chunk["choices"].get(0) else {
            continue;
        };
        if let Some(text) = choice["delta"]["content"].as_str()
            && !text.is_empty()
        {
            out.push(LlmOutput::TextDelta(text.to_string()));
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            reply.finished = true;
            if reason != "stop" {
                host::log(LogLevel::Info, &format!("{WHAT}: finish_reason {reason}"));
            }
        }
    }
    Ok(false)
}

switchboard_plugin_api::export_plugin!(llm: OpenAiLlm);
