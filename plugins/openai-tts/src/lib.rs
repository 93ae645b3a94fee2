//! OpenAI text to speech: the TTS stage of a pipeline agent, backed by `POST /audio/speech` on
//! OpenAI or on any server that speaks it, reached through the host's HTTP I/O.
//!
//! Text is kept until `flush`; each flush is one utterance, sent as one request (or several, for
//! text past the API's [`MAX_INPUT_CHARS`]) asking for `response_format: "pcm"` — raw PCM16 LE
//! mono at 24000 Hz, no header — so audio goes to the caller as its chunks arrive, with no
//! decoding. Utterances are answered in order: `audio` as it streams, then `utterance-done` when
//! the last of its requests completes. The next utterance's request is sent while one is still
//! streaming ([`MAX_IN_FLIGHT`]), its audio held until its turn, so clauses follow each other
//! without a round trip between them. `cancel` (barge-in) cancels every request in flight and
//! drops the text and queued utterances; late events of cancelled requests are ignored.
//!
//! Settings (the agent's TTS `settings`; all optional):
//! - `base_url` (`"https://api.openai.com/v1"`): the API root;
//! - `model` (`"gpt-4o-mini-tts"`; `tts-1`, `tts-1-hd` also work);
//! - `voice` (`"alloy"`): one of the API's voices (`alloy`, `ash`, `coral`, `marin`, …);
//! - `instructions`: how to speak (tone, accent; `gpt-4o-mini-tts` only);
//! - `speed` (0.25–4.0; 1.0 when absent).
//!
//! Secrets: `api_key`, sent as `Authorization: Bearer …`; without one no header is sent (local
//! servers). The agent's `allowed_hosts` must include the `base_url` host.
//!
//! Protocol: the OpenAI API reference, "Create speech"
//! (developers.openai.com/api/reference/resources/audio/subresources/speech/methods/create), and
//! the text-to-speech guide's output formats ("pcm: raw samples in 24 kHz, 16-bit signed,
//! little-endian, without the header").

#![forbid(unsafe_code)]

use std::collections::VecDeque;

use openai_http::{Api, DEFAULT_BASE_URL, Progress, Response, request_of};
use serde::Deserialize;
use serde_json::json;
use switchboard_plugin_api::prelude::*;

/// The audio `response_format: "pcm"` returns: PCM16 LE mono at 24000 Hz.
pub const OUTPUT_FORMAT: AudioFormat = AudioFormat {
    encoding: AudioEncoding::Pcm16,
    sample_rate: 24_000,
};

/// Longest `input` the API accepts (characters); longer text is sent as several requests.
pub const MAX_INPUT_CHARS: usize = 4096;

/// Requests in flight at once: the utterance playing and the next one, so the next one's
/// time to first byte overlaps this one's audio.
pub const MAX_IN_FLIGHT: usize = 2;

/// Most audio held for an utterance that is not playing yet (bytes): 60 s at 24 kHz PCM16, far
/// more than one clause.
pub const MAX_HELD_BYTES: usize = 24_000 * 2 * 60;

/// What errors name this upstream call.
const WHAT: &str = "OpenAI speech";

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    base_url: String,
    model: String,
    voice: String,
    instructions: Option<String>,
    speed: Option<f64>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.into(),
            model: "gpt-4o-mini-tts".into(),
            voice: "alloy".into(),
            instructions: None,
            speed: None,
        }
    }
}

/// Text sent as one request: all or part of an utterance.
struct Segment {
    text: String,
    /// The last segment of its utterance: `utterance-done` follows its audio.
    ends_utterance: bool,
    /// The request, once sent.
    response: Option<Response>,
    /// Audio that arrived before this segment's turn to play.
    held: Vec<u8>,
    /// An odd last byte, waiting for its other half in the next chunk.
    carry: Option<u8>,
    /// The response is complete (or there was nothing to say).
    done: bool,
}

/// One call's synthesizer.
pub struct OpenAiTts {
    api: Api,
    settings: Settings,
    /// Text given since the last flush.
    text: String,
    /// Segments of flushed utterances, oldest (playing) first.
    queue: VecDeque<Segment>,
}

impl Tts for OpenAiTts {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "openai-tts".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "OpenAI text to speech (/audio/speech), streamed as 24 kHz PCM".into(),
            // Not used by a synthesizer; the contract requires one.
            input_format: OUTPUT_FORMAT,
        }
    }

    fn open(config: SessionConfig) -> Result<Self, PluginError> {
        let settings: Settings = serde_json::from_str(&config.settings)
            .map_err(|e| PluginError::InvalidConfig(format!("openai-tts settings: {e}")))?;
        for (key, value) in [("model", &settings.model), ("voice", &settings.voice)] {
            if value.is_empty() {
                return Err(PluginError::InvalidConfig(format!(
                    "openai-tts settings: {key} is empty"
                )));
            }
        }
        if let Some(speed) = settings.speed
            && !(0.25..=4.0).contains(&speed)
        {
            return Err(PluginError::InvalidConfig(format!(
                "openai-tts settings: speed {speed} is outside 0.25–4.0"
            )));
        }
        Ok(Self {
            api: Api::new(&settings.base_url)?,
            settings,
            text: String::new(),
            queue: VecDeque::new(),
        })
    }

    fn handle(&mut self, input: TtsInput) -> Result<Vec<TtsOutput>, PluginError> {
        let mut out = Vec::new();
        match input {
            TtsInput::Text(text) => self.text.push_str(&text),
            TtsInput::Flush => {
                let text = std::mem::take(&mut self.text);
                let mut segments = split(text.trim());
                let empty = segments.is_empty();
                if empty {
                    segments.push(String::new());
                }
                let last = segments.len() - 1;
                for (i, text) in segments.into_iter().enumerate() {
                    self.queue.push_back(Segment {
                        text,
                        ends_utterance: i == last,
                        response: None,
                        held: Vec::new(),
                        carry: None,
                        done: empty,
                    });
                }
                self.step(&mut out)?;
            }
            TtsInput::Cancel | TtsInput::Hangup => self.cancel(),
            TtsInput::Io(event) => {
                if let Err(e) = self
                    .on_io(event, &mut out)
                    .and_then(|()| self.step(&mut out))
                {
                    self.cancel();
                    return Err(e);
                }
            }
        }
        Ok(out)
    }
}

impl OpenAiTts {
    /// Cancels every request in flight and drops the text and queued utterances.
    fn cancel(&mut self) {
        self.text.clear();
        for segment in self.queue.drain(..) {
            if let (Some(response), false) = (segment.response, segment.done) {
                host::cancel(response.id);
            }
        }
    }

    fn on_io(&mut self, event: IoEvent, out: &mut Vec<TtsOutput>) -> Result<(), PluginError> {
        let Some(id) = request_of(&event) else {
            return Ok(());
        };
        let Some(index) = self
            .queue
            .iter()
            .position(|s| s.response.as_ref().is_some_and(|r| r.id == id))
        else {
            return Ok(()); // a cancelled request's late event
        };
        let segment = &mut self.queue[index];
        let Some(response) = segment.response.as_mut() else {
            return Ok(());
        };
        match response.on_event(event)? {
            Progress::Nothing => {}
            Progress::Data(data) if index == 0 => play(segment, &data, out),
            Progress::Data(data) => {
                if segment.held.len() + data.len() > MAX_HELD_BYTES {
                    return Err(PluginError::Upstream(format!(
                        "{WHAT}: more than {MAX_HELD_BYTES} bytes of audio for one utterance"
                    )));
                }
                segment.held.extend_from_slice(&data);
            }
            Progress::Done => segment.done = true,
        }
        Ok(())
    }

    /// Plays what is ready, in order, ends finished utterances, and sends the next requests.
    fn step(&mut self, out: &mut Vec<TtsOutput>) -> Result<(), PluginError> {
        while let Some(head) = self.queue.front_mut() {
            let held = std::mem::take(&mut head.held);
            play(head, &held, out);
            if !head.done {
                break;
            }
            if head.ends_utterance {
                out.push(TtsOutput::UtteranceDone);
            }
            self.queue.pop_front();
        }
        let mut in_flight = self
            .queue
            .iter()
            .filter(|s| s.response.is_some() && !s.done)
            .count();
        for i in 0..self.queue.len() {
            if in_flight >= MAX_IN_FLIGHT {
                break;
            }
            let segment = &self.queue[i];
            if segment.response.is_some() || segment.done {
                continue;
            }
            let body = self.request(&segment.text);
            let id = self
                .api
                .post("/audio/speech", "application/json", &[], body)?;
            self.queue[i].response = Some(Response::new(id, WHAT));
            in_flight += 1;
        }
        Ok(())
    }

    /// The request body for `input`.
    fn request(&self, input: &str) -> Vec<u8> {
        let mut body = json!({
            "model": self.settings.model,
            "voice": self.settings.voice,
            "input": input,
            "response_format": "pcm",
        });
        if let Some(instructions) = self
            .settings
            .instructions
            .as_deref()
            .filter(|i| !i.is_empty())
        {
            body["instructions"] = json!(instructions);
        }
        if let Some(speed) = self.settings.speed {
            body["speed"] = json!(speed);
        }
        body.to_string().into_bytes()
    }
}

/// Queues `data` (after the segment's odd byte, if any) as audio, keeping a new odd last byte
/// for the next chunk: an HTTP chunk may end inside a sample.
fn play(segment: &mut Segment, data: &[u8], out: &mut Vec<TtsOutput>) {
    if data.is_empty() {
        return;
    }
    let mut bytes = Vec::with_capacity(data.len() + 1);
    bytes.extend(segment.carry.take());
    bytes.extend_from_slice(data);
    if bytes.len() % 2 == 1 {
        segment.carry = bytes.pop();
    }
    if !bytes.is_empty() {
        out.push(TtsOutput::Audio(AudioFrame {
            format: OUTPUT_FORMAT,
            data: bytes,
            timestamp_ms: 0,
        }));
    }
}

/// `text` cut into pieces of at most [`MAX_INPUT_CHARS`] characters, at the last whitespace
/// before the limit when there is one; no pieces for empty text.
fn split(text: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let Some((limit, _)) = rest.char_indices().nth(MAX_INPUT_CHARS) else {
            pieces.push(rest.to_string());
            break;
        };
        let cut = rest[..limit]
            .rfind(char::is_whitespace)
            .filter(|&i| i > 0)
            .unwrap_or(limit);
        pieces.push(rest[..cut].trim_end().to_string());
        rest = rest[cut..].trim_start();
    }
    pieces
}

switchboard_plugin_api::export_plugin!(tts: OpenAiTts);
