//! MCP servers (Model Context Protocol) as tool backends: one client connection per
//! `[mcp.NAME]` server, kept up by a supervisor task and shared by every phone call, which
//! publishes the server's tools and carries the calls to them.
//!
//! The wire protocol is the official Rust SDK's (`rmcp`), over Streamable HTTP or a child
//! process's stdin/stdout. A supervisor per server connects, initializes (the `initialize`
//! handshake, at the newest protocol version that has one, so `notifications/tools/list_changed`
//! arrives unasked), lists every tool (all pages), publishes the allow-listed ones on a
//! [`watch`] channel, lists again on `notifications/tools/list_changed`, and pings the server
//! every [`HEALTH_CHECK_INTERVAL`]. When the connection fails (the child exits, a ping or a
//! listing fails, a session expires) it publishes an empty list, logs a warning and reconnects
//! after an exponential backoff ([`INITIAL_BACKOFF`] doubling to [`MAX_BACKOFF`]). Calls share
//! the connection and never wait longer than their server's `call_timeout`.
//!
//! Every `tools/call` carries the call's scope in `_meta` ([`CallMeta`], keys [`META_CALL_SID`],
//! [`META_FROM`], [`META_TO`], [`META_AGENT`]). Header values and child environment values may be
//! secrets: they are never logged, and [`McpServerConfig`]'s `Debug` redacts them. A child
//! process inherits only [`INHERITED_ENV`] of the gateway's environment (which holds the
//! gateway's own secrets), plus its configured `env`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ClientRequest,
    Implementation, PingRequest, ProtocolVersion, RequestMetaObject,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::common::client_side_sse::SseRetryPolicy;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientCacheConfig, ClientHandler, Peer, RoleClient, ServiceError, ServiceExt as _};
use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, BufReader};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::plugin::tools::Tool;

/// The first wait before reconnecting to a server that failed: short, so a server that
/// restarts comes back almost at once.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(500);

/// The longest wait between reconnection attempts: a server that stays down costs one attempt
/// (and one warning) per this long.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A connection that stayed up this long resets the backoff to [`INITIAL_BACKOFF`]; shorter
/// ones keep doubling it, so a server that accepts and dies at once is not hammered.
pub const HEALTHY_UPTIME: Duration = Duration::from_secs(10);

/// Connecting, initializing and the first listing must finish within this long, or the attempt
/// counts as failed (a server that accepts but never answers must not wedge its supervisor).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A later listing (after `notifications/tools/list_changed`) must finish within this long.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a connected server is pinged. A Streamable HTTP server that dies leaves no other
/// trace on an idle client, so this bounds how long its tools stay offered after it died.
pub const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// A ping unanswered for this long marks the connection as failed.
pub const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// Tool calls in flight at once over one Streamable HTTP connection (more wait for a slot, within
/// their `call_timeout`): many phone calls share one connection per server.
pub const MAX_CONCURRENT_CALLS: usize = 64;

/// A dropped SSE stream (a call's response, or the stream that carries notifications) is
/// reopened after this long, doubling up to [`SSE_MAX_RETRY`]; a dead server is noticed by the
/// health check, which replaces the whole connection.
const SSE_FIRST_RETRY: Duration = Duration::from_millis(500);

/// The longest wait before reopening a dropped SSE stream.
const SSE_MAX_RETRY: Duration = Duration::from_secs(5);

/// Longest line of a child's stderr that is logged whole; longer lines are logged in pieces.
const MAX_STDERR_LINE: u64 = 1024;

/// Lines of a child's stderr kept to explain, in the warning, why it failed.
const STDERR_TAIL_LINES: usize = 3;

/// The only variables of the gateway's environment a stdio server inherits (what the official
/// MCP SDKs pass on by default): enough to find programs and a home directory, none of the
/// gateway's secrets.
pub const INHERITED_ENV: [&str; 6] = ["HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER"];

/// HTTP headers the MCP transport sets itself; a configured header may not replace them.
const RESERVED_HEADERS: [&str; 4] = [
    "accept",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
];

/// `_meta` key of [`CallMeta::call_sid`] in a `tools/call`.
pub const META_CALL_SID: &str = "switchboard/callSid";
/// `_meta` key of [`CallMeta::from`] in a `tools/call`.
pub const META_FROM: &str = "switchboard/from";
/// `_meta` key of [`CallMeta::to`] in a `tools/call`.
pub const META_TO: &str = "switchboard/to";
/// `_meta` key of [`CallMeta::agent`] in a `tools/call`.
pub const META_AGENT: &str = "switchboard/agent";

/// One MCP server from agents.toml.
///
/// `Debug` shows header names and environment variable names but never their values.
#[derive(Clone, PartialEq, Eq)]
pub struct McpServerConfig {
    /// The `[mcp.NAME]` key.
    pub name: String,
    /// How to reach it.
    pub transport: McpTransport,
    /// Allow-list of tool names; `None` = every tool the server lists.
    pub allow: Option<Vec<String>>,
    /// HTTP headers sent with every request, `(name, value)` (HTTP only). Values may be
    /// secrets: never logged.
    pub headers: Vec<(String, String)>,
    /// The longest one `tools/call` may take, from the call to its result.
    pub call_timeout: Duration,
}

impl fmt::Debug for McpServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(name, _)| (name.as_str(), "<redacted>"))
            .collect();
        f.debug_struct("McpServerConfig")
            .field("name", &self.name)
            .field("transport", &self.transport)
            .field("allow", &self.allow)
            .field("headers", &headers)
            .field("call_timeout", &self.call_timeout)
            .finish()
    }
}

/// How to reach an MCP server.
///
/// `Debug` shows environment variable names but never their values.
#[derive(Clone, PartialEq, Eq)]
pub enum McpTransport {
    /// A Streamable HTTP endpoint.
    Http {
        /// `http(s)://…`, the one MCP endpoint.
        url: String,
    },
    /// A child process speaking newline-delimited JSON-RPC on stdin/stdout (logs on stderr).
    Stdio {
        /// The program (a path, or a name looked up in `PATH`).
        command: String,
        /// Its arguments.
        args: Vec<String>,
        /// Environment variables it gets on top of [`INHERITED_ENV`]. Values may be secrets:
        /// never logged.
        env: Vec<(String, String)>,
    },
}

impl fmt::Debug for McpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Http { url } => f.debug_struct("Http").field("url", url).finish(),
            Self::Stdio { command, args, env } => {
                let env: Vec<(&str, &str)> = env
                    .iter()
                    .map(|(name, _)| (name.as_str(), "<redacted>"))
                    .collect();
                f.debug_struct("Stdio")
                    .field("command", command)
                    .field("args", args)
                    .field("env", &env)
                    .finish()
            }
        }
    }
}

/// Per-call scoping data sent in `_meta` of every `tools/call` (keys [`META_CALL_SID`],
/// [`META_FROM`], [`META_TO`], [`META_AGENT`]; empty fields are left out).
#[derive(Debug, Clone, Default)]
pub struct CallMeta {
    /// Twilio's `CallSid`.
    pub call_sid: String,
    /// The caller's number (E.164).
    pub from: String,
    /// The called number (E.164).
    pub to: String,
    /// The agent's name.
    pub agent: String,
}

impl CallMeta {
    /// The `_meta` object of a `tools/call`.
    fn to_meta(&self) -> RequestMetaObject {
        let mut meta = Map::new();
        for (key, value) in [
            (META_CALL_SID, &self.call_sid),
            (META_FROM, &self.from),
            (META_TO, &self.to),
            (META_AGENT, &self.agent),
        ] {
            if !value.is_empty() {
                meta.insert(key.to_string(), Value::String(value.clone()));
            }
        }
        RequestMetaObject::from(meta)
    }
}

/// Why a connection to a server could not be made or was lost.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    /// A configured header name or value is not valid HTTP (the value is not shown).
    #[error("header {0:?} is not a valid HTTP header name or value")]
    InvalidHeader(String),
    /// A configured header would replace one the MCP transport sets itself.
    #[error("header {0:?} is set by the MCP transport and cannot be configured")]
    ReservedHeader(String),
    /// The child process could not be started.
    #[error("cannot start {command:?}: {source}")]
    Spawn {
        /// The configured command.
        command: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The `initialize` handshake failed.
    #[error("initialize failed: {0}")]
    Initialize(Box<rmcp::service::ClientInitializeError>),
    /// Connecting, initializing and listing took longer than [`CONNECT_TIMEOUT`].
    #[error("no answer within {} s", CONNECT_TIMEOUT.as_secs())]
    ConnectTimeout,
    /// `tools/list` failed.
    #[error("tools/list failed: {0}")]
    List(ServiceError),
    /// `tools/list` took longer than [`LIST_TIMEOUT`].
    #[error("tools/list got no answer within {} s", LIST_TIMEOUT.as_secs())]
    ListTimeout,
    /// A ping failed.
    #[error("ping failed: {0}")]
    Ping(ServiceError),
    /// A ping took longer than [`PING_TIMEOUT`].
    #[error("ping got no answer within {} s", PING_TIMEOUT.as_secs())]
    PingTimeout,
    /// The connection closed (for a child process: it exited).
    #[error("connection closed")]
    Closed,
}

impl From<rmcp::service::ClientInitializeError> for ConnectionError {
    fn from(error: rmcp::service::ClientInitializeError) -> Self {
        Self::Initialize(Box::new(error))
    }
}

/// Connections to every configured MCP server, shared by all calls (cheap to clone, `Arc`
/// inside). Dropping the last clone stops every server's task, as [`McpPool::shutdown`] does.
#[derive(Clone)]
pub struct McpPool {
    servers: Arc<Mutex<HashMap<String, Entry>>>,
}

impl fmt::Debug for McpPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let servers = lock(&self.servers);
        let mut names: Vec<&String> = servers.keys().collect();
        names.sort();
        f.debug_struct("McpPool").field("servers", &names).finish()
    }
}

/// One configured server: its supervisor and what calls need of it.
struct Entry {
    /// What calls use; replaced when the server's config changes.
    link: Arc<Link>,
    /// The supervisor; aborted (its connection dropped, a child killed) when the entry goes.
    task: JoinHandle<()>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a supervisor shares with the calls to its server.
struct Link {
    /// The server's config.
    config: McpServerConfig,
    /// The connection, while there is one.
    peer: Mutex<Option<Peer<RoleClient>>>,
    /// The server's allow-listed tools now; kept across config changes, so a call watching it
    /// sees the tools of the changed server.
    tools: Arc<watch::Sender<Arc<Vec<Tool>>>>,
    /// A call saw the transport fail: the supervisor checks the connection at once.
    suspect: Notify,
}

impl McpPool {
    /// Starts one supervisor task per server and returns at once (never waits for a server).
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn start(servers: Vec<McpServerConfig>) -> Self {
        let pool = Self {
            servers: Arc::new(Mutex::new(HashMap::new())),
        };
        pool.reconfigure(servers);
        pool
    }

    /// Applies a reloaded config: servers whose config is unchanged keep their connection;
    /// removed ones are shut down (their tool channels close); new or changed ones (re)start.
    /// A changed server's tool channel stays open (empty until it is up again).
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn reconfigure(&self, servers: Vec<McpServerConfig>) {
        let mut map = lock(&self.servers);
        let wanted: HashSet<String> = servers.iter().map(|s| s.name.clone()).collect();
        map.retain(|name, entry| {
            let keep = wanted.contains(name);
            if !keep {
                entry.link.tools.send_replace(Arc::new(Vec::new()));
                tracing::info!(server = %name, "MCP server removed");
            }
            keep
        });
        for config in servers {
            let tools = match map.get(&config.name) {
                Some(entry) if entry.link.config == config => continue,
                Some(entry) => {
                    entry.link.tools.send_replace(Arc::new(Vec::new()));
                    Arc::clone(&entry.link.tools)
                }
                None => Arc::new(watch::Sender::new(Arc::new(Vec::new()))),
            };
            let name = config.name.clone();
            let link = Arc::new(Link {
                config,
                peer: Mutex::new(None),
                tools,
                suspect: Notify::new(),
            });
            let task = tokio::spawn(supervise(Arc::clone(&link)));
            // Replacing an entry drops (aborts) the old supervisor.
            map.insert(name, Entry { link, task });
        }
    }

    /// The server's tools now (allow-listed), and later changes; `None` for an unknown server.
    /// Empty while the server is down or still connecting. The channel closes when the server
    /// is removed from the config.
    pub fn tools(&self, server: &str) -> Option<watch::Receiver<Arc<Vec<Tool>>>> {
        lock(&self.servers)
            .get(server)
            .map(|entry| entry.link.tools.subscribe())
    }

    /// Calls `tool` of `server` with `arguments`, with `meta` in the request's `_meta`.
    ///
    /// Returns within the server's `call_timeout`.
    ///
    /// # Errors
    /// Words for the model: the server is unknown, down or still connecting; the tool is not
    /// allowed or not offered; the call timed out or the connection failed; the server refused
    /// the request; or the result had `isError: true` (its text content is the error).
    ///
    /// On success, the output as JSON text: `structuredContent` if present, else the text
    /// content items joined by newlines (as a JSON string value unless that is valid JSON;
    /// `null` when there is none). Other content (images, audio, resources) is dropped: a
    /// phone call cannot show it.
    pub async fn call(
        &self,
        server: &str,
        tool: &str,
        arguments: Map<String, Value>,
        meta: &CallMeta,
    ) -> Result<String, String> {
        let link = lock(&self.servers)
            .get(server)
            .map(|entry| Arc::clone(&entry.link))
            .ok_or_else(|| format!("there is no tool server named {server:?}"))?;
        let config = &link.config;
        if let Some(allow) = &config.allow
            && !allow.iter().any(|name| name == tool)
        {
            return Err(format!("the tool {tool:?} is not allowed"));
        }
        let peer = lock(&link.peer)
            .clone()
            .ok_or_else(|| format!("the tool server {server:?} is unavailable right now"))?;
        if !link.tools.borrow().iter().any(|t| t.name == tool) {
            return Err(format!("the tool server {server:?} has no tool {tool:?}"));
        }
        let mut params = CallToolRequestParams::new(tool.to_string()).with_arguments(arguments);
        params.meta = Some(meta.to_meta());
        let started = Instant::now();
        let outcome = tokio::time::timeout(config.call_timeout, peer.call_tool(params)).await;
        let error = match outcome {
            Ok(Ok(result)) => return call_output(result),
            Ok(Err(ServiceError::McpError(error))) => {
                return Err(format!(
                    "the tool server refused the call: {}",
                    error.message
                ));
            }
            Ok(Err(error)) => error,
            Err(_) => {
                tracing::warn!(
                    server,
                    tool,
                    call_sid = %meta.call_sid,
                    timeout_ms = config.call_timeout.as_millis(),
                    "MCP tool call timed out"
                );
                return Err(format!(
                    "the tool {tool:?} did not answer within {:.1} s",
                    config.call_timeout.as_secs_f64()
                ));
            }
        };
        tracing::warn!(
            server,
            tool,
            call_sid = %meta.call_sid,
            elapsed_ms = started.elapsed().as_millis(),
            %error,
            "MCP tool call failed"
        );
        if matches!(
            error,
            ServiceError::TransportSend(_) | ServiceError::TransportClosed
        ) {
            link.suspect.notify_one();
        }
        Err(format!(
            "the tool server {server:?} could not be reached; try again later"
        ))
    }

    /// Stops every server's task (their connections closed, child processes killed); their
    /// tool channels close.
    pub fn shutdown(&self) {
        let mut map = lock(&self.servers);
        for entry in map.values() {
            entry.link.tools.send_replace(Arc::new(Vec::new()));
        }
        map.clear();
    }
}

/// Locks `mutex`, whose data stays consistent even if a holder panicked (every critical
/// section is a single assignment or lookup).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The output of a finished `tools/call`, as [`McpPool::call`] documents.
fn call_output(result: CallToolResult) -> Result<String, String> {
    let text: Vec<&str> = result
        .content
        .iter()
        .filter_map(|item| item.as_text())
        .map(|item| item.text.as_str())
        .collect();
    let text = text.join("\n");
    if result.is_error == Some(true) {
        if !text.is_empty() {
            return Err(text);
        }
        return Err(match &result.structured_content {
            Some(value) => value.to_string(),
            None => "the tool failed without saying why".to_string(),
        });
    }
    if let Some(value) = &result.structured_content {
        return Ok(value.to_string());
    }
    if text.is_empty() {
        return Ok("null".to_string());
    }
    if serde_json::from_str::<Value>(&text).is_ok() {
        Ok(text)
    } else {
        Ok(Value::String(text).to_string())
    }
}

/// Whether the model may see `name` as a tool name: `[A-Za-z0-9_-]{1,64}`.
fn valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The tools of `listed` the model may see: allow-listed (when `allow` is set), with a valid
/// name, each name once. Skipped tools are logged.
fn offered_tools(
    server: &str,
    allow: Option<&[String]>,
    listed: Vec<rmcp::model::Tool>,
) -> Vec<Tool> {
    let mut seen = HashSet::new();
    let mut tools = Vec::new();
    for tool in listed {
        let name = tool.name.as_ref();
        if let Some(allow) = allow
            && !allow.iter().any(|a| a == name)
        {
            continue;
        }
        if !valid_tool_name(name) {
            tracing::warn!(
                server,
                tool = %name.escape_debug(),
                "MCP tool skipped: its name is not 1-64 of A-Z a-z 0-9 _ -"
            );
            continue;
        }
        if !seen.insert(name.to_string()) {
            tracing::warn!(server, tool = name, "MCP tool skipped: listed twice");
            continue;
        }
        let description = tool
            .description
            .as_deref()
            .map(str::to_string)
            .or_else(|| tool.title.clone())
            .unwrap_or_default();
        tools.push(Tool {
            name: name.to_string(),
            description,
            parameters: Value::Object((*tool.input_schema).clone()).to_string(),
        });
    }
    if let Some(allow) = allow {
        for name in allow {
            if !seen.contains(name) {
                tracing::warn!(
                    server,
                    tool = %name,
                    "allow-listed MCP tool is not offered by the server"
                );
            }
        }
    }
    tools
}

/// The client side of one connection: notes `notifications/tools/list_changed`.
struct Handler {
    list_changed: Arc<Notify>,
}

impl ClientHandler for Handler {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.list_changed.notify_one();
    }

    fn get_info(&self) -> ClientConfig {
        // The newest version with an `initialize` handshake: on it, a server sends
        // `notifications/tools/list_changed` without a subscription.
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("switchboard", env!("CARGO_PKG_VERSION")),
        )
        .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
    }
}

/// How a dropped SSE stream is reopened (see [`SSE_FIRST_RETRY`]).
#[derive(Debug)]
struct SseReopen;

impl SseRetryPolicy for SseReopen {
    fn retry(&self, attempt: usize) -> Option<Duration> {
        let factor = 1u32 << attempt.min(16);
        Some(SSE_FIRST_RETRY.saturating_mul(factor).min(SSE_MAX_RETRY))
    }
}

/// Keeps `link`'s server connected, for as long as the task runs.
async fn supervise(link: Arc<Link>) {
    let server = link.config.name.as_str();
    let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
    let mut backoff = INITIAL_BACKOFF;
    loop {
        let mut connected_at = None;
        let error = run_connection(&link, &stderr_tail, &mut connected_at).await;
        *lock(&link.peer) = None;
        link.tools.send_if_modified(|tools| {
            let changed = !tools.is_empty();
            *tools = Arc::new(Vec::new());
            changed
        });
        if connected_at.is_some_and(|at: Instant| at.elapsed() >= HEALTHY_UPTIME) {
            backoff = INITIAL_BACKOFF;
        }
        let stderr: Vec<String> = lock(&stderr_tail).drain(..).collect();
        tracing::warn!(
            server,
            %error,
            stderr = ?stderr,
            retry_in_ms = backoff.as_millis(),
            "MCP server unavailable; its tools are withdrawn until it reconnects"
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection's life: connect, list, publish, then serve notifications and health checks
/// until it fails. Sets `connected_at` once the tools are published.
async fn run_connection(
    link: &Link,
    stderr_tail: &Arc<Mutex<VecDeque<String>>>,
    connected_at: &mut Option<Instant>,
) -> ConnectionError {
    let server = link.config.name.as_str();
    let list_changed = Arc::new(Notify::new());
    let handler = Handler {
        list_changed: Arc::clone(&list_changed),
    };
    let setup = async {
        let service = connect(&link.config, handler, stderr_tail).await?;
        // Every listing must reach the server: a cached one would hide a dead server.
        service
            .peer()
            .set_response_cache_config(ClientCacheConfig::disabled())
            .await;
        let listed = service
            .peer()
            .list_all_tools()
            .await
            .map_err(ConnectionError::List)?;
        Ok::<_, ConnectionError>((service, listed))
    };
    let (service, listed) = match tokio::time::timeout(CONNECT_TIMEOUT, setup).await {
        Ok(Ok(connected)) => connected,
        Ok(Err(error)) => return error,
        Err(_) => return ConnectionError::ConnectTimeout,
    };
    let peer = service.peer().clone();
    let tools = offered_tools(server, link.config.allow.as_deref(), listed);
    tracing::info!(server, tools = tools.len(), "MCP server connected");
    // The connection first: whoever sees the tools can call them.
    *lock(&link.peer) = Some(peer.clone());
    publish(link, tools);
    *connected_at = Some(Instant::now());

    // Dropping `closed` (when this returns, or the task is aborted) drops the service: the
    // connection closes and a child process is killed.
    let closed = service.waiting();
    tokio::pin!(closed);
    let mut health = tokio::time::interval_at(
        Instant::now() + HEALTH_CHECK_INTERVAL,
        HEALTH_CHECK_INTERVAL,
    );
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut closed => return ConnectionError::Closed,
            () = list_changed.notified() => {
                match tokio::time::timeout(LIST_TIMEOUT, peer.list_all_tools()).await {
                    Ok(Ok(listed)) => {
                        let tools = offered_tools(server, link.config.allow.as_deref(), listed);
                        tracing::info!(server, tools = tools.len(), "MCP server's tools changed");
                        publish(link, tools);
                    }
                    Ok(Err(error)) => return ConnectionError::List(error),
                    Err(_) => return ConnectionError::ListTimeout,
                }
            }
            _ = health.tick() => {
                if let Err(error) = ping(&peer).await {
                    return error;
                }
            }
            () = link.suspect.notified() => {
                if let Err(error) = ping(&peer).await {
                    return error;
                }
            }
        }
    }
}

/// Publishes `tools` if they differ from what is published.
fn publish(link: &Link, tools: Vec<Tool>) {
    link.tools.send_if_modified(|now| {
        let changed = **now != tools;
        if changed {
            *now = Arc::new(tools);
        }
        changed
    });
}

/// Pings the server: any answer, even an error, shows the connection works.
async fn ping(peer: &Peer<RoleClient>) -> Result<(), ConnectionError> {
    let request = ClientRequest::PingRequest(PingRequest::default());
    match tokio::time::timeout(PING_TIMEOUT, peer.send_request(request)).await {
        Ok(Ok(_) | Err(ServiceError::McpError(_))) => Ok(()),
        Ok(Err(error)) => Err(ConnectionError::Ping(error)),
        Err(_) => Err(ConnectionError::PingTimeout),
    }
}

/// Connects to the server and completes the `initialize` handshake.
async fn connect(
    config: &McpServerConfig,
    handler: Handler,
    stderr_tail: &Arc<Mutex<VecDeque<String>>>,
) -> Result<RunningService<RoleClient, Handler>, ConnectionError> {
    match &config.transport {
        McpTransport::Http { url } => {
            let mut http = StreamableHttpClientTransportConfig::with_uri(url.as_str())
                .custom_headers(header_map(&config.headers)?)
                .max_concurrent_requests(MAX_CONCURRENT_CALLS)
                // An expired session (the server restarted) fails the connection, which the
                // supervisor replaces whole: tools listed again, notifications stream reopened.
                .reinit_on_expired_session(false);
            http.retry_config = Arc::new(SseReopen);
            let transport = StreamableHttpClientTransport::from_config(http);
            Ok(handler.serve(transport).await?)
        }
        McpTransport::Stdio { command, args, env } => {
            let mut cmd = tokio::process::Command::new(command);
            cmd.args(args).env_clear().kill_on_drop(true);
            for name in INHERITED_ENV {
                // A value starting `()` is an exported shell function, not data: left out.
                if let Some(value) = std::env::var_os(name)
                    && !value.as_encoded_bytes().starts_with(b"()")
                {
                    cmd.env(name, value);
                }
            }
            cmd.envs(env.iter().map(|(k, v)| (k, v)));
            let (transport, stderr) = TokioChildProcess::builder(cmd)
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map_err(|source| ConnectionError::Spawn {
                    command: command.clone(),
                    source,
                })?;
            if let Some(stderr) = stderr {
                tokio::spawn(forward_stderr(
                    config.name.clone(),
                    stderr,
                    Arc::clone(stderr_tail),
                ));
            }
            Ok(handler.serve(transport).await?)
        }
    }
}

/// The configured headers as the transport takes them, marked sensitive (redacted in `Debug`).
fn header_map(
    headers: &[(String, String)],
) -> Result<HashMap<HeaderName, HeaderValue>, ConnectionError> {
    let mut map = HashMap::new();
    for (name, value) in headers {
        let header_name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ConnectionError::InvalidHeader(name.clone()))?;
        if RESERVED_HEADERS.contains(&header_name.as_str()) {
            return Err(ConnectionError::ReservedHeader(name.clone()));
        }
        let mut header_value = HeaderValue::from_str(value)
            .map_err(|_| ConnectionError::InvalidHeader(name.clone()))?;
        header_value.set_sensitive(true);
        map.insert(header_name, header_value);
    }
    Ok(map)
}

/// Logs a child's stderr line by line (at debug level; lines longer than [`MAX_STDERR_LINE`]
/// in pieces), keeping the last [`STDERR_TAIL_LINES`] for the warning if it fails.
async fn forward_stderr(
    server: String,
    stderr: impl AsyncRead + Unpin,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader)
            .take(MAX_STDERR_LINE)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        if text.is_empty() {
            continue;
        }
        tracing::debug!(server = %server, line = %text, "MCP server stderr");
        let mut tail = lock(&tail);
        if tail.len() == STDERR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(text.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::ContentBlock;

    fn tool(name: &str) -> rmcp::model::Tool {
        let schema: Map<String, Value> =
            serde_json::from_str(r#"{"type":"object","properties":{}}"#).unwrap();
        rmcp::model::Tool::new(name.to_string(), format!("does {name}"), schema)
    }

    fn result(text: &[&str], structured: Option<Value>, is_error: bool) -> CallToolResult {
        let content = text.iter().map(|t| ContentBlock::text(*t)).collect();
        let mut result = if is_error {
            CallToolResult::error(content)
        } else {
            CallToolResult::success(content)
        };
        result.structured_content = structured;
        result
    }

    fn stdio(name: &str, command: &str) -> McpServerConfig {
        McpServerConfig {
            name: name.into(),
            transport: McpTransport::Stdio {
                command: command.into(),
                args: vec![],
                env: vec![("API_KEY".into(), "s3cret".into())],
            },
            allow: None,
            headers: vec![("Authorization".into(), "Bearer s3cret".into())],
            call_timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn tool_names_the_model_may_see() {
        assert!(valid_tool_name("order_status"));
        assert!(valid_tool_name("a-B_9"));
        assert!(valid_tool_name(&"x".repeat(64)));
        assert!(!valid_tool_name(&"x".repeat(65)));
        assert!(!valid_tool_name(""));
        assert!(!valid_tool_name("order.status"));
        assert!(!valid_tool_name("order status"));
        assert!(!valid_tool_name("commande_été"));
    }

    #[test]
    fn offered_tools_are_allow_listed_valid_and_unique() {
        let listed = vec![
            tool("order_status"),
            tool("book_slot"),
            tool("bad.name"),
            tool("order_status"),
            tool("fail"),
        ];
        let all = offered_tools("s", None, listed.clone());
        let names: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["order_status", "book_slot", "fail"]);
        assert_eq!(all[0].description, "does order_status");
        let schema: Value = serde_json::from_str(&all[0].parameters).unwrap();
        assert_eq!(schema["type"], "object");

        let allow = vec!["book_slot".to_string(), "not_there".to_string()];
        let some = offered_tools("s", Some(&allow), listed);
        let names: Vec<&str> = some.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["book_slot"]);
    }

    #[test]
    fn a_tool_without_description_uses_its_title() {
        let mut t = tool("x");
        t.description = None;
        t.title = Some("Look up X".into());
        assert_eq!(
            offered_tools("s", None, vec![t])[0].description,
            "Look up X"
        );
    }

    #[test]
    fn structured_content_is_the_output() {
        let value = serde_json::json!({"order": "A1", "status": "shipped"});
        let out = call_output(result(&["ignored"], Some(value.clone()), false)).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), value);
    }

    #[test]
    fn text_content_is_joined_and_quoted_unless_json() {
        assert_eq!(
            call_output(result(&["{\"a\": 1}"], None, false)).unwrap(),
            "{\"a\": 1}"
        );
        let out = call_output(result(&["line one", "line \"two\""], None, false)).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&out).unwrap(),
            Value::String("line one\nline \"two\"".into())
        );
        assert_eq!(call_output(result(&[], None, false)).unwrap(), "null");
    }

    #[test]
    fn is_error_gives_the_text_as_the_error() {
        assert_eq!(
            call_output(result(&["the booking system is down"], None, true)).unwrap_err(),
            "the booking system is down"
        );
        assert_eq!(
            call_output(result(&[], None, true)).unwrap_err(),
            "the tool failed without saying why"
        );
    }

    #[test]
    fn call_meta_names_the_call_and_leaves_out_empty_fields() {
        let meta = CallMeta {
            call_sid: "CA123".into(),
            from: "+15551234567".into(),
            to: String::new(),
            agent: "front-desk".into(),
        }
        .to_meta();
        let json = serde_json::to_value(&meta).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                META_CALL_SID: "CA123",
                META_FROM: "+15551234567",
                META_AGENT: "front-desk",
            })
        );
    }

    #[test]
    fn debug_never_shows_secrets() {
        let text = format!("{:?}", stdio("s", "server"));
        assert!(!text.contains("s3cret"), "{text}");
        assert!(
            text.contains("Authorization") && text.contains("API_KEY"),
            "{text}"
        );
    }

    #[test]
    fn headers_are_checked_and_marked_sensitive() {
        let map = header_map(&[("X-Api-Key".into(), "s3cret".into())]).unwrap();
        let value = map.values().next().unwrap();
        assert!(value.is_sensitive());
        assert!(!format!("{value:?}").contains("s3cret"));
        assert!(matches!(
            header_map(&[("Mcp-Session-Id".into(), "x".into())]),
            Err(ConnectionError::ReservedHeader(_))
        ));
        assert!(matches!(
            header_map(&[("bad header".into(), "x".into())]),
            Err(ConnectionError::InvalidHeader(_))
        ));
        let error = header_map(&[("X-Key".into(), "new\nline s3cret".into())]).unwrap_err();
        assert!(!error.to_string().contains("s3cret"));
    }

    #[test]
    fn sse_reopen_backs_off_to_a_bound() {
        assert_eq!(SseReopen.retry(0), Some(SSE_FIRST_RETRY));
        assert_eq!(SseReopen.retry(1), Some(SSE_FIRST_RETRY * 2));
        assert_eq!(SseReopen.retry(1000), Some(SSE_MAX_RETRY));
    }

    #[tokio::test]
    async fn unknown_server() {
        let pool = McpPool::start(vec![]);
        assert!(pool.tools("nope").is_none());
        let error = pool
            .call("nope", "x", Map::new(), &CallMeta::default())
            .await
            .unwrap_err();
        assert!(error.contains("no tool server"), "{error}");
    }

    #[tokio::test]
    async fn a_server_that_cannot_start_has_no_tools_and_calls_fail_at_once() {
        let pool = McpPool::start(vec![stdio("gone", "/nonexistent/mcp-server")]);
        let tools = pool.tools("gone").unwrap();
        assert!(tools.borrow().is_empty());
        let started = std::time::Instant::now();
        let error = pool
            .call("gone", "x", Map::new(), &CallMeta::default())
            .await
            .unwrap_err();
        assert!(error.contains("unavailable"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(5));
        pool.shutdown();
        assert!(pool.tools("gone").is_none());
    }

    #[tokio::test]
    async fn a_tool_not_allowed_is_refused() {
        let mut config = stdio("s", "/nonexistent/mcp-server");
        config.allow = Some(vec!["order_status".into()]);
        let pool = McpPool::start(vec![config]);
        let error = pool
            .call("s", "fail", Map::new(), &CallMeta::default())
            .await
            .unwrap_err();
        assert!(error.contains("not allowed"), "{error}");
    }

    #[tokio::test]
    async fn reconfigure_keeps_unchanged_restarts_changed_and_removes_the_rest() {
        let a = stdio("a", "/nonexistent/a");
        let b = stdio("b", "/nonexistent/b");
        let pool = McpPool::start(vec![a.clone(), b.clone()]);
        let link_a = Arc::clone(&lock(&pool.servers)["a"].link);
        let mut tools_b = pool.tools("b").unwrap();
        let link_b = Arc::clone(&lock(&pool.servers)["b"].link);

        let mut b2 = b.clone();
        b2.call_timeout = Duration::from_secs(9);
        pool.reconfigure(vec![a.clone(), b2.clone()]);
        {
            let map = lock(&pool.servers);
            assert!(
                Arc::ptr_eq(&map["a"].link, &link_a),
                "unchanged server kept"
            );
            assert!(
                !Arc::ptr_eq(&map["b"].link, &link_b),
                "changed server restarted"
            );
            assert_eq!(map["b"].link.config, b2);
        }
        // The changed server's channel stays open for those watching it.
        assert!(tools_b.has_changed().is_ok());

        pool.reconfigure(vec![b2]);
        assert!(pool.tools("a").is_none());
        assert!(pool.tools("b").is_some());
        drop((link_a, link_b, pool));
        // The last clone gone: every channel closes.
        let closed = async { while tools_b.changed().await.is_ok() {} };
        tokio::time::timeout(Duration::from_secs(10), closed)
            .await
            .expect("the tool channel closes");
    }
}
