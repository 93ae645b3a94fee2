//! The host interface a component imports (`switchboard:plugin/host`: logging, clock, host I/O)
//! and the conversions between the contract's WIT types and the host's.

use super::*;
use crate::plugin::tools::{Tool, ToolCall, ToolOutcome};

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit::Host for HostState {}

impl bindings::switchboard::plugin::tools::Host for HostState {}

impl bindings::switchboard::plugin::host::Host for HostState {
    fn log(&mut self, level: wit::LogLevel, message: String) {
        if !self.io.admit_log() {
            return;
        }
        let plugin = self.plugin.as_str();
        let message = escape_log(&message);
        match level {
            wit::LogLevel::Trace => tracing::trace!(plugin, "{message}"),
            wit::LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            wit::LogLevel::Info => tracing::info!(plugin, "{message}"),
            wit::LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            wit::LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
    }

    fn now_ms(&mut self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn secret(&mut self, name: String) -> Option<String> {
        self.io.secret(&name)
    }

    fn ws_connect(
        &mut self,
        url: String,
        headers: Vec<wit::Header>,
    ) -> Result<wit::IoHandle, wit::IoError> {
        self.io
            .ws_connect(url, headers_from_wit(headers))
            .map_err(io_error_to_wit)
    }

    fn ws_send(
        &mut self,
        socket: wit::IoHandle,
        message: wit::Payload,
    ) -> Result<(), wit::IoError> {
        self.io
            .ws_send(socket, payload_from_wit(message))
            .map_err(io_error_to_wit)
    }

    fn ws_close(&mut self, socket: wit::IoHandle) -> Result<(), wit::IoError> {
        self.io.ws_close(socket).map_err(io_error_to_wit)
    }

    fn http_send(&mut self, request: wit::HttpRequest) -> Result<wit::IoHandle, wit::IoError> {
        self.io
            .http_send(HttpRequest {
                method: request.method,
                url: request.url,
                headers: headers_from_wit(request.headers),
                body: request.body,
            })
            .map_err(io_error_to_wit)
    }

    fn set_timer(&mut self, delay_ms: u32) -> Result<wit::IoHandle, wit::IoError> {
        self.io.set_timer(delay_ms).map_err(io_error_to_wit)
    }

    fn cancel(&mut self, target: wit::IoHandle) {
        self.io.cancel(target);
    }
}

pub(super) fn headers_from_wit(headers: Vec<wit::Header>) -> Vec<(String, String)> {
    headers.into_iter().map(|h| (h.name, h.value)).collect()
}

pub(super) fn headers_to_wit(headers: Vec<(String, String)>) -> Vec<wit::Header> {
    headers
        .into_iter()
        .map(|(name, value)| wit::Header { name, value })
        .collect()
}

pub(super) fn payload_from_wit(p: wit::Payload) -> Payload {
    match p {
        wit::Payload::Text(t) => Payload::Text(t),
        wit::Payload::Binary(b) => Payload::Binary(b),
    }
}

pub(super) fn io_error_to_wit(e: IoError) -> wit::IoError {
    match e {
        IoError::Denied(m) => wit::IoError::Denied(m),
        IoError::Limit(m) => wit::IoError::Limit(m),
        IoError::Invalid(m) => wit::IoError::Invalid(m),
    }
}

pub(super) fn event_to_wit(event: IoEvent) -> wit::IoEvent {
    match event {
        IoEvent::WsOpened(id) => wit::IoEvent::WsOpened(id),
        IoEvent::WsMessage { socket, message } => wit::IoEvent::WsMessage(wit::WsMessage {
            socket,
            message: match message {
                Payload::Text(t) => wit::Payload::Text(t),
                Payload::Binary(b) => wit::Payload::Binary(b),
            },
        }),
        IoEvent::WsClosed {
            socket,
            code,
            reason,
        } => wit::IoEvent::WsClosed(wit::WsClosed {
            socket,
            code,
            reason,
        }),
        IoEvent::HttpHead {
            request,
            status,
            headers,
        } => wit::IoEvent::HttpHead(wit::HttpHead {
            request,
            status,
            headers: headers_to_wit(headers),
        }),
        IoEvent::HttpChunk { request, data } => {
            wit::IoEvent::HttpChunk(wit::HttpChunk { request, data })
        }
        IoEvent::HttpDone(id) => wit::IoEvent::HttpDone(id),
        IoEvent::Failed { target, error } => wit::IoEvent::Failed(wit::IoFailed { target, error }),
        IoEvent::Timer(id) => wit::IoEvent::Timer(id),
    }
}

/// A trap, named by its root cause (`wasm trap: interrupt`, `unreachable`…), with what the guest
/// last wrote to stdout/stderr (a Rust panic message) when any. The wasm backtrace goes to the
/// debug log.
pub(super) fn trap(store: &mut Store<HostState>, e: wasmtime::Error) -> SessionError {
    tracing::debug!(error = format!("{e:?}"), "plugin trap");
    if let Some(stopped) = store.data_mut().meter.stopped.take() {
        return stopped;
    }
    let cause = e.root_cause().to_string();
    let out = store.data().stdio.contents();
    let said = String::from_utf8_lossy(&out);
    // Rust's panic output ends with a "note: run with RUST_BACKTRACE=1" hint: leave it out.
    let said: Vec<&str> = said
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("note: "))
        .collect();
    let message = if said.is_empty() {
        cause
    } else {
        let said: String = said.join(" / ").chars().take(300).collect();
        format!("{cause}; plugin said: {said}")
    };
    match store.data_mut().limits.memory_refused.take() {
        Some(bytes) => SessionError::Memory(format!(
            "asked for {bytes} bytes of linear memory (limit {SESSION_MEMORY_LIMIT}), then {message}"
        )),
        None => SessionError::Trap(message),
    }
}

pub(super) fn plugin_error(e: wit::PluginError) -> SessionError {
    let (kind, message) = match e {
        wit::PluginError::InvalidConfig(m) => ("invalid-config", m),
        wit::PluginError::Unauthorized(m) => ("unauthorized", m),
        wit::PluginError::Upstream(m) => ("upstream", m),
        wit::PluginError::RateLimited(s) => (
            "rate-limited",
            s.map(|s| format!("retry after {s} s")).unwrap_or_default(),
        ),
        wit::PluginError::Unsupported(m) => ("unsupported", m),
        wit::PluginError::Internal(m) => ("internal", m),
    };
    SessionError::Plugin(PluginError { kind, message })
}

pub(super) fn format_to_wit(f: AudioFormat) -> wit::AudioFormat {
    wit::AudioFormat {
        encoding: match f.encoding {
            AudioEncoding::Pcm16 => wit::AudioEncoding::Pcm16,
            AudioEncoding::Mulaw => wit::AudioEncoding::Mulaw,
        },
        sample_rate: f.sample_rate,
    }
}

pub(super) fn format_from_wit(f: wit::AudioFormat) -> AudioFormat {
    AudioFormat {
        encoding: match f.encoding {
            wit::AudioEncoding::Pcm16 => AudioEncoding::Pcm16,
            wit::AudioEncoding::Mulaw => AudioEncoding::Mulaw,
        },
        sample_rate: f.sample_rate,
    }
}

pub(super) fn output_from_wit(o: wit_rt::SessionOutput) -> SessionOutput {
    match o {
        wit_rt::SessionOutput::Play(frame) => SessionOutput::Play {
            format: format_from_wit(frame.format),
            data: frame.data,
        },
        wit_rt::SessionOutput::ClearPlayback => SessionOutput::ClearPlayback,
        wit_rt::SessionOutput::Mark(m) => SessionOutput::Mark(m),
        wit_rt::SessionOutput::UserTranscript(t) => SessionOutput::UserTranscript {
            text: t.text,
            is_final: t.is_final,
        },
        wit_rt::SessionOutput::AgentTranscript(t) => SessionOutput::AgentTranscript {
            text: t.text,
            is_final: t.is_final,
        },
        wit_rt::SessionOutput::Transfer(n) => SessionOutput::Transfer(n),
        wit_rt::SessionOutput::HangUp => SessionOutput::HangUp,
        wit_rt::SessionOutput::ToolCall(call) => SessionOutput::ToolCall(tool_call_from_wit(call)),
    }
}

/// A realtime input for a 0.2.0 component.
pub(super) fn input_to_wit(input: SessionInput, format: AudioFormat) -> wit_rt::SessionInput {
    match input {
        SessionInput::Audio { data, timestamp_ms } => {
            wit_rt::SessionInput::Audio(wit::AudioFrame {
                format: format_to_wit(format),
                data,
                timestamp_ms,
            })
        }
        SessionInput::Dtmf(d) => wit_rt::SessionInput::Dtmf(d),
        SessionInput::MarkPlayed(m) => wit_rt::SessionInput::MarkPlayed(m),
        SessionInput::Interrupted(ms) => wit_rt::SessionInput::Interrupted(ms),
        SessionInput::Hangup => wit_rt::SessionInput::Hangup,
        SessionInput::Io(event) => wit_rt::SessionInput::Io(event_to_wit(event)),
        SessionInput::Tools(tools) => {
            wit_rt::SessionInput::Tools(tools.into_iter().map(tool_to_wit).collect())
        }
        SessionInput::ToolResult(result) => {
            wit_rt::SessionInput::ToolResult(wit_tools::ToolResult {
                id: result.id,
                outcome: match result.outcome {
                    ToolOutcome::Output(o) => wit_tools::ToolOutcome::Output(o),
                    ToolOutcome::Error(e) => wit_tools::ToolOutcome::Error(e),
                },
            })
        }
    }
}

pub(super) fn tool_to_wit(tool: Tool) -> wit_tools::Tool {
    wit_tools::Tool {
        name: tool.name,
        description: tool.description,
        parameters: tool.parameters,
    }
}

pub(super) fn tool_call_to_wit(call: ToolCall) -> wit_tools::ToolCall {
    wit_tools::ToolCall {
        id: call.id,
        name: call.name,
        arguments: call.arguments,
    }
}

pub(super) fn tool_call_from_wit(call: wit_tools::ToolCall) -> ToolCall {
    ToolCall {
        id: call.id,
        name: call.name,
        arguments: call.arguments,
    }
}
