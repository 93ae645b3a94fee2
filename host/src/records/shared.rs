//! State a fleet of gateways must share, kept beside the call records so that one database
//! serves both: the tasks of outbound calls waiting for their stream ([`Records::put_task`],
//! [`Records::take_task`]) and the operator API's token buckets ([`Records::rate_take`]).
//!
//! On SQLite (one gateway) they live in the same file as the records; on PostgreSQL every
//! instance sees the same rows, so a task stored by the instance that placed a call is taken by
//! the instance its stream lands on, and a token's burst is spent once across the fleet.
//!
//! The rate limit is GCRA (the generic cell rate algorithm, as the `governor` crate uses): a
//! bucket is one stored time, the *theoretical arrival time* `tat` (µs since the unix epoch).
//! A request at `now` is allowed when `max(tat, now) - now <= (burst - 1) · T`, with
//! `T = 60 s / rate_per_minute`, and then moves `tat` to `max(tat, now) + T`. One atomic upsert
//! decides, so two instances can never both spend the last unit of a burst.
//!
//! [`Records::put_task`]: super::Records::put_task
//! [`Records::take_task`]: super::Records::take_task
//! [`Records::rate_take`]: super::Records::rate_take

use rusqlite::{OptionalExtension as _, named_params};

use super::{Db, RecordsError};
use crate::call::task::{MAX_PENDING_TASKS, PENDING_TASK_TTL};

/// How long a stored task waits for its call's stream, in milliseconds
/// ([`PENDING_TASK_TTL`]).
pub const TASK_TTL_MS: i64 = PENDING_TASK_TTL.as_millis() as i64;

/// A task to store (see [`super::Records::put_task`]).
#[derive(Debug, Clone)]
pub(crate) struct NewTask {
    pub(crate) id: String,
    /// The task as JSON text.
    pub(crate) task: String,
    pub(crate) now_ms: i64,
}

/// One request against a token bucket.
#[derive(Debug, Clone)]
pub(crate) struct RateRequest {
    pub(crate) key: String,
    /// `T`: the emission interval, µs.
    pub(crate) interval_us: i64,
    /// `(burst - 1) · T`, µs.
    pub(crate) tolerance_us: i64,
    pub(crate) now_us: i64,
}

impl RateRequest {
    pub(crate) fn new(key: &str, rate_per_minute: u32, burst: u32) -> RateRequest {
        let interval_us = 60_000_000 / i64::from(rate_per_minute.max(1));
        RateRequest {
            key: key.to_owned(),
            interval_us,
            tolerance_us: interval_us * i64::from(burst.max(1) - 1),
            now_us: now_us(),
        }
    }

    /// The verdict from the stored `tat` after the upsert: `None` when the upsert was refused.
    pub(crate) fn verdict(&self, allowed: bool, tat_us: Option<i64>) -> RateVerdict {
        if allowed {
            return RateVerdict::Allowed;
        }
        // Refused: the next request fits once `tat - tolerance` is reached.
        let wait = tat_us.map_or(self.interval_us, |tat| {
            tat - self.tolerance_us - self.now_us
        });
        RateVerdict::Limited {
            retry_after_ms: u64::try_from(wait.max(1)).unwrap_or(1).div_ceil(1000),
        }
    }
}

/// What a token bucket said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateVerdict {
    /// The request may go ahead.
    Allowed,
    /// Over the limit: the next request fits in this many milliseconds (at least 1).
    Limited {
        /// Milliseconds until the bucket allows one request.
        retry_after_ms: u64,
    },
}

/// Microseconds since the unix epoch.
fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

const SQL_TASKS_EXPIRE: &str = "DELETE FROM tasks WHERE created_at_ms < :oldest";
const SQL_TASKS_COUNT: &str = "SELECT COUNT(*) FROM tasks";
const SQL_TASK_PUT: &str = "INSERT INTO tasks (id, task, created_at_ms) VALUES (:id, :task, :now)";
const SQL_TASK_TAKE: &str = "DELETE FROM tasks WHERE id = :id RETURNING task, created_at_ms";
const SQL_RATE_TAKE: &str = "
    INSERT INTO rate_buckets (key, tat_us) VALUES (:key, :now + :interval)
    ON CONFLICT (key) DO UPDATE SET tat_us = MAX(rate_buckets.tat_us, :now) + :interval
    WHERE MAX(rate_buckets.tat_us, :now) - :now <= :tolerance
    RETURNING tat_us";
const SQL_RATE_READ: &str = "SELECT tat_us FROM rate_buckets WHERE key = :key";

impl Db<'_> {
    pub(super) fn put_task(&mut self, task: &NewTask) -> Result<(), RecordsError> {
        self.statement(SQL_TASKS_EXPIRE)?
            .execute(named_params! {":oldest": task.now_ms - TASK_TTL_MS})?;
        let waiting: i64 = self
            .statement(SQL_TASKS_COUNT)?
            .query_row([], |row| row.get(0))?;
        if usize::try_from(waiting).unwrap_or(usize::MAX) >= MAX_PENDING_TASKS {
            return Err(RecordsError::TooManyTasks(MAX_PENDING_TASKS));
        }
        self.statement(SQL_TASK_PUT)?.execute(named_params! {
            ":id": task.id, ":task": task.task, ":now": task.now_ms,
        })?;
        Ok(())
    }

    pub(super) fn take_task(
        &mut self,
        id: &str,
        now_ms: i64,
    ) -> Result<Option<String>, RecordsError> {
        let taken: Option<(String, i64)> = self
            .statement(SQL_TASK_TAKE)?
            .query_row(named_params! {":id": id}, |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()?;
        Ok(taken.and_then(|(task, at)| (now_ms - at < TASK_TTL_MS).then_some(task)))
    }

    pub(super) fn rate_take(&mut self, request: &RateRequest) -> Result<RateVerdict, RecordsError> {
        let params = named_params! {
            ":key": request.key,
            ":now": request.now_us,
            ":interval": request.interval_us,
            ":tolerance": request.tolerance_us,
        };
        let allowed: Option<i64> = self
            .statement(SQL_RATE_TAKE)?
            .query_row(params, |row| row.get(0))
            .optional()?;
        if allowed.is_some() {
            return Ok(RateVerdict::Allowed);
        }
        let tat: Option<i64> = self
            .statement(SQL_RATE_READ)?
            .query_row(named_params! {":key": request.key}, |row| row.get(0))
            .optional()?;
        Ok(request.verdict(false, tat))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_waits_until_the_bucket_has_room() {
        // 60 per minute, burst 2: T = 1 s, tolerance 1 s.
        let r = RateRequest {
            key: "k".into(),
            interval_us: 1_000_000,
            tolerance_us: 1_000_000,
            now_us: 10_000_000,
        };
        assert_eq!(r.verdict(true, None), RateVerdict::Allowed);
        // tat 12 s: room at 11 s, in 1000 ms.
        assert_eq!(
            r.verdict(false, Some(12_000_000)),
            RateVerdict::Limited {
                retry_after_ms: 1000
            }
        );
        assert_eq!(
            r.verdict(false, Some(11_000_001)),
            RateVerdict::Limited { retry_after_ms: 1 }
        );
    }
}
