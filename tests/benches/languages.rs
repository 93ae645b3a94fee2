//! What a plugin's language costs an operator: the echo plugin written in Rust, in Python (the
//! Python SDK's template, componentize-py) and in JavaScript (the JS SDK's template,
//! componentize-js), measured side by side in one run, so the figures compare as ratios to Rust.
//!
//! Each echo is built from source first (`cargo build --target wasm32-wasip2` for Rust,
//! `plugin-api/python/build.sh` and `node plugin-api/js/build.mjs` for the others; `scripts/setup`
//! installs their toolchains), all in `immediate` mode: every 20 ms frame played straight back.
//! Per language, reported:
//! - **component**: the `.wasm` file's size (MB);
//! - **load, compiled / cached**: the `load_ms` the release gateway logs for the plugin when it
//!   starts on an empty compiled-code cache (Cranelift compiles it), and when it starts again on
//!   that cache (a restart or reload of an unchanged plugin: `cached=true`);
//! - **session open**: instantiate + `open` + drop through the host, pooling allocator, in this
//!   process (median of rounds, µs);
//! - **memory per session**: resident memory per open session in this process (sessions held
//!   open, one frame handled each; MB);
//! - **CPU per call-minute** and **memory per call** under load: a fresh release gateway process
//!   on the warm cache carries `--calls` concurrent calls (default 100) for `--duration` seconds
//!   (default 20) with the capacity bench's load client (`capacity/client.rs`: signed Media
//!   Streams WebSockets, one frame every 20 ms, marks echoed as Twilio does). CPU is the gateway
//!   process's (`/proc/PID/stat`) over the media phase, divided by call-minutes; memory is its
//!   peak resident set during the row less its idle one before the first call, per call. Every
//!   frame must come back (`echoed`), with the round trip's p99 shown beside.
//!
//! Run: `cargo bench -p switchboard-tests --bench languages -- [--calls 100] [--duration 20]
//! [--rounds 1] [--langs rust,python,js]`. With `--rounds R` the languages alternate round by
//! round and each figure is the median over rounds, so a burst of load on a shared machine moves
//! all of them alike. The figures in `plugin-api/README.md` ("Choose your language") are from
//! this bench.

#[allow(dead_code)]
#[path = "capacity/client.rs"]
mod client;
// Shared with the capacity bench, which uses other parts of it.
#[allow(dead_code)]
#[path = "capacity/process.rs"]
mod process;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use client::{CallPlan, FRAME};
use process::{
    GatewayProcess, build_release_gateway, clk_tck, proc_status_kib, sum_cpu_ticks, tone,
    wait_idle, write_echo_config,
};
use switchboard::plugin::wasm::{Allocator, WasmEngine};
use switchboard::plugin::{CallInfo, Plugin, SessionConfig, SessionInput};
use switchboard::twilio::signature::{self, Algorithm};
use switchboard_tests::{js, plugin_dirs, python, temp_dir};

/// The Twilio auth token the gateway checks and the client signs with.
const AUTH_TOKEN: &str = "languages-bench-token";

/// The gateway's log: warnings, its listening address, and the plugin loader's `plugin loaded`
/// line (`load_ms`, `cached`); per-call lines stay off.
const GATEWAY_LOG: &str = "warn,switchboard=info,switchboard::audio=warn,switchboard::call=warn,\
switchboard::config=warn,switchboard::records=warn,switchboard::routing=warn,\
switchboard::server=warn,switchboard::simulate=warn,switchboard::twilio=warn,\
switchboard::twiml=warn,switchboard::plugin=info";

/// Session opens per round, per language.
const OPENS_PER_ROUND: usize = 50;
/// Rounds of session opens; each language's figure is the median.
const OPEN_ROUNDS: usize = 9;
/// Sessions held open at once to measure resident memory per session.
const HELD_SESSIONS: usize = 40;
/// How often the gateway's resident memory is sampled under load.
const RSS_SAMPLE: Duration = Duration::from_millis(100);
/// Pause between the last call opening and the first media frame.
const SETTLE: Duration = Duration::from_millis(500);

struct Args {
    calls: usize,
    duration: Duration,
    rounds: usize,
    langs: Vec<String>,
}

fn args() -> anyhow::Result<Args> {
    let mut args = Args {
        calls: 100,
        duration: Duration::from_secs(20),
        rounds: 1,
        langs: vec!["rust".into(), "python".into(), "js".into()],
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |what: &str| it.next().with_context(|| format!("{arg} needs {what}"));
        match arg.as_str() {
            "--calls" => args.calls = value("a number")?.parse()?,
            "--duration" => args.duration = Duration::from_secs(value("seconds")?.parse()?),
            "--rounds" => args.rounds = value("a number")?.parse::<usize>()?.max(1),
            "--langs" => {
                args.langs = value("a list")?.split(',').map(str::to_string).collect();
                if let Some(l) = args
                    .langs
                    .iter()
                    .find(|l| !["rust", "python", "js"].contains(&l.as_str()))
                {
                    bail!("--langs: unknown language {l:?} (rust, python, js)");
                }
            }
            // `cargo bench` passes `--bench` to every bench binary.
            "--bench" => {}
            other => bail!(
                "unknown argument {other:?}; usage: languages [--calls N] [--duration S] [--rounds R] [--langs rust,python,js]"
            ),
        }
    }
    if args.calls == 0 {
        bail!("--calls must be at least 1");
    }
    Ok(args)
}

/// One language's echo and its figures, one entry per round.
struct Lang {
    name: String,
    wasm: PathBuf,
    size: u64,
    load_compiled_ms: Vec<f64>,
    load_cached_ms: Vec<f64>,
    open_us: Vec<f64>,
    session_kib: Vec<f64>,
    cpu_s_per_call_min: Vec<f64>,
    call_kib: Vec<f64>,
    /// (frames echoed, frames sent) under load, summed over rounds.
    echoed: (u64, u64),
    p99_ms: Vec<f64>,
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    let binary = build_release_gateway()?;
    let pinned = temp_dir()?;
    let gateway = pinned.join("switchboard");
    // Copies, so that a build elsewhere in the workspace cannot swap them in the middle of a run.
    std::fs::copy(&binary, &gateway).context("copying the gateway binary")?;
    let mut langs = Vec::new();
    for name in &args.langs {
        eprintln!("building the {name} echo…");
        let built = match name.as_str() {
            "rust" => plugin_dirs()?.wasm.join("echo.wasm"),
            "python" => python::python_plugins()?.dir.join("echo_py.wasm"),
            _ => js::js_plugins()?.dir.join("js_echo.wasm"),
        };
        let wasm = pinned.join(format!("echo-{name}.wasm"));
        std::fs::copy(&built, &wasm).with_context(|| format!("copying {}", built.display()))?;
        langs.push(Lang {
            name: name.clone(),
            size: std::fs::metadata(&wasm)?.len(),
            wasm,
            load_compiled_ms: Vec::new(),
            load_cached_ms: Vec::new(),
            open_us: Vec::new(),
            session_kib: Vec::new(),
            cpu_s_per_call_min: Vec::new(),
            call_kib: Vec::new(),
            echoed: (0, 0),
            p99_ms: Vec::new(),
        });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    for round in 0..args.rounds {
        for lang in &mut langs {
            eprintln!("round {}: {}…", round + 1, lang.name);
            runtime.block_on(measure(&args, &gateway, lang))?;
        }
    }
    let _ = std::fs::remove_dir_all(&pinned);
    report(&args, &langs);
    Ok(())
}

/// One round of every figure for `lang`.
async fn measure(args: &Args, gateway: &Path, lang: &mut Lang) -> anyhow::Result<()> {
    let dir = temp_dir()?;
    let cache = dir.join("cache");
    let config = write_echo_config(
        &dir,
        AUTH_TOKEN,
        &lang.wasm,
        &format!("path = \"{}\"", dir.join("calls.db").display()),
        &format!("plugin_cache_dir = \"{}\"", cache.display()),
    )?;

    // Load: a start on an empty cache compiles the plugin; a restart is served by the cache.
    let (compiled_ms, cached) = {
        let gw = GatewayProcess::start(gateway, &config, GATEWAY_LOG, None, None)?;
        load_ms(&gw)?
    };
    if cached {
        bail!("{}: an empty cache served the plugin", lang.name);
    }
    let gw = GatewayProcess::start(gateway, &config, GATEWAY_LOG, None, None)?;
    let (cached_ms, cached) = load_ms(&gw)?;
    if !cached {
        bail!("{}: the restart compiled the plugin again", lang.name);
    }
    lang.load_compiled_ms.push(compiled_ms);
    lang.load_cached_ms.push(cached_ms);

    // Under load, on the restarted gateway.
    let load = run_calls(args, &gw).await?;
    for w in gw.warnings().iter().take(3) {
        eprintln!("  gateway: {w}");
    }
    drop(gw);
    lang.cpu_s_per_call_min.push(load.cpu_s_per_call_min);
    lang.call_kib.push(load.kib_per_call);
    lang.p99_ms.push(load.p99_ms);
    lang.echoed.0 += load.echoed;
    lang.echoed.1 += load.sent;
    eprintln!(
        "  {}: loaded in {compiled_ms:.0} ms compiled, {cached_ms:.0} ms cached; {:.3} CPU-s per call-minute, {:.2} MB per call, {} of {} frames echoed, p99 {:.2} ms",
        lang.name,
        load.cpu_s_per_call_min,
        load.kib_per_call / 1024.0,
        load.echoed,
        load.sent,
        load.p99_ms
    );

    // Sessions in this process, on the same cache (a warm load).
    let engine = WasmEngine::with_options(
        Allocator::Pooling {
            sessions: HELD_SESSIONS as u32 + 8,
        },
        Some(&cache),
    )?;
    let plugin = Plugin::Wasm(engine.load("echo", &lang.wasm).await?);
    let session_config = SessionConfig {
        call: CallInfo::default(),
        settings: r#"{"mode": "immediate"}"#.into(),
        greeting: None,
        io: Default::default(),
    };
    // Warm-up: the pool's first use of each slot faults its pages in.
    for _ in 0..OPENS_PER_ROUND {
        drop(plugin.open(&session_config).await?);
    }
    let mut opens = Vec::with_capacity(OPEN_ROUNDS);
    for _ in 0..OPEN_ROUNDS {
        let t = Instant::now();
        for _ in 0..OPENS_PER_ROUND {
            drop(plugin.open(&session_config).await?);
        }
        opens.push(t.elapsed().as_secs_f64() * 1e6 / OPENS_PER_ROUND as f64);
    }
    lang.open_us.push(median(opens));
    let before = proc_status_kib(std::process::id(), "VmRSS")?;
    let mut held = Vec::with_capacity(HELD_SESSIONS);
    for _ in 0..HELD_SESSIONS {
        let mut session = plugin.open(&session_config).await?;
        session
            .handle(SessionInput::Audio {
                data: vec![0x10; 320],
                timestamp_ms: 0,
            })
            .await?;
        held.push(session);
    }
    let after = proc_status_kib(std::process::id(), "VmRSS")?;
    lang.session_kib
        .push(after.saturating_sub(before) as f64 / HELD_SESSIONS as f64);
    drop(held);
    drop(plugin);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// `load_ms` and `cached` of the gateway's `plugin loaded` line.
fn load_ms(gw: &GatewayProcess) -> anyhow::Result<(f64, bool)> {
    // The line is logged before the listening address, so it is already there.
    let lines = gw.plugin_loads();
    let line = lines
        .first()
        .context("the gateway logged no `plugin loaded` line")?;
    let field = |key: &str| -> Option<&str> {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
    };
    let ms = field("load_ms")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no load_ms in {line:?}"))?;
    Ok((ms, field("cached") == Some("true")))
}

/// What a gateway did under load.
struct Load {
    cpu_s_per_call_min: f64,
    kib_per_call: f64,
    sent: u64,
    echoed: u64,
    p99_ms: f64,
}

/// `--calls` concurrent calls for `--duration` through `gw`, on two client threads.
async fn run_calls(args: &Args, gw: &GatewayProcess) -> anyhow::Result<Load> {
    let http = format!("http://{}", gw.address);
    wait_idle(&http).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_kib = proc_status_kib(gw.pid, "VmRSS")?;
    let url = format!("ws://{}/twilio/media-stream", gw.address);
    let sig = signature::compute(AUTH_TOKEN, &url, &[], Algorithm::HmacSha1);
    let frames = (args.duration.as_millis() / FRAME.as_millis()) as usize;
    let tone = Arc::new(tone());
    let nonce = std::process::id();
    let threads = 2.min(args.calls);
    let mut shards: Vec<Vec<CallPlan>> = (0..threads).map(|_| Vec::new()).collect();
    for i in 0..args.calls {
        shards[i % threads].push(CallPlan {
            index: i,
            n: args.calls,
            frames,
            address: gw.address.clone(),
            url: url.clone(),
            signature: sig.clone(),
            call_sid: format!("CA{nonce:016x}{i:016x}"),
            stream_sid: format!("MZ{nonce:016x}{i:016x}"),
            tone: tone.clone(),
        });
    }
    let ready = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(OnceLock::<Instant>::new());
    let mut tasks = Vec::with_capacity(threads);
    for (i, plans) in shards.into_iter().enumerate() {
        let (ready, start) = (ready.clone(), start.clone());
        tasks.push(
            std::thread::Builder::new()
                .name(format!("client-{i}"))
                .spawn(move || client::run_shard(plans, &ready, &start))?,
        );
    }
    let opening = Instant::now();
    let mut peak_kib = idle_kib;
    while ready.load(Ordering::Acquire) < args.calls {
        if opening.elapsed() > Duration::from_secs(120) {
            bail!("{} calls took more than 120 s to open", args.calls);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        peak_kib = peak_kib.max(proc_status_kib(gw.pid, "VmRSS").unwrap_or(0));
    }
    tokio::time::sleep(SETTLE).await;
    let t0 = Instant::now() + Duration::from_millis(100);
    let _ = start.set(t0);
    tokio::time::sleep_until(t0.into()).await;
    let cpu0 = sum_cpu_ticks(&[gw.pid])?;
    let end = t0 + args.duration;
    while Instant::now() < end {
        tokio::time::sleep(RSS_SAMPLE.min(end.saturating_duration_since(Instant::now()))).await;
        peak_kib = peak_kib.max(proc_status_kib(gw.pid, "VmRSS").unwrap_or(0));
    }
    let cpu1 = sum_cpu_ticks(&[gw.pid])?;
    let wall = t0.elapsed();
    let logs = tokio::task::spawn_blocking(move || {
        tasks
            .into_iter()
            .map(|t| {
                t.join()
                    .map_err(|_| anyhow::anyhow!("a client thread panicked"))?
            })
            .collect::<anyhow::Result<Vec<_>>>()
    })
    .await??;
    let logs: Vec<client::CallLog> = logs.into_iter().flatten().collect();
    if let Some(error) = logs.iter().find_map(|l| l.error.clone()) {
        eprintln!("  a call failed: {error}");
    }
    let mut rtt: Vec<u32> = logs.iter().flat_map(|l| l.rtt_us.iter().copied()).collect();
    rtt.sort_unstable();
    let p99 = rtt
        .get((rtt.len().saturating_sub(1) as f64 * 0.99).round() as usize)
        .copied()
        .unwrap_or(0);
    let cpu_s = (cpu1 - cpu0) as f64 / clk_tck() as f64;
    let call_minutes = args.calls as f64 * wall.as_secs_f64() / 60.0;
    Ok(Load {
        cpu_s_per_call_min: cpu_s / call_minutes,
        kib_per_call: peak_kib.saturating_sub(idle_kib) as f64 / args.calls as f64,
        sent: logs.iter().map(|l| l.sent).sum(),
        echoed: logs.iter().map(|l| l.received).sum(),
        p99_ms: f64::from(p99) / 1e3,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn report(args: &Args, langs: &[Lang]) {
    println!(
        "# Plugin cost by language: the echo, {} concurrent calls for {} s, median of {} round(s)\n",
        args.calls,
        args.duration.as_secs(),
        args.rounds
    );
    println!(
        "| language | component (MB) | load, compiled (s) | load, cached (ms) | session open (µs) | memory per session (MB) | CPU-s per call-minute | memory per call under load (MB) | echoed | p99 round trip (ms) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let base = langs.iter().find(|l| l.name == "rust");
    let ratio = |v: f64, of: fn(&Lang) -> &Vec<f64>| -> String {
        match base {
            Some(b) if median(of(b).clone()) > 0.0 => {
                format!(" (×{:.1})", v / median(of(b).clone()))
            }
            _ => String::new(),
        }
    };
    for l in langs {
        let (open, session, cpu, call) = (
            median(l.open_us.clone()),
            median(l.session_kib.clone()),
            median(l.cpu_s_per_call_min.clone()),
            median(l.call_kib.clone()),
        );
        println!(
            "| {} | {:.1} | {:.1} | {:.0} | {:.0}{} | {:.2}{} | {:.3}{} | {:.2}{} | {} of {} | {:.2} |",
            l.name,
            l.size as f64 / 1e6,
            median(l.load_compiled_ms.clone()) / 1e3,
            median(l.load_cached_ms.clone()),
            open,
            ratio(open, |l| &l.open_us),
            session / 1024.0,
            ratio(session, |l| &l.session_kib),
            cpu,
            ratio(cpu, |l| &l.cpu_s_per_call_min),
            call / 1024.0,
            ratio(call, |l| &l.call_kib),
            l.echoed.0,
            l.echoed.1,
            median(l.p99_ms.clone()),
        );
    }
    println!(
        "\nRatios (×) are to the Rust echo in the same run. Load times are the release gateway's \
         `load_ms` (compiled: an empty compiled-code cache; cached: a restart on it)."
    );
}
