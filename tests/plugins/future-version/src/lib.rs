//! Test fixture: a realtime plugin built against `switchboard:plugin@0.2.0` (a copy of the
//! contract with only the version changed), which the host must refuse at load time with an error
//! naming both versions.

#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

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
