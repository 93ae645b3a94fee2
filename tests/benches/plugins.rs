//! What a plugin costs the host, measured in one run so the figures compare as ratios:
//!
//! 1. one `handle` with a 20 ms frame (320 bytes of PCM16 at 8 kHz) through the echo plugin in
//!    immediate mode: a plain Rust call (the echo crate linked in), the native library through
//!    its raw C ABI, the native library through the host (ABI + the watchdog's hop to the
//!    blocking pool), and the WASM component through the host;
//! 2. opening a WASM session (instantiate + `open`) with the pooling allocator and on demand,
//!    and a native session;
//! 3. resident memory per open WASM session.
//!
//! Run: `cargo bench -p switchboard-tests --bench plugins` (builds the plugins first).
//! Variants are interleaved round by round and each figure is the median over rounds, so a
//! burst of load on a shared machine moves all of them alike.

// The raw C ABI variant calls the native table itself, as the host's loader does.
#![allow(unsafe_code)]
use std::time::{Duration, Instant};

use switchboard::plugin::native::NativeLoader;
use switchboard::plugin::wasm::{Allocator, WasmEngine};
use switchboard::plugin::{CallInfo, Plugin, Session, SessionConfig, SessionInput};
use switchboard_plugin_api::Realtime as _;
use switchboard_plugin_api::abi::{self, Buffer, PluginApi};
use switchboard_plugin_api::types as sdk;
use switchboard_tests::plugin_dirs;

/// Rounds per measurement; each figure is the median of the rounds.
const ROUNDS: usize = 15;
/// `handle` calls per variant per round.
const CALLS_PER_ROUND: usize = 2_000;
/// Session opens per allocator per round.
const OPENS_PER_ROUND: usize = 100;
/// Sessions held open at once to measure memory per session.
const HELD_SESSIONS: usize = 500;

const SETTINGS: &str = r#"{"mode": "immediate"}"#;

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let dirs = plugin_dirs()?;
    let wasm_path = dirs.wasm.join("echo.wasm");
    let native_path = dirs.native_lib("echo");
    let pooled = WasmEngine::with_allocator(Allocator::Pooling {
        sessions: HELD_SESSIONS as u32 + 16,
    })?;
    let on_demand = WasmEngine::with_allocator(Allocator::OnDemand)?;
    let wasm_pooled = Plugin::Wasm(pooled.load("echo", &wasm_path).await?);
    let wasm_on_demand = Plugin::Wasm(on_demand.load("echo", &wasm_path).await?);
    let native = Plugin::Native(NativeLoader::global().load("echo", &native_path).await?);
    let config = SessionConfig {
        call: CallInfo::default(),
        settings: SETTINGS.into(),
        greeting: None,
        io: Default::default(),
    };

    println!("# Plugin costs (median of {ROUNDS} rounds)\n");
    handle_costs(&wasm_pooled, &native, &native_path, &config).await?;
    open_costs(&wasm_pooled, &wasm_on_demand, &native, &config).await?;
    memory_per_session(&wasm_pooled, &wasm_on_demand, &config).await?;
    Ok(())
}

/// 20 ms of a 440 Hz tone at 8 kHz, PCM16 little-endian.
fn frame() -> Vec<u8> {
    (0..160)
        .flat_map(|i| {
            let t = f64::from(i) / 8000.0;
            ((8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16).to_le_bytes()
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn handle_costs(
    wasm: &Plugin,
    native: &Plugin,
    native_path: &std::path::Path,
    config: &SessionConfig,
) -> anyhow::Result<()> {
    let data = frame();
    let sdk_format = sdk::AudioFormat {
        encoding: sdk::AudioEncoding::Pcm16,
        sample_rate: 8000,
    };
    let sdk_frame = sdk::AudioFrame {
        format: sdk_format,
        data: data.clone(),
        timestamp_ms: 0,
    };

    // A plain Rust call: the echo crate linked into this binary.
    let sdk_config = sdk::SessionConfig {
        call: sdk::CallInfo {
            call_sid: String::new(),
            stream_sid: String::new(),
            from: String::new(),
            to: String::new(),
            direction: String::new(),
            agent: String::new(),
            parameters: Vec::new(),
        },
        settings: SETTINGS.into(),
        greeting: None,
        input_format: sdk_format,
    };
    let mut plain =
        echo::EchoSession::open(sdk_config.clone()).map_err(|e| anyhow::anyhow!("{e:?}"))?;

    // The raw C ABI of the same native library the host loaded (dlopen returns it again).
    // SAFETY: a Switchboard plugin built from this workspace; the table is checked below.
    let raw: &'static PluginApi = unsafe {
        let lib = Box::leak(Box::new(libloading::Library::new(native_path)?));
        let entry = lib.get::<abi::EntryFn>(abi::ENTRY_SYMBOL.as_bytes())?;
        &*entry(std::ptr::null())
    };
    anyhow::ensure!(raw.abi_version == abi::ABI_VERSION);
    let raw_config = abi::encode(&sdk_config);
    let mut raw_session = std::ptr::null_mut();
    let mut out = Buffer::empty();
    // SAFETY: valid buffers, a checked table.
    let code = unsafe {
        (raw.open)(
            raw_config.as_ptr(),
            raw_config.len(),
            &mut raw_session,
            &mut out,
        )
    };
    // SAFETY: returned by this plugin, freed once.
    unsafe { (raw.free)(out) };
    anyhow::ensure!(code == abi::status::OK, "raw open failed");

    let mut wasm_session = wasm.open(config).await?;
    let mut native_session = native.open(config).await?;

    let input = || SessionInput::Audio {
        data: data.clone(),
        timestamp_ms: 0,
    };
    let mut results: [Vec<f64>; 4] = Default::default();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for _ in 0..CALLS_PER_ROUND {
            let out = plain
                .handle(sdk::SessionInput::Audio(sdk_frame.clone()))
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            std::hint::black_box(out);
        }
        results[0].push(per_call_ns(t.elapsed()));

        let t = Instant::now();
        for _ in 0..CALLS_PER_ROUND {
            let bytes = abi::encode(&sdk::SessionInput::Audio(sdk_frame.clone()));
            let mut out = Buffer::empty();
            // SAFETY: a live session of this table, valid buffers.
            let code = unsafe { (raw.handle)(raw_session, bytes.as_ptr(), bytes.len(), &mut out) };
            // SAFETY: filled by the plugin and freed once.
            let outputs: Vec<sdk::SessionOutput> = abi::decode(unsafe { out.as_slice() })?;
            // SAFETY: as above: given back once.
            unsafe { (raw.free)(out) };
            anyhow::ensure!(code == abi::status::OK && outputs.len() == 1);
        }
        results[1].push(per_call_ns(t.elapsed()));

        for (i, session) in [(2, &mut native_session), (3, &mut wasm_session)] {
            let t = Instant::now();
            for _ in 0..CALLS_PER_ROUND {
                let out = session.handle(input()).await?;
                std::hint::black_box(out);
            }
            results[i].push(per_call_ns(t.elapsed()));
        }
    }
    // SAFETY: opened above, closed once.
    unsafe { (raw.close)(raw_session) };

    let names = [
        "plain Rust call",
        "native, raw C ABI",
        "native, through the host",
        "WASM, through the host",
    ];
    let medians: Vec<f64> = results.into_iter().map(median).collect();
    println!("## One `handle` with a 20 ms frame (echo, immediate mode)\n");
    println!("| variant | ns per call | × plain |\n|---|---:|---:|");
    for (name, ns) in names.iter().zip(&medians) {
        println!("| {name} | {ns:.0} | {:.1} |", ns / medians[0]);
    }
    println!(
        "\nWASM ÷ native through the host: {:.2}\n",
        medians[3] / medians[2]
    );
    Ok(())
}

fn per_call_ns(d: Duration) -> f64 {
    d.as_nanos() as f64 / CALLS_PER_ROUND as f64
}

async fn open_costs(
    pooled: &Plugin,
    on_demand: &Plugin,
    native: &Plugin,
    config: &SessionConfig,
) -> anyhow::Result<()> {
    let mut results: [Vec<f64>; 3] = Default::default();
    for _ in 0..ROUNDS {
        for (i, plugin) in [(0, pooled), (1, on_demand), (2, native)] {
            let t = Instant::now();
            for _ in 0..OPENS_PER_ROUND {
                let session: Session = plugin.open(config).await?;
                drop(session);
            }
            results[i].push(t.elapsed().as_secs_f64() * 1e6 / OPENS_PER_ROUND as f64);
        }
    }
    let medians: Vec<f64> = results.into_iter().map(median).collect();
    println!("## Opening a session (instantiate + open + drop)\n");
    println!("| variant | µs per session | × pooled |\n|---|---:|---:|");
    for (name, us) in ["WASM, pooling allocator", "WASM, on demand", "native"]
        .iter()
        .zip(&medians)
    {
        println!("| {name} | {us:.1} | {:.2} |", us / medians[0]);
    }
    println!();
    Ok(())
}

/// Resident set size of this process, in bytes (Linux `/proc/self/statm`, 4 KiB pages).
fn rss_bytes() -> anyhow::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("statm: {statm}"))?
        .parse()?;
    Ok(pages * 4096)
}

async fn memory_per_session(
    pooled: &Plugin,
    on_demand: &Plugin,
    config: &SessionConfig,
) -> anyhow::Result<()> {
    println!(
        "## Resident memory per open WASM session ({HELD_SESSIONS} held open, one frame each)\n"
    );
    println!("| allocator | KiB per session |\n|---|---:|");
    let data = frame();
    for (name, plugin) in [("pooling", pooled), ("on demand", on_demand)] {
        let before = rss_bytes()?;
        let mut held = Vec::with_capacity(HELD_SESSIONS);
        for _ in 0..HELD_SESSIONS {
            let mut session = plugin.open(config).await?;
            session
                .handle(SessionInput::Audio {
                    data: data.clone(),
                    timestamp_ms: 0,
                })
                .await?;
            held.push(session);
        }
        let after = rss_bytes()?;
        println!(
            "| {name} | {:.0} |",
            after.saturating_sub(before) as f64 / 1024.0 / HELD_SESSIONS as f64
        );
        drop(held);
    }
    println!();
    Ok(())
}
