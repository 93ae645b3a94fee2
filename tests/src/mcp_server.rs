//! Real MCP servers (rmcp's server side) for the MCP client tests: one tool set, [`ToolServer`],
//! served over Streamable HTTP on `127.0.0.1:0` ([`start_http`]) or over stdin/stdout by the
//! `mcp-stdio-server` binary (`tests/src/bin/mcp_stdio_server.rs`; integration tests find it
//! with `env!("CARGO_BIN_EXE_mcp-stdio-server")`).
//!
//! Tools, listed two per page (so clients must follow `nextCursor`):
//! - `order_status` `{order: string}` → structured `{"order", "status": "shipped", "eta": "Tuesday"}`
//! - `book_slot` `{day: string}` → structured `{"booked": day}`
//! - `fail` `{}` → `isError: true`, text "the booking system is down"
//! - `whoami` `{}` → structured `{"meta": <the request's _meta>}`
//! - `sleep` `{ms: integer}` → sleeps that long, then structured `{"slept_ms": ms}`
//! - `status.v2` `{}` → text "ok" (a name a model may not see: clients must skip it)
//!
//! plus any added at run time with [`McpTestServer::add_tool`].

use std::net::SocketAddr;
use std::os::fd::AsFd as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData,
    InitializeRequestParams, InitializeResult, ListToolsResult, PaginatedRequestParams,
    ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{Peer, RoleServer, ServerHandler};
use serde_json::{Map, Value, json};

/// Tools per `tools/list` page.
const PAGE_SIZE: usize = 2;

/// The text of the `fail` tool's error.
pub const FAIL_TEXT: &str = "the booking system is down";

/// How a test server behaves.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// How long it waits before answering `initialize` (zero: at once).
    pub slow_start: Duration,
}

/// One `tools/call` a server received.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedCall {
    /// The tool's name.
    pub name: String,
    /// Its arguments (a JSON object; empty when none were sent).
    pub arguments: Value,
    /// The request's `_meta` (a JSON object; empty when none was sent).
    pub meta: Value,
}

/// A tool added at run time: answers structured `{"tool": name, "arguments": arguments}`.
#[derive(Debug, Clone)]
struct ExtraTool {
    name: String,
    description: String,
}

/// The test tool set, as an rmcp server handler. Clones share their state (calls received,
/// added tools, connected clients).
#[derive(Clone, Default)]
pub struct ToolServer {
    behaviour: Behaviour,
    calls: Arc<Mutex<Vec<ReceivedCall>>>,
    extra: Arc<Mutex<Vec<ExtraTool>>>,
    /// Every client that initialized, to tell about added tools.
    peers: Arc<Mutex<Vec<Peer<RoleServer>>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn schema(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn string_arg(arguments: &Map<String, Value>, key: &str) -> Result<String, ErrorData> {
    arguments
        .get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| ErrorData::invalid_params(format!("`{key}` must be a string"), None))
}

impl ToolServer {
    /// A tool server behaving as `behaviour` says.
    pub fn new(behaviour: Behaviour) -> Self {
        Self {
            behaviour,
            ..Self::default()
        }
    }

    /// The `tools/call` requests received so far, oldest first.
    pub fn calls(&self) -> Vec<ReceivedCall> {
        lock(&self.calls).clone()
    }

    /// Adds a tool named `name` (answering structured `{"tool": name, "arguments": …}`) and
    /// sends `notifications/tools/list_changed` to every connected client.
    pub async fn add_tool(&self, name: &str, description: &str) {
        lock(&self.extra).push(ExtraTool {
            name: name.to_string(),
            description: description.to_string(),
        });
        let peers = lock(&self.peers).clone();
        let mut alive = Vec::new();
        for peer in peers {
            if peer.notify_tool_list_changed().await.is_ok() {
                alive.push(peer);
            }
        }
        *lock(&self.peers) = alive;
    }

    fn all_tools(&self) -> Vec<Tool> {
        let object = |properties: Value, required: &[&str]| {
            schema(json!({"type": "object", "properties": properties, "required": required}))
        };
        let mut tools = vec![
            Tool::new(
                "order_status",
                "Looks up an order's delivery status.",
                object(json!({"order": {"type": "string"}}), &["order"]),
            ),
            Tool::new(
                "book_slot",
                "Books an appointment on a day.",
                object(json!({"day": {"type": "string"}}), &["day"]),
            ),
            Tool::new("fail", "Always fails.", object(json!({}), &[])),
            Tool::new(
                "whoami",
                "Returns the request's _meta.",
                object(json!({}), &[]),
            ),
            Tool::new(
                "sleep",
                "Sleeps, then answers.",
                object(json!({"ms": {"type": "integer"}}), &["ms"]),
            ),
            Tool::new(
                "status.v2",
                "A name models may not use.",
                object(json!({}), &[]),
            ),
        ];
        for extra in lock(&self.extra).iter() {
            tools.push(Tool::new(
                extra.name.clone(),
                extra.description.clone(),
                object(json!({}), &[]),
            ));
        }
        tools
    }
}

impl ServerHandler for ToolServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        tokio::time::sleep(self.behaviour.slow_start).await;
        context.peer.set_peer_info(request.clone());
        lock(&self.peers).push(context.peer.clone());
        self.negotiate_initialize(&request)
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let tools = self.all_tools();
        let start = match request.and_then(|r| r.cursor) {
            Some(cursor) => cursor
                .parse::<usize>()
                .map_err(|_| ErrorData::invalid_params("bad cursor", None))?,
            None => 0,
        };
        let end = (start + PAGE_SIZE).min(tools.len());
        let page = tools.get(start..end).unwrap_or_default().to_vec();
        let mut result = ListToolsResult::with_all_items(page);
        if end < tools.len() {
            result.next_cursor = Some(end.to_string());
        }
        Ok(result)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let arguments = request.arguments.clone().unwrap_or_default();
        let meta = match request.meta {
            Some(meta) if !meta.0.0.is_empty() => meta.0.0,
            _ => context.meta.0.0.clone(),
        };
        lock(&self.calls).push(ReceivedCall {
            name: request.name.to_string(),
            arguments: Value::Object(arguments.clone()),
            meta: Value::Object(meta.clone()),
        });
        let result = match request.name.as_ref() {
            "order_status" => {
                let order = string_arg(&arguments, "order")?;
                CallToolResult::structured(
                    json!({"order": order, "status": "shipped", "eta": "Tuesday"}),
                )
            }
            "book_slot" => {
                let day = string_arg(&arguments, "day")?;
                CallToolResult::structured(json!({"booked": day}))
            }
            "fail" => CallToolResult::error(vec![ContentBlock::text(FAIL_TEXT)]),
            "whoami" => CallToolResult::structured(json!({"meta": meta})),
            "sleep" => {
                let ms = arguments.get("ms").and_then(Value::as_u64).unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                CallToolResult::structured(json!({"slept_ms": ms}))
            }
            "status.v2" => CallToolResult::success(vec![ContentBlock::text("ok")]),
            name if lock(&self.extra).iter().any(|t| t.name == name) => {
                CallToolResult::structured(json!({"tool": name, "arguments": arguments}))
            }
            name => {
                return Err(ErrorData::invalid_params(
                    format!("no tool named {name}"),
                    None,
                ));
            }
        };
        Ok(CallToolResponse::Complete(result))
    }
}

/// A running Streamable HTTP test server.
pub struct McpTestServer {
    /// Its MCP endpoint, `http://127.0.0.1:PORT/mcp`.
    pub url: String,
    addr: SocketAddr,
    server: ToolServer,
    running: Option<Running>,
}

/// What [`McpTestServer::kill`] stops.
struct Running {
    task: tokio::task::JoinHandle<()>,
    /// A duplicate of every accepted socket, to reset them all at once.
    sockets: Arc<Mutex<Vec<std::net::TcpStream>>>,
    /// Closes rmcp's sessions.
    close_sessions: Box<dyn FnOnce() + Send>,
}

/// Starts a Streamable HTTP MCP server with the test tools ([`ToolServer`]) on `127.0.0.1:0`.
///
/// # Panics
/// The port cannot be bound (a test cannot go on without its server).
pub async fn start_http(behaviour: Behaviour) -> McpTestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding 127.0.0.1:0");
    let addr = listener.local_addr().expect("the listener's address");
    let server = ToolServer::new(behaviour);
    let running = serve(listener, server.clone());
    McpTestServer {
        url: format!("http://{addr}/mcp"),
        addr,
        server,
        running: Some(running),
    }
}

fn serve(listener: tokio::net::TcpListener, server: ToolServer) -> Running {
    let config = StreamableHttpServerConfig::default();
    let sessions_token = config.cancellation_token.clone();
    let service: StreamableHttpService<ToolServer, LocalSessionManager> =
        StreamableHttpService::new(move || Ok(server.clone()), Default::default(), config);
    let router = axum::Router::new().nest_service("/mcp", service);
    let sockets = Arc::new(Mutex::new(Vec::new()));
    let tapped = Arc::clone(&sockets);
    let listener = listener.tap_io(move |io: &mut tokio::net::TcpStream| {
        if let Ok(fd) = io.as_fd().try_clone_to_owned() {
            lock(&tapped).push(std::net::TcpStream::from(fd));
        }
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Running {
        task,
        sockets,
        close_sessions: Box::new(move || sessions_token.cancel()),
    }
}

impl McpTestServer {
    /// The `tools/call` requests received so far (across restarts), oldest first.
    pub fn calls(&self) -> Vec<ReceivedCall> {
        self.server.calls()
    }

    /// Adds a tool named `name` and sends `notifications/tools/list_changed` to every
    /// connected client (see [`ToolServer::add_tool`]).
    pub async fn add_tool(&self, name: &str, description: &str) {
        self.server.add_tool(name, description).await;
    }

    /// Kills the server as a crash would: every open connection is reset and the port refuses
    /// connections until [`McpTestServer::restart`].
    pub fn kill(&mut self) {
        if let Some(running) = self.running.take() {
            running.task.abort();
            for socket in lock(&running.sockets).drain(..) {
                let _ = socket.shutdown(std::net::Shutdown::Both);
            }
            (running.close_sessions)();
        }
    }

    /// Starts the server again on the same port (a new process would: no sessions survive),
    /// after killing it if it runs.
    ///
    /// # Errors
    /// The port could not be bound again.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        // The killed server's listener closes when its aborted task is dropped.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e).context(format!("binding {} again", self.addr)),
            }
        };
        self.running = Some(serve(listener, self.server.clone()));
        Ok(())
    }
}

impl Drop for McpTestServer {
    fn drop(&mut self) {
        self.kill();
    }
}
