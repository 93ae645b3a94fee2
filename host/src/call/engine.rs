//! What runs the conversation of a started call: the [`Engine`] trait, and the two engines
//! behind it — [`RealtimeEngine`] (one speech-to-speech session, `realtime.rs`) and
//! [`PipelineEngine`] (STT → LLM → TTS stages and the host's turn-taking, `pipeline_engine.rs`).
//!
//! The call loop (`event_loop.rs`) owns the socket, the inbound audio path and the playback
//! clock; it hands an engine each event with a [`Line`] to act on the call through (play audio,
//! marks, `clear`, hang up, transfer, transcript). An engine never touches the socket otherwise.

use super::*;

pub(super) use super::pipeline_engine::PipelineEngine;
pub(super) use super::realtime::RealtimeEngine;

/// One caller frame as the engine gets it.
pub(super) struct CallerFrame<'a> {
    /// 20 ms of G.711 μ-law at 8 kHz as Twilio sent it ([`FRAME_SAMPLES`] bytes), for the host's
    /// own listening (VAD).
    pub(super) mulaw: &'a [u8],
    /// The same audio converted to the plugin's input format.
    pub(super) data: Vec<u8>,
    /// Twilio's `media.timestamp` (ms since the stream began).
    pub(super) timestamp_ms: u64,
}

/// Something an engine's own work produced, for [`Engine::on_event`].
pub(super) enum EngineEvent {
    /// A realtime session's host I/O completed.
    Io(IoEvent),
    /// A pipeline stage reported.
    Report(StageReport),
    /// A tool call in flight finished.
    ToolDone(crate::tools::Finished),
    /// The agent's tools changed (an MCP server's tools arrived, changed or went).
    ToolsChanged(Vec<crate::plugin::tools::Tool>),
}

impl From<crate::tools::ToolEvent> for EngineEvent {
    fn from(event: crate::tools::ToolEvent) -> Self {
        match event {
            crate::tools::ToolEvent::Finished(f) => Self::ToolDone(f),
            crate::tools::ToolEvent::Changed(t) => Self::ToolsChanged(t),
        }
    }
}

/// A conversation engine: reacts to the caller (audio, DTMF), to the playback clock (a mark
/// played, playback idle) and to its own work, and acts on the call through a [`Line`]. Each
/// method returns whether the call goes on.
pub(super) trait Engine {
    /// The call started (the engine was just opened): a pipeline speaks its greeting.
    async fn started<S: MediaSocket>(&mut self, line: &mut Line<'_, S>) -> Next;

    /// One caller frame.
    async fn caller_frame<S: MediaSocket>(
        &mut self,
        line: &mut Line<'_, S>,
        frame: CallerFrame<'_>,
    ) -> Next;

    /// A DTMF digit (`0`–`9`, `*`, `#`) the caller pressed.
    async fn dtmf<S: MediaSocket>(&mut self, line: &mut Line<'_, S>, digit: String) -> Next;

    /// Twilio echoed a mark the engine queued: the audio before it played.
    async fn mark_played<S: MediaSocket>(&mut self, line: &mut Line<'_, S>, name: String) -> Next;

    /// The engine's next event; pending while there is none. Cancel-safe: the call loop
    /// `select!`s on it.
    async fn next_event(&mut self) -> EngineEvent;

    /// Carries out one of the engine's events.
    async fn on_event<S: MediaSocket>(
        &mut self,
        line: &mut Line<'_, S>,
        event: EngineEvent,
    ) -> Next;

    /// When the engine wants [`Engine::wake`] called, if ever.
    fn wake_at(&self) -> Option<Instant>;

    /// The time [`Engine::wake_at`] gave has come.
    async fn wake<S: MediaSocket>(&mut self, line: &mut Line<'_, S>) -> Next;

    /// The call is ending for `reason`, with its session(s) still usable (not after a plugin
    /// failure): tell the plugins, and settle the transcript. A plugin failure here is returned
    /// and counted, though the call ended for another reason.
    async fn end<S: MediaSocket>(&mut self, line: &mut Line<'_, S>) -> Option<EndFailure>;
}

/// The engine of a started call: one of the two, dispatched statically (the realtime one is
/// used on every frame).
#[allow(
    clippy::large_enum_variant,
    reason = "one per call; the realtime session is used on every frame, so it stays inline"
)]
pub(super) enum AnyEngine {
    /// One realtime session.
    Realtime(RealtimeEngine),
    /// Three stage sessions in their own tasks, and the host's turn-taking.
    Pipeline(Box<PipelineEngine>),
}

/// Runs `$body` with `$e` bound to whichever engine `$engine` holds.
macro_rules! dispatch {
    ($engine:expr, $e:ident => $body:expr) => {
        match $engine {
            AnyEngine::Realtime($e) => $body,
            AnyEngine::Pipeline($e) => $body,
        }
    };
}

impl AnyEngine {
    /// A playback clock for this engine's call, starting now.
    pub(super) fn playback(&self) -> Playback {
        let playback = Playback::new(Instant::now());
        match self {
            Self::Realtime(_) => playback,
            // A pipeline speaks a reply clause by clause, with gaps between them.
            Self::Pipeline(_) => playback.with_explicit_replies(),
        }
    }
}

impl Engine for AnyEngine {
    async fn started<S: MediaSocket>(&mut self, line: &mut Line<'_, S>) -> Next {
        dispatch!(self, e => e.started(line).await)
    }

    async fn caller_frame<S: MediaSocket>(
        &mut self,
        line: &mut Line<'_, S>,
        frame: CallerFrame<'_>,
    ) -> Next {
        dispatch!(self, e => e.caller_frame(line, frame).await)
    }

    async fn dtmf<S: MediaSocket>(&mut self, line: &mut Line<'_, S>, digit: String) -> Next {
        dispatch!(self, e => e.dtmf(line, digit).await)
    }

    async fn mark_played<S: MediaSocket>(&mut self, line: &mut Line<'_, S>, name: String) -> Next {
        dispatch!(self, e => e.mark_played(line, name).await)
    }

    async fn next_event(&mut self) -> EngineEvent {
        dispatch!(self, e => e.next_event().await)
    }

    async fn on_event<S: MediaSocket>(
        &mut self,
        line: &mut Line<'_, S>,
        event: EngineEvent,
    ) -> Next {
        dispatch!(self, e => e.on_event(line, event).await)
    }

    fn wake_at(&self) -> Option<Instant> {
        dispatch!(self, e => e.wake_at())
    }

    async fn wake<S: MediaSocket>(&mut self, line: &mut Line<'_, S>) -> Next {
        dispatch!(self, e => e.wake(line).await)
    }

    async fn end<S: MediaSocket>(&mut self, line: &mut Line<'_, S>) -> Option<EndFailure> {
        dispatch!(self, e => e.end(line).await)
    }
}
