use super::*;

fn transcript(text: &str) -> EventKind {
    EventKind::CallerTranscript {
        text: text.into(),
        is_final: true,
    }
}

fn parse(event: &Event) -> Value {
    serde_json::from_str(&event.json).expect("an event is JSON")
}

#[tokio::test]
async fn an_event_carries_the_documented_envelope() {
    let bus = EventBus::new(16);
    let mut sub = bus.subscribe(None).live;
    let mut call = bus.call("CA1", Some("MZ1"));
    call.set_agent("front-desk");
    call.emit(transcript("hello"));
    let event = sub.recv().await.unwrap();
    let v = parse(&event);
    assert_eq!(v["id"], format!("{}-1", bus.boot()));
    assert_eq!(v["type"], "caller.transcript");
    assert_eq!(v["call_sid"], "CA1");
    assert_eq!(v["stream_sid"], "MZ1");
    assert_eq!(v["agent"], "front-desk");
    assert_eq!(v["data"], json!({"text": "hello", "final": true}));
    let time = v["time"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok(), "{time}");
    assert!(time.ends_with('Z'), "{time}");
}

#[test]
fn every_kind_is_a_documented_type() {
    let kinds = [
        EventKind::CallStarted {
            from: "+1".into(),
            to: "+2".into(),
            direction: Direction::Inbound,
            mode: "echo",
            plugins: vec!["echo".into()],
        },
        EventKind::SpeechStarted { at_ms: 1 },
        EventKind::SpeechStopped {
            at_ms: 2,
            speech_ms: 1,
        },
        transcript("x"),
        EventKind::AgentText {
            text: "y".into(),
            is_final: false,
        },
        EventKind::AudioStarted { at_ms: 3 },
        EventKind::BargeIn { heard_ms: 4 },
        EventKind::ToolCall {
            id: "c".into(),
            name: "t".into(),
            arguments: json!({}),
        },
        EventKind::ToolResult {
            id: "c".into(),
            name: "t".into(),
            ok: true,
            duration_ms: 5,
        },
        EventKind::TurnLatency {
            turn: 1,
            latency: crate::call::pipeline::TurnLatency::default(),
        },
        EventKind::PluginFailed {
            plugin: None,
            stage: None,
            kind: "trap",
            message: "m".into(),
        },
        EventKind::CallEnded {
            outcome: "completed",
            reason: "r".into(),
            duration_ms: 6,
            frames_in: 7,
            frames_out: 8,
            first_audio_ms: None,
        },
    ];
    let names: Vec<_> = kinds.iter().map(EventKind::name).collect();
    assert_eq!(names, TYPES);
    assert_eq!(kinds[0].data()["direction"], "inbound");
}

#[test]
fn resuming_after_an_id_returns_exactly_the_later_events() {
    let bus = EventBus::new(8);
    let call = bus.call("CA1", None);
    for n in 0..5 {
        call.emit(transcript(&n.to_string()));
    }
    let sub = bus.subscribe(Some(&format!("{}-2", bus.boot())));
    assert_eq!(sub.lost, 0);
    let seqs: Vec<u64> = sub.backlog.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [3, 4, 5]);
    // Up to date: nothing buffered to send.
    let sub = bus.subscribe(Some(&format!("{}-5", bus.boot())));
    assert_eq!((sub.lost, sub.backlog.len()), (0, 0));
}

#[test]
fn an_id_older_than_the_buffer_reports_the_loss() {
    let bus = EventBus::new(4);
    let call = bus.call("CA1", None);
    for n in 0..10 {
        call.emit(transcript(&n.to_string()));
    }
    // Buffer holds 7..=10; the client saw 3: 4, 5 and 6 are gone.
    let sub = bus.subscribe(Some(&format!("{}-3", bus.boot())));
    assert_eq!(sub.lost, 3);
    let seqs: Vec<u64> = sub.backlog.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [7, 8, 9, 10]);
}

#[test]
fn an_id_of_another_run_replays_the_buffer_and_says_so() {
    let bus = EventBus::new(4);
    bus.call("CA1", None).emit(transcript("a"));
    let sub = bus.subscribe(Some("deadbeef-99"));
    assert!(sub.lost >= 1);
    assert_eq!(sub.backlog.len(), 1);
    let sub = bus.subscribe(Some("garbage"));
    assert_eq!(sub.backlog.len(), 1);
}

#[tokio::test]
async fn a_full_sink_drops_without_blocking_and_a_closed_one_is_forgotten() {
    let bus = EventBus::new(4);
    let mut sink = bus.sink("test", 2);
    let closed = bus.sink("gone", 1);
    drop(closed);
    let call = bus.call("CA1", None);
    for n in 0..5 {
        call.emit(transcript(&n.to_string()));
    }
    assert_eq!(sink.recv().await.unwrap().seq, 1);
    assert_eq!(sink.recv().await.unwrap().seq, 2);
    assert!(sink.try_recv().is_err(), "3..5 were dropped, not queued");
    assert_eq!(bus.lock().sinks.len(), 1);
}

#[tokio::test]
async fn the_sse_stream_filters_and_frames_events() {
    use futures_util::StreamExt as _;
    let bus = EventBus::new(16);
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    let mut a = bus.call("CA1", None);
    a.set_agent("alpha");
    let mut b = bus.call("CA2", None);
    b.set_agent("beta");
    a.emit(transcript("from a"));
    b.emit(transcript("from b"));
    let sub = bus.subscribe(Some(&format!("{}-0", bus.boot())));
    let filter = sse::Filter {
        call_sid: None,
        agent: Some("beta".into()),
    };
    let stream = sse::stream(sub, filter, closing);
    tokio::pin!(stream);
    b.emit(transcript("live b"));
    a.emit(transcript("live a"));
    let mut seen = Vec::new();
    for _ in 0..2 {
        let event = stream.next().await.unwrap().unwrap();
        seen.push(format!("{event:?}"));
    }
    assert!(
        seen[0].contains("from b") && seen[1].contains("live b"),
        "{seen:?}"
    );
    closing_tx.send_replace(true);
    assert!(
        stream.next().await.is_none(),
        "the stream ends when the server closes"
    );
}
