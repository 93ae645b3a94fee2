//! The live event feed (`GET /events`, Server-Sent Events) as an application sees it: a real
//! gateway, a pipeline call placed by the test phone, and an SSE client on loopback that checks
//! the call's events arrive in order with the documented schema (`docs/events.md`), that a
//! client reconnecting with `Last-Event-ID` resumes without loss or repeats, and that the feed
//! is closed to a wrong token.

use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::{Value, json};
use sse_stream::SseStream;
use switchboard_tests::phone::{self, silence, wav_frames};
use switchboard_tests::{Gateway, fixture, write_config};

const TOKEN: &str = "events-test-token";

/// What the fixture STT reports the caller said.
const QUESTION: &str = "What are your opening hours?";
const REPLY: &str = "We are open from nine until five.";
const GREETING: &str = "Hello, how can I help?";

fn config() -> String {
    format!(
        r#"
[api]
tokens = ["{TOKEN}"]
burst = 100

[plugins.stt]
path = "{{plugins}}/fixed_stt.wasm"
[plugins.llm]
path = "{{plugins}}/scripted.wasm"
[plugins.tts]
path = "{{plugins}}/tone_tts.wasm"

[[agents]]
name = "front-desk"
greeting = "{GREETING}"

[agents.pipeline]
instructions = "You answer questions about the shop."
endpointing_ms = 600
stt = {{ plugin = "stt", settings = {{ text = "{QUESTION}" }} }}
llm = {{ plugin = "llm", settings = {{ intents = [{{ name = "hours", keywords = ["hours", "open"], reply = "{REPLY}" }}], fallback = "Sorry?" }} }}
tts = {{ plugin = "tts", settings = {{ ms_per_char = 20, voice = "recording" }} }}

[routing]
default = "front-desk"
"#
    )
}

/// One event as received: the SSE fields and the parsed JSON.
#[derive(Debug, Clone)]
struct Received {
    id: Option<String>,
    event: String,
    json: Value,
}

/// Opens `GET /events{query}` with the test token (and `last_event_id`).
async fn open(
    url: &str,
    query: &str,
    last_event_id: Option<&str>,
) -> anyhow::Result<impl futures_util::Stream<Item = Received> + Unpin> {
    let mut request = reqwest::Client::new()
        .get(format!("{url}/events{query}"))
        .bearer_auth(TOKEN);
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    let response = request.send().await?;
    anyhow::ensure!(response.status() == 200, "{}", response.status());
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    anyhow::ensure!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let stream = SseStream::from_bytes_stream(response.bytes_stream()).filter_map(|item| async {
        let sse = item.ok()?;
        // Keep-alive comments carry no event.
        let event = sse.event?;
        let json = serde_json::from_str(sse.data.as_deref()?).ok()?;
        Some(Received {
            id: sse.id,
            event,
            json,
        })
    });
    Ok(Box::pin(stream))
}

/// Reads events until one of type `until` (or 30 s pass).
async fn read_until(
    stream: &mut (impl futures_util::Stream<Item = Received> + Unpin),
    until: &str,
) -> anyhow::Result<Vec<Received>> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .map_err(|_| anyhow::anyhow!("no {until} within 30 s; saw {:?}", kinds(&seen)))?;
        let Some(event) = next else {
            anyhow::bail!("the feed ended; saw {:?}", kinds(&seen));
        };
        let done = event.event == until;
        seen.push(event);
        if done {
            return Ok(seen);
        }
    }
}

fn kinds(events: &[Received]) -> Vec<&str> {
    events.iter().map(|e| e.event.as_str()).collect()
}

fn index(events: &[Received], kind: &str) -> usize {
    events
        .iter()
        .position(|e| e.event == kind)
        .unwrap_or_else(|| panic!("no {kind} in {:?}", kinds(events)))
}

/// The caller's script: the greeting plays, then the question, then silence for the reply.
fn script() -> anyhow::Result<Vec<Vec<u8>>> {
    let mut script = silence(2500);
    script.extend(wav_frames(&fixture("speech/hours-question.wav"))?);
    script.extend(silence(4000));
    Ok(script)
}

/// A pipeline call's events reach an SSE client in the call's order, each with the documented
/// envelope and data: started, the greeting's text and audio, the caller's speech and
/// transcript, the reply, the turn's latency, ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_client_receives_a_calls_events_in_order_with_the_schema() -> anyhow::Result<()> {
    let gw = Gateway::start(&write_config(&config())?).await?;
    let mut feed = open(&gw.url, "", None).await?;
    let script = script()?;
    let duration = Duration::from_millis(script.len() as u64 * 20);
    let url = gw.url.clone();
    let call = tokio::spawn(async move {
        phone::call(
            &url,
            json!({"From": "+15550001111", "To": "+15550002222"}),
            script,
            duration,
        )
        .await
    });
    let events = read_until(&mut feed, "call.ended").await?;
    call.await??;
    for e in &events {
        println!("{}", e.json);
    }

    // The envelope: ids increase, every field is there, `type` is the SSE event name.
    let mut last_seq = 0;
    for e in &events {
        let v = &e.json;
        assert_eq!(v["type"], e.event.as_str(), "{v}");
        assert_eq!(v["id"].as_str(), e.id.as_deref(), "{v}");
        let seq: u64 =
            e.id.as_deref()
                .and_then(|i| i.rsplit_once('-'))
                .unwrap()
                .1
                .parse()?;
        assert!(seq > last_seq, "ids increase: {seq} after {last_seq}");
        last_seq = seq;
        assert_eq!(v["call_sid"], "CA1", "{v}");
        assert_eq!(v["stream_sid"], "MZ1", "{v}");
        assert_eq!(v["agent"], "front-desk", "{v}");
        assert!(v["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{v}");
        assert!(v["data"].is_object(), "{v}");
    }
    let started = &events[0];
    assert_eq!(started.event, "call.started");
    assert_eq!(
        started.json["data"],
        json!({"from": "+15550001111", "to": "+15550002222", "direction": "inbound",
               "mode": "pipeline", "plugins": ["stt", "llm", "tts"]})
    );
    // The greeting is said before the caller speaks; the caller's turn before the reply.
    let finals: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| {
            matches!(e.event.as_str(), "caller.transcript" | "agent.text")
                && e.json["data"]["final"] == true
        })
        .map(|e| {
            (
                e.event.as_str(),
                e.json["data"]["text"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        finals,
        [
            ("agent.text", GREETING),
            ("caller.transcript", QUESTION),
            ("agent.text", REPLY)
        ]
    );
    let audio = events
        .iter()
        .filter(|e| e.event == "agent.audio_started")
        .count();
    assert!(audio >= 2, "greeting and reply audio: {:?}", kinds(&events));
    let speech_started = index(&events, "caller.speech_started");
    let speech_stopped = index(&events, "caller.speech_stopped");
    assert!(index(&events, "agent.audio_started") < speech_started);
    assert!(speech_started < speech_stopped);
    let stopped = &events[speech_stopped].json["data"];
    let speech_ms = stopped["speech_ms"].as_u64().unwrap_or_default();
    // The question is about 1.5 s of speech.
    assert!((800..3000).contains(&speech_ms), "{stopped}");
    let latency = index(&events, "turn.latency");
    assert!(speech_stopped < latency);
    let turn = &events[latency].json["data"];
    assert_eq!(turn["turn"], 1, "{turn}");
    for field in [
        "endpointing_ms",
        "stt_final_ms",
        "first_audio_out_ms",
        "speech_ms",
    ] {
        assert!(turn[field].is_u64(), "{field} in {turn}");
    }
    let ended = &events.last().unwrap().json["data"];
    assert_eq!(ended["outcome"], "completed", "{ended}");
    assert!(
        ended["frames_in"].as_u64().unwrap_or_default() > 100,
        "{ended}"
    );
    assert!(
        ended["frames_out"].as_u64().unwrap_or_default() > 50,
        "{ended}"
    );
    assert!(ended["first_audio_ms"].is_u64(), "{ended}");
    Ok(())
}

/// A client that drops the feed mid-call and reconnects with `Last-Event-ID` gets every event it
/// missed, none twice: its two halves put together are the whole feed another client saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_with_last_event_id_resumes_without_loss() -> anyhow::Result<()> {
    let gw = Gateway::start(&write_config(&config())?).await?;
    let mut whole = open(&gw.url, "?call_sid=CA1", None).await?;
    let mut first = open(&gw.url, "?call_sid=CA1", None).await?;
    let script = script()?;
    let duration = Duration::from_millis(script.len() as u64 * 20);
    let url = gw.url.clone();
    let call = tokio::spawn(async move { phone::call(&url, json!({}), script, duration).await });
    // The first client leaves once the caller starts speaking.
    let mut halves = read_until(&mut first, "caller.speech_started").await?;
    let last = halves.last().and_then(|e| e.id.clone()).unwrap();
    drop(first);
    // Events go on while it is away.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut second = open(&gw.url, "?call_sid=CA1", Some(&last)).await?;
    halves.extend(read_until(&mut second, "call.ended").await?);
    let whole = read_until(&mut whole, "call.ended").await?;
    call.await??;
    let ids = |events: &[Received]| -> Vec<String> {
        events.iter().filter_map(|e| e.id.clone()).collect()
    };
    assert!(
        halves.iter().all(|e| e.event != "events.lost"),
        "nothing was lost"
    );
    assert_eq!(ids(&halves), ids(&whole));
    assert!(whole.len() > 8, "{:?}", kinds(&whole));

    // An id older than anything buffered, from another run: everything buffered, told as lost.
    let mut stale = open(&gw.url, "?call_sid=CA1", Some("00000000-5")).await?;
    let first = tokio::time::timeout(Duration::from_secs(5), stale.next())
        .await?
        .unwrap();
    assert_eq!(first.event, "events.lost");
    assert!(first.json["missed"].as_u64().unwrap_or_default() >= 1);
    Ok(())
}

/// The feed takes the operator API's tokens only; its filters are checked.
#[tokio::test]
async fn the_feed_refuses_a_wrong_token_and_a_bad_query() -> anyhow::Result<()> {
    let gw = Gateway::start(&write_config(&config())?).await?;
    let client = reqwest::Client::new();
    let url = format!("{}/events", gw.url);
    assert_eq!(client.get(&url).send().await?.status(), 401);
    let wrong = client.get(&url).bearer_auth("not-the-token").send().await?;
    assert_eq!(wrong.status(), 401);
    let long_id = "x".repeat(100);
    let bad = client
        .get(&url)
        .bearer_auth(TOKEN)
        .header("Last-Event-ID", long_id)
        .send()
        .await?;
    assert_eq!(bad.status(), 400);
    Ok(())
}
