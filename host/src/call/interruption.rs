//! What caller speech over the agent counts as an interruption, by its words: backchannels
//! ("mm-hm", "okay", "yeah": a listener's "go on") and the agent's minimum words before an
//! interruption counts. The turn-taking ([`super::pipeline::Turns`]) asks these rules once it
//! has a transcript of what the caller said over the agent: an interim one when the recognizer
//! sends them, else the final one.

use serde::Deserialize;

/// How an agent takes backchannels said while it speaks (`backchannel` in agents.toml).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backchannel {
    /// A backchannel is a listener saying "go on": it does not interrupt the agent, and is no
    /// caller turn. If the detector had already cut the agent off, the agent resumes.
    #[default]
    Ignore,
    /// A backchannel interrupts the agent like any speech.
    Interrupt,
}

/// The phrases a backchannel is made of, lowercase, as recognizers write them (Whisper writes
/// "Mm-hmm.", "Uh-huh.", "Okay."). An utterance is a backchannel when it is nothing but these.
pub const BACKCHANNEL_PHRASES: &[&str] = &[
    "mm",
    "mmm",
    "mhm",
    "mm-hm",
    "mm-hmm",
    "mmhm",
    "mmhmm",
    "hm",
    "hmm",
    "uh-huh",
    "uh huh",
    "uhhuh",
    "aha",
    "ah",
    "oh",
    "okay",
    "ok",
    "yeah",
    "yep",
    "yup",
    "yes",
    "right",
    "sure",
    "alright",
    "all right",
    "got it",
    "i see",
    "cool",
    "great",
    "good",
    "nice",
    "fine",
    "thanks",
];

/// The words of a transcript: lowercase, punctuation stripped (hyphens and apostrophes inside a
/// word kept: "mm-hm", "don't").
pub fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// How many of `words` are not part of a backchannel phrase (two-word phrases first).
fn substantive(words: &[String]) -> usize {
    let mut count = 0;
    let mut i = 0;
    while i < words.len() {
        if i + 1 < words.len() {
            let pair = format!("{} {}", words[i], words[i + 1]);
            if BACKCHANNEL_PHRASES.contains(&pair.as_str()) {
                i += 2;
                continue;
            }
        }
        if !BACKCHANNEL_PHRASES.contains(&words[i].as_str()) {
            count += 1;
        }
        i += 1;
    }
    count
}

/// Whether `text` is only a backchannel ("Mm-hmm.", "Okay, yeah."): words, none of them more.
pub fn is_backchannel(text: &str) -> bool {
    let words = words(text);
    !words.is_empty() && substantive(&words) == 0
}

/// Whether `text`, said over the agent, interrupts it: at least `min_words` words (at least
/// one), backchannel words not counted when backchannels are ignored.
pub fn interrupts(text: &str, min_words: usize, backchannel: Backchannel) -> bool {
    let words = words(text);
    let counted = match backchannel {
        Backchannel::Ignore => substantive(&words),
        Backchannel::Interrupt => words.len(),
    };
    counted >= min_words.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backchannels_as_recognizers_write_them() {
        for text in [
            "Mm-hmm.",
            "Uh-huh.",
            "Okay.",
            "Okay, yeah.",
            "Yeah, yeah.",
            "Got it.",
            "I see.",
            "All right!",
            "Hmm...",
        ] {
            assert!(is_backchannel(text), "{text}");
        }
        for text in [
            "",
            " ... ",
            "No.",
            "Wait.",
            "Okay, but what about Sunday?",
            "Yes, I need my order number.",
            "I",
        ] {
            assert!(!is_backchannel(text), "{text}");
        }
    }

    #[test]
    fn interruptions_count_words_not_backchannels() {
        assert!(interrupts("Wait.", 0, Backchannel::Ignore));
        assert!(interrupts("Wait.", 1, Backchannel::Ignore));
        assert!(!interrupts("Mm-hmm.", 1, Backchannel::Ignore));
        assert!(interrupts("Mm-hmm.", 1, Backchannel::Interrupt));
        assert!(!interrupts("Okay, wait.", 2, Backchannel::Ignore));
        assert!(interrupts("Okay, wait.", 2, Backchannel::Interrupt));
        assert!(interrupts("No, stop please.", 2, Backchannel::Ignore));
        assert!(!interrupts("", 0, Backchannel::Interrupt), "no words");
    }
}
