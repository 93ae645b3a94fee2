//! The task of an outbound call (`POST /calls` with `task`): what the agent should do on this
//! one call (a reminder, a survey, a notification), and how it reaches the agent's plugin.
//!
//! The operator API stores the task under a fresh id ([`PendingTasks`]) and puts the id in the
//! call's webhook URL (`?task=ID`); the webhook hands it on as a `<Parameter>`, and the call
//! task takes it back out when the stream starts. The task then fills the agent's instructions
//! template ([`Task::render`]) for this call only, and is passed to every plugin as
//! customParameters `task.type`, `task.prompt` and `task.context`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Longest `task.prompt` accepted, in bytes.
pub const MAX_PROMPT_BYTES: usize = 8 * 1024;
/// Longest `task.context` accepted, serialized as JSON, in bytes.
pub const MAX_CONTEXT_BYTES: usize = 16 * 1024;
/// Longest `task.type`, in bytes.
pub const MAX_TYPE_BYTES: usize = 64;
/// How long a task waits for its call's stream to start (ringing, voicemail detection, a slow
/// answer) before it is dropped.
pub const PENDING_TASK_TTL: Duration = Duration::from_secs(60 * 60);
/// Most tasks waiting at once; more means calls are being placed faster than answered.
pub const MAX_PENDING_TASKS: usize = 10_000;

/// The customParameter that carries a task's id from the webhook to the stream.
pub const TASK_PARAMETER: &str = "task";

/// What the agent should do on one outbound call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    /// A label such as `reminder` or `survey`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// What the agent should do, in words.
    pub prompt: String,
    /// Facts the agent may use (any JSON: names, dates, order numbers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<serde_json::Value>,
    /// JSON Schema of the result the agent records with `record_result` (the agent must be
    /// granted it); replaces the agent's own `result_schema` for this call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_schema: Option<serde_json::Value>,
}

impl Task {
    /// Checks sizes.
    ///
    /// # Errors
    /// What is wrong, for the API's error message.
    pub fn check(&self) -> Result<(), String> {
        if self.prompt.trim().is_empty() {
            return Err("task.prompt must not be empty".into());
        }
        if self.prompt.len() > MAX_PROMPT_BYTES {
            return Err(format!("task.prompt is over {MAX_PROMPT_BYTES} bytes"));
        }
        if self.kind.as_ref().is_some_and(|k| k.len() > MAX_TYPE_BYTES) {
            return Err(format!("task.type is over {MAX_TYPE_BYTES} bytes"));
        }
        if self.context_text().len() > MAX_CONTEXT_BYTES {
            return Err(format!("task.context is over {MAX_CONTEXT_BYTES} bytes"));
        }
        if let Some(schema) = &self.result_schema {
            if schema.to_string().len() > MAX_CONTEXT_BYTES {
                return Err(format!(
                    "task.result_schema is over {MAX_CONTEXT_BYTES} bytes"
                ));
            }
            crate::tools::schema::Schema::compile(schema.clone(), false)
                .map_err(|e| format!("task.result_schema is {e}"))?;
        }
        Ok(())
    }

    /// The task's result schema, compiled; `None` without one (or, never after
    /// [`Task::check`], an invalid one).
    pub fn result_schema(&self) -> Option<Arc<crate::tools::schema::Schema>> {
        let json = self.result_schema.clone()?;
        crate::tools::schema::Schema::compile(json, false)
            .ok()
            .map(Arc::new)
    }

    /// The context as text: a string as is, anything else as compact JSON, none as "".
    pub fn context_text(&self) -> String {
        match &self.context {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        }
    }

    /// Fills an instructions template: `{task.prompt}`, `{task.type}` and `{task.context}` are
    /// replaced. A template with none of them gets the task appended as a paragraph, so a task
    /// is never silently dropped.
    pub fn render(&self, template: &str) -> String {
        const KEYS: [&str; 3] = ["{task.prompt}", "{task.type}", "{task.context}"];
        let kind = self.kind.as_deref().unwrap_or("");
        let context = self.context_text();
        if KEYS.iter().any(|k| template.contains(k)) {
            return template
                .replace("{task.prompt}", &self.prompt)
                .replace("{task.type}", kind)
                .replace("{task.context}", &context);
        }
        let mut out = template.trim_end().to_string();
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        if kind.is_empty() {
            out.push_str("Task for this call: ");
        } else {
            out.push_str(&format!("Task for this call ({kind}): "));
        }
        out.push_str(&self.prompt);
        if !context.is_empty() {
            out.push_str("\nContext: ");
            out.push_str(&context);
        }
        out
    }

    /// The task as customParameters for the plugin: `task.type`, `task.prompt`,
    /// `task.context` (empty values left out).
    pub fn parameters(&self) -> Vec<(String, String)> {
        let mut p = vec![("task.prompt".to_string(), self.prompt.clone())];
        if let Some(kind) = &self.kind {
            p.push(("task.type".to_string(), kind.clone()));
        }
        let context = self.context_text();
        if !context.is_empty() {
            p.push(("task.context".to_string(), context));
        }
        p
    }
}

/// Tasks of outbound calls placed but not yet streaming, by id. Locked once when a call is
/// placed and once when its stream starts, never on the audio path.
#[derive(Debug, Clone, Default)]
pub struct PendingTasks {
    inner: Arc<Mutex<HashMap<String, (Instant, Task)>>>,
}

/// [`PendingTasks::insert`] found [`MAX_PENDING_TASKS`] tasks waiting.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("too many outbound calls waiting to be answered ({MAX_PENDING_TASKS})")]
pub struct TooManyPending;

impl PendingTasks {
    /// Stores `task` and returns its new id (32 hex digits, random).
    ///
    /// # Errors
    /// [`TooManyPending`] when the store is full even after dropping expired tasks.
    pub fn insert(&self, task: Task) -> Result<String, TooManyPending> {
        let id = format!("{:032x}", rand::random::<u128>());
        let now = Instant::now();
        let mut map = self.inner.lock().map_err(|_| TooManyPending)?;
        if map.len() >= MAX_PENDING_TASKS {
            map.retain(|_, (at, _)| now.duration_since(*at) < PENDING_TASK_TTL);
            if map.len() >= MAX_PENDING_TASKS {
                return Err(TooManyPending);
            }
        }
        map.insert(id.clone(), (now, task));
        Ok(id)
    }

    /// Takes the task stored under `id`, if it is there and not expired.
    pub fn take(&self, id: &str) -> Option<Task> {
        let (at, task) = self.inner.lock().ok()?.remove(id)?;
        (at.elapsed() < PENDING_TASK_TTL).then_some(task)
    }

    /// Tasks waiting.
    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |m| m.len())
    }

    /// No tasks waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How long a call waits, at its start, for its task from the records database before it goes
/// on without it (a database outage must not hold up the greeting).
pub const TAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// A task could not be stored; the call must not be placed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Too many tasks are waiting.
    #[error(transparent)]
    Full(#[from] TooManyPending),
    /// The records database failed or is unreachable.
    #[error("cannot store the call's task: {0}")]
    Records(#[from] crate::records::RecordsError),
}

/// Stores `task` where the call's stream will find it: in the call records (`records`), which
/// every instance of a fleet shares, else in this process (`local`). Returns its id.
///
/// # Errors
/// [`StoreError`]; nothing was stored.
pub async fn store(
    records: Option<&crate::records::Records>,
    local: &PendingTasks,
    task: &Task,
) -> Result<String, StoreError> {
    let Some(records) = records else {
        return Ok(local.insert(task.clone())?);
    };
    let id = format!("{:032x}", rand::random::<u128>());
    let json = serde_json::to_value(task).map_err(crate::records::RecordsError::from)?;
    match records.put_task(&id, &json).await {
        Ok(()) => Ok(id),
        Err(crate::records::RecordsError::TooManyTasks(_)) => Err(TooManyPending.into()),
        Err(e) => Err(e.into()),
    }
}

/// Takes the task stored under `id` (see [`store`]): `None` if it is unknown, taken, expired,
/// or the records database did not answer within [`TAKE_TIMEOUT`] (logged).
pub async fn take(
    records: Option<&crate::records::Records>,
    local: &PendingTasks,
    id: &str,
) -> Option<Task> {
    let Some(records) = records else {
        return local.take(id);
    };
    match tokio::time::timeout(TAKE_TIMEOUT, records.take_task(id)).await {
        Ok(Ok(json)) => json.and_then(|j| match serde_json::from_value(j) {
            Ok(task) => Some(task),
            Err(error) => {
                tracing::warn!(task = %id, %error, "stored task does not parse");
                None
            }
        }),
        Ok(Err(error)) => {
            tracing::warn!(task = %id, %error, "the call's task could not be read");
            None
        }
        Err(_) => {
            tracing::warn!(task = %id, "the call's task was not read in time");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> Task {
        Task {
            kind: Some("reminder".into()),
            prompt: "Remind Ana of her dentist appointment.".into(),
            context: Some(serde_json::json!({"name": "Ana", "time": "3 pm"})),
            result_schema: None,
        }
    }

    #[test]
    fn template_placeholders_are_filled() {
        let out = task()
            .render("You call for Dr. Lee. {task.prompt} Facts: {task.context} ({task.type})");
        assert_eq!(
            out,
            r#"You call for Dr. Lee. Remind Ana of her dentist appointment. Facts: {"name":"Ana","time":"3 pm"} (reminder)"#
        );
    }

    #[test]
    fn a_template_without_placeholders_gets_the_task_appended() {
        let out = task().render("Be brief.");
        assert_eq!(
            out,
            "Be brief.\n\nTask for this call (reminder): Remind Ana of her dentist appointment.\nContext: {\"name\":\"Ana\",\"time\":\"3 pm\"}"
        );
        let bare = Task {
            kind: None,
            prompt: "Say hi.".into(),
            context: None,
            result_schema: None,
        };
        assert_eq!(bare.render(""), "Task for this call: Say hi.");
    }

    #[test]
    fn checks_and_parameters() {
        assert!(task().check().is_ok());
        let mut t = task();
        t.prompt = " ".into();
        assert!(t.check().is_err());
        t.prompt = "x".repeat(MAX_PROMPT_BYTES + 1);
        assert!(t.check().is_err());
        let p = task().parameters();
        assert_eq!(p.len(), 3);
        assert_eq!(p[1], ("task.type".into(), "reminder".into()));
        let parsed: Result<Task, _> = serde_json::from_str(r#"{"prompt":"x","extra":1}"#);
        assert!(parsed.is_err(), "unknown task keys are refused");
    }

    #[test]
    fn pending_tasks_are_taken_once() {
        let pending = PendingTasks::default();
        let id = pending.insert(task()).expect("insert");
        assert_eq!(id.len(), 32);
        assert_eq!(pending.len(), 1);
        assert_eq!(pending.take(&id), Some(task()));
        assert_eq!(pending.take(&id), None);
        assert!(pending.is_empty());
        assert_eq!(pending.take("nope"), None);
    }
}
