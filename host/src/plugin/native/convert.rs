//! Conversions between the host's contract types and the SDK's (postcard-encoded across the
//! native ABI).

use super::*;

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
    }
}
