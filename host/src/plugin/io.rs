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

use super::budget::LineLimiter;
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
        let event = match self.events_rx.recv().await {
            Some(event) => event,
            None => std::future::pending().await,
        };
        self.finished(&event);
        event
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

/// True for an address a tenant's plugin must not reach by a host name: loopback, private
/// (RFC 1918, RFC 4193), link-local (169.254/16 — cloud metadata — and fe80::/10), carrier-grade
/// NAT (100.64/10), unspecified, broadcast; IPv4-mapped IPv6 by its IPv4 address.
pub fn is_private(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(a) => {
            let [first, second, ..] = a.octets();
            a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || (first == 100 && (64..128).contains(&second))
        }
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => is_private(IpAddr::V4(v4)),
            None => {
                let head = a.segments()[0];
                a.is_loopback()
                    || a.is_unspecified()
                    || (head & 0xfe00) == 0xfc00
                    || (head & 0xffc0) == 0xfe80
            }
        },
    }
}

/// The addresses `name` resolved to that a plugin may reach: all of them for `localhost` (an
/// allowed host that names the loopback explicitly), else only public ones ([`is_private`]).
///
/// # Errors
/// Every address was private: the message names the host, never the addresses.
pub fn public_only(
    name: &str,
    addrs: impl IntoIterator<Item = std::net::SocketAddr>,
) -> Result<Vec<std::net::SocketAddr>, String> {
    let addrs: Vec<_> = addrs.into_iter().collect();
    if name.eq_ignore_ascii_case("localhost") {
        return Ok(addrs);
    }
    let public: Vec<_> = addrs.into_iter().filter(|a| !is_private(a.ip())).collect();
    if public.is_empty() {
        Err(format!(
            "{name} resolves to a private address; name the address itself in allowed_hosts \
             or set [server] allow_private_destinations = true"
        ))
    } else {
        Ok(public)
    }
}

/// reqwest's resolver for plugin requests under [`public_only`] (host names only: an IP
/// literal in a URL is never resolved, and passed the allow-list by being named).
struct PublicResolver;

impl reqwest::dns::Resolve for PublicResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let public = public_only(&host, addrs)?;
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Connects the TCP stream of a WebSocket to `url`'s host under [`public_only`]: IP literals
/// as they are, names through the resolver and the filter.
async fn connect_public(url: &url::Url) -> Result<tokio::net::TcpStream, String> {
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<std::net::SocketAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![(ip, port).into()],
        Some(url::Host::Ipv6(ip)) => vec![(ip, port).into()],
        Some(url::Host::Domain(name)) => {
            let resolved = tokio::net::lookup_host((name, port))
                .await
                .map_err(|e| format!("cannot resolve {name}: {e}"))?;
            public_only(name, resolved)?
        }
        None => return Err("the URL has no host".into()),
    };
    let mut last = String::from("no address");
    for addr in addrs {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!("connect failed: {last}"))
}

async fn websocket(
    id: u32,
    url: String,
    headers: Vec<(String, String)>,
    public_only: bool,
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
    // the previous one's ACK (Nagle). The handshake follows no redirect: a 3xx fails it.
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
        if public_only {
            let parsed = url::Url::parse(&url).map_err(|e| e.to_string())?;
            let stream = connect_public(&parsed).await?;
            tokio_tungstenite::client_async_tls_with_config(request, stream, Some(config), None)
                .await
                .map_err(|e| format!("connect failed: {e}"))
        } else {
            tokio_tungstenite::connect_async_with_config(request, Some(config), true)
                .await
                .map_err(|e| format!("connect failed: {e}"))
        }
    })
    .await;
    let mut ws = match connected {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => {
            let _ = events.send(failed(e)).await;
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

/// The HTTP clients shared by every session (connection pools per host): one that resolves
/// names to public addresses only ([`PublicResolver`]), one that does not. Neither follows
/// redirects: the allow-list was checked against the request's URL, and a 3xx could point
/// anywhere, so it reaches the plugin as it came (its own `http-send` to the new location is
/// checked like any other).
fn http_client(public_only: bool) -> Result<&'static reqwest::Client, String> {
    static PUBLIC: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    static ANY: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    let build = || {
        install_crypto_provider();
        let builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none());
        let builder = if public_only {
            builder.dns_resolver(PublicResolver)
        } else {
            builder
        };
        builder.build().map_err(|e| e.to_string())
    };
    let cell = if public_only { &PUBLIC } else { &ANY };
    cell.get_or_init(build).as_ref().map_err(Clone::clone)
}

/// `e` and its sources, joined with `: ` (reqwest's own text leaves out why a request failed).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn http(id: u32, request: HttpRequest, public_only: bool, events: mpsc::Sender<IoEvent>) {
    let failed = |error: String| IoEvent::Failed { target: id, error };
    let client = match http_client(public_only) {
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
            let _ = events
                .send(failed(format!("request failed: {}", error_chain(&e))))
                .await;
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
    /// timer's handle is released when its event is taken, not when the call ends.
    #[tokio::test]
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
}
