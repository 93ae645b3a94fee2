//! The pipeline orchestrator's turn-taking, sans I/O: what a pipeline agent (STT → LLM → TTS
//! plugins) does with each thing that happens on the call. The call task feeds it [`Event`]s and
//! carries out the [`Action`]s it returns; this module owns no socket, session or clock.
//!
//! - **Endpointing.** Caller frames carry the host VAD's verdict. After [`TurnConfig::endpointing`]
//!   of silence following speech, the STT is told `end-of-turn`; its final transcript and
//!   `end-of-turn` close the turn. Sooner when the STT's interim transcript, arriving after
//!   [`EARLY_ENDPOINTING_SILENCE`] of silence, is a whole sentence (ends with `.`, `?` or `!`):
//!   the recognizer has heard a complete question or statement, so waiting longer only delays
//!   the answer. An STT with its own endpointing may close the turn first: it wins.
//! - **History.** The agent's instructions (as `system`), then caller and agent turns. An agent
//!   turn enters the history once it has played, or, when the caller cut in, cut to what the
//!   caller heard.
//! - **Streaming.** LLM text goes to TTS clause by clause (at `.`, `!`, `?`, `;`, `:` or `,`
//!   followed by a space, once [`MIN_CLAUSE_CHARS`] have gathered), each clause followed by
//!   `flush`, so the first audio starts before the reply is complete and each clause's audio is
//!   known (the synthesizer answers each flush with `utterance-done`).
//! - **Barge-in.** Caller speech while the agent is audible or replying: clear playback, cancel
//!   LLM and TTS. The call task answers with [`Event::Interrupted`] (the playback clock's heard
//!   ms), and the history keeps the clauses heard in full plus the heard share of the clause that
//!   was playing (whole words).
//! - **Tool calls.** The LLM's tool calls run while the reply's text so far plays ([`Action::RunTool`];
//!   the call task answers each with [`Event::ToolResult`]). When the LLM is done and every result
//!   is in, the history gets the assistant message carrying the calls and one `tool` message per
//!   result, and the LLM is asked to continue. A tool still running after the agent's filler delay
//!   ([`Event::ToolsSlow`]) with nothing playing makes the agent say its filler phrase. A barge-in
//!   keeps the calls: their results still enter the history, for the next turn.
//! - **Latency.** Each turn records end of caller speech → STT final → LLM first text → TTS first
//!   audio → first audio sent to the caller ([`TurnLatency`]).

use std::time::Duration;

use tokio::time::Instant;

use crate::plugin::tools::{ToolCall, ToolResult};
use crate::plugin::{AudioEncoding, AudioFormat, Message, Role, StageInput, StageOutput};

/// Default caller silence that ends a turn: long enough for a breath between phrases, short
/// enough that the agent does not feel slow (the 500–800 ms range usual on the phone).
pub const DEFAULT_ENDPOINTING: Duration = Duration::from_millis(600);

/// Caller silence after which an interim transcript that ends a sentence (`.`, `?`, `!`) ends
/// the turn before [`TurnConfig::endpointing`]: longer than the gaps between words, so a
/// sentence-final mark the recognizer guessed mid-phrase does not cut the caller off while
/// they are still talking; 300 ms is the short end of the pauses people leave at a turn's end.
pub const EARLY_ENDPOINTING_SILENCE: Duration = Duration::from_millis(300);

/// Fewest characters sent to TTS as one clause (very short clauses sound choppy).
pub const MIN_CLAUSE_CHARS: usize = 12;

/// How a pipeline agent takes turns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnConfig {
    /// The agent's instructions: the first `system` message of every LLM request.
    pub instructions: String,
    /// Caller silence after speech that ends the turn.
    pub endpointing: Duration,
    /// Said first, through the TTS, when the call starts.
    pub greeting: Option<String>,
    /// Said while a slow tool runs ([`Event::ToolsSlow`]); `None`: nothing is said.
    pub filler: Option<String>,
    /// How long after a key press the keys pressed so far become a caller turn.
    pub keypad_timeout: Duration,
    /// A barge-in after which the caller said nothing (their turn closes with no words: a
    /// cough, a door, line noise) is a false interruption: the agent says the rest of the cut
    /// reply instead of falling silent.
    pub resume_false_interruptions: bool,
    /// How long the caller must speak over the agent before it counts as an interruption
    /// (zero: the first speech frame interrupts).
    pub min_interruption: Duration,
}

/// Most keys one keypad turn collects; more are dropped.
pub const MAX_KEYS: usize = 32;

/// How a keypad turn reaches the LLM: a user message `DTMF: <keys>` (e.g. `DTMF: 1043`).
pub const KEYPAD_PREFIX: &str = "DTMF: ";

/// Something that happened on the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The call started (send the greeting).
    Started,
    /// One 20 ms caller frame in the STT's input format, with the host VAD's verdict.
    CallerFrame {
        /// The VAD heard speech in it.
        speech: bool,
        /// Samples for the STT.
        data: Vec<u8>,
        /// Milliseconds since the stream started.
        timestamp_ms: u64,
    },
    /// The STT said something.
    Stt(StageOutput),
    /// The LLM said something.
    Llm(StageOutput),
    /// The TTS said something.
    Tts(StageOutput),
    /// Playback was cleared (after [`Action::ClearPlayback`]); the caller had heard this many ms
    /// of the reply, by the playback clock.
    Interrupted {
        /// Heard ms of the reply.
        heard_ms: u64,
    },
    /// Everything queued for the caller has played.
    PlaybackIdle,
    /// A tool call ([`Action::RunTool`]) finished. `continue_reply` is false when the call
    /// ends after this reply (`end_call`, `transfer_call`): the LLM is not asked to go on.
    ToolResult {
        /// The result.
        result: ToolResult,
        /// Ask the LLM to continue once every result of the reply is in.
        continue_reply: bool,
    },
    /// A tool has been running for the agent's filler delay.
    ToolsSlow,
    /// The caller pressed a key (`0`–`9`, `*`, `#`, `A`–`D`).
    Dtmf(String),
    /// The keypad timeout after the last key press passed ([`Turns::keypad_deadline`]).
    KeypadTimeout,
}

/// What the call task must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Feed the STT session.
    Stt(StageInput),
    /// Feed the LLM session.
    Llm(StageInput),
    /// Feed the TTS session.
    Tts(StageInput),
    /// Queue TTS audio for the caller.
    Play {
        /// Format of `data`.
        format: AudioFormat,
        /// Samples.
        data: Vec<u8>,
    },
    /// Clear playback now and answer with [`Event::Interrupted`].
    ClearPlayback,
    /// Run this tool call; answer with [`Event::ToolResult`].
    RunTool(ToolCall),
}

/// Timings of one turn, from the end of the caller's speech.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TurnLatency {
    /// End of caller speech → the STT's final transcript.
    pub stt_final: Option<Duration>,
    /// → the LLM's first text.
    pub llm_first_text: Option<Duration>,
    /// → the TTS's first audio.
    pub tts_first_audio: Option<Duration>,
    /// → the first audio queued for the caller (heard a playback lead later at most).
    pub first_audio_out: Option<Duration>,
    /// How long the turn-taking took to decide the turn was over, from the caller's last
    /// speech frame (the host's endpointing silence, or less when the recognizer ended the turn
    /// first). Counted before the figures above, which start at the speech end.
    pub endpointing: Option<Duration>,
    /// The caller's speech as the detector heard it, onset to last speech frame: a turn held
    /// open by noise shows here as speech far longer than what was said.
    pub speech: Option<Duration>,
}

/// One clause of a reply and the audio the TTS returned for it.
#[derive(Debug, Clone, Default)]
struct Clause {
    text: String,
    audio_ms: u64,
    done: bool,
    /// The filler phrase: played, never in the history.
    filler: bool,
}

#[derive(Debug, Default)]
struct Reply {
    clauses: Vec<Clause>,
    /// LLM text not yet cut into a clause.
    pending: String,
    llm_done: bool,
    /// Cancelled by barge-in: waiting for the heard ms.
    interrupted: bool,
    /// The greeting (not an LLM reply).
    greeting: bool,
    /// Clauses already in the history (with the tool calls that followed them).
    committed: usize,
}

/// One call's turn-taking state. See the module docs.
#[derive(Debug)]
pub struct Turns {
    config: TurnConfig,
    history: Vec<Message>,
    tools: Option<PendingTools>,
    in_speech: bool,
    silence: Duration,
    /// The caller's final transcripts of the current turn.
    heard: String,
    /// The host's endpointing told the STT `end-of-turn`: its next final transcript closes
    /// the turn (an `end-of-turn` of its own after it is optional).
    awaiting_final: bool,
    reply: Option<Reply>,
    /// Agent audio has been queued and has not all played.
    audible: bool,
    /// When the caller's current turn ended (for latency).
    turn_ended: Option<Instant>,
    /// When the detector heard the current turn's speech begin.
    speech_began: Option<Instant>,
    /// Speech frames heard since the current speech began (for
    /// [`TurnConfig::min_interruption`]).
    voiced: Duration,
    latency: TurnLatency,
    /// Latencies of finished turns.
    pub latencies: Vec<TurnLatency>,
    /// The words of the last cut reply the caller did not hear, until their turn shows
    /// whether the interruption was real.
    resume: Option<String>,
    /// Keys pressed for the keypad turn in progress.
    keys: String,
    /// When the keys pressed so far become a caller turn.
    keys_deadline: Option<Instant>,
    /// The caller's speech over the agent, for the interruption rules by words.
    over: SpokenOver,
    /// The current run of speech frames (or the last): the silence before it and its length,
    /// so a run the VAD later finds was noise counts as silence ([`Turns::segment_ended`]).
    run: (Duration, Duration),
    /// A run of the caller's current speech was speech, not noise (or it began over the agent).
    run_was_speech: bool,
    /// The recognizer's interim transcript of the speech so far ended a sentence, before the
    /// caller had been silent [`EARLY_ENDPOINTING_SILENCE`]: the turn ends when they have
    /// (unless they speak again first).
    sentence_heard: bool,
}

impl Turns {
    /// A call's turns under `config`.
    pub fn new(config: TurnConfig) -> Self {
        Self {
            config,
            history: Vec::new(),
            tools: None,
            in_speech: false,
            silence: Duration::ZERO,
            heard: String::new(),
            awaiting_final: false,
            reply: None,
            audible: false,
            turn_ended: None,
            speech_began: None,
            voiced: Duration::ZERO,
            latency: TurnLatency::default(),
            latencies: Vec::new(),
            resume: None,
            keys: String::new(),
            keys_deadline: None,
            over: SpokenOver::default(),
            run: (Duration::ZERO, Duration::ZERO),
            run_was_speech: false,
            sentence_heard: false,
        }
    }

    /// When the keys pressed so far become a caller turn ([`Event::KeypadTimeout`]), if keys
    /// are waiting.
    pub fn keypad_deadline(&self) -> Option<Instant> {
        self.keys_deadline
    }

    /// The conversation so far (without the instructions).
    pub fn history(&self) -> &[Message] {
        &self.history
    }

    /// Handles one event at `now`; returns what to do.
    pub fn on(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Started => {
                if let Some(greeting) = self.config.greeting.clone() {
                    self.reply = Some(Reply {
                        greeting: true,
                        ..Reply::default()
                    });
                    self.say(greeting, &mut out);
                }
            }
            Event::CallerFrame {
                speech,
                data,
                timestamp_ms,
            } => self.caller_frame(speech, data, timestamp_ms, now, &mut out),
            Event::Stt(output) => self.stt(output, now, &mut out),
            Event::Llm(output) => self.llm(output, now, &mut out),
            Event::Tts(output) => self.tts(output, now, &mut out),
            Event::Interrupted { heard_ms } => {
                self.interrupted(heard_ms);
                self.after_clear(now, &mut out);
            }
            Event::PlaybackIdle => {
                self.audible = false;
                self.finish_reply_if_played();
            }
            Event::ToolResult {
                result,
                continue_reply,
            } => self.tool_result(result, continue_reply, &mut out),
            Event::ToolsSlow => self.tools_slow(&mut out),
            Event::Dtmf(digit) => self.dtmf(digit, now, &mut out),
            Event::KeypadTimeout => self.close_keypad_turn(now, &mut out),
        }
        out
    }

    /// The caller cut in: clear playback, cancel the LLM and TTS (the call task answers the
    /// clear with [`Event::Interrupted`]).
    fn barge_in(&mut self, out: &mut Vec<Action>) {
        out.push(Action::ClearPlayback);
        out.push(Action::Llm(StageInput::Cancel));
        out.push(Action::Tts(StageInput::Cancel));
        if let Some(r) = &mut self.reply {
            r.interrupted = true;
        }
    }

    /// Nothing in progress: no reply, no tool call waiting.
    pub fn is_quiet(&self) -> bool {
        self.reply.is_none() && self.tools.is_none()
    }

    /// The LLM request for the history so far: the instructions, then the history.
    fn request(&self) -> Vec<Message> {
        let mut request = vec![Message::text(
            Role::System,
            self.config.instructions.clone(),
        )];
        request.extend(self.history.iter().cloned());
        request
    }

    fn llm(&mut self, output: StageOutput, now: Instant, out: &mut Vec<Action>) {
        let Some(reply) = self
            .reply
            .as_mut()
            .filter(|r| !r.interrupted && !r.greeting)
        else {
            return; // a cancelled reply's late text
        };
        match output {
            StageOutput::TextDelta(text) => {
                if let (Some(t), None) = (self.turn_ended, self.latency.llm_first_text) {
                    self.latency.llm_first_text = Some(now - t);
                }
                reply.pending.push_str(&text);
                let mut clauses = Vec::new();
                loop {
                    let first = reply.clauses.is_empty() && clauses.is_empty();
                    // A punctuation cut, else, for the first clause, a word cut.
                    let Some(end) = clause_end(&reply.pending)
                        .or_else(|| first.then(|| first_clause_end(&reply.pending)).flatten())
                    else {
                        break;
                    };
                    clauses.push(reply.pending.drain(..end).collect::<String>());
                }
                for clause in clauses {
                    self.say(clause, out);
                }
            }
            StageOutput::Done => {
                let mut rest = std::mem::take(&mut reply.pending);
                let calling = self.tools.as_ref().is_some_and(|t| !t.llm_done);
                if !calling {
                    reply.llm_done = true;
                }
                if reply.clauses.is_empty()
                    && let Some(end) = first_clause_end(&rest)
                {
                    let first = rest.drain(..end).collect();
                    self.say(first, out);
                }
                if !rest.trim().is_empty() {
                    self.say(rest, out);
                }
                if calling {
                    // The text so far goes into the history with the calls.
                    if let (Some(reply), Some(tools)) = (&mut self.reply, &mut self.tools) {
                        tools.text = spoken(&reply.clauses[reply.committed..]);
                        reply.committed = reply.clauses.len();
                        tools.llm_done = true;
                    }
                    self.tools_complete(out);
                } else {
                    self.finish_reply_if_played();
                }
            }
            StageOutput::ToolCall(call) => {
                let tools = self.tools.get_or_insert_with(|| PendingTools {
                    calls: Vec::new(),
                    results: Vec::new(),
                    text: String::new(),
                    llm_done: false,
                    live: true,
                    continue_reply: true,
                    filled: false,
                });
                tools.calls.push(call.clone());
                tools.results.push(None);
                out.push(Action::RunTool(call));
            }
            _ => {}
        }
    }

    /// Sends one clause to the TTS, followed by `flush`.
    fn say(&mut self, text: String, out: &mut Vec<Action>) {
        if let Some(reply) = &mut self.reply {
            reply.clauses.push(Clause {
                text: text.clone(),
                ..Clause::default()
            });
        }
        out.push(Action::Tts(StageInput::Text(text)));
        out.push(Action::Tts(StageInput::Flush));
    }

    fn tts(&mut self, output: StageOutput, now: Instant, out: &mut Vec<Action>) {
        let Some(reply) = self.reply.as_mut().filter(|r| !r.interrupted) else {
            return; // a cancelled utterance's late audio
        };
        match output {
            StageOutput::Audio { format, data } => {
                if let Some(clause) = reply.clauses.iter_mut().find(|c| !c.done) {
                    clause.audio_ms += duration_ms(format, data.len());
                }
                if let Some(t) = self.turn_ended {
                    if self.latency.tts_first_audio.is_none() {
                        self.latency.tts_first_audio = Some(now - t);
                    }
                    if self.latency.first_audio_out.is_none() {
                        self.latency.first_audio_out = Some(now - t);
                    }
                }
                self.audible = true;
                out.push(Action::Play { format, data });
            }
            StageOutput::UtteranceDone => {
                if let Some(clause) = reply.clauses.iter_mut().find(|c| !c.done) {
                    clause.done = true;
                }
            }
            _ => {}
        }
    }

    fn interrupted(&mut self, heard_ms: u64) {
        self.audible = false;
        let Some(reply) = self.reply.take() else {
            return;
        };
        if let Some(tools) = &mut self.tools {
            // The calls run on; their results enter the history for the next turn (after what
            // the caller heard, below, when the LLM had not finished).
            tools.live = false;
            tools.llm_done = true;
        }
        // The clauses already given to the history (before tool calls) played first.
        let committed_ms: u64 = reply.clauses[..reply.committed]
            .iter()
            .map(|c| c.audio_ms)
            .sum();
        let rest = &reply.clauses[reply.committed..];
        let (heard, unheard) = split_heard(rest, heard_ms.saturating_sub(committed_ms));
        if !heard.is_empty() {
            self.history.push(Message::text(Role::Assistant, heard));
        }
        // What the caller did not hear, to resume if the interruption proves false (not a
        // reply waiting on tools: its results decide what comes next).
        let unheard = format!("{unheard} {}", reply.pending.trim());
        self.resume = (self.config.resume_false_interruptions
            && self.tools.is_none()
            && !unheard.trim().is_empty())
        .then(|| unheard.trim().to_string());
        self.close_turn();
        let mut none = Vec::new();
        self.tools_complete(&mut none);
    }

    /// Once the LLM is done, every clause synthesized and all audio played, the reply enters
    /// the history whole.
    fn finish_reply_if_played(&mut self) {
        let finished = self.reply.as_ref().is_some_and(|r| {
            (r.llm_done || r.greeting)
                && r.pending.is_empty()
                && r.clauses.iter().all(|c| c.done)
                && !self.audible
                && !r.interrupted
        });
        if finished && let Some(reply) = self.reply.take() {
            let text = spoken(&reply.clauses[reply.committed..]);
            if !text.is_empty() || reply.committed == 0 {
                self.history.push(Message::text(Role::Assistant, text));
            }
            self.close_turn();
        }
    }

    /// Whether the caller is speaking (a speech segment is open: its trailing silence is not
    /// yet long enough to end it), and that trailing silence.
    pub fn caller_speech(&self) -> (bool, Duration) {
        (self.in_speech, self.silence)
    }

    fn close_turn(&mut self) {
        if self.turn_ended.take().is_some() {
            self.latencies.push(std::mem::take(&mut self.latency));
        }
    }
}

#[path = "pipeline_caller.rs"]
mod caller;
#[path = "pipeline_clauses.rs"]
mod clauses;
pub use clauses::{
    FIRST_CLAUSE_BREAKS, FIRST_CLAUSE_MAX_WORDS, FIRST_CLAUSE_MIN_REST, FIRST_CLAUSE_MIN_WORDS,
};
use clauses::{clause_end, duration_ms, ends_sentence, first_clause_end, split_heard, spoken};
#[path = "pipeline_interrupt.rs"]
mod interrupt;
use interrupt::{Settled, SpokenOver};
#[path = "pipeline_keypad.rs"]
mod keypad;
#[path = "pipeline_tools.rs"]
mod tools;
use tools::PendingTools;

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
