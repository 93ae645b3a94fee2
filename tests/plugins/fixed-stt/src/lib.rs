//! Test fixture: a speech-to-text stage that recognises nothing. Every caller turn that had
//! audio is reported as the fixed text of its `text` setting when the host's endpointing sends
//! `end-of-turn`, so pipeline tests control what the "caller said" exactly. With `delay_ms`, it
//! blocks its thread that long before answering, as a local recognizer computing would. With
//! `then = ["…", …]`, the second turn is reported as the first of those, the third as the
//! second, and so on (the last repeats), so a test can script a dialogue.

#![forbid(unsafe_code)]

use serde::Deserialize;
use switchboard_plugin_api::prelude::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    text: String,
    #[serde(default)]
    then: Vec<String>,
    #[serde(default)]
    delay_ms: u64,
}

/// One call's fixture recognizer.
pub struct FixedStt {
    text: String,
    /// What later turns are reported as, in order (reversed: the next is last).
    then: Vec<String>,
    delay_ms: u64,
    frames: u32,
}

impl Stt for FixedStt {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "fixed-stt".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Test fixture: a fixed transcript per caller turn".into(),
            input_format: AudioFormat {
                encoding: AudioEncoding::Pcm16,
                sample_rate: 8000,
            },
        }
    }

    fn open(config: SessionConfig) -> Result<Self, PluginError> {
        let settings: Settings = serde_json::from_str(&config.settings)
            .map_err(|e| PluginError::InvalidConfig(e.to_string()))?;
        Ok(Self {
            text: settings.text,
            then: settings.then.into_iter().rev().collect(),
            delay_ms: settings.delay_ms,
            frames: 0,
        })
    }

    fn handle(&mut self, input: SttInput) -> Result<Vec<SttOutput>, PluginError> {
        Ok(match input {
            SttInput::Audio(_) => {
                self.frames += 1;
                Vec::new()
            }
            SttInput::EndOfTurn if self.frames > 0 => {
                self.frames = 0;
                if self.delay_ms > 0 {
                    std::thread::sleep(std::time::Duration::from_millis(self.delay_ms));
                }
                vec![
                    SttOutput::Transcript(SttTranscript {
                        text: match self.then.pop() {
                            Some(next) => std::mem::replace(&mut self.text, next),
                            None => self.text.clone(),
                        },
                        is_final: true,
                    }),
                    SttOutput::EndOfTurn,
                ]
            }
            _ => Vec::new(),
        })
    }
}

switchboard_plugin_api::export_plugin!(stt: FixedStt);
