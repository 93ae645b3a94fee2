//! WASM component plugins, run by wasmtime.
//!
//! One [`WasmEngine`] per process; each plugin is compiled and linked once into an
//! `InstancePre` ([`WasmEngine::load`]); each call gets its own `Store`, instance and session
//! ([`WasmPlugin::open`]), so calls share nothing and a plugin that misbehaves harms only the call
//! it runs in. Guests get an empty WASI context (Rust's `wasm32-wasip2` target imports
//! `wasi:cli` and `wasi:io` even when unused): no files, no sockets, no environment; what a guest
//! writes to stdout or stderr (a Rust panic message, say) is kept, up to [`MAX_STDIO_BYTES`], and
//! logged when the plugin traps.
//!
//! Guest calls are async (`call_async` on a fiber): wasmtime-wasi's synchronous bindings would
//! block on the tokio runtime from inside it. A guest is **sliced**: the engine's epoch advances
//! every [`EPOCH_TICK`], and at each tick the store's epoch callback measures the call
//! ([`budget`](super::budget)): a guest that has run for [`MIN_SLICE`] or more since it last
//! resumed yields to the runtime (`tokio::task::yield_now`, so the I/O driver is polled, then once
//! more to the back of the run queue, behind the calls the driver woke), so no guest holds an
//! async worker for much more than one tick; a
//! call whose run time passes its budget, or whose session's CPU share runs out, is interrupted.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker, ResourceAny, ResourceTable};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::budget::{CpuBucket, CpuLimits, SliceClock, escape_log};
use super::io::{HttpRequest, IoCommand, IoError, IoEvent, IoPolicy, Payload, SessionIo};
use super::{
    AudioEncoding, AudioFormat, LoadProblem, PluginError, PluginInfo, PluginLoadError, Role,
    SessionConfig, SessionError, SessionInput, SessionOutput, Stage, StageInput, StageOutput,
};

mod host;
mod meter;
mod session;
mod stage;
mod v0_1;

use host::*;
use meter::{Limiter, Meter};
pub use session::WasmSession;
pub use stage::WasmStageSession;

mod bindings {
    wasmtime::component::bindgen!({
        world: "realtime-plugin",
        path: "../plugin-api/wit",
        // Guest calls are futures so that WASI's stream functions (a guest's panic message on
        // stderr, say) run on our runtime instead of blocking inside it.
        exports: { default: async },
    });
}

/// Bindings of the pipeline stage worlds, sharing the `types` and `host` bindings above (so one
/// `HostState` implements the host for every world).
mod stage_bindings {
    macro_rules! stage_world {
        ($module:ident, $world:literal $(, $iface:literal => $path:path)*) => {
            pub mod $module {
                wasmtime::component::bindgen!({
                    world: $world,
                    path: "../plugin-api/wit",
                    exports: { default: async },
                    with: {
                        "switchboard:plugin/types": super::super::bindings::switchboard::plugin::types,
                        "switchboard:plugin/host": super::super::bindings::switchboard::plugin::host,
                        $($iface: $path,)*
                    },
                });
            }
        };
    }
    stage_world!(stt, "stt-plugin");
    stage_world!(
        llm,
        "llm-plugin",
        "switchboard:plugin/tools" => super::super::bindings::switchboard::plugin::tools
    );
    stage_world!(tts, "tts-plugin");
}

use bindings::exports::switchboard::plugin::realtime as wit_rt;
use bindings::switchboard::plugin::tools as wit_tools;
use bindings::switchboard::plugin::types as wit;

/// How often the engine's epoch advances: the longest a guest runs before the host looks at it
/// (to slice it, or to stop it). A neighbour call's frame waits at most about this long for a
/// worker thread a guest holds; a quarter of a 20 ms frame.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Least run time a guest gets after it resumes before it is asked to yield again: under load,
/// several ticks may pass while a guest waits its turn, and yielding at once on resume would
/// starve it.
pub const MIN_SLICE: Duration = Duration::from_millis(1);

/// Time budget of one `handle` call (run time, see [`super::budget`]): 200 ms. A frame arrives
/// every 20 ms; a plugin that needs more than ten frames' time for one input is broken or
/// overloaded, and the call it serves is already audibly stalled.
pub const HANDLE_BUDGET: Duration = Duration::from_millis(200);

/// Time budget of `open` and `describe` (1 s): instantiation plus the plugin's own set-up, which
/// may parse settings or build tables.
pub const OPEN_BUDGET: Duration = Duration::from_secs(1);

/// Most linear memory one session may grow to (bytes). Enough for a few minutes of buffered PCM
/// and a JSON parser; far below what would threaten the gateway with a thousand calls.
pub const SESSION_MEMORY_LIMIT: usize = 64 << 20;

/// Most bytes of a session's stdout and stderr kept for the log (a panic message fits easily).
pub const MAX_STDIO_BYTES: usize = 4096;

/// Most outputs one `handle` call may return. A reply is a handful of `play`s and `mark`s; ten
/// thousand is far beyond any real plugin and stops one that floods the call with work.
pub const MAX_OUTPUTS_PER_HANDLE: usize = 10_000;

/// Most WASM sessions the pooling allocator holds at once: twice the capacity goal of 1,000
/// concurrent calls. A call past it fails to open (the caller hears the apology); the pool's
/// address space is reserved up front, its memory is only touched as sessions use it.
pub const MAX_POOLED_SESSIONS: u32 = 2_000;

/// Core instances one session's component may hold: both the store's limit (each session's
/// `StoreLimits`) and the pooling allocator's per-component slots come from this one number, so
/// a component the pool admits is never refused by its store. A Rust `wasm32-wasip2` component is
/// a handful (the program, WASI adapter shims); a `componentize-py` 0.25 component (CPython,
/// libc, its adapters) is 14; 16 leaves room for both and for other toolchains. Stated in
/// `plugin-api/README.md` ("Limits").
pub const CORE_INSTANCES_PER_SESSION: u32 = 16;

/// Linear memories one session's component may define, in its store and in the pool; as many as
/// it may have core instances (a core instance defines at most one memory in practice).
pub const MEMORIES_PER_SESSION: u32 = CORE_INSTANCES_PER_SESSION;

/// Tables one session's component may define, in its store and in the pool; as many as it may
/// have core instances (the Python and JS toolchains give several instances a table each).
pub const TABLES_PER_SESSION: u32 = CORE_INSTANCES_PER_SESSION;

/// Fiber stacks the pool holds per session: one. Guest calls run on a fiber stack taken from the
/// pool, and a wasmtime `Store` keeps the stack of its last call for its next one until the store
/// is dropped, so every session that has been opened holds a stack for the rest of its call. With
/// fewer stacks than sessions, the session past them fails to open ("maximum concurrent limit of N
/// for fibers reached"): a pool of 512 stacks capped the gateway at 512 calls. A stack is address
/// space reserved up front; only the pages a guest touches become resident.
pub const STACKS_PER_SESSION: u32 = 1;

/// How the engine allocates instances, memories and stacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocator {
    /// wasmtime's pooling allocator, sized for this many sessions: slots are reserved once and
    /// reused, so opening a session costs microseconds.
    Pooling {
        /// Sessions the pool holds at once.
        sessions: u32,
    },
    /// mmap and munmap per instance (wasmtime's default): no up-front reservation, slower opens.
    OnDemand,
}

/// The wasmtime engine shared by every plugin. A thread advances its epoch every [`EPOCH_TICK`]
/// for as long as anything (this handle, a loaded plugin, a session) still holds the engine.
#[derive(Clone)]
pub struct WasmEngine {
    engine: Engine,
    allocator: Allocator,
    /// wasmtime's compiled-code cache, when on: its hit counter tells [`WasmEngine::load`]
    /// whether a component's code came from disk.
    cache: Option<wasmtime::Cache>,
}

impl WasmEngine {
    /// Creates the engine with the pooling allocator sized for [`MAX_POOLED_SESSIONS`], or, when
    /// the machine refuses the pool's address-space reservation (a `ulimit -v`, say), with the
    /// on-demand allocator and a warning.
    ///
    /// # Errors
    /// wasmtime rejected both configurations (a build without Cranelift, say).
    /// No compiled-code cache: every load compiles (see [`WasmEngine::with_cache`]).
    pub fn new() -> Result<Self, PluginLoadError> {
        Self::with_cache(None)
    }

    /// Like [`WasmEngine::new`], keeping compiled code in `cache_dir` (an absolute directory,
    /// created if missing; `None`: no cache) so that a restart or a reload of an unchanged plugin
    /// does not compile it again. This is wasmtime's own cache: an entry is keyed by a SHA-256 of
    /// the component's bytes, wasmtime's version and the engine's compilation settings, written
    /// atomically (temporary file, then rename), and an entry that fails to decompress or to
    /// load (corrupt, or from another wasmtime) is compiled again and replaced. A directory that
    /// cannot be created or used turns the cache off with a warning: compiling is slower, not
    /// wrong.
    ///
    /// # Errors
    /// As [`WasmEngine::new`].
    pub fn with_cache(cache_dir: Option<&Path>) -> Result<Self, PluginLoadError> {
        match Self::with_options(
            Allocator::Pooling {
                sessions: MAX_POOLED_SESSIONS,
            },
            cache_dir,
        ) {
            Ok(engine) => Ok(engine),
            Err(e) => {
                tracing::warn!(error = %e, "pooling allocator unavailable; opening sessions on demand");
                Self::with_options(Allocator::OnDemand, cache_dir)
            }
        }
    }

    /// Creates the engine (Cranelift, component model, epoch interruption, the given allocator)
    /// and starts the thread that advances its epoch every [`EPOCH_TICK`]. No compiled-code
    /// cache.
    ///
    /// # Errors
    /// wasmtime rejected the configuration, or the pool could not be reserved.
    pub fn with_allocator(allocator: Allocator) -> Result<Self, PluginLoadError> {
        Self::with_options(allocator, None)
    }

    /// Creates the engine with the given allocator and compiled-code cache directory (see
    /// [`WasmEngine::with_cache`]).
    ///
    /// # Errors
    /// wasmtime rejected the configuration, or the pool could not be reserved.
    pub fn with_options(
        allocator: Allocator,
        cache_dir: Option<&Path>,
    ) -> Result<Self, PluginLoadError> {
        let engine_error = |reason: String| {
            PluginLoadError::new("<engine>", Path::new(""), LoadProblem::Host(reason))
        };
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true).epoch_interruption(true);
        let cache = cache_dir.and_then(|dir| {
            let mut cache_config = wasmtime::CacheConfig::new();
            cache_config.with_directory(dir);
            wasmtime::Cache::new(cache_config)
                .inspect_err(|e| {
                    tracing::warn!(
                        dir = %dir.display(),
                        error = %format!("{e:#}"),
                        "compiled-code cache unavailable; plugins are compiled at every load"
                    );
                })
                .ok()
        });
        config.cache(cache.clone());
        if let Allocator::Pooling { sessions } = allocator {
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool_config(
                sessions,
            )));
        }
        let engine = Engine::new(&config).map_err(|e| engine_error(format!("{e:#}")))?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                // Holds only a weak reference: the thread ends once the engine is gone.
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| engine_error(format!("cannot start the epoch thread: {e}")))?;
        Ok(Self {
            engine,
            allocator,
            cache,
        })
    }

    /// The allocator this engine uses.
    pub fn allocator(&self) -> Allocator {
        self.allocator
    }

    /// The compiled-code cache directory in use, if any (canonical path).
    pub fn cache_dir(&self) -> Option<&Path> {
        self.cache.as_ref().map(|c| c.directory().as_path())
    }

    /// Compiles the component at `path`, or loads its code from the cache. Also says whether the
    /// cache served it: wasmtime counts a hit when an entry was found and loaded. The count is the
    /// engine's, so a concurrent load on the same engine could be taken for this one's; plugins
    /// are loaded one at a time ([`super::Plugins::load`]).
    fn compile(&self, path: &Path) -> Result<(Component, bool), LoadProblem> {
        let hits = |cache: &Option<wasmtime::Cache>| cache.as_ref().map_or(0, |c| c.cache_hits());
        let before = hits(&self.cache);
        let component = Component::from_file(&self.engine, path)
            .map_err(|e| LoadProblem::NotAComponent(format!("{e:#}")))?;
        Ok((component, hits(&self.cache) > before))
    }

    /// Compiles the component at `path`, links it against the host, and asks it to describe
    /// itself.
    ///
    /// # Errors
    /// [`PluginLoadError`], whose [`LoadProblem`] says which: the file cannot be read, is not a
    /// component, was built for another contract version (both named), does not export its
    /// `switchboard:plugin` world, traps in `describe`, or asks for an input format the host
    /// cannot produce.
    pub async fn load(&self, name: &str, path: &Path) -> Result<WasmPlugin, PluginLoadError> {
        let invalid = |problem: LoadProblem| PluginLoadError::new(name, path, problem);
        if let Err(e) = std::fs::metadata(path) {
            return Err(invalid(LoadProblem::Unreadable(e.to_string())));
        }
        let (component, from_cache) = self.compile(path).map_err(&invalid)?;
        let contract = check_contract_version(&self.engine, &component).map_err(&invalid)?;
        let stage = stage_of(&self.engine, &component);
        let mut linker = Linker::<HostState>::new(&self.engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| invalid(LoadProblem::Host(format!("linking WASI: {e:#}"))))?;
        bindings::RealtimePlugin::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |state| state,
        )
        .map_err(|e| {
            invalid(LoadProblem::Host(format!(
                "linking the host interface: {e:#}"
            )))
        })?;
        if contract == Contract::V0_1 {
            // A 0.1.0 component imports `host@0.1.0` (the same functions) and `types@0.1.0`
            // (types only: mapped onto the current ones).
            v0_1::bindings::switchboard::plugin::host::add_to_linker::<
                HostState,
                wasmtime::component::HasSelf<HostState>,
            >(&mut linker, |state| state)
            .and_then(|()| {
                linker
                    .instance("switchboard:plugin/types@0.1.0")
                    .map(|_| ())
            })
            .map_err(|e| {
                invalid(LoadProblem::Host(format!(
                    "linking the 0.1.0 host interface: {e:#}"
                )))
            })?;
        }
        let world = match stage {
            Stage::Realtime => "realtime-plugin",
            Stage::Stt => "stt-plugin",
            Stage::Llm => "llm-plugin",
            Stage::Tts => "tts-plugin",
        };
        let missing = |verb: &'static str, e: wasmtime::Error| {
            invalid(LoadProblem::MissingExport {
                verb,
                version: contract.version(),
                world,
                detail: format!("{e:#}"),
            })
        };
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| missing("fit", e))?;
        let not_exported = |e: wasmtime::Error| missing("export", e);
        let pre = match (contract, stage) {
            (Contract::V0_2, Stage::Realtime) => {
                Pre::Realtime(bindings::RealtimePluginPre::new(pre).map_err(not_exported)?)
            }
            (Contract::V0_2, Stage::Stt) => {
                Pre::Stt(stage_bindings::stt::SttPluginPre::new(pre).map_err(not_exported)?)
            }
            (Contract::V0_2, Stage::Llm) => {
                Pre::Llm(stage_bindings::llm::LlmPluginPre::new(pre).map_err(not_exported)?)
            }
            (Contract::V0_2, Stage::Tts) => {
                Pre::Tts(stage_bindings::tts::TtsPluginPre::new(pre).map_err(not_exported)?)
            }
            (Contract::V0_1, Stage::Realtime) => {
                Pre::V01Realtime(v0_1::bindings::RealtimePluginPre::new(pre).map_err(not_exported)?)
            }
            (Contract::V0_1, Stage::Stt) => {
                Pre::V01Stt(v0_1::stages::stt::SttPluginPre::new(pre).map_err(not_exported)?)
            }
            (Contract::V0_1, Stage::Llm) => {
                Pre::V01Llm(v0_1::stages::llm::LlmPluginPre::new(pre).map_err(not_exported)?)
            }
            (Contract::V0_1, Stage::Tts) => {
                Pre::V01Tts(v0_1::stages::tts::TtsPluginPre::new(pre).map_err(not_exported)?)
            }
        };
        let mut plugin = WasmPlugin {
            name: name.to_string(),
            handle_budget: HANDLE_BUDGET,
            cpu: CpuLimits::default(),
            engine: self.engine.clone(),
            pre,
            stage,
            from_cache,
            info: PluginInfo {
                name: String::new(),
                version: String::new(),
                description: String::new(),
                input_format: AudioFormat::TWILIO,
            },
        };
        let (mut store, instance) = plugin
            .instantiate(OPEN_BUDGET)
            .await
            .map_err(|e| invalid(LoadProblem::Host(format!("instantiation failed: {e}"))))?;
        let info = match &instance {
            Instance::Realtime(i) => {
                i.switchboard_plugin_realtime()
                    .call_describe(&mut store)
                    .await
            }
            Instance::Stt(i) => i.switchboard_plugin_stt().call_describe(&mut store).await,
            Instance::Llm(i) => i.switchboard_plugin_llm().call_describe(&mut store).await,
            Instance::Tts(i) => i.switchboard_plugin_tts().call_describe(&mut store).await,
            Instance::V01Realtime(i) => {
                i.switchboard_plugin_realtime()
                    .call_describe(&mut store)
                    .await
            }
            Instance::V01Stt(i) => i.switchboard_plugin_stt().call_describe(&mut store).await,
            Instance::V01Llm(i) => i.switchboard_plugin_llm().call_describe(&mut store).await,
            Instance::V01Tts(i) => i.switchboard_plugin_tts().call_describe(&mut store).await,
        }
        .map_err(|e| invalid(LoadProblem::Describe(format!("trapped: {e:#}"))))?;
        let input_format = format_from_wit(info.input_format);
        super::check_input_format(input_format)
            .map_err(|e| invalid(LoadProblem::InputFormat(e)))?;
        plugin.info = PluginInfo {
            name: info.name,
            version: info.version,
            description: info.description,
            input_format,
        };
        Ok(plugin)
    }
}

/// The pooling allocator's limits for `sessions` sessions at once.
fn pool_config(sessions: u32) -> wasmtime::PoolingAllocationConfig {
    let mut pool = wasmtime::PoolingAllocationConfig::default();
    pool.total_component_instances(sessions)
        .total_core_instances(sessions.saturating_mul(CORE_INSTANCES_PER_SESSION))
        .max_core_instances_per_component(CORE_INSTANCES_PER_SESSION)
        .max_memories_per_component(MEMORIES_PER_SESSION)
        .max_tables_per_component(TABLES_PER_SESSION)
        // Most core instances have no memory or table of their own: two per session on average
        // is ample.
        .total_memories(sessions.saturating_mul(2))
        .total_tables(sessions.saturating_mul(2))
        .total_stacks(sessions.saturating_mul(STACKS_PER_SESSION))
        .max_memory_size(SESSION_MEMORY_LIMIT);
    pool
}

/// One session's store limits: the same counts as the pool's per-component slots
/// ([`pool_config`]), so the on-demand and pooling allocators admit the same components.
fn session_limits() -> StoreLimits {
    // u32 -> usize is lossless on the 32- and 64-bit targets wasmtime supports.
    StoreLimitsBuilder::new()
        .memory_size(SESSION_MEMORY_LIMIT)
        .instances(CORE_INSTANCES_PER_SESSION as usize)
        .memories(MEMORIES_PER_SESSION as usize)
        .tables(TABLES_PER_SESSION as usize)
        .build()
}

/// The WIT package whose interfaces a plugin imports and exports.
pub const CONTRACT_PACKAGE: &str = "switchboard:plugin";

/// The contract version this host implements (and its SDK builds plugins for).
pub const CONTRACT_VERSION: &str = "0.2.0";

/// Every contract version this host loads plugins of: the current one, and the released ones
/// before it (frozen in `plugin-api/wit-X.Y.Z/`).
pub const SUPPORTED_CONTRACT_VERSIONS: [&str; 2] = [CONTRACT_VERSION, "0.1.0"];

/// The contract versions this host loads, for error messages (`0.2.0 or 0.1.0`).
pub const SUPPORTED_CONTRACTS: &str = "0.2.0 or 0.1.0";

/// A contract version a plugin was built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contract {
    /// `switchboard:plugin@0.1.0`: no tool calls.
    V0_1,
    /// `switchboard:plugin@0.2.0`: tool calls.
    V0_2,
}

impl Contract {
    /// The version, as in the WIT package name.
    pub fn version(self) -> &'static str {
        match self {
            Self::V0_1 => "0.1.0",
            Self::V0_2 => "0.2.0",
        }
    }

    /// The contract of version `version`, if this host loads it.
    pub fn of(version: &str) -> Option<Self> {
        match version {
            "0.1.0" => Some(Self::V0_1),
            "0.2.0" => Some(Self::V0_2),
            _ => None,
        }
    }
}

/// The one contract version a component's `switchboard:plugin` imports and exports name; a
/// version this host does not load (or a mix) is refused, naming both (a clearer error than the
/// linker's missing-import message).
fn check_contract_version(engine: &Engine, component: &Component) -> Result<Contract, LoadProblem> {
    let ty = component.component_type();
    let names = ty
        .imports(engine)
        .map(|(name, _)| name)
        .chain(ty.exports(engine).map(|(name, _)| name));
    let mut found: Option<Contract> = None;
    for name in names {
        let Some(rest) = name.strip_prefix(CONTRACT_PACKAGE) else {
            continue;
        };
        let version = rest.rsplit_once('@').map(|(_, v)| v).unwrap_or("(none)");
        let refused = || LoadProblem::ContractVersion {
            package: CONTRACT_PACKAGE,
            found: version.to_string(),
            supported: SUPPORTED_CONTRACTS,
            item: Some(name.to_string()),
        };
        match (Contract::of(version), found) {
            (None, _) => return Err(refused()),
            (Some(c), Some(f)) if c != f => return Err(refused()),
            (Some(c), _) => found = Some(c),
        }
    }
    Ok(found.unwrap_or(Contract::V0_2))
}

/// The stage a component implements, by the contract interface it exports (realtime when it
/// exports none: linking then fails with a message naming the realtime world).
fn stage_of(engine: &Engine, component: &Component) -> Stage {
    let exports: Vec<String> = component
        .component_type()
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let exports_interface = |name: &str| {
        exports
            .iter()
            .any(|e| e.starts_with(&format!("{CONTRACT_PACKAGE}/{name}@")))
    };
    [
        ("stt", Stage::Stt),
        ("llm", Stage::Llm),
        ("tts", Stage::Tts),
    ]
    .into_iter()
    .find(|(name, _)| exports_interface(name))
    .map_or(Stage::Realtime, |(_, stage)| stage)
}

/// A component prepared for instantiation, by world and contract version.
enum Pre {
    Realtime(bindings::RealtimePluginPre<HostState>),
    Stt(stage_bindings::stt::SttPluginPre<HostState>),
    Llm(stage_bindings::llm::LlmPluginPre<HostState>),
    Tts(stage_bindings::tts::TtsPluginPre<HostState>),
    V01Realtime(v0_1::bindings::RealtimePluginPre<HostState>),
    V01Stt(v0_1::stages::stt::SttPluginPre<HostState>),
    V01Llm(v0_1::stages::llm::LlmPluginPre<HostState>),
    V01Tts(v0_1::stages::tts::TtsPluginPre<HostState>),
}

/// An instance, by world and contract version.
enum Instance {
    Realtime(bindings::RealtimePlugin),
    Stt(stage_bindings::stt::SttPlugin),
    Llm(stage_bindings::llm::LlmPlugin),
    Tts(stage_bindings::tts::TtsPlugin),
    V01Realtime(v0_1::bindings::RealtimePlugin),
    V01Stt(v0_1::stages::stt::SttPlugin),
    V01Llm(v0_1::stages::llm::LlmPlugin),
    V01Tts(v0_1::stages::tts::TtsPlugin),
}

/// A compiled, linked WASM plugin.
pub struct WasmPlugin {
    name: String,
    /// Run time one `handle` may take; [`HANDLE_BUDGET`] unless the config raised it.
    handle_budget: Duration,
    /// Each session's CPU share over its call.
    cpu: CpuLimits,
    engine: Engine,
    pre: Pre,
    stage: Stage,
    /// Whether its compiled code came from the compiled-code cache.
    from_cache: bool,
    info: PluginInfo,
}

impl WasmPlugin {
    /// What the plugin said about itself.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// The contract the component implements.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// True when its compiled code was loaded from the compiled-code cache instead of compiled
    /// ([`WasmEngine::with_cache`]).
    pub fn from_cache(&self) -> bool {
        self.from_cache
    }

    /// Sets the run-time budget of each `handle` (checked every [`EPOCH_TICK`]), and of `open`
    /// when larger than its own. From `budget_ms` in the plugin's `[plugins.NAME]` table.
    pub fn set_handle_budget(&mut self, budget: Duration) {
        self.handle_budget = budget;
    }

    /// Sets each session's CPU share. From `cpu_percent` and `cpu_burst_ms`.
    pub fn set_cpu_limits(&mut self, cpu: CpuLimits) {
        self.cpu = cpu;
    }

    fn open_budget(&self) -> Duration {
        OPEN_BUDGET.max(self.handle_budget)
    }

    /// A fresh store and instance, with the run-time meter started on `budget` (instantiation
    /// runs the guest's start functions): the caller ends the meter after its first call.
    async fn instantiate(
        &self,
        budget: Duration,
    ) -> Result<(Store<HostState>, Instance), SessionError> {
        let stdio = MemoryOutputPipe::new(MAX_STDIO_BYTES);
        let state = HostState {
            plugin: self.name.clone(),
            io: SessionIo::new(&self.name, std::sync::Arc::new(IoPolicy::default())),
            wasi: WasiCtx::builder()
                .stdout(stdio.clone())
                .stderr(stdio.clone())
                .build(),
            stdio,
            table: ResourceTable::new(),
            limits: Limiter {
                limits: session_limits(),
                memory_refused: None,
            },
            meter: Meter::new(self.cpu),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_callback(|mut ctx| Ok(ctx.data_mut().meter.on_tick()));
        store.data_mut().meter.begin(budget);
        store.set_epoch_deadline(1);
        let instance = match &self.pre {
            Pre::Realtime(p) => p
                .instantiate_async(&mut store)
                .await
                .map(Instance::Realtime),
            Pre::Stt(p) => p.instantiate_async(&mut store).await.map(Instance::Stt),
            Pre::Llm(p) => p.instantiate_async(&mut store).await.map(Instance::Llm),
            Pre::Tts(p) => p.instantiate_async(&mut store).await.map(Instance::Tts),
            Pre::V01Realtime(p) => p
                .instantiate_async(&mut store)
                .await
                .map(Instance::V01Realtime),
            Pre::V01Stt(p) => p.instantiate_async(&mut store).await.map(Instance::V01Stt),
            Pre::V01Llm(p) => p.instantiate_async(&mut store).await.map(Instance::V01Llm),
            Pre::V01Tts(p) => p.instantiate_async(&mut store).await.map(Instance::V01Tts),
        }
        .map_err(|e| trap(&mut store, e))?;
        Ok((store, instance))
    }
}

fn config_to_wit(config: &SessionConfig, input_format: AudioFormat) -> wit::SessionConfig {
    wit::SessionConfig {
        call: wit::CallInfo {
            call_sid: config.call.call_sid.clone(),
            stream_sid: config.call.stream_sid.clone(),
            from: config.call.from.clone(),
            to: config.call.to.clone(),
            direction: config.call.direction.clone(),
            agent: config.call.agent.clone(),
            parameters: config.call.parameters.clone(),
        },
        settings: config.settings.clone(),
        greeting: config.greeting.clone(),
        input_format: format_to_wit(input_format),
    }
}

/// Per-store host state: what the plugin's imports may touch.
struct HostState {
    plugin: String,
    /// Host I/O checks and queued commands for this session.
    io: SessionIo,
    wasi: WasiCtx,
    /// The guest's stdout and stderr, capped.
    stdio: MemoryOutputPipe,
    table: ResourceTable,
    limits: Limiter,
    /// Run time of the call in progress, and the session's CPU share.
    meter: Meter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_has_a_fiber_stack_for_every_session() {
        // Each open session's store keeps a stack, so stacks bound the calls like instances do.
        for sessions in [1, 64, MAX_POOLED_SESSIONS] {
            let pool = pool_config(sessions);
            assert!(pool.get_total_stacks() >= pool.get_total_component_instances());
            assert_eq!(pool.get_total_component_instances(), sessions);
        }
        // And the engine reserves a pool that size.
        let engine = WasmEngine::with_allocator(Allocator::Pooling {
            sessions: MAX_POOLED_SESSIONS,
        });
        assert!(engine.is_ok(), "{:?}", engine.err());
    }

    /// A component that instantiates an empty core module `core_instances` times: the shape
    /// that counts against the core-instance limits, without a toolchain.
    fn component_with_core_instances(core_instances: u32) -> Vec<u8> {
        let mut component = wasm_encoder::Component::new();
        component.section(&wasm_encoder::ModuleSection(&wasm_encoder::Module::new()));
        let mut instances = wasm_encoder::InstanceSection::new();
        for _ in 0..core_instances {
            instances.instantiate(0, Vec::<(&str, wasm_encoder::ModuleArg)>::new());
        }
        component.section(&instances);
        component.finish()
    }

    /// Instantiates `bytes` in a store limited like a session's.
    async fn instantiate_in_session_store(
        engine: &WasmEngine,
        bytes: &[u8],
    ) -> wasmtime::Result<()> {
        let component = Component::new(&engine.engine, bytes)?;
        let mut store = Store::new(&engine.engine, session_limits());
        store.limiter(|limits| limits);
        Linker::new(&engine.engine)
            .instantiate_async(&mut store, &component)
            .await
            .map(drop)
    }

    #[tokio::test]
    async fn the_store_and_the_pool_admit_the_same_core_instance_count() {
        // componentize-py 0.25 components hold 14 core instances; the store once allowed 8.
        for allocator in [Allocator::OnDemand, Allocator::Pooling { sessions: 4 }] {
            let engine = WasmEngine::with_allocator(allocator).expect("engine");
            for n in [14, CORE_INSTANCES_PER_SESSION] {
                let result =
                    instantiate_in_session_store(&engine, &component_with_core_instances(n)).await;
                assert!(
                    result.is_ok(),
                    "{allocator:?}, {n} core instances: {result:?}"
                );
            }
            let over = CORE_INSTANCES_PER_SESSION + 1;
            let result =
                instantiate_in_session_store(&engine, &component_with_core_instances(over)).await;
            assert!(
                result.is_err(),
                "{allocator:?}: {over} core instances were admitted"
            );
        }
    }

    #[test]
    fn a_second_engine_on_the_same_cache_dir_loads_the_code_instead_of_compiling() {
        let dir = crate::config::test_support::TempDir::new();
        let cache_dir = dir.path().join("cache");
        let wasm = dir.write("plugin.wasm", &component_with_core_instances(3));
        let compile = || {
            // A fresh engine each time, as after a restart.
            let engine =
                WasmEngine::with_options(Allocator::OnDemand, Some(&cache_dir)).expect("engine");
            assert!(engine.cache_dir().is_some(), "the cache is on");
            let (_component, from_cache) = engine.compile(&wasm).expect("compiles");
            from_cache
        };
        assert!(!compile(), "an empty cache compiles");
        assert!(compile(), "the second engine loads the first one's code");

        // A corrupt entry is compiled again (and replaced), never loaded.
        let mut entries = 0;
        for modules in std::fs::read_dir(cache_dir.join("modules")).expect("modules dir") {
            let modules = modules.expect("entry").path();
            for entry in std::fs::read_dir(&modules).expect("compiler dir") {
                std::fs::write(entry.expect("entry").path(), b"not zstd").expect("corrupt");
                entries += 1;
            }
        }
        assert!(entries > 0, "the first compile wrote an entry");
        assert!(!compile(), "a corrupt entry is not trusted");
        assert!(compile(), "and was replaced by a good one");

        // Off: every load compiles.
        let engine = WasmEngine::with_options(Allocator::OnDemand, None).expect("engine");
        assert_eq!(engine.cache_dir(), None);
        assert!(!engine.compile(&wasm).expect("compiles").1);
    }
}
