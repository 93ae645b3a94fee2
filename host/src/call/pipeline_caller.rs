//! The caller's side of the turn-taking: each caller frame's VAD verdict (speech, silence,
//! barge-in), endpointing (the silence, an early end on a whole-sentence interim transcript, a
//! speech segment the detector later judged noise), the STT's transcripts, and closing a caller
//! turn into the history and an LLM request.

use std::time::Duration;

use tokio::time::Instant;

use super::{Action, EARLY_ENDPOINTING_SILENCE, Reply, Settled, TurnLatency, Turns, ends_sentence};
use crate::audio::FRAME_MS;
use crate::plugin::{Message, Role, StageInput, StageOutput};

impl Turns {
    pub(super) fn caller_frame(
        &mut self,
        speech: bool,
        data: Vec<u8>,
        timestamp_ms: u64,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        out.push(Action::Stt(StageInput::Audio { data, timestamp_ms }));
        if speech {
            if !self.in_speech {
                self.run = (Duration::ZERO, Duration::ZERO);
            } else if !self.silence.is_zero() {
                self.run = (self.silence, Duration::ZERO);
            }
            self.run.1 += Duration::from_millis(FRAME_MS);
            self.silence = Duration::ZERO;
            self.sentence_heard = false;
            let replying = self.reply.as_ref().is_some_and(|r| !r.interrupted);
            if !self.in_speech {
                self.in_speech = true;
                self.speech_began.get_or_insert(now);
                self.voiced = Duration::ZERO;
                self.speech_began_over(self.audible || replying);
                // Speech over the agent is the interruption rules' to judge: never dropped as
                // noise ([`Turns::segment_ended`]).
                self.run_was_speech = self.audible || replying;
            }
            self.voiced += Duration::from_millis(FRAME_MS);
            let long_enough = self.voiced
                >= self
                    .config
                    .min_interruption
                    .max(Duration::from_millis(FRAME_MS));
            if (self.audible || replying) && long_enough && !self.waits_for_words() {
                self.barge_in(out);
            } else if self.audible || replying {
                self.hold();
            }
        } else if self.in_speech {
            self.silence += Duration::from_millis(FRAME_MS);
            let early = self.sentence_heard && self.silence >= self.early_endpointing();
            if self.silence >= self.config.endpointing || early {
                self.end_caller_speech(now, out);
            }
        }
    }

    /// The VAD's verdict on the last run of speech frames, some frames after it ended
    /// (`audio::vad::Segment`): `noise` when it was noise the detector had not learned yet
    /// (steady noise starting on a quiet line, or just after the caller spoke). A noise run that
    /// began the caller's speech is forgotten (no turn, nothing for the recognizer to end); one
    /// after real speech counts as silence, which may end the turn now. Speech while the agent
    /// speaks or replies is left to the interruption rules (it may have cut the agent already).
    pub fn segment_ended(&mut self, noise: bool, now: Instant, out: &mut Vec<Action>) {
        if !noise {
            self.run_was_speech = true;
            return;
        }
        // While the agent speaks (or was just cut) the interruption rules decide.
        if !self.in_speech || self.silence.is_zero() || self.audible || self.reply.is_some() {
            return;
        }
        if !self.run_was_speech {
            tracing::debug!("noise, not speech: no caller turn");
            self.in_speech = false;
            self.silence = Duration::ZERO;
            self.speech_began = None;
            self.voiced = Duration::ZERO;
            return;
        }
        let (before, run) = self.run;
        self.silence += before + run;
        if self.silence >= self.config.endpointing {
            self.end_caller_speech(now, out);
        }
    }

    /// Caller silence after which a whole-sentence interim transcript ends the turn.
    fn early_endpointing(&self) -> Duration {
        EARLY_ENDPOINTING_SILENCE.min(self.config.endpointing)
    }

    /// The caller's speech is over (endpointing): the turn's latency clock starts at its last
    /// speech frame and the STT is told `end-of-turn`; its final transcript closes the turn.
    pub(super) fn end_caller_speech(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.in_speech = false;
        self.sentence_heard = false;
        let ended = now - self.silence;
        self.turn_ended = Some(ended);
        self.latency = TurnLatency {
            endpointing: Some(self.silence),
            speech: self
                .speech_began
                .take()
                .map(|b| ended.saturating_duration_since(b) + Duration::from_millis(FRAME_MS)),
            ..TurnLatency::default()
        };
        self.awaiting_final = true;
        out.push(Action::Stt(StageInput::EndOfTurn));
    }

    pub(super) fn stt(&mut self, output: StageOutput, now: Instant, out: &mut Vec<Action>) {
        match output {
            StageOutput::Transcript {
                text,
                is_final: true,
            } => {
                if !self.heard.is_empty() && !text.trim().is_empty() {
                    self.heard.push(' ');
                }
                self.heard.push_str(text.trim());
                if let Some(t) = self.turn_ended {
                    self.latency.stt_final = Some(now - t);
                }
                if self.awaiting_final {
                    self.close_caller_turn(now, out);
                }
            }
            // Early endpointing: the caller has paused after a whole sentence.
            StageOutput::Transcript {
                text,
                is_final: false,
            } => {
                self.interim_words(&text, out);
                if self.in_speech && !self.awaiting_final && ends_sentence(&text) {
                    if self.silence >= self.early_endpointing() {
                        self.end_caller_speech(now, out);
                    } else {
                        // The recognizer's pause came before the detector's: end once the
                        // detector has heard the same silence.
                        self.sentence_heard = true;
                    }
                }
            }
            StageOutput::EndOfTurn => self.close_caller_turn(now, out),
            _ => {}
        }
    }

    /// The caller's turn is over: what they said enters the history and the LLM is asked.
    pub(super) fn close_caller_turn(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.awaiting_final = false;
        let heard = std::mem::take(&mut self.heard);
        let said = match self.settle_spoken_over(heard, out) {
            Settled::Turn(said) => said,
            Settled::NoTurn => String::new(),
            Settled::AfterClear => return,
        };
        if said.is_empty() {
            if let Some(rest) = self.resume.take() {
                // A false interruption: the agent goes on where it was cut.
                tracing::debug!("false interruption: resuming the cut reply");
                self.in_speech = false;
                self.reply = Some(Reply {
                    greeting: true,
                    ..Reply::default()
                });
                self.say(rest, out);
            }
            return;
        }
        self.resume = None;
        // The recognizer's own endpointing may close the turn before the host's.
        if self.turn_ended.is_none() {
            let ended = now - self.silence;
            self.latency.endpointing = Some(self.silence);
            self.latency.speech = self
                .speech_began
                .take()
                .map(|b| ended.saturating_duration_since(b) + Duration::from_millis(FRAME_MS));
            self.turn_ended = Some(ended);
        }
        self.in_speech = false;
        let ended = *self.turn_ended.get_or_insert(now);
        if self.latency.stt_final.is_none() {
            self.latency.stt_final = Some(now - ended);
        }
        self.history.push(Message::text(Role::User, said));
        self.reply = Some(Reply::default());
        out.push(Action::Llm(StageInput::Reply(self.request())));
    }
}
