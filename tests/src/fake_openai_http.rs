//! A fake of OpenAI's HTTP API for the pipeline-stage plugins: a real HTTP/1.1 server on
//! loopback speaking the real wire protocol of three endpoints.
//! - `POST /v1/audio/transcriptions`: parses the `multipart/form-data` body (RFC 7578), requires
//!   a `file` part holding a PCM16 mono WAV and a `model` field, answers `{"text": …}`.
//! - `POST /v1/chat/completions`: requires `stream: true`, `model` and `messages`; streams
//!   `chat.completion.chunk` server-sent events, one content delta per event with a delay
//!   between them, then a `finish_reason` chunk and `data: [DONE]`.
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

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.shared.log.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// OpenAI's error object with this status.
fn api_error(status: StatusCode, message: &str, kind: &str, code: Option<&str>) -> Response {
    let body =
        json!({ "error": { "message": message, "type": kind, "param": null, "code": code } });
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
    let o = &shared.options;
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
            "model": json["model"], "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
        })
    };
    let mut events = vec![(
        Duration::ZERO,
        format!(
            ": keep-alive\n\ndata: {}",
            chunk(json!({"role": "assistant", "content": ""}), Value::Null)
        ),
    )];
    let mut steps = Vec::new();
    for (n, delta) in o.deltas.iter().enumerate() {
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
                format!("data: {}", chunk(json!({ "content": delta }), Value::Null)),
            )),
        }
    }
    if steps.is_empty()
        && !matches!(o.failure, Some(Failure::ErrorEventAfter(n)) if n < o.deltas.len())
    {
        events.push((
            Duration::ZERO,
            format!("data: {}", chunk(json!({}), json!("stop"))),
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
