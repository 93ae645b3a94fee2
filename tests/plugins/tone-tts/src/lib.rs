//! Test fixture: a text-to-speech stage that "speaks" a 440 Hz tone, `ms_per_char` milliseconds
//! (default 50) per character of text, as PCM16 at 8000 Hz, so a test knows exactly how long each
//! clause of a reply plays.

#![forbid(unsafe_code)]

use serde::Deserialize;
use switchboard_plugin_api::prelude::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_ms_per_char")]
    ms_per_char: u32,
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
        Ok(Self {
            ms_per_char: settings.ms_per_char,
            text: String::new(),
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
                    let phase = i as f32 * 2.0 * std::f32::consts::PI * 440.0 / RATE as f32;
                    let s = (phase.sin() * 8000.0) as i16;
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
