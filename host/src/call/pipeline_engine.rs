//! The pipeline engine: caller frames through the VAD into [`super::pipeline::Turns`] (the
//! host's turn-taking), its actions to the stage workers ([`super::stages`]: STT, LLM and TTS
//! sessions in their own tasks), their reports back, and the transcript kept in step with the
//! history.

use super::*;
use crate::audio::vad::Segment;
use crate::tools::Toolbox;

/// A pipeline agent's engine.
pub(in crate::call) struct PipelineEngine {
    turns: Turns,
    vad: Vad,
    stt: StageWorker,
    llm: StageWorker,
    tts: StageWorker,
    reports: mpsc::Receiver<StageReport>,
    /// Plugin names of the STT, LLM and TTS stages, for blame.
    names: [String; 3],
    /// When everything queued should have played: check then for `PlaybackIdle`.
    idle_at: Option<Instant>,
    /// History entries already copied into the call's transcript.
    history_seen: usize,
    /// What of the turn-taking the call's live events have reported.
    reported: super::pipeline_events::PipelineEvents,
    /// Heard ms of the reply cut by the last barge-in, for its transcript entry.
    cut_heard: Option<u64>,
    /// What the agent may call, and the calls in flight.
    tools: Toolbox,
    /// The agent's filler delay.
    filler_after: Duration,
    /// When to tell the turn-taking a tool is slow (the filler delay after a call started).
    filler_at: Option<Instant>,
    /// `end_call` or `transfer_call`: the call ends once the reply has played.
    ending: Option<tool_calls::Ending>,
    /// The format the STT takes caller audio in (for the silence that replaces echo).
    stt_format: crate::plugin::AudioFormat,
}

/// A stage failed: the call ends, blaming its plugin.
fn stage_failed(name: &str, stage: Stage, error: SessionError) -> Next {
    Next::End(EndReason::PluginFailed(PluginFailure::of(
        name,
        Some(stage),
        error,
    )))
}

impl PipelineEngine {
    /// Opens the agent's three stage sessions, each in its own task, and the turn-taking.
    /// `config(used)` is the session config of the stage plugin `used` names; `instructions`
    /// fills the pipeline's instructions for this call; `greeting` is spoken first. Returns
    /// the engine and the format the STT takes caller audio in.
    ///
    /// # Errors
    /// A stage plugin is not loaded or failed to open: how the call ends.
    pub(super) async fn open(
        agent: &Agent,
        plugins: &Plugins,
        config: impl Fn(&PluginUse) -> SessionConfig,
        instructions: impl FnOnce(&str) -> String,
        greeting: Option<String>,
        tools: Toolbox,
    ) -> Result<(Self, crate::plugin::AudioFormat), EndReason> {
        let Some(pipeline) = agent.pipeline() else {
            return Err(EndReason::plugin(SessionError::Host(
                "agent has no pipeline".into(),
            )));
        };
        let (report_tx, reports) = mpsc::channel(REPORT_QUEUE);
        let mut workers = Vec::with_capacity(3);
        let mut stt_format = None;
        for (stage, used) in [
            (Stage::Stt, &pipeline.stt),
            (Stage::Llm, &pipeline.llm),
            (Stage::Tts, &pipeline.tts),
        ] {
            let plugin = loaded(plugins, used)?;
            if stage == Stage::Stt {
                stt_format = Some(plugin.info().input_format);
            }
            let session = plugin.open_stage(&config(used)).await.map_err(|e| {
                tracing::error!(error = %e, kind = e.kind(), plugin = %used.plugin, "pipeline stage failed to open");
                EndReason::PluginFailed(PluginFailure::of(&used.plugin, Some(stage), e))
            })?;
            workers.push(StageWorker::spawn(
                stage,
                session,
                report_tx.clone(),
                stages::Blame {
                    plugin: used.plugin.clone(),
                    breaker: plugins.breaker(&used.plugin).cloned(),
                },
            ));
        }
        let vad =
            Vad::new().map_err(|e| EndReason::plugin(SessionError::Host(format!("VAD: {e}"))))?;
        let mut workers = workers.into_iter();
        let (Some(stt), Some(llm), Some(tts), Some(format)) =
            (workers.next(), workers.next(), workers.next(), stt_format)
        else {
            return Err(EndReason::plugin(SessionError::Host(
                "pipeline stages missing".into(),
            )));
        };
        let turns = Turns::new(TurnConfig {
            instructions: instructions(&pipeline.instructions),
            endpointing: pipeline.endpointing,
            greeting,
            filler: Some(agent.tools.filler.clone())
                .filter(|f| !tools.is_empty() && !f.trim().is_empty()),
            keypad_timeout: pipeline.keypad_timeout,
            resume_false_interruptions: pipeline.resume_false_interruptions,
            min_interruption: pipeline.min_interruption,
        })
        .with_interruption_rules(pipeline.min_interruption_words, pipeline.backchannel);
        let engine = Self {
            turns,
            vad,
            stt,
            llm,
            tts,
            reports,
            names: [
                pipeline.stt.plugin.clone(),
                pipeline.llm.plugin.clone(),
                pipeline.tts.plugin.clone(),
            ],
            idle_at: None,
            history_seen: 0,
            reported: Default::default(),
            cut_heard: None,
            tools,
            filler_after: agent.tools.filler_after,
            filler_at: None,
            ending: None,
            stt_format: format,
        };
        Ok((engine, format))
    }

    fn worker(&mut self, stage: Stage) -> (&mut StageWorker, &str) {
        match stage {
            Stage::Stt => (&mut self.stt, &self.names[0]),
            Stage::Llm => (&mut self.llm, &self.names[1]),
            _ => (&mut self.tts, &self.names[2]),
        }
    }

    /// Feeds one event to the turn-taking and carries out what it decides.
    async fn event<S: MediaSocket>(&mut self, line: &mut Line<'_, S>, event: Event) -> Next {
        super::pipeline_events::PipelineEvents::before(&line.playout.events, &event);
        let actions = self.turns.on(event, Instant::now());
        self.actions(line, actions).await
    }

    async fn actions<S: MediaSocket>(
        &mut self,
        line: &mut Line<'_, S>,
        actions: Vec<Action>,
    ) -> Next {
        let mut queue: std::collections::VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            let (stage, input) = match action {
                Action::Stt(input) => (Stage::Stt, input),
                Action::Llm(input) => (Stage::Llm, input),
                Action::Tts(input) => (Stage::Tts, input),
                Action::Play { format, data } => {
                    line.playout.playback.begin_reply();
                    if let Err(e) = line.push_audio(format, &data) {
                        return stage_failed(
                            &self.names[2],
                            Stage::Tts,
                            SessionError::Output(e.to_string()),
                        );
                    }
                    if let Next::End(r) = line.queue_frames(false).await {
                        return Next::End(r);
                    }
                    continue;
                }
                Action::RunTool(call) => {
                    let (done, ending) = tool_calls::dispatch(&mut self.tools, line, call);
                    let continue_reply = ending.is_none();
                    if ending.is_some() {
                        self.ending = ending;
                    }
                    match done {
                        Some(done) => queue.extend(self.turns.on(
                            Event::ToolResult {
                                result: done.result(),
                                continue_reply,
                            },
                            Instant::now(),
                        )),
                        None => {
                            self.filler_at
                                .get_or_insert_with(|| Instant::now() + self.filler_after);
                        }
                    }
                    continue;
                }
                Action::ClearPlayback => {
                    let cleared = match line.clear().await {
                        Ok(c) => c,
                        Err(end) => return end,
                    };
                    let heard_ms = cleared.heard_ms;
                    self.idle_at = None;
                    self.cut_heard = Some(heard_ms);
                    tracing::debug!(heard_ms, "barge-in: playback cleared");
                    queue.extend(
                        self.turns
                            .on(Event::Interrupted { heard_ms }, Instant::now()),
                    );
                    // The cut reply enters the transcript now, with its heard ms; one cut before
                    // a whole word was heard enters nothing, and its heard ms goes with it (not
                    // onto the next reply).
                    self.sync_transcript(line);
                    self.cut_heard = None;
                    continue;
                }
            };
            let is_audio = matches!(input, StageInput::Audio { .. });
            let (worker, name) = self.worker(stage);
            if let Err(e) = worker.send(input) {
                if is_audio {
                    line.stats.stt_dropped += 1;
                    if line.stats.stt_dropped == 1 {
                        tracing::warn!(plugin = %name, "{e}: caller audio dropped");
                    }
                } else {
                    tracing::error!(plugin = %name, "{e}");
                    return stage_failed(name, stage, SessionError::Host(e.to_string()));
                }
            }
        }
        self.sync_transcript(line);
        self.reported.after(&line.playout.events, &self.turns);
        if self.ending.is_some() && self.turns.is_quiet() {
            // `end_call` / `transfer_call`: the reply has played.
            let to = self.ending.take().and_then(|e| e.0);
            return line.end_after_playback(to).await;
        }
        Next::Continue
    }

    /// Copies new history entries into the call's transcript (tool calls are entered as they
    /// finish, by [`tool_calls::finished`]).
    fn sync_transcript<S: MediaSocket>(&mut self, line: &mut Line<'_, S>) {
        let history = self.turns.history();
        for message in &history[self.history_seen..] {
            match message.role {
                Role::User => line.transcript(Side::Caller, message.content.clone(), None),
                Role::Assistant if message.tool_calls.is_empty() => {
                    line.transcript(Side::Agent, message.content.clone(), self.cut_heard.take());
                    line.playout.playback.end_reply();
                }
                Role::Assistant if !message.content.is_empty() => {
                    // Said before its tool calls; the reply goes on.
                    line.transcript(Side::Agent, message.content.clone(), None);
                }
                _ => {}
            }
        }
        self.history_seen = history.len();
    }

    /// Sets when to next check whether playback has gone idle.
    fn schedule_idle<S: MediaSocket>(&mut self, line: &mut Line<'_, S>) {
        let now = Instant::now();
        let playback = &line.playout.playback;
        let wanted = playback.in_reply() || !playback.is_idle(now);
        let at = now + playback.remaining(now) + Duration::from_millis(FRAME_MS);
        // Keep an earlier check: re-arming later on every report would starve it (the STT
        // reports every 20 ms). A check that comes too early re-arms itself.
        self.idle_at = wanted.then(|| self.idle_at.map_or(at, |old| old.min(at)));
    }
}

/// The loaded plugin `used` names, or the end of the call.
pub(super) fn loaded(plugins: &Plugins, used: &PluginUse) -> Result<Arc<Plugin>, EndReason> {
    plugins.get(&used.plugin).cloned().ok_or_else(|| {
        EndReason::PluginFailed(PluginFailure::of(
            &used.plugin,
            None,
            SessionError::Host("not loaded".into()),
        ))
    })
}

impl Engine for PipelineEngine {
    async fn started<S: MediaSocket>(&mut self, line: &mut Line<'_, S>) -> Next {
        // The host listens to the caller itself: it keeps what it plays to know its echo.
        line.playout.echo = Some(EchoGate::new());
        // The LLM learns its tools first of all inputs (the MCP tools available now; later
        // ones follow as they arrive).
        if !self.tools.is_empty() {
            let tools = self.tools.tools();
            if let Next::End(r) = self
                .actions(line, vec![Action::Llm(StageInput::Tools(tools))])
                .await
            {
                return Next::End(r);
            }
        }
        // The greeting goes through the TTS.
        self.event(line, Event::Started).await
    }

    async fn caller_frame<S: MediaSocket>(
        &mut self,
        line: &mut Line<'_, S>,
        frame: CallerFrame<'_>,
    ) -> Next {
        let speech = match self.vad.frame(frame.mulaw) {
            Ok(s) => s,
            Err(e) => return Next::End(EndReason::plugin(SessionError::Host(format!("VAD: {e}")))),
        };
        // The echo of the agent's own audio is neither speech nor for the recognizer: the STT
        // hears silence in its place (`audio::echo`).
        let verdict = line
            .playout
            .echo
            .as_mut()
            .map_or(Verdict::Open, |g| g.judge(frame.mulaw, Instant::now()));
        let (speech, data) = if verdict == Verdict::Echo {
            let mut data = frame.data;
            let quiet = match self.stt_format.encoding {
                crate::plugin::AudioEncoding::Mulaw => mulaw::SILENCE,
                crate::plugin::AudioEncoding::Pcm16 => 0,
            };
            data.fill(quiet);
            if speech {
                line.stats.echo_frames += 1;
            }
            (false, data)
        } else {
            (speech, frame.data)
        };
        let event = Event::CallerFrame {
            speech,
            data,
            timestamp_ms: frame.timestamp_ms,
        };
        if let Next::End(r) = self.event(line, event).await {
            return Next::End(r);
        }
        // The VAD's verdict on its last speech segment, 200 ms after it ended
        // (after this frame's event, so the turn-taking has counted this frame). Noise
        // the detector had not learned yet (steady noise starting on a quiet line or just after
        // the caller spoke) must not become a turn of its own nor hold the caller's turn open.
        if let Some(segment) = self.vad.segment_ended() {
            let mut actions = Vec::new();
            self.turns
                .segment_ended(segment == Segment::Noise, Instant::now(), &mut actions);
            if let Next::End(r) = self.actions(line, actions).await {
                return Next::End(r);
            }
        }
        Next::Continue
    }

    async fn dtmf<S: MediaSocket>(&mut self, line: &mut Line<'_, S>, digit: String) -> Next {
        // Keys interrupt the agent and become a caller turn (`DTMF: 1043`) at `#` or after
        // the keypad timeout.
        let next = self.event(line, Event::Dtmf(digit)).await;
        self.schedule_idle(line);
        next
    }

    async fn mark_played<S: MediaSocket>(
        &mut self,
        _line: &mut Line<'_, S>,
        _name: String,
    ) -> Next {
        // The host sends a pipeline's marks for its own clock only.
        Next::Continue
    }

    async fn next_event(&mut self) -> EngineEvent {
        tokio::select! {
            report = self.reports.recv() => match report {
                Some(r) => EngineEvent::Report(r),
                // Every stage task has stopped; each reported why first.
                None => std::future::pending().await,
            },
            event = self.tools.next_event() => event.into(),
        }
    }

    async fn on_event<S: MediaSocket>(
        &mut self,
        line: &mut Line<'_, S>,
        event: EngineEvent,
    ) -> Next {
        let report = match event {
            EngineEvent::Report(report) => report,
            EngineEvent::ToolDone(done) => {
                let done = tool_calls::finished(line, done);
                let event = Event::ToolResult {
                    result: done.result(),
                    continue_reply: true,
                };
                let next = self.event(line, event).await;
                self.schedule_idle(line);
                return next;
            }
            EngineEvent::ToolsChanged(tools) => {
                tracing::info!(tools = tools.len(), "the agent's tools changed");
                return self
                    .actions(line, vec![Action::Llm(StageInput::Tools(tools))])
                    .await;
            }
            EngineEvent::Io(_) => return Next::Continue,
        };
        let stage = report.stage;
        let (worker, name) = self.worker(stage);
        if !worker.is_current(&report) {
            return Next::Continue; // cancelled work
        }
        let outputs = match report.result {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(plugin = %name, stage = stage.describe(), error = %e, kind = e.kind(), "pipeline stage failed");
                return stage_failed(name, stage, e);
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
            if let Next::End(r) = self.event(line, event).await {
                return Next::End(r);
            }
            if flush {
                // A clause is complete: its last partial frame goes out padded.
                if let Next::End(r) = line.queue_frames(true).await {
                    return Next::End(r);
                }
            }
        }
        self.schedule_idle(line);
        Next::Continue
    }

    fn wake_at(&self) -> Option<Instant> {
        [self.idle_at, self.filler_at, self.turns.keypad_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// A tool may be slow (the filler), or playback may have gone idle: tell the turn-taking,
    /// or check again later.
    async fn wake<S: MediaSocket>(&mut self, line: &mut Line<'_, S>) -> Next {
        let now = Instant::now();
        if self.turns.keypad_deadline().is_some_and(|at| at <= now)
            && let Next::End(r) = self.event(line, Event::KeypadTimeout).await
        {
            return Next::End(r);
        }
        if self.filler_at.is_some_and(|at| at <= now) {
            self.filler_at = None;
            if self.turns.tools_pending()
                && let Next::End(r) = self.event(line, Event::ToolsSlow).await
            {
                return Next::End(r);
            }
        }
        if self.idle_at.is_none_or(|at| at > now) {
            return Next::Continue;
        }
        self.idle_at = None;
        let next = if line.playout.playback.is_idle(Instant::now()) {
            self.event(line, Event::PlaybackIdle).await
        } else {
            Next::Continue
        };
        self.schedule_idle(line);
        next
    }

    async fn end<S: MediaSocket>(&mut self, line: &mut Line<'_, S>) -> Option<EndFailure> {
        self.tools.abort_all();
        // A reply still playing enters the record as far as the caller heard it.
        let now = Instant::now();
        if let Some(heard_ms) = line.playout.playback.reply_heard_ms(now) {
            self.cut_heard = Some(heard_ms);
            let _ = self.turns.on(Event::Interrupted { heard_ms }, now);
        }
        // Each stage task ends after its hangup (a failure there is counted by the stage task
        // itself).
        for stage in [Stage::Stt, Stage::Llm, Stage::Tts] {
            let _ = self.worker(stage).0.send(StageInput::Hangup);
        }
        self.reported
            .latencies(&line.playout.events, &self.turns.latencies);
        line.stats.turn_latency = std::mem::take(&mut self.turns.latencies);
        self.sync_transcript(line);
        for (n, latency) in line.stats.turn_latency.iter().enumerate() {
            tracing::info!(turn = n + 1, ?latency, "turn latency");
        }
        None
    }
}
