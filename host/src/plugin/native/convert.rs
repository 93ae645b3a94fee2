//! Conversions between the host's contract types and the SDK's (postcard-encoded across the
//! native ABI).

use super::*;
use crate::plugin::tools::{Tool, ToolCall, ToolOutcome};

pub(super) fn decode_plugin_error(bytes: &[u8]) -> SessionError {
    match abi::decode::<sdk::PluginError>(bytes) {
        Ok(e) => SessionError::Plugin(plugin_error(e)),
        Err(e) => SessionError::Contract(format!("returned an error the host cannot decode: {e}")),
    }
}

pub(super) fn plugin_error(e: sdk::PluginError) -> PluginError {
    let (kind, message) = match e {
        sdk::PluginError::InvalidConfig(m) => ("invalid-config", m),
        sdk::PluginError::Unauthorized(m) => ("unauthorized", m),
        sdk::PluginError::Upstream(m) => ("upstream", m),
        sdk::PluginError::RateLimited(s) => (
            "rate-limited",
            s.map(|s| format!("retry after {s} s")).unwrap_or_default(),
        ),
        sdk::PluginError::Unsupported(m) => ("unsupported", m),
        sdk::PluginError::Internal(m) => ("internal", m),
    };
    PluginError { kind, message }
}

pub(super) fn format_to_sdk(f: AudioFormat) -> sdk::AudioFormat {
    sdk::AudioFormat {
        encoding: match f.encoding {
            AudioEncoding::Pcm16 => sdk::AudioEncoding::Pcm16,
            AudioEncoding::Mulaw => sdk::AudioEncoding::Mulaw,
        },
        sample_rate: f.sample_rate,
    }
}

pub(super) fn format_from_sdk(f: sdk::AudioFormat) -> AudioFormat {
    AudioFormat {
        encoding: match f.encoding {
            sdk::AudioEncoding::Pcm16 => AudioEncoding::Pcm16,
            sdk::AudioEncoding::Mulaw => AudioEncoding::Mulaw,
        },
        sample_rate: f.sample_rate,
    }
}

pub(super) fn config_to_sdk(
    config: &SessionConfig,
    input_format: AudioFormat,
) -> sdk::SessionConfig {
    let call = &config.call;
    sdk::SessionConfig {
        call: sdk::CallInfo {
            call_sid: call.call_sid.clone(),
            stream_sid: call.stream_sid.clone(),
            from: call.from.clone(),
            to: call.to.clone(),
            direction: call.direction.clone(),
            agent: call.agent.clone(),
            parameters: call.parameters.clone(),
        },
        settings: config.settings.clone(),
        greeting: config.greeting.clone(),
        input_format: format_to_sdk(input_format),
    }
}

pub(super) fn input_to_sdk(input: SessionInput, format: AudioFormat) -> sdk::SessionInput {
    match input {
        SessionInput::Audio { data, timestamp_ms } => sdk::SessionInput::Audio(sdk::AudioFrame {
            format: format_to_sdk(format),
            data,
            timestamp_ms,
        }),
        SessionInput::Dtmf(d) => sdk::SessionInput::Dtmf(d),
        SessionInput::MarkPlayed(m) => sdk::SessionInput::MarkPlayed(m),
        SessionInput::Interrupted(ms) => sdk::SessionInput::Interrupted(ms),
        SessionInput::Hangup => sdk::SessionInput::Hangup,
        SessionInput::Io(event) => sdk::SessionInput::Io(event_to_sdk(event)),
        SessionInput::Tools(tools) => {
            sdk::SessionInput::Tools(tools.into_iter().map(tool_to_sdk).collect())
        }
        SessionInput::ToolResult(result) => sdk::SessionInput::ToolResult(sdk::ToolResult {
            id: result.id,
            outcome: match result.outcome {
                ToolOutcome::Output(o) => sdk::ToolOutcome::Output(o),
                ToolOutcome::Error(e) => sdk::ToolOutcome::Error(e),
            },
        }),
    }
}

pub(super) fn tool_to_sdk(tool: Tool) -> sdk::Tool {
    sdk::Tool {
        name: tool.name,
        description: tool.description,
        parameters: tool.parameters,
    }
}

pub(super) fn tool_call_from_sdk(call: sdk::ToolCall) -> ToolCall {
    ToolCall {
        id: call.id,
        name: call.name,
        arguments: call.arguments,
    }
}

pub(super) fn role_to_sdk(role: Role) -> sdk::Role {
    match role {
        Role::System => sdk::Role::System,
        Role::User => sdk::Role::User,
        Role::Assistant => sdk::Role::Assistant,
        Role::Tool => sdk::Role::Tool,
    }
}

pub(super) fn tool_call_to_sdk(call: ToolCall) -> sdk::ToolCall {
    sdk::ToolCall {
        id: call.id,
        name: call.name,
        arguments: call.arguments,
    }
}

/// The llm stage's inputs as contract 0.1.0 encodes them (postcard: fields and variants in
/// declaration order): a message without the tool fields 0.2.0 appended, and no `tools` input.
pub(super) mod v0_1 {
    use super::sdk;

    /// 0.1.0's `message`.
    #[derive(serde::Serialize)]
    pub(in crate::plugin::native) struct Message {
        role: sdk::Role,
        content: String,
    }

    /// 0.1.0's `llm-input`, variants in its order.
    #[derive(serde::Serialize)]
    pub(in crate::plugin::native) enum LlmInput {
        Reply(Vec<Message>),
        Cancel,
        Io(sdk::IoEvent),
        Hangup,
    }

    /// `input` as 0.1.0 has it; `None` for `tools`, which 0.1.0 lacks.
    pub(in crate::plugin::native) fn llm_input(input: sdk::LlmInput) -> Option<LlmInput> {
        Some(match input {
            sdk::LlmInput::Reply(history) => LlmInput::Reply(
                history
                    .into_iter()
                    .map(|m| Message {
                        role: m.role,
                        content: m.content,
                    })
                    .collect(),
            ),
            sdk::LlmInput::Cancel => LlmInput::Cancel,
            sdk::LlmInput::Io(e) => LlmInput::Io(e),
            sdk::LlmInput::Hangup => LlmInput::Hangup,
            sdk::LlmInput::Tools(_) => return None,
        })
    }
}

pub(super) fn event_to_sdk(event: IoEvent) -> sdk::IoEvent {
    let headers = |h: Vec<(String, String)>| {
        h.into_iter()
            .map(|(name, value)| sdk::Header { name, value })
            .collect()
    };
    match event {
        IoEvent::WsOpened(id) => sdk::IoEvent::WsOpened(id),
        IoEvent::WsMessage { socket, message } => sdk::IoEvent::WsMessage(sdk::WsMessage {
            socket,
            message: match message {
                Payload::Text(t) => sdk::Payload::Text(t),
                Payload::Binary(b) => sdk::Payload::Binary(b),
            },
        }),
        IoEvent::WsClosed {
            socket,
            code,
            reason,
        } => sdk::IoEvent::WsClosed(sdk::WsClosed {
            socket,
            code,
            reason,
        }),
        IoEvent::HttpHead {
            request,
            status,
            headers: h,
        } => sdk::IoEvent::HttpHead(sdk::HttpHead {
            request,
            status,
            headers: headers(h),
        }),
        IoEvent::HttpChunk { request, data } => {
            sdk::IoEvent::HttpChunk(sdk::HttpChunk { request, data })
        }
        IoEvent::HttpDone(id) => sdk::IoEvent::HttpDone(id),
        IoEvent::Failed { target, error } => sdk::IoEvent::Failed(sdk::IoFailed { target, error }),
        IoEvent::Timer(id) => sdk::IoEvent::Timer(id),
    }
}

pub(super) fn output_from_sdk(o: sdk::SessionOutput) -> SessionOutput {
    match o {
        sdk::SessionOutput::Play(frame) => SessionOutput::Play {
            format: format_from_sdk(frame.format),
            data: frame.data,
        },
        sdk::SessionOutput::ClearPlayback => SessionOutput::ClearPlayback,
        sdk::SessionOutput::Mark(m) => SessionOutput::Mark(m),
        sdk::SessionOutput::UserTranscript(t) => SessionOutput::UserTranscript {
            text: t.text,
            is_final: t.is_final,
        },
        sdk::SessionOutput::AgentTranscript(t) => SessionOutput::AgentTranscript {
            text: t.text,
            is_final: t.is_final,
        },
        sdk::SessionOutput::Transfer(n) => SessionOutput::Transfer(n),
        sdk::SessionOutput::HangUp => SessionOutput::HangUp,
        sdk::SessionOutput::ToolCall(call) => SessionOutput::ToolCall(tool_call_from_sdk(call)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A native 0.1.0 language-model plugin decodes its inputs as 0.1.0 encoded them: the host
    /// sends it the wire bytes the 0.1.0 SDK produced (postcard: varint tags and lengths,
    /// fields in declaration order), not 0.2.0's, which append the tool fields.
    #[test]
    fn a_0_1_0_llm_input_has_the_0_1_0_encoding() {
        let input = sdk::LlmInput::Reply(vec![sdk::Message::new(sdk::Role::User, "hi")]);
        let old = v0_1::llm_input(input.clone()).expect("a reply");
        // reply (0), one message, user (1), "hi".
        assert_eq!(abi::encode(&old), [0, 1, 1, 2, b'h', b'i']);
        // 0.2.0: then an empty `tool-calls` and no `tool-call-id`.
        assert_eq!(abi::encode(&input), [0, 1, 1, 2, b'h', b'i', 0, 0]);
        assert_eq!(
            abi::encode(&v0_1::llm_input(sdk::LlmInput::Hangup).expect("hangup")),
            [3]
        );
        assert!(v0_1::llm_input(sdk::LlmInput::Tools(Vec::new())).is_none());
    }
}
