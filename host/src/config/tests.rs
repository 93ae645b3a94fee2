//! End-to-end tests of the config pipeline (load -> parse -> interpolate -> validate)
//! on small configs written into temp dirs.

use std::path::Path;

use super::test_support::{TempDir, build, build_err, build_ok, no_env};
use super::*;

/// The example from the design doc (plugin path relative to the config's directory).
const EXAMPLE: &str = r#"[server]
listen = "127.0.0.1:8080"
public_url = "https://voice.example.com"

[twilio]
account_sid = "${TWILIO_ACCOUNT_SID}"
auth_token = "${TWILIO_AUTH_TOKEN}"

[plugins.echo]
path = "../target/wasm32-wasip2/plugin/echo.wasm"
settings = { mode = "utterance" }

[[agents]]
name = "front-desk"
numbers = ["+14155550100"]
match = { merchantId = "m-42" }
greeting = "Thanks for calling."
realtime = { plugin = "echo", settings = { mode = "immediate" } }

[routing]
default = "front-desk"
"#;

fn twilio_env(name: &str) -> Option<String> {
    match name {
        "TWILIO_ACCOUNT_SID" => Some("AC0123456789abcdef".into()),
        "TWILIO_AUTH_TOKEN" => Some("s3cret-token".into()),
        _ => None,
    }
}

/// The only error with key `key`; panics (showing all errors) if there is not exactly
/// one.
fn at_key<'e>(errors: &'e ConfigErrors, key: &str) -> &'e ConfigError {
    let found: Vec<&ConfigError> = errors.iter().filter(|e| e.key() == Some(key)).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one error at {key}, got:\n{errors}"
    );
    found[0]
}

/// A minimal valid config with `extra` appended.
fn with_agent(extra: &str) -> String {
    format!(
        "[plugins.echo]\npath = \"echo.wasm\"\n\n[[agents]]\nname = \"a\"\nrealtime = {{ plugin = \"echo\" }}\n{extra}"
    )
}

#[test]
fn example_parses_into_typed_config() {
    let dir = TempDir::new();
    let plugin = dir.write("target/wasm32-wasip2/plugin/echo.wasm", b"\0asm");
    let config_path = dir.write("cfg/agents.toml", EXAMPLE.as_bytes());
    let source = load(&config_path).expect("readable");
    let config = from_source(&source, &twilio_env).unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(config.path, config_path);
    assert_eq!(config.server.listen, DEFAULT_LISTEN);
    assert_eq!(
        config.server.public_url.as_deref(),
        Some("https://voice.example.com")
    );
    assert_eq!(
        config.twilio.account_sid.as_deref(),
        Some("AC0123456789abcdef")
    );
    assert_eq!(config.twilio.auth_token.as_deref(), Some("s3cret-token"));

    let echo = config.plugin("echo").expect("echo plugin");
    assert_eq!(echo.name, "echo");
    assert_eq!(echo.kind, PluginKind::Wasm);
    assert_eq!(echo.settings, serde_json::json!({"mode": "utterance"}));
    assert!(echo.path.is_absolute(), "{}", echo.path.display());
    assert_eq!(
        std::fs::canonicalize(&echo.path).ok(),
        std::fs::canonicalize(&plugin).ok()
    );

    assert_eq!(config.agents.len(), 1);
    let agent = config.agent("front-desk").expect("agent");
    assert_eq!(agent.numbers, ["+14155550100"]);
    assert_eq!(
        agent.match_params,
        BTreeMap::from([("merchantId".to_owned(), "m-42".to_owned())])
    );
    assert_eq!(agent.greeting.as_deref(), Some("Thanks for calling."));
    assert_eq!(rt(agent).plugin, "echo");
    assert_eq!(rt(agent).settings, serde_json::json!({"mode": "immediate"}));
    assert_eq!(
        &rt(agent).effective_settings,
        &serde_json::json!({"mode": "immediate"})
    );
    assert_eq!(rt(agent).settings_json, r#"{"mode":"immediate"}"#);
    assert_eq!(config.default_agent.as_deref(), Some("front-desk"));
    assert_eq!(
        config.default_agent().map(|a| a.name.as_str()),
        Some("front-desk")
    );
    assert!(config.agent("nope").is_none());
}

#[test]
fn debug_never_prints_the_auth_token() {
    let dir = TempDir::new();
    dir.write("target/wasm32-wasip2/plugin/echo.wasm", b"\0asm");
    let path = dir.write("cfg/agents.toml", EXAMPLE.as_bytes());
    let config =
        from_source(&Source::new(path, EXAMPLE), &twilio_env).unwrap_or_else(|e| panic!("{e}"));
    let shown = format!("{config:?} {:?}", config.twilio);
    assert!(!shown.contains("s3cret-token"), "{shown}");
    assert!(shown.contains("AC0123456789abcdef"), "{shown}");
}

#[test]
fn defaults_when_sections_are_absent() {
    let (_dir, config) = build_ok(&with_agent(""));
    assert_eq!(config.server.listen, DEFAULT_LISTEN);
    assert_eq!(config.server.public_url, None);
    assert_eq!(config.twilio, TwilioConfig::default());
    assert_eq!(config.default_agent, None);
    let agent = &config.agents[0];
    assert!(agent.numbers.is_empty() && agent.match_params.is_empty());
    assert_eq!(agent.greeting, None);
    assert_eq!(rt(agent).settings_json, "{}");
}

#[test]
fn from_file_uses_the_process_environment_and_relative_paths() {
    let dir = TempDir::new();
    dir.write("plugins/libecho.so", b"ELF");
    let text = "[plugins.echo]\npath = \"plugins/libecho.so\"\n\n[[agents]]\nname = \"a\"\ngreeting = \"${SWITCHBOARD_TEST_SURELY_UNSET_VAR:-hi}\"\nrealtime = { plugin = \"echo\" }\n";
    let path = dir.write("agents.toml", text.as_bytes());
    let config = from_file(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.plugins["echo"].kind, PluginKind::Native);
    assert_eq!(config.agents[0].greeting.as_deref(), Some("hi"));
}

#[test]
fn the_plugin_cache_is_on_by_default_relative_to_the_config_and_can_be_turned_off() {
    let (_dir, config) = build_ok(&with_agent(""));
    assert_eq!(config.server.plugin_cache, default_plugin_cache_dir());
    let (dir, config) = build_ok(&format!(
        "[server]\nplugin_cache_dir = \"cache/plugins\"\n{}",
        with_agent("")
    ));
    assert_eq!(
        config.server.plugin_cache,
        Some(dir.path().join("cache/plugins"))
    );
    let (_dir, config) = build_ok(&format!(
        "[server]\nplugin_cache = false\nplugin_cache_dir = \"/var/cache/sb\"\n{}",
        with_agent("")
    ));
    assert_eq!(config.server.plugin_cache, None);
}

#[test]
fn default_plugin_cache_dir_follows_xdg() {
    // Read-only on the process environment: the rule, checked against what it reads.
    let expected = match (std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME")) {
        (Some(xdg), _) if Path::new(&xdg).is_absolute() => {
            Some(Path::new(&xdg).join("switchboard"))
        }
        (_, Some(home)) if Path::new(&home).is_absolute() => {
            Some(Path::new(&home).join(".cache/switchboard"))
        }
        _ => None,
    };
    assert_eq!(default_plugin_cache_dir(), expected);
}

#[test]
fn load_errors_name_the_file() {
    let dir = TempDir::new();
    let missing = dir.path().join("missing.toml");
    let e = load(&missing).expect_err("missing file");
    assert!(matches!(e.kind(), ConfigErrorKind::Read { .. }));
    assert!(
        e.to_string()
            .starts_with(&format!("{}: cannot read", missing.display())),
        "{e}"
    );

    let bad = dir.write("bad.toml", b"a = 1\nb = \"\xff\"\n");
    let e = load(&bad).expect_err("not utf-8");
    assert!(matches!(e.kind(), ConfigErrorKind::NotUtf8));
    assert_eq!((e.line(), e.column()), (Some(2), Some(6)));

    let big = dir.write(
        "big.toml",
        &vec![b'#'; usize::try_from(MAX_CONFIG_BYTES).unwrap_or(0) + 1],
    );
    let e = load(&big).expect_err("too large");
    assert!(matches!(e.kind(), ConfigErrorKind::TooLarge { .. }), "{e}");

    let errors = from_file(&missing).expect_err("missing file");
    assert_eq!(errors.len(), 1);
}

#[test]
fn syntax_error_has_file_line_and_key() {
    let errors = build_err(&with_agent("\n[routing]\ndefault = \"a\n"), &no_env);
    assert_eq!(errors.len(), 1);
    let e = &errors.errors()[0];
    assert!(matches!(e.kind(), ConfigErrorKind::Syntax { .. }), "{e}");
    assert_eq!(e.line(), Some(9));
    assert_eq!(e.key(), Some("routing.default"));
    assert!(e.to_string().contains("agents.toml:9:"), "{e}");
}

#[test]
fn unknown_keys_are_errors_with_line_and_key() {
    let errors = build_err(&with_agent("\n[[agnets]]\nname = \"b\"\n"), &no_env);
    let e = at_key(&errors, "agnets");
    assert!(matches!(e.kind(), ConfigErrorKind::Schema { .. }), "{e}");
    assert_eq!(e.line(), Some(8));

    let text = "[plugins.echo]\npath = \"echo.wasm\"\n\n[[agents]]\nname = \"a\"\nrealtime = { plugn = \"echo\" }\n";
    let errors = build_err(text, &no_env);
    let e = at_key(&errors, "agents[0].realtime.plugn");
    assert_eq!(e.line(), Some(6));
    assert!(
        e.to_string()
            .contains("unknown key `plugn`, expected one of `plugin`, `settings`"),
        "{e}"
    );
}

#[test]
fn wrong_type_is_an_error_with_line_and_key() {
    let errors = build_err(&with_agent("greeting = 42\n"), &no_env);
    let e = at_key(&errors, "agents[0].greeting");
    assert_eq!(e.line(), Some(7));
    assert!(
        e.to_string()
            .contains("invalid type: integer `42`, expected a string"),
        "{e}"
    );
}

#[test]
fn duplicate_agent_name() {
    let errors = build_err(
        &with_agent("\n[[agents]]\nname = \"a\"\nrealtime = { plugin = \"echo\" }\n"),
        &no_env,
    );
    let e = at_key(&errors, "agents[1].name");
    assert_eq!(e.line(), Some(9));
    assert!(
        matches!(e.kind(), ConfigErrorKind::DuplicateAgent { name, first_line: 5 } if name == "a"),
        "{e}"
    );
}

#[test]
fn invalid_agent_name() {
    let text = "[plugins.echo]\npath = \"echo.wasm\"\n[[agents]]\nname = \"front desk\"\nrealtime = { plugin = \"echo\" }\n";
    let errors = build_err(text, &no_env);
    let e = at_key(&errors, "agents[0].name");
    assert_eq!(e.line(), Some(4));
    assert!(
        matches!(e.kind(), ConfigErrorKind::InvalidAgentName { .. }),
        "{e}"
    );
}

#[test]
fn duplicate_numbers_across_and_within_agents() {
    let text = with_agent(
        "numbers = [\"+14155550100\"]\n\n[[agents]]\nname = \"b\"\nnumbers = [\"+14155550101\", \"+14155550100\", \"+14155550101\"]\nrealtime = { plugin = \"echo\" }\n",
    );
    let errors = build_err(&text, &no_env);
    assert_eq!(errors.len(), 2, "{errors}");
    let e = at_key(&errors, "agents[1].numbers[1]");
    assert_eq!(e.line(), Some(11));
    assert!(
        matches!(e.kind(), ConfigErrorKind::DuplicateNumber { agent, first_line: 7, .. } if agent == "a"),
        "{e}"
    );
    let e = at_key(&errors, "agents[1].numbers[2]");
    assert!(
        matches!(e.kind(), ConfigErrorKind::DuplicateNumber { agent, .. } if agent == "b"),
        "{e}"
    );
}

#[test]
fn bad_e164_number() {
    let errors = build_err(
        &with_agent("numbers = [\"+14155550100\",\n  \"415-555-0100\"]\n"),
        &no_env,
    );
    let e = at_key(&errors, "agents[0].numbers[1]");
    assert_eq!((e.line(), e.column()), (Some(8), Some(3)));
    assert!(
        matches!(e.kind(), ConfigErrorKind::InvalidNumber { number } if number == "415-555-0100")
    );
}

#[test]
fn unknown_plugin_renders_the_documented_line() {
    let text = "[plugins.echo]\npath = \"echo.wasm\"\n\n[[agents]]\nname = \"a\"\nrealtime = { plugin = \"echo\" }\n\n[[agents]]\nname = \"b\"\n\n[agents.realtime]\nplugin = \"foo\"\n";
    let errors = from_source(&Source::new("agents.toml", text), &no_env)
        .err()
        .map(ConfigErrors::into_vec);
    // The plugin is resolved against the current directory here, so also expect
    // "not found" for it; only look at the routing error.
    let errors = errors.unwrap_or_default();
    let rendered: Vec<String> = errors
        .iter()
        .filter(|e| matches!(e.kind(), ConfigErrorKind::UnknownPlugin { .. }))
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        rendered,
        [r#"agents.toml:12:10: agents[1].realtime.plugin: unknown plugin "foo" (known: echo)"#]
    );
}

#[test]
fn missing_plugin_file_names_the_resolved_path() {
    let text = "[plugins.echo]\npath = \"plugins/nope.wasm\"\n\n[[agents]]\nname = \"a\"\nrealtime = { plugin = \"echo\" }\n";
    let (dir, result) = build(text, &no_env);
    let errors = result.expect_err("missing plugin");
    let e = at_key(&errors, "plugins.echo.path");
    assert_eq!(e.line(), Some(2));
    let expected = dir.path().join("plugins/nope.wasm");
    assert!(
        matches!(e.kind(), ConfigErrorKind::PluginNotFound { path } if *path == expected),
        "{e}"
    );
    assert!(
        e.to_string().contains(&expected.display().to_string()),
        "{e}"
    );
    // An agent using a plugin whose file is missing is not also "unknown plugin".
    assert_eq!(errors.len(), 1, "{errors}");
}

#[test]
fn plugin_path_that_is_a_directory() {
    let text = "[plugins.echo]\npath = \"dir.wasm\"\n\n[[agents]]\nname = \"a\"\nrealtime = { plugin = \"echo\" }\n";
    let dir = TempDir::new();
    std::fs::create_dir_all(dir.path().join("dir.wasm")).expect("mkdir");
    let errors = from_source(&Source::new(dir.path().join("agents.toml"), text), &no_env)
        .expect_err("directory");
    let e = at_key(&errors, "plugins.echo.path");
    assert!(
        matches!(e.kind(), ConfigErrorKind::PluginNotAFile { .. }),
        "{e}"
    );
}

#[test]
fn bad_plugin_extension() {
    let dir = TempDir::new();
    dir.write("echo.dll", b"MZ");
    let text = "[plugins.echo]\npath = \"echo.dll\"\n\n[[agents]]\nname = \"a\"\nrealtime = { plugin = \"echo\" }\n";
    let errors = from_source(&Source::new(dir.path().join("agents.toml"), text), &no_env)
        .expect_err("bad extension");
    assert_eq!(errors.len(), 1, "{errors}");
    let e = at_key(&errors, "plugins.echo.path");
    assert_eq!(e.line(), Some(2));
    assert!(
        matches!(e.kind(), ConfigErrorKind::PluginExtension { .. }),
        "{e}"
    );
}

#[test]
fn unknown_default_agent() {
    let errors = build_err(&with_agent("\n[routing]\ndefault = \"nobody\"\n"), &no_env);
    let e = at_key(&errors, "routing.default");
    assert_eq!(e.line(), Some(9));
    assert!(
        e.to_string()
            .ends_with(r#"unknown agent "nobody" (known: a)"#),
        "{e}"
    );
}

#[test]
fn unset_env_var_is_reported_with_line_and_column() {
    let errors = build_err(&with_agent("greeting = \"Hi from ${COMPANY}\"\n"), &no_env);
    let e = at_key(&errors, "agents[0].greeting");
    assert_eq!((e.line(), e.column()), (Some(7), Some(21)));
    assert!(matches!(e.kind(), ConfigErrorKind::UnsetVariable { name } if name == "COMPANY"));
}

#[test]
fn env_defaults_and_dollar_escapes_reach_the_config() {
    let env = |name: &str| (name == "SET").then(|| "value".to_owned());
    let text = with_agent(
        "greeting = \"${UNSET:-x} ${SET:-y} costs $$5\"\nmatch = { k = \"${SET}\" }\nrealtime.settings = { price = \"$$${UNSET:-9}\" }\n",
    )
    .replace("realtime = { plugin = \"echo\" }\n", "realtime.plugin = \"echo\"\n");
    let (_dir, result) = build(&text, &env);
    let config = result.unwrap_or_else(|e| panic!("{e}"));
    let agent = &config.agents[0];
    assert_eq!(agent.greeting.as_deref(), Some("x value costs $5"));
    assert_eq!(
        agent.match_params.get("k").map(String::as_str),
        Some("value")
    );
    assert_eq!(
        &rt(agent).effective_settings,
        &serde_json::json!({"price": "$9"})
    );
}

#[test]
fn no_agents() {
    let errors = build_err("[plugins.echo]\npath = \"echo.wasm\"\n", &no_env);
    let e = at_key(&errors, "agents");
    assert!(matches!(e.kind(), ConfigErrorKind::NoAgents), "{e}");
    assert_eq!(e.line(), Some(1));
    let errors = build_err("# nobody home\nagents = []\n", &no_env);
    assert_eq!(at_key(&errors, "agents").line(), Some(2));
}

#[test]
fn all_validation_errors_are_reported_at_once() {
    let text = r#"[server]
listen = "localhost:8080"
public_url = "https://voice.example.com/twilio"

[twilio]
account_sid = "SK123"

[plugins.echo]
path = "echo.wasm"

[[agents]]
name = "a"
numbers = ["14155550100"]
realtime = { plugin = "missing" }

[[agents]]
name = "a"
realtime = { plugin = "echo" }

[routing]
default = "nobody"
"#;
    let errors = build_err(text, &no_env);
    let got: Vec<(Option<usize>, Option<&str>)> =
        errors.iter().map(|e| (e.line(), e.key())).collect();
    assert_eq!(
        got,
        [
            (Some(2), Some("server.listen")),
            (Some(3), Some("server.public_url")),
            (Some(6), Some("twilio.account_sid")),
            (Some(13), Some("agents[0].numbers[0]")),
            (Some(14), Some("agents[0].realtime.plugin")),
            (Some(17), Some("agents[1].name")),
            (Some(21), Some("routing.default")),
        ],
        "{errors}"
    );
    assert_eq!(errors.to_string().lines().count(), 7);
    let account = at_key(&errors, "twilio.account_sid").to_string();
    assert!(!account.contains("SK123"), "{account}");
}

#[test]
fn all_interpolation_errors_are_reported_at_once() {
    let text = with_agent(
        "greeting = \"${A}\"\n\n[twilio]\nauth_token = \"${B}\"\naccount_sid = \"$C\"\n",
    );
    let errors = build_err(&text, &no_env);
    let lines: Vec<_> = errors.iter().map(|e| e.line()).collect();
    // Sorted into file order, whatever order the keys are visited in.
    assert_eq!(lines, [Some(7), Some(10), Some(11)], "{errors}");
}

#[test]
fn public_url_is_normalized_and_empty_means_absent() {
    let (_dir, config) = build_ok(&with_agent(
        "\n[server]\npublic_url = \"https://voice.example.com/\"\n",
    ));
    assert_eq!(
        config.server.public_url.as_deref(),
        Some("https://voice.example.com")
    );
    let (_dir, config) = build_ok(&with_agent(
        "\n[server]\npublic_url = \"${PUBLIC_URL:-}\"\nlisten = \"[::1]:9000\"\n",
    ));
    assert_eq!(config.server.public_url, None);
    assert_eq!(config.server.listen.to_string(), "[::1]:9000");
}

#[test]
fn empty_twilio_values_count_as_absent() {
    let (_dir, config) = build_ok(&with_agent(
        "\n[twilio]\naccount_sid = \"${SID:-}\"\nauth_token = \"${TOKEN:-}\"\n",
    ));
    assert_eq!(config.twilio, TwilioConfig::default());
}

#[test]
fn settings_become_json_with_agent_overlay() {
    let text = r#"[plugins.echo]
path = "echo.wasm"

[plugins.echo.settings]
mode = "utterance"
voice = { name = "alloy", speed = 1.5 }
started = 1979-05-27T07:32:00Z
tags = ["a", 1, true]

[[agents]]
name = "a"
realtime = { plugin = "echo", settings = { voice = { name = "verse" }, extra = 7 } }
"#;
    let (_dir, config) = build_ok(text);
    assert_eq!(
        config.plugins["echo"].settings,
        serde_json::json!({
            "mode": "utterance",
            "voice": {"name": "alloy", "speed": 1.5},
            "started": "1979-05-27T07:32:00Z",
            "tags": ["a", 1, true],
        })
    );
    let agent = &config.agents[0];
    let expected = serde_json::json!({
        "mode": "utterance",
        "voice": {"name": "verse"},
        "started": "1979-05-27T07:32:00Z",
        "tags": ["a", 1, true],
        "extra": 7,
    });
    assert_eq!(&rt(agent).effective_settings, &expected);
    let reparsed: serde_json::Value =
        serde_json::from_str(&rt(agent).settings_json).expect("settings_json is JSON");
    assert_eq!(reparsed, expected);
}

#[test]
fn non_finite_settings_floats_are_errors() {
    let text = "[plugins.echo]\npath = \"echo.wasm\"\n\n[plugins.echo.settings]\nok = 1.0\nlimits = { max = inf }\n\n[[agents]]\nname = \"a\"\nrealtime = { plugin = \"echo\" }\n";
    let errors = build_err(text, &no_env);
    let e = at_key(&errors, "plugins.echo.settings.limits.max");
    assert_eq!(e.line(), Some(6));
    assert!(
        matches!(e.kind(), ConfigErrorKind::NonFiniteFloat { .. }),
        "{e}"
    );
}

#[test]
fn match_tables_are_checked() {
    let text = with_agent(
        "match = { merchantId = \"m-1\" }\n\n[[agents]]\nname = \"b\"\nmatch = { merchantId = \"m-1\" }\nrealtime = { plugin = \"echo\" }\n\n[[agents]]\nname = \"c\"\nmatch = {}\nrealtime = { plugin = \"echo\" }\n\n[[agents]]\nname = \"d\"\nmatch = { \"\" = \"x\", k = \"\" }\nrealtime = { plugin = \"echo\" }\n",
    );
    let errors = build_err(&text, &no_env);
    let e = at_key(&errors, "agents[1].match");
    assert_eq!(e.line(), Some(11));
    assert!(
        matches!(e.kind(), ConfigErrorKind::DuplicateMatch { agent, first_line: 7 } if agent == "a"),
        "{e}"
    );
    let e = at_key(&errors, "agents[2].match");
    assert!(matches!(e.kind(), ConfigErrorKind::EmptyMatch), "{e}");
    let e = at_key(&errors, r#"agents[3].match."""#);
    assert!(matches!(e.kind(), ConfigErrorKind::EmptyMatchKey), "{e}");
    let e = at_key(&errors, "agents[3].match.k");
    assert!(matches!(e.kind(), ConfigErrorKind::EmptyMatchValue), "{e}");
    assert_eq!(errors.len(), 4, "{errors}");
}

#[test]
fn different_match_tables_are_fine() {
    let text = with_agent(
        "match = { merchantId = \"m-1\" }\n\n[[agents]]\nname = \"b\"\nmatch = { merchantId = \"m-1\", lang = \"es\" }\nrealtime = { plugin = \"echo\" }\n",
    );
    let (_dir, config) = build_ok(&text);
    assert_eq!(config.agents.len(), 2);
}

/// The fixture in `tests/fixtures/agents/` must stay valid. Its plugin path points into
/// the workspace `target/`, so validate it from a temp dir with the same layout.
#[test]
fn routing_fixture_is_valid() {
    let text = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/agents/routing.toml"
    ));
    let dir = TempDir::new();
    dir.write("target/plugins/wasm32-wasip2/plugin/echo.wasm", b"\0asm");
    // The directories must exist for `..` in the plugin path to resolve.
    let path = dir.write("tests/fixtures/agents/routing.toml", text.as_bytes());
    let config = from_source(&Source::new(&path, text), &no_env).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.agents.len() >= 3);
    assert!(config.default_agent.is_some());
    assert!(config.agents.iter().any(|a| !a.numbers.is_empty()));
    assert!(
        config
            .agents
            .iter()
            .any(|a| a.match_params.contains_key("merchantId"))
    );
    assert!(
        Path::new(&config.plugins["echo"].path)
            .ends_with("target/plugins/wasm32-wasip2/plugin/echo.wasm")
    );
}

/// Golden output for `tests/fixtures/agents/bad-multiple.toml`: one line per problem,
/// in file order, each `FILE:LINE:COLUMN: KEY: message`.
#[test]
fn bad_fixture_reports_every_problem_in_file_order() {
    let text = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/agents/bad-multiple.toml"
    ));
    let dir = TempDir::new();
    dir.write("target/plugins/wasm32-wasip2/plugin/echo.wasm", b"\0asm");
    let path = dir.write("tests/fixtures/agents/bad-multiple.toml", text.as_bytes());
    let errors = from_source(&Source::new(&path, text), &no_env).expect_err("invalid");
    let prefix = format!("{}/", dir.path().display());
    let rendered = errors.to_string().replace(&prefix, "");
    let expected = [
        r#"tests/fixtures/agents/bad-multiple.toml:5:10: server.listen: invalid listen address "localhost:8080": expected IP:PORT such as 127.0.0.1:8080 or [::1]:8080"#,
        r#"tests/fixtures/agents/bad-multiple.toml:6:14: server.public_url: invalid public URL "https://voice.example.com/twilio": must not have a path, query or fragment (Twilio webhooks are served at fixed paths under it)"#,
        r#"tests/fixtures/agents/bad-multiple.toml:9:15: twilio.account_sid: Twilio account SID must start with "AC""#,
        r#"tests/fixtures/agents/bad-multiple.toml:15:8: plugins.legacy.path: unsupported plugin file tests/fixtures/agents/../../../target/plugins/legacy.dll: expected a .wasm component or a .so/.dylib native library"#,
        r#"tests/fixtures/agents/bad-multiple.toml:15:8: plugins.legacy.path: plugin file not found: tests/fixtures/agents/../../../target/plugins/legacy.dll"#,
        r#"tests/fixtures/agents/bad-multiple.toml:19:28: agents[0].numbers[1]: invalid phone number "415-555-0101": expected E.164, '+' then 1 to 15 digits, e.g. +14155550100"#,
        r#"tests/fixtures/agents/bad-multiple.toml:23:8: agents[1].name: duplicate agent name "front-desk" (first defined on line 18)"#,
        r#"tests/fixtures/agents/bad-multiple.toml:24:12: agents[1].numbers[0]: number +14155550100 is already routed to agent "front-desk" (line 19)"#,
        r#"tests/fixtures/agents/bad-multiple.toml:26:23: agents[1].realtime.plugin: unknown plugin "eccho" (known: echo, legacy)"#,
        r#"tests/fixtures/agents/bad-multiple.toml:29:8: agents[2].name: invalid agent name "sales team": ' ' is not allowed (use A-Z, a-z, 0-9, _ and -)"#,
        r#"tests/fixtures/agents/bad-multiple.toml:30:9: agents[2].match: empty match table would match every call; remove it"#,
        r#"tests/fixtures/agents/bad-multiple.toml:34:11: routing.default: unknown agent "frontdesk" (known: front-desk, sales team)"#,
    ];
    assert_eq!(
        rendered.lines().collect::<Vec<_>>(),
        expected,
        "\n{rendered}"
    );
}

/// An agent's `secrets` are interpolated and never printed; `allowed_hosts` are lowercased,
/// and an entry that is not a host pattern is an error at its line and key.
#[test]
fn realtime_secrets_and_allowed_hosts() {
    let text = r#"[plugins.rt]
path = "rt.wasm"

[[agents]]
name = "a"
realtime = { plugin = "rt", secrets = { api_key = "${OPENAI_KEY}" }, allowed_hosts = ["API.openai.com", "127.0.0.1:9000", "*.example.com"] }
"#;
    let dir = TempDir::new();
    dir.write("rt.wasm", b"\0asm");
    let path = dir.write("agents.toml", text.as_bytes());
    let env = |name: &str| (name == "OPENAI_KEY").then(|| "sk-very-secret".to_string());
    let config =
        from_source(&Source::new(path.clone(), text), &env).unwrap_or_else(|e| panic!("{e}"));
    let rt = rt(&config.agents[0]);
    assert_eq!(rt.secrets["api_key"].expose(), "sk-very-secret");
    assert_eq!(
        rt.allowed_hosts,
        ["api.openai.com", "127.0.0.1:9000", "*.example.com"]
    );
    let shown = format!("{config:?}");
    assert!(!shown.contains("sk-very-secret"), "{shown}");

    let bad = text.replace("\"127.0.0.1:9000\"", "\"https://evil.com/x\"");
    let path = dir.write("bad.toml", bad.as_bytes());
    let Err(errors) = from_source(&Source::new(path, &bad), &env) else {
        panic!("a URL was accepted as a host");
    };
    let e = at_key(&errors, "agents[0].realtime.allowed_hosts[1]");
    assert_eq!(e.line(), Some(6), "{e}");
    assert!(e.to_string().contains("not a host name"), "{e}");
}

fn rt(agent: &super::Agent) -> &super::PluginUse {
    agent.realtime().expect("a realtime agent")
}

#[test]
fn pipeline_agents_validate_every_stage_and_endpointing() {
    let text = "[plugins.echo]\npath = \"echo.wasm\"\nbudget_ms = 5000\n\n[[agents]]\nname = \"p\"\n\n[agents.pipeline]\ninstructions = \"Be brief.\"\nendpointing_ms = 700\nstt = { plugin = \"echo\" }\nllm = { plugin = \"echo\", settings = { a = 1 } }\ntts = { plugin = \"echo\", allowed_hosts = [\"api.example.com\"] }\n";
    let (_dir, config) = build_ok(text);
    let p = config.agents[0].pipeline().expect("a pipeline agent");
    assert_eq!(p.instructions, "Be brief.");
    assert_eq!(p.endpointing, std::time::Duration::from_millis(700));
    assert_eq!(p.llm.settings_json, r#"{"a":1}"#);
    assert_eq!(p.tts.allowed_hosts, ["api.example.com"]);
    assert_eq!(
        config.plugins["echo"].budget,
        Some(std::time::Duration::from_millis(5000))
    );

    let bad = "[plugins.echo]\npath = \"echo.wasm\"\nbudget_ms = 0\n\n[[agents]]\nname = \"p\"\n\n[agents.pipeline]\nendpointing_ms = 50\nstt = { plugin = \"echo\" }\nllm = { plugin = \"nope\" }\ntts = { plugin = \"echo\" }\n\n[[agents]]\nname = \"neither\"\n";
    let errors = build_err(bad, &no_env);
    at_key(&errors, "plugins.echo.budget_ms");
    at_key(&errors, "agents[0].pipeline.endpointing_ms");
    at_key(&errors, "agents[0].pipeline.llm.plugin");
    at_key(&errors, "agents[1]");
}

#[test]
fn interruption_rules_have_defaults_and_are_checked() {
    use crate::call::interruption::Backchannel;
    let agent = |extra: &str| {
        format!(
            "[plugins.echo]\npath = \"echo.wasm\"\n\n[[agents]]\nname = \"p\"\n\n[agents.pipeline]\n{extra}\nstt = {{ plugin = \"echo\" }}\nllm = {{ plugin = \"echo\" }}\ntts = {{ plugin = \"echo\" }}\n"
        )
    };
    let (_dir, config) = build_ok(&agent(""));
    let p = config.agents[0].pipeline().expect("a pipeline agent");
    assert_eq!(p.min_interruption_words, 0);
    assert_eq!(p.backchannel, Backchannel::Ignore);
    let (_dir, config) = build_ok(&agent(
        "min_interruption_words = 2\nbackchannel = \"interrupt\"",
    ));
    let p = config.agents[0].pipeline().expect("a pipeline agent");
    assert_eq!(p.min_interruption_words, 2);
    assert_eq!(p.backchannel, Backchannel::Interrupt);

    let errors = build_err(&agent("min_interruption_words = 11"), &no_env);
    at_key(&errors, "agents[0].pipeline.min_interruption_words");
    let errors = build_err(&agent("backchannel = \"sometimes\""), &no_env);
    assert!(
        errors.iter().any(|e| e.to_string().contains("backchannel")),
        "{errors:?}"
    );
}

#[test]
fn cpu_share_keys_are_read_with_defaults_and_checked() {
    use crate::plugin::budget::{CpuLimits, DEFAULT_CPU_BURST, DEFAULT_CPU_PERCENT};
    let text = "[plugins.echo]\npath = \"echo.wasm\"\n\n[plugins.heavy]\npath = \"echo.wasm\"\nbudget_ms = 15000\n\n[plugins.custom]\npath = \"echo.wasm\"\ncpu_percent = 100\ncpu_burst_ms = 20000\n\n[[agents]]\nname = \"a\"\nrealtime = { plugin = \"echo\" }\n";
    let (_dir, config) = build_ok(text);
    assert_eq!(
        config.plugins["echo"].cpu,
        CpuLimits {
            percent: DEFAULT_CPU_PERCENT,
            burst: DEFAULT_CPU_BURST
        }
    );
    assert_eq!(
        config.plugins["heavy"].cpu.burst,
        std::time::Duration::from_secs(30),
        "twice a raised budget"
    );
    assert_eq!(
        config.plugins["custom"].cpu,
        CpuLimits {
            percent: 100,
            burst: std::time::Duration::from_secs(20)
        }
    );
    let bad = "[plugins.echo]\npath = \"echo.wasm\"\ncpu_percent = 0\ncpu_burst_ms = 5\n\n[[agents]]\nname = \"a\"\nrealtime = { plugin = \"echo\" }\n";
    let errors = build_err(bad, &no_env);
    at_key(&errors, "plugins.echo.cpu_percent");
    at_key(&errors, "plugins.echo.cpu_burst_ms");
}

mod properties {
    use super::super::test_support::{build, no_env};
    use proptest::prelude::*;

    /// The shipped agents.toml, as operators start from it.
    const SHIPPED: &str = include_str!("../../../agents.toml");

    proptest! {
        /// The shipped file with a random cut, a byte replaced, or a line dropped or doubled:
        /// it loads, or it is refused with errors that each name the file and (but for a whole-
        /// file problem) a line — never a panic.
        #[test]
        fn mutated_shipped_configs_load_or_say_where(
            at in 0usize..SHIPPED.len(),
            byte in prop::sample::select(b"=[]{}\"'#,.\n 0a-$".to_vec()),
            op in 0u8..4,
        ) {
            let mut text = SHIPPED.as_bytes().to_vec();
            match op {
                0 => text.truncate(at),
                1 => text[at] = byte,
                2 => text.insert(at, byte),
                _ => {
                    let lines: Vec<&str> = SHIPPED.lines().collect();
                    let n = at % lines.len();
                    let mut out: Vec<&str> = lines.clone();
                    if at % 2 == 0 { out.remove(n); } else { out.insert(n, lines[n]); }
                    text = out.join("\n").into_bytes();
                }
            }
            let text = String::from_utf8_lossy(&text);
            let (_dir, result) = build(&text, &no_env);
            if let Err(errors) = result {
                prop_assert!(!errors.errors().is_empty());
                for error in errors.iter() {
                    let shown = error.to_string();
                    prop_assert!(shown.contains("agents.toml"), "{shown}");
                }
            }
        }
    }
}

/// A config with a `[lookups.customers]` CSV beside it and one agent using it.
fn with_lookup(context: &str) -> (TempDir, Result<Config, ConfigErrors>) {
    let dir = TempDir::new();
    dir.write("echo.wasm", b"\0asm");
    dir.write(
        "customers.csv",
        b"phone,name,order\n+15005550101,Ada Lovelace,1042\n",
    );
    let text = format!(
        r#"[plugins.echo]
path = "echo.wasm"

[lookups.customers]
path = "customers.csv"

[[agents]]
name = "desk"
realtime = {{ plugin = "echo" }}
{context}
"#
    );
    let source = Source::new(dir.path().join("agents.toml"), text);
    let result = from_source(&source, &no_env);
    (dir, result)
}

#[test]
fn caller_context_finds_the_caller_by_their_number() {
    let (_dir, config) = with_lookup(
        "caller_context = { lookup = \"customers\", greeting = \"Hello {caller.name}.\" }",
    );
    let config = config.unwrap();
    let context = config.agents[0].caller_context.as_ref().unwrap();
    assert_eq!(context.by, "From");
    assert_eq!(context.greeting.as_deref(), Some("Hello {caller.name}."));
    let params = |from: &str| vec![("From".to_string(), from.to_string())];
    let row = context.find(&params("+1 500 555 0101")).unwrap();
    assert_eq!(row["name"], "Ada Lovelace");
    assert!(context.find(&params("+15005550199")).is_none());
    assert!(context.find(&[]).is_none());
}

#[test]
fn caller_context_errors_are_located() {
    let (_dir, result) = with_lookup("caller_context = { lookup = \"clients\" }");
    let errors = result.unwrap_err();
    let e = at_key(&errors, "agents[0].caller_context.lookup");
    assert!(e.to_string().contains("known: customers"), "{e}");

    let (_dir, result) = with_lookup(
        "caller_context = { lookup = \"customers\", greeting = \"Hi {caller.surname}\" }",
    );
    let errors = result.unwrap_err();
    let e = at_key(&errors, "agents[0].caller_context.greeting");
    assert!(e.to_string().contains("no column \"surname\""), "{e}");
}

const TOOLS: &str = r#"
[plugins.echo]
path = "echo.wasm"

[tools.order_status]
description = "Order status"
method = "get"
url = "https://shop.example.com/orders/{order}"
headers = { Authorization = "Bearer ${SHOP_TOKEN}" }
parameters = { type = "object", required = ["order"], properties = { order = { type = "string" } } }

[mcp.calendar]
url = "https://calendar.example.com/mcp"
allow = ["book_slot"]

[mcp.crm]
command = "./crm-mcp"
args = ["--stdio"]
env = { CRM_KEY = "k" }

[[agents]]
name = "a"
realtime = { plugin = "echo" }
tools = ["order_status", "calendar.*", "crm.lookup", "transfer_call", "end_call"]
transfer_to = ["+14155550100", "+1212*"]
tool_filler_ms = 800
filler = "Hold on."
"#;

#[test]
fn tools_mcp_servers_and_grants_load() {
    let env = |name: &str| (name == "SHOP_TOKEN").then(|| "s3cret".to_string());
    let (_dir, result) = build(TOOLS, &env);
    let config = result.expect("valid");
    let tool = &config.tools["order_status"];
    let tools::ToolKind::Http(http) = &tool.kind else {
        panic!("an HTTP tool")
    };
    assert_eq!(http.method, reqwest::Method::GET);
    assert_eq!(http.headers[0].1.expose(), "Bearer s3cret");
    assert!(
        !format!("{tool:?}").contains("s3cret"),
        "secrets stay out of Debug"
    );
    assert_eq!(config.mcp.len(), 2);
    let crm = config.mcp.iter().find(|s| s.name == "crm").expect("crm");
    let crate::tools::mcp::McpTransport::Stdio { command, .. } = &crm.transport else {
        panic!("stdio")
    };
    assert!(
        command.ends_with("/crm-mcp") && command.starts_with('/'),
        "{command}"
    );
    let agent = &config.agents[0];
    assert_eq!(agent.tools.grants.len(), 5);
    assert!(matches!(
        &agent.tools.grants[2],
        tools::Grant::Mcp { server, tool: Some(t) } if server == "crm" && t == "lookup"
    ));
    assert_eq!(agent.tools.filler, "Hold on.");
    assert_eq!(
        agent.tools.filler_after,
        std::time::Duration::from_millis(800)
    );
}

#[test]
fn bad_tools_are_located_errors() {
    let env = |_: &str| Some("x".to_string());
    let bad = TOOLS
        .replace(
            "\"order_status\", \"calendar.*\"",
            "\"order_stats\", \"calendar.*\"",
        )
        .replace(
            "url = \"https://shop.example.com",
            "url = \"ftp://shop.example.com",
        )
        .replace("type = \"object\", required", "type = \"array\", required")
        .replace("\"+1212*\"", "\"1212\"")
        .replace(
            "command = \"./crm-mcp\"",
            "command = \"./crm-mcp\"\nurl = \"https://x\"",
        );
    let errors = build_err(&bad, &env);
    let text = errors.to_string();
    assert!(text.contains("unknown tool \"order_stats\""), "{text}");
    assert!(text.contains("is not an http(s) URL template"), "{text}");
    assert!(text.contains("must be an object schema"), "{text}");
    assert!(
        text.contains("neither an E.164 number nor a prefix"),
        "{text}"
    );
    assert!(
        text.contains("needs `url` (Streamable HTTP) or `command` (stdio)"),
        "{text}"
    );
    assert!(text.contains("agents.toml:"), "{text}");
    // transfer_call without numbers to transfer to.
    let errors = build_err(
        &TOOLS.replace("transfer_to = [\"+14155550100\", \"+1212*\"]\n", ""),
        &env,
    );
    assert!(
        errors
            .to_string()
            .contains("`transfer_to` lists no numbers"),
        "{errors}"
    );
}

#[test]
fn records_on_postgres_take_a_url_with_the_password_from_the_environment() {
    let env = |name: &str| (name == "PGPASSWORD").then(|| "pw-Secret-1".to_string());
    let text = with_agent(
        "[records]\nurl = \"postgres://sb:${PGPASSWORD}@db:5432/calls?sslmode=require\"\ninstance = \"gw-1\"\nheartbeat_ms = 500\ngrace_ms = 4000\n",
    );
    let (_dir, config) = build(&text, &env);
    let config = config.unwrap_or_else(|e| panic!("{e}"));
    let records = &config.records;
    assert_eq!(
        records.url.as_ref().map(Secret::expose),
        Some("postgres://sb:pw-Secret-1@db:5432/calls?sslmode=require")
    );
    assert_eq!(records.instance.as_deref(), Some("gw-1"));
    assert_eq!(records.heartbeat, std::time::Duration::from_millis(500));
    assert_eq!(records.grace, std::time::Duration::from_millis(4000));
    assert!(!format!("{config:?}").contains("pw-Secret-1"));
}

#[test]
fn records_url_mistakes_are_errors_that_never_show_the_password() {
    let cases = [
        // Both backends at once.
        "[records]\npath = \"calls.db\"\nurl = \"postgres://sb:hunter2@db/calls\"\n",
        // Not PostgreSQL.
        "[records]\nurl = \"mysql://sb:hunter2@db/calls\"\n",
    ];
    for extra in cases {
        let (_dir, result) = build(&with_agent(extra), &no_env);
        let errors = match result {
            Ok(_) => panic!("accepted: {extra}"),
            Err(e) => e,
        };
        let shown = at_key(&errors, "records.url").to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
    }
    // A grace period shorter than two heartbeats would declare live instances dead.
    let (_dir, result) = build(
        &with_agent(
            "[records]\nurl = \"postgres://db/calls\"\nheartbeat_ms = 2000\ngrace_ms = 3000\n",
        ),
        &no_env,
    );
    let Err(errors) = result else {
        panic!("grace below two heartbeats is refused");
    };
    at_key(&errors, "records.grace_ms");
}

/// A Standard Webhooks secret (the specification's example).
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[test]
fn agent_event_webhooks_take_a_url_a_secret_and_types() {
    let text = with_agent(
        "[agents.events]\nurl = \"https://crm.example.com/hooks?tenant=4\"\nsecret = \"${EVENTS_SECRET}\"\ntypes = [\"call.started\", \"call.ended\"]\n",
    );
    let env = |name: &str| (name == "EVENTS_SECRET").then(|| WHSEC.to_string());
    let (_dir, config) = build(&text, &env);
    let config = config.unwrap_or_else(|e| panic!("{e}"));
    let events = config.agents[0].events.as_ref().expect("events");
    assert_eq!(
        events.url.as_str(),
        "https://crm.example.com/hooks?tenant=4"
    );
    assert_eq!(
        events.secret,
        crate::callbacks::WebhookSecret::parse(WHSEC).unwrap()
    );
    assert!(events.wants("call.started") && events.wants("call.ended"));
    assert!(!events.wants("caller.transcript"));
    assert!(
        !format!("{config:?}").contains("MfKQ9r8"),
        "secret kept out of Debug"
    );
}

#[test]
fn agent_event_webhooks_default_to_the_callback_secret_and_all_types() {
    let text = format!(
        "[api]\ncallback_secret = \"{WHSEC}\"\n\n{}",
        with_agent("[agents.events]\nurl = \"http://127.0.0.1:9000/hook\"\n")
    );
    let (_dir, config) = build_ok(&text);
    let events = config.agents[0].events.as_ref().expect("events");
    assert_eq!(config.api.callback_secret.as_ref(), Some(&events.secret));
    assert!(events.types.is_none());
    assert!(crate::events::TYPES.iter().all(|t| events.wants(t)));
    // An empty URL (an unset `${VAR:-}`) turns them off, secret or not.
    let (_dir, config) = build_ok(&with_agent("[agents.events]\nurl = \"${EVENTS_URL:-}\"\n"));
    assert!(config.agents[0].events.is_none());
    let (_dir, config) = build_ok(&with_agent(""));
    assert!(config.agents[0].events.is_none());
}

#[test]
fn agent_event_webhook_mistakes_are_located_errors() {
    // No secret anywhere: the error names the agent.
    let errors = build_err(
        &with_agent("[agents.events]\nurl = \"https://crm.example.com/hook\"\n"),
        &no_env,
    );
    let e = at_key(&errors, "agents[0].events").to_string();
    assert!(
        e.contains("agent \"a\" sends event webhooks but has no secret"),
        "{e}"
    );
    assert!(e.contains("callback_secret"), "{e}");
    let cases = [
        (
            "url = \"ftp://crm.example.com/hook\"",
            "agents[0].events.url",
            "http:// or https://",
        ),
        (
            "url = \"https://user:hunter2@crm.example.com/hook\"",
            "agents[0].events.url",
            "credentials",
        ),
        (
            "url = \"https://crm.example.com/hook\"\nsecret = \"hunter2-not-whsec\"",
            "agents[0].events.secret",
            "invalid webhook secret: a Standard Webhooks secret starts with whsec_",
        ),
        (
            "url = \"https://crm.example.com/hook\"\ntypes = [\"call.started\", \"call.ringing\"]",
            "agents[0].events.types[1]",
            "unknown event type \"call.ringing\" (known: call.started,",
        ),
        (
            "url = \"https://crm.example.com/hook\"\nsecrets = \"x\"",
            "agents[0].events.secrets",
            "unknown key `secrets`",
        ),
    ];
    for (events, key, message) in cases {
        let text = format!(
            "[api]\ncallback_secret = \"{WHSEC}\"\n\n{}",
            with_agent(&format!("[agents.events]\n{events}\n"))
        );
        let (_dir, result) = build(&text, &no_env);
        let Err(errors) = result else {
            panic!("accepted: {events}");
        };
        let shown = if key.ends_with("secrets") {
            errors.to_string()
        } else {
            at_key(&errors, key).to_string()
        };
        assert!(shown.contains(message), "{events}: {shown}");
        assert!(shown.contains(key), "{events}: {shown}");
        assert!(!shown.contains("hunter2"), "{events}: {shown}");
    }
}
