//! `switchboard check`: validates an agents file as the server would load it, without serving,
//! so an operator can vet an edit before a reload (or a deploy) picks it up.
//!
//! Three layers, each only once the one before it passed:
//!
//! 1. the file itself, exactly as `serve` reads it ([`config::load`], then
//!    [`config::from_source`] with the process environment): TOML, `${VAR}` interpolation (an
//!    unset variable without a default is reported on its line), plugin files present,
//!    numbers unique, routes unambiguous, …;
//! 2. every plugin loads ([`Plugins::load`], one plugin at a time so that every broken
//!    plugin is reported, each at its `plugins.NAME.path`), and implements the role each
//!    agent gives it;
//! 3. every agent's settings fit its plugins: one session is opened per agent and plugin use,
//!    with that agent's settings, and dropped at once. Plugins refuse unknown or bad settings
//!    when a session opens, so a refusal is reported at `agents[i].realtime.settings` (or
//!    `agents[i].pipeline.stt.settings`, …). Host I/O the session asks for is never carried
//!    out: nothing reaches the network. (Native plugins are trusted code running in-process;
//!    opening a session runs it.) A plugin use granted an empty secret is not opened: its agent
//!    is disabled, a warning and not a problem ([`config::disabled_agents`]).
//!
//! Every problem renders as [`ConfigError`] does, `FILE:LINE:COLUMN: KEY.PATH: message`.
//! [`Warning`]s (a configuration that serves, but probably not as meant) render the same way
//! with `warning: ` before the message.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{
    self, Config, ConfigError, ConfigErrorKind, ConfigErrors, EnvLookup, KeyPath, Source,
};
use crate::plugin::io::IoPolicy;
use crate::plugin::wasm::WasmEngine;
use crate::plugin::{
    CallInfo, Plugin, PluginLoadError, Plugins, SessionConfig, SessionError, Stage,
};

/// The `CallSid` of the sessions a check opens (none of them is a real call).
pub const CHECK_CALL_SID: &str = "CAswitchboardcheck";

/// The `streamSid` of the sessions a check opens.
pub const CHECK_STREAM_SID: &str = "MZswitchboardcheck";

/// What a check found.
#[derive(Debug)]
pub struct Report {
    /// The file checked, as named.
    pub path: PathBuf,
    /// Every error, in file order (positionless ones last). Empty: the gateway would serve
    /// this file.
    pub errors: Vec<ConfigError>,
    /// Things that serve but are probably not meant, in file order.
    pub warnings: Vec<Warning>,
    /// Counts of the validated config; `None` when the file itself did not validate.
    pub summary: Option<Summary>,
}

/// The shape of a configuration that validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// `[[agents]]` entries.
    pub agents: usize,
    /// Of those, the ones an empty secret disables ([`config::Agent::is_disabled`]).
    pub disabled: usize,
    /// `[plugins.NAME]` sections.
    pub plugins: usize,
    /// `routing.default`, if set.
    pub default_agent: Option<String>,
}

impl Summary {
    /// The summary of `config`.
    pub fn of(config: &Config) -> Self {
        Self {
            agents: config.agents.len(),
            disabled: config.agents.iter().filter(|a| a.is_disabled()).count(),
            plugins: config.plugins.len(),
            default_agent: config.default_agent.clone(),
        }
    }
}

impl fmt::Display for Summary {
    /// `2 agents, 1 plugin, default agent echo`; `3 agents (1 disabled), …` when an empty
    /// secret disables one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        write!(f, "{} agent{}", self.agents, plural(self.agents))?;
        if self.disabled > 0 {
            write!(f, " ({} disabled)", self.disabled)?;
        }
        write!(f, ", {} plugin{}, ", self.plugins, plural(self.plugins))?;
        match &self.default_agent {
            Some(name) => write!(f, "default agent {name}"),
            None => f.write_str("no default agent"),
        }
    }
}

impl Report {
    /// Whether the gateway would serve this file (warnings aside).
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// One line per error and warning, in file order: `FILE:LINE:COLUMN: KEY: message`.
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<(Option<usize>, Option<usize>, String)> = self
            .errors
            .iter()
            .map(|e| (e.line(), e.column(), e.to_string()))
            .chain(
                self.warnings
                    .iter()
                    .map(|w| (w.line, w.column, w.to_string())),
            )
            .collect();
        lines.sort_by_key(|(line, column, _)| (line.is_none(), *line, *column));
        lines.into_iter().map(|(_, _, text)| text).collect()
    }

    /// `agents.toml: OK — 2 agents, 1 plugin, default agent echo` when there are no errors.
    pub fn ok_line(&self) -> Option<String> {
        let summary = self.summary.as_ref().filter(|_| self.is_ok())?;
        Some(format!("{}: OK — {summary}", self.path.display()))
    }
}

/// A configuration the gateway serves, but probably not as the operator meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The configuration file.
    pub file: PathBuf,
    /// 1-based line of the key (or its table), when the file has it.
    pub line: Option<usize>,
    /// 1-based column, with `line`.
    pub column: Option<usize>,
    /// The key, e.g. `twilio.validate_signatures`.
    pub key: String,
    /// What it means.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}: warning: {}", self.key, self.message)
    }
}

/// The warnings `config` (read from `source`) deserves: signatures on without an auth token
/// (every Twilio request is refused), signatures off (anyone can place calls into the agents),
/// no operator API tokens (the API refuses everyone), and each agent an empty secret disables
/// ([`config::disabled_agents`]).
pub fn warnings(source: &Source, config: &Config) -> Vec<Warning> {
    let mut found: Vec<(&'static str, &'static str)> = Vec::new();
    let twilio = &config.twilio;
    if !twilio.validate_signatures {
        found.push((
            "twilio.validate_signatures",
            "Twilio request signatures are not checked: anyone who can reach the gateway can \
             place calls into its agents",
        ));
    } else if twilio.auth_token.is_none() && twilio.accounts.is_empty() {
        found.push((
            "twilio.auth_token",
            "no Twilio auth token while validate_signatures is on: every Twilio request will be \
             refused with 403",
        ));
    }
    if config.api.tokens.is_empty() {
        found.push((
            "api.tokens",
            "no operator API tokens: the gateway makes one at start and logs it with the \
             console's address (console: http://ADDR/console#token=…)",
        ));
    }
    let disabled = config::disabled_agents(source, config)
        .into_iter()
        .map(|disabled| Warning {
            file: source.path().to_path_buf(),
            line: disabled.position.map(|(line, _)| line),
            column: disabled.position.map(|(_, column)| column),
            message: disabled.to_string(),
            key: disabled.key,
        });
    found
        .into_iter()
        .map(|(key, message)| {
            let path = key
                .split('.')
                .fold(KeyPath::root(), |path, segment| path.key(segment));
            let position = source.locate(&path);
            Warning {
                file: source.path().to_path_buf(),
                line: position.map(|(line, _)| line),
                column: position.map(|(_, column)| column),
                key: key.to_string(),
                message: message.to_string(),
            }
        })
        .chain(disabled)
        .collect()
}

/// Checks the agents file at `path` with the process environment: see the module docs for
/// what is checked. Plugins are compiled with `engine`.
pub async fn run(engine: &WasmEngine, path: &Path) -> Report {
    let (source, config) = match validate(path, &|name| std::env::var(name).ok()) {
        Ok(loaded) => loaded,
        Err(errors) => {
            return Report {
                path: path.to_path_buf(),
                errors: errors.into_vec(),
                warnings: Vec::new(),
                summary: None,
            };
        }
    };
    let mut errors = Vec::new();
    let loaded = load_plugins(engine, &source, &config, &mut errors).await;
    open_sessions(&source, &config, &loaded, &mut errors).await;
    Report {
        path: path.to_path_buf(),
        errors: sorted(errors),
        warnings: warnings(&source, &config),
        summary: Some(Summary::of(&config)),
    }
}

/// `errors` in file order (positionless ones last).
fn sorted(errors: Vec<ConfigError>) -> Vec<ConfigError> {
    if errors.is_empty() {
        return errors;
    }
    ConfigErrors::new(errors).into_vec()
}

/// Layer 1: reads `path` and validates it with `env`, as `serve` does.
///
/// # Errors
/// Every problem with the file, one per line.
pub fn validate(path: &Path, env: EnvLookup<'_>) -> Result<(Source, Config), ConfigErrors> {
    let source = config::load(path)?;
    let config = config::from_source(&source, env)?;
    Ok((source, config))
}

/// Layer 2: loads each plugin of `config` alone (so one broken plugin hides no other), the
/// way the server does ([`Plugins::load`]); returns those that loaded, by name, and adds an
/// error at `plugins.NAME.path` for each that did not.
async fn load_plugins(
    engine: &WasmEngine,
    source: &Source,
    config: &Config,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, Arc<Plugin>> {
    let mut loaded = BTreeMap::new();
    for (name, plugin) in &config.plugins {
        // The config with only this plugin and no agents: nothing else is loaded or opened.
        let mut alone = config.clone();
        alone.plugins = BTreeMap::from([(name.clone(), plugin.clone())]);
        alone.agents.clear();
        match Plugins::load(engine, &alone).await {
            Ok(plugins) => {
                if let Some(plugin) = plugins.get(name) {
                    loaded.insert(name.clone(), Arc::clone(plugin));
                }
            }
            Err(error) => errors.push(plugin_load_error(source, error)),
        }
    }
    loaded
}

/// A plugin that did not load, as an error at its `plugins.NAME.path` in `source`.
pub(crate) fn plugin_load_error(source: &Source, error: PluginLoadError) -> ConfigError {
    let PluginLoadError { name, problem, .. } = error;
    let key = KeyPath::root().key("plugins").key(&name).key("path");
    let reason = one_line(&problem.to_string());
    ConfigError::at_key(source, &key, ConfigErrorKind::PluginLoad { name, reason })
}

/// `text` on one line: each line trimmed, joined by single spaces. Loader and plugin messages
/// can span lines (wasmtime pretty-prints some details); a problem must stay one line.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The contract a plugin needs for `role` (`realtime`, `stt`, `llm`, `tts`, as
/// [`config::Agent::plugin_uses`] names them).
fn stage_for(role: &str) -> Stage {
    match role {
        "stt" => Stage::Stt,
        "llm" => Stage::Llm,
        "tts" => Stage::Tts,
        _ => Stage::Realtime,
    }
}

/// Layer 3: checks each agent's plugins implement their roles, then opens one session per
/// agent and plugin use with the agent's settings and drops it, without carrying out any host
/// I/O it asked for. Plugins that did not load are skipped (their error is already listed), and
/// so are uses granted an empty secret (their agent is disabled: a warning).
async fn open_sessions(
    source: &Source,
    config: &Config,
    loaded: &BTreeMap<String, Arc<Plugin>>,
    errors: &mut Vec<ConfigError>,
) {
    for (index, agent) in config.agents.iter().enumerate() {
        for (role, used) in agent.plugin_uses() {
            let Some(plugin) = loaded.get(&used.plugin) else {
                continue;
            };
            let path = config::plugin_use_path(index, role);
            let want = stage_for(role);
            if plugin.stage() != want {
                errors.push(ConfigError::at_key(
                    source,
                    &path.key("plugin"),
                    ConfigErrorKind::PluginRole {
                        name: used.plugin.clone(),
                        is: plugin.stage().describe(),
                        role,
                    },
                ));
                continue;
            }
            if used.empty_secrets().next().is_some() {
                // The plugin would refuse the empty key; `warnings` names it.
                continue;
            }
            let session = SessionConfig {
                call: CallInfo {
                    call_sid: CHECK_CALL_SID.into(),
                    stream_sid: CHECK_STREAM_SID.into(),
                    from: String::new(),
                    to: agent.numbers.first().cloned().unwrap_or_default(),
                    direction: "inbound".into(),
                    agent: agent.name.clone(),
                    parameters: Vec::new(),
                },
                settings: used.settings_json.clone(),
                greeting: agent.greeting.clone(),
                io: Arc::new(IoPolicy {
                    allowed_hosts: used.allowed_hosts.clone(),
                    secrets: used.secrets.clone(),
                    allow_private_destinations: config.server.allow_private_destinations,
                }),
            };
            // Dropped at once: the host I/O it queued is never taken, so never carried out.
            let opened = if want == Stage::Realtime {
                plugin.open(&session).await.map(drop)
            } else {
                plugin.open_stage(&session).await.map(drop)
            };
            if let Err(error) = opened {
                let message = one_line(&match error {
                    SessionError::Plugin(e) => e.to_string(),
                    SessionError::Trap(e) => format!("the plugin trapped: {e}"),
                    other => other.to_string(),
                });
                errors.push(ConfigError::at_key(
                    source,
                    &path.key("settings"),
                    ConfigErrorKind::PluginRefused {
                        name: used.plugin.clone(),
                        message,
                    },
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{TempDir, no_env};

    fn checked(text: &str) -> (TempDir, Result<(Source, Config), ConfigErrors>) {
        let dir = TempDir::new();
        dir.write("echo.wasm", b"\0asm");
        let path = dir.write("agents.toml", text.as_bytes());
        let result = validate(&path, &no_env);
        (dir, result)
    }

    const MINIMAL: &str = "[plugins.echo]\npath = \"echo.wasm\"\n\n[[agents]]\nname = \"a\"\nrealtime = { plugin = \"echo\" }\n";

    #[test]
    fn unset_variables_are_reported_on_their_line() {
        let text = format!("[twilio]\nauth_token = \"${{NOT_SET_ANYWHERE}}\"\n\n{MINIMAL}");
        let (_dir, result) = checked(&text);
        let errors = result.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(errors.contains("agents.toml:2:"), "{errors}");
        assert!(errors.contains("twilio.auth_token"), "{errors}");
        assert!(errors.contains("NOT_SET_ANYWHERE is not set"), "{errors}");
    }

    #[test]
    fn warns_about_signatures_tokens_and_api() {
        let (_dir, result) = checked(&format!(
            "[twilio]\nvalidate_signatures = false\n\n{MINIMAL}"
        ));
        let Ok((source, config)) = result else {
            panic!("valid config")
        };
        let found = warnings(&source, &config);
        let keys: Vec<_> = found.iter().map(|w| w.key.as_str()).collect();
        assert_eq!(keys, ["twilio.validate_signatures", "api.tokens"]);
        let line = found[0].to_string();
        assert!(
            line.contains("agents.toml:2:23: twilio.validate_signatures: warning: "),
            "{line}"
        );
        // No [api] table: the warning has no line.
        assert_eq!(found[1].line, None);

        let (_dir, result) = checked(&format!(
            "[twilio]\nauth_token = \"t\"\n\n[api]\ntokens = [\"x\"]\n\n{MINIMAL}"
        ));
        let Ok((source, config)) = result else {
            panic!("valid config")
        };
        assert_eq!(warnings(&source, &config), []);

        let (_dir, result) = checked(MINIMAL);
        let Ok((source, config)) = result else {
            panic!("valid config")
        };
        let keys: Vec<_> = warnings(&source, &config)
            .iter()
            .map(|w| w.key.clone())
            .collect();
        assert_eq!(keys, ["twilio.auth_token", "api.tokens"]);
    }

    #[test]
    fn an_agent_disabled_by_an_empty_secret_is_a_warning_not_a_problem() {
        let text = format!(
            "[twilio]\nauth_token = \"t\"\n\n[api]\ntokens = [\"x\"]\n\n{}",
            MINIMAL.replace(
                "{ plugin = \"echo\" }",
                "{ plugin = \"echo\", secrets = { api_key = \"${SB_CHECK_KEY:-}\" } }"
            )
        );
        let (_dir, result) = checked(&text);
        let Ok((source, config)) = result else {
            panic!("valid config")
        };
        let found = warnings(&source, &config);
        assert_eq!(found.len(), 1, "{found:#?}");
        let line = found[0].to_string();
        assert!(
            line.contains(
                "agents.toml:12:53: agents[0].realtime.secrets.api_key: warning: agent \"a\" is \
                 disabled: this secret is empty (SB_CHECK_KEY is unset or empty)"
            ),
            "{line}"
        );
        assert_eq!(
            Summary::of(&config).to_string(),
            "1 agent (1 disabled), 1 plugin, no default agent"
        );
    }

    #[test]
    fn report_lines_are_in_file_order_and_ok_only_without_errors() {
        let (_dir, result) = checked(MINIMAL);
        let Ok((source, config)) = result else {
            panic!("valid config")
        };
        let refused = ConfigError::at_key(
            &source,
            &config::plugin_use_path(0, "realtime").key("settings"),
            ConfigErrorKind::PluginRefused {
                name: "echo".into(),
                message: "invalid-config: no".into(),
            },
        );
        let mut report = Report {
            path: "agents.toml".into(),
            errors: vec![refused],
            warnings: warnings(&source, &config),
            summary: Some(Summary::of(&config)),
        };
        let lines = report.lines();
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(lines[0].contains(":6:12: agents[0].realtime.settings: plugin echo refused"));
        assert!(lines[2].contains("api.tokens: warning:"), "{lines:#?}");
        assert_eq!(report.ok_line(), None);
        report.errors.clear();
        assert_eq!(
            report.ok_line().as_deref(),
            Some("agents.toml: OK — 1 agent, 1 plugin, no default agent")
        );
    }

    #[test]
    fn messages_are_kept_on_one_line() {
        assert_eq!(
            one_line("bad magic - expected=[\n    0x0,\n    0x61,\n] (at offset 0x0)"),
            "bad magic - expected=[ 0x0, 0x61, ] (at offset 0x0)"
        );
        assert_eq!(one_line("plain"), "plain");
    }

    #[test]
    fn stages_follow_the_role() {
        assert_eq!(stage_for("stt"), Stage::Stt);
        assert_eq!(stage_for("realtime"), Stage::Realtime);
    }
}
