//! Function calling, driven by the plugin test kit with the server's events in the order the
//! real API sends them: tools declared in `session.update`, each function call output once,
//! results sent back and spoken once per response, never while a response is in progress.

mod common;

use common::{open, ready, sent, server};
use openai_realtime::OpenAiRealtime;
use serde_json::{Value, json};
use switchboard_plugin_api::prelude::*;
use switchboard_plugin_api::testing::Harness;

fn lookup_order() -> Tool {
    Tool {
        name: "lookup_order".into(),
        description: "Finds an order by its number".into(),
        parameters:
            r#"{"type":"object","properties":{"order":{"type":"string"}},"required":["order"]}"#
                .into(),
    }
}

fn opening_hours() -> Tool {
    Tool {
        name: "opening_hours".into(),
        description: "Today's opening hours".into(),
        parameters: r#"{"type":"object","properties":{}}"#.into(),
    }
}

/// A session with the socket open, confirmed, and its setup traffic taken.
fn live() -> Harness<OpenAiRealtime> {
    let mut call = open("{}");
    ready(&mut call);
    let _ = sent(&call);
    call
}

fn feed(call: &mut Harness<OpenAiRealtime>, events: Vec<Value>) -> Vec<SessionOutput> {
    events
        .into_iter()
        .flat_map(|e| server(call, e).unwrap())
        .collect()
}

fn created(response: &str) -> Value {
    json!({"type": "response.created", "response": {"id": response, "status": "in_progress"}})
}

fn done(response: &str, status: &str) -> Value {
    json!({"type": "response.done", "response": {"id": response, "status": status}})
}

/// The events of one function-call item of `response` at `index`, from `output_item.added`
/// to `output_item.done`, both done events included.
fn function_call(
    response: &str,
    index: usize,
    call_id: &str,
    name: &str,
    args: &str,
) -> Vec<Value> {
    let item = format!("fc_{response}_{index}");
    let (head, tail) = args.split_at(args.len() / 2);
    let base = json!({"response_id": response, "item_id": item, "output_index": index,
        "call_id": call_id});
    let with = |kind: &str, extra: Value| {
        let mut event = base.clone();
        event["type"] = json!(kind);
        for (k, v) in extra.as_object().unwrap() {
            event[k] = v.clone();
        }
        event
    };
    let item_json = |status: &str, arguments: &str| {
        json!({"id": item, "type": "function_call", "status": status, "name": name,
            "call_id": call_id, "arguments": arguments})
    };
    vec![
        json!({"type": "response.output_item.added", "response_id": response,
            "output_index": index, "item": item_json("in_progress", "")}),
        with(
            "response.function_call_arguments.delta",
            json!({"delta": head}),
        ),
        with(
            "response.function_call_arguments.delta",
            json!({"delta": tail}),
        ),
        with(
            "response.function_call_arguments.done",
            json!({"name": name, "arguments": args}),
        ),
        json!({"type": "response.output_item.done", "response_id": response,
            "output_index": index, "item": item_json("completed", args)}),
    ]
}

/// A whole response of function calls `(call_id, name, arguments)`, from `response.created`
/// to `response.done`.
fn calls_response(response: &str, calls: &[(&str, &str, &str)]) -> Vec<Value> {
    let mut events = vec![created(response)];
    for (index, (call_id, name, args)) in calls.iter().enumerate() {
        events.extend(function_call(response, index, call_id, name, args));
    }
    events.push(done(response, "completed"));
    events
}

fn tool_calls(out: &[SessionOutput]) -> Vec<ToolCall> {
    out.iter()
        .filter_map(|o| match o {
            SessionOutput::ToolCall(call) => Some(call.clone()),
            _ => None,
        })
        .collect()
}

/// Feeds the host's result for `id`; returns what the plugin sent.
fn answer(call: &mut Harness<OpenAiRealtime>, id: &str, outcome: ToolOutcome) -> Vec<Value> {
    call.send(SessionInput::ToolResult(ToolResult {
        id: id.into(),
        outcome,
    }))
    .unwrap();
    sent(call)
}

fn output_item(call_id: &str, output: &str) -> Value {
    json!({"type": "conversation.item.create", "item": {"type": "function_call_output",
        "call_id": call_id, "output": output}})
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[test]
fn tools_sent_before_the_socket_opens_go_in_the_first_session_update() {
    let mut call = open("{}");
    let bad = Tool {
        name: "broken".into(),
        description: "Its schema is not JSON".into(),
        parameters: "{not json".into(),
    };
    call.send(SessionInput::Tools(vec![lookup_order(), bad]))
        .unwrap();
    assert!(
        sent(&call).is_empty(),
        "nothing sent before the socket opens"
    );
    call.send(SessionInput::Io(IoEvent::WsOpened(1))).unwrap();
    let events = sent(&call);
    assert_eq!(
        types(&events),
        ["session.update"],
        "one update, tools included"
    );
    let session = &events[0]["session"];
    assert_eq!(session["type"], "realtime");
    assert_eq!(session["audio"]["input"]["format"]["type"], "audio/pcmu");
    assert_eq!(session["tool_choice"], "auto");
    assert_eq!(
        session["tools"],
        json!([{"type": "function", "name": "lookup_order",
            "description": "Finds an order by its number",
            "parameters": {"type": "object", "properties": {"order": {"type": "string"}},
                "required": ["order"]}}]),
        "parameters parsed into an object; a tool without a valid schema left out"
    );
}

#[test]
fn a_session_without_tools_declares_none() {
    let mut call = open("{}");
    call.send(SessionInput::Io(IoEvent::WsOpened(1))).unwrap();
    let session = &sent(&call)[0]["session"];
    assert!(session.get("tools").is_none(), "{session}");
    assert!(session.get("tool_choice").is_none(), "{session}");
}

#[test]
fn tools_that_change_mid_call_replace_the_declared_ones() {
    let mut call = live();
    call.send(SessionInput::Tools(vec![lookup_order()]))
        .unwrap();
    let events = sent(&call);
    assert_eq!(types(&events), ["session.update"]);
    let session = &events[0]["session"];
    assert_eq!(session["type"], "realtime");
    assert_eq!(session["tool_choice"], "auto");
    assert_eq!(session["tools"][0]["name"], "lookup_order");
    assert!(
        session.get("audio").is_none(),
        "the audio setup is not sent again mid-call: {session}"
    );

    call.send(SessionInput::Tools(vec![lookup_order()]))
        .unwrap();
    assert!(sent(&call).is_empty(), "the same tools again: no update");

    call.send(SessionInput::Tools(vec![lookup_order(), opening_hours()]))
        .unwrap();
    let tools = &sent(&call)[0]["session"]["tools"];
    assert_eq!(tools[0]["name"], "lookup_order");
    assert_eq!(tools[1]["name"], "opening_hours");
    assert_eq!(
        tools[1]["parameters"],
        json!({"type": "object", "properties": {}})
    );

    call.send(SessionInput::Tools(Vec::new())).unwrap();
    assert_eq!(
        sent(&call)[0]["session"]["tools"],
        json!([]),
        "tools withdrawn"
    );
}

#[test]
fn both_done_events_of_a_call_make_one_tool_call() {
    let mut call = live();
    let events = calls_response("resp_1", &[("call_a", "lookup_order", r#"{"order":"42"}"#)]);
    let out = feed(&mut call, events);
    assert_eq!(
        out,
        vec![SessionOutput::ToolCall(ToolCall {
            id: "call_a".into(),
            name: "lookup_order".into(),
            arguments: r#"{"order":"42"}"#.into(),
        })],
        "exactly one tool call, nothing else"
    );
    assert!(sent(&call).is_empty(), "nothing to send until the result");

    // A server that sends only `output_item.done` (no `arguments.done`) is heard too, and an
    // item cut short is not a call.
    let mut events = function_call("resp_2", 0, "call_b", "opening_hours", "{}");
    events.remove(3);
    let mut cut = function_call("resp_2", 1, "call_c", "lookup_order", r#"{"order":"7"}"#);
    cut.truncate(3);
    cut.push(
        json!({"type": "response.output_item.done", "response_id": "resp_2",
        "output_index": 1, "item": {"id": "fc_resp_2_1", "type": "function_call",
        "status": "incomplete", "name": "lookup_order", "call_id": "call_c", "arguments": ""}}),
    );
    events.extend(cut);
    let calls = tool_calls(&feed(&mut call, events));
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].id, "call_b");
}

#[test]
fn a_result_goes_back_as_function_call_output_then_the_model_speaks() {
    let mut call = live();
    let events = calls_response("resp_1", &[("call_a", "lookup_order", r#"{"order":"42"}"#)]);
    feed(&mut call, events);

    let events = answer(
        &mut call,
        "call_a",
        ToolOutcome::Output(r#"{"status":"shipped"}"#.into()),
    );
    assert_eq!(events[0], output_item("call_a", r#"{"status":"shipped"}"#));
    assert_eq!(events[1]["type"], "response.create");
    assert_eq!(events.len(), 2);

    // A failure reaches the model as a JSON error it can talk about.
    feed(
        &mut call,
        calls_response("resp_2", &[("call_b", "opening_hours", "{}")]),
    );
    let events = answer(&mut call, "call_b", ToolOutcome::Error("timed out".into()));
    assert_eq!(events[0], output_item("call_b", r#"{"error":"timed out"}"#));
    assert_eq!(
        types(&events),
        ["conversation.item.create", "response.create"]
    );

    // A result nobody waits for (answered already) is dropped, not sent to fail upstream.
    assert!(answer(&mut call, "call_b", ToolOutcome::Output("{}".into())).is_empty());
}

#[test]
fn parallel_calls_get_one_reply_after_the_last_result() {
    let mut call = live();
    let events = calls_response(
        "resp_1",
        &[
            ("call_a", "lookup_order", r#"{"order":"42"}"#),
            ("call_b", "opening_hours", "{}"),
        ],
    );
    let calls = tool_calls(&feed(&mut call, events));
    let ids: Vec<_> = calls.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["call_a", "call_b"]);

    // Each output goes at once; the reply only after both.
    let first = answer(
        &mut call,
        "call_b",
        ToolOutcome::Output(r#""9 to 5""#.into()),
    );
    assert_eq!(first, vec![output_item("call_b", r#""9 to 5""#)]);
    let last = answer(&mut call, "call_a", ToolOutcome::Output("{}".into()));
    assert_eq!(
        types(&last),
        ["conversation.item.create", "response.create"]
    );
}

#[test]
fn a_result_during_a_response_waits_for_its_end() {
    let mut call = live();
    // A fast tool: its result arrives before the response that called it is done, while the
    // model may still make another call in that response.
    feed(&mut call, vec![created("resp_1")]);
    let calls = tool_calls(&feed(
        &mut call,
        function_call("resp_1", 0, "call_a", "opening_hours", "{}"),
    ));
    assert_eq!(calls.len(), 1);
    let events = answer(
        &mut call,
        "call_a",
        ToolOutcome::Output(r#""9 to 5""#.into()),
    );
    assert_eq!(
        types(&events),
        ["conversation.item.create"],
        "no reply while resp_1 runs"
    );
    let create = feed(&mut call, vec![done("resp_1", "completed")]);
    assert!(create.is_empty());
    assert_eq!(
        types(&sent(&call)),
        ["response.create"],
        "the reply at response.done"
    );

    // A result that arrives while another response (the caller's next turn) is in progress.
    feed(&mut call, vec![created("resp_2")]);
    let mut events = function_call("resp_2", 0, "call_b", "lookup_order", r#"{"order":"1"}"#);
    events.push(done("resp_2", "completed"));
    events.push(created("resp_3"));
    feed(&mut call, events);
    let events = answer(&mut call, "call_b", ToolOutcome::Output("{}".into()));
    assert_eq!(types(&events), ["conversation.item.create"]);
    feed(&mut call, vec![done("resp_3", "completed")]);
    assert_eq!(types(&sent(&call)), ["response.create"]);
}

#[test]
fn barge_in_during_a_tool_call_keeps_the_result_and_its_reply() {
    let mut call = live();
    // The model says it is looking, and calls the tool in the same response.
    feed(&mut call, vec![created("resp_1")]);
    let out = server(
        &mut call,
        json!({"type": "response.output_audio.delta", "response_id": "resp_1",
            "item_id": "msg_1", "delta": "VVVVVVVV"}),
    )
    .unwrap();
    assert!(matches!(out[0], SessionOutput::Play(_)));
    let calls = tool_calls(&feed(
        &mut call,
        function_call("resp_1", 1, "call_a", "lookup_order", r#"{"order":"42"}"#),
    ));
    assert_eq!(calls.len(), 1);

    // The caller talks over it: playback cleared, the reply truncated, the response cancelled
    // by the server; the caller's turn gets a response of its own.
    let out = server(
        &mut call,
        json!({"type": "input_audio_buffer.speech_started"}),
    )
    .unwrap();
    assert_eq!(out, vec![SessionOutput::ClearPlayback]);
    call.send(SessionInput::Interrupted(120)).unwrap();
    feed(
        &mut call,
        vec![
            done("resp_1", "cancelled"),
            json!({"type": "input_audio_buffer.speech_stopped"}),
            created("resp_2"),
        ],
    );
    let truncate = sent(&call);
    assert_eq!(types(&truncate), ["conversation.item.truncate"]);

    // The result arrives during the caller's turn's response: it still reaches the model, and
    // the model still speaks it once that response is over.
    let output = answer(
        &mut call,
        "call_a",
        ToolOutcome::Output(r#"{"status":"shipped"}"#.into()),
    );
    assert_eq!(
        output,
        vec![output_item("call_a", r#"{"status":"shipped"}"#)]
    );
    feed(&mut call, vec![done("resp_2", "completed")]);
    let reply = sent(&call);
    assert_eq!(types(&reply), ["response.create"]);
    let all: Vec<Value> = [truncate, output, reply].concat();
    assert!(
        !types(&all).contains(&"response.cancel"),
        "nothing the plugin owes is cancelled"
    );
}

#[test]
fn a_reply_the_server_refuses_is_asked_for_again_after_the_active_response() {
    let mut call = live();
    feed(
        &mut call,
        calls_response("resp_1", &[("call_a", "opening_hours", "{}")]),
    );
    let events = answer(&mut call, "call_a", ToolOutcome::Output("{}".into()));
    let event_id = events[1]["event_id"].as_str().unwrap().to_string();

    // The caller's turn started a response first; ours is refused.
    let out = feed(
        &mut call,
        vec![
            created("resp_2"),
            json!({"type": "error", "error": {"type": "invalid_request_error",
                "code": "conversation_already_has_active_response",
                "message": "Conversation already has an active response", "event_id": event_id}}),
        ],
    );
    assert!(out.is_empty(), "not an error that ends the call");
    assert!(sent(&call).is_empty());
    feed(&mut call, vec![done("resp_2", "completed")]);
    assert_eq!(types(&sent(&call)), ["response.create"], "asked again");
    // Once started, no more.
    feed(
        &mut call,
        vec![created("resp_3"), done("resp_3", "completed")],
    );
    assert!(sent(&call).is_empty());
}

#[test]
fn results_of_two_responses_are_spoken_separately() {
    let mut call = live();
    // A slow call of one response and a fast one of the next: the fast one is spoken without
    // waiting for the slow one.
    let mut events = calls_response(
        "resp_1",
        &[("call_slow", "lookup_order", r#"{"order":"1"}"#)],
    );
    events.extend(calls_response(
        "resp_2",
        &[("call_fast", "opening_hours", "{}")],
    ));
    assert_eq!(tool_calls(&feed(&mut call, events)).len(), 2);
    let events = answer(&mut call, "call_fast", ToolOutcome::Output("{}".into()));
    assert_eq!(
        types(&events),
        ["conversation.item.create", "response.create"]
    );

    // The slow result arrives before that reply started: it waits for the reply to end.
    let events = answer(&mut call, "call_slow", ToolOutcome::Output("{}".into()));
    assert_eq!(types(&events), ["conversation.item.create"]);
    feed(&mut call, vec![created("resp_3")]);
    assert!(sent(&call).is_empty());
    feed(&mut call, vec![done("resp_3", "completed")]);
    assert_eq!(types(&sent(&call)), ["response.create"]);
}
