//! Python plugins end to end: the Python SDK's template (echo), the Python realtime bridge, the
//! Python OpenAI LLM stage (a pipeline stage, world `llm-plugin`) and a misbehaving Python
//! plugin, each built from source in this test run with componentize-py
//! (`plugin-api/python/build.sh`, see `switchboard_tests::python`), loaded by the stock gateway
//! and called over real sockets. The plugins' own `unittest` suites (the Python test kit,
//! `switchboard_plugin.testing`) run here too, so CI exercises them.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::json;
use switchboard::call::{EndReason, Side};
use switchboard::server::CallEnded;
use switchboard_tests::apology::hear_apology;
use switchboard_tests::fake_openai::{FakeOpenAi, FakeOptions, tone};
use switchboard_tests::fake_openai_http::{FakeHttpOptions, FakeOpenAiHttp};
use switchboard_tests::phone::{self, silence, wav_frames};
use switchboard_tests::python::{
    PYTHON_STAGE_EXAMPLES, python_plugins, python_stage_examples, run_unittest,
};
use switchboard_tests::{Gateway, SANDBOX_CONFIG, fixture, write_config};

use crate::robustness::{beside, connect, frame, media, next_media, send, start as start_event};

/// `body` with `{python}` replaced by the directory of the built Python plugins, written as an
/// agents.toml (`{plugins}` rendered as usual).
fn python_config(body: &str) -> anyhow::Result<std::path::PathBuf> {
    let built = python_plugins()?;
    write_config(&body.replace("{python}", &built.dir.display().to_string()))
}

/// Starts a gateway on `body` (see [`python_config`]), printing how long loading (compiling) its
/// plugins took.
async fn start(body: &str, what: &str) -> anyhow::Result<Gateway> {
    launch(&python_config(body)?, what).await
}

/// Starts a gateway on the agents.toml at `path`, printing how long loading its plugins took.
async fn launch(path: &std::path::Path, what: &str) -> anyhow::Result<Gateway> {
    let started = Instant::now();
    let gw = Gateway::start(path).await?;
    println!(
        "gateway with {what} started (plugins loaded) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(gw)
}

async fn ended(rx: &mut tokio::sync::broadcast::Receiver<CallEnded>) -> anyhow::Result<CallEnded> {
    Ok(tokio::time::timeout(Duration::from_secs(20), rx.recv()).await??)
}

/// The Python author's test kit works: the template's, the bridge's and the LLM stage's
/// `unittest` suites, and the SDK's own pipeline-stage tests, pass under plain CPython (no
/// gateway, no build).
#[test]
fn python_unittests_pass() -> anyhow::Result<()> {
    for dir in [
        "plugin-api/python/template",
        "plugins/python-realtime-bridge",
        "plugins/python-openai-llm",
        "plugin-api/python/examples",
    ] {
        let report = run_unittest(dir)?;
        assert!(report.contains("OK"), "{dir}: {report}");
        println!("{dir}:\n{report}");
    }
    Ok(())
}

/// The Python plugins build from source with the pinned componentize-py (once per process) into
/// components the host can instantiate: each has at most 16 core modules (the per-session core
/// instance limit; componentize-py's runtime has 14), and is a few tens of MB at most.
#[test]
fn python_plugins_build_from_source() -> anyhow::Result<()> {
    let built = python_plugins()?;
    for (file, size, took) in &built.built {
        let bytes = std::fs::read(built.dir.join(file))?;
        let modules = core_modules(&bytes)?;
        println!(
            "{file}: {:.1} MB, {modules} core modules, built in {:.1} s",
            *size as f64 / 1e6,
            took.as_secs_f64()
        );
        assert!(
            (1..=16).contains(&modules),
            "{file}: {modules} core modules"
        );
        assert!(*size < 40_000_000, "{file}: {size} bytes");
    }
    Ok(())
}

/// The number of core modules at the top level of a component (sections with id 1).
fn core_modules(bytes: &[u8]) -> anyhow::Result<usize> {
    anyhow::ensure!(
        bytes.len() > 8 && bytes[..4] == *b"\0asm",
        "not a wasm file"
    );
    let leb = |at: &mut usize| -> anyhow::Result<usize> {
        let (mut value, mut shift) = (0usize, 0);
        loop {
            let byte = *bytes.get(*at).ok_or_else(|| anyhow::anyhow!("truncated"))?;
            *at += 1;
            value |= usize::from(byte & 0x7F) << shift;
            shift += 7;
            if byte < 0x80 || shift > 63 {
                return Ok(value);
            }
        }
    };
    let (mut at, mut modules) = (8, 0);
    while at < bytes.len() {
        let id = bytes[at];
        at += 1;
        let size = leb(&mut at)?;
        if id == 1 {
            modules += 1;
        }
        at += size;
    }
    Ok(modules)
}

const ECHOES: &str = r#"
[plugins.echo]
path = "{plugins}/echo.wasm"

[plugins.echo-py]
path = "{python}/echo_py.wasm"

[[agents]]
name = "rust"
realtime = { plugin = "echo", settings = { mode = "immediate" } }

[[agents]]
name = "python"
match = { merchantId = "py" }
realtime = { plugin = "echo-py", settings = { mode = "immediate" } }

[[agents]]
name = "python-utterance"
match = { merchantId = "py-utterance" }
realtime = { plugin = "echo-py", settings = { silence_ms = 400 } }

[[agents]]
name = "python-misconfigured"
match = { merchantId = "py-bad" }
realtime = { plugin = "echo-py", settings = { mode = "loud" } }

[routing]
default = "rust"
"#;

/// The same recorded question, played into the Rust echo and into the Python template echo
/// (both `immediate`, both PCM16 8 kHz), comes back byte for byte the same from both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_echo_returns_the_same_audio_as_the_rust_echo() -> anyhow::Result<()> {
    let gw = start(ECHOES, "the Rust and Python echoes").await?;
    let mut events = gw.state.subscribe();
    let script = wav_frames(&fixture("speech/hours-question.wav"))?;
    let duration = Duration::from_millis(script.len() as u64 * 20 + 2000);
    let mut heard = Vec::new();
    for (params, agent) in [(json!({}), "rust"), (json!({"merchantId": "py"}), "python")] {
        let log = phone::call(&gw.url, params, script.clone(), duration).await?;
        let end = ended(&mut events).await?;
        assert_eq!(end.stats.agent.as_deref(), Some(agent));
        assert_eq!(end.reason, EndReason::Stop, "{agent}");
        heard.push(
            log.media
                .iter()
                .flat_map(|(_, m)| m.clone())
                .collect::<Vec<u8>>(),
        );
    }
    let sent: usize = script.iter().map(Vec::len).sum();
    // The phone sends silence after the script until the call ends: the echo returns it too.
    assert!(heard[0].len() >= sent, "the Rust echo returned every frame");
    assert_eq!(heard[1].len(), heard[0].len(), "as many bytes from Python");
    assert!(
        heard[1] == heard[0],
        "the Python echo's audio differs from the Rust echo's"
    );
    Ok(())
}

/// The template in its default mode plays an utterance back after the pause; `#` hangs up
/// (DTMF reaches Python); bad settings refuse the call with `invalid-config`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_template_utterance_dtmf_and_invalid_config() -> anyhow::Result<()> {
    let gw = start(ECHOES, "the Rust and Python echoes").await?;
    let mut events = gw.state.subscribe();

    let mut script = phone::speech(1000);
    script.extend(silence(1500));
    let log = phone::call(
        &gw.url,
        json!({"merchantId": "py-utterance"}),
        script,
        Duration::from_secs(4),
    )
    .await?;
    let end = ended(&mut events).await?;
    assert_eq!(end.reason, EndReason::Stop);
    let loud = log
        .media
        .iter()
        .filter(|(_, m)| m.iter().any(|b| !matches!(b, 0x7F | 0xFF | 0xFE | 0x7E)))
        .count();
    assert!(
        (45..=75).contains(&loud),
        "{loud} frames of the utterance played back"
    );

    let mut ws = connect(&gw).await?;
    send(&mut ws, start_event(json!({"merchantId": "py"}))).await?;
    send(&mut ws, media(1, &frame(0x07))).await?;
    assert_eq!(next_media(&mut ws).await?, vec![0x07; 160]);
    send(&mut ws, dtmf("#")).await?;
    let end = ended(&mut events).await?;
    assert_eq!(end.reason, EndReason::HungUp, "{:?}", end.reason);

    let _ = phone::call(
        &gw.url,
        json!({"merchantId": "py-bad"}),
        silence(500),
        Duration::from_secs(1),
    )
    .await;
    let end = ended(&mut events).await?;
    match &end.reason {
        EndReason::PluginFailed(why) => {
            let why = why.to_string();
            assert!(
                why.contains("mode") && why.to_lowercase().contains("config"),
                "{why}"
            );
        }
        other => panic!("a misconfigured Python echo ended with {other:?}"),
    }
    Ok(())
}

/// The Python bridge does host I/O end to end against the fake OpenAI Realtime server: it
/// connects with the agent's secret, sets the session to μ-law, asks for the greeting and plays
/// its audio byte for byte; caller audio goes up batched by its host timer (100 ms appends);
/// the server's transcripts reach the call's record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_realtime_bridge_talks_to_the_fake_openai_server() -> anyhow::Result<()> {
    let fake = FakeOpenAi::start(FakeOptions {
        reply_ms: 1000,
        ..FakeOptions::default()
    })
    .await?;
    let config = format!(
        r#"
[plugins.bridge]
path = "{{python}}/python_realtime_bridge.wasm"

[[agents]]
name = "assistant"
greeting = "Hello there"
realtime = {{ plugin = "bridge", settings = {{ base_url = "{url}", instructions = "Be brief.", batch_ms = 100 }}, secrets = {{ api_key = "sk-test" }}, allowed_hosts = ["127.0.0.1"] }}

[routing]
default = "assistant"
"#,
        url = fake.url
    );
    let gw = start(&config, "the Python bridge").await?;
    let mut events = gw.state.subscribe();
    let mut script = silence(1500);
    script.extend(phone::speech(800));
    script.extend(silence(1500));
    let log = phone::call(&gw.url, json!({}), script, Duration::from_secs(5)).await?;
    let end = ended(&mut events).await?;
    assert_eq!(end.reason, EndReason::Stop, "{:?}", end.reason);

    let record = fake.record();
    assert_eq!(
        record.authorization,
        ["Bearer sk-test"],
        "the secret, from Python"
    );
    assert!(
        record.paths[0].contains("model=gpt-realtime"),
        "{:?}",
        record.paths
    );
    let update = &fake.events("session.update")[0]["session"];
    assert_eq!(update["audio"]["input"]["format"]["type"], "audio/pcmu");
    assert_eq!(update["audio"]["output"]["format"]["type"], "audio/pcmu");
    assert_eq!(update["instructions"], "Be brief.");
    let create = &fake.events("response.create")[0];
    assert!(
        create["response"]["instructions"]
            .as_str()
            .is_some_and(|i| i.contains("Hello there")),
        "{create}"
    );
    // The timer batches caller audio: appends of 100 ms (800 bytes), never one per frame.
    let appends = fake.events("input_audio_buffer.append");
    assert!(appends.len() >= 20, "{} appends", appends.len());
    let sizes: Vec<usize> = appends
        .iter()
        .map(|a| {
            BASE64
                .decode(a["audio"].as_str().unwrap_or_default())
                .map(|b| b.len())
                .unwrap_or(0)
        })
        .collect();
    let batched = sizes.iter().filter(|&&n| n >= 640).count();
    assert!(
        batched * 10 >= sizes.len() * 8,
        "appends not batched by the timer: {sizes:?}"
    );
    assert!(
        record.audio_in.len() >= 8 * 3000,
        "{} bytes of caller audio upstream",
        record.audio_in.len()
    );

    // The greeting (1 s of the fake's tone) played, byte for byte.
    let heard: Vec<u8> = log.media.iter().flat_map(|(_, m)| m.clone()).collect();
    assert!(heard.len() >= 8000, "{} bytes heard", heard.len());
    assert!(
        heard[..8000].chunks(160).all(|f| f == tone().as_slice()),
        "the greeting is the fake's tone"
    );
    let transcript: Vec<(Side, &str)> = end
        .stats
        .transcript
        .iter()
        .map(|t| (t.side, t.text.as_str()))
        .collect();
    assert!(
        transcript.contains(&(Side::Agent, "reply item_1")),
        "{transcript:?}"
    );
    assert!(
        transcript
            .iter()
            .any(|(s, t)| *s == Side::Caller && t.starts_with("caller turn")),
        "{transcript:?}"
    );
    Ok(())
}

// ---- a Python pipeline stage ------------------------------------------------------------------

/// What the fixed STT "hears" in the Python LLM stage's call.
const CALLER_SAYS: &str = "I'd like a table for two.";

/// A pipeline agent whose language model is the Python OpenAI LLM stage, talking to the fake
/// OpenAI HTTP server (`base_url`, `allowed_hosts`, the `api_key` secret); STT and TTS are the
/// Rust fixtures.
fn python_llm_config(llm: &FakeOpenAiHttp) -> String {
    format!(
        r#"
[plugins.stt]
path = "{{plugins}}/fixed_stt.wasm"
[plugins.llm-py]
path = "{{python}}/python_openai_llm.wasm"
[plugins.tts]
path = "{{plugins}}/tone_tts.wasm"

[[agents]]
name = "python-llm"
[agents.pipeline]
instructions = "You are the front desk."
endpointing_ms = 400
stt = {{ plugin = "stt", settings = {{ text = "{CALLER_SAYS}" }} }}
llm = {{ plugin = "llm-py", settings = {{ base_url = "{base}", model = "test-model" }}, secrets = {{ api_key = "sk-test" }}, allowed_hosts = ["{host}"] }}
tts = {{ plugin = "tts", settings = {{ ms_per_char = 5 }} }}

[routing]
default = "python-llm"
"#,
        base = llm.base_url,
        host = llm.host_port,
    )
}

/// A pipeline call whose LLM stage is Python, end to end: the caller speaks, the fixed STT
/// hears [`CALLER_SAYS`], the Python stage streams a chat completion from the fake OpenAI
/// server through host HTTP (real SSE on loopback) with the agent's key as a bearer token, and
/// the reply its deltas make reaches the call's transcript.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_llm_stage_answers_a_pipeline_call_through_the_fake_openai_server()
-> anyhow::Result<()> {
    let llm = FakeOpenAiHttp::start(FakeHttpOptions {
        delay: Duration::from_millis(5),
        ..FakeHttpOptions::default()
    })
    .await?;
    let gw = start(&python_llm_config(&llm), "the Python LLM stage").await?;
    let mut events = gw.state.subscribe();
    let mut script = silence(300);
    script.extend(phone::speech(600));
    script.extend(silence(4000));
    phone::call(&gw.url, json!({}), script, Duration::from_millis(4900)).await?;
    let end = ended(&mut events).await?;
    assert_eq!(end.reason, EndReason::Stop, "{:?}", end.reason);
    assert_eq!(end.stats.agent.as_deref(), Some("python-llm"));

    let chats: Vec<_> = llm
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .collect();
    let first = chats
        .first()
        .ok_or_else(|| anyhow::anyhow!("the Python stage never asked the fake"))?;
    assert_eq!(
        first.authorization.as_deref(),
        Some("Bearer sk-test"),
        "the agent's secret, from Python"
    );
    let body = first
        .json
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the request body is not JSON"))?;
    assert_eq!(body["model"], "test-model", "{body}");
    assert_eq!(body["stream"], true, "{body}");
    assert_eq!(
        first.roles(),
        ["system", "user"],
        "the host's history: {body}"
    );
    assert_eq!(body["messages"][0]["content"], "You are the front desk.");
    assert_eq!(body["messages"][1]["content"], CALLER_SAYS);
    assert!(llm.finished_streams() >= 1, "the reply streamed to its end");

    let reply: String = FakeHttpOptions::default().deltas.concat();
    let agent: Vec<&str> = end
        .stats
        .transcript
        .iter()
        .filter(|t| t.side == Side::Agent)
        .map(|t| t.text.as_str())
        .collect();
    assert!(
        agent.contains(&reply.as_str()),
        "the Python stage's reply {reply:?} is not in the transcript: {:?}",
        end.stats.transcript
    );
    assert!(
        end.stats
            .transcript
            .iter()
            .any(|t| t.side == Side::Caller && t.text == CALLER_SAYS),
        "{:?}",
        end.stats.transcript
    );
    Ok(())
}

const STAGE_EXAMPLES: &str = r#"
[plugins.stt-py]
path = "{examples}/loudness_stt_py.wasm"
[plugins.llm-py]
path = "{examples}/parrot_llm_py.wasm"
[plugins.tts-py]
path = "{examples}/beep_tts_py.wasm"

[[agents]]
name = "all-python"
[agents.pipeline]
endpointing_ms = 400
stt = { plugin = "stt-py" }
llm = { plugin = "llm-py" }
tts = { plugin = "tts-py" }

[routing]
default = "all-python"
"#;

/// The SDK's three stage examples build for their own worlds (picked from the class each entry
/// module exports) and run a pipeline call together, every stage Python: the recognizer hears
/// the caller's burst as "loud", the parrot says it back, the beeper speaks it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_stage_examples_run_an_all_python_pipeline_call() -> anyhow::Result<()> {
    let examples = python_stage_examples()?;
    for ((file, size, _), (_, _, interface)) in examples.built.iter().zip(PYTHON_STAGE_EXAMPLES) {
        let bytes = std::fs::read(examples.dir.join(file))?;
        let export = format!("switchboard:plugin/{interface}@0.2.0");
        assert!(
            bytes.windows(export.len()).any(|w| w == export.as_bytes()),
            "{file} does not export {export}"
        );
        assert!((1..=16).contains(&core_modules(&bytes)?), "{file}");
        assert!(*size < 40_000_000, "{file}: {size} bytes");
    }
    let config =
        write_config(&STAGE_EXAMPLES.replace("{examples}", &examples.dir.display().to_string()))?;
    let gw = launch(&config, "the Python stage examples").await?;
    let mut events = gw.state.subscribe();
    let mut script = silence(300);
    script.extend(phone::speech(600));
    script.extend(silence(3000));
    let log = phone::call(&gw.url, json!({}), script, Duration::from_millis(3900)).await?;
    let end = ended(&mut events).await?;
    assert_eq!(end.reason, EndReason::Stop, "{:?}", end.reason);
    let said = |side: Side| -> Vec<&str> {
        end.stats
            .transcript
            .iter()
            .filter(|t| t.side == side)
            .map(|t| t.text.as_str())
            .collect()
    };
    let caller = said(Side::Caller);
    assert!(
        caller.first().is_some_and(|t| t.starts_with("loud")),
        "{:?}",
        end.stats.transcript
    );
    assert_eq!(
        said(Side::Agent).first(),
        caller.first(),
        "the parrot's reply"
    );
    let loud = log
        .media
        .iter()
        .filter(|(_, m)| m.iter().any(|b| !matches!(b, 0x7F | 0xFF | 0xFE | 0x7E)))
        .count();
    // 10 ms a character: "loud" is 40 ms of beeps, two frames.
    assert!(loud >= 2, "{loud} frames of the beeper's speech heard");
    Ok(())
}

// ---- a misbehaving Python plugin ends only its own call ---------------------------------------

/// Twilio's `dtmf` message for stream `MZ1`.
fn dtmf(digit: &str) -> serde_json::Value {
    json!({"event": "dtmf", "sequenceNumber": "3", "streamSid": "MZ1",
        "dtmf": {"track": "inbound_track", "digit": digit}})
}

/// A Python plugin that loops forever or eats memory ends only its own call: the caller hears
/// the apology and the call ends as plugin-failed (the budget, or the memory limit), while a
/// call on the Rust echo beside it loses no frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_python_plugin_ends_only_its_own_call() -> anyhow::Result<()> {
    for (behaviour, why) in [("spin", "budget"), ("hog", "memory")] {
        let gw = start(
            &SANDBOX_CONFIG
                .replace("MISBEHAVE", "{python}/python_misbehave.wasm")
                .replace("BEHAVIOUR", behaviour),
            "the misbehaving Python plugin",
        )
        .await?;
        let mut events = gw.state.subscribe();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let good = beside(&gw, stopped).await?;

        let mut bad = connect(&gw).await?;
        send(&mut bad, start_event(json!({"merchantId": "bad"}))).await?;
        send(&mut bad, media(1, &frame(0x07))).await?;
        assert_eq!(
            next_media(&mut bad).await?,
            vec![0x07; 160],
            "{behaviour}: echoes until told"
        );
        send(&mut bad, dtmf("1")).await?;
        let apology_ms = hear_apology(&mut bad, "MZ1", Duration::from_secs(10)).await?;
        assert!(
            apology_ms >= 2000,
            "{behaviour}: apology of {apology_ms} ms"
        );
        let event = ended(&mut events).await?;
        assert_eq!(event.stats.agent.as_deref(), Some("bad"), "{behaviour}");
        match &event.reason {
            EndReason::PluginFailed(reason) => {
                println!("{behaviour}: {reason}");
                assert!(
                    reason.to_string().to_lowercase().contains(why),
                    "{behaviour}: reason {reason:?} should mention {why:?}"
                );
            }
            other => panic!("{behaviour}: ended with {other:?}"),
        }
        assert_eq!(
            gw.state.active_calls(),
            1,
            "{behaviour}: the other call is live"
        );
        let _ = stop.send(());
        let frames = good.await??;
        assert!(
            frames >= 50,
            "{behaviour}: the other call sent {frames} frames"
        );
    }
    Ok(())
}
