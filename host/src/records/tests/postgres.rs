//! The records suite on a real PostgreSQL server (a throwaway cluster per test), and what only a
//! shared database has: tasks and rate limits across instances, liveness, outages, migrations.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::super::outbox::tests as outbox_tests;
use super::*;
use crate::testing::postgres::Cluster;

type Scenario = fn(Records) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// Every backend-neutral scenario of the suite (the SQLite tests run the same functions).
const SCENARIOS: &[(&str, Scenario)] = &[
    ("round_trip", |r| {
        Box::pin(create_start_end_round_trip_on(r))
    }),
    ("no_webhook", |r| {
        Box::pin(a_stream_without_a_webhook_creates_the_row_on(r))
    }),
    ("status_order", |r| {
        Box::pin(status_updates_agree_in_any_order_on(r))
    }),
    ("status_alone", |r| {
        Box::pin(status_alone_fills_direction_and_numbers_without_replacing_on(r))
    }),
    ("second_stream", |r| {
        Box::pin(a_second_stream_makes_an_ended_call_live_and_a_stale_end_is_ignored_on(r))
    }),
    ("list_filters", |r| Box::pin(list_filters_on(r))),
    ("list_limit", |r| Box::pin(list_limit_is_clamped_on(r))),
    ("list_pages", |r| Box::pin(list_pages_with_a_cursor_on(r))),
    ("callbacks", |r| {
        Box::pin(outbox_tests::each_call_with_a_callback_queues_one_message_on(r))
    }),
    ("attempts", |r| {
        Box::pin(outbox_tests::attempts_are_recorded_on(r))
    }),
];

fn cluster() -> Cluster {
    match Cluster::start() {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

fn fleet(instance: &str) -> Fleet {
    Fleet {
        instance: instance.to_owned(),
        heartbeat: Duration::from_millis(100),
        grace: Duration::from_millis(500),
    }
}

async fn open(url: &str, instance: &str) -> Records {
    Records::open_postgres(url, fleet(instance))
        .await
        .expect("open PostgreSQL records")
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_records_suite_passes_on_postgres() {
    let cluster = cluster();
    for (name, scenario) in SCENARIOS {
        let url = cluster.database(name).expect("create database");
        let records = open(&url, "suite").await;
        assert_eq!(records.backend(), "postgres");
        scenario(records).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_stored_by_one_instance_is_taken_once_by_another() {
    let cluster = cluster();
    let url = cluster.database("tasks").expect("create database");
    let (a, b) = (open(&url, "a").await, open(&url, "b").await);
    tasks_are_taken_once(&a, &b).await;
}

/// `a` and `b` are two handles on one database (two instances, or one SQLite file).
pub(super) async fn tasks_are_taken_once(a: &Records, b: &Records) {
    let task = serde_json::json!({"prompt": "Remind Ana of her appointment."});
    a.put_task("t1", &task).await.expect("put");
    assert_eq!(b.take_task("t1").await.expect("take"), Some(task));
    assert_eq!(a.take_task("t1").await.expect("take again"), None);
    assert_eq!(b.take_task("unknown").await.expect("take unknown"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_bucket_is_shared_by_the_fleet() {
    let cluster = cluster();
    let url = cluster.database("rate").expect("create database");
    let (a, b) = (open(&url, "a").await, open(&url, "b").await);
    buckets_are_shared(&a, &b).await;
}

pub(super) async fn buckets_are_shared(a: &Records, b: &Records) {
    // 6 a minute, burst 3: three requests in all, whichever instance takes them.
    let mut allowed = 0;
    for records in [a, b, a, b, a, b] {
        match records.rate_take("api:k", 6, 3).await.expect("rate") {
            RateVerdict::Allowed => allowed += 1,
            RateVerdict::Limited { retry_after_ms } => {
                assert!(
                    retry_after_ms > 0 && retry_after_ms <= 10_000,
                    "{retry_after_ms}"
                );
            }
        }
    }
    assert_eq!(allowed, 3);
    // Another token has its own bucket.
    assert_eq!(
        b.rate_take("api:other", 6, 3).await.expect("rate"),
        RateVerdict::Allowed
    );
}

/// An instance stops heartbeating with a call live: after the grace period one of two
/// survivors marks the call interrupted, once, naming itself; the survivors' own calls stay live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_instances_calls_are_marked_interrupted_once() {
    let cluster = cluster();
    let url = cluster.database("fleet").expect("create database");
    let dead = open(&url, "dead").await;
    dead.stream_started(started("CA-dead", now_ms()))
        .await
        .unwrap();
    dead.flush().await.unwrap();
    // Dropping the last handle stops its writer, and so its heartbeats.
    drop(dead);
    let b = open(&url, "b").await;
    let c = open(&url, "c").await;
    b.stream_started(started("CA-b", now_ms())).await.unwrap();
    let mut marked = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let record = c.get("CA-dead").await.unwrap().expect("record");
        if record.outcome.as_deref() == Some(OUTCOME_INTERRUPTED) {
            marked = Some(record);
            break;
        }
    }
    let record = marked.expect("the dead instance's call was never marked interrupted");
    let reason = record.reason.unwrap_or_default();
    let reaped_by = cluster
        .psql("fleet", "SELECT reaped_by FROM instances WHERE id = 'dead'")
        .expect("psql");
    let reaped_by = reaped_by.trim();
    assert!(reaped_by == "b" || reaped_by == "c", "{reaped_by:?}");
    assert!(
        reason.contains("instance dead") && reason.ends_with(&format!("marked by {reaped_by})")),
        "{reason}"
    );
    assert_eq!(record.instance.as_deref(), Some("dead"));
    let live = c.get("CA-b").await.unwrap().expect("record");
    assert_eq!(live.outcome.as_deref(), Some(OUTCOME_IN_PROGRESS));
    // Neither survivor was reaped, and no call was marked twice (the one UPDATE ran once: a
    // second would need the instance row unreaped).
    let reaped = cluster
        .psql(
            "fleet",
            "SELECT count(*) FROM instances WHERE reaped_at_ms IS NOT NULL",
        )
        .expect("psql");
    assert_eq!(reaped.trim(), "1");
}

/// The server stops with a call in flight: writes are answered at once and held, reads fail
/// clearly, and once the server is back every held write is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_held_during_an_outage_are_written_when_the_server_returns() {
    let mut cluster = cluster();
    let url = cluster.database("outage").expect("create database");
    let records = open(&url, "a").await;
    records
        .call_created(new_call("CA1", "desk", now_ms()))
        .await
        .unwrap();
    records.flush().await.unwrap();
    cluster.stop().expect("stop");
    let at = std::time::Instant::now();
    records
        .stream_started(started("CA1", now_ms()))
        .await
        .expect("held");
    records
        .call_ended(ended("CA1", now_ms() + 5))
        .await
        .expect("held");
    assert!(
        at.elapsed() < Duration::from_secs(4),
        "held writes must not wait for the database: {:?}",
        at.elapsed()
    );
    match records.get("CA1").await {
        Err(RecordsError::Unavailable(_) | RecordsError::Postgres(_)) => {}
        other => panic!("a read during the outage: {other:?}"),
    }
    cluster.start_again().expect("start again");
    records.flush().await.expect("flush after the outage");
    let record = records.get("CA1").await.unwrap().expect("record");
    assert_eq!(record.outcome.as_deref(), Some("hung-up"));
    assert_eq!(record.transcript.len(), 3);
}

/// A database migrated by a newer build is refused, and left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused_on_postgres() {
    let cluster = cluster();
    let url = cluster.database("newer").expect("create database");
    drop(open(&url, "a").await);
    cluster
        .psql(
            "newer",
            "INSERT INTO switchboard_schema (version, applied_at_ms) VALUES (99, 0)",
        )
        .expect("psql");
    match Records::open_postgres(&url, fleet("b")).await {
        Err(RecordsError::NewerSchema { found: 99, known }) => {
            assert_eq!(known as usize, super::super::postgres::MIGRATIONS.len());
        }
        other => panic!("expected NewerSchema, got {:?}", other.map(|_| ())),
    }
    let versions = cluster
        .psql("newer", "SELECT count(*) FROM switchboard_schema")
        .expect("psql");
    assert_eq!(versions.trim(), "2");
}

/// `sslmode=require` with `sslrootcert`: the records go over TLS to a server that takes
/// nothing else, and a URL that does not ask for TLS, or trusts no CA that signed the server's
/// certificate, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_reach_a_tls_only_server_when_the_url_asks_for_tls() {
    let mut cluster = cluster();
    let plain = cluster.database("tls").expect("create database");
    let ca = cluster.require_tls().expect("TLS");
    let with_tls = format!("{plain}?sslmode=verify-full&sslrootcert={}", ca.display());
    let records = open(&with_tls, "tls").await;
    records
        .call_created(new_call("CA1", "desk", now_ms()))
        .await
        .unwrap();
    records.flush().await.unwrap();
    assert!(records.get("CA1").await.unwrap().is_some());
    let encrypted = cluster
        .psql(
            "tls",
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'switchboard' AND s.ssl",
        )
        .expect("psql");
    assert_ne!(encrypted.trim(), "0", "the gateway's connections use TLS");
    match Records::open_postgres(&plain, fleet("plain")).await {
        Err(RecordsError::Unavailable(e)) => assert!(e.contains("no encryption"), "{e}"),
        other => panic!(
            "a plain connection to a TLS-only server: {:?}",
            other.map(|_| ())
        ),
    }
    // Trusting only the system's roots: the test CA is not among them.
    let untrusted = format!("{plain}?sslmode=require");
    assert!(
        Records::open_postgres(&untrusted, fleet("untrusted"))
            .await
            .is_err()
    );
}
