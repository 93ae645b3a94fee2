//! Test fixture: a text-to-speech stage that "speaks" a 440 Hz tone, `ms_per_char` milliseconds
//! (default 50) per character of text, as PCM16 at 8000 Hz, so a test knows exactly how long each
//! clause of a reply plays.
//!
//! With `voice = "recording"` it speaks a real human voice for the same time instead: the speech
//! fixture `tests/fixtures/speech/beckett.wav` (built in), looped from where the last clause
//! stopped. A voice activity detector hears that as speech, as it hears a real agent's voice —
//! and its echo.

#![forbid(unsafe_code)]

use serde::Deserialize;
use switchboard_plugin_api::prelude::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_ms_per_char")]
    ms_per_char: u32,
    #[serde(default)]
    voice: Voice,
}

/// What the "voice" sounds like.
#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Voice {
    /// A 440 Hz tone.
    #[default]
    Tone,
    /// The built-in recording of a human voice.
    Recording,
}

/// The built-in recording: 16-bit mono PCM WAV at 16 kHz.
const RECORDING_WAV: &[u8] = include_bytes!("../../../fixtures/speech/beckett.wav");

/// Gain on the recording: it is quiet (about −31 dBFS while voiced); ×4.5 (+13 dB) puts it near
/// −18 dBFS, where synthesized voices play.
const RECORDING_GAIN: i32 = 9;

/// The recording's samples at [`RATE`]: the WAV's `data` chunk, two 16 kHz samples averaged into
/// one (a crude low-pass, enough for a test voice), at [`RECORDING_GAIN`] / 2.
fn recording() -> Vec<i16> {
    let mut at = 12; // after "RIFF", size, "WAVE"
    while at + 8 <= RECORDING_WAV.len() {
        let id = &RECORDING_WAV[at..at + 4];
        let size = u32::from_le_bytes([
            RECORDING_WAV[at + 4],
            RECORDING_WAV[at + 5],
            RECORDING_WAV[at + 6],
            RECORDING_WAV[at + 7],
        ]) as usize;
        let body = &RECORDING_WAV[at + 8..(at + 8 + size).min(RECORDING_WAV.len())];
        if id == b"data" {
            return body
                .chunks_exact(4)
                .map(|c| {
                    let a = i32::from(i16::from_le_bytes([c[0], c[1]]));
                    let b = i32::from(i16::from_le_bytes([c[2], c[3]]));
                    ((a + b) * RECORDING_GAIN / 4).clamp(-32768, 32767) as i16
                })
                .collect();
        }
        at += 8 + size + (size & 1);
    }
    Vec::new()
}

fn default_ms_per_char() -> u32 {
    50
}

/// Sample rate of the tone (Hz).
pub const RATE: u32 = 8000;

/// One call's fixture synthesizer.
pub struct ToneTts {
    ms_per_char: u32,
    text: String,
    /// The recording's samples when the voice is a recording, and where the next clause starts.
    recording: Option<(Vec<i16>, usize)>,
}

impl Tts for ToneTts {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "tone-tts".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Test fixture: a tone as long as the text".into(),
            input_format: AudioFormat {
                encoding: AudioEncoding::Pcm16,
                sample_rate: RATE,
            },
        }
    }

    fn open(config: SessionConfig) -> Result<Self, PluginError> {
        let settings: Settings = serde_json::from_str(&config.settings)
            .map_err(|e| PluginError::InvalidConfig(e.to_string()))?;
        let recording = (settings.voice == Voice::Recording)
            .then(recording)
            .filter(|r| !r.is_empty())
            .map(|r| (r, 0));
        if settings.voice == Voice::Recording && recording.is_none() {
            return Err(PluginError::Internal(
                "the built-in recording is empty".into(),
            ));
        }
        Ok(Self {
            ms_per_char: settings.ms_per_char,
            text: String::new(),
            recording,
        })
    }

    fn handle(&mut self, input: TtsInput) -> Result<Vec<TtsOutput>, PluginError> {
        Ok(match input {
            TtsInput::Text(t) => {
                self.text.push_str(&t);
                Vec::new()
            }
            TtsInput::Flush => {
                let chars = std::mem::take(&mut self.text).chars().count() as u32;
                let samples = chars * self.ms_per_char * RATE / 1000;
                let mut data = Vec::with_capacity(samples as usize * 2);
                for i in 0..samples {
                    let s = match &mut self.recording {
                        Some((pcm, at)) => {
                            let s = pcm[*at % pcm.len()];
                            *at = (*at + 1) % pcm.len();
                            s
                        }
                        None => {
                            let phase = i as f32 * 2.0 * std::f32::consts::PI * 440.0 / RATE as f32;
                            (phase.sin() * 8000.0) as i16
                        }
                    };
                    data.extend_from_slice(&s.to_le_bytes());
                }
                vec![
                    TtsOutput::Audio(AudioFrame {
                        format: AudioFormat {
                            encoding: AudioEncoding::Pcm16,
                            sample_rate: RATE,
                        },
                        data,
                        timestamp_ms: 0,
                    }),
                    TtsOutput::UtteranceDone,
                ]
            }
            TtsInput::Cancel => {
                self.text.clear();
                Vec::new()
            }
            _ => Vec::new(),
        })
    }
}

switchboard_plugin_api::export_plugin!(tts: ToneTts);
