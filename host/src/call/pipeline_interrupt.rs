//! The interruption rules by words in the turn-taking ([`crate::call::interruption`]): speech over the
//! agent may have to wait for words before it interrupts (`min_interruption_words`, when the
//! recognizer sends interim transcripts), and a turn spoken over the agent that turns out to be
//! a backchannel, or too few words, is no turn: the agent goes on, or resumes if it was cut.

use tokio::time::Instant;

use super::{Action, Turns};
use crate::call::interruption::{self, Backchannel};

/// What the turn-taking knows about the caller's speech over the agent.
#[derive(Debug, Default)]
pub(super) struct SpokenOver {
    /// `min_interruption_words`.
    min_words: usize,
    /// `backchannel`.
    backchannel: Backchannel,
    /// The STT has sent an interim transcript on this call: it can tell words early.
    interims: bool,
    /// The caller's current speech began while the agent was speaking.
    began_over: bool,
    /// That speech has not interrupted the agent (yet): too short, or waiting for words.
    held: bool,
    /// The caller's turn closes once the clear this module asked for is answered.
    close_after_clear: bool,
}

/// What a closing turn spoken over the agent is.
pub(super) enum Settled {
    /// A caller turn like any other: these words.
    Turn(String),
    /// No turn (no words, a backchannel, too few words): the agent goes on, or resumes.
    NoTurn,
    /// It counts, but the agent is still speaking: it was cut now, and the turn closes once the
    /// clear is answered ([`Turns::after_clear`]).
    AfterClear,
}

impl Turns {
    /// The agent's interruption rules by words: `min_words` words over the agent before it
    /// counts as an interruption (0: any speech), and what backchannels do.
    pub fn with_interruption_rules(mut self, min_words: usize, backchannel: Backchannel) -> Self {
        self.over.min_words = min_words;
        self.over.backchannel = backchannel;
        self
    }

    /// Caller speech began (`over`: while the agent was speaking).
    pub(super) fn speech_began_over(&mut self, over: bool) {
        self.over.began_over = over;
        self.over.held = false;
    }

    /// Whether speech over the agent must wait for the recognizer's words before it
    /// interrupts: the rules ask for words, and the recognizer tells them early.
    pub(super) fn waits_for_words(&self) -> bool {
        self.over.min_words > 0 && self.over.interims
    }

    /// Speech over the agent that did not interrupt it (yet).
    pub(super) fn hold(&mut self) {
        self.over.held = true;
    }

    /// An interim transcript: the recognizer tells words early. Speech held over the agent
    /// interrupts it once the words count.
    pub(super) fn interim_words(&mut self, text: &str, out: &mut Vec<Action>) {
        self.over.interims = true;
        if self.over.held
            && self.in_speech
            && interruption::interrupts(text, self.over.min_words, self.over.backchannel)
        {
            tracing::debug!(%text, "the caller's words interrupt the agent");
            self.over.held = false;
            self.barge_in(out);
        }
    }

    /// Decides what the caller's closing turn `said` is, when it was spoken over the agent.
    pub(super) fn settle_spoken_over(&mut self, said: String, out: &mut Vec<Action>) -> Settled {
        if self.over.close_after_clear {
            // Still waiting for the clear (the STT's own `end-of-turn` after its final).
            self.heard = said;
            return Settled::AfterClear;
        }
        let began_over = std::mem::take(&mut self.over.began_over);
        let held = std::mem::take(&mut self.over.held);
        if said.is_empty() {
            return Settled::NoTurn;
        }
        if !began_over {
            return Settled::Turn(said);
        }
        let counts = interruption::interrupts(&said, self.over.min_words, self.over.backchannel);
        let speaking = self.reply.as_ref().is_some_and(|r| !r.interrupted) || self.audible;
        if !counts {
            tracing::debug!(%said, "not an interruption: the agent goes on");
            // Not a turn: its latency is no turn's.
            self.turn_ended = None;
            return Settled::NoTurn;
        }
        if held && speaking {
            // Enough words, but the agent never stopped (the words were only known now).
            self.barge_in(out);
            self.heard = said;
            self.over.close_after_clear = true;
            return Settled::AfterClear;
        }
        Settled::Turn(said)
    }

    /// The clear asked for by [`Settled::AfterClear`] was answered: the caller's turn closes.
    pub(super) fn after_clear(&mut self, now: Instant, out: &mut Vec<Action>) {
        if std::mem::take(&mut self.over.close_after_clear) {
            self.close_caller_turn(now, out);
        }
    }
}
