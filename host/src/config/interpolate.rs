//! `${VAR}` interpolation of every string value in the raw config (keys are never
//! interpolated). Lets secrets and per-deployment values live in the environment instead
//! of the file.
//!
//! Syntax:
//! - `${NAME}`: the variable's value; an unset variable is an error (set-but-empty is
//!   used as is).
//! - `${NAME:-default}`: the default when the variable is unset *or empty*. The default
//!   is literal text up to the first `}`; nested `${...}` is rejected.
//! - `$$`: a literal `$`.
//! - `$NAME` (a bare `$` before a letter or `_`) is an error, because it is almost always
//!   a forgotten pair of braces; any other lone `$` (e.g. `$5`) is a literal `$`.
//!
//! Substituted values are not scanned again, so a `$` inside an environment variable is
//! kept literally. The environment is a parameter (`&dyn Fn(&str) -> Option<String>`) so
//! tests never mutate the process environment.

use std::ops::Range;

use toml::Spanned;

use super::Source;
use super::error::{ConfigError, ConfigErrorKind, ConfigErrors};
use super::raw::RawConfig;
use super::span::{KeyPath, Locator, offset_in_string};

/// A lookup of environment variables by name; `None` means unset.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A problem at byte `offset` of an interpolated string.
#[derive(Debug)]
pub(crate) struct RefError {
    /// Byte offset of the offending `$` in the input string.
    pub(crate) offset: usize,
    /// What is wrong.
    pub(crate) kind: ConfigErrorKind,
}

/// Interpolates one string.
///
/// # Errors
///
/// Every bad reference in the string ([`ConfigErrorKind::UnsetVariable`],
/// [`ConfigErrorKind::BadReference`]), each with its byte offset in `input`. An
/// unterminated `${` ends the scan, since nothing after it can be a reference.
pub(crate) fn interpolate_str(input: &str, env: EnvLookup<'_>) -> Result<String, Vec<RefError>> {
    let mut out = String::with_capacity(input.len());
    let mut errors = Vec::new();
    let mut rest = input;
    let mut consumed = 0; // bytes of `input` before `rest`
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let offset = consumed + dollar;
        let after = &rest[dollar + 1..];
        let advance = if after.starts_with('$') {
            out.push('$');
            2
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(close) = body.find('}') else {
                errors.push(RefError {
                    offset,
                    kind: bad_ref("unterminated ${ (missing })"),
                });
                rest = "";
                break;
            };
            let inner = &body[..close];
            match expand(inner, env) {
                Ok(value) => out.push_str(&value),
                Err(kind) => errors.push(RefError { offset, kind }),
            }
            1 + 1 + close + 1 // '$' '{' inner '}'
        } else if after.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            let name_len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            let name = &after[..name_len];
            errors.push(RefError {
                offset,
                kind: bad_ref(&format!(
                    "${name} is not interpolated; write ${{{name}}}, or $${name} for a literal $"
                )),
            });
            1
        } else {
            out.push('$');
            1
        };
        consumed += dollar + advance;
        rest = &rest[dollar + advance..];
    }
    out.push_str(rest);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Expands the inside of one `${...}`.
fn expand(inner: &str, env: EnvLookup<'_>) -> Result<String, ConfigErrorKind> {
    let (name, default) = match inner.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (inner, None),
    };
    if !is_var_name(name) {
        return Err(bad_ref(&format!(
            "invalid variable name {name:?} in ${{{inner}}} (expected letters, digits and _, not starting with a digit)"
        )));
    }
    if default.is_some_and(|d| d.contains("${")) {
        return Err(bad_ref(&format!(
            "nested references are not supported in the default of ${{{name}:-...}}"
        )));
    }
    match (env(name), default) {
        (Some(value), Some(default)) if value.is_empty() => Ok(default.to_owned()),
        (Some(value), _) => Ok(value),
        (None, Some(default)) => Ok(default.to_owned()),
        (None, None) => Err(ConfigErrorKind::UnsetVariable {
            name: name.to_owned(),
        }),
    }
}

/// The names of the variables `input` refers to with `${NAME}` or `${NAME:-default}`, in
/// order; `$$` escapes are skipped, and malformed references (which interpolation reports)
/// name nothing.
pub(crate) fn referenced_variables(input: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = input;
    while let Some(dollar) = rest.find('$') {
        let after = &rest[dollar + 1..];
        if let Some(escaped) = after.strip_prefix('$') {
            rest = escaped;
        } else if let Some(body) = after.strip_prefix('{')
            && let Some(close) = body.find('}')
        {
            let inner = &body[..close];
            let (name, default) = inner.split_once(":-").unwrap_or((inner, ""));
            if is_var_name(name) && !default.contains("${") {
                names.push(name.to_owned());
            }
            rest = &body[close + 1..];
        } else {
            rest = after;
        }
    }
    names
}

fn bad_ref(reason: &str) -> ConfigErrorKind {
    ConfigErrorKind::BadReference {
        reason: reason.to_owned(),
    }
}

/// Whether `name` is a portable environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Walks the raw config, interpolating strings and collecting errors.
struct Interpolator<'s> {
    source: &'s Source,
    env: EnvLookup<'s>,
    errors: Vec<ConfigError>,
    locator: Option<Locator<'s>>,
}

impl<'s> Interpolator<'s> {
    /// Interpolates a string field that carries its own span.
    fn spanned(&mut self, value: &mut Spanned<String>, path: &KeyPath) {
        let span = value.span();
        if let Some(new) = self.string(value.get_ref(), Some(span), path) {
            *value.get_mut() = new;
        }
    }

    fn opt(&mut self, value: Option<&mut Spanned<String>>, path: &KeyPath) {
        if let Some(value) = value {
            self.spanned(value, path);
        }
    }

    /// Interpolates `value`; on error records it (located by `span`, or by looking `path`
    /// up in the document when the value has no span of its own) and returns `None`.
    fn string(
        &mut self,
        value: &str,
        span: Option<Range<usize>>,
        path: &KeyPath,
    ) -> Option<String> {
        match interpolate_str(value, self.env) {
            Ok(new) => Some(new),
            Err(errors) => {
                let span = span.or_else(|| {
                    let text = self.source.text();
                    self.locator
                        .get_or_insert_with(|| Locator::new(text))
                        .span_of(path)
                });
                for e in errors {
                    let at = span.as_ref().map(|s| {
                        let o = offset_in_string(self.source.text(), s, value, e.offset);
                        o..o
                    });
                    self.errors
                        .push(ConfigError::at(self.source, at, Some(path), e.kind));
                }
                None
            }
        }
    }

    /// Interpolates every string inside a free-form settings table.
    fn table(&mut self, table: &mut toml::Table, path: &KeyPath) {
        for (key, value) in table.iter_mut() {
            self.value(value, &path.key(key));
        }
    }

    fn value(&mut self, value: &mut toml::Value, path: &KeyPath) {
        match value {
            toml::Value::String(s) => {
                if let Some(new) = self.string(s, None, path) {
                    *s = new;
                }
            }
            toml::Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.value(item, &path.index(i));
                }
            }
            toml::Value::Table(t) => self.table(t, path),
            toml::Value::Integer(_)
            | toml::Value::Float(_)
            | toml::Value::Boolean(_)
            | toml::Value::Datetime(_) => {}
        }
    }
}

impl RawConfig {
    /// Replaces `${VAR}`, `${VAR:-default}` and `$$` in every string value (not in keys),
    /// looking variables up with `env`.
    ///
    /// # Errors
    ///
    /// Every unset variable without a default ([`ConfigErrorKind::UnsetVariable`]) and
    /// every malformed reference ([`ConfigErrorKind::BadReference`]) in the file, each
    /// with the line, column and key path of the reference.
    pub fn interpolate(
        mut self,
        source: &Source,
        env: EnvLookup<'_>,
    ) -> Result<Self, ConfigErrors> {
        let mut it = Interpolator {
            source,
            env,
            errors: Vec::new(),
            locator: None,
        };
        let root = KeyPath::root();

        let server = root.key("server");
        it.opt(self.server.listen.as_mut(), &server.key("listen"));
        it.opt(self.server.public_url.as_mut(), &server.key("public_url"));

        let twilio = root.key("twilio");
        it.opt(self.twilio.account_sid.as_mut(), &twilio.key("account_sid"));
        it.opt(self.twilio.auth_token.as_mut(), &twilio.key("auth_token"));
        it.opt(
            self.twilio.api_base_url.as_mut(),
            &twilio.key("api_base_url"),
        );
        it.opt(self.twilio.caller_id.as_mut(), &twilio.key("caller_id"));
        for (sid, account) in &mut self.twilio.accounts {
            let path = twilio.key("accounts").key(sid);
            it.spanned(&mut account.get_mut().auth_token, &path.key("auth_token"));
        }
        let api = root.key("api");
        for (i, token) in self.api.tokens.iter_mut().flatten().enumerate() {
            it.spanned(token, &api.key("tokens").index(i));
        }
        it.opt(
            self.api.callback_secret.as_mut(),
            &api.key("callback_secret"),
        );
        it.opt(self.records.path.as_mut(), &root.key("records").key("path"));
        it.opt(self.records.url.as_mut(), &root.key("records").key("url"));
        it.opt(
            self.records.instance.as_mut(),
            &root.key("records").key("instance"),
        );
        for (name, lookup) in &mut self.lookups {
            let path = root.key("lookups").key(name);
            it.spanned(&mut lookup.get_mut().path, &path.key("path"));
        }

        for (name, tool) in &mut self.tools {
            let path = root.key("tools").key(name);
            let tool = tool.get_mut();
            it.opt(tool.url.as_mut(), &path.key("url"));
            for (header, value) in tool.headers.iter_mut().flatten() {
                it.spanned(value, &path.key("headers").key(header));
            }
        }
        for (name, server) in &mut self.mcp {
            let path = root.key("mcp").key(name);
            let server = server.get_mut();
            it.opt(server.url.as_mut(), &path.key("url"));
            it.opt(server.command.as_mut(), &path.key("command"));
            for (n, arg) in server.args.iter_mut().flatten().enumerate() {
                it.spanned(arg, &path.key("args").index(n));
            }
            for (key, value) in server.env.iter_mut().flatten() {
                it.spanned(value, &path.key("env").key(key));
            }
            for (header, value) in server.headers.iter_mut().flatten() {
                it.spanned(value, &path.key("headers").key(header));
            }
        }

        for (name, plugin) in &mut self.plugins {
            let path = root.key("plugins").key(name);
            let plugin = plugin.get_mut();
            it.spanned(&mut plugin.path, &path.key("path"));
            if let Some(settings) = plugin.settings.as_mut() {
                it.table(settings.get_mut(), &path.key("settings"));
            }
        }

        for (i, agent) in self.agents.iter_mut().enumerate() {
            let path = root.key("agents").index(i);
            let agent = agent.get_mut();
            it.spanned(&mut agent.name, &path.key("name"));
            for (n, number) in agent.numbers.iter_mut().enumerate() {
                it.spanned(number, &path.key("numbers").index(n));
            }
            if let Some(params) = agent.match_params.as_mut() {
                let match_path = path.key("match");
                for (key, value) in params.get_mut().iter_mut() {
                    it.spanned(value, &match_path.key(key.get_ref()));
                }
            }
            it.opt(agent.greeting.as_mut(), &path.key("greeting"));
            if let Some(context) = agent.caller_context.as_mut() {
                let context = context.get_mut();
                let c_path = path.key("caller_context");
                it.opt(context.greeting.as_mut(), &c_path.key("greeting"));
            }
            if let Some(events) = agent.events.as_mut() {
                let e_path = path.key("events");
                it.spanned(&mut events.url, &e_path.key("url"));
                it.opt(events.secret.as_mut(), &e_path.key("secret"));
            }
            let mut uses = Vec::new();
            if let Some(realtime) = agent.realtime.as_mut() {
                uses.push((realtime.get_mut(), path.key("realtime")));
            }
            if let Some(pipeline) = agent.pipeline.as_mut() {
                let pipeline = pipeline.get_mut();
                let p_path = path.key("pipeline");
                it.opt(pipeline.instructions.as_mut(), &p_path.key("instructions"));
                uses.push((pipeline.stt.get_mut(), p_path.key("stt")));
                uses.push((pipeline.llm.get_mut(), p_path.key("llm")));
                uses.push((pipeline.tts.get_mut(), p_path.key("tts")));
            }
            for (used, use_path) in uses {
                it.spanned(&mut used.plugin, &use_path.key("plugin"));
                if let Some(settings) = used.settings.as_mut() {
                    it.table(settings.get_mut(), &use_path.key("settings"));
                }
                for (name, value) in used.secrets.iter_mut().flatten() {
                    it.spanned(value, &use_path.key("secrets").key(name));
                }
                for (n, host) in used.allowed_hosts.iter_mut().flatten().enumerate() {
                    it.spanned(host, &use_path.key("allowed_hosts").index(n));
                }
            }
        }

        it.opt(
            self.routing.default.as_mut(),
            &root.key("routing").key("default"),
        );

        if it.errors.is_empty() {
            Ok(self)
        } else {
            Err(ConfigErrors::new(it.errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("voice.example.com".into()),
            "EMPTY" => Some(String::new()),
            "DOLLAR" => Some("a$b${HOST}".into()),
            _ => None,
        }
    }

    fn ok(input: &str) -> String {
        match interpolate_str(input, &env) {
            Ok(s) => s,
            Err(e) => panic!("{input:?}: {e:?}"),
        }
    }

    fn err(input: &str) -> Vec<RefError> {
        match interpolate_str(input, &env) {
            Ok(s) => panic!("{input:?} interpolated to {s:?}, expected an error"),
            Err(e) => e,
        }
    }

    #[test]
    fn substitutes_variables() {
        assert_eq!(ok("https://${HOST}/x"), "https://voice.example.com/x");
        assert_eq!(ok("${HOST}${HOST}"), "voice.example.comvoice.example.com");
        assert_eq!(ok("no refs"), "no refs");
        assert_eq!(ok(""), "");
    }

    #[test]
    fn defaults_apply_when_unset_or_empty() {
        assert_eq!(ok("${MISSING:-x}"), "x");
        assert_eq!(ok("${EMPTY:-x}"), "x");
        assert_eq!(ok("${HOST:-x}"), "voice.example.com");
        assert_eq!(ok("${MISSING:-}"), "");
        assert_eq!(ok("${MISSING:-a:-b}"), "a:-b");
        // Set but empty, no default: used as is.
        assert_eq!(ok("[${EMPTY}]"), "[]");
    }

    #[test]
    fn dollar_escapes_and_literals() {
        assert_eq!(ok("$$"), "$");
        assert_eq!(ok("$${HOST}"), "${HOST}");
        assert_eq!(ok("costs $5"), "costs $5");
        assert_eq!(ok("end $"), "end $");
        assert_eq!(ok("$$$$"), "$$");
        // Values are not re-scanned.
        assert_eq!(ok("${DOLLAR}"), "a$b${HOST}");
    }

    #[test]
    fn unset_variable_is_an_error_at_its_offset() {
        let e = err("ab${NOPE}");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].offset, 2);
        assert!(matches!(&e[0].kind, ConfigErrorKind::UnsetVariable { name } if name == "NOPE"));
    }

    #[test]
    fn reports_every_bad_reference_in_a_string() {
        let e = err("${A} and ${B}");
        let names: Vec<_> = e
            .iter()
            .filter_map(|e| match &e.kind {
                ConfigErrorKind::UnsetVariable { name } => Some((name.as_str(), e.offset)),
                _ => None,
            })
            .collect();
        assert_eq!(names, [("A", 0), ("B", 9)]);
    }

    #[test]
    fn referenced_variables_are_named_in_order() {
        assert_eq!(
            referenced_variables("\"${OPENAI_API_KEY:-}\""),
            ["OPENAI_API_KEY"]
        );
        assert_eq!(referenced_variables("${A}-${B:-x}$${C}$5"), ["A", "B"]);
        assert!(referenced_variables("${1X} ${X:-${Y}} ${").is_empty());
        assert!(referenced_variables("").is_empty());
    }

    #[test]
    fn malformed_references_are_errors() {
        for bad in [
            "${HOST",
            "${}",
            "${1X}",
            "${HO ST}",
            "$HOST",
            "${X:-${HOST}}",
        ] {
            let e = err(bad);
            assert!(
                matches!(e[0].kind, ConfigErrorKind::BadReference { .. }),
                "{bad:?}: {:?}",
                e[0].kind
            );
        }
    }

    #[test]
    fn interpolates_every_string_value_but_not_keys() {
        let text = r#"
[server]
listen = "${LISTEN:-127.0.0.1:9000}"

[plugins.echo]
path = "${PLUGIN_DIR:-plugins}/echo.wasm"
settings = { "${KEY}" = "${HOST}", list = ["$$x", { deep = "${HOST}" }], n = 1 }

[[agents]]
name = "a"
match = { "${K}" = "${HOST}" }
realtime = { plugin = "echo" }
"#;
        let source = Source::new("agents.toml", text);
        let raw = source
            .parse()
            .and_then(|raw| {
                raw.interpolate(&source, &env)
                    .map_err(|e| e.into_vec().remove(0))
            })
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            raw.server.listen.map(|l| l.into_inner()).as_deref(),
            Some("127.0.0.1:9000")
        );
        let plugin = raw.plugins["echo"].get_ref();
        assert_eq!(plugin.path.get_ref(), "plugins/echo.wasm");
        let settings = plugin.settings.as_ref().map(|s| s.get_ref().clone());
        let settings = settings.unwrap_or_default();
        assert_eq!(settings["${KEY}"].as_str(), Some("voice.example.com"));
        assert_eq!(settings["list"][0].as_str(), Some("$x"));
        assert_eq!(
            settings["list"][1]["deep"].as_str(),
            Some("voice.example.com")
        );
        let m = raw.agents[0]
            .get_ref()
            .match_params
            .as_ref()
            .map(|m| m.get_ref());
        let (k, v) = m.and_then(|m| m.iter().next()).expect("one pair");
        assert_eq!(
            (k.get_ref().as_str(), v.get_ref().as_str()),
            ("${K}", "voice.example.com")
        );
    }

    #[test]
    fn errors_carry_line_column_and_key_even_inside_settings() {
        let text = "[server]\nlisten = \"x${NOPE}\"\n\n[plugins.echo]\npath = \"e.wasm\"\n\n[plugins.echo.settings]\nvoice = { name = \"${VOICE}\" }\n";
        let source = Source::new("agents.toml", text);
        let raw = source.parse().unwrap_or_else(|e| panic!("{e}"));
        let errors = match raw.interpolate(&source, &env) {
            Ok(_) => panic!("expected errors"),
            Err(e) => e.into_vec(),
        };
        assert_eq!(errors.len(), 2, "{errors:?}");
        let rendered: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            rendered[0].starts_with(
                "agents.toml:2:12: server.listen: environment variable NOPE is not set"
            ),
            "{}",
            rendered[0]
        );
        assert!(
            rendered[1].starts_with(
                "agents.toml:8:19: plugins.echo.settings.voice.name: environment variable VOICE"
            ),
            "{}",
            rendered[1]
        );
    }
}
