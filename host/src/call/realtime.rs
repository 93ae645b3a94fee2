//! The realtime engine: one speech-to-speech session fed each input in turn while the socket is
//! watched for `stop` ([`super::inbox`]), and its outputs carried out through the [`Line`]
//! (audio, marks, `clear`, transcripts, hang-up, transfer).

use super::*;
use crate::tools::Toolbox;

/// A realtime agent's engine: its one session and what the host owes it.
pub(in crate::call) struct RealtimeEngine {
    session: Session,
    /// The plugin's name in agents.toml, for blame.
    plugin: String,
    /// Inputs the host owes the plugin after the outputs being carried out (`interrupted`, a
    /// tool's result), in order.
    deferred: std::collections::VecDeque<SessionInput>,
    /// A call into the session was abandoned half-way (the caller hung up): the session gets
    /// no `hangup`.
    abandoned: bool,
    /// What the agent may call, and the calls in flight.
    tools: Toolbox,
}

impl RealtimeEngine {
    /// Opens a session of the plugin `used` names for `config`.
    ///
    /// # Errors
    /// The plugin refused or failed to open a session: how the call ends.
    pub(super) async fn open(
        plugin: &Plugin,
        used: &PluginUse,
        config: &SessionConfig,
        tools: Toolbox,
    ) -> Result<Self, EndReason> {
        match plugin.open(config).await {
            Ok(session) => Ok(Self {
                session,
                plugin: used.plugin.clone(),
                deferred: std::collections::VecDeque::new(),
                abandoned: false,
                tools,
            }),
            Err(e) => {
                tracing::error!(error = %e, kind = e.kind(), "plugin session failed to open");
                Err(EndReason::PluginFailed(PluginFailure::of(
                    &used.plugin,
                    None,
                    e,
                )))
            }
        }
    }

    fn failed(&self, e: SessionError) -> Next {
        tracing::error!(error = %e, kind = e.kind(), "plugin failed");
        Next::End(EndReason::PluginFailed(PluginFailure::of(
            &self.plugin,
            None,
            e,
        )))
    }

    /// Feeds one input to the plugin and carries out its outputs, then any input they caused.
    async fn feed<S: MediaSocket>(&mut self, line: &mut Line<'_, S>, input: SessionInput) -> Next {
        if line.is_ending() {
            // Hanging up: the plugin is done; only the hang-up mark matters now.
            return Next::Continue;
        }
        let mut input = input;
        loop {
            let outputs = match line.watching(self.session.handle(input)).await {
                Ok(Ok(o)) => o,
                Ok(Err(e)) => return self.failed(e),
                Err(end) => {
                    // The caller hung up while the plugin worked: the call ends now, and the
                    // call into the plugin is abandoned half-way.
                    self.session.abandon();
                    self.abandoned = true;
                    tracing::info!(reason = %end, "call ended while the plugin was busy");
                    return Next::End(end);
                }
            };
            for output in outputs {
                if let Next::End(r) = self.carry_out(line, output).await {
                    return Next::End(r);
                }
            }
            // Inputs the outputs caused (`interrupted` after a clear) go in next, in order.
            match self.deferred.pop_front() {
                Some(next) => input = next,
                None => return Next::Continue,
            }
        }
    }

    async fn carry_out<S: MediaSocket>(
        &mut self,
        line: &mut Line<'_, S>,
        output: SessionOutput,
    ) -> Next {
        match output {
            SessionOutput::Play { format, data } => {
                let started = std::time::Instant::now();
                if let Err(e) = line.push_audio(format, &data) {
                    return self.failed(SessionError::Output(e.to_string()));
                }
                // Host work the plugin caused is taken from its CPU share.
                if let Err(e) = self.session.charge(started.elapsed()) {
                    return self.failed(e);
                }
                line.queue_frames(false).await
            }
            SessionOutput::Mark(name) => line.mark(name).await,
            SessionOutput::ClearPlayback => {
                let cleared = match line.clear().await {
                    Ok(c) => c,
                    Err(end) => return end,
                };
                if cleared.was_playing {
                    // Barge-in: tell the plugin how much of its reply the caller heard.
                    tracing::debug!(heard_ms = cleared.heard_ms, "playback cleared");
                    self.deferred
                        .push_back(SessionInput::Interrupted(cleared.heard_ms));
                    if let Some(turn) = line
                        .stats
                        .transcript
                        .iter_mut()
                        .rev()
                        .find(|t| t.side == Side::Agent)
                        .filter(|t| t.heard_ms.is_none())
                    {
                        turn.heard_ms = Some(cleared.heard_ms);
                    }
                }
                Next::Continue
            }
            SessionOutput::HangUp => {
                tracing::info!("plugin hung up; closing after queued audio plays");
                line.end_after_playback(None).await
            }
            SessionOutput::UserTranscript { text, is_final } => {
                if is_final {
                    line.transcript(Side::Caller, text, None);
                } else {
                    tracing::debug!(side = "caller", %text, "partial transcript");
                    line.playout
                        .events
                        .emit(crate::events::EventKind::CallerTranscript {
                            text,
                            is_final: false,
                        });
                }
                Next::Continue
            }
            SessionOutput::AgentTranscript { text, is_final } => {
                if is_final {
                    line.transcript(Side::Agent, text, None);
                } else {
                    tracing::debug!(side = "agent", %text, "partial transcript");
                    line.playout
                        .events
                        .emit(crate::events::EventKind::AgentText {
                            text,
                            is_final: false,
                        });
                }
                Next::Continue
            }
            SessionOutput::ToolCall(call) => {
                let (done, ending) = tool_calls::dispatch(&mut self.tools, line, call);
                if let Some(done) = done {
                    self.deferred
                        .push_back(SessionInput::ToolResult(done.result()));
                }
                match ending {
                    Some(tool_calls::Ending(to)) => line.end_after_playback(to).await,
                    None => Next::Continue,
                }
            }
            SessionOutput::Transfer(number) => {
                if !crate::config::is_e164(&number) {
                    tracing::warn!(%number, "transfer to a number that is not E.164; ignored");
                    return Next::Continue;
                }
                if !line.can_transfer {
                    tracing::error!(%number, "transfer needs Twilio's REST API: set [twilio] account_sid and auth_token; ignored");
                    return Next::Continue;
                }
                tracing::info!(%number, "plugin asked for a transfer; redirecting after queued audio plays");
                line.end_after_playback(Some(number)).await
            }
        }
    }
}

impl Engine for RealtimeEngine {
    async fn started<S: MediaSocket>(&mut self, line: &mut Line<'_, S>) -> Next {
        // The plugin greets (or not) from `open`; it learns its tools first of all inputs, with
        // the MCP tools available now (later ones follow as they arrive).
        if self.tools.is_empty() {
            return Next::Continue;
        }
        let tools = self.tools.tools();
        self.feed(line, SessionInput::Tools(tools)).await
    }

    async fn caller_frame<S: MediaSocket>(
        &mut self,
        line: &mut Line<'_, S>,
        frame: CallerFrame<'_>,
    ) -> Next {
        let input = SessionInput::Audio {
            data: frame.data,
            timestamp_ms: frame.timestamp_ms,
        };
        self.feed(line, input).await
    }

    async fn dtmf<S: MediaSocket>(&mut self, line: &mut Line<'_, S>, digit: String) -> Next {
        self.feed(line, SessionInput::Dtmf(digit)).await
    }

    async fn mark_played<S: MediaSocket>(&mut self, line: &mut Line<'_, S>, name: String) -> Next {
        self.feed(line, SessionInput::MarkPlayed(name)).await
    }

    async fn next_event(&mut self) -> EngineEvent {
        tokio::select! {
            event = self.session.next_io_event() => EngineEvent::Io(event),
            event = self.tools.next_event() => event.into(),
        }
    }

    async fn on_event<S: MediaSocket>(
        &mut self,
        line: &mut Line<'_, S>,
        event: EngineEvent,
    ) -> Next {
        match event {
            EngineEvent::Io(event) => self.feed(line, SessionInput::Io(event)).await,
            EngineEvent::ToolDone(done) => {
                let done = tool_calls::finished(line, done);
                self.feed(line, SessionInput::ToolResult(done.result()))
                    .await
            }
            EngineEvent::ToolsChanged(tools) => {
                tracing::info!(tools = tools.len(), "the agent's tools changed");
                self.feed(line, SessionInput::Tools(tools)).await
            }
            EngineEvent::Report(_) => Next::Continue,
        }
    }

    fn wake_at(&self) -> Option<Instant> {
        None
    }

    async fn wake<S: MediaSocket>(&mut self, _line: &mut Line<'_, S>) -> Next {
        Next::Continue
    }

    async fn end<S: MediaSocket>(&mut self, _line: &mut Line<'_, S>) -> Option<EndFailure> {
        self.tools.abort_all();
        if self.abandoned {
            return None;
        }
        // A failure here counts like any other (metrics, breaker, record).
        match self.session.handle(SessionInput::Hangup).await {
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, kind = e.kind(), "plugin failed on hangup");
                Some(EndFailure {
                    plugin: self.plugin.clone(),
                    kind: e.kind(),
                    message: e.to_string(),
                })
            }
        }
    }
}
