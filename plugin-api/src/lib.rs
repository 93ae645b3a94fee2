//! The Rust SDK for Switchboard plugins.
//!
//! One source builds two ways: as a WASM component (`--target wasm32-wasip2`, sandboxed, loaded
//! from a `.wasm` file) and as a native library (a `cdylib`, trusted, loaded from a `.so` or
//! `.dylib`). Both speak the same contract, `switchboard:plugin@0.1.0` in `wit/plugin.wit`: a
//! plugin is a sans-IO state machine that the host feeds one input at a time.
//!
//! Implement one trait per stage on your session type and export it with one macro:
//!
//! ```
//! use switchboard_plugin_api::prelude::*;
//!
//! struct Loopback;
//!
//! impl Realtime for Loopback {
//!     fn describe() -> PluginInfo {
//!         PluginInfo {
//!             name: "loopback".into(),
//!             version: "0.1.0".into(),
//!             description: "Plays every caller frame straight back".into(),
//!             input_format: AudioFormat { encoding: AudioEncoding::Mulaw, sample_rate: 8000 },
//!         }
//!     }
//!     fn open(_config: SessionConfig) -> Result<Self, PluginError> {
//!         Ok(Loopback)
//!     }
//!     fn handle(&mut self, input: SessionInput) -> Result<Vec<SessionOutput>, PluginError> {
//!         Ok(match input {
//!             SessionInput::Audio(frame) => vec![SessionOutput::Play(frame)],
//!             _ => Vec::new(),
//!         })
//!     }
//! }
//!
//! switchboard_plugin_api::export_plugin!(realtime: Loopback);
//! ```
//!
//! - [`Realtime`] is the speech-to-speech stage (the only stage of contract 0.1).
//! - [`export_plugin!`] emits the WASM component exports on `wasm32` and the native entry symbol
//!   ([`abi::ENTRY_SYMBOL`]) everywhere else.
//! - [`host`] holds what the host gives every plugin (log, clock), on both targets.
//! - The `testing` module (feature `testing`) drives a session from a WAV file or recorded
//!   inputs, with no gateway and no sockets.
//!
//! `plugins/echo` in the Switchboard repository is a complete, commented template.

// The bindings below are generated code: it uses `unsafe` for the canonical ABI.
wit_bindgen::generate!({
    world: "realtime-plugin",
    path: "wit",
    pub_export_macro: true,
    export_macro_name: "__export_wit",
    default_bindings_module: "switchboard_plugin_api",
    generate_all,
    additional_derives: [PartialEq, Eq, Clone, serde::Serialize, serde::Deserialize],
});

#[cfg(not(target_arch = "wasm32"))]
pub mod abi;
pub mod audio;
pub mod host;
// The test kit runs plugins natively (it stands in for the host through the native ABI).
#[cfg(all(feature = "testing", not(target_arch = "wasm32")))]
pub mod testing;

#[doc(hidden)]
pub mod __private {
    //! Glue that [`export_plugin!`](crate::export_plugin) expands to; not part of the API.
    #[cfg(not(target_arch = "wasm32"))]
    pub use crate::abi::glue as native;
    #[cfg(target_arch = "wasm32")]
    pub mod wasm;
}

/// Version of the contract this SDK implements: the WIT package version of `wit/plugin.wit`.
/// The host refuses a plugin built for another version.
pub const CONTRACT_VERSION: &str = "0.1.0";

/// The contract's types, under their WIT names (kebab-case turned into Rust case).
pub mod types {
    pub use crate::exports::switchboard::plugin::realtime::{
        SessionInput, SessionOutput, Transcript,
    };
    pub use crate::switchboard::plugin::types::{
        AudioEncoding, AudioFormat, AudioFrame, CallInfo, Header, HttpChunk, HttpHead, HttpRequest,
        IoError, IoEvent, IoFailed, IoHandle, LogLevel, Payload, PluginError, PluginInfo,
        SessionConfig, WsClosed, WsMessage,
    };
}

use types::{PluginError, PluginInfo, SessionConfig, SessionInput, SessionOutput};

/// The realtime (speech-to-speech) stage: one value of the implementing type per call.
///
/// The host calls [`describe`](Realtime::describe) once when it loads the plugin,
/// [`open`](Realtime::open) when a call starts, then [`handle`](Realtime::handle) for every
/// input of that call, one at a time, in order, until [`SessionInput::Hangup`]; then it drops the
/// value. A session never blocks and never does I/O: it returns what it wants done.
///
/// Budgets (see the host's docs): `handle` should return well within a 20 ms frame; the host
/// ends a call whose `handle` runs past 200 ms, returns more than 10,000 outputs, or (WASM) grows
/// past 64 MiB of memory. A panic ends only the call it happened in.
///
/// `Send` because a native host may call a session from different threads (never two at once).
pub trait Realtime: Sized + Send + 'static {
    /// Names the plugin and the caller-audio format it wants; the host converts Twilio's
    /// 8 kHz μ-law to it (PCM16 at 8000–48000 Hz, or μ-law at 8000 Hz untouched).
    fn describe() -> PluginInfo;

    /// Starts a session for one call.
    ///
    /// # Errors
    /// [`PluginError::InvalidConfig`] when the agent's settings are wrong (say which key), or any
    /// other [`PluginError`]; the host then ends the call with an apology.
    fn open(config: SessionConfig) -> Result<Self, PluginError>;

    /// Feeds one input; returns the outputs it caused, in order.
    ///
    /// # Errors
    /// Any [`PluginError`]; the host logs it and ends the call with an apology.
    fn handle(&mut self, input: SessionInput) -> Result<Vec<SessionOutput>, PluginError>;
}

/// Exports a plugin: `export_plugin!(realtime: MySession)` where `MySession: Realtime`.
///
/// On `wasm32` it emits the component exports of the `realtime-plugin` world; on other targets
/// the native entry symbol `switchboard_plugin_entry` (see [`abi`]). Use it once per crate, at
/// the crate root, and build the crate as a `cdylib` (plus `rlib` to unit-test it).
#[macro_export]
macro_rules! export_plugin {
    (realtime: $session:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __SwitchboardPlugin;
            impl $crate::exports::switchboard::plugin::plugin::Guest for __SwitchboardPlugin {
                fn describe() -> $crate::types::PluginInfo {
                    <$session as $crate::Realtime>::describe()
                }
            }
            impl $crate::exports::switchboard::plugin::realtime::Guest for __SwitchboardPlugin {
                type Session = $crate::__private::wasm::RealtimeCell<$session>;
            }
    $crate::__export_wit!(__SwitchboardPlugin with_types_in $crate);
        };

        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            static API: $crate::abi::PluginApi = $crate::__private::native::plugin_api::<$session>(
                concat!(env!("CARGO_PKG_NAME"), " ", env!("CARGO_PKG_VERSION")),
            );

            /// The native entry point: records the host's functions and returns the plugin's.
            ///
            /// # Safety
            /// `host` is null or points to a `HostApi` that lives for the rest of the process.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn switchboard_plugin_entry(
                host: *const $crate::abi::HostApi,
            ) -> *const $crate::abi::PluginApi {
                // SAFETY: forwarded from this function's own contract.
                unsafe { $crate::__private::native::install_host(host) };
                &API
            }
        };
    };
}

/// The names a plugin needs: the stage traits, the contract's types and the host functions.
pub mod prelude {
    pub use crate::Realtime;
    pub use crate::host;
    pub use crate::types::*;
}
