//! A fake OpenAI Realtime server: the real event protocol (GA names) over a real WebSocket on
//! loopback. It accepts a session, answers `session.update` with `session.updated`, streams reply
//! audio deltas faster than real time for the greeting (`response.create`) and for each caller
//! turn, runs a simple energy VAD on the caller's μ-law audio (emitting `speech_started`,
//! `speech_stopped` and a transcript), and records every event it received so tests can assert
//! on them. Never the product's default: only tests point a `base_url` here.
//!
//! Responses come as the real API sends them: `response.created`, then the output, then
//! `response.done` (`completed`, or `cancelled` for a reply the caller talked over), and a
//! `response.create` while a response is in progress is refused with the real API's
//! `conversation_already_has_active_response` error. `session.updated` reports the whole session
//! as the updates so far made it (each update merged into the last).
//!
//! Function calling: [`FakeOptions::call_on_turn`] scripts the model to answer a caller turn with
//! function calls (several = parallel calls in one response), streamed in the real sequence
//! (`response.created`, per call `response.output_item.added`, two
//! `response.function_call_arguments.delta`s, `response.function_call_arguments.done`,
//! `response.output_item.done`, then `response.done`). A `function_call_output` item for one of
//! its calls is recorded ([`FakeOpenAi::function_call_outputs`]); the next `response.create` is
//! answered with audio and the transcript "The tool said: OUTPUT" (outputs joined by "; "), so a
//! test can see the answer was built from the result. An output for a `call_id` the model never
//! made gets an `error` event, as from the real API ("Tool call ID '…' not found in
//! conversation."). Every `session.update` is recorded ([`FakeOpenAi::session_updates`]).

use std::collections::BTreeMap;
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
    /// Caller turns (1 = the first, as the fake's VAD counts them) the model answers with
    /// function calls instead of speech, all made in one response. See [`Self::call_on_turn`].
    pub function_calls: BTreeMap<usize, Vec<FunctionCall>>,
}

impl Default for FakeOptions {
    fn default() -> Self {
        Self {
            reply_ms: 3000,
            reported_format: "audio/pcmu".into(),
            late_deltas: 3,
            close_after_appends: None,
            reply_pattern: tone(),
            function_calls: BTreeMap::new(),
        }
    }
}

impl FakeOptions {
    /// Scripts the model to answer the caller's `turn`-th turn (1 = the first, counted when the
    /// fake's VAD ends a turn) with `calls`, made in parallel in one response, instead of
    /// speaking. Their call ids are `call_1`, `call_2`, … in the order the fake makes them over
    /// the connection.
    #[must_use]
    pub fn call_on_turn(
        mut self,
        turn: usize,
        calls: impl IntoIterator<Item = FunctionCall>,
    ) -> Self {
        self.function_calls
            .insert(turn, calls.into_iter().collect());
        self
    }
}

/// A function call the fake's model makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionCall {
    /// The tool's name.
    pub name: String,
    /// The arguments as the model writes them: JSON text (or not, to test a client's checks).
    pub arguments: String,
}

impl FunctionCall {
    /// A call of `name` with `arguments` (JSON text).
    pub fn new(name: impl Into<String>, arguments: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            arguments: arguments.into(),
        }
    }
}

/// A function call the fake's model made, with the id it gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MadeCall {
    /// The `call_id` (`call_N`).
    pub call_id: String,
    /// The call as scripted.
    pub call: FunctionCall,
}

/// A `function_call_output` item the client sent for one of the model's calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionCallOutput {
    /// The call it answers.
    pub call_id: String,
    /// Its `output` text, as sent.
    pub output: String,
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
    /// The `session` object of every `session.update`, in order.
    pub session_updates: Vec<Value>,
    /// Every function call the model made, in order.
    pub function_calls: Vec<MadeCall>,
    /// Every accepted `function_call_output`, in order of arrival.
    pub function_call_outputs: Vec<FunctionCallOutput>,
    /// Every `error` event the fake sent, in order.
    pub errors: Vec<Value>,
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

    /// The `session` of every `session.update` received so far, in order.
    pub fn session_updates(&self) -> Vec<Value> {
        self.record().session_updates
    }

    /// The names of the tools the latest `session.update` that set `tools` declared, in order
    /// (empty if none did).
    pub fn declared_tools(&self) -> Vec<String> {
        self.session_updates()
            .iter()
            .rev()
            .find_map(|s| s["tools"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|t| t["name"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The function calls the model made so far, in order.
    pub fn function_calls(&self) -> Vec<MadeCall> {
        self.record().function_calls
    }

    /// The `function_call_output` items received so far for the model's calls, in order.
    pub fn function_call_outputs(&self) -> Vec<FunctionCallOutput> {
        self.record().function_call_outputs
    }

    /// The `error` events the fake sent so far.
    pub fn errors(&self) -> Vec<Value> {
        self.record().errors
    }
}

/// A spoken reply being streamed.
struct Reply {
    response: String,
    item: String,
    sent_ms: u64,
    cancelled_late: Option<usize>,
    /// Its transcript (`reply ITEM` unless it speaks a tool's result).
    transcript: String,
}

impl Reply {
    /// The events that end it: its transcript and `response.done`, or only `response.done`
    /// (`cancelled`) if the caller talked over it or another response replaced it.
    fn finish(&self, cut: bool) -> Vec<Value> {
        if cut || self.cancelled_late.is_some() {
            return vec![response_done(&self.response, "cancelled", json!([]))];
        }
        vec![
            json!({"type": "response.output_audio_transcript.done", "response_id": self.response,
                "item_id": self.item, "content_index": 0, "transcript": self.transcript}),
            response_done(
                &self.response,
                "completed",
                json!([{"id": self.item, "type": "message", "role": "assistant",
                    "status": "completed"}]),
            ),
        ]
    }
}

fn response_done(response: &str, status: &str, output: Value) -> Value {
    json!({"type": "response.done", "response": {"id": response, "object": "realtime.response",
        "status": status, "output": output}})
}

/// One connection's conversation: the session so far, responses and function calls.
#[derive(Default)]
struct Conversation {
    /// The session as the updates so far made it.
    session: Value,
    /// Responses so far (their ids count them).
    responses: u32,
    /// The `call_id`s of the function calls the model made on this connection.
    calls: Vec<String>,
    /// Outputs received and not yet spoken.
    unspoken: Vec<String>,
    /// Caller turns ended so far.
    turns: usize,
    /// Server events sent so far (their ids count them).
    events: u32,
}

impl Conversation {
    fn next_response(&mut self) -> String {
        self.responses += 1;
        format!("resp_{}", self.responses)
    }

    fn response_created(response: &str) -> Value {
        json!({"type": "response.created", "response": {"id": response,
            "object": "realtime.response", "status": "in_progress", "output": []}})
    }

    /// An `error` event like the real API's, recorded.
    fn error(
        &mut self,
        record: &Mutex<Record>,
        code: &str,
        message: String,
        cause: &Value,
    ) -> Value {
        self.events += 1;
        let error = json!({"type": "error", "event_id": format!("ev_err_{}", self.events),
            "error": {"type": "invalid_request_error", "code": code, "message": message,
                "param": null, "event_id": cause["event_id"]}});
        if let Ok(mut r) = record.lock() {
            r.errors.push(error.clone());
        }
        error
    }

    /// A response of function calls, the whole real sequence, with the calls recorded.
    fn function_call_response(
        &mut self,
        calls: &[FunctionCall],
        record: &Mutex<Record>,
    ) -> Vec<Value> {
        let response = self.next_response();
        let mut events = vec![Self::response_created(&response)];
        let mut output = Vec::new();
        for (index, call) in calls.iter().enumerate() {
            let call_id = format!("call_{}", self.calls.len() + 1);
            self.calls.push(call_id.clone());
            let item = |status: &str, arguments: &str| {
                json!({"id": format!("fc_{call_id}"), "object": "realtime.item",
                    "type": "function_call", "status": status, "name": call.name,
                    "call_id": call_id, "arguments": arguments})
            };
            let at = json!({"response_id": response, "item_id": format!("fc_{call_id}"),
                "output_index": index, "call_id": call_id});
            let with = |kind: &str, extra: Value| {
                let mut event = at.clone();
                event["type"] = json!(kind);
                if let (Some(event), Some(extra)) = (event.as_object_mut(), extra.as_object()) {
                    event.extend(extra.clone());
                }
                event
            };
            let mut cut = call.arguments.len() / 2;
            while !call.arguments.is_char_boundary(cut) {
                cut -= 1;
            }
            let (head, tail) = call.arguments.split_at(cut);
            events.push(
                json!({"type": "response.output_item.added", "response_id": response,
                "output_index": index, "item": item("in_progress", "")}),
            );
            events.push(with(
                "response.function_call_arguments.delta",
                json!({"delta": head}),
            ));
            events.push(with(
                "response.function_call_arguments.delta",
                json!({"delta": tail}),
            ));
            events.push(with(
                "response.function_call_arguments.done",
                json!({"name": call.name, "arguments": call.arguments}),
            ));
            events.push(
                json!({"type": "response.output_item.done", "response_id": response,
                "output_index": index, "item": item("completed", &call.arguments)}),
            );
            output.push(item("completed", &call.arguments));
            if let Ok(mut r) = record.lock() {
                r.function_calls.push(MadeCall {
                    call_id: call_id.clone(),
                    call: call.clone(),
                });
            }
        }
        events.push(response_done(&response, "completed", Value::Array(output)));
        events
    }

    /// `conversation.item.create`: a `function_call_output` for one of the model's calls is
    /// recorded and acknowledged; for an unknown `call_id`, an error. Other items are
    /// acknowledged.
    fn item_create(&mut self, event: &Value, record: &Mutex<Record>) -> Vec<Value> {
        let item = &event["item"];
        self.events += 1;
        let mut added = item.clone();
        added["id"] = json!(format!("item_out_{}", self.events));
        added["status"] = json!("completed");
        if item["type"] == "function_call_output" {
            let call_id = item["call_id"].as_str().unwrap_or_default();
            if !self.calls.iter().any(|c| c == call_id) {
                let message = format!("Tool call ID '{call_id}' not found in conversation.");
                return vec![self.error(record, "invalid_value", message, event)];
            }
            let output = item["output"].as_str().unwrap_or_default().to_string();
            self.unspoken.push(output.clone());
            if let Ok(mut r) = record.lock() {
                r.function_call_outputs.push(FunctionCallOutput {
                    call_id: call_id.to_string(),
                    output,
                });
            }
        }
        vec![
            json!({"type": "conversation.item.added", "previous_item_id": null, "item": added}),
            json!({"type": "conversation.item.done", "previous_item_id": null, "item": added}),
        ]
    }
}

/// Merges a `session.update`'s `session` into the session so far (objects key by key, anything
/// else replaced).
fn merge(into: &mut Value, update: &Value) {
    match (into.as_object_mut(), update.as_object()) {
        (Some(into), Some(update)) => {
            for (key, value) in update {
                merge(into.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        _ => *into = update.clone(),
    }
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
    let mut conversation = Conversation::default();
    let mut replies = 0u32;
    let mut appends = 0usize;
    let (mut in_speech, mut quiet_ms, mut heard_ms) = (false, 0u64, 0u64);
    loop {
        // What to send after this event: server events in order.
        let mut out: Vec<Value> = Vec::new();
        tokio::select! {
            _ = tick.tick() => {
                // Stream 100 ms of reply audio per 10 ms: ten times real time, like the real API.
                let Some(r) = &mut reply else { continue };
                let done = r.sent_ms >= options.reply_ms || r.cancelled_late == Some(0);
                if done {
                    out.extend(r.finish(false));
                    reply = None;
                } else {
                    let bytes: Vec<u8> = options.reply_pattern.iter().copied().cycle().skip((r.sent_ms * 8) as usize % options.reply_pattern.len().max(1)).take(800).collect();
                    out.push(json!({"type": "response.output_audio.delta", "response_id": r.response,
                        "item_id": r.item, "content_index": 0, "delta": BASE64.encode(&bytes)}));
                    r.sent_ms += 100;
                    if let Some(n) = &mut r.cancelled_late {
                        *n -= 1;
                    }
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
                        if let Ok(mut r) = record.lock() {
                            r.session_updates.push(event["session"].clone());
                        }
                        merge(&mut conversation.session, &event["session"]);
                        let mut session = conversation.session.clone();
                        session["audio"]["input"]["format"]["type"] = json!(options.reported_format);
                        session["audio"]["output"]["format"]["type"] = json!(options.reported_format);
                        out.push(json!({"type": "session.updated", "session": session}));
                    }
                    "response.create" => {
                        if reply.is_some() {
                            out.push(conversation.error(&record, "conversation_already_has_active_response",
                                "Conversation already has an active response in progress".into(), &event));
                        } else {
                            replies += 1;
                            let item = format!("item_{replies}");
                            let transcript = if conversation.unspoken.is_empty() {
                                format!("reply {item}")
                            } else {
                                format!("The tool said: {}", std::mem::take(&mut conversation.unspoken).join("; "))
                            };
                            let response = conversation.next_response();
                            out.push(Conversation::response_created(&response));
                            reply = Some(Reply { response, item, sent_ms: 0, cancelled_late: None, transcript });
                        }
                    }
                    "conversation.item.create" => out.extend(conversation.item_create(&event, &record)),
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
                            out.push(json!({"type": "input_audio_buffer.speech_started",
                                "audio_start_ms": heard_ms, "item_id": format!("caller_{appends}")}));
                            if let Some(r) = &mut reply {
                                r.cancelled_late = Some(options.late_deltas);
                            }
                        }
                        if in_speech {
                            quiet_ms = if loud { 0 } else { quiet_ms + ms };
                            if quiet_ms >= 400 {
                                in_speech = false;
                                quiet_ms = 0;
                                conversation.turns += 1;
                                out.push(json!({"type": "input_audio_buffer.speech_stopped",
                                    "audio_end_ms": heard_ms}));
                                // The interrupted reply, if its late deltas are not all out yet,
                                // ends here.
                                if let Some(old) = reply.take() {
                                    out.extend(old.finish(true));
                                }
                                replies += 1;
                                out.push(json!({"type": "conversation.item.input_audio_transcription.completed",
                                    "item_id": format!("caller_{appends}"), "content_index": 0,
                                    "transcript": format!("caller turn {replies}")}));
                                if let Some(calls) = options.function_calls.get(&conversation.turns) {
                                    out.extend(conversation.function_call_response(calls, &record));
                                } else {
                                    let item = format!("item_{replies}");
                                    let response = conversation.next_response();
                                    out.push(Conversation::response_created(&response));
                                    reply = Some(Reply { response, transcript: format!("reply {item}"), item, sent_ms: 0, cancelled_late: None });
                                }
                            }
                        }
                        if options.close_after_appends == Some(appends) {
                            for event in out.drain(..) {
                                ws.send(send(event)).await?;
                            }
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
        for event in out {
            ws.send(send(event)).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phone::{silence, speech};

    type Client = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    async fn send(ws: &mut Client, event: Value) -> anyhow::Result<()> {
        ws.send(Message::Text(event.to_string().into())).await?;
        Ok(())
    }

    /// The server's events up to and including the first of type `kind`.
    async fn until(ws: &mut Client, kind: &str) -> anyhow::Result<Vec<Value>> {
        let mut events = Vec::new();
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await?
                .ok_or_else(|| anyhow::anyhow!("closed before {kind}"))??;
            let Message::Text(text) = msg else { continue };
            let event: Value = serde_json::from_str(text.as_str())?;
            let last = event["type"] == kind;
            events.push(event);
            if last {
                return Ok(events);
            }
        }
    }

    /// A caller turn: speech, then enough silence for the fake's VAD to end it.
    async fn turn(ws: &mut Client) -> anyhow::Result<()> {
        for frame in speech(300).into_iter().chain(silence(500)) {
            let audio = BASE64.encode(&frame);
            send(
                ws,
                json!({"type": "input_audio_buffer.append", "audio": audio}),
            )
            .await?;
        }
        Ok(())
    }

    fn types(events: &[Value]) -> Vec<&str> {
        events
            .iter()
            .map(|e| e["type"].as_str().unwrap_or_default())
            .filter(|t| *t != "response.output_audio.delta")
            .collect()
    }

    async fn connect(fake: &FakeOpenAi) -> anyhow::Result<Client> {
        let (mut ws, _) = tokio_tungstenite::connect_async(fake.url.as_str()).await?;
        until(&mut ws, "session.created").await?;
        send(
            &mut ws,
            json!({"type": "session.update", "session": {"type": "realtime",
                "audio": {"output": {"format": {"type": "audio/pcmu"}, "voice": "marin"}}}}),
        )
        .await?;
        until(&mut ws, "session.updated").await?;
        Ok(ws)
    }

    /// A scripted turn streams parallel function calls in the real sequence; outputs are
    /// recorded and spoken by the next response; an unknown call id is an error; tools declared
    /// by a later update are merged into the session and recorded.
    #[tokio::test]
    async fn scripted_function_calls_and_their_outputs() -> anyhow::Result<()> {
        let fake = FakeOpenAi::start(FakeOptions::default().call_on_turn(
            1,
            [
                FunctionCall::new("lookup_order", r#"{"order":"42"}"#),
                FunctionCall::new("opening_hours", "{}"),
            ],
        ))
        .await?;
        let mut ws = connect(&fake).await?;
        send(
            &mut ws,
            json!({"type": "session.update", "session": {"type": "realtime", "tool_choice": "auto",
                "tools": [{"type": "function", "name": "lookup_order", "description": "",
                    "parameters": {"type": "object"}}]}}),
        )
        .await?;
        let updated = until(&mut ws, "session.updated").await?;
        let session = &updated[updated.len() - 1]["session"];
        assert_eq!(session["audio"]["output"]["voice"], "marin", "merged");
        assert_eq!(session["tools"][0]["name"], "lookup_order");
        assert_eq!(fake.session_updates().len(), 2);
        assert_eq!(fake.declared_tools(), ["lookup_order"]);

        turn(&mut ws).await?;
        let events = until(&mut ws, "response.done").await?;
        let per_call = [
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
        ];
        let expected: Vec<&str> = ["input_audio_buffer.speech_started"]
            .into_iter()
            .chain(["input_audio_buffer.speech_stopped"])
            .chain(["conversation.item.input_audio_transcription.completed"])
            .chain(["response.created"])
            .chain(per_call)
            .chain(per_call)
            .chain(["response.done"])
            .collect();
        assert_eq!(types(&events), expected);
        let item_done = &events[events.len() - 2]["item"];
        assert_eq!(item_done["status"], "completed");
        assert_eq!(item_done["call_id"], "call_2");
        let deltas: String = events
            .iter()
            .filter(|e| {
                e["type"] == "response.function_call_arguments.delta" && e["call_id"] == "call_1"
            })
            .map(|e| e["delta"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(deltas, r#"{"order":"42"}"#);
        assert_eq!(fake.function_calls()[0].call.name, "lookup_order");

        for (call_id, output) in [("call_1", r#"{"status":"shipped"}"#), ("call_2", "9 to 5")] {
            send(
                &mut ws,
                json!({"type": "conversation.item.create", "item": {
                    "type": "function_call_output", "call_id": call_id, "output": output}}),
            )
            .await?;
            until(&mut ws, "conversation.item.done").await?;
        }
        send(
            &mut ws,
            json!({"type": "conversation.item.create", "event_id": "mine", "item": {
                "type": "function_call_output", "call_id": "call_9", "output": "{}"}}),
        )
        .await?;
        let error = until(&mut ws, "error").await?.pop().unwrap_or_default();
        assert_eq!(error["error"]["event_id"], "mine");
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("call_9")),
            "{error}"
        );
        assert_eq!(
            fake.function_call_outputs(),
            [
                FunctionCallOutput {
                    call_id: "call_1".into(),
                    output: r#"{"status":"shipped"}"#.into()
                },
                FunctionCallOutput {
                    call_id: "call_2".into(),
                    output: "9 to 5".into()
                }
            ]
        );

        send(&mut ws, json!({"type": "response.create"})).await?;
        let events = until(&mut ws, "response.done").await?;
        let transcript = events
            .iter()
            .find(|e| e["type"] == "response.output_audio_transcript.done")
            .map(|e| e["transcript"].clone());
        assert_eq!(
            transcript,
            Some(json!(r#"The tool said: {"status":"shipped"}; 9 to 5"#))
        );
        assert!(
            events
                .iter()
                .any(|e| e["type"] == "response.output_audio.delta"),
            "spoken"
        );
        assert_eq!(fake.errors().len(), 1);
        Ok(())
    }

    /// One response at a time, as the real API: a `response.create` during a reply is refused,
    /// and a reply the caller talks over ends with `response.done` (`cancelled`).
    #[tokio::test]
    async fn one_response_at_a_time_and_cancelled_replies_end() -> anyhow::Result<()> {
        let fake = FakeOpenAi::start(FakeOptions::default()).await?;
        let mut ws = connect(&fake).await?;
        send(&mut ws, json!({"type": "response.create"})).await?;
        until(&mut ws, "response.created").await?;
        send(
            &mut ws,
            json!({"type": "response.create", "event_id": "again"}),
        )
        .await?;
        let error = until(&mut ws, "error").await?.pop().unwrap_or_default();
        assert_eq!(
            error["error"]["code"],
            "conversation_already_has_active_response"
        );
        assert_eq!(error["error"]["event_id"], "again");
        turn(&mut ws).await?;
        let events = until(&mut ws, "response.done").await?;
        let done = &events[events.len() - 1]["response"];
        assert_eq!(done["id"], "resp_1");
        assert_eq!(done["status"], "cancelled");
        Ok(())
    }
}
