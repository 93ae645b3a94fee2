//! The statements of the PostgreSQL backend: the same upserts, merges and reads as the SQLite
//! writer ([`super::Db`]), in PostgreSQL's dialect (`$n` parameters, `LEAST`/`GREATEST`,
//! `FOR UPDATE` where two instances may write one row at once).
//!
//! Every write runs inside the writer's transaction, so a batch commits whole or not at all.

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Transaction};

use super::shared::{NewTask, RateRequest, RateVerdict, TASK_TTL_MS};
use super::{
    Attempt, CallEnd, CallRecord, ListFilter, MergedStatus, NewCall, OUTCOME_IN_PROGRESS,
    PendingCallback, RecordsError, StatusUpdate, StreamStarted, columns, from_sql_int,
    is_terminal_status, now_ms, outbox, parse_list, to_sql_int,
};
use crate::call::task::MAX_PENDING_TASKS;

/// How long a claimed callback message is hidden from other instances' deliverers: the
/// claimant records its attempt well within it; if it dies, another instance retries after it.
pub const CALLBACK_LEASE_MS: i64 = 60_000;

const SQL_CREATED: &str = "
    INSERT INTO calls (call_sid, direction, from_addr, to_addr, agent, task, callback_url,
        created_at_ms, updated_at_ms)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
    ON CONFLICT (call_sid) DO UPDATE SET
        callback_url = COALESCE(excluded.callback_url, calls.callback_url),
        direction = COALESCE(excluded.direction, calls.direction),
        from_addr = COALESCE(excluded.from_addr, calls.from_addr),
        to_addr = COALESCE(excluded.to_addr, calls.to_addr),
        agent = COALESCE(calls.agent, excluded.agent),
        task = COALESCE(excluded.task, calls.task),
        created_at_ms = LEAST(calls.created_at_ms, excluded.created_at_ms),
        updated_at_ms = excluded.updated_at_ms";

const SQL_STARTED: &str = "
    INSERT INTO calls (call_sid, stream_sid, agent, plugin, from_addr, to_addr, started_at_ms,
        outcome, created_at_ms, updated_at_ms, instance)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $7, $9, $10)
    ON CONFLICT (call_sid) DO UPDATE SET
        stream_sid = excluded.stream_sid,
        instance = excluded.instance,
        agent = COALESCE(excluded.agent, calls.agent),
        plugin = COALESCE(excluded.plugin, calls.plugin),
        from_addr = COALESCE(excluded.from_addr, calls.from_addr),
        to_addr = COALESCE(excluded.to_addr, calls.to_addr),
        started_at_ms = LEAST(COALESCE(calls.started_at_ms, excluded.started_at_ms),
            excluded.started_at_ms),
        outcome = CASE WHEN calls.ended_at_ms IS NULL OR calls.ended_at_ms < excluded.started_at_ms
            THEN excluded.outcome ELSE calls.outcome END,
        reason = CASE WHEN calls.ended_at_ms < excluded.started_at_ms THEN NULL
            ELSE calls.reason END,
        ended_at_ms = CASE WHEN calls.ended_at_ms < excluded.started_at_ms THEN NULL
            ELSE calls.ended_at_ms END,
        created_at_ms = LEAST(calls.created_at_ms, excluded.created_at_ms),
        updated_at_ms = excluded.updated_at_ms";

const SQL_ENDED: &str = "
    INSERT INTO calls (call_sid, outcome, reason, failure_kind, ended_at_ms, transcript,
        turn_latency, frames_in, frames_out, first_audio_ms, result, created_at_ms, updated_at_ms)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $5, $12)
    ON CONFLICT (call_sid) DO UPDATE SET
        result = COALESCE(excluded.result, calls.result),
        outcome = excluded.outcome,
        reason = excluded.reason,
        failure_kind = excluded.failure_kind,
        ended_at_ms = excluded.ended_at_ms,
        transcript = excluded.transcript,
        turn_latency = excluded.turn_latency,
        frames_in = excluded.frames_in,
        frames_out = excluded.frames_out,
        first_audio_ms = COALESCE(excluded.first_audio_ms, calls.first_audio_ms),
        created_at_ms = LEAST(calls.created_at_ms, excluded.created_at_ms),
        updated_at_ms = excluded.updated_at_ms
    WHERE calls.ended_at_ms IS NULL OR excluded.ended_at_ms >= calls.ended_at_ms";

/// The row a status merge locks; created bare first so two instances merging statuses of a
/// call neither has seen both lock the same row instead of both inserting.
const SQL_STATUS_ROW: &str = "
    INSERT INTO calls (call_sid, created_at_ms, updated_at_ms) VALUES ($1, $2, $3)
    ON CONFLICT (call_sid) DO NOTHING";

const SQL_HISTORY_LOCK: &str = "SELECT status_history FROM calls WHERE call_sid = $1 FOR UPDATE";

const SQL_STATUS: &str = "
    UPDATE calls SET
        direction = COALESCE(direction, $2),
        from_addr = COALESCE(from_addr, $3),
        to_addr = COALESCE(to_addr, $4),
        status = $5,
        status_history = $6,
        answered_at_ms = COALESCE($7, answered_at_ms),
        status_ended_at_ms = COALESCE($8, status_ended_at_ms),
        duration_s = COALESCE($9, duration_s),
        created_at_ms = LEAST(created_at_ms, $10),
        updated_at_ms = $11
    WHERE call_sid = $1";

const SQL_STREAMED: &str = "SELECT started_at_ms FROM calls WHERE call_sid = $1";

const SQL_GET: &str = concat!("SELECT ", columns!(), " FROM calls WHERE call_sid = $1");

const SQL_CURSOR: &str = "SELECT created_at_ms FROM calls WHERE call_sid = $1";

const SQL_CALLBACK_URL: &str =
    "SELECT callback_url FROM calls WHERE call_sid = $1 AND callback_url IS NOT NULL";

const SQL_ENQUEUE: &str = "
    INSERT INTO callbacks (id, call_sid, url, body, created_at_ms, next_attempt_ms)
    VALUES ($1, $2, $3, $4, $5, $5)
    ON CONFLICT (id) DO NOTHING";

/// Claims due messages for this instance: `SKIP LOCKED` and the lease keep two instances'
/// deliverers from sending one message at once.
const SQL_CLAIM_DUE: &str = "
    UPDATE callbacks SET next_attempt_ms = $1 + $3
    WHERE id IN (
        SELECT id FROM callbacks
        WHERE delivered_at_ms IS NULL AND failed_at_ms IS NULL AND next_attempt_ms <= $1
        ORDER BY next_attempt_ms LIMIT $2
        FOR UPDATE SKIP LOCKED)
    RETURNING id, call_sid, url, body, attempts";

const SQL_NEXT_DUE: &str = "
    SELECT MIN(next_attempt_ms) FROM callbacks
    WHERE delivered_at_ms IS NULL AND failed_at_ms IS NULL";

const SQL_UNQUEUED: &str = "
    SELECT call_sid FROM calls
    WHERE callback_url IS NOT NULL AND ended_at_ms IS NOT NULL
      AND call_sid NOT IN (SELECT call_sid FROM callbacks)";

/// A write the backend holds until it is committed.
#[derive(Debug)]
pub(super) enum Write {
    Created(NewCall),
    Started(StreamStarted),
    Ended(CallEnd),
    Status(StatusUpdate),
    CallbackAttempted(String, Attempt),
}

impl Write {
    /// The call (or callback message) the write is about, for logs.
    pub(super) fn subject(&self) -> &str {
        match self {
            Write::Created(c) => &c.call_sid,
            Write::Started(s) => &s.call_sid,
            Write::Ended(e) => &e.call_sid,
            Write::Status(u) => &u.call_sid,
            Write::CallbackAttempted(id, _) => id,
        }
    }

    /// Applies the write inside `tx`. `instance` is this gateway's name.
    pub(super) async fn apply(
        &self,
        tx: &Transaction<'_>,
        instance: &str,
    ) -> Result<(), RecordsError> {
        match self {
            Write::Created(call) => created(tx, call).await,
            Write::Started(started) => {
                tx.execute(
                    SQL_STARTED,
                    &[
                        &started.call_sid,
                        &started.stream_sid,
                        &started.agent,
                        &started.plugin,
                        &started.from,
                        &started.to,
                        &started.started_at_ms,
                        &OUTCOME_IN_PROGRESS,
                        &now_ms(),
                        &instance,
                    ],
                )
                .await?;
                Ok(())
            }
            Write::Ended(ended) => call_ended(tx, ended).await,
            Write::Status(update) => status(tx, update).await,
            Write::CallbackAttempted(id, attempt) => callback_attempted(tx, id, attempt).await,
        }
    }
}

async fn created(tx: &Transaction<'_>, call: &NewCall) -> Result<(), RecordsError> {
    let task = call.task.as_ref().map(serde_json::to_string).transpose()?;
    tx.execute(
        SQL_CREATED,
        &[
            &call.call_sid,
            &call.direction,
            &call.from,
            &call.to,
            &call.agent,
            &task,
            &call.callback_url,
            &call.created_at_ms,
            &now_ms(),
        ],
    )
    .await?;
    if let Some(status) = &call.status {
        apply_status(
            tx,
            &StatusUpdate {
                call_sid: call.call_sid.clone(),
                status: status.clone(),
                duration_s: None,
                at_ms: call.created_at_ms,
                direction: None,
                from: None,
                to: None,
            },
        )
        .await?;
    }
    Ok(())
}

async fn call_ended(tx: &Transaction<'_>, ended: &CallEnd) -> Result<(), RecordsError> {
    let transcript = serde_json::to_string(&ended.transcript)?;
    let turn_latency = serde_json::to_string(&ended.turn_latency)?;
    let result = ended.result.as_ref().map(serde_json::Value::to_string);
    tx.execute(
        SQL_ENDED,
        &[
            &ended.call_sid,
            &ended.outcome,
            &ended.reason,
            &ended.failure_kind,
            &ended.ended_at_ms,
            &transcript,
            &turn_latency,
            &to_sql_int(ended.frames_in),
            &to_sql_int(ended.frames_out),
            &ended.first_audio_ms.map(to_sql_int),
            &result,
            &now_ms(),
        ],
    )
    .await?;
    enqueue_callback(tx, &ended.call_sid).await
}

async fn status(tx: &Transaction<'_>, update: &StatusUpdate) -> Result<(), RecordsError> {
    apply_status(tx, update).await?;
    if is_terminal_status(&update.status) {
        let streamed: Option<i64> = tx
            .query_opt(SQL_STREAMED, &[&update.call_sid])
            .await?
            .and_then(|row| row.get(0));
        if streamed.is_none() {
            enqueue_callback(tx, &update.call_sid).await?;
        }
    }
    Ok(())
}

/// Locks the call's row, merges `update` into its history and writes the result (see
/// [`super::Records::status`]).
async fn apply_status(tx: &Transaction<'_>, update: &StatusUpdate) -> Result<(), RecordsError> {
    let now = now_ms();
    tx.execute(SQL_STATUS_ROW, &[&update.call_sid, &update.at_ms, &now])
        .await?;
    let stored: Option<String> = tx
        .query_opt(SQL_HISTORY_LOCK, &[&update.call_sid])
        .await?
        .map(|row| row.get(0));
    let MergedStatus {
        status,
        status_history,
        answered_at_ms,
        status_ended_at_ms,
        duration_s,
    } = MergedStatus::new(stored, update)?;
    tx.execute(
        SQL_STATUS,
        &[
            &update.call_sid,
            &update.direction,
            &update.from,
            &update.to,
            &status,
            &status_history,
            &answered_at_ms,
            &status_ended_at_ms,
            &duration_s,
            &update.at_ms,
            &now,
        ],
    )
    .await?;
    Ok(())
}

/// Queues the callback of `call_sid` if it has a callback URL and none is queued yet.
pub(super) async fn enqueue_callback(
    tx: &Transaction<'_>,
    call_sid: &str,
) -> Result<(), RecordsError> {
    let url: Option<String> = tx
        .query_opt(SQL_CALLBACK_URL, &[&call_sid])
        .await?
        .and_then(|row| row.get(0));
    let Some(url) = url else {
        return Ok(());
    };
    let Some(row) = tx.query_opt(SQL_GET, &[&call_sid]).await? else {
        return Ok(());
    };
    let record = read_record(&row)?;
    let now = now_ms();
    let body = outbox::message_body(&record, now)?;
    tx.execute(
        SQL_ENQUEUE,
        &[&format!("msg_{call_sid}"), &call_sid, &url, &body, &now],
    )
    .await?;
    Ok(())
}

/// Queues the callbacks of calls that ended without one (see [`outbox`]).
pub(super) async fn sweep_callbacks(tx: &Transaction<'_>) -> Result<(), RecordsError> {
    let calls: Vec<String> = tx
        .query(SQL_UNQUEUED, &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    for call_sid in calls {
        enqueue_callback(tx, &call_sid).await?;
    }
    Ok(())
}

async fn callback_attempted(
    tx: &Transaction<'_>,
    id: &str,
    attempt: &Attempt,
) -> Result<(), RecordsError> {
    match attempt {
        Attempt::Delivered => {
            tx.execute(
                "UPDATE callbacks SET delivered_at_ms = $2, attempts = attempts + 1,
                     last_error = NULL WHERE id = $1",
                &[&id, &now_ms()],
            )
            .await?
        }
        Attempt::Retry { at_ms, error } => {
            tx.execute(
                "UPDATE callbacks SET attempts = attempts + 1, next_attempt_ms = $2,
                     last_error = $3 WHERE id = $1",
                &[&id, at_ms, error],
            )
            .await?
        }
        Attempt::GaveUp { error } => {
            tx.execute(
                "UPDATE callbacks SET attempts = attempts + 1, failed_at_ms = $2,
                     last_error = $3 WHERE id = $1",
                &[&id, &now_ms(), error],
            )
            .await?
        }
    };
    Ok(())
}

/// The record of `call_sid`.
pub(super) async fn get(
    client: &Client,
    call_sid: &str,
) -> Result<Option<CallRecord>, RecordsError> {
    client
        .query_opt(SQL_GET, &[&call_sid])
        .await?
        .map(|row| read_record(&row))
        .transpose()
}

/// The calls matching `filter`, newest first.
pub(super) async fn list(
    client: &Client,
    filter: &ListFilter,
) -> Result<Vec<CallRecord>, RecordsError> {
    let cursor: Option<(i64, &String)> = match &filter.before {
        None => None,
        Some(before) => {
            let created: Option<i64> = client
                .query_opt(SQL_CURSOR, &[before])
                .await?
                .map(|row| row.get(0));
            let created = created
                .ok_or_else(|| RecordsError::BadFilter(format!("before: no call {before:?}")))?;
            Some((created, before))
        }
    };
    let limit = i64::from(filter.effective_limit());
    let mut sql = concat!("SELECT ", columns!(), " FROM calls WHERE TRUE").to_owned();
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    fn add<'a>(
        sql: &mut String,
        params: &mut Vec<&'a (dyn ToSql + Sync)>,
        clause: &str,
        value: &'a (dyn ToSql + Sync),
    ) {
        params.push(value);
        sql.push_str(&clause.replace('?', &format!("${}", params.len())));
    }
    let equal = [
        ("agent", &filter.agent),
        ("status", &filter.status),
        ("outcome", &filter.outcome),
        ("direction", &filter.direction),
    ];
    for (column, value) in equal {
        if let Some(value) = value {
            add(&mut sql, &mut params, &format!(" AND {column} = ?"), value);
        }
    }
    if let Some(since) = &filter.since_ms {
        add(&mut sql, &mut params, " AND created_at_ms >= ?", since);
    }
    if let Some(until) = &filter.until_ms {
        add(&mut sql, &mut params, " AND created_at_ms < ?", until);
    }
    if let Some((created, before)) = &cursor {
        add(
            &mut sql,
            &mut params,
            " AND (created_at_ms, call_sid) < (?",
            created,
        );
        add(&mut sql, &mut params, ", ?)", before);
    }
    add(
        &mut sql,
        &mut params,
        " ORDER BY created_at_ms DESC, call_sid DESC LIMIT ?",
        &limit,
    );
    let rows = client.query(&sql, &params).await?;
    rows.iter().map(read_record).collect()
}

/// Claims up to `limit` due callback messages for [`CALLBACK_LEASE_MS`], and when the next
/// unclaimed one is due.
pub(super) async fn due_callbacks(
    client: &Client,
    limit: u32,
) -> Result<(Vec<PendingCallback>, Option<i64>), RecordsError> {
    let now = now_ms();
    let due = client
        .query(
            SQL_CLAIM_DUE,
            &[&now, &i64::from(limit), &CALLBACK_LEASE_MS],
        )
        .await?
        .iter()
        .map(|row| PendingCallback {
            id: row.get(0),
            call_sid: row.get(1),
            url: row.get(2),
            body: row.get(3),
            attempts: u32::try_from(row.get::<_, i32>(4)).unwrap_or(0),
        })
        .collect();
    let next: Option<i64> = client.query_one(SQL_NEXT_DUE, &[]).await?.get(0);
    Ok((due, next))
}

/// Stores a task, after dropping expired ones; refuses past [`MAX_PENDING_TASKS`].
pub(super) async fn put_task(client: &mut Client, task: &NewTask) -> Result<(), RecordsError> {
    let tx = client.transaction().await?;
    tx.execute(
        "DELETE FROM tasks WHERE created_at_ms < $1",
        &[&(task.now_ms - TASK_TTL_MS)],
    )
    .await?;
    let waiting: i64 = tx
        .query_one("SELECT COUNT(*) FROM tasks", &[])
        .await?
        .get(0);
    if usize::try_from(waiting).unwrap_or(usize::MAX) >= MAX_PENDING_TASKS {
        return Err(RecordsError::TooManyTasks(MAX_PENDING_TASKS));
    }
    tx.execute(
        "INSERT INTO tasks (id, task, created_at_ms) VALUES ($1, $2, $3)",
        &[&task.id, &task.task, &task.now_ms],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Takes (deletes) a task: any instance, exactly once.
pub(super) async fn take_task(client: &Client, id: &str) -> Result<Option<String>, RecordsError> {
    let taken = client
        .query_opt(
            "DELETE FROM tasks WHERE id = $1 RETURNING task, created_at_ms",
            &[&id],
        )
        .await?;
    Ok(taken.and_then(|row| {
        let at: i64 = row.get(1);
        (now_ms() - at < TASK_TTL_MS).then(|| row.get(0))
    }))
}

/// One request against a shared token bucket (see [`super::shared`]).
pub(super) async fn rate_take(
    client: &Client,
    request: &RateRequest,
) -> Result<RateVerdict, RecordsError> {
    let allowed = client
        .query_opt(
            "INSERT INTO rate_buckets (key, tat_us) VALUES ($1, $2::BIGINT + $3::BIGINT)
             ON CONFLICT (key) DO UPDATE
                 SET tat_us = GREATEST(rate_buckets.tat_us, $2::BIGINT) + $3::BIGINT
                 WHERE GREATEST(rate_buckets.tat_us, $2::BIGINT) - $2::BIGINT <= $4::BIGINT
             RETURNING tat_us",
            &[
                &request.key,
                &request.now_us,
                &request.interval_us,
                &request.tolerance_us,
            ],
        )
        .await?;
    if allowed.is_some() {
        return Ok(RateVerdict::Allowed);
    }
    let tat: Option<i64> = client
        .query_opt(
            "SELECT tat_us FROM rate_buckets WHERE key = $1",
            &[&request.key],
        )
        .await?
        .map(|row| row.get(0));
    Ok(request.verdict(false, tat))
}

/// A row of [`columns!`] as a record.
fn read_record(row: &Row) -> Result<CallRecord, RecordsError> {
    let call_sid: String = row.try_get("call_sid")?;
    let text = |column: &str| -> Result<Option<String>, RecordsError> {
        Ok(row.try_get::<_, Option<String>>(column)?)
    };
    let json = |column: &str| -> Result<Option<serde_json::Value>, RecordsError> {
        Ok(text(column)?.and_then(|json| match serde_json::from_str(&json) {
            Ok(value) => Some(value),
            Err(error) => {
                tracing::warn!(%call_sid, column, %error, "corrupt JSON in call record; reading it as absent");
                None
            }
        }))
    };
    let int = |column: &str| -> Result<Option<i64>, RecordsError> { Ok(row.try_get(column)?) };
    let list =
        |column: &str| -> Result<String, RecordsError> { Ok(text(column)?.unwrap_or_default()) };
    Ok(CallRecord {
        direction: text("direction")?,
        from: text("from_addr")?,
        to: text("to_addr")?,
        agent: text("agent")?,
        plugin: text("plugin")?,
        stream_sid: text("stream_sid")?,
        status: text("status")?,
        outcome: text("outcome")?,
        reason: text("reason")?,
        failure_kind: text("failure_kind")?,
        task: json("task")?,
        result: json("result")?,
        created_at_ms: row.try_get("created_at_ms")?,
        started_at_ms: int("started_at_ms")?,
        answered_at_ms: int("answered_at_ms")?,
        ended_at_ms: int("ended_at_ms")?,
        status_ended_at_ms: int("status_ended_at_ms")?,
        duration_s: from_sql_int(int("duration_s")?),
        frames_in: from_sql_int(int("frames_in")?),
        frames_out: from_sql_int(int("frames_out")?),
        first_audio_ms: from_sql_int(int("first_audio_ms")?),
        transcript: parse_list(&list("transcript")?, &call_sid, "transcript"),
        turn_latency: parse_list(&list("turn_latency")?, &call_sid, "turn_latency"),
        status_history: parse_list(&list("status_history")?, &call_sid, "status_history"),
        instance: text("instance")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
        call_sid,
    })
}
