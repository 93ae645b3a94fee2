//! Tool calls in the turn-taking: the LLM's calls and their results, the continuation once every
//! result is in, and the filler phrase while a slow tool runs.

use super::{Action, Clause, Turns};
use crate::plugin::tools::{ToolCall, ToolOutcome, ToolResult};
use crate::plugin::{Message, Role, StageInput};

/// The tool calls of a reply, until every result is in.
#[derive(Debug)]
pub(super) struct PendingTools {
    pub(super) calls: Vec<ToolCall>,
    /// Aligned with `calls`.
    pub(super) results: Vec<Option<ToolOutcome>>,
    /// What the reply said before the calls (set when the LLM is done).
    pub(super) text: String,
    /// The LLM finished the reply that made the calls.
    pub(super) llm_done: bool,
    /// The reply is still going (no barge-in): continue it when the results are in.
    pub(super) live: bool,
    pub(super) continue_reply: bool,
    /// The filler was said for these calls.
    pub(super) filled: bool,
}

impl Turns {
    /// Tool calls of the current reply still running.
    pub fn tools_pending(&self) -> bool {
        self.tools
            .as_ref()
            .is_some_and(|t| t.results.iter().any(Option::is_none))
    }

    pub(super) fn tool_result(
        &mut self,
        result: ToolResult,
        continue_reply: bool,
        out: &mut Vec<Action>,
    ) {
        let Some(pending) = &mut self.tools else {
            return;
        };
        if let Some(i) = pending.calls.iter().position(|c| c.id == result.id) {
            pending.results[i] = Some(result.outcome);
        }
        pending.continue_reply &= continue_reply;
        self.tools_complete(out);
    }

    /// When the LLM is done and every result is in: the calls and results enter the history,
    /// and a live reply continues.
    pub(super) fn tools_complete(&mut self, out: &mut Vec<Action>) {
        let complete = self
            .tools
            .as_ref()
            .is_some_and(|t| t.llm_done && t.results.iter().all(Option::is_some));
        if !complete {
            return;
        }
        let Some(pending) = self.tools.take() else {
            return;
        };
        self.history.push(Message {
            role: Role::Assistant,
            content: pending.text,
            tool_calls: pending.calls.clone(),
            tool_call_id: None,
        });
        for (call, outcome) in pending.calls.iter().zip(pending.results) {
            let content = match outcome {
                Some(ToolOutcome::Output(o)) => o,
                Some(ToolOutcome::Error(e)) => serde_json::json!({ "error": e }).to_string(),
                None => continue,
            };
            self.history.push(Message {
                role: Role::Tool,
                content,
                tool_calls: Vec::new(),
                tool_call_id: Some(call.id.clone()),
            });
        }
        let live = pending.live && self.reply.as_ref().is_some_and(|r| !r.interrupted);
        if !live {
            return;
        }
        if pending.continue_reply {
            out.push(Action::Llm(StageInput::Reply(self.request())));
        } else if let Some(reply) = &mut self.reply {
            reply.llm_done = true;
            self.finish_reply_if_played();
        }
    }

    pub(super) fn tools_slow(&mut self, out: &mut Vec<Action>) {
        let Some(filler) = self.config.filler.clone() else {
            return;
        };
        let waiting = self.tools_pending()
            && self.tools.as_ref().is_some_and(|t| t.live && !t.filled)
            && self
                .reply
                .as_ref()
                .is_some_and(|r| !r.interrupted && r.clauses.iter().all(|c| c.done));
        if !waiting || self.audible {
            return;
        }
        if let Some(t) = &mut self.tools {
            t.filled = true;
        }
        if let Some(reply) = &mut self.reply {
            reply.clauses.push(Clause {
                text: filler.clone(),
                filler: true,
                ..Clause::default()
            });
        }
        out.push(Action::Tts(StageInput::Text(filler)));
        out.push(Action::Tts(StageInput::Flush));
    }
}
