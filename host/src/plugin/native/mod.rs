//! Native plugins: shared libraries (`.so`, `.dylib`) loaded with libloading and called through
//! the C ABI defined in `switchboard_plugin_api::abi` (version [`abi::ABI_VERSION`]).
//!
//! A library is loaded once per process and never unloaded ([`NativeLoader`] keeps it by its
//! canonical path; a second plugin entry or a config reload gets the same library). Its table is
//! checked before use: ABI version first, then table size, then contract version.
//!
//! **Native plugins are trusted.** They run in the gateway's address space with no memory cap:
//! one that corrupts memory or aborts takes the gateway down. What the host does guard against:
//! - a panic is caught inside the plugin (every ABI entry point catches it) and ends that call;
//! - a `handle` that runs past [`HANDLE_BUDGET`] is reported by a wall-clock watchdog thread the
//!   moment the budget passes, and its call is ended when `handle` returns. The host cannot stop
//!   a native call: one that never returns keeps the tokio worker thread it runs on (the gateway
//!   goes on with the other workers, at reduced capacity) and is reported once.
//!
//! - a panic in the host's own callbacks (`log`, `io`, `now-ms`, `free`) is caught at the
//!   `extern "C"` boundary (unwinding into the plugin would abort the process) and ends only the
//!   call whose plugin called it;
//! - a session's run time is charged to its CPU share ([`super::budget`]) like a WASM session's.
//!
//! Where native calls run: `open` always runs off the async workers (`block_in_place`; it may
//! load a model). `handle` of a realtime plugin runs inline on the call's task when the
//! plugin's `budget_ms` is at most [`INLINE_BUDGET`] — the operator vouches that it never blocks
//! longer than a frame, and a hop to another thread costs more than a fast call (measured by
//! `cargo bench -p switchboard-tests --bench plugins`) — and off the workers otherwise, which is
//! the default (200 ms): a native call that blocks then holds a thread of its own, never a worker
//! other calls' frames need. On a single-threaded runtime (`serve --shards`) realtime natives run
//! inline. Pipeline stages always run off the workers (`call::stages`).
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use switchboard_plugin_api::abi::{
    self, Buffer, HostApi, HostCall, HostReply, PluginApi, Str, status,
};
use switchboard_plugin_api::types as sdk;

use super::budget::{CpuBucket, CpuLimits, escape_log};
use super::io::{HttpRequest, IoCommand, IoError, IoEvent, Payload, SessionIo};

use super::{
    AudioEncoding, AudioFormat, LoadProblem, PluginError, PluginInfo, PluginLoadError, Role,
    SessionConfig, SessionError, SessionInput, SessionOutput, Stage, StageInput, StageOutput,
    check_input_format, wasm,
};

mod callbacks;
mod convert;

use super::wasm::Contract;
use callbacks::*;
use convert::*;

/// Wall-clock budget of one native `handle`: the same 200 ms as a WASM plugin's
/// ([`wasm::HANDLE_BUDGET`]), for the same reason (ten frames).
pub const HANDLE_BUDGET: Duration = wasm::HANDLE_BUDGET;

/// Wall-clock budget of `describe` and `open` (1 s, as for WASM).
pub const OPEN_BUDGET: Duration = wasm::OPEN_BUDGET;

/// Largest `budget_ms` at which a realtime plugin's `handle` runs inline on its call's task (one
/// frame); with a larger budget it runs off the async workers. See the module docs.
pub const INLINE_BUDGET: Duration = Duration::from_millis(20);

/// Loads native libraries, once each per process.
#[derive(Debug, Default)]
pub struct NativeLoader {
    libraries: Mutex<BTreeMap<PathBuf, Table>>,
}

/// A library's checked table. The library it lives in is never unloaded.
#[derive(Clone, Copy, Debug)]
struct Table(&'static PluginApi);

impl NativeLoader {
    /// The process's loader: libraries stay loaded for the life of the process, so there is one.
    pub fn global() -> &'static NativeLoader {
        static LOADER: std::sync::OnceLock<NativeLoader> = std::sync::OnceLock::new();
        LOADER.get_or_init(NativeLoader::default)
    }

    /// Loads the library at `path` (or reuses it), checks its versions and asks it to describe
    /// itself.
    ///
    /// # Errors
    /// [`PluginLoadError`], whose [`LoadProblem`] says which: the file cannot be read or
    /// loaded, lacks the entry symbol, was built for another ABI or contract version (the error
    /// names both), panics or overruns in `describe`, or asks for an input format the host
    /// cannot produce.
    pub async fn load(&self, name: &str, path: &Path) -> Result<NativePlugin, PluginLoadError> {
        let invalid = |problem: LoadProblem| PluginLoadError::new(name, path, problem);
        let canonical = path
            .canonicalize()
            .map_err(|e| invalid(LoadProblem::Unreadable(e.to_string())))?;
        let table = {
            let mut libraries = self
                .libraries
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match libraries.get(&canonical) {
                Some(t) => *t,
                None => {
                    let t = open_library(&canonical).map_err(&invalid)?;
                    libraries.insert(canonical, t);
                    t
                }
            }
        };
        let api = table.0;
        let watch = Watch::new(name, OPEN_BUDGET);
        let (code, bytes, _) = watch
            .run(|| {
                // SAFETY: `describe` takes a writable buffer; the table was checked.
                call(api, |out| unsafe { (api.describe)(out) })
            })
            .map_err(|e| invalid(LoadProblem::Describe(e.to_string())))?;
        if code != status::OK {
            return Err(invalid(LoadProblem::Describe(failure(code, &bytes))));
        }
        let info: sdk::PluginInfo = abi::decode(&bytes)
            .map_err(|e| invalid(LoadProblem::Describe(format!("undecodable: {e}"))))?;
        let input_format = format_from_sdk(info.input_format);
        check_input_format(input_format).map_err(|e| invalid(LoadProblem::InputFormat(e)))?;
        // SAFETY: the table's strings point into the library, which is never unloaded.
        let build_info = unsafe { api.build_info.to_string_lossy() }.into_owned();
        // SAFETY: as above; `open_library` checked it names a contract this host loads.
        let contract = unsafe { api.contract_version.to_string_lossy() };
        Ok(NativePlugin {
            contract: Contract::of(&contract).unwrap_or(Contract::V0_2),
            name: name.to_string(),
            stage: stage_of(api.stage).unwrap_or(Stage::Realtime),
            handle_budget: HANDLE_BUDGET,
            cpu: CpuLimits::default(),
            api,
            build_info,
            info: PluginInfo {
                name: info.name,
                version: info.version,
                description: info.description,
                input_format,
            },
        })
    }
}

/// Opens `path`, finds the entry symbol, and checks the table it returns.
fn open_library(path: &Path) -> Result<Table, LoadProblem> {
    // SAFETY: loading a library runs its initialisers. Native plugins are trusted code, chosen
    // by the operator in agents.toml; the docs say so.
    let library = unsafe { libloading::Library::new(path) }
        .map_err(|e| LoadProblem::NativeLibrary(format!("cannot load the native library: {e}")))?;
    // SAFETY: the symbol's type is the ABI's entry type; a library that exports this name with
    // another type is not a Switchboard plugin and breaks the trust the operator gave it.
    let entry =
        unsafe { library.get::<abi::EntryFn>(abi::ENTRY_SYMBOL.as_bytes()) }.map_err(|e| {
            LoadProblem::NativeLibrary(format!(
                "does not export `{}` ({e}); build it with switchboard_plugin_api::export_plugin!",
                abi::ENTRY_SYMBOL
            ))
        })?;
    // SAFETY: the entry point takes a pointer to a table that lives forever.
    let ptr = unsafe { entry(&HOST_API) };
    // Never unload: the table, the strings in it and any thread the plugin started live in it.
    std::mem::forget(library);
    if ptr.is_null() {
        return Err(LoadProblem::NativeLibrary(
            "the entry point returned no table".into(),
        ));
    }
    // SAFETY: non-null; every version of the table starts with `abi_version: u32, size: u32`,
    // and nothing else is read until both are checked.
    let (version, size) = unsafe {
        let head = ptr.cast::<u32>();
        (head.read(), head.add(1).read())
    };
    if version != abi::ABI_VERSION {
        return Err(LoadProblem::NativeAbi {
            found: version,
            supported: abi::ABI_VERSION,
            contract: super::wasm::CONTRACT_VERSION,
        });
    }
    if (size as usize) < size_of::<PluginApi>() {
        return Err(LoadProblem::NativeLibrary(format!(
            "its native ABI table is {size} bytes, smaller than version {}'s {} bytes",
            abi::ABI_VERSION,
            size_of::<PluginApi>()
        )));
    }
    // SAFETY: version and size checked: this is a version-1 table, alive forever.
    let api: &'static PluginApi = unsafe { &*ptr };
    // SAFETY: the string points into the library, which is never unloaded.
    let contract = unsafe { api.contract_version.to_string_lossy() };
    if super::wasm::Contract::of(&contract).is_none() {
        return Err(LoadProblem::ContractVersion {
            package: super::wasm::CONTRACT_PACKAGE,
            found: contract.into_owned(),
            supported: super::wasm::SUPPORTED_CONTRACTS,
            item: None,
        });
    }
    if stage_of(api.stage).is_none() {
        return Err(LoadProblem::NativeLibrary(format!(
            "declares stage {}, which this host does not know (0 realtime, 1 stt, 2 llm, 3 tts)",
            api.stage
        )));
    }
    Ok(Table(api))
}

/// The stage a native table's `stage` field names.
fn stage_of(stage: u32) -> Option<Stage> {
    match stage {
        abi::STAGE_REALTIME => Some(Stage::Realtime),
        abi::STAGE_STT => Some(Stage::Stt),
        abi::STAGE_LLM => Some(Stage::Llm),
        abi::STAGE_TTS => Some(Stage::Tts),
        _ => None,
    }
}

/// Calls one ABI function with a fresh output buffer; returns its status and a copy of the
/// bytes, after giving the buffer back to the plugin.
fn call(api: &'static PluginApi, f: impl FnOnce(*mut Buffer) -> i32) -> (i32, Vec<u8>) {
    let mut out = Buffer::empty();
    let code = f(&mut out);
    // SAFETY: the plugin filled `out` (or left it empty) and has not freed it.
    let bytes = unsafe { out.as_slice() }.to_vec();
    // SAFETY: `out` came from this plugin and is freed once.
    unsafe { (api.free)(out) };
    (code, bytes)
}

/// The wall-clock watch over one session's (or one load's) native calls, one call at a time.
/// The hot path is two atomic stores and a clock read per call; the watchdog thread scans every
/// live watch each [`wasm::EPOCH_TICK`] and reports a call the moment it passes its budget.
struct Watch {
    plugin: String,
    budget: Duration,
    /// When the call in flight started, in ms since the watchdog's epoch, plus one; 0 when idle.
    started: AtomicU64,
    /// The call in flight has been reported as overdue.
    reported: AtomicBool,
}

/// The watchdog thread's list of live watches.
struct Watchdog {
    epoch: Instant,
    watches: Mutex<Vec<Weak<Watch>>>,
}

impl Watchdog {
    /// The process's watchdog, started on first use.
    fn get() -> &'static Watchdog {
        static WATCHDOG: OnceLock<Watchdog> = OnceLock::new();
        WATCHDOG.get_or_init(|| {
            let spawned = std::thread::Builder::new()
                .name("native-watchdog".into())
                .spawn(|| {
                    loop {
                        std::thread::sleep(wasm::EPOCH_TICK);
                        Watchdog::get().scan();
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the native watchdog; overruns are only seen when a call returns");
            }
            Watchdog {
                epoch: Instant::now(),
                watches: Mutex::new(Vec::new()),
            }
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn scan(&self) {
        let now = self.now_ms();
        let mut watches = self
            .watches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        watches.retain(|w| {
            let Some(watch) = w.upgrade() else {
                return false;
            };
            let started = watch.started.load(Ordering::Acquire);
            let running_ms = now.saturating_sub(started.saturating_sub(1));
            if started != 0
                && running_ms > watch.budget.as_millis() as u64
                && !watch.reported.swap(true, Ordering::AcqRel)
            {
                tracing::error!(
                    plugin = %watch.plugin,
                    running_ms,
                    budget_ms = watch.budget.as_millis() as u64,
                    "native plugin call overran its budget; its call ends when it returns (a native \
                     call cannot be stopped)"
                );
            }
            true
        });
    }
}

impl Watch {
    fn new(plugin: &str, budget: Duration) -> Arc<Self> {
        let watch = Arc::new(Self {
            plugin: plugin.to_string(),
            budget,
            started: AtomicU64::new(0),
            reported: AtomicBool::new(false),
        });
        Watchdog::get()
            .watches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(Arc::downgrade(&watch));
        watch
    }

    /// Runs one plugin call (returning its status and bytes) under the watch.
    ///
    /// A failure status wins over an overrun: a panic message says more than "slow", and the
    /// process's panic hook (printing a backtrace under `RUST_BACKTRACE=1`) can itself take
    /// longer than the budget.
    ///
    /// Returns the status, the bytes and how long the call took.
    ///
    /// # Errors
    /// The call succeeded, but only after the budget had passed.
    fn run(
        &self,
        f: impl FnOnce() -> (i32, Vec<u8>),
    ) -> Result<(i32, Vec<u8>, Duration), SessionError> {
        let watchdog = Watchdog::get();
        self.reported.store(false, Ordering::Release);
        self.started.store(watchdog.now_ms() + 1, Ordering::Release);
        let started = Instant::now();
        let (code, bytes) = f();
        let took = started.elapsed();
        self.started.store(0, Ordering::Release);
        if took > self.budget && code == status::OK {
            return Err(SessionError::TimeBudget {
                budget_ms: self.budget.as_millis() as u64,
            });
        }
        Ok((code, bytes, took))
    }
}

/// Describes a failed call from its status and bytes.
fn failure(code: i32, bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    match code {
        status::PANIC => format!("panicked: {text}"),
        status::BAD_INPUT => format!("could not decode the host's input: {text}"),
        status::PLUGIN_ERROR => match abi::decode::<sdk::PluginError>(bytes) {
            Ok(e) => plugin_error(e).to_string(),
            Err(e) => format!("returned an error the host cannot decode: {e}"),
        },
        other => format!("returned unknown status {other}"),
    }
}

/// The error a failed call's status and bytes stand for.
fn failure_error(code: i32, bytes: &[u8]) -> SessionError {
    match code {
        status::PANIC => SessionError::Panic(escape_log(&String::from_utf8_lossy(bytes))),
        status::PLUGIN_ERROR => decode_plugin_error(bytes),
        _ => SessionError::Contract(failure(code, bytes)),
    }
}

/// A loaded native plugin.
pub struct NativePlugin {
    name: String,
    stage: Stage,
    /// The contract version its types come from.
    contract: Contract,
    /// Wall-clock budget of one `handle`; [`HANDLE_BUDGET`] unless the config raised it.
    handle_budget: Duration,
    /// Each session's CPU share over its call.
    cpu: CpuLimits,
    api: &'static PluginApi,
    build_info: String,
    info: PluginInfo,
}

impl NativePlugin {
    /// What the plugin said about itself.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// The build line the library carries (crate name and version).
    pub fn build_info(&self) -> &str {
        &self.build_info
    }

    /// Opens a session for one call, within [`OPEN_BUDGET`].
    ///
    /// # Errors
    /// The plugin refused the config ([`SessionError::Plugin`]), panicked or overran.
    pub async fn open(&self, config: &SessionConfig) -> Result<NativeSession, SessionError> {
        if self.stage != Stage::Realtime {
            return Err(SessionError::Contract(format!(
                "is a {} plugin, not a realtime plugin",
                self.stage.describe()
            )));
        }
        off_workers(|| self.open_any(config))
    }

    /// Opens a pipeline-stage session for one call, within [`OPEN_BUDGET`].
    ///
    /// # Errors
    /// The plugin is a realtime plugin, refused the config, panicked or overran.
    pub async fn open_stage(
        &self,
        config: &SessionConfig,
    ) -> Result<NativeStageSession, SessionError> {
        if self.stage == Stage::Realtime {
            return Err(SessionError::Contract(
                "is a realtime plugin, not a pipeline stage".into(),
            ));
        }
        Ok(NativeStageSession {
            session: off_workers(|| self.open_any(config))?,
            stage: self.stage,
        })
    }

    /// The contract the library implements.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// Sets the wall-clock budget of each `handle` (and of `open`, when larger than
    /// [`OPEN_BUDGET`]): compute-heavy plugins such as a local speech recognizer need more than
    /// [`HANDLE_BUDGET`]. From `budget_ms` in the plugin's `[plugins.NAME]` table.
    pub fn set_handle_budget(&mut self, budget: Duration) {
        self.handle_budget = budget;
    }

    /// Sets each session's CPU share. From `cpu_percent` and `cpu_burst_ms`.
    pub fn set_cpu_limits(&mut self, cpu: CpuLimits) {
        self.cpu = cpu;
    }

    fn open_any(&self, config: &SessionConfig) -> Result<NativeSession, SessionError> {
        let api = self.api;
        let bytes = abi::encode(&config_to_sdk(config, self.info.input_format));
        let watch = Watch::new(&self.name, OPEN_BUDGET.max(self.handle_budget));
        let mut session = RawSession {
            api,
            ptr: std::ptr::null_mut(),
        };
        let mut io = SessionIo::new(&self.name, config.io.clone());
        let (result, host_panic) = with_io(&mut io, || {
            watch.run(|| {
                // SAFETY: `bytes` is readable, the session pointer and the buffer are writable.
                call(api, |out| unsafe {
                    (api.open)(bytes.as_ptr(), bytes.len(), &mut session.ptr, out)
                })
            })
        });
        if let Some(message) = host_panic {
            return Err(host_panicked(&message));
        }
        let (code, out, took) = result?;
        let mut bucket = CpuBucket::new(self.cpu, Instant::now());
        bucket.charge(took, Instant::now())?;
        let ptr = session;
        match code {
            status::OK if !ptr.ptr.is_null() => Ok(NativeSession {
                raw: Some(ptr),
                contract: self.contract,
                input_format: self.info.input_format,
                watch: Watch::new(&self.name, self.handle_budget),
                io: Box::new(io),
                bucket,
                inline: self.handle_budget <= INLINE_BUDGET,
            }),
            status::OK => Err(SessionError::Contract("open returned no session".into())),
            status::PLUGIN_ERROR => Err(decode_plugin_error(&out)),
            other => Err(failure_error(other, &out)),
        }
    }
}

/// A session pointer and the table that can use it. Closed on drop.
struct RawSession {
    api: &'static PluginApi,
    ptr: *mut c_void,
}

// SAFETY: the ABI requires sessions to be usable from any thread, one thread at a time
// (`Realtime: Send` in the SDK); the host owns a session in exactly one place (its call's task).
unsafe impl Send for RawSession {}

impl Drop for RawSession {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: opened by this table, closed once; `close` catches panics.
            unsafe { (self.api.close)(self.ptr) };
        }
    }
}

/// One call's session inside a native plugin.
pub struct NativeSession {
    /// `None` once the session failed: after a panic or an overrun it must not be entered again.
    raw: Option<RawSession>,
    /// The contract version of the plugin's types (a 0.1.0 plugin never gets tool inputs).
    contract: Contract,
    input_format: AudioFormat,
    watch: Arc<Watch>,
    /// Boxed: a native session sits beside a WASM one in [`super::Session`].
    io: Box<SessionIo>,
    /// The session's CPU share.
    bucket: CpuBucket,
    /// A realtime `handle` runs inline on the call's task (`budget_ms` ≤ [`INLINE_BUDGET`]).
    inline: bool,
}

impl NativeSession {
    /// Feeds one input, within [`HANDLE_BUDGET`].
    ///
    /// # Errors
    /// The plugin returned an error, panicked, overran its budget (the watchdog) or returned more
    /// than [`wasm::MAX_OUTPUTS_PER_HANDLE`] outputs; after anything but a plugin error the
    /// session is closed and every later call fails.
    pub async fn handle(
        &mut self,
        input: SessionInput,
    ) -> Result<Vec<SessionOutput>, SessionError> {
        if let SessionInput::Io(event) = &input {
            self.io.observe(event);
        }
        let old = self.contract == Contract::V0_1;
        if old && matches!(input, SessionInput::Tools(_) | SessionInput::ToolResult(_)) {
            // 0.1.0 has no tool calls.
            return Ok(Vec::new());
        }
        let input = input_to_sdk(input, self.input_format);
        let outputs: Vec<sdk::SessionOutput> = if self.inline {
            self.call_handle(&input)?
        } else {
            off_workers(|| self.call_handle(&input))?
        };
        Ok(outputs.into_iter().map(output_from_sdk).collect())
    }

    /// Marks the session unusable: it is closed without another call.
    pub fn abandon(&mut self) {
        self.raw = None;
    }

    /// Charges host work done for the plugin (converting its audio) to its CPU share.
    ///
    /// # Errors
    /// [`SessionError::Cpu`] when the share ran out; the session is closed.
    pub fn charge(&mut self, used: Duration) -> Result<(), SessionError> {
        let result = self
            .bucket
            .charge(used, Instant::now())
            .map_err(SessionError::from);
        if result.is_err() {
            self.raw = None;
        }
        result
    }

    /// Encodes `input`, calls the plugin's `handle` under the watch, decodes its outputs.
    fn call_handle<I: serde::Serialize, O: serde::de::DeserializeOwned>(
        &mut self,
        input: &I,
    ) -> Result<Vec<O>, SessionError> {
        let raw = self
            .raw
            .take()
            .ok_or_else(|| SessionError::Contract("session already failed".into()))?;
        let bytes = abi::encode(input);
        let api = raw.api;
        let watch = &self.watch;
        // On an overrun, a host panic or an empty CPU share the session is dropped (closed)
        // here and the call ends.
        let (result, host_panic) = with_io(&mut self.io, || {
            watch.run(|| {
                // SAFETY: `raw.ptr` is a live session of this table, used by this task alone.
                call(api, |out| unsafe {
                    (api.handle)(raw.ptr, bytes.as_ptr(), bytes.len(), out)
                })
            })
        });
        if let Some(message) = host_panic {
            return Err(host_panicked(&message));
        }
        let (code, out, took) = result?;
        self.bucket.charge(took, Instant::now())?;
        match code {
            status::OK => {
                let outputs: Vec<O> = abi::decode(&out)
                    .map_err(|e| SessionError::Contract(format!("outputs: {e}")))?;
                if outputs.len() > wasm::MAX_OUTPUTS_PER_HANDLE {
                    return Err(SessionError::Output(format!(
                        "returned {} outputs from one input (limit {})",
                        outputs.len(),
                        wasm::MAX_OUTPUTS_PER_HANDLE
                    )));
                }
                self.raw = Some(raw);
                Ok(outputs)
            }
            status::PLUGIN_ERROR => {
                self.raw = Some(raw);
                Err(decode_plugin_error(&out))
            }
            other => Err(failure_error(other, &out)),
        }
    }
}

/// One call's session of a native pipeline-stage plugin.
pub struct NativeStageSession {
    session: NativeSession,
    stage: Stage,
}

impl NativeStageSession {
    /// Feeds one input, within [`HANDLE_BUDGET`].
    ///
    /// # Errors
    /// As [`NativeSession::handle`], and an input this stage does not take.
    pub async fn handle(&mut self, input: StageInput) -> Result<Vec<StageOutput>, SessionError> {
        if let StageInput::Io(event) = &input {
            self.session.io.observe(event);
        }
        let wrong = |input: &StageInput| {
            Err(SessionError::Contract(format!(
                "this stage does not take {input:?}"
            )))
        };
        let format = self.session.input_format;
        match self.stage {
            Stage::Realtime => wrong(&input),
            Stage::Stt => {
                let input = match input {
                    StageInput::Audio { data, timestamp_ms } => {
                        sdk::SttInput::Audio(sdk::AudioFrame {
                            format: format_to_sdk(format),
                            data,
                            timestamp_ms,
                        })
                    }
                    StageInput::EndOfTurn => sdk::SttInput::EndOfTurn,
                    StageInput::Io(e) => sdk::SttInput::Io(event_to_sdk(e)),
                    StageInput::Hangup => sdk::SttInput::Hangup,
                    other => return wrong(&other),
                };
                let outputs: Vec<sdk::SttOutput> = self.session.call_handle(&input)?;
                Ok(outputs
                    .into_iter()
                    .map(|o| match o {
                        sdk::SttOutput::SpeechStarted => StageOutput::SpeechStarted,
                        sdk::SttOutput::Transcript(t) => StageOutput::Transcript {
                            text: t.text,
                            is_final: t.is_final,
                        },
                        sdk::SttOutput::EndOfTurn => StageOutput::EndOfTurn,
                    })
                    .collect())
            }
            Stage::Llm => {
                let input = match input {
                    StageInput::Reply(history) => sdk::LlmInput::Reply(
                        history
                            .into_iter()
                            .map(|m| sdk::Message {
                                role: role_to_sdk(m.role),
                                content: m.content,
                                tool_calls: m
                                    .tool_calls
                                    .into_iter()
                                    .map(tool_call_to_sdk)
                                    .collect(),
                                tool_call_id: m.tool_call_id,
                            })
                            .collect(),
                    ),
                    StageInput::Cancel => sdk::LlmInput::Cancel,
                    StageInput::Io(e) => sdk::LlmInput::Io(event_to_sdk(e)),
                    StageInput::Hangup => sdk::LlmInput::Hangup,
                    StageInput::Tools(tools) => {
                        sdk::LlmInput::Tools(tools.into_iter().map(tool_to_sdk).collect())
                    }
                    other => return wrong(&other),
                };
                let outputs: Vec<sdk::LlmOutput> = if self.session.contract == Contract::V0_1 {
                    // 0.1.0's messages have no tool fields, and it takes no tools.
                    match v0_1::llm_input(input) {
                        Some(input) => self.session.call_handle(&input)?,
                        None => return Ok(Vec::new()),
                    }
                } else {
                    self.session.call_handle(&input)?
                };
                Ok(outputs
                    .into_iter()
                    .map(|o| match o {
                        sdk::LlmOutput::TextDelta(t) => StageOutput::TextDelta(t),
                        sdk::LlmOutput::Done => StageOutput::Done,
                        sdk::LlmOutput::ToolCall(call) => {
                            StageOutput::ToolCall(tool_call_from_sdk(call))
                        }
                    })
                    .collect())
            }
            Stage::Tts => {
                let input = match input {
                    StageInput::Text(t) => sdk::TtsInput::Text(t),
                    StageInput::Flush => sdk::TtsInput::Flush,
                    StageInput::Cancel => sdk::TtsInput::Cancel,
                    StageInput::Io(e) => sdk::TtsInput::Io(event_to_sdk(e)),
                    StageInput::Hangup => sdk::TtsInput::Hangup,
                    other => return wrong(&other),
                };
                let outputs: Vec<sdk::TtsOutput> = self.session.call_handle(&input)?;
                Ok(outputs
                    .into_iter()
                    .map(|o| match o {
                        sdk::TtsOutput::Audio(frame) => StageOutput::Audio {
                            format: format_from_sdk(frame.format),
                            data: frame.data,
                        },
                        sdk::TtsOutput::UtteranceDone => StageOutput::UtteranceDone,
                    })
                    .collect())
            }
        }
    }

    /// Takes the host I/O the plugin queued during its last call.
    pub fn take_io(&mut self) -> Vec<IoCommand> {
        self.session.take_io()
    }
}

impl NativeSession {
    /// Takes the host I/O the plugin queued during its last call.
    pub fn take_io(&mut self) -> Vec<IoCommand> {
        self.io.take_commands()
    }
}

/// The error that ends a session whose plugin called a host function that panicked.
fn host_panicked(message: &str) -> SessionError {
    tracing::error!(panic = %escape_log(message), "a host function panicked during a native plugin's call; ending its call");
    SessionError::HostPanic(escape_log(message))
}

/// Runs `f` off the async workers when it can (`block_in_place` on a multi-threaded runtime, so
/// the worker's other tasks move to another thread while `f` blocks this one); inline on a
/// single-threaded runtime or outside one.
fn off_workers<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tracing subscriber that panics on every event: host code that panics while a plugin's
    /// call is on the stack.
    struct Exploding;

    impl tracing::Subscriber for Exploding {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, _: &tracing::Event<'_>) {
            panic!("the log exploded");
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    /// A panic inside the host's `log` callback, called as a plugin calls it (through the
    /// `extern "C"` table), does not unwind into the plugin (which would abort the process):
    /// the callback returns, and the plugin call's wrapper reports the panic so that the
    /// session — and only it — ends.
    #[test]
    fn a_panic_in_a_host_callback_is_caught_and_reported_to_its_call() {
        let mut io = SessionIo::new("p", Arc::new(super::super::io::IoPolicy::default()));
        let message = "hello";
        let ((), panic) = tracing::subscriber::with_default(Exploding, || {
            with_io(&mut io, || {
                // SAFETY: `message` is readable for the call, as the ABI requires.
                unsafe { (HOST_API.log)(2, Str::new(message)) }
            })
        });
        assert_eq!(panic.as_deref(), Some("the log exploded"));
        let error = host_panicked(&panic.unwrap_or_default());
        assert!(
            error.to_string().contains("a host function panicked"),
            "{error}"
        );
        // The next call on this thread starts clean.
        let ((), panic) = with_io(&mut io, || ());
        assert_eq!(panic, None);
        // `io` answers with a status instead of an unwind: asking for a secret the agent does
        // not grant logs a warning, which explodes.
        let bytes = abi::encode(&HostCall::Secret("missing".into()));
        let mut out = Buffer::empty();
        let (code, panic) = tracing::subscriber::with_default(Exploding, || {
            with_io(&mut io, || {
                // SAFETY: `bytes` is readable and `out` writable for the call.
                unsafe { (HOST_API.io)(bytes.as_ptr(), bytes.len(), &mut out) }
            })
        });
        assert_eq!(
            (code, panic.as_deref()),
            (status::PANIC, Some("the log exploded"))
        );
        // SAFETY: `out` was filled by `host_io` and is freed once.
        unsafe { (HOST_API.free)(out) };
    }
}
