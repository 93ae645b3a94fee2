//! The scripted dialogue, driven by the plugin test kit as the pipeline host would drive it.

use scripted::Scripted;
use switchboard_plugin_api::prelude::*;
use switchboard_plugin_api::stage::AsLlm;
use switchboard_plugin_api::testing::StageHarness;

const SCRIPT: &str = r#"{
  "intents": [
    {"name": "hours", "keywords": ["hours", "open", "what time"], "reply": "We are open {hours}. Anything else?"},
    {"name": "address", "keywords": ["where", "address"], "reply": "We are at {address}."},
    {"name": "goodbye", "keywords": ["bye", "goodbye"], "reply": "Goodbye!"}
  ],
  "slots": {"hours": "nine to five, Monday to Friday", "address": "12 Main Street"},
  "fallback": "Sorry, I can tell you our hours or our address."
}"#;

fn ask(call: &mut StageHarness<AsLlm<Scripted>>, said: &str) -> (String, usize) {
    let history = vec![
        Message::new(Role::System, "Be brief."),
        Message::new(Role::User, said),
    ];
    let out = call.send(LlmInput::Reply(history)).unwrap();
    assert_eq!(out.last(), Some(&LlmOutput::Done), "{out:?}");
    let deltas: Vec<String> = out
        .iter()
        .filter_map(|o| match o {
            LlmOutput::TextDelta(t) => Some(t.clone()),
            _ => None,
        })
        .collect();
    (deltas.concat(), deltas.len())
}

#[test]
fn intents_answer_with_slots_filled_sentence_by_sentence() {
    let mut call = StageHarness::<AsLlm<Scripted>>::open(SCRIPT).unwrap();
    let (reply, deltas) = ask(&mut call, "Hi, what time do you OPEN tomorrow?");
    assert_eq!(
        reply,
        "We are open nine to five, Monday to Friday. Anything else?"
    );
    assert_eq!(deltas, 2, "one delta per sentence");
    assert_eq!(
        ask(&mut call, "where are you").0,
        "We are at 12 Main Street."
    );
    assert_eq!(ask(&mut call, "ok bye").0, "Goodbye!");
}

#[test]
fn no_match_gets_the_fallback_and_words_match_whole() {
    let mut call = StageHarness::<AsLlm<Scripted>>::open(SCRIPT).unwrap();
    assert_eq!(
        ask(&mut call, "do you sell bicycles").0,
        "Sorry, I can tell you our hours or our address."
    );
    // "reopen" is not "open"; "byes" is not "bye".
    assert_eq!(
        ask(&mut call, "when do you reopen").0,
        "Sorry, I can tell you our hours or our address."
    );
}

#[test]
fn cancel_and_hangup_say_nothing() {
    let mut call = StageHarness::<AsLlm<Scripted>>::open(SCRIPT).unwrap();
    assert!(call.send(LlmInput::Cancel).unwrap().is_empty());
    assert!(call.send(LlmInput::Hangup).unwrap().is_empty());
}

#[test]
fn a_reply_naming_an_unknown_slot_is_refused_at_open() {
    let bad = SCRIPT.replace("{address}", "{street}");
    let Err(PluginError::InvalidConfig(message)) = StageHarness::<AsLlm<Scripted>>::open(&bad)
    else {
        panic!("opened");
    };
    assert!(message.contains("intents.address.reply"), "{message}");
    assert!(message.contains("{street}"), "{message}");
}

const WITH_CALLER: &str = r#"{
  "intents": [
    {"name": "order", "keywords": ["order"], "reply": "Please call {phone}.",
     "caller_reply": "Your order {caller.order} is {caller.order_status}."}
  ],
  "slots": {"phone": "five five five"},
  "fallback": "Sorry?"
}"#;

/// A caller the host found in the agent's lookup file hears `caller_reply`, filled from their
/// `caller.*` parameters; an unknown caller (or one whose row lacks a column it names) hears
/// `reply`.
#[test]
fn a_known_caller_hears_the_caller_reply() {
    let open = |parameters: &[(&str, &str)]| {
        let mut config = switchboard_plugin_api::testing::config_for(
            WITH_CALLER,
            <Scripted as Llm>::describe().input_format,
        );
        config.call.parameters = parameters
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        StageHarness::<AsLlm<Scripted>>::open_with(config).unwrap()
    };
    let mut known = open(&[
        ("From", "+15005550001"),
        ("caller.order", "1234"),
        ("caller.order_status", "on its way"),
    ]);
    assert_eq!(
        ask(&mut known, "where is my order").0,
        "Your order 1234 is on its way."
    );
    let mut unknown = open(&[("From", "+15005550009")]);
    assert_eq!(
        ask(&mut unknown, "my order?").0,
        "Please call five five five."
    );
    let mut partial = open(&[("caller.order", "1234")]);
    assert_eq!(
        ask(&mut partial, "my order?").0,
        "Please call five five five."
    );
}

/// A `caller_reply` naming a slot that is neither in `slots` nor a `caller.*` one is refused at
/// open.
#[test]
fn a_caller_reply_with_an_unknown_slot_is_refused() {
    let script = WITH_CALLER.replace("{caller.order}", "{order_id}");
    let Err(PluginError::InvalidConfig(e)) = StageHarness::<AsLlm<Scripted>>::open(&script) else {
        panic!("should be refused");
    };
    assert!(e.contains("{order_id}"), "{e}");
}

const WITH_TOOL: &str = r#"{
  "intents": [
    {"name": "order", "keywords": ["order"],
     "reply": "Which order number? Say it digit by digit.",
     "tool": {"name": "order_status", "arguments": {"order": "{digits}", "shop": "{shop}"}},
     "result_reply": "Order {result.order} is {result.status}, arriving {result.delivery.eta}.",
     "error_reply": "Sorry, I could not find order {digits}."},
    {"name": "hours", "keywords": ["hours"], "reply": "We are open {hours}.",
     "tool": {"name": "opening_hours"},
     "result_reply": "Today we are open {result.today}."}
  ],
  "slots": {"hours": "nine to five", "shop": "main-street"},
  "fallback": "Sorry?"
}"#;

fn tool(name: &str) -> Tool {
    Tool {
        name: name.into(),
        description: String::new(),
        parameters: r#"{"type":"object"}"#.into(),
    }
}

/// A call of the `WITH_TOOL` script whose agent has these tools.
fn with_tools(tools: &[&str]) -> StageHarness<AsLlm<Scripted>> {
    let mut call = StageHarness::<AsLlm<Scripted>>::open(WITH_TOOL).unwrap();
    let tools = tools.iter().map(|t| tool(t)).collect();
    assert!(call.send(LlmInput::Tools(tools)).unwrap().is_empty());
    call
}

/// The caller says `said`; the reply must be one tool call then `done`.
fn calls(call: &mut StageHarness<AsLlm<Scripted>>, said: &str) -> ToolCall {
    let history = vec![
        Message::new(Role::System, "Be brief."),
        Message::new(Role::User, said),
    ];
    match call.send(LlmInput::Reply(history)).unwrap().as_slice() {
        [LlmOutput::ToolCall(c), LlmOutput::Done] => c.clone(),
        other => panic!("expected a tool call then done, got {other:?}"),
    }
}

/// The host's continuation: the turn, the assistant message with the call, and its result.
fn result_of(call: &mut StageHarness<AsLlm<Scripted>>, asked: &ToolCall, content: &str) -> String {
    let history = vec![
        Message::new(Role::System, "Be brief."),
        Message::new(Role::User, "where is my order"),
        Message {
            tool_calls: vec![asked.clone()],
            ..Message::new(Role::Assistant, "")
        },
        Message {
            tool_call_id: Some(asked.id.clone()),
            ..Message::new(Role::Tool, content)
        },
    ];
    let out = call.send(LlmInput::Reply(history)).unwrap();
    let Some((LlmOutput::Done, text)) = out.split_last() else {
        panic!("no done: {out:?}");
    };
    text.iter()
        .map(|o| match o {
            LlmOutput::TextDelta(t) => t.clone(),
            other => panic!("only text after a result, got {other:?}"),
        })
        .collect()
}

#[test]
fn an_intent_calls_its_tool_with_the_number_the_caller_spoke() {
    let mut call = with_tools(&["order_status", "opening_hours"]);
    let first = calls(&mut call, "Where is my order one zero four two?");
    assert_eq!(first.id, "call_1");
    assert_eq!(first.name, "order_status");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&first.arguments).unwrap(),
        serde_json::json!({"order": "1042", "shop": "main-street"})
    );
    let second = calls(&mut call, "and order 77-31 please");
    assert_eq!(second.id, "call_2", "ids count up within the call");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&second.arguments).unwrap()["order"],
        "7731"
    );
    // A tool without arguments is called with an empty object.
    let hours = calls(&mut call, "your hours?");
    assert_eq!(
        (hours.name.as_str(), hours.arguments.as_str()),
        ("opening_hours", "{}")
    );
}

#[test]
fn the_result_is_spoken_from_its_fields_top_level_and_nested() {
    let mut call = with_tools(&["order_status"]);
    let asked = calls(&mut call, "order one oh four two");
    let output = r#"{"order": "1042", "status": "shipped", "delivery": {"eta": "Friday"}}"#;
    assert_eq!(
        result_of(&mut call, &asked, output),
        "Order 1042 is shipped, arriving Friday."
    );
}

#[test]
fn a_failed_tool_gets_the_error_reply() {
    let mut call = with_tools(&["order_status"]);
    let asked = calls(&mut call, "order 1042");
    for content in [
        r#"{"error": "timed out after 5 s"}"#,
        "not json",
        // The output lacks a field result_reply names.
        r#"{"order": "1042", "status": "shipped"}"#,
    ] {
        assert_eq!(
            result_of(&mut call, &asked, content),
            "Sorry, I could not find order 1042.",
            "{content}"
        );
    }
    // Without an error_reply of its own, an intent says the default one.
    let mut call = with_tools(&["opening_hours"]);
    let asked = calls(&mut call, "hours");
    assert_eq!(
        result_of(&mut call, &asked, r#"{"error": "denied"}"#),
        scripted::DEFAULT_ERROR_REPLY
    );
    assert_eq!(
        result_of(&mut call, &asked, r#"{"today": "nine to noon"}"#),
        "Today we are open nine to noon."
    );
}

/// The intent's plain reply when the agent lacks the tool (not given, or taken away) or the
/// caller said no number.
#[test]
fn without_the_tool_or_a_number_the_plain_reply_is_said() {
    let mut call = with_tools(&[]);
    assert_eq!(
        ask(&mut call, "where is order 1042").0,
        "Which order number? Say it digit by digit."
    );
    let mut call = with_tools(&["order_status"]);
    assert_eq!(
        ask(&mut call, "where is my order").0,
        "Which order number? Say it digit by digit."
    );
    calls(&mut call, "order 1042");
    call.send(LlmInput::Tools(vec![tool("opening_hours")]))
        .unwrap();
    assert_eq!(
        ask(&mut call, "where is order 1042").0,
        "Which order number? Say it digit by digit."
    );
}

#[test]
fn unknown_placeholders_in_tool_settings_are_refused_at_open_by_name() {
    for (from, to, key, names) in [
        (
            "{digits}\", \"shop",
            "{digit}\", \"shop",
            "intents.order.tool.arguments.order",
            "{digit}",
        ),
        (
            "{result.status}",
            "{status} {eta}",
            "intents.order.result_reply",
            "{status}, {eta}",
        ),
        (
            "order {digits}.",
            "order {result.order}.",
            "intents.order.error_reply",
            "{result.order}",
        ),
    ] {
        let script = WITH_TOOL.replacen(from, to, 1);
        assert_ne!(script, WITH_TOOL, "{from}");
        let Err(PluginError::InvalidConfig(e)) = StageHarness::<AsLlm<Scripted>>::open(&script)
        else {
            panic!("{to} accepted");
        };
        assert!(e.contains(key) && e.contains(names), "{e}");
    }
    for (script, says) in [
        (
            WITH_TOOL.replace(
                r#""result_reply": "Today we are open {result.today}.""#,
                r#""error_reply": "x""#,
            ),
            "intents.hours.result_reply",
        ),
        (
            SCRIPT.replace(
                r#""reply": "Goodbye!""#,
                r#""reply": "Goodbye!", "result_reply": "x""#,
            ),
            "intents.goodbye.result_reply",
        ),
        (
            WITH_TOOL.replace("\"opening_hours\"", "\"opening hours\""),
            "intents.hours.tool.name",
        ),
    ] {
        let Err(PluginError::InvalidConfig(e)) = StageHarness::<AsLlm<Scripted>>::open(&script)
        else {
            panic!("accepted: {script}");
        };
        assert!(e.contains(says), "{e}");
    }
}

/// `{caller.*}` in a tool's arguments: the call is made for a caller the host found, and the
/// plain reply is said for one it did not; a result for a call the script never made gets the
/// default error reply.
#[test]
fn caller_columns_fill_tool_arguments_when_known() {
    let script = WITH_TOOL.replace("{digits}\", \"shop", "{caller.order}\", \"shop");
    let open = |parameters: &[(&str, &str)]| {
        let mut config = switchboard_plugin_api::testing::config_for(
            &script,
            <Scripted as Llm>::describe().input_format,
        );
        config.call.parameters = parameters
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut call = StageHarness::<AsLlm<Scripted>>::open_with(config).unwrap();
        call.send(LlmInput::Tools(vec![tool("order_status")]))
            .unwrap();
        call
    };
    let mut known = open(&[("caller.order", "5512")]);
    let asked = calls(&mut known, "where is my order");
    assert!(
        asked.arguments.contains(r#""order":"5512""#),
        "{}",
        asked.arguments
    );
    let mut unknown = open(&[]);
    assert_eq!(
        ask(&mut unknown, "where is my order").0,
        "Which order number? Say it digit by digit."
    );
    let stranger = ToolCall {
        id: "call_9".into(),
        ..asked
    };
    assert_eq!(
        result_of(&mut known, &stranger, r#"{"status": "shipped"}"#),
        scripted::DEFAULT_ERROR_REPLY
    );
}

#[test]
fn a_keypad_turn_chooses_the_intent_its_keys_name() {
    let settings = r#"{"intents": [
        {"name": "hours", "keywords": ["hours"], "keys": ["1"], "reply": "We are open nine to five."},
        {"name": "address", "keys": ["2"], "reply": "We are on Market Street."}],
        "fallback": "Press one for hours, two for our address."}"#;
    let mut call = StageHarness::<AsLlm<Scripted>>::open(settings).unwrap();
    let said = |call: &mut StageHarness<AsLlm<Scripted>>, text: &str| ask(call, text).0;
    assert_eq!(said(&mut call, "DTMF: 2"), "We are on Market Street.");
    assert_eq!(said(&mut call, "DTMF: 1"), "We are open nine to five.");
    assert_eq!(
        said(&mut call, "DTMF: 9"),
        "Press one for hours, two for our address."
    );
    // Speech still chooses by keywords.
    assert_eq!(
        said(&mut call, "What are your hours?"),
        "We are open nine to five."
    );
}
