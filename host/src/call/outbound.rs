//! Outbound audio: plugin audio reframed into the playback queue, paced out by the playback clock
//! ([`crate::audio::playback`]), one write per loop event, and the apology.

use super::*;

impl<S: MediaSocket> Call<S> {
    /// Moves every whole frame the reframer holds (and the padded remainder when `flush`) into
    /// the playback queue, then sends what is due.
    pub(super) async fn queue_frames(&mut self, flush: bool) -> Next {
        let Some(active) = &mut self.active else {
            return Next::Continue;
        };
        let now = Instant::now();
        loop {
            let frame = match active.from_plugin.next_frame() {
                Some(f) => f.to_vec(),
                None if flush => match active.from_plugin.flush() {
                    Some(f) => f.to_vec(),
                    None => break,
                },
                None => break,
            };
            if let Err(e) = active.playback.push_frame(frame, now) {
                return Next::End(EndReason::plugin(SessionError::Output(e.to_string())));
            }
        }
        self.pump().await
    }

    /// Sends Twilio what the playback clock says is due now.
    pub(super) async fn pump(&mut self) -> Next {
        let Some(active) = &mut self.active else {
            return Next::Continue;
        };
        let now = Instant::now();
        let due = active.playback.due(now);
        if due.iter().any(|o| matches!(o, Outgoing::Media(_))) {
            let lead_ms = active
                .playback
                .sent_ms()
                .saturating_sub(active.playback.position_ms(now));
            self.metrics.lead.record(Duration::from_millis(lead_ms));
        }
        let stream_sid = active.stream_sid.clone();
        let since_start = active.started.elapsed();
        for item in due {
            let msg = match item {
                Outgoing::Media(frame) => {
                    self.stats.frames_out += 1;
                    if self.stats.first_audio.is_none() {
                        self.stats.first_audio = Some(since_start);
                    }
                    Outbound::media_json(&stream_sid, &frame)
                }
                Outgoing::Mark(name) => {
                    self.stats.marks_sent += 1;
                    Outbound::Mark {
                        stream_sid: &stream_sid,
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

    /// Queues one message in the socket's write buffer; [`Call::flush`] writes it out, once per
    /// event the call loop handles, so a frame and the mark after it share one write.
    pub(super) async fn send(&mut self, text: String) -> Next {
        match self.ws.feed(Message::Text(text.into())).await {
            Ok(()) => {
                self.unflushed = true;
                Next::Continue
            }
            Err(e) => Next::End(EndReason::SocketError(e.to_string())),
        }
    }

    /// Writes out what [`Call::send`] queued.
    pub(super) async fn flush(&mut self) -> Next {
        if !std::mem::take(&mut self.unflushed) {
            return Next::Continue;
        }
        match self.ws.flush().await {
            Ok(()) => Next::Continue,
            Err(e) => Next::End(EndReason::SocketError(e.to_string())),
        }
    }

    /// Clears whatever the plugin queued, plays [`APOLOGY`] and waits (bounded) until Twilio
    /// reports it played, or the caller hangs up.
    pub(super) async fn apologise(&mut self) {
        let Some(stream_sid) = self.stream_sid.clone() else {
            return;
        };
        let mut messages = vec![
            Outbound::Clear {
                stream_sid: &stream_sid,
            }
            .to_json(),
        ];
        for chunk in APOLOGY.chunks(FRAME_SAMPLES) {
            let mut frame = chunk.to_vec();
            frame.resize(FRAME_SAMPLES, mulaw::SILENCE);
            messages.push(Outbound::media_json(&stream_sid, &frame));
        }
        messages.push(
            Outbound::Mark {
                stream_sid: &stream_sid,
                mark: MarkName {
                    name: APOLOGY_MARK.into(),
                },
            }
            .to_json(),
        );
        for m in messages {
            if self.ws.feed(Message::Text(m.into())).await.is_err() {
                return;
            }
        }
        if self.ws.flush().await.is_err() {
            return;
        }
        let played = Duration::from_millis(APOLOGY.len() as u64 / 8);
        let deadline = Instant::now() + played + HANGUP_GRACE;
        loop {
            let msg = tokio::select! {
                msg = self.ws.next() => msg,
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
}
