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
        Message {
            role: Role::System,
            content: "Be brief.".into(),
        },
        Message {
            role: Role::User,
            content: said.into(),
        },
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
