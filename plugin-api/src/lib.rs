//! The Rust SDK for Switchboard plugins.
//!
//! One source builds two ways: as a WASM component (`--target wasm32-wasip2`, sandboxed, loaded
//! from a `.wasm` file) and as a native library (a `cdylib`, trusted, loaded from a `.so` or
//! `.dylib`). Both speak the same contract, `switchboard:plugin@0.2.0` in `wit/plugin.wit`: a
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

// The bindings below are generated code: it uses `unsafe` for the canonical ABI and documents
// only what the WIT documents, so it lives in a module of its own that allows both, re-exported
// whole (`switchboard::plugin::*`, `exports::*`).
#[allow(unsafe_code, missing_docs)]
mod bindings {
    wit_bindgen::generate!({
        world: "realtime-plugin",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "__export_wit",
        default_bindings_module: "switchboard_plugin_api",
        generate_all,
        additional_derives: [PartialEq, Eq, Clone, serde::Serialize, serde::Deserialize],
    });
}
#[doc(inline)]
pub use bindings::*;

/// Bindings of the pipeline stage worlds (`stt-plugin`, `llm-plugin`, `tts-plugin`), sharing the
/// `types` and `host` interfaces generated above. Their types are re-exported in [`types`].
pub mod stages {
    macro_rules! stage_world {
        ($(#[$doc:meta])* $module:ident, $world:literal, $macro:literal, $bindings:literal $(, $iface:literal => $path:path)*) => {
            $(#[$doc])*
            #[allow(unsafe_code, missing_docs)]
            pub mod $module {
                wit_bindgen::generate!({
                    world: $world,
                    path: "wit",
                    pub_export_macro: true,
                    export_macro_name: $macro,
                    default_bindings_module: $bindings,
                    with: {
                        "switchboard:plugin/types@0.2.0": crate::switchboard::plugin::types,
                        "switchboard:plugin/host@0.2.0": crate::switchboard::plugin::host,
                        $($iface: $path,)*
                    },
                    generate_all,
                    additional_derives: [PartialEq, Eq, Clone, serde::Serialize, serde::Deserialize],
                });
            }
        };
    }
    stage_world!(
        /// The `stt-plugin` world.
        stt, "stt-plugin", "__export_stt", "switchboard_plugin_api::stages::stt"
    );
    stage_world!(
        /// The `llm-plugin` world.
        llm, "llm-plugin", "__export_llm", "switchboard_plugin_api::stages::llm",
        "switchboard:plugin/tools@0.2.0" => crate::switchboard::plugin::tools
    );
    stage_world!(
        /// The `tts-plugin` world.
        tts, "tts-plugin", "__export_tts", "switchboard_plugin_api::stages::tts"
    );
}

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
pub const CONTRACT_VERSION: &str = "0.2.0";

impl types::Message {
    /// A message of `role` with `content` and no tool calls.
    pub fn new(role: types::Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

/// The contract's types, under their WIT names (kebab-case turned into Rust case).
pub mod types {
    pub use crate::exports::switchboard::plugin::realtime::{
        SessionInput, SessionOutput, Transcript,
    };
    pub use crate::stages::llm::exports::switchboard::plugin::llm::{
        LlmInput, LlmOutput, Message, Role,
    };
    pub use crate::stages::stt::exports::switchboard::plugin::stt::{
        SttInput, SttOutput, SttTranscript,
    };
    pub use crate::stages::tts::exports::switchboard::plugin::tts::{TtsInput, TtsOutput};
    pub use crate::switchboard::plugin::tools::{Tool, ToolCall, ToolOutcome, ToolResult};
    pub use crate::switchboard::plugin::types::{
        AudioEncoding, AudioFormat, AudioFrame, CallInfo, Header, HttpChunk, HttpHead, HttpRequest,
        IoError, IoEvent, IoFailed, IoHandle, LogLevel, Payload, PluginError, PluginInfo,
        SessionConfig, WsClosed, WsMessage,
    };
}

use types::{
    LlmInput, LlmOutput, PluginError, PluginInfo, SessionConfig, SessionInput, SessionOutput,
    SttInput, SttOutput, TtsInput, TtsOutput,
};

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

/// The speech-to-text stage of a pipeline agent: one recognizer per call, fed caller audio in
/// the format [`describe`](Stt::describe) asks for. Same lifecycle and budgets as [`Realtime`].
pub trait Stt: Sized + Send + 'static {
    /// Names the plugin and the caller-audio format it wants.
    fn describe() -> PluginInfo;
    /// Starts a recognizer for one call.
    ///
    /// # Errors
    /// Any [`PluginError`] (bad settings: [`PluginError::InvalidConfig`]).
    fn open(config: SessionConfig) -> Result<Self, PluginError>;
    /// Feeds one input; returns transcripts and turn events.
    ///
    /// # Errors
    /// Any [`PluginError`].
    fn handle(&mut self, input: SttInput) -> Result<Vec<SttOutput>, PluginError>;
}

/// The language-model stage of a pipeline agent: one conversation per call. The host owns the
/// history and asks for one reply at a time ([`LlmInput::Reply`]). Same lifecycle and budgets as
/// [`Realtime`]; `input_format` in [`describe`](Llm::describe) is not used.
pub trait Llm: Sized + Send + 'static {
    /// Names the plugin.
    fn describe() -> PluginInfo;
    /// Starts a conversation for one call.
    ///
    /// # Errors
    /// Any [`PluginError`] (bad settings: [`PluginError::InvalidConfig`]).
    fn open(config: SessionConfig) -> Result<Self, PluginError>;
    /// Feeds one input; returns text deltas and `Done`.
    ///
    /// # Errors
    /// Any [`PluginError`].
    fn handle(&mut self, input: LlmInput) -> Result<Vec<LlmOutput>, PluginError>;
}

/// The text-to-speech stage of a pipeline agent: one synthesizer per call, fed the reply a
/// sentence or clause at a time. Same lifecycle and budgets as [`Realtime`]; `input_format` in
/// [`describe`](Tts::describe) is not used.
pub trait Tts: Sized + Send + 'static {
    /// Names the plugin.
    fn describe() -> PluginInfo;
    /// Starts a synthesizer for one call.
    ///
    /// # Errors
    /// Any [`PluginError`] (bad settings: [`PluginError::InvalidConfig`]).
    fn open(config: SessionConfig) -> Result<Self, PluginError>;
    /// Feeds one input; returns audio and `UtteranceDone`.
    ///
    /// # Errors
    /// Any [`PluginError`].
    fn handle(&mut self, input: TtsInput) -> Result<Vec<TtsOutput>, PluginError>;
}

/// One shape for every stage, so the native ABI and the test kit are written once.
pub mod stage {
    use super::*;

    /// A stage as the native glue and the test kit see it. Implemented by the `As*` wrappers;
    /// plugin authors implement [`Realtime`], [`Stt`], [`Llm`] or [`Tts`] instead.
    pub trait Stage: Sized + Send + 'static {
        /// The stage's number in the native table (`abi::STAGE_*`).
        const KIND: u32;
        /// What the host feeds.
        type Input: serde::Serialize + serde::de::DeserializeOwned + Clone + std::fmt::Debug;
        /// What the plugin returns.
        type Output: serde::Serialize + serde::de::DeserializeOwned + Clone + std::fmt::Debug;
        /// [`Realtime::describe`] and its kin.
        fn describe() -> PluginInfo;
        /// [`Realtime::open`] and its kin.
        ///
        /// # Errors
        /// The plugin's.
        fn open(config: SessionConfig) -> Result<Self, PluginError>;
        /// [`Realtime::handle`] and its kin.
        ///
        /// # Errors
        /// The plugin's.
        fn handle(&mut self, input: Self::Input) -> Result<Vec<Self::Output>, PluginError>;
    }

    macro_rules! as_stage {
        ($wrapper:ident, $trait:ident, $kind:expr, $input:ty, $output:ty) => {
            /// Adapts a
            #[doc = concat!("[`", stringify!($trait), "`]")]
            /// plugin to [`Stage`].
            pub struct $wrapper<T>(pub T);

            impl<T: $trait> Stage for $wrapper<T> {
                const KIND: u32 = $kind;
                type Input = $input;
                type Output = $output;
                fn describe() -> PluginInfo {
                    T::describe()
                }
                fn open(config: SessionConfig) -> Result<Self, PluginError> {
                    T::open(config).map($wrapper)
                }
                fn handle(&mut self, input: $input) -> Result<Vec<$output>, PluginError> {
                    self.0.handle(input)
                }
            }
        };
    }

    as_stage!(AsRealtime, Realtime, 0, SessionInput, SessionOutput);
    as_stage!(AsStt, Stt, 1, SttInput, SttOutput);
    as_stage!(AsLlm, Llm, 2, LlmInput, LlmOutput);
    as_stage!(AsTts, Tts, 3, TtsInput, TtsOutput);
}

/// Exports a plugin: `export_plugin!(realtime: MySession)` (or `stt:`, `llm:`, `tts:`), where
/// the type implements the stage's trait.
///
/// On `wasm32` it emits the component exports of the stage's world (`realtime-plugin`,
/// `stt-plugin`…); on other targets the native entry symbol `switchboard_plugin_entry` (see
/// [`abi`]). Use it once per crate, at the crate root, and build the crate as a `cdylib` (plus
/// `rlib` to unit-test it).
#[macro_export]
macro_rules! export_plugin {
    (realtime: $session:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __SwitchboardPlugin;
            impl $crate::exports::switchboard::plugin::realtime::Guest for __SwitchboardPlugin {
                type Session = $crate::__private::wasm::Cell<$session>;
                fn describe() -> $crate::types::PluginInfo {
                    <$session as $crate::Realtime>::describe()
                }
            }
            $crate::__export_wit!(__SwitchboardPlugin with_types_in $crate);
        };
        $crate::__export_native!($crate::stage::AsRealtime<$session>);
    };
    (stt: $session:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __SwitchboardPlugin;
            impl $crate::stages::stt::exports::switchboard::plugin::stt::Guest for __SwitchboardPlugin {
                type Recognizer = $crate::__private::wasm::Cell<$session>;
                fn describe() -> $crate::types::PluginInfo {
                    <$session as $crate::Stt>::describe()
                }
            }
            $crate::stages::stt::__export_stt!(__SwitchboardPlugin with_types_in $crate::stages::stt);
        };
        $crate::__export_native!($crate::stage::AsStt<$session>);
    };
    (llm: $session:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __SwitchboardPlugin;
            impl $crate::stages::llm::exports::switchboard::plugin::llm::Guest for __SwitchboardPlugin {
                type Conversation = $crate::__private::wasm::Cell<$session>;
                fn describe() -> $crate::types::PluginInfo {
                    <$session as $crate::Llm>::describe()
                }
            }
            $crate::stages::llm::__export_llm!(__SwitchboardPlugin with_types_in $crate::stages::llm);
        };
        $crate::__export_native!($crate::stage::AsLlm<$session>);
    };
    (tts: $session:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __SwitchboardPlugin;
            impl $crate::stages::tts::exports::switchboard::plugin::tts::Guest for __SwitchboardPlugin {
                type Synthesizer = $crate::__private::wasm::Cell<$session>;
                fn describe() -> $crate::types::PluginInfo {
                    <$session as $crate::Tts>::describe()
                }
            }
            $crate::stages::tts::__export_tts!(__SwitchboardPlugin with_types_in $crate::stages::tts);
        };
        $crate::__export_native!($crate::stage::AsTts<$session>);
    };
}

/// The native entry symbol for a [`stage::Stage`]; used by [`export_plugin!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __export_native {
    ($stage:ty) => {
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            static API: $crate::abi::PluginApi = $crate::__private::native::plugin_api::<$stage>(
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
    pub use crate::host;
    pub use crate::types::*;
    pub use crate::{Llm, Realtime, Stt, Tts};
}
