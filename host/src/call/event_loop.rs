//! The call loop: one `select!` over the Media Streams socket, the playback clock's timers, the
//! engine's events (a realtime session's host I/O, a pipeline's stage reports) and the drain
//! signal; and what each Twilio message does (`media`, `dtmf`, `mark`, `stop`).

use super::*;

/// The next Twilio message: one read ahead into the inbox while the plugin worked, else the
/// socket's next. Cancel-safe.
pub(super) async fn next_message<S: MediaSocket>(
    inbox: &mut inbox::Inbox,
    ws: &mut S,
) -> Option<Result<Message, axum::Error>> {
    if inbox.is_empty() {
        return ws.next().await;
    }
    // The call is behind its plugin: let the other calls on this thread run before the next
    // plugin call, as a read from the socket would have.
    tokio::task::yield_now().await;
    inbox.pop().map(Ok)
}

/// Resolves once `shutdown` holds `true`; never, if its sender is gone.
pub(super) async fn shutdown_signalled(shutdown: &mut watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The next event of the call's engine; pending before `start`. Cancel-safe.
pub(super) async fn next_engine_event(active: &mut Option<Active>) -> EngineEvent {
    match active {
        Some(active) => active.engine.next_event().await,
        None => std::future::pending().await,
    }
}

/// A timer of the call loop, kept across iterations and moved only when its deadline changes.
pub(super) struct Timer {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    armed: Option<Instant>,
}

impl Timer {
    fn new() -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep_until(Instant::now())),
            armed: None,
        }
    }

    /// Sets the deadline; `None` leaves the timer as it is (the loop does not poll it then).
    fn arm(&mut self, at: Option<Instant>) {
        if let Some(at) = at
            && self.armed != Some(at)
        {
            self.sleep.as_mut().reset(at);
            self.armed = Some(at);
        }
    }
}

impl<S: MediaSocket> Call<S> {
    pub(super) async fn run(&mut self) -> EndReason {
        let start_deadline = Instant::now() + START_TIMEOUT;
        // The timers and the shutdown watch live across iterations: building them per message
        // registered and removed a timer and a waiter on the shared shutdown channel per frame.
        // A `Sleep` moved later is a cheap update; one moved earlier is re-registered.
        let mut deadline_timer = Timer::new();
        let mut due_timer = Timer::new();
        let mut idle_timer = Timer::new();
        let mut shutdown = self.ctx.shutdown.clone();
        let shutdown = shutdown_signalled(&mut shutdown);
        tokio::pin!(shutdown);
        let reason = loop {
            let (deadline, due, idle_at) = match &self.active {
                None => (Some(start_deadline), None, None),
                Some(a) => (
                    a.playout.hangup_deadline,
                    a.playout.playback.next_due(Instant::now()),
                    a.engine.wake_at(),
                ),
            };
            deadline_timer.arm(deadline);
            due_timer.arm(due);
            idle_timer.arm(idle_at);
            let next = tokio::select! {
                msg = next_message(&mut self.inbox, &mut self.ws) => self.on_message(msg).await,
                () = deadline_timer.sleep.as_mut(), if deadline.is_some() => {
                    Next::End(match &self.active {
                        None => EndReason::NoStart,
                        Some(a) => a.playout.ending(),
                    })
                }
                () = due_timer.sleep.as_mut(), if due.is_some() => match self.engine_and_line() {
                    Some((_, mut line)) => line.pump().await,
                    None => Next::Continue,
                },
                event = next_engine_event(&mut self.active) => match self.engine_and_line() {
                    Some((engine, mut line)) => engine.on_event(&mut line, event).await,
                    None => Next::Continue,
                },
                () = idle_timer.sleep.as_mut(), if idle_at.is_some() => match self.engine_and_line() {
                    Some((engine, mut line)) => engine.wake(&mut line).await,
                    None => Next::Continue,
                },
                () = &mut shutdown => Next::End(EndReason::Shutdown),
            };
            // Everything one event produced goes out in one write.
            if let Next::End(reason) = line::flush(&mut self.ws, &mut self.unflushed).await {
                break reason;
            }
            if let Next::End(reason) = next {
                break reason;
            }
        };
        // A plugin failure names the plugin to blame (the one that failed, else the call's).
        let reason = match reason {
            EndReason::PluginFailed(mut failure) if failure.plugin.is_none() => {
                failure.plugin = self.plugins.first().cloned();
                EndReason::PluginFailed(failure)
            }
            other => other,
        };
        self.finish(&reason).await;
        reason
    }

    /// Handles one message (or the end) of the Media Streams socket.
    pub(super) async fn on_message(&mut self, msg: Option<Result<Message, axum::Error>>) -> Next {
        match msg {
            None => Next::End(EndReason::SocketClosed),
            Some(Err(e)) => Next::End(EndReason::SocketError(e.to_string())),
            Some(Ok(Message::Text(text))) => self.on_text(text.as_str()).await,
            Some(Ok(Message::Close(_))) => Next::End(EndReason::SocketClosed),
            Some(Ok(Message::Binary(_))) => {
                tracing::warn!("binary WebSocket message dropped: Media Streams sends text");
                self.stats.dropped += 1;
                Next::Continue
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Next::Continue,
        }
    }

    pub(super) async fn on_text(&mut self, text: &str) -> Next {
        let msg = match media_stream::parse(text) {
            Ok(msg) => msg,
            Err(e) => {
                self.stats.dropped += 1;
                tracing::warn!(error = %e, "frame dropped");
                return Next::Continue;
            }
        };
        match msg {
            Inbound::Connected { protocol, version } => {
                tracing::debug!(%protocol, %version, "connected");
                Next::Continue
            }
            Inbound::Start {
                start, stream_sid, ..
            } => self.on_start(start, stream_sid).await,
            Inbound::Media {
                media, stream_sid, ..
            } => {
                let started = std::time::Instant::now();
                let next = self.on_media(&media, &stream_sid).await;
                self.metrics.frame.record(started.elapsed());
                next
            }
            Inbound::Dtmf { dtmf, .. } => {
                self.stats.dtmf += 1;
                match self.engine_and_line() {
                    Some((engine, mut line)) => engine.dtmf(&mut line, dtmf.digit).await,
                    None => {
                        self.stats.dropped += 1;
                        tracing::warn!("dtmf before start dropped");
                        Next::Continue
                    }
                }
            }
            Inbound::Mark { mark, .. } => self.on_mark(mark.name).await,
            Inbound::Stop { .. } => Next::End(EndReason::Stop),
            Inbound::Unknown => {
                self.stats.dropped += 1;
                tracing::warn!(event = ?media_stream::event_name(text), "unknown event skipped");
                Next::Continue
            }
        }
    }

    pub(super) async fn on_media(&mut self, media: &media_stream::Media, stream_sid: &str) -> Next {
        let Some(active) = &mut self.active else {
            self.stats.dropped += 1;
            tracing::warn!(%stream_sid, "media before start dropped");
            return Next::Continue;
        };
        if let Err(e) = media.decode_payload(&mut self.payload) {
            self.stats.dropped += 1;
            tracing::warn!(error = %e, chunk = media.chunk, "media frame dropped");
            return Next::Continue;
        }
        self.stats.frames_in += 1;
        // Fill gaps in Twilio's chunk numbering with silence so the plugin's clock keeps time.
        let mut gap = 0;
        match active.next_chunk {
            Some(expected) if media.chunk < expected => {
                self.stats.dropped += 1;
                tracing::debug!(chunk = media.chunk, expected, "late media frame dropped");
                return Next::Continue;
            }
            Some(expected) if media.chunk > expected => {
                gap = (media.chunk - expected).min(MAX_GAP_FILL_FRAMES);
            }
            _ => {}
        }
        active.next_chunk = Some(media.chunk + 1);
        if gap > 0 {
            self.stats.gap_frames += gap;
            self.metrics.gaps.increment(gap);
            tracing::debug!(frames = gap, "gap in inbound audio filled with silence");
            let silence = [mulaw::SILENCE; FRAME_SAMPLES];
            for i in (1..=gap).rev() {
                let ts = media.timestamp.saturating_sub(i * FRAME_MS);
                if let Next::End(r) = self.audio_to_plugin(&silence, ts).await {
                    return Next::End(r);
                }
            }
        }
        let payload = std::mem::take(&mut self.payload);
        let next = self.audio_to_plugin(&payload, media.timestamp).await;
        self.payload = payload;
        next
    }

    pub(super) async fn audio_to_plugin(&mut self, mulaw_in: &[u8], timestamp_ms: u64) -> Next {
        let Some(active) = &mut self.active else {
            return Next::Continue;
        };
        if let Err(e) = active.to_plugin.convert(mulaw_in, &mut self.converted) {
            return Next::End(EndReason::plugin(SessionError::Host(e.to_string())));
        }
        let frame = CallerFrame {
            mulaw: mulaw_in,
            data: self.converted.clone(),
            timestamp_ms,
        };
        match self.engine_and_line() {
            Some((engine, mut line)) => engine.caller_frame(&mut line, frame).await,
            None => Next::Continue,
        }
    }

    pub(super) async fn on_mark(&mut self, name: String) -> Next {
        self.stats.marks_echoed += 1;
        let Some((engine, mut line)) = self.engine_and_line() else {
            return Next::Continue;
        };
        match line.playout.playback.on_echo(&name, Instant::now()) {
            Echo::Played(name) if name == HANGUP_MARK => Next::End(line.playout.ending()),
            Echo::Played(name) => engine.mark_played(&mut line, name).await,
            Echo::Cleared(name) => {
                tracing::debug!(mark = %name, "mark returned by clear: not played");
                Next::Continue
            }
            Echo::Clock => Next::Continue,
            Echo::Unknown(name) => {
                tracing::debug!(mark = %name, "echo of a mark this call did not send");
                Next::Continue
            }
        }
    }
}
