//! A plugin's tool calls, for either engine: handed to the call's [`Toolbox`], call control
//! (`end_call`, `transfer_call`, `record_result`) carried out on the [`Line`], and every
//! finished call counted and put in the transcript.

use super::*;
use crate::tools::{Dispatch, Finished, Toolbox};

/// The call ends once the agent's audio has played: hung up (`None`) or transferred to the
/// number.
pub(super) struct Ending(pub(super) Option<String>);

/// Takes one tool call. Returns the result when it is known at once (refused, call control,
/// a lookup), and the ending an `end_call` or `transfer_call` asked for; a call that runs
/// reports through [`Toolbox::next_event`] and then [`finished`].
pub(super) fn dispatch<S: MediaSocket>(
    tools: &mut Toolbox,
    line: &mut Line<'_, S>,
    call: crate::plugin::tools::ToolCall,
) -> (Option<Finished>, Option<Ending>) {
    tracing::info!(tool = %call.name, "tool call");
    line.playout
        .events
        .emit(crate::events::EventKind::ToolCall {
            id: call.id.clone(),
            name: call.name.clone(),
            // Arguments the model wrote that are not JSON travel as a string.
            arguments: serde_json::from_str(&call.arguments)
                .unwrap_or_else(|_| serde_json::Value::String(call.arguments.clone())),
        });
    match tools.dispatch(call) {
        Dispatch::Running => (None, None),
        Dispatch::Done(f) => (Some(finished(line, f)), None),
        Dispatch::EndCall(f) => {
            let f = finished(line, f);
            tracing::info!("the agent ends the call once its audio has played");
            (Some(f), Some(Ending(None)))
        }
        Dispatch::Transfer {
            number,
            finished: f,
        } => {
            if !line.can_transfer {
                let f = Finished {
                    outcome: crate::plugin::tools::ToolOutcome::Error(
                        "transfers are not available on this line right now".into(),
                    ),
                    ..f
                };
                tracing::error!(%number, "transfer needs Twilio's REST API: set [twilio] account_sid and auth_token");
                return (Some(finished(line, f)), None);
            }
            let f = finished(line, f);
            tracing::info!(%number, "the agent transfers the call once its audio has played");
            (Some(f), Some(Ending(Some(number))))
        }
        Dispatch::Record { value, finished: f } => {
            line.stats.result = Some(value);
            (Some(finished(line, f)), None)
        }
    }
}

/// Counts a finished call and puts it in the transcript; hands it back.
pub(super) fn finished<S: MediaSocket>(line: &mut Line<'_, S>, finished: Finished) -> Finished {
    let trace = crate::tools::observe(&finished);
    line.playout
        .events
        .emit(crate::events::EventKind::ToolResult {
            id: finished.call.id.clone(),
            name: finished.call.name.clone(),
            ok: trace.ok,
            duration_ms: trace.latency_ms,
        });
    line.tool_transcript(trace);
    finished
}
