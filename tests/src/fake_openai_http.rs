//! A fake of OpenAI's HTTP API for the pipeline-stage plugins: a real HTTP/1.1 server on
//! loopback speaking the real wire protocol of three endpoints.
//! - `POST /v1/audio/transcriptions`: parses the `multipart/form-data` body (RFC 7578), requires
//!   a `file` part holding a PCM16 mono WAV and a `model` field, answers `{"text": …}`.
//! - `POST /v1/chat/completions`: requires `stream: true`, `model` and `messages`; streams
//!   `chat.completion.chunk` server-sent events, one content delta per event with a delay
//!   between them, then a `finish_reason` chunk and `data: [DONE]`. Function calling as the
//!   real API does it: `tools`, `tool_choice` and `parallel_tool_calls` are checked (400s with
//!   the API's messages), and so is the history — a `tool` message must answer a call of the
//!   assistant message before it, and every call of an assistant message must be answered
//!   before the next other message. With a [`ToolScript`], a user turn of a request that
//!   offers tools is answered with streamed tool calls (`delta.tool_calls`: id, type and name
//!   first, then the arguments in fragments; `finish_reason: "tool_calls"`). A request whose
//!   history ends with tool results is answered with a text built from them
//!   ([`ToolScript::answer`]).
//! - `POST /v1/audio/speech`: requires `model`, `voice`, `input` and `response_format: "pcm"`;
//!   streams raw PCM bytes in chunks with a delay between them.
//!
//! It checks the bearer token (401 with OpenAI's error object), can fail on purpose
//! ([`Failure`]), and records every request so tests can assert on what the plugins sent.
//! Never the product's default: only tests point a `base_url` here.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// Largest request body accepted (bytes): OpenAI's 25 MB upload limit.
const MAX_BODY_BYTES: usize = 25 << 20;

/// A way for the fake to fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Every request: HTTP 401 with an `invalid_api_key` error object.
    Unauthorized,
    /// Every request: HTTP 429 with `Retry-After: seconds` and a `rate_limit_exceeded` error.
    RateLimited {
        /// The `Retry-After` value (s).
        retry_after: u32,
    },
    /// Every request: HTTP 500 with a `server_error` object carrying this message.
    ServerError(String),
    /// Streams (chat completions, speech): after this many deltas or chunks, the connection is
    /// cut (the chunked body never terminates).
    AbortAfter(usize),
    /// Chat completions: after this many deltas, an `error` object arrives in the stream and
    /// the stream ends.
    ErrorEventAfter(usize),
}

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct FakeHttpOptions {
    /// The key every request must carry as `Authorization: Bearer …`; `None` accepts any (or
    /// none), as a local server does.
    pub api_key: Option<String>,
    /// The transcript every transcription answers.
    pub transcript: String,
    /// The content deltas of every chat completion, in order.
    pub deltas: Vec<String>,
    /// Pause before each delta (and each speech chunk after the first).
    pub delay: Duration,
    /// The PCM bytes every speech request streams.
    pub speech: Vec<u8>,
    /// Bytes per speech chunk (odd by default, so chunks end inside samples).
    pub speech_chunk: usize,
    /// Send each server-sent event in two chunks, cut mid-line, with `\r\n` line ends.
    pub split_events: bool,
    /// Fail on purpose.
    pub failure: Option<Failure>,
    /// Chat completions: call tools instead of saying `deltas` (see [`ToolScript`]).
    pub tool_script: Option<ToolScript>,
}

/// What the answer built from tool results starts with (see [`ToolScript::answer`]).
pub const DEFAULT_ANSWER_PREFIX: &str = "Here is what I found: ";

/// Most characters of one streamed arguments fragment: OpenAI streams arguments a token or so
/// at a time; a few characters make every call's arguments arrive in several fragments.
const ARGUMENT_FRAGMENT_CHARS: usize = 6;

/// The fake's function calling: which user turns it answers with tool calls, and which calls.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolScript {
    /// Which user turns get the calls.
    pub trigger: ToolTrigger,
    /// The calls of one reply, streamed as parallel calls (indexes 0, 1, …). Only calls of
    /// tools the request offers are made (a model cannot call a tool it was not given: with
    /// none left the reply is the text `deltas`); with `parallel_tool_calls: false`, only the
    /// first.
    pub calls: Vec<ScriptedCall>,
    /// Text said before the calls, as content deltas of the same reply (models sometimes say
    /// "Let me check." first).
    pub preamble: Option<String>,
    /// The start of the answer built from tool results.
    pub answer_prefix: String,
}

/// Which user turns a [`ToolScript`] answers with its calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolTrigger {
    /// Every request that offers tools and ends with a user message.
    Always,
    /// Such a request whose user message contains this text (ignoring case).
    UserSays(String),
}

/// One call a [`ToolScript`] makes.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptedCall {
    /// The tool's name.
    pub name: String,
    /// The arguments (streamed as their JSON text).
    pub arguments: Value,
}

impl Default for ToolScript {
    fn default() -> Self {
        Self {
            trigger: ToolTrigger::Always,
            calls: Vec::new(),
            preamble: None,
            answer_prefix: DEFAULT_ANSWER_PREFIX.into(),
        }
    }
}

impl ToolScript {
    /// Calls `name` with `arguments` on every user turn of a request that offers tools.
    pub fn call(name: &str, arguments: Value) -> Self {
        Self::default().and_call(name, arguments)
    }

    /// Also calls `name` with `arguments`, in parallel (the next index).
    #[must_use]
    pub fn and_call(mut self, name: &str, arguments: Value) -> Self {
        self.calls.push(ScriptedCall {
            name: name.into(),
            arguments,
        });
        self
    }

    /// Calls only when the user's message contains `text` (ignoring case).
    #[must_use]
    pub fn when_user_says(mut self, text: &str) -> Self {
        self.trigger = ToolTrigger::UserSays(text.into());
        self
    }

    /// Says `text` before the calls, in the same reply.
    #[must_use]
    pub fn saying_first(mut self, text: &str) -> Self {
        self.preamble = Some(text.into());
        self
    }

    /// The text the fake answers a history ending with tool results whose contents are
    /// `contents` (in order): `"{answer_prefix}{content1}; {content2}"`. Without a script the
    /// fake answers `ToolScript::default().answer(…)`.
    pub fn answer(&self, contents: &[&str]) -> String {
        format!("{}{}", self.answer_prefix, contents.join("; "))
    }

    /// True when a request whose last message is the user's `said` gets the calls.
    fn triggered_by(&self, said: &str) -> bool {
        match &self.trigger {
            ToolTrigger::Always => true,
            ToolTrigger::UserSays(text) => said.to_lowercase().contains(&text.to_lowercase()),
        }
    }
}

impl Default for FakeHttpOptions {
    fn default() -> Self {
        Self {
            api_key: Some("sk-test".into()),
            transcript: "I'd like to book a table for two.".into(),
            deltas: vec![
                "Sure".into(),
                ", for".into(),
                " what time".into(),
                "?".into(),
            ],
            delay: Duration::from_millis(30),
            speech: (0..24_000u32).map(|i| (i * 7 % 251) as u8).collect(),
            speech_chunk: 4_801,
            split_events: false,
            failure: None,
            tool_script: None,
        }
    }
}

/// One part of a `multipart/form-data` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormPart {
    /// The part's `name`.
    pub name: String,
    /// Its `filename`, for a file.
    pub filename: Option<String>,
    /// Its `Content-Type`, if given.
    pub content_type: Option<String>,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The path, e.g. `/v1/chat/completions`.
    pub path: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The `Content-Type` header.
    pub content_type: String,
    /// The JSON body (chat completions, speech).
    pub json: Option<Value>,
    /// The form parts (transcriptions), in order.
    pub form: Vec<FormPart>,
}

impl Recorded {
    /// The names of the tools a chat completion offered (`tools[].function.name`), in order.
    pub fn tool_names(&self) -> Vec<String> {
        self.json
            .as_ref()
            .and_then(|j| j["tools"].as_array())
            .into_iter()
            .flatten()
            .filter_map(|t| t["function"]["name"].as_str().map(str::to_string))
            .collect()
    }

    /// The roles of a chat completion's `messages`, in order.
    pub fn roles(&self) -> Vec<String> {
        self.json
            .as_ref()
            .and_then(|j| j["messages"].as_array())
            .into_iter()
            .flatten()
            .map(|m| m["role"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The text field `name` of a form.
    pub fn field(&self, name: &str) -> Option<String> {
        self.form
            .iter()
            .find(|p| p.name == name && p.filename.is_none())
            .map(|p| String::from_utf8_lossy(&p.data).into_owned())
    }
}

#[derive(Default)]
struct Log {
    requests: Vec<Recorded>,
    /// Streams that reached their last byte (a cancelled one never does).
    finished_streams: usize,
    /// The ids of the tool calls streamed, in order.
    tool_call_ids: Vec<String>,
}

struct Shared {
    options: FakeHttpOptions,
    log: Mutex<Log>,
}

/// A running fake; stops when dropped.
pub struct FakeOpenAiHttp {
    /// `http://127.0.0.1:PORT/v1`: the plugins' `base_url`.
    pub base_url: String,
    /// `127.0.0.1:PORT`: what the agent's `allowed_hosts` must hold.
    pub host_port: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeOpenAiHttp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeOpenAiHttp {
    /// Starts the fake on `127.0.0.1:0`.
    ///
    /// # Errors
    /// The port could not be bound.
    pub async fn start(options: FakeHttpOptions) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared {
            options,
            log: Mutex::default(),
        });
        let app = Router::new()
            .route("/v1/audio/transcriptions", post(transcriptions))
            .route("/v1/chat/completions", post(chat_completions))
            .route("/v1/audio/speech", post(speech))
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let host_port = listener.local_addr()?.to_string();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            base_url: format!("http://{host_port}/v1"),
            host_port,
            shared,
            server,
        })
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log().requests.clone()
    }

    /// Streamed responses that reached their end.
    pub fn finished_streams(&self) -> usize {
        self.log().finished_streams
    }

    /// The JSON bodies of the chat-completion requests so far, in order (refused ones too).
    pub fn chat_requests(&self) -> Vec<Value> {
        self.log()
            .requests
            .iter()
            .filter(|r| r.path == "/v1/chat/completions")
            .map(|r| r.json.clone().unwrap_or(Value::Null))
            .collect()
    }

    /// The ids of the tool calls the fake streamed so far (`call_fake1`, `call_fake2`, …), in
    /// order.
    pub fn tool_call_ids(&self) -> Vec<String> {
        self.log().tool_call_ids.clone()
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.shared.log.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// OpenAI's error object with this status.
fn api_error(status: StatusCode, message: &str, kind: &str, code: Option<&str>) -> Response {
    api_error_at(status, message, kind, None, code)
}

/// OpenAI's error object with this status, naming the request's offending `param`.
fn api_error_at(
    status: StatusCode,
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response {
    let body =
        json!({ "error": { "message": message, "type": kind, "param": param, "code": code } });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Records the request, then applies the bearer check and whole-request failures: the
/// response refusing it, if any.
fn refusal(shared: &Shared, recorded: Recorded) -> Option<Response> {
    let authorization = recorded.authorization.clone();
    shared
        .log
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .requests
        .push(recorded);
    if let Some(key) = &shared.options.api_key
        && authorization.as_deref() != Some(&format!("Bearer {key}"))
    {
        return Some(api_error(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided.",
            "invalid_request_error",
            Some("invalid_api_key"),
        ));
    }
    match &shared.options.failure {
        Some(Failure::Unauthorized) => Some(api_error(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided.",
            "invalid_request_error",
            Some("invalid_api_key"),
        )),
        Some(Failure::RateLimited { retry_after }) => {
            let mut response = api_error(
                StatusCode::TOO_MANY_REQUESTS,
                "Rate limit reached for requests.",
                "requests",
                Some("rate_limit_exceeded"),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, (*retry_after).into());
            Some(response)
        }
        Some(Failure::ServerError(message)) => Some(api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            message,
            "server_error",
            None,
        )),
        _ => None,
    }
}

fn recorded(path: &str, headers: &HeaderMap) -> Recorded {
    let header = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    Recorded {
        path: path.into(),
        authorization: header(header::AUTHORIZATION),
        content_type: header(header::CONTENT_TYPE).unwrap_or_default(),
        json: None,
        form: Vec::new(),
    }
}

fn bad_request(message: &str) -> Response {
    api_error(
        StatusCode::BAD_REQUEST,
        message,
        "invalid_request_error",
        None,
    )
}

async fn transcriptions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut request = recorded("/v1/audio/transcriptions", &headers);
    let form = boundary(&request.content_type)
        .ok_or("Content-Type is not multipart/form-data with a boundary".to_string())
        .and_then(|b| parse_multipart(&body, &b));
    let form = match form {
        Ok(form) => form,
        Err(e) => {
            let _ = refusal(&shared, request);
            return bad_request(&e);
        }
    };
    request.form = form;
    let checked = check_transcription(&request);
    if let Some(response) = refusal(&shared, request) {
        return response;
    }
    if let Err(e) = checked {
        return bad_request(&e);
    }
    let body = json!({ "text": shared.options.transcript });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The transcription request's form, as OpenAI requires it: a WAV `file` and a `model`.
fn check_transcription(request: &Recorded) -> Result<(), String> {
    let file = request
        .form
        .iter()
        .find(|p| p.name == "file" && p.filename.is_some())
        .ok_or("no file part")?;
    wav_pcm(&file.data)?;
    if request.field("model").is_none_or(|m| m.is_empty()) {
        return Err("you must provide a model parameter".into());
    }
    Ok(())
}

/// The sample rate (Hz) and PCM bytes of a PCM16 mono WAV file with the canonical 44-byte
/// header.
///
/// # Errors
/// The bytes are not such a file; the message says why.
pub fn wav_pcm(file: &[u8]) -> Result<(u32, Vec<u8>), String> {
    let u16_at = |i: usize| u16::from_le_bytes([file[i], file[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes([file[i], file[i + 1], file[i + 2], file[i + 3]]);
    if file.len() < 44 || &file[0..4] != b"RIFF" || &file[8..16] != b"WAVEfmt " {
        return Err("not a RIFF WAVE file".into());
    }
    if u32_at(4) as usize != file.len() - 8 {
        return Err(format!(
            "RIFF size {} for a {}-byte file",
            u32_at(4),
            file.len()
        ));
    }
    let (format, channels, rate, bits) = (u16_at(20), u16_at(22), u32_at(24), u16_at(34));
    if (format, channels, bits) != (1, 1, 16) || u32_at(28) != rate * 2 || u16_at(32) != 2 {
        return Err(format!(
            "format {format}, {channels} channel(s), {bits} bits: want PCM mono 16-bit"
        ));
    }
    if &file[36..40] != b"data" || u32_at(40) as usize != file.len() - 44 {
        return Err("bad data chunk".into());
    }
    Ok((rate, file[44..].to_vec()))
}

/// The `boundary` parameter of a `multipart/form-data` content type.
fn boundary(content_type: &str) -> Option<String> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (name, value) = p.trim().split_once('=')?;
        name.eq_ignore_ascii_case("boundary")
            .then(|| value.trim_matches('"').to_string())
    })
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// Parses a `multipart/form-data` body (RFC 7578, RFC 2046 §5.1): parts between
/// `--boundary` delimiter lines, each with its headers, a blank line and its bytes.
fn parse_multipart(body: &[u8], boundary: &str) -> Result<Vec<FormPart>, String> {
    let open = format!("--{boundary}");
    let delimiter = format!("\r\n--{boundary}");
    if !body.starts_with(open.as_bytes()) {
        return Err("body does not start with the boundary".into());
    }
    let mut parts = Vec::new();
    let mut at = open.len();
    loop {
        match body.get(at..at + 2) {
            Some(b"--") => return Ok(parts),
            Some(b"\r\n") => at += 2,
            _ => return Err("bad delimiter line".into()),
        }
        let head_end = find(body, b"\r\n\r\n", at).ok_or("part headers never end")?;
        let head =
            std::str::from_utf8(&body[at..head_end]).map_err(|_| "part headers not UTF-8")?;
        let data_start = head_end + 4;
        let data_end = find(body, delimiter.as_bytes(), data_start).ok_or("part never ends")?;
        let mut part = FormPart {
            name: String::new(),
            filename: None,
            content_type: None,
            data: body[data_start..data_end].to_vec(),
        };
        for line in head.split("\r\n") {
            let (name, value) = line.split_once(':').ok_or("bad part header")?;
            if name.eq_ignore_ascii_case("content-disposition") {
                for param in value.split(';').skip(1) {
                    if let Some((k, v)) = param.trim().split_once('=') {
                        let v = v.trim_matches('"').to_string();
                        match k {
                            "name" => part.name = v,
                            "filename" => part.filename = Some(v),
                            _ => {}
                        }
                    }
                }
            } else if name.eq_ignore_ascii_case("content-type") {
                part.content_type = Some(value.trim().to_string());
            }
        }
        if part.name.is_empty() {
            return Err("a part has no name".into());
        }
        parts.push(part);
        at = data_end + delimiter.len();
    }
}

/// One step of a streamed body: wait, then send bytes or cut the connection.
enum Step {
    Send(Duration, Vec<u8>),
    Cut(Duration),
}

/// A streamed body from `steps`; counts the stream as finished when its last step is sent.
fn streamed(shared: Arc<Shared>, content_type: &str, steps: Vec<Step>) -> Response {
    let state = (VecDeque::from(steps), shared);
    let stream = futures_util::stream::unfold(state, |(mut steps, shared)| async move {
        let step = steps.pop_front()?;
        let item = match step {
            Step::Send(delay, bytes) => {
                tokio::time::sleep(delay).await;
                Ok(Bytes::from(bytes))
            }
            Step::Cut(delay) => {
                tokio::time::sleep(delay).await;
                Err(std::io::Error::other("fake: connection cut"))
            }
        };
        if steps.is_empty() && item.is_ok() {
            shared
                .log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .finished_streams += 1;
        }
        Some((item, (steps, shared)))
    });
    (
        [(header::CONTENT_TYPE, content_type.to_string())],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut request = recorded("/v1/chat/completions", &headers);
    request.json = serde_json::from_slice(&body).ok();
    let json = request.json.clone().unwrap_or(Value::Null);
    if let Some(response) = refusal(&shared, request) {
        return response;
    }
    if json["stream"] != true || !json["model"].is_string() || !json["messages"].is_array() {
        return bad_request("expected model, messages and stream: true");
    }
    if let Err(refused) = check_tools(&json).and_then(|()| check_history(&json)) {
        return refused.response();
    }
    let o = &shared.options;
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
            "model": json["model"], "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
        })
    };
    let (first, deltas, finish) = match reply_of(&shared, &json) {
        Reply::Text(texts) => (
            json!({"role": "assistant", "content": ""}),
            texts.into_iter().map(|t| json!({ "content": t })).collect(),
            "stop",
        ),
        Reply::Calls { preamble, calls } => {
            let mut first = json!({"role": "assistant", "content": ""});
            let mut deltas: Vec<Value> = preamble
                .map(|p| json!({ "content": p }))
                .into_iter()
                .collect();
            for (index, (id, call)) in calls.iter().enumerate() {
                let mut opening = json!({"tool_calls": [{
                    "index": index, "id": id, "type": "function",
                    "function": {"name": call.name, "arguments": ""},
                }]});
                if index == 0 && deltas.is_empty() {
                    // As OpenAI opens a reply that only calls: the role, no content, the call.
                    opening["role"] = "assistant".into();
                    opening["content"] = Value::Null;
                    opening["refusal"] = Value::Null;
                    first = opening;
                } else {
                    deltas.push(opening);
                }
                for fragment in fragments(&call.arguments.to_string()) {
                    let entry = json!({"index": index, "function": {"arguments": fragment}});
                    deltas.push(json!({ "tool_calls": [entry] }));
                }
            }
            (first, deltas, "tool_calls")
        }
    };
    let mut events = vec![(
        Duration::ZERO,
        format!(": keep-alive\n\ndata: {}", chunk(first, Value::Null)),
    )];
    let mut steps = Vec::new();
    for (n, delta) in deltas.iter().enumerate() {
        match o.failure {
            Some(Failure::AbortAfter(after)) if n == after => {
                steps.push(Step::Cut(o.delay));
                break;
            }
            Some(Failure::ErrorEventAfter(after)) if n == after => {
                let error = json!({"error": {"message": "The model is overloaded.", "type": "server_error", "param": null, "code": null}});
                events.push((o.delay, format!("data: {error}")));
                break;
            }
            _ => events.push((
                o.delay,
                format!("data: {}", chunk(delta.clone(), Value::Null)),
            )),
        }
    }
    if steps.is_empty()
        && !matches!(o.failure, Some(Failure::ErrorEventAfter(n)) if n < deltas.len())
    {
        events.push((
            Duration::ZERO,
            format!("data: {}", chunk(json!({}), json!(finish))),
        ));
        events.push((Duration::ZERO, "data: [DONE]".into()));
    }
    let mut all: Vec<Step> = Vec::new();
    for (delay, event) in events {
        if o.split_events {
            let event = event.replace('\n', "\r\n") + "\r\n\r\n";
            let (a, b) = event.split_at(event.len() / 2);
            all.push(Step::Send(delay, a.as_bytes().to_vec()));
            all.push(Step::Send(Duration::from_millis(5), b.as_bytes().to_vec()));
        } else {
            all.push(Step::Send(delay, format!("{event}\n\n").into_bytes()));
        }
    }
    all.extend(steps);
    streamed(shared.clone(), "text/event-stream", all)
}

/// What a chat completion answers.
enum Reply {
    /// These content deltas.
    Text(Vec<String>),
    /// Tool calls (with their ids), after an optional content delta.
    Calls {
        preamble: Option<String>,
        calls: Vec<(String, ScriptedCall)>,
    },
}

/// The reply to a valid request: an answer from tool results when the history ends with them,
/// the script's calls for a user turn it triggers on, the configured deltas otherwise.
fn reply_of(shared: &Shared, json: &Value) -> Reply {
    let o = &shared.options;
    let messages = json["messages"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let first_result = messages
        .iter()
        .rposition(|m| m["role"] != "tool")
        .map_or(0, |i| i + 1);
    if first_result < messages.len() {
        let script = o.tool_script.clone().unwrap_or_default();
        let mut texts = vec![script.answer_prefix];
        for (n, result) in messages[first_result..].iter().enumerate() {
            let separator = if n == 0 { "" } else { "; " };
            texts.push(format!("{separator}{}", text_of(&result["content"])));
        }
        texts.retain(|t| !t.is_empty());
        return Reply::Text(texts);
    }
    let offered: Vec<&str> = json["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    let user_turn = messages
        .last()
        .filter(|m| m["role"] == "user")
        .map(|m| text_of(&m["content"]));
    if let (Some(script), Some(said)) = (&o.tool_script, user_turn)
        && script.triggered_by(&said)
    {
        let mut calls: Vec<ScriptedCall> = script
            .calls
            .iter()
            .filter(|c| offered.contains(&c.name.as_str()))
            .cloned()
            .collect();
        if json["parallel_tool_calls"] == false {
            calls.truncate(1);
        }
        if !calls.is_empty() {
            let mut log = shared.log.lock().unwrap_or_else(|e| e.into_inner());
            let calls = calls
                .into_iter()
                .map(|call| {
                    let id = format!("call_fake{}", log.tool_call_ids.len() + 1);
                    log.tool_call_ids.push(id.clone());
                    (id, call)
                })
                .collect();
            return Reply::Calls {
                preamble: script.preamble.clone(),
                calls,
            };
        }
    }
    Reply::Text(o.deltas.clone())
}

/// A message's text: its `content` string, or its text parts joined.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// `arguments` cut as a model streams them: in pieces of at most [`ARGUMENT_FRAGMENT_CHARS`]
/// characters, at least two of them.
fn fragments(arguments: &str) -> Vec<String> {
    let chars: Vec<char> = arguments.chars().collect();
    let size = ARGUMENT_FRAGMENT_CHARS.min(chars.len().div_ceil(2)).max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

/// A request the real API refuses with 400 `invalid_request_error`.
struct Refused {
    message: String,
    /// The offending parameter (`messages.[3].role`, `tools[0].function.name`).
    param: String,
    code: Option<&'static str>,
}

impl Refused {
    fn new(
        message: impl Into<String>,
        param: impl Into<String>,
        code: Option<&'static str>,
    ) -> Self {
        Self {
            message: message.into(),
            param: param.into(),
            code,
        }
    }

    fn response(&self) -> Response {
        api_error_at(
            StatusCode::BAD_REQUEST,
            &self.message,
            "invalid_request_error",
            Some(&self.param),
            self.code,
        )
    }
}

/// `tools`, `tool_choice` and `parallel_tool_calls` as the API checks them: a non-empty list
/// of function tools with valid names and object schemas; the other two only with tools.
fn check_tools(json: &Value) -> Result<(), Refused> {
    let tools = match &json["tools"] {
        Value::Null => {
            for key in ["tool_choice", "parallel_tool_calls"] {
                if !json[key].is_null() {
                    return Err(Refused::new(
                        format!(
                            "Invalid value for '{key}': '{key}' is only allowed when 'tools' are specified."
                        ),
                        key,
                        None,
                    ));
                }
            }
            return Ok(());
        }
        Value::Array(tools) if tools.is_empty() => {
            return Err(Refused::new(
                "Invalid 'tools': empty array. Expected an array with minimum length 1, but got an empty array instead.",
                "tools",
                Some("empty_array"),
            ));
        }
        Value::Array(tools) => tools,
        _ => {
            return Err(Refused::new(
                "Invalid type for 'tools': expected an array of objects.",
                "tools",
                Some("invalid_type"),
            ));
        }
    };
    for (i, tool) in tools.iter().enumerate() {
        if tool["type"] != "function" {
            return Err(Refused::new(
                format!("Invalid value for 'tools[{i}].type': expected 'function'."),
                format!("tools[{i}].type"),
                Some("invalid_value"),
            ));
        }
        let function = &tool["function"];
        let Some(name) = function["name"].as_str() else {
            return Err(Refused::new(
                format!("Missing required parameter: 'tools[{i}].function.name'."),
                format!("tools[{i}].function.name"),
                Some("missing_required_parameter"),
            ));
        };
        let valid = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(Refused::new(
                format!(
                    "Invalid 'tools[{i}].function.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]{{1,64}}$'."
                ),
                format!("tools[{i}].function.name"),
                Some("invalid_value"),
            ));
        }
        if !(function["parameters"].is_null() || function["parameters"].is_object()) {
            return Err(Refused::new(
                format!("Invalid type for 'tools[{i}].function.parameters': expected an object."),
                format!("tools[{i}].function.parameters"),
                Some("invalid_type"),
            ));
        }
    }
    Ok(())
}

/// The history as the API checks it: each message's shape, a `tool` message answering a call
/// of the assistant message before it, and every call of an assistant message answered before
/// the next message that is not a tool result.
fn check_history(json: &Value) -> Result<(), Refused> {
    let messages = json["messages"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    // The assistant message whose calls the tool messages now answer.
    let mut open: Option<Answering> = None;
    for (i, message) in messages.iter().enumerate() {
        let role = message["role"].as_str().unwrap_or_default();
        let content = &message["content"];
        if role == "tool" {
            let Some(id) = message["tool_call_id"].as_str() else {
                return Err(Refused::new(
                    format!("Missing required parameter: 'messages[{i}].tool_call_id'."),
                    format!("messages[{i}].tool_call_id"),
                    Some("missing_required_parameter"),
                ));
            };
            let Some(answering) = open.as_mut().filter(|a| a.ids.iter().any(|c| c == id)) else {
                return Err(Refused::new(
                    "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.",
                    format!("messages.[{i}].role"),
                    None,
                ));
            };
            answering.left.retain(|c| c != id);
            if !(content.is_string() || content.is_array()) {
                return Err(content_type(i, content));
            }
            continue;
        }
        if let Some(answering) = open.take() {
            answering.all_answered()?;
        }
        match role {
            "system" | "developer" | "user" if content.is_string() || content.is_array() => {}
            "assistant" => {
                let calls: &[Value] = match &message["tool_calls"] {
                    Value::Null => &[],
                    Value::Array(calls) => calls,
                    _ => {
                        return Err(Refused::new(
                            format!(
                                "Invalid type for 'messages[{i}].tool_calls': expected an array."
                            ),
                            format!("messages[{i}].tool_calls"),
                            Some("invalid_type"),
                        ));
                    }
                };
                if !(content.is_string()
                    || content.is_array()
                    || (content.is_null() && !calls.is_empty()))
                {
                    return Err(content_type(i, content));
                }
                let mut ids = Vec::new();
                for (c, call) in calls.iter().enumerate() {
                    for field in ["id", "function.name", "function.arguments"] {
                        let value = field.split('.').fold(call, |v, k| &v[k]);
                        if !value.is_string() {
                            return Err(Refused::new(
                                format!(
                                    "Missing required parameter: 'messages[{i}].tool_calls[{c}].{field}'."
                                ),
                                format!("messages[{i}].tool_calls[{c}].{field}"),
                                Some("missing_required_parameter"),
                            ));
                        }
                    }
                    if call["type"] != "function" {
                        return Err(Refused::new(
                            format!(
                                "Invalid value for 'messages[{i}].tool_calls[{c}].type': expected 'function'."
                            ),
                            format!("messages[{i}].tool_calls[{c}].type"),
                            Some("invalid_value"),
                        ));
                    }
                    ids.push(call["id"].as_str().unwrap_or_default().to_string());
                }
                if !ids.is_empty() {
                    open = Some(Answering {
                        at: i,
                        left: ids.clone(),
                        ids,
                    });
                }
            }
            "system" | "developer" | "user" => return Err(content_type(i, content)),
            other => {
                return Err(Refused::new(
                    format!(
                        "Invalid value: '{other}'. Supported values are: 'system', 'assistant', 'user', 'tool', and 'developer'."
                    ),
                    format!("messages[{i}].role"),
                    Some("invalid_value"),
                ));
            }
        }
    }
    open.map_or(Ok(()), |answering| answering.all_answered())
}

/// An assistant message's calls, as the tool messages after it answer them.
struct Answering {
    /// The assistant message's index.
    at: usize,
    /// Its calls' ids.
    ids: Vec<String>,
    /// Those not answered yet.
    left: Vec<String>,
}

impl Answering {
    /// The API's refusal when a call was left unanswered.
    fn all_answered(&self) -> Result<(), Refused> {
        if self.left.is_empty() {
            return Ok(());
        }
        Err(Refused::new(
            format!(
                "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: {}",
                self.left.join(", ")
            ),
            format!("messages.[{}].role", self.at),
            None,
        ))
    }
}

/// The API's refusal of message `i`'s `content`.
fn content_type(i: usize, content: &Value) -> Refused {
    let got = match content {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::Object(_) => "an object",
        Value::String(_) | Value::Array(_) => "an unexpected value",
    };
    Refused::new(
        format!(
            "Invalid type for 'messages[{i}].content': expected one of a string or array of objects, but got {got} instead."
        ),
        format!("messages[{i}].content"),
        Some("invalid_type"),
    )
}

async fn speech(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let mut request = recorded("/v1/audio/speech", &headers);
    request.json = serde_json::from_slice(&body).ok();
    let json = request.json.clone().unwrap_or(Value::Null);
    if let Some(response) = refusal(&shared, request) {
        return response;
    }
    let input_ok = json["input"]
        .as_str()
        .is_some_and(|i| !i.is_empty() && i.chars().count() <= 4096);
    if !json["model"].is_string() || !json["voice"].is_string() || !input_ok {
        return bad_request("expected model, voice and input (1–4096 characters)");
    }
    if json["response_format"] != "pcm" {
        return bad_request("this fake streams response_format pcm only");
    }
    let o = &shared.options;
    let mut steps = Vec::new();
    for (n, chunk) in o.speech.chunks(o.speech_chunk.max(1)).enumerate() {
        if o.failure == Some(Failure::AbortAfter(n)) {
            steps.push(Step::Cut(o.delay));
            break;
        }
        let delay = if n == 0 { Duration::ZERO } else { o.delay };
        steps.push(Step::Send(delay, chunk.to_vec()));
    }
    streamed(shared.clone(), "application/octet-stream", steps)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    async fn fake(tool_script: Option<ToolScript>) -> FakeOpenAiHttp {
        FakeOpenAiHttp::start(FakeHttpOptions {
            delay: Duration::ZERO,
            tool_script,
            ..FakeHttpOptions::default()
        })
        .await
        .unwrap()
    }

    /// POSTs a chat completion with `messages` (and `extra` fields); the status and the body.
    async fn post(fake: &FakeOpenAiHttp, messages: Value, extra: Value) -> (u16, String) {
        let mut body = json!({"model": "gpt-4o-mini", "stream": true, "messages": messages});
        for (key, value) in extra.as_object().into_iter().flatten() {
            body[key] = value.clone();
        }
        let response = reqwest::Client::new()
            .post(format!("{}/chat/completions", fake.base_url))
            .header("Authorization", "Bearer sk-test")
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// The `data:` payloads of an event stream, `[DONE]` as it is, the rest as JSON.
    fn events(stream: &str) -> Vec<Value> {
        stream
            .split("\n\n")
            .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
            .map(|d| serde_json::from_str(d).unwrap_or_else(|_| Value::String(d.into())))
            .collect()
    }

    fn tools() -> Value {
        let tool = |name: &str| {
            let function = json!({"name": name, "parameters": {"type": "object"}});
            json!({"type": "function", "function": function})
        };
        json!([tool("order_status"), tool("weather")])
    }

    fn user(text: &str) -> Value {
        json!({"role": "user", "content": text})
    }

    #[tokio::test]
    async fn a_triggered_user_turn_streams_parallel_calls_as_the_api_does() {
        let script = ToolScript::call("order_status", json!({"order": "1042"}))
            .and_call("weather", json!({"city": "Oslo"}))
            .when_user_says("ORDER");
        let fake = fake(Some(script)).await;
        let offer = json!({"tools": tools(), "tool_choice": "auto", "parallel_tool_calls": true});

        // Not the trigger: the text deltas.
        let (status, body) = post(&fake, json!([user("hello")]), offer.clone()).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains("what time") && !body.contains("tool_calls"),
            "{body}"
        );

        let (status, body) = post(&fake, json!([user("Where is my order?")]), offer).await;
        assert_eq!(status, 200, "{body}");
        let events = events(&body);
        assert_eq!(events.last(), Some(&json!("[DONE]")));
        let finish = &events[events.len() - 2]["choices"][0];
        assert_eq!(finish["finish_reason"], "tool_calls");
        // index → (id, name, arguments, fragments)
        let mut calls: BTreeMap<u64, (String, String, String, usize)> = BTreeMap::new();
        for event in &events[..events.len() - 1] {
            let delta = &event["choices"][0]["delta"];
            for entry in delta["tool_calls"].as_array().into_iter().flatten() {
                let index = entry["index"].as_u64().unwrap();
                let call = calls.entry(index).or_insert_with(|| {
                    assert_eq!(entry["type"], "function", "{entry}");
                    let name = entry["function"]["name"].as_str().unwrap().to_string();
                    (
                        entry["id"].as_str().unwrap().to_string(),
                        name,
                        String::new(),
                        0,
                    )
                });
                let fragment = entry["function"]["arguments"].as_str().unwrap();
                if !fragment.is_empty() {
                    call.2.push_str(fragment);
                    call.3 += 1;
                }
            }
        }
        let ids = fake.tool_call_ids();
        assert_eq!(ids, ["call_fake1", "call_fake2"]);
        let [(id0, name0, args0, n0), (id1, name1, args1, n1)] =
            [&calls[&0], &calls[&1]].map(Clone::clone);
        assert_eq!(
            (id0.as_str(), name0.as_str()),
            ("call_fake1", "order_status")
        );
        assert_eq!((id1.as_str(), name1.as_str()), ("call_fake2", "weather"));
        assert_eq!(
            serde_json::from_str::<Value>(&args0).unwrap(),
            json!({"order": "1042"})
        );
        assert_eq!(
            serde_json::from_str::<Value>(&args1).unwrap(),
            json!({"city": "Oslo"})
        );
        assert!(n0 >= 2 && n1 >= 2, "arguments in fragments: {n0}, {n1}");

        // Without tools in the request, or with the first call only.
        let (_, body) = post(&fake, json!([user("my order")]), json!({})).await;
        assert!(!body.contains("tool_calls"), "{body}");
        let one = json!({"tools": tools(), "parallel_tool_calls": false});
        let (_, body) = post(&fake, json!([user("my order")]), one).await;
        assert!(
            body.contains("order_status") && !body.contains("weather"),
            "{body}"
        );

        let requests = fake.requests();
        assert_eq!(requests[1].tool_names(), ["order_status", "weather"]);
        assert_eq!(fake.chat_requests().len(), 4);
    }

    #[tokio::test]
    async fn tool_results_are_answered_from_their_contents_and_bad_histories_refused() {
        let script = ToolScript::call("order_status", json!({})).saying_first("Let me check.");
        let fake = fake(Some(script.clone())).await;
        let call = |id: &str, name: &str| json!({"id": id, "type": "function", "function": {"name": name, "arguments": "{}"}});
        let asked = json!({"role": "assistant", "content": null,
                           "tool_calls": [call("call_a", "order_status"), call("call_b", "weather")]});
        let result = |id: &str, content: &str| json!({"role": "tool", "tool_call_id": id, "content": content});
        let (status, body) = post(
            &fake,
            json!([
                user("order?"),
                asked,
                result("call_a", "shipped"),
                result("call_b", "sunny")
            ]),
            json!({"tools": tools()}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let text: String = events(&body)
            .iter()
            .filter_map(|e| {
                e["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        assert_eq!(text, script.answer(&["shipped", "sunny"]));
        assert_eq!(text, "Here is what I found: shipped; sunny");
        assert_eq!(
            fake.requests()[0].roles(),
            ["user", "assistant", "tool", "tool"]
        );

        for (messages, extra, says) in [
            (
                json!([user("hi"), result("call_a", "x")]),
                json!({}),
                "must be a response to a preceeding message with 'tool_calls'",
            ),
            (
                json!([user("hi"), asked, result("call_a", "x")]),
                json!({}),
                "did not have response messages: call_b",
            ),
            (
                json!([user("hi"), asked, result("call_a", "x"), user("and?")]),
                json!({}),
                "did not have response messages: call_b",
            ),
            (
                json!([user("hi")]),
                json!({"tool_choice": "auto"}),
                "'tool_choice' is only allowed when 'tools' are specified",
            ),
            (json!([user("hi")]), json!({"tools": []}), "empty array"),
            (
                json!([{"role": "assistant", "content": null}]),
                json!({}),
                "messages[0].content",
            ),
        ] {
            let (status, body) = post(&fake, messages.clone(), extra).await;
            assert_eq!(status, 400, "{messages}: {body}");
            let error: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(error["error"]["type"], "invalid_request_error", "{body}");
            let message = error["error"]["message"].as_str().unwrap();
            assert!(message.contains(says), "{message}");
        }
        assert_eq!(
            fake.chat_requests().len(),
            7,
            "refused requests are recorded too"
        );
        assert!(fake.tool_call_ids().is_empty());

        // With the preamble, a triggered turn says it first, then calls.
        let (_, body) = post(&fake, json!([user("order?")]), json!({"tools": tools()})).await;
        let events = events(&body);
        assert_eq!(events[1]["choices"][0]["delta"]["content"], "Let me check.");
        assert_eq!(
            events[2]["choices"][0]["delta"]["tool_calls"][0]["id"],
            "call_fake1"
        );
    }
}
