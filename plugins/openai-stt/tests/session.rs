//! The transcription plugin's logic, driven by the plugin test kit: the harness stands in for
//! the host and records the requests; the tests feed HTTP responses back as `io` events.

use openai_stt::{MAX_TURN_MS, OpenAiStt, wav};
use switchboard_plugin_api::prelude::*;
use switchboard_plugin_api::stage::AsStt;
use switchboard_plugin_api::testing::{HostCall, StageHarness, grant_secret, take_host_calls};

type Call = StageHarness<AsStt<OpenAiStt>>;

thread_local! {
    /// Requests made on this thread: the test kit hands out handles 1, 2, … per thread.
    static SENT: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// The requests since the last look, with their handles.
fn requests() -> Vec<(u32, HttpRequest)> {
    take_host_calls()
        .into_iter()
        .filter_map(|c| match c {
            HostCall::HttpSend(r) => Some((
                SENT.with(|n| {
                    n.set(n.get() + 1);
                    n.get()
                }),
                r,
            )),
            _ => None,
        })
        .collect()
}

fn audio(call: &mut Call, bytes: &[u8]) {
    for frame in bytes.chunks(640) {
        let out = call
            .send(SttInput::Audio(AudioFrame {
                format: openai_stt::INPUT_FORMAT,
                data: frame.to_vec(),
                timestamp_ms: 0,
            }))
            .unwrap();
        assert!(out.is_empty());
    }
}

/// A whole 200 response with `body`.
fn respond(call: &mut Call, id: u32, body: &str) -> Result<Vec<SttOutput>, PluginError> {
    let mut out = call.send(SttInput::Io(IoEvent::HttpHead(HttpHead {
        request: id,
        status: 200,
        headers: vec![],
    })))?;
    out.extend(call.send(SttInput::Io(IoEvent::HttpChunk(HttpChunk {
        request: id,
        data: body.as_bytes().to_vec(),
    })))?);
    out.extend(call.send(SttInput::Io(IoEvent::HttpDone(id)))?);
    Ok(out)
}

fn final_text(text: &str) -> [SttOutput; 2] {
    [
        SttOutput::Transcript(SttTranscript {
            text: text.into(),
            is_final: true,
        }),
        SttOutput::EndOfTurn,
    ]
}

#[test]
fn the_upload_is_a_well_formed_multipart_wav() {
    grant_secret("api_key", "sk-unit");
    let mut call = Call::open(r#"{"model": "whisper-1"}"#).unwrap();
    let pcm: Vec<u8> = (0..6400u32).map(|i| (i * 3) as u8).collect();
    audio(&mut call, &pcm);
    assert!(call.send(SttInput::EndOfTurn).unwrap().is_empty());
    let (_, request) = requests().pop().unwrap();
    assert_eq!(
        request.url,
        "https://api.openai.com/v1/audio/transcriptions"
    );
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.value.clone())
    };
    assert_eq!(header("Authorization").as_deref(), Some("Bearer sk-unit"));
    let content_type = header("Content-Type").unwrap();
    let boundary = content_type
        .strip_prefix("multipart/form-data; boundary=")
        .unwrap();
    let file = wav(&pcm, 16_000);
    let mut expected = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"turn.wav\"\r\nContent-Type: audio/wav\r\n\r\n"
    )
    .into_bytes();
    expected.extend_from_slice(&file);
    expected.extend_from_slice(
        format!(
            "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\
             \r\n--{boundary}\r\nContent-Disposition: form-data; name=\"response_format\"\r\n\r\njson\
             \r\n--{boundary}--\r\n"
        )
        .as_bytes(),
    );
    assert!(request.body == expected, "multipart body differs");
    assert_eq!(&file[..4], b"RIFF");
    assert_eq!(u32::from_le_bytes(file[24..28].try_into().unwrap()), 16_000);
    assert_eq!(file.len(), 44 + pcm.len());
}

#[test]
fn turns_are_answered_in_order_even_when_responses_are_not() {
    let mut call = Call::open("{}").unwrap();
    audio(&mut call, &[1; 640]);
    call.send(SttInput::EndOfTurn).unwrap();
    audio(&mut call, &[2; 640]);
    call.send(SttInput::EndOfTurn).unwrap();
    // An empty third turn waits behind the two in flight.
    assert!(call.send(SttInput::EndOfTurn).unwrap().is_empty());
    let ids: Vec<u32> = requests().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 2);
    assert!(
        respond(&mut call, ids[1], r#"{"text":"second"}"#)
            .unwrap()
            .is_empty()
    );
    let out = respond(&mut call, ids[0], r#"{"text":" first "}"#).unwrap();
    let mut expected = final_text("first").to_vec();
    expected.extend(final_text("second"));
    expected.extend(final_text(""));
    assert_eq!(out, expected);
}

#[test]
fn a_turn_keeps_only_its_last_two_minutes() {
    let mut call = Call::open("{}").unwrap();
    let max = (16_000 * 2 * MAX_TURN_MS / 1000) as usize;
    audio(&mut call, &vec![0; max]);
    audio(&mut call, &[7; 640]);
    call.send(SttInput::EndOfTurn).unwrap();
    let (_, request) = requests().pop().unwrap();
    let file_start = request.body.windows(4).position(|w| w == b"RIFF").unwrap();
    let data_len = u32::from_le_bytes(
        request.body[file_start + 40..file_start + 44]
            .try_into()
            .unwrap(),
    );
    assert_eq!(data_len as usize, max);
    let data_end = file_start + 44 + max;
    assert_eq!(
        &request.body[data_end - 640..data_end],
        &[7; 640][..],
        "newest kept"
    );
}

#[test]
fn bad_responses_are_upstream_errors_and_hangup_cancels() {
    for body in ["not json", r#"{"txt": "x"}"#, "\u{0}"] {
        let mut call = Call::open("{}").unwrap();
        audio(&mut call, &[1; 640]);
        call.send(SttInput::EndOfTurn).unwrap();
        let (id, _) = requests().pop().unwrap();
        assert!(
            matches!(respond(&mut call, id, body), Err(PluginError::Upstream(_))),
            "{body:?}"
        );
    }
    let mut call = Call::open("{}").unwrap();
    audio(&mut call, &[1; 640]);
    call.send(SttInput::EndOfTurn).unwrap();
    let (id, _) = requests().pop().unwrap();
    call.send(SttInput::Hangup).unwrap();
    assert_eq!(take_host_calls(), [HostCall::Cancel(id)]);
}

#[test]
fn bad_settings_are_refused() {
    for settings in [
        r#"{"modle": "x"}"#,
        r#"{"model": ""}"#,
        r#"{"base_url": "ftp://x"}"#,
    ] {
        assert!(
            matches!(Call::open(settings), Err(PluginError::InvalidConfig(_))),
            "{settings}"
        );
    }
}
