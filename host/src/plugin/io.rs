//! Host I/O on a plugin's behalf: WebSockets, HTTP with streamed responses, timers, secrets.
//!
//! Two halves, so that a plugin never blocks and the call task owns every socket:
//! - [`SessionIo`] lives beside the plugin session (in the WASM store, or the native session).
//!   The plugin's host calls land here synchronously: each is checked at once — the URL's host
//!   against the agent's `allowed_hosts`, the per-session caps — and either refused with an
//!   [`IoError`] or given a handle and queued as an [`IoCommand`].
//! - [`IoDriver`] lives in the call task. After every plugin call the task drains the session's
//!   commands into the driver, which runs them as tasks of its own (a `JoinSet`: they end with
//!   the call) and reports completions as [`IoEvent`]s on a bounded channel; the call task feeds
//!   each one to the session as `io(event)`.
//!
//! Denied requests are logged with the host name (never with headers, bodies or secrets).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::Message as WsMessage;

use crate::config::Secret;

/// Most WebSockets one session may have open (or opening) at once.
pub const MAX_SOCKETS_PER_SESSION: usize = 4;
/// Most HTTP requests one session may have in flight at once.
pub const MAX_REQUESTS_PER_SESSION: usize = 16;
/// Most timers one session may have pending at once.
pub const MAX_TIMERS_PER_SESSION: usize = 64;
/// Most I/O commands one plugin call may queue (a reply's worth of `ws-send`s is far less).
pub const MAX_COMMANDS_PER_CALL: usize = 4_096;
/// Events waiting for the call task; a full queue makes socket readers wait (backpressure).
pub const EVENT_QUEUE: usize = 256;
/// Messages waiting to be written to one WebSocket; past it `ws-send`s fail with an event.
pub const SOCKET_QUEUE: usize = 1_024;
/// Largest message accepted from an upstream WebSocket (bytes). Realtime APIs send audio in
/// deltas of kilobytes; a peer sending more is broken or hostile.
pub const MAX_UPSTREAM_MESSAGE_BYTES: usize = 4 << 20;
/// Longest a WebSocket or HTTP connection may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A WebSocket message (WIT `payload`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
}

/// Why the host refused an I/O call (WIT `io-error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IoError {
    /// The host is not in the agent's `allowed_hosts`.
    #[error("denied: {0}")]
    Denied(String),
    /// A per-session cap was reached.
    #[error("limit: {0}")]
    Limit(String),
    /// Malformed request, or an unknown or closed handle.
    #[error("invalid: {0}")]
    Invalid(String),
}

/// An HTTP request (WIT `http-request`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// `GET`, `POST`…
    pub method: String,
    /// Absolute `http(s)://` URL.
    pub url: String,
    /// Header names and values.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// The completion of something a plugin asked for (WIT `io-event`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoEvent {
    /// A WebSocket opened.
    WsOpened(u32),
    /// A WebSocket message arrived.
    WsMessage {
        /// The socket.
        socket: u32,
        /// The message.
        message: Payload,
    },
    /// A WebSocket closed.
    WsClosed {
        /// The socket.
        socket: u32,
        /// RFC 6455 close code; 1006 when the connection dropped without a close frame.
        code: u16,
        /// The peer's reason.
        reason: String,
    },
    /// An HTTP response's status and headers.
    HttpHead {
        /// The request.
        request: u32,
        /// HTTP status.
        status: u16,
        /// Response headers.
        headers: Vec<(String, String)>,
    },
    /// Part of an HTTP response body.
    HttpChunk {
        /// The request.
        request: u32,
        /// The bytes, as they arrived.
        data: Vec<u8>,
    },
    /// An HTTP response is complete.
    HttpDone(u32),
    /// An operation failed after it started.
    Failed {
        /// The socket or request.
        target: u32,
        /// What went wrong.
        error: String,
    },
    /// A timer fired.
    Timer(u32),
}

/// What a session may reach: the agent's `allowed_hosts` and `secrets`.
#[derive(Debug, Clone, Default)]
pub struct IoPolicy {
    /// `host`, `host:port` or `*.domain`, lowercase. A pattern without a port allows any port.
    pub allowed_hosts: Vec<String>,
    /// Secrets by name.
    pub secrets: BTreeMap<String, Secret>,
}

impl IoPolicy {
    /// True when `host` (lowercase) on `port` matches an allowed pattern.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        self.allowed_hosts.iter().any(|pattern| {
            let (pattern_host, pattern_port) = match pattern.rsplit_once(':') {
                Some((h, p)) => (h, p.parse::<u16>().ok()),
                None => (pattern.as_str(), None),
            };
            if pattern_port.is_some_and(|p| p != port) {
                return false;
            }
            match pattern_host.strip_prefix("*.") {
                Some(domain) => host
                    .strip_suffix(domain)
                    .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
                None => host == pattern_host,
            }
        })
    }
}

/// A checked request for the call task to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoCommand {
    /// Open a WebSocket.
    WsConnect {
        /// Its handle.
        id: u32,
        /// The URL.
        url: String,
        /// Handshake headers.
        headers: Vec<(String, String)>,
    },
    /// Write a message.
    WsSend {
        /// The socket.
        id: u32,
        /// The message.
        message: Payload,
    },
    /// Close a socket.
    WsClose {
        /// The socket.
        id: u32,
    },
    /// Send an HTTP request.
    HttpSend {
        /// Its handle.
        id: u32,
        /// The request.
        request: HttpRequest,
    },
    /// Start a timer.
    SetTimer {
        /// Its handle.
        id: u32,
        /// Delay (ms).
        delay_ms: u32,
    },
    /// Cancel a timer or request.
    Cancel {
        /// The handle.
        id: u32,
    },
}

/// The session side of host I/O: checks calls and queues commands. See the module docs.
#[derive(Debug)]
pub struct SessionIo {
    plugin: String,
    policy: Arc<IoPolicy>,
    next_handle: u32,
    commands: Vec<IoCommand>,
    sockets: HashSet<u32>,
    requests: HashSet<u32>,
    timers: HashSet<u32>,
}

impl SessionIo {
    /// I/O for one session of `plugin` under `policy`.
    pub fn new(plugin: &str, policy: Arc<IoPolicy>) -> Self {
        Self {
            plugin: plugin.to_string(),
            policy,
            next_handle: 1,
            commands: Vec::new(),
            sockets: HashSet::new(),
            requests: HashSet::new(),
            timers: HashSet::new(),
        }
    }

    /// Takes the commands queued since the last call.
    pub fn take_commands(&mut self) -> Vec<IoCommand> {
        std::mem::take(&mut self.commands)
    }

    /// Forgets handles an event finished, before the event reaches the plugin.
    pub fn observe(&mut self, event: &IoEvent) {
        match event {
            IoEvent::WsClosed { socket, .. } => {
                self.sockets.remove(socket);
            }
            IoEvent::HttpDone(id) => {
                self.requests.remove(id);
            }
            IoEvent::Timer(id) => {
                self.timers.remove(id);
            }
            IoEvent::Failed { target, .. } => {
                self.sockets.remove(target);
                self.requests.remove(target);
            }
            _ => {}
        }
    }

    /// `secret(name)`.
    pub fn secret(&self, name: &str) -> Option<String> {
        let value = self
            .policy
            .secrets
            .get(name)
            .map(|s| s.expose().to_string());
        if value.is_none() {
            tracing::warn!(plugin = %self.plugin, secret = %name, "plugin asked for a secret its agent does not grant");
        }
        value
    }

    fn handle(&mut self) -> u32 {
        let id = self.next_handle;
        self.next_handle = self.next_handle.wrapping_add(1).max(1);
        id
    }

    fn queue(&mut self, command: IoCommand) -> Result<(), IoError> {
        if self.commands.len() >= MAX_COMMANDS_PER_CALL {
            return Err(IoError::Limit(format!(
                "more than {MAX_COMMANDS_PER_CALL} I/O calls in one plugin call"
            )));
        }
        self.commands.push(command);
        Ok(())
    }

    /// Parses `url`, requires one of `schemes`, and checks its host against the policy.
    fn check_url(&self, url: &str, schemes: &[&str]) -> Result<(), IoError> {
        let parsed =
            url::Url::parse(url).map_err(|e| IoError::Invalid(format!("bad URL {url:?}: {e}")))?;
        if !schemes.contains(&parsed.scheme()) {
            return Err(IoError::Invalid(format!(
                "URL scheme {:?} not allowed here (expected {})",
                parsed.scheme(),
                schemes.join(" or ")
            )));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| IoError::Invalid(format!("URL {url:?} has no host")))?
            .to_ascii_lowercase();
        let port = parsed.port_or_known_default().unwrap_or(0);
        if self.policy.allows(&host, port) {
            Ok(())
        } else {
            tracing::warn!(plugin = %self.plugin, %host, port, "I/O denied: host not in the agent's allowed_hosts");
            Err(IoError::Denied(format!(
                "{host} is not in this agent's allowed_hosts"
            )))
        }
    }

    /// `ws-connect(url, headers)`.
    ///
    /// # Errors
    /// Denied host, socket cap, bad URL.
    pub fn ws_connect(
        &mut self,
        url: String,
        headers: Vec<(String, String)>,
    ) -> Result<u32, IoError> {
        self.check_url(&url, &["wss", "ws"])?;
        if self.sockets.len() >= MAX_SOCKETS_PER_SESSION {
            return Err(IoError::Limit(format!(
                "at most {MAX_SOCKETS_PER_SESSION} WebSockets per session"
            )));
        }
        let id = self.handle();
        self.queue(IoCommand::WsConnect { id, url, headers })?;
        self.sockets.insert(id);
        Ok(id)
    }

    /// `ws-send(socket, message)`.
    ///
    /// # Errors
    /// Unknown or closed socket; too many commands.
    pub fn ws_send(&mut self, id: u32, message: Payload) -> Result<(), IoError> {
        if !self.sockets.contains(&id) {
            return Err(IoError::Invalid(format!("no open WebSocket {id}")));
        }
        self.queue(IoCommand::WsSend { id, message })
    }

    /// `ws-close(socket)`.
    ///
    /// # Errors
    /// Unknown or closed socket.
    pub fn ws_close(&mut self, id: u32) -> Result<(), IoError> {
        if !self.sockets.contains(&id) {
            return Err(IoError::Invalid(format!("no open WebSocket {id}")));
        }
        self.queue(IoCommand::WsClose { id })
    }

    /// `http-send(request)`.
    ///
    /// # Errors
    /// Denied host, request cap, bad URL or method.
    pub fn http_send(&mut self, request: HttpRequest) -> Result<u32, IoError> {
        self.check_url(&request.url, &["https", "http"])?;
        if reqwest::Method::from_bytes(request.method.as_bytes()).is_err() {
            return Err(IoError::Invalid(format!(
                "bad HTTP method {:?}",
                request.method
            )));
        }
        if self.requests.len() >= MAX_REQUESTS_PER_SESSION {
            return Err(IoError::Limit(format!(
                "at most {MAX_REQUESTS_PER_SESSION} HTTP requests in flight per session"
            )));
        }
        let id = self.handle();
        self.queue(IoCommand::HttpSend { id, request })?;
        self.requests.insert(id);
        Ok(id)
    }

    /// `set-timer(delay-ms)`.
    ///
    /// # Errors
    /// Timer cap.
    pub fn set_timer(&mut self, delay_ms: u32) -> Result<u32, IoError> {
        if self.timers.len() >= MAX_TIMERS_PER_SESSION {
            return Err(IoError::Limit(format!(
                "at most {MAX_TIMERS_PER_SESSION} timers per session"
            )));
        }
        let id = self.handle();
        self.queue(IoCommand::SetTimer { id, delay_ms })?;
        self.timers.insert(id);
        Ok(id)
    }

    /// `cancel(target)`: a no-op for unknown handles.
    pub fn cancel(&mut self, id: u32) {
        if self.timers.remove(&id) || self.requests.remove(&id) {
            let _ = self.queue(IoCommand::Cancel { id });
        }
    }
}

/// What the driver tells one socket's task.
enum SocketCommand {
    Send(Payload),
    Close,
}

/// The call-task side of host I/O: runs commands, yields events. Dropping it aborts everything.
pub struct IoDriver {
    events_tx: mpsc::Sender<IoEvent>,
    events_rx: mpsc::Receiver<IoEvent>,
    sockets: HashMap<u32, mpsc::Sender<SocketCommand>>,
    cancellable: HashMap<u32, AbortHandle>,
    tasks: JoinSet<()>,
    /// Set once no task is left and the channel is empty; cleared by [`IoDriver::execute`]. While
    /// set, [`IoDriver::is_idle`] answers without touching the channel (a cache miss per frame
    /// with a thousand calls).
    quiet: bool,
}

impl Default for IoDriver {
    fn default() -> Self {
        Self::new()
    }
}

impl IoDriver {
    /// A driver with nothing running.
    pub fn new() -> Self {
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        Self {
            events_tx,
            events_rx,
            sockets: HashMap::new(),
            cancellable: HashMap::new(),
            tasks: JoinSet::new(),
            quiet: true,
        }
    }

    /// True when no event can come: nothing queued and no I/O task running. The call loop then
    /// skips polling the event channel on every frame. Only [`IoDriver::execute`] starts work,
    /// so once idle the driver stays idle until the next command.
    pub fn is_idle(&mut self) -> bool {
        if !self.quiet {
            while self.tasks.try_join_next().is_some() {}
            self.quiet = self.tasks.is_empty() && self.events_rx.is_empty();
        }
        self.quiet
    }

    /// The next completion. Cancel-safe.
    pub async fn next_event(&mut self) -> IoEvent {
        // The driver holds a sender, so the channel never closes while it lives.
        match self.events_rx.recv().await {
            Some(event) => event,
            None => std::future::pending().await,
        }
    }

    /// Starts carrying out `command`.
    pub fn execute(&mut self, command: IoCommand) {
        self.quiet = false;
        while self.tasks.try_join_next().is_some() {}
        match command {
            IoCommand::WsConnect { id, url, headers } => {
                let (tx, rx) = mpsc::channel(SOCKET_QUEUE);
                self.sockets.insert(id, tx);
                let events = self.events_tx.clone();
                self.tasks.spawn(websocket(id, url, headers, rx, events));
            }
            IoCommand::WsSend { id, message } => {
                let Some(socket) = self.sockets.get(&id) else {
                    return;
                };
                if let Err(e) = socket.try_send(SocketCommand::Send(message)) {
                    let error = match e {
                        mpsc::error::TrySendError::Full(_) => {
                            format!("send queue full ({SOCKET_QUEUE} messages)")
                        }
                        mpsc::error::TrySendError::Closed(_) => "socket closed".to_string(),
                    };
                    self.sockets.remove(&id);
                    let _ = self
                        .events_tx
                        .try_send(IoEvent::Failed { target: id, error });
                }
            }
            IoCommand::WsClose { id } => {
                if let Some(socket) = self.sockets.remove(&id) {
                    let _ = socket.try_send(SocketCommand::Close);
                }
            }
            IoCommand::HttpSend { id, request } => {
                let events = self.events_tx.clone();
                let abort = self.tasks.spawn(http(id, request, events));
                self.cancellable.insert(id, abort);
            }
            IoCommand::SetTimer { id, delay_ms } => {
                let events = self.events_tx.clone();
                let abort = self.tasks.spawn(async move {
                    tokio::time::sleep(Duration::from_millis(u64::from(delay_ms))).await;
                    let _ = events.send(IoEvent::Timer(id)).await;
                });
                self.cancellable.insert(id, abort);
            }
            IoCommand::Cancel { id } => {
                if let Some(task) = self.cancellable.remove(&id) {
                    task.abort();
                }
            }
        }
    }
}

/// Installs rustls' process-wide crypto provider once (aws-lc-rs), so TLS clients can be built.
fn install_crypto_provider() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

async fn websocket(
    id: u32,
    url: String,
    headers: Vec<(String, String)>,
    mut commands: mpsc::Receiver<SocketCommand>,
    events: mpsc::Sender<IoEvent>,
) {
    install_crypto_provider();
    let failed = |error: String| IoEvent::Failed { target: id, error };
    let mut request = match url.as_str().into_client_request() {
        Ok(r) => r,
        Err(e) => {
            let _ = events.send(failed(format!("bad WebSocket URL: {e}"))).await;
            return;
        }
    };
    for (name, value) in headers {
        let (Ok(name), Ok(value)) = (
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()),
            tokio_tungstenite::tungstenite::http::HeaderValue::from_str(&value),
        ) else {
            let _ = events.send(failed(format!("bad header {name:?}"))).await;
            return;
        };
        request.headers_mut().append(name, value);
    }
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_UPSTREAM_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_UPSTREAM_MESSAGE_BYTES));
    // TCP_NODELAY: each caller frame is a small write that must leave at once, not wait for
    // the previous one's ACK (Nagle).
    let connected = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_tungstenite::connect_async_with_config(request, Some(config), true),
    )
    .await;
    let mut ws = match connected {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => {
            let _ = events.send(failed(format!("connect failed: {e}"))).await;
            return;
        }
        Err(_) => {
            let _ = events
                .send(failed(format!(
                    "connect timed out after {} s",
                    CONNECT_TIMEOUT.as_secs()
                )))
                .await;
            return;
        }
    };
    if events.send(IoEvent::WsOpened(id)).await.is_err() {
        return;
    }
    let mut closing = false;
    loop {
        tokio::select! {
            command = commands.recv(), if !closing => {
                let result = match command {
                    Some(SocketCommand::Send(Payload::Text(t))) => ws.send(WsMessage::Text(t.into())).await,
                    Some(SocketCommand::Send(Payload::Binary(b))) => ws.send(WsMessage::Binary(b.into())).await,
                    Some(SocketCommand::Close) | None => {
                        closing = true;
                        ws.close(None).await
                    }
                };
                if let Err(e) = result {
                    let _ = events.send(IoEvent::WsClosed { socket: id, code: 1006, reason: e.to_string() }).await;
                    return;
                }
            }
            message = ws.next() => {
                let event = match message {
                    Some(Ok(WsMessage::Text(t))) => IoEvent::WsMessage { socket: id, message: Payload::Text(t.to_string()) },
                    Some(Ok(WsMessage::Binary(b))) => IoEvent::WsMessage { socket: id, message: Payload::Binary(b.to_vec()) },
                    Some(Ok(WsMessage::Close(frame))) => {
                        let (code, reason) = frame
                            .map(|f| (u16::from(f.code), f.reason.to_string()))
                            .unwrap_or((1005, String::new()));
                        let _ = events.send(IoEvent::WsClosed { socket: id, code, reason }).await;
                        return;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => IoEvent::WsClosed { socket: id, code: 1006, reason: e.to_string() },
                    None => IoEvent::WsClosed { socket: id, code: 1006, reason: "connection closed".into() },
                };
                let closed = matches!(event, IoEvent::WsClosed { .. });
                if events.send(event).await.is_err() || closed {
                    return;
                }
            }
        }
    }
}

/// The HTTP client shared by every session (connection pools per host).
fn http_client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            install_crypto_provider();
            reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(Clone::clone)
}

async fn http(id: u32, request: HttpRequest, events: mpsc::Sender<IoEvent>) {
    let failed = |error: String| IoEvent::Failed { target: id, error };
    let client = match http_client() {
        Ok(c) => c,
        Err(e) => {
            let _ = events.send(failed(format!("no HTTP client: {e}"))).await;
            return;
        }
    };
    let method =
        reqwest::Method::from_bytes(request.method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut builder = client.request(method, &request.url).body(request.body);
    for (name, value) in request.headers {
        builder = builder.header(name, value);
    }
    let response = match builder.send().await {
        Ok(r) => r,
        Err(e) => {
            let _ = events.send(failed(format!("request failed: {e}"))).await;
            return;
        }
    };
    let head = IoEvent::HttpHead {
        request: id,
        status: response.status().as_u16(),
        headers: response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    };
    if events.send(head).await.is_err() {
        return;
    }
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let event = match chunk {
            Ok(data) => IoEvent::HttpChunk {
                request: id,
                data: data.to_vec(),
            },
            Err(e) => failed(format!("response body failed: {e}")),
        };
        let failed = matches!(event, IoEvent::Failed { .. });
        if events.send(event).await.is_err() || failed {
            return;
        }
    }
    let _ = events.send(IoEvent::HttpDone(id)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(hosts: &[&str]) -> SessionIo {
        SessionIo::new(
            "p",
            Arc::new(IoPolicy {
                allowed_hosts: hosts.iter().map(|h| h.to_string()).collect(),
                secrets: BTreeMap::from([("api_key".to_string(), Secret::new("sk-1".into()))]),
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
}
