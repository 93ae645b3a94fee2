//! Loads a Whisper model directory (CTranslate2 `model.bin`, `tokenizer.json`, `config.json`)
//! into candle-transformers' Whisper, once per process per directory.
//!
//! CTranslate2 names and fuses tensors differently from the Hugging Face checkpoints candle reads,
//! so `hf_tensors` renames them and splits the fused projections: self-attention Q, K and V are
//! one `[3·d, d]` matrix, cross-attention K and V one `[2·d, d]`; Whisper's key projections have
//! no bias (CTranslate2 stores zeros there), so dropping the key bias is exact. Weights are fp16
//! on disk and f32 in memory (~150 MB for tiny.en), because candle's f32 CPU matmul is the fast
//! one.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::whisper::{Config, model::Whisper};
use serde::Deserialize;

use crate::ct2::{self, Ct2File, Dtype, RawTensor};
use crate::mel::MelSpectrogram;
use crate::vocab::Vocab;

/// The weights file in a model directory (CTranslate2 format).
pub const MODEL_FILE: &str = "model.bin";
/// The vocabulary file in a model directory (Hugging Face `tokenizer.json`).
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The generation config in a model directory (CTranslate2's Whisper `config.json`).
pub const CONFIG_FILE: &str = "config.json";

/// Most tokens one 30 s window may produce: Whisper's own `sample_len` (half the decoder's 448
/// positions). Stops a decoding loop that repeats itself.
pub const MAX_TOKENS: usize = 224;

/// Why a model directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file the model needs is not there.
    #[error("{} is missing", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not what a Whisper model directory holds.
    #[error("{} is not a usable Whisper model file: {message}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// What `config.json` says about decoding.
#[derive(Debug, Deserialize)]
struct GenerationConfig {
    /// Tokens never generated (punctuation-like non-speech symbols and task tokens).
    #[serde(default)]
    suppress_ids: Vec<u32>,
    /// Tokens not generated first (a blank, end of text).
    #[serde(default)]
    suppress_ids_begin: Vec<u32>,
}

/// A loaded model: network, spectrogram tables, vocabulary and decoding rules. Immutable and
/// shared by every call through [`cached`]; each transcription works on a cheap clone of
/// `whisper` (its tensors are reference-counted; only the attention caches are per clone).
#[derive(Debug)]
pub struct Model {
    pub(crate) whisper: Whisper,
    pub(crate) mel: MelSpectrogram,
    pub(crate) vocab: Vocab,
    /// The decoder prompt: start of transcript (then English and transcribe for a multilingual
    /// model), then no timestamps.
    pub(crate) prompt: Vec<u32>,
    /// `[vocab]` additive mask: −∞ on tokens never generated (config's `suppress_ids`, every
    /// special token but end of text, every timestamp), 0 elsewhere.
    pub(crate) suppress: Tensor,
    /// `[vocab]` additive mask for the first generated token: `suppress` plus a blank and end
    /// of text, so an empty or blank transcript is never chosen outright.
    pub(crate) suppress_first: Tensor,
    pub(crate) device: Device,
    /// How long [`load`] took.
    pub load_time: Duration,
}

/// Loads the model in `dir`.
///
/// # Errors
/// [`ModelError`] naming the file that is missing, unreadable or malformed.
pub fn load(dir: &Path) -> Result<Model, ModelError> {
    let started = Instant::now();
    let device = Device::Cpu;
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => ModelError::Missing { path },
            _ => ModelError::Io { path, source },
        })
    };
    let malformed = |name: &str, message: String| ModelError::Malformed {
        path: dir.join(name),
        message,
    };

    let tokenizer = read(TOKENIZER_FILE)?;
    let vocab = std::str::from_utf8(&tokenizer)
        .map_err(|e| e.to_string())
        .and_then(|json| Vocab::from_json(json).map_err(|e| e.to_string()))
        .map_err(|m| malformed(TOKENIZER_FILE, m))?;
    let config: GenerationConfig = serde_json::from_slice(&read(CONFIG_FILE)?)
        .map_err(|e| malformed(CONFIG_FILE, e.to_string()))?;

    let bytes = read(MODEL_FILE)?;
    let file = ct2::parse(&bytes).map_err(|e| malformed(MODEL_FILE, e.to_string()))?;
    if file.spec != "WhisperSpec" {
        return Err(malformed(
            MODEL_FILE,
            format!("a {} model, not WhisperSpec", file.spec),
        ));
    }
    let (cfg, tensors) =
        hf_tensors(&file, &device).map_err(|m| malformed(MODEL_FILE, m.to_string()))?;
    drop(bytes);
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
    let whisper =
        Whisper::load(&vb, cfg.clone()).map_err(|e| malformed(MODEL_FILE, e.to_string()))?;
    let mel = MelSpectrogram::new(cfg.num_mel_bins, &device)
        .map_err(|e| malformed(MODEL_FILE, e.to_string()))?;

    let t = &vocab.tokens;
    // Whisper's rule: a vocabulary of 51865 or more tokens is multilingual.
    let multilingual = cfg.vocab_size >= 51_865;
    let mut prompt = vec![t.start_of_transcript];
    if multilingual {
        let missing = |name| malformed(TOKENIZER_FILE, format!("multilingual, but no {name}"));
        prompt.push(t.english.ok_or_else(|| missing("<|en|>"))?);
        prompt.push(t.transcribe.ok_or_else(|| missing("<|transcribe|>"))?);
    }
    prompt.push(t.no_timestamps);

    let mut never: HashSet<u32> = config.suppress_ids.iter().copied().collect();
    never.extend(
        vocab
            .special_ids()
            .iter()
            .filter(|id| **id != t.end_of_text),
    );
    never.extend(t.no_timestamps..cfg.vocab_size as u32);
    let mut not_first = never.clone();
    if config.suppress_ids_begin.is_empty() {
        not_first.extend(vocab.id_of(" "));
        not_first.insert(t.end_of_text);
    } else {
        not_first.extend(&config.suppress_ids_begin);
    }
    let mask = |ids: &HashSet<u32>| {
        let values: Vec<f32> = (0..cfg.vocab_size as u32)
            .map(|id| {
                if ids.contains(&id) {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        Tensor::from_vec(values, cfg.vocab_size, &device)
            .map_err(|e| malformed(MODEL_FILE, e.to_string()))
    };
    Ok(Model {
        suppress: mask(&never)?,
        suppress_first: mask(&not_first)?,
        whisper,
        mel,
        vocab,
        prompt,
        device,
        load_time: started.elapsed(),
    })
}

/// Models loaded so far, by canonical directory. A failed load is not remembered, so fetching
/// the model and opening again works without a restart.
static MODELS: OnceLock<Mutex<HashMap<PathBuf, Arc<Model>>>> = OnceLock::new();

/// The model in `dir`, loaded on first use and shared afterwards (a later call costs a map
/// lookup). Loads run one at a time, so calls starting together load a model once.
///
/// # Errors
/// As [`load`]; also [`ModelError::Missing`] when `dir` itself does not exist.
pub fn cached(dir: &Path) -> Result<Arc<Model>, ModelError> {
    let key = dir.canonicalize().map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ModelError::Missing {
            path: dir.to_path_buf(),
        },
        _ => ModelError::Io {
            path: dir.to_path_buf(),
            source,
        },
    })?;
    let models = MODELS.get_or_init(Mutex::default);
    // A panic while loading poisons the lock but leaves the map consistent (inserts are last).
    let mut models = models.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(model) = models.get(&key) {
        return Ok(Arc::clone(model));
    }
    let model = Arc::new(load(&key)?);
    models.insert(key, Arc::clone(&model));
    Ok(model)
}

/// Renames CTranslate2 Whisper tensors to candle-transformers' (Hugging Face) names, splitting
/// fused projections, and reads the architecture from their shapes.
fn hf_tensors(
    file: &Ct2File<'_>,
    device: &Device,
) -> Result<(Config, HashMap<String, Tensor>), String> {
    let raw = |name: &str| {
        file.tensors
            .get(name)
            .ok_or_else(|| format!("no tensor {name}"))
    };
    let load = |name: &str| -> Result<Tensor, String> { to_f32(name, raw(name)?, device) };
    let dim = |name: &str, i: usize| -> Result<usize, String> {
        raw(name)?
            .dims
            .get(i)
            .copied()
            .ok_or_else(|| format!("{name} has no dimension {i}"))
    };
    let heads = |name: &str| -> Result<usize, String> {
        raw(name)?
            .scalar_int()
            .filter(|n| *n > 0)
            .map(|n| n as usize)
            .ok_or_else(|| format!("{name} is not a positive integer"))
    };
    let count_layers = |side: &str| {
        (0..)
            .take_while(|i| {
                file.tensors
                    .contains_key(&format!("{side}/layer_{i}/ffn/linear_0/weight"))
            })
            .count()
    };
    let d_model = dim("encoder/conv1/weight", 0)?;
    let cfg = Config {
        num_mel_bins: dim("encoder/conv1/weight", 1)?,
        max_source_positions: dim("encoder/position_encodings/encodings", 0)?,
        d_model,
        encoder_attention_heads: heads("encoder/num_heads")?,
        encoder_layers: count_layers("encoder"),
        vocab_size: dim("decoder/embeddings/weight", 0)?,
        max_target_positions: dim("decoder/position_encodings/encodings", 0)?,
        decoder_attention_heads: heads("decoder/num_heads")?,
        decoder_layers: count_layers("decoder"),
        suppress_tokens: Vec::new(),
    };
    if cfg.encoder_layers == 0 || cfg.decoder_layers == 0 {
        return Err("no encoder or decoder layers".into());
    }

    let mut out = HashMap::new();
    let mut put = |name: String, t: Tensor| {
        out.insert(name, t);
    };
    // Splits a fused `[n·d, …]` tensor into its n row blocks.
    let split = |t: &Tensor, n: usize, name: &str| -> Result<Vec<Tensor>, String> {
        if t.dim(0).map_err(|e| e.to_string())? != n * d_model {
            return Err(format!("{name}: expected {n}×{d_model} rows"));
        }
        (0..n)
            .map(|i| t.narrow(0, i * d_model, d_model).map_err(|e| e.to_string()))
            .collect()
    };
    let norm = |ct2: &str, hf: &str, put: &mut dyn FnMut(String, Tensor)| {
        put(format!("{hf}.weight"), load(&format!("{ct2}/gamma"))?);
        put(format!("{hf}.bias"), load(&format!("{ct2}/beta"))?);
        Ok::<_, String>(())
    };
    let linear = |ct2: &str, hf: &str, put: &mut dyn FnMut(String, Tensor)| {
        put(format!("{hf}.weight"), load(&format!("{ct2}/weight"))?);
        put(format!("{hf}.bias"), load(&format!("{ct2}/bias"))?);
        Ok::<_, String>(())
    };
    // Fused Q, K, V (self-attention) or K, V (cross-attention) into separate projections; the
    // key has no bias.
    let fused = |ct2: &str, hf: &str, names: &[&str], put: &mut dyn FnMut(String, Tensor)| {
        let weights = split(&load(&format!("{ct2}/weight"))?, names.len(), ct2)?;
        let biases = split(&load(&format!("{ct2}/bias"))?, names.len(), ct2)?;
        for ((name, w), b) in names.iter().zip(weights).zip(biases) {
            put(format!("{hf}.{name}.weight"), w);
            if *name != "k_proj" {
                put(format!("{hf}.{name}.bias"), b);
            }
        }
        Ok::<_, String>(())
    };

    for conv in ["conv1", "conv2"] {
        linear(
            &format!("encoder/{conv}"),
            &format!("model.encoder.{conv}"),
            &mut put,
        )?;
    }
    for side in ["encoder", "decoder"] {
        let layers = if side == "encoder" {
            cfg.encoder_layers
        } else {
            cfg.decoder_layers
        };
        for i in 0..layers {
            let (c, h) = (
                format!("{side}/layer_{i}"),
                format!("model.{side}.layers.{i}"),
            );
            let (sa, ha) = (format!("{c}/self_attention"), format!("{h}.self_attn"));
            norm(
                &format!("{sa}/layer_norm"),
                &format!("{h}.self_attn_layer_norm"),
                &mut put,
            )?;
            fused(
                &format!("{sa}/linear_0"),
                &ha,
                &["q_proj", "k_proj", "v_proj"],
                &mut put,
            )?;
            linear(
                &format!("{sa}/linear_1"),
                &format!("{ha}.out_proj"),
                &mut put,
            )?;
            if side == "decoder" {
                let (ca, hc) = (format!("{c}/attention"), format!("{h}.encoder_attn"));
                norm(
                    &format!("{ca}/layer_norm"),
                    &format!("{h}.encoder_attn_layer_norm"),
                    &mut put,
                )?;
                linear(&format!("{ca}/linear_0"), &format!("{hc}.q_proj"), &mut put)?;
                fused(
                    &format!("{ca}/linear_1"),
                    &hc,
                    &["k_proj", "v_proj"],
                    &mut put,
                )?;
                linear(
                    &format!("{ca}/linear_2"),
                    &format!("{hc}.out_proj"),
                    &mut put,
                )?;
            }
            norm(
                &format!("{c}/ffn/layer_norm"),
                &format!("{h}.final_layer_norm"),
                &mut put,
            )?;
            linear(&format!("{c}/ffn/linear_0"), &format!("{h}.fc1"), &mut put)?;
            linear(&format!("{c}/ffn/linear_1"), &format!("{h}.fc2"), &mut put)?;
        }
        norm(
            &format!("{side}/layer_norm"),
            &format!("model.{side}.layer_norm"),
            &mut put,
        )?;
    }
    put(
        "model.decoder.embed_tokens.weight".into(),
        load("decoder/embeddings/weight")?,
    );
    put(
        "model.decoder.embed_positions.weight".into(),
        load("decoder/position_encodings/encodings")?,
    );
    // The encoder's sinusoidal positions are recomputed by candle (identical to the stored ones).
    Ok((cfg, out))
}

/// A stored floating-point tensor as an f32 candle tensor.
fn to_f32(name: &str, t: &RawTensor<'_>, device: &Device) -> Result<Tensor, String> {
    let dtype = match t.dtype {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::Bf16 => DType::BF16,
        other => {
            return Err(format!(
                "{name}: {other:?} weights (quantized?) are not supported"
            ));
        }
    };
    Tensor::from_raw_buffer(t.data, dtype, &t.dims, device)
        .and_then(|t| t.to_dtype(DType::F32))
        .map_err(|e| format!("{name}: {e}"))
}
