//! `cargo bench -p switchboard-tests --bench offline_turns`: the per-turn latency breakdown of
//! the offline pipeline agent (local Whisper tiny.en → scripted dialogue → local Piper voice)
//! over `TURNS` caller turns in one call, against a baseline call with the same script through
//! fixture stages that cost nothing (fixed transcript, tone "voice"), measured in the same run —
//! so the difference is the local models' compute, and the baseline the host's own share
//! (endpointing silence included in both).
//!
//! Prints the median of each stage (end of caller speech → STT final → LLM first text → TTS
//! first audio → first audio out) for both calls, and their ratio.

use std::time::Duration;

use serde_json::json;
use switchboard::call::pipeline::TurnLatency;
use switchboard_tests::phone::{self, silence, wav_frames};
use switchboard_tests::{Gateway, fixture, offline_agent_config, speech_plugins, write_config};

fn turns() -> usize {
    std::env::var("TURNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

const BASELINE: &str = r#"
[plugins.stt]
path = "{plugins}/fixed_stt.wasm"
[plugins.llm]
path = "{plugins}/scripted.wasm"
[plugins.tts]
path = "{plugins}/tone_tts.wasm"

[[agents]]
name = "baseline"

[agents.pipeline]
endpointing_ms = 700
stt = { plugin = "stt", settings = { text = "What are your opening hours?" } }
llm = { plugin = "llm", settings = { intents = [{ name = "hours", keywords = ["hours"], reply = "We are open from eight in the morning until eight in the evening." }], fallback = "Sorry?" } }
tts = { plugin = "tts", settings = { ms_per_char = 60 } }

[routing]
default = "baseline"
"#;

async fn run(config: &str, label: &str) -> anyhow::Result<Vec<TurnLatency>> {
    let gw = Gateway::start(&write_config(config)?).await?;
    let mut events = gw.state.subscribe();
    let question = wav_frames(&fixture("speech/hours-question.wav"))?;
    let mut script = silence(500);
    for _ in 0..turns() {
        script.extend(question.iter().cloned());
        script.extend(silence(7500));
    }
    let duration = Duration::from_millis(script.len() as u64 * 20);
    eprintln!(
        "{label}: one call, {} turns, {:.0} s",
        turns(),
        duration.as_secs_f64()
    );
    phone::call(&gw.url, json!({}), script, duration).await?;
    let end = tokio::time::timeout(Duration::from_secs(30), events.recv()).await??;
    eprintln!(
        "  ended: {:?}; frames in {} out {}; clears {}; STT frames dropped {}",
        end.reason,
        end.stats.frames_in,
        end.stats.frames_out,
        end.stats.clears,
        end.stats.stt_dropped
    );
    for t in &end.stats.transcript {
        eprintln!("  {:?}: {}", t.side, t.text);
    }
    Ok(end.stats.turn_latency)
}

fn median(mut v: Vec<Duration>) -> Option<Duration> {
    v.sort();
    v.get(v.len() / 2).copied()
}

fn report(label: &str, turns: &[TurnLatency]) -> [Option<Duration>; 4] {
    let pick =
        |f: fn(&TurnLatency) -> Option<Duration>| median(turns.iter().filter_map(f).collect());
    let m = [
        pick(|t| t.stt_final),
        pick(|t| t.llm_first_text),
        pick(|t| t.tts_first_audio),
        pick(|t| t.first_audio_out),
    ];
    let ms =
        |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3));
    println!(
        "{label:<9} turns {:>2} | STT final {:>8} | LLM first text {:>8} | TTS first audio {:>8} | first audio out {:>8}",
        turns.len(),
        ms(m[0]),
        ms(m[1]),
        ms(m[2]),
        ms(m[3])
    );
    m
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let models = speech_plugins()?;
    runtime.block_on(async {
        let base = run(BASELINE, "baseline").await?;
        let offline = run(
            &offline_agent_config(&models, "eight in the morning until eight in the evening"),
            "offline",
        )
        .await?;
        println!(
            "median per-turn latency from the end of caller speech (endpointing 700 ms included):"
        );
        let b = report("baseline", &base);
        let o = report("offline", &offline);
        if let (Some(b), Some(o)) = (b[3], o[3]) {
            println!(
                "first audio out: offline / baseline = {:.2}; local models add {:.0} ms",
                o.as_secs_f64() / b.as_secs_f64(),
                (o.as_secs_f64() - b.as_secs_f64()) * 1e3
            );
        }
        anyhow::Ok(())
    })
}
