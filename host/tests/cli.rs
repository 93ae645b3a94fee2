//! The `switchboard` binary as an operator runs it: a bad agents.toml exits 64 with one line
//! naming file:line:key; `serve` plus `simulate` completes a call and writes what was heard.

mod common;

use common::{
    BIN, KEYS, api_get, call_sid, echo_config, echo_wasm, root, serve, serve_logged, temp,
};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The target triple rustc builds for by default (this machine's).
fn host_triple() -> String {
    let out = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("-vV")
        .output()
        .expect("rustc -vV runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV prints the host triple")
        .to_string()
}

#[test]
fn bad_config_exits_64_naming_file_line_and_key() {
    let dir = temp("bad");
    let path = dir.join("agents.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[[agents]]\nname = \"a\"\nrealtime = { plugin = \"nope\" }\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("agents.toml:6"))
        .unwrap_or_else(|| panic!("no file:line in {stderr}"));
    assert!(line.contains("agents[0].realtime.plugin"), "{line}");
    assert!(line.contains("nope"), "{line}");
}

/// What the README promises: build the plugin, serve the shipped agents.toml, call it.
#[test]
fn serve_shipped_config_and_simulate_a_call() {
    let root = root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(&cargo)
        .current_dir(&root)
        .args(["plugins", "--quiet"])
        .status()
        .expect("cargo plugins runs");
    assert!(built.success());
    // The offline agent's local speech plugins and their models (as README's run command does,
    // but for the explicit host target, which the end-to-end tests share).
    let triple = host_triple();
    let built = Command::new(&cargo)
        .current_dir(&root)
        .args(["native-plugins", "--quiet", "--target", &triple])
        .status()
        .expect("cargo native-plugins runs");
    assert!(built.success());
    for script in ["scripts/fetch-whisper.sh", "scripts/fetch-piper.sh"] {
        let fetched = Command::new("bash")
            .arg(root.join(script))
            .status()
            .expect("the fetch script runs");
        assert!(fetched.success(), "{script} failed");
    }

    // The shipped config, on a free port.
    let shipped = std::fs::read_to_string(root.join("agents.toml")).expect("agents.toml");
    let dir = temp("serve");
    let config = dir.join("agents.toml");
    let plugins = root.join("target/plugins");
    std::fs::write(
        &config,
        shipped
            .replace("127.0.0.1:8080", "127.0.0.1:0")
            .replace(
                "\"target/plugins/plugin/",
                &format!("\"{}/{triple}/plugin/", plugins.display()),
            )
            .replace("\"target/plugins", &format!("\"{}", plugins.display()))
            .replace(
                "\"host/assets/",
                &format!("\"{}/host/assets/", root.display()),
            ),
    )
    .expect("write config");
    // What a rollout pipeline runs before a deploy: the shipped file passes `check` on a machine
    // with no keys, the assistant agent disabled with a warning.
    let (code, stdout, stderr) = check(&config);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("(1 disabled)"), "{stdout}");
    assert!(
        stderr.contains(": warning: agent \"assistant\" is disabled"),
        "{stderr}"
    );
    // From the repository root, as README says: the speech plugins find `models/` there.
    let (server, address) = serve(&config);
    let heard = dir.join("heard.wav");
    // `simulate` with `args` and a fixture, against this gateway: its stdout, once it succeeded.
    let simulate = |args: &[&str], wav: &str| {
        let out = Command::new(BIN)
            .arg("simulate")
            .args(args)
            .arg("--wav")
            .arg(root.join("tests/fixtures/speech").join(wav))
            .args(["--url", &format!("http://{address}")])
            .arg("--config")
            .arg(&config)
            .envs(KEYS)
            .output()
            .expect("simulate runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        println!("{stdout}");
        stdout
    };
    let out_arg = heard.to_string_lossy().into_owned();
    let stdout = simulate(&["--out", &out_arg], "beckett.wav");
    assert!(stdout.contains("frames received"), "{stdout}");
    // The offline front-desk agent answered: its greeting and the caller's turn, recognised.
    assert!(stdout.contains("transcript"), "{stdout}");
    assert!(stdout.contains("    agent "), "{stdout}");
    assert!(stdout.contains("    caller "), "{stdout}");
    let bytes = std::fs::metadata(&heard).expect("heard.wav written").len();
    // At least the length of the recording at 8 kHz PCM16.
    assert!(bytes > 10 * 8000 * 2 - 8000, "heard.wav is {bytes} bytes");

    // README's caller-context try: a caller in the demo customers file is greeted by name and
    // told their order's status.
    let stdout = simulate(&["--from", "+15005550101"], "order-question.wav");
    assert!(stdout.contains("Hello Ada Lovelace"), "{stdout}");
    assert!(stdout.contains("Your order 1042 is"), "{stdout}");

    // README's tool try: any caller who says an order number hears its status, looked up by
    // the agent's `order_status` tool (which the transcript shows, with its latency).
    let stdout = simulate(&[], "order-number-question.wav");
    assert!(
        stdout.contains("order_status({\"order\":\"1043\"})"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Order 1043 is ready for pickup at the counter"),
        "{stdout}"
    );
    drop(server);
}

/// SIGKILL during calls: the records of the calls that finished are intact after the restart,
/// and the calls that were live are marked interrupted.
#[test]
fn killed_gateway_keeps_finished_records_and_marks_live_calls_interrupted() {
    let echo = echo_wasm();
    let dir = temp("kill");
    let _ = std::fs::remove_file(dir.join("calls.db"));
    let config = dir.join("agents.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"

[twilio]
auth_token = "${{TWILIO_AUTH_TOKEN}}"

[api]
tokens = ["${{SWITCHBOARD_API_TOKEN}}"]

[records]
path = "calls.db"

[plugins.echo]
path = "{}"

[[agents]]
name = "echo"
realtime = {{ plugin = "echo", settings = {{ mode = "immediate" }} }}

[routing]
default = "echo"
"#,
            echo.display()
        ),
    )
    .expect("write config");
    // A short call (1 s of tone) and a long one (a minute).
    let tone = |seconds: usize| -> Vec<i16> {
        (0..8000 * seconds)
            .map(|i| ((i as f64 * 0.2).sin() * 8000.0) as i16)
            .collect()
    };
    let short = dir.join("short.wav");
    let long = dir.join("long.wav");
    switchboard::simulate::write_wav(&short, &tone(1)).expect("short.wav");
    switchboard::simulate::write_wav(&long, &tone(60)).expect("long.wav");
    let simulate = |wav: &Path, address: &str| {
        let mut cmd = Command::new(BIN);
        cmd.args(["simulate", "--idle-hangup", "0.2", "--wav"])
            .arg(wav)
            .args(["--url", &format!("http://{address}")])
            .arg("--config")
            .arg(&config)
            .envs(KEYS)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        cmd
    };

    let (server, address) = serve(&config);
    let mut finished = Vec::new();
    for _ in 0..2 {
        let out = simulate(&short, &address).output().expect("simulate runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        finished.push(call_sid(&stdout));
    }
    let mut live: Vec<Child> = (0..2)
        .map(|_| simulate(&long, &address).spawn().expect("simulate starts"))
        .collect();
    // Wait until both long calls are live in the records.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let in_progress = api_get(&address, "/calls?limit=50")["calls"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|c| c["outcome"] == "in-progress")
            .count();
        if in_progress == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the long calls never went live"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    // SIGKILL: no shutdown code runs.
    drop(server);
    for child in &mut live {
        let _ = child.kill();
        let _ = child.wait();
    }

    let (_server, address) = serve(&config);
    let records = api_get(&address, "/calls?limit=50")["calls"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(records.len(), 4, "{records:#?}");
    for sid in &finished {
        let r = records
            .iter()
            .find(|r| r["call_sid"] == sid.as_str())
            .unwrap_or_else(|| panic!("finished call {sid} lost: {records:#?}"));
        assert_eq!(r["outcome"], "completed", "{r}");
        assert_eq!(r["agent"], "echo", "{r}");
        assert!(r["ended_at_ms"].is_i64(), "{r}");
        // 1 s of audio is 50 frames of 20 ms, all echoed back.
        assert!(r["frames_in"].as_u64().unwrap_or(0) >= 50, "{r}");
        assert!(r["frames_out"].as_u64().unwrap_or(0) >= 50, "{r}");
    }
    let interrupted: Vec<_> = records
        .iter()
        .filter(|r| !finished.iter().any(|f| r["call_sid"] == f.as_str()))
        .collect();
    assert_eq!(interrupted.len(), 2);
    for r in interrupted {
        assert_eq!(r["outcome"], "interrupted", "{r}");
        assert!(r["started_at_ms"].is_i64(), "{r}");
        assert!(r["ended_at_ms"].is_i64(), "{r}");
    }
}

/// `switchboard check FILE` on a machine with no keys: exit status, stdout, stderr.
fn check(path: &Path) -> (Option<i32>, String, String) {
    check_with(path, &[])
}

/// `switchboard check FILE` with `env` set and nothing else of ours: exit status, stdout, stderr.
fn check_with(path: &Path, env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    // From the repository root, as `serve`: the speech plugins find `models/` there.
    let out = Command::new(BIN)
        .current_dir(root())
        .arg("check")
        .arg(path)
        .env_remove("SWITCHBOARD_CHECK_UNSET")
        .env_remove("OPENAI_API_KEY")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .output()
        .expect("check runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The one line of `output` that names `file_line` (`agents.toml:15:`) and `key`.
fn line_naming<'o>(output: &'o str, file_line: &str, key: &str) -> &'o str {
    let found: Vec<&str> = output
        .lines()
        .filter(|l| l.contains(file_line) && l.contains(&format!(": {key}: ")))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one line at {file_line} {key} in:\n{output}"
    );
    found[0]
}

/// `check` reports what `serve` would refuse, each problem on a line naming file:line:key, and
/// exits 64: the file's own problems (an unset variable; an unknown plugin and a duplicate
/// number), then, in a file that validates, a plugin that does not load, settings the echo
/// plugin refuses when a session opens, and a realtime plugin used as pipeline stages.
#[test]
fn check_reports_each_problem_at_its_line_and_key_and_exits_64() {
    let echo = echo_wasm();
    let dir = temp("check-bad");
    let path = dir.join("agents.toml");

    std::fs::write(
        &path,
        format!(
            "[twilio]\nauth_token = \"${{SWITCHBOARD_CHECK_UNSET}}\"\n\n[plugins.echo]\npath = \"{}\"\n\n[[agents]]\nname = \"a\"\nrealtime = {{ plugin = \"echo\" }}\n",
            echo.display()
        ),
    )
    .expect("write");
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, Some(64), "{stdout}{stderr}");
    let line = line_naming(&stderr, "agents.toml:2:", "twilio.auth_token");
    assert!(
        line.contains("SWITCHBOARD_CHECK_UNSET is not set"),
        "{line}"
    );
    assert!(stdout.is_empty(), "{stdout}");

    let numbered = format!(
        r#"[twilio]
validate_signatures = false

[plugins.echo]
path = "{}"

[[agents]]
name = "a"
numbers = ["+15005550100"]
realtime = {{ plugin = "echo" }}

[[agents]]
name = "b"
numbers = ["+15005550100"]
realtime = {{ plugin = "nope" }}
"#,
        echo.display()
    );
    std::fs::write(&path, &numbered).expect("write");
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, Some(64), "{stdout}{stderr}");
    let line = line_naming(&stderr, "agents.toml:14:", "agents[1].numbers[0]");
    assert!(
        line.contains("already routed to agent \"a\" (line 9)"),
        "{line}"
    );
    let line = line_naming(&stderr, "agents.toml:15:", "agents[1].realtime.plugin");
    assert!(line.contains("unknown plugin \"nope\""), "{line}");
    assert!(stderr.contains("agents.toml: 2 problems"), "{stderr}");

    std::fs::write(dir.join("broken.wasm"), b"not a component").expect("write");
    std::fs::write(
        &path,
        format!(
            r#"[twilio]
auth_token = "t"

[api]
tokens = ["k"]

[plugins.echo]
path = "{}"

[plugins.broken]
path = "broken.wasm"

[[agents]]
name = "loud"
realtime = {{ plugin = "echo", settings = {{ mode = "loud" }} }}

[[agents]]
name = "piped"

[agents.pipeline]
stt = {{ plugin = "echo" }}
llm = {{ plugin = "echo" }}
tts = {{ plugin = "echo" }}
"#,
            echo.display()
        ),
    )
    .expect("write");
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, Some(64), "{stdout}{stderr}");
    let line = line_naming(&stderr, "agents.toml:11:8:", "plugins.broken.path");
    assert!(
        line.contains("plugin broken does not load: not a valid WASM component"),
        "{line}"
    );
    let line = line_naming(&stderr, "agents.toml:15:", "agents[0].realtime.settings");
    assert!(
        line.contains("plugin echo refused this agent's settings"),
        "{line}"
    );
    assert!(line.contains("loud"), "the plugin's own reason: {line}");
    for (n, stage) in [(21, "stt"), (22, "llm"), (23, "tts")] {
        let line = line_naming(
            &stderr,
            &format!("agents.toml:{n}:"),
            &format!("agents[1].pipeline.{stage}.plugin"),
        );
        assert!(line.contains("echo is a realtime plugin"), "{line}");
    }
    assert!(stderr.contains("agents.toml: 5 problems"), "{stderr}");
    // Nothing else: no warnings (token and API are set), no log lines.
    assert_eq!(stderr.lines().count(), 6, "{stderr}");
}

/// A file the gateway would serve: exit 0 and the one-line summary, warnings on stderr.
#[test]
fn check_passes_a_good_file_with_a_summary_and_warnings() {
    let echo = echo_wasm();
    let dir = temp("check-good");
    let path = dir.join("agents.toml");
    std::fs::write(
        &path,
        format!(
            r#"[twilio]
validate_signatures = false

[plugins.echo]
path = "{}"

[[agents]]
name = "echo"
realtime = {{ plugin = "echo", settings = {{ mode = "immediate", greeting_tone = true }} }}

[[agents]]
name = "utterance"
numbers = ["+15005550100"]
realtime = {{ plugin = "echo", settings = {{ silence_ms = 400 }} }}

[routing]
default = "echo"
"#,
            echo.display()
        ),
    )
    .expect("write");
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(
        stdout,
        format!(
            "{}: OK — 2 agents, 1 plugin, default agent echo\n",
            path.display()
        )
    );
    line_naming(&stderr, "agents.toml:2:23:", "twilio.validate_signatures");
    assert!(stderr.contains(": api.tokens: warning: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 2, "{stderr}");
}

/// The shipped agents.toml's `assistant` agent, as shipped (its key from
/// `${OPENAI_API_KEY:-}`), beside an echo agent: with no key, `check` warns that the agent is
/// disabled and passes; with the key, it opens the agent's session and passes without the
/// warning; and a real mistake still fails it: the variable without its default, or an echo
/// setting the plugin refuses.
#[test]
fn check_disables_an_agent_whose_secret_is_unset_and_still_fails_a_real_error() {
    let root = root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(&cargo)
        .current_dir(&root)
        .args(["plugins", "--quiet", "-p", "switchboard-plugin-echo"])
        .args(["-p", "switchboard-plugin-openai-realtime"])
        .status()
        .expect("cargo plugins runs");
    assert!(built.success());
    let wasm = root.join("target/plugins/wasm32-wasip2/plugin");

    let shipped = std::fs::read_to_string(root.join("agents.toml")).expect("agents.toml");
    let lines: Vec<&str> = shipped.lines().collect();
    let named = lines
        .iter()
        .position(|l| *l == "name = \"assistant\"")
        .expect("the shipped assistant agent");
    let end = lines[named..]
        .iter()
        .position(|l| l.is_empty())
        .map_or(lines.len(), |n| named + n);
    let assistant = lines[named - 1..end].join("\n");
    assert!(
        assistant.contains("api_key = \"${OPENAI_API_KEY:-}\""),
        "{assistant}"
    );

    let dir = temp("check-disabled");
    let path = dir.join("agents.toml");
    let file = |assistant: &str, echo_settings: &str| {
        format!(
            "[twilio]\nauth_token = \"t\"\n\n[api]\ntokens = [\"k\"]\n\n\
             [plugins.echo]\npath = \"{}\"\n\n[plugins.openai-realtime]\npath = \"{}\"\n\n\
             [[agents]]\nname = \"echo\"\nrealtime = {{ plugin = \"echo\", settings = {echo_settings} }}\n\n\
             {assistant}\n\n[routing]\ndefault = \"echo\"\n",
            wasm.join("echo.wasm").display(),
            wasm.join("openai_realtime.wasm").display(),
        )
    };
    std::fs::write(&path, file(&assistant, "{}")).expect("write");
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(
        stdout,
        format!(
            "{}: OK — 2 agents (1 disabled), 2 plugins, default agent echo\n",
            path.display()
        )
    );
    // Line 21: the assistant's `realtime = …` line, where the secret is.
    let line = line_naming(
        &stderr,
        "agents.toml:21:",
        "agents[1].realtime.secrets.api_key",
    );
    assert!(
        line.contains("warning: agent \"assistant\" is disabled: this secret is empty (OPENAI_API_KEY is unset or empty), so its calls are refused with a spoken apology; set OPENAI_API_KEY to enable it"),
        "{line}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let (code, stdout, stderr) = check_with(&path, &[("OPENAI_API_KEY", "sk-test")]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("OK — 2 agents, 2 plugins"), "{stdout}");
    assert!(stderr.is_empty(), "{stderr}");

    std::fs::write(
        &path,
        file(
            &assistant.replace("${OPENAI_API_KEY:-}", "${OPENAI_API_KEY}"),
            "{}",
        ),
    )
    .expect("write");
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, Some(64), "{stdout}{stderr}");
    let line = line_naming(
        &stderr,
        "agents.toml:21:",
        "agents[1].realtime.secrets.api_key",
    );
    assert!(line.contains("OPENAI_API_KEY is not set"), "{line}");

    std::fs::write(&path, file(&assistant, "{ mode = \"loud\" }")).expect("write");
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, Some(64), "{stdout}{stderr}");
    let line = line_naming(&stderr, "agents.toml:15:", "agents[0].realtime.settings");
    assert!(line.contains("plugin echo refused"), "{line}");
    // The disabled agent is still named, as a warning, not a problem.
    line_naming(
        &stderr,
        "agents.toml:21:",
        "agents[1].realtime.secrets.api_key",
    );
    assert!(stderr.contains("agents.toml: 1 problem\n"), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
}

/// Waits (at most a minute) for a log line that satisfies `wanted`; returns it.
fn wait_for_log(
    log: &std::sync::mpsc::Receiver<String>,
    what: &str,
    wanted: impl Fn(&str) -> bool,
) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match log.recv_timeout(left) {
            Ok(line) if wanted(&line) => return line,
            Ok(line) => seen.push(line),
            Err(_) => panic!(
                "no log line {what}; the server logged:\n{}",
                seen.join("\n")
            ),
        }
    }
}

/// `serve` reloads its agents file: an edit reaches the next call, a broken edit is refused
/// with its file:line:key on the log while the last good config keeps serving, and SIGHUP
/// reloads too.
#[test]
fn serve_reloads_edits_and_sighup_and_refuses_a_broken_edit() {
    let echo = echo_wasm();
    let dir = temp("reload");
    let path = dir.join("agents.toml");
    let config = |default: &str, plugin: &str| {
        format!(
            r#"[server]
listen = "127.0.0.1:0"

[twilio]
auth_token = "${{TWILIO_AUTH_TOKEN}}"

[api]
tokens = ["${{SWITCHBOARD_API_TOKEN}}"]

[records]
path = ""

[plugins.echo]
path = "{}"

[[agents]]
name = "first"
realtime = {{ plugin = "{plugin}", settings = {{ mode = "immediate" }} }}

[[agents]]
name = "second"
realtime = {{ plugin = "echo", settings = {{ mode = "immediate" }} }}

[routing]
default = "{default}"
"#,
            echo.display()
        )
    };
    // Saved as an editor saves: a new file renamed over the old one.
    let save = |text: String| {
        let tmp = dir.join("agents.toml.tmp");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
    };
    save(config("first", "echo"));
    let (server, address, log) = serve_logged(&path);
    let wav = dir.join("short.wav");
    switchboard::simulate::write_wav(&wav, &[1000; 8000]).expect("short.wav");
    let call = || {
        let out = Command::new(BIN)
            .args(["simulate", "--idle-hangup", "0.3", "--wav"])
            .arg(&wav)
            .args(["--url", &format!("http://{address}")])
            .arg("--config")
            .arg(&path)
            .envs(KEYS)
            .output()
            .expect("simulate runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        let sid = call_sid(&stdout);
        let records = api_get(&address, "/calls?limit=50")["calls"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let record = records
            .iter()
            .find(|r| r["call_sid"] == sid.as_str())
            .unwrap_or_else(|| panic!("call {sid} recorded: {records:#?}"));
        record["agent"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(call(), "first");

    save(config("second", "echo"));
    let line = wait_for_log(&log, "saying the edit was reloaded", |l| {
        l.contains("configuration reloaded")
    });
    assert!(line.contains("agents=2"), "{line}");
    assert!(line.contains("file"), "{line}");
    assert_eq!(call(), "second", "the edit reached the next call");

    // Line 18: an unknown plugin.
    save(config("first", "nope"));
    let line = wait_for_log(&log, "naming the broken key", |l| {
        l.contains("agents file rejected")
    });
    assert!(line.contains("agents.toml:18:"), "{line}");
    assert!(line.contains("agents[0].realtime.plugin"), "{line}");
    assert!(line.contains("ERROR"), "{line}");
    wait_for_log(&log, "saying the old config still serves", |l| {
        l.contains("configuration not reloaded")
    });
    assert_eq!(call(), "second", "the last good config serves");

    let hup = Command::new("kill")
        .args(["-HUP", &server.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(hup.success());
    let line = wait_for_log(&log, "refusing the file again on SIGHUP", |l| {
        l.contains("agents file rejected") && l.contains("SIGHUP")
    });
    assert!(line.contains("agents.toml:18:"), "{line}");

    save(config("first", "echo"));
    wait_for_log(&log, "saying the fixed file was reloaded", |l| {
        l.contains("configuration reloaded")
    });
    assert_eq!(call(), "first");
    drop(server);
}

/// `serve --workers N` runs the gateway on N runtime worker threads (as `/healthz` reports),
/// one per core without it; `--workers 0` is refused before anything starts.
#[test]
fn serve_runs_the_requested_number_of_workers() {
    let dir = temp("workers");
    let config = echo_config(&dir);
    let (server, address, _log) = common::serve_with(&config, &["--workers", "3"]);
    let health = api_get(&address, "/healthz");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["workers"], 3, "{health}");
    drop(server);
    // The default: one per core.
    let (_server, address, _log) = common::serve_with(&config, &[]);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(api_get(&address, "/healthz")["workers"], cores);

    let refused = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--workers", "0"])
        .output()
        .expect("serve runs");
    assert_eq!(refused.status.code(), Some(2), "clap's usage error");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--workers"), "{stderr}");

    // Workers and shards are two ways to use the cores: one at a time.
    let both = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--workers", "2", "--shards", "2"])
        .output()
        .expect("serve runs");
    assert_eq!(both.status.code(), Some(2), "clap's usage error");
    let stderr = String::from_utf8_lossy(&both.stderr);
    assert!(stderr.contains("--shards"), "{stderr}");
}
