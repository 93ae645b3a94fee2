//! Pipeline-stage plugins through the host: the scripted language model, built from source as a
//! WASM component and as a native library, loaded by the host and driven through its
//! `StageSession` as the pipeline orchestrator will drive it.

use std::sync::Arc;

use switchboard::plugin::native::NativeLoader;
use switchboard::plugin::wasm::{Allocator, WasmEngine};
use switchboard::plugin::{
    CallInfo, Message, Plugin, Role, SessionConfig, SessionError, Stage, StageInput, StageOutput,
};
use switchboard_tests::plugin_dirs;

const SCRIPT: &str = r#"{
  "intents": [{"name": "hours", "keywords": ["hours", "open"], "reply": "We open at {hours}. Goodbye."}],
  "slots": {"hours": "nine"},
  "fallback": "Sorry?"
}"#;

async fn both() -> anyhow::Result<Vec<Plugin>> {
    let dirs = plugin_dirs()?;
    let engine = WasmEngine::with_allocator(Allocator::Pooling { sessions: 8 })?;
    Ok(vec![
        Plugin::Wasm(
            engine
                .load("scripted", &dirs.wasm.join("scripted.wasm"))
                .await?,
        ),
        Plugin::Native(
            NativeLoader::global()
                .load("scripted", &dirs.native_lib("scripted"))
                .await?,
        ),
    ])
}

fn config(settings: &str) -> SessionConfig {
    SessionConfig {
        call: CallInfo::default(),
        settings: settings.into(),
        greeting: None,
        io: Arc::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_llm_replies_through_the_host_in_both_builds() -> anyhow::Result<()> {
    let mut replies = Vec::new();
    for plugin in both().await? {
        assert_eq!(plugin.stage(), Stage::Llm, "{}", plugin.kind());
        assert_eq!(plugin.info().name, "scripted");
        let mut session = plugin.open_stage(&config(SCRIPT)).await?;
        let out = session
            .handle(StageInput::Reply(vec![
                Message::text(Role::System, "Be brief."),
                Message::text(Role::User, "When do you open?"),
            ]))
            .await?;
        assert_eq!(
            out,
            vec![
                StageOutput::TextDelta("We open at nine. ".into()),
                StageOutput::TextDelta("Goodbye.".into()),
                StageOutput::Done,
            ],
            "{}",
            plugin.kind()
        );
        // A stage refuses inputs of another stage, and a realtime open.
        let wrong = session.handle(StageInput::Text("hi".into())).await;
        assert!(matches!(wrong, Err(SessionError::Contract(_))), "{wrong:?}");
        assert!(plugin.open(&config(SCRIPT)).await.is_err());
        replies.push(out);
    }
    assert_eq!(replies[0], replies[1], "same replies from both builds");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_stage_settings_are_a_plugin_error() -> anyhow::Result<()> {
    for plugin in both().await? {
        let bad = SCRIPT.replace("{hours}", "{days}");
        match plugin.open_stage(&config(&bad)).await {
            Err(SessionError::Plugin(e)) => {
                assert_eq!(e.kind, "invalid-config");
                assert!(e.message.contains("{days}"), "{}", e.message);
            }
            Err(e) => panic!("{}: {e}", plugin.kind()),
            Ok(_) => panic!("{}: opened with a bad script", plugin.kind()),
        }
    }
    Ok(())
}
