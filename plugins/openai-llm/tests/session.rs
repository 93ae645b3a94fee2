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

/// The request of the last reply asked for, as JSON.
fn sent_body() -> serde_json::Value {
    let request = host_calls()
        .into_iter()
        .rev()
        .find_map(|c| match c {
            (_, HostCall::HttpSend(r)) => Some(r),
            _ => None,
        })
        .expect("a request");
    serde_json::from_slice(&request.body).unwrap()
}

fn tool(name: &str, parameters: &str) -> Tool {
    Tool {
        name: name.into(),
        description: format!("Looks up {name}."),
        parameters: parameters.into(),
    }
}

fn tool_call(id: &str, name: &str, arguments: &str) -> ToolCall {
    ToolCall {
        id: id.into(),
        name: name.into(),
        arguments: arguments.into(),
    }
}

const ORDER_SCHEMA: &str =
    r#"{"type":"object","properties":{"order":{"type":"string"}},"required":["order"]}"#;

#[test]
fn tools_are_offered_with_every_request_until_replaced() {
    let mut call = open("{}");
    call.send(LlmInput::Tools(vec![
        tool("order_status", ORDER_SCHEMA),
        Tool {
            description: String::new(),
            ..tool("hang_up", "{}")
        },
    ]))
    .unwrap();
    call.send(LlmInput::Reply(vec![Message::new(Role::User, "Hi")]))
        .unwrap();
    let body = sent_body();
    assert_eq!(
        body["tools"],
        serde_json::json!([
            {"type": "function", "function": {
                "name": "order_status", "description": "Looks up order_status.",
                "parameters": serde_json::from_str::<serde_json::Value>(ORDER_SCHEMA).unwrap()}},
            {"type": "function", "function": {"name": "hang_up", "parameters": {}}},
        ])
    );
    assert_eq!(body["tool_choice"], "auto");
    assert_eq!(body["parallel_tool_calls"], true);

    // An empty list takes them away: the request is the text-only one again.
    call.send(LlmInput::Tools(vec![])).unwrap();
    call.send(LlmInput::Reply(vec![Message::new(Role::User, "Hi")]))
        .unwrap();
    let body = sent_body();
    for key in ["tools", "tool_choice", "parallel_tool_calls"] {
        assert!(body.get(key).is_none(), "{key} sent without tools: {body}");
    }
}

#[test]
fn a_tool_whose_parameters_are_not_a_schema_object_is_refused() {
    let mut call = open("{}");
    for parameters in ["", "not json", "[1]", "\"object\""] {
        let Err(PluginError::InvalidConfig(e)) =
            call.send(LlmInput::Tools(vec![tool("order_status", parameters)]))
        else {
            panic!("{parameters:?} accepted");
        };
        assert!(e.contains("order_status"), "{e}");
    }
}

/// The continuation after tool calls: the assistant message that asked for them (content null
/// when it said nothing), then one tool message per result, in the host's order.
#[test]
fn the_history_maps_calls_and_results_to_the_api_shape() {
    let mut call = open("{}");
    call.send(LlmInput::Tools(vec![tool("order_status", ORDER_SCHEMA)]))
        .unwrap();
    let asked = |content: &str| Message {
        tool_calls: vec![
            tool_call("call_a", "order_status", r#"{"order":"1042"}"#),
            tool_call("call_b", "order_status", r#"{"order":"7"}"#),
        ],
        ..Message::new(Role::Assistant, content)
    };
    let result = |id: &str, content: &str| Message {
        tool_call_id: Some(id.into()),
        ..Message::new(Role::Tool, content)
    };
    for content in ["", "Let me check."] {
        call.send(LlmInput::Reply(vec![
            Message::new(Role::System, "Be brief."),
            Message::new(Role::User, "Where are orders 1042 and 7?"),
            asked(content),
            result("call_a", r#"{"status":"shipped"}"#),
            result("call_b", r#"{"error": "no such order"}"#),
        ]))
        .unwrap();
        let content = if content.is_empty() {
            serde_json::Value::Null
        } else {
            content.into()
        };
        assert_eq!(
            sent_body()["messages"],
            serde_json::json!([
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Where are orders 1042 and 7?"},
                {"role": "assistant", "content": content, "tool_calls": [
                    {"id": "call_a", "type": "function",
                     "function": {"name": "order_status", "arguments": "{\"order\":\"1042\"}"}},
                    {"id": "call_b", "type": "function",
                     "function": {"name": "order_status", "arguments": "{\"order\":\"7\"}"}},
                ]},
                {"role": "tool", "tool_call_id": "call_a", "content": "{\"status\":\"shipped\"}"},
                {"role": "tool", "tool_call_id": "call_b", "content": "{\"error\": \"no such order\"}"},
            ])
        );
    }
    assert!(matches!(
        call.send(LlmInput::Reply(vec![Message::new(Role::Tool, "{}")])),
        Err(PluginError::Unsupported(m)) if m.contains("id")
    ));
}

/// One SSE event of a tool-call delta (and an optional finish reason).
fn tool_delta(calls: serde_json::Value) -> String {
    let chunk = serde_json::json!({
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"tool_calls": calls}, "finish_reason": null}],
    });
    format!("data: {chunk}\n\n")
}

const TOOL_FINISH: &str =
    "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n";

/// A reply that says a few words, then calls two tools in parallel, their arguments cut into
/// fragments (as OpenAI streams them: id, type and name first, then argument pieces).
fn parallel_stream() -> String {
    let first = |index: u32, id: &str, name: &str| {
        tool_delta(serde_json::json!([{
            "index": index, "id": id, "type": "function",
            "function": {"name": name, "arguments": ""},
        }]))
    };
    let args = |index: u32, fragment: &str| {
        tool_delta(serde_json::json!([{"index": index, "function": {"arguments": fragment}}]))
    };
    [
        delta("Let me check."),
        first(0, "call_a", "order_status"),
        args(0, "{\"ord"),
        args(0, "er\": \"10"),
        args(0, "42\"}"),
        first(1, "call_b", "weather"),
        args(1, "{\"city\":"),
        args(1, " \"Oslo\"}"),
        TOOL_FINISH.into(),
        "data: [DONE]\n\n".into(),
    ]
    .concat()
}

#[test]
fn streamed_tool_calls_are_assembled_whole_in_index_order_wherever_the_stream_is_cut() {
    let stream = parallel_stream();
    let expected = [
        LlmOutput::TextDelta("Let me check.".into()),
        LlmOutput::ToolCall(tool_call("call_a", "order_status", r#"{"order": "1042"}"#)),
        LlmOutput::ToolCall(tool_call("call_b", "weather", r#"{"city": "Oslo"}"#)),
        LlmOutput::Done,
    ];
    for cut in 0..stream.len() {
        let mut call = open("{}");
        call.send(LlmInput::Tools(vec![tool("order_status", ORDER_SCHEMA)]))
            .unwrap();
        let id = reply(&mut call);
        head(&mut call, id, 200).unwrap();
        let mut out = chunk(&mut call, id, &stream[..cut]).unwrap();
        out.extend(chunk(&mut call, id, &stream[cut..]).unwrap());
        out.extend(io(&mut call, IoEvent::HttpDone(id)).unwrap());
        assert_eq!(out, expected, "cut at {cut}");
    }
}

/// The calls go out at the finish reason, `done` at `[DONE]`; a server that sends `[DONE]`
/// without a finish reason still gets its calls out, before `done`.
#[test]
fn calls_go_out_at_the_finish_reason_or_at_done() {
    let mut call = open("{}");
    let id = reply(&mut call);
    head(&mut call, id, 200).unwrap();
    let one = tool_delta(serde_json::json!([{
        "index": 0, "id": "call_1", "type": "function",
        "function": {"name": "hang_up", "arguments": "{}"},
    }]));
    assert!(chunk(&mut call, id, &one).unwrap().is_empty());
    let hang_up = LlmOutput::ToolCall(tool_call("call_1", "hang_up", "{}"));
    assert_eq!(
        chunk(&mut call, id, TOOL_FINISH).unwrap(),
        std::slice::from_ref(&hang_up)
    );
    assert_eq!(
        chunk(&mut call, id, "data: [DONE]\n\n").unwrap(),
        [LlmOutput::Done]
    );

    let id = reply(&mut call);
    head(&mut call, id, 200).unwrap();
    chunk(&mut call, id, &one).unwrap();
    assert_eq!(
        chunk(&mut call, id, "data: [DONE]\n\n").unwrap(),
        [hang_up, LlmOutput::Done]
    );
}

#[test]
fn malformed_tool_call_deltas_are_upstream_errors_not_panics() {
    for calls in [
        serde_json::json!({"index": 0}),
        serde_json::json!([{"id": "call_1"}]),
        serde_json::json!([{"index": 0, "function": {"arguments": 5}}]),
        serde_json::json!([{"index": 0, "type": "custom", "id": "c"}]),
    ] {
        let mut call = open("{}");
        let id = reply(&mut call);
        head(&mut call, id, 200).unwrap();
        assert!(
            matches!(
                chunk(&mut call, id, &tool_delta(calls.clone())),
                Err(PluginError::Upstream(m)) if m.contains("tool")
            ),
            "{calls}"
        );
    }
    // A call that never got a name fails when the reply ends.
    let mut call = open("{}");
    let id = reply(&mut call);
    head(&mut call, id, 200).unwrap();
    chunk(
        &mut call,
        id,
        &tool_delta(serde_json::json!([{"index": 0, "id": "c", "function": {"arguments": "{}"}}])),
    )
    .unwrap();
    assert!(matches!(
        chunk(&mut call, id, TOOL_FINISH),
        Err(PluginError::Upstream(m)) if m.contains("function.name")
    ));
}
