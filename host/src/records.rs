//! Call records: one durable row per call, keyed by Twilio's `CallSid`, in SQLite.
//!
//! The gateway writes a call's row when the voice webhook creates the call
//! ([`Records::call_created`]), when its Media Stream starts ([`Records::stream_started`]), on
//! each Twilio status callback ([`Records::status`]) and when the call ends
//! ([`Records::call_ended`]). The operator API reads rows back ([`Records::get`],
//! [`Records::list`]).
//!
//! - **Order does not matter.** Every write is an upsert keyed by `call_sid` that fills in only
//!   what it knows: a missing value never overwrites a known one. Events may arrive in any order
//!   (a status callback before or after the call ended; a stream for a call this process never saw
//!   a webhook for, which then creates the row). Twilio's status is derived from the call's whole
//!   status history, never from whichever callback arrived last (see [`Records::status`]).
//! - **Durability.** The database runs in WAL mode with `synchronous=NORMAL`: once a write's future
//!   resolves `Ok`, the write is committed and survives a crash of this process, SIGKILL included.
//!   A power loss or OS crash may roll back the last few commits; the file stays consistent.
//! - **Restart.** A row whose outcome is still `in-progress` belongs to a call that was live when
//!   the previous process stopped; [`Records::open`] marks it `interrupted`. This assumes one
//!   gateway process per database file.
//! - **One writer.** A single thread owns the `rusqlite::Connection` and serves every command,
//!   reads included, in the order sent, from a bounded queue ([`RECORDS_QUEUE`]). Each command
//!   answers on its own oneshot channel, so callers learn about failures.
//! - **Schema.** [`MIGRATIONS`] run in order, each in one transaction, and `PRAGMA user_version`
//!   counts the ones applied. A database from a newer build is refused, never touched.
//!
//! Times are unix epoch milliseconds (`i64`) in fields named `*_at_ms`.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::ToSql;
use rusqlite::{
    Connection, OptionalExtension, Row, Statement, Transaction, TransactionBehavior, named_params,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use sqlite::{
    Db, SQL_CREATED, SQL_CURSOR, SQL_ENDED, SQL_GET, SQL_HISTORY, SQL_STARTED, SQL_STATUS,
    read_record, serve,
};
/// Commands that may wait for the writer thread. A call sends about four, so this absorbs a burst
/// of a few hundred calls changing state at once (while the disk syncs) without holding them up;
/// beyond it senders wait, which bounds memory instead of letting a slow disk grow a queue.
pub const RECORDS_QUEUE: usize = 1024;

/// How long a statement waits for a lock held by another connection (a backup, an operator's
/// `sqlite3` shell) before failing. Long enough to ride out a checkpoint or a short read
/// transaction; short enough that a stuck lock shows up as an error rather than a silent stall.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The most rows one [`Records::list`] returns; larger limits are clamped. Bounds the response
/// and the time the single writer thread spends on one read. Page with [`ListFilter::before`].
pub const MAX_LIST: u32 = 500;

/// Rows returned by [`Records::list`] when the filter does not say: one screen of an operator UI.
pub const DEFAULT_LIST: u32 = 50;

/// Entries kept in a call's status history. Twilio's call lifecycle has nine distinct statuses and
/// the history keeps each once, so this only bounds a row against a flood of made-up statuses.
pub const MAX_STATUS_HISTORY: usize = 32;

/// The outcome of a call whose stream has started and not yet ended: live in this process.
pub const OUTCOME_IN_PROGRESS: &str = "in-progress";

/// The outcome [`Records::open`] gives calls that were live when the previous process stopped.
pub const OUTCOME_INTERRUPTED: &str = "interrupted";

/// The reason [`Records::open`] gives calls that were live when the previous process stopped.
pub const INTERRUPTED_REASON: &str = "gateway stopped during the call (found on restart)";

/// Twilio `CallStatus` values after which the call is over.
pub const TERMINAL_STATUSES: &[&str] = &["completed", "busy", "failed", "no-answer", "canceled"];

/// The schema, one migration per entry, applied in order; migration `n` (1-based) brings
/// `PRAGMA user_version` to `n`, in the same transaction as its statements.
///
/// To change the schema, **append** a migration (say, `ALTER TABLE calls ADD COLUMN ...` or a new
/// index) and update the code that reads and writes the columns. Never edit or remove a shipped
/// entry: databases in the field have already run it and will not run it again. A database whose
/// `user_version` is above `MIGRATIONS.len()` was written by a newer build and is refused with
/// [`RecordsError::NewerSchema`].
///
/// Migration 1: the `calls` table. `created_at_ms` is the first time any event saw the call (the
/// webhook's creation time when there was one); the list order and its indexes use it. JSON
/// columns are TEXT: `task` (an object), `transcript`, `turn_latency` and `status_history`
/// (arrays). `from_addr`/`to_addr` hold Twilio's `From`/`To` (E.164 numbers, or `client:`/`sip:`
/// addresses).
pub const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE calls (
        call_sid           TEXT PRIMARY KEY NOT NULL,
        direction          TEXT,
        from_addr          TEXT,
        to_addr            TEXT,
        agent              TEXT,
        plugin             TEXT,
        stream_sid         TEXT,
        status             TEXT,
        outcome            TEXT,
        reason             TEXT,
        task               TEXT,
        created_at_ms      INTEGER NOT NULL,
        started_at_ms      INTEGER,
        answered_at_ms     INTEGER,
        ended_at_ms        INTEGER,
        status_ended_at_ms INTEGER,
        duration_s         INTEGER,
        frames_in          INTEGER,
        frames_out         INTEGER,
        first_audio_ms     INTEGER,
        transcript         TEXT NOT NULL DEFAULT '[]',
        turn_latency       TEXT NOT NULL DEFAULT '[]',
        status_history     TEXT NOT NULL DEFAULT '[]',
        updated_at_ms      INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX calls_by_created ON calls (created_at_ms DESC, call_sid DESC);
    CREATE INDEX calls_by_agent ON calls (agent, created_at_ms DESC, call_sid DESC);
",
    "
    ALTER TABLE calls ADD COLUMN failure_kind TEXT;
",
    "
    ALTER TABLE calls ADD COLUMN callback_url TEXT;
    CREATE TABLE callbacks (
        id              TEXT PRIMARY KEY NOT NULL,
        call_sid        TEXT NOT NULL,
        url             TEXT NOT NULL,
        body            TEXT NOT NULL,
        created_at_ms   INTEGER NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms INTEGER NOT NULL,
        delivered_at_ms INTEGER,
        failed_at_ms    INTEGER,
        last_error      TEXT
    ) STRICT;
    CREATE INDEX callbacks_due ON callbacks (next_attempt_ms)
        WHERE delivered_at_ms IS NULL AND failed_at_ms IS NULL;
",
    "
    ALTER TABLE calls ADD COLUMN result TEXT;
",
    "
    ALTER TABLE calls ADD COLUMN instance TEXT;
    CREATE TABLE tasks (
        id            TEXT PRIMARY KEY NOT NULL,
        task          TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX tasks_by_created ON tasks (created_at_ms);
    CREATE TABLE rate_buckets (
        key    TEXT PRIMARY KEY NOT NULL,
        tat_us INTEGER NOT NULL
    ) STRICT;
",
];

pub mod outbox;
pub use outbox::{Attempt, PendingCallback};
mod postgres;
mod postgres_queries;
pub mod shared;
mod sqlite;
pub use postgres::{Fleet, HELD_WRITES, check_url as check_postgres_url};
pub use shared::{RateVerdict, TASK_TTL_MS};

/// Why a call records operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    /// The database could not be opened or set up (WAL, busy timeout, recovery).
    #[error("cannot open call records database {}: {source}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// A migration failed; it was rolled back and the schema is at `version - 1`.
    #[error("call records database {}: migration {version} failed: {source}", path.display())]
    Migrate {
        /// The database file.
        path: PathBuf,
        /// The migration that failed (1-based, the `user_version` it would have set).
        version: u32,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// A statement failed while serving a command.
    #[error("call records database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database was written by a newer build (its `user_version` is above the migrations
    /// this build knows); it was left untouched.
    #[error(
        "call records database has schema version {found}, newer than this build knows ({known}); \
         refusing to touch it"
    )]
    NewerSchema {
        /// The database's `user_version`.
        found: u32,
        /// `MIGRATIONS.len()`.
        known: u32,
    },
    /// The writer thread is gone (it stopped or panicked); nothing more can be recorded.
    #[error("call records writer has stopped")]
    Closed,
    /// The writer thread could not be started.
    #[error("cannot start the call records writer thread: {0}")]
    Thread(#[source] std::io::Error),
    /// A list filter is malformed: an unknown key, a bad number, an unknown cursor.
    #[error("bad call list filter: {0}")]
    BadFilter(String),
    /// A value could not be encoded as JSON for a JSON column.
    #[error("cannot encode a call record column as JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// `[records] url` is not a PostgreSQL URL this driver understands.
    #[error("bad [records] url: {0}")]
    BadUrl(String),
    /// A PostgreSQL statement failed, or the server could not be reached.
    #[error("call records database (PostgreSQL) error: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// No connection to PostgreSQL could be had (the server is down or unreachable), or an
    /// operation on it timed out. Writes are held and retried; reads fail with this.
    #[error("call records database unavailable: {0}")]
    Unavailable(String),
    /// [`MAX_TASKS`](crate::call::task::MAX_PENDING_TASKS) outbound tasks are waiting.
    #[error("too many outbound calls waiting to be answered ({0})")]
    TooManyTasks(usize),
}

/// A call the voice webhook (or the outbound-call API) created.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NewCall {
    /// Twilio's `CallSid`.
    pub call_sid: String,
    /// Twilio's `Direction`: `inbound`, `outbound-api`, `outbound-dial`.
    pub direction: Option<String>,
    /// Twilio's `From`: an E.164 number, or a `client:`/`sip:` address.
    pub from: Option<String>,
    /// Twilio's `To`, same forms as `from`.
    pub to: Option<String>,
    /// The agent routing chose. A stream's agent, when it names one, takes precedence.
    pub agent: Option<String>,
    /// Twilio's `CallStatus` at the webhook (`ringing`, `queued`, ...); recorded in the history
    /// at `created_at_ms`.
    pub status: Option<String>,
    /// The task of an outbound call, as given to the API (any JSON).
    pub task: Option<serde_json::Value>,
    /// Where to POST the call's record when it ends (`POST /calls`'s `callback_url`); see
    /// [`outbox`].
    pub callback_url: Option<String>,
    /// When the call was created, unix epoch milliseconds.
    pub created_at_ms: i64,
}

/// A Media Stream started for a call: the call is live in this process.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamStarted {
    /// Twilio's `CallSid`.
    pub call_sid: String,
    /// Twilio's `StreamSid`.
    pub stream_sid: String,
    /// The agent answering the call.
    pub agent: Option<String>,
    /// The plugin running the agent.
    pub plugin: Option<String>,
    /// Twilio's `From`, if the stream's parameters carried it.
    pub from: Option<String>,
    /// Twilio's `To`, if the stream's parameters carried it.
    pub to: Option<String>,
    /// When the stream's `start` message arrived, unix epoch milliseconds.
    pub started_at_ms: i64,
}

/// A call's stream ended, with what the gateway saw of it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CallEnd {
    /// Twilio's `CallSid`.
    pub call_sid: String,
    /// When the stream ended, unix epoch milliseconds.
    pub ended_at_ms: i64,
    /// How the call ended: `completed`, `hung-up`, `transferred`, `failed`, `interrupted`, ...
    pub outcome: String,
    /// Why, in free text for operators.
    pub reason: String,
    /// When a plugin failed (ending the call, or at its `hangup`): what kind of failure,
    /// `crate::plugin::SessionError::kind` (`trap`, `time`, `cpu`, `memory`, …).
    pub failure_kind: Option<String>,
    /// The conversation, turn by turn.
    pub transcript: Vec<TranscriptTurn>,
    /// Timings of each agent turn.
    pub turn_latency: Vec<TurnLatency>,
    /// `media` frames received from Twilio (20 ms of audio each).
    pub frames_in: u64,
    /// `media` frames sent to Twilio.
    pub frames_out: u64,
    /// Milliseconds from the stream's start to the first audio sent to the caller.
    pub first_audio_ms: Option<u64>,
    /// What the agent's `record_result` stored (schema-valid), if it did.
    pub result: Option<serde_json::Value>,
}

/// One turn of a call's conversation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranscriptTurn {
    /// Who spoke: `caller` or `agent`.
    pub side: String,
    /// What was said (for an interrupted agent turn, what the caller heard).
    pub text: String,
    /// For an agent turn cut short by barge-in: milliseconds of it the caller heard.
    pub heard_ms: Option<u64>,
    /// A `tool` turn: the call, its result (both truncated) and its latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<crate::tools::ToolTrace>,
}

/// Timings of one agent turn, in milliseconds from the end of the caller's speech.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnLatency {
    /// → the STT's final transcript.
    pub stt_final_ms: Option<u64>,
    /// → the LLM's first text.
    pub llm_first_text_ms: Option<u64>,
    /// → the TTS's first audio.
    pub tts_first_audio_ms: Option<u64>,
    /// → the first audio queued for the caller.
    pub first_audio_out_ms: Option<u64>,
    /// The turn-taking's decision time, from the caller's last speech frame (counted before
    /// the figures above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpointing_ms: Option<u64>,
    /// The caller's speech as the detector heard it, onset to last speech frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speech_ms: Option<u64>,
}

/// A Twilio status callback.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatusUpdate {
    /// Twilio's `CallSid`.
    pub call_sid: String,
    /// Twilio's `CallStatus`: `queued`, `initiated`, `ringing`, `in-progress`, `completed`,
    /// `busy`, `failed`, `no-answer`, `canceled`.
    pub status: String,
    /// Twilio's `CallDuration`, seconds; kept only with a terminal status.
    pub duration_s: Option<u64>,
    /// When the callback arrived, unix epoch milliseconds.
    pub at_ms: i64,
    /// Twilio's `Direction`; fills the record only if it has none.
    pub direction: Option<String>,
    /// Twilio's `From`; fills the record only if it has none.
    pub from: Option<String>,
    /// Twilio's `To`; fills the record only if it has none.
    pub to: Option<String>,
}

/// One entry of a call's status history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    /// Twilio's `CallStatus`.
    pub status: String,
    /// When it was first reported, unix epoch milliseconds.
    pub at_ms: i64,
}

/// A call as recorded. `None` means no event has told us yet.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CallRecord {
    /// Twilio's `CallSid`.
    pub call_sid: String,
    /// Twilio's `Direction`.
    pub direction: Option<String>,
    /// Twilio's `From`.
    pub from: Option<String>,
    /// Twilio's `To`.
    pub to: Option<String>,
    /// The agent that answered (or that routing chose, if no stream started).
    pub agent: Option<String>,
    /// The plugin that ran the agent.
    pub plugin: Option<String>,
    /// Twilio's `StreamSid` of the call's (latest) Media Stream.
    pub stream_sid: Option<String>,
    /// Twilio's `CallStatus`: the furthest status in the call's life reported so far.
    pub status: Option<String>,
    /// The gateway's view: `in-progress` while the stream runs, then [`CallEnd::outcome`].
    pub outcome: Option<String>,
    /// Why the call ended, free text.
    pub reason: Option<String>,
    /// What kind of plugin failure, if one ended the call or happened at its end.
    pub failure_kind: Option<String>,
    /// The outbound call's task.
    pub task: Option<serde_json::Value>,
    /// What the agent recorded with `record_result`.
    pub result: Option<serde_json::Value>,
    /// First time any event saw the call, unix epoch milliseconds.
    pub created_at_ms: i64,
    /// When the (first) stream started, unix epoch milliseconds.
    pub started_at_ms: Option<i64>,
    /// When Twilio first reported `in-progress`, unix epoch milliseconds.
    pub answered_at_ms: Option<i64>,
    /// When the stream ended, unix epoch milliseconds.
    pub ended_at_ms: Option<i64>,
    /// When Twilio first reported a terminal status, unix epoch milliseconds.
    pub status_ended_at_ms: Option<i64>,
    /// Twilio's `CallDuration`, seconds.
    pub duration_s: Option<u64>,
    /// `media` frames received from Twilio; known once the call ended.
    pub frames_in: Option<u64>,
    /// `media` frames sent to Twilio; known once the call ended.
    pub frames_out: Option<u64>,
    /// Milliseconds from the stream's start to the first audio sent to the caller.
    pub first_audio_ms: Option<u64>,
    /// The conversation, turn by turn.
    pub transcript: Vec<TranscriptTurn>,
    /// Timings of each agent turn.
    pub turn_latency: Vec<TurnLatency>,
    /// Each status Twilio reported, once, oldest first.
    pub status_history: Vec<StatusChange>,
    /// The gateway instance that carried the call's (latest) stream (`[records] instance`).
    pub instance: Option<String>,
    /// Last write to the row (by this gateway's clock), unix epoch milliseconds.
    pub updated_at_ms: i64,
}

/// Which calls [`Records::list`] returns: all given conditions hold. Newest first (by
/// `created_at_ms`, ties by `call_sid`, descending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListFilter {
    /// Only calls answered by this agent.
    pub agent: Option<String>,
    /// Only calls whose Twilio status is this.
    pub status: Option<String>,
    /// Only calls with this outcome.
    pub outcome: Option<String>,
    /// Only calls with this Twilio direction.
    pub direction: Option<String>,
    /// Only calls created at or after this time, unix epoch milliseconds.
    pub since_ms: Option<i64>,
    /// Only calls created before this time, unix epoch milliseconds.
    pub until_ms: Option<i64>,
    /// At most this many rows; clamped to `1..=MAX_LIST`. Default [`DEFAULT_LIST`].
    pub limit: u32,
    /// A `call_sid` from a previous page: only calls listed after it (older ones).
    pub before: Option<String>,
}

impl Default for ListFilter {
    fn default() -> Self {
        Self {
            agent: None,
            status: None,
            outcome: None,
            direction: None,
            since_ms: None,
            until_ms: None,
            limit: DEFAULT_LIST,
            before: None,
        }
    }
}

/// The query keys [`ListFilter::from_query`] accepts.
const FILTER_KEYS: &str = "agent, status, outcome, direction, since, until, limit, before";

impl ListFilter {
    /// Parses an operator API query string's pairs: `agent`, `status`, `outcome`, `direction`,
    /// `since` and `until` (unix epoch milliseconds), `limit`, `before` (a `call_sid`). A key with
    /// an empty value is ignored, as if absent.
    ///
    /// # Errors
    /// [`RecordsError::BadFilter`] on an unknown or repeated key, a value that is not a whole
    /// number where one is needed, or `since` not before `until`.
    pub fn from_query(pairs: &[(String, String)]) -> Result<ListFilter, RecordsError> {
        let mut filter = ListFilter::default();
        let mut seen: Vec<&str> = Vec::new();
        for (key, value) in pairs {
            if seen.contains(&key.as_str()) {
                return Err(RecordsError::BadFilter(format!(
                    "{key:?} given more than once"
                )));
            }
            seen.push(key);
            let value = value.trim();
            let text = || (!value.is_empty()).then(|| value.to_owned());
            match key.as_str() {
                "agent" => filter.agent = text(),
                "status" => filter.status = text(),
                "outcome" => filter.outcome = text(),
                "direction" => filter.direction = text(),
                "before" => filter.before = text(),
                "since" => filter.since_ms = parse_ms(key, value)?,
                "until" => filter.until_ms = parse_ms(key, value)?,
                "limit" if value.is_empty() => {}
                "limit" => {
                    let limit: u64 = value.parse().map_err(|_| {
                        RecordsError::BadFilter(format!(
                            "limit: expected a whole number of rows, got {value:?}"
                        ))
                    })?;
                    filter.limit = u32::try_from(limit).unwrap_or(u32::MAX);
                }
                _ => {
                    return Err(RecordsError::BadFilter(format!(
                        "unknown key {key:?}; expected one of {FILTER_KEYS}"
                    )));
                }
            }
        }
        filter.validate()?;
        Ok(filter)
    }

    /// The number of rows a list returns at most: `limit` clamped to `1..=MAX_LIST`.
    pub fn effective_limit(&self) -> u32 {
        self.limit.clamp(1, MAX_LIST)
    }

    fn validate(&self) -> Result<(), RecordsError> {
        if let (Some(since), Some(until)) = (self.since_ms, self.until_ms)
            && since >= until
        {
            return Err(RecordsError::BadFilter(format!(
                "since ({since}) must be before until ({until})"
            )));
        }
        Ok(())
    }
}

fn parse_ms(key: &str, value: &str) -> Result<Option<i64>, RecordsError> {
    if value.is_empty() {
        return Ok(None);
    }
    value.parse().map(Some).map_err(|_| {
        RecordsError::BadFilter(format!(
            "{key}: expected unix epoch milliseconds, got {value:?}"
        ))
    })
}

/// What [`Records::open`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// Calls that were live when the previous process stopped, now marked `interrupted`.
    pub interrupted: u64,
    /// The schema version (`user_version`) after migrations.
    pub schema_version: u32,
}

/// A command's answer channel.
type Reply<T> = oneshot::Sender<Result<T, RecordsError>>;

/// What the writer thread serves.
enum Command {
    Created(NewCall, Reply<()>),
    Started(StreamStarted, Reply<()>),
    Ended(CallEnd, Reply<()>),
    Status(StatusUpdate, Reply<()>),
    Get(String, Reply<Option<CallRecord>>),
    List(ListFilter, Reply<Vec<CallRecord>>),
    DueCallbacks(u32, Reply<(Vec<PendingCallback>, Option<i64>)>),
    CallbackAttempted(String, Attempt, Reply<()>),
    PutTask(shared::NewTask, Reply<()>),
    TakeTask(String, Reply<Option<String>>),
    RateTake(shared::RateRequest, Reply<RateVerdict>),
    Flush(Reply<()>),
}

/// The call records store: a handle to its writer thread. Cheap to clone; the thread (and the
/// database connection) stops when the last clone is dropped, after serving what was sent.
#[derive(Debug, Clone)]
pub struct Records {
    commands: mpsc::Sender<Command>,
    /// Which backend serves the commands, for logs: `"sqlite"` or `"postgres"`.
    backend: &'static str,
}

impl Records {
    /// Opens (creating if needed; the parent directory must exist) the database at `path`, sets
    /// WAL mode, applies pending [`MIGRATIONS`], then marks every call that was live when the
    /// previous process stopped as `interrupted` (ended now). Spawns the writer thread.
    ///
    /// Blocks on disk I/O: call it at startup (or from `spawn_blocking`).
    ///
    /// # Errors
    /// [`RecordsError::NewerSchema`] if the database is from a newer build (left untouched);
    /// [`RecordsError::Open`] if it cannot be opened, is not a database, or cannot be set up;
    /// [`RecordsError::Migrate`] if a migration fails; [`RecordsError::Thread`] if the writer
    /// thread cannot be spawned.
    pub fn open(path: &Path) -> Result<(Records, Recovery), RecordsError> {
        let at = |source| RecordsError::Open {
            path: path.to_owned(),
            source,
        };
        let mut conn = Connection::open(path).map_err(at)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(at)?;
        check_version(user_version(&conn).map_err(at)?)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(at)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), %mode, "call records database is not in WAL mode");
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(at)?;
        let schema_version = migrate(&mut conn, path)?;
        let interrupted = recover(&conn, now_ms()).map_err(at)?;
        check_statements(&conn).map_err(at)?;
        tracing::info!(path = %path.display(), schema_version, interrupted, "call records opened");
        let records = spawn(conn, instance_name(None))?;
        Ok((
            records,
            Recovery {
                interrupted,
                schema_version,
            },
        ))
    }

    /// Opens a fresh in-memory database (for tests): migrated, empty, gone when dropped.
    ///
    /// # Errors
    /// As [`Records::open`], except that there is nothing to refuse or recover.
    pub fn open_in_memory() -> Result<Records, RecordsError> {
        let path = Path::new(":memory:");
        let at = |source| RecordsError::Open {
            path: path.to_owned(),
            source,
        };
        let mut conn = Connection::open_in_memory().map_err(at)?;
        migrate(&mut conn, path)?;
        check_statements(&conn).map_err(at)?;
        spawn(conn, instance_name(None))
    }

    /// Connects to the PostgreSQL database at `url` (`postgres://user:password@host:port/db`,
    /// TLS when it says `sslmode=require`), applies pending migrations (a database from a newer
    /// build is refused untouched), and starts the writer task and this instance's heartbeat
    /// (see [`Fleet`]). Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`RecordsError::BadUrl`], [`RecordsError::Unavailable`] if the server cannot be reached
    /// (within a few seconds), [`RecordsError::NewerSchema`], [`RecordsError::Postgres`] if a
    /// migration fails (rolled back).
    pub async fn open_postgres(
        url: &str,
        fleet: Fleet,
    ) -> Result<(Records, Recovery), RecordsError> {
        let (commands, recovery) = postgres::open(url, fleet).await?;
        Ok((
            Records {
                commands,
                backend: "postgres",
            },
            recovery,
        ))
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Records a call created by the voice webhook or the outbound-call API.
    ///
    /// `direction`, `from`, `to` and `task`, when given, replace earlier values (a status
    /// callback's); `agent` fills the record only if no stream has named one; `status`, if given,
    /// joins the status history at `created_at_ms`.
    ///
    /// # Errors
    /// [`RecordsError::Closed`] if the writer is gone; [`RecordsError::Sqlite`] or
    /// [`RecordsError::Json`] if the write failed (nothing was written).
    pub async fn call_created(&self, call: NewCall) -> Result<(), RecordsError> {
        self.request(|reply| Command::Created(call, reply)).await
    }

    /// Records that a call's Media Stream started: the outcome becomes `in-progress` (live in this
    /// process) unless the call already ended after this start. Creates the row if no other event
    /// has. The stream's `agent`, `plugin`, `from` and `to` replace earlier values when given.
    ///
    /// A stream that starts after the call's recorded end (a second stream for the same call)
    /// makes the call live again: its end and reason are cleared until that stream ends.
    ///
    /// # Errors
    /// As [`Records::call_created`].
    pub async fn stream_started(&self, started: StreamStarted) -> Result<(), RecordsError> {
        self.request(|reply| Command::Started(started, reply)).await
    }

    /// Like [`Records::stream_started`], but queues the write without waiting, for a caller that
    /// must not stall (a call's media loop). A failed write is logged, not returned.
    ///
    /// Writes queued from one task are served in order. If the queue is full, a spawned task sends
    /// this one when there is room, possibly behind that call's later writes: harmless, since a
    /// start older than the call's recorded end does not make the call live again. Outside a
    /// tokio runtime a write that finds the queue full is dropped, with a warning.
    pub fn stream_started_nowait(&self, started: StreamStarted) {
        // Nobody waits for the answer; `answer` logs a failure instead.
        let (reply, _) = oneshot::channel();
        let call_sid = started.call_sid.clone();
        match self.commands.try_send(Command::Started(started, reply)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(command)) => {
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => {
                        let commands = self.commands.clone();
                        runtime.spawn(async move {
                            if commands.send(command).await.is_err() {
                                tracing::warn!(%call_sid, "call records writer has stopped; stream start not recorded");
                            }
                        });
                    }
                    Err(_) => {
                        tracing::warn!(%call_sid, "call records queue is full; stream start not recorded");
                    }
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::warn!(%call_sid, "call records writer has stopped; stream start not recorded");
            }
        }
    }

    /// Records that a call's stream ended, with its outcome, transcript, latencies and counts. If
    /// the row already has a later end, this one is stale and ignored.
    ///
    /// # Errors
    /// As [`Records::call_created`].
    pub async fn call_ended(&self, ended: CallEnd) -> Result<(), RecordsError> {
        self.request(|reply| Command::Ended(ended, reply)).await
    }

    /// Records a Twilio status callback.
    ///
    /// The status joins the call's history (each status once, at its earliest time, oldest
    /// first). The record's `status` is the furthest one in the call's life (`queued` <
    /// `initiated` < `ringing` < `in-progress` < terminal; an unknown status ranks with
    /// `initiated`), so a late `ringing` never replaces `completed`. `answered_at_ms` is the time
    /// of `in-progress`; `status_ended_at_ms` that of the first terminal status, which also sets
    /// `duration_s` when the callback carries it.
    ///
    /// # Errors
    /// As [`Records::call_created`].
    pub async fn status(&self, update: StatusUpdate) -> Result<(), RecordsError> {
        self.request(|reply| Command::Status(update, reply)).await
    }

    /// The record of `call_sid`, if any event has seen the call.
    ///
    /// # Errors
    /// [`RecordsError::Closed`] if the writer is gone; [`RecordsError::Sqlite`] if the read failed.
    pub async fn get(&self, call_sid: &str) -> Result<Option<CallRecord>, RecordsError> {
        let call_sid = call_sid.to_owned();
        self.request(|reply| Command::Get(call_sid, reply)).await
    }

    /// The calls matching `filter`, newest first, at most [`ListFilter::effective_limit`].
    ///
    /// # Errors
    /// [`RecordsError::BadFilter`] if `since` is not before `until` or `before` names no call;
    /// [`RecordsError::Closed`] if the writer is gone; [`RecordsError::Sqlite`] if the read failed.
    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<CallRecord>, RecordsError> {
        filter.validate()?;
        let filter = filter.clone();
        self.request(|reply| Command::List(filter, reply)).await
    }

    /// Up to `limit` callback messages due now, and when the next one after them is due (unix
    /// epoch milliseconds); see [`outbox`].
    ///
    /// # Errors
    /// The database failed, or the writer stopped.
    pub async fn due_callbacks(
        &self,
        limit: u32,
    ) -> Result<(Vec<PendingCallback>, Option<i64>), RecordsError> {
        self.request(|reply| Command::DueCallbacks(limit, reply))
            .await
    }

    /// Records how an attempt to deliver callback message `id` went.
    ///
    /// # Errors
    /// The database failed, or the writer stopped.
    pub async fn callback_attempted(&self, id: &str, attempt: Attempt) -> Result<(), RecordsError> {
        let id = id.to_string();
        self.request(|reply| Command::CallbackAttempted(id, attempt, reply))
            .await
    }

    /// Stores an outbound call's task (JSON) under `id` until its stream starts (see
    /// [`crate::call::task`]); on PostgreSQL every instance of the fleet can take it.
    ///
    /// # Errors
    /// [`RecordsError::TooManyTasks`] if too many are waiting; the database failed or is
    /// unavailable (nothing stored: the call must not be placed).
    pub async fn put_task(&self, id: &str, task: &serde_json::Value) -> Result<(), RecordsError> {
        let task = shared::NewTask {
            id: id.to_owned(),
            task: task.to_string(),
            now_ms: now_ms(),
        };
        self.request(|reply| Command::PutTask(task, reply)).await
    }

    /// Takes (and deletes) the task stored under `id`: `None` if there is none, it was taken,
    /// or it is older than [`TASK_TTL_MS`].
    ///
    /// # Errors
    /// The database failed or is unavailable.
    pub async fn take_task(&self, id: &str) -> Result<Option<serde_json::Value>, RecordsError> {
        let id = id.to_owned();
        let json = self.request(|reply| Command::TakeTask(id, reply)).await?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// Takes one request from the token bucket `key` (GCRA: `rate_per_minute`, bursts of up to
    /// `burst`), shared by every gateway on the database. `key` must not be a secret.
    ///
    /// # Errors
    /// The database failed or is unavailable (the caller falls back to a local bucket).
    pub async fn rate_take(
        &self,
        key: &str,
        rate_per_minute: u32,
        burst: u32,
    ) -> Result<RateVerdict, RecordsError> {
        let request = shared::RateRequest::new(key, rate_per_minute, burst);
        self.request(|reply| Command::RateTake(request, reply))
            .await
    }

    /// Waits until every command sent before it (from any clone) has been served, so every
    /// write sent before it is committed. On PostgreSQL, writes held during an outage are
    /// retried for up to [`postgres::FLUSH_WAIT`](HELD_WRITES) before this gives up.
    ///
    /// # Errors
    /// [`RecordsError::Closed`] if the writer is gone; [`RecordsError::Unavailable`] if held
    /// writes could not be written in time.
    pub async fn flush(&self) -> Result<(), RecordsError> {
        self.request(Command::Flush).await
    }

    async fn request<T>(
        &self,
        command: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<T, RecordsError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| RecordsError::Closed)?;
        answer.await.map_err(|_| RecordsError::Closed)?
    }
}

/// The current time as unix epoch milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Whether `status` (a Twilio `CallStatus`) means the call is over.
pub fn is_terminal_status(status: &str) -> bool {
    TERMINAL_STATUSES.contains(&status)
}

/// How far into a call's life `status` is; see [`Records::status`].
fn status_rank(status: &str) -> u8 {
    match status {
        "queued" => 0,
        "ringing" => 2,
        "in-progress" => 3,
        s if is_terminal_status(s) => 4,
        // "initiated", and anything Twilio adds later.
        _ => 1,
    }
}

/// Adds `status` at `at_ms` to `history`: each status once, at its earliest time, oldest first.
fn merge_status(history: &mut Vec<StatusChange>, status: &str, at_ms: i64) {
    if let Some(known) = history.iter_mut().find(|c| c.status == status) {
        known.at_ms = known.at_ms.min(at_ms);
    } else if history.len() < MAX_STATUS_HISTORY {
        history.push(StatusChange {
            status: status.to_owned(),
            at_ms,
        });
    } else {
        tracing::warn!(%status, "call status history is full; status not recorded");
    }
    history.sort_by_key(|c| (c.at_ms, status_rank(&c.status)));
}

/// A status callback merged into a call's stored history: the columns both backends write.
struct MergedStatus {
    status: Option<String>,
    /// The merged history, as JSON.
    status_history: String,
    answered_at_ms: Option<i64>,
    status_ended_at_ms: Option<i64>,
    duration_s: Option<i64>,
}

impl MergedStatus {
    /// Merges `update` into `stored` (the row's `status_history` JSON, if the row exists); see
    /// [`Records::status`].
    fn new(stored: Option<String>, update: &StatusUpdate) -> Result<MergedStatus, RecordsError> {
        let mut history: Vec<StatusChange> = stored
            .map(|json| parse_list(&json, &update.call_sid, "status_history"))
            .unwrap_or_default();
        merge_status(&mut history, &update.status, update.at_ms);
        let at = |wanted: &dyn Fn(&str) -> bool| {
            history.iter().find(|c| wanted(&c.status)).map(|c| c.at_ms)
        };
        Ok(MergedStatus {
            status: current_status(&history).map(|c| c.status.clone()),
            answered_at_ms: at(&|s| s == "in-progress"),
            status_ended_at_ms: at(&is_terminal_status),
            duration_s: update
                .duration_s
                .filter(|_| is_terminal_status(&update.status))
                .map(to_sql_int),
            status_history: serde_json::to_string(&history)?,
        })
    }
}

/// The furthest status in `history` (ties: the later one).
fn current_status(history: &[StatusChange]) -> Option<&StatusChange> {
    history
        .iter()
        .max_by_key(|c| (status_rank(&c.status), c.at_ms))
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

fn known_version() -> u32 {
    u32::try_from(MIGRATIONS.len()).unwrap_or(u32::MAX)
}

/// Refuses a database from a newer build (or with a negative `user_version`: not ours).
fn check_version(found: i64) -> Result<u32, RecordsError> {
    let known = known_version();
    match u32::try_from(found) {
        Ok(found) if found <= known => Ok(found),
        Ok(found) => Err(RecordsError::NewerSchema { found, known }),
        Err(_) => Err(RecordsError::NewerSchema {
            found: u32::MAX,
            known,
        }),
    }
}

/// Applies pending migrations, each in one `IMMEDIATE` transaction that re-reads the version (so
/// two processes opening the same file at once apply each migration once). Returns the version.
fn migrate(conn: &mut Connection, path: &Path) -> Result<u32, RecordsError> {
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let version = u32::try_from(index + 1).unwrap_or(u32::MAX);
        let failed = |source| RecordsError::Migrate {
            path: path.to_owned(),
            version,
            source,
        };
        if check_version(user_version(conn).map_err(failed)?)? >= version {
            continue;
        }
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failed)?;
        if check_version(user_version(&tx).map_err(failed)?)? >= version {
            continue;
        }
        tx.execute_batch(sql).map_err(failed)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(failed)?;
        tx.commit().map_err(failed)?;
        tracing::info!(path = %path.display(), version, "applied call records migration");
    }
    Ok(known_version())
}

/// Marks calls still `in-progress` (live when the previous process stopped) as interrupted.
fn recover(conn: &Connection, now_ms: i64) -> rusqlite::Result<u64> {
    let marked = conn.execute(
        "UPDATE calls SET outcome = :interrupted, reason = :reason, ended_at_ms = :now,
             updated_at_ms = :now
         WHERE outcome = :in_progress",
        named_params! {
            ":interrupted": OUTCOME_INTERRUPTED,
            ":reason": INTERRUPTED_REASON,
            ":now": now_ms,
            ":in_progress": OUTCOME_IN_PROGRESS,
        },
    )?;
    Ok(u64::try_from(marked).unwrap_or(u64::MAX))
}

/// Prepares every fixed statement once, so a statement the schema cannot serve fails `open`
/// rather than the first call.
fn check_statements(conn: &Connection) -> rusqlite::Result<()> {
    for sql in [
        SQL_CREATED,
        SQL_STARTED,
        SQL_ENDED,
        SQL_STATUS,
        SQL_HISTORY,
        SQL_GET,
        SQL_CURSOR,
    ] {
        conn.prepare(sql)?;
    }
    Ok(())
}

fn spawn(conn: Connection, instance: String) -> Result<Records, RecordsError> {
    let (commands, receiver) = mpsc::channel(RECORDS_QUEUE);
    std::thread::Builder::new()
        .name("call-records".to_owned())
        .spawn(move || serve(conn, receiver, instance))
        .map_err(RecordsError::Thread)?;
    Ok(Records {
        commands,
        backend: "sqlite",
    })
}

/// This instance's name in records: `configured`, else `<hostname>-<pid>-<4 hex digits>`.
pub fn instance_name(configured: Option<&str>) -> String {
    if let Some(name) = configured.map(str::trim).filter(|n| !n.is_empty()) {
        return name.to_owned();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "switchboard".to_owned());
    format!(
        "{host}-{}-{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

/// The columns [`read_record`] reads, as a literal for `concat!`.
macro_rules! columns {
    () => {
        "call_sid, direction, from_addr, to_addr, agent, plugin, stream_sid, status, outcome,
        reason, failure_kind, task, created_at_ms, started_at_ms, answered_at_ms, ended_at_ms,
        status_ended_at_ms, duration_s, frames_in, frames_out, first_audio_ms, transcript,
        turn_latency, status_history, updated_at_ms, result, instance"
    };
}
pub(crate) use columns;

/// `value` as an SQLite integer; counts beyond `i64::MAX` (never in practice) saturate.
fn to_sql_int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// An SQLite integer as a count; a negative one (a corrupt row) reads as unknown.
fn from_sql_int(value: Option<i64>) -> Option<u64> {
    value.and_then(|v| u64::try_from(v).ok())
}

/// Parses a JSON array column; a corrupt one reads as empty, with a warning, so one bad row
/// does not fail a whole list.
fn parse_list<T: serde::de::DeserializeOwned>(json: &str, call_sid: &str, column: &str) -> Vec<T> {
    serde_json::from_str(json).unwrap_or_else(|error| {
        tracing::warn!(%call_sid, column, %error, "corrupt JSON in call record; reading it as empty");
        Vec::new()
    })
}

#[cfg(test)]
mod tests;
