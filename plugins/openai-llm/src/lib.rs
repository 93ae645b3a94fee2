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
//! `finish_reason`), bytes that are not an event stream of JSON chunks, or a malformed tool-call
//! delta — is an [`PluginError::Upstream`] (or `unauthorized`, `rate-limited`) from the `handle`
//! that saw it.
//!
//! Tools (function calling): the agent's tools (the `tools` input; each list replaces the one
//! before) are offered with every later request as `tools: [{"type": "function", "function":
//! {name, description, parameters}}]` with `tool_choice: "auto"` and `parallel_tool_calls:
//! true`; an agent without tools sends none of the three. The model's calls stream as
//! `delta.tool_calls` fragments keyed by `index` (module `tool_calls` assembles them); at the
//! `finish_reason` (or at `data: [DONE]`) each call goes out whole as a `tool-call`, in index
//! order, then `done`. Text deltas of the same reply stream as they come. The host runs the calls
//! and asks for the continuation; its history maps to the API's shape: an assistant message with
//! calls becomes `{"role": "assistant", "content": <text, or null when empty>, "tool_calls":
//! [{id, "type": "function", "function": {name, arguments}}]}`, a tool message `{"role":
//! "tool", "tool_call_id", "content"}`.
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
//! tool calls in `choices[0].delta.tool_calls`, ended by `data: [DONE]`; OpenAI's function-calling
//! guide for the continuation's messages.

#![forbid(unsafe_code)]

mod tool_calls;

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
    /// The tool calls streamed so far (none left once handed out).
    calls: tool_calls::Assembler,
}

/// One call's conversation.
pub struct OpenAiLlm {
    api: Api,
    settings: Settings,
    /// The agent's tools as the request offers them (`{"type": "function", "function": …}`).
    tools: Vec<Value>,
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
            tools: Vec::new(),
            reply: None,
        })
    }

    fn handle(&mut self, input: LlmInput) -> Result<Vec<LlmOutput>, PluginError> {
        let mut out = Vec::new();
        match input {
            LlmInput::Reply(history) => {
                self.abandon();
                let body = self.request(&history)?;
                let id = self.api.post(
                    "/chat/completions",
                    "application/json",
                    &[("Accept", "text/event-stream")],
                    body.to_string().into_bytes(),
                )?;
                self.reply = Some(Reply {
                    response: Response::new(id, WHAT),
                    events: sse::Parser::new(),
                    finished: false,
                    calls: tool_calls::Assembler::default(),
                });
            }
            LlmInput::Cancel | LlmInput::Hangup => self.abandon(),
            LlmInput::Tools(tools) => {
                self.tools = tools.iter().map(offered).collect::<Result<_, _>>()?;
            }
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
    ///
    /// # Errors
    /// [`PluginError::Unsupported`]: a tool message without its call's id.
    fn request(&self, history: &[Message]) -> Result<Value, PluginError> {
        let messages: Vec<Value> = history
            .iter()
            .enumerate()
            .map(|(n, m)| message(n, m))
            .collect::<Result<_, _>>()?;
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
        if !self.tools.is_empty() {
            body["tools"] = Value::Array(self.tools.clone());
            body["tool_choice"] = json!("auto");
            body["parallel_tool_calls"] = json!(true);
        }
        Ok(body)
    }
}

/// A tool as a request offers it.
///
/// # Errors
/// [`PluginError::InvalidConfig`]: its parameters are not a JSON object (a JSON Schema).
fn offered(tool: &Tool) -> Result<Value, PluginError> {
    let parameters: Value = serde_json::from_str(&tool.parameters)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| {
            PluginError::InvalidConfig(format!(
                "tool {}: parameters are not a JSON Schema object: {:?}",
                tool.name, tool.parameters
            ))
        })?;
    let mut function = json!({ "name": tool.name, "parameters": parameters });
    if !tool.description.is_empty() {
        function["description"] = json!(tool.description);
    }
    Ok(json!({ "type": "function", "function": function }))
}

/// History message `n` as the API takes it.
///
/// # Errors
/// [`PluginError::Unsupported`]: a tool message without its call's id.
fn message(n: usize, m: &Message) -> Result<Value, PluginError> {
    Ok(match m.role {
        Role::System => json!({ "role": "system", "content": m.content }),
        Role::User => json!({ "role": "user", "content": m.content }),
        Role::Assistant if m.tool_calls.is_empty() => {
            json!({ "role": "assistant", "content": m.content })
        }
        Role::Assistant => {
            let calls: Vec<Value> = m
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
            let content = (!m.content.is_empty()).then_some(&m.content);
            json!({ "role": "assistant", "content": content, "tool_calls": calls })
        }
        Role::Tool => {
            let id = m.tool_call_id.as_ref().ok_or_else(|| {
                PluginError::Unsupported(format!(
                    "history message {n}: a tool result without the id of its call"
                ))
            })?;
            json!({ "role": "tool", "tool_call_id": id, "content": m.content })
        }
    })
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
                hand_out_calls(reply, out)?;
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

/// Pushes the reply's tool calls assembled so far as whole `tool-call`s, in index order.
///
/// # Errors
/// [`PluginError::Upstream`]: a call never got its id or name.
fn hand_out_calls(reply: &mut Reply, out: &mut Vec<LlmOutput>) -> Result<(), PluginError> {
    let calls = reply
        .calls
        .finish()
        .map_err(|e| PluginError::Upstream(format!("{WHAT}: {e}")))?;
    out.extend(calls.into_iter().map(LlmOutput::ToolCall));
    Ok(())
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
            hand_out_calls(reply, out)?;
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
        let delta = &choice["delta"];
        if let Some(text) = delta["content"].as_str()
            && !text.is_empty()
        {
            out.push(LlmOutput::TextDelta(text.to_string()));
        }
        if let Some(calls) = delta.get("tool_calls") {
            reply
                .calls
                .feed(calls)
                .map_err(|e| PluginError::Upstream(format!("{WHAT}: {e}")))?;
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            reply.finished = true;
            hand_out_calls(reply, out)?;
            if !matches!(reason, "stop" | "tool_calls") {
                host::log(LogLevel::Info, &format!("{WHAT}: finish_reason {reason}"));
            }
        }
    }
    Ok(false)
}

switchboard_plugin_api::export_plugin!(llm: OpenAiLlm);
