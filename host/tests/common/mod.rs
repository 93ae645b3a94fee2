//! Helpers shared by the binary-level tests: run `switchboard serve` as an operator would and
//! talk to it over HTTP.
// Each test binary uses a different subset.
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The `switchboard` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// The environment the README's try-it flow exports in both terminals: the token Twilio (here,
/// `simulate`) signs with, and the operator API's token (`simulate` reads the transcript).
pub const KEYS: [(&str, &str); 2] = [
    ("TWILIO_AUTH_TOKEN", "local-test-token"),
    ("SWITCHBOARD_API_TOKEN", "local-api-token"),
];

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A directory for one test, under the system temp dir.
pub fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchboard-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A running gateway process; SIGKILLed when dropped.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `switchboard serve --config CONFIG` from the repository root with [`KEYS`], and
/// returns it with the address it logged.
pub fn serve(config: &Path) -> (Server, String) {
    let (server, address, _log) = serve_logged(config);
    (server, address)
}

/// As [`serve`], with every line the server logs from then on.
pub fn serve_logged(config: &Path) -> (Server, String, std::sync::mpsc::Receiver<String>) {
    serve_with(config, &[])
}

/// As [`serve_logged`], with more arguments after `serve --config CONFIG`.
pub fn serve_with(
    config: &Path,
    extra: &[&str],
) -> (Server, String, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(BIN)
        .current_dir(root())
        .args(["serve", "--config"])
        .arg(config)
        .args(extra)
        .envs(KEYS)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve starts");
    let stderr = child.stderr.take().expect("stderr");
    let server = Server(child);
    // Read the log on a thread: the address line, then keep draining so the server never
    // blocks on a full pipe.
    let (tx, rx) = std::sync::mpsc::channel();
    let (log_tx, log) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("address=").nth(1) {
                let _ = tx.send(
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                );
            }
            let _ = log_tx.send(line);
        }
    });
    let address = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the server logs its listening address");
    (server, address, log)
}

/// The `CallSid` `simulate` printed (`call CA… (stream MZ…)`).
pub fn call_sid(stdout: &str) -> String {
    stdout
        .split_whitespace()
        .skip_while(|w| *w != "call")
        .nth(1)
        .expect("call sid printed")
        .to_string()
}

/// Builds the echo plugin (`cargo plugins`) and returns its component.
pub fn echo_wasm() -> PathBuf {
    let root = root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(&cargo)
        .current_dir(&root)
        .args(["plugins", "--quiet", "-p", "switchboard-plugin-echo"])
        .status()
        .expect("cargo plugins runs");
    assert!(built.success());
    root.join("target/plugins/wasm32-wasip2/plugin/echo.wasm")
}

/// Writes `dir/agents.toml`: the echo plugin (built by [`echo_wasm`]) in `immediate` mode as the
/// default agent, listening on a free loopback port, signatures checked with [`KEYS`]' token,
/// records in memory.
pub fn echo_config(dir: &Path) -> PathBuf {
    let config = dir.join("agents.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[twilio]\nauth_token = \"${{TWILIO_AUTH_TOKEN}}\"\n[records]\npath = \"\"\n\
             [plugins.echo]\npath = \"{}\"\n\
             [[agents]]\nname = \"echo\"\nrealtime = {{ plugin = \"echo\", settings = {{ mode = \"immediate\" }} }}\n\
             [routing]\ndefault = \"echo\"\n",
            echo_wasm().display()
        ),
    )
    .expect("write config");
    config
}

/// Runs `future` to completion on a fresh current-thread runtime.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

/// `GET path` on the operator API with the API token, as JSON.
pub fn api_get(address: &str, path: &str) -> serde_json::Value {
    block_on(async {
        let body = reqwest::Client::new()
            .get(format!("http://{address}{path}"))
            .bearer_auth(KEYS[1].1)
            .send()
            .await
            .expect("GET")
            .text()
            .await
            .expect("body");
        serde_json::from_str(&body).expect("JSON")
    })
}
