//! The speech plugin's logic, driven by the plugin test kit: the harness stands in for the host
//! and records the requests; the tests feed streamed PCM back as `io` events.

use openai_tts::{MAX_IN_FLIGHT, MAX_INPUT_CHARS, OUTPUT_FORMAT, OpenAiTts};
use switchboard_plugin_api::prelude::*;
use switchboard_plugin_api::stage::AsTts;
use switchboard_plugin_api::testing::{HostCall, StageHarness, take_host_calls};

type Call = StageHarness<AsTts<OpenAiTts>>;

thread_local! {
    /// Requests made on this thread: the test kit hands out handles 1, 2, … per thread.
    static SENT: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// The `input` of each request since the last look, with its handle.
fn requests() -> Vec<(u32, String)> {
    take_host_calls()
        .into_iter()
        .filter_map(|c| match c {
            HostCall::HttpSend(r) => {
                let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                assert_eq!(body["response_format"], "pcm");
                let id = SENT.with(|n| {
                    n.set(n.get() + 1);
                    n.get()
                });
                Some((id, body["input"].as_str().unwrap().to_string()))
            }
            _ => None,
        })
        .collect()
}

fn say(call: &mut Call, text: &str) -> Vec<TtsOutput> {
    assert!(call.send(TtsInput::Text(text.into())).unwrap().is_empty());
    call.send(TtsInput::Flush).unwrap()
}

fn io(call: &mut Call, event: IoEvent) -> Vec<TtsOutput> {
    call.send(TtsInput::Io(event)).unwrap()
}

fn head(call: &mut Call, id: u32) -> Vec<TtsOutput> {
    io(
        call,
        IoEvent::HttpHead(HttpHead {
            request: id,
            status: 200,
            headers: vec![],
        }),
    )
}

fn chunk(call: &mut Call, id: u32, data: &[u8]) -> Vec<TtsOutput> {
    io(
        call,
        IoEvent::HttpChunk(HttpChunk {
            request: id,
            data: data.to_vec(),
        }),
    )
}

fn audio(data: &[u8]) -> TtsOutput {
    TtsOutput::Audio(AudioFrame {
        format: OUTPUT_FORMAT,
        data: data.to_vec(),
        timestamp_ms: 0,
    })
}

#[test]
fn odd_chunks_carry_their_last_byte_to_the_next() {
    let mut call = Call::open("{}").unwrap();
    assert!(say(&mut call, "Hi.").is_empty());
    let (id, input) = requests().pop().unwrap();
    assert_eq!(input, "Hi.");
    head(&mut call, id);
    assert_eq!(chunk(&mut call, id, &[1, 2, 3]), [audio(&[1, 2])]);
    assert_eq!(chunk(&mut call, id, &[4]), [audio(&[3, 4])]);
    assert_eq!(chunk(&mut call, id, &[5]), []);
    assert_eq!(chunk(&mut call, id, &[6, 7, 8]), [audio(&[5, 6, 7, 8])]);
    assert_eq!(
        io(&mut call, IoEvent::HttpDone(id)),
        [TtsOutput::UtteranceDone]
    );
}

#[test]
fn the_next_utterance_is_fetched_early_and_played_in_order() {
    let mut call = Call::open("{}").unwrap();
    for text in ["One.", "Two.", "Three."] {
        assert!(say(&mut call, text).is_empty());
    }
    let sent = requests();
    assert_eq!(sent.len(), MAX_IN_FLIGHT);
    let (one, two) = (sent[0].0, sent[1].0);
    // The second streams before the first: held until the first is done.
    head(&mut call, two);
    assert!(chunk(&mut call, two, &[2, 2]).is_empty());
    assert!(io(&mut call, IoEvent::HttpDone(two)).is_empty());
    head(&mut call, one);
    assert_eq!(chunk(&mut call, one, &[1, 1]), [audio(&[1, 1])]);
    assert_eq!(
        io(&mut call, IoEvent::HttpDone(one)),
        [
            TtsOutput::UtteranceDone,
            audio(&[2, 2]),
            TtsOutput::UtteranceDone
        ]
    );
    let (three, input) = requests().pop().unwrap();
    assert_eq!(input, "Three.");
    head(&mut call, three);
    assert_eq!(
        io(&mut call, IoEvent::HttpDone(three)),
        [TtsOutput::UtteranceDone]
    );
}

#[test]
fn long_text_is_split_and_an_empty_flush_ends_at_once() {
    let mut call = Call::open("{}").unwrap();
    assert_eq!(say(&mut call, "   "), [TtsOutput::UtteranceDone]);
    assert!(requests().is_empty());
    let word = "speech ";
    let text = word.repeat(MAX_INPUT_CHARS / word.len() + 10);
    say(&mut call, &text);
    let sent = requests();
    assert_eq!(sent.len(), 2);
    assert!(
        sent.iter()
            .all(|(_, t)| t.chars().count() <= MAX_INPUT_CHARS)
    );
    assert_eq!(format!("{} {}", sent[0].1, sent[1].1), text.trim());
    head(&mut call, sent[0].0);
    assert!(
        io(&mut call, IoEvent::HttpDone(sent[0].0)).is_empty(),
        "one utterance"
    );
    head(&mut call, sent[1].0);
    assert_eq!(
        io(&mut call, IoEvent::HttpDone(sent[1].0)),
        [TtsOutput::UtteranceDone]
    );
}

#[test]
fn cancel_cancels_in_flight_requests_and_drops_late_audio() {
    let mut call = Call::open("{}").unwrap();
    say(&mut call, "One.");
    say(&mut call, "Two.");
    call.send(TtsInput::Text("unsaid".into())).unwrap();
    let ids: Vec<u32> = requests().into_iter().map(|(id, _)| id).collect();
    assert!(call.send(TtsInput::Cancel).unwrap().is_empty());
    assert_eq!(
        take_host_calls(),
        ids.iter()
            .map(|id| HostCall::Cancel(*id))
            .collect::<Vec<_>>()
    );
    head(&mut call, ids[0]);
    assert!(chunk(&mut call, ids[0], &[1, 2]).is_empty());
    assert_eq!(
        say(&mut call, ""),
        [TtsOutput::UtteranceDone],
        "the text was dropped"
    );
}

#[test]
fn errors_are_plugin_errors() {
    let mut call = Call::open("{}").unwrap();
    say(&mut call, "Hi.");
    let (id, _) = requests().pop().unwrap();
    io(
        &mut call,
        IoEvent::HttpHead(HttpHead {
            request: id,
            status: 401,
            headers: vec![],
        }),
    );
    assert!(matches!(
        call.send(TtsInput::Io(IoEvent::HttpDone(id))),
        Err(PluginError::Unauthorized(_))
    ));
    for settings in [
        r#"{"speed": 9}"#,
        r#"{"voice": ""}"#,
        r#"{"format": "mp3"}"#,
    ] {
        assert!(
            matches!(Call::open(settings), Err(PluginError::InvalidConfig(_))),
            "{settings}"
        );
    }
}
