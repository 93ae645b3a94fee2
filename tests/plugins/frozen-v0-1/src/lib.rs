//! Test fixture: a realtime plugin built against the frozen `switchboard:plugin@0.1.0` contract
//! (`plugin-api/wit-0.1.0/`), without the SDK, so that it stays a 0.1.0 plugin whatever the SDK
//! moves to. Every later host must keep loading and running it, in both builds.
//!
//! It echoes: each caller frame is played straight back; DTMF `1` queues the mark `one`; when
//! Twilio reports a mark played, it says so as a final agent transcript (`played one`).
//!
//! The WASM component comes from wit-bindgen; the native library is a hand-made ABI v1 table
//! whose inputs and outputs are the frozen WIT's types, postcard-encoded.

#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
// Generated bindings carry no docs, and the native table crosses a C ABI.
#![allow(unsafe_code, missing_docs)]

wit_bindgen::generate!({
    world: "realtime-plugin",
    path: "../../../plugin-api/wit-0.1.0",
    generate_all,
    additional_derives: [PartialEq, Clone, serde::Serialize, serde::Deserialize],
});

use exports::switchboard::plugin::realtime::{
    GuestSession, Session, SessionInput, SessionOutput, Transcript,
};
use switchboard::plugin::types::{
    AudioEncoding, AudioFormat, AudioFrame, PluginError, PluginInfo, SessionConfig,
};

/// The contract version this fixture is frozen at.
pub const CONTRACT_VERSION: &str = "0.1.0";

fn info() -> PluginInfo {
    PluginInfo {
        name: "frozen-v0-1".into(),
        version: "0.1.0".into(),
        description: "Echo built against the frozen 0.1.0 contract".into(),
        input_format: AudioFormat {
            encoding: AudioEncoding::Mulaw,
            sample_rate: 8000,
        },
    }
}

/// One call's state: nothing but the format audio arrives in.
pub struct Echo {
    format: AudioFormat,
}

impl Echo {
    fn open(config: SessionConfig) -> Result<Self, PluginError> {
        Ok(Self {
            format: config.input_format,
        })
    }

    fn handle(&mut self, input: SessionInput) -> Vec<SessionOutput> {
        match input {
            SessionInput::Audio(frame) => vec![SessionOutput::Play(AudioFrame {
                format: self.format,
                data: frame.data,
                timestamp_ms: 0,
            })],
            SessionInput::Dtmf(digit) if digit == "1" => vec![SessionOutput::Mark("one".into())],
            SessionInput::MarkPlayed(name) => {
                vec![SessionOutput::AgentTranscript(Transcript {
                    text: format!("played {name}"),
                    is_final: true,
                })]
            }
            _ => Vec::new(),
        }
    }
}

struct Component;

impl exports::switchboard::plugin::realtime::Guest for Component {
    type Session = WasmSession;

    fn describe() -> PluginInfo {
        info()
    }
}

/// The component's session resource.
pub struct WasmSession(std::cell::RefCell<Echo>);

impl GuestSession for WasmSession {
    fn open(config: SessionConfig) -> Result<Session, PluginError> {
        Echo::open(config).map(|e| Session::new(WasmSession(std::cell::RefCell::new(e))))
    }

    fn handle(&self, input: SessionInput) -> Result<Vec<SessionOutput>, PluginError> {
        Ok(self.0.borrow_mut().handle(input))
    }
}

#[cfg(target_arch = "wasm32")]
export!(Component);

/// The native side: ABI v1 (the table's layout and the postcard wire format are the SDK's
/// `abi` module, which only ever appends), with this crate's frozen 0.1.0 types.
#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::ffi::c_void;

    use switchboard_plugin_api::abi::{
        Buffer, HostApi, PluginApi, STAGE_REALTIME, Str, decode, encode, status,
    };

    use super::{CONTRACT_VERSION, Echo, SessionConfig, SessionInput, info};

    /// # Safety
    /// `out` is writable.
    unsafe extern "C" fn describe(out: *mut Buffer) -> i32 {
        // SAFETY: the host passes a writable buffer slot.
        unsafe { *out = Buffer::from_vec(encode(&info())) };
        status::OK
    }

    /// # Safety
    /// As the ABI says: `config[..len]` readable, `session` and `out` writable.
    unsafe extern "C" fn open(
        config: *const u8,
        len: usize,
        session: *mut *mut c_void,
        out: *mut Buffer,
    ) -> i32 {
        // SAFETY: the host passes `len` readable bytes.
        let bytes = unsafe { std::slice::from_raw_parts(config, len) };
        let config: SessionConfig = match decode(bytes) {
            Ok(c) => c,
            Err(e) => {
                // SAFETY: writable slot.
                unsafe { *out = Buffer::from_vec(e.to_string().into_bytes()) };
                return status::BAD_INPUT;
            }
        };
        match Echo::open(config) {
            Ok(echo) => {
                // SAFETY: writable slots.
                unsafe {
                    *session = Box::into_raw(Box::new(echo)).cast();
                    *out = Buffer::empty();
                }
                status::OK
            }
            Err(e) => {
                // SAFETY: writable slot.
                unsafe { *out = Buffer::from_vec(encode(&e)) };
                status::PLUGIN_ERROR
            }
        }
    }

    /// # Safety
    /// `session` came from `open` and is used by one thread at a time; `input[..len]`
    /// readable; `out` writable.
    unsafe extern "C" fn handle(
        session: *mut c_void,
        input: *const u8,
        len: usize,
        out: *mut Buffer,
    ) -> i32 {
        // SAFETY: the host passes `len` readable bytes.
        let bytes = unsafe { std::slice::from_raw_parts(input, len) };
        let input: SessionInput = match decode(bytes) {
            Ok(i) => i,
            Err(e) => {
                // SAFETY: writable slot.
                unsafe { *out = Buffer::from_vec(e.to_string().into_bytes()) };
                return status::BAD_INPUT;
            }
        };
        // SAFETY: a live session from `open`, not shared.
        let echo = unsafe { &mut *session.cast::<Echo>() };
        let outputs = echo.handle(input);
        // SAFETY: writable slot.
        unsafe { *out = Buffer::from_vec(encode(&outputs)) };
        status::OK
    }

    /// # Safety
    /// `session` came from `open` and is not used again.
    unsafe extern "C" fn close(session: *mut c_void) {
        // SAFETY: the session's box, given back once.
        drop(unsafe { Box::from_raw(session.cast::<Echo>()) });
    }

    /// # Safety
    /// `buffer` came from this library's `Buffer::from_vec`.
    unsafe extern "C" fn free(buffer: Buffer) {
        if !buffer.ptr.is_null() {
            // SAFETY: a Vec's parts, handed over by `Buffer::from_vec`.
            drop(unsafe { Vec::from_raw_parts(buffer.ptr, buffer.len, buffer.cap) });
        }
    }

    static API: PluginApi = PluginApi {
        // Frozen at the ABI version 0.1.0 shipped with.
        abi_version: 1,
        size: size_of::<PluginApi>() as u32,
        contract_version: Str::new(CONTRACT_VERSION),
        build_info: Str::new("switchboard-fixture-frozen-v0-1 (no SDK)"),
        describe,
        open,
        handle,
        close,
        free,
        stage: STAGE_REALTIME,
    };

    /// The entry point. This fixture uses no host function, so the host's table is not kept.
    ///
    /// # Safety
    /// Any pointer; it is not read.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn switchboard_plugin_entry(_host: *const HostApi) -> *const PluginApi {
        &API
    }
}
