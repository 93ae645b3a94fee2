//! Tests of the call records store: schema, migrations, each write, recovery, listing.

use std::sync::atomic::{AtomicU32, Ordering};

use super::*;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "switchboard-records-{name}-{}-{}-{}",
            std::process::id(),
            now_ms(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn db(&self) -> PathBuf {
        self.0.join("calls.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn new_call(sid: &str, agent: &str, created_at_ms: i64) -> NewCall {
    NewCall {
        call_sid: sid.to_owned(),
        direction: Some("inbound".to_owned()),
        from: Some("+15550001111".to_owned()),
        to: Some("+15550002222".to_owned()),
        agent: Some(agent.to_owned()),
        status: Some("ringing".to_owned()),
        task: None,
        callback_url: None,
        created_at_ms,
    }
}

fn started(sid: &str, at: i64) -> StreamStarted {
    StreamStarted {
        call_sid: sid.to_owned(),
        stream_sid: format!("MZ{sid}"),
        agent: Some("front-desk".to_owned()),
        plugin: Some("echo".to_owned()),
        from: None,
        to: None,
        started_at_ms: at,
    }
}

fn ended(sid: &str, at: i64) -> CallEnd {
    CallEnd {
        call_sid: sid.to_owned(),
        ended_at_ms: at,
        outcome: "hung-up".to_owned(),
        reason: "caller hung up".to_owned(),
        failure_kind: None,
        transcript: vec![
            TranscriptTurn {
                side: "agent".to_owned(),
                text: "Hello, front desk.".to_owned(),
                heard_ms: None,
                tool: None,
            },
            TranscriptTurn {
                side: "caller".to_owned(),
                text: "Hi, I'd like a room.".to_owned(),
                heard_ms: None,
                tool: None,
            },
            TranscriptTurn {
                side: "agent".to_owned(),
                text: "Of course".to_owned(),
                heard_ms: Some(640),
                tool: None,
            },
        ],
        turn_latency: vec![TurnLatency {
            stt_final_ms: Some(310),
            llm_first_text_ms: Some(420),
            tts_first_audio_ms: Some(515),
            first_audio_out_ms: None,
            endpointing_ms: Some(600),
            speech_ms: Some(1200),
        }],
        frames_in: 1500,
        frames_out: 1234,
        first_audio_ms: Some(180),
        result: None,
    }
}

fn status(sid: &str, status: &str, at_ms: i64, duration_s: Option<u64>) -> StatusUpdate {
    StatusUpdate {
        call_sid: sid.to_owned(),
        status: status.to_owned(),
        duration_s,
        at_ms,
        ..StatusUpdate::default()
    }
}

fn history(record: &CallRecord) -> Vec<(&str, i64)> {
    record
        .status_history
        .iter()
        .map(|c| (c.status.as_str(), c.at_ms))
        .collect()
}

fn sids(records: &[CallRecord]) -> Vec<&str> {
    records.iter().map(|r| r.call_sid.as_str()).collect()
}

fn raw(path: &Path) -> Connection {
    Connection::open(path).unwrap()
}

#[tokio::test]
async fn create_start_end_round_trip() {
    let dir = TempDir::new("round-trip");
    let (records, recovery) = Records::open(&dir.db()).unwrap();
    assert_eq!(
        recovery,
        Recovery {
            interrupted: 0,
            schema_version: known_version()
        }
    );
    create_start_end_round_trip_on(records).await;
}

async fn create_start_end_round_trip_on(records: Records) {
    let mut call = new_call("CA1", "router-choice", 1_000);
    call.direction = Some("outbound-api".to_owned());
    call.task = Some(serde_json::json!({"goal": "confirm booking", "room": 12}));
    records.call_created(call).await.unwrap();
    records.stream_started(started("CA1", 1_200)).await.unwrap();

    let live = records.get("CA1").await.unwrap().unwrap();
    assert_eq!(live.outcome.as_deref(), Some(OUTCOME_IN_PROGRESS));
    assert_eq!(live.ended_at_ms, None);

    records.call_ended(ended("CA1", 9_000)).await.unwrap();
    let r = records.get("CA1").await.unwrap().unwrap();
    assert_eq!(r.call_sid, "CA1");
    assert_eq!(r.direction.as_deref(), Some("outbound-api"));
    assert_eq!(r.from.as_deref(), Some("+15550001111"));
    assert_eq!(r.to.as_deref(), Some("+15550002222"));
    // The stream's agent (what actually ran) wins over routing's.
    assert_eq!(r.agent.as_deref(), Some("front-desk"));
    assert_eq!(r.plugin.as_deref(), Some("echo"));
    assert_eq!(r.stream_sid.as_deref(), Some("MZCA1"));
    assert_eq!(r.status.as_deref(), Some("ringing"));
    assert_eq!(history(&r), vec![("ringing", 1_000)]);
    assert_eq!(r.outcome.as_deref(), Some("hung-up"));
    assert_eq!(r.reason.as_deref(), Some("caller hung up"));
    assert_eq!(r.failure_kind, None);
    assert_eq!(
        r.task,
        Some(serde_json::json!({"goal": "confirm booking", "room": 12}))
    );
    assert_eq!(r.created_at_ms, 1_000);
    assert_eq!(r.started_at_ms, Some(1_200));
    assert_eq!(r.ended_at_ms, Some(9_000));
    assert_eq!(r.frames_in, Some(1500));
    assert_eq!(r.frames_out, Some(1234));
    assert_eq!(r.first_audio_ms, Some(180));
    assert_eq!(r.transcript, ended("CA1", 0).transcript);
    assert_eq!(r.turn_latency, ended("CA1", 0).turn_latency);
    assert!(r.updated_at_ms > 0);
    assert_eq!(records.get("CA-unknown").await.unwrap(), None);

    // Serializes with the documented field names.
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["transcript"][2]["heard_ms"], 640);
    assert_eq!(json["turn_latency"][0]["tts_first_audio_ms"], 515);
    assert_eq!(json["status_history"][0]["status"], "ringing");
}

#[tokio::test]
async fn a_stream_without_a_webhook_creates_the_row() {
    a_stream_without_a_webhook_creates_the_row_on(Records::open_in_memory().unwrap()).await;
}

async fn a_stream_without_a_webhook_creates_the_row_on(records: Records) {
    records.stream_started(started("CA2", 5_000)).await.unwrap();
    let r = records.get("CA2").await.unwrap().unwrap();
    assert_eq!(r.created_at_ms, 5_000);
    assert_eq!(r.started_at_ms, Some(5_000));
    assert_eq!(r.outcome.as_deref(), Some(OUTCOME_IN_PROGRESS));
    assert_eq!(r.direction, None);
    assert_eq!(r.transcript, Vec::new());

    // A webhook arriving late fills gaps, moves the first-seen time back and does not
    // replace the stream's agent.
    records
        .call_created(new_call("CA2", "router-choice", 4_900))
        .await
        .unwrap();
    let r = records.get("CA2").await.unwrap().unwrap();
    assert_eq!(r.created_at_ms, 4_900);
    assert_eq!(r.direction.as_deref(), Some("inbound"));
    assert_eq!(r.agent.as_deref(), Some("front-desk"));
    assert_eq!(r.outcome.as_deref(), Some(OUTCOME_IN_PROGRESS));
}

#[tokio::test]
async fn status_updates_agree_in_any_order() {
    status_updates_agree_in_any_order_on(Records::open_in_memory().unwrap()).await;
}

async fn status_updates_agree_in_any_order_on(records: Records) {
    // In order: webhook, in-progress, stream, end, completed.
    records
        .call_created(new_call("CA-A", "front-desk", 1_000))
        .await
        .unwrap();
    records
        .status(status("CA-A", "in-progress", 2_000, None))
        .await
        .unwrap();
    records
        .stream_started(started("CA-A", 2_100))
        .await
        .unwrap();
    records.call_ended(ended("CA-A", 60_000)).await.unwrap();
    records
        .status(status("CA-A", "completed", 60_500, Some(58)))
        .await
        .unwrap();

    // Reversed, with a duplicate and a late ringing callback.
    records
        .status(status("CA-B", "completed", 60_500, Some(58)))
        .await
        .unwrap();
    records.call_ended(ended("CA-B", 60_000)).await.unwrap();
    records
        .stream_started(started("CA-B", 2_100))
        .await
        .unwrap();
    records
        .status(status("CA-B", "in-progress", 2_000, None))
        .await
        .unwrap();
    records
        .status(status("CA-B", "in-progress", 2_050, None))
        .await
        .unwrap();
    records
        .call_created(new_call("CA-B", "front-desk", 1_000))
        .await
        .unwrap();

    let a = records.get("CA-A").await.unwrap().unwrap();
    let b = records.get("CA-B").await.unwrap().unwrap();
    for r in [&a, &b] {
        assert_eq!(r.status.as_deref(), Some("completed"), "{}", r.call_sid);
        assert_eq!(r.answered_at_ms, Some(2_000), "{}", r.call_sid);
        assert_eq!(r.status_ended_at_ms, Some(60_500), "{}", r.call_sid);
        assert_eq!(r.duration_s, Some(58), "{}", r.call_sid);
        assert_eq!(
            history(r),
            vec![
                ("ringing", 1_000),
                ("in-progress", 2_000),
                ("completed", 60_500)
            ],
            "{}",
            r.call_sid
        );
        assert_eq!(r.outcome.as_deref(), Some("hung-up"), "{}", r.call_sid);
        assert_eq!(r.ended_at_ms, Some(60_000), "{}", r.call_sid);
        assert_eq!(r.created_at_ms, 1_000, "{}", r.call_sid);
        assert_eq!(r.started_at_ms, Some(2_100), "{}", r.call_sid);
        assert_eq!(r.transcript.len(), 3, "{}", r.call_sid);
    }
    let strip = |r: &CallRecord| CallRecord {
        call_sid: String::new(),
        stream_sid: None,
        updated_at_ms: 0,
        ..r.clone()
    };
    assert_eq!(strip(&a), strip(&b));

    // A late non-terminal status does not replace the terminal one, and a duration on a
    // non-terminal status is not kept.
    records
        .status(status("CA-A", "ringing", 70_000, Some(999)))
        .await
        .unwrap();
    let a = records.get("CA-A").await.unwrap().unwrap();
    assert_eq!(a.status.as_deref(), Some("completed"));
    assert_eq!(a.duration_s, Some(58));
    assert_eq!(history(&a)[0], ("ringing", 1_000));

    // Callbacks delivered late, each seen for the first time after a later status: the
    // furthest status wins, not the last to arrive.
    records
        .status(status("CA-C", "completed", 5_000, Some(3)))
        .await
        .unwrap();
    records
        .status(status("CA-C", "in-progress", 6_000, None))
        .await
        .unwrap();
    records
        .status(status("CA-C", "ringing", 7_000, None))
        .await
        .unwrap();
    let c = records.get("CA-C").await.unwrap().unwrap();
    assert_eq!(c.status.as_deref(), Some("completed"));
    assert_eq!(c.answered_at_ms, Some(6_000));
    assert_eq!(c.status_ended_at_ms, Some(5_000));
}

#[tokio::test]
async fn status_alone_fills_direction_and_numbers_without_replacing() {
    status_alone_fills_direction_and_numbers_without_replacing_on(
        Records::open_in_memory().unwrap(),
    )
    .await;
}

async fn status_alone_fills_direction_and_numbers_without_replacing_on(records: Records) {
    let mut update = status("CA3", "busy", 3_000, Some(0));
    update.direction = Some("outbound-api".to_owned());
    update.from = Some("+15550009999".to_owned());
    records.status(update).await.unwrap();
    records
        .call_created(new_call("CA3", "front-desk", 2_000))
        .await
        .unwrap();
    let mut update = status("CA3", "busy", 3_100, None);
    update.from = Some("+10000000000".to_owned());
    records.status(update).await.unwrap();

    let r = records.get("CA3").await.unwrap().unwrap();
    // The webhook's values replace the callback's; a later callback only fills gaps.
    assert_eq!(r.direction.as_deref(), Some("inbound"));
    assert_eq!(r.from.as_deref(), Some("+15550001111"));
    assert_eq!(r.status.as_deref(), Some("busy"));
    assert_eq!(r.answered_at_ms, None);
    assert_eq!(r.status_ended_at_ms, Some(3_000));
    assert_eq!(r.duration_s, Some(0));
    assert_eq!(r.outcome, None);
    assert_eq!(r.created_at_ms, 2_000);
    assert_eq!(history(&r), vec![("ringing", 2_000), ("busy", 3_000)]);
}

#[tokio::test]
async fn a_second_stream_makes_an_ended_call_live_and_a_stale_end_is_ignored() {
    a_second_stream_makes_an_ended_call_live_and_a_stale_end_is_ignored_on(
        Records::open_in_memory().unwrap(),
    )
    .await;
}

async fn a_second_stream_makes_an_ended_call_live_and_a_stale_end_is_ignored_on(records: Records) {
    records.stream_started(started("CA4", 1_000)).await.unwrap();
    records.call_ended(ended("CA4", 2_000)).await.unwrap();
    let mut second = started("CA4", 3_000);
    second.stream_sid = "MZ-second".to_owned();
    records.stream_started(second).await.unwrap();
    let r = records.get("CA4").await.unwrap().unwrap();
    assert_eq!(r.outcome.as_deref(), Some(OUTCOME_IN_PROGRESS));
    assert_eq!(r.ended_at_ms, None);
    assert_eq!(r.reason, None);
    assert_eq!(r.started_at_ms, Some(1_000));
    assert_eq!(r.stream_sid.as_deref(), Some("MZ-second"));

    let mut last = ended("CA4", 4_000);
    last.outcome = "completed".to_owned();
    records.call_ended(last).await.unwrap();
    let mut stale = ended("CA4", 2_500);
    stale.outcome = "failed".to_owned();
    records.call_ended(stale).await.unwrap();
    // A start older than the recorded end does not make the call live again.
    records.stream_started(started("CA4", 1_000)).await.unwrap();
    let r = records.get("CA4").await.unwrap().unwrap();
    assert_eq!(r.outcome.as_deref(), Some("completed"));
    assert_eq!(r.ended_at_ms, Some(4_000));
}

/// Seven calls over three agents (CA01 oldest); CA05 and CA07 live, CA01, CA03, CA06 ended.
async fn seed(records: &Records) {
    let calls = [
        ("CA01", "front-desk", "inbound", 1_000),
        ("CA02", "sales", "outbound-api", 2_000),
        ("CA03", "front-desk", "inbound", 3_000),
        ("CA04", "support", "inbound", 4_000),
        ("CA05", "front-desk", "outbound-api", 5_000),
        // Two calls at the same millisecond: ties go by call_sid, descending.
        ("CA06", "sales", "inbound", 6_000),
        ("CA07", "front-desk", "inbound", 6_000),
    ];
    for (sid, agent, direction, at) in calls {
        let mut call = new_call(sid, agent, at);
        call.direction = Some(direction.to_owned());
        records.call_created(call).await.unwrap();
    }
    // CA06's stream names another agent than routing chose: the stream wins.
    records
        .stream_started(started("CA06", 6_100))
        .await
        .unwrap();
    for sid in ["CA01", "CA03", "CA06"] {
        records
            .status(status(sid, "completed", 9_000, Some(10)))
            .await
            .unwrap();
        records.call_ended(ended(sid, 8_000)).await.unwrap();
    }
    records
        .stream_started(started("CA05", 5_100))
        .await
        .unwrap();
    records
        .stream_started(started("CA07", 6_100))
        .await
        .unwrap();
}

fn filter() -> ListFilter {
    ListFilter::default()
}

#[tokio::test]
async fn list_filters() {
    let dir = TempDir::new("list");
    let (records, _) = Records::open(&dir.db()).unwrap();
    list_filters_on(records).await;
}

async fn list_filters_on(records: Records) {
    seed(&records).await;

    let all = records.list(&filter()).await.unwrap();
    assert_eq!(
        sids(&all),
        ["CA07", "CA06", "CA05", "CA04", "CA03", "CA02", "CA01"]
    );
    // CA06's stream named front-desk, so it moved agents.
    let by_agent = |agent: &str| ListFilter {
        agent: Some(agent.to_owned()),
        ..filter()
    };
    let front = records.list(&by_agent("front-desk")).await.unwrap();
    assert_eq!(sids(&front), ["CA07", "CA06", "CA05", "CA03", "CA01"]);
    let sales = records.list(&by_agent("sales")).await.unwrap();
    assert_eq!(sids(&sales), ["CA02"]);
    let none = records.list(&by_agent("nobody")).await.unwrap();
    assert!(none.is_empty());

    let completed = ListFilter {
        status: Some("completed".to_owned()),
        ..filter()
    };
    assert_eq!(
        sids(&records.list(&completed).await.unwrap()),
        ["CA06", "CA03", "CA01"]
    );
    let live = ListFilter {
        outcome: Some(OUTCOME_IN_PROGRESS.to_owned()),
        ..filter()
    };
    assert_eq!(sids(&records.list(&live).await.unwrap()), ["CA07", "CA05"]);
    let outbound = ListFilter {
        direction: Some("outbound-api".to_owned()),
        ..filter()
    };
    assert_eq!(
        sids(&records.list(&outbound).await.unwrap()),
        ["CA05", "CA02"]
    );
    // since is inclusive, until exclusive.
    let window = ListFilter {
        since_ms: Some(2_000),
        until_ms: Some(5_000),
        ..filter()
    };
    assert_eq!(
        sids(&records.list(&window).await.unwrap()),
        ["CA04", "CA03", "CA02"]
    );
    let combined = ListFilter {
        agent: Some("front-desk".to_owned()),
        direction: Some("inbound".to_owned()),
        since_ms: Some(3_000),
        ..filter()
    };
    assert_eq!(
        sids(&records.list(&combined).await.unwrap()),
        ["CA07", "CA06", "CA03"]
    );
    let backwards = ListFilter {
        since_ms: Some(5_000),
        until_ms: Some(5_000),
        ..filter()
    };
    assert!(matches!(
        records.list(&backwards).await,
        Err(RecordsError::BadFilter(_))
    ));
}

#[tokio::test]
async fn list_limit_is_clamped() {
    assert_eq!(ListFilter::default().limit, DEFAULT_LIST);
    let limited = |limit| ListFilter { limit, ..filter() };
    assert_eq!(limited(0).effective_limit(), 1);
    assert_eq!(limited(7).effective_limit(), 7);
    assert_eq!(limited(MAX_LIST + 1).effective_limit(), MAX_LIST);
    assert_eq!(limited(u32::MAX).effective_limit(), MAX_LIST);

    list_limit_is_clamped_on(Records::open_in_memory().unwrap()).await;
}

async fn list_limit_is_clamped_on(records: Records) {
    let limited = |limit| ListFilter { limit, ..filter() };
    seed(&records).await;
    assert_eq!(records.list(&limited(0)).await.unwrap().len(), 1);
    assert_eq!(
        sids(&records.list(&limited(2)).await.unwrap()),
        ["CA07", "CA06"]
    );
    assert_eq!(records.list(&limited(u32::MAX)).await.unwrap().len(), 7);
}

#[tokio::test]
async fn list_pages_with_a_cursor() {
    list_pages_with_a_cursor_on(Records::open_in_memory().unwrap()).await;
}

async fn list_pages_with_a_cursor_on(records: Records) {
    seed(&records).await;
    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let page = records
            .list(&ListFilter {
                limit: 3,
                before: before.clone(),
                ..filter()
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        before = page.last().map(|r| r.call_sid.clone());
        pages.push(sids(&page).join(","));
        assert!(pages.len() < 10, "paging does not end: {pages:?}");
    }
    assert_eq!(pages, ["CA07,CA06,CA05", "CA04,CA03,CA02", "CA01"]);

    // The cursor combines with filters.
    let front = records
        .list(&ListFilter {
            agent: Some("front-desk".to_owned()),
            limit: 2,
            before: Some("CA06".to_owned()),
            ..filter()
        })
        .await
        .unwrap();
    assert_eq!(sids(&front), ["CA05", "CA03"]);

    let unknown = records
        .list(&ListFilter {
            before: Some("CA-nope".to_owned()),
            ..filter()
        })
        .await;
    match unknown {
        Err(RecordsError::BadFilter(message)) => assert!(message.contains("CA-nope")),
        other => panic!("expected BadFilter, got {other:?}"),
    }
}

#[tokio::test]
async fn reopen_marks_live_calls_interrupted() {
    let dir = TempDir::new("reopen");
    {
        let (records, _) = Records::open(&dir.db()).unwrap();
        // Live: stream started, never ended.
        records
            .call_created(new_call("CA-live", "front-desk", 1_000))
            .await
            .unwrap();
        // Queued without waiting, as the call loop does; flush below waits for it.
        records.stream_started_nowait(started("CA-live", 1_100));
        records.call_ended(end_only("CA-end-only")).await.unwrap();
        // Ended.
        records
            .call_created(new_call("CA-done", "front-desk", 2_000))
            .await
            .unwrap();
        records
            .stream_started(started("CA-done", 2_100))
            .await
            .unwrap();
        records.call_ended(ended("CA-done", 3_000)).await.unwrap();
        // Created only (webhook answered, stream never came): left alone.
        records
            .call_created(new_call("CA-ringing", "front-desk", 4_000))
            .await
            .unwrap();
        records.flush().await.unwrap();
    }
    let before = now_ms();
    let (records, recovery) = Records::open(&dir.db()).unwrap();
    assert_eq!(
        recovery,
        Recovery {
            interrupted: 1,
            schema_version: known_version()
        }
    );
    let live = records.get("CA-live").await.unwrap().unwrap();
    assert_eq!(live.outcome.as_deref(), Some(OUTCOME_INTERRUPTED));
    assert_eq!(live.reason.as_deref(), Some(INTERRUPTED_REASON));
    let at = live.ended_at_ms.expect("ended_at_ms set");
    assert!(
        at >= before && at <= now_ms(),
        "{at} not in [{before}, now]"
    );
    assert_eq!(live.stream_sid.as_deref(), Some("MZCA-live"));

    let done = records.get("CA-done").await.unwrap().unwrap();
    assert_eq!(done.outcome.as_deref(), Some("hung-up"));
    assert_eq!(done.reason.as_deref(), Some("caller hung up"));
    assert_eq!(done.ended_at_ms, Some(3_000));
    assert_eq!(done.transcript, ended("x", 0).transcript);
    assert_eq!(done.frames_out, Some(1234));

    let ringing = records.get("CA-ringing").await.unwrap().unwrap();
    assert_eq!(ringing.outcome, None);
    assert_eq!(ringing.ended_at_ms, None);
    assert_eq!(ringing.status.as_deref(), Some("ringing"));

    let end_only = records.get("CA-end-only").await.unwrap().unwrap();
    assert_eq!(end_only.outcome.as_deref(), Some("plugin-failed"));
    assert_eq!(end_only.failure_kind.as_deref(), Some("trap"));
    assert_eq!(end_only.ended_at_ms, Some(500));
    assert_eq!(end_only.created_at_ms, 500);
    drop(records);

    // Nothing is live any more.
    let (_records, recovery) = Records::open(&dir.db()).unwrap();
    assert_eq!(recovery.interrupted, 0);
}

/// A call seen only by its end (never created nor streamed here).
fn end_only(sid: &str) -> CallEnd {
    CallEnd {
        call_sid: sid.to_owned(),
        ended_at_ms: 500,
        outcome: "plugin-failed".to_owned(),
        reason: "plugin failed to load".to_owned(),
        failure_kind: Some("trap".to_owned()),
        ..CallEnd::default()
    }
}

#[tokio::test]
async fn open_migrates_and_sets_wal() {
    let dir = TempDir::new("schema");
    let (records, recovery) = Records::open(&dir.db()).unwrap();
    assert_eq!(recovery.schema_version, known_version());
    records
        .call_created(new_call("CA1", "front-desk", 1_000))
        .await
        .unwrap();
    records.flush().await.unwrap();

    // Another connection sees the committed row while the writer still runs: it is in the
    // file (WAL), not in this process's memory.
    let conn = raw(&dir.db());
    let version: i64 = user_version(&conn).unwrap();
    assert_eq!(version, i64::try_from(MIGRATIONS.len()).unwrap());
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let agent: String = conn
        .query_row(
            "SELECT agent FROM calls WHERE call_sid = 'CA1'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(agent, "front-desk");
    let indexes: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'calls' AND name LIKE 'calls_by_%' ORDER BY name")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(indexes, ["calls_by_agent", "calls_by_created"]);

    // Reopening applies nothing and keeps the data.
    drop(records);
    let (records, recovery) = Records::open(&dir.db()).unwrap();
    assert_eq!(recovery.schema_version, known_version());
    assert!(records.get("CA1").await.unwrap().is_some());
}

#[tokio::test]
async fn a_newer_schema_is_refused_and_left_untouched() {
    let dir = TempDir::new("newer");
    {
        let conn = raw(&dir.db());
        conn.execute_batch("CREATE TABLE future (x INTEGER); PRAGMA user_version = 99;")
            .unwrap();
    }
    match Records::open(&dir.db()) {
        Err(RecordsError::NewerSchema { found, known }) => {
            assert_eq!(found, 99);
            assert_eq!(known, known_version());
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    let conn = raw(&dir.db());
    assert_eq!(user_version(&conn).unwrap(), 99);
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "delete", "journal mode was changed");
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'calls'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0);
}

#[test]
fn open_names_the_path_when_the_directory_is_missing() {
    let dir = TempDir::new("missing");
    let path = dir.0.join("no-such-dir").join("calls.db");
    match Records::open(&path) {
        Err(error @ RecordsError::Open { .. }) => {
            assert!(error.to_string().contains("no-such-dir"), "{error}");
        }
        other => panic!("expected Open error, got {other:?}"),
    }
}

#[tokio::test]
async fn corrupt_json_reads_as_empty() {
    let dir = TempDir::new("corrupt");
    let (records, _) = Records::open(&dir.db()).unwrap();
    records.call_ended(ended("CA-bad", 2_000)).await.unwrap();
    records.call_ended(ended("CA-good", 1_000)).await.unwrap();
    records.flush().await.unwrap();
    raw(&dir.db())
        .execute_batch(
            "UPDATE calls SET transcript = '[{not json', task = '{', frames_in = -3
             WHERE call_sid = 'CA-bad'",
        )
        .unwrap();

    let bad = records.get("CA-bad").await.unwrap().unwrap();
    assert!(bad.transcript.is_empty());
    assert_eq!(bad.task, None);
    assert_eq!(bad.frames_in, None);
    assert_eq!(bad.turn_latency.len(), 1);
    assert_eq!(bad.outcome.as_deref(), Some("hung-up"));
    let all = records.list(&filter()).await.unwrap();
    assert_eq!(sids(&all), ["CA-bad", "CA-good"]);
    assert_eq!(all[1].transcript.len(), 3);

    // A status update on the row still works (history is intact JSON here).
    records
        .status(status("CA-bad", "completed", 2_100, Some(5)))
        .await
        .unwrap();
    let bad = records.get("CA-bad").await.unwrap().unwrap();
    assert_eq!(bad.status.as_deref(), Some("completed"));
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn from_query_parses_every_key() {
    let f = ListFilter::from_query(&pairs(&[
        ("agent", "front-desk"),
        ("status", "completed"),
        ("outcome", "hung-up"),
        ("direction", "inbound"),
        ("since", "1000"),
        ("until", "2000"),
        ("limit", "20"),
        ("before", "CA123"),
    ]))
    .unwrap();
    assert_eq!(
        f,
        ListFilter {
            agent: Some("front-desk".to_owned()),
            status: Some("completed".to_owned()),
            outcome: Some("hung-up".to_owned()),
            direction: Some("inbound".to_owned()),
            since_ms: Some(1000),
            until_ms: Some(2000),
            limit: 20,
            before: Some("CA123".to_owned()),
        }
    );
    assert_eq!(ListFilter::from_query(&[]).unwrap(), ListFilter::default());
    let blank =
        ListFilter::from_query(&pairs(&[("agent", ""), ("since", " "), ("limit", "")])).unwrap();
    assert_eq!(blank, ListFilter::default());
    let huge = ListFilter::from_query(&pairs(&[("limit", "99999999999")])).unwrap();
    assert_eq!(huge.effective_limit(), MAX_LIST);
}

#[test]
fn from_query_rejects_bad_input() {
    let error = |list: &[(&str, &str)]| match ListFilter::from_query(&pairs(list)) {
        Err(RecordsError::BadFilter(message)) => message,
        other => panic!("expected BadFilter for {list:?}, got {other:?}"),
    };
    assert!(error(&[("agnet", "x")]).contains("unknown key \"agnet\""));
    assert!(error(&[("agnet", "x")]).contains("expected one of agent"));
    assert!(error(&[("limit", "ten")]).contains("limit"));
    assert!(error(&[("limit", "-1")]).contains("\"-1\""));
    assert!(error(&[("since", "yesterday")]).contains("since: expected unix epoch milliseconds"));
    assert!(error(&[("until", "1.5")]).contains("until"));
    assert!(error(&[("agent", "a"), ("agent", "b")]).contains("more than once"));
    assert!(error(&[("since", "10"), ("until", "5")]).contains("before until"));
}

#[test]
fn status_ranks_and_history_merge() {
    let mut h = Vec::new();
    merge_status(&mut h, "completed", 30);
    merge_status(&mut h, "ringing", 10);
    merge_status(&mut h, "ringing", 5);
    merge_status(&mut h, "in-progress", 20);
    let got: Vec<(&str, i64)> = h.iter().map(|c| (c.status.as_str(), c.at_ms)).collect();
    assert_eq!(
        got,
        [("ringing", 5), ("in-progress", 20), ("completed", 30)]
    );
    assert_eq!(
        current_status(&h).map(|c| c.status.as_str()),
        Some("completed")
    );
    for i in 0..(MAX_STATUS_HISTORY + 5) {
        merge_status(&mut h, &format!("made-up-{i}"), 40);
    }
    assert_eq!(h.len(), MAX_STATUS_HISTORY);
    assert!(is_terminal_status("no-answer"));
    assert!(!is_terminal_status("in-progress"));
}

mod postgres;

#[tokio::test]
async fn tasks_and_token_buckets_work_on_sqlite_too() {
    let records = Records::open_in_memory().unwrap();
    postgres::tasks_are_taken_once(&records, &records.clone()).await;
    postgres::buckets_are_shared(&records, &records.clone()).await;
}
