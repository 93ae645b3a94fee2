//! The realtime engine: one session fed each input in turn while the socket is watched for
//! `stop` ([`super::inbox`]), and its outputs carried out (audio, marks, `clear`, transcripts,
//! hang-up, transfer).

use super::*;

/// Feeds `input` to a realtime session while reading the socket into `inbox`, so that the
/// caller hanging up ends the call at once however long the plugin takes (see [`inbox`]).
/// `Err` is how the call ends when the socket ended it first; the session's call is then
/// abandoned (dropped half-way) and the session must not be entered again.
pub(super) async fn handle_watching<S: MediaSocket>(
    session: &mut Session,
    input: SessionInput,
    ws: &mut S,
    inbox: &mut inbox::Inbox,
) -> Result<Result<Vec<SessionOutput>, crate::plugin::SessionError>, EndReason> {
    let call = session.handle(input);
    tokio::pin!(call);
    loop {
        tokio::select! {
            biased;
            result = &mut call => return Ok(result),
            read = ws.next(), if inbox.accepting() => {
                if let Some(end) = inbox.push(read) {
                    return Err(end);
                }
            }
        }
    }
}

impl<S: MediaSocket> Call<S> {
    /// Feeds one input to the plugin and carries out its outputs.
    pub(super) async fn feed(&mut self, input: SessionInput) -> Next {
        let Some(active) = &mut self.active else {
            self.stats.dropped += 1;
            tracing::warn!("event before start dropped");
            return Next::Continue;
        };
        if active.hangup_deadline.is_some() {
            // Hanging up: the plugin is done; only the hang-up mark matters now.
            return Next::Continue;
        }
        let mut input = input;
        loop {
            let Some(active) = &mut self.active else {
                return Next::Continue;
            };
            let Engine::Realtime(session) = &mut active.engine else {
                if let SessionInput::Dtmf(digit) = &input {
                    tracing::info!(%digit, "DTMF on a pipeline call: not used yet");
                }
                return Next::Continue;
            };
            let handled = handle_watching(session, input, &mut self.ws, &mut self.inbox).await;
            let outputs = match handled {
                Ok(Ok(o)) => o,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, kind = e.kind(), "plugin failed");
                    return Next::End(EndReason::plugin(e));
                }
                Err(end) => {
                    // The caller hung up while the plugin worked: the call ends now, and the
                    // call into the plugin is abandoned half-way.
                    session.abandon();
                    self.abandoned = true;
                    tracing::info!(reason = %end, "call ended while the plugin was busy");
                    return Next::End(end);
                }
            };
            for output in outputs {
                if let Next::End(r) = self.carry_out(output).await {
                    return Next::End(r);
                }
            }
            // Inputs the outputs caused (`interrupted` after a clear) go in next, in order.
            match self.active.as_mut().and_then(|a| a.deferred.take()) {
                Some(next) => input = next,
                None => return Next::Continue,
            }
        }
    }

    pub(super) async fn carry_out(&mut self, output: SessionOutput) -> Next {
        let Some(active) = &mut self.active else {
            return Next::Continue;
        };
        match output {
            SessionOutput::Play { format, data } => {
                let started = std::time::Instant::now();
                if let Err(e) = active.from_plugin.push(format, &data) {
                    return Next::End(EndReason::plugin(SessionError::Output(e.to_string())));
                }
                // Host work the plugin caused is taken from its CPU share.
                if let Engine::Realtime(session) = &mut active.engine
                    && let Err(e) = session.charge(started.elapsed())
                {
                    tracing::error!(error = %e, kind = e.kind(), "plugin failed");
                    return Next::End(EndReason::plugin(e));
                }
                self.queue_frames(false).await
            }
            SessionOutput::Mark(name) => {
                if let Next::End(r) = self.queue_frames(true).await {
                    return Next::End(r);
                }
                if let Some(active) = &mut self.active {
                    active.playback.push_mark(name);
                }
                self.pump().await
            }
            SessionOutput::ClearPlayback => {
                let now = Instant::now();
                let was_playing = !active.playback.is_idle(now);
                let heard_ms = active.playback.clear(now);
                active.from_plugin.clear();
                self.stats.clears += 1;
                if was_playing {
                    // Barge-in: tell the plugin how much of its reply the caller heard.
                    tracing::debug!(heard_ms, "playback cleared");
                    active.deferred = Some(SessionInput::Interrupted(heard_ms));
                    if let Some(turn) = self
                        .stats
                        .transcript
                        .iter_mut()
                        .rev()
                        .find(|t| t.side == Side::Agent)
                        .filter(|t| t.heard_ms.is_none())
                    {
                        turn.heard_ms = Some(heard_ms);
                    }
                }
                let msg = Outbound::Clear {
                    stream_sid: &active.stream_sid,
                }
                .to_json();
                self.send(msg).await
            }
            SessionOutput::HangUp => {
                if let Next::End(r) = self.queue_frames(true).await {
                    return Next::End(r);
                }
                let Some(active) = &mut self.active else {
                    return Next::Continue;
                };
                active.playback.push_mark(HANGUP_MARK.to_string());
                let now = Instant::now();
                active.hangup_deadline = Some(now + active.playback.remaining(now) + HANGUP_GRACE);
                tracing::info!("plugin hung up; closing after queued audio plays");
                self.pump().await
            }
            SessionOutput::UserTranscript { text, is_final } => {
                tracing::info!(side = "caller", is_final, %text, "transcript");
                if is_final {
                    self.stats.transcript.push(Turn {
                        side: Side::Caller,
                        text,
                        heard_ms: None,
                    });
                }
                Next::Continue
            }
            SessionOutput::AgentTranscript { text, is_final } => {
                tracing::info!(side = "agent", is_final, %text, "transcript");
                if is_final {
                    self.stats.transcript.push(Turn {
                        side: Side::Agent,
                        text,
                        heard_ms: None,
                    });
                }
                Next::Continue
            }
            SessionOutput::Transfer(number) => {
                if !crate::config::is_e164(&number) {
                    tracing::warn!(%number, "transfer to a number that is not E.164; ignored");
                    return Next::Continue;
                }
                if self.ctx.rest.is_none() {
                    tracing::error!(%number, "transfer needs Twilio's REST API: set [twilio] account_sid and auth_token; ignored");
                    return Next::Continue;
                }
                if let Next::End(r) = self.queue_frames(true).await {
                    return Next::End(r);
                }
                let Some(active) = &mut self.active else {
                    return Next::Continue;
                };
                active.transfer_to = Some(number.clone());
                active.playback.push_mark(HANGUP_MARK.to_string());
                let now = Instant::now();
                active.hangup_deadline = Some(now + active.playback.remaining(now) + HANGUP_GRACE);
                tracing::info!(%number, "plugin asked for a transfer; redirecting after queued audio plays");
                self.pump().await
            }
        }
    }
}
