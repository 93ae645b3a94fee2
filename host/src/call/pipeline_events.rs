//! A pipeline call's live events that only its turn-taking knows: the caller's speech starting
//! and stopping (the host VAD, as endpointing sees it), partial transcripts, the agent's text as
//! the LLM writes it, and each finished turn's latency ([`crate::events`]).

use super::pipeline::{Event, Turns};
use crate::events::{CallEvents, EventKind};
use crate::plugin::StageOutput;

/// What of the turn-taking has been reported already.
#[derive(Debug, Default)]
pub(super) struct PipelineEvents {
    /// The caller was speaking at the last look.
    speaking: bool,
    /// When that speech began (ms since the stream's start).
    onset_ms: u64,
    /// Turn latencies reported so far.
    latencies_seen: usize,
}

impl PipelineEvents {
    /// Reports what `event` says by itself, before the turn-taking takes it: partial caller
    /// transcripts and the LLM's text fragments.
    pub(super) fn before(events: &CallEvents, event: &Event) {
        match event {
            Event::Stt(StageOutput::Transcript {
                text,
                is_final: false,
            }) if !text.trim().is_empty() => events.emit(EventKind::CallerTranscript {
                text: text.clone(),
                is_final: false,
            }),
            Event::Llm(StageOutput::TextDelta(text)) if !text.is_empty() => {
                events.emit(EventKind::AgentText {
                    text: text.clone(),
                    is_final: false,
                });
            }
            _ => {}
        }
    }

    /// Reports what changed in `turns` since the last look: speech started or stopped, and
    /// turns whose latency is now known.
    pub(super) fn after(&mut self, events: &CallEvents, turns: &Turns) {
        let (speaking, silence) = turns.caller_speech();
        if speaking != self.speaking {
            let now_ms = events.elapsed_ms();
            if speaking {
                self.onset_ms = now_ms;
                events.emit(EventKind::SpeechStarted { at_ms: now_ms });
            } else {
                let silence_ms = u64::try_from(silence.as_millis()).unwrap_or(u64::MAX);
                let at_ms = now_ms.saturating_sub(silence_ms).max(self.onset_ms);
                events.emit(EventKind::SpeechStopped {
                    at_ms,
                    speech_ms: at_ms - self.onset_ms,
                });
            }
            self.speaking = speaking;
        }
        self.latencies(events, &turns.latencies);
    }

    /// Reports the turn latencies in `latencies` not reported yet.
    pub(super) fn latencies(
        &mut self,
        events: &CallEvents,
        latencies: &[super::pipeline::TurnLatency],
    ) {
        for (n, latency) in latencies.iter().enumerate().skip(self.latencies_seen) {
            events.emit(EventKind::TurnLatency {
                turn: n + 1,
                latency: *latency,
            });
        }
        self.latencies_seen = self.latencies_seen.max(latencies.len());
    }
}
