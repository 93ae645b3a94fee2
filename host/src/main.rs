//! The `switchboard` binary: `serve` runs the gateway (reloading its agents file on edits and
//! SIGHUP), `check` vets an agents file without serving it, `simulate` places a call against
//! a running gateway.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use switchboard::call::CallContext;
use switchboard::plugin::Plugins;
use switchboard::plugin::wasm::{Allocator, WasmEngine};
use switchboard::server::{self, AppState};
use switchboard::{check, config, reload, simulate};

/// Exit status for a bad config or bad arguments (`EX_USAGE` from sysexits.h).
const EX_USAGE: u8 = 64;

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Voice gateway: Twilio Media Streams to voice-AI plugins"
)]
struct Cli {
    /// Log format on stderr: `text` (human-readable) or `json` (one JSON object per line, with
    /// each call's span fields: call_sid, stream_sid, agent, plugin).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// `--log-format`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway. Edits to the agents file (or SIGHUP) reload it for new calls.
    Serve {
        /// The agents file.
        #[arg(long, default_value = "agents.toml")]
        config: PathBuf,
        /// Runtime worker threads (default: one per core). Calls are tasks spread over them. On
        /// a machine shared with other busy processes, a few more workers than cores shorten
        /// the latency tail: a worker the kernel preempts holds fewer calls' frames.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
        workers: Option<u16>,
        /// Thread-per-core instead: N listeners on the same address (SO_REUSEPORT), each served
        /// by a single-threaded runtime on its own thread; the kernel spreads new connections
        /// over them and a call stays on the shard that took it. Less CPU per call than
        /// work-stealing workers under load (no thread wakes another), but a busy shard cannot
        /// hand calls to an idle one. One per core is the usual choice.
        #[arg(long, conflicts_with = "workers", value_parser = clap::value_parser!(u16).range(1..=1024))]
        shards: Option<u16>,
    },
    /// Check an agents file as `serve` would load it, without serving: every problem on one
    /// line naming file:line:key (exit status 64), or a one-line summary (exit status 0).
    Check {
        /// The agents file.
        #[arg(default_value = "agents.toml")]
        file: PathBuf,
    },
    /// Place a simulated Twilio call against a running gateway.
    Simulate {
        /// Caller audio: a WAV file (any rate, width and channel count).
        #[arg(long)]
        wav: PathBuf,
        /// Where to write what the caller heard (8 kHz PCM16 WAV).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The gateway's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Called number.
        #[arg(long, default_value = "+15005550006")]
        to: String,
        /// Caller number.
        #[arg(long, default_value = "+15005550001")]
        from: String,
        /// Extra parameter `k=v` (repeatable): on the Voice URL, or as customParameters with
        /// --stream-only.
        #[arg(long = "param", value_parser = parse_pair)]
        params: Vec<(String, String)>,
        /// Skip the webhook: open the media stream directly, as an operator's own TwiML would.
        #[arg(long)]
        stream_only: bool,
        /// Send a DTMF digit at a time, `MS:DIGIT` (repeatable), e.g. `3000:#`.
        #[arg(long = "dtmf", value_parser = parse_dtmf)]
        dtmf: Vec<(Duration, String)>,
        /// Seconds of quiet after the WAV (nothing queued, nothing arriving) before hanging up.
        #[arg(long, default_value_t = 2.0)]
        idle_hangup: f64,
        /// The gateway's agents file: its `[twilio]` auth token signs the simulated requests as
        /// Twilio would, and its first `[api]` token reads the call's transcript afterwards. Only
        /// those keys are read (with `${VAR}` from the environment); a missing file means
        /// unsigned requests.
        #[arg(long, default_value = "agents.toml")]
        config: PathBuf,
    },
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected k=v, got {s:?}"))
}

fn parse_dtmf(s: &str) -> Result<(Duration, String), String> {
    let (ms, digit) = s
        .split_once(':')
        .ok_or_else(|| format!("expected MS:DIGIT, got {s:?}"))?;
    let ms: u64 = ms
        .parse()
        .map_err(|_| format!("bad milliseconds in {s:?}"))?;
    Ok((Duration::from_millis(ms), digit.to_string()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `check` prints a report; the plugin loader's progress would only clutter it.
    let default_filter = match cli.command {
        Command::Check { .. } => "warn",
        _ => "info,wasmtime=warn,cranelift=warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter.into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        LogFormat::Text => logs
            .fmt_fields(switchboard::logging::escaped_fields())
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    match cli.command {
        Command::Serve {
            workers: Some(n), ..
        } => {
            builder.worker_threads(usize::from(n));
        }
        // The shards run their own runtimes; this one only handles signals, reloads and the
        // drain.
        Command::Serve {
            shards: Some(_), ..
        } => {
            builder.worker_threads(1);
        }
        _ => {}
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchboard: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve { config, shards, .. } => {
            runtime.block_on(serve(config, shards.map(usize::from)))
        }
        Command::Check { file } => runtime.block_on(run_check(&file)),
        Command::Simulate {
            wav,
            out,
            url,
            to,
            from,
            params,
            stream_only,
            dtmf,
            idle_hangup,
            config,
        } => {
            let keys = match simulate_keys(&config) {
                Ok(keys) => keys,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EX_USAGE);
                }
            };
            let opts = |audio| {
                let mut o = simulate::Options::new(url, audio);
                o.to = to;
                o.from = from;
                o.params = params;
                o.stream_only = stream_only;
                o.dtmf = dtmf;
                o.idle_hangup = Duration::from_secs_f64(idle_hangup.max(0.0));
                o.progress = true;
                o.auth_token = keys.auth_token;
                o.account_sid = keys.account_sid;
                o.api_token = keys.api_token;
                o
            };
            runtime.block_on(run_simulate(&wav, out, opts))
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchboard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What `simulate` reads from the gateway's config.
#[derive(Default)]
struct SimulateKeys {
    auth_token: Option<String>,
    account_sid: Option<String>,
    api_token: Option<String>,
}

/// The Twilio and API keys of the config at `path` (parsed and interpolated, not validated:
/// plugin files need not exist here). A missing file yields no keys.
fn simulate_keys(path: &std::path::Path) -> Result<SimulateKeys, String> {
    if !path.exists() {
        return Ok(SimulateKeys::default());
    }
    let source = config::load(path).map_err(|e| e.to_string())?;
    let raw = source
        .parse()
        .map_err(|e| e.to_string())?
        .interpolate(&source, &|name| std::env::var(name).ok())
        .map_err(|e| e.to_string())?;
    let non_empty =
        |v: Option<toml::Spanned<String>>| v.map(|v| v.into_inner()).filter(|v| !v.is_empty());
    Ok(SimulateKeys {
        auth_token: non_empty(raw.twilio.auth_token),
        account_sid: non_empty(raw.twilio.account_sid),
        api_token: raw
            .api
            .tokens
            .into_iter()
            .flatten()
            .map(|t| t.into_inner())
            .find(|t| !t.is_empty()),
    })
}

async fn serve(path: PathBuf, shards: Option<usize>) -> anyhow::Result<ExitCode> {
    let config = match config::from_file(&path) {
        Ok(c) => c,
        Err(errors) => {
            // One line per problem, each naming file:line:key.
            eprintln!("{errors}");
            return Ok(ExitCode::from(EX_USAGE));
        }
    };
    let engine = WasmEngine::with_cache(config.server.plugin_cache.as_deref())
        .context("starting the WASM engine")?;
    let plugins = match Plugins::load(&engine, &config).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return Ok(ExitCode::from(EX_USAGE));
        }
    };
    let listen = config.server.listen;
    let listener = match shards {
        None => Listener::Runtime(
            tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding {listen}"))?,
        ),
        Some(n) => Listener::Shards(
            server::bind_shards(listen, n).with_context(|| format!("binding {listen}"))?,
        ),
    };
    let address = match &listener {
        Listener::Runtime(l) => l.local_addr()?,
        Listener::Shards(l) => l.first().context("no shard")?.local_addr()?,
    };
    tracing::info!(
        %address,
        agents = config.agents.len(),
        shards = shards.unwrap_or(1),
        "switchboard listening; point Twilio's voice webhook at /twilio/voice"
    );
    let (records, recovery) = server::open_records(&config)
        .await
        .context("opening call records")?;
    if let Some(recovery) = recovery {
        tracing::info!(
            backend = records.backend(),
            path = %config.records.path.as_deref().unwrap_or(std::path::Path::new("")).display(),
            schema_version = recovery.schema_version,
            interrupted = recovery.interrupted,
            "call records open"
        );
        if recovery.interrupted > 0 {
            tracing::warn!(
                calls = recovery.interrupted,
                "calls in flight when the gateway last stopped are marked interrupted"
            );
        }
    } else {
        tracing::warn!("[records] path is empty: call records are kept in memory and lost on exit");
    }
    let mut ctx = CallContext::new(std::sync::Arc::new(config), plugins)
        .context("setting up Twilio's REST client")?;
    ctx.records = Some(records.clone());
    let state = AppState::new(ctx).with_shards(shards.unwrap_or(1));
    state.announce_console(address);
    // Keeps the engine: reloads compile plugins with it.
    let reloader = match reload::spawn(state.clone(), engine, path.clone()) {
        Ok(task) => Some(task),
        Err(e) => {
            tracing::warn!(error = %e, "configuration reloads are off; restart to apply edits");
            None
        }
    };
    match listener {
        Listener::Runtime(l) => server::run(l, state).await?,
        Listener::Shards(l) => server::run_sharded(l, state).await?,
    }
    if let Some(task) = reloader {
        task.abort();
    }
    drop(records);
    Ok(ExitCode::SUCCESS)
}

/// Where `serve` accepts connections.
enum Listener {
    /// One listener, served by this runtime's workers.
    Runtime(tokio::net::TcpListener),
    /// One listener per shard (`--shards`).
    Shards(Vec<std::net::TcpListener>),
}

/// `switchboard check FILE`: the problems on stderr, one per line, then the summary on stdout.
async fn run_check(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    // A check opens one session per agent at most: no pool to reserve.
    let engine =
        WasmEngine::with_allocator(Allocator::OnDemand).context("starting the WASM engine")?;
    let report = check::run(&engine, path).await;
    for line in report.lines() {
        eprintln!("{line}");
    }
    match report.ok_line() {
        Some(ok) => {
            println!("{ok}");
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!(
                "{}: {} problem{}",
                path.display(),
                report.errors.len(),
                if report.errors.len() == 1 { "" } else { "s" }
            );
            Ok(ExitCode::from(EX_USAGE))
        }
    }
}

async fn run_simulate(
    wav: &std::path::Path,
    out: Option<PathBuf>,
    opts: impl FnOnce(Vec<i16>) -> simulate::Options,
) -> anyhow::Result<ExitCode> {
    let audio = simulate::read_wav(wav)?;
    eprintln!(
        "calling with {} ({:.1} s of audio)",
        wav.display(),
        audio.len() as f64 / 8000.0
    );
    let summary = simulate::run(opts(audio)).await?;
    if let Some(said) = &summary.rejected {
        println!("call not connected; the gateway said: {said:?}");
        return Ok(ExitCode::FAILURE);
    }
    let reached = summary.marks.iter().filter(|(_, at)| at.is_some()).count();
    println!("call {} (stream {})", summary.call_sid, summary.stream_sid);
    println!("  frames sent      {}", summary.frames_sent);
    println!("  frames received  {}", summary.frames_received);
    match summary.time_to_first_audio {
        Some(t) => println!(
            "  first audio      {} ms after the stream started",
            t.as_millis()
        ),
        None => println!("  first audio      none"),
    }
    println!(
        "  marks            {} received, {} played",
        summary.marks.len(),
        reached
    );
    println!("  clears           {}", summary.clears);
    println!(
        "  ended by         {}",
        if summary.closed_by_gateway {
            "gateway"
        } else {
            "caller"
        }
    );
    if !summary.transcript.is_empty() {
        println!("  transcript");
        for (side, text) in &summary.transcript {
            println!("    {side:<7} {text}");
        }
    }
    if let Some(out) = out {
        simulate::write_wav(&out, &summary.heard)?;
        println!(
            "  heard            {} ({:.1} s)",
            out.display(),
            summary.heard.len() as f64 / 8000.0
        );
    }
    Ok(ExitCode::SUCCESS)
}
