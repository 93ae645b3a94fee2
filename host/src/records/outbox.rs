//! The callback outbox: for an outbound call placed with a `callback_url` (`POST /calls`), one
//! message per call, written in the same transaction as the call's end (or as its terminal
//! status when it was never answered, or by the recovery sweep at startup for a call the
//! previous process left in flight), and delivered by [`crate::callbacks`] until the receiver
//! takes it. A crash between the call's end and the delivery loses nothing: the message waits
//! in the database, and the next process delivers it.
//!
//! The message id (`msg_<CallSid>`, Standard Webhooks' `webhook-id`) is the same on every
//! attempt, so a receiver that saw a delivery whose answer was lost can drop the repeat.

use super::{CallRecord, Db, RecordsError, SQL_GET, now_ms, read_record};
use rusqlite::{OptionalExtension as _, named_params};
use serde::Serialize;

/// A callback message waiting for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCallback {
    /// Standard Webhooks' `webhook-id`: `msg_<CallSid>`.
    pub id: String,
    /// The call it reports.
    pub call_sid: String,
    /// Where it goes (`http(s)://…`).
    pub url: String,
    /// The JSON body, as signed and sent.
    pub body: String,
    /// Delivery attempts so far.
    pub attempts: u32,
}

/// How one delivery attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The receiver answered 2xx: done.
    Delivered,
    /// It failed; try again at `at_ms` (unix epoch milliseconds).
    Retry {
        /// When to try again.
        at_ms: i64,
        /// What went wrong (status or transport error), for operators.
        error: String,
    },
    /// It failed and no attempt is left.
    GaveUp {
        /// What went wrong the last time.
        error: String,
    },
}

/// The body of a callback: Standard Webhooks' `{type, timestamp, data}`, `data` being the call
/// record as `GET /calls/{sid}` shows it.
#[derive(Serialize)]
struct Message<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    /// RFC 3339 would need a date library; unix epoch milliseconds, as every time in a record.
    timestamp_ms: i64,
    data: &'a CallRecord,
}

const SQL_CALLBACK_URL: &str =
    "SELECT callback_url FROM calls WHERE call_sid = :call_sid AND callback_url IS NOT NULL";

const SQL_ENQUEUE: &str = "
    INSERT OR IGNORE INTO callbacks (id, call_sid, url, body, created_at_ms, next_attempt_ms)
    VALUES (:id, :call_sid, :url, :body, :now, :now)";

const SQL_DUE: &str = "
    SELECT id, call_sid, url, body, attempts FROM callbacks
    WHERE delivered_at_ms IS NULL AND failed_at_ms IS NULL AND next_attempt_ms <= :now
    ORDER BY next_attempt_ms LIMIT :limit";

const SQL_NEXT_DUE: &str = "
    SELECT MIN(next_attempt_ms) FROM callbacks
    WHERE delivered_at_ms IS NULL AND failed_at_ms IS NULL";

const SQL_DELIVERED: &str = "
    UPDATE callbacks SET delivered_at_ms = :now, attempts = attempts + 1, last_error = NULL
    WHERE id = :id";

const SQL_RETRY: &str = "
    UPDATE callbacks SET attempts = attempts + 1, next_attempt_ms = :at_ms, last_error = :error
    WHERE id = :id";

const SQL_GAVE_UP: &str = "
    UPDATE callbacks SET attempts = attempts + 1, failed_at_ms = :now, last_error = :error
    WHERE id = :id";

/// Calls that ended (or were marked interrupted) with a callback URL and no message yet.
const SQL_UNQUEUED: &str = "
    SELECT call_sid FROM calls
    WHERE callback_url IS NOT NULL AND ended_at_ms IS NOT NULL
      AND call_sid NOT IN (SELECT call_sid FROM callbacks)";

/// The signed body of the callback reporting `record`, written at `now_ms`.
pub(super) fn message_body(record: &CallRecord, now_ms: i64) -> Result<String, RecordsError> {
    Ok(serde_json::to_string(&Message {
        kind: "call.ended",
        timestamp_ms: now_ms,
        data: record,
    })?)
}

impl Db<'_> {
    /// Queues the callback of `call_sid` if the call has a callback URL and none is queued yet.
    /// Runs inside the caller's transaction, after the call's end was written.
    pub(super) fn enqueue_callback(&mut self, call_sid: &str) -> Result<(), RecordsError> {
        let url: Option<String> = self
            .statement(SQL_CALLBACK_URL)?
            .query_row(named_params! {":call_sid": call_sid}, |row| row.get(0))
            .optional()?;
        let Some(url) = url else {
            return Ok(());
        };
        let Some(record) = self
            .statement(SQL_GET)?
            .query_row(named_params! {":call_sid": call_sid}, read_record)
            .optional()?
        else {
            return Ok(());
        };
        let now = now_ms();
        let body = message_body(&record, now)?;
        self.statement(SQL_ENQUEUE)?.execute(named_params! {
            ":id": format!("msg_{call_sid}"),
            ":call_sid": call_sid,
            ":url": url,
            ":body": body,
            ":now": now,
        })?;
        Ok(())
    }

    /// Queues the callbacks of calls that ended without one (the previous process stopped
    /// between writing a call's end and queueing, or the call was marked interrupted at start).
    pub(super) fn sweep_callbacks(&mut self) -> Result<(), RecordsError> {
        let calls: Vec<String> = self
            .statement(SQL_UNQUEUED)?
            .query_map([], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        for call_sid in calls {
            self.enqueue_callback(&call_sid)?;
        }
        Ok(())
    }

    /// Up to `limit` messages due at `now`, and when the next one after them is due.
    pub(super) fn due_callbacks(
        &mut self,
        now: i64,
        limit: u32,
    ) -> Result<(Vec<PendingCallback>, Option<i64>), RecordsError> {
        let due = self
            .statement(SQL_DUE)?
            .query_map(named_params! {":now": now, ":limit": limit}, |row| {
                Ok(PendingCallback {
                    id: row.get(0)?,
                    call_sid: row.get(1)?,
                    url: row.get(2)?,
                    body: row.get(3)?,
                    attempts: row.get(4)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let next: Option<i64> = self
            .statement(SQL_NEXT_DUE)?
            .query_row([], |row| row.get(0))?;
        Ok((due, next))
    }

    /// Records how an attempt to deliver message `id` went.
    pub(super) fn callback_attempted(
        &mut self,
        id: &str,
        attempt: &Attempt,
    ) -> Result<(), RecordsError> {
        match attempt {
            Attempt::Delivered => self
                .statement(SQL_DELIVERED)?
                .execute(named_params! {":id": id, ":now": now_ms()})?,
            Attempt::Retry { at_ms, error } => self
                .statement(SQL_RETRY)?
                .execute(named_params! {":id": id, ":at_ms": at_ms, ":error": error})?,
            Attempt::GaveUp { error } => self
                .statement(SQL_GAVE_UP)?
                .execute(named_params! {":id": id, ":now": now_ms(), ":error": error})?,
        };
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::{CallEnd, NewCall, Records, StatusUpdate, StreamStarted};
    use super::*;

    fn outbound(sid: &str, callback: Option<&str>) -> NewCall {
        NewCall {
            call_sid: sid.into(),
            direction: Some("outbound-api".into()),
            to: Some("+15005550006".into()),
            agent: Some("reminders".into()),
            status: Some("queued".into()),
            callback_url: callback.map(str::to_string),
            created_at_ms: now_ms(),
            ..NewCall::default()
        }
    }

    async fn stream(records: &Records, sid: &str) {
        records
            .stream_started(StreamStarted {
                call_sid: sid.into(),
                stream_sid: format!("MZ{sid}"),
                started_at_ms: now_ms(),
                ..StreamStarted::default()
            })
            .await
            .unwrap();
        records
            .call_ended(CallEnd {
                call_sid: sid.into(),
                ended_at_ms: now_ms(),
                outcome: "hung-up".into(),
                reason: "the agent hung up".into(),
                ..CallEnd::default()
            })
            .await
            .unwrap();
    }

    fn status(sid: &str, status: &str) -> StatusUpdate {
        StatusUpdate {
            call_sid: sid.into(),
            status: status.into(),
            at_ms: now_ms(),
            ..StatusUpdate::default()
        }
    }

    /// A call with a callback URL queues one message when its stream ends (its record as the
    /// body), none more when Twilio then reports it completed; a call without one queues
    /// nothing; a call never answered queues its message at its terminal status.
    #[tokio::test]
    async fn each_call_with_a_callback_queues_one_message() {
        each_call_with_a_callback_queues_one_message_on(Records::open_in_memory().unwrap()).await;
    }

    pub(in crate::records) async fn each_call_with_a_callback_queues_one_message_on(
        records: Records,
    ) {
        records
            .call_created(outbound("CA1", Some("https://example.com/hook")))
            .await
            .unwrap();
        records.call_created(outbound("CA2", None)).await.unwrap();
        records
            .call_created(outbound("CA3", Some("https://example.com/hook")))
            .await
            .unwrap();
        stream(&records, "CA1").await;
        stream(&records, "CA2").await;
        records.status(status("CA1", "completed")).await.unwrap();
        records.status(status("CA3", "no-answer")).await.unwrap();

        let (due, next) = records.due_callbacks(10).await.unwrap();
        let ids: Vec<&str> = due.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids.len(), 2, "{ids:?}");
        assert!(
            ids.contains(&"msg_CA1") && ids.contains(&"msg_CA3"),
            "{ids:?}"
        );
        assert!(next.is_some());
        let body: serde_json::Value = serde_json::from_str(&due[0].body).unwrap();
        assert_eq!(body["type"], "call.ended");
        let sid = body["data"]["call_sid"].as_str().unwrap();
        let expected = if sid == "CA1" { "hung-up" } else { "no-answer" };
        let outcome = body["data"]["outcome"]
            .as_str()
            .or(body["data"]["status"].as_str());
        assert_eq!(outcome, Some(expected), "{body}");
    }

    /// A failed attempt waits until its retry time; a delivered message is never due again.
    #[tokio::test]
    async fn attempts_are_recorded() {
        attempts_are_recorded_on(Records::open_in_memory().unwrap()).await;
    }

    pub(in crate::records) async fn attempts_are_recorded_on(records: Records) {
        records
            .call_created(outbound("CA1", Some("https://example.com/hook")))
            .await
            .unwrap();
        stream(&records, "CA1").await;
        let retry_at = now_ms() + 60_000;
        records
            .callback_attempted(
                "msg_CA1",
                Attempt::Retry {
                    at_ms: retry_at,
                    error: "the receiver answered 500".into(),
                },
            )
            .await
            .unwrap();
        let (due, next) = records.due_callbacks(10).await.unwrap();
        assert!(due.is_empty());
        assert_eq!(next, Some(retry_at));
        records
            .callback_attempted("msg_CA1", Attempt::Delivered)
            .await
            .unwrap();
        let (due, next) = records.due_callbacks(10).await.unwrap();
        assert!(due.is_empty());
        assert_eq!(next, None);
    }

    /// The previous process stopped with a call in flight: reopening marks it interrupted and
    /// queues its message (the receiver learns the call ended), once.
    #[tokio::test]
    async fn a_call_left_in_flight_reports_after_a_restart() {
        let dir = std::env::temp_dir().join(format!(
            "switchboard-outbox-{}-{}",
            std::process::id(),
            now_ms()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("calls.db");
        {
            let (records, _) = Records::open(&db).unwrap();
            records
                .call_created(outbound("CA9", Some("https://example.com/hook")))
                .await
                .unwrap();
            records
                .stream_started(StreamStarted {
                    call_sid: "CA9".into(),
                    stream_sid: "MZ9".into(),
                    started_at_ms: now_ms(),
                    ..StreamStarted::default()
                })
                .await
                .unwrap();
            records.flush().await.unwrap();
            let (due, _) = records.due_callbacks(10).await.unwrap();
            assert!(due.is_empty(), "still in flight");
        }
        for _ in 0..2 {
            let (records, _) = Records::open(&db).unwrap();
            let (due, _) = records.due_callbacks(10).await.unwrap();
            assert_eq!(due.len(), 1);
            let body: serde_json::Value = serde_json::from_str(&due[0].body).unwrap();
            assert_eq!(body["data"]["outcome"], "interrupted", "{body}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
