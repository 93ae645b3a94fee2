//! The `switchboard` binary as an operator runs it: a bad agents.toml exits 64 with one line
//! naming file:line:key; `serve` plus `simulate` completes a call and writes what was heard.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

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

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchboard-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
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

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
            .replace("\"target/plugins", &format!("\"{}", plugins.display())),
    )
    .expect("write config");
    // From the repository root, as README says: the speech plugins find `models/` there.
    let mut child = Command::new(BIN)
        .current_dir(&root)
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve starts");
    let stderr = child.stderr.take().expect("stderr");
    let server = Server(child);
    // Read the log on a thread: the address line, then keep draining so the server never
    // blocks on a full pipe.
    let (tx, rx) = std::sync::mpsc::channel();
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
        }
    });
    let address = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the server logs its listening address");
    let heard = dir.join("heard.wav");
    let out = Command::new(BIN)
        .args(["simulate", "--wav"])
        .arg(root.join("tests/fixtures/speech/beckett.wav"))
        .arg("--out")
        .arg(&heard)
        .args(["--url", &format!("http://{address}")])
        .output()
        .expect("simulate runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("frames received"), "{stdout}");
    // The offline front-desk agent answered: its greeting and the caller's turn, recognised.
    assert!(stdout.contains("transcript"), "{stdout}");
    assert!(stdout.contains("    agent "), "{stdout}");
    assert!(stdout.contains("    caller "), "{stdout}");
    println!("{stdout}");
    let bytes = std::fs::metadata(&heard).expect("heard.wav written").len();
    // At least the length of the recording at 8 kHz PCM16.
    assert!(bytes > 10 * 8000 * 2 - 8000, "heard.wav is {bytes} bytes");
    drop(server);
}
