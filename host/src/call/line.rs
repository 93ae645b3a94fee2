//! The call's side towards Twilio once `start` has arrived, as the engines see it: outbound audio
//! (plugin audio reframed into the playback queue, paced out by the playback clock of
//! [`crate::audio::playback`], one write per loop event), marks, `clear` (barge-in), the end of
//! the call after the last audio plays (hang-up, transfer), the transcript, and reading the
//! socket while a plugin works. Also the apology, played on the socket when a call fails.

use super::*;

/// What a started call plays out, and how it ends once it has played: owned by [`Active`].
pub(super) struct Playout {
    pub(super) stream_sid: String,
    /// Reframes plugin audio into 20 ms μ-law frames.
    pub(super) from_plugin: FromPlugin,
    /// Paces outbound audio and knows what the caller heard.
    pub(super) playback: Playback,
    /// When `start` arrived (for time-to-first-audio).
    pub(super) started: Instant,
    /// Set once the agent hung up: close when the hang-up mark returns or at this deadline.
    pub(super) hangup_deadline: Option<Instant>,
    /// Set when the agent asked for a transfer: once the queued audio has played (as for a
    /// hang-up), the call is redirected to this number.
    pub(super) transfer_to: Option<String>,
    /// What the agent played, to tell the caller's speech from its echo: set by an engine that
    /// listens to the caller itself (the pipeline's barge-in and endpointing).
    pub(super) echo: Option<EchoGate>,
    /// The call's live events.
    pub(super) events: crate::events::CallEvents,
}

impl Playout {
    pub(super) fn new(
        stream_sid: String,
        playback: Playback,
        mut events: crate::events::CallEvents,
    ) -> Self {
        let started = Instant::now();
        events.set_started(started);
        Self {
            stream_sid,
            from_plugin: FromPlugin::new(),
            playback,
            started,
            hangup_deadline: None,
            transfer_to: None,
            echo: None,
            events,
        }
    }

    /// How the call ends once the agent's last audio has played.
    pub(super) fn ending(&self) -> EndReason {
        match &self.transfer_to {
            Some(number) => EndReason::Transferred(number.clone()),
            None => EndReason::HungUp,
        }
    }
}

/// An engine's view of its call: the socket, the playout and the counters, borrowed from the
/// call for one event ([`Call::engine_and_line`]).
pub(super) struct Line<'a, S> {
    pub(super) ws: &'a mut S,
    /// Twilio messages read while a plugin worked.
    pub(super) inbox: &'a mut inbox::Inbox,
    pub(super) stats: &'a mut CallStats,
    pub(super) metrics: &'a mut CallMetrics,
    /// Messages queued by [`Line::send`] and not yet written.
    pub(super) unflushed: &'a mut bool,
    pub(super) playout: &'a mut Playout,
    /// Twilio's REST API is configured (a transfer needs it).
    pub(super) can_transfer: bool,
}

/// How much of a cut reply the caller heard ([`Line::clear`]).
pub(super) struct Cleared {
    /// Milliseconds of the current reply heard ([`Playback::reply_heard_ms`]); 0 when none.
    pub(super) heard_ms: u64,
    /// Audio was playing or queued: this was a barge-in, not a no-op.
    pub(super) was_playing: bool,
}

impl<S: MediaSocket> Line<'_, S> {
    /// True once the agent hung up or asked for a transfer: only the hang-up mark matters now.
    pub(super) fn is_ending(&self) -> bool {
        self.playout.hangup_deadline.is_some()
    }

    /// Takes plugin audio (any supported format and rate) into the reframer.
    ///
    /// # Errors
    /// The audio could not be converted (a format the host does not play, too many rates).
    pub(super) fn push_audio(
        &mut self,
        format: crate::plugin::AudioFormat,
        data: &[u8],
    ) -> Result<(), crate::audio::convert::ConvertError> {
        self.playout.from_plugin.push(format, data)
    }

    /// Moves every whole frame the reframer holds (and the padded remainder when `flush`) into
    /// the playback queue, then sends what is due.
    pub(super) async fn queue_frames(&mut self, flush: bool) -> Next {
        let now = Instant::now();
        let playout = &mut *self.playout;
        // Audio queued while nothing plays starts a reply: `agent.audio_started`.
        let mut starts_reply = playout.playback.is_idle(now);
        loop {
            let frame = match playout.from_plugin.next_frame() {
                Some(f) => f.to_vec(),
                None if flush => match playout.from_plugin.flush() {
                    Some(f) => f.to_vec(),
                    None => break,
                },
                None => break,
            };
            if let Err(e) = playout.playback.push_frame(frame, now) {
                return Next::End(EndReason::plugin(SessionError::Output(e.to_string())));
            }
            if std::mem::take(&mut starts_reply) {
                let at_ms = playout.events.elapsed_ms();
                playout
                    .events
                    .emit(crate::events::EventKind::AudioStarted { at_ms });
            }
        }
        self.pump().await
    }

    /// Queues a mark after the audio queued so far (the reframer's remainder padded out first).
    pub(super) async fn mark(&mut self, name: String) -> Next {
        if let Next::End(r) = self.queue_frames(true).await {
            return Next::End(r);
        }
        self.playout.playback.push_mark(name);
        self.pump().await
    }

    /// Sends Twilio what the playback clock says is due now.
    pub(super) async fn pump(&mut self) -> Next {
        let now = Instant::now();
        let playback = &mut self.playout.playback;
        let due = playback.due(now);
        if due.iter().any(|o| matches!(o, Outgoing::Media(_))) {
            let lead_ms = playback.sent_ms().saturating_sub(playback.position_ms(now));
            self.metrics.lead.record(Duration::from_millis(lead_ms));
        }
        let since_start = self.playout.started.elapsed();
        // Where the first frame due now sits on the sent-audio timeline, and so when each one
        // starts playing: the echo gate's reference.
        let media = due
            .iter()
            .filter(|o| matches!(o, Outgoing::Media(_)))
            .count() as u64;
        let mut frame_ms = playback.sent_ms().saturating_sub(media * FRAME_MS);
        let position_ms = playback.position_ms(now);
        for item in due {
            let msg = match item {
                Outgoing::Media(frame) => {
                    if let Some(echo) = &mut self.playout.echo {
                        let ahead = Duration::from_millis(frame_ms.saturating_sub(position_ms));
                        echo.played(&frame, now + ahead);
                    }
                    frame_ms += FRAME_MS;
                    self.stats.frames_out += 1;
                    if self.stats.first_audio.is_none() {
                        self.stats.first_audio = Some(since_start);
                    }
                    Outbound::media_json(&self.playout.stream_sid, &frame)
                }
                Outgoing::Mark(name) => {
                    self.stats.marks_sent += 1;
                    Outbound::Mark {
                        stream_sid: &self.playout.stream_sid,
                        mark: MarkName { name },
                    }
                    .to_json()
                }
            };
            if let Next::End(r) = self.send(msg).await {
                return Next::End(r);
            }
        }
        Next::Continue
    }

    /// Queues one message in the socket's write buffer; the call loop writes it out
    /// ([`flush`]) once per event, so a frame and the mark after it share one write.
    pub(super) async fn send(&mut self, text: String) -> Next {
        match self.ws.feed(Message::Text(text.into())).await {
            Ok(()) => {
                *self.unflushed = true;
                Next::Continue
            }
            Err(e) => Next::End(EndReason::SocketError(e.to_string())),
        }
    }

    /// Barge-in: drops everything queued and unplayed, sends Twilio `clear`, and says how much
    /// of the current reply the caller heard.
    pub(super) async fn clear(&mut self) -> Result<Cleared, Next> {
        let now = Instant::now();
        let playback = &mut self.playout.playback;
        let was_playing = !playback.is_idle(now);
        let heard_ms = playback.clear(now);
        self.playout.from_plugin.clear();
        if let Some(echo) = &mut self.playout.echo {
            echo.cleared(now);
        }
        self.stats.clears += 1;
        if was_playing {
            self.playout
                .events
                .emit(crate::events::EventKind::BargeIn { heard_ms });
        }
        let msg = Outbound::Clear {
            stream_sid: &self.playout.stream_sid,
        }
        .to_json();
        match self.send(msg).await {
            Next::Continue => Ok(Cleared {
                heard_ms,
                was_playing,
            }),
            end => Err(end),
        }
    }

    /// Ends the call once the audio queued so far has played (the hang-up mark echoes, or
    /// [`HANGUP_GRACE`] after it should have): a hang-up, or a transfer to `transfer_to`.
    pub(super) async fn end_after_playback(&mut self, transfer_to: Option<String>) -> Next {
        if let Next::End(r) = self.queue_frames(true).await {
            return Next::End(r);
        }
        let playout = &mut *self.playout;
        playout.transfer_to = transfer_to;
        playout.playback.push_mark(HANGUP_MARK.to_string());
        let now = Instant::now();
        playout.hangup_deadline = Some(now + playout.playback.remaining(now) + HANGUP_GRACE);
        self.pump().await
    }

    /// Adds a final transcript turn to the call's record.
    pub(super) fn transcript(&mut self, side: Side, text: String, heard_ms: Option<u64>) {
        tracing::info!(side = ?side, %text, heard_ms, "transcript");
        let event = match side {
            Side::Caller => crate::events::EventKind::CallerTranscript {
                text: text.clone(),
                is_final: true,
            },
            Side::Agent | Side::Tool => crate::events::EventKind::AgentText {
                text: text.clone(),
                is_final: true,
            },
        };
        self.playout.events.emit(event);
        self.stats.transcript.push(Turn {
            side,
            text,
            heard_ms,
            tool: None,
        });
    }

    /// Puts a finished tool call in the transcript (not in the log: results may be private).
    pub(super) fn tool_transcript(&mut self, trace: crate::tools::ToolTrace) {
        self.stats.transcript.push(Turn {
            side: Side::Tool,
            text: trace.line(),
            heard_ms: None,
            tool: Some(trace),
        });
    }

    /// Runs `work` (a call into a plugin) while reading the socket into the inbox, so that the
    /// caller hanging up ends the call at once however long the plugin takes (see [`inbox`]).
    /// `Err` is how the call ends when the socket ended it first; `work` is then dropped
    /// half-way.
    pub(super) async fn watching<T>(
        &mut self,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, EndReason> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                biased;
                result = &mut work => return Ok(result),
                read = self.ws.next(), if self.inbox.accepting() => {
                    if let Some(end) = self.inbox.push(read) {
                        return Err(end);
                    }
                }
            }
        }
    }
}

/// Writes out what [`Line::send`] queued on `ws`.
pub(super) async fn flush<S: MediaSocket>(ws: &mut S, unflushed: &mut bool) -> Next {
    if !std::mem::take(unflushed) {
        return Next::Continue;
    }
    match ws.flush().await {
        Ok(()) => Next::Continue,
        Err(e) => Next::End(EndReason::SocketError(e.to_string())),
    }
}

/// Clears whatever the agent queued, plays [`APOLOGY`] and waits (bounded) until Twilio reports
/// it played, or the caller hangs up.
pub(super) async fn apologise<S: MediaSocket>(ws: &mut S, stream_sid: &str) {
    let mut messages = vec![Outbound::Clear { stream_sid }.to_json()];
    for chunk in APOLOGY.chunks(FRAME_SAMPLES) {
        let mut frame = chunk.to_vec();
        frame.resize(FRAME_SAMPLES, mulaw::SILENCE);
        messages.push(Outbound::media_json(stream_sid, &frame));
    }
    messages.push(
        Outbound::Mark {
            stream_sid,
            mark: MarkName {
                name: APOLOGY_MARK.into(),
            },
        }
        .to_json(),
    );
    for m in messages {
        if ws.feed(Message::Text(m.into())).await.is_err() {
            return;
        }
    }
    if ws.flush().await.is_err() {
        return;
    }
    let played = Duration::from_millis(APOLOGY.len() as u64 / 8);
    let deadline = Instant::now() + played + HANGUP_GRACE;
    loop {
        let msg = tokio::select! {
            msg = ws.next() => msg,
            () = tokio::time::sleep_until(deadline) => return,
        };
        match msg {
            Some(Ok(Message::Text(text))) => match media_stream::parse(text.as_str()) {
                Ok(Inbound::Mark { mark, .. }) if mark.name == APOLOGY_MARK => return,
                Ok(Inbound::Stop { .. }) => return,
                _ => {}
            },
            Some(Ok(Message::Close(_)) | Err(_)) | None => return,
            Some(Ok(_)) => {}
        }
    }
}
