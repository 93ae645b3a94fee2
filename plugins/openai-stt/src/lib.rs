//! OpenAI speech to text: the STT stage of a pipeline agent, backed by the
//! `POST /audio/transcriptions` endpoint of OpenAI or of any server that speaks it (a local
//! whisper server, say), reached through the host's HTTP I/O.
//!
//! The recognizer keeps the caller's audio (PCM16 mono at 16000 Hz, the rate Whisper-family
//! models work at) until the host's endpointing says `end-of-turn`; then it uploads the turn as
//! one WAV file and answers with the final transcript followed by its own `end-of-turn`, which
//! closes the turn in the orchestrator. A turn with no audio answers at once with an empty final
//! transcript, without a request. Turns whose requests overlap are answered in order.
//!
//! Settings (the agent's STT `settings`; all optional):
//! - `base_url` (`"https://api.openai.com/v1"`): the API root;
//! - `model` (`"gpt-4o-mini-transcribe"`; `whisper-1`, `gpt-4o-transcribe` also work);
//! - `language`: the caller's language as ISO-639-1 (`"en"`), which improves accuracy and
//!   latency;
//! - `prompt`: text to guide the model (names, jargon, the previous turn's style).
//!
//! Secrets: `api_key`, sent as `Authorization: Bearer …`; without one no header is sent (local
//! servers). The agent's `allowed_hosts` must include the `base_url` host.
//!
//! Protocol: the OpenAI API reference, "Create transcription"
//! (developers.openai.com/api/reference/resources/audio/subresources/transcriptions/methods/create):
//! a `multipart/form-data` body (RFC 7578) with `file`, `model`, `response_format`, `language`,
//! `prompt`; the `json` response is `{"text": "…"}`.

#![forbid(unsafe_code)]

use std::collections::VecDeque;

use openai_http::{Api, DEFAULT_BASE_URL, Progress, Response, request_of};
use serde::Deserialize;
use switchboard_plugin_api::prelude::*;

/// Caller audio the recognizer asks the host for: PCM16 mono at 16000 Hz.
pub const INPUT_FORMAT: AudioFormat = AudioFormat {
    encoding: AudioEncoding::Pcm16,
    sample_rate: 16_000,
};

/// Most audio kept for one turn (ms); older audio is dropped first. A phone turn lasts seconds;
/// two minutes of PCM16 at 16 kHz (3.84 MB) stays far below the API's 25 MB upload limit.
pub const MAX_TURN_MS: u64 = 120_000;

/// Largest transcription response accepted (bytes): `{"text": …}` for two minutes of speech is
/// a few kilobytes.
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// What errors name this upstream call.
const WHAT: &str = "OpenAI transcription";

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    base_url: String,
    model: String,
    language: Option<String>,
    prompt: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.into(),
            model: "gpt-4o-mini-transcribe".into(),
            language: None,
            prompt: None,
        }
    }
}

/// A turn waiting for its transcript.
struct Pending {
    /// The request, or `None` for an empty turn (answered without one).
    response: Option<Response>,
    /// The response body so far.
    body: Vec<u8>,
    /// The transcript, once the response is complete.
    text: Option<String>,
}

/// One call's recognizer.
pub struct OpenAiStt {
    api: Api,
    settings: Settings,
    /// Sample rate of the caller audio (Hz), for the WAV header.
    sample_rate: u32,
    /// The current turn's PCM16 bytes.
    turn: VecDeque<u8>,
    /// Turns sent (or empty), oldest first.
    pending: VecDeque<Pending>,
}

impl Stt for OpenAiStt {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "openai-stt".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "OpenAI speech to text (/audio/transcriptions), one request per turn"
                .into(),
            input_format: INPUT_FORMAT,
        }
    }

    fn open(config: SessionConfig) -> Result<Self, PluginError> {
        let settings: Settings = serde_json::from_str(&config.settings)
            .map_err(|e| PluginError::InvalidConfig(format!("openai-stt settings: {e}")))?;
        if settings.model.is_empty() {
            return Err(PluginError::InvalidConfig(
                "openai-stt settings: model is empty".into(),
            ));
        }
        if config.input_format.encoding != AudioEncoding::Pcm16 {
            return Err(PluginError::Unsupported(
                "openai-stt takes PCM16 caller audio only".into(),
            ));
        }
        Ok(Self {
            api: Api::new(&settings.base_url)?,
            settings,
            sample_rate: config.input_format.sample_rate,
            turn: VecDeque::new(),
            pending: VecDeque::new(),
        })
    }

    fn handle(&mut self, input: SttInput) -> Result<Vec<SttOutput>, PluginError> {
        let mut out = Vec::new();
        match input {
            SttInput::Audio(frame) => self.hear(&frame.data),
            SttInput::EndOfTurn => {
                self.end_turn()?;
                self.answer_ready(&mut out);
            }
            SttInput::Io(event) => {
                self.on_io(event)?;
                self.answer_ready(&mut out);
            }
            SttInput::Hangup => {
                for pending in self.pending.drain(..) {
                    if let Some(response) = pending.response {
                        host::cancel(response.id);
                    }
                }
            }
        }
        Ok(out)
    }
}

impl OpenAiStt {
    /// Keeps caller audio, dropping the oldest past [`MAX_TURN_MS`].
    fn hear(&mut self, pcm: &[u8]) {
        self.turn.extend(pcm);
        let max = (u64::from(self.sample_rate) * 2 * MAX_TURN_MS / 1000) as usize;
        if self.turn.len() > max {
            // Whole samples only: drop an even number of bytes.
            let excess = (self.turn.len() - max + 1) & !1;
            self.turn.drain(..excess.min(self.turn.len()));
        }
    }

    /// Sends the turn's audio for transcription (or queues an empty answer).
    fn end_turn(&mut self) -> Result<(), PluginError> {
        let mut pcm: Vec<u8> = std::mem::take(&mut self.turn).into();
        pcm.truncate(pcm.len() & !1);
        if pcm.is_empty() {
            self.pending.push_back(Pending {
                response: None,
                body: Vec::new(),
                text: Some(String::new()),
            });
            return Ok(());
        }
        let wav = wav(&pcm, self.sample_rate);
        let mut fields = vec![
            ("model", self.settings.model.as_str()),
            ("response_format", "json"),
        ];
        if let Some(language) = self.settings.language.as_deref().filter(|l| !l.is_empty()) {
            fields.push(("language", language));
        }
        if let Some(prompt) = self.settings.prompt.as_deref().filter(|p| !p.is_empty()) {
            fields.push(("prompt", prompt));
        }
        let boundary = boundary_for(&wav);
        let body = multipart(&boundary, ("turn.wav", "audio/wav", &wav), &fields);
        let id = self.api.post(
            "/audio/transcriptions",
            &format!("multipart/form-data; boundary={boundary}"),
            &[("Accept", "application/json")],
            body,
        )?;
        self.pending.push_back(Pending {
            response: Some(Response::new(id, WHAT)),
            body: Vec::new(),
            text: None,
        });
        Ok(())
    }

    fn on_io(&mut self, event: IoEvent) -> Result<(), PluginError> {
        let Some(id) = request_of(&event) else {
            return Ok(());
        };
        let Some(index) = self
            .pending
            .iter()
            .position(|p| p.response.as_ref().is_some_and(|r| r.id == id))
        else {
            return Ok(()); // a request of a hung-up call, or already answered
        };
        let result = self.on_response(index, event);
        if result.is_err() {
            self.pending.remove(index);
        }
        result
    }

    fn on_response(&mut self, index: usize, event: IoEvent) -> Result<(), PluginError> {
        let pending = &mut self.pending[index];
        let Some(response) = pending.response.as_mut() else {
            return Ok(());
        };
        match response.on_event(event)? {
            Progress::Nothing => {}
            Progress::Data(data) => {
                if pending.body.len() + data.len() > MAX_RESPONSE_BYTES {
                    return Err(PluginError::Upstream(format!(
                        "{WHAT}: response larger than {MAX_RESPONSE_BYTES} bytes"
                    )));
                }
                pending.body.extend_from_slice(&data);
            }
            Progress::Done => pending.text = Some(transcript(&pending.body)?),
        }
        Ok(())
    }

    /// Answers the turns whose transcripts are in, oldest first, stopping at one still out.
    fn answer_ready(&mut self, out: &mut Vec<SttOutput>) {
        while let Some(text) = self.pending.front_mut().and_then(|p| p.text.take()) {
            self.pending.pop_front();
            out.push(SttOutput::Transcript(SttTranscript {
                text,
                is_final: true,
            }));
            out.push(SttOutput::EndOfTurn);
        }
    }
}

/// `text` of a `json` transcription response (trimmed: Whisper often starts with a space).
fn transcript(body: &[u8]) -> Result<String, PluginError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| PluginError::Upstream(format!("{WHAT}: response is not JSON: {e}")))?;
    value["text"]
        .as_str()
        .map(|t| t.trim().to_string())
        .ok_or_else(|| PluginError::Upstream(format!("{WHAT}: response has no \"text\"")))
}

/// A WAV file (RIFF, `WAVE_FORMAT_PCM`, mono, 16-bit) holding `pcm` (PCM16 LE at `sample_rate`
/// Hz): the canonical 44-byte header of Microsoft's RIFF WAVE specification, then the samples.
pub fn wav(pcm: &[u8], sample_rate: u32) -> Vec<u8> {
    let data_len = pcm.len() as u32;
    let mut out = Vec::with_capacity(44 + pcm.len());
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes()); // fmt chunk size
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&(sample_rate * 2).to_le_bytes()); // bytes per second
    out.extend_from_slice(&2u16.to_le_bytes()); // bytes per frame
    out.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    out.extend_from_slice(pcm);
    out
}

/// A multipart boundary that does not occur in `file` (RFC 2046 §5.1.1: at most 70
/// characters, and must not appear in the encapsulated data).
fn boundary_for(file: &[u8]) -> String {
    let stamp = host::now_ms();
    (0u32..)
        .map(|n| format!("switchboard-{stamp:x}-{n}"))
        .find(|b| !file.windows(b.len()).any(|w| w == b.as_bytes()))
        .unwrap_or_default()
}

/// A `multipart/form-data` body (RFC 7578): `file` as (filename, content type, bytes) under
/// the name `file`, then each text field.
fn multipart(boundary: &str, file: (&str, &str, &[u8]), fields: &[(&str, &str)]) -> Vec<u8> {
    let (filename, content_type, bytes) = file;
    let mut body = Vec::with_capacity(bytes.len() + 512);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

switchboard_plugin_api::export_plugin!(stt: OpenAiStt);
