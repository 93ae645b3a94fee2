//! Validation: [`RawConfig`] (as written, already interpolated) -> [`Config`] (typed,
//! checked, with routing lookup tables built).
//!
//! Every check runs even after an earlier one failed, so one run reports every problem
//! in the file. Each problem is located by the span of the offending value (or, inside
//! free-form settings, by looking its key path up in the document).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::error::{ConfigError, ConfigErrorKind, ConfigErrors};
use super::lookup::{Lookup, caller_placeholders};
use super::raw::{
    RawAgent, RawApi, RawCallerContext, RawConfig, RawLookup, RawPlugin, RawPluginUse, RawRecords,
    RawServer, RawTwilio,
};
use super::span::{KeyPath, Locator, line_col};
use super::tools::{AgentTools, RawAgentTools};
use super::{
    ACCOUNT_SID_PREFIX, API_RATE_RANGE, Agent, AgentMode, ApiConfig, BUDGET_RANGE_MS,
    CallerContext, Config, DEFAULT_API_BURST, DEFAULT_API_RATE_PER_MINUTE, DEFAULT_DRAIN_SECONDS,
    DEFAULT_ENDPOINTING_MS, DEFAULT_GRACE_MS, DEFAULT_HEARTBEAT_MS, DEFAULT_KEYPAD_TIMEOUT_MS,
    DEFAULT_LISTEN, DEFAULT_RECORDS_FILE, DEFAULT_TWILIO_API_BASE_URL, DRAIN_RANGE_SECONDS,
    ENDPOINTING_RANGE_MS, GRACE_RANGE_MS, HEARTBEAT_RANGE_MS, KEYPAD_TIMEOUT_RANGE_MS,
    MAX_AGENT_NAME_LEN, MAX_E164_DIGITS, MAX_NAMES_SHOWN, PipelineConfig, PluginConfig, PluginKind,
    PluginUse, RecordsConfig, RouteIndex, Secret, ServerConfig, Source, TwilioConfig,
};
use crate::plugin::budget::{CPU_BURST_RANGE_MS, CPU_PERCENT_RANGE, CpuLimits};

impl RawConfig {
    /// Checks everything and builds the validated [`Config`].
    ///
    /// Call after [`RawConfig::interpolate`]: `${VAR}` references left in place are
    /// validated as literal text. Touches the filesystem only to check that plugin files
    /// exist.
    ///
    /// # Errors
    ///
    /// Every problem found (never just the first), each with file, line, column and key
    /// path: bad `server.listen` / `server.public_url`, bad `twilio.account_sid`, missing
    /// or wrongly-named plugin files, bad or duplicate agent names, bad or duplicate
    /// numbers, empty or duplicate match tables, unknown plugins, an unknown
    /// `routing.default`, non-finite floats in settings, and no agents at all.
    pub fn validate(self, source: &Source) -> Result<Config, ConfigErrors> {
        let mut v = Validator {
            source,
            errors: Vec::new(),
            locator: None,
        };
        let root = KeyPath::root();

        let server = v.server(self.server, &root.key("server"));
        let twilio = v.twilio(self.twilio, &root.key("twilio"));
        let api = v.api(self.api, &root.key("api"));
        let records = v.records(self.records, &root.key("records"));
        let known_plugins: BTreeSet<String> = self.plugins.keys().cloned().collect();
        let plugins = v.plugins(self.plugins, &root.key("plugins"));
        let declared_lookups: BTreeSet<String> = self.lookups.keys().cloned().collect();
        let lookups = v.lookups(self.lookups, &root.key("lookups"));
        let declared_tools: BTreeSet<String> = self.tools.keys().cloned().collect();
        let tools = v.tools(self.tools, &root.key("tools"), &lookups);
        let mcp = v.mcp(self.mcp, &root.key("mcp"));
        let mcp_names: BTreeSet<String> = mcp.iter().map(|s| s.name.clone()).collect();

        let agents_path = root.key("agents");
        if self.agents.is_empty() {
            let span = v.locate(&agents_path).unwrap_or(0..0);
            v.err(Some(span), &agents_path, ConfigErrorKind::NoAgents);
        }
        let mut index = RouteIndex::default();
        let mut agents = Vec::with_capacity(self.agents.len());
        let mut seen = Seen::default();
        let mut fallbacks = Vec::new();
        for (i, mut agent) in self.agents.into_iter().enumerate() {
            let path = agents_path.index(i);
            if let Some(fallback) = agent.get_mut().fallback.take() {
                fallbacks.push((i, path.key("fallback"), fallback));
            }
            let context = agent.get_mut().caller_context.take();
            let events = agent.get_mut().events.take();
            let raw_tools = {
                let a = agent.get_mut();
                RawAgentTools {
                    tools: a.tools.take(),
                    transfer_to: a.transfer_to.take(),
                    tool_filler_ms: a.tool_filler_ms.take(),
                    filler: a.filler.take(),
                    result_schema: a.result_schema.take(),
                }
            };
            let mut agent = v.agent(agent, &path, &known_plugins, &plugins, &mut seen);
            agent.caller_context = context.and_then(|c| {
                v.caller_context(c, &path.key("caller_context"), &lookups, &declared_lookups)
            });
            agent.tools = v.agent_tools(raw_tools, &path, &tools, &declared_tools, &mcp_names);
            agent.events = events.and_then(|e| {
                let secret = api.callback_secret.as_ref();
                v.agent_events(e, &path.key("events"), &agent.name, secret)
            });
            index.add(&agent, agents.len());
            agents.push(agent);
        }

        for (i, path, fallback) in fallbacks {
            let span = fallback.span();
            let name = fallback.into_inner();
            if !index.by_name.contains_key(&name) || agents[i].name == name {
                let known = known_list(
                    agents
                        .iter()
                        .filter(|a| a.name != agents[i].name)
                        .map(|a| a.name.as_str()),
                    "no other agents are defined",
                );
                v.err(
                    Some(span),
                    &path,
                    ConfigErrorKind::UnknownFallbackAgent { name, known },
                );
            } else {
                agents[i].fallback = Some(name);
            }
        }

        let default_agent = self.routing.default.and_then(|default| {
            let span = default.span();
            let name = default.into_inner();
            if index.by_name.contains_key(&name) {
                Some(name)
            } else {
                let known = known_list(
                    agents.iter().map(|a| a.name.as_str()),
                    "no agents are defined",
                );
                v.err(
                    Some(span),
                    &root.key("routing").key("default"),
                    ConfigErrorKind::UnknownDefaultAgent { name, known },
                );
                None
            }
        });

        if !v.errors.is_empty() {
            return Err(ConfigErrors::new(v.errors));
        }
        Ok(Config {
            path: source.path().to_path_buf(),
            server,
            twilio,
            plugins,
            agents,
            default_agent,
            api,
            records,
            lookups,
            tools,
            mcp,
            routes: index,
        })
    }
}

/// First occurrences of names, numbers and match tables, for duplicate detection.
#[derive(Default)]
struct Seen {
    /// Agent name -> 1-based line of its first definition.
    names: HashMap<String, usize>,
    /// Number -> (agent that listed it first, 1-based line).
    numbers: HashMap<String, (String, usize)>,
    /// Match table -> (agent that has it, 1-based line).
    matches: HashMap<BTreeMap<String, String>, (String, usize)>,
}

pub(super) struct Validator<'s> {
    source: &'s Source,
    errors: Vec<ConfigError>,
    /// Built on first use: only needed to locate problems inside settings tables.
    locator: Option<Locator<'s>>,
}

impl<'s> Validator<'s> {
    pub(super) fn err(
        &mut self,
        span: Option<Range<usize>>,
        path: &KeyPath,
        kind: ConfigErrorKind,
    ) {
        self.errors
            .push(ConfigError::at(self.source, span, Some(path), kind));
    }

    /// The value of an optional integer key when it lies in `range`; an out-of-range error at
    /// the key otherwise.
    pub(super) fn in_range(
        &mut self,
        value: Option<Spanned<i64>>,
        range: std::ops::RangeInclusive<u64>,
        path: &KeyPath,
    ) -> Option<u64> {
        let value = value?;
        let span = value.span();
        let value = value.into_inner();
        match u64::try_from(value) {
            Ok(v) if range.contains(&v) => Some(v),
            _ => {
                self.err(
                    Some(span),
                    path,
                    ConfigErrorKind::OutOfRange {
                        value,
                        min: *range.start(),
                        max: *range.end(),
                    },
                );
                None
            }
        }
    }

    pub(super) fn locate(&mut self, path: &KeyPath) -> Option<Range<usize>> {
        let text = self.source.text();
        self.locator
            .get_or_insert_with(|| Locator::new(text))
            .span_of(path)
    }

    /// The config file's path.
    pub(super) fn source_path(&self) -> &Path {
        self.source.path()
    }

    fn line(&self, span: &Range<usize>) -> usize {
        line_col(self.source.text(), span.start).0
    }

    fn server(&mut self, raw: RawServer, path: &KeyPath) -> ServerConfig {
        let listen = match raw.listen {
            None => DEFAULT_LISTEN,
            Some(listen) => match listen.get_ref().parse::<SocketAddr>() {
                Ok(addr) => addr,
                Err(_) => {
                    let span = listen.span();
                    let value = listen.into_inner();
                    self.err(
                        Some(span),
                        &path.key("listen"),
                        ConfigErrorKind::InvalidListen { value },
                    );
                    DEFAULT_LISTEN
                }
            },
        };
        let public_url = raw.public_url.and_then(|url| {
            let span = url.span();
            let value = url.into_inner();
            if value.is_empty() {
                return None;
            }
            match check_public_url(&value) {
                Ok(normalized) => Some(normalized),
                Err(reason) => {
                    self.err(
                        Some(span),
                        &path.key("public_url"),
                        ConfigErrorKind::InvalidPublicUrl { value, reason },
                    );
                    None
                }
            }
        });
        let drain = match raw.drain_seconds {
            None => Duration::from_secs(DEFAULT_DRAIN_SECONDS),
            Some(value) => {
                let span = value.span();
                let value = value.into_inner();
                match u64::try_from(value) {
                    Ok(v) if DRAIN_RANGE_SECONDS.contains(&v) => Duration::from_secs(v),
                    _ => {
                        self.err(
                            Some(span),
                            &path.key("drain_seconds"),
                            ConfigErrorKind::CountOutOfRange {
                                value,
                                min: *DRAIN_RANGE_SECONDS.start(),
                                max: *DRAIN_RANGE_SECONDS.end(),
                            },
                        );
                        Duration::from_secs(DEFAULT_DRAIN_SECONDS)
                    }
                }
            }
        };
        ServerConfig {
            listen,
            public_url,
            drain,
            allow_private_destinations: raw
                .allow_private_destinations
                .map(Spanned::into_inner)
                .unwrap_or(false),
            plugin_cache: match raw.plugin_cache.map(Spanned::into_inner) {
                Some(false) => None,
                _ => match raw.plugin_cache_dir.map(Spanned::into_inner) {
                    Some(dir) if !dir.is_empty() => {
                        Some(resolve_plugin_path(self.source.path(), &dir))
                    }
                    _ => super::default_plugin_cache_dir(),
                },
            },
        }
    }

    fn twilio(&mut self, raw: RawTwilio, path: &KeyPath) -> TwilioConfig {
        let account_sid = raw.account_sid.and_then(|sid| {
            let span = sid.span();
            let sid = sid.into_inner();
            if sid.is_empty() {
                None
            } else if sid.starts_with(ACCOUNT_SID_PREFIX) {
                Some(sid)
            } else {
                self.err(
                    Some(span),
                    &path.key("account_sid"),
                    ConfigErrorKind::InvalidAccountSid,
                );
                None
            }
        });
        let auth_token = raw
            .auth_token
            .map(Spanned::into_inner)
            .filter(|token| !token.is_empty());
        let validate_signatures = raw.validate_signatures.is_none_or(Spanned::into_inner);
        let api_base_url = match raw.api_base_url {
            Some(url) if !url.get_ref().is_empty() => {
                let span = url.span();
                let value = url.into_inner();
                match check_public_url(&value) {
                    Ok(url) => url,
                    Err(reason) => {
                        self.err(
                            Some(span),
                            &path.key("api_base_url"),
                            ConfigErrorKind::InvalidUrl { value, reason },
                        );
                        String::new()
                    }
                }
            }
            _ => DEFAULT_TWILIO_API_BASE_URL.to_string(),
        };
        let caller_id = raw.caller_id.and_then(|number| {
            let span = number.span();
            let number = number.into_inner();
            if number.is_empty() {
                None
            } else if is_e164(&number) {
                Some(number)
            } else {
                self.err(
                    Some(span),
                    &path.key("caller_id"),
                    ConfigErrorKind::InvalidNumber { number },
                );
                None
            }
        });
        let mut accounts = BTreeMap::new();
        for (sid, account) in raw.accounts {
            let account_path = path.key("accounts").key(&sid);
            let span = account.span();
            if !sid.starts_with(ACCOUNT_SID_PREFIX) {
                self.err(
                    Some(span),
                    &account_path,
                    ConfigErrorKind::InvalidAccountSid,
                );
                continue;
            }
            let token = account.into_inner().auth_token;
            let token_span = token.span();
            let token = token.into_inner();
            if token.is_empty() {
                self.err(
                    Some(token_span),
                    &account_path.key("auth_token"),
                    ConfigErrorKind::EmptySecret,
                );
                continue;
            }
            accounts.insert(sid, Secret::new(token));
        }
        TwilioConfig {
            account_sid,
            auth_token,
            validate_signatures,
            api_base_url,
            caller_id,
            accounts,
        }
    }

    fn api(&mut self, raw: RawApi, path: &KeyPath) -> ApiConfig {
        let mut tokens: Vec<Secret> = Vec::new();
        let mut first_index: HashMap<String, usize> = HashMap::new();
        for (i, token) in raw.tokens.into_iter().flatten().enumerate() {
            let span = token.span();
            let token = token.into_inner();
            if token.is_empty() {
                continue;
            }
            if let Some(&first) = first_index.get(&token) {
                self.err(
                    Some(span),
                    &path.key("tokens").index(i),
                    ConfigErrorKind::DuplicateToken { first },
                );
                continue;
            }
            first_index.insert(token.clone(), i);
            tokens.push(Secret::new(token));
        }
        let mut count = |value: Option<Spanned<i64>>, key: &str, default: u32| -> u32 {
            let Some(value) = value else {
                return default;
            };
            let span = value.span();
            let value = value.into_inner();
            match u64::try_from(value) {
                Ok(v) if API_RATE_RANGE.contains(&v) => u32::try_from(v).unwrap_or(default),
                _ => {
                    self.err(
                        Some(span),
                        &path.key(key),
                        ConfigErrorKind::CountOutOfRange {
                            value,
                            min: *API_RATE_RANGE.start(),
                            max: *API_RATE_RANGE.end(),
                        },
                    );
                    default
                }
            }
        };
        let rate_per_minute = count(
            raw.rate_per_minute,
            "rate_per_minute",
            DEFAULT_API_RATE_PER_MINUTE,
        );
        let burst = count(raw.burst, "burst", DEFAULT_API_BURST);
        let callback_secret = raw.callback_secret.and_then(|secret| {
            let span = secret.span();
            let text = secret.into_inner();
            if text.is_empty() {
                return None;
            }
            match crate::callbacks::WebhookSecret::parse(&text) {
                Ok(secret) => Some(secret),
                Err(reason) => {
                    self.err(
                        Some(span),
                        &path.key("callback_secret"),
                        ConfigErrorKind::InvalidCallbackSecret(reason),
                    );
                    None
                }
            }
        });
        ApiConfig {
            tokens,
            rate_per_minute,
            burst,
            callback_secret,
        }
    }

    fn records(&mut self, raw: RawRecords, path: &KeyPath) -> RecordsConfig {
        let heartbeat_ms = self
            .in_range(
                raw.heartbeat_ms,
                HEARTBEAT_RANGE_MS,
                &path.key("heartbeat_ms"),
            )
            .unwrap_or(DEFAULT_HEARTBEAT_MS);
        let min_grace = (heartbeat_ms * 2).max(*GRACE_RANGE_MS.start());
        let grace_ms = self
            .in_range(
                raw.grace_ms,
                min_grace..=*GRACE_RANGE_MS.end(),
                &path.key("grace_ms"),
            )
            .unwrap_or(DEFAULT_GRACE_MS.max(min_grace));
        let url = raw.url.and_then(|url| {
            let span = url.span();
            let url = url.into_inner();
            let reason = if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                Some("not a PostgreSQL URL (postgres://user:password@host:port/database)")
            } else if raw.path.is_some() {
                Some("set either `path` (SQLite, one gateway) or `url` (PostgreSQL, a fleet), not both")
            } else if crate::records::check_postgres_url(&url).is_err() {
                Some("not a URL the PostgreSQL driver understands")
            } else {
                None
            };
            match reason {
                Some(reason) => {
                    // The URL may hold a password: only its scheme is shown.
                    let shown = url.split("://").next().unwrap_or("").to_owned() + "://…";
                    self.err(
                        Some(span),
                        &path.key("url"),
                        ConfigErrorKind::InvalidUrl {
                            value: shown,
                            reason: reason.to_owned(),
                        },
                    );
                    None
                }
                None => Some(Secret::new(url)),
            }
        });
        let instance = raw
            .instance
            .map(Spanned::into_inner)
            .map(|i| i.trim().to_owned())
            .filter(|i| !i.is_empty());
        let records_path = match raw.path.map(Spanned::into_inner) {
            Some(path) if path.is_empty() => None,
            Some(path) => Some(resolve_plugin_path(self.source.path(), &path)),
            None => Some(resolve_plugin_path(
                self.source.path(),
                DEFAULT_RECORDS_FILE,
            )),
        };
        RecordsConfig {
            path: records_path,
            url,
            instance,
            heartbeat: Duration::from_millis(heartbeat_ms),
            grace: Duration::from_millis(grace_ms),
        }
    }

    /// Validates every plugin; returns the valid ones.
    fn plugins(
        &mut self,
        raw: BTreeMap<String, Spanned<RawPlugin>>,
        path: &KeyPath,
    ) -> BTreeMap<String, PluginConfig> {
        let mut plugins = BTreeMap::new();
        for (name, plugin) in raw {
            let path = path.key(&name);
            let plugin = plugin.into_inner();
            let settings = self.settings(plugin.settings, &path.key("settings"));
            let budget = self
                .in_range(plugin.budget_ms, BUDGET_RANGE_MS, &path.key("budget_ms"))
                .map(Duration::from_millis);
            let cpu_percent = self
                .in_range(
                    plugin.cpu_percent,
                    CPU_PERCENT_RANGE,
                    &path.key("cpu_percent"),
                )
                .and_then(|v| u32::try_from(v).ok());
            let cpu_burst = self
                .in_range(
                    plugin.cpu_burst_ms,
                    CPU_BURST_RANGE_MS,
                    &path.key("cpu_burst_ms"),
                )
                .map(Duration::from_millis);
            let cpu = CpuLimits::new(cpu_percent, cpu_burst, budget);
            let path_span = plugin.path.span();
            let file = resolve_plugin_path(self.source.path(), plugin.path.get_ref());
            let kind = plugin_kind(&file);
            if kind.is_none() {
                self.err(
                    Some(path_span.clone()),
                    &path.key("path"),
                    ConfigErrorKind::PluginExtension { path: file.clone() },
                );
            }
            let file_error = match std::fs::metadata(&file) {
                Ok(meta) if meta.is_file() => None,
                Ok(_) => Some(ConfigErrorKind::PluginNotAFile { path: file.clone() }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Some(ConfigErrorKind::PluginNotFound { path: file.clone() })
                }
                Err(error) => Some(ConfigErrorKind::PluginUnreadable {
                    path: file.clone(),
                    error,
                }),
            };
            if let Some(kind) = file_error {
                self.err(Some(path_span), &path.key("path"), kind);
            }
            if let Some(kind) = kind {
                plugins.insert(
                    name.clone(),
                    PluginConfig {
                        name,
                        path: file,
                        kind,
                        settings,
                        budget,
                        cpu,
                    },
                );
            }
        }
        plugins
    }

    fn agent(
        &mut self,
        raw: Spanned<RawAgent>,
        path: &KeyPath,
        known_plugins: &BTreeSet<String>,
        plugins: &BTreeMap<String, PluginConfig>,
        seen: &mut Seen,
    ) -> Agent {
        let agent_span = raw.span();
        let raw = raw.into_inner();

        let name_span = raw.name.span();
        let name = raw.name.into_inner();
        if let Err(reason) = check_agent_name(&name) {
            self.err(
                Some(name_span.clone()),
                &path.key("name"),
                ConfigErrorKind::InvalidAgentName {
                    name: name.clone(),
                    reason,
                },
            );
        }
        let line = self.line(&name_span);
        if let Some(&first_line) = seen.names.get(&name) {
            self.err(
                Some(name_span),
                &path.key("name"),
                ConfigErrorKind::DuplicateAgent {
                    name: name.clone(),
                    first_line,
                },
            );
        } else {
            seen.names.insert(name.clone(), line);
        }

        let mut numbers = Vec::with_capacity(raw.numbers.len());
        for (n, number) in raw.numbers.into_iter().enumerate() {
            let span = number.span();
            let number = number.into_inner();
            let number_path = path.key("numbers").index(n);
            if !is_e164(&number) {
                self.err(
                    Some(span),
                    &number_path,
                    ConfigErrorKind::InvalidNumber { number },
                );
                continue;
            }
            if let Some((agent, first_line)) = seen.numbers.get(&number) {
                let kind = ConfigErrorKind::DuplicateNumber {
                    number,
                    agent: agent.clone(),
                    first_line: *first_line,
                };
                self.err(Some(span), &number_path, kind);
                continue;
            }
            let line = self.line(&span);
            seen.numbers.insert(number.clone(), (name.clone(), line));
            numbers.push(number);
        }

        let match_params = raw
            .match_params
            .map(|m| self.match_table(m, &path.key("match"), &name, seen))
            .unwrap_or_default();

        let greeting = raw
            .greeting
            .map(Spanned::into_inner)
            .filter(|g| !g.is_empty());

        let mode = match (raw.realtime, raw.pipeline) {
            (Some(realtime), None) => AgentMode::Realtime(self.plugin_use(
                realtime,
                &path.key("realtime"),
                known_plugins,
                plugins,
            )),
            (None, Some(pipeline)) => {
                let pipeline_path = path.key("pipeline");
                let raw = pipeline.into_inner();
                let mut stage = |raw, key: &str| {
                    self.plugin_use(raw, &pipeline_path.key(key), known_plugins, plugins)
                };
                let stt = stage(raw.stt, "stt");
                let llm = stage(raw.llm, "llm");
                let tts = stage(raw.tts, "tts");
                let mut endpointing = Duration::from_millis(DEFAULT_ENDPOINTING_MS);
                if let Some(ms) = raw.endpointing_ms {
                    let span = ms.span();
                    let value = ms.into_inner();
                    match u64::try_from(value) {
                        Ok(v) if ENDPOINTING_RANGE_MS.contains(&v) => {
                            endpointing = Duration::from_millis(v);
                        }
                        _ => self.err(
                            Some(span),
                            &pipeline_path.key("endpointing_ms"),
                            ConfigErrorKind::OutOfRange {
                                value,
                                min: *ENDPOINTING_RANGE_MS.start(),
                                max: *ENDPOINTING_RANGE_MS.end(),
                            },
                        ),
                    }
                }
                let keypad_timeout = Duration::from_millis(
                    self.in_range(
                        raw.keypad_timeout_ms,
                        KEYPAD_TIMEOUT_RANGE_MS,
                        &pipeline_path.key("keypad_timeout_ms"),
                    )
                    .unwrap_or(DEFAULT_KEYPAD_TIMEOUT_MS),
                );
                AgentMode::Pipeline(Box::new(PipelineConfig {
                    stt,
                    llm,
                    tts,
                    keypad_timeout,
                    resume_false_interruptions: raw
                        .resume_false_interruptions
                        .is_none_or(Spanned::into_inner),
                    min_interruption: Duration::from_millis(
                        self.in_range(
                            raw.min_interruption_ms,
                            0..=2000,
                            &pipeline_path.key("min_interruption_ms"),
                        )
                        .unwrap_or(0),
                    ),
                    min_interruption_words: self
                        .in_range(
                            raw.min_interruption_words,
                            0..=10,
                            &pipeline_path.key("min_interruption_words"),
                        )
                        .unwrap_or(0) as usize,
                    backchannel: raw.backchannel.unwrap_or_default(),
                    instructions: raw
                        .instructions
                        .map(Spanned::into_inner)
                        .unwrap_or_default(),
                    endpointing,
                }))
            }
            (realtime, _) => {
                let both = realtime.is_some();
                self.err(
                    Some(agent_span),
                    path,
                    ConfigErrorKind::AgentMode(if both {
                        "an agent has `realtime` or `pipeline`, not both"
                    } else {
                        "an agent needs `realtime = { plugin = … }` or a `[agents.pipeline]` table"
                    }),
                );
                AgentMode::Realtime(PluginUse {
                    plugin: String::new(),
                    settings: serde_json::Value::Object(serde_json::Map::new()),
                    effective_settings: serde_json::Value::Object(serde_json::Map::new()),
                    settings_json: "{}".into(),
                    secrets: BTreeMap::new(),
                    allowed_hosts: Vec::new(),
                })
            }
        };

        Agent {
            name,
            numbers,
            match_params,
            greeting,
            fallback: None,
            mode,
            caller_context: None,
            tools: AgentTools::default(),
            events: None,
        }
    }

    /// Loads every `[lookups.NAME]` file (paths relative to the config file).
    fn lookups(
        &mut self,
        raw: BTreeMap<String, Spanned<RawLookup>>,
        path: &KeyPath,
    ) -> BTreeMap<String, std::sync::Arc<Lookup>> {
        let mut lookups = BTreeMap::new();
        for (name, lookup) in raw {
            let lookup = lookup.into_inner();
            let span = lookup.path.span();
            let file = resolve_plugin_path(self.source.path(), lookup.path.get_ref());
            let key = lookup
                .key
                .map_or_else(|| "phone".to_string(), Spanned::into_inner);
            match Lookup::load(&file, &key) {
                Ok(loaded) => {
                    lookups.insert(name, std::sync::Arc::new(loaded));
                }
                Err(e) => self.err(
                    Some(span),
                    &path.key(&name).key("path"),
                    ConfigErrorKind::Lookup(e),
                ),
            }
        }
        lookups
    }

    /// Validates an agent's `caller_context` against the loaded lookups.
    fn caller_context(
        &mut self,
        raw: Spanned<RawCallerContext>,
        path: &KeyPath,
        lookups: &BTreeMap<String, std::sync::Arc<Lookup>>,
        declared: &BTreeSet<String>,
    ) -> Option<CallerContext> {
        let raw = raw.into_inner();
        let span = raw.lookup.span();
        let name = raw.lookup.into_inner();
        let Some(lookup) = lookups.get(&name) else {
            if declared.contains(&name) {
                // Its file did not load: that error is reported at the lookup.
                return None;
            }
            let known = known_list(
                declared.iter().map(String::as_str),
                "no [lookups] are defined",
            );
            self.err(
                Some(span),
                &path.key("lookup"),
                ConfigErrorKind::UnknownLookup { name, known },
            );
            return None;
        };
        let greeting = raw.greeting.and_then(|g| {
            let span = g.span();
            let text = g.into_inner();
            for column in caller_placeholders(&text) {
                if !lookup.columns.iter().any(|c| c == column) {
                    self.err(
                        Some(span.clone()),
                        &path.key("greeting"),
                        ConfigErrorKind::UnknownCallerColumn {
                            column: column.to_string(),
                            lookup: name.clone(),
                            columns: lookup.columns.join(", "),
                        },
                    );
                }
            }
            Some(text).filter(|t| !t.is_empty())
        });
        Some(CallerContext {
            lookup: lookup.clone(),
            name,
            by: raw
                .by
                .map_or_else(|| "From".to_string(), Spanned::into_inner),
            greeting,
        })
    }

    /// Validates one `{ plugin, settings, secrets, allowed_hosts }` table of an agent.
    fn plugin_use(
        &mut self,
        raw: Spanned<RawPluginUse>,
        path: &KeyPath,
        known_plugins: &BTreeSet<String>,
        plugins: &BTreeMap<String, PluginConfig>,
    ) -> PluginUse {
        let raw = raw.into_inner();
        let plugin_span = raw.plugin.span();
        let plugin = raw.plugin.into_inner();
        if !known_plugins.contains(&plugin) {
            let known = known_list(
                known_plugins.iter().map(String::as_str),
                "no [plugins] are defined",
            );
            self.err(
                Some(plugin_span),
                &path.key("plugin"),
                ConfigErrorKind::UnknownPlugin {
                    name: plugin.clone(),
                    known,
                },
            );
        }
        let settings = self.settings(raw.settings, &path.key("settings"));
        let effective_settings = overlay(plugins.get(&plugin).map(|p| &p.settings), &settings);
        let settings_json = effective_settings.to_string();
        let secrets = raw
            .secrets
            .unwrap_or_default()
            .into_iter()
            .map(|(name, value)| (name, Secret::new(value.into_inner())))
            .collect();
        let mut allowed_hosts = Vec::new();
        for (n, host) in raw
            .allowed_hosts
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let span = host.span();
            let host = host.into_inner().to_ascii_lowercase();
            if is_host_pattern(&host) {
                allowed_hosts.push(host);
            } else {
                self.err(
                    Some(span),
                    &path.key("allowed_hosts").index(n),
                    ConfigErrorKind::BadHost { host },
                );
            }
        }
        PluginUse {
            plugin,
            settings,
            effective_settings,
            settings_json,
            secrets,
            allowed_hosts,
        }
    }

    /// Validates one agent's `match` table and returns it as plain strings.
    fn match_table(
        &mut self,
        raw: Spanned<BTreeMap<Spanned<String>, Spanned<String>>>,
        path: &KeyPath,
        agent: &str,
        seen: &mut Seen,
    ) -> BTreeMap<String, String> {
        let span = raw.span();
        let raw = raw.into_inner();
        if raw.is_empty() {
            self.err(Some(span), path, ConfigErrorKind::EmptyMatch);
            return BTreeMap::new();
        }
        let mut table = BTreeMap::new();
        for (key, value) in raw {
            let key_path = path.key(key.get_ref());
            if key.get_ref().is_empty() {
                self.err(Some(key.span()), &key_path, ConfigErrorKind::EmptyMatchKey);
            }
            if value.get_ref().is_empty() {
                self.err(
                    Some(value.span()),
                    &key_path,
                    ConfigErrorKind::EmptyMatchValue,
                );
            }
            table.insert(key.into_inner(), value.into_inner());
        }
        if let Some((other, first_line)) = seen.matches.get(&table) {
            let kind = ConfigErrorKind::DuplicateMatch {
                agent: other.clone(),
                first_line: *first_line,
            };
            self.err(Some(span), path, kind);
        } else {
            let line = self.line(&span);
            seen.matches.insert(table.clone(), (agent.to_owned(), line));
        }
        table
    }

    /// Converts an optional settings table to a JSON object (`{}` when absent).
    fn settings(&mut self, raw: Option<Spanned<toml::Table>>, path: &KeyPath) -> serde_json::Value {
        match raw {
            None => serde_json::Value::Object(serde_json::Map::new()),
            Some(table) => {
                let table = toml::Value::Table(table.into_inner());
                self.json(table, path)
            }
        }
    }

    /// Converts a TOML value to JSON. Datetimes become their TOML text
    /// (`1979-05-27T07:32:00Z`); NaN and infinities are errors (JSON cannot hold them).
    pub(super) fn json(&mut self, value: toml::Value, path: &KeyPath) -> serde_json::Value {
        use serde_json::Value as J;
        match value {
            toml::Value::String(s) => J::String(s),
            toml::Value::Integer(i) => J::from(i),
            toml::Value::Boolean(b) => J::Bool(b),
            toml::Value::Datetime(d) => J::String(d.to_string()),
            toml::Value::Float(f) => match serde_json::Number::from_f64(f) {
                Some(n) => J::Number(n),
                None => {
                    let span = self.locate(path);
                    self.err(span, path, ConfigErrorKind::NonFiniteFloat { value: f });
                    J::Null
                }
            },
            toml::Value::Array(items) => J::Array(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| self.json(item, &path.index(i)))
                    .collect(),
            ),
            toml::Value::Table(table) => J::Object(
                table
                    .into_iter()
                    .map(|(k, v)| {
                        let value = self.json(v, &path.key(&k));
                        (k, value)
                    })
                    .collect(),
            ),
        }
    }
}

/// The plugin's settings with the agent's top-level keys laid over them (a shallow
/// merge: an agent key replaces the plugin's value for that key wholesale).
fn overlay(base: Option<&serde_json::Value>, over: &serde_json::Value) -> serde_json::Value {
    let mut merged = match base {
        Some(serde_json::Value::Object(map)) => map.clone(),
        _ => serde_json::Map::new(),
    };
    if let serde_json::Value::Object(over) = over {
        for (k, v) in over {
            merged.insert(k.clone(), v.clone());
        }
    }
    serde_json::Value::Object(merged)
}

/// `known: a, b, c` (in the given order, without repeats, at most [`MAX_NAMES_SHOWN`]
/// names), or `none` when there are no names.
pub(super) fn known_list<'a>(names: impl Iterator<Item = &'a str>, none: &str) -> String {
    let mut seen = BTreeSet::new();
    let names: Vec<&str> = names.filter(|name| seen.insert(*name)).collect();
    if names.is_empty() {
        return none.to_owned();
    }
    let mut list = names
        .iter()
        .take(MAX_NAMES_SHOWN)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > MAX_NAMES_SHOWN {
        list.push_str(&format!(", ... {} more", names.len() - MAX_NAMES_SHOWN));
    }
    format!("known: {list}")
}

/// Resolves a plugin path from the config: absolute paths as is, relative ones against
/// the config file's directory, made absolute (lexically, without touching the
/// filesystem) so they stay valid if the working directory changes.
pub(super) fn resolve_plugin_path(config_path: &Path, plugin_path: &str) -> PathBuf {
    let plugin_path = Path::new(plugin_path);
    if plugin_path.is_absolute() {
        return plugin_path.to_path_buf();
    }
    let dir = config_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let joined = dir.join(plugin_path);
    std::path::absolute(&joined).unwrap_or(joined)
}

/// The plugin kind implied by the file extension (ASCII case-insensitive), if supported.
fn plugin_kind(path: &Path) -> Option<PluginKind> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "wasm" => Some(PluginKind::Wasm),
        "so" | "dylib" => Some(PluginKind::Native),
        _ => None,
    }
}

/// Checks `[A-Za-z0-9_-]{1,MAX_AGENT_NAME_LEN}`.
fn check_agent_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_AGENT_NAME_LEN {
        return Err(format!("longer than {MAX_AGENT_NAME_LEN} characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(format!("{c:?} is not allowed (use A-Z, a-z, 0-9, _ and -)"));
    }
    Ok(())
}

/// Whether `number` is E.164: `+` then 1 to [`MAX_E164_DIGITS`] ASCII digits, nothing
/// else (no spaces or dashes).
pub fn is_e164(number: &str) -> bool {
    number.strip_prefix('+').is_some_and(|digits| {
        (1..=MAX_E164_DIGITS).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
    })
}

/// Checks `http(s)://host[:port]` with an optional trailing `/`, and returns it without
/// the trailing slash.
fn check_public_url(url: &str) -> Result<String, String> {
    let lower = url.to_ascii_lowercase();
    let scheme_len = if lower.starts_with("https://") {
        "https://".len()
    } else if lower.starts_with("http://") {
        "http://".len()
    } else {
        return Err("must start with http:// or https://".into());
    };
    let authority = url[scheme_len..]
        .strip_suffix('/')
        .unwrap_or(&url[scheme_len..]);
    if authority.contains(['/', '?', '#']) {
        return Err("must not have a path, query or fragment (Twilio webhooks are served at fixed paths under it)".into());
    }
    if authority.contains('@') {
        return Err("must not contain credentials".into());
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return Err("unclosed [ in IPv6 host".into());
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("invalid IPv6 address {v6:?}"));
        }
        match after {
            "" => (v6, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (v6, Some(port)),
                None => return Err("unexpected text after ]".into()),
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    if !authority.starts_with('[')
        && !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(format!("invalid host {host:?}"));
    }
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(p) if p != 0 && port.bytes().all(|b| b.is_ascii_digit()) => {}
            _ => return Err(format!("invalid port {port:?}")),
        }
    }
    Ok(format!("{}{authority}", &url[..scheme_len]))
}

/// True for `host`, `host:port` and `*.domain` (lowercase letters, digits, `-`, `.`).
fn is_host_pattern(pattern: &str) -> bool {
    let (host, port) = match pattern.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (pattern, None),
    };
    if port.is_some_and(|p| p.parse::<u16>().map_or(true, |p| p == 0)) {
        return false;
    }
    let host = host.strip_prefix("*.").unwrap_or(host);
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164() {
        for good in ["+1", "+14155550100", "+123456789012345"] {
            assert!(is_e164(good), "{good}");
        }
        for bad in [
            "",
            "+",
            "14155550100",
            "+1 415 555 0100",
            "+1234567890123456",
            "+1-415",
            "++1",
            "+１",
        ] {
            assert!(!is_e164(bad), "{bad}");
        }
    }

    #[test]
    fn agent_names() {
        assert!(check_agent_name("front-desk_2").is_ok());
        assert!(check_agent_name(&"a".repeat(MAX_AGENT_NAME_LEN)).is_ok());
        assert!(check_agent_name(&"a".repeat(MAX_AGENT_NAME_LEN + 1)).is_err());
        assert!(check_agent_name("").is_err());
        assert!(check_agent_name("front desk").is_err());
        assert!(check_agent_name("café").is_err());
    }

    #[test]
    fn public_urls() {
        assert_eq!(
            check_public_url("https://voice.example.com/").as_deref(),
            Ok("https://voice.example.com")
        );
        assert_eq!(
            check_public_url("http://localhost:8080").as_deref(),
            Ok("http://localhost:8080")
        );
        assert_eq!(
            check_public_url("HTTPS://[::1]:443").as_deref(),
            Ok("HTTPS://[::1]:443")
        );
        for bad in [
            "voice.example.com",
            "ftp://x",
            "https://",
            "https:///",
            "https://x.com/twilio",
            "https://x.com?a=1",
            "https://u:p@x.com",
            "https://x.com:0",
            "https://x.com:99999",
            "https://x.com:+80",
            "https://x .com",
            "https://[nope]",
        ] {
            assert!(check_public_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn plugin_kinds() {
        assert_eq!(
            plugin_kind(Path::new("a/echo.wasm")),
            Some(PluginKind::Wasm)
        );
        assert_eq!(plugin_kind(Path::new("libx.so")), Some(PluginKind::Native));
        assert_eq!(
            plugin_kind(Path::new("libx.DYLIB")),
            Some(PluginKind::Native)
        );
        assert_eq!(plugin_kind(Path::new("x.dll")), None);
        assert_eq!(plugin_kind(Path::new("wasm")), None);
    }

    #[test]
    fn relative_plugin_paths_resolve_against_the_config_dir() {
        let p = resolve_plugin_path(Path::new("/etc/sb/agents.toml"), "plugins/echo.wasm");
        assert_eq!(p, Path::new("/etc/sb/plugins/echo.wasm"));
        let p = resolve_plugin_path(Path::new("/etc/sb/agents.toml"), "/opt/echo.wasm");
        assert_eq!(p, Path::new("/opt/echo.wasm"));
        let p = resolve_plugin_path(Path::new("agents.toml"), "echo.wasm");
        assert!(p.is_absolute(), "{}", p.display());
        assert!(p.ends_with("echo.wasm"));
    }

    #[test]
    fn overlay_is_shallow() {
        let base = serde_json::json!({"mode": "utterance", "voice": {"name": "a", "speed": 1}});
        let over = serde_json::json!({"voice": {"name": "b"}, "extra": true});
        let merged = overlay(Some(&base), &over);
        assert_eq!(
            merged,
            serde_json::json!({"mode": "utterance", "voice": {"name": "b"}, "extra": true})
        );
        assert_eq!(overlay(None, &over), over);
    }

    #[test]
    fn known_lists_are_capped() {
        let mut names: Vec<String> = (0..MAX_NAMES_SHOWN + 2).map(|i| format!("a{i}")).collect();
        names.insert(1, "a0".into());
        let s = known_list(names.iter().map(String::as_str), "none");
        assert!(s.starts_with("known: a0, a1"), "{s}");
        assert!(s.ends_with(", ... 2 more"), "{s}");
        assert_eq!(known_list(std::iter::empty(), "none"), "none");
    }
}
