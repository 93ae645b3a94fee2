//! Call end: the session told (`hangup`, whose failure counts), the circuit breaker, call control
//! through Twilio's REST API, and the call's metrics and record.

use super::*;

/// Counts an ended call by agent and outcome, its plugin failure if any, and its pipeline turn
/// latencies.
pub(super) fn record_call_metrics(
    reason: &EndReason,
    stats: &CallStats,
    failed_plugin: Option<&str>,
) {
    let agent = stats.agent.clone().unwrap_or_else(|| "none".into());
    metrics::counter!(
        crate::metrics::CALLS,
        "agent" => agent.clone(),
        "outcome" => reason.outcome()
    )
    .increment(1);
    if let EndReason::PluginFailed(failure) = reason {
        let plugin = failure
            .plugin
            .as_deref()
            .or(failed_plugin)
            .unwrap_or("unknown")
            .to_string();
        metrics::counter!(
            crate::metrics::PLUGIN_FAILURES,
            "plugin" => plugin,
            "kind" => failure.error.kind()
        )
        .increment(1);
    }
    if let Some(failure) = &stats.end_failure {
        metrics::counter!(
            crate::metrics::PLUGIN_FAILURES,
            "plugin" => failure.plugin.clone(),
            "kind" => failure.kind
        )
        .increment(1);
    }
    for latency in &stats.turn_latency {
        for (stage, value) in [
            ("stt_final", latency.stt_final),
            ("llm_first_text", latency.llm_first_text),
            ("tts_first_audio", latency.tts_first_audio),
            ("first_audio_out", latency.first_audio_out),
            ("endpointing", latency.endpointing),
        ] {
            if let Some(d) = value {
                metrics::histogram!(
                    crate::metrics::TURN_SECONDS,
                    "agent" => agent.clone(),
                    "stage" => stage
                )
                .record(d.as_secs_f64());
            }
        }
    }
}

/// The kind of the plugin failure that ended the call, or that happened at its end
/// ([`SessionError::kind`]): the record's `failure_kind`, the metric's `kind` label and the
/// "call ended" log line's `failure_kind` field.
pub(super) fn failure_kind(reason: &EndReason, stats: &CallStats) -> Option<&'static str> {
    match (reason, &stats.end_failure) {
        (EndReason::PluginFailed(failure), _) => Some(failure.error.kind()),
        (_, Some(failure)) => Some(failure.kind),
        _ => None,
    }
}

/// The record of a call that ended for `reason`.
pub(super) fn call_end_record(
    call_sid: &str,
    reason: &EndReason,
    stats: &CallStats,
) -> records::CallEnd {
    let ms = |d: Option<Duration>| d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    records::CallEnd {
        call_sid: call_sid.to_string(),
        ended_at_ms: records::now_ms(),
        outcome: reason.outcome().to_string(),
        failure_kind: failure_kind(reason, stats).map(str::to_string),
        reason: match &stats.end_failure {
            None => reason.to_string(),
            Some(f) => format!(
                "{reason}; then plugin {} failed at hangup: {}",
                f.plugin, f.message
            ),
        },
        transcript: stats
            .transcript
            .iter()
            .map(|t| records::TranscriptTurn {
                side: match t.side {
                    Side::Caller => "caller",
                    Side::Agent => "agent",
                    Side::Tool => "tool",
                }
                .to_string(),
                text: t.text.clone(),
                heard_ms: t.heard_ms,
                tool: t.tool.clone(),
            })
            .collect(),
        turn_latency: stats
            .turn_latency
            .iter()
            .map(|l| records::TurnLatency {
                stt_final_ms: ms(l.stt_final),
                llm_first_text_ms: ms(l.llm_first_text),
                tts_first_audio_ms: ms(l.tts_first_audio),
                first_audio_out_ms: ms(l.first_audio_out),
                endpointing_ms: ms(l.endpointing),
                speech_ms: ms(l.speech),
            })
            .collect(),
        frames_in: stats.frames_in,
        frames_out: stats.frames_out,
        first_audio_ms: ms(stats.first_audio),
        result: stats.result.clone(),
    }
}

impl<S: MediaSocket> Call<S> {
    /// Ends the call for `reason`: the engine told (unless its plugin failed: the caller hears
    /// the apology instead), the breaker, call control, and the socket closed.
    pub(super) async fn finish(&mut self, reason: &EndReason) {
        if matches!(
            reason,
            EndReason::PluginFailed(_) | EndReason::CircuitOpen(_)
        ) {
            // The session is broken or was never opened: drop it and tell the caller.
            self.active = None;
            self.apologise().await;
        }
        let was_active = self.active.is_some();
        if let Some((engine, mut line)) = self.engine_and_line() {
            line.stats.end_failure = engine.end(&mut line).await;
        }
        let failed_at_end = self.stats.end_failure.as_ref().map(|f| f.plugin.clone());
        match reason {
            EndReason::PluginFailed(failure) => self.record_failure(failure.plugin.clone()),
            EndReason::CircuitOpen(_) => {}
            _ if failed_at_end.is_some() => self.record_failure(failed_at_end),
            _ if was_active => {
                for name in &self.plugins {
                    if let Some(breaker) = self.ctx.plugins.breaker(name) {
                        breaker.record_success();
                    }
                }
            }
            _ => {}
        }
        // Drop the session (and the plugin's store) before the socket closes.
        self.active = None;
        if !self.call_control(reason).await || *reason == EndReason::Shutdown {
            self.apologise().await;
        }
        if !matches!(reason, EndReason::SocketClosed | EndReason::SocketError(_)) {
            let frame = CloseFrame {
                code: axum::extract::ws::close_code::NORMAL,
                reason: "call ended".into(),
            };
            let _ = self.ws.send(Message::Close(Some(frame))).await;
        }
    }

    /// Plays the apology on the socket, once the stream is known.
    pub(super) async fn apologise(&mut self) {
        if let Some(stream_sid) = self.stream_sid.clone() {
            line::apologise(&mut self.ws, &stream_sid).await;
        }
    }

    /// Counts a failure of `plugin` on its circuit breaker.
    pub(super) fn record_failure(&self, plugin: Option<String>) {
        if let Some(name) = plugin
            && let Some(breaker) = self.ctx.plugins.breaker(&name)
            && breaker.record_failure()
        {
            tracing::error!(
                plugin = %name,
                failures = breaker.failures(),
                "plugin circuit breaker opened: new calls go to the fallback"
            );
        }
    }

    /// Carries out a plugin's hang-up or transfer through Twilio's REST API, before the socket
    /// closes (closing a `<Connect><Stream>` first would let Twilio go on to the end of the
    /// TwiML and end the call before a transfer could redirect it). Returns false when a
    /// transfer failed, so the caller hears the apology.
    pub(super) async fn call_control(&mut self, reason: &EndReason) -> bool {
        let update = match reason {
            EndReason::HungUp => UpdateCall::Complete,
            EndReason::Transferred(number) => UpdateCall::Twiml(
                crate::twiml::Response::new()
                    .dial(crate::twiml::Dial::new(number.as_str()))
                    .to_xml(),
            ),
            _ => return true,
        };
        let (Some(rest), Some(call_sid)) = (&self.ctx.rest, &self.stats.call_sid) else {
            // Without the REST API, closing the stream ends a `<Connect><Stream>` call anyway.
            return true;
        };
        match rest.update_call(call_sid, &update).await {
            Ok(call) => {
                tracing::info!(status = ?call.status, ?reason, "call updated through Twilio's REST API");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, ?reason, "Twilio refused the call update");
                !matches!(reason, EndReason::Transferred(_))
            }
        }
    }
}

/// Emits how the call ended to its live events: `plugin.failed` when a plugin ended it (or
/// failed at its end), then `call.ended`.
pub(super) fn emit_end_events(
    events: &crate::events::CallEvents,
    reason: &EndReason,
    stats: &CallStats,
) {
    use crate::events::EventKind;
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if let EndReason::PluginFailed(failure) = reason {
        events.emit(EventKind::PluginFailed {
            plugin: failure.plugin.clone(),
            stage: failure.stage.map(crate::events::stage_name),
            kind: failure.error.kind(),
            message: failure.error.to_string(),
        });
    } else if let Some(failure) = &stats.end_failure {
        events.emit(EventKind::PluginFailed {
            plugin: Some(failure.plugin.clone()),
            stage: None,
            kind: failure.kind,
            message: failure.message.clone(),
        });
    }
    events.emit(EventKind::CallEnded {
        outcome: reason.outcome(),
        reason: reason.to_string(),
        duration_ms: events.elapsed_ms(),
        frames_in: stats.frames_in,
        frames_out: stats.frames_out,
        first_audio_ms: stats.first_audio.map(ms),
    });
}
