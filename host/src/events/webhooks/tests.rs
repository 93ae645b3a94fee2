//! The deliverer against real HTTP receivers on loopback, with a fast [`Policy`].

use std::sync::Mutex;

use axum::http::{HeaderMap, StatusCode};
use tokio::sync::Semaphore;

use super::*;
use crate::config::test_support::build_ok;
use crate::events::EventKind;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Seen {
    id: String,
    timestamp: i64,
    signature: String,
    body: serde_json::Value,
    raw: String,
}

/// How a receiver answers.
#[derive(Clone, Copy)]
enum Answer {
    /// 204 at once.
    Ok,
    /// These statuses for the first requests, then 204.
    First(StatusCode, usize),
    /// Waits for a permit of the receiver's gate (forever if none comes), then 204.
    Gated,
}

struct Receiver {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    gate: Arc<Semaphore>,
    _task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(answer: Answer) -> Self {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let gate = Arc::new(Semaphore::new(0));
        let (seen2, gate2) = (Arc::clone(&seen), Arc::clone(&gate));
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let (seen, gate) = (Arc::clone(&seen2), Arc::clone(&gate2));
                async move {
                    let header = |n: &str| {
                        headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    let n = {
                        let mut seen = seen.lock().unwrap();
                        seen.push(Seen {
                            id: header("webhook-id"),
                            timestamp: header("webhook-timestamp").parse().unwrap_or(0),
                            signature: header("webhook-signature"),
                            body: serde_json::from_str(&body).unwrap_or_default(),
                            raw: body,
                        });
                        seen.len()
                    };
                    match answer {
                        Answer::Ok => StatusCode::NO_CONTENT,
                        Answer::First(status, count) if n <= count => status,
                        Answer::First(..) => StatusCode::NO_CONTENT,
                        Answer::Gated => {
                            let _ = gate.acquire().await.map(|p| p.forget());
                            StatusCode::NO_CONTENT
                        }
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url,
            seen,
            gate,
            _task: task,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits (up to 5 s) until `n` requests came.
    async fn wait_for(&self, n: usize) -> Vec<Seen> {
        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let seen = self.seen();
            if seen.len() >= n || tokio::time::Instant::now() > until {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn fast() -> Policy {
    Policy {
        timeout: Duration::from_millis(300),
        backoff: vec![Duration::from_millis(50), Duration::from_millis(50)],
        queue: QUEUE_CAPACITY,
        in_flight: MAX_IN_FLIGHT,
        idle: IDLE_EXIT,
    }
}

/// A config whose agents `a` and `b` send their events to these URLs (`None`: no webhooks),
/// `a` with `types`.
fn config(a: Option<&str>, b: Option<&str>, a_types: &str) -> Arc<Config> {
    let events = |url: Option<&str>, types: &str| {
        url.map(|u| format!("[agents.events]\nurl = \"{u}\"\nsecret = \"{SECRET}\"\n{types}\n"))
            .unwrap_or_default()
    };
    let text = format!(
        "[plugins.echo]\npath = \"echo.wasm\"\n\n[[agents]]\nname = \"a\"\nrealtime = {{ plugin = \"echo\" }}\n{}\n[[agents]]\nname = \"b\"\nmatch = {{ x = \"b\" }}\nrealtime = {{ plugin = \"echo\" }}\n{}",
        events(a, a_types),
        events(b, "")
    );
    let (_dir, config) = build_ok(&text);
    Arc::new(config)
}

fn call(bus: &EventBus, sid: &str, agent: &str) -> crate::events::CallEvents {
    let mut call = bus.call(sid, Some("MZ1"));
    call.set_agent(agent);
    call
}

fn text(n: usize) -> EventKind {
    EventKind::CallerTranscript {
        text: format!("line {n}"),
        is_final: true,
    }
}

fn verify(seen: &Seen) -> bool {
    let secret = WebhookSecret::parse(SECRET).unwrap();
    secret.sign(&seen.id, seen.timestamp, &seen.raw) == seen.signature
}

#[tokio::test]
async fn delivers_each_agents_events_signed_and_in_order() {
    let receiver = Receiver::start(Answer::Ok).await;
    let bus = EventBus::new(64);
    let config = config(
        Some(&receiver.url),
        None,
        "types = [\"caller.transcript\", \"call.ended\"]",
    );
    spawn_with(&bus, move || Some(Arc::clone(&config)), fast()).unwrap();
    let a = call(&bus, "CA1", "a");
    let b = call(&bus, "CA2", "b");
    for n in 0..20 {
        a.emit(text(n));
        b.emit(text(n));
    }
    a.emit(EventKind::BargeIn { heard_ms: 5 });
    let seen = receiver.wait_for(20).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen_now = receiver.seen();
    assert_eq!(
        seen_now.len(),
        20,
        "only agent a's transcripts: {seen_now:#?}"
    );
    for (n, s) in seen.iter().enumerate() {
        assert!(verify(s), "bad signature on {s:?}");
        assert_eq!(s.body["call_sid"], "CA1");
        assert_eq!(s.body["type"], "caller.transcript");
        assert_eq!(s.body["data"]["text"], format!("line {n}"), "out of order");
        assert_eq!(s.body["id"], s.id.as_str());
        let now = crate::records::now_ms() / 1000;
        assert!((now - s.timestamp).abs() < 5, "{}", s.timestamp);
    }
}

#[tokio::test]
async fn retries_5xx_and_429_with_the_same_id_but_not_4xx() {
    for (status, attempts) in [
        (StatusCode::SERVICE_UNAVAILABLE, 3),
        (StatusCode::TOO_MANY_REQUESTS, 3),
        (StatusCode::BAD_REQUEST, 1),
    ] {
        // Two refusals: the third attempt (the last of `fast`) gets through.
        let receiver = Receiver::start(Answer::First(status, 2)).await;
        let bus = EventBus::new(64);
        let config = config(Some(&receiver.url), None, "");
        spawn_with(&bus, move || Some(Arc::clone(&config)), fast()).unwrap();
        call(&bus, "CA1", "a").emit(text(0));
        let seen = receiver.wait_for(attempts).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let seen_now = receiver.seen();
        assert_eq!(seen_now.len(), attempts, "{status}: {seen:#?}");
        assert!(seen.iter().all(|s| s.id == seen[0].id), "{status}: one id");
    }
}

#[tokio::test]
async fn a_hung_receiver_holds_up_neither_other_destinations_nor_its_other_calls_beyond_the_limit()
{
    let hung = Receiver::start(Answer::Gated).await;
    let good = Receiver::start(Answer::Ok).await;
    let bus = EventBus::new(256);
    let config = config(Some(&hung.url), Some(&good.url), "");
    let mut policy = fast();
    policy.timeout = Duration::from_secs(30);
    spawn_with(&bus, move || Some(Arc::clone(&config)), policy).unwrap();
    let started = tokio::time::Instant::now();
    for n in 0..50 {
        call(&bus, &format!("CA{n}"), "a").emit(text(n));
        call(&bus, "CB", "b").emit(text(n));
    }
    let seen = good.wait_for(50).await;
    assert_eq!(seen.len(), 50);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The hung receiver has at most MAX_IN_FLIGHT requests, one per call.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(hung.seen().len(), MAX_IN_FLIGHT);
}

#[tokio::test]
async fn a_full_queue_drops_the_oldest_events() {
    let receiver = Receiver::start(Answer::Gated).await;
    let bus = EventBus::new(64);
    let config = config(Some(&receiver.url), None, "");
    let mut policy = fast();
    policy.timeout = Duration::from_secs(30);
    policy.queue = 2;
    spawn_with(&bus, move || Some(Arc::clone(&config)), policy).unwrap();
    let a = call(&bus, "CA1", "a");
    a.emit(text(0));
    // The first is in flight before the rest come.
    receiver.wait_for(1).await;
    for n in 1..6 {
        a.emit(text(n));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    receiver.gate.add_permits(10);
    let seen = receiver.wait_for(3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let texts: Vec<String> = receiver
        .seen()
        .iter()
        .map(|s| {
            s.body["data"]["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(texts, ["line 0", "line 4", "line 5"], "{seen:#?}");
}

#[tokio::test]
async fn a_reload_applies_to_the_next_events() {
    let first = Receiver::start(Answer::Ok).await;
    let second = Receiver::start(Answer::Ok).await;
    let bus = EventBus::new(64);
    let current = Arc::new(arc_swap::ArcSwap::new(config(Some(&first.url), None, "")));
    let reading = Arc::clone(&current);
    spawn_with(&bus, move || Some(reading.load_full()), fast()).unwrap();
    let a = call(&bus, "CA1", "a");
    a.emit(text(0));
    assert_eq!(first.wait_for(1).await.len(), 1);
    current.store(config(Some(&second.url), None, ""));
    a.emit(text(1));
    assert_eq!(second.wait_for(1).await.len(), 1);
    current.store(config(None, None, ""));
    a.emit(text(2));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!((first.seen().len(), second.seen().len()), (1, 1));
}

#[tokio::test]
async fn a_failure_says_why_without_the_urls_query() {
    // A port nothing listens on (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url: reqwest::Url = format!("http://127.0.0.1:{port}/hook?token=sekrit")
        .parse()
        .unwrap();
    let bus = EventBus::new(8);
    let mut events = bus.sink("test", 8);
    call(&bus, "CA1", "a").emit(text(0));
    let delivery = Delivery {
        event: events.recv().await.unwrap(),
        secret: WebhookSecret::parse(SECRET).unwrap(),
    };
    let client = reqwest::Client::new();
    let error = deliver(&client, url, &delivery, &fast()).await.unwrap_err();
    assert!(error.starts_with("request failed"), "{error}");
    assert!(error.to_lowercase().contains("refused"), "{error}");
    assert!(!error.contains("sekrit"), "{error}");
}
