//! Tools the host runs for agents: a plugin passes on its model's tool call, the host checks
//! it against what the agent was granted in agents.toml, runs it off the call's task (an HTTP
//! request, an MCP `tools/call`, a lookup), and hands the result back. Plugins never reach a
//! tool's backend themselves.
//!
//! One [`Toolbox`] per call holds what its agent may call and the calls in flight (at most
//! [`MAX_RUNNING`]). Call-control tools (`end_call`, `transfer_call`, `record_result`) act on
//! the call itself, so [`Toolbox::dispatch`] hands them back to the call's engine.
//!
//! Secrets (header values) and results are never logged; a log line names the tool, the
//! outcome and the latency.

pub mod http;
pub mod mcp;
pub mod schema;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::tools::{AgentTools, Grant, ToolDef, ToolKind};
use crate::plugin::tools::{Tool, ToolCall, ToolOutcome, ToolResult};
use mcp::{CallMeta, McpPool};
use schema::Schema;

/// Tool calls one call may have in flight; another is answered at once with an error.
pub const MAX_RUNNING: usize = 8;

/// Largest MCP tool output handed to the model (bytes); a larger one is an error result.
pub const MAX_MCP_OUTPUT_BYTES: usize = 64 * 1024;

/// Longest argument or result text kept in a transcript entry (characters).
pub const TRANSCRIPT_TEXT_CHARS: usize = 300;

/// A tool call that finished.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The call, as the model made it.
    pub call: ToolCall,
    /// What it came to.
    pub outcome: ToolOutcome,
    /// From the plugin's `tool-call` to the result.
    pub latency: Duration,
}

impl Finished {
    /// The result to hand back to the plugin.
    pub fn result(&self) -> ToolResult {
        ToolResult {
            id: self.call.id.clone(),
            outcome: self.outcome.clone(),
        }
    }

    /// `ok` or `error`, the metric label.
    pub fn outcome_label(&self) -> &'static str {
        match self.outcome {
            ToolOutcome::Output(_) => "ok",
            ToolOutcome::Error(_) => "error",
        }
    }
}

/// What [`Toolbox::next_event`] yields.
#[derive(Debug)]
pub enum ToolEvent {
    /// A call in flight finished.
    Finished(Finished),
    /// The tools the model may call are now these.
    Changed(Vec<Tool>),
}

/// What [`Toolbox::dispatch`] made of a tool call.
#[derive(Debug)]
pub enum Dispatch {
    /// It runs; [`Toolbox::next_event`] yields its result.
    Running,
    /// Answered at once (not granted, bad arguments, too many in flight).
    Done(Finished),
    /// `end_call`: end the call after what is queued has played; then hand back the result.
    EndCall(Finished),
    /// `transfer_call` to an allowed number.
    Transfer {
        /// E.164.
        number: String,
        /// The result for the model.
        finished: Finished,
    },
    /// `record_result` with a valid result: store it.
    Record {
        /// The result, schema-valid.
        value: Value,
        /// The result for the model.
        finished: Finished,
    },
}

/// What a granted tool is, for dispatch.
#[derive(Debug, Clone)]
enum Runner {
    Defined(Arc<ToolDef>),
    EndCall,
    Transfer,
    Record,
    Mcp { server: String, schema: Arc<Schema> },
}

/// An MCP server's tools as they change.
type ToolList = watch::Receiver<Arc<Vec<Tool>>>;

/// One call's tools.
pub struct Toolbox {
    agent: AgentTools,
    pool: Option<McpPool>,
    meta: CallMeta,
    http: reqwest::Client,
    /// The schema `record_result` checks: the task's, else the agent's.
    result_schema: Option<Arc<Schema>>,
    /// MCP grants (one tool, or all) with their servers' live tool lists.
    mcp: Vec<(Option<String>, ToolList)>,
    /// The tools as last listed: what the model sees, and what runs each.
    listed: Vec<(Tool, Runner)>,
    running: JoinSet<Finished>,
}

impl Toolbox {
    /// The tools of an agent granted `agent`, for the call `meta` describes. `pool` reaches
    /// the MCP servers (`None`: none are configured); `result_schema` is the task's, when it
    /// brought one.
    pub fn new(
        agent: &AgentTools,
        pool: Option<McpPool>,
        meta: CallMeta,
        http: reqwest::Client,
        result_schema: Option<Arc<Schema>>,
    ) -> Self {
        let mut mcp = Vec::new();
        for grant in &agent.grants {
            if let Grant::Mcp { server, tool } = grant {
                match pool.as_ref().and_then(|p| p.tools(server)) {
                    Some(rx) => mcp.push((tool.clone(), rx)),
                    None => tracing::warn!(
                        server,
                        "agent granted tools of an MCP server that is not configured"
                    ),
                }
            }
        }
        let mut toolbox = Self {
            result_schema: result_schema.or_else(|| agent.result_schema.clone()),
            agent: agent.clone(),
            pool,
            meta,
            http,
            mcp,
            listed: Vec::new(),
            running: JoinSet::new(),
        };
        toolbox.relist();
        toolbox
    }

    /// Whether the agent was granted anything (a plugin of an agent without tools is never
    /// sent a `tools` input).
    pub fn is_empty(&self) -> bool {
        self.agent.grants.is_empty()
    }

    /// The tools the model may call now, in grant order (MCP tools as their servers list them
    /// now).
    pub fn tools(&self) -> Vec<Tool> {
        self.listed.iter().map(|(t, _)| t.clone()).collect()
    }

    /// Rebuilds the list from the grants and the MCP servers' current tools; returns whether
    /// it changed.
    fn relist(&mut self) -> bool {
        let mut listed: Vec<(Tool, Runner)> = Vec::new();
        let mut mcp = self.mcp.iter_mut();
        for grant in &self.agent.grants {
            match grant {
                Grant::Defined(def) => listed.push((
                    Tool {
                        name: def.name.clone(),
                        description: def.description.clone(),
                        parameters: def.parameters.json().to_string(),
                    },
                    Runner::Defined(def.clone()),
                )),
                Grant::EndCall => listed.push((builtin_end_call(), Runner::EndCall)),
                Grant::TransferCall => {
                    listed.push((builtin_transfer(&self.agent.transfer_to), Runner::Transfer));
                }
                Grant::RecordResult => listed.push((
                    builtin_record(self.result_schema.as_deref()),
                    Runner::Record,
                )),
                Grant::Mcp { server, .. } => {
                    let Some((only, rx)) = mcp.next() else {
                        continue;
                    };
                    let tools = rx.borrow_and_update().clone();
                    for tool in tools.iter() {
                        if only.as_ref().is_some_and(|o| *o != tool.name) {
                            continue;
                        }
                        if listed.iter().any(|(t, _)| t.name == tool.name) {
                            tracing::warn!(server, tool = %tool.name, "MCP tool skipped: another tool of this agent has its name");
                            continue;
                        }
                        let schema = serde_json::from_str(&tool.parameters)
                            .map_err(|e| e.to_string())
                            .and_then(|json| Schema::compile(json, false));
                        match schema {
                            Ok(schema) => listed.push((
                                tool.clone(),
                                Runner::Mcp {
                                    server: server.clone(),
                                    schema: Arc::new(schema),
                                },
                            )),
                            Err(e) => {
                                tracing::warn!(server, tool = %tool.name, error = %e, "MCP tool skipped: bad input schema")
                            }
                        }
                    }
                }
            }
        }
        let changed = listed.len() != self.listed.len()
            || listed
                .iter()
                .zip(&self.listed)
                .any(|((a, _), (b, _))| a != b);
        self.listed = listed;
        changed
    }

    /// The next thing the call must act on: a call in flight finished, or the tool list
    /// changed (an MCP server's tools arrived, changed or went). Pending while neither
    /// happens. Cancel-safe.
    pub async fn next_event(&mut self) -> ToolEvent {
        loop {
            let mcp = &mut self.mcp;
            let running = &mut self.running;
            let changed = async {
                if mcp.is_empty() {
                    return std::future::pending().await;
                }
                let (result, index, _rest) = futures_util::future::select_all(
                    mcp.iter_mut().map(|(_, rx)| Box::pin(rx.changed())),
                )
                .await;
                (result.is_err(), index)
            };
            tokio::select! {
                joined = running.join_next(), if !running.is_empty() => match joined {
                    Some(Ok(finished)) => return ToolEvent::Finished(finished),
                    Some(Err(e)) => {
                        // A panic inside a tool's task is a host bug; the model gets no result
                        // for that call, and the call goes on.
                        tracing::error!(error = %e, "a tool task failed");
                    }
                    None => {}
                },
                (closed, index) = changed => {
                    if closed {
                        // The pool dropped the server (a reload removed it): its tools are gone.
                        self.mcp.remove(index);
                    }
                    if self.relist() {
                        return ToolEvent::Changed(self.tools());
                    }
                }
            }
        }
    }

    /// Takes a tool call from the plugin. Runs it off the call's task when it reaches a
    /// backend; answers at once when it is refused; hands call control back to the caller.
    pub fn dispatch(&mut self, call: ToolCall) -> Dispatch {
        let started = Instant::now();
        let done = |call: ToolCall, outcome: ToolOutcome| Finished {
            call,
            outcome,
            latency: started.elapsed(),
        };
        let Some(runner) = self
            .listed
            .iter()
            .find(|(t, _)| t.name == call.name)
            .map(|(_, r)| r.clone())
        else {
            let outcome = ToolResult::not_granted(&call).outcome;
            return Dispatch::Done(done(call, outcome));
        };
        let arguments = match parse_arguments(&call.arguments) {
            Ok(a) => a,
            Err(e) => return Dispatch::Done(done(call, ToolOutcome::Error(e))),
        };
        let check = |schema: &Schema| {
            schema
                .check(&Value::Object(arguments.clone()))
                .map_err(|e| format!("invalid arguments: {e}"))
        };
        match runner {
            Runner::EndCall => {
                let outcome = ToolOutcome::Output(
                    r#"{"ok":true,"note":"the call ends once what you are saying has played"}"#
                        .into(),
                );
                Dispatch::EndCall(done(call, outcome))
            }
            Runner::Transfer => {
                let number = arguments
                    .get("number")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                if self.agent.may_transfer_to(&number) {
                    let outcome = ToolOutcome::Output(
                        serde_json::json!({"ok": true, "transferring_to": number}).to_string(),
                    );
                    Dispatch::Transfer {
                        number,
                        finished: done(call, outcome),
                    }
                } else {
                    let outcome = ToolOutcome::Error(format!(
                        "transfers to {number:?} are not allowed; allowed: {}",
                        self.agent.transfer_to.join(", ")
                    ));
                    Dispatch::Done(done(call, outcome))
                }
            }
            Runner::Record => {
                let value = Value::Object(arguments);
                // A non-object schema is offered to the model wrapped as `{result: …}`.
                let value = match self.result_schema.as_deref() {
                    Some(s) if !is_object_schema(s) => {
                        value.get("result").cloned().unwrap_or(Value::Null)
                    }
                    _ => value,
                };
                if let Some(Err(e)) = self.result_schema.as_deref().map(|s| s.check(&value)) {
                    let outcome = ToolOutcome::Error(format!("invalid result: {e}"));
                    return Dispatch::Done(done(call, outcome));
                }
                let outcome = ToolOutcome::Output(r#"{"ok":true,"recorded":true}"#.into());
                Dispatch::Record {
                    value,
                    finished: done(call, outcome),
                }
            }
            Runner::Defined(def) => {
                if let Err(e) = check(&def.parameters) {
                    return Dispatch::Done(done(call, ToolOutcome::Error(e)));
                }
                if let Some(refused) = self.full(&call, started) {
                    return refused;
                }
                match &def.kind {
                    ToolKind::Lookup {
                        lookup, columns, ..
                    } => {
                        let key = arguments
                            .get(&lookup.key)
                            .and_then(Value::as_str)
                            .map_or_else(|| self.meta.from.clone(), str::to_string);
                        let outcome = match lookup.get(&key) {
                            Some(row) => {
                                let mut found = Map::new();
                                found.insert("found".into(), Value::Bool(true));
                                let shown =
                                    |k: &String| columns.as_ref().is_none_or(|c| c.contains(k));
                                for (k, v) in row.iter().filter(|(k, _)| shown(k)) {
                                    found.insert(k.clone(), Value::String(v.clone()));
                                }
                                ToolOutcome::Output(Value::Object(found).to_string())
                            }
                            None => ToolOutcome::Output(
                                serde_json::json!({"found": false, (lookup.key.clone()): key})
                                    .to_string(),
                            ),
                        };
                        Dispatch::Done(done(call, outcome))
                    }
                    ToolKind::Http(_) => {
                        let client = self.http.clone();
                        self.running.spawn(async move {
                            let outcome = match &def.kind {
                                ToolKind::Http(tool) => http::run(&client, tool, arguments).await,
                                ToolKind::Lookup { .. } => {
                                    ToolOutcome::Error("internal error: not an HTTP tool".into())
                                }
                            };
                            Finished {
                                call,
                                outcome,
                                latency: started.elapsed(),
                            }
                        });
                        Dispatch::Running
                    }
                }
            }
            Runner::Mcp { server, schema } => {
                if let Err(e) = check(&schema) {
                    return Dispatch::Done(done(call, ToolOutcome::Error(e)));
                }
                if let Some(refused) = self.full(&call, started) {
                    return refused;
                }
                let Some(pool) = self.pool.clone() else {
                    let outcome =
                        ToolOutcome::Error("the tool's MCP server is not configured".into());
                    return Dispatch::Done(done(call, outcome));
                };
                let meta = self.meta.clone();
                self.running.spawn(async move {
                    let outcome = match pool.call(&server, &call.name, arguments, &meta).await {
                        Ok(output) if output.len() > MAX_MCP_OUTPUT_BYTES => {
                            ToolOutcome::Error(format!(
                                "the tool's result is larger than {MAX_MCP_OUTPUT_BYTES} bytes"
                            ))
                        }
                        Ok(output) => ToolOutcome::Output(output),
                        Err(e) => ToolOutcome::Error(e),
                    };
                    Finished {
                        call,
                        outcome,
                        latency: started.elapsed(),
                    }
                });
                Dispatch::Running
            }
        }
    }

    /// The refusal when [`MAX_RUNNING`] calls are in flight.
    fn full(&self, call: &ToolCall, started: Instant) -> Option<Dispatch> {
        (self.running.len() >= MAX_RUNNING).then(|| {
            Dispatch::Done(Finished {
                call: call.clone(),
                outcome: ToolOutcome::Error(format!(
                    "too many tool calls at once (at most {MAX_RUNNING}); wait for a result"
                )),
                latency: started.elapsed(),
            })
        })
    }

    /// Calls in flight.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Abandons every call in flight (the call is over).
    pub fn abort_all(&mut self) {
        self.running.abort_all();
    }
}

/// Counts a finished tool call, logs it (without its arguments or result) and returns the
/// transcript entry for it.
pub fn observe(finished: &Finished) -> ToolTrace {
    let outcome = finished.outcome_label();
    metrics::counter!(crate::metrics::TOOL_CALLS, "tool" => finished.call.name.clone(), "outcome" => outcome)
        .increment(1);
    metrics::histogram!(crate::metrics::TOOL_SECONDS, "tool" => finished.call.name.clone())
        .record(finished.latency.as_secs_f64());
    let latency_ms = u64::try_from(finished.latency.as_millis()).unwrap_or(u64::MAX);
    match &finished.outcome {
        ToolOutcome::Output(o) => {
            tracing::info!(tool = %finished.call.name, outcome, latency_ms, result_bytes = o.len(), "tool call finished");
        }
        ToolOutcome::Error(e) => {
            tracing::warn!(tool = %finished.call.name, outcome, latency_ms, error = %truncate(e, 200), "tool call failed");
        }
    }
    let (ok, result) = match &finished.outcome {
        ToolOutcome::Output(o) => (true, o),
        ToolOutcome::Error(e) => (false, e),
    };
    ToolTrace {
        name: finished.call.name.clone(),
        arguments: truncate(&finished.call.arguments, TRANSCRIPT_TEXT_CHARS),
        ok,
        result: truncate(result, TRANSCRIPT_TEXT_CHARS),
        latency_ms,
    }
}

/// One tool call in a call's transcript.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ToolTrace {
    /// The tool.
    pub name: String,
    /// Its arguments as the model wrote them (truncated to [`TRANSCRIPT_TEXT_CHARS`]).
    pub arguments: String,
    /// Whether it produced an output (`false`: an error).
    pub ok: bool,
    /// The output JSON or the error (truncated).
    pub result: String,
    /// From the plugin's call to the result (ms).
    pub latency_ms: u64,
}

impl ToolTrace {
    /// One line for the transcript's text: `order_status({"order":"1042"}) → {…} (212 ms)`.
    pub fn line(&self) -> String {
        let arrow = if self.ok { "→" } else { "→ error:" };
        format!(
            "{}({}) {arrow} {} ({} ms)",
            self.name, self.arguments, self.result, self.latency_ms
        )
    }
}

/// `text` cut to at most `max` characters, with `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// The arguments JSON a model wrote, as an object (empty text counts as `{}`).
fn parse_arguments(text: &str) -> Result<Map<String, Value>, String> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("invalid arguments: expected a JSON object".into()),
        Err(e) => Err(format!("invalid arguments: not JSON ({e})")),
    }
}

fn is_object_schema(schema: &Schema) -> bool {
    schema.json().get("type").and_then(Value::as_str) == Some("object")
}

fn builtin_end_call() -> Tool {
    Tool {
        name: "end_call".into(),
        description: "End the phone call once what you are saying now has been heard. Use it \
                      when the caller's business is done or they say goodbye; say goodbye first."
            .into(),
        parameters: r#"{"type":"object","properties":{"reason":{"type":"string","description":"Why the call ends, for the record"}}}"#.into(),
    }
}

fn builtin_transfer(allowed: &[String]) -> Tool {
    Tool {
        name: "transfer_call".into(),
        description: format!(
            "Transfer the caller to a person at another phone number, after what you are saying \
             now has been heard. Allowed numbers: {}.",
            allowed.join(", ")
        ),
        parameters: r#"{"type":"object","properties":{"number":{"type":"string","description":"The E.164 number to transfer to, e.g. +14155550100"}},"required":["number"]}"#.into(),
    }
}

fn builtin_record(schema: Option<&Schema>) -> Tool {
    let parameters = match schema {
        Some(s) if is_object_schema(s) => s.json().to_string(),
        Some(s) => serde_json::json!({"type": "object", "properties": {"result": s.json()}, "required": ["result"]})
            .to_string(),
        None => r#"{"type":"object"}"#.into(),
    };
    Tool {
        name: "record_result".into(),
        description: "Record the outcome of this call's task, once you know it. Call it once; a \
                      later call replaces the result."
            .into(),
        parameters,
    }
}

#[cfg(test)]
mod tests;
