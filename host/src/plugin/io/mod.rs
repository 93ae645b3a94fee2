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
//! The network side (TLS, the public-address resolver, the WebSocket and HTTP tasks) is in
//! `transport`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::Message as WsMessage;

use super::budget::{LineLimiter, TimerPacer};
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
    /// `[server] allow_private_destinations`: when false, a host *name* that resolves to a
    /// loopback, link-local or private address is refused at connect time (an IP literal or
    /// `localhost` in `allowed_hosts` names such an address explicitly and is let through).
    pub allow_private_destinations: bool,
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
        /// Refuse a host name that resolves to a private address ([`public_only`]).
        public_only: bool,
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
        /// Refuse a host name that resolves to a private address ([`public_only`]).
        public_only: bool,
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
    /// The plugin's own `log` lines.
    log_lines: LineLimiter,
    /// The host's warnings about this session's denied I/O.
    denied_lines: LineLimiter,
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
            log_lines: LineLimiter::default(),
            denied_lines: LineLimiter::default(),
        }
    }

    /// Whether the plugin may log one more line now ([`LineLimiter`]); logs how many lines were
    /// suppressed first, when the limit had refused some.
    pub fn admit_log(&mut self) -> bool {
        match self.log_lines.admit(std::time::Instant::now()) {
            Some(0) => true,
            Some(suppressed) => {
                tracing::warn!(plugin = %self.plugin, suppressed, "plugin log lines suppressed (rate limit)");
                true
            }
            None => false,
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
    fn check_url(&mut self, url: &str, schemes: &[&str]) -> Result<(), IoError> {
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
            if let Some(suppressed) = self.denied_lines.admit(std::time::Instant::now()) {
                tracing::warn!(plugin = %self.plugin, host = %super::budget::escape_log(&host), port, suppressed, "I/O denied: host not in the agent's allowed_hosts");
            }
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
        self.queue(IoCommand::WsConnect {
            id,
            url,
            headers,
            public_only: !self.policy.allow_private_destinations,
        })?;
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
        self.queue(IoCommand::HttpSend {
            id,
            request,
            public_only: !self.policy.allow_private_destinations,
        })?;
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
    /// Fired timers not handed over yet, oldest first: the pacer holds them (at most one per
    /// pending timer, so at most [`MAX_TIMERS_PER_SESSION`]).
    held_timers: VecDeque<u32>,
    /// When a fired timer may be handed over ([`TimerPacer`]).
    pacer: TimerPacer,
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
            held_timers: VecDeque::new(),
            pacer: TimerPacer::default(),
        }
    }

    /// True when no event can come: nothing queued and no I/O task running. The call loop then
    /// skips polling the event channel on every frame. Only [`IoDriver::execute`] starts work,
    /// so once idle the driver stays idle until the next command.
    pub fn is_idle(&mut self) -> bool {
        if !self.quiet {
            while self.tasks.try_join_next().is_some() {}
            self.quiet =
                self.tasks.is_empty() && self.events_rx.is_empty() && self.held_timers.is_empty();
        }
        self.quiet
    }

    /// The next completion. Cancel-safe.
    ///
    /// Fired timers are paced ([`TimerPacer`]: at most
    /// [`super::budget::TIMER_EVENTS_PER_SECOND`] after a burst of
    /// [`super::budget::TIMER_EVENT_BURST`]); other events pass a held timer.
    pub async fn next_event(&mut self) -> IoEvent {
        loop {
            let event = if let Some(&timer) = self.held_timers.front() {
                let wait = self.pacer.wait(tokio::time::Instant::now());
                if wait.is_zero() {
                    self.held_timers.pop_front();
                    IoEvent::Timer(timer)
                } else {
                    tokio::select! {
                        biased;
                        () = tokio::time::sleep(wait) => continue,
                        event = self.events_rx.recv() => match event {
                            Some(IoEvent::Timer(id)) => {
                                self.held_timers.push_back(id);
                                continue;
                            }
                            Some(event) => event,
                            // The driver holds a sender: the channel never closes.
                            None => std::future::pending().await,
                        },
                    }
                }
            } else {
                match self.events_rx.recv().await {
                    Some(IoEvent::Timer(id)) => {
                        self.held_timers.push_back(id);
                        continue;
                    }
                    Some(event) => event,
                    None => std::future::pending().await,
                }
            };
            self.finished(&event);
            return event;
        }
    }

    /// The next completion of the I/O in flight; pending while nothing is (no event can come
    /// until a command starts some). Cancel-safe.
    pub async fn next_in_flight(&mut self) -> IoEvent {
        if self.is_idle() {
            std::future::pending().await
        } else {
            self.next_event().await
        }
    }

    /// Starts every command of `commands`, in order ([`IoDriver::execute`]).
    pub fn execute_all(&mut self, commands: Vec<IoCommand>) {
        for command in commands {
            self.execute(command);
        }
    }

    /// Forgets what an event finished: a fired timer's or a completed request's abort handle, a
    /// closed socket's queue. Without this a plugin that sets timers in a loop grows the driver
    /// (and the gateway) by one entry per timer until its call ends.
    fn finished(&mut self, event: &IoEvent) {
        match event {
            IoEvent::Timer(id) | IoEvent::HttpDone(id) => {
                self.cancellable.remove(id);
            }
            IoEvent::Failed { target, .. } => {
                self.cancellable.remove(target);
                self.sockets.remove(target);
            }
            IoEvent::WsClosed { socket, .. } => {
                self.sockets.remove(socket);
            }
            _ => {}
        }
    }

    /// Handles held for running timers, requests and sockets (for tests of the bound above).
    pub fn handles(&self) -> usize {
        self.cancellable.len() + self.sockets.len()
    }

    /// Starts carrying out `command`.
    pub fn execute(&mut self, command: IoCommand) {
        self.quiet = false;
        while self.tasks.try_join_next().is_some() {}
        match command {
            IoCommand::WsConnect {
                id,
                url,
                headers,
                public_only,
            } => {
                let (tx, rx) = mpsc::channel(SOCKET_QUEUE);
                self.sockets.insert(id, tx);
                let events = self.events_tx.clone();
                self.tasks
                    .spawn(websocket(id, url, headers, public_only, rx, events));
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
            IoCommand::HttpSend {
                id,
                request,
                public_only,
            } => {
                let events = self.events_tx.clone();
                let abort = self.tasks.spawn(http(id, request, public_only, events));
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
                self.held_timers.retain(|&held| held != id);
                if let Some(task) = self.cancellable.remove(&id) {
                    task.abort();
                }
            }
        }
    }
}

mod transport;
use transport::{http, websocket};
pub use transport::{is_private, public_only};

#[cfg(test)]
mod tests;
