//! A Piper voice: its `.onnx.json` config and its ONNX Runtime session, loaded once per process
//! and shared by every call, and the one step that turns phoneme ids into samples.
//!
//! ONNX Runtime is a shared library loaded at run time (`ort`'s `load-dynamic`), once per process:
//! the first voice loaded decides which `libonnxruntime.so` the process uses.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::Tensor;
use serde::Deserialize;

/// Threads ONNX Runtime may use for one synthesis: one, because the gateway runs beside it on a
/// two-core machine and one sentence already synthesises several times faster than real time.
const INTRA_OP_THREADS: usize = 1;

/// Why a voice could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum VoiceError {
    /// ONNX Runtime's library could not be loaded.
    #[error("cannot load ONNX Runtime from {path}: {message}")]
    Runtime {
        /// The library.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The voice's `.onnx.json` is unreadable or not a Piper espeak voice config.
    #[error("voice config {path}: {message}")]
    Config {
        /// The `.onnx.json` file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// ONNX Runtime could not load the voice model.
    #[error("cannot load voice model {path}: {message}")]
    Model {
        /// The `.onnx` file.
        path: PathBuf,
        /// ONNX Runtime's message.
        message: String,
    },
    /// ONNX Runtime failed while synthesising.
    #[error("synthesis failed: {0}")]
    Inference(String),
}

/// What the voice's `.onnx.json` says, as far as synthesis needs it.
#[derive(Debug, Clone)]
pub struct VoiceConfig {
    /// Sample rate of the voice's audio, Hz (22050 for `medium` voices).
    pub sample_rate: u32,
    /// The espeak-ng voice that phonemizes for it (`en-us`).
    pub espeak_voice: String,
    /// Default noise scale (variation of the voice), dimensionless.
    pub noise_scale: f32,
    /// Default length scale: duration multiplier, > 1 speaks slower.
    pub length_scale: f32,
    /// Default phoneme-duration noise (variation of the rhythm), dimensionless.
    pub noise_w: f32,
    /// Phoneme (one Unicode code point) to model ids.
    pub phoneme_id_map: HashMap<char, Vec<i64>>,
}

#[derive(Deserialize)]
struct RawConfig {
    audio: RawAudio,
    espeak: Option<RawEspeak>,
    inference: Option<RawInference>,
    phoneme_type: Option<String>,
    phoneme_id_map: HashMap<String, Vec<i64>>,
}

#[derive(Deserialize)]
struct RawAudio {
    sample_rate: u32,
}

#[derive(Deserialize)]
struct RawEspeak {
    voice: String,
}

#[derive(Deserialize)]
struct RawInference {
    noise_scale: Option<f32>,
    length_scale: Option<f32>,
    noise_w: Option<f32>,
}

impl VoiceConfig {
    /// Parses a Piper voice config (`.onnx.json`); `path` is named in errors.
    ///
    /// # Errors
    /// [`VoiceError::Config`]: not JSON of that shape, or not an espeak-phonemized voice.
    pub fn parse(json: &str, path: &Path) -> Result<Self, VoiceError> {
        let bad = |message: String| VoiceError::Config {
            path: path.to_path_buf(),
            message,
        };
        let raw: RawConfig = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
        if let Some(kind) = raw.phoneme_type.filter(|k| k != "espeak") {
            return Err(bad(format!(
                "phoneme_type {kind:?}: only espeak voices are supported"
            )));
        }
        if raw.audio.sample_rate == 0 {
            return Err(bad("audio.sample_rate is 0".into()));
        }
        let phoneme_id_map: HashMap<char, Vec<i64>> = raw
            .phoneme_id_map
            .into_iter()
            .filter_map(|(k, v)| {
                let mut chars = k.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) => Some((c, v)),
                    _ => None, // multi-code-point entries need Piper's vowel clusters
                }
            })
            .collect();
        for symbol in [
            crate::phonemes::PAD,
            crate::phonemes::BOS,
            crate::phonemes::EOS,
        ] {
            if !phoneme_id_map.contains_key(&symbol) {
                return Err(bad(format!("phoneme_id_map lacks {symbol:?}")));
            }
        }
        let inference = raw.inference.unwrap_or(RawInference {
            noise_scale: None,
            length_scale: None,
            noise_w: None,
        });
        Ok(Self {
            sample_rate: raw.audio.sample_rate,
            espeak_voice: raw.espeak.map_or_else(|| "en-us".into(), |e| e.voice),
            noise_scale: inference.noise_scale.unwrap_or(0.667),
            length_scale: inference.length_scale.unwrap_or(1.0),
            noise_w: inference.noise_w.unwrap_or(0.8),
            phoneme_id_map,
        })
    }
}

/// A loaded voice, shared by every call of the process that uses it.
pub struct Voice {
    /// The voice's config.
    pub config: VoiceConfig,
    /// `run` needs `&mut`: calls that synthesise at the same moment take turns.
    session: Mutex<Session>,
    /// The model takes a speaker id (`sid`): multi-speaker voices speak as speaker 0.
    multi_speaker: bool,
}

/// The process's ONNX Runtime: the library it loaded and its environment.
struct Runtime {
    library: PathBuf,
    environment: Environment,
}

static RUNTIME: Mutex<Option<Runtime>> = Mutex::new(None);
static VOICES: Mutex<Option<HashMap<PathBuf, Arc<Voice>>>> = Mutex::new(None);

impl Voice {
    /// The voice at `model` (its config beside it, `model` + `.json`), loading it and ONNX
    /// Runtime (from `onnxruntime`, the first time only) unless this process already has it.
    /// Paths should be absolute: they key the cache.
    ///
    /// # Errors
    /// [`VoiceError`]: the library, the config or the model could not be loaded.
    pub fn shared(model: &Path, onnxruntime: &Path) -> Result<Arc<Self>, VoiceError> {
        let mut voices = VOICES.lock().unwrap_or_else(PoisonError::into_inner);
        let voices = voices.get_or_insert_with(HashMap::new);
        if let Some(voice) = voices.get(model) {
            return Ok(Arc::clone(voice));
        }
        let voice = Arc::new(Self::load(model, onnxruntime)?);
        voices.insert(model.to_path_buf(), Arc::clone(&voice));
        Ok(voice)
    }

    fn load(model: &Path, onnxruntime: &Path) -> Result<Self, VoiceError> {
        let config_path = config_path(model);
        let json = std::fs::read_to_string(&config_path).map_err(|e| VoiceError::Config {
            path: config_path.clone(),
            message: e.to_string(),
        })?;
        let config = VoiceConfig::parse(&json, &config_path)?;
        let environment = environment(onnxruntime)?;
        let session = build_session(&environment, model).map_err(|e| VoiceError::Model {
            path: model.to_path_buf(),
            message: e.to_string(),
        })?;
        let names: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        for required in ["input", "input_lengths", "scales"] {
            if !names.contains(&required) {
                return Err(VoiceError::Model {
                    path: model.to_path_buf(),
                    message: format!("no input named {required:?} (inputs: {names:?})"),
                });
            }
        }
        let multi_speaker = names.contains(&"sid");
        Ok(Self {
            config,
            session: Mutex::new(session),
            multi_speaker,
        })
    }

    /// Synthesises one sentence: `ids` from [`crate::phonemes::phoneme_ids`]; `scales` are
    /// `[noise_scale, length_scale, noise_w]`. Returns mono samples in -1.0..=1.0 (unclipped) at
    /// [`VoiceConfig::sample_rate`] Hz.
    ///
    /// # Errors
    /// [`VoiceError::Inference`].
    pub fn synthesize(&self, ids: &[i64], scales: [f32; 3]) -> Result<Vec<f32>, VoiceError> {
        let failed = |e: ort::Error| VoiceError::Inference(e.to_string());
        let input = Tensor::from_array(([1usize, ids.len()], ids.to_vec())).map_err(failed)?;
        let lengths = Tensor::from_array(([1usize], vec![ids.len() as i64])).map_err(failed)?;
        let scales = Tensor::from_array(([3usize], scales.to_vec())).map_err(failed)?;
        let mut inputs = ort::inputs![
            "input" => input,
            "input_lengths" => lengths,
            "scales" => scales,
        ];
        if self.multi_speaker {
            let sid = Tensor::from_array(([1usize], vec![0i64])).map_err(failed)?;
            inputs.push(("sid".into(), sid.into()));
        }
        let mut session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        let outputs = session.run(inputs).map_err(failed)?;
        let (_, audio) = outputs[0].try_extract_tensor::<f32>().map_err(failed)?;
        Ok(audio.to_vec())
    }
}

/// An ONNX Runtime session for the model at `model`, on [`INTRA_OP_THREADS`] thread(s).
fn build_session(environment: &Environment, model: &Path) -> ort::Result<Session> {
    Session::builder(environment)?
        .with_optimization_level(GraphOptimizationLevel::Level3)?
        .with_intra_threads(INTRA_OP_THREADS)?
        .with_inter_threads(1)?
        .with_parallel_execution(false)?
        .commit_from_file(model)
}

/// The config of the voice model at `model`: `model` + `.json`, as Piper names it.
pub fn config_path(model: &Path) -> PathBuf {
    let mut path = model.as_os_str().to_owned();
    path.push(".json");
    PathBuf::from(path)
}

/// The process's ONNX Runtime environment, loading the library at `library` the first time.
fn environment(library: &Path) -> Result<Environment, VoiceError> {
    let mut runtime = RUNTIME.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(runtime) = runtime.as_ref() {
        if runtime.library != library {
            crate::log_warn(&format!(
                "ONNX Runtime is already loaded from {}; ignoring {}",
                runtime.library.display(),
                library.display()
            ));
        }
        return Ok(runtime.environment.clone());
    }
    let failed = |message: String| VoiceError::Runtime {
        path: library.to_path_buf(),
        message,
    };
    let environment = ort::init_from(library)
        .map_err(|e| failed(e.to_string()))?
        .with_name("switchboard-piper")
        .build()
        .map_err(|e| failed(e.to_string()))?;
    *runtime = Some(Runtime {
        library: library.to_path_buf(),
        environment: environment.clone(),
    });
    Ok(environment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_single_code_point_phonemes() {
        let json = r#"{"audio": {"sample_rate": 22050}, "phoneme_type": "espeak",
            "phoneme_id_map": {"_": [0], "^": [1], "$": [2], "a": [14], "aɪ": [161]}}"#;
        let config = VoiceConfig::parse(json, Path::new("v.onnx.json")).unwrap();
        assert_eq!(config.sample_rate, 22050);
        assert_eq!(config.espeak_voice, "en-us");
        assert_eq!(config.phoneme_id_map.get(&'a'), Some(&vec![14]));
        assert_eq!(config.phoneme_id_map.len(), 4);
    }

    #[test]
    fn config_refuses_other_phonemizers_naming_the_file() {
        let json = r#"{"audio": {"sample_rate": 22050}, "phoneme_type": "text",
            "phoneme_id_map": {"_": [0], "^": [1], "$": [2]}}"#;
        let err = VoiceConfig::parse(json, Path::new("v.onnx.json")).unwrap_err();
        assert!(err.to_string().contains("v.onnx.json"), "{err}");
    }

    #[test]
    fn config_sits_beside_the_model() {
        assert_eq!(
            config_path(Path::new("/m/en_US-joe-medium.onnx")),
            Path::new("/m/en_US-joe-medium.onnx.json")
        );
    }
}
