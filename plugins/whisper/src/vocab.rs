//! Whisper's vocabulary, read from the model's `tokenizer.json` (Hugging Face format) with
//! serde_json: token ids back to text, and the special tokens decoding needs, looked up by name.
//!
//! Whisper uses GPT-2's byte-level BPE: each token is a string of printable stand-ins for bytes
//! (GPT-2's byte↔unicode table: printable Latin-1 characters stand for themselves, the other 68
//! bytes for U+0100 onwards). Decoding maps each character back to its byte and reads the
//! concatenation as UTF-8.

use std::collections::HashMap;

use serde::Deserialize;

/// The parts of `tokenizer.json` read here.
#[derive(Deserialize)]
struct TokenizerFile {
    model: BpeModel,
    #[serde(default)]
    added_tokens: Vec<AddedToken>,
}

#[derive(Deserialize)]
struct BpeModel {
    vocab: HashMap<String, u32>,
}

#[derive(Deserialize)]
struct AddedToken {
    id: u32,
    content: String,
}

/// Token ids Whisper's decoding prompt and stopping rule use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialTokens {
    /// `<|endoftext|>`: ends the transcript.
    pub end_of_text: u32,
    /// `<|startoftranscript|>`: first token of every prompt.
    pub start_of_transcript: u32,
    /// `<|notimestamps|>`: asks for text without timestamp tokens (ids above it are timestamps).
    pub no_timestamps: u32,
    /// `<|nocaptions|>` (or `<|nospeech|>` in newer vocabularies): its probability after the
    /// prompt's first token says how likely the window holds no speech.
    pub no_speech: Option<u32>,
    /// `<|en|>`, for multilingual models' prompts.
    pub english: Option<u32>,
    /// `<|transcribe|>`, for multilingual models' prompts.
    pub transcribe: Option<u32>,
}

/// Token ids to text, and the special tokens.
#[derive(Debug, Clone)]
pub struct Vocab {
    /// Bytes of each ordinary token, by id; `None` for special and unknown ids.
    bytes: Vec<Option<Vec<u8>>>,
    /// Every special token id (`<|…|>` added tokens).
    special: Vec<u32>,
    /// The ones decoding needs.
    pub tokens: SpecialTokens,
}

/// Largest token id accepted (Whisper's are below 52,000): bounds the id-indexed table a
/// corrupt file could otherwise make enormous.
const MAX_TOKEN_ID: u32 = 1 << 20;

/// Why `tokenizer.json` is not usable.
#[derive(Debug, thiserror::Error)]
pub enum VocabError {
    /// Not JSON of the expected shape.
    #[error("not a Hugging Face tokenizer file: {0}")]
    Json(#[from] serde_json::Error),
    /// A special token decoding needs is absent.
    #[error("has no {0} token")]
    MissingToken(&'static str),
    /// A token id is beyond [`MAX_TOKEN_ID`].
    #[error("token id {0} is implausibly large")]
    IdTooLarge(u32),
    /// A token is not made of GPT-2 byte stand-ins.
    #[error("token {id} ({token:?}) is not byte-level BPE")]
    NotByteLevel {
        /// Its id.
        id: u32,
        /// Its text.
        token: String,
    },
}

impl Vocab {
    /// Reads `tokenizer.json` text.
    ///
    /// # Errors
    /// [`VocabError`] when the JSON is not a byte-level BPE tokenizer with Whisper's special
    /// tokens.
    pub fn from_json(json: &str) -> Result<Self, VocabError> {
        let file: TokenizerFile = serde_json::from_str(json)?;
        let ids = file
            .model
            .vocab
            .values()
            .chain(file.added_tokens.iter().map(|t| &t.id));
        if let Some(id) = ids.copied().find(|id| *id > MAX_TOKEN_ID) {
            return Err(VocabError::IdTooLarge(id));
        }
        let decoder = byte_decoder();
        let mut bytes: Vec<Option<Vec<u8>>> = Vec::new();
        let mut put = |id: u32, value: Option<Vec<u8>>| {
            let id = id as usize;
            if bytes.len() <= id {
                bytes.resize(id + 1, None);
            }
            bytes[id] = value;
        };
        let special_ids: HashMap<&str, u32> = file
            .added_tokens
            .iter()
            .map(|t| (t.content.as_str(), t.id))
            .collect();
        for (token, id) in &file.model.vocab {
            if special_ids.contains_key(token.as_str()) {
                continue;
            }
            let decoded: Option<Vec<u8>> =
                token.chars().map(|c| decoder.get(&c).copied()).collect();
            let Some(decoded) = decoded else {
                return Err(VocabError::NotByteLevel {
                    id: *id,
                    token: token.clone(),
                });
            };
            put(*id, Some(decoded));
        }
        for t in &file.added_tokens {
            put(t.id, None);
        }
        let find = |name: &'static str| {
            special_ids
                .get(name)
                .copied()
                .ok_or(VocabError::MissingToken(name))
        };
        let tokens = SpecialTokens {
            end_of_text: find("<|endoftext|>")?,
            start_of_transcript: find("<|startoftranscript|>")?,
            no_timestamps: find("<|notimestamps|>")?,
            no_speech: find("<|nospeech|>")
                .or_else(|_| find("<|nocaptions|>"))
                .ok(),
            english: find("<|en|>").ok(),
            transcribe: find("<|transcribe|>").ok(),
        };
        let mut special: Vec<u32> = special_ids.into_values().collect();
        special.sort_unstable();
        Ok(Self {
            bytes,
            special,
            tokens,
        })
    }

    /// Every special token id, ascending.
    pub fn special_ids(&self) -> &[u32] {
        &self.special
    }

    /// The id of an ordinary token given as its text (`" "` is `Ġ`, id 220), if it is one.
    pub fn id_of(&self, text: &str) -> Option<u32> {
        let wanted = text.as_bytes();
        self.bytes
            .iter()
            .position(|b| b.as_deref() == Some(wanted))
            .map(|id| id as u32)
    }

    /// The text of `ids`, skipping special and unknown ids; invalid UTF-8 (a character cut
    /// between tokens) becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut out = Vec::new();
        for id in ids {
            if let Some(Some(b)) = self.bytes.get(*id as usize) {
                out.extend_from_slice(b);
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// GPT-2's `bytes_to_unicode` table, inverted: stand-in character → byte.
fn byte_decoder() -> HashMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut next = 256u32;
    (0..=255u8)
        .map(|b| {
            let c = if printable(b) {
                char::from(b)
            } else {
                let c = char::from_u32(next).unwrap_or(char::REPLACEMENT_CHARACTER);
                next += 1;
                c
            };
            (c, b)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{
      "added_tokens": [
        {"id": 5, "content": "<|endoftext|>"},
        {"id": 6, "content": "<|startoftranscript|>"},
        {"id": 7, "content": "<|notimestamps|>"},
        {"id": 8, "content": "<|nocaptions|>"}
      ],
      "model": {"type": "BPE", "vocab": {
        "Hello": 0, "Ġworld": 1, "Ġ": 2, "Ã©": 3, "Ċ": 4, "<|endoftext|>": 5
      }}
    }"#;

    #[test]
    fn decodes_byte_level_tokens_and_skips_specials() {
        let v = Vocab::from_json(SAMPLE).unwrap();
        assert_eq!(v.decode(&[6, 7, 0, 1, 5]), "Hello world");
        // "Ã©" stands for the bytes C3 A9: "é". "Ċ" stands for "\n".
        assert_eq!(v.decode(&[3, 4]), "é\n");
        assert_eq!(v.decode(&[999]), "");
        assert_eq!(v.id_of(" "), Some(2));
        assert_eq!(
            v.tokens,
            SpecialTokens {
                end_of_text: 5,
                start_of_transcript: 6,
                no_timestamps: 7,
                no_speech: Some(8),
                english: None,
                transcribe: None,
            }
        );
        assert_eq!(v.special_ids(), &[5, 6, 7, 8]);
    }

    #[test]
    fn the_byte_table_covers_every_byte_once() {
        let d = byte_decoder();
        assert_eq!(d.len(), 256);
        assert_eq!(d[&'Ġ'], b' ');
        assert_eq!(d[&'A'], b'A');
        assert_eq!(d[&'Ń'], 0xAD);
    }

    #[test]
    fn a_tokenizer_without_the_prompt_tokens_is_refused() {
        let json = SAMPLE.replace("<|notimestamps|>", "<|other|>");
        assert!(matches!(
            Vocab::from_json(&json),
            Err(VocabError::MissingToken("<|notimestamps|>"))
        ));
        assert!(Vocab::from_json("[]").is_err());
        let huge = SAMPLE.replace("\"Hello\": 0", "\"Hello\": 4000000000");
        assert!(matches!(
            Vocab::from_json(&huge),
            Err(VocabError::IdTooLarge(4_000_000_000))
        ));
    }
}
