//! Text to Piper phonemes, the way Piper itself does it, through the `espeak-ng` program.
//!
//! espeak-ng is GPL-3, so it is run as a child process (`espeak-ng -q --ipa`), never linked. Piper
//! asks espeak-ng's library for IPA clause by clause, appends each clause's punctuation (`, : ;`
//! followed by a space; `. ? !` ending the sentence), decomposes the result into Unicode NFD code
//! points (one phoneme each) and synthesises one sentence at a time. The program prints one line
//! per clause but drops the punctuation, so this module splits clauses itself and pairs them with
//! the program's lines; when the two disagree (an abbreviation such as "e.g." that espeak-ng does
//! not split at), it phonemizes clause by clause instead, which always pairs up.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

use unicode_normalization::UnicodeNormalization;

/// Why text could not be turned into phonemes.
#[derive(Debug, thiserror::Error)]
pub enum PhonemeError {
    /// The `espeak-ng` program is not installed or not at the configured path.
    #[error(
        "espeak-ng program `{program}` not found ({source}): install it (apt-get install espeak-ng) \
         or set \"espeak_ng\" to its path"
    )]
    NotFound {
        /// The program as configured.
        program: String,
        /// The error from starting it.
        source: std::io::Error,
    },
    /// The program started but failed (a missing espeak-ng voice, say); the message has its stderr.
    #[error("espeak-ng program `{program}` failed: {message}")]
    Failed {
        /// The program as configured.
        program: String,
        /// Exit status and standard error.
        message: String,
    },
}

/// A clause-ending punctuation mark that Piper keeps as a phoneme; `. ? !` also end the sentence.
const TERMINATORS: [char; 6] = ['.', '?', '!', ',', ':', ';'];

/// One clause of the input: its text (with its punctuation) and the mark that ends it, if any.
#[derive(Debug, Clone, PartialEq)]
struct Clause<'t> {
    text: &'t str,
    terminator: Option<char>,
}

/// Runs the `espeak-ng` program for one espeak-ng voice (`en-us`).
#[derive(Debug, Clone)]
pub struct Espeak {
    program: String,
    voice: String,
}

impl Espeak {
    /// `program` is a name looked up on `PATH` or a path; `voice` an espeak-ng voice (`en-us`).
    pub fn new(program: &str, voice: &str) -> Self {
        Self {
            program: program.to_string(),
            voice: voice.to_string(),
        }
    }

    /// Checks that the program runs (`--version`).
    ///
    /// # Errors
    /// [`PhonemeError::NotFound`] or [`PhonemeError::Failed`].
    pub fn check(&self) -> Result<(), PhonemeError> {
        let output = Command::new(&self.program)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map_err(|source| self.not_found(source))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(self.failed(&output))
        }
    }

    /// Phonemizes `text`: one list of phonemes (NFD code points, punctuation kept) per sentence,
    /// in order; empty when the text has nothing to say.
    ///
    /// # Errors
    /// The program is missing or failed.
    pub fn phonemize(&self, text: &str) -> Result<Vec<Vec<char>>, PhonemeError> {
        let text = clean(text);
        let clauses = split_clauses(&text);
        if clauses.is_empty() {
            return Ok(Vec::new());
        }
        let mut lines = self.ipa_lines(&text)?;
        if lines.len() != clauses.len() {
            lines = clauses
                .iter()
                .map(|c| Ok(self.ipa_lines(c.text)?.join(" ")))
                .collect::<Result<_, PhonemeError>>()?;
        }
        Ok(sentences(&clauses, &lines))
    }

    /// The program's IPA output for `text`: one trimmed, non-empty line per clause.
    fn ipa_lines(&self, text: &str) -> Result<Vec<String>, PhonemeError> {
        let mut child = Command::new(&self.program)
            .args(["-q", "--ipa", "-b", "1", "-v", &self.voice, "--stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| self.not_found(source))?;
        let mut stdin = child.stdin.take();
        // Written from another thread: a long text could otherwise fill both pipes and deadlock.
        let output = std::thread::scope(|scope| {
            scope.spawn(move || {
                if let Some(stdin) = stdin.as_mut() {
                    // A write error means the program exited early; its status says why.
                    let _ = stdin.write_all(text.as_bytes());
                    let _ = stdin.write_all(b"\n");
                }
            });
            child.wait_with_output()
        })
        .map_err(|e| PhonemeError::Failed {
            program: self.program.clone(),
            message: e.to_string(),
        })?;
        if !output.status.success() {
            return Err(self.failed(&output));
        }
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }

    fn not_found(&self, source: std::io::Error) -> PhonemeError {
        PhonemeError::NotFound {
            program: self.program.clone(),
            source,
        }
    }

    fn failed(&self, output: &std::process::Output) -> PhonemeError {
        PhonemeError::Failed {
            program: self.program.clone(),
            message: format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        }
    }
}

/// The text on one line, control characters (newlines, tabs) turned into spaces.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// Splits text into clauses where espeak-ng does: after a run of punctuation that starts with
/// one of [`TERMINATORS`] and is followed by white space or the end ("3.5" and "10:30" stay
/// whole). Clauses with nothing but punctuation and spaces are dropped.
fn split_clauses(text: &str) -> Vec<Clause<'_>> {
    let mut clauses = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if !TERMINATORS.contains(&c) {
            continue;
        }
        // The whole run of marks ("?!", "...", ".\"") belongs to this clause.
        let mut end = i + c.len_utf8();
        while let Some(&(j, next)) = chars.peek() {
            if next.is_whitespace() {
                break;
            }
            if !(TERMINATORS.contains(&next) || is_closing(next)) {
                end = usize::MAX; // followed by a letter or digit: not a clause end
                break;
            }
            end = j + next.len_utf8();
            chars.next();
        }
        if end == usize::MAX {
            continue;
        }
        clauses.push(Clause {
            text: text[start..end].trim(),
            terminator: Some(c),
        });
        start = end;
    }
    if start < text.len() {
        clauses.push(Clause {
            text: text[start..].trim(),
            terminator: None,
        });
    }
    clauses.retain(|c| c.text.chars().any(char::is_alphanumeric));
    clauses
}

/// Closing quotes and brackets, which may follow a clause's punctuation.
fn is_closing(c: char) -> bool {
    matches!(c, '"' | '\'' | ')' | ']' | '}' | '’' | '”' | '»')
}

/// Piper's sentences from clauses and their IPA lines (one per clause).
fn sentences(clauses: &[Clause<'_>], lines: &[String]) -> Vec<Vec<char>> {
    let mut all = Vec::new();
    let mut sentence: Vec<char> = Vec::new();
    for (clause, line) in clauses.iter().zip(lines) {
        let mut phonemes = strip_language_flags(line);
        if let Some(t) = clause.terminator {
            phonemes.push(t);
            if matches!(t, ',' | ':' | ';') {
                phonemes.push(' ');
            }
        }
        sentence.extend(phonemes.nfd());
        if matches!(clause.terminator, None | Some('.' | '?' | '!')) {
            all.push(std::mem::take(&mut sentence));
        }
    }
    if !sentence.is_empty() {
        all.push(sentence);
    }
    all.retain(|s| {
        s.iter()
            .any(|c| !c.is_whitespace() && !TERMINATORS.contains(c))
    });
    all
}

/// Removes espeak-ng's language-switch flags, `(fr)` … `(en)`, around foreign words.
fn strip_language_flags(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(open) = rest.find('(') {
        let Some(close) = rest[open..].find(')') else {
            break;
        };
        out.push_str(&rest[..open]);
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

/// Piper's phoneme ids for one sentence: BOS, then each phoneme followed by PAD, then EOS.
/// Phonemes the voice lacks are skipped, as Piper does. `map` is the voice's `phoneme_id_map`.
pub fn phoneme_ids(phonemes: &[char], map: &HashMap<char, Vec<i64>>) -> Vec<i64> {
    let ids_of = |c: char| map.get(&c).map(Vec::as_slice).unwrap_or_default();
    let pad = ids_of(PAD);
    let mut ids = ids_of(BOS).to_vec();
    ids.extend(pad);
    for &p in phonemes {
        if let Some(p_ids) = map.get(&p) {
            ids.extend(p_ids);
            ids.extend(pad);
        }
    }
    ids.extend(ids_of(EOS));
    ids
}

/// Piper's padding symbol, placed after every phoneme.
pub const PAD: char = '_';
/// Piper's beginning-of-sentence symbol.
pub const BOS: char = '^';
/// Piper's end-of-sentence symbol.
pub const EOS: char = '$';

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(text: &str) -> Vec<(&str, Option<char>)> {
        split_clauses(text)
            .into_iter()
            .map(|c| (c.text, c.terminator))
            .collect()
    }

    #[test]
    fn clauses_end_at_punctuation_before_space_or_end() {
        assert_eq!(
            texts("Hello, world. It costs 3.50 at 10:30?! Yes \"really.\" Done"),
            vec![
                ("Hello,", Some(',')),
                ("world.", Some('.')),
                ("It costs 3.50 at 10:30?!", Some('?')),
                ("Yes \"really.\"", Some('.')),
                ("Done", None),
            ]
        );
        assert!(texts("  ... ! ").is_empty());
        assert_eq!(texts("Wait..."), vec![("Wait...", Some('.'))]);
    }

    #[test]
    fn sentences_keep_punctuation_and_split_after_full_stops() {
        let clauses = split_clauses("Hi, there. Bye");
        let lines = ["hˈaɪ", "ðˈɛɹ", "(en)bˈaɪ(en)"].map(String::from);
        let got: Vec<String> = sentences(&clauses, &lines)
            .into_iter()
            .map(|s| s.into_iter().collect())
            .collect();
        assert_eq!(got, ["hˈaɪ, ðˈɛɹ.", "bˈaɪ"]);
    }

    #[test]
    fn phonemes_are_decomposed() {
        let clauses = split_clauses("x");
        let got = sentences(&clauses, &["ç".to_string()]);
        assert_eq!(got, vec![vec!['c', '\u{327}']]);
    }

    #[test]
    fn ids_follow_pipers_bos_pad_eos_convention() {
        let map = HashMap::from([
            ('_', vec![0]),
            ('^', vec![1]),
            ('$', vec![2]),
            ('a', vec![14]),
            ('b', vec![15]),
        ]);
        assert_eq!(phoneme_ids(&['a', '?', 'b'], &map), [1, 0, 14, 0, 15, 0, 2]);
    }
}
