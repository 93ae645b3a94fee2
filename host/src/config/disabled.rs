//! Agents disabled by an empty secret: the rule that lets a file grant a secret from an
//! optional variable (`secrets = { api_key = "${OPENAI_API_KEY:-}" }`) and still serve, and
//! still pass `switchboard check`, on a machine without that key.
//!
//! An agent is *disabled* when a secret granted to one of its plugins is empty once `${VAR}`s
//! are interpolated: a `${VAR:-}` whose variable is unset, a variable set to "", or a literal
//! "". No plugin can authenticate with an empty key, so the agent cannot take calls; the rest of
//! the file can. Then:
//!
//! - `switchboard check` prints a warning at the secret's `file:line:column: key` naming the
//!   agent and the variable, opens no session of that plugin use, and passes if nothing else is
//!   wrong;
//! - `serve` logs the same warning at start ([`super::from_file`]) and on every reload;
//! - a call routed to the agent goes to its `fallback` agent when that one is enabled, and is
//!   otherwise refused as an unroutable call is, with a spoken apology ([`crate::routing`]).
//!
//! Real mistakes stay errors: a `${VAR}` without a default whose variable is unset
//! (interpolation reports it), and a plugin that refuses to open for any other reason.

use std::fmt;

use super::interpolate::referenced_variables;
use super::span::{KeyPath, Locator, line_col};
use super::{Agent, Config, PluginUse, Source};

impl PluginUse {
    /// The names of the granted secrets that are empty, in name order.
    pub fn empty_secrets(&self) -> impl Iterator<Item = &str> {
        self.secrets
            .iter()
            .filter(|(_, value)| value.expose().is_empty())
            .map(|(name, _)| name.as_str())
    }
}

impl Agent {
    /// Whether the agent is disabled: a secret granted to one of its plugins is empty (see the
    /// module docs).
    pub fn is_disabled(&self) -> bool {
        self.plugin_uses()
            .iter()
            .any(|(_, used)| used.empty_secrets().next().is_some())
    }
}

impl Config {
    /// The agent that takes `agent`'s calls while `agent` is disabled: its `fallback`, when that
    /// one is enabled.
    pub fn fallback_for(&self, agent: &Agent) -> Option<&Agent> {
        agent
            .fallback
            .as_deref()
            .and_then(|name| self.agent(name))
            .filter(|fallback| !fallback.is_disabled())
    }
}

/// A disabled agent's empty secret, located in its file. Its `Display` is the warning's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisabledAgent {
    /// The agent's name.
    pub agent: String,
    /// The empty secret's key, e.g. `agents[2].realtime.secrets.api_key`.
    pub key: String,
    /// 1-based line and column of the secret's value in the file.
    pub position: Option<(usize, usize)>,
    /// The variables the value names in the file (`OPENAI_API_KEY`); empty when the file gives
    /// "" itself.
    pub variables: Vec<String>,
    /// The agent that takes its calls instead ([`Config::fallback_for`]).
    pub fallback: Option<String>,
}

impl fmt::Display for DisabledAgent {
    /// `agent "assistant" is disabled: this secret is empty (OPENAI_API_KEY is unset or empty),
    /// so its calls are refused with a spoken apology; set OPENAI_API_KEY to enable it`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "agent {:?} is disabled: this secret is empty",
            self.agent
        )?;
        let names = self.variables.join(" and ");
        if !names.is_empty() {
            let verb = if self.variables.len() == 1 {
                "is"
            } else {
                "are"
            };
            write!(f, " ({names} {verb} unset or empty)")?;
        }
        match &self.fallback {
            Some(fallback) => write!(f, ", so its calls go to its fallback agent {fallback:?}")?,
            None => f.write_str(", so its calls are refused with a spoken apology")?,
        }
        if !names.is_empty() {
            write!(f, "; set {names} to enable it")?;
        }
        Ok(())
    }
}

/// The key path of an agent's use of a plugin in `role` (as [`Agent::plugin_uses`] names it):
/// `agents[i].realtime` or `agents[i].pipeline.ROLE`.
pub(crate) fn plugin_use_path(agent: usize, role: &str) -> KeyPath {
    let agent = KeyPath::root().key("agents").index(agent);
    match role {
        "realtime" => agent.key("realtime"),
        stage => agent.key("pipeline").key(stage),
    }
}

/// Every empty secret of a disabled agent of `config` (read from `source`), in file order.
pub fn disabled_agents(source: &Source, config: &Config) -> Vec<DisabledAgent> {
    let mut found = Vec::new();
    // Built on the first empty secret: most files have none.
    let mut locator = None;
    let text = source.text();
    for (index, agent) in config.agents.iter().enumerate() {
        for (role, used) in agent.plugin_uses() {
            for name in used.empty_secrets() {
                let path = plugin_use_path(index, role).key("secrets").key(name);
                let span = locator
                    .get_or_insert_with(|| Locator::new(text))
                    .span_of(&path);
                found.push(DisabledAgent {
                    agent: agent.name.clone(),
                    key: path.to_string(),
                    position: span.as_ref().map(|span| line_col(text, span.start)),
                    variables: span
                        .and_then(|span| text.get(span))
                        .map(referenced_variables)
                        .unwrap_or_default(),
                    fallback: config.fallback_for(agent).map(|f| f.name.clone()),
                });
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{TempDir, build, build_ok};

    /// `front` grants an optional key; `back` is its fallback; `solo` has no fallback and an
    /// empty literal; `keyed` has its key.
    const AGENTS: &str = r#"[plugins.echo]
path = "echo.wasm"

[[agents]]
name = "front"
fallback = "back"
realtime = { plugin = "echo", secrets = { api_key = "${SB_TEST_KEY:-}" } }

[[agents]]
name = "back"
realtime = { plugin = "echo" }

[[agents]]
name = "solo"
[agents.pipeline]
stt = { plugin = "echo" }
llm = { plugin = "echo", secrets = { token = "", other = "x" } }
tts = { plugin = "echo" }

[[agents]]
name = "keyed"
realtime = { plugin = "echo", secrets = { api_key = "${SB_TEST_SET}" } }
"#;

    fn env(name: &str) -> Option<String> {
        (name == "SB_TEST_SET").then(|| "sk-set".to_string())
    }

    fn config(text: &str) -> (TempDir, Source, Config) {
        let (dir, result) = build(text, &env);
        let config = result.unwrap_or_else(|e| panic!("{e}"));
        let source = Source::new(dir.path().join("agents.toml"), text);
        (dir, source, config)
    }

    #[test]
    fn an_empty_secret_disables_its_agent_and_names_the_variable() {
        let (_dir, source, config) = config(AGENTS);
        let disabled: Vec<_> = config
            .agents
            .iter()
            .map(|a| (a.name.as_str(), a.is_disabled()))
            .collect();
        assert_eq!(
            disabled,
            [
                ("front", true),
                ("back", false),
                ("solo", true),
                ("keyed", false)
            ]
        );
        let found = disabled_agents(&source, &config);
        assert_eq!(
            found,
            [
                DisabledAgent {
                    agent: "front".into(),
                    key: "agents[0].realtime.secrets.api_key".into(),
                    position: Some((7, 53)),
                    variables: vec!["SB_TEST_KEY".into()],
                    fallback: Some("back".into()),
                },
                DisabledAgent {
                    agent: "solo".into(),
                    key: "agents[2].pipeline.llm.secrets.token".into(),
                    position: Some((17, 46)),
                    variables: Vec::new(),
                    fallback: None,
                },
            ]
        );
        assert_eq!(
            found[0].to_string(),
            "agent \"front\" is disabled: this secret is empty (SB_TEST_KEY is unset or empty), \
             so its calls go to its fallback agent \"back\"; set SB_TEST_KEY to enable it"
        );
        assert_eq!(
            found[1].to_string(),
            "agent \"solo\" is disabled: this secret is empty, so its calls are refused with a \
             spoken apology"
        );
    }

    #[test]
    fn a_set_but_empty_variable_disables_too_and_a_fallback_must_be_enabled() {
        let text = AGENTS.replace("${SB_TEST_SET}", "${SB_TEST_EMPTY}");
        let (_dir, result) = build(&text, &|name| (name == "SB_TEST_EMPTY").then(String::new));
        let config = result.unwrap_or_else(|e| panic!("{e}"));
        assert!(config.agents[3].is_disabled());

        // A disabled fallback takes nothing.
        let text = AGENTS.replace(
            "name = \"back\"\nrealtime = { plugin = \"echo\" }",
            "name = \"back\"\nrealtime = { plugin = \"echo\", secrets = { k = \"\" } }",
        );
        let (_dir, source, config) = self::config(&text);
        let front = &config.agents[0];
        assert!(config.agents[1].is_disabled());
        assert!(config.fallback_for(front).is_none());
        assert_eq!(disabled_agents(&source, &config)[0].fallback, None);
    }

    #[test]
    fn an_unset_variable_without_a_default_stays_an_error() {
        let text = AGENTS.replace("${SB_TEST_KEY:-}", "${SB_TEST_KEY}");
        let (_dir, result) = build(&text, &env);
        let errors = result.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            errors.contains(
                "agents[0].realtime.secrets.api_key: environment variable SB_TEST_KEY is not set"
            ),
            "{errors}"
        );
    }

    #[test]
    fn no_secrets_no_warnings() {
        let (_dir, config) = build_ok(
            "[plugins.echo]\npath = \"echo.wasm\"\n\n[[agents]]\nname = \"a\"\nrealtime = { plugin = \"echo\" }\n",
        );
        let source = Source::new("agents.toml", "");
        assert!(!config.agents[0].is_disabled());
        assert_eq!(disabled_agents(&source, &config), []);
    }

    #[test]
    fn use_paths_name_the_role() {
        assert_eq!(
            plugin_use_path(2, "realtime").to_string(),
            "agents[2].realtime"
        );
        assert_eq!(
            plugin_use_path(0, "tts").to_string(),
            "agents[0].pipeline.tts"
        );
    }
}
