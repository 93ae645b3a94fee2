//! Keypad input in pipeline agents: a key press stops the agent's reply (Twilio `clear`) and
//! the keys reach the dialogue as a caller turn (`DTMF: 1`, at `#` or after a pause), which
//! answers the intent the keys name ("press one for our opening hours").

use std::time::Duration;

use switchboard::call::{EndReason, Side};
use switchboard_tests::call_context;
use switchboard_tests::memory_socket::{self, dtmf, media, start, stop};

const SID: &str = "MZ1";

const CONFIG: &str = r#"
[plugins.stt]
path = "{plugins}/fixed_stt.wasm"
[plugins.llm]
path = "{plugins}/scripted.wasm"
[plugins.tts]
path = "{plugins}/tone_tts.wasm"

[[agents]]
name = "menu"
greeting = "Thanks for calling. Press one for our opening hours, or two for our address."

[agents.pipeline]
keypad_timeout_ms = 500
stt = { plugin = "stt", settings = { text = "" } }
tts = { plugin = "tts", settings = { ms_per_char = 50 } }
[agents.pipeline.llm]
plugin = "llm"
[agents.pipeline.llm.settings]
fallback = "Sorry, press one for our opening hours, or two for our address."
intents = [
    { name = "hours", keywords = ["hours"], keys = ["1"], reply = "We are open nine to five." },
    { name = "address", keys = ["2"], reply = "We are at 12 Market Street." },
]

[routing]
default = "menu"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_press_stops_the_reply_and_reaches_the_dialogue() -> anyhow::Result<()> {
    let ctx = call_context(CONFIG).await?;
    let (socket, mut peer) = memory_socket::pair();
    let task = tokio::spawn(switchboard::call::run(socket, ctx));
    peer.send(start(SID, serde_json::json!({}))).await?;
    peer.until("media", SID).await.expect("the greeting plays");
    // The caller presses 2 and # while the (4 s) greeting plays.
    peer.send(dtmf(SID, "2")).await?;
    peer.until("clear", SID)
        .await
        .expect("the key press stops the greeting");
    peer.send(dtmf(SID, "#")).await?;
    // The answer plays; keep the stream going meanwhile, as Twilio does.
    for chunk in 1..=100 {
        peer.send(media(SID, chunk, 0xff)).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Then 1, and a pause instead of #.
    peer.send(dtmf(SID, "1")).await?;
    for chunk in 101..=200 {
        peer.send(media(SID, chunk, 0xff)).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    peer.send(stop(SID)).await?;
    let (reason, stats) = task.await?;
    assert_eq!(reason, EndReason::Stop);
    let said: Vec<(Side, &str)> = stats
        .transcript
        .iter()
        .map(|t| (t.side, t.text.as_str()))
        .collect();
    let caller: Vec<&str> = said
        .iter()
        .filter(|(s, _)| *s == Side::Caller)
        .map(|(_, t)| *t)
        .collect();
    assert_eq!(caller, ["DTMF: 2", "DTMF: 1"], "{said:?}");
    let agent: Vec<&str> = said
        .iter()
        .filter(|(s, _)| *s == Side::Agent)
        .map(|(_, t)| *t)
        .collect();
    assert!(agent.contains(&"We are at 12 Market Street."), "{said:?}");
    assert!(agent.contains(&"We are open nine to five."), "{said:?}");
    Ok(())
}
