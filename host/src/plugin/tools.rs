//! Tool calls at the plugin boundary (WIT `switchboard:plugin/tools`, contract 0.2.0): the
//! host's own types for what the agent may call, a call a plugin passes on from its model, and
//! the result the host hands back.

/// A tool the agent may call (WIT `tool`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    /// Unique within the call.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of its arguments, as JSON text.
    pub parameters: String,
}

/// A plugin's model asked to call a tool (WIT `tool-call`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// The model's id for the call, echoed in its result.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments, as JSON text.
    pub arguments: String,
}

/// What a tool call came to (WIT `tool-outcome`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolOutcome {
    /// The tool's output, as JSON text.
    Output(String),
    /// Why it failed, in words for the model.
    Error(String),
}

/// The result of a [`ToolCall`] (WIT `tool-result`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolResult {
    /// The call's id.
    pub id: String,
    /// Its outcome.
    pub outcome: ToolOutcome,
}

impl ToolResult {
    /// The error result of a call to a tool the agent was not given: what the host answers
    /// until tools are declared for the agent.
    pub fn not_granted(call: &ToolCall) -> Self {
        Self {
            id: call.id.clone(),
            outcome: ToolOutcome::Error(format!(
                "no tool named {:?} is available to this agent",
                call.name
            )),
        }
    }
}
