//! Call start: routing at `start` against the config of that moment, the circuit breaker's
//! fallback, the outbound task, and opening the agent's session(s).

use super::*;

impl<S: MediaSocket> Call<S> {
    pub(super) async fn on_start(
        &mut self,
        start: media_stream::Start,
        stream_sid: String,
    ) -> Next {
        if self.active.is_some() {
            self.stats.dropped += 1;
            tracing::warn!("second start ignored");
            return Next::Continue;
        }
        self.span.record("call_sid", start.call_sid.as_str());
        self.stats.call_sid = Some(start.call_sid.clone());
        self.span.record("stream_sid", stream_sid.as_str());
        self.stream_sid = Some(stream_sid.clone());
        let mut params: Vec<(String, String)> = start.custom_parameters.into_iter().collect();
        // An outbound call's task travels as an id; its prompt and context reach the plugins as
        // parameters (and fill the instructions template below).
        let task_id = params
            .iter()
            .find(|(n, _)| n == task::TASK_PARAMETER)
            .map(|(_, v)| v.clone());
        if let Some(id) = task_id {
            self.task = self.ctx.tasks.take(&id);
            match &self.task {
                Some(t) => params.extend(t.parameters()),
                None => {
                    tracing::warn!(task = %id, "the call's task is unknown or expired; the agent runs without it")
                }
            }
        }
        let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let config = self.ctx.config.clone();
        let route = routing::route(
            &config,
            &RouteRequest {
                agent: param("agent"),
                to: param("To"),
                params: &params,
            },
        );
        let route = match route {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "call not routed");
                return Next::End(EndReason::NotRouted(e.to_string()));
            }
        };
        let mut agent = route.agent;
        let plugins = &self.ctx.plugins;
        let breaker_open = |a: &Agent| -> Option<String> {
            a.plugin_uses()
                .into_iter()
                .find(|(_, u)| plugins.breaker(&u.plugin).is_some_and(|b| b.is_open()))
                .map(|(_, u)| u.plugin.clone())
        };
        if let Some(failing) = breaker_open(agent) {
            let fallback = agent.fallback.as_deref().and_then(|f| config.agent(f));
            match fallback {
                Some(f) if breaker_open(f).is_none() => {
                    tracing::warn!(agent = %agent.name, fallback = %f.name, "plugin circuit open; call goes to the fallback agent");
                    agent = f;
                }
                _ => {
                    tracing::warn!(agent = %agent.name, plugin = %failing, "plugin circuit open and no fallback available");
                    self.stats.agent = Some(agent.name.clone());
                    return Next::End(EndReason::CircuitOpen(failing));
                }
            }
        }
        self.span.record("agent", agent.name.as_str());
        self.plugins = agent
            .plugin_uses()
            .into_iter()
            .map(|(_, u)| u.plugin.clone())
            .collect();
        self.stats.agent = Some(agent.name.clone());
        self.span.record("plugin", self.plugins.join("+").as_str());
        let call = CallInfo {
            call_sid: start.call_sid.clone(),
            stream_sid: stream_sid.clone(),
            from: param("From").unwrap_or_default().to_string(),
            to: param("To").unwrap_or_default().to_string(),
            direction: param("Direction").unwrap_or("inbound").to_string(),
            agent: agent.name.clone(),
            parameters: params.clone(),
        };
        let (engine, input_format) =
            match open_engine(&self.ctx, self.task.as_ref(), agent, &call).await {
                Ok(o) => o,
                Err(end) => return Next::End(end),
            };
        let to_plugin = match ToPlugin::new(input_format) {
            Ok(c) => c,
            Err(e) => return Next::End(EndReason::plugin(SessionError::Contract(e.to_string()))),
        };
        tracing::info!(reason = ?route.reason, from = %call.from, to = %call.to, "call started");
        if let Some(records) = &self.ctx.records {
            // Enqueued in call order, ahead of the end-of-call record; a crash from here on
            // leaves the call marked as in progress, which the next start reports as interrupted.
            records.stream_started_nowait(records::StreamStarted {
                call_sid: call.call_sid.clone(),
                stream_sid: call.stream_sid.clone(),
                agent: Some(call.agent.clone()),
                plugin: Some(self.plugins.join("+")),
                from: Some(call.from.clone()).filter(|f| !f.is_empty()),
                to: Some(call.to.clone()).filter(|t| !t.is_empty()),
                started_at_ms: records::now_ms(),
            });
        }
        self.active = Some(Active {
            playout: Playout::new(stream_sid, engine.playback()),
            engine,
            to_plugin,
            next_chunk: None,
        });
        match self.engine_and_line() {
            Some((engine, mut line)) => engine.started(&mut line).await,
            None => Next::Continue,
        }
    }
}

/// Opens the engine `agent` runs on, and says the format its plugin takes caller audio in.
///
/// # Errors
/// A plugin is not loaded or failed to open a session: how the call ends.
async fn open_engine(
    ctx: &CallContext,
    task: Option<&task::Task>,
    agent: &Agent,
    call: &CallInfo,
) -> Result<(AnyEngine, crate::plugin::AudioFormat), EndReason> {
    let allow_private = ctx.config.server.allow_private_destinations;
    match &agent.mode {
        AgentMode::Realtime(used) => {
            let plugin = pipeline_engine::loaded(&ctx.plugins, used)?;
            let config = session_config(agent, used, call.clone(), task, allow_private);
            let engine = RealtimeEngine::open(&plugin, used, &config).await?;
            Ok((AnyEngine::Realtime(engine), plugin.info().input_format))
        }
        AgentMode::Pipeline(_) => {
            let config =
                |used: &PluginUse| session_config(agent, used, call.clone(), None, allow_private);
            // A task fills the pipeline's instructions template for this call only.
            let instructions = |template: &str| match task {
                Some(task) => task.render(template),
                None => template.to_string(),
            };
            let (engine, format) =
                PipelineEngine::open(agent, &ctx.plugins, config, instructions).await?;
            Ok((AnyEngine::Pipeline(Box::new(engine)), format))
        }
    }
}

/// The session config of the plugin `used` names, for one call of `agent`.
fn session_config(
    agent: &Agent,
    used: &PluginUse,
    call: CallInfo,
    task: Option<&task::Task>,
    allow_private_destinations: bool,
) -> SessionConfig {
    // A task fills the realtime plugin's `instructions` setting for this call only.
    let settings = match (task, used.effective_settings.get("instructions")) {
        (Some(task), Some(serde_json::Value::String(template))) => {
            let mut settings = used.effective_settings.clone();
            settings["instructions"] = serde_json::Value::String(task.render(template));
            settings.to_string()
        }
        _ => used.settings_json.clone(),
    };
    SessionConfig {
        call,
        settings,
        greeting: agent.greeting.clone(),
        io: Arc::new(IoPolicy {
            allowed_hosts: used.allowed_hosts.clone(),
            secrets: used.secrets.clone(),
            allow_private_destinations,
        }),
    }
}
