//! Reply text and audio in the turn-taking: where the LLM's streamed text is cut into clauses
//! for the TTS (a long first sentence cut sooner, so its audio starts sooner), what a reply
//! said, how long audio plays, and how much of a cut reply the caller heard.

use super::{AudioEncoding, AudioFormat, Clause, MIN_CLAUSE_CHARS};

/// Whether `text` (an interim transcript) ends a sentence: its last character, spaces and
/// closing quotes aside, is `.`, `?` or `!` (an ellipsis is a trailing-off, not an end).
pub(super) fn ends_sentence(text: &str) -> bool {
    let text = text.trim_end().trim_end_matches(['"', '\'', '”', '’', ')']);
    !text.ends_with("..") && !text.ends_with('…') && text.ends_with(['.', '?', '!'])
}

/// Where the first clause of `text` ends (after its punctuation and space), if it has one long
/// enough.
pub(super) fn clause_end(text: &str) -> Option<usize> {
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if matches!(c, '.' | '!' | '?' | ';' | ':' | ',')
            && let Some(&(j, next)) = chars.peek()
            && next.is_whitespace()
            && text[..i].trim().chars().count() + 1 >= MIN_CLAUSE_CHARS
        {
            return Some(j + next.len_utf8());
        }
    }
    None
}

/// Where a reply's first clause is cut when it has no punctuation to cut at: before a
/// connecting word ([`FIRST_CLAUSE_BREAKS`]) among its first [`FIRST_CLAUSE_MAX_WORDS`] words,
/// after at least [`FIRST_CLAUSE_MIN_WORDS`], when the sentence goes on for at least
/// [`FIRST_CLAUSE_MIN_REST`] more words. The TTS synthesizes a clause whole before its first
/// audio, so a short first clause is heard sooner (Piper: ~80 ms per second of speech), and the
/// rest is synthesized while it plays. `None`: no such break (a word still streaming in does
/// not count).
pub(super) fn first_clause_end(text: &str) -> Option<usize> {
    let words: Vec<(usize, &str)> = text
        .split_whitespace()
        .map(|w| (w.as_ptr() as usize - text.as_ptr() as usize, w))
        .collect();
    // The last word may be cut mid-stream unless whitespace follows it.
    let complete = if text.ends_with(char::is_whitespace) {
        words.len()
    } else {
        words.len().saturating_sub(1)
    };
    (FIRST_CLAUSE_MIN_WORDS..=FIRST_CLAUSE_MAX_WORDS.min(complete.saturating_sub(1)))
        .filter(|&k| words.len() - k >= FIRST_CLAUSE_MIN_REST)
        .find(|&k| {
            let (_, before) = words[k - 1];
            let (_, word) = words[k];
            !before.ends_with(|c: char| c.is_ascii_punctuation())
                && FIRST_CLAUSE_BREAKS.contains(&word.to_lowercase().as_str())
        })
        .map(|k| words[k].0)
}

/// Fewest words of a first clause cut by [`first_clause_end`]: shorter sounds clipped.
pub const FIRST_CLAUSE_MIN_WORDS: usize = 3;

/// Most words before the break [`first_clause_end`] looks for: a later break saves little.
pub const FIRST_CLAUSE_MAX_WORDS: usize = 6;

/// Fewest words that must follow the break (a sentence of 8 words or so is said whole).
pub const FIRST_CLAUSE_MIN_REST: usize = 4;

/// Words a sentence can be cut before without breaking a phrase (prepositions, conjunctions).
pub const FIRST_CLAUSE_BREAKS: &[&str] = &[
    "from", "until", "in", "on", "at", "to", "for", "with", "and", "but", "or", "because", "so",
    "when", "if", "which", "while", "after", "before", "about",
];

/// The text of `clauses` for the history: every clause but the filler.
pub(super) fn spoken(clauses: &[Clause]) -> String {
    let text: String = clauses
        .iter()
        .filter(|c| !c.filler)
        .map(|c| c.text.as_str())
        .collect();
    text.trim().to_string()
}

/// Milliseconds of `bytes` of audio in `format`.
pub(super) fn duration_ms(format: AudioFormat, bytes: usize) -> u64 {
    let bytes_per_sample = match format.encoding {
        AudioEncoding::Pcm16 => 2,
        AudioEncoding::Mulaw => 1,
    };
    let samples = (bytes / bytes_per_sample) as u64;
    samples * 1000 / u64::from(format.sample_rate.max(1))
}

/// The text of `clauses` the caller heard in `heard_ms` (whole clauses, then the heard share of
/// the clause that was playing, cut at a word), and what to say to resume: the clause that was
/// playing, whole, and the rest.
pub(super) fn split_heard(clauses: &[Clause], heard_ms: u64) -> (String, String) {
    let mut heard = Vec::new();
    let mut unheard = Vec::new();
    let mut left = Some(heard_ms);
    for clause in clauses {
        let words: Vec<&str> = clause.text.split_whitespace().collect();
        match left {
            Some(l) if l >= clause.audio_ms && clause.done => {
                if !clause.filler {
                    heard.extend(words);
                }
                left = Some(l - clause.audio_ms);
            }
            Some(l) => {
                // The clause that was playing.
                if !clause.filler {
                    let keep = match clause.audio_ms {
                        0 => 0,
                        ms => (words.len() as u64 * l.min(ms) / ms) as usize,
                    };
                    heard.extend(&words[..keep]);
                    unheard.extend(words);
                }
                left = None;
            }
            None if !clause.filler => unheard.extend(words),
            None => {}
        }
    }
    (heard.join(" "), unheard.join(" "))
}
