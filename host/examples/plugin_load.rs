//! Measures how long the gateway takes to load a WASM plugin: compiled at every load (no cache),
//! on a cold compiled-code cache (compiled, then written), and on a warm one (a fresh engine, as
//! after a restart, reading the first one's code). One run, figures as ratios to the warm load.
//!
//! `cargo run --release -p switchboard --example plugin_load -- PLUGIN.wasm [ROUNDS]`
//! (the gateway's build; in a debug build Cranelift itself is unoptimised, see the workspace
//! `Cargo.toml`). Each round uses a new, empty cache directory under the system temp directory,
//! removed afterwards.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use switchboard::plugin::wasm::{Allocator, WasmEngine};

/// One load with a fresh engine: its wall time and whether the cache served it.
async fn load(path: &Path, cache: Option<&Path>) -> anyhow::Result<(Duration, bool)> {
    // On demand: the pool's reservation is not what is measured.
    let engine = WasmEngine::with_options(Allocator::OnDemand, cache)?;
    let started = Instant::now();
    let plugin = engine.load("bench", path).await?;
    Ok((started.elapsed(), plugin.from_cache()))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(
        args.next()
            .context("usage: plugin_load PLUGIN.wasm [ROUNDS]")?,
    );
    let rounds: usize = args.next().map_or(Ok(3), |r| r.parse())?;
    let size = std::fs::metadata(&path)?.len();
    let (mut none, mut cold, mut warm) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds.max(1) {
        let dir = std::env::temp_dir().join(format!(
            "switchboard-plugin-load-{}-{round}",
            std::process::id()
        ));
        let (t, _) = load(&path, None).await?;
        none.push(t);
        let (t, hit) = load(&path, Some(&dir)).await?;
        if hit {
            bail!("an empty cache served the plugin");
        }
        cold.push(t);
        let (t, hit) = load(&path, Some(&dir)).await?;
        if !hit {
            bail!("the warm cache did not serve the plugin");
        }
        warm.push(t);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let (none, cold, warm) = (median(none), median(cold), median(warm));
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{}: {:.1} MB, median of {rounds} rounds",
        path.display(),
        size as f64 / 1e6
    );
    println!(
        "  no cache    {:>9.1} ms  {:>6.1}x warm",
        ms(none),
        ms(none) / ms(warm)
    );
    println!(
        "  cold cache  {:>9.1} ms  {:>6.1}x warm",
        ms(cold),
        ms(cold) / ms(warm)
    );
    println!("  warm cache  {:>9.1} ms  {:>6.1}x", ms(warm), 1.0);
    Ok(())
}
