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
