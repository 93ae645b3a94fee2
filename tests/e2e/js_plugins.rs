//! JavaScript plugins end to end: the JS SDK's template echo, a JS realtime bridge that reaches
//! the fake OpenAI Realtime server through host I/O, a JS language-model stage of a pipeline
//! agent that streams chat completions from the fake OpenAI HTTP server through host I/O, and
//! misbehaving JS plugins — each built from source in the test run (`plugin-api/js/build.mjs`,
//! componentize-js from npm, installed by `scripts/setup`) and loaded by the stock gateway.

use std::time::{Duration, Instant};

use serde_json::json;
use switchboard::call::{EndReason, Side};
use switchboard::server::CallEnded;
use switchboard_tests::fake_openai::{FakeOpenAi, FakeOptions, tone};
use switchboard_tests::fake_openai_http::{FakeHttpOptions, FakeOpenAiHttp};
use switchboard_tests::js::{self, js_plugins};
use switchboard_tests::phone::{self, silence, speech};
use switchboard_tests::{Gateway, workspace_root};

async fn ended(rx: &mut tokio::sync::broadcast::Receiver<CallEnded>) -> anyhow::Result<CallEnded> {
    Ok(tokio::time::timeout(Duration::from_secs(20), rx.recv()).await??)
}

/// The Rust echo and the JS template echo, each in both modes, routed by `lang` and `mode`.
const ECHO_CONFIG: &str = r#"
[plugins.rust]
path = "{plugins}/echo.wasm"
[plugins.js]
path = "{js}/js_echo.wasm"

[[agents]]
name = "rust-immediate"
realtime = { plugin = "rust", settings = { mode = "immediate" } }

[[agents]]
name = "js-immediate"
match = { lang = "js", mode = "immediate" }
realtime = { plugin = "js", settings = { mode = "immediate" } }

[[agents]]
name = "rust-utterance"
match = { lang = "rust", mode = "utterance" }
realtime = { plugin = "rust", settings = { mode = "utterance", silence_ms = 400, greeting_tone = true } }

[[agents]]
name = "js-utterance"
match = { lang = "js", mode = "utterance" }
realtime = { plugin = "js", settings = { mode = "utterance", silence_ms = 400, greeting_tone = true } }

[routing]
default = "rust-immediate"
"#;

/// The JS template echo, built by the documented command, serves calls through the stock gateway
/// and returns exactly the audio the Rust echo returns for the same caller audio — every frame
/// as it comes (`immediate`), and whole utterances after a pause (`utterance`, with the greeting
/// tone). The component's build time and size and the gateway's load time are printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_echo_returns_what_the_rust_echo_returns() -> anyhow::Result<()> {
    let built = js_plugins()?;
    for (name, took) in &built.build_times {
        println!("built {name} in {took:?} (all built at once)");
    }
    let size = std::fs::metadata(built.dir.join("js_echo.wasm"))?.len();
    println!("js_echo.wasm: {:.1} MB", size as f64 / 1e6);
    let config = js::write_config(ECHO_CONFIG)?;
    let loading = Instant::now();
    let gw = Gateway::start(&config).await?;
    println!(
        "gateway with the Rust and JS echoes loaded in {:?} (debug build; compiled unless the shared cache had it)",
        loading.elapsed()
    );
    let mut events = gw.state.subscribe();
    let mut script = silence(300);
    script.extend(speech(1000));
    script.extend(silence(800));
    script.extend(speech(600));
    script.extend(silence(300));
    let duration = Duration::from_millis(script.len() as u64 * 20 + 1500);
    for mode in ["immediate", "utterance"] {
        let (rust, js) = tokio::join!(
            phone::call(
                &gw.url,
                json!({"lang": "rust", "mode": mode}),
                script.clone(),
                duration
            ),
            phone::call(
                &gw.url,
                json!({"lang": "js", "mode": mode}),
                script.clone(),
                duration
            ),
        );
        let (rust, js) = (rust?, js?);
        let mut agents = Vec::new();
        for _ in 0..2 {
            let end = ended(&mut events).await?;
            assert_eq!(end.reason, EndReason::Stop, "{mode}: {:?}", end.stats.agent);
            agents.push(end.stats.agent.unwrap_or_default());
        }
        agents.sort();
        assert_eq!(agents, [format!("js-{mode}"), format!("rust-{mode}")]);
        let audio = |log: &phone::PhoneLog| -> Vec<u8> {
            log.media
                .iter()
                .flat_map(|(_, m)| m.iter().copied())
                .collect()
        };
        let (rust_audio, js_audio) = (audio(&rust), audio(&js));
        assert!(
            rust_audio.len() >= 160 * 50,
            "{mode}: the Rust echo returned {} bytes",
            rust_audio.len()
        );
        assert_eq!(
            js_audio.len(),
            rust_audio.len(),
            "{mode}: as much audio from JS as from Rust"
        );
        assert!(
            js_audio == rust_audio,
            "{mode}: the JS echo's audio differs from the Rust echo's"
        );
        assert_eq!(js.marks_played, rust.marks_played, "{mode}");
    }
    Ok(())
}

/// The JS plugins' own tests (`node --test`, with the SDK's test kit and fake host functions)
/// pass — the template, the example pipeline stages, the realtime bridge and the LLM stage: what
/// a JS author runs without a gateway.
#[test]
fn js_plugin_tests_pass_in_node() -> anyhow::Result<()> {
    for dir in [
        "plugin-api/js/template",
        "plugin-api/js/examples",
        "plugins/js-realtime-bridge",
        "plugins/js-openai-llm",
    ] {
        let out = js::node_test(&workspace_root().join(dir))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        println!("{dir}:\n{stdout}");
        assert!(
            out.status.success(),
            "node --test {dir} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("# fail 0"), "{stdout}");
    }
    Ok(())
}

/// The JS bridge reaches the fake OpenAI Realtime server through the host's WebSocket: it
/// authenticates with the agent's secret, the greeting and the reply to the caller's turn reach
/// the caller as the fake's audio, the caller's audio reaches the fake untouched, both sides'
/// transcripts are recorded, and its call-limit timer hangs the call up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_bridge_talks_to_the_fake_realtime_server() -> anyhow::Result<()> {
    let fake = FakeOpenAi::start(FakeOptions {
        reply_ms: 1000,
        ..FakeOptions::default()
    })
    .await?;
    let config = format!(
        r#"
[plugins.bridge]
path = "{{js}}/js_realtime_bridge.wasm"

[[agents]]
name = "assistant"
greeting = "Hello there"
realtime = {{ plugin = "bridge", settings = {{ base_url = "{url}", instructions = "Be brief.", max_call_ms = 6000 }}, secrets = {{ api_key = "sk-test" }}, allowed_hosts = ["127.0.0.1"] }}

[routing]
default = "assistant"
"#,
        url = fake.url
    );
    let config = js::write_config(&config)?;
    let loading = Instant::now();
    let gw = Gateway::start(&config).await?;
    println!(
        "gateway with the JS bridge loaded in {:?} (debug build; compiled unless the shared cache had it)",
        loading.elapsed()
    );
    let mut events = gw.state.subscribe();
    let mut script = silence(2000);
    script.extend(speech(1000));
    script.extend(silence(1000));
    let sent: Vec<u8> = script.iter().flatten().copied().collect();
    let started = Instant::now();
    let log = phone::call(&gw.url, json!({}), script, Duration::from_secs(12)).await?;
    let end = ended(&mut events).await?;
    let took = started.elapsed();
    assert_eq!(
        end.reason,
        EndReason::HungUp,
        "the call-limit timer hangs up"
    );
    assert!(log.closed_by_gateway);
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(11),
        "hung up after {took:?}, the limit is 6 s"
    );
    let record = fake.record();
    assert_eq!(record.authorization, ["Bearer sk-test"]);
    assert!(
        record.paths[0].ends_with("?model=gpt-realtime"),
        "{:?}",
        record.paths
    );
    assert_eq!(
        record.session_updates[0]["audio"]["input"]["format"]["type"],
        "audio/pcmu"
    );
    assert_eq!(fake.events("response.create").len(), 1, "the greeting");
    // The caller's audio, μ-law untouched, as far as the call went.
    assert!(
        record.audio_in.len() >= 160 * 150,
        "{} bytes reached the fake",
        record.audio_in.len()
    );
    let n = record.audio_in.len().min(sent.len());
    assert_eq!(record.audio_in[..n], sent[..n]);
    // The greeting (1 s) and the reply (1 s) played: the fake's tone, byte for byte.
    let heard: Vec<u8> = log
        .media
        .iter()
        .flat_map(|(_, m)| m.iter().copied())
        .collect();
    assert!(heard.len() >= 2 * 8000 - 320, "heard {} bytes", heard.len());
    let pattern = tone();
    assert!(
        heard
            .chunks(800)
            .take(10)
            .all(|c| pattern.iter().cycle().zip(c).all(|(a, b)| a == b)),
        "the greeting is the fake's audio"
    );
    let texts: Vec<(Side, String)> = end
        .stats
        .transcript
        .iter()
        .map(|t| (t.side, t.text.clone()))
        .collect();
    assert!(
        texts.contains(&(Side::Caller, "caller turn 2".into())),
        "{texts:?}"
    );
    assert!(
        texts.contains(&(Side::Agent, "Time is up, goodbye.".into())),
        "{texts:?}"
    );
    Ok(())
}

/// What the recognizer reports the caller said to the pipeline agent.
const QUESTION: &str = "I'd like to book a table for two.";

/// One call to a pipeline agent whose language model is the JS stage (`js_openai_llm`) talking
/// to `fake`, between the STT component `stt` and the TTS component `tts` (paths in a config
/// template) speaking `ms_per_char` milliseconds per character: the caller speaks once, then
/// listens. Returns what the phone heard, how the call ended, and its transcript.
async fn pipeline_call(
    fake: &FakeOpenAiHttp,
    stt: &'static str,
    tts: &'static str,
    ms_per_char: u64,
) -> anyhow::Result<(phone::PhoneLog, CallEnded, Vec<(Side, String)>)> {
    let config = format!(
        r#"
[plugins.stt]
path = "{stt}"
[plugins.llm]
path = "{{js}}/js_openai_llm.wasm"
[plugins.tts]
path = "{tts}"

[[agents]]
name = "desk"

[agents.pipeline]
instructions = "You take table bookings."
endpointing_ms = 400
stt = {{ plugin = "stt", settings = {{ text = "{QUESTION}" }} }}
llm = {{ plugin = "llm", settings = {{ base_url = "{base}", model = "test-model" }}, secrets = {{ api_key = "sk-test" }}, allowed_hosts = ["{host}"] }}
tts = {{ plugin = "tts", settings = {{ ms_per_char = {ms_per_char} }} }}

[routing]
default = "desk"
"#,
        base = fake.base_url,
        host = fake.host_port,
    );
    let config = js::write_config(&config)?;
    let loading = Instant::now();
    let gw = Gateway::start(&config).await?;
    let file = |path: &'static str| path.rsplit('/').next().unwrap_or(path);
    println!(
        "gateway with {}, the JS LLM stage and {} loaded in {:?} (debug build; compiled unless the shared cache had it)",
        file(stt),
        file(tts),
        loading.elapsed()
    );
    let mut events = gw.state.subscribe();
    let mut script = silence(300);
    script.extend(speech(600));
    script.extend(silence(4000));
    let log = phone::call(&gw.url, json!({}), script, Duration::from_secs(6)).await?;
    let end = ended(&mut events).await?;
    let turns = end
        .stats
        .transcript
        .iter()
        .map(|t| (t.side, t.text.clone()))
        .collect();
    Ok((log, end, turns))
}

/// A pipeline agent whose language model is the JS stage, reaching the fake OpenAI HTTP server
/// through the host's HTTP I/O: the bearer token is the stage's secret; the caller's turn (from
/// the fixture STT) goes out in the chat-completions request after the instructions; the fake's
/// streamed deltas come back as the agent's turn in the call's transcript, spoken by the fixture
/// TTS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_llm_stage_answers_a_pipeline_call_through_the_fake_openai_server() -> anyhow::Result<()>
{
    let fake = FakeOpenAiHttp::start(FakeHttpOptions::default()).await?;
    let reply: String = FakeHttpOptions::default().deltas.concat();
    let (log, end, turns) = pipeline_call(
        &fake,
        "{plugins}/fixed_stt.wasm",
        "{plugins}/tone_tts.wasm",
        5,
    )
    .await?;
    assert_eq!(end.reason, EndReason::Stop, "{:?}", end.stats);
    assert_eq!(
        turns,
        [(Side::Caller, QUESTION.to_string()), (Side::Agent, reply)],
        "the fake's deltas are the agent's turn"
    );
    assert!(!log.media.is_empty(), "the caller heard the reply");
    let requests = fake.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let request = &requests[0];
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(request.authorization.as_deref(), Some("Bearer sk-test"));
    assert_eq!(request.roles(), ["system", "user"]);
    let body = request
        .json
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the request had no JSON body"))?;
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["stream"], true);
    assert_eq!(body["messages"][0]["content"], "You take table bookings.");
    assert_eq!(body["messages"][1]["content"], QUESTION);
    assert_eq!(fake.finished_streams(), 1, "the stream was read to its end");
    Ok(())
}

/// Every stage of a pipeline agent in JavaScript — the SDK's example recognizer
/// (`plugin-api/js/examples/stt.js`) and synthesizer (`examples/tts.js`) around the JS LLM stage
/// and the fake OpenAI HTTP server — answers a call: the recognizer's text is the caller's turn,
/// the fake's deltas the agent's, and the synthesizer's tone plays for as long as the reply's
/// characters say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_js_pipeline_answers_a_call() -> anyhow::Result<()> {
    /// The example synthesizer's tone per character of the reply.
    const MS_PER_CHAR: u64 = 20;
    let fake = FakeOpenAiHttp::start(FakeHttpOptions::default()).await?;
    let reply: String = FakeHttpOptions::default().deltas.concat();
    let (log, end, turns) = pipeline_call(
        &fake,
        "{js}/js_example_stt.wasm",
        "{js}/js_example_tts.wasm",
        MS_PER_CHAR,
    )
    .await?;
    assert_eq!(end.reason, EndReason::Stop, "{:?}", end.stats);
    assert_eq!(
        turns,
        [
            (Side::Caller, QUESTION.to_string()),
            (Side::Agent, reply.clone())
        ]
    );
    let played_ms = log.media.len() as u64 * 20;
    let expected_ms = reply.chars().count() as u64 * MS_PER_CHAR;
    assert!(
        played_ms.abs_diff(expected_ms) <= 60,
        "played {played_ms} ms, expected about {expected_ms}"
    );
    assert_eq!(fake.requests().len(), 1);
    Ok(())
}

const MISBEHAVE_CONFIG: &str = r#"
[plugins.echo]
path = "{js}/js_echo.wasm"

[plugins.misbehave]
path = "{js}/js_misbehave.wasm"

[[agents]]
name = "good"
realtime = { plugin = "echo", settings = { mode = "immediate" } }

[[agents]]
name = "spin"
match = { merchantId = "spin" }
realtime = { plugin = "misbehave", settings = { behaviour = "spin", after_frames = 25 } }

[[agents]]
name = "hog"
match = { merchantId = "hog" }
realtime = { plugin = "misbehave", settings = { behaviour = "hog", after_frames = 25 } }

[routing]
default = "good"
"#;

/// A JS plugin that loops forever or allocates without end, 0.5 s into its call, ends only its
/// own call (`plugin-failed`, naming the time budget or the memory limit), while a call on the
/// JS echo beside it keeps echoing every frame, intact and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_js_plugin_ends_only_its_own_call() -> anyhow::Result<()> {
    let gw = Gateway::start(&js::write_config(MISBEHAVE_CONFIG)?).await?;
    let mut events = gw.state.subscribe();
    for (behaviour, why) in [("spin", "budget"), ("hog", "memory")] {
        // The neighbour: 3 s of distinct frames on the JS echo (never 0x7F/0xFF, the μ-law zeros).
        let script: Vec<Vec<u8>> = (0..150u8).map(|i| vec![0x01 + i % 0x70; 160]).collect();
        let good = {
            let (url, script) = (gw.url.clone(), script.clone());
            tokio::spawn(async move {
                phone::call(&url, json!({}), script, Duration::from_secs(4)).await
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let bad = phone::call(
            &gw.url,
            json!({"merchantId": behaviour}),
            speech(2000),
            Duration::from_secs(3),
        )
        .await?;
        let good = good.await??;
        let mut ends = Vec::new();
        for _ in 0..2 {
            ends.push(ended(&mut events).await?);
        }
        let bad_end = ends
            .iter()
            .find(|e| e.stats.agent.as_deref() == Some(behaviour))
            .ok_or_else(|| anyhow::anyhow!("{behaviour}: no end for the bad call"))?;
        match &bad_end.reason {
            EndReason::PluginFailed(reason) => assert!(
                reason.to_string().to_lowercase().contains(why),
                "{behaviour}: {reason}"
            ),
            other => panic!("{behaviour}: the bad call ended {other:?}"),
        }
        assert_eq!(bad_end.reason.outcome(), "plugin-failed");
        assert!(
            bad.media.len() >= 20,
            "{behaviour}: the bad call echoed until it misbehaved"
        );
        let good_end = ends
            .iter()
            .find(|e| e.stats.agent.as_deref() == Some("good"))
            .ok_or_else(|| anyhow::anyhow!("{behaviour}: no end for the good call"))?;
        assert_eq!(good_end.reason, EndReason::Stop, "{behaviour}");
        let echoed: Vec<Vec<u8>> = good.media.iter().map(|(_, m)| m.clone()).collect();
        // The phone goes on with silence after its script, to the call's 4 s: 200 frames.
        assert_eq!(
            echoed.len(),
            200,
            "{behaviour}: every neighbour frame echoed"
        );
        assert!(
            echoed[..script.len()] == script[..],
            "{behaviour}: the neighbour's echo is intact and in order"
        );
        println!(
            "{behaviour}: the bad call ended {}",
            bad_end.reason.outcome()
        );
    }
    Ok(())
}
