//! The SQLite backend's writer thread: the one thread that owns the `rusqlite::Connection`,
//! serves [`Command`]s in order, and reads and writes call rows with prepared statements (the
//! fixed ones below, and one per combination of list filters).

use super::*;

/// The writer thread: serves commands in order until every [`Records`] is dropped.
pub(super) fn serve(conn: Connection, mut commands: mpsc::Receiver<Command>, instance: String) {
    let mut db = Db {
        conn: &conn,
        statements: HashMap::new(),
        instance,
    };
    if let Err(error) = db.sweep_callbacks() {
        tracing::error!(%error, "callbacks of ended calls could not be queued");
    }
    while let Some(command) = commands.blocking_recv() {
        db.serve(command);
    }
    tracing::debug!("call records writer stopped");
}

/// Sends `result` to the caller; a failure nobody is waiting for is logged instead.
fn answer<T>(reply: Reply<T>, result: Result<T, RecordsError>, call_sid: &str) {
    if let Err(Err(error)) = reply.send(result) {
        tracing::warn!(%call_sid, %error, "call record write failed");
    }
}

/// Bare column names in `DO UPDATE` refer to the row already stored, `excluded.*` to this event.
pub(super) const SQL_CREATED: &str = "
    INSERT INTO calls (call_sid, direction, from_addr, to_addr, agent, task, callback_url,
        created_at_ms, updated_at_ms)
    VALUES (:call_sid, :direction, :from, :to, :agent, :task, :callback_url, :created_at_ms, :now)
    ON CONFLICT (call_sid) DO UPDATE SET
        callback_url = COALESCE(excluded.callback_url, callback_url),
        direction = COALESCE(excluded.direction, direction),
        from_addr = COALESCE(excluded.from_addr, from_addr),
        to_addr = COALESCE(excluded.to_addr, to_addr),
        agent = COALESCE(agent, excluded.agent),
        task = COALESCE(excluded.task, task),
        created_at_ms = MIN(created_at_ms, excluded.created_at_ms),
        updated_at_ms = excluded.updated_at_ms";

pub(super) const SQL_STARTED: &str = "
    INSERT INTO calls (call_sid, stream_sid, agent, plugin, from_addr, to_addr, started_at_ms,
        outcome, created_at_ms, updated_at_ms, instance)
    VALUES (:call_sid, :stream_sid, :agent, :plugin, :from, :to, :started_at_ms, :in_progress,
        :started_at_ms, :now, :instance)
    ON CONFLICT (call_sid) DO UPDATE SET
        stream_sid = excluded.stream_sid,
        instance = excluded.instance,
        agent = COALESCE(excluded.agent, agent),
        plugin = COALESCE(excluded.plugin, plugin),
        from_addr = COALESCE(excluded.from_addr, from_addr),
        to_addr = COALESCE(excluded.to_addr, to_addr),
        started_at_ms = MIN(COALESCE(started_at_ms, excluded.started_at_ms),
            excluded.started_at_ms),
        outcome = CASE WHEN ended_at_ms IS NULL OR ended_at_ms < excluded.started_at_ms
            THEN excluded.outcome ELSE outcome END,
        reason = CASE WHEN ended_at_ms < excluded.started_at_ms THEN NULL ELSE reason END,
        ended_at_ms = CASE WHEN ended_at_ms < excluded.started_at_ms THEN NULL
            ELSE ended_at_ms END,
        created_at_ms = MIN(created_at_ms, excluded.created_at_ms),
        updated_at_ms = excluded.updated_at_ms";

pub(super) const SQL_ENDED: &str = "
    INSERT INTO calls (call_sid, outcome, reason, failure_kind, ended_at_ms, transcript,
        turn_latency, frames_in, frames_out, first_audio_ms, result, created_at_ms, updated_at_ms)
    VALUES (:call_sid, :outcome, :reason, :failure_kind, :ended_at_ms, :transcript,
        :turn_latency, :frames_in, :frames_out, :first_audio_ms, :result, :ended_at_ms, :now)
    ON CONFLICT (call_sid) DO UPDATE SET
        result = COALESCE(excluded.result, result),
        outcome = excluded.outcome,
        reason = excluded.reason,
        failure_kind = excluded.failure_kind,
        ended_at_ms = excluded.ended_at_ms,
        transcript = excluded.transcript,
        turn_latency = excluded.turn_latency,
        frames_in = excluded.frames_in,
        frames_out = excluded.frames_out,
        first_audio_ms = COALESCE(excluded.first_audio_ms, first_audio_ms),
        created_at_ms = MIN(created_at_ms, excluded.created_at_ms),
        updated_at_ms = excluded.updated_at_ms
    WHERE calls.ended_at_ms IS NULL OR excluded.ended_at_ms >= calls.ended_at_ms";

/// `status`, `status_history`, `answered_at_ms` and `status_ended_at_ms` are computed from the
/// merged history (read in the same transaction); `direction`, `from` and `to` only fill gaps.
pub(super) const SQL_STATUS: &str = "
    INSERT INTO calls (call_sid, direction, from_addr, to_addr, status, status_history,
        answered_at_ms, status_ended_at_ms, duration_s, created_at_ms, updated_at_ms)
    VALUES (:call_sid, :direction, :from, :to, :status, :status_history, :answered_at_ms,
        :status_ended_at_ms, :duration_s, :at_ms, :now)
    ON CONFLICT (call_sid) DO UPDATE SET
        direction = COALESCE(direction, excluded.direction),
        from_addr = COALESCE(from_addr, excluded.from_addr),
        to_addr = COALESCE(to_addr, excluded.to_addr),
        status = excluded.status,
        status_history = excluded.status_history,
        answered_at_ms = COALESCE(excluded.answered_at_ms, answered_at_ms),
        status_ended_at_ms = COALESCE(excluded.status_ended_at_ms, status_ended_at_ms),
        duration_s = COALESCE(excluded.duration_s, duration_s),
        created_at_ms = MIN(created_at_ms, excluded.created_at_ms),
        updated_at_ms = excluded.updated_at_ms";

pub(super) const SQL_HISTORY: &str = "SELECT status_history FROM calls WHERE call_sid = :call_sid";

pub(super) const SQL_GET: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM calls WHERE call_sid = :call_sid"
);

pub(super) const SQL_CURSOR: &str = "SELECT created_at_ms FROM calls WHERE call_sid = :call_sid";

pub(super) const SQL_STREAMED: &str = "SELECT started_at_ms FROM calls WHERE call_sid = :call_sid";

/// The writer thread's view of the database.
pub(super) struct Db<'c> {
    pub(super) conn: &'c Connection,
    /// This instance's name, stamped on the calls whose streams it carries.
    pub(super) instance: String,
    /// Prepared statements by SQL text: the fixed ones, and one per combination of list filters
    /// (at most 2^7). rusqlite's `prepare_cached` sits behind its `cache` feature, which this
    /// workspace does not enable.
    pub(super) statements: HashMap<String, Statement<'c>>,
}

impl<'c> Db<'c> {
    pub(super) fn serve(&mut self, command: Command) {
        match command {
            Command::Created(call, reply) => {
                let result = self.call_created(&call);
                answer(reply, result, &call.call_sid);
            }
            Command::Started(started, reply) => {
                let result = self.stream_started(&started);
                answer(reply, result, &started.call_sid);
            }
            Command::Ended(ended, reply) => {
                let result = self.call_ended(&ended);
                answer(reply, result, &ended.call_sid);
            }
            Command::Status(update, reply) => {
                let result = self.status(&update);
                answer(reply, result, &update.call_sid);
            }
            Command::Get(call_sid, reply) => {
                // A read nobody waits for needs no log.
                let _ = reply.send(self.get(&call_sid));
            }
            Command::List(filter, reply) => {
                let _ = reply.send(self.list(&filter));
            }
            Command::DueCallbacks(limit, reply) => {
                let _ = reply.send(self.due_callbacks(now_ms(), limit));
            }
            Command::CallbackAttempted(id, attempt, reply) => {
                let result = self.callback_attempted(&id, &attempt);
                answer(reply, result, &id);
            }
            Command::PutTask(task, reply) => {
                let _ = reply.send(self.put_task(&task));
            }
            Command::TakeTask(id, reply) => {
                let _ = reply.send(self.take_task(&id, now_ms()));
            }
            Command::RateTake(request, reply) => {
                let _ = reply.send(self.rate_take(&request));
            }
            Command::Flush(reply) => {
                let _ = reply.send(Ok(()));
            }
        }
    }

    pub(super) fn statement(&mut self, sql: &str) -> rusqlite::Result<&mut Statement<'c>> {
        match self.statements.entry(sql.to_owned()) {
            Entry::Occupied(entry) => Ok(entry.into_mut()),
            Entry::Vacant(entry) => Ok(entry.insert(self.conn.prepare(sql)?)),
        }
    }

    pub(super) fn call_created(&mut self, call: &NewCall) -> Result<(), RecordsError> {
        let task = call.task.as_ref().map(serde_json::to_string).transpose()?;
        let tx = Transaction::new_unchecked(self.conn, TransactionBehavior::Immediate)?;
        self.statement(SQL_CREATED)?.execute(named_params! {
            ":call_sid": call.call_sid,
            ":direction": call.direction,
            ":from": call.from,
            ":to": call.to,
            ":agent": call.agent,
            ":task": task,
            ":callback_url": call.callback_url,
            ":created_at_ms": call.created_at_ms,
            ":now": now_ms(),
        })?;
        if let Some(status) = &call.status {
            self.apply_status(&StatusUpdate {
                call_sid: call.call_sid.clone(),
                status: status.clone(),
                duration_s: None,
                at_ms: call.created_at_ms,
                direction: None,
                from: None,
                to: None,
            })?;
        }
        tx.commit()?;
        Ok(())
    }

    pub(super) fn stream_started(&mut self, started: &StreamStarted) -> Result<(), RecordsError> {
        let instance = self.instance.clone();
        self.statement(SQL_STARTED)?.execute(named_params! {
            ":call_sid": started.call_sid,
            ":stream_sid": started.stream_sid,
            ":agent": started.agent,
            ":plugin": started.plugin,
            ":from": started.from,
            ":to": started.to,
            ":started_at_ms": started.started_at_ms,
            ":in_progress": OUTCOME_IN_PROGRESS,
            ":now": now_ms(),
            ":instance": instance,
        })?;
        Ok(())
    }

    pub(super) fn call_ended(&mut self, ended: &CallEnd) -> Result<(), RecordsError> {
        let transcript = serde_json::to_string(&ended.transcript)?;
        let turn_latency = serde_json::to_string(&ended.turn_latency)?;
        // The end and its callback (if the call has one) are written together.
        let tx = Transaction::new_unchecked(self.conn, TransactionBehavior::Immediate)?;
        self.statement(SQL_ENDED)?.execute(named_params! {
            ":call_sid": ended.call_sid,
            ":outcome": ended.outcome,
            ":reason": ended.reason,
            ":failure_kind": ended.failure_kind,
            ":ended_at_ms": ended.ended_at_ms,
            ":transcript": transcript,
            ":turn_latency": turn_latency,
            ":frames_in": to_sql_int(ended.frames_in),
            ":frames_out": to_sql_int(ended.frames_out),
            ":first_audio_ms": ended.first_audio_ms.map(to_sql_int),
            ":result": ended.result.as_ref().map(serde_json::Value::to_string),
            ":now": now_ms(),
        })?;
        self.enqueue_callback(&ended.call_sid)?;
        tx.commit()?;
        Ok(())
    }

    pub(super) fn status(&mut self, update: &StatusUpdate) -> Result<(), RecordsError> {
        let tx = Transaction::new_unchecked(self.conn, TransactionBehavior::Immediate)?;
        self.apply_status(update)?;
        if is_terminal_status(&update.status) {
            // A call that ends without ever streaming (busy, no answer, failed) reports now; one
            // that streamed reported when its stream ended.
            let streamed: Option<i64> = self
                .statement(SQL_STREAMED)?
                .query_row(named_params! {":call_sid": update.call_sid}, |row| {
                    row.get(0)
                })
                .optional()?
                .flatten();
            if streamed.is_none() {
                self.enqueue_callback(&update.call_sid)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Reads the history, merges `update` into it and writes the result. Runs inside the
    /// caller's transaction.
    pub(super) fn apply_status(&mut self, update: &StatusUpdate) -> Result<(), RecordsError> {
        let stored: Option<String> = self
            .statement(SQL_HISTORY)?
            .query_row(named_params! {":call_sid": update.call_sid}, |row| {
                row.get(0)
            })
            .optional()?;
        let MergedStatus {
            status,
            status_history,
            answered_at_ms,
            status_ended_at_ms,
            duration_s,
        } = MergedStatus::new(stored, update)?;
        self.statement(SQL_STATUS)?.execute(named_params! {
            ":call_sid": update.call_sid,
            ":direction": update.direction,
            ":from": update.from,
            ":to": update.to,
            ":status": status,
            ":status_history": status_history,
            ":answered_at_ms": answered_at_ms,
            ":status_ended_at_ms": status_ended_at_ms,
            ":duration_s": duration_s,
            ":at_ms": update.at_ms,
            ":now": now_ms(),
        })?;
        Ok(())
    }

    pub(super) fn get(&mut self, call_sid: &str) -> Result<Option<CallRecord>, RecordsError> {
        let record = self
            .statement(SQL_GET)?
            .query_row(named_params! {":call_sid": call_sid}, read_record)
            .optional()?;
        Ok(record)
    }

    pub(super) fn list(&mut self, filter: &ListFilter) -> Result<Vec<CallRecord>, RecordsError> {
        let cursor: Option<(i64, &String)> = match &filter.before {
            None => None,
            Some(before) => {
                let created: Option<i64> = self
                    .statement(SQL_CURSOR)?
                    .query_row(named_params! {":call_sid": before}, |row| row.get(0))
                    .optional()?;
                let created = created.ok_or_else(|| {
                    RecordsError::BadFilter(format!("before: no call {before:?}"))
                })?;
                Some((created, before))
            }
        };
        let limit = filter.effective_limit();
        let mut sql = concat!("SELECT ", columns!(), " FROM calls WHERE 1 = 1").to_owned();
        let mut params: Vec<(&str, &dyn ToSql)> = vec![(":limit", &limit)];
        let equal = [
            ("agent", ":agent", &filter.agent),
            ("status", ":status", &filter.status),
            ("outcome", ":outcome", &filter.outcome),
            ("direction", ":direction", &filter.direction),
        ];
        for (column, name, value) in equal {
            if let Some(value) = value {
                sql.push_str(&format!(" AND {column} = {name}"));
                params.push((name, value));
            }
        }
        if let Some(since) = &filter.since_ms {
            sql.push_str(" AND created_at_ms >= :since");
            params.push((":since", since));
        }
        if let Some(until) = &filter.until_ms {
            sql.push_str(" AND created_at_ms < :until");
            params.push((":until", until));
        }
        if let Some((created, before)) = &cursor {
            sql.push_str(" AND (created_at_ms, call_sid) < (:before_at, :before)");
            params.push((":before_at", created));
            params.push((":before", before));
        }
        sql.push_str(" ORDER BY created_at_ms DESC, call_sid DESC LIMIT :limit");
        let rows = self.statement(&sql)?.query_map(&*params, read_record)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

pub(super) fn read_record(row: &Row<'_>) -> rusqlite::Result<CallRecord> {
    let call_sid: String = row.get("call_sid")?;
    let list = |column: &str| -> rusqlite::Result<String> {
        Ok(row.get::<_, Option<String>>(column)?.unwrap_or_default())
    };
    let json = |column: &str| -> rusqlite::Result<Option<serde_json::Value>> {
        Ok(row
            .get::<_, Option<String>>(column)?
            .and_then(|json| match serde_json::from_str(&json) {
                Ok(value) => Some(value),
                Err(error) => {
                    tracing::warn!(%call_sid, column, %error, "corrupt JSON in call record; reading it as absent");
                    None
                }
            }))
    };
    let task = json("task")?;
    let result = json("result")?;
    Ok(CallRecord {
        direction: row.get("direction")?,
        from: row.get("from_addr")?,
        to: row.get("to_addr")?,
        agent: row.get("agent")?,
        plugin: row.get("plugin")?,
        stream_sid: row.get("stream_sid")?,
        status: row.get("status")?,
        outcome: row.get("outcome")?,
        reason: row.get("reason")?,
        failure_kind: row.get("failure_kind")?,
        task,
        result,
        created_at_ms: row.get("created_at_ms")?,
        started_at_ms: row.get("started_at_ms")?,
        answered_at_ms: row.get("answered_at_ms")?,
        ended_at_ms: row.get("ended_at_ms")?,
        status_ended_at_ms: row.get("status_ended_at_ms")?,
        duration_s: from_sql_int(row.get("duration_s")?),
        frames_in: from_sql_int(row.get("frames_in")?),
        frames_out: from_sql_int(row.get("frames_out")?),
        first_audio_ms: from_sql_int(row.get("first_audio_ms")?),
        transcript: parse_list(&list("transcript")?, &call_sid, "transcript"),
        turn_latency: parse_list(&list("turn_latency")?, &call_sid, "turn_latency"),
        status_history: parse_list(&list("status_history")?, &call_sid, "status_history"),
        instance: row.get("instance")?,
        updated_at_ms: row.get("updated_at_ms")?,
        call_sid,
    })
}
