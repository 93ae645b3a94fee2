//! Echo: a realtime plugin that plays the caller's speech back to them.
//!
//! It is both a shipped plugin (the offline agent that proves a call works end to end) and the
//! template for plugin authors: copy this crate, rename it, and replace the session logic.
//!
//! Settings (the agent's `realtime.settings` in agents.toml, all optional):
//! - `mode`: `"utterance"` (default) plays back each caller utterance once the caller pauses;
//!   `"immediate"` returns every frame as soon as it arrives (a loopback for latency tests).
//! - `silence_ms` (default 600): how long the caller must be quiet to end an utterance.
//! - `threshold` (default 500): RMS level (PCM16 units) above which a 20 ms frame counts as speech.
//! - `greeting_tone` (default false): play a short 440 Hz tone when the call starts.
//! - `result` (default none): any JSON value. When the agent is granted the host's
//!   `record_result` tool, the plugin records it as the call's result as soon as it learns its
//!   tools — how a plugin calls a tool the host runs (`tool-call`, then a `tool-result` input).
//!
//! DTMF: `#` hangs up; any other key stops the reply that is playing (`clear-playback`).

#![forbid(unsafe_code)]

use serde::Deserialize;
use switchboard_plugin_api::prelude::*;

/// Every sample the plugin receives and plays is PCM16 at this rate (Hz): the host converts from
/// and to Twilio's 8 kHz μ-law.
const SAMPLE_RATE: u32 = 8000;
/// Caller audio kept from before speech starts, so the first syllable is not clipped (ms).
const PRE_ROLL_MS: u32 = 200;
/// Longest utterance kept before it is played back anyway (ms); bounds the session's memory.
const MAX_UTTERANCE_MS: u32 = 30_000;
/// Length of the greeting tone (ms).
const TONE_MS: u32 = 400;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    #[default]
    Utterance,
    Immediate,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    mode: Mode,
    silence_ms: u32,
    threshold: u16,
    greeting_tone: bool,
    result: Option<serde_json::Value>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            mode: Mode::Utterance,
            silence_ms: 600,
            threshold: 500,
            greeting_tone: false,
            result: None,
        }
    }
}

/// The id of the plugin's one tool call.
const RESULT_CALL: &str = "echo-result";

/// One call's state: the host opens one per call and feeds it that call's inputs.
pub struct EchoSession {
    settings: Settings,
    state: State,
}

#[derive(Default)]
struct State {
    greeted: bool,
    /// PCM16 little-endian bytes of the utterance in progress (or the pre-roll while idle).
    buffer: Vec<u8>,
    in_speech: bool,
    /// Quiet time since the last loud frame, in ms.
    silence_ms: u32,
    /// Bytes of trailing quiet frames at the end of `buffer`, trimmed before playback.
    trailing_quiet_bytes: usize,
    utterances: u32,
    /// The `result` setting was handed to `record_result`.
    recorded: bool,
}

impl Realtime for EchoSession {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "echo".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Plays the caller's speech back".into(),
            // Ask for PCM16 so the plugin can measure loudness; the host decodes μ-law for us.
            input_format: pcm16(),
        }
    }

    fn open(config: SessionConfig) -> Result<Self, PluginError> {
        let settings: Settings = serde_json::from_str(&config.settings)
            .map_err(|e| PluginError::InvalidConfig(format!("echo settings: {e}")))?;
        if config.input_format != pcm16() {
            return Err(PluginError::Unsupported(
                "echo needs PCM16 at 8000 Hz".into(),
            ));
        }
        host::log(
            LogLevel::Info,
            &format!("echo session open, mode {:?}", settings.mode),
        );
        Ok(EchoSession {
            settings,
            state: State::default(),
        })
    }

    fn handle(&mut self, input: SessionInput) -> Result<Vec<SessionOutput>, PluginError> {
        let state = &mut self.state;
        let mut out = Vec::new();
        if !state.greeted {
            state.greeted = true;
            if self.settings.greeting_tone {
                out.push(SessionOutput::Play(frame(tone(TONE_MS, 440.0))));
                out.push(SessionOutput::Mark("greeting".into()));
            }
        }
        match input {
            SessionInput::Audio(audio) => match self.settings.mode {
                Mode::Immediate => out.push(SessionOutput::Play(frame(audio.data))),
                Mode::Utterance => state.listen(&self.settings, &audio.data, &mut out),
            },
            SessionInput::Dtmf(digit) if digit == "#" => out.push(SessionOutput::HangUp),
            SessionInput::Dtmf(_) => out.push(SessionOutput::ClearPlayback),
            SessionInput::MarkPlayed(name) => {
                host::log(LogLevel::Debug, &format!("caller heard up to mark {name}"));
            }
            SessionInput::Tools(tools) => {
                // Each `tools` input replaces the list; record the result once.
                let granted = tools.iter().any(|t| t.name == "record_result");
                if let (true, false, Some(result)) =
                    (granted, state.recorded, &self.settings.result)
                {
                    state.recorded = true;
                    out.push(SessionOutput::ToolCall(ToolCall {
                        id: RESULT_CALL.into(),
                        name: "record_result".into(),
                        arguments: result.to_string(),
                    }));
                }
            }
            SessionInput::ToolResult(result) => {
                let (level, text) = match result.outcome {
                    ToolOutcome::Output(_) => (LogLevel::Info, "result recorded".to_string()),
                    ToolOutcome::Error(e) => (LogLevel::Warn, format!("result refused: {e}")),
                };
                host::log(level, &text);
            }
            SessionInput::Interrupted(_) | SessionInput::Hangup | SessionInput::Io(_) => {}
        }
        Ok(out)
    }
}

impl State {
    /// Adds one frame of caller audio; when an utterance ends, queues it for playback.
    fn listen(&mut self, settings: &Settings, pcm: &[u8], out: &mut Vec<SessionOutput>) {
        let loud = rms(pcm) >= f64::from(settings.threshold);
        self.buffer.extend_from_slice(pcm);
        if !self.in_speech {
            if loud {
                self.in_speech = true;
                self.silence_ms = 0;
                self.trailing_quiet_bytes = 0;
            } else {
                // Idle: keep only the pre-roll.
                let keep = bytes_for_ms(PRE_ROLL_MS);
                if self.buffer.len() > keep {
                    self.buffer.drain(..self.buffer.len() - keep);
                }
            }
            return;
        }
        if loud {
            self.silence_ms = 0;
            self.trailing_quiet_bytes = 0;
        } else {
            self.silence_ms += frame_ms(pcm);
            self.trailing_quiet_bytes += pcm.len();
        }
        if self.silence_ms >= settings.silence_ms
            || self.buffer.len() >= bytes_for_ms(MAX_UTTERANCE_MS)
        {
            let end = self.buffer.len() - self.trailing_quiet_bytes;
            let utterance: Vec<u8> = self.buffer.drain(..).take(end).collect();
            self.in_speech = false;
            self.utterances += 1;
            out.push(SessionOutput::Play(frame(utterance)));
            out.push(SessionOutput::Mark(format!(
                "utterance-{}",
                self.utterances
            )));
        }
    }
}

fn pcm16() -> AudioFormat {
    AudioFormat {
        encoding: AudioEncoding::Pcm16,
        sample_rate: SAMPLE_RATE,
    }
}

fn frame(data: Vec<u8>) -> AudioFrame {
    AudioFrame {
        format: pcm16(),
        data,
        timestamp_ms: 0,
    }
}

fn bytes_for_ms(ms: u32) -> usize {
    (SAMPLE_RATE / 1000 * ms * 2) as usize
}

fn frame_ms(pcm: &[u8]) -> u32 {
    (pcm.len() / 2) as u32 * 1000 / SAMPLE_RATE
}

/// Root-mean-square level of PCM16 little-endian samples.
fn rms(pcm: &[u8]) -> f64 {
    let samples = pcm.chunks_exact(2);
    let n = samples.len();
    if n == 0 {
        return 0.0;
    }
    let sum: f64 = samples
        .map(|s| f64::from(i16::from_le_bytes([s[0], s[1]])).powi(2))
        .sum();
    (sum / n as f64).sqrt()
}

/// A sine tone at a quarter of full scale, as PCM16 little-endian bytes.
fn tone(ms: u32, hz: f64) -> Vec<u8> {
    let n = SAMPLE_RATE / 1000 * ms;
    (0..n)
        .flat_map(|i| {
            let t = f64::from(i) / f64::from(SAMPLE_RATE);
            let s = (8192.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16;
            s.to_le_bytes()
        })
        .collect()
}

// The plugin's entry points: component exports on wasm32, the native entry symbol elsewhere.
switchboard_plugin_api::export_plugin!(realtime: EchoSession);
