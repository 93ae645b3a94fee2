//! Test fixture: a realtime plugin built against `switchboard:plugin@0.3.0` (a copy of the
//! contract with only the version changed), which the host must refuse at load time with an error
//! naming both versions.

#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
// A fixture that fakes a foreign plugin: generated bindings without docs, and a hand-made native
// table (the only way to build one for another ABI version).
#![allow(unsafe_code, missing_docs)]

// This fixture uses wit-bindgen directly (not the SDK, which is for 0.2.0) for its WASM side.

wit_bindgen::generate!({ world: "realtime-plugin", path: "wit", generate_all });

use exports::switchboard::plugin::plugin::Guest as PluginGuest;
use exports::switchboard::plugin::realtime::{
    Guest as RealtimeGuest, GuestSession, Session, SessionInput, SessionOutput,
};
use switchboard::plugin::types::{
    AudioEncoding, AudioFormat, PluginError, PluginInfo, SessionConfig,
};

struct Future;

impl PluginGuest for Future {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "future-version".into(),
            version: "0.0.0".into(),
            description: "Built for a newer contract".into(),
            input_format: AudioFormat {
                encoding: AudioEncoding::Mulaw,
                sample_rate: 8000,
            },
        }
    }
}

impl RealtimeGuest for Future {
    type Session = FutureSession;
}

struct FutureSession;

impl GuestSession for FutureSession {
    fn open(_config: SessionConfig) -> Result<Session, PluginError> {
        Ok(Session::new(FutureSession))
    }

    fn handle(&self, _input: SessionInput) -> Result<Vec<SessionOutput>, PluginError> {
        Ok(Vec::new())
    }
}

#[cfg(target_arch = "wasm32")]
export!(Future);

/// The native side of the fixture: a table that claims a future native ABI version (2), which
/// the host must refuse, naming both versions, before it reads anything else of the table.
#[cfg(not(target_arch = "wasm32"))]
mod native {
    use switchboard_plugin_api::abi::{Buffer, HostApi, PluginApi, Str};

    unsafe extern "C" fn describe(_out: *mut Buffer) -> i32 {
        unreachable_entry()
    }
    unsafe extern "C" fn open(
        _: *const u8,
        _: usize,
        _: *mut *mut std::ffi::c_void,
        _: *mut Buffer,
    ) -> i32 {
        unreachable_entry()
    }
    unsafe extern "C" fn handle(
        _: *mut std::ffi::c_void,
        _: *const u8,
        _: usize,
        _: *mut Buffer,
    ) -> i32 {
        unreachable_entry()
    }
    unsafe extern "C" fn close(_: *mut std::ffi::c_void) {}
    unsafe extern "C" fn free(_: Buffer) {}

    /// The host must never call into a table of another version; abort loudly if it does.
    fn unreachable_entry() -> i32 {
        std::process::abort()
    }

    static API: PluginApi = PluginApi {
        abi_version: 2,
        size: size_of::<PluginApi>() as u32,
        contract_version: Str::new("0.3.0"),
        build_info: Str::new("switchboard-fixture-future-version"),
        describe,
        open,
        handle,
        close,
        free,
        stage: 0,
    };

    /// # Safety
    /// Any pointer; it is not read.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn switchboard_plugin_entry(_host: *const HostApi) -> *const PluginApi {
        &API
    }
}
