//! The HTTP side of the gateway: the axum [`Router`] with Twilio's voice webhook, status
//! callback and Media Streams WebSocket endpoint (each checks Twilio's signature first,
//! [`twilio_auth`]), the operator API ([`api`]), the web console and its browser phone
//! ([`console`]) and the health check, and [`serve`] to run it on a listener.

pub mod api;
pub mod console;
pub mod events;
pub mod twilio_auth;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

use crate::call::task::PendingTasks;
use crate::call::{self, CallContext, CallStats, EndReason};
use crate::config::Config;
use crate::records::{self, NewCall, Records, RecordsError, Recovery, StatusUpdate};
use crate::routing::{self, RouteRequest};
use crate::twilio::signature::Body;
use crate::twilio::webhook::{self, WebhookParams};
use crate::twiml::{self, Response as TwimlResponse, Say};
use api::ApiGuard;
use twilio_auth::{Scheme, SignatureCounters};

/// Largest WebSocket message accepted on the Media Streams socket (bytes). A 20 ms media message
/// is about 300 bytes of JSON; 64 KiB covers any legitimate message with a wide margin, and a
/// larger one ends that call with a socket error instead of buffering without bound.
pub const MAX_WS_MESSAGE_BYTES: usize = 64 * 1024;

/// Bytes read from a Media Streams socket at a time (tungstenite's read chunk). Twilio's messages
/// are ~300 bytes; tungstenite's 128 KiB default is allocated and zeroed per socket, and profiling
/// 200 calls showed zeroing it a quarter of the gateway's CPU and 128 KiB of each call's memory.
/// Larger messages still arrive whole, over several reads.
pub const WS_READ_BUFFER_BYTES: usize = 4096;

/// Capacity of the call-ended event channel; slow subscribers miss events rather than hold memory.
const CALL_EVENTS_CAPACITY: usize = 1024;

/// What the caller hears when no agent takes the number.
pub const NOT_CONFIGURED_MESSAGE: &str = "Sorry, this number is not configured. Goodbye.";

/// The query parameter of the Media Streams URL that names the account whose token signs the
/// upgrade, for accounts with their own token (`[twilio.accounts]`).
pub const ACCOUNT_PARAMETER: &str = "AccountSid";

/// A call that ended, as published to [`AppState::subscribe`].
#[derive(Debug, Clone)]
pub struct CallEnded {
    /// Why it ended.
    pub reason: EndReason,
    /// Its counters.
    pub stats: CallStats,
}

/// Shared state of the gateway: the current config and plugins, live-call accounting, the
/// operator API's guard and the signature counters.
#[derive(Clone)]
pub struct AppState {
    current: Arc<ArcSwap<CallContext>>,
    active_calls: Arc<AtomicUsize>,
    ended: broadcast::Sender<CallEnded>,
    api: Arc<ArcSwap<ApiGuard>>,
    tasks: PendingTasks,
    signatures: Arc<SignatureCounters>,
    /// Set on SIGTERM: `/readyz` answers 503 and new webhooks are refused.
    draining: Arc<AtomicBool>,
    /// Ends every live call (politely) when the drain deadline passes.
    shutdown: Arc<watch::Sender<bool>>,
    /// Renders `/metrics`; `None` when no recorder could be installed.
    metrics: Option<PrometheusHandle>,
    /// Shards serving this state ([`run_sharded`]); 1 for one work-stealing runtime.
    shards: usize,
    /// Set once the callback deliverer runs (one per gateway, however many shards serve).
    callbacks_started: Arc<AtomicBool>,
    /// Set once the event webhook deliverer runs (one per gateway, likewise).
    event_webhooks_started: Arc<AtomicBool>,
    /// The web console's generated token, browser-phone tickets and figures.
    console: Arc<console::Console>,
    /// Turns true when the server stops taking requests: endless responses (the event feed)
    /// end, so the graceful shutdown is not held open.
    closing: Arc<watch::Sender<bool>>,
}

/// How long the voice webhook waits for the call's record to be written before it answers
/// Twilio anyway.
pub const WEBHOOK_RECORD_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Opens the call records `config` asks for: the PostgreSQL database a fleet shares
/// (`[records] url`), its SQLite file (reporting calls the previous process left in flight), or
/// an in-memory database when `[records] path = ""`.
///
/// # Errors
/// The database could not be reached, opened, migrated or recovered.
pub async fn open_records(config: &Config) -> Result<(Records, Option<Recovery>), RecordsError> {
    if let Some(url) = &config.records.url {
        let fleet = records::Fleet {
            instance: records::instance_name(config.records.instance.as_deref()),
            heartbeat: config.records.heartbeat,
            grace: config.records.grace,
        };
        let (records, recovery) = Records::open_postgres(url.expose(), fleet).await?;
        return Ok((records, Some(recovery)));
    }
    match &config.records.path {
        Some(path) => {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let (records, recovery) = Records::open(path)?;
            Ok((records, Some(recovery)))
        }
        None => Ok((Records::open_in_memory()?, None)),
    }
}

impl AppState {
    /// State serving `ctx`. Outbound-call tasks are shared with `ctx` (and every later
    /// context), so a task placed now reaches the call that streams later.
    pub fn new(mut ctx: CallContext) -> Self {
        let console = Arc::new(console::Console::new(&ctx.config));
        let api = Arc::new(ArcSwap::from_pointee(console.guard(&ctx.config.api)));
        let tasks = ctx.tasks.clone();
        let (shutdown, _) = watch::channel(false);
        ctx.shutdown = shutdown.subscribe();
        let metrics = match crate::metrics::install() {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "metrics are off");
                None
            }
        };
        if !ctx.config.twilio.validate_signatures {
            tracing::warn!(
                "!!! twilio.validate_signatures = false: Twilio request signatures are NOT checked; \
                 anyone who can reach this gateway can place calls into its agents !!!"
            );
        } else if ctx.config.twilio.auth_token.is_none() && ctx.config.twilio.accounts.is_empty() {
            tracing::error!(
                "no Twilio auth token configured ([twilio] auth_token, e.g. TWILIO_AUTH_TOKEN): \
                 every Twilio request will be refused with 403 until one is set"
            );
        }
        // The MCP servers start connecting now, in the background (when in a runtime; else
        // `serve` starts them).
        ctx.tools.start_mcp(&ctx.config);
        Self {
            current: Arc::new(ArcSwap::from_pointee(ctx)),
            active_calls: Arc::new(AtomicUsize::new(0)),
            ended: broadcast::channel(CALL_EVENTS_CAPACITY).0,
            api,
            tasks,
            signatures: Arc::default(),
            draining: Arc::default(),
            shutdown: Arc::new(shutdown),
            metrics,
            shards: 1,
            callbacks_started: Arc::default(),
            event_webhooks_started: Arc::default(),
            console,
            closing: Arc::new(watch::channel(false).0),
        }
    }

    /// Starts delivering the callbacks of outbound calls from the call records'
    /// outbox ([`crate::callbacks`]), signed with the current config's `[api]
    /// callback_secret`, unless already started. Called by [`serve`]; needs a tokio runtime.
    pub fn start_callbacks(&self) {
        if self.callbacks_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(records) = self.context().records.clone() else {
            return;
        };
        let current = self.current.clone();
        match crate::callbacks::Deliverer::new(records, move || {
            current.load().config.api.callback_secret.clone()
        }) {
            Ok(deliverer) => {
                tokio::spawn(deliverer.run());
            }
            Err(e) => tracing::error!(error = %e, "callbacks cannot be delivered"),
        }
    }

    /// Starts POSTing live call events to the agents' `[agents.events]` webhooks
    /// ([`crate::events::webhooks`]), reading each agent's settings from the current config as
    /// its events come, unless already started. Called by [`serve`]; needs a tokio runtime.
    pub fn start_event_webhooks(&self) {
        if self.event_webhooks_started.swap(true, Ordering::AcqRel) {
            return;
        }
        // Held weakly: the deliverer stops with the gateway instead of keeping it alive.
        let current = Arc::downgrade(&self.current);
        let bus = self.context().events.clone();
        let config = move || current.upgrade().map(|c| c.load().config.clone());
        if let Err(e) = crate::events::webhooks::spawn(&bus, config) {
            tracing::error!(error = %e, "event webhooks cannot be delivered");
        }
    }

    /// The same state, reported in `/healthz` as served by `shards` shards.
    pub fn with_shards(mut self, shards: usize) -> Self {
        self.shards = shards;
        self
    }

    /// Serves `ctx` to new calls from now on (a configuration reload). Calls in flight keep the
    /// context they started with, to their end. The call records, pending outbound-call tasks
    /// and the shutdown signal carry over; the operator API's tokens are replaced (their rate
    /// buckets start full), the console's generated token standing in while none is configured.
    pub fn replace(&self, mut ctx: CallContext) {
        let old = self.current.load_full();
        ctx.records.clone_from(&old.records);
        ctx.tasks = self.tasks.clone();
        ctx.shutdown = self.shutdown.subscribe();
        // One event feed for the gateway's life: subscribers and webhooks see every generation.
        ctx.events = old.events.clone();
        // One set of MCP connections for the gateway's life; the reload's servers applied.
        ctx.tools.mcp.clone_from(&old.tools.mcp);
        if old.tools.mcp.get().is_some() {
            ctx.tools.start_mcp(&ctx.config);
        }
        self.api
            .store(Arc::new(self.console.guard(&ctx.config.api)));
        self.current.store(Arc::new(ctx));
    }

    /// Starts draining: `/readyz` turns unready at once and new webhooks are answered 503.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        metrics::gauge!(crate::metrics::DRAINING).set(1.0);
    }

    /// Whether the gateway is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Ends every live call politely (the apology, then the stream closes).
    pub fn end_all_calls(&self) {
        let _ = self.shutdown.send(true);
    }

    /// The context new calls get.
    pub fn context(&self) -> Arc<CallContext> {
        self.current.load_full()
    }

    /// Calls whose task is running.
    pub fn active_calls(&self) -> usize {
        self.active_calls.load(Ordering::Relaxed)
    }

    /// Twilio requests refused for a missing or wrong signature since start.
    pub fn signatures_rejected(&self) -> u64 {
        self.signatures.rejected.load(Ordering::Relaxed)
    }

    /// Receives an event for every call that ends from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<CallEnded> {
        self.ended.subscribe()
    }

    /// Runs one call on an upgraded Media Streams socket ([`call::run`]): counted among the
    /// active calls while it runs (the drain waits for it), its outcome counted for the
    /// console, its end published to [`AppState::subscribe`].
    async fn run_call<S: call::MediaSocket>(&self, socket: S, ctx: CallContext) {
        self.active_calls.fetch_add(1, Ordering::Relaxed);
        let (reason, stats) = call::run(socket, ctx).await;
        self.active_calls.fetch_sub(1, Ordering::Relaxed);
        self.console.call_ended(reason.outcome());
        let _ = self.ended.send(CallEnded { reason, stats });
    }

    /// The web console's state: its generated token, the browser phone's tickets.
    pub fn console(&self) -> &console::Console {
        &self.console
    }

    /// Logs the web console's address once the gateway listens on `address`, with the
    /// generated token while no `[api] tokens` are configured ([`console::Console::announce`]).
    pub fn announce_console(&self, address: std::net::SocketAddr) {
        self.console.announce(address, &self.context().config);
    }
}

/// The gateway's routes: `GET|POST /twilio/voice`, `POST /twilio/status`,
/// `GET /twilio/media-stream` (WebSocket), `GET /healthz` (JSON: status, active calls,
/// signature counters, and per plugin its kind, name, version, calls ended by a plugin failure
/// since start, and circuit-breaker state), the operator API under `/calls` ([`api`]), and the
/// web console under `/console` ([`console`]).
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/twilio/voice", get(voice).post(voice))
        .route("/twilio/status", post(status_callback))
        .route("/twilio/media-stream", get(media_stream))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/calls", get(api::list_calls).post(api::place_call))
        .route("/calls/{sid}", get(api::get_call))
        .route("/calls/{sid}/hangup", post(api::hang_up))
        .merge(console::routes())
        .route("/events", get(events::feed))
        .with_state(state)
}

/// How long calls get, after the drain deadline ends them, to play the apology and close.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(8);

/// Serves until SIGTERM or SIGINT, then drains: `/readyz` turns unready and new webhooks get 503
/// at once; live calls go on for up to `[server] drain_seconds`, then are ended politely (the
/// apology, then the stream closes); the call records are flushed and the server stops.
///
/// # Errors
/// The listener failed, or the signal handlers could not be installed.
pub async fn run(listener: TcpListener, state: AppState) -> std::io::Result<()> {
    let mut signals = Signals::install()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, state.clone(), async {
        let _ = stopped.await;
    }));
    let signal_name = signals.recv().await;
    drain(&state, signal_name).await;
    let _ = stop.send(());
    match server.await {
        Ok(result) => result,
        Err(e) => Err(std::io::Error::other(e)),
    }
}

/// SIGTERM and SIGINT, installed together.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// The name of the first of the two that arrives.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Binds `shards` listeners to `address`, each with `SO_REUSEPORT`, so the kernel spreads new
/// connections over them (by a hash of each connection's addresses). With port 0, the first
/// picks the port and the others share it. Returns them as std listeners, to be handed to the
/// runtimes that serve them ([`run_sharded`]).
///
/// # Errors
/// A socket could not be created or bound.
pub fn bind_shards(
    address: std::net::SocketAddr,
    shards: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut listeners = Vec::with_capacity(shards);
    let mut address = address;
    for _ in 0..shards.max(1) {
        let socket = if address.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseport(true)?;
        socket.set_reuseaddr(true)?;
        socket.bind(address)?;
        let listener = socket.listen(LISTEN_BACKLOG)?.into_std()?;
        address = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Pending connections each shard's listener queues (`listen(2)` backlog).
pub const LISTEN_BACKLOG: u32 = 1024;

/// Thread-per-core serving: each of `listeners` (from [`bind_shards`]) is served by a
/// single-threaded runtime on a thread of its own, and a call stays on the shard that accepted
/// it, so calls never wake another thread or migrate between them. The calling runtime handles
/// the signals and the drain (see [`run`]), then stops every shard and waits for them, at most
/// [`SHUTDOWN_GRACE`].
///
/// # Errors
/// The signal handlers could not be installed, or a shard's runtime or thread could not start.
pub async fn run_sharded(
    listeners: Vec<std::net::TcpListener>,
    state: AppState,
) -> std::io::Result<()> {
    let mut signals = Signals::install()?;
    let (stop, stopped) = watch::channel(false);
    let mut shards = Vec::with_capacity(listeners.len());
    for (i, listener) in listeners.into_iter().enumerate() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (state, mut stopped) = (state.clone(), stopped.clone());
        let shard = std::thread::Builder::new()
            .name(format!("shard-{i}"))
            .spawn(move || {
                let served = runtime.block_on(async move {
                    listener.set_nonblocking(true)?;
                    let listener = TcpListener::from_std(listener)?;
                    let stop = async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    };
                    serve(listener, state, stop).await
                });
                if let Err(e) = &served {
                    tracing::error!(shard = i, error = %e, "shard stopped serving");
                }
                served
            })?;
        shards.push(shard);
    }
    let signal_name = signals.recv().await;
    drain(&state, signal_name).await;
    let _ = stop.send(true);
    let joined = tokio::task::spawn_blocking(move || {
        shards
            .into_iter()
            .map(|shard| shard.join())
            .collect::<Vec<_>>()
    });
    match tokio::time::timeout(SHUTDOWN_GRACE, joined).await {
        Ok(Ok(results)) => {
            for (i, result) in results.into_iter().enumerate() {
                match result {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(shard = i, error = %e, "shard failed"),
                    Err(_) => tracing::error!(shard = i, "shard panicked"),
                }
            }
        }
        Ok(Err(e)) => tracing::error!(error = %e, "waiting for the shards"),
        Err(_) => tracing::warn!("shards still serving connections after the shutdown grace"),
    }
    Ok(())
}

/// The drain after `signal_name`: see [`run`].
pub async fn drain(state: &AppState, signal_name: &str) {
    let deadline = state.context().config.server.drain;
    state.start_draining();
    tracing::info!(
        signal = signal_name,
        active_calls = state.active_calls(),
        deadline_s = deadline.as_secs(),
        "draining: not ready, new calls refused, live calls may finish"
    );
    if !wait_for_calls(state, deadline).await {
        tracing::warn!(
            active_calls = state.active_calls(),
            "drain deadline passed: ending live calls"
        );
        state.end_all_calls();
        if !wait_for_calls(state, SHUTDOWN_GRACE).await {
            tracing::error!(
                active_calls = state.active_calls(),
                "calls still open after the shutdown grace"
            );
        }
    }
    if let Some(records) = &state.context().records
        && let Err(e) = records.flush().await
    {
        tracing::error!(error = %e, "call records not flushed");
    }
    tracing::info!("drained");
}

/// Waits until no call is live, at most `limit`; whether none is.
async fn wait_for_calls(state: &AppState, limit: std::time::Duration) -> bool {
    let until = tokio::time::Instant::now() + limit;
    while state.active_calls() > 0 {
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    true
}

/// Serves `app(state)` on `listener` until `shutdown` completes.
///
/// # Errors
/// The listener failed.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt as _;
    state.start_callbacks();
    state.start_event_webhooks();
    let ctx = state.context();
    ctx.tools.start_mcp(&ctx.config);
    // Media frames and marks are small writes 20 ms apart: without TCP_NODELAY, Nagle's
    // algorithm and delayed ACKs can hold a mark behind its frame for tens of milliseconds.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let closing = Arc::clone(&state.closing);
    axum::serve(listener, app(state))
        .with_graceful_shutdown(async move {
            shutdown.await;
            closing.send_replace(true);
        })
        .await
}

/// `GET /readyz`: 200 while the gateway takes new calls, 503 once it drains, so a load
/// balancer stops sending at once.
async fn readyz(State(state): State<AppState>) -> Response {
    if state.is_draining() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"ready": false, "reason": "draining"})),
        )
            .into_response()
    } else {
        axum::Json(serde_json::json!({"ready": true})).into_response()
    }
}

/// `GET /metrics`: Prometheus text exposition format.
async fn metrics_text(State(state): State<AppState>) -> Response {
    let Some(handle) = &state.metrics else {
        return (StatusCode::SERVICE_UNAVAILABLE, "metrics are off\n").into_response();
    };
    // Circuit-breaker state is read when scraped, not pushed on every change.
    let ctx = state.current.load_full();
    for (name, _, breaker) in ctx.plugins.iter() {
        metrics::gauge!(crate::metrics::CIRCUIT_OPEN, "plugin" => name.to_string())
            .set(if breaker.is_open() { 1.0 } else { 0.0 });
    }
    metrics::gauge!(crate::metrics::ACTIVE_CALLS).set(state.active_calls() as f64);
    let mut text = handle.render();
    crate::metrics::frame::render(&mut text);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let ctx = state.current.load_full();
    let plugins: serde_json::Map<String, serde_json::Value> = ctx
        .plugins
        .iter()
        .map(|(name, plugin, breaker)| {
            let info = plugin.info();
            let status = serde_json::json!({
                "kind": plugin.kind(),
                "name": info.name,
                "version": info.version,
                "failed_calls": breaker.failures(),
                "circuit": if breaker.is_open() { "open" } else { "closed" },
            });
            (name.to_string(), status)
        })
        .collect();
    axum::Json(serde_json::json!({
        "status": "ok",
        "active_calls": state.active_calls(),
        // Worker threads of the runtime that answered (`serve --workers`, default one per
        // core; 1 in a shard), and the shards (`serve --shards`, default 1).
        "workers": tokio::runtime::Handle::current().metrics().num_workers(),
        "shards": state.shards,
        "signatures": {
            "checked": ctx.config.twilio.validate_signatures,
            "accepted": state.signatures.accepted.load(Ordering::Relaxed),
            "rejected": state.signatures_rejected(),
        },
        "plugins": plugins,
    }))
}

/// Twilio's voice webhook: route the call and answer TwiML that opens a bidirectional stream.
async fn voice(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = std::time::Instant::now();
    let response = voice_response(&state, &uri, &headers, &body).await;
    metrics::histogram!(crate::metrics::WEBHOOK_SECONDS, "route" => "voice")
        .record(started.elapsed().as_secs_f64());
    response
}

async fn voice_response(state: &AppState, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Response {
    let params = WebhookParams::parse(uri.query(), body);
    let ctx = state.current.load_full();
    if let Err(refused) = twilio_auth::check(
        &ctx.config,
        &state.signatures,
        headers,
        uri,
        Scheme::Http,
        Body::Form(params.form()),
        params.get("AccountSid"),
    ) {
        return refused;
    }
    if state.is_draining() {
        // Twilio answers a 5xx by trying the number's Fallback URL (another instance), else
        // tells the caller the application failed.
        tracing::info!(call_sid = ?params.get("CallSid"), "webhook refused: draining");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "30")],
            "draining\n",
        )
            .into_response();
    }
    let call_sid = params.get("CallSid").unwrap_or_default();
    let route = routing::route(
        &ctx.config,
        &RouteRequest {
            agent: params.get("agent"),
            to: params.get("To"),
            params: params.query(),
        },
    );
    let response = match route {
        Ok(route) => {
            let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
            let Some(base) = webhook::public_base(
                ctx.config.server.public_url.as_deref(),
                header("host"),
                header("x-forwarded-proto"),
            ) else {
                tracing::warn!(%call_sid, "webhook without a usable Host header and no public_url");
                return (
                    StatusCode::BAD_REQUEST,
                    "no public_url configured and no Host header",
                )
                    .into_response();
            };
            tracing::info!(%call_sid, agent = %route.agent.name, reason = ?route.reason, "webhook routed");
            // The routing decision and the caller data travel with the stream, so any instance
            // can serve it; operator hints from the Voice URL's query string come along too.
            let mut parameters = vec![("agent".to_string(), route.agent.name.clone())];
            for key in ["From", "To", "CallSid", "Direction"] {
                if let Some(v) = params.get(key) {
                    parameters.push((key.to_string(), v.to_string()));
                }
            }
            for (k, v) in params.query() {
                if !parameters.iter().any(|(n, _)| n == k) {
                    parameters.push((k.clone(), v.clone()));
                }
            }
            if let Some(records) = &ctx.records
                && !call_sid.is_empty()
            {
                let created = NewCall {
                    call_sid: call_sid.to_string(),
                    direction: params.get("Direction").map(str::to_string),
                    from: params.get("From").map(str::to_string),
                    to: params.get("To").map(str::to_string),
                    agent: Some(route.agent.name.clone()),
                    status: params.get("CallStatus").map(str::to_string),
                    task: None,
                    callback_url: None,
                    created_at_ms: records::now_ms(),
                };
                // Bounded: a slow records database must not hold up the call's answer. The
                // write, once queued, goes on after the wait ends.
                match tokio::time::timeout(WEBHOOK_RECORD_WAIT, records.call_created(created)).await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(%call_sid, error = %e, "call not recorded"),
                    Err(_) => {
                        tracing::warn!(%call_sid, "call record write is slow; answering without waiting for it")
                    }
                }
            }
            // An account with its own token signs the upgrade with it: name the account in the
            // (signed) stream URL so the upgrade is checked against the right token.
            let mut stream_url = webhook::media_stream_url(&base);
            if let Some(account) = params.get("AccountSid")
                && ctx.config.twilio.accounts.contains_key(account)
            {
                let query = form_urlencoded::Serializer::new(String::new())
                    .append_pair(ACCOUNT_PARAMETER, account)
                    .finish();
                stream_url = format!("{stream_url}?{query}");
            }
            twiml::connect_stream(&stream_url, &parameters)
        }
        Err(e) => {
            tracing::warn!(%call_sid, to = ?params.get("To"), error = %e, "webhook not routed");
            TwimlResponse::new()
                .say(Say::new(NOT_CONFIGURED_MESSAGE))
                .hangup()
        }
    };
    (
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        response.to_xml(),
    )
        .into_response()
}

/// `POST /twilio/status`: Twilio's call status callback (queued, initiated, ringing,
/// in-progress, completed, busy, failed, no-answer, canceled, with `CallDuration` at the end),
/// recorded on the call.
async fn status_callback(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ctx = state.current.load_full();
    // Twilio's callbacks are form-encoded; a JSON body (as Twilio's newer webhooks send) is
    // covered by `bodySHA256` in the URL instead of by the signature's parameters.
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    let params = if json {
        let Some(pairs) = json_pairs(&body) else {
            return (StatusCode::BAD_REQUEST, "body is not a JSON object\n").into_response();
        };
        WebhookParams {
            pairs,
            query_len: 0,
        }
    } else {
        WebhookParams::parse(uri.query(), &body)
    };
    let signed = if json {
        Body::Raw(&body)
    } else {
        Body::Form(params.form())
    };
    if let Err(refused) = twilio_auth::check(
        &ctx.config,
        &state.signatures,
        &headers,
        &uri,
        Scheme::Http,
        signed,
        params.get("AccountSid"),
    ) {
        return refused;
    }
    let (Some(call_sid), Some(status)) = (params.get("CallSid"), params.get("CallStatus")) else {
        return (
            StatusCode::BAD_REQUEST,
            "CallSid and CallStatus are required\n",
        )
            .into_response();
    };
    if status.is_empty()
        || status.len() > 32
        || !status.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
    {
        return (StatusCode::BAD_REQUEST, "bad CallStatus\n").into_response();
    }
    tracing::info!(%call_sid, %status, duration_s = ?params.get("CallDuration"), "call status");
    if let Some(records) = &ctx.records {
        let update = StatusUpdate {
            call_sid: call_sid.to_string(),
            status: status.to_string(),
            duration_s: params.get("CallDuration").and_then(|d| d.parse().ok()),
            at_ms: records::now_ms(),
            direction: params.get("Direction").map(str::to_string),
            from: params.get("From").map(str::to_string),
            to: params.get("To").map(str::to_string),
        };
        if let Err(e) = records.status(update).await {
            tracing::error!(%call_sid, error = %e, "call status not recorded");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

/// A JSON object's members as `(name, value)` pairs: strings as they are, numbers and booleans
/// as written; `None` for anything but an object.
fn json_pairs(body: &[u8]) -> Option<Vec<(String, String)>> {
    let serde_json::Value::Object(map) = serde_json::from_slice(body).ok()? else {
        return None;
    };
    Some(
        map.into_iter()
            .filter_map(|(k, v)| match v {
                serde_json::Value::String(s) => Some((k, s)),
                serde_json::Value::Number(n) => Some((k, n.to_string())),
                serde_json::Value::Bool(b) => Some((k, b.to_string())),
                _ => None,
            })
            .collect(),
    )
}

/// The Media Streams WebSocket: one call task per socket, once Twilio's signature on the
/// upgrade request checks out.
async fn media_stream(
    State(state): State<AppState>,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let ctx = (*state.current.load_full()).clone();
    let query = WebhookParams::parse(query.as_deref(), b"");
    if let Err(refused) = twilio_auth::check(
        &ctx.config,
        &state.signatures,
        &headers,
        &uri,
        Scheme::WebSocket,
        Body::Form(&[]),
        query.get(ACCOUNT_PARAMETER),
    ) {
        return refused;
    }
    upgrade
        .max_message_size(MAX_WS_MESSAGE_BYTES)
        .max_frame_size(MAX_WS_MESSAGE_BYTES)
        .read_buffer_size(WS_READ_BUFFER_BYTES)
        .on_upgrade(move |socket| async move { state.run_call(socket, ctx).await })
}
