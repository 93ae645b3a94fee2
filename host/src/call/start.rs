//! Call start: routing at `start` against the config of that moment, the circuit breaker's
//! fallback, the outbound task, and opening the agent's session(s).

use super::*;
use crate::config::lookup::{Row, caller_instructions, render_caller};
use crate::tools::Toolbox;
use crate::tools::mcp::CallMeta;

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
        if let Some(admitted) = &self.ctx.admitted
            && !admitted.matches(&start.call_sid, &stream_sid)
        {
            // The admitted call is the one that ends (and is recorded), not the sids offered.
            self.span.record("call_sid", admitted.call_sid.as_str());
            tracing::warn!(offered_call_sid = %start.call_sid, offered_stream_sid = %stream_sid, "start refused: not the admitted stream's sids");
            return Next::End(EndReason::NotRouted(
                "the start message's callSid and streamSid are not the ones admitted".into(),
            ));
        }
        self.span.record("call_sid", start.call_sid.as_str());
        self.stats.call_sid = Some(start.call_sid.clone());
        self.events = Some(self.ctx.events.call(&start.call_sid, Some(&stream_sid)));
        self.span.record("stream_sid", stream_sid.as_str());
        self.stream_sid = Some(stream_sid.clone());
        let mut params: Vec<(String, String)> = start.custom_parameters.into_iter().collect();
        if let Some(admitted) = &self.ctx.admitted {
            admitted.apply(&mut params);
        }
        // An outbound call's task travels as an id; its prompt and context reach the plugins as
        // parameters (and fill the instructions template below).
        let task_id = params
            .iter()
            .find(|(n, _)| n == task::TASK_PARAMETER)
            .map(|(_, v)| v.clone());
        if let Some(id) = task_id {
            self.task = task::take(self.ctx.records.as_ref(), &self.ctx.tasks, &id).await;
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
                if matches!(e, routing::RouteError::Disabled(_)) {
                    // An agent without its key, in a file that serves: the caller hears the
                    // apology (the webhook's caller hears "not configured").
                    self.apologise().await;
                }
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
        if let Some(events) = &mut self.events {
            events.set_agent(&agent.name);
        }
        // Who the caller is, from memory: the lookup never delays the greeting.
        let context = agent.caller_context.as_ref();
        let caller = context.and_then(|c| c.find(&params));
        if let (Some(row), Some(context)) = (&caller, context) {
            tracing::info!(lookup = %context.name, "caller found in the lookup file");
            params.extend(row.iter().map(|(k, v)| (format!("caller.{k}"), v.clone())));
        }
        let greeting = match (&caller, context.and_then(|c| c.greeting.as_deref())) {
            (Some(row), Some(greeting)) => Some(render_caller(greeting, Some(row))),
            _ => agent
                .greeting
                .as_deref()
                .map(|g| render_caller(g, caller.as_deref())),
        };
        let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let call = CallInfo {
            call_sid: start.call_sid.clone(),
            stream_sid: stream_sid.clone(),
            from: param("From").unwrap_or_default().to_string(),
            to: param("To").unwrap_or_default().to_string(),
            direction: param("Direction").unwrap_or("inbound").to_string(),
            agent: agent.name.clone(),
            parameters: params.clone(),
        };
        let setup = Setup {
            task: self.task.as_ref(),
            caller: caller.as_deref(),
            caller_lookup: context.map(|c| c.name.as_str()),
            greeting,
        };
        let (engine, input_format) = match open_engine(&self.ctx, &setup, agent, &call).await {
            Ok(o) => o,
            Err(end) => return Next::End(end),
        };
        let to_plugin = match ToPlugin::new(input_format) {
            Ok(c) => c,
            Err(e) => return Next::End(EndReason::plugin(SessionError::Contract(e.to_string()))),
        };
        tracing::info!(reason = ?route.reason, from = %call.from, to = %call.to, "call started");
        let events = self
            .events
            .clone()
            .unwrap_or_else(|| self.ctx.events.call(&call.call_sid, Some(&stream_sid)));
        events.emit(crate::events::EventKind::CallStarted {
            from: call.from.clone(),
            to: call.to.clone(),
            direction: if self.ctx.admitted.is_some() {
                crate::events::Direction::Browser
            } else if self.task.is_some() || call.direction.starts_with("outbound") {
                crate::events::Direction::Outbound
            } else {
                crate::events::Direction::Inbound
            },
            mode: match agent.mode {
                crate::config::AgentMode::Realtime(_) => "realtime",
                crate::config::AgentMode::Pipeline(_) => "pipeline",
            },
            plugins: self.plugins.clone(),
        });
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
            playout: Playout::new(stream_sid, engine.playback(), events),
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

/// A stream the gateway admitted before it opened — the console's browser phone
/// (`crate::server::console`) — rather than one Twilio opened: its `start` must carry these sids
/// (any other is refused, [`EndReason::NotRouted`]), and its parameters replace the
/// same-named `customParameters`, so `agent` among them routes the call whatever the peer sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmittedStream {
    /// The `callSid` the stream's `start` must carry (`CA` + 32 hex digits).
    pub call_sid: String,
    /// The `streamSid` the stream's `start` must carry (`MZ` + 32 hex digits).
    pub stream_sid: String,
    /// Name/value pairs put in place of the same-named `customParameters`: `agent` (the agent
    /// that answers), and `From`, `To`, `Direction` as the plugins and records see them.
    pub parameters: Vec<(String, String)>,
}

impl AdmittedStream {
    /// Whether a `start` carrying `call_sid` and `stream_sid` opens this stream.
    pub fn matches(&self, call_sid: &str, stream_sid: &str) -> bool {
        self.call_sid == call_sid && self.stream_sid == stream_sid
    }

    /// `params` (a `start`'s `customParameters`) with [`AdmittedStream::parameters`] first, in
    /// place of any pair of the same name.
    pub fn apply(&self, params: &mut Vec<(String, String)>) {
        params.retain(|(name, _)| !self.parameters.iter().any(|(n, _)| n == name));
        params.splice(0..0, self.parameters.iter().cloned());
    }
}

/// What this call adds to its agent: the outbound task, the caller found in the agent's lookup
/// file, and the greeting that follows from them.
struct Setup<'a> {
    task: Option<&'a task::Task>,
    caller: Option<&'a Row>,
    /// The agent's `caller_context.lookup`, when it has one.
    caller_lookup: Option<&'a str>,
    greeting: Option<String>,
}

impl Setup<'_> {
    /// An instructions template for this call: the task filled in (or appended), then the
    /// caller (see [`caller_instructions`]).
    fn instructions(&self, template: &str) -> String {
        let text = match self.task {
            Some(task) => task.render(template),
            None => template.to_string(),
        };
        match self.caller_lookup {
            Some(lookup) => caller_instructions(&text, self.caller, lookup),
            None => text,
        }
    }

    /// True when the call changes an instructions template.
    fn changes_instructions(&self) -> bool {
        self.task.is_some() || self.caller_lookup.is_some()
    }
}

/// Opens the engine `agent` runs on, and says the format its plugin takes caller audio in.
///
/// # Errors
/// A plugin is not loaded or failed to open a session: how the call ends.
async fn open_engine(
    ctx: &CallContext,
    setup: &Setup<'_>,
    agent: &Agent,
    call: &CallInfo,
) -> Result<(AnyEngine, crate::plugin::AudioFormat), EndReason> {
    let allow_private = ctx.config.server.allow_private_destinations;
    match &agent.mode {
        AgentMode::Realtime(used) => {
            let plugin = pipeline_engine::loaded(&ctx.plugins, used)?;
            let config = session_config(used, call.clone(), Some(setup), allow_private);
            let engine =
                RealtimeEngine::open(&plugin, used, &config, toolbox(ctx, setup, agent, call))
                    .await?;
            Ok((AnyEngine::Realtime(engine), plugin.info().input_format))
        }
        AgentMode::Pipeline(_) => {
            // The stages get the greeting; the instructions reach the LLM through the history.
            let config = |used: &PluginUse| {
                let mut config = session_config(used, call.clone(), None, allow_private);
                config.greeting.clone_from(&setup.greeting);
                config
            };
            let (engine, format) = PipelineEngine::open(
                agent,
                &ctx.plugins,
                config,
                |template| setup.instructions(template),
                setup.greeting.clone(),
                toolbox(ctx, setup, agent, call),
            )
            .await?;
            Ok((AnyEngine::Pipeline(Box::new(engine)), format))
        }
    }
}

/// The tools of `agent` for this call: its grants, the gateway's MCP connections, and the
/// task's result schema.
fn toolbox(ctx: &CallContext, setup: &Setup<'_>, agent: &Agent, call: &CallInfo) -> Toolbox {
    Toolbox::new(
        &agent.tools,
        ctx.tools.mcp.get().cloned(),
        CallMeta {
            call_sid: call.call_sid.clone(),
            from: call.from.clone(),
            to: call.to.clone(),
            agent: call.agent.clone(),
        },
        ctx.tools.http.clone(),
        setup.task.and_then(task::Task::result_schema),
    )
}

/// The session config of the plugin `used` names, for one call. With a `setup` (a realtime
/// agent), its greeting, and its instructions in the plugin's `instructions` setting.
fn session_config(
    used: &PluginUse,
    call: CallInfo,
    setup: Option<&Setup<'_>>,
    allow_private_destinations: bool,
) -> SessionConfig {
    let settings = match (setup, used.effective_settings.get("instructions")) {
        (Some(setup), Some(serde_json::Value::String(template)))
            if setup.changes_instructions() =>
        {
            let mut settings = used.effective_settings.clone();
            settings["instructions"] = serde_json::Value::String(setup.instructions(template));
            settings.to_string()
        }
        _ => used.settings_json.clone(),
    };
    SessionConfig {
        call,
        settings,
        greeting: setup.and_then(|s| s.greeting.clone()),
        io: Arc::new(IoPolicy {
            allowed_hosts: used.allowed_hosts.clone(),
            secrets: used.secrets.clone(),
            allow_private_destinations,
        }),
    }
}
