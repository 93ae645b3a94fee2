//! The raw, as-written shape of `agents.toml` and the TOML -> struct step
//! ([`Source::parse`]).
//!
//! Raw structs mirror the file one to one: every string is still a string (listen
//! addresses and URLs are parsed during validation, after `${VAR}` interpolation), every
//! field keeps its byte span (`toml::Spanned`) so later steps can report lines, and
//! unknown keys are rejected (`deny_unknown_fields`) so a typo like `agnets` is an error
//! instead of a silently ignored section. Plugin/agent settings are free-form tables.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use toml::Spanned;

use super::Source;
use super::error::{ConfigError, ConfigErrorKind};
use super::span::{KeyPath, Locator};

/// The whole file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[server]`; every key has a default, so the section may be omitted.
    #[serde(default)]
    pub server: RawServer,
    /// `[twilio]`; optional.
    #[serde(default)]
    pub twilio: RawTwilio,
    /// `[plugins.NAME]` sections, by name.
    #[serde(default)]
    pub plugins: BTreeMap<String, Spanned<RawPlugin>>,
    /// `[[agents]]` entries, in file order (the order breaks routing ties).
    #[serde(default)]
    pub agents: Vec<Spanned<RawAgent>>,
    /// `[routing]`; optional.
    #[serde(default)]
    pub routing: RawRouting,
    /// `[api]`: the operator API (`/calls`); optional.
    #[serde(default)]
    pub api: RawApi,
    /// `[records]`: where call records are kept; optional.
    #[serde(default)]
    pub records: RawRecords,
    /// `[lookups.NAME]` sections: caller-context files, by name.
    #[serde(default)]
    pub lookups: BTreeMap<String, Spanned<RawLookup>>,
    /// `[tools.NAME]` sections: tools the host runs for agents, by name.
    #[serde(default)]
    pub tools: BTreeMap<String, Spanned<super::tools::RawTool>>,
    /// `[mcp.NAME]` sections: MCP servers whose tools agents may be granted, by name.
    #[serde(default)]
    pub mcp: BTreeMap<String, Spanned<super::tools::RawMcp>>,
}

/// One `[lookups.NAME]` section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLookup {
    /// `path`: a `.csv` (header row) or `.json` (array of objects) file, relative to the config.
    pub path: Spanned<String>,
    /// `key`: the column rows are keyed by; `phone` when absent.
    #[serde(default)]
    pub key: Option<Spanned<String>>,
}

/// An agent's `caller_context` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCallerContext {
    /// `lookup`: the `[lookups.NAME]` to look the caller up in.
    pub lookup: Spanned<String>,
    /// `by`: the customParameter whose value is looked up; `From` (the caller's number) when
    /// absent.
    #[serde(default)]
    pub by: Option<Spanned<String>>,
    /// `greeting`: spoken instead of the agent's greeting when the caller is found, with
    /// `{caller.COLUMN}` placeholders.
    #[serde(default)]
    pub greeting: Option<Spanned<String>>,
}

/// `[api]` as written. `Debug` hides the tokens.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    /// `tokens`: bearer tokens accepted by the operator API; empty strings are ignored.
    #[serde(default)]
    pub tokens: Option<Vec<Spanned<String>>>,
    /// `rate_per_minute`: sustained requests per minute per token; optional.
    #[serde(default)]
    pub rate_per_minute: Option<Spanned<i64>>,
    /// `burst`: requests a token may make at once; optional.
    #[serde(default)]
    pub burst: Option<Spanned<i64>>,
    /// `callback_secret`: the Standard Webhooks secret (`whsec_…`) that signs callbacks;
    /// optional.
    #[serde(default)]
    pub callback_secret: Option<Spanned<String>>,
}

impl fmt::Debug for RawApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawApi")
            .field("tokens", &self.tokens.as_ref().map(Vec::len))
            .field("rate_per_minute", &self.rate_per_minute)
            .field("burst", &self.burst)
            .finish()
    }
}

/// `[records]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRecords {
    /// `path`: the SQLite file; relative to the config file's directory; `""` turns records off.
    #[serde(default)]
    pub path: Option<Spanned<String>>,
    /// `url`: a PostgreSQL URL (`postgres://user:password@host:port/db`), shared by a fleet;
    /// excludes `path`.
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    /// `instance`: this gateway's name in the records; optional.
    #[serde(default)]
    pub instance: Option<Spanned<String>>,
    /// `heartbeat_ms`: how often this instance heartbeats (PostgreSQL); optional.
    #[serde(default)]
    pub heartbeat_ms: Option<Spanned<i64>>,
    /// `grace_ms`: how long an instance may miss heartbeats before it is dead; optional.
    #[serde(default)]
    pub grace_ms: Option<Spanned<i64>>,
}

/// `[server]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// `listen`: socket address to bind; default [`super::DEFAULT_LISTEN`].
    #[serde(default)]
    pub listen: Option<Spanned<String>>,
    /// `public_url`: base URL Twilio uses to reach the gateway; optional.
    #[serde(default)]
    pub public_url: Option<Spanned<String>>,
    /// `drain_seconds`: how long live calls may go on after SIGTERM; optional.
    #[serde(default)]
    pub drain_seconds: Option<Spanned<i64>>,
    /// `allow_private_destinations`: let plugin I/O reach names that resolve to private
    /// addresses; optional (default false).
    #[serde(default)]
    pub allow_private_destinations: Option<Spanned<bool>>,
    /// `plugin_cache`: keep compiled plugin code between starts; optional (default true).
    #[serde(default)]
    pub plugin_cache: Option<Spanned<bool>>,
    /// `plugin_cache_dir`: where compiled plugin code is kept; optional (default
    /// [`super::default_plugin_cache_dir`]).
    #[serde(default)]
    pub plugin_cache_dir: Option<Spanned<String>>,
}

/// `[twilio]` as written. `Debug` hides the auth token.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTwilio {
    /// `account_sid`; optional.
    #[serde(default)]
    pub account_sid: Option<Spanned<String>>,
    /// `auth_token`; optional, secret.
    #[serde(default)]
    pub auth_token: Option<Spanned<String>>,
    /// `validate_signatures`: check `X-Twilio-Signature`; optional (default true).
    #[serde(default)]
    pub validate_signatures: Option<Spanned<bool>>,
    /// `api_base_url`: the REST API's base URL; optional.
    #[serde(default)]
    pub api_base_url: Option<Spanned<String>>,
    /// `caller_id`: the default `From` of outbound calls; optional.
    #[serde(default)]
    pub caller_id: Option<Spanned<String>>,
    /// `[twilio.accounts.AC…]`: per-account (tenant) settings; optional.
    #[serde(default)]
    pub accounts: BTreeMap<String, Spanned<RawTwilioAccount>>,
}

/// `[twilio.accounts.AC…]` as written. `Debug` hides the token.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTwilioAccount {
    /// `auth_token`: this account's token, used instead of `twilio.auth_token` for its requests.
    pub auth_token: Spanned<String>,
}

impl fmt::Debug for RawTwilioAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawTwilioAccount")
            .field("auth_token", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for RawTwilio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawTwilio")
            .field("account_sid", &self.account_sid)
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .field("validate_signatures", &self.validate_signatures)
            .field("api_base_url", &self.api_base_url)
            .field("caller_id", &self.caller_id)
            .field("accounts", &self.accounts)
            .finish()
    }
}

/// `[plugins.NAME]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlugin {
    /// `path`: plugin file; relative paths are relative to the config file's directory.
    pub path: Spanned<String>,
    /// `settings`: plugin-wide default settings; optional.
    #[serde(default)]
    pub settings: Option<Spanned<toml::Table>>,
    /// `budget_ms`: time one `handle` call may take; optional.
    #[serde(default)]
    pub budget_ms: Option<Spanned<i64>>,
    /// `cpu_percent`: the share of one core a session may use over its call; optional.
    #[serde(default)]
    pub cpu_percent: Option<Spanned<i64>>,
    /// `cpu_burst_ms`: the run time a session may bank; optional.
    #[serde(default)]
    pub cpu_burst_ms: Option<Spanned<i64>>,
}

/// One `[[agents]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgent {
    /// `name`: unique agent name.
    pub name: Spanned<String>,
    /// `numbers`: called numbers routed to this agent; optional.
    #[serde(default)]
    pub numbers: Vec<Spanned<String>>,
    /// `match`: customParameters that route to this agent; optional.
    #[serde(default, rename = "match")]
    pub match_params: Option<Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
    /// `greeting`: optional text spoken when the call connects.
    #[serde(default)]
    pub greeting: Option<Spanned<String>>,
    /// `fallback`: the agent that takes this agent's new calls while its plugin's circuit
    /// breaker is open; optional.
    #[serde(default)]
    pub fallback: Option<Spanned<String>>,
    /// `realtime`: the speech-to-speech plugin that runs the conversation. An agent has
    /// exactly one of `realtime` and `pipeline`.
    #[serde(default)]
    pub realtime: Option<Spanned<RawPluginUse>>,
    /// `pipeline`: the STT, LLM and TTS plugins that run the conversation, and how the host
    /// takes turns between caller and agent.
    #[serde(default)]
    pub pipeline: Option<Spanned<RawPipeline>>,
    /// `caller_context`: look the caller up at call start; optional.
    #[serde(default)]
    pub caller_context: Option<Spanned<RawCallerContext>>,
    /// `tools`: what the agent may call: `[tools]` names, built-ins (`end_call`,
    /// `transfer_call`, `record_result`), `SERVER.*` or `SERVER.TOOL`; optional.
    #[serde(default)]
    pub tools: Option<Vec<Spanned<String>>>,
    /// `transfer_to`: numbers (E.164) and `+prefix*` patterns `transfer_call` may dial.
    #[serde(default)]
    pub transfer_to: Option<Vec<Spanned<String>>>,
    /// `tool_filler_ms`: a pipeline agent says `filler` when a tool runs this long.
    #[serde(default)]
    pub tool_filler_ms: Option<Spanned<i64>>,
    /// `filler`: the phrase said while a slow tool runs.
    #[serde(default)]
    pub filler: Option<Spanned<String>>,
    /// `result_schema`: JSON Schema of what `record_result` stores.
    #[serde(default)]
    pub result_schema: Option<Spanned<toml::Table>>,
    /// `events`: where the agent's live call events are POSTed as signed webhooks; optional.
    #[serde(default)]
    pub events: Option<super::events::RawAgentEvents>,
}

/// An agent's `pipeline` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPipeline {
    /// `stt`: the speech-to-text stage.
    pub stt: Spanned<RawPluginUse>,
    /// `llm`: the language-model stage.
    pub llm: Spanned<RawPluginUse>,
    /// `tts`: the text-to-speech stage.
    pub tts: Spanned<RawPluginUse>,
    /// `instructions`: the system prompt of every LLM request; optional (empty).
    #[serde(default)]
    pub instructions: Option<Spanned<String>>,
    /// `endpointing_ms`: caller silence (ms) that ends a turn; optional.
    #[serde(default)]
    pub endpointing_ms: Option<Spanned<i64>>,
    /// `keypad_timeout_ms`: how long after a key press the keys become a caller turn; optional.
    #[serde(default)]
    pub keypad_timeout_ms: Option<Spanned<i64>>,
    /// `resume_false_interruptions`: resume a reply cut by a barge-in with no words; optional.
    #[serde(default)]
    pub resume_false_interruptions: Option<Spanned<bool>>,
    /// `min_interruption_ms`: caller speech over the agent that counts as an interruption;
    /// optional.
    #[serde(default)]
    pub min_interruption_ms: Option<Spanned<i64>>,
    /// `min_interruption_words`: words the caller must say over the agent before it counts as
    /// an interruption; optional.
    #[serde(default)]
    pub min_interruption_words: Option<Spanned<i64>>,
    /// `backchannel`: `"ignore"` or `"interrupt"`; optional.
    #[serde(default)]
    pub backchannel: Option<crate::call::interruption::Backchannel>,
}

/// One use of a plugin by an agent (`realtime`, or a stage of `pipeline`), as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPluginUse {
    /// `plugin`: a key of `[plugins]`.
    pub plugin: Spanned<String>,
    /// `settings`: overlaid on the plugin's settings; optional.
    #[serde(default)]
    pub settings: Option<Spanned<toml::Table>>,
    /// `secrets`: values the plugin may read by name with `host::secret`; optional.
    #[serde(default)]
    pub secrets: Option<BTreeMap<String, Spanned<String>>>,
    /// `allowed_hosts`: the hosts the plugin may reach through host I/O; optional (none).
    #[serde(default)]
    pub allowed_hosts: Option<Vec<Spanned<String>>>,
}

/// `[routing]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    /// `default`: agent for calls nothing else matched; optional.
    #[serde(default)]
    pub default: Option<Spanned<String>>,
}

impl Source {
    /// Parses the text as TOML into [`RawConfig`].
    ///
    /// No interpolation or validation happens here; strings are exactly as written.
    ///
    /// # Errors
    ///
    /// [`ConfigErrorKind::Syntax`] for invalid TOML and [`ConfigErrorKind::Schema`] for
    /// valid TOML of the wrong shape (unknown key, wrong type, missing key). Both carry
    /// the line, column and — as far as it can be recovered — the key path. TOML parsing
    /// stops at the first error, so this returns one error, not a list.
    pub fn parse(&self) -> Result<RawConfig, ConfigError> {
        let document = match toml::de::DeTable::parse(self.text()) {
            Ok(document) => document,
            Err(error) => return Err(self.syntax_error(&error)),
        };
        RawConfig::deserialize(toml::de::Deserializer::from(document))
            .map_err(|error| self.schema_error(&error))
    }

    /// Maps a TOML syntax error to a located [`ConfigError`].
    fn syntax_error(&self, error: &toml::de::Error) -> ConfigError {
        let locator = Locator::new(self.text());
        let span = error.span();
        let key = span.as_ref().map(|span| {
            // The innermost parsed key/value around the error, else the `[table]` it is
            // under (syntax errors often lie outside every parsed node), else the root.
            let base = locator
                .path_at(span)
                .or_else(|| locator.enclosing_header_table(span.start))
                .unwrap_or_else(KeyPath::root);
            // For "duplicate key" the span is the repeated key itself.
            match locator.text().get(span.clone()) {
                Some(k) if error.message() == "duplicate key" && !k.is_empty() => {
                    base.key(k.trim_matches(['"', '\'']))
                }
                _ => base,
            }
        });
        ConfigError::at(
            self,
            span,
            key.as_ref(),
            ConfigErrorKind::Syntax {
                message: error.message().trim().to_owned(),
            },
        )
    }

    /// Maps a serde error (unknown field, wrong type, missing field) to a located
    /// [`ConfigError`], rewording serde's "field" as "key".
    fn schema_error(&self, error: &toml::de::Error) -> ConfigError {
        let message = error.message().trim();
        let span = error.span();
        let mut key = span
            .as_ref()
            .and_then(|span| Locator::new(self.text()).path_at(span));
        let message = if let Some(rest) = message.strip_prefix("missing field ") {
            // The span is the table that lacks the key; name the key itself.
            if let (Some(path), Some(name)) = (&key, backticked(rest)) {
                key = Some(path.key(name));
            }
            format!("missing required key {rest}")
        } else if let Some(rest) = message.strip_prefix("unknown field ") {
            format!("unknown key {rest}")
        } else {
            message.to_owned()
        };
        ConfigError::at(
            self,
            span,
            key.as_ref(),
            ConfigErrorKind::Schema { message },
        )
    }
}

/// The text between the first pair of backticks in `s`.
fn backticked(s: &str) -> Option<&str> {
    let start = s.find('`')? + 1;
    let len = s[start..].find('`')?;
    Some(&s[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(text: &str) -> ConfigError {
        match Source::new("agents.toml", text).parse() {
            Ok(raw) => panic!("expected a parse error, got {raw:?}"),
            Err(e) => e,
        }
    }

    fn assert_at(e: &ConfigError, line: usize, key: Option<&str>) {
        assert_eq!(e.line(), Some(line), "wrong line in: {e}");
        assert_eq!(e.key(), key, "wrong key in: {e}");
    }

    #[test]
    fn parses_spans_of_fields() {
        let text = "[server]\nlisten = \"0.0.0.0:80\"\n\n[[agents]]\nname = \"a\"\nmatch = { merchantId = \"m-1\" }\nrealtime = { plugin = \"echo\" }\n";
        let raw = Source::new("agents.toml", text).parse().expect("valid");
        let listen = raw.server.listen.expect("listen");
        assert_eq!(&text[listen.span()], "\"0.0.0.0:80\"");
        assert_eq!(raw.agents.len(), 1);
        let agent = raw.agents[0].get_ref();
        let m = agent.match_params.as_ref().expect("match");
        let (k, v) = m.get_ref().iter().next().expect("one pair");
        assert_eq!(
            (k.get_ref().as_str(), v.get_ref().as_str()),
            ("merchantId", "m-1")
        );
        assert_eq!(&text[v.span()], "\"m-1\"");
    }

    #[test]
    fn syntax_error_has_line_and_table() {
        let e = parse_err("[server]\nlisten = \"127.0.0.1:1\"\n\n[routing]\ndefault = \n");
        assert!(matches!(e.kind(), ConfigErrorKind::Syntax { .. }), "{e}");
        assert_eq!(e.line(), Some(5));
        assert_eq!(e.key(), Some("routing.default"));
    }

    #[test]
    fn duplicate_key_is_a_syntax_error_naming_the_key() {
        let e = parse_err("[server]\nlisten = \"a\"\nlisten = \"b\"\n");
        assert!(matches!(e.kind(), ConfigErrorKind::Syntax { .. }), "{e}");
        assert_at(&e, 3, Some("server.listen"));
    }

    #[test]
    fn duplicate_key_in_inline_table_or_root() {
        let e =
            parse_err("[[agents]]\nname = \"a\"\nrealtime = { plugin = \"a\", plugin = \"b\" }\n");
        assert_at(&e, 3, Some("agents[0].realtime.plugin"));
        let e = parse_err("# top\nagents = []\nagents = []\n");
        assert_at(&e, 3, Some("agents"));
    }

    #[test]
    fn unclosed_header_is_a_syntax_error() {
        let e = parse_err("[server\nlisten = \"a\"\n");
        assert!(matches!(e.kind(), ConfigErrorKind::Syntax { .. }), "{e}");
        assert_eq!(e.line(), Some(1));
        assert!(e.to_string().starts_with("agents.toml:1:"), "{e}");
    }

    #[test]
    fn unknown_top_level_key() {
        let e = parse_err("[server]\n\n[[agnets]]\nname = \"a\"\n");
        assert!(matches!(e.kind(), ConfigErrorKind::Schema { .. }), "{e}");
        assert_at(&e, 3, Some("agnets"));
        assert!(e.to_string().contains("unknown key `agnets`"), "{e}");
    }

    #[test]
    fn unknown_nested_key_in_second_agent() {
        let text = "[[agents]]\nname = \"a\"\nrealtime = { plugin = \"echo\" }\n\n[[agents]]\nname = \"b\"\nrealtime = { plugn = \"echo\" }\n";
        let e = parse_err(text);
        assert_at(&e, 7, Some("agents[1].realtime.plugn"));
        assert_eq!(e.column(), Some(14));
    }

    #[test]
    fn wrong_type() {
        let e = parse_err("[server]\nlisten = 8080\n");
        assert!(matches!(e.kind(), ConfigErrorKind::Schema { .. }), "{e}");
        assert_at(&e, 2, Some("server.listen"));
        assert!(e.to_string().contains("expected a string"), "{e}");
        let e = parse_err("[[agents]]\nname = \"a\"\nnumbers = [\"+1\",\n  2]\n");
        assert_at(&e, 4, Some("agents[0].numbers[1]"));
    }

    #[test]
    fn missing_key_names_the_key() {
        let e = parse_err(
            "[[agents]]\nname = \"a\"\nrealtime = { plugin = \"x\" }\n\n[[agents]]\nname = \"b\"\npipeline = { stt = { plugin = \"s\" }, llm = { plugin = \"l\" } }\n",
        );
        assert_at(&e, 7, Some("agents[1].pipeline.tts"));
        assert!(e.to_string().contains("missing required key `tts`"), "{e}");
        let e = parse_err("[plugins.echo]\nsettings = {}\n");
        assert_at(&e, 1, Some("plugins.echo.path"));
    }

    #[test]
    fn raw_twilio_debug_hides_token() {
        let raw = Source::new("a.toml", "[twilio]\nauth_token = \"sekrit\"\n")
            .parse()
            .expect("valid");
        let shown = format!("{raw:?}");
        assert!(!shown.contains("sekrit"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
