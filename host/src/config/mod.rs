//! Loading and validating `agents.toml`, the gateway's one configuration file: where to
//! listen, how Twilio reaches us, which plugins exist, and which agent answers which
//! call.
//!
//! Loading is split into steps so each can be tested (and reused) alone:
//!
//! 1. [`load`]: read the file into a [`Source`] (path + text).
//! 2. [`Source::parse`]: TOML -> [`RawConfig`], typed but unchecked, with byte spans.
//! 3. [`RawConfig::interpolate`]: `${VAR}`, `${VAR:-default}` and `$$` in every string
//!    value, with the environment passed in as a function.
//! 4. [`RawConfig::validate`]: every check, collecting *all* problems -> [`Config`].
//!
//! [`from_file`] runs all four against the process environment; [`from_source`] runs
//! 2-4 with a caller-supplied environment (tests, embedding).
//!
//! A file may grant a secret from an optional variable (`${OPENAI_API_KEY:-}`): when it comes
//! out empty, the agent is disabled with a warning rather than the file refused
//! ([`disabled_agents`]).
//!
//! Every error renders on one line as `FILE:LINE:COLUMN: KEY.PATH: message`, e.g.
//! `agents.toml:14:1: agents[1].realtime.plugin: unknown plugin "foo" (known: echo)`.
//!
//! The validated [`Config`] is immutable and cheap to share (`Arc<Config>`); it carries
//! precomputed lookup tables so [`crate::routing`] never scans the agent list.

mod disabled;
mod error;
pub mod events;
mod interpolate;
pub mod lookup;
mod raw;
mod span;
pub mod tools;
mod validate;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(crate) use disabled::plugin_use_path;
pub use disabled::{DisabledAgent, disabled_agents};
pub use error::{ConfigError, ConfigErrorKind, ConfigErrors};
pub use interpolate::EnvLookup;
pub use raw::{
    RawAgent, RawApi, RawConfig, RawPipeline, RawPlugin, RawPluginUse, RawRecords, RawRouting,
    RawServer, RawTwilio, RawTwilioAccount,
};
pub(crate) use span::KeyPath;
pub use validate::is_e164;

/// Address the gateway listens on when `server.listen` is absent: loopback only, so a
/// fresh install is not exposed to the network until someone decides it should be.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);

/// Largest config file [`load`] accepts, in bytes (1 MiB). `agents.toml` is written by
/// hand and is a few KiB; anything this big is the wrong file, and refusing it avoids
/// reading an arbitrarily large file into memory.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Longest agent name, in characters. Names show up in logs, metrics labels, TwiML
/// parameters and URLs, where long names are unwieldy.
pub const MAX_AGENT_NAME_LEN: usize = 64;

/// Most digits in an E.164 number (ITU-T E.164 caps numbers at 15 digits, country code
/// included).
pub const MAX_E164_DIGITS: usize = 15;

/// How many names an "unknown X (known: ...)" message lists before it says "... N more",
/// so an error still fits on one readable line.
pub const MAX_NAMES_SHOWN: usize = 10;

/// Prefix of every Twilio account SID; catches a token or an API key SID (`SK...`) put
/// into `account_sid` by mistake.
pub const ACCOUNT_SID_PREFIX: &str = "AC";

/// A configuration file's path and text, kept together so every later step can report
/// positions in it.
#[derive(Debug, Clone)]
pub struct Source {
    path: PathBuf,
    text: String,
}

impl Source {
    /// A source from text already in memory; `path` is used in error messages and to
    /// resolve relative plugin paths (against its directory).
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            text: text.into(),
        }
    }

    /// The file's path, as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// 1-based line and column (in characters) where the file spells out the value at
    /// `path` (e.g. `agents[0].realtime.settings`) or, when it does not (an absent key), its
    /// nearest ancestor; `None` when not even the top-level key is in the file.
    pub(crate) fn locate(&self, path: &KeyPath) -> Option<(usize, usize)> {
        span::Locator::new(&self.text)
            .span_of_nearest(path)
            .map(|span| span::line_col(&self.text, span.start))
    }
}

/// Reads the configuration file at `path` (at most [`MAX_CONFIG_BYTES`] bytes, UTF-8).
///
/// # Errors
///
/// [`ConfigErrorKind::Read`] if it cannot be opened or read, [`ConfigErrorKind::TooLarge`]
/// if it is over the limit, [`ConfigErrorKind::NotUtf8`] (with the line of the first bad
/// byte) if it is not UTF-8.
pub fn load(path: &Path) -> Result<Source, ConfigError> {
    let read_error =
        |error| ConfigError::file(path.to_path_buf(), None, ConfigErrorKind::Read { error });
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if u64::try_from(bytes.len()).map_or(true, |len| len > MAX_CONFIG_BYTES) {
        return Err(ConfigError::file(
            path.to_path_buf(),
            None,
            ConfigErrorKind::TooLarge {
                limit: MAX_CONFIG_BYTES,
            },
        ));
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Source::new(path, text)),
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let prefix = String::from_utf8_lossy(&e.as_bytes()[..valid]);
            let position = span::line_col(&prefix, prefix.len());
            Err(ConfigError::file(
                path.to_path_buf(),
                Some(position),
                ConfigErrorKind::NotUtf8,
            ))
        }
    }
}

/// Parses, interpolates (looking variables up with `env`) and validates `source`.
///
/// # Errors
///
/// The parse error, or every interpolation error, or every validation error — each
/// step runs only if the previous one succeeded, since later steps would only report
/// consequences of earlier errors.
pub fn from_source(source: &Source, env: EnvLookup<'_>) -> Result<Config, ConfigErrors> {
    source.parse()?.interpolate(source, env)?.validate(source)
}

/// Loads, parses, interpolates (from the process environment) and validates the
/// configuration file at `path`. An environment variable whose value is not valid
/// Unicode counts as unset. Logs a warning for each agent an empty secret disables
/// ([`disabled_agents`]).
///
/// # Errors
///
/// As [`load`] and [`from_source`]; the list has one line per problem.
pub fn from_file(path: impl AsRef<Path>) -> Result<Config, ConfigErrors> {
    let source = load(path.as_ref())?;
    let config = from_source(&source, &|name| std::env::var(name).ok())?;
    for disabled in disabled_agents(&source, &config) {
        tracing::warn!(key = %disabled.key, "{disabled}");
    }
    tracing::debug!(
        path = %config.path.display(),
        agents = config.agents.len(),
        plugins = config.plugins.len(),
        "loaded configuration"
    );
    Ok(config)
}

/// The validated configuration. Immutable; share it as `Arc<Config>`.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was loaded from, as given.
    pub path: PathBuf,
    /// `[server]`.
    pub server: ServerConfig,
    /// `[twilio]`.
    pub twilio: TwilioConfig,
    /// `[plugins.NAME]`, by name.
    pub plugins: BTreeMap<String, PluginConfig>,
    /// `[[agents]]`, in file order.
    pub agents: Vec<Agent>,
    /// `routing.default`: the agent for calls nothing else routed; always names an
    /// agent in [`Config::agents`].
    pub default_agent: Option<String>,
    /// `[api]`: the operator API.
    pub api: ApiConfig,
    /// `[records]`: durable call records.
    pub records: RecordsConfig,
    /// `[lookups.NAME]`: caller-context files, loaded, by name.
    pub lookups: BTreeMap<String, Arc<lookup::Lookup>>,
    /// `[tools.NAME]`: tools defined for agents, by name.
    pub tools: BTreeMap<String, Arc<tools::ToolDef>>,
    /// `[mcp.NAME]`: MCP servers, in name order.
    pub mcp: Vec<crate::tools::mcp::McpServerConfig>,
    /// Lookup tables for [`crate::routing`], built during validation.
    pub(crate) routes: RouteIndex,
}

impl Config {
    /// The agent named `name`, in O(1).
    pub fn agent(&self, name: &str) -> Option<&Agent> {
        self.routes.by_name.get(name).map(|&i| &self.agents[i])
    }

    /// The agent named by `routing.default`, if any.
    pub fn default_agent(&self) -> Option<&Agent> {
        self.default_agent
            .as_deref()
            .and_then(|name| self.agent(name))
    }

    /// The plugin named `name`.
    pub fn plugin(&self, name: &str) -> Option<&PluginConfig> {
        self.plugins.get(name)
    }
}

/// `[server]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Address to bind the HTTP/WebSocket listener to; default [`DEFAULT_LISTEN`].
    pub listen: SocketAddr,
    /// Base URL Twilio uses to reach the gateway (`http(s)://host[:port]`, no trailing
    /// slash). `None` (absent or empty): derive it from each request's `Host` header.
    pub public_url: Option<String>,
    /// `drain_seconds`: after SIGTERM, how long live calls may go on before they are ended
    /// politely; default [`DEFAULT_DRAIN_SECONDS`], within [`DRAIN_RANGE_SECONDS`].
    pub drain: std::time::Duration,
    /// `allow_private_destinations` (default false): whether plugin I/O to a host *name* may
    /// reach loopback, link-local or private addresses. When false, such a name is refused at
    /// connect time unless the agent's `allowed_hosts` names the address itself (an IP literal,
    /// or `localhost`), so a tenant's plugin cannot reach internal services through DNS.
    pub allow_private_destinations: bool,
    /// Where compiled plugin code is kept so that a restart or a reload of an unchanged plugin
    /// does not compile it again (absolute). `plugin_cache_dir`, relative to the config file's
    /// directory, default [`default_plugin_cache_dir`]; `None` when `plugin_cache = false` (or no
    /// default could be found: neither `XDG_CACHE_HOME` nor `HOME` is set). Read at start only.
    pub plugin_cache: Option<std::path::PathBuf>,
}

/// The default compiled-code cache directory: `$XDG_CACHE_HOME/switchboard`, else
/// `$HOME/.cache/switchboard` (the XDG base directory rule; relative values are ignored, as the
/// spec says). `None` when neither is set.
pub fn default_plugin_cache_dir() -> Option<std::path::PathBuf> {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(std::path::PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    absolute("XDG_CACHE_HOME")
        .or_else(|| absolute("HOME").map(|home| home.join(".cache")))
        .map(|dir| dir.join("switchboard"))
}

/// Default `drain_seconds`.
pub const DEFAULT_DRAIN_SECONDS: u64 = 30;

/// Accepted `drain_seconds` (0: end live calls at once).
pub const DRAIN_RANGE_SECONDS: std::ops::RangeInclusive<u64> = 0..=3600;

/// `[twilio]`, validated. Empty strings (e.g. from `${VAR:-}`) count as absent. `Debug`
/// never prints a token.
#[derive(Clone, PartialEq, Eq)]
pub struct TwilioConfig {
    /// Account SID (`AC...`), if configured: the account outbound calls and call control use.
    pub account_sid: Option<String>,
    /// Auth token (secret), if configured: signs Twilio's requests to the gateway and
    /// authenticates the gateway's REST requests.
    pub auth_token: Option<String>,
    /// `validate_signatures` (default `true`): refuse Twilio requests without a valid
    /// `X-Twilio-Signature`. Only an explicit `false` turns it off.
    pub validate_signatures: bool,
    /// `api_base_url`: the REST API's base (`scheme://host[:port]`), default
    /// [`DEFAULT_TWILIO_API_BASE_URL`]; tests point it at a fake.
    pub api_base_url: String,
    /// `caller_id`: the default `From` (E.164) of outbound calls.
    pub caller_id: Option<String>,
    /// `[twilio.accounts.AC…]`: per-account (tenant) auth tokens that override
    /// [`TwilioConfig::auth_token`] for requests from that account (Twilio subaccounts).
    pub accounts: BTreeMap<String, Secret>,
}

/// Twilio's REST API.
pub const DEFAULT_TWILIO_API_BASE_URL: &str = "https://api.twilio.com";

impl Default for TwilioConfig {
    fn default() -> Self {
        Self {
            account_sid: None,
            auth_token: None,
            validate_signatures: true,
            api_base_url: DEFAULT_TWILIO_API_BASE_URL.to_string(),
            caller_id: None,
            accounts: BTreeMap::new(),
        }
    }
}

impl TwilioConfig {
    /// The auth token that signs requests from `account` (an `AccountSid`): the account's own
    /// token from `[twilio.accounts]`, else the global one.
    pub fn token_for(&self, account: Option<&str>) -> Option<&str> {
        account
            .and_then(|sid| self.accounts.get(sid))
            .map(Secret::expose)
            .or(self.auth_token.as_deref())
    }
}

impl fmt::Debug for TwilioConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioConfig")
            .field("account_sid", &self.account_sid)
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .field("validate_signatures", &self.validate_signatures)
            .field("api_base_url", &self.api_base_url)
            .field("caller_id", &self.caller_id)
            .field("accounts", &self.accounts.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// `[api]`, validated: who may use the operator API (`POST /calls`, `GET /calls`, …) and how
/// fast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Bearer tokens (secrets); empty: the gateway makes one at start, logged with the console's
    /// address (`crate::server::console`).
    pub tokens: Vec<Secret>,
    /// Sustained requests per minute allowed per token (token-bucket refill rate).
    pub rate_per_minute: u32,
    /// Requests a token may make at once (token-bucket size).
    pub burst: u32,
    /// `callback_secret`: signs the callbacks of outbound calls ([`crate::callbacks`]);
    /// `None`: `POST /calls` refuses a `callback_url`.
    pub callback_secret: Option<crate::callbacks::WebhookSecret>,
}

/// Default `[api] rate_per_minute`.
pub const DEFAULT_API_RATE_PER_MINUTE: u32 = 60;
/// Default `[api] burst`.
pub const DEFAULT_API_BURST: u32 = 10;
/// Accepted `rate_per_minute` and `burst`.
pub const API_RATE_RANGE: std::ops::RangeInclusive<u64> = 1..=100_000;

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            tokens: Vec::new(),
            rate_per_minute: DEFAULT_API_RATE_PER_MINUTE,
            callback_secret: None,
            burst: DEFAULT_API_BURST,
        }
    }
}

/// `[records]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordsConfig {
    /// The SQLite file (absolute, or joined to the config file's directory); default
    /// [`DEFAULT_RECORDS_FILE`] beside the config file. `None` (`path = ""`): records are kept
    /// in memory only and lost on restart. Unused when [`RecordsConfig::url`] is set.
    pub path: Option<PathBuf>,
    /// `url`: the PostgreSQL database a fleet of gateways shares (`postgres://…`; TLS with
    /// `sslmode=require`). Redacted in `Debug`: it usually carries a password.
    pub url: Option<Secret>,
    /// `instance`: this gateway's name in the records (default: `<hostname>-<pid>-<random>`).
    pub instance: Option<String>,
    /// `heartbeat_ms`: how often this instance heartbeats in the shared database; default
    /// [`DEFAULT_HEARTBEAT_MS`], within [`HEARTBEAT_RANGE_MS`].
    pub heartbeat: std::time::Duration,
    /// `grace_ms`: how long an instance may go without a heartbeat before a survivor marks its
    /// live calls `interrupted`; default [`DEFAULT_GRACE_MS`], at least twice the heartbeat.
    pub grace: std::time::Duration,
}

impl Default for RecordsConfig {
    fn default() -> Self {
        Self {
            path: None,
            url: None,
            instance: None,
            heartbeat: std::time::Duration::from_millis(DEFAULT_HEARTBEAT_MS),
            grace: std::time::Duration::from_millis(DEFAULT_GRACE_MS),
        }
    }
}

/// Default `[records] heartbeat_ms`.
pub const DEFAULT_HEARTBEAT_MS: u64 = 2_000;
/// Accepted `[records] heartbeat_ms`.
pub const HEARTBEAT_RANGE_MS: std::ops::RangeInclusive<u64> = 100..=60_000;
/// Default `[records] grace_ms`: several missed heartbeats, shorter than a typical call.
pub const DEFAULT_GRACE_MS: u64 = 15_000;
/// Accepted `[records] grace_ms` (and at least twice `heartbeat_ms`).
pub const GRACE_RANGE_MS: std::ops::RangeInclusive<u64> = 200..=3_600_000;

/// Default call-records file name, beside the config file.
pub const DEFAULT_RECORDS_FILE: &str = "switchboard-calls.db";

/// How a plugin file is loaded, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PluginKind {
    /// A `.wasm` WebAssembly component, run in the sandboxed WASM runtime.
    Wasm,
    /// A `.so` / `.dylib` native library, loaded into the process.
    Native,
}

impl PluginKind {
    /// `"wasm"` or `"native"`, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Wasm => "wasm",
            Self::Native => "native",
        }
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[plugins.NAME]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    /// The name (the `NAME` of `[plugins.NAME]`).
    pub name: String,
    /// The plugin file: absolute, or joined to the config file's directory. Existed and
    /// was a regular file when the config was validated.
    pub path: PathBuf,
    /// How to load it.
    pub kind: PluginKind,
    /// Plugin-wide default settings, a JSON object (`{}` when absent).
    pub settings: serde_json::Value,
    /// `budget_ms`: how long one `handle` call may run before the plugin's call ends; `None`:
    /// the host default (200 ms, ten frames). Compute-heavy local plugins (speech
    /// recognition, synthesis) need more; the host runs their calls off the async workers.
    pub budget: Option<std::time::Duration>,
    /// `cpu_percent` and `cpu_burst_ms`: the CPU share each session of the plugin may use over
    /// its call (see [`crate::plugin::budget`]); defaults when absent.
    pub cpu: crate::plugin::budget::CpuLimits,
}

/// Accepted `budget_ms` of a plugin (10 ms to 60 s).
pub const BUDGET_RANGE_MS: std::ops::RangeInclusive<u64> = 10..=60_000;

/// One `[[agents]]` entry, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    /// Unique name, `[A-Za-z0-9_-]{1,64}`.
    pub name: String,
    /// Called numbers (E.164) routed here; unique across agents.
    pub numbers: Vec<String>,
    /// customParameters that route here (all pairs must match); non-empty keys and
    /// values. Empty when the agent has no `match`.
    pub match_params: BTreeMap<String, String>,
    /// Text spoken when the call connects; `None` when absent or empty.
    pub greeting: Option<String>,
    /// The agent that takes new calls while this agent's plugin is failing (its circuit breaker
    /// is open) or while this agent is disabled ([`Agent::is_disabled`]); `None`: such calls
    /// hear an apology and are hung up.
    pub fallback: Option<String>,
    /// What runs the conversation: one realtime plugin, or a pipeline of three.
    pub mode: AgentMode,
    /// `caller_context`: who the caller is, looked up at call start.
    pub caller_context: Option<CallerContext>,
    /// What the agent may do beyond talking: tools, transfers, results.
    pub tools: tools::AgentTools,
    /// `events`: where its calls' live events are POSTed as signed webhooks; `None`: nowhere.
    pub events: Option<events::AgentEvents>,
}

/// An agent's `caller_context`: the caller looked up in a `[lookups.NAME]` file at call start
/// (from memory). A caller found there gets `caller.COLUMN` customParameters for the plugins,
/// `{caller.COLUMN}` placeholders filled in the instructions (the row appended to instructions
/// without any), and [`CallerContext::greeting`] instead of the agent's.
#[derive(Debug, Clone, PartialEq)]
pub struct CallerContext {
    /// The `[lookups.NAME]` name.
    pub name: String,
    /// The loaded file.
    pub lookup: Arc<lookup::Lookup>,
    /// The customParameter whose value is looked up (`From`, the caller's number, by default).
    pub by: String,
    /// The greeting for a caller found, with `{caller.COLUMN}` placeholders; every column it
    /// names is one of the file's (checked at load).
    pub greeting: Option<String>,
}

impl CallerContext {
    /// The caller's row, when the value of the `by` parameter among `params` is in the file.
    pub fn find(&self, params: &[(String, String)]) -> Option<Arc<lookup::Row>> {
        let value = params.iter().find(|(n, _)| *n == self.by).map(|(_, v)| v)?;
        self.lookup.get(value).cloned()
    }
}

impl Agent {
    /// The realtime plugin, for a realtime agent.
    pub fn realtime(&self) -> Option<&PluginUse> {
        match &self.mode {
            AgentMode::Realtime(r) => Some(r),
            AgentMode::Pipeline(_) => None,
        }
    }

    /// The pipeline, for a pipeline agent.
    pub fn pipeline(&self) -> Option<&PipelineConfig> {
        match &self.mode {
            AgentMode::Pipeline(p) => Some(p),
            AgentMode::Realtime(_) => None,
        }
    }

    /// Every plugin the agent uses, with the role it has (`realtime`, `stt`, `llm`, `tts`).
    pub fn plugin_uses(&self) -> Vec<(&'static str, &PluginUse)> {
        match &self.mode {
            AgentMode::Realtime(r) => vec![("realtime", r)],
            AgentMode::Pipeline(p) => vec![("stt", &p.stt), ("llm", &p.llm), ("tts", &p.tts)],
        }
    }
}

/// What runs an agent's conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentMode {
    /// `realtime = { plugin = … }`: a speech-to-speech plugin does everything.
    Realtime(PluginUse),
    /// `[agents.pipeline]`: STT → LLM → TTS plugins, with the host taking turns.
    Pipeline(Box<PipelineConfig>),
}

/// An agent's `pipeline` table, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    /// Speech to text.
    pub stt: PluginUse,
    /// The language model (or the scripted dialogue).
    pub llm: PluginUse,
    /// Text to speech.
    pub tts: PluginUse,
    /// The system prompt of every LLM request (may be empty).
    pub instructions: String,
    /// Caller silence that ends a turn; default [`DEFAULT_ENDPOINTING_MS`], within
    /// [`ENDPOINTING_RANGE_MS`].
    pub endpointing: std::time::Duration,
    /// How long after a key press the keys pressed so far become a caller turn (unless `#`
    /// ends it first); default [`DEFAULT_KEYPAD_TIMEOUT_MS`], within [`KEYPAD_TIMEOUT_RANGE_MS`].
    pub keypad_timeout: std::time::Duration,
    /// `resume_false_interruptions` (default true): after a barge-in the caller said nothing
    /// in, the agent says the rest of the cut reply.
    pub resume_false_interruptions: bool,
    /// `min_interruption_ms` (0–2000, default 0): how long the caller must speak over the agent
    /// before it counts as an interruption.
    pub min_interruption: std::time::Duration,
    /// `min_interruption_words` (0–10, default 0): words the caller must say over the agent
    /// before it counts as an interruption (backchannels not counted when ignored). Decided on
    /// the recognizer's interim transcripts when it sends them, else on the final one (an
    /// interruption with fewer words is then a false one: the agent resumes).
    pub min_interruption_words: usize,
    /// `backchannel` (default `"ignore"`): what "mm-hm", "okay" and the like said while the
    /// agent speaks do.
    pub backchannel: crate::call::interruption::Backchannel,
}

/// Default `keypad_timeout_ms`: the inter-digit timeout of IVRs (2–5 s), at its short end.
pub const DEFAULT_KEYPAD_TIMEOUT_MS: u64 = 2000;

/// Accepted `keypad_timeout_ms`.
pub const KEYPAD_TIMEOUT_RANGE_MS: std::ops::RangeInclusive<u64> = 200..=10_000;

/// Default `endpointing_ms` (the 500–800 ms range usual on the phone).
pub const DEFAULT_ENDPOINTING_MS: u64 = 600;

/// Accepted `endpointing_ms`: below 100 ms every breath ends a turn; above 5 s the agent
/// seems dead.
pub const ENDPOINTING_RANGE_MS: std::ops::RangeInclusive<u64> = 100..=5000;

/// One use of a plugin by an agent (its `realtime` plugin or one pipeline stage), validated.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginUse {
    /// Name of a plugin in [`Config::plugins`].
    pub plugin: String,
    /// The agent's own settings (before the overlay), a JSON object (`{}` when absent).
    pub settings: serde_json::Value,
    /// The settings the plugin gets: the plugin's settings with the agent's laid over them
    /// key by key (shallow: an agent key replaces the plugin's value for that key wholesale).
    /// Always a JSON object.
    pub effective_settings: serde_json::Value,
    /// [`PluginUse::effective_settings`] serialized as JSON, ready to hand to the plugin.
    pub settings_json: String,
    /// Secrets the plugin may read by name (`host::secret`); nothing else is readable.
    pub secrets: BTreeMap<String, Secret>,
    /// Hosts the plugin may reach through host I/O, lowercase: `host`, `host:port` or
    /// `*.domain` (any subdomain). Empty: no network at all.
    pub allowed_hosts: Vec<String>,
}

/// A secret value from agents.toml: never printed (its `Debug` is redacted).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The value, for handing to the plugin that was granted it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Lookup tables that make routing independent of the number of agents.
#[derive(Debug, Clone, Default)]
pub(crate) struct RouteIndex {
    /// Agent name -> index into [`Config::agents`].
    pub(crate) by_name: HashMap<String, usize>,
    /// Called number (E.164) -> agent index.
    pub(crate) by_number: HashMap<String, usize>,
    /// Match key -> match value -> indexes of the agents whose match table has that
    /// pair, in file order.
    pub(crate) by_pair: HashMap<String, HashMap<String, Vec<usize>>>,
}

impl RouteIndex {
    /// Adds `agent`, which is `config.agents[index]`. First definitions win on
    /// duplicates (validation reports those as errors anyway).
    fn add(&mut self, agent: &Agent, index: usize) {
        self.by_name.entry(agent.name.clone()).or_insert(index);
        for number in &agent.numbers {
            self.by_number.entry(number.clone()).or_insert(index);
        }
        for (key, value) in &agent.match_params {
            self.by_pair
                .entry(key.clone())
                .or_default()
                .entry(value.clone())
                .or_default()
                .push(index);
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support;

#[cfg(test)]
mod tests;
