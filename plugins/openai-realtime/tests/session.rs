//! The OpenAI Realtime plugin's protocol logic, driven by the plugin test kit: the harness
//! stands in for the host, records the plugin's WebSocket traffic, and feeds server events back.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::{open, ready, sent, server, session_updated};
use openai_realtime::OpenAiRealtime;
use serde_json::json;
use switchboard_plugin_api::prelude::*;
use switchboard_plugin_api::testing::{Harness, HostCall};

#[test]
fn connects_with_the_granted_key_and_sets_up_mulaw() {
    let mut call = open(r#"{"base_url": "wss://api.openai.com/v1/realtime", "voice": "cedar"}"#);
    let calls = call.take_host_calls();
    let HostCall::WsConnect { url, headers } = &calls[1] else {
        panic!("{calls:?}");
    };
    assert_eq!(calls[0], HostCall::Secret("api_key".into()));
    assert_eq!(url, "wss://api.openai.com/v1/realtime?model=gpt-realtime");
    assert_eq!(headers[0].value, "Bearer sk-unit");
    // Caller audio before the session is ready is kept, then sent in order, untouched.
    call.speak(&[1000; 160]).unwrap();
    call.send(SessionInput::Io(IoEvent::WsOpened(1))).unwrap();
    let update = &sent(&call)[0];
    assert_eq!(update["type"], "session.update");
    assert_eq!(update["session"]["audio"]["output"]["voice"], "cedar");
    assert_eq!(
        update["session"]["audio"]["input"]["format"]["type"],
        "audio/pcmu"
    );
    server(&mut call, session_updated()).unwrap();
    let events = sent(&call);
    assert_eq!(events[0]["type"], "response.create");
    assert!(
        events[0]["response"]["instructions"]
            .as_str()
            .unwrap()
            .contains("Welcome")
    );
    assert_eq!(events[1]["type"], "input_audio_buffer.append");
}

#[test]
fn barge_in_clears_then_truncates_at_heard_ms_and_drops_late_audio() {
    let mut call = open("{}");
    ready(&mut call);
    let _ = sent(&call);
    let audio = vec![0x55u8; 800];
    let delta = json!({"type": "response.output_audio.delta", "item_id": "item_9",
        "delta": BASE64.encode(&audio)});
    let out = server(&mut call, delta.clone()).unwrap();
    let SessionOutput::Play(frame) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(frame.data, audio, "μ-law bytes untouched");
    assert_eq!(frame.format.encoding, AudioEncoding::Mulaw);

    let out = server(
        &mut call,
        json!({"type": "input_audio_buffer.speech_started"}),
    )
    .unwrap();
    assert_eq!(out, vec![SessionOutput::ClearPlayback]);
    call.send(SessionInput::Interrupted(740)).unwrap();
    let truncate = &sent(&call)[0];
    assert_eq!(
        *truncate,
        json!({"type": "conversation.item.truncate", "item_id": "item_9",
            "content_index": 0, "audio_end_ms": 740})
    );
    assert!(
        server(&mut call, delta).unwrap().is_empty(),
        "late audio dropped"
    );
}

#[test]
fn transcripts_of_both_sides() {
    let mut call = open("{}");
    ready(&mut call);
    let out = server(
        &mut call,
        json!({"type": "conversation.item.input_audio_transcription.completed",
        "transcript": "what time do you open"}),
    )
    .unwrap();
    assert_eq!(
        out,
        vec![SessionOutput::UserTranscript(Transcript {
            text: "what time do you open".into(),
            is_final: true
        })]
    );
    let out = server(
        &mut call,
        json!({"type": "response.output_audio_transcript.done",
        "transcript": "At nine."}),
    )
    .unwrap();
    assert_eq!(
        out,
        vec![SessionOutput::AgentTranscript(Transcript {
            text: "At nine.".into(),
            is_final: true
        })]
    );
}

#[test]
fn wrong_audio_format_ends_the_session() {
    let mut call = open("{}");
    let err = server(
        &mut call,
        json!({"type": "session.updated", "session": {"audio": {
        "input": {"format": {"type": "audio/pcm"}}, "output": {"format": {"type": "audio/pcm"}}}}}),
    )
    .unwrap_err();
    assert!(
        matches!(&err, PluginError::Upstream(m) if m.contains("not audio/pcmu")),
        "{err:?}"
    );
}

#[test]
fn upstream_errors_and_close_end_the_session() {
    let mut call = open("{}");
    ready(&mut call);
    let err = server(
        &mut call,
        json!({"type": "error", "error": {"type": "server_error",
        "code": "internal", "message": "boom"}}),
    )
    .unwrap_err();
    assert_eq!(
        err,
        PluginError::Upstream("OpenAI error internal: boom".into())
    );
    let benign = server(
        &mut call,
        json!({"type": "error", "error": {
        "code": "response_cancel_not_active", "message": "nothing to cancel"}}),
    );
    assert!(benign.is_ok());
    let err = call
        .send(SessionInput::Io(IoEvent::WsClosed(WsClosed {
            socket: 1,
            code: 1011,
            reason: "bye".into(),
        })))
        .unwrap_err();
    assert!(
        matches!(&err, PluginError::Upstream(m) if m.contains("code 1011: bye")),
        "{err:?}"
    );
}

#[test]
fn no_key_no_call() {
    let err = Harness::<OpenAiRealtime>::open("{}").err();
    // This thread granted no secret.
    assert!(matches!(err, Some(PluginError::Unauthorized(_))), "{err:?}");
}
