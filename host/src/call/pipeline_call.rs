//! The pipeline engine in the call task: caller frames through the VAD into
//! [`super::pipeline::Turns`], its actions to the stage workers ([`super::stages`]), their reports
//! back, and the transcript kept in step with the history.

use super::*;

impl<S: MediaSocket> Call<S> {
    /// Feeds one event to a pipeline call's turn-taking and carries out what it decides.
    pub(super) async fn pipeline_event(&mut self, event: Event) -> Next {
        let Some(Active {
            engine: Engine::Pipeline(p),
            ..
        }) = &mut self.active
        else {
            return Next::Continue;
        };
        let actions = p.turns.on(event, Instant::now());
        self.pipeline_actions(actions).await
    }

    pub(super) async fn pipeline_actions(&mut self, actions: Vec<Action>) -> Next {
        let mut queue: std::collections::VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            let Some(active) = &mut self.active else {
                return Next::Continue;
            };
            let Engine::Pipeline(p) = &mut active.engine else {
                return Next::Continue;
            };
            let (stage, input) = match action {
                Action::Stt(input) => (Stage::Stt, input),
                Action::Llm(input) => (Stage::Llm, input),
                Action::Tts(input) => (Stage::Tts, input),
                Action::Play { format, data } => {
                    if p.reply_origin.is_none() {
                        p.reply_origin = Some(active.playback.end_ms());
                    }
                    if let Err(e) = active.from_plugin.push(format, &data) {
                        self.failed_plugin = Some(p.names[2].clone());
                        return Next::End(EndReason::PluginFailed(PluginFailure::of(
                            &p.names[2],
                            Some(Stage::Tts),
                            SessionError::Output(e.to_string()),
                        )));
                    }
                    if let Next::End(r) = self.queue_frames(false).await {
                        return Next::End(r);
                    }
                    continue;
                }
                Action::ClearPlayback => {
                    let now = Instant::now();
                    let heard_ms = match p.reply_origin.take() {
                        Some(origin) => active.playback.heard_ms(now).saturating_sub(origin),
                        None => 0,
                    };
                    active.playback.clear(now);
                    active.from_plugin.clear();
                    p.idle_at = None;
                    p.cut_heard = Some(heard_ms);
                    self.stats.clears += 1;
                    tracing::debug!(heard_ms, "barge-in: playback cleared");
                    queue.extend(p.turns.on(Event::Interrupted { heard_ms }, now));
                    let msg = Outbound::Clear {
                        stream_sid: &active.stream_sid,
                    }
                    .to_json();
                    if let Next::End(r) = self.send(msg).await {
                        return Next::End(r);
                    }
                    continue;
                }
            };
            let is_audio = matches!(input, StageInput::Audio { .. });
            let (worker, name) = p.worker(stage);
            if let Err(e) = worker.send(input) {
                if is_audio {
                    self.stats.stt_dropped += 1;
                    if self.stats.stt_dropped == 1 {
                        tracing::warn!(plugin = %name, "{e}: caller audio dropped");
                    }
                } else {
                    tracing::error!(plugin = %name, "{e}");
                    self.failed_plugin = Some(name.to_string());
                    return Next::End(EndReason::PluginFailed(PluginFailure::of(
                        name,
                        Some(stage),
                        SessionError::Host(e.to_string()),
                    )));
                }
            }
        }
        self.sync_transcript();
        Next::Continue
    }

    /// Copies new history entries of a pipeline call into the call's transcript.
    pub(super) fn sync_transcript(&mut self) {
        let Some(Active {
            engine: Engine::Pipeline(p),
            ..
        }) = &mut self.active
        else {
            return;
        };
        let history = p.turns.history();
        for (role, text) in &history[p.history_seen..] {
            let (side, heard_ms) = match role {
                Role::User => (Side::Caller, None),
                _ => (Side::Agent, p.cut_heard.take()),
            };
            tracing::info!(side = ?side, %text, heard_ms, "transcript");
            self.stats.transcript.push(Turn {
                side,
                text: text.clone(),
                heard_ms,
            });
            if side == Side::Agent {
                p.reply_origin = None;
            }
        }
        p.history_seen = history.len();
    }

    /// A stage reported outputs (or failed).
    pub(super) async fn on_report(&mut self, report: StageReport) -> Next {
        let Some(Active {
            engine: Engine::Pipeline(p),
            ..
        }) = &mut self.active
        else {
            return Next::Continue;
        };
        let stage = report.stage;
        let (worker, name) = p.worker(stage);
        if !worker.is_current(&report) {
            return Next::Continue; // cancelled work
        }
        let outputs = match report.result {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(plugin = %name, stage = stage.describe(), error = %e, "pipeline stage failed");
                self.failed_plugin = Some(name.to_string());
                return Next::End(EndReason::PluginFailed(PluginFailure::of(
                    name,
                    Some(stage),
                    e,
                )));
            }
        };
        for output in outputs {
            let flush = matches!(output, StageOutput::UtteranceDone);
            if let StageOutput::Transcript { text, is_final } = &output {
                tracing::debug!(is_final, %text, "caller transcript");
            }
            let event = match stage {
                Stage::Stt => Event::Stt(output),
                Stage::Llm => Event::Llm(output),
                _ => Event::Tts(output),
            };
            if let Next::End(r) = self.pipeline_event(event).await {
                return Next::End(r);
            }
            if flush {
                // A clause is complete: its last partial frame goes out padded.
                if let Next::End(r) = self.queue_frames(true).await {
                    return Next::End(r);
                }
            }
        }
        self.schedule_idle();
        Next::Continue
    }

    /// Sets when a pipeline call should next check whether playback has gone idle.
    pub(super) fn schedule_idle(&mut self) {
        let Some(active) = &mut self.active else {
            return;
        };
        if let Engine::Pipeline(p) = &mut active.engine {
            let now = Instant::now();
            let wanted = p.reply_origin.is_some() || !active.playback.is_idle(now);
            let at = now + active.playback.remaining(now) + Duration::from_millis(FRAME_MS);
            // Keep an earlier check: re-arming later on every report would starve it (the STT
            // reports every 20 ms). A check that comes too early re-arms itself.
            p.idle_at = wanted.then(|| p.idle_at.map_or(at, |old| old.min(at)));
        }
    }

    /// Playback may have gone idle: tell the turn-taking, or check again later.
    pub(super) async fn check_idle(&mut self) -> Next {
        let Some(active) = &mut self.active else {
            return Next::Continue;
        };
        let now = Instant::now();
        let idle = active.playback.is_idle(now);
        if let Engine::Pipeline(p) = &mut active.engine {
            p.idle_at = None;
        }
        if idle {
            let next = self.pipeline_event(Event::PlaybackIdle).await;
            self.schedule_idle();
            return next;
        }
        self.schedule_idle();
        Next::Continue
    }
}
