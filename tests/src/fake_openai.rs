//! A fake OpenAI Realtime server: the real event protocol (GA names) over a real WebSocket on
//! loopback. It accepts a session, answers `session.update` with `session.updated`, streams reply
//! audio deltas faster than real time for the greeting (`response.create`) and for each caller
//! turn, runs a simple energy VAD on the caller's μ-law audio (emitting `speech_started`,
//! `speech_stopped` and a transcript), and records every event it received so tests can assert
//! on them. Never the product's default: only tests point a `base_url` here.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use switchboard::audio::mulaw;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// Length of each reply (ms of μ-law audio).
    pub reply_ms: u64,
    /// The audio format `session.updated` reports (`audio/pcmu` unless a test wants a mismatch).
    pub reported_format: String,
    /// Deltas of an interrupted reply still sent after `speech_started` (a real server's race).
    pub late_deltas: usize,
    /// Close the socket (1011) after this many `input_audio_buffer.append`s.
    pub close_after_appends: Option<usize>,
    /// Reply audio bytes repeat this pattern (a tone by default).
    pub reply_pattern: Vec<u8>,
}

impl Default for FakeOptions {
    fn default() -> Self {
        Self {
            reply_ms: 3000,
            reported_format: "audio/pcmu".into(),
            late_deltas: 3,
            close_after_appends: None,
            reply_pattern: tone(),
        }
    }
}

/// 20 ms of a 400 Hz tone at a quarter of full scale, μ-law.
pub fn tone() -> Vec<u8> {
    (0..160)
        .map(|i| {
            let t = f64::from(i) / 8000.0;
            mulaw::encode((8000.0 * (2.0 * std::f64::consts::PI * 400.0 * t).sin()) as i16)
        })
        .collect()
}

/// What the fake saw.
#[derive(Debug, Default, Clone)]
pub struct Record {
    /// Every client event, in order, per connection.
    pub events: Vec<Value>,
    /// The `Authorization` header of each connection.
    pub authorization: Vec<String>,
    /// The request path and query of each connection.
    pub paths: Vec<String>,
    /// Every byte of caller audio appended, in order.
    pub audio_in: Vec<u8>,
    /// When each `speech_started` was sent.
    pub speech_started_at: Vec<Instant>,
    /// When each append arrived, with the first 4 bytes of its audio (a load test's frame tag).
    pub appends: Vec<(Instant, [u8; 4])>,
}

/// A running fake server.
pub struct FakeOpenAi {
    /// `ws://127.0.0.1:PORT/v1/realtime`.
    pub url: String,
    record: Arc<Mutex<Record>>,
}

impl FakeOpenAi {
    /// Starts the fake on a loopback port.
    ///
    /// # Errors
    /// The port could not be bound.
    pub async fn start(options: FakeOptions) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("ws://{}/v1/realtime", listener.local_addr()?);
        let record = Arc::new(Mutex::new(Record::default()));
        let shared = record.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let record = shared.clone();
                let options = options.clone();
                tokio::spawn(async move {
                    let _ = connection(stream, record, options).await;
                });
            }
        });
        Ok(Self { url, record })
    }

    /// A copy of what the fake saw so far.
    pub fn record(&self) -> Record {
        self.record.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The client events of one type, in order.
    pub fn events(&self, kind: &str) -> Vec<Value> {
        self.record()
            .events
            .into_iter()
            .filter(|e| e["type"] == kind)
            .collect()
    }
}

struct Reply {
    item: String,
    sent_ms: u64,
    cancelled_late: Option<usize>,
}

async fn connection(
    stream: tokio::net::TcpStream,
    record: Arc<Mutex<Record>>,
    options: FakeOptions,
) -> anyhow::Result<()> {
    let seen = record.clone();
    // The handshake callback's error type is tungstenite's; this one never fails.
    #[allow(clippy::result_large_err)]
    let callback = move |request: &Request, response: Response| {
        if let Ok(mut r) = seen.lock() {
            r.paths.push(request.uri().to_string());
            r.authorization.push(
                request
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        Ok(response)
    };
    let mut ws = tokio_tungstenite::accept_hdr_async(stream, callback).await?;
    let send = |v: Value| Message::Text(v.to_string().into());
    ws.send(send(json!({"type": "session.created", "event_id": "ev_0",
        "session": {"type": "realtime", "id": "sess_fake"}})))
        .await?;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut reply: Option<Reply> = None;
    let mut replies = 0u32;
    let mut appends = 0usize;
    let (mut in_speech, mut quiet_ms, mut heard_ms) = (false, 0u64, 0u64);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // Stream 100 ms of reply audio per 10 ms: ten times real time, like the real API.
                let Some(r) = &mut reply else { continue };
                let done = r.sent_ms >= options.reply_ms || r.cancelled_late == Some(0);
                if done {
                    if r.cancelled_late.is_none() {
                        ws.send(send(json!({"type": "response.output_audio_transcript.done",
                            "item_id": r.item, "transcript": format!("reply {}", r.item)}))).await?;
                        ws.send(send(json!({"type": "response.done",
                            "response": {"status": "completed"}}))).await?;
                    }
                    reply = None;
                    continue;
                }
                let bytes: Vec<u8> = options.reply_pattern.iter().copied().cycle().skip((r.sent_ms * 8) as usize % options.reply_pattern.len().max(1)).take(800).collect();
                ws.send(send(json!({"type": "response.output_audio.delta", "item_id": r.item,
                    "content_index": 0, "delta": BASE64.encode(&bytes)}))).await?;
                r.sent_ms += 100;
                if let Some(n) = &mut r.cancelled_late {
                    *n -= 1;
                }
            }
            msg = ws.next() => {
                let Some(msg) = msg else { return Ok(()) };
                let Message::Text(text) = msg? else { continue };
                let event: Value = serde_json::from_str(text.as_str())?;
                if let Ok(mut r) = record.lock() {
                    r.events.push(event.clone());
                }
                match event["type"].as_str().unwrap_or_default() {
                    "session.update" => {
                        let mut session = event["session"].clone();
                        session["audio"]["input"]["format"]["type"] = json!(options.reported_format);
                        session["audio"]["output"]["format"]["type"] = json!(options.reported_format);
                        ws.send(send(json!({"type": "session.updated", "session": session}))).await?;
                    }
                    "response.create" => {
                        replies += 1;
                        reply = Some(Reply { item: format!("item_{replies}"), sent_ms: 0, cancelled_late: None });
                    }
                    "input_audio_buffer.append" => {
                        appends += 1;
                        let audio = BASE64.decode(event["audio"].as_str().unwrap_or_default())?;
                        let loud = rms(&audio) > 1000.0;
                        let ms = audio.len() as u64 / 8;
                        heard_ms += ms;
                        if let Ok(mut r) = record.lock() {
                            r.audio_in.extend_from_slice(&audio);
                            let mut tag = [0u8; 4];
                            for (t, b) in tag.iter_mut().zip(&audio) {
                                *t = *b;
                            }
                            r.appends.push((Instant::now(), tag));
                        }
                        if loud && !in_speech {
                            in_speech = true;
                            if let Ok(mut r) = record.lock() {
                                r.speech_started_at.push(Instant::now());
                            }
                            ws.send(send(json!({"type": "input_audio_buffer.speech_started",
                                "audio_start_ms": heard_ms, "item_id": format!("caller_{appends}")}))).await?;
                            if let Some(r) = &mut reply {
                                r.cancelled_late = Some(options.late_deltas);
                            }
                        }
                        if in_speech {
                            quiet_ms = if loud { 0 } else { quiet_ms + ms };
                            if quiet_ms >= 400 {
                                in_speech = false;
                                quiet_ms = 0;
                                ws.send(send(json!({"type": "input_audio_buffer.speech_stopped",
                                    "audio_end_ms": heard_ms}))).await?;
                                replies += 1;
                                ws.send(send(json!({"type": "conversation.item.input_audio_transcription.completed",
                                    "item_id": format!("caller_{appends}"), "content_index": 0,
                                    "transcript": format!("caller turn {replies}")}))).await?;
                                reply = Some(Reply { item: format!("item_{replies}"), sent_ms: 0, cancelled_late: None });
                            }
                        }
                        if options.close_after_appends == Some(appends) {
                            ws.send(Message::Close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                                code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Error,
                                reason: "fake: server error".into(),
                            }))).await?;
                            return Ok(());
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

fn rms(mulaw_bytes: &[u8]) -> f64 {
    if mulaw_bytes.is_empty() {
        return 0.0;
    }
    let sum: f64 = mulaw_bytes
        .iter()
        .map(|b| f64::from(mulaw::decode(*b)).powi(2))
        .sum();
    (sum / mulaw_bytes.len() as f64).sqrt()
}
