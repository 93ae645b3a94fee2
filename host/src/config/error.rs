//! Configuration errors. Owns the one-line rendering every config problem shares,
//! `FILE:LINE:COLUMN: KEY.PATH: message`, so an operator (or an editor's quickfix list)
//! can jump straight to the offending key, and the list type [`ConfigErrors`] that lets
//! validation report every problem in one run instead of one per restart.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::Source;
use super::span::{KeyPath, Locator, line_col};

/// One problem with the configuration, with where it is.
///
/// Renders on one line as `agents.toml:14:1: agents[1].realtime.plugin: unknown plugin
/// "foo" (known: echo)`. Parts that are unknown are left out (a file that cannot be read
/// has no line, a problem with the whole file has no key). Boxed inside, so a `Result`
/// carrying it stays one pointer wide.
#[derive(Debug)]
pub struct ConfigError(Box<Located>);

#[derive(Debug)]
struct Located {
    file: PathBuf,
    line: Option<usize>,
    column: Option<usize>,
    key: Option<String>,
    kind: ConfigErrorKind,
}

impl ConfigError {
    /// An error about `source` at byte `span` (if known) and key `key` (if known).
    pub(crate) fn at(
        source: &Source,
        span: Option<Range<usize>>,
        key: Option<&KeyPath>,
        kind: ConfigErrorKind,
    ) -> Self {
        let (line, column) = match span {
            Some(span) => {
                let (line, column) = line_col(source.text(), span.start);
                (Some(line), Some(column))
            }
            None => (None, None),
        };
        Self(Box::new(Located {
            file: source.path().to_path_buf(),
            line,
            column,
            key: key.filter(|k| !k.is_root()).map(ToString::to_string),
            kind,
        }))
    }

    /// An error about `source` at key `key`, positioned where the file spells that key out
    /// (or, if it does not, its nearest ancestor that it does). For problems found after
    /// validation, which have a key path but no span: a plugin that does not load, or
    /// refuses an agent's settings.
    pub(crate) fn at_key(source: &Source, key: &KeyPath, kind: ConfigErrorKind) -> Self {
        let span = Locator::new(source.text()).span_of_nearest(key);
        Self::at(source, span, Some(key), kind)
    }

    /// An error about the file as a whole, at a 1-based line/column if known, with no
    /// key.
    pub(crate) fn file(
        file: PathBuf,
        position: Option<(usize, usize)>,
        kind: ConfigErrorKind,
    ) -> Self {
        Self(Box::new(Located {
            file,
            line: position.map(|(line, _)| line),
            column: position.map(|(_, column)| column),
            key: None,
            kind,
        }))
    }

    /// The configuration file, as it was named to [`super::load`] or
    /// [`super::Source::new`].
    pub fn path(&self) -> &Path {
        &self.0.file
    }

    /// 1-based line of the problem, when known.
    pub fn line(&self) -> Option<usize> {
        self.0.line
    }

    /// 1-based column (in characters) of the problem, when known.
    pub fn column(&self) -> Option<usize> {
        self.0.column
    }

    /// Key path of the problem, e.g. `agents[1].realtime.plugin` (array indexes are
    /// 0-based), when known.
    pub fn key(&self) -> Option<&str> {
        self.0.key.as_deref()
    }

    /// What is wrong.
    pub fn kind(&self) -> &ConfigErrorKind {
        &self.0.kind
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.0;
        write!(f, "{}", e.file.display())?;
        if let Some(line) = e.line {
            write!(f, ":{line}")?;
            if let Some(column) = e.column {
                write!(f, ":{column}")?;
            }
        }
        if let Some(key) = &e.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", e.kind)
    }
}

/// The message is already in [`fmt::Display`]; an underlying I/O error is rendered there
/// rather than returned from `source()`, so error-chain printers do not repeat it.
impl std::error::Error for ConfigError {}

/// What is wrong with the configuration. Messages never include secret values (the
/// Twilio auth token, or anything read from the environment into it).
#[derive(Debug, thiserror::Error)]
pub enum ConfigErrorKind {
    /// The file could not be opened or read.
    #[error("cannot read config file: {error}")]
    Read {
        /// The underlying I/O error.
        error: std::io::Error,
    },
    /// The file is larger than [`super::MAX_CONFIG_BYTES`].
    #[error("config file is larger than {limit} bytes; is this the right file?")]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The file is not valid UTF-8 (TOML must be).
    #[error("config file is not valid UTF-8")]
    NotUtf8,
    /// The file is not valid TOML.
    #[error("TOML syntax error: {message}")]
    Syntax {
        /// The parser's message.
        message: String,
    },
    /// Valid TOML, but the wrong shape: an unknown key, a value of the wrong type, or a
    /// missing required key.
    #[error("{message}")]
    Schema {
        /// What serde reported, reworded to talk about keys.
        message: String,
    },
    /// `${NAME}` names an environment variable that is not set, and gives no default.
    #[error(
        "environment variable {name} is not set (write ${{{name}:-default}} to give a default)"
    )]
    UnsetVariable {
        /// The variable name.
        name: String,
    },
    /// A malformed `$` reference: unterminated `${`, a bad variable name, nesting, or a
    /// bare `$NAME`.
    #[error("bad variable reference: {reason}")]
    BadReference {
        /// What is wrong with it.
        reason: String,
    },
    /// `server.listen` is not a socket address.
    #[error(
        "invalid listen address {value:?}: expected IP:PORT such as 127.0.0.1:8080 or [::1]:8080"
    )]
    InvalidListen {
        /// The value given.
        value: String,
    },
    /// `server.public_url` is not an `http(s)://host[:port]` URL.
    #[error("invalid public URL {value:?}: {reason}")]
    InvalidPublicUrl {
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `twilio.account_sid` does not start with `AC`. The value is not shown, in case a
    /// token was pasted into the wrong key.
    #[error("Twilio account SID must start with \"AC\"")]
    InvalidAccountSid,
    /// The plugin file does not exist.
    #[error("plugin file not found: {}", path.display())]
    PluginNotFound {
        /// The resolved path that was checked.
        path: PathBuf,
    },
    /// The plugin path exists but is not a regular file.
    #[error("plugin path is not a file: {}", path.display())]
    PluginNotAFile {
        /// The resolved path that was checked.
        path: PathBuf,
    },
    /// The plugin path could not be inspected (e.g. permission denied).
    #[error("cannot access plugin file {}: {error}", path.display())]
    PluginUnreadable {
        /// The resolved path that was checked.
        path: PathBuf,
        /// The underlying I/O error.
        error: std::io::Error,
    },
    /// The plugin file's extension is not one the host can load.
    #[error("unsupported plugin file {}: expected a .wasm component or a .so/.dylib native library", path.display())]
    PluginExtension {
        /// The resolved path.
        path: PathBuf,
    },
    /// An agent name is empty, too long or has characters outside `[A-Za-z0-9_-]`.
    #[error("invalid agent name {name:?}: {reason}")]
    InvalidAgentName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An agent has neither or both of `realtime` and `pipeline`.
    #[error("{0}")]
    AgentMode(&'static str),
    /// A duration in ms (`endpointing_ms`, `budget_ms`) is outside its accepted range.
    #[error("{value} ms is outside {min}..={max} ms")]
    OutOfRange {
        /// The value given.
        value: i64,
        /// Smallest accepted value (ms).
        min: u64,
        /// Largest accepted value (ms).
        max: u64,
    },
    /// Two agents have the same name.
    #[error("duplicate agent name {name:?} (first defined on line {first_line})")]
    DuplicateAgent {
        /// The repeated name.
        name: String,
        /// 1-based line of the first agent with this name.
        first_line: usize,
    },
    /// A number is not E.164 (`+` then 1 to 15 digits).
    #[error(
        "invalid phone number {number:?}: expected E.164, '+' then 1 to 15 digits, e.g. +14155550100"
    )]
    InvalidNumber {
        /// The value given.
        number: String,
    },
    /// A number is listed twice (by two agents, or twice by one agent).
    #[error("number {number} is already routed to agent {agent:?} (line {first_line})")]
    DuplicateNumber {
        /// The repeated number.
        number: String,
        /// The agent that listed it first.
        agent: String,
        /// 1-based line where it was listed first.
        first_line: usize,
    },
    /// `match = {}`: an empty table would match every call; omit `match` instead.
    #[error("empty match table would match every call; remove it")]
    EmptyMatch,
    /// A match table has an empty key.
    #[error("match parameter names must not be empty")]
    EmptyMatchKey,
    /// An `allowed_hosts` entry is not a host name.
    #[error(
        "{host:?} is not a host name: write it as `api.example.com`, `api.example.com:8443` or `*.example.com` (no scheme, no path)"
    )]
    BadHost {
        /// The entry as written.
        host: String,
    },
    /// A match table has an empty value.
    #[error("match values must not be empty")]
    EmptyMatchValue,
    /// Two agents have identical match tables, so the second could never be chosen.
    #[error(
        "same match table as agent {agent:?} (line {first_line}); the second could never be routed to"
    )]
    DuplicateMatch {
        /// The agent with the same table, earlier in the file.
        agent: String,
        /// 1-based line of that agent's match table.
        first_line: usize,
    },
    /// `realtime.plugin` names no `[plugins.NAME]` section.
    #[error("unknown plugin {name:?} ({known})")]
    UnknownPlugin {
        /// The name given.
        name: String,
        /// The names that exist, as `known: a, b` or `no [plugins] are defined`.
        known: String,
    },
    /// An agent's `fallback` names no other agent.
    #[error("unknown fallback agent {name:?} ({known})")]
    UnknownFallbackAgent {
        /// The name given.
        name: String,
        /// The other agent names, as `known: a, b`.
        known: String,
    },
    /// `[api] callback_secret` is not a Standard Webhooks secret.
    #[error("invalid callback secret: {0}")]
    InvalidCallbackSecret(String),
    /// An agent's `events.secret` is not a Standard Webhooks secret.
    #[error("invalid webhook secret: {0}")]
    InvalidWebhookSecret(String),
    /// An agent's `events` has a URL but nothing to sign with: no `secret` and no `[api]
    /// callback_secret`.
    #[error(
        "agent {agent:?} sends event webhooks but has no secret to sign them: set `secret = \"whsec_…\"` here or [api] callback_secret"
    )]
    NoEventsSecret {
        /// The agent's name.
        agent: String,
    },
    /// An agent's `events.types` names no event type.
    #[error("unknown event type {name:?} ({known})")]
    UnknownEventType {
        /// The name given.
        name: String,
        /// The event types, as `known: call.started, …`.
        known: String,
    },
    /// A `[tools.NAME]` or `[mcp.NAME]` section, or an agent's tool grant, is wrong; the
    /// message says how.
    #[error("{0}")]
    Tool(String),
    /// An agent's `tools` names a tool that is not defined.
    #[error("unknown tool {name:?} ({known})")]
    UnknownTool {
        /// The name given.
        name: String,
        /// What may be granted: built-ins, `[tools]` names and `[mcp]` servers.
        known: String,
    },
    /// A `[lookups.NAME]` file did not load.
    #[error("lookup file does not load: {0}")]
    Lookup(#[source] super::lookup::LookupError),
    /// An agent's `caller_context.lookup` names no `[lookups.NAME]`.
    #[error("unknown lookup {name:?} ({known})")]
    UnknownLookup {
        /// The name given.
        name: String,
        /// The names that exist, as `known: a, b` or `no [lookups] are defined`.
        known: String,
    },
    /// A `{caller.COLUMN}` placeholder names a column the lookup file does not have.
    #[error(
        "{{caller.{column}}}: the lookup {lookup} has no column {column:?} (columns: {columns})"
    )]
    UnknownCallerColumn {
        /// The column named.
        column: String,
        /// The lookup's name.
        lookup: String,
        /// The columns it has.
        columns: String,
    },
    /// `routing.default` names no agent.
    #[error("unknown agent {name:?} ({known})")]
    UnknownDefaultAgent {
        /// The name given.
        name: String,
        /// The agent names that exist, as `known: a, b`.
        known: String,
    },
    /// A settings float is NaN or infinite, which JSON (the plugin settings format)
    /// cannot represent.
    #[error("{value} cannot be passed to a plugin: JSON has no NaN or infinity")]
    NonFiniteFloat {
        /// The value, as written by Rust (`NaN`, `inf`, `-inf`).
        value: f64,
    },
    /// `twilio.api_base_url` is not an `http(s)://host[:port]` URL.
    #[error("invalid URL {value:?}: {reason}")]
    InvalidUrl {
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A count (`rate_per_minute`, `burst`) is outside its accepted range.
    #[error("{value} is outside {min}..={max}")]
    CountOutOfRange {
        /// The value given.
        value: i64,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
    /// A secret that must have a value is empty (e.g. an unset `${VAR:-}`).
    #[error("empty secret: set a value (or remove the entry)")]
    EmptySecret,
    /// The same API token is listed twice; the value is not shown.
    #[error("duplicate API token (same as tokens[{first}])")]
    DuplicateToken {
        /// Index of the first occurrence.
        first: usize,
    },
    /// No `[[agents]]` at all.
    #[error("no agents defined; add at least one [[agents]] section")]
    NoAgents,
    /// The plugin file exists but does not load: not a component or library the host can
    /// run, built for another contract version, or asking for audio the host cannot
    /// produce. Found when plugins are loaded (startup, reload, `switchboard check`), not by
    /// validation.
    #[error("plugin {name} does not load: {reason}")]
    PluginLoad {
        /// The plugin's name in `[plugins]`.
        name: String,
        /// What the loader said.
        reason: String,
    },
    /// An agent gives a plugin a role its contract does not implement (a realtime plugin
    /// as a pipeline's `stt`, say).
    #[error("plugin {name} is a {is} plugin; it cannot be this agent's {role} plugin")]
    PluginRole {
        /// The plugin's name in `[plugins]`.
        name: String,
        /// What the plugin is: `realtime`, `speech-to-text`, `language-model` or
        /// `text-to-speech`.
        is: &'static str,
        /// The role the agent gives it: `realtime`, `stt`, `llm` or `tts`.
        role: &'static str,
    },
    /// A plugin would not open a session with an agent's settings (plugins refuse unknown
    /// or bad settings when a session opens). Found by `switchboard check`.
    #[error("plugin {name} refused this agent's settings: {message}")]
    PluginRefused {
        /// The plugin's name in `[plugins]`.
        name: String,
        /// What the plugin said (`invalid-config: …`), or how it failed.
        message: String,
    },
}

/// Every problem found in a configuration. Renders one error per line.
#[derive(Debug)]
pub struct ConfigErrors(Vec<ConfigError>);

impl ConfigErrors {
    /// Wraps a non-empty list of errors, sorted into file order (by line, then
    /// column; errors without a position keep their relative order, last).
    pub(crate) fn new(mut errors: Vec<ConfigError>) -> Self {
        errors.sort_by_key(|e| (e.line().is_none(), e.line(), e.column()));
        Self(errors)
    }

    /// The errors, in file order.
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }

    /// Iterates over the errors.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    /// The number of errors (at least one).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false for a list produced by this module; provided for API completeness.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The errors, by value.
    pub fn into_vec(self) -> Vec<ConfigError> {
        self.0
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        Self(vec![error])
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_on_one_line_with_all_parts() {
        let source = Source::new("agents.toml", "a = 1\n\n[x]\n  plugin = \"foo\"\n");
        let key = KeyPath::root()
            .key("agents")
            .index(1)
            .key("realtime")
            .key("plugin");
        let offset = source.text().find("plugin").map_or(0, |o| o);
        let e = ConfigError::at(
            &source,
            Some(offset..offset + 6),
            Some(&key),
            ConfigErrorKind::UnknownPlugin {
                name: "foo".into(),
                known: "known: echo".into(),
            },
        );
        assert_eq!(
            e.to_string(),
            r#"agents.toml:4:3: agents[1].realtime.plugin: unknown plugin "foo" (known: echo)"#
        );
    }

    #[test]
    fn at_key_positions_absent_keys_at_their_nearest_ancestor() {
        let source = Source::new(
            "agents.toml",
            "[plugins.echo]\npath = \"echo.wasm\"\n\n[[agents]]\nname = \"a\"\nrealtime = { plugin = \"echo\" }\n",
        );
        let key = KeyPath::root()
            .key("agents")
            .index(0)
            .key("realtime")
            .key("settings");
        let e = ConfigError::at_key(
            &source,
            &key,
            ConfigErrorKind::PluginRefused {
                name: "echo".into(),
                message: "invalid-config: bad mode".into(),
            },
        );
        assert_eq!(
            e.to_string(),
            "agents.toml:6:12: agents[0].realtime.settings: plugin echo refused this agent's \
             settings: invalid-config: bad mode"
        );
        let path = KeyPath::root().key("plugins").key("echo").key("path");
        let e = ConfigError::at_key(
            &source,
            &path,
            ConfigErrorKind::PluginLoad {
                name: "echo".into(),
                reason: "not a valid WASM component".into(),
            },
        );
        assert_eq!((e.line(), e.key()), (Some(2), Some("plugins.echo.path")));
    }

    #[test]
    fn leaves_out_unknown_parts() {
        let e = ConfigError::file("cfg/agents.toml".into(), None, ConfigErrorKind::NotUtf8);
        assert_eq!(
            e.to_string(),
            "cfg/agents.toml: config file is not valid UTF-8"
        );
        let list = ConfigErrors::new(vec![
            e,
            ConfigError::file("b.toml".into(), None, ConfigErrorKind::NoAgents),
        ]);
        let text = list.to_string();
        assert_eq!(text.lines().count(), 2);
        assert!(text.ends_with("add at least one [[agents]] section"));
    }
}
