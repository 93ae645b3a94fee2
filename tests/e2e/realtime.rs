//! The OpenAI Realtime plugin end to end: gateway + a Twilio-side phone + the fake OpenAI
//! Realtime server, all on loopback; the plugin reaches the fake through host I/O.

use std::time::Duration;

use serde_json::json;
use switchboard::call::{EndReason, Side};
use switchboard_tests::fake_openai::{FakeOpenAi, FakeOptions, tone};
use switchboard_tests::phone::{self, silence, speech};
use switchboard_tests::{Gateway, write_config};

fn config(fake: &FakeOpenAi, allowed: &str, greeting: &str) -> String {
    config_with(fake, allowed, greeting, "{plugins}/openai_realtime.wasm")
}

fn config_with(fake: &FakeOpenAi, allowed: &str, greeting: &str, path: &str) -> String {
    format!(
        r#"
[plugins.openai]
path = "{path}"

[[agents]]
name = "assistant"
greeting = "{greeting}"
realtime = {{ plugin = "openai", settings = {{ base_url = "{url}", instructions = "Be brief." }}, secrets = {{ api_key = "sk-test" }}, allowed_hosts = ["{allowed}"] }}

[routing]
default = "assistant"
"#,
        url = fake.url,
    )
}

async fn ended(
    rx: &mut tokio::sync::broadcast::Receiver<switchboard::server::CallEnded>,
) -> anyhow::Result<switchboard::server::CallEnded> {
    Ok(tokio::time::timeout(Duration::from_secs(10), rx.recv()).await??)
}

/// The greeting is generated upstream and reaches the caller; the session was set up for μ-law
/// both ways with the agent's key; time-to-first-audio is measured and reported. Host I/O
/// behaves the same for the plugin built as a WASM component and as a native library.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greeting_reaches_the_caller() -> anyhow::Result<()> {
    for path in ["{plugins}/openai_realtime.wasm", "{native:openai_realtime}"] {
        greeting_through(path).await?;
    }
    Ok(())
}

async fn greeting_through(path: &str) -> anyhow::Result<()> {
    let fake = FakeOpenAi::start(FakeOptions {
        reply_ms: 1000,
        ..FakeOptions::default()
    })
    .await?;
    let config = config_with(&fake, "127.0.0.1", "Hello there", path);
    let gw = Gateway::start(&write_config(&config)?).await?;
    let mut events = gw.state.subscribe();
    let log = phone::call(&gw.url, json!({}), silence(2000), Duration::from_secs(2)).await?;
    let end = ended(&mut events).await?;
    assert_eq!(end.reason, EndReason::Stop);

    let record = fake.record();
    assert_eq!(record.authorization, ["Bearer sk-test"]);
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

    // The whole 1 s greeting arrived, byte for byte the fake's tone.
    let heard: Vec<u8> = log.media.iter().flat_map(|(_, m)| m.clone()).collect();
    assert_eq!(heard.len(), 8000, "50 frames of greeting");
    assert!(heard.chunks(160).all(|f| f == tone().as_slice()));
    let ttfa = end.stats.first_audio.expect("time-to-first-audio recorded");
    println!("time to first greeting audio ({path}): {ttfa:?}");
    assert!(ttfa < Duration::from_secs(1), "{ttfa:?}");
    assert!(
        end.stats
            .transcript
            .iter()
            .any(|t| t.side == Side::Agent && t.text == "reply item_1"),
        "{:?}",
        end.stats.transcript
    );
    Ok(())
}

/// The caller talks over the greeting: `clear` reaches Twilio within a frame of the server's
/// `speech_started`; the server is told to truncate the reply at what the caller actually heard
/// (±20 ms); late audio of the cancelled reply is never played.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_clears_and_truncates_at_what_was_heard() -> anyhow::Result<()> {
    let fake = FakeOpenAi::start(FakeOptions {
        reply_ms: 4000,
        late_deltas: 3,
        ..FakeOptions::default()
    })
    .await?;
    let gw = Gateway::start(&write_config(&config(&fake, "127.0.0.1", "Hello there"))?).await?;
    let mut events = gw.state.subscribe();
    let mut script = silence(1500);
    script.extend(speech(600));
    let log = phone::call(&gw.url, json!({}), script, Duration::from_secs(4)).await?;
    let end = ended(&mut events).await?;
    assert_eq!(end.reason, EndReason::Stop);

    let record = fake.record();
    let spoke = record.speech_started_at[0];
    let clear = log.clears.first().expect("a clear after speech_started");
    let delay = clear.at.saturating_duration_since(spoke);
    println!("speech_started → clear at Twilio: {delay:?}");
    assert!(delay <= Duration::from_millis(20), "{delay:?}");

    let truncate = &fake.events("conversation.item.truncate")[0];
    assert_eq!(truncate["item_id"], "item_1");
    assert_eq!(truncate["content_index"], 0);
    let audio_end_ms = truncate["audio_end_ms"].as_u64().unwrap_or_default();
    println!(
        "caller heard {} ms; truncate audio_end_ms {audio_end_ms}",
        clear.heard_ms
    );
    assert!(
        audio_end_ms.abs_diff(clear.heard_ms) <= 20,
        "truncate at {audio_end_ms} ms, caller heard {} ms",
        clear.heard_ms
    );
    assert!(
        (1000..=1800).contains(&clear.heard_ms),
        "{}",
        clear.heard_ms
    );

    // Nothing of the cancelled reply arrives after the clear: the next audio is the answer to
    // the caller's turn, which starts after they stop speaking (≥ 400 ms later).
    let after: Vec<_> = log.media.iter().filter(|(at, _)| *at > clear.at).collect();
    if let Some((first, _)) = after.first() {
        assert!(
            first.saturating_duration_since(clear.at) >= Duration::from_millis(400),
            "late audio {:?} after the clear",
            first.saturating_duration_since(clear.at)
        );
    }
    assert!(
        end.stats
            .transcript
            .iter()
            .any(|t| t.side == Side::Caller && t.text.starts_with("caller turn")),
        "{:?}",
        end.stats.transcript
    );
    Ok(())
}

/// An agent whose `allowed_hosts` lacks the backend cannot connect: the caller hears the apology
/// and the call ends with the denial as its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_outside_allowed_hosts_is_refused() -> anyhow::Result<()> {
    let fake = FakeOpenAi::start(FakeOptions::default()).await?;
    let gw = Gateway::start(&write_config(&config(&fake, "api.openai.com", "Hi"))?).await?;
    let mut events = gw.state.subscribe();
    let log = phone::call(&gw.url, json!({}), silence(1000), Duration::from_secs(4)).await?;
    let end = ended(&mut events).await?;
    match &end.reason {
        EndReason::PluginFailed(reason) => {
            assert!(reason.to_string().contains("allowed_hosts"), "{reason}")
        }
        other => panic!("ended with {other:?}"),
    }
    assert!(log.media.len() >= 100, "the apology played");
    assert!(fake.record().paths.is_empty(), "the fake was never reached");
    Ok(())
}

/// The upstream closes mid-call: the caller hears the apology, the reason names the close, and
/// the gateway keeps serving the next call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_close_ends_the_call_politely() -> anyhow::Result<()> {
    let fake = FakeOpenAi::start(FakeOptions {
        reply_ms: 200,
        close_after_appends: Some(25),
        ..FakeOptions::default()
    })
    .await?;
    let gw = Gateway::start(&write_config(&config(&fake, "127.0.0.1", "Hi"))?).await?;
    let mut events = gw.state.subscribe();
    let log = phone::call(&gw.url, json!({}), silence(1000), Duration::from_secs(5)).await?;
    let end = ended(&mut events).await?;
    match &end.reason {
        EndReason::PluginFailed(reason) => assert!(
            reason
                .to_string()
                .contains("closed the session (code 1011: fake: server error)"),
            "{reason}"
        ),
        other => panic!("ended with {other:?}"),
    }
    assert!(log.closed_by_gateway);
    assert!(!log.clears.is_empty(), "clear before the apology");
    // The gateway serves the next call (which the fake again closes after 25 frames).
    let log = phone::call(&gw.url, json!({}), silence(300), Duration::from_millis(300)).await?;
    assert_eq!(log.media.len(), 10, "the greeting of the next call");
    Ok(())
}

/// μ-law goes through untouched both ways: the bytes the caller sent are the bytes the server
/// received, and the bytes the server sent are the bytes the caller heard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mulaw_path_is_not_transcoded() -> anyhow::Result<()> {
    // Every byte value, scrambled, both ways.
    let pattern: Vec<u8> = (0..160u32).map(|i| (i * 97 % 256) as u8).collect();
    let fake = FakeOpenAi::start(FakeOptions {
        reply_ms: 1000,
        reply_pattern: pattern.clone(),
        ..FakeOptions::default()
    })
    .await?;
    let gw = Gateway::start(&write_config(&config(&fake, "127.0.0.1", ""))?).await?;
    let caller: Vec<Vec<u8>> = (0..25u32)
        .map(|f| {
            (0..160u32)
                .map(|i| ((f * 160 + i) * 31 % 256) as u8)
                .collect()
        })
        .collect();
    let sent: Vec<u8> = caller.concat();
    let log = phone::call(&gw.url, json!({}), caller, Duration::from_secs(3)).await?;
    let record = fake.record();
    assert!(
        record.audio_in.starts_with(&sent),
        "the server got other bytes than the caller sent"
    );
    assert!(fake.events("response.create").is_empty(), "no greeting");
    let heard: Vec<u8> = log.media.iter().flat_map(|(_, m)| m.clone()).collect();
    let expected: Vec<u8> = pattern.iter().copied().cycle().take(8000).collect();
    assert_eq!(heard.len(), 8000);
    assert!(
        heard == expected,
        "the caller heard other bytes than the server sent"
    );
    Ok(())
}

/// A server that reports another audio format than μ-law is refused loudly (apology, reason
/// recorded), never played as static.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_upstream_format_fails_loudly() -> anyhow::Result<()> {
    let fake = FakeOpenAi::start(FakeOptions {
        reported_format: "audio/pcm".into(),
        ..FakeOptions::default()
    })
    .await?;
    let gw = Gateway::start(&write_config(&config(&fake, "127.0.0.1", "Hi"))?).await?;
    let mut events = gw.state.subscribe();
    let log = phone::call(&gw.url, json!({}), silence(500), Duration::from_secs(4)).await?;
    let end = ended(&mut events).await?;
    match &end.reason {
        EndReason::PluginFailed(reason) => {
            assert!(
                reason.to_string().contains("audio/pcm, not audio/pcmu"),
                "{reason}"
            )
        }
        other => panic!("ended with {other:?}"),
    }
    assert!(
        fake.events("response.create").is_empty(),
        "no greeting in the wrong format"
    );
    assert!(log.closed_by_gateway);
    Ok(())
}
