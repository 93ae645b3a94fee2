//! OpenAI Realtime: a realtime plugin that bridges the call to an OpenAI Realtime session over
//! the host's WebSocket I/O.
//!
//! Audio is G.711 μ-law at 8 kHz both ways (`audio/pcmu`): the caller's bytes from Twilio go to
//! `input_audio_buffer.append` untouched, and `response.output_audio.delta` bytes go back to the
//! caller untouched. If the server's `session.updated` reports another format, the session fails
//! loudly (the caller hears the gateway's apology) rather than play static.
//!
//! Turn-taking is the server's VAD. When the caller starts speaking
//! (`input_audio_buffer.speech_started`) the plugin clears playback at once; the host answers
//! with `interrupted(heard-ms)` from its playback clock, and the plugin sends
//! `conversation.item.truncate` with `audio_end_ms` = what the caller actually heard, so the
//! model's context holds no words the caller never heard. Late deltas of the interrupted reply
//! are dropped.
//!
//! Function calling (module `function_calls`): the agent's tools (the `tools` input, sent after `open`
//! and again whenever they change) are declared in `session.update` as `session.tools`
//! (`{"type": "function", name, description, parameters}`) with `tool_choice: "auto"`: in the
//! first `session.update` if they arrive before the socket opens, else in a `session.update` of
//! their own carrying only `type`, `tools` and `tool_choice` (resending the audio settings
//! mid-call could be refused once the model has spoken). Each completed `function_call` item
//! becomes one `tool-call` output; its `tool-result` goes back as a `function_call_output` item,
//! then a `response.create` makes the model speak it: once per response, after the last of its
//! parallel calls is answered, and never while a response is in progress (deferred to that
//! response's `response.done`). Barge-in during a tool call loses nothing: the result still
//! reaches the model and still gets its reply.
//!
//! The plugin says nothing while a tool runs; the model should. Give a realtime agent whose tools
//! can be slow an instruction such as "Before calling a tool, tell the caller briefly what you
//! are doing." so the caller hears an acknowledgement instead of silence.
//!
//! Settings (`realtime.settings` in agents.toml; all optional):
//! - `model` (`"gpt-realtime"`), `voice` (`"marin"`), `instructions` (`""`);
//! - `greeting`: text the agent says first (default: the agent's `greeting`);
//! - `vad`: `{ threshold, prefix_padding_ms, silence_duration_ms }` for `server_vad`;
//! - `transcription_model` (`"gpt-4o-mini-transcribe"`; `""` turns caller transcripts off);
//! - `base_url` (`"wss://api.openai.com/v1/realtime"`).
//!
//! Secrets: `api_key` (`realtime.secrets = { api_key = "${OPENAI_API_KEY}" }`). The agent's
//! `allowed_hosts` must include the `base_url` host (`api.openai.com`).
//! Protocol: the GA Realtime API event reference, developers.openai.com/api/reference/resources/realtime.

#![forbid(unsafe_code)]

mod function_calls;

use std::collections::VecDeque;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_plugin_api::prelude::*;

use crate::function_calls::FunctionCalls;

/// Caller audio kept while the upstream session is being set up (1 s of 20 ms frames).
const MAX_BUFFERED_FRAMES: usize = 50;

/// Error codes the server sends that do not end the call (the session stays usable).
const BENIGN_ERRORS: &[&str] = &[
    "response_cancel_not_active",
    "conversation_already_has_active_response",
    "input_audio_buffer_commit_empty",
];

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    model: String,
    voice: String,
    instructions: String,
    greeting: Option<String>,
    vad: Vad,
    transcription_model: String,
    base_url: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            model: "gpt-realtime".into(),
            voice: "marin".into(),
            instructions: String::new(),
            greeting: None,
            vad: Vad::default(),
            transcription_model: "gpt-4o-mini-transcribe".into(),
            base_url: "wss://api.openai.com/v1/realtime".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Vad {
    threshold: f64,
    prefix_padding_ms: u32,
    silence_duration_ms: u32,
}

impl Default for Vad {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            prefix_padding_ms: 300,
            silence_duration_ms: 500,
        }
    }
}

/// One call's bridge to one Realtime session.
pub struct OpenAiRealtime {
    settings: Settings,
    greeting: Option<String>,
    socket: IoHandle,
    /// The socket opened and the first `session.update` went out.
    opened: bool,
    /// The agent's tools as Realtime function definitions (the last `tools` input).
    tools: Vec<Value>,
    /// The model's function calls and the replies owed for their results.
    calls: FunctionCalls,
    /// `session.updated` confirmed μ-law both ways.
    ready: bool,
    /// Caller frames waiting for `ready`.
    buffered: VecDeque<Vec<u8>>,
    /// The item whose audio is playing (the last `output_audio.delta`'s `item_id`).
    playing_item: Option<String>,
    /// An item cut short by the caller: waiting for `interrupted` to truncate it; its late
    /// deltas are dropped.
    interrupted_item: Option<String>,
}

fn mulaw_8k() -> AudioFormat {
    AudioFormat {
        encoding: AudioEncoding::Mulaw,
        sample_rate: 8000,
    }
}

impl Realtime for OpenAiRealtime {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "openai-realtime".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "OpenAI Realtime speech-to-speech, G.711 μ-law end to end".into(),
            input_format: mulaw_8k(),
        }
    }

    fn open(config: SessionConfig) -> Result<Self, PluginError> {
        let settings: Settings = serde_json::from_str(&config.settings)
            .map_err(|e| PluginError::InvalidConfig(format!("openai-realtime settings: {e}")))?;
        let api_key = host::secret("api_key")
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                PluginError::Unauthorized(
                    "no api_key: grant one in the agent's realtime.secrets".into(),
                )
            })?;
        let separator = if settings.base_url.contains('?') {
            '&'
        } else {
            '?'
        };
        let url = format!("{}{separator}model={}", settings.base_url, settings.model);
        let socket = host::ws_connect(
            &url,
            &[Header {
                name: "Authorization".into(),
                value: format!("Bearer {api_key}"),
            }],
        )
        .map_err(|e| PluginError::Upstream(format!("cannot connect to {url}: {e:?}")))?;
        let greeting = settings
            .greeting
            .clone()
            .or(config.greeting)
            .filter(|g| !g.is_empty());
        Ok(Self {
            settings,
            greeting,
            socket,
            opened: false,
            tools: Vec::new(),
            calls: FunctionCalls::default(),
            ready: false,
            buffered: VecDeque::new(),
            playing_item: None,
            interrupted_item: None,
        })
    }

    fn handle(&mut self, input: SessionInput) -> Result<Vec<SessionOutput>, PluginError> {
        let mut out = Vec::new();
        match input {
            SessionInput::Audio(frame) => {
                if self.ready {
                    self.append(&frame.data)?;
                } else {
                    if self.buffered.len() == MAX_BUFFERED_FRAMES {
                        self.buffered.pop_front();
                    }
                    self.buffered.push_back(frame.data);
                }
            }
            SessionInput::Interrupted(heard_ms) => {
                if let Some(item) = self.interrupted_item.clone() {
                    self.send(&json!({
                        "type": "conversation.item.truncate",
                        "item_id": item,
                        "content_index": 0,
                        "audio_end_ms": heard_ms,
                    }))?;
                }
            }
            SessionInput::Io(event) => self.on_io(event, &mut out)?,
            SessionInput::Hangup => {
                let _ = host::ws_close(self.socket);
            }
            SessionInput::Tools(tools) => {
                let tools = function_calls::definitions(&tools);
                if self.opened && tools != self.tools {
                    self.send(&json!({
                        "type": "session.update",
                        "session": {
                            "type": "realtime",
                            "tools": tools,
                            "tool_choice": "auto",
                        },
                    }))?;
                }
                self.tools = tools;
            }
            SessionInput::ToolResult(result) => {
                let id = result.id.clone();
                match self.calls.result(result) {
                    Some(events) => {
                        for event in &events {
                            self.send(event)?;
                        }
                    }
                    None => host::log(
                        LogLevel::Warn,
                        &format!("a tool result for {id}, which no call is waiting for; dropped"),
                    ),
                }
            }
            SessionInput::Dtmf(_) | SessionInput::MarkPlayed(_) => {}
        }
        Ok(out)
    }
}

impl OpenAiRealtime {
    fn send(&self, event: &Value) -> Result<(), PluginError> {
        host::ws_send(self.socket, &Payload::Text(event.to_string()))
            .map_err(|e| PluginError::Upstream(format!("cannot send to OpenAI: {e:?}")))
    }

    fn append(&self, mulaw: &[u8]) -> Result<(), PluginError> {
        self.send(&json!({
            "type": "input_audio_buffer.append",
            "audio": BASE64.encode(mulaw),
        }))
    }

    fn session_update(&self) -> Value {
        let mut input = json!({
            "format": { "type": "audio/pcmu" },
            "turn_detection": {
                "type": "server_vad",
                "threshold": self.settings.vad.threshold,
                "prefix_padding_ms": self.settings.vad.prefix_padding_ms,
                "silence_duration_ms": self.settings.vad.silence_duration_ms,
                "create_response": true,
                "interrupt_response": true,
            },
        });
        if !self.settings.transcription_model.is_empty() {
            input["transcription"] = json!({ "model": self.settings.transcription_model });
        }
        let mut update = json!({
            "type": "session.update",
            "session": {
                "type": "realtime",
                "model": self.settings.model,
                "instructions": self.settings.instructions,
                "output_modalities": ["audio"],
                "audio": {
                    "input": input,
                    "output": { "format": { "type": "audio/pcmu" }, "voice": self.settings.voice },
                },
            },
        });
        if !self.tools.is_empty() {
            update["session"]["tools"] = json!(self.tools);
            update["session"]["tool_choice"] = json!("auto");
        }
        update
    }

    fn on_io(&mut self, event: IoEvent, out: &mut Vec<SessionOutput>) -> Result<(), PluginError> {
        match event {
            IoEvent::WsOpened(socket) if socket == self.socket => {
                self.send(&self.session_update())?;
                self.opened = true;
            }
            IoEvent::WsMessage(WsMessage {
                socket,
                message: Payload::Text(text),
            }) if socket == self.socket => {
                let event: Value = serde_json::from_str(&text).map_err(|e| {
                    PluginError::Upstream(format!("OpenAI sent a message that is not JSON: {e}"))
                })?;
                self.on_server_event(&event, out)?;
            }
            IoEvent::WsClosed(closed) if closed.socket == self.socket => {
                return Err(PluginError::Upstream(format!(
                    "OpenAI Realtime closed the session (code {}{}{})",
                    closed.code,
                    if closed.reason.is_empty() { "" } else { ": " },
                    closed.reason
                )));
            }
            IoEvent::Failed(failed) if failed.target == self.socket => {
                return Err(PluginError::Upstream(format!(
                    "OpenAI Realtime connection failed: {}",
                    failed.error
                )));
            }
            _ => {}
        }
        Ok(())
    }

    fn on_server_event(
        &mut self,
        event: &Value,
        out: &mut Vec<SessionOutput>,
    ) -> Result<(), PluginError> {
        let kind = event["type"].as_str().unwrap_or_default();
        match kind {
            "session.updated" => {
                let audio = &event["session"]["audio"];
                for side in ["input", "output"] {
                    let format = audio[side]["format"]["type"].as_str().unwrap_or("(none)");
                    if format != "audio/pcmu" {
                        return Err(PluginError::Upstream(format!(
                            "OpenAI reports {side} audio as {format}, not audio/pcmu; \
                             refusing to play audio in the wrong format"
                        )));
                    }
                }
                if !self.ready {
                    self.ready = true;
                    if let Some(greeting) = self.greeting.take() {
                        self.send(&json!({
                            "type": "response.create",
                            "response": {
                                "instructions": format!("Greet the caller by saying exactly: {greeting}"),
                            },
                        }))?;
                    }
                    while let Some(frame) = self.buffered.pop_front() {
                        self.append(&frame)?;
                    }
                }
            }
            "response.output_audio.delta" | "response.audio.delta" => {
                let item = event["item_id"].as_str().unwrap_or_default();
                if self.interrupted_item.as_deref() == Some(item) {
                    return Ok(()); // late audio of a reply the caller interrupted
                }
                let data = BASE64
                    .decode(event["delta"].as_str().unwrap_or_default())
                    .map_err(|e| PluginError::Upstream(format!("bad audio delta: {e}")))?;
                self.playing_item = Some(item.to_string());
                out.push(SessionOutput::Play(AudioFrame {
                    format: mulaw_8k(),
                    data,
                    timestamp_ms: 0,
                }));
            }
            "input_audio_buffer.speech_started" => {
                if let Some(item) = self.playing_item.take() {
                    self.interrupted_item = Some(item);
                    out.push(SessionOutput::ClearPlayback);
                }
            }
            "conversation.item.input_audio_transcription.completed" => {
                out.push(SessionOutput::UserTranscript(Transcript {
                    text: event["transcript"].as_str().unwrap_or_default().to_string(),
                    is_final: true,
                }));
            }
            "response.output_audio_transcript.done" | "response.audio_transcript.done" => {
                out.push(SessionOutput::AgentTranscript(Transcript {
                    text: event["transcript"].as_str().unwrap_or_default().to_string(),
                    is_final: true,
                }));
            }
            "response.created" => self.calls.response_created(),
            "response.output_item.added" => self.calls.item_added(event),
            "response.function_call_arguments.done" => {
                out.extend(
                    self.calls
                        .arguments_done(event)
                        .map(SessionOutput::ToolCall),
                );
            }
            "response.output_item.done" => {
                out.extend(self.calls.item_done(event).map(SessionOutput::ToolCall));
            }
            "response.done" => {
                // The reply is complete on the server; it may still be playing here. Results
                // that waited for it get their reply now.
                if let Some(create) = self.calls.response_done() {
                    self.send(&create)?;
                }
            }
            "error" => {
                let error = &event["error"];
                let code = error["code"].as_str().unwrap_or_default();
                let message = error["message"].as_str().unwrap_or("unknown error");
                if code == "conversation_already_has_active_response"
                    && let Some(create) = self
                        .calls
                        .refused(error["event_id"].as_str().unwrap_or_default())
                {
                    self.send(&create)?;
                }
                if BENIGN_ERRORS.contains(&code) {
                    host::log(LogLevel::Warn, &format!("OpenAI: {code}: {message}"));
                } else {
                    return Err(PluginError::Upstream(format!(
                        "OpenAI error {}: {message}",
                        if code.is_empty() { "(no code)" } else { code }
                    )));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

switchboard_plugin_api::export_plugin!(realtime: OpenAiRealtime);
