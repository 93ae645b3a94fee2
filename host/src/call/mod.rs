//! The per-call task: one tokio task per Media Streams WebSocket owns everything of its call —
//! the socket, the plugin session, the audio converters, the counters — and reacts to Twilio's
//! messages one at a time. Nothing here is shared with other calls, so nothing here locks.
//!
//! Life of a call: `connected` → `start` (route from `customParameters` against the config of
//! that moment, open the plugin session) → `media`/`dtmf`/`mark` → `stop` or socket close or the
//! plugin's `hang-up` → the session sees `hangup` and is dropped, the socket is closed.

mod end;
#[cfg(test)]
mod end_tests;
mod engine;
mod event_loop;
pub mod inbox;
pub mod interruption;
mod line;
pub mod pipeline;
mod pipeline_engine;
mod pipeline_events;
mod realtime;
pub mod stages;
mod start;
pub mod task;
pub use start::AdmittedStream;
mod tool_calls;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message};
use futures_util::{Sink, SinkExt as _, Stream, StreamExt as _};
use tokio::time::Instant;
use tracing::{Instrument, Span};

use crate::audio::convert::{FromPlugin, ToPlugin};
use crate::audio::echo::{EchoGate, Verdict};
use crate::audio::playback::{Echo, Outgoing, Playback};
use crate::audio::vad::Vad;
use crate::audio::{FRAME_MS, FRAME_SAMPLES, mulaw};
use crate::config::{Agent, AgentMode, Config, PluginUse};
use crate::metrics::frame::LocalHistogram;
use crate::plugin::io::{IoEvent, IoPolicy};
use crate::plugin::{
    CallInfo, Plugin, Plugins, Role, Session, SessionConfig, SessionError, SessionInput,
    SessionOutput, Stage, StageInput, StageOutput,
};
use crate::records::{self, Records};
use crate::routing::{self, RouteRequest};
use crate::twilio::media_stream::{self, Inbound, MarkName, Outbound};
use crate::twilio::rest::{RestClient, RestError, UpdateCall};
use engine::{AnyEngine, CallerFrame, Engine, EngineEvent, PipelineEngine, RealtimeEngine};
use line::{Line, Playout};
use pipeline::{Action, Event, TurnConfig, TurnLatency, Turns};
use stages::{REPORT_QUEUE, StageReport, StageWorker};
use task::PendingTasks;
use tokio::sync::{mpsc, watch};

/// How long a new socket may take to send `start` before it is closed. Twilio sends `connected`
/// and `start` back to back; a peer silent for this long is not Twilio.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Extra time after the last queued audio should have played before a plugin's `hang-up`
/// closes the stream anyway (a lost mark echo must not keep a call open).
pub const HANGUP_GRACE: Duration = Duration::from_secs(2);

/// Most silent frames inserted for one gap in Twilio's `media.chunk` numbering (1 s). A larger
/// jump is a peer bug, not packet loss, and is not worth filling.
pub const MAX_GAP_FILL_FRAMES: u64 = 50;

/// Name of the mark the host sends after a plugin's last audio before hanging up.
const HANGUP_MARK: &str = "switchboard:hangup";

/// Name of the mark the host sends after the apology.
const APOLOGY_MARK: &str = "switchboard:apology";

/// What a caller hears when their agent's plugin fails: "Sorry, something went wrong. Please call
/// again later." — G.711 μ-law at 8 kHz (see `host/assets/README.md`).
pub const APOLOGY: &[u8] = include_bytes!("../../assets/apology.ulaw");

/// What every call task needs from the gateway.
#[derive(Clone)]
pub struct CallContext {
    /// The config current when the call started; the call keeps it to the end.
    pub config: Arc<Config>,
    /// The plugins loaded for that config.
    pub plugins: Plugins,
    /// Twilio's REST API for call control (hang-up, transfer), when `[twilio]` has an account
    /// SID and auth token.
    pub rest: Option<RestClient>,
    /// Where the call's record is written; `None`: not recorded.
    pub records: Option<Records>,
    /// Tasks of outbound calls, taken by the call whose stream carries their id.
    pub tasks: PendingTasks,
    /// Becomes `true` when the gateway's drain deadline passes: the call ends politely.
    pub shutdown: watch::Receiver<bool>,
    /// What runs agents' tools: the MCP servers' connections and an HTTP client.
    pub tools: ToolHost,
    /// Live call events (one bus per gateway, shared by every context).
    pub events: crate::events::EventBus,
    /// A stream admitted before it opened (the console's browser phone): its `start` must carry
    /// the admitted sids, and its parameters name the agent. `None` for Twilio's streams.
    pub admitted: Option<AdmittedStream>,
}

/// What runs agents' tools, shared by every call (and kept across reloads).
#[derive(Clone)]
pub struct ToolHost {
    /// The MCP servers' connections, once started ([`ToolHost::start_mcp`]); shared by every
    /// context of the gateway, so a reload keeps connections whose server is unchanged.
    pub mcp: Arc<std::sync::OnceLock<crate::tools::mcp::McpPool>>,
    /// HTTP tools' client (connection pool).
    pub http: reqwest::Client,
}

impl ToolHost {
    /// No MCP servers started yet; a fresh HTTP client.
    pub fn new() -> Self {
        Self {
            mcp: Arc::default(),
            http: reqwest::Client::builder()
                .user_agent(concat!("switchboard/", env!("CARGO_PKG_VERSION")))
                .build()
                .unwrap_or_default(),
        }
    }

    /// Starts connecting to `config`'s MCP servers, or (when already started) applies them
    /// as a reload: unchanged servers keep their connection. Returns at once; does nothing
    /// outside a tokio runtime.
    pub fn start_mcp(&self, config: &Config) {
        if tokio::runtime::Handle::try_current().is_err() {
            // Not serving yet: `serve` starts them.
            return;
        }
        match self.mcp.get() {
            Some(pool) => pool.reconfigure(config.mcp.clone()),
            None => {
                if !config.mcp.is_empty() {
                    let _ = self
                        .mcp
                        .set(crate::tools::mcp::McpPool::start(config.mcp.clone()));
                }
            }
        }
    }
}

impl Default for ToolHost {
    fn default() -> Self {
        Self::new()
    }
}

impl CallContext {
    /// A context for `config` and its `plugins`, with a REST client when the config has Twilio
    /// credentials, no records and no pending tasks.
    ///
    /// # Errors
    /// The REST client could not be built (a bad `api_base_url`).
    pub fn new(config: Arc<Config>, plugins: Plugins) -> Result<Self, RestError> {
        let rest = match (&config.twilio.account_sid, &config.twilio.auth_token) {
            (Some(sid), Some(token)) => {
                Some(RestClient::new(&config.twilio.api_base_url, sid, token)?)
            }
            _ => None,
        };
        Ok(Self {
            config,
            plugins,
            rest,
            records: None,
            tasks: PendingTasks::default(),
            shutdown: watch::channel(false).1,
            tools: ToolHost::new(),
            events: crate::events::EventBus::default(),
            admitted: None,
        })
    }
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// Twilio sent `stop`.
    Stop,
    /// The socket closed without `stop`.
    SocketClosed,
    /// The socket failed (protocol error, oversized message).
    SocketError(String),
    /// No `start` arrived in time.
    NoStart,
    /// The call could not be routed to an agent.
    NotRouted(String),
    /// The plugin could not be opened, returned an error, trapped or broke a limit.
    PluginFailed(PluginFailure),
    /// The plugin asked to hang up.
    HungUp,
    /// The plugin asked to transfer the call to this number, and Twilio took the redirect.
    Transferred(String),
    /// The agent's plugin is failing (its circuit breaker is open) and no fallback agent could
    /// take the call.
    CircuitOpen(String),
    /// The gateway was draining and its deadline passed: the caller heard the apology.
    Shutdown,
}

impl EndReason {
    /// The call record's outcome: `completed` (the stream ended with `stop`), `disconnected`,
    /// `failed`, `not-routed`, `plugin-failed`, `hung-up` (the agent hung up) or `transferred`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Stop => "completed",
            Self::SocketClosed => "disconnected",
            Self::SocketError(_) | Self::NoStart => "failed",
            Self::NotRouted(_) => "not-routed",
            Self::PluginFailed(_) | Self::CircuitOpen(_) => "plugin-failed",
            Self::HungUp => "hung-up",
            Self::Transferred(_) => "transferred",
            Self::Shutdown => "shutdown",
        }
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stop => f.write_str("the stream ended (stop)"),
            Self::SocketClosed => f.write_str("the socket closed without a stop message"),
            Self::SocketError(e) => write!(f, "socket error: {e}"),
            Self::NoStart => f.write_str("no start message arrived"),
            Self::NotRouted(e) => write!(f, "not routed: {e}"),
            Self::PluginFailed(e) => write!(f, "plugin failed: {e}"),
            Self::HungUp => f.write_str("the agent hung up"),
            Self::Transferred(n) => write!(f, "transferred to {n}"),
            Self::CircuitOpen(p) => write!(f, "plugin {p} is failing (circuit open)"),
            Self::Shutdown => f.write_str("the gateway shut down (drain deadline)"),
        }
    }
}

/// A plugin failure that ended a call: which plugin (and pipeline stage) and the typed error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginFailure {
    /// The plugin's name in agents.toml, when one plugin is to blame.
    pub plugin: Option<String>,
    /// The pipeline stage it serves, for a pipeline agent.
    pub stage: Option<Stage>,
    /// What went wrong; [`SessionError::kind`] labels metrics and records.
    pub error: SessionError,
}

impl PluginFailure {
    /// A failure of the plugin (or stage) named.
    pub fn of(plugin: &str, stage: Option<Stage>, error: SessionError) -> Self {
        Self {
            plugin: Some(plugin.to_string()),
            stage,
            error,
        }
    }
}

impl From<SessionError> for PluginFailure {
    fn from(error: SessionError) -> Self {
        Self {
            plugin: None,
            stage: None,
            error,
        }
    }
}

impl std::fmt::Display for PluginFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.plugin, self.stage) {
            (Some(p), Some(stage)) => write!(f, "{p} ({}): {}", stage.describe(), self.error),
            (Some(p), None) => write!(f, "{p}: {}", self.error),
            _ => write!(f, "{}", self.error),
        }
    }
}

impl EndReason {
    /// A plugin failure with `error` (the plugin to blame is filled in when the call ends).
    pub fn plugin(error: SessionError) -> Self {
        Self::PluginFailed(error.into())
    }
}

/// What one call did, logged when it ends.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CallStats {
    /// Twilio's `CallSid`, once `start` arrived.
    pub call_sid: Option<String>,
    /// The agent the call was routed to, once `start` routed it.
    pub agent: Option<String>,
    /// `media` frames received from Twilio.
    pub frames_in: u64,
    /// `media` frames sent to Twilio.
    pub frames_out: u64,
    /// Inbound messages dropped (malformed, bad payload, before `start`, out of order).
    pub dropped: u64,
    /// Silent frames inserted for gaps in `media.chunk`.
    pub gap_frames: u64,
    /// Marks sent / echoed.
    pub marks_sent: u64,
    /// Marks Twilio echoed back.
    pub marks_echoed: u64,
    /// `clear` messages sent.
    pub clears: u64,
    /// DTMF digits received.
    pub dtmf: u64,
    /// Time from `start` to the first audio frame sent to the caller (time-to-first-audio).
    pub first_audio: Option<Duration>,
    /// The conversation, turn by turn, as the plugin reported it.
    pub transcript: Vec<Turn>,
    /// Pipeline agents: each finished turn's latency breakdown, in order.
    pub turn_latency: Vec<TurnLatency>,
    /// Pipeline agents: caller frames the STT could not take (it fell behind).
    pub stt_dropped: u64,
    /// Pipeline agents: caller frames the VAD heard as speech that were no louder than the echo
    /// of the agent's own audio (`audio::echo`): no barge-in, silence to the STT.
    pub echo_frames: u64,
    /// A plugin failure after the call's end was decided (its `hangup` trapped or overran):
    /// counted, logged and recorded like any other failure, though the call ended for another
    /// reason.
    pub end_failure: Option<EndFailure>,
    /// What the agent's `record_result` stored (schema-valid), if it did.
    pub result: Option<serde_json::Value>,
}

/// A plugin failure at the end of a call (see [`CallStats::end_failure`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndFailure {
    /// The plugin.
    pub plugin: String,
    /// [`crate::plugin::SessionError::kind`].
    pub kind: &'static str,
    /// What went wrong.
    pub message: String,
}

/// Who spoke a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The person on the phone.
    Caller,
    /// The agent (the plugin).
    Agent,
    /// A tool the agent called (the host ran it).
    Tool,
}

/// One final transcript of one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// Who spoke.
    pub side: Side,
    /// What was said. Realtime agents: as the plugin reported it (for the agent, the whole
    /// reply as generated). Pipeline agents: the history the host keeps, so an agent turn cut
    /// short by barge-in holds only the words the caller heard.
    pub text: String,
    /// For an agent turn cut short by barge-in: the milliseconds of it the caller heard, by
    /// the playback clock.
    pub heard_ms: Option<u64>,
    /// A [`Side::Tool`] turn's call and result.
    pub tool: Option<crate::tools::ToolTrace>,
}

/// State once `start` has arrived.
struct Active {
    engine: AnyEngine,
    playout: Playout,
    to_plugin: ToPlugin,
    next_chunk: Option<u64>,
}

/// A Media Streams socket as the call sees it: axum's `WebSocket` in the gateway, an in-memory
/// pair of channels in tests of the call loop (as axum's `testing-websockets` example does).
pub trait MediaSocket:
    Sink<Message, Error = axum::Error> + Stream<Item = Result<Message, axum::Error>> + Unpin + Send
{
}

impl<T> MediaSocket for T where
    T: Sink<Message, Error = axum::Error>
        + Stream<Item = Result<Message, axum::Error>>
        + Unpin
        + Send
{
}

/// Runs one call on an upgraded Media Streams socket until it ends.
pub async fn run<S: MediaSocket>(ws: S, ctx: CallContext) -> (EndReason, CallStats) {
    let span = tracing::info_span!(
        "call",
        call_sid = tracing::field::Empty,
        stream_sid = tracing::field::Empty,
        agent = tracing::field::Empty,
        plugin = tracing::field::Empty,
    );
    // An admitted stream's call is known before `start`: it is recorded however it ends.
    let known_sid = ctx.admitted.as_ref().map(|a| a.call_sid.clone());
    let mut call = Call {
        ws,
        ctx,
        stream_sid: None,
        plugins: Vec::new(),
        task: None,
        events: None,
        metrics: CallMetrics::new(),
        stats: CallStats {
            call_sid: known_sid,
            ..CallStats::default()
        },
        active: None,
        inbox: inbox::Inbox::default(),
        payload: Vec::with_capacity(FRAME_SAMPLES),
        converted: Vec::new(),
        unflushed: false,
        span: span.clone(),
    };
    let reason = call.run().instrument(span.clone()).await;
    call.stats.dropped += call.inbox.dropped();
    span.in_scope(|| {
        tracing::info!(
            reason = ?reason,
            failure_kind = end::failure_kind(&reason, &call.stats),
            stats = ?call.stats,
            "call ended"
        );
    });
    let blamed = match &reason {
        EndReason::PluginFailed(failure) => failure.plugin.clone(),
        _ => call.plugins.first().cloned(),
    };
    if let Some(events) = &call.events {
        end::emit_end_events(events, &reason, &call.stats);
    }
    // The call's last frames are counted before it is: a scrape that sees the call sees them.
    call.metrics.frame.merge();
    call.metrics.lead.merge();
    end::record_call_metrics(&reason, &call.stats, blamed.as_deref());
    if let (Some(records), Some(call_sid)) = (&call.ctx.records, &call.stats.call_sid) {
        let ended = end::call_end_record(call_sid, &reason, &call.stats);
        if let Err(e) = records.call_ended(ended).await {
            span.in_scope(|| tracing::error!(error = %e, "call record not written"));
        }
    }
    (reason, call.stats)
}

/// Metrics a call records into on its hot path (see [`crate::metrics`]).
struct CallMetrics {
    frame: LocalHistogram,
    lead: LocalHistogram,
    gaps: metrics::Counter,
}

impl CallMetrics {
    fn new() -> Self {
        Self {
            frame: LocalHistogram::new(&crate::metrics::frame::FRAME),
            lead: LocalHistogram::new(&crate::metrics::frame::LEAD),
            gaps: metrics::counter!(crate::metrics::INBOUND_GAP_FRAMES),
        }
    }
}

struct Call<S> {
    ws: S,
    ctx: CallContext,
    /// Known from `start` on, even when no session could be opened.
    stream_sid: Option<String>,
    /// The plugins serving the call, once routed (one, or a pipeline's three).
    plugins: Vec<String>,
    /// The outbound call's task, once `start` named it.
    task: Option<task::Task>,
    /// The call's live events, once `start` named the call.
    events: Option<crate::events::CallEvents>,
    /// Hot-path metric handles, fetched once per call.
    metrics: CallMetrics,
    stats: CallStats,
    active: Option<Active>,
    /// Twilio messages read while the plugin worked, not yet handled.
    inbox: inbox::Inbox,
    payload: Vec<u8>,
    converted: Vec<u8>,
    /// Messages queued by [`Call::send`] and not yet written.
    unflushed: bool,
    span: Span,
}

/// What to do after one message.
enum Next {
    Continue,
    End(EndReason),
}

impl<S: MediaSocket> Call<S> {
    /// The started call's engine, and the line it acts on the call through; `None` before
    /// `start`.
    fn engine_and_line(&mut self) -> Option<(&mut AnyEngine, Line<'_, S>)> {
        let active = self.active.as_mut()?;
        let line = Line {
            ws: &mut self.ws,
            inbox: &mut self.inbox,
            stats: &mut self.stats,
            metrics: &mut self.metrics,
            unflushed: &mut self.unflushed,
            playout: &mut active.playout,
            can_transfer: self.ctx.rest.is_some(),
        };
        Some((&mut active.engine, line))
    }
}
