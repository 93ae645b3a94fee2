//! The OpenAI pipeline-stage plugins (`openai-stt`, `openai-llm`, `openai-tts`) through the
//! host, each built from source as a WASM component and as a native library, against the fake
//! OpenAI HTTP server on loopback. The tests drive a `StageSession` the way the stage task does:
//! the session runs the I/O it asks for, and every event of it (`next_io_event`) goes back to
//! the session as `io`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use switchboard::config::Secret;
use switchboard::plugin::io::IoPolicy;
use switchboard::plugin::native::NativeLoader;
use switchboard::plugin::wasm::{Allocator, WasmEngine};
use switchboard::plugin::{
    AudioEncoding, AudioFormat, CallInfo, Message, Plugin, Role, SessionConfig, SessionError,
    Stage, StageInput, StageOutput, StageSession,
};
use switchboard_tests::fake_openai_http::{Failure, FakeHttpOptions, FakeOpenAiHttp, wav_pcm};
use switchboard_tests::plugin_dirs;

/// Longest a test waits for the next I/O event.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// `lib` (e.g. `openai_llm`) as a WASM component and as a native library.
async fn both(lib: &str) -> anyhow::Result<Vec<Plugin>> {
    let dirs = plugin_dirs()?;
    let engine = WasmEngine::with_allocator(Allocator::Pooling { sessions: 8 })?;
    Ok(vec![
        Plugin::Wasm(
            engine
                .load(lib, &dirs.wasm.join(format!("{lib}.wasm")))
                .await?,
        ),
        Plugin::Native(
            NativeLoader::global()
                .load(lib, &dirs.native_lib(lib))
                .await?,
        ),
    ])
}

/// A session config whose host I/O may reach the fake and holds the `api_key` secret.
fn config(fake: &FakeOpenAiHttp, settings: serde_json::Value, key: &str) -> SessionConfig {
    let mut settings = settings;
    settings["base_url"] = fake.base_url.clone().into();
    SessionConfig {
        call: CallInfo::default(),
        settings: settings.to_string(),
        greeting: None,
        io: Arc::new(IoPolicy {
            allowed_hosts: vec![fake.host_port.clone()],
            secrets: BTreeMap::from([("api_key".to_string(), Secret::new(key.into()))]),
            allow_private_destinations: false,
        }),
    }
}

/// A stage session with the call task's I/O loop around it.
struct Driven {
    session: StageSession,
    kind: &'static str,
}

impl Driven {
    async fn open(plugin: &Plugin, config: &SessionConfig) -> anyhow::Result<Self> {
        let session = plugin.open_stage(config).await?;
        Ok(Self {
            session,
            kind: plugin.kind(),
        })
    }

    /// Feeds one input (the session starts the I/O it queued, after an error too).
    async fn send(&mut self, input: StageInput) -> Result<Vec<StageOutput>, SessionError> {
        self.session.handle(input).await
    }

    /// Feeds I/O events back until `enough` holds for the outputs so far; returns the outputs
    /// of each `handle` that returned any, in order.
    async fn pump(
        &mut self,
        enough: impl Fn(&[StageOutput]) -> bool,
    ) -> Result<Vec<Vec<StageOutput>>, SessionError> {
        let mut batches = Vec::new();
        let mut all = Vec::new();
        while !enough(&all) {
            let event = tokio::time::timeout(EVENT_TIMEOUT, self.session.next_io_event())
                .await
                .unwrap_or_else(|_| panic!("{}: no I/O event; outputs so far {all:?}", self.kind));
            let out = self.send(StageInput::Io(event)).await?;
            if !out.is_empty() {
                all.extend(out.iter().cloned());
                batches.push(out);
            }
        }
        Ok(batches)
    }

    /// Feeds whatever I/O arrives within `window` and returns the outputs it caused.
    async fn drain(&mut self, window: Duration) -> Result<Vec<StageOutput>, SessionError> {
        let mut all = Vec::new();
        let deadline = tokio::time::Instant::now() + window;
        while let Ok(event) = tokio::time::timeout_at(deadline, self.session.next_io_event()).await
        {
            all.extend(self.send(StageInput::Io(event)).await?);
        }
        Ok(all)
    }
}

/// The plugin error a session call ended with.
fn plugin_error(result: Result<impl std::fmt::Debug, SessionError>) -> (String, String) {
    match result {
        Err(SessionError::Plugin(e)) => (e.kind.to_string(), e.message),
        other => panic!("expected a plugin error, got {other:?}"),
    }
}

fn has_done(out: &[StageOutput]) -> bool {
    out.contains(&StageOutput::Done)
}

fn history() -> StageInput {
    StageInput::Reply(vec![
        Message::text(Role::System, "Be brief."),
        Message::text(Role::User, "A table for two, please."),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stt_uploads_the_turn_as_a_wav_and_returns_the_transcript() -> anyhow::Result<()> {
    for plugin in both("openai_stt").await? {
        let kind = plugin.kind();
        assert_eq!(plugin.stage(), Stage::Stt, "{kind}");
        assert_eq!(
            plugin.info().input_format,
            AudioFormat {
                encoding: AudioEncoding::Pcm16,
                sample_rate: 16_000
            }
        );
        let fake = FakeOpenAiHttp::start(FakeHttpOptions::default()).await?;
        let settings = serde_json::json!({ "language": "en", "prompt": "Restaurant bookings." });
        let mut stt = Driven::open(&plugin, &config(&fake, settings, "sk-test")).await?;

        // An empty turn is answered at once, without a request.
        let out = stt.send(StageInput::EndOfTurn).await?;
        assert_eq!(
            out,
            [
                StageOutput::Transcript {
                    text: String::new(),
                    is_final: true
                },
                StageOutput::EndOfTurn
            ],
            "{kind}"
        );

        // One second of caller audio in 20 ms frames (640 bytes of PCM16 at 16 kHz).
        let audio: Vec<u8> = (0..32_000u32).map(|i| (i % 256) as u8).collect();
        for (n, frame) in audio.chunks(640).enumerate() {
            let out = stt
                .send(StageInput::Audio {
                    data: frame.to_vec(),
                    timestamp_ms: n as u64 * 20,
                })
                .await?;
            assert!(out.is_empty(), "{kind}: {out:?}");
        }
        assert!(stt.send(StageInput::EndOfTurn).await?.is_empty());
        let out: Vec<_> = stt
            .pump(|o| o.contains(&StageOutput::EndOfTurn))
            .await?
            .concat();
        assert_eq!(
            out,
            [
                StageOutput::Transcript {
                    text: "I'd like to book a table for two.".into(),
                    is_final: true
                },
                StageOutput::EndOfTurn
            ],
            "{kind}"
        );

        let requests = fake.requests();
        assert_eq!(requests.len(), 1, "{kind}: the empty turn sent nothing");
        let request = &requests[0];
        assert_eq!(request.path, "/v1/audio/transcriptions");
        assert_eq!(request.authorization.as_deref(), Some("Bearer sk-test"));
        assert!(
            request
                .content_type
                .starts_with("multipart/form-data; boundary=")
        );
        assert_eq!(
            request.field("model").as_deref(),
            Some("gpt-4o-mini-transcribe")
        );
        assert_eq!(request.field("language").as_deref(), Some("en"));
        assert_eq!(
            request.field("prompt").as_deref(),
            Some("Restaurant bookings.")
        );
        let file = request.form.iter().find(|p| p.name == "file").unwrap();
        assert_eq!(file.content_type.as_deref(), Some("audio/wav"));
        let (rate, pcm) = wav_pcm(&file.data).map_err(anyhow::Error::msg)?;
        assert_eq!(
            (rate, pcm),
            (16_000, audio),
            "{kind}: the turn's audio, untouched"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_streams_deltas_as_they_arrive() -> anyhow::Result<()> {
    for split_events in [false, true] {
        for plugin in both("openai_llm").await? {
            let kind = plugin.kind();
            assert_eq!(plugin.stage(), Stage::Llm, "{kind}");
            let fake = FakeOpenAiHttp::start(FakeHttpOptions {
                split_events,
                ..FakeHttpOptions::default()
            })
            .await?;
            let settings =
                serde_json::json!({ "model": "test-model", "temperature": 0.5, "max_tokens": 200 });
            let mut llm = Driven::open(&plugin, &config(&fake, settings, "sk-test")).await?;
            assert!(llm.send(history()).await?.is_empty());
            let batches = llm.pump(has_done).await?;
            let out = batches.concat();
            assert_eq!(
                out,
                [
                    StageOutput::TextDelta("Sure".into()),
                    StageOutput::TextDelta(", for".into()),
                    StageOutput::TextDelta(" what time".into()),
                    StageOutput::TextDelta("?".into()),
                    StageOutput::Done,
                ],
                "{kind}, split {split_events}"
            );
            assert!(
                batches.len() >= 4,
                "{kind}: deltas arrive as they stream, not at the end: {batches:?}"
            );

            let request = &fake.requests()[0];
            assert_eq!(request.path, "/v1/chat/completions");
            assert_eq!(request.authorization.as_deref(), Some("Bearer sk-test"));
            assert_eq!(request.content_type, "application/json");
            let body = request.json.as_ref().unwrap();
            assert_eq!(body["model"], "test-model");
            assert_eq!(body["stream"], true);
            assert_eq!(body["temperature"], 0.5);
            assert_eq!(body["max_tokens"], 200);
            assert_eq!(
                body["messages"],
                serde_json::json!([
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "A table for two, please."},
                ])
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_cancel_stops_the_reply_and_a_new_reply_starts_clean() -> anyhow::Result<()> {
    for plugin in both("openai_llm").await? {
        let kind = plugin.kind();
        let fake = FakeOpenAiHttp::start(FakeHttpOptions {
            deltas: (0..20).map(|n| format!("word{n} ")).collect(),
            delay: Duration::from_millis(40),
            ..FakeHttpOptions::default()
        })
        .await?;
        let mut llm =
            Driven::open(&plugin, &config(&fake, serde_json::json!({}), "sk-test")).await?;
        llm.send(history()).await?;
        let first = llm
            .pump(|o| o.iter().any(|x| matches!(x, StageOutput::TextDelta(_))))
            .await?;
        // Usually just "word0 "; a stalled machine may read the next delta in the same chunk.
        let first = first.concat();
        assert_eq!(
            first.first(),
            Some(&StageOutput::TextDelta("word0 ".into()))
        );
        assert!(
            first.iter().all(|o| matches!(o, StageOutput::TextDelta(_))),
            "{kind}: {first:?}"
        );
        assert!(llm.send(StageInput::Cancel).await?.is_empty());
        let late = llm.drain(Duration::from_millis(300)).await?;
        assert!(late.is_empty(), "{kind}: no deltas after cancel: {late:?}");
        assert_eq!(fake.finished_streams(), 0, "{kind}: the stream was cut");

        // A reply abandons the one in progress: only the second one's text arrives.
        llm.send(history()).await?;
        llm.pump(|o| !o.is_empty()).await?;
        llm.send(history()).await?;
        let out = llm.pump(has_done).await?.concat();
        let text: String = out
            .iter()
            .filter_map(|o| match o {
                StageOutput::TextDelta(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        let expected: String = (0..20).map(|n| format!("word{n} ")).collect();
        assert_eq!(
            text, expected,
            "{kind}: one whole reply, nothing of the abandoned one"
        );
        assert_eq!(fake.requests().len(), 3);
        assert_eq!(
            fake.finished_streams(),
            1,
            "{kind}: the cancelled and the abandoned streams were cut"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_upstream_error_mid_reply_is_a_plugin_error() -> anyhow::Result<()> {
    for failure in [Failure::ErrorEventAfter(2), Failure::AbortAfter(2)] {
        for plugin in both("openai_llm").await? {
            let kind = plugin.kind();
            let fake = FakeOpenAiHttp::start(FakeHttpOptions {
                failure: Some(failure.clone()),
                ..FakeHttpOptions::default()
            })
            .await?;
            let mut llm =
                Driven::open(&plugin, &config(&fake, serde_json::json!({}), "sk-test")).await?;
            llm.send(history()).await?;
            let mut deltas = Vec::new();
            let error = loop {
                let event =
                    tokio::time::timeout(EVENT_TIMEOUT, llm.session.next_io_event()).await?;
                match llm.send(StageInput::Io(event)).await {
                    Ok(out) => {
                        assert!(!has_done(&out), "{kind}: {failure:?} is not a whole reply");
                        deltas.extend(out);
                    }
                    Err(e) => break Err::<(), _>(e),
                }
            };
            assert_eq!(
                deltas,
                [
                    StageOutput::TextDelta("Sure".into()),
                    StageOutput::TextDelta(", for".into())
                ],
                "{kind}: {failure:?}"
            );
            let (error_kind, message) = plugin_error(error);
            assert_eq!(error_kind, "upstream", "{kind}: {failure:?}: {message}");
            if failure == Failure::ErrorEventAfter(2) {
                assert!(message.contains("The model is overloaded."), "{message}");
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_refused_requests_map_to_unauthorized_and_rate_limited() -> anyhow::Result<()> {
    for plugin in both("openai_llm").await? {
        let kind = plugin.kind();
        // A wrong key: the fake answers 401 with OpenAI's error object.
        let fake = FakeOpenAiHttp::start(FakeHttpOptions::default()).await?;
        let mut llm =
            Driven::open(&plugin, &config(&fake, serde_json::json!({}), "sk-wrong")).await?;
        llm.send(history()).await?;
        let (error_kind, message) = plugin_error(llm.pump(has_done).await);
        assert_eq!(error_kind, "unauthorized", "{kind}: {message}");
        assert!(message.contains("Incorrect API key provided."), "{message}");

        let fake = FakeOpenAiHttp::start(FakeHttpOptions {
            failure: Some(Failure::RateLimited { retry_after: 7 }),
            ..FakeHttpOptions::default()
        })
        .await?;
        let mut llm =
            Driven::open(&plugin, &config(&fake, serde_json::json!({}), "sk-test")).await?;
        llm.send(history()).await?;
        let (error_kind, message) = plugin_error(llm.pump(has_done).await);
        assert_eq!(
            (error_kind.as_str(), message.as_str()),
            ("rate-limited", "retry after 7 s"),
            "{kind}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tts_streams_pcm_as_it_arrives_and_ends_each_utterance() -> anyhow::Result<()> {
    for plugin in both("openai_tts").await? {
        let kind = plugin.kind();
        assert_eq!(plugin.stage(), Stage::Tts, "{kind}");
        let options = FakeHttpOptions::default();
        let speech = options.speech.clone();
        let fake = FakeOpenAiHttp::start(options).await?;
        let settings = serde_json::json!({ "voice": "coral", "instructions": "Warm." });
        let mut tts = Driven::open(&plugin, &config(&fake, settings, "sk-test")).await?;
        assert!(
            tts.send(StageInput::Text("Hello ".into()))
                .await?
                .is_empty()
        );
        assert!(
            tts.send(StageInput::Text("there.".into()))
                .await?
                .is_empty()
        );
        assert!(tts.send(StageInput::Flush).await?.is_empty());
        assert!(
            tts.send(StageInput::Text("Goodbye.".into()))
                .await?
                .is_empty()
        );
        assert!(tts.send(StageInput::Flush).await?.is_empty());
        let batches = tts
            .pump(|o| {
                o.iter()
                    .filter(|x| **x == StageOutput::UtteranceDone)
                    .count()
                    == 2
            })
            .await?;
        let out = batches.concat();

        // Audio of the first utterance, its end, audio of the second, its end.
        let ends: Vec<usize> = out
            .iter()
            .enumerate()
            .filter(|(_, o)| **o == StageOutput::UtteranceDone)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(ends[1], out.len() - 1, "{kind}");
        let audio = |outputs: &[StageOutput]| -> Vec<u8> {
            outputs
                .iter()
                .flat_map(|o| match o {
                    StageOutput::Audio { format, data } => {
                        assert_eq!(
                            *format,
                            AudioFormat {
                                encoding: AudioEncoding::Pcm16,
                                sample_rate: 24_000
                            }
                        );
                        assert_eq!(data.len() % 2, 0, "whole samples only");
                        data.clone()
                    }
                    _ => Vec::new(),
                })
                .collect()
        };
        assert_eq!(
            audio(&out[..ends[0]]),
            speech,
            "{kind}: first utterance, byte for byte"
        );
        assert_eq!(audio(&out[ends[0]..]), speech, "{kind}: second utterance");
        let audio_batches = batches
            .iter()
            .filter(|b| b.iter().any(|o| matches!(o, StageOutput::Audio { .. })))
            .count();
        assert!(audio_batches >= 4, "{kind}: audio streams chunk by chunk");

        let requests = fake.requests();
        let mut inputs: Vec<_> = requests
            .iter()
            .map(|r| {
                let body = r.json.as_ref().unwrap();
                assert_eq!(r.path, "/v1/audio/speech");
                assert_eq!(r.authorization.as_deref(), Some("Bearer sk-test"));
                assert_eq!(body["model"], "gpt-4o-mini-tts");
                assert_eq!(body["voice"], "coral");
                assert_eq!(body["instructions"], "Warm.");
                assert_eq!(body["response_format"], "pcm");
                body["input"].as_str().unwrap().to_string()
            })
            .collect();
        // Both requests are in flight at once (the second is fetched early), so they may
        // reach the server in either order; the audio above came back in order.
        inputs.sort();
        assert_eq!(inputs, ["Goodbye.", "Hello there."], "{kind}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tts_cancel_drops_queued_text_and_late_audio() -> anyhow::Result<()> {
    for plugin in both("openai_tts").await? {
        let kind = plugin.kind();
        let fake = FakeOpenAiHttp::start(FakeHttpOptions {
            delay: Duration::from_millis(40),
            speech_chunk: 1_001,
            ..FakeHttpOptions::default()
        })
        .await?;
        let mut tts =
            Driven::open(&plugin, &config(&fake, serde_json::json!({}), "sk-test")).await?;
        for text in ["One.", "Two.", "Three."] {
            tts.send(StageInput::Text(text.into())).await?;
            tts.send(StageInput::Flush).await?;
        }
        tts.pump(|o| !o.is_empty()).await?;
        tts.send(StageInput::Text("never flushed".into())).await?;
        assert!(tts.send(StageInput::Cancel).await?.is_empty());
        let late = tts.drain(Duration::from_millis(300)).await?;
        assert!(late.is_empty(), "{kind}: {late:?}");
        // The first utterance was being fetched; the second may have been prefetched (or
        // not yet, on a slow machine) when the cancel came; the third and the unflushed
        // text must never reach the server.
        let inputs: Vec<String> = fake
            .requests()
            .iter()
            .filter_map(|r| r.json.as_ref()?["input"].as_str().map(str::to_owned))
            .collect();
        assert!(inputs.iter().any(|i| i == "One."), "{kind}: {inputs:?}");
        assert!(
            inputs.iter().all(|i| i == "One." || i == "Two."),
            "{kind}: only the first two were ever sent: {inputs:?}"
        );
        assert_eq!(fake.finished_streams(), 0, "{kind}");
        // The synthesizer still works after a cancel.
        tts.send(StageInput::Text("Four.".into())).await?;
        tts.send(StageInput::Flush).await?;
        let out = tts
            .pump(|o| o.contains(&StageOutput::UtteranceDone))
            .await?;
        assert_eq!(out.concat().last(), Some(&StageOutput::UtteranceDone));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tts_server_error_is_an_upstream_error_with_the_api_message() -> anyhow::Result<()> {
    for plugin in both("openai_tts").await? {
        let kind = plugin.kind();
        let fake = FakeOpenAiHttp::start(FakeHttpOptions {
            failure: Some(Failure::ServerError(
                "The server had an error while processing your request.".into(),
            )),
            ..FakeHttpOptions::default()
        })
        .await?;
        let mut tts =
            Driven::open(&plugin, &config(&fake, serde_json::json!({}), "sk-test")).await?;
        tts.send(StageInput::Text("Hello.".into())).await?;
        tts.send(StageInput::Flush).await?;
        let (error_kind, message) =
            plugin_error(tts.pump(|o| o.contains(&StageOutput::UtteranceDone)).await);
        assert_eq!(error_kind, "upstream", "{kind}");
        assert!(
            message.contains("HTTP 500")
                && message.contains("The server had an error while processing your request."),
            "{kind}: {message}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_settings_and_unreachable_hosts_are_refused() -> anyhow::Result<()> {
    let fake = FakeOpenAiHttp::start(FakeHttpOptions::default()).await?;
    for lib in ["openai_stt", "openai_llm", "openai_tts"] {
        for plugin in both(lib).await? {
            let kind = plugin.kind();
            let bad = config(&fake, serde_json::json!({ "modle": "x" }), "sk-test");
            let (error_kind, message) = plugin_error(plugin.open_stage(&bad).await.map(|_| ()));
            assert_eq!(error_kind, "invalid-config", "{lib} {kind}");
            assert!(message.contains("modle"), "{lib} {kind}: {message}");
        }
    }
    // A base_url whose host the agent does not allow: refused at the first request.
    for plugin in both("openai_llm").await? {
        let mut config = config(&fake, serde_json::json!({}), "sk-test");
        config.io = Arc::new(IoPolicy::default());
        let mut llm = Driven::open(&plugin, &config).await?;
        let (error_kind, message) = plugin_error(llm.send(history()).await);
        assert_eq!(error_kind, "invalid-config", "{}", plugin.kind());
        assert!(message.contains("allowed_hosts"), "{message}");
    }
    Ok(())
}
