//! The Rust SDK for Switchboard plugins: bindings for the `switchboard:plugin@0.1.0` contract in
//! `wit/plugin.wit`, and the [`export!`] macro that makes a type the plugin's entry point.
//!
//! A plugin is a sans-IO state machine. Implement three traits on your types and export them:
//!
//! ```ignore
//! use switchboard_plugin_api::prelude::*;
//!
//! struct MyPlugin;
//! impl PluginGuest for MyPlugin { fn describe() -> PluginInfo { /* name, formats */ } }
//! impl RealtimeGuest for MyPlugin { type Session = MySession; }
//! struct MySession { /* per-call state */ }
//! impl GuestSession for MySession {
//!     fn open(config: SessionConfig) -> Result<Session, PluginError> { /* … */ }
//!     fn handle(&self, input: SessionInput) -> Result<Vec<SessionOutput>, PluginError> { /* … */ }
//! }
//! switchboard_plugin_api::export!(MyPlugin);
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2`; the result is a WASM component the host
//! loads from `agents.toml`. `plugins/echo` is a complete, commented example.

// The bindings below are generated code: it uses `unsafe` for the canonical ABI.
wit_bindgen::generate!({
    world: "realtime-plugin",
    path: "wit",
    pub_export_macro: true,
    export_macro_name: "export",
    default_bindings_module: "switchboard_plugin_api",
    generate_all,
    additional_derives: [PartialEq, Eq, Clone],
});

/// Version of the contract this SDK implements (the WIT package version).
pub const CONTRACT_VERSION: &str = "0.1.0";

/// The names a plugin needs, under short aliases.
pub mod prelude {
    pub use crate::exports::switchboard::plugin::plugin::Guest as PluginGuest;
    pub use crate::exports::switchboard::plugin::realtime::{
        Guest as RealtimeGuest, GuestSession, Session, SessionInput, SessionOutput, Transcript,
    };
    pub use crate::switchboard::plugin::host;
    pub use crate::switchboard::plugin::types::{
        AudioEncoding, AudioFormat, AudioFrame, CallInfo, LogLevel, PluginError, PluginInfo,
        SessionConfig,
    };
}
