//! Components built for the released contract 0.1.0 (`plugin-api/wit-0.1.0/`, frozen): their
//! bindings, and the host interface they import, forwarded to the current one. Their `types`
//! interface is the current one's byte for byte, so it maps onto the same Rust types; `host`
//! has the same functions under the 0.1.0 name. Their exports differ from 0.2.0 only by what
//! 0.2.0 added (tool calls), which the host never sends them.

use super::*;

/// The 0.1.0 `realtime-plugin` world, its `types` the current ones.
pub(super) mod bindings {
    wasmtime::component::bindgen!({
        world: "realtime-plugin",
        path: "../plugin-api/wit-0.1.0",
        exports: { default: async },
        with: {
            "switchboard:plugin/types": super::super::bindings::switchboard::plugin::types,
        },
    });
}

/// The 0.1.0 stage worlds, sharing the bindings above.
pub(super) mod stages {
    macro_rules! stage_world {
        ($module:ident, $world:literal) => {
            pub mod $module {
                wasmtime::component::bindgen!({
                    world: $world,
                    path: "../plugin-api/wit-0.1.0",
                    exports: { default: async },
                    with: {
                        "switchboard:plugin/types": super::super::super::bindings::switchboard::plugin::types,
                        "switchboard:plugin/host": super::super::bindings::switchboard::plugin::host,
                    },
                });
            }
        };
    }
    stage_world!(stt, "stt-plugin");
    stage_world!(llm, "llm-plugin");
    stage_world!(tts, "tts-plugin");
}

pub(super) use bindings::exports::switchboard::plugin::realtime as rt;

/// The 0.1.0 `host` interface: the current one's functions.
impl bindings::switchboard::plugin::host::Host for HostState {
    fn log(&mut self, level: wit::LogLevel, message: String) {
        super::bindings::switchboard::plugin::host::Host::log(self, level, message);
    }

    fn now_ms(&mut self) -> u64 {
        super::bindings::switchboard::plugin::host::Host::now_ms(self)
    }

    fn secret(&mut self, name: String) -> Option<String> {
        super::bindings::switchboard::plugin::host::Host::secret(self, name)
    }

    fn ws_connect(
        &mut self,
        url: String,
        headers: Vec<wit::Header>,
    ) -> Result<wit::IoHandle, wit::IoError> {
        super::bindings::switchboard::plugin::host::Host::ws_connect(self, url, headers)
    }

    fn ws_send(
        &mut self,
        socket: wit::IoHandle,
        message: wit::Payload,
    ) -> Result<(), wit::IoError> {
        super::bindings::switchboard::plugin::host::Host::ws_send(self, socket, message)
    }

    fn ws_close(&mut self, socket: wit::IoHandle) -> Result<(), wit::IoError> {
        super::bindings::switchboard::plugin::host::Host::ws_close(self, socket)
    }

    fn http_send(&mut self, request: wit::HttpRequest) -> Result<wit::IoHandle, wit::IoError> {
        super::bindings::switchboard::plugin::host::Host::http_send(self, request)
    }

    fn set_timer(&mut self, delay_ms: u32) -> Result<wit::IoHandle, wit::IoError> {
        super::bindings::switchboard::plugin::host::Host::set_timer(self, delay_ms)
    }

    fn cancel(&mut self, target: wit::IoHandle) {
        super::bindings::switchboard::plugin::host::Host::cancel(self, target);
    }
}

/// A realtime input as 0.1.0 has it; `None` for the inputs 0.2.0 added (tools), which a 0.1.0
/// plugin never gets.
pub(super) fn input_to_wit(input: SessionInput, format: AudioFormat) -> Option<rt::SessionInput> {
    Some(match input {
        SessionInput::Audio { data, timestamp_ms } => rt::SessionInput::Audio(wit::AudioFrame {
            format: format_to_wit(format),
            data,
            timestamp_ms,
        }),
        SessionInput::Dtmf(d) => rt::SessionInput::Dtmf(d),
        SessionInput::MarkPlayed(m) => rt::SessionInput::MarkPlayed(m),
        SessionInput::Interrupted(ms) => rt::SessionInput::Interrupted(ms),
        SessionInput::Hangup => rt::SessionInput::Hangup,
        SessionInput::Io(event) => rt::SessionInput::Io(event_to_wit(event)),
        SessionInput::Tools(_) | SessionInput::ToolResult(_) => return None,
    })
}

/// A 0.1.0 realtime output.
pub(super) fn output_from_wit(o: rt::SessionOutput) -> SessionOutput {
    match o {
        rt::SessionOutput::Play(frame) => SessionOutput::Play {
            format: format_from_wit(frame.format),
            data: frame.data,
        },
        rt::SessionOutput::ClearPlayback => SessionOutput::ClearPlayback,
        rt::SessionOutput::Mark(m) => SessionOutput::Mark(m),
        rt::SessionOutput::UserTranscript(t) => SessionOutput::UserTranscript {
            text: t.text,
            is_final: t.is_final,
        },
        rt::SessionOutput::AgentTranscript(t) => SessionOutput::AgentTranscript {
            text: t.text,
            is_final: t.is_final,
        },
        rt::SessionOutput::Transfer(n) => SessionOutput::Transfer(n),
        rt::SessionOutput::HangUp => SessionOutput::HangUp,
    }
}
