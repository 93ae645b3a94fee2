//! The plugin host: what the rest of the gateway sees of a plugin, whatever it is built as.
//!
//! A plugin is loaded once when the config is loaded ([`Plugins::load`]); each call opens its own
//! [`Session`], owned by the call's task, and feeds it [`SessionInput`]s one at a time. The types
//! here mirror the WIT contract in `plugin-api/wit/plugin.wit` (`switchboard:plugin@0.1.0`) so the
//! call task never touches generated bindings.

pub mod breaker;
pub mod budget;
pub mod io;
pub mod native;
pub mod tools;
pub mod wasm;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{Config, PluginKind};

/// How audio samples are encoded (WIT `audio-encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioEncoding {
    /// Signed 16-bit little-endian PCM, mono.
    Pcm16,
    /// ITU-T G.711 μ-law, one byte per sample.
    Mulaw,
}

/// An encoding at a sample rate (WIT `audio-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioFormat {
    /// How samples are encoded.
    pub encoding: AudioEncoding,
    /// Samples per second (Hz).
    pub sample_rate: u32,
}

impl AudioFormat {
    /// Twilio's Media Streams format: G.711 μ-law at 8000 Hz.
    pub const TWILIO: AudioFormat = AudioFormat {
        encoding: AudioEncoding::Mulaw,
        sample_rate: 8000,
    };
}

/// What a plugin says about itself (WIT `plugin-info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// Short machine name.
    pub name: String,
    /// The plugin's own version.
    pub version: String,
    /// One line for operators.
    pub description: String,
    /// The caller audio format the plugin wants.
    pub input_format: AudioFormat,
}

/// Who is calling whom (WIT `call-info`).
#[derive(Debug, Clone, Default)]
pub struct CallInfo {
    /// Twilio `CallSid`.
    pub call_sid: String,
    /// Twilio `streamSid`.
    pub stream_sid: String,
    /// Caller number.
    pub from: String,
    /// Called number.
    pub to: String,
    /// `inbound`, `outbound-api` or `outbound-dial`.
    pub direction: String,
    /// The agent the call was routed to.
    pub agent: String,
    /// The stream's `customParameters`.
    pub parameters: Vec<(String, String)>,
}

/// Everything a session needs to start (WIT `session-config`).
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The call.
    pub call: CallInfo,
    /// Effective plugin settings of the agent, as a JSON object.
    pub settings: String,
    /// The agent's greeting.
    pub greeting: Option<String>,
    /// What the session may reach through host I/O (the agent's `allowed_hosts`, `secrets`).
    pub io: Arc<io::IoPolicy>,
}

/// One input to a session (WIT `session-input`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionInput {
    /// 20 ms of caller audio, already in the plugin's declared input format.
    Audio {
        /// Samples in the plugin's input format.
        data: Vec<u8>,
        /// Milliseconds since the stream started (Twilio `media.timestamp`).
        timestamp_ms: u64,
    },
    /// A DTMF digit.
    Dtmf(String),
    /// The audio before this plugin mark has played.
    MarkPlayed(String),
    /// The caller interrupted the reply after hearing this many ms of it.
    Interrupted(u64),
    /// The call is over.
    Hangup,
    /// Host I/O the plugin asked for completed.
    Io(io::IoEvent),
    /// The agent's tools (contract 0.2.0; never sent to a 0.1.0 plugin).
    Tools(Vec<tools::Tool>),
    /// The result of a tool call the plugin made (contract 0.2.0).
    ToolResult(tools::ToolResult),
}

/// One output of a session (WIT `session-output`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOutput {
    /// Queue audio for the caller.
    Play {
        /// Format of `data`.
        format: AudioFormat,
        /// Samples.
        data: Vec<u8>,
    },
    /// Drop queued audio (Twilio `clear`).
    ClearPlayback,
    /// Tell me when the audio queued so far has played.
    Mark(String),
    /// What the caller said.
    UserTranscript {
        /// Text.
        text: String,
        /// False for a partial result.
        is_final: bool,
    },
    /// What the agent said.
    AgentTranscript {
        /// Text.
        text: String,
        /// False for a partial result.
        is_final: bool,
    },
    /// Transfer the call to a number.
    Transfer(String),
    /// End the call after the queued audio has played.
    HangUp,
    /// Call a tool (contract 0.2.0).
    ToolCall(tools::ToolCall),
}

/// Which contract a plugin implements: its WIT world, or the native table's `stage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `realtime-plugin`: speech to speech.
    Realtime,
    /// `stt-plugin`: speech to text.
    Stt,
    /// `llm-plugin`: the language model of a pipeline.
    Llm,
    /// `tts-plugin`: text to speech.
    Tts,
}

impl Stage {
    /// A name for operators: `realtime`, `speech-to-text`, `language-model`, `text-to-speech`.
    pub fn describe(self) -> &'static str {
        match self {
            Stage::Realtime => "realtime",
            Stage::Stt => "speech-to-text",
            Stage::Llm => "language-model",
            Stage::Tts => "text-to-speech",
        }
    }
}

/// Who said a message of a language model's history (WIT `llm.role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The agent's instructions.
    System,
    /// The caller.
    User,
    /// The agent.
    Assistant,
    /// A tool's result (contract 0.2.0).
    Tool,
}

/// One message of a language model's history (WIT `llm.message`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Who said it.
    pub role: Role,
    /// The text; for a [`Role::Tool`] message, the result (output JSON, or the error).
    pub content: String,
    /// An assistant message's tool calls.
    pub tool_calls: Vec<tools::ToolCall>,
    /// A tool message's call id.
    pub tool_call_id: Option<String>,
}

impl Message {
    /// A plain text message.
    pub fn text(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

/// One input to a pipeline-stage session (WIT `stt-input`, `llm-input`, `tts-input` in one
/// enum; each stage takes its own variants and `Io`/`Hangup`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageInput {
    /// stt: 20 ms of caller audio in the plugin's input format.
    Audio {
        /// Samples.
        data: Vec<u8>,
        /// Milliseconds since the stream started.
        timestamp_ms: u64,
    },
    /// stt: the host's endpointing ended the caller's turn.
    EndOfTurn,
    /// llm: reply to this history, oldest first.
    Reply(Vec<Message>),
    /// tts: speak this text after what came before.
    Text(String),
    /// tts: no more text for this utterance.
    Flush,
    /// llm, tts: drop the reply or utterance in progress (barge-in).
    Cancel,
    /// Host I/O completed.
    Io(io::IoEvent),
    /// The call is over.
    Hangup,
    /// llm: the agent's tools (contract 0.2.0; never sent to a 0.1.0 plugin).
    Tools(Vec<tools::Tool>),
}

/// One output of a pipeline-stage session (WIT `stt-output`, `llm-output`, `tts-output`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageOutput {
    /// stt: speech began.
    SpeechStarted,
    /// stt: text of the caller's turn.
    Transcript {
        /// Text.
        text: String,
        /// False for interim text.
        is_final: bool,
    },
    /// stt: the recognizer's own endpointing ended the turn.
    EndOfTurn,
    /// llm: more text of the reply.
    TextDelta(String),
    /// llm: the reply is complete.
    Done,
    /// tts: audio of the utterance.
    Audio {
        /// Format of `data`.
        format: AudioFormat,
        /// Samples.
        data: Vec<u8>,
    },
    /// tts: everything before the last flush has been returned.
    UtteranceDone,
    /// llm: the reply calls a tool (contract 0.2.0).
    ToolCall(tools::ToolCall),
}

/// A plugin's own error (WIT `plugin-error`), as `kind: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct PluginError {
    /// `invalid-config`, `unauthorized`, `upstream`, `rate-limited`, `unsupported` or `internal`.
    pub kind: &'static str,
    /// What the plugin said.
    pub message: String,
}

/// Why a session call failed — what ends a plugin's call. Typed, so that metrics (`kind`),
/// records and logs tell the cases apart without reading messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The plugin returned its own `plugin-error` (its WIT variant is [`PluginError::kind`]).
    #[error("plugin error: {0}")]
    Plugin(#[from] PluginError),
    /// The guest trapped (`unreachable`, a Rust panic in WASM, a stack overflow…): the message
    /// is wasmtime's root cause and what the guest last wrote to stderr. The session is unusable.
    #[error("plugin trapped: {0}")]
    Trap(String),
    /// One call into the plugin ran (held a thread) longer than its time budget
    /// (`budget_ms`) and was stopped (WASM) or reported (native). The session is unusable.
    #[error("plugin overran its time budget: ran past its {budget_ms} ms budget for one call")]
    TimeBudget {
        /// The budget (ms).
        budget_ms: u64,
    },
    /// The session used more than its CPU share over the call ([`budget::CpuBucket`]).
    #[error("plugin exceeded its CPU share: {0}")]
    Cpu(#[from] budget::CpuExceeded),
    /// A WASM session asked for more linear memory than its cap
    /// ([`wasm::SESSION_MEMORY_LIMIT`]) and then failed.
    #[error("plugin ran out of memory: {0}")]
    Memory(String),
    /// The plugin returned more than the contract allows (outputs per call, a mark name's or a
    /// transcript's size, audio the host cannot play).
    #[error("plugin output refused: {0}")]
    Output(String),
    /// The plugin broke the contract: outputs the host cannot decode, an input its stage does not
    /// take, a call into a session that already failed, no session from `open`.
    #[error("plugin broke the contract: {0}")]
    Contract(String),
    /// A native plugin panicked (caught at its ABI boundary).
    #[error("plugin panicked: {0}")]
    Panic(String),
    /// One of the host's own functions panicked while the plugin's call ran (caught at the
    /// native callback's boundary).
    #[error("a host function panicked during the plugin's call: {0}")]
    HostPanic(String),
    /// The host could not run the plugin for the call (the plugin is not loaded, a stage fell
    /// too far behind, the voice activity detector failed).
    #[error("the host could not run the plugin: {0}")]
    Host(String),
}

impl SessionError {
    /// A short label of what went wrong, for metrics and records: `error` (the plugin's own
    /// error), `trap`, `time` (a call overran its budget), `cpu` (its CPU share ran out),
    /// `memory`, `output`, `contract`, `panic`, `host-panic` or `host`.
    pub fn kind(&self) -> &'static str {
        match self {
            SessionError::Plugin(_) => "error",
            SessionError::Trap(_) => "trap",
            SessionError::TimeBudget { .. } => "time",
            SessionError::Cpu(_) => "cpu",
            SessionError::Memory(_) => "memory",
            SessionError::Output(_) => "output",
            SessionError::Contract(_) => "contract",
            SessionError::Panic(_) => "panic",
            SessionError::HostPanic(_) => "host-panic",
            SessionError::Host(_) => "host",
        }
    }
}

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("plugin {name} ({path}): {problem}", path = path.display())]
pub struct PluginLoadError {
    /// Plugin name in agents.toml (`<engine>` when the WASM engine itself could not start).
    pub name: String,
    /// File path.
    pub path: PathBuf,
    /// What was wrong (boxed: the error travels in `Result`s on every load path).
    pub problem: Box<LoadProblem>,
}

impl PluginLoadError {
    /// A load error of plugin `name` at `path`.
    pub fn new(name: &str, path: &Path, problem: LoadProblem) -> Self {
        Self {
            name: name.to_string(),
            path: path.to_path_buf(),
            problem: Box::new(problem),
        }
    }
}

/// What was wrong with a plugin file, by kind: what an operator does about each differs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadProblem {
    /// The file cannot be read (missing, a directory, no permission).
    #[error("cannot read the file: {0}")]
    Unreadable(String),
    /// The file is not a WASM component (a core module, another format, corrupt).
    #[error("not a valid WASM component: {0}")]
    NotAComponent(String),
    /// The plugin was built against another version of the `switchboard:plugin` contract.
    #[error(
        "built for {package}@{found}{}, but this host loads {package} {supported}; rebuild \
         the plugin against a switchboard-plugin-api of one of those",
        .item.as_deref().map(|i| format!(" ({i})")).unwrap_or_default()
    )]
    ContractVersion {
        /// `switchboard:plugin`.
        package: &'static str,
        /// The version the plugin was built for.
        found: String,
        /// The versions this host loads (`0.2.0 or 0.1.0`).
        supported: &'static str,
        /// The import or export that named the version (WASM), if known.
        item: Option<String>,
    },
    /// The component does not export (or fit) the contract world it must implement.
    #[error("does not {verb} the switchboard:plugin@{version} {world} world: {detail}")]
    MissingExport {
        /// `export` or `fit` (an import the host does not provide).
        verb: &'static str,
        /// The contract version.
        version: &'static str,
        /// `realtime-plugin`, `stt-plugin`, `llm-plugin` or `tts-plugin`.
        world: &'static str,
        /// wasmtime's account.
        detail: String,
    },
    /// A native library built for another native ABI version than this host's.
    #[error(
        "built for native ABI version {found}, but this host supports native ABI version \
         {supported}; rebuild the plugin against switchboard-plugin-api {contract}"
    )]
    NativeAbi {
        /// The library's ABI version.
        found: u32,
        /// This host's ABI version.
        supported: u32,
        /// The contract version to rebuild against.
        contract: &'static str,
    },
    /// A native library that cannot be used otherwise: it does not load, lacks the entry
    /// symbol, or its table is short or names an unknown stage.
    #[error("{0}")]
    NativeLibrary(String),
    /// `describe` trapped, panicked, overran or returned what the host cannot decode.
    #[error("describe failed: {0}")]
    Describe(String),
    /// The plugin asked for caller audio in a format the host cannot produce.
    #[error("{0}")]
    InputFormat(String),
    /// The plugin implements another stage than the agent uses it for.
    #[error("is a {found} plugin, but agent {agent} uses it as its {role} plugin")]
    WrongStage {
        /// What the plugin is.
        found: &'static str,
        /// The agent.
        agent: String,
        /// The role the agent gives it (`realtime`, `stt`, `llm`, `tts`).
        role: &'static str,
    },
    /// The host could not prepare the plugin (the WASM engine, linking, instantiation).
    #[error("{0}")]
    Host(String),
}

/// Longest mark name a plugin may send (bytes). Marks are the plugin's own labels, echoed by
/// Twilio; a longer one is a bug (a 10 MiB name once reached Twilio) and ends the call.
pub const MAX_MARK_NAME_BYTES: usize = 256;

/// Longest transcript text in one output (bytes): minutes of speech; more is a bug.
pub const MAX_TRANSCRIPT_BYTES: usize = 64 * 1024;

/// Longest transfer target (bytes): an E.164 number is at most 16.
pub const MAX_TRANSFER_BYTES: usize = 64;

/// Checks a realtime session's outputs against the contract's size limits
/// ([`MAX_MARK_NAME_BYTES`], [`MAX_TRANSCRIPT_BYTES`], [`MAX_TRANSFER_BYTES`]).
///
/// # Errors
/// [`SessionError::Output`] naming the output and the limit.
pub fn check_outputs(outputs: &[SessionOutput]) -> Result<(), SessionError> {
    for output in outputs {
        let (what, len, limit) = match output {
            SessionOutput::Mark(name) => ("a mark name", name.len(), MAX_MARK_NAME_BYTES),
            SessionOutput::UserTranscript { text, .. }
            | SessionOutput::AgentTranscript { text, .. } => {
                ("a transcript", text.len(), MAX_TRANSCRIPT_BYTES)
            }
            SessionOutput::Transfer(number) => {
                ("a transfer number", number.len(), MAX_TRANSFER_BYTES)
            }
            _ => continue,
        };
        if len > limit {
            return Err(SessionError::Output(format!(
                "returned {what} of {len} bytes (limit {limit})"
            )));
        }
    }
    Ok(())
}

/// Checks that the host can produce the caller-audio format a plugin asked for: PCM16 at
/// 8000–48000 Hz, or μ-law at 8000 Hz (Twilio's own bytes, untouched).
///
/// # Errors
/// What is wrong with the format, for the load error.
pub fn check_input_format(format: AudioFormat) -> Result<(), String> {
    if format.encoding == AudioEncoding::Mulaw && format.sample_rate != 8000 {
        return Err(format!(
            "asks for μ-law at {} Hz; μ-law input is only offered at 8000 Hz",
            format.sample_rate
        ));
    }
    if !(8000..=48000).contains(&format.sample_rate) {
        return Err(format!(
            "asks for input at {} Hz; the host offers 8000–48000 Hz",
            format.sample_rate
        ));
    }
    Ok(())
}

/// A loaded plugin, shared by every call that uses it.
pub enum Plugin {
    /// A WASM component.
    Wasm(wasm::WasmPlugin),
    /// A native library.
    Native(native::NativePlugin),
}

impl Plugin {
    /// What the plugin said about itself when it was loaded.
    pub fn info(&self) -> &PluginInfo {
        match self {
            Plugin::Wasm(p) => p.info(),
            Plugin::Native(p) => p.info(),
        }
    }

    /// The contract the plugin implements.
    pub fn stage(&self) -> Stage {
        match self {
            Plugin::Wasm(p) => p.stage(),
            Plugin::Native(p) => p.stage(),
        }
    }

    /// Opens a pipeline-stage session (speech-to-text, language model or text-to-speech) for
    /// one call.
    ///
    /// # Errors
    /// The plugin is a realtime plugin, refused the config, or trapped.
    pub async fn open_stage(&self, config: &SessionConfig) -> Result<StageSession, SessionError> {
        match self {
            Plugin::Wasm(p) => p.open_stage(config).await.map(StageKind::Wasm),
            Plugin::Native(p) => p.open_stage(config).await.map(StageKind::Native),
        }
        .map(StageSession::new)
    }

    /// Opens a session for one call.
    ///
    /// # Errors
    /// The plugin refused the config ([`SessionError::Plugin`]) or trapped.
    pub async fn open(&self, config: &SessionConfig) -> Result<Session, SessionError> {
        match self {
            Plugin::Wasm(p) => p.open(config).await.map(SessionKind::Wasm),
            Plugin::Native(p) => p.open(config).await.map(SessionKind::Native),
        }
        .map(Session::new)
    }
}

impl Plugin {
    /// `wasm` or `native`.
    pub fn kind(&self) -> &'static str {
        match self {
            Plugin::Wasm(_) => "wasm",
            Plugin::Native(_) => "native",
        }
    }
}

/// One call's session inside a plugin, with the host I/O it asked for: the session owns its
/// [`io::IoDriver`], so whoever drives it feeds it inputs and [`Session::next_io_event`]'s
/// events and never relays commands. Owned by the call task; dropping it frees the plugin's
/// state for that call and cancels its I/O.
pub struct Session {
    kind: SessionKind,
    io: io::IoDriver,
}

/// How the session's plugin was built.
enum SessionKind {
    Wasm(wasm::WasmSession),
    Native(native::NativeSession),
}

impl Session {
    /// Wraps a just-opened session, starting the I/O its `open` asked for.
    fn new(kind: SessionKind) -> Self {
        let mut session = Self {
            kind,
            io: io::IoDriver::new(),
        };
        session.start_io();
        session
    }

    /// Starts the host I/O the plugin asked for during its last `open` or `handle`, checked
    /// against its policy.
    fn start_io(&mut self) {
        let commands = match &mut self.kind {
            SessionKind::Wasm(s) => s.take_io(),
            SessionKind::Native(s) => s.take_io(),
        };
        self.io.execute_all(commands);
    }

    /// Feeds one input and returns the outputs it caused, in order; the host I/O it asked for
    /// starts at once.
    ///
    /// # Errors
    /// The plugin returned an error or trapped; after a trap the session must be dropped.
    pub async fn handle(
        &mut self,
        input: SessionInput,
    ) -> Result<Vec<SessionOutput>, SessionError> {
        let outputs = match &mut self.kind {
            SessionKind::Wasm(s) => s.handle(input).await,
            SessionKind::Native(s) => s.handle(input).await,
        }?;
        if let Err(e) = check_outputs(&outputs) {
            self.abandon();
            return Err(e);
        }
        self.start_io();
        Ok(outputs)
    }

    /// The next completion of the session's host I/O (a timer, an HTTP response, a WebSocket
    /// message), to feed back as [`SessionInput::Io`]. Pending while none is in flight.
    /// Cancel-safe.
    pub async fn next_io_event(&mut self) -> io::IoEvent {
        self.io.next_in_flight().await
    }

    /// Charges host work done on the plugin's behalf (resampling the audio it played) to the
    /// session's CPU share ([`budget`]).
    ///
    /// # Errors
    /// [`SessionError::Cpu`] when the share ran out; the session is closed.
    pub fn charge(&mut self, used: std::time::Duration) -> Result<(), SessionError> {
        match &mut self.kind {
            SessionKind::Wasm(s) => s.charge(used),
            SessionKind::Native(s) => s.charge(used),
        }
    }

    /// Marks the session unusable without calling it again: a call into it failed, or was
    /// abandoned half-way (the caller hung up while it ran).
    pub fn abandon(&mut self) {
        match &mut self.kind {
            SessionKind::Wasm(s) => s.abandon(),
            SessionKind::Native(s) => s.abandon(),
        }
    }
}

/// One call's session of a pipeline-stage plugin, with its own host I/O (as [`Session`]).
/// Owned by the stage's task.
pub struct StageSession {
    kind: StageKind,
    io: io::IoDriver,
}

/// How the stage session's plugin was built.
enum StageKind {
    Wasm(wasm::WasmStageSession),
    Native(native::NativeStageSession),
}

impl StageSession {
    fn new(kind: StageKind) -> Self {
        let mut session = Self {
            kind,
            io: io::IoDriver::new(),
        };
        session.start_io();
        session
    }

    fn start_io(&mut self) {
        let commands = match &mut self.kind {
            StageKind::Wasm(s) => s.take_io(),
            StageKind::Native(s) => s.take_io(),
        };
        self.io.execute_all(commands);
    }

    /// Feeds one input and returns the outputs it caused, in order; the host I/O it asked for
    /// (before an error too) starts at once.
    ///
    /// # Errors
    /// The input is not one this stage takes, or the plugin returned an error or trapped;
    /// after a trap the session must be dropped.
    pub async fn handle(&mut self, input: StageInput) -> Result<Vec<StageOutput>, SessionError> {
        let result = match &mut self.kind {
            StageKind::Wasm(s) => s.handle(input).await,
            StageKind::Native(s) => s.handle(input).await,
        };
        self.start_io();
        result
    }

    /// The next completion of the session's host I/O, to feed back as [`StageInput::Io`].
    /// Pending while none is in flight. Cancel-safe.
    pub async fn next_io_event(&mut self) -> io::IoEvent {
        self.io.next_in_flight().await
    }

    /// True when a call into the session holds its thread until it returns (a native library:
    /// it cannot yield to the async runtime), so it must run off the runtime's workers; false
    /// when it yields (a WASM component, metered by epochs).
    pub fn blocks_thread(&self) -> bool {
        matches!(self.kind, StageKind::Native(_))
    }
}

/// Every plugin named in the config, loaded, each with its circuit breaker.
#[derive(Clone, Default)]
pub struct Plugins {
    by_name: BTreeMap<String, (Arc<Plugin>, Arc<breaker::CircuitBreaker>)>,
}

impl Plugins {
    /// Loads (compiles and links) every plugin in `config`, once.
    ///
    /// # Errors
    /// The first plugin that fails to load; the error names it and its file.
    pub async fn load(engine: &wasm::WasmEngine, config: &Config) -> Result<Self, PluginLoadError> {
        let mut by_name = BTreeMap::new();
        for (name, plugin) in &config.plugins {
            let started = std::time::Instant::now();
            let loaded = match plugin.kind {
                PluginKind::Wasm => {
                    let mut p = engine.load(name, &plugin.path).await?;
                    if let Some(budget) = plugin.budget {
                        p.set_handle_budget(budget);
                    }
                    p.set_cpu_limits(plugin.cpu);
                    Plugin::Wasm(p)
                }
                PluginKind::Native => {
                    let mut p = native::NativeLoader::global()
                        .load(name, &plugin.path)
                        .await?;
                    if let Some(budget) = plugin.budget {
                        p.set_handle_budget(budget);
                    }
                    p.set_cpu_limits(plugin.cpu);
                    Plugin::Native(p)
                }
            };
            // Compiling (or loading from the compiled-code cache), linking and `describe`.
            let load_ms = started.elapsed().as_millis();
            let cached = matches!(&loaded, Plugin::Wasm(p) if p.from_cache());
            tracing::info!(plugin = %name, load_ms, cached, info = ?loaded.info(), "plugin loaded");
            by_name.insert(
                name.to_string(),
                (
                    Arc::new(loaded),
                    Arc::new(breaker::CircuitBreaker::default()),
                ),
            );
        }
        // Each agent's plugins must implement the role the agent gives them.
        for agent in &config.agents {
            for (role, used) in agent.plugin_uses() {
                let want = match role {
                    "stt" => Stage::Stt,
                    "llm" => Stage::Llm,
                    "tts" => Stage::Tts,
                    _ => Stage::Realtime,
                };
                if let Some((plugin, _)) = by_name.get(&used.plugin)
                    && plugin.stage() != want
                {
                    return Err(PluginLoadError {
                        name: used.plugin.clone(),
                        path: config
                            .plugins
                            .get(&used.plugin)
                            .map(|p| p.path.clone())
                            .unwrap_or_default(),
                        problem: Box::new(LoadProblem::WrongStage {
                            found: plugin.stage().describe(),
                            agent: agent.name.clone(),
                            role,
                        }),
                    });
                }
            }
        }
        let plugins = Self { by_name };
        plugins.warm_up(config).await;
        Ok(plugins)
    }

    /// Opens (and closes) one session of each native pipeline stage with each agent's settings,
    /// so a local model loads when the gateway starts instead of during the first call (Whisper
    /// and Piper take 0.2–0.8 s). A failure is only logged: the agent's calls will fail the same
    /// way, each with its apology, and the error says why.
    async fn warm_up(&self, config: &Config) {
        for agent in &config.agents {
            let Some(pipeline) = agent.pipeline() else {
                continue;
            };
            for used in [&pipeline.stt, &pipeline.llm, &pipeline.tts] {
                let Some(plugin) = self.get(&used.plugin) else {
                    continue;
                };
                if !matches!(plugin.as_ref(), Plugin::Native(_)) {
                    continue;
                }
                let session_config = SessionConfig {
                    call: CallInfo {
                        agent: agent.name.clone(),
                        ..CallInfo::default()
                    },
                    settings: used.settings_json.clone(),
                    greeting: None,
                    io: Arc::new(io::IoPolicy {
                        allowed_hosts: used.allowed_hosts.clone(),
                        secrets: used.secrets.clone(),
                        allow_private_destinations: config.server.allow_private_destinations,
                    }),
                };
                let started = std::time::Instant::now();
                match plugin.open_stage(&session_config).await {
                    Ok(_) => tracing::info!(
                        plugin = %used.plugin,
                        agent = %agent.name,
                        ms = started.elapsed().as_millis() as u64,
                        "plugin warmed up"
                    ),
                    Err(e) => tracing::warn!(
                        plugin = %used.plugin,
                        agent = %agent.name,
                        error = %e,
                        "plugin refused a session at start; this agent's calls will fail"
                    ),
                }
            }
        }
    }

    /// The plugin called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Plugin>> {
        self.by_name.get(name).map(|(p, _)| p)
    }

    /// Every plugin with its breaker, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Plugin, &breaker::CircuitBreaker)> {
        self.by_name
            .iter()
            .map(|(name, (p, b))| (name.as_str(), p.as_ref(), b.as_ref()))
    }

    /// The circuit breaker of the plugin called `name`.
    pub fn breaker(&self, name: &str) -> Option<&Arc<breaker::CircuitBreaker>> {
        self.by_name.get(name).map(|(_, b)| b)
    }
}
