//! Function calling over the Realtime API: the agent's tools declared as Realtime functions, the
//! model's `function_call` items turned into `tool-call` outputs (each call once), and the host's
//! `tool-result`s turned back into `function_call_output` items followed by the
//! `response.create` that makes the model speak them.
//!
//! The bookkeeping lives here, apart from the socket: [`FunctionCalls`] is told what the server
//! sent and what the host answered, and returns the client events to send. Its rules:
//!
//! - A call is output once, when its arguments are complete: on `response.output_item.done`
//!   (`status: "completed"`) or on `response.function_call_arguments.done`, whichever comes
//!   first; the other names a `call_id` already output and is ignored.
//! - Each result is sent as soon as it arrives. The `response.create` after it waits until every
//!   call of the same response is answered (parallel calls get one reply, not one each), and
//!   until no response is in progress: creating a response while one is active is an error in
//!   the real API. A deferred `response.create` goes out on the next `response.done`.
//! - Barge-in changes none of this: a cancelled response still ends with `response.done`, and a
//!   result that arrives after the caller talked over the agent still reaches the model and
//!   still gets its reply.

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};
use switchboard_plugin_api::prelude::*;

/// The Realtime `tools` entries for the agent's tools: `{"type": "function", name, description,
/// parameters}` with `parameters` parsed from its JSON text. A tool whose parameters are not a
/// JSON object is left out (with a warning): the model could not call it correctly.
pub(crate) fn definitions(tools: &[Tool]) -> Vec<Value> {
    tools
        .iter()
        .filter_map(|tool| match serde_json::from_str::<Value>(&tool.parameters) {
            Ok(parameters) if parameters.is_object() => Some(json!({
                "type": "function",
                "name": tool.name,
                "description": tool.description,
                "parameters": parameters,
            })),
            _ => {
                host::log(
                    LogLevel::Warn,
                    &format!(
                        "tool {}: parameters are not a JSON object schema; not offered to the model",
                        tool.name
                    ),
                );
                None
            }
        })
        .collect()
}

/// The `output` of a `function_call_output` item: the tool's JSON text, or for a failure a JSON
/// object `{"error": "<why>"}` the model can read.
fn output_text(outcome: ToolOutcome) -> String {
    match outcome {
        ToolOutcome::Output(output) => output,
        ToolOutcome::Error(error) => json!({ "error": error }).to_string(),
    }
}

/// A call output to the host and not answered yet.
#[derive(Debug)]
struct Pending {
    call_id: String,
    /// The response that made the call (`""` if the server did not say).
    response: String,
}

/// A function-call item the server started (`response.output_item.added`), for the done events
/// that leave out its `call_id` or `name`.
#[derive(Debug)]
struct Started {
    call_id: String,
    name: String,
    response: String,
}

/// What a done event says about a function call (empty where it says nothing).
struct CallDone<'a> {
    item_id: &'a str,
    call_id: &'a str,
    name: &'a str,
    arguments: &'a str,
    response: &'a str,
}

/// A `response.create` this module sent and the responses whose results it speaks.
#[derive(Debug)]
struct Request {
    event_id: String,
    responses: Vec<String>,
}

/// One session's function calls.
#[derive(Debug, Default)]
pub(crate) struct FunctionCalls {
    /// Function-call items of the responses in progress, by item id.
    started: HashMap<String, Started>,
    /// Every `call_id` output so far (both done events of a call name it). Kept for the whole
    /// session, so that no late or repeated event runs a tool twice; a call makes few tool calls.
    output: HashSet<String>,
    /// Calls waiting for their result, in the order they were output.
    pending: Vec<Pending>,
    /// Responses some of whose results were sent to the model and not yet spoken.
    unspoken: Vec<String>,
    /// `response.created` seen and its `response.done` not yet.
    in_progress: bool,
    /// A `response.create` of ours sent and its `response.created` not seen yet.
    requested: bool,
    /// The last `response.create` of ours, to owe it again if the server refuses it.
    last_request: Option<Request>,
    /// `response.create`s sent so far (their `event_id`s count them).
    requests: u64,
}

impl FunctionCalls {
    /// The server started an output item (`response.output_item.added`).
    pub(crate) fn item_added(&mut self, event: &Value) {
        let item = &event["item"];
        if item["type"] != "function_call" {
            return;
        }
        if let Some(id) = item["id"].as_str() {
            self.started.insert(
                id.to_string(),
                Started {
                    call_id: str_of(&item["call_id"]).into(),
                    name: str_of(&item["name"]).into(),
                    response: str_of(&event["response_id"]).into(),
                },
            );
        }
    }

    /// `response.function_call_arguments.done`: a call's arguments are complete. Returns the
    /// tool call to output, or `None` if this call was output already.
    pub(crate) fn arguments_done(&mut self, event: &Value) -> Option<ToolCall> {
        self.call_done(CallDone {
            item_id: str_of(&event["item_id"]),
            call_id: str_of(&event["call_id"]),
            name: str_of(&event["name"]),
            arguments: str_of(&event["arguments"]),
            response: str_of(&event["response_id"]),
        })
    }

    /// `response.output_item.done`: for a completed function-call item, the tool call to
    /// output, or `None` if this call was output already (or the item is something else, or
    /// was cut short).
    pub(crate) fn item_done(&mut self, event: &Value) -> Option<ToolCall> {
        let item = &event["item"];
        if item["type"] != "function_call" || item["status"] != "completed" {
            return None;
        }
        self.call_done(CallDone {
            item_id: str_of(&item["id"]),
            call_id: str_of(&item["call_id"]),
            name: str_of(&item["name"]),
            arguments: str_of(&item["arguments"]),
            response: str_of(&event["response_id"]),
        })
    }

    fn call_done(&mut self, done: CallDone<'_>) -> Option<ToolCall> {
        let started = self.started.get(done.item_id);
        let or_started = |own: &str, from_start: Option<&String>| -> String {
            if own.is_empty() {
                from_start.cloned().unwrap_or_default()
            } else {
                own.to_string()
            }
        };
        let call_id = or_started(done.call_id, started.map(|s| &s.call_id));
        let name = or_started(done.name, started.map(|s| &s.name));
        let response = or_started(done.response, started.map(|s| &s.response));
        if call_id.is_empty() || name.is_empty() {
            host::log(
                LogLevel::Warn,
                "OpenAI sent a function call without a call_id or name; ignored",
            );
            return None;
        }
        if !self.output.insert(call_id.clone()) {
            return None;
        }
        self.pending.push(Pending {
            call_id: call_id.clone(),
            response,
        });
        Some(ToolCall {
            id: call_id,
            name,
            arguments: done.arguments.to_string(),
        })
    }

    /// A response started (`response.created`).
    pub(crate) fn response_created(&mut self) {
        self.in_progress = true;
        self.requested = false;
    }

    /// A response ended (`response.done`, whatever its status). Returns a `response.create` to
    /// send if results are waiting to be spoken.
    pub(crate) fn response_done(&mut self) -> Option<Value> {
        self.in_progress = false;
        self.started.clear();
        self.reply()
    }

    /// The host answered a call. Returns the events to send: the `function_call_output` item,
    /// then a `response.create` if this was the last outstanding call of its response and no
    /// response is in progress. `None` if no call with this id is waiting (an unknown `call_id`
    /// is an error event from the server, which would end the session).
    pub(crate) fn result(&mut self, result: ToolResult) -> Option<Vec<Value>> {
        let at = self.pending.iter().position(|p| p.call_id == result.id)?;
        let answered = self.pending.remove(at);
        let mut events = vec![json!({
            "type": "conversation.item.create",
            "item": {
                "type": "function_call_output",
                "call_id": answered.call_id,
                "output": output_text(result.outcome),
            },
        })];
        if !self.unspoken.contains(&answered.response) {
            self.unspoken.push(answered.response);
        }
        events.extend(self.reply());
        Some(events)
    }

    /// The server refused the `response.create` with this `event_id` because a response was
    /// in progress (`conversation_already_has_active_response`): its results are owed a reply
    /// again, after that response. Returns the `response.create` to send if none is in progress
    /// any more.
    pub(crate) fn refused(&mut self, event_id: &str) -> Option<Value> {
        let request = self
            .last_request
            .take_if(|r| !event_id.is_empty() && r.event_id == event_id)?;
        self.requested = false;
        for response in request.responses {
            if !self.unspoken.contains(&response) {
                self.unspoken.push(response);
            }
        }
        self.reply()
    }

    /// A `response.create` for the results whose response has no call left unanswered, unless
    /// a response is in progress (or asked for and not started).
    fn reply(&mut self) -> Option<Value> {
        if self.in_progress || self.requested {
            return None;
        }
        let pending = &self.pending;
        let (ready, waiting): (Vec<String>, Vec<String>) = std::mem::take(&mut self.unspoken)
            .into_iter()
            .partition(|response| pending.iter().all(|p| &p.response != response));
        self.unspoken = waiting;
        if ready.is_empty() {
            return None;
        }
        self.requests += 1;
        let event_id = format!("tool_reply_{}", self.requests);
        self.requested = true;
        self.last_request = Some(Request {
            event_id: event_id.clone(),
            responses: ready,
        });
        Some(json!({ "type": "response.create", "event_id": event_id }))
    }
}

fn str_of(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}
