use super::*;
use crate::plugin::budget::{TIMER_EVENT_BURST, TIMER_EVENTS_PER_SECOND};

fn io(hosts: &[&str]) -> SessionIo {
    SessionIo::new(
        "p",
        Arc::new(IoPolicy {
            allowed_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            secrets: BTreeMap::from([("api_key".to_string(), Secret::new("sk-1".into()))]),
            allow_private_destinations: false,
        }),
    )
}

#[test]
fn allowed_hosts_match_exactly_by_port_and_by_subdomain() {
    let io = io(&["api.openai.com", "127.0.0.1:9000", "*.example.com"]);
    assert!(io.policy.allows("api.openai.com", 443));
    assert!(!io.policy.allows("evil-api.openai.com", 443));
    assert!(io.policy.allows("127.0.0.1", 9000));
    assert!(!io.policy.allows("127.0.0.1", 9001));
    assert!(io.policy.allows("eu.example.com", 443));
    assert!(!io.policy.allows("example.com", 443));
    assert!(!io.policy.allows("badexample.com", 443));
}

#[test]
fn calls_are_checked_at_once_and_queued() {
    let mut io = io(&["api.openai.com"]);
    assert!(matches!(
        io.ws_connect("wss://evil.com/x".into(), vec![]),
        Err(IoError::Denied(_))
    ));
    assert!(matches!(
        io.ws_connect("https://api.openai.com/x".into(), vec![]),
        Err(IoError::Invalid(_))
    ));
    let id = io
        .ws_connect("wss://API.openai.com/v1/realtime".into(), vec![])
        .unwrap();
    io.ws_send(id, Payload::Text("{}".into())).unwrap();
    assert!(matches!(
        io.ws_send(id + 1, Payload::Text("{}".into())),
        Err(IoError::Invalid(_))
    ));
    assert_eq!(io.take_commands().len(), 2);
    io.observe(&IoEvent::WsClosed {
        socket: id,
        code: 1000,
        reason: String::new(),
    });
    assert!(
        io.ws_send(id, Payload::Text("{}".into())).is_err(),
        "closed"
    );
    assert_eq!(io.secret("api_key").as_deref(), Some("sk-1"));
    assert_eq!(io.secret("other"), None);
}

#[test]
fn caps_hold() {
    let mut io = io(&["h"]);
    for _ in 0..MAX_SOCKETS_PER_SESSION {
        io.ws_connect("ws://h/".into(), vec![]).unwrap();
    }
    assert!(matches!(
        io.ws_connect("ws://h/".into(), vec![]),
        Err(IoError::Limit(_))
    ));
    for _ in 0..MAX_TIMERS_PER_SESSION {
        io.set_timer(10).unwrap();
    }
    assert!(matches!(io.set_timer(10), Err(IoError::Limit(_))));
}

#[tokio::test]
async fn timers_fire_and_cancel() {
    let mut io = io(&[]);
    let mut driver = IoDriver::new();
    let a = io.set_timer(5).unwrap();
    let b = io.set_timer(1).unwrap();
    io.cancel(b);
    for c in io.take_commands() {
        driver.execute(c);
    }
    assert_eq!(driver.next_event().await, IoEvent::Timer(a));
}

/// A plugin that sets and lets timers fire in a loop leaves nothing behind: each fired
/// timer's handle is released when its event is taken, not when the call ends. (Paused time:
/// the pacer spaces the events.)
#[tokio::test(start_paused = true)]
async fn fired_timers_release_their_handles() {
    let mut io = io(&[]);
    let mut driver = IoDriver::new();
    for _ in 0..10_000 {
        let id = io.set_timer(0).unwrap();
        for c in io.take_commands() {
            driver.execute(c);
        }
        let event = driver.next_event().await;
        assert_eq!(event, IoEvent::Timer(id));
        io.observe(&event);
    }
    assert_eq!(driver.handles(), 0);
    assert!(driver.tasks.len() <= 1, "{} tasks kept", driver.tasks.len());
}

/// A storm — every one of a session's 64 timers re-armed at zero delay as it fires — is
/// handed to the plugin at [`TIMER_EVENTS_PER_SECOND`] after one burst, not as fast as the call
/// task can spin; an event of another kind passes the held timers at once.
#[tokio::test(start_paused = true)]
async fn a_timer_storm_is_paced_and_other_events_pass_it() {
    let mut io = io(&[]);
    let mut driver = IoDriver::new();
    for _ in 0..MAX_TIMERS_PER_SESSION {
        io.set_timer(0).unwrap();
    }
    driver.execute_all(io.take_commands());
    let started = tokio::time::Instant::now();
    let mut delivered = 0u32;
    while started.elapsed() < Duration::from_secs(2) {
        let event = driver.next_event().await;
        assert!(matches!(event, IoEvent::Timer(_)), "{event:?}");
        io.observe(&event);
        delivered += 1;
        io.set_timer(0).unwrap();
        driver.execute_all(io.take_commands());
    }
    let most = TIMER_EVENT_BURST + 2 * TIMER_EVENTS_PER_SECOND + 1;
    let least = 2 * TIMER_EVENTS_PER_SECOND - 1;
    assert!(
        (least..=most).contains(&delivered),
        "{delivered} timer events in 2 s (expected {least}..={most})"
    );

    // Timers are held now; an HTTP completion is handed over before them, at once.
    tokio::time::sleep(Duration::from_millis(1)).await;
    driver
        .events_tx
        .send(IoEvent::HttpDone(u32::MAX))
        .await
        .unwrap();
    let before = tokio::time::Instant::now();
    loop {
        match driver.next_event().await {
            IoEvent::HttpDone(id) => {
                assert_eq!(id, u32::MAX);
                break;
            }
            IoEvent::Timer(_) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(
        before.elapsed() < Duration::from_millis(10),
        "{:?}",
        before.elapsed()
    );
}

/// A timer cancelled after it fired but while the pacer held it is never handed over.
#[tokio::test(start_paused = true)]
async fn a_held_timer_can_still_be_cancelled() {
    let mut io = io(&[]);
    let mut driver = IoDriver::new();
    driver.pacer = TimerPacer::default();
    // Spend the burst.
    for _ in 0..TIMER_EVENT_BURST {
        let id = io.set_timer(0).unwrap();
        driver.execute_all(io.take_commands());
        let event = driver.next_event().await;
        assert_eq!(event, IoEvent::Timer(id));
        io.observe(&event);
    }
    let doomed = io.set_timer(0).unwrap();
    let kept = io.set_timer(1).unwrap();
    driver.execute_all(io.take_commands());
    // Both fire and are held; the first is cancelled before its turn.
    let first = tokio::time::timeout(Duration::from_micros(500), driver.next_event()).await;
    assert!(first.is_err(), "the pacer should hold the timer: {first:?}");
    io.cancel(doomed);
    driver.execute_all(io.take_commands());
    assert_eq!(driver.next_event().await, IoEvent::Timer(kept));
}

/// Idle until a command starts work, busy while its task runs or its event waits, idle
/// again once the event is taken and the task has ended.
#[tokio::test]
async fn the_driver_is_idle_only_when_no_event_can_come() {
    let mut io = io(&[]);
    let mut driver = IoDriver::new();
    assert!(driver.is_idle());
    let timer = io.set_timer(1).unwrap();
    for c in io.take_commands() {
        driver.execute(c);
    }
    assert!(!driver.is_idle(), "a timer is running");
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!driver.is_idle(), "its event is queued");
    assert_eq!(driver.next_event().await, IoEvent::Timer(timer));
    tokio::time::timeout(Duration::from_secs(5), async {
        while !driver.is_idle() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the driver turns idle once the timer task has ended");
}

/// An HTTP response streams back as it arrives: head, each chunk of a server-sent-event
/// stream separately, then done — from a real HTTP/1.1 server on loopback.
#[tokio::test]
async fn http_response_streams_chunk_by_chunk() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = vec![0u8; 4096];
        let n = socket.read(&mut request).await.unwrap();
        assert!(String::from_utf8_lossy(&request[..n]).starts_with("POST /v1/chat HTTP/1.1"));
        socket
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        for event in ["data: one\n\n", "data: two\n\n"] {
            let chunk = format!("{:x}\r\n{event}\r\n", event.len());
            socket.write_all(chunk.as_bytes()).await.unwrap();
            socket.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        socket.write_all(b"0\r\n\r\n").await.unwrap();
    });
    let mut io = io(&["127.0.0.1"]);
    let id = io
        .http_send(HttpRequest {
            method: "POST".into(),
            url: format!("http://127.0.0.1:{port}/v1/chat"),
            headers: vec![("content-type".into(), "application/json".into())],
            body: b"{}".to_vec(),
        })
        .unwrap();
    let mut driver = IoDriver::new();
    for c in io.take_commands() {
        driver.execute(c);
    }
    let IoEvent::HttpHead {
        request,
        status,
        headers,
    } = driver.next_event().await
    else {
        panic!("head first");
    };
    assert_eq!((request, status), (id, 200));
    assert!(headers.contains(&("content-type".into(), "text/event-stream".into())));
    let mut chunks = Vec::new();
    loop {
        match driver.next_event().await {
            IoEvent::HttpChunk { data, .. } => chunks.push(String::from_utf8(data).unwrap()),
            IoEvent::HttpDone(done) => {
                assert_eq!(done, id);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        chunks,
        ["data: one\n\n", "data: two\n\n"],
        "one event per chunk, as sent"
    );
}

/// A tiny HTTP/1.1 server on loopback that answers every request with `response` and
/// counts the requests it got.
async fn one_answer_server(response: String) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    one_answer_server_on(std::net::Ipv4Addr::LOCALHOST.into(), response).await
}

/// [`one_answer_server`] on `ip`.
async fn one_answer_server_on(
    ip: std::net::IpAddr,
    response: String,
) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let response = response.clone();
            tokio::spawn(async move {
                let mut request = vec![0u8; 4096];
                let _ = socket.read(&mut request).await;
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (port, hits)
}

/// A plugin allowed only host A gets A's redirect to host B as a 302 of its own; the host
/// never fetches B (which stands for an internal service) — for HTTP and for a WebSocket
/// upgrade answered with a redirect.
#[tokio::test]
async fn a_redirect_to_a_host_not_allowed_is_not_followed() {
    let (secret_port, secret_hits) =
        one_answer_server("HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecret".into()).await;
    let location = format!("http://127.0.0.1:{secret_port}/internal-secret");
    let (allowed_port, allowed_hits) = one_answer_server(format!(
        "HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\n\r\n"
    ))
    .await;
    let mut io = io(&[&format!("127.0.0.1:{allowed_port}")]);
    let mut driver = IoDriver::new();
    let request = io
        .http_send(HttpRequest {
            method: "GET".into(),
            url: format!("http://127.0.0.1:{allowed_port}/"),
            headers: vec![],
            body: vec![],
        })
        .unwrap();
    let socket = io
        .ws_connect(format!("ws://127.0.0.1:{allowed_port}/ws"), vec![])
        .unwrap();
    for c in io.take_commands() {
        driver.execute(c);
    }
    let (mut head, mut done, mut ws_failed) = (None, false, false);
    while !(done && ws_failed) {
        let event = tokio::time::timeout(Duration::from_secs(10), driver.next_event())
            .await
            .expect("events arrive");
        match event {
            IoEvent::HttpHead {
                request: r,
                status,
                headers,
            } if r == request => head = Some((status, headers)),
            IoEvent::HttpChunk { request: r, data } if r == request => {
                assert!(!data.windows(6).any(|w| w == b"secret"), "B's body leaked");
            }
            IoEvent::HttpDone(r) if r == request => done = true,
            IoEvent::Failed { target, .. } if target == socket => ws_failed = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    let (status, headers) = head.expect("a head");
    assert_eq!(status, 302, "the redirect reaches the plugin as it came");
    assert!(headers.contains(&("location".to_string(), location)));
    assert_eq!(allowed_hits.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(
        secret_hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the host fetched the redirect target"
    );
}

#[test]
fn private_addresses_are_told_apart_from_public_ones() {
    for private in [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fd00::1",
        "fe80::1",
        "::ffff:10.0.0.1",
    ] {
        assert!(is_private(private.parse().unwrap()), "{private}");
    }
    for public in ["8.8.8.8", "104.18.7.192", "2606:4700::1", "::ffff:1.1.1.1"] {
        assert!(!is_private(public.parse().unwrap()), "{public}");
    }
    let addr = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
    // A name that resolves only to private addresses is refused; mixed keeps the public.
    let error = public_only("metadata.internal", [addr("169.254.169.254:80")]).unwrap_err();
    assert!(error.contains("metadata.internal"), "{error}");
    assert_eq!(
        public_only(
            "api.example.com",
            [addr("10.0.0.1:443"), addr("1.2.3.4:443")]
        )
        .unwrap(),
        [addr("1.2.3.4:443")]
    );
    // `localhost` names the loopback explicitly.
    assert_eq!(
        public_only("localhost", [addr("127.0.0.1:80")]).unwrap(),
        [addr("127.0.0.1:80")]
    );
}

/// Through the driver: a name that resolves to the loopback — this machine's host name,
/// which Debian's and containers' /etc/hosts map to 127.0.x.1 or a private address — is
/// refused when private destinations are off, and reached when they are on.
#[tokio::test]
async fn names_resolving_to_private_addresses_are_refused_unless_allowed() {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("the host name")
        .trim()
        .to_ascii_lowercase();
    let resolved: Vec<_> = tokio::net::lookup_host((name.as_str(), 0))
        .await
        .expect("the host name resolves")
        .collect();
    assert!(
        resolved.iter().all(|a| is_private(a.ip())),
        "precondition: {name} resolves to private addresses, not {resolved:?}"
    );
    // Serve on the address the name resolves to first (a local one, by the check above).
    let (port, hits) = one_answer_server_on(
        resolved[0].ip(),
        "HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n".into(),
    )
    .await;
    for allow in [false, true] {
        let mut io = SessionIo::new(
            "p",
            Arc::new(IoPolicy {
                allowed_hosts: vec![name.clone()],
                secrets: BTreeMap::new(),
                allow_private_destinations: allow,
            }),
        );
        let mut driver = IoDriver::new();
        io.http_send(HttpRequest {
            method: "GET".into(),
            url: format!("http://{name}:{port}/"),
            headers: vec![],
            body: vec![],
        })
        .unwrap();
        for c in io.take_commands() {
            driver.execute(c);
        }
        let event = tokio::time::timeout(Duration::from_secs(10), driver.next_event())
            .await
            .unwrap();
        match (allow, event) {
            (false, IoEvent::Failed { error, .. }) => {
                assert!(error.contains("private"), "{error}")
            }
            (true, IoEvent::HttpHead { status, .. }) => assert_eq!(status, 204),
            (allow, other) => panic!("allow={allow}: {other:?}"),
        }
    }
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}
