//! The chat-completions plugin's protocol logic, driven by the plugin test kit: the harness
//! stands in for the host and records the requests; the tests feed HTTP responses back as `io`
//! events, cut wherever a network might cut them.

use openai_llm::OpenAiLlm;
use switchboard_plugin_api::prelude::*;
use switchboard_plugin_api::stage::AsLlm;
use switchboard_plugin_api::testing::{HostCall, StageHarness, grant_secret, take_host_calls};

type Call = StageHarness<AsLlm<OpenAiLlm>>;

fn open(settings: &str) -> Call {
    grant_secret("api_key", "sk-unit");
    let call = Call::open(settings).unwrap();
    host_calls();
    call
}

thread_local! {
    /// Requests made on this thread: the test kit hands out handles 1, 2, … per thread.
    static SENT: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// The host calls since the last look, with the handle of each request.
fn host_calls() -> Vec<(Option<u32>, HostCall)> {
    take_host_calls()
        .into_iter()
        .map(|c| match c {
            HostCall::HttpSend(_) | HostCall::WsConnect { .. } | HostCall::SetTimer(_) => {
                let id = SENT.with(|n| {
                    n.set(n.get() + 1);
                    n.get()
                });
                (Some(id), c)
            }
            _ => (None, c),
        })
        .collect()
}

/// Asks for a reply; returns its request's handle.
fn reply(call: &mut Call) -> u32 {
    let out = call
        .send(LlmInput::Reply(vec![Message::new(Role::User, "Hi")]))
        .unwrap();
    assert!(out.is_empty());
    host_calls()
        .into_iter()
        .rev()
        .find_map(|(id, _)| id)
        .expect("a request")
}

fn io(call: &mut Call, event: IoEvent) -> Result<Vec<LlmOutput>, PluginError> {
    call.send(LlmInput::Io(event))
}

fn head(call: &mut Call, id: u32, status: u16) -> Result<Vec<LlmOutput>, PluginError> {
    io(
        call,
        IoEvent::HttpHead(HttpHead {
            request: id,
            status,
            headers: vec![],
        }),
    )
}

fn chunk(call: &mut Call, id: u32, data: &str) -> Result<Vec<LlmOutput>, PluginError> {
    io(
        call,
        IoEvent::HttpChunk(HttpChunk {
            request: id,
            data: data.as_bytes().to_vec(),
        }),
    )
}

fn delta(text: &str) -> String {
    format!(
        "data: {{\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{text:?}}},\"finish_reason\":null}}]}}\n\n"
    )
}

const FINISH: &str =
    "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";

#[test]
fn the_request_is_a_streamed_chat_completion_without_a_key_header_when_none_is_granted() {
    let mut call =
        Call::open(r#"{"base_url": "http://127.0.0.1:8080/v1/", "model": "llama"}"#).unwrap();
    call.send(LlmInput::Reply(vec![
        Message::new(Role::System, "Be brief."),
        Message::new(Role::Assistant, "Hello."),
    ]))
    .unwrap();
    let request = host_calls()
        .into_iter()
        .find_map(|c| match c {
            (_, HostCall::HttpSend(r)) => Some(r),
            _ => None,
        })
        .unwrap();
    assert_eq!(request.method, "POST");
    assert_eq!(request.url, "http://127.0.0.1:8080/v1/chat/completions");
    assert!(
        request.headers.iter().all(|h| h.name != "Authorization"),
        "no key granted: no header, for local servers"
    );
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "model": "llama", "stream": true,
            "messages": [{"role": "system", "content": "Be brief."},
                         {"role": "assistant", "content": "Hello."}],
        })
    );
}

#[test]
fn events_cut_anywhere_give_the_same_deltas() {
    let stream = format!(
        ": comment\r\n\r\n{}{}{FINISH}data: [DONE]\r\n\r\n",
        delta("Hel").replace('\n', "\r\n"),
        delta("lo, wörld")
    );
    for cut in 0..stream.len() {
        if !stream.is_char_boundary(cut) {
            continue;
        }
        let mut call = open("{}");
        let id = reply(&mut call);
        head(&mut call, id, 200).unwrap();
        let mut out = chunk(&mut call, id, &stream[..cut]).unwrap();
        out.extend(chunk(&mut call, id, &stream[cut..]).unwrap());
        out.extend(io(&mut call, IoEvent::HttpDone(id)).unwrap());
        assert_eq!(
            out,
            [
                LlmOutput::TextDelta("Hel".into()),
                LlmOutput::TextDelta("lo, wörld".into()),
                LlmOutput::Done
            ],
            "cut at {cut}"
        );
    }
}

#[test]
fn a_finish_reason_without_done_ends_the_reply_but_a_cut_stream_is_an_error() {
    let mut call = open("{}");
    let id = reply(&mut call);
    head(&mut call, id, 200).unwrap();
    chunk(&mut call, id, &format!("{}{FINISH}", delta("a"))).unwrap();
    assert_eq!(
        io(&mut call, IoEvent::HttpDone(id)).unwrap(),
        [LlmOutput::Done]
    );

    let id = reply(&mut call);
    head(&mut call, id, 200).unwrap();
    assert_eq!(
        chunk(&mut call, id, &delta("a")).unwrap(),
        [LlmOutput::TextDelta("a".into())]
    );
    assert!(matches!(
        io(&mut call, IoEvent::HttpDone(id)),
        Err(PluginError::Upstream(m)) if m.contains("[DONE]")
    ));
}

#[test]
fn garbage_and_errors_in_the_stream_are_upstream_errors_not_panics() {
    for garbage in [
        "data: {not json\n\n",
        "data: \u{0}\u{1}\n\n",
        "event: error\ndata: boom\n\n",
        "data: {\"error\":{\"message\":\"overloaded\"}}\n\n",
    ] {
        let mut call = open("{}");
        let id = reply(&mut call);
        head(&mut call, id, 200).unwrap();
        assert!(
            matches!(chunk(&mut call, id, garbage), Err(PluginError::Upstream(_))),
            "{garbage:?}"
        );
    }
    let mut call = open("{}");
    let id = reply(&mut call);
    head(&mut call, id, 200).unwrap();
    assert!(matches!(
        io(
            &mut call,
            IoEvent::HttpChunk(HttpChunk {
                request: id,
                data: vec![b'd', b'a', 0xFF, b'\n']
            })
        ),
        Err(PluginError::Upstream(_))
    ));
}

#[test]
fn cancel_and_a_new_reply_cancel_the_request_and_drop_its_late_events() {
    let mut call = open("{}");
    let first = reply(&mut call);
    head(&mut call, first, 200).unwrap();
    assert!(call.send(LlmInput::Cancel).unwrap().is_empty());
    assert_eq!(host_calls(), [(None, HostCall::Cancel(first))]);
    assert!(chunk(&mut call, first, &delta("late")).unwrap().is_empty());

    let second = reply(&mut call);
    call.send(LlmInput::Reply(vec![])).unwrap();
    let calls = host_calls();
    assert_eq!(
        calls[0],
        (None, HostCall::Cancel(second)),
        "the old reply is cancelled"
    );
    let third = calls[1].0.unwrap();
    head(&mut call, second, 200).unwrap();
    assert!(chunk(&mut call, second, &delta("old")).unwrap().is_empty());
    head(&mut call, third, 200).unwrap();
    assert_eq!(
        chunk(&mut call, third, &delta("new")).unwrap(),
        [LlmOutput::TextDelta("new".into())]
    );
}

#[test]
fn statuses_map_to_plugin_errors() {
    let mut call = open("{}");
    let id = reply(&mut call);
    head(&mut call, id, 503).unwrap();
    chunk(&mut call, id, r#"{"error":{"message":"Overloaded"}}"#).unwrap();
    assert_eq!(
        io(&mut call, IoEvent::HttpDone(id)),
        Err(PluginError::Upstream(
            "OpenAI chat completion: HTTP 503: Overloaded".into()
        ))
    );
    let id = reply(&mut call);
    assert!(matches!(
        io(
            &mut call,
            IoEvent::Failed(IoFailed {
                target: id,
                error: "connection refused".into()
            })
        ),
        Err(PluginError::Upstream(m)) if m.contains("connection refused")
    ));
}

#[test]
fn bad_settings_are_refused() {
    for settings in [
        r#"{"modle": "x"}"#,
        r#"{"temperature": 3}"#,
        r#"{"model": ""}"#,
        r#"{"base_url": "api.openai.com"}"#,
        "not json",
    ] {
        assert!(
            matches!(Call::open(settings), Err(PluginError::InvalidConfig(_))),
            "{settings}"
        );
    }
}
