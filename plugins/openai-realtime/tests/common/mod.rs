//! What the plugin's tests share: a session opened through the plugin test kit (the harness
//! stands in for the host and records the plugin's WebSocket traffic) and server events fed back.

use openai_realtime::OpenAiRealtime;
use serde_json::{Value, json};
use switchboard_plugin_api::prelude::*;
use switchboard_plugin_api::testing::{Harness, HostCall};

/// A session with `settings`, the key granted and the agent's greeting "Welcome".
pub fn open(settings: &str) -> Harness<OpenAiRealtime> {
    Harness::<OpenAiRealtime>::with_secret("api_key", "sk-unit");
    let mut config = Harness::<OpenAiRealtime>::config(settings);
    config.greeting = Some("Welcome".into());
    Harness::open_with(config).unwrap()
}

/// The JSON events the plugin sent on its socket since the last call.
pub fn sent(call: &Harness<OpenAiRealtime>) -> Vec<Value> {
    call.take_host_calls()
        .into_iter()
        .filter_map(|c| match c {
            HostCall::WsSend {
                message: Payload::Text(t),
                ..
            } => serde_json::from_str(&t).ok(),
            _ => None,
        })
        .collect()
}

/// Feeds one server event to the plugin.
pub fn server(
    call: &mut Harness<OpenAiRealtime>,
    event: Value,
) -> Result<Vec<SessionOutput>, PluginError> {
    call.send(SessionInput::Io(IoEvent::WsMessage(WsMessage {
        socket: 1,
        message: Payload::Text(event.to_string()),
    })))
}

/// The server's `session.updated` confirming μ-law both ways.
pub fn session_updated() -> Value {
    json!({"type": "session.updated", "session": {"audio": {
        "input": {"format": {"type": "audio/pcmu"}},
        "output": {"format": {"type": "audio/pcmu"}}}}})
}

/// Opens the socket and confirms the session.
pub fn ready(call: &mut Harness<OpenAiRealtime>) {
    call.send(SessionInput::Io(IoEvent::WsOpened(1))).unwrap();
    server(call, session_updated()).unwrap();
}
