//! The per-call task: one tokio task per Media Streams WebSocket owns everything of its call —
//! the socket, the plugin session, the audio converters, the counters — and reacts to Twilio's
//! messages one at a time. Nothing here is shared with other calls, so nothing here locks.
//!
//! Life of a call: `connected` → `start` (route from `customParameters` against the config of
//! that moment, open the plugin session) → `media`/`dtmf`/`mark` → `stop` or socket close or the
//! plugin's `hang-up` → the session sees `hangup` and is dropped, the socket is closed.

pub mod inbox;
pub mod pipeline;
pub mod stages;
pub mod task;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::SinkExt as _;
use tokio::time::Instant;
use tracing::{Instrument, Span};

use crate::audio::convert::{FromPlugin, ToPlugin};
use crate::audio::playback::{Echo, Outgoing, Playback};
use crate::audio::vad::Vad;
use crate::audio::{FRAME_MS, FRAME_SAMPLES, mulaw};
use crate::config::{Agent, AgentMode, Config, PluginUse};
use crate::metrics::frame::LocalHistogram;
use crate::plugin::io::{IoDriver, IoEvent, IoPolicy};
use crate::plugin::{
    CallInfo, Plugin, Plugins, Role, Session, SessionConfig, SessionInput, SessionOutput, Stage,
    StageInput, StageOutput,
};
use crate::records::{self, Records};
use crate::routing::{self, RouteRequest};
use crate::twilio::media_stream::{self, Inbound, MarkName, Outbound};
use crate::twilio::rest::{RestClient, RestError, UpdateCall};
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
    /// The plugin could not be opened, returned an error or trapped.
    PluginFailed(String),
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
    /// The call record's outcome: `completed` (Twilio ended the stream), `disconnected`,
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
            Self::Stop => f.write_str("Twilio ended the stream"),
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
    /// A plugin failure after the call's end was decided (its `hangup` trapped or overran):
    /// counted, logged and recorded like any other failure, though the call ended for another
    /// reason.
    pub end_failure: Option<EndFailure>,
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
}

/// What runs the conversation of an active call.
#[allow(
    clippy::large_enum_variant,
    reason = "one per call; the realtime session is used on every frame, so it stays inline"
)]
enum Engine {
    /// One realtime session and the host I/O it asked for.
    Realtime { session: Session, io: IoDriver },
    /// Three stage sessions in their own tasks, and the host's turn-taking.
    Pipeline(Box<PipelineCall>),
}

/// A pipeline call's state in the call task.
struct PipelineCall {
    turns: Turns,
    vad: Vad,
    stt: StageWorker,
    llm: StageWorker,
    tts: StageWorker,
    reports: mpsc::Receiver<StageReport>,
    /// Plugin names of the STT, LLM and TTS stages, for blame.
    names: [String; 3],
    /// Where the current reply's first frame sits on the playback timeline (ms).
    reply_origin: Option<u64>,
    /// When everything queued should have played: check then for `PlaybackIdle`.
    idle_at: Option<Instant>,
    /// History entries already copied into the call's transcript.
    history_seen: usize,
    /// Heard ms of the reply cut by the last barge-in, for its transcript entry.
    cut_heard: Option<u64>,
}

impl PipelineCall {
    fn worker(&mut self, stage: Stage) -> (&mut StageWorker, &str) {
        match stage {
            Stage::Stt => (&mut self.stt, &self.names[0]),
            Stage::Llm => (&mut self.llm, &self.names[1]),
            _ => (&mut self.tts, &self.names[2]),
        }
    }
}

/// State once `start` has arrived.
struct Active {
    stream_sid: String,
    engine: Engine,
    to_plugin: ToPlugin,
    from_plugin: FromPlugin,
    next_chunk: Option<u64>,
    /// Paces outbound audio and knows what the caller heard.
    playback: Playback,
    /// An input the host owes the plugin after the outputs being carried out (`interrupted`).
    deferred: Option<SessionInput>,
    /// When `start` arrived (for time-to-first-audio).
    started: Instant,
    /// Set once the plugin hung up: close when the hang-up mark returns or at this deadline.
    hangup_deadline: Option<Instant>,
    /// Set when the plugin asked for a transfer: once the queued audio has played (as for a
    /// hang-up), the call is redirected to this number.
    transfer_to: Option<String>,
}

impl Active {
    /// How the call ends once the plugin's last audio has played.
    fn ending(&self) -> EndReason {
        match &self.transfer_to {
            Some(number) => EndReason::Transferred(number.clone()),
            None => EndReason::HungUp,
        }
    }
}

/// Runs one call on an upgraded Media Streams socket until it ends.
pub async fn run(ws: WebSocket, ctx: CallContext) -> (EndReason, CallStats) {
    let span = tracing::info_span!(
        "call",
        call_sid = tracing::field::Empty,
        stream_sid = tracing::field::Empty,
        agent = tracing::field::Empty,
        plugin = tracing::field::Empty,
    );
    let mut call = Call {
        ws,
        ctx,
        stream_sid: None,
        plugins: Vec::new(),
        failed_plugin: None,
        task: None,
        metrics: CallMetrics::new(),
        stats: CallStats::default(),
        active: None,
        inbox: inbox::Inbox::default(),
        abandoned: false,
        payload: Vec::with_capacity(FRAME_SAMPLES),
        converted: Vec::new(),
        unflushed: false,
        span: span.clone(),
    };
    let reason = call.run().instrument(span.clone()).await;
    call.stats.dropped += call.inbox.dropped();
    span.in_scope(|| {
        tracing::info!(reason = ?reason, stats = ?call.stats, "call ended");
    });
    let blamed = call
        .failed_plugin
        .clone()
        .or_else(|| call.plugins.first().cloned());
    // The call's last frames are counted before it is: a scrape that sees the call sees them.
    call.metrics.frame.merge();
    call.metrics.lead.merge();
    record_call_metrics(&reason, &call.stats, blamed.as_deref());
    if let (Some(records), Some(call_sid)) = (&call.ctx.records, &call.stats.call_sid) {
        let ended = call_end_record(call_sid, &reason, &call.stats);
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

/// Counts an ended call by agent and outcome, its plugin failure if any, and its pipeline turn
/// latencies.
fn record_call_metrics(reason: &EndReason, stats: &CallStats, failed_plugin: Option<&str>) {
    let agent = stats.agent.clone().unwrap_or_else(|| "none".into());
    metrics::counter!(
        crate::metrics::CALLS,
        "agent" => agent.clone(),
        "outcome" => reason.outcome()
    )
    .increment(1);
    if let EndReason::PluginFailed(why) = reason {
        let kind = [
            ("plugin trapped", "trap"),
            ("plugin error", "error"),
            ("plugin overran", "time"),
            ("plugin exceeded its CPU share", "cpu"),
        ]
        .into_iter()
        .find(|(prefix, _)| why.starts_with(prefix))
        .map_or("open", |(_, kind)| kind);
        let plugin = failed_plugin.unwrap_or("unknown").to_string();
        metrics::counter!(crate::metrics::PLUGIN_FAILURES, "plugin" => plugin, "kind" => kind)
            .increment(1);
    }
    if let Some(failure) = &stats.end_failure {
        metrics::counter!(
            crate::metrics::PLUGIN_FAILURES,
            "plugin" => failure.plugin.clone(),
            "kind" => failure.kind
        )
        .increment(1);
    }
    for latency in &stats.turn_latency {
        for (stage, value) in [
            ("stt_final", latency.stt_final),
            ("llm_first_text", latency.llm_first_text),
            ("tts_first_audio", latency.tts_first_audio),
            ("first_audio_out", latency.first_audio_out),
        ] {
            if let Some(d) = value {
                metrics::histogram!(
                    crate::metrics::TURN_SECONDS,
                    "agent" => agent.clone(),
                    "stage" => stage
                )
                .record(d.as_secs_f64());
            }
        }
    }
}

/// The record of a call that ended for `reason`.
fn call_end_record(call_sid: &str, reason: &EndReason, stats: &CallStats) -> records::CallEnd {
    let ms = |d: Option<Duration>| d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    records::CallEnd {
        call_sid: call_sid.to_string(),
        ended_at_ms: records::now_ms(),
        outcome: reason.outcome().to_string(),
        reason: match &stats.end_failure {
            None => reason.to_string(),
            Some(f) => format!(
                "{reason}; then plugin {} failed at hangup: {}",
                f.plugin, f.message
            ),
        },
        transcript: stats
            .transcript
            .iter()
            .map(|t| records::TranscriptTurn {
                side: match t.side {
                    Side::Caller => "caller",
                    Side::Agent => "agent",
                }
                .to_string(),
                text: t.text.clone(),
                heard_ms: t.heard_ms,
            })
            .collect(),
        turn_latency: stats
            .turn_latency
            .iter()
            .map(|l| records::TurnLatency {
                stt_final_ms: ms(l.stt_final),
                llm_first_text_ms: ms(l.llm_first_text),
                tts_first_audio_ms: ms(l.tts_first_audio),
                first_audio_out_ms: ms(l.first_audio_out),
            })
            .collect(),
        frames_in: stats.frames_in,
        frames_out: stats.frames_out,
        first_audio_ms: ms(stats.first_audio),
    }
}

struct Call {
    ws: WebSocket,
    ctx: CallContext,
    /// Known from `start` on, even when no session could be opened.
    stream_sid: Option<String>,
    /// The plugins serving the call, once routed (one, or a pipeline's three).
    plugins: Vec<String>,
    /// The plugin whose failure ended the call.
    failed_plugin: Option<String>,
    /// The outbound call's task, once `start` named it.
    task: Option<task::Task>,
    /// Hot-path metric handles, fetched once per call.
    metrics: CallMetrics,
    stats: CallStats,
    active: Option<Active>,
    /// Twilio messages read while the plugin worked, not yet handled.
    inbox: inbox::Inbox,
    /// A call into the realtime session was abandoned half-way (the caller hung up): the
    /// session gets no `hangup`.
    abandoned: bool,
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

impl Call {
    async fn run(&mut self) -> EndReason {
        let start_deadline = Instant::now() + START_TIMEOUT;
        // The timers and the shutdown watch live across iterations: building them per message
        // registered and removed a timer and a waiter on the shared shutdown channel per frame.
        // A `Sleep` moved later is a cheap update; one moved earlier is re-registered.
        let mut deadline_timer = Timer::new();
        let mut due_timer = Timer::new();
        let mut idle_timer = Timer::new();
        let mut shutdown = self.ctx.shutdown.clone();
        let shutdown = shutdown_signalled(&mut shutdown);
        tokio::pin!(shutdown);
        let reason = loop {
            let (deadline, due, idle_at) = match &self.active {
                None => (Some(start_deadline), None, None),
                Some(a) => (
                    a.hangup_deadline,
                    a.playback.next_due(Instant::now()),
                    match &a.engine {
                        Engine::Pipeline(p) => p.idle_at,
                        Engine::Realtime { .. } => None,
                    },
                ),
            };
            deadline_timer.arm(deadline);
            due_timer.arm(due);
            idle_timer.arm(idle_at);
            let next = tokio::select! {
                msg = next_message(&mut self.inbox, &mut self.ws) => self.on_message(msg).await,
                () = deadline_timer.sleep.as_mut(), if deadline.is_some() => {
                    Next::End(match &self.active {
                        None => EndReason::NoStart,
                        Some(a) => a.ending(),
                    })
                }
                () = due_timer.sleep.as_mut(), if due.is_some() => self.pump().await,
                event = next_engine_event(&mut self.active) => match event {
                    EngineEvent::Io(event) => self.feed(SessionInput::Io(event)).await,
                    EngineEvent::Report(report) => self.on_report(report).await,
                },
                () = idle_timer.sleep.as_mut(), if idle_at.is_some() => self.check_idle().await,
                () = &mut shutdown => Next::End(EndReason::Shutdown),
            };
            // Everything one event produced goes out in one write.
            if let Next::End(reason) = self.flush().await {
                break reason;
            }
            if let Next::End(reason) = next {
                break reason;
            }
        };
        self.finish(&reason).await;
        reason
    }

    /// Handles one message (or the end) of the Media Streams socket.
    async fn on_message(&mut self, msg: Option<Result<Message, axum::Error>>) -> Next {
        match msg {
            None => Next::End(EndReason::SocketClosed),
            Some(Err(e)) => Next::End(EndReason::SocketError(e.to_string())),
            Some(Ok(Message::Text(text))) => self.on_text(text.as_str()).await,
            Some(Ok(Message::Close(_))) => Next::End(EndReason::SocketClosed),
            Some(Ok(Message::Binary(_))) => {
                tracing::warn!("binary WebSocket message dropped: Media Streams sends text");
                self.stats.dropped += 1;
                Next::Continue
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Next::Continue,
        }
    }

    async fn finish(&mut self, reason: &EndReason) {
        if matches!(
            reason,
            EndReason::PluginFailed(_) | EndReason::CircuitOpen(_)
        ) {
            // The session is broken or was never opened: drop it and tell the caller.
            self.active = None;
            self.apologise().await;
        }
        let was_active = self.active.is_some();
        if let Some(active) = &mut self.active {
            match &mut active.engine {
                Engine::Realtime { session, .. } => {
                    // A failure here counts like any other (metrics, breaker, record).
                    if !self.abandoned
                        && let Err(e) = session.handle(SessionInput::Hangup).await
                    {
                        tracing::warn!(error = %e, "plugin failed on hangup");
                        self.stats.end_failure = Some(EndFailure {
                            plugin: self.plugins.first().cloned().unwrap_or_default(),
                            kind: e.kind(),
                            message: e.to_string(),
                        });
                    }
                }
                Engine::Pipeline(p) => {
                    // A reply still playing enters the record as far as the caller heard it.
                    if let Some(origin) = p.reply_origin {
                        let now = Instant::now();
                        let heard_ms = active.playback.heard_ms(now).saturating_sub(origin);
                        p.cut_heard = Some(heard_ms);
                        let _ = p.turns.on(Event::Interrupted { heard_ms }, now);
                    }
                    // Each stage task ends after its hangup (a failure there is counted by
                    // the stage task itself).
                    for stage in [Stage::Stt, Stage::Llm, Stage::Tts] {
                        let _ = p.worker(stage).0.send(StageInput::Hangup);
                    }
                    self.stats.turn_latency = std::mem::take(&mut p.turns.latencies);
                    self.sync_transcript();
                    for (n, latency) in self.stats.turn_latency.iter().enumerate() {
                        tracing::info!(turn = n + 1, ?latency, "turn latency");
                    }
                }
            }
        }
        let failed_at_end = self.stats.end_failure.as_ref().map(|f| f.plugin.clone());
        match reason {
            EndReason::PluginFailed(_) => {
                let blamed = self
                    .failed_plugin
                    .clone()
                    .or_else(|| self.plugins.first().cloned());
                self.record_failure(blamed);
            }
            EndReason::CircuitOpen(_) => {}
            _ if failed_at_end.is_some() => self.record_failure(failed_at_end),
            _ if was_active => {
                for name in &self.plugins {
                    if let Some(breaker) = self.ctx.plugins.breaker(name) {
                        breaker.record_success();
                    }
                }
            }
            _ => {}
        }
        // Drop the session (and the plugin's store) before the socket closes.
        self.active = None;
        if !self.call_control(reason).await || *reason == EndReason::Shutdown {
            self.apologise().await;
        }
        if !matches!(reason, EndReason::SocketClosed | EndReason::SocketError(_)) {
            let frame = CloseFrame {
                code: axum::extract::ws::close_code::NORMAL,
                reason: "call ended".into(),
            };
            let _ = self.ws.send(Message::Close(Some(frame))).await;
        }
    }

    /// Counts a failure of `plugin` on its circuit breaker.
    fn record_failure(&self, plugin: Option<String>) {
        if let Some(name) = plugin
            && let Some(breaker) = self.ctx.plugins.breaker(&name)
            && breaker.record_failure()
        {
            tracing::error!(
                plugin = %name,
                failures = breaker.failures(),
                "plugin circuit breaker opened: new calls go to the fallback"
            );
        }
    }

    /// Carries out a plugin's hang-up or transfer through Twilio's REST API, before the socket
    /// closes (closing a `<Connect><Stream>` first would let Twilio go on to the end of the
    /// TwiML and end the call before a transfer could redirect it). Returns false when a
    /// transfer failed, so the caller hears the apology.
    async fn call_control(&mut self, reason: &EndReason) -> bool {
        let update = match reason {
            EndReason::HungUp => UpdateCall::Complete,
            EndReason::Transferred(number) => UpdateCall::Twiml(
                crate::twiml::Response::new()
                    .dial(crate::twiml::Dial::new(number.as_str()))
                    .to_xml(),
            ),
            _ => return true,
        };
        let (Some(rest), Some(call_sid)) = (&self.ctx.rest, &self.stats.call_sid) else {
            // Without the REST API, closing the stream ends a `<Connect><Stream>` call anyway.
            return true;
        };
        match rest.update_call(call_sid, &update).await {
            Ok(call) => {
                tracing::info!(status = ?call.status, ?reason, "call updated through Twilio's REST API");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, ?reason, "Twilio refused the call update");
                !matches!(reason, EndReason::Transferred(_))
            }
        }
    }

    /// Clears whatever the plugin queued, plays [`APOLOGY`] and waits (bounded) until Twilio
    /// reports it played, or the caller hangs up.
    async fn apologise(&mut self) {
        let Some(stream_sid) = self.stream_sid.clone() else {
            return;
        };
        let mut messages = vec![
            Outbound::Clear {
                stream_sid: &stream_sid,
            }
            .to_json(),
        ];
        for chunk in APOLOGY.chunks(FRAME_SAMPLES) {
            let mut frame = chunk.to_vec();
            frame.resize(FRAME_SAMPLES, mulaw::SILENCE);
            messages.push(Outbound::media_json(&stream_sid, &frame));
        }
        messages.push(
            Outbound::Mark {
                stream_sid: &stream_sid,
                mark: MarkName {
                    name: APOLOGY_MARK.into(),
                },
            }
            .to_json(),
        );
        for m in messages {
            if self.ws.feed(Message::Text(m.into())).await.is_err() {
                return;
            }
        }
        if self.ws.flush().await.is_err() {
            return;
        }
        let played = Duration::from_millis(APOLOGY.len() as u64 / 8);
        let deadline = Instant::now() + played + HANGUP_GRACE;
        loop {
            let msg = tokio::select! {
                msg = self.ws.recv() => msg,
                () = tokio::time::sleep_until(deadline) => return,
            };
            match msg {
                Some(Ok(Message::Text(text))) => match media_stream::parse(text.as_str()) {
                    Ok(Inbound::Mark { mark, .. }) if mark.name == APOLOGY_MARK => return,
                    Ok(Inbound::Stop { .. }) => return,
                    _ => {}
                },
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            }
        }
    }

    async fn on_text(&mut self, text: &str) -> Next {
        let msg = match media_stream::parse(text) {
            Ok(msg) => msg,
            Err(e) => {
                self.stats.dropped += 1;
                tracing::warn!(error = %e, "frame dropped");
                return Next::Continue;
            }
        };
        match msg {
            Inbound::Connected { protocol, version } => {
                tracing::debug!(%protocol, %version, "connected");
                Next::Continue
            }
            Inbound::Start {
                start, stream_sid, ..
            } => self.on_start(start, stream_sid).await,
            Inbound::Media {
                media, stream_sid, ..
            } => {
                let started = std::time::Instant::now();
                let next = self.on_media(&media, &stream_sid).await;
                self.metrics.frame.record(started.elapsed());
                next
            }
            Inbound::Dtmf { dtmf, .. } => {
                self.stats.dtmf += 1;
                self.feed(SessionInput::Dtmf(dtmf.digit)).await
            }
            Inbound::Mark { mark, .. } => self.on_mark(mark.name).await,
            Inbound::Stop { .. } => Next::End(EndReason::Stop),
            Inbound::Unknown => {
                self.stats.dropped += 1;
                tracing::warn!(event = ?media_stream::event_name(text), "unknown event skipped");
                Next::Continue
            }
        }
    }

    async fn on_start(&mut self, start: media_stream::Start, stream_sid: String) -> Next {
        if self.active.is_some() {
            self.stats.dropped += 1;
            tracing::warn!("second start ignored");
            return Next::Continue;
        }
        self.span.record("call_sid", start.call_sid.as_str());
        self.stats.call_sid = Some(start.call_sid.clone());
        self.span.record("stream_sid", stream_sid.as_str());
        self.stream_sid = Some(stream_sid.clone());
        let mut params: Vec<(String, String)> = start.custom_parameters.into_iter().collect();
        // An outbound call's task travels as an id; its prompt and context reach the plugins as
        // parameters (and fill the instructions template below).
        let task_id = params
            .iter()
            .find(|(n, _)| n == task::TASK_PARAMETER)
            .map(|(_, v)| v.clone());
        if let Some(id) = task_id {
            self.task = self.ctx.tasks.take(&id);
            match &self.task {
                Some(t) => params.extend(t.parameters()),
                None => {
                    tracing::warn!(task = %id, "the call's task is unknown or expired; the agent runs without it")
                }
            }
        }
        let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let config = self.ctx.config.clone();
        let route = routing::route(
            &config,
            &RouteRequest {
                agent: param("agent"),
                to: param("To"),
                params: &params,
            },
        );
        let route = match route {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "call not routed");
                return Next::End(EndReason::NotRouted(e.to_string()));
            }
        };
        let mut agent = route.agent;
        let plugins = &self.ctx.plugins;
        let breaker_open = |a: &Agent| -> Option<String> {
            a.plugin_uses()
                .into_iter()
                .find(|(_, u)| plugins.breaker(&u.plugin).is_some_and(|b| b.is_open()))
                .map(|(_, u)| u.plugin.clone())
        };
        if let Some(failing) = breaker_open(agent) {
            let fallback = agent.fallback.as_deref().and_then(|f| config.agent(f));
            match fallback {
                Some(f) if breaker_open(f).is_none() => {
                    tracing::warn!(agent = %agent.name, fallback = %f.name, "plugin circuit open; call goes to the fallback agent");
                    agent = f;
                }
                _ => {
                    tracing::warn!(agent = %agent.name, plugin = %failing, "plugin circuit open and no fallback available");
                    self.stats.agent = Some(agent.name.clone());
                    return Next::End(EndReason::CircuitOpen(failing));
                }
            }
        }
        self.span.record("agent", agent.name.as_str());
        self.plugins = agent
            .plugin_uses()
            .into_iter()
            .map(|(_, u)| u.plugin.clone())
            .collect();
        self.stats.agent = Some(agent.name.clone());
        self.span.record("plugin", self.plugins.join("+").as_str());
        let call = CallInfo {
            call_sid: start.call_sid.clone(),
            stream_sid: stream_sid.clone(),
            from: param("From").unwrap_or_default().to_string(),
            to: param("To").unwrap_or_default().to_string(),
            direction: param("Direction").unwrap_or("inbound").to_string(),
            agent: agent.name.clone(),
            parameters: params.clone(),
        };
        let opened = match &agent.mode {
            AgentMode::Realtime(used) => self.open_realtime(agent, used, call.clone()).await,
            AgentMode::Pipeline(_) => self.open_pipeline(agent, call.clone()).await,
        };
        let (engine, input_format) = match opened {
            Ok(o) => o,
            Err(next) => return next,
        };
        let to_plugin = match ToPlugin::new(input_format) {
            Ok(c) => c,
            Err(e) => return Next::End(EndReason::PluginFailed(e.to_string())),
        };
        tracing::info!(reason = ?route.reason, from = %call.from, to = %call.to, "call started");
        if let Some(records) = &self.ctx.records {
            // Enqueued in call order, ahead of the end-of-call record; a crash from here on
            // leaves the call marked as in progress, which the next start reports as interrupted.
            records.stream_started_nowait(records::StreamStarted {
                call_sid: call.call_sid.clone(),
                stream_sid: call.stream_sid.clone(),
                agent: Some(call.agent.clone()),
                plugin: Some(self.plugins.join("+")),
                from: Some(call.from.clone()).filter(|f| !f.is_empty()),
                to: Some(call.to.clone()).filter(|t| !t.is_empty()),
                started_at_ms: records::now_ms(),
            });
        }
        self.active = Some(Active {
            stream_sid,
            engine,
            to_plugin,
            from_plugin: FromPlugin::new(),
            next_chunk: None,
            playback: Playback::new(Instant::now()),
            deferred: None,
            started: Instant::now(),
            hangup_deadline: None,
            transfer_to: None,
        });
        // A pipeline speaks its greeting through the TTS.
        self.pipeline_event(Event::Started).await
    }

    /// The loaded plugin `used` names, or the end of the call.
    fn loaded(&mut self, used: &PluginUse) -> Result<Arc<Plugin>, Next> {
        self.ctx.plugins.get(&used.plugin).cloned().ok_or_else(|| {
            self.failed_plugin = Some(used.plugin.clone());
            Next::End(EndReason::PluginFailed(format!(
                "plugin {} is not loaded",
                used.plugin
            )))
        })
    }

    fn session_config(
        agent: &Agent,
        used: &PluginUse,
        call: CallInfo,
        task: Option<&task::Task>,
        allow_private_destinations: bool,
    ) -> SessionConfig {
        // A task fills the realtime plugin's `instructions` setting for this call only.
        let settings = match (task, used.effective_settings.get("instructions")) {
            (Some(task), Some(serde_json::Value::String(template))) => {
                let mut settings = used.effective_settings.clone();
                settings["instructions"] = serde_json::Value::String(task.render(template));
                settings.to_string()
            }
            _ => used.settings_json.clone(),
        };
        SessionConfig {
            call,
            settings,
            greeting: agent.greeting.clone(),
            io: Arc::new(IoPolicy {
                allowed_hosts: used.allowed_hosts.clone(),
                secrets: used.secrets.clone(),
                allow_private_destinations,
            }),
        }
    }

    async fn open_realtime(
        &mut self,
        agent: &Agent,
        used: &PluginUse,
        call: CallInfo,
    ) -> Result<(Engine, crate::plugin::AudioFormat), Next> {
        let plugin = self.loaded(used)?;
        let config = Self::session_config(
            agent,
            used,
            call,
            self.task.as_ref(),
            self.ctx.config.server.allow_private_destinations,
        );
        let mut session = match plugin.open(&config).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "plugin session failed to open");
                return Err(Next::End(EndReason::PluginFailed(e.to_string())));
            }
        };
        let mut io = IoDriver::new();
        for command in session.take_io() {
            io.execute(command);
        }
        Ok((Engine::Realtime { session, io }, plugin.info().input_format))
    }

    async fn open_pipeline(
        &mut self,
        agent: &Agent,
        call: CallInfo,
    ) -> Result<(Engine, crate::plugin::AudioFormat), Next> {
        let Some(pipeline) = agent.pipeline() else {
            return Err(Next::End(EndReason::PluginFailed(
                "agent has no pipeline".into(),
            )));
        };
        let (report_tx, reports) = mpsc::channel(REPORT_QUEUE);
        let mut workers = Vec::with_capacity(3);
        let mut stt_format = None;
        for (stage, used) in [
            (Stage::Stt, &pipeline.stt),
            (Stage::Llm, &pipeline.llm),
            (Stage::Tts, &pipeline.tts),
        ] {
            let plugin = self.loaded(used)?;
            if stage == Stage::Stt {
                stt_format = Some(plugin.info().input_format);
            }
            let session = match plugin
                .open_stage(&Self::session_config(
                    agent,
                    used,
                    call.clone(),
                    None,
                    self.ctx.config.server.allow_private_destinations,
                ))
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, plugin = %used.plugin, "pipeline stage failed to open");
                    self.failed_plugin = Some(used.plugin.clone());
                    return Err(Next::End(EndReason::PluginFailed(format!(
                        "{} ({}): {e}",
                        used.plugin,
                        stage.describe()
                    ))));
                }
            };
            let blocking = matches!(plugin.as_ref(), Plugin::Native(_));
            workers.push(StageWorker::spawn(
                stage,
                session,
                blocking,
                report_tx.clone(),
                stages::Blame {
                    plugin: used.plugin.clone(),
                    breaker: self.ctx.plugins.breaker(&used.plugin).cloned(),
                },
            ));
        }
        let vad = Vad::new().map_err(|e| Next::End(EndReason::PluginFailed(e.to_string())))?;
        let mut workers = workers.into_iter();
        let (Some(stt), Some(llm), Some(tts), Some(format)) =
            (workers.next(), workers.next(), workers.next(), stt_format)
        else {
            return Err(Next::End(EndReason::PluginFailed(
                "pipeline stages missing".into(),
            )));
        };
        let instructions = match &self.task {
            Some(task) => task.render(&pipeline.instructions),
            None => pipeline.instructions.clone(),
        };
        let turns = Turns::new(TurnConfig {
            instructions,
            endpointing: pipeline.endpointing,
            greeting: agent.greeting.clone(),
        });
        let call = PipelineCall {
            turns,
            vad,
            stt,
            llm,
            tts,
            reports,
            names: [
                pipeline.stt.plugin.clone(),
                pipeline.llm.plugin.clone(),
                pipeline.tts.plugin.clone(),
            ],
            reply_origin: None,
            idle_at: None,
            history_seen: 0,
            cut_heard: None,
        };
        Ok((Engine::Pipeline(Box::new(call)), format))
    }

    /// Feeds one event to a pipeline call's turn-taking and carries out what it decides.
    async fn pipeline_event(&mut self, event: Event) -> Next {
        let Some(Active {
            engine: Engine::Pipeline(p),
            ..
        }) = &mut self.active
        else {
            return Next::Continue;
        };
        let actions = p.turns.on(event, Instant::now());
        self.pipeline_actions(actions).await
    }

    async fn pipeline_actions(&mut self, actions: Vec<Action>) -> Next {
        let mut queue: std::collections::VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            let Some(active) = &mut self.active else {
                return Next::Continue;
            };
            let Engine::Pipeline(p) = &mut active.engine else {
                return Next::Continue;
            };
            let (stage, input) = match action {
                Action::Stt(input) => (Stage::Stt, input),
                Action::Llm(input) => (Stage::Llm, input),
                Action::Tts(input) => (Stage::Tts, input),
                Action::Play { format, data } => {
                    if p.reply_origin.is_none() {
                        p.reply_origin = Some(active.playback.end_ms());
                    }
                    if let Err(e) = active.from_plugin.push(format, &data) {
                        self.failed_plugin = Some(p.names[2].clone());
                        return Next::End(EndReason::PluginFailed(e.to_string()));
                    }
                    if let Next::End(r) = self.queue_frames(false).await {
                        return Next::End(r);
                    }
                    continue;
                }
                Action::ClearPlayback => {
                    let now = Instant::now();
                    let heard_ms = match p.reply_origin.take() {
                        Some(origin) => active.playback.heard_ms(now).saturating_sub(origin),
                        None => 0,
                    };
                    active.playback.clear(now);
                    active.from_plugin.clear();
                    p.idle_at = None;
                    p.cut_heard = Some(heard_ms);
                    self.stats.clears += 1;
                    tracing::debug!(heard_ms, "barge-in: playback cleared");
                    queue.extend(p.turns.on(Event::Interrupted { heard_ms }, now));
                    let msg = Outbound::Clear {
                        stream_sid: &active.stream_sid,
                    }
                    .to_json();
                    if let Next::End(r) = self.send(msg).await {
                        return Next::End(r);
                    }
                    continue;
                }
            };
            let is_audio = matches!(input, StageInput::Audio { .. });
            let (worker, name) = p.worker(stage);
            if let Err(e) = worker.send(input) {
                if is_audio {
                    self.stats.stt_dropped += 1;
                    if self.stats.stt_dropped == 1 {
                        tracing::warn!(plugin = %name, "{e}: caller audio dropped");
                    }
                } else {
                    tracing::error!(plugin = %name, "{e}");
                    self.failed_plugin = Some(name.to_string());
                    return Next::End(EndReason::PluginFailed(e.to_string()));
                }
            }
        }
        self.sync_transcript();
        Next::Continue
    }

    /// Copies new history entries of a pipeline call into the call's transcript.
    fn sync_transcript(&mut self) {
        let Some(Active {
            engine: Engine::Pipeline(p),
            ..
        }) = &mut self.active
        else {
            return;
        };
        let history = p.turns.history();
        for (role, text) in &history[p.history_seen..] {
            let (side, heard_ms) = match role {
                Role::User => (Side::Caller, None),
                _ => (Side::Agent, p.cut_heard.take()),
            };
            tracing::info!(side = ?side, %text, heard_ms, "transcript");
            self.stats.transcript.push(Turn {
                side,
                text: text.clone(),
                heard_ms,
            });
            if side == Side::Agent {
                p.reply_origin = None;
            }
        }
        p.history_seen = history.len();
    }

    /// A stage reported outputs (or failed).
    async fn on_report(&mut self, report: StageReport) -> Next {
        let Some(Active {
            engine: Engine::Pipeline(p),
            ..
        }) = &mut self.active
        else {
            return Next::Continue;
        };
        let stage = report.stage;
        let (worker, name) = p.worker(stage);
        if !worker.is_current(&report) {
            return Next::Continue; // cancelled work
        }
        let outputs = match report.result {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(plugin = %name, stage = stage.describe(), error = %e, "pipeline stage failed");
                self.failed_plugin = Some(name.to_string());
                return Next::End(EndReason::PluginFailed(format!(
                    "{name} ({}): {e}",
                    stage.describe()
                )));
            }
        };
        for output in outputs {
            let flush = matches!(output, StageOutput::UtteranceDone);
            if let StageOutput::Transcript { text, is_final } = &output {
                tracing::debug!(is_final, %text, "caller transcript");
            }
            let event = match stage {
                Stage::Stt => Event::Stt(output),
                Stage::Llm => Event::Llm(output),
                _ => Event::Tts(output),
            };
            if let Next::End(r) = self.pipeline_event(event).await {
                return Next::End(r);
            }
            if flush {
                // A clause is complete: its last partial frame goes out padded.
                if let Next::End(r) = self.queue_frames(true).await {
                    return Next::End(r);
                }
            }
        }
        self.schedule_idle();
        Next::Continue
    }

    /// Sets when a pipeline call should next check whether playback has gone idle.
    fn schedule_idle(&mut self) {
        let Some(active) = &mut self.active else {
            return;
        };
        if let Engine::Pipeline(p) = &mut active.engine {
            let now = Instant::now();
            let wanted = p.reply_origin.is_some() || !active.playback.is_idle(now);
            let at = now + active.playback.remaining(now) + Duration::from_millis(FRAME_MS);
            // Keep an earlier check: re-arming later on every report would starve it (the STT
            // reports every 20 ms). A check that comes too early re-arms itself.
            p.idle_at = wanted.then(|| p.idle_at.map_or(at, |old| old.min(at)));
        }
    }

    /// Playback may have gone idle: tell the turn-taking, or check again later.
    async fn check_idle(&mut self) -> Next {
        let Some(active) = &mut self.active else {
            return Next::Continue;
        };
        let now = Instant::now();
        let idle = active.playback.is_idle(now);
        if let Engine::Pipeline(p) = &mut active.engine {
            p.idle_at = None;
        }
        if idle {
            let next = self.pipeline_event(Event::PlaybackIdle).await;
            self.schedule_idle();
            return next;
        }
        self.schedule_idle();
        Next::Continue
    }

    async fn on_media(&mut self, media: &media_stream::Media, stream_sid: &str) -> Next {
        let Some(active) = &mut self.active else {
            self.stats.dropped += 1;
            tracing::warn!(%stream_sid, "media before start dropped");
            return Next::Continue;
        };
        if let Err(e) = media.decode_payload(&mut self.payload) {
            self.stats.dropped += 1;
            tracing::warn!(error = %e, chunk = media.chunk, "media frame dropped");
            return Next::Continue;
        }
        self.stats.frames_in += 1;
        // Fill gaps in Twilio's chunk numbering with silence so the plugin's clock keeps time.
        let mut gap = 0;
        match active.next_chunk {
            Some(expected) if media.chunk < expected => {
                self.stats.dropped += 1;
                tracing::debug!(chunk = media.chunk, expected, "late media frame dropped");
                return Next::Continue;
            }
            Some(expected) if media.chunk > expected => {
                gap = (media.chunk - expected).min(MAX_GAP_FILL_FRAMES);
            }
            _ => {}
        }
        active.next_chunk = Some(media.chunk + 1);
        if gap > 0 {
            self.stats.gap_frames += gap;
            self.metrics.gaps.increment(gap);
            tracing::debug!(frames = gap, "gap in inbound audio filled with silence");
            let silence = [mulaw::SILENCE; FRAME_SAMPLES];
            for i in (1..=gap).rev() {
                let ts = media.timestamp.saturating_sub(i * FRAME_MS);
                if let Next::End(r) = self.audio_to_plugin(&silence, ts).await {
                    return Next::End(r);
                }
            }
        }
        let payload = std::mem::take(&mut self.payload);
        let next = self.audio_to_plugin(&payload, media.timestamp).await;
        self.payload = payload;
        next
    }

    async fn audio_to_plugin(&mut self, mulaw_in: &[u8], timestamp_ms: u64) -> Next {
        let Some(active) = &mut self.active else {
            return Next::Continue;
        };
        if let Err(e) = active.to_plugin.convert(mulaw_in, &mut self.converted) {
            return Next::End(EndReason::PluginFailed(e.to_string()));
        }
        let data = self.converted.clone();
        if let Engine::Pipeline(p) = &mut active.engine {
            let speech = match p.vad.frame(mulaw_in) {
                Ok(s) => s,
                Err(e) => return Next::End(EndReason::PluginFailed(format!("VAD: {e}"))),
            };
            return self
                .pipeline_event(Event::CallerFrame {
                    speech,
                    data,
                    timestamp_ms,
                })
                .await;
        }
        self.feed(SessionInput::Audio { data, timestamp_ms }).await
    }

    async fn on_mark(&mut self, name: String) -> Next {
        self.stats.marks_echoed += 1;
        let Some(active) = &mut self.active else {
            return Next::Continue;
        };
        match active.playback.on_echo(&name, Instant::now()) {
            Echo::Played(name) if name == HANGUP_MARK => Next::End(active.ending()),
            Echo::Played(name) => self.feed(SessionInput::MarkPlayed(name)).await,
            Echo::Cleared(name) => {
                tracing::debug!(mark = %name, "mark returned by clear: not played");
                Next::Continue
            }
            Echo::Clock => Next::Continue,
            Echo::Unknown(name) => {
                tracing::debug!(mark = %name, "echo of a mark this call did not send");
                Next::Continue
            }
        }
    }

    /// Feeds one input to the plugin and carries out its outputs.
    async fn feed(&mut self, input: SessionInput) -> Next {
        let Some(active) = &mut self.active else {
            self.stats.dropped += 1;
            tracing::warn!("event before start dropped");
            return Next::Continue;
        };
        if active.hangup_deadline.is_some() {
            // Hanging up: the plugin is done; only the hang-up mark matters now.
            return Next::Continue;
        }
        let mut input = input;
        loop {
            let Some(active) = &mut self.active else {
                return Next::Continue;
            };
            let Engine::Realtime { session, io } = &mut active.engine else {
                if let SessionInput::Dtmf(digit) = &input {
                    tracing::info!(%digit, "DTMF on a pipeline call: not used yet");
                }
                return Next::Continue;
            };
            let handled = handle_watching(session, input, &mut self.ws, &mut self.inbox).await;
            let outputs = match handled {
                Ok(Ok(o)) => o,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "plugin failed");
                    return Next::End(EndReason::PluginFailed(e.to_string()));
                }
                Err(end) => {
                    // The caller hung up while the plugin worked: the call ends now, and the
                    // call into the plugin is abandoned half-way.
                    session.abandon();
                    self.abandoned = true;
                    tracing::info!(reason = %end, "call ended while the plugin was busy");
                    return Next::End(end);
                }
            };
            for command in session.take_io() {
                io.execute(command);
            }
            for output in outputs {
                if let Next::End(r) = self.carry_out(output).await {
                    return Next::End(r);
                }
            }
            // Inputs the outputs caused (`interrupted` after a clear) go in next, in order.
            match self.active.as_mut().and_then(|a| a.deferred.take()) {
                Some(next) => input = next,
                None => return Next::Continue,
            }
        }
    }

    async fn carry_out(&mut self, output: SessionOutput) -> Next {
        let Some(active) = &mut self.active else {
            return Next::Continue;
        };
        match output {
            SessionOutput::Play { format, data } => {
                let started = std::time::Instant::now();
                if let Err(e) = active.from_plugin.push(format, &data) {
                    return Next::End(EndReason::PluginFailed(e.to_string()));
                }
                // Host work the plugin caused is taken from its CPU share.
                if let Engine::Realtime { session, .. } = &mut active.engine
                    && let Err(e) = session.charge(started.elapsed())
                {
                    tracing::error!(error = %e, "plugin failed");
                    return Next::End(EndReason::PluginFailed(e.to_string()));
                }
                self.queue_frames(false).await
            }
            SessionOutput::Mark(name) => {
                if let Next::End(r) = self.queue_frames(true).await {
                    return Next::End(r);
                }
                if let Some(active) = &mut self.active {
                    active.playback.push_mark(name);
                }
                self.pump().await
            }
            SessionOutput::ClearPlayback => {
                let now = Instant::now();
                let was_playing = !active.playback.is_idle(now);
                let heard_ms = active.playback.clear(now);
                active.from_plugin.clear();
                self.stats.clears += 1;
                if was_playing {
                    // Barge-in: tell the plugin how much of its reply the caller heard.
                    tracing::debug!(heard_ms, "playback cleared");
                    active.deferred = Some(SessionInput::Interrupted(heard_ms));
                    if let Some(turn) = self
                        .stats
                        .transcript
                        .iter_mut()
                        .rev()
                        .find(|t| t.side == Side::Agent)
                        .filter(|t| t.heard_ms.is_none())
                    {
                        turn.heard_ms = Some(heard_ms);
                    }
                }
                let msg = Outbound::Clear {
                    stream_sid: &active.stream_sid,
                }
                .to_json();
                self.send(msg).await
            }
            SessionOutput::HangUp => {
                if let Next::End(r) = self.queue_frames(true).await {
                    return Next::End(r);
                }
                let Some(active) = &mut self.active else {
                    return Next::Continue;
                };
                active.playback.push_mark(HANGUP_MARK.to_string());
                let now = Instant::now();
                active.hangup_deadline = Some(now + active.playback.remaining(now) + HANGUP_GRACE);
                tracing::info!("plugin hung up; closing after queued audio plays");
                self.pump().await
            }
            SessionOutput::UserTranscript { text, is_final } => {
                tracing::info!(side = "caller", is_final, %text, "transcript");
                if is_final {
                    self.stats.transcript.push(Turn {
                        side: Side::Caller,
                        text,
                        heard_ms: None,
                    });
                }
                Next::Continue
            }
            SessionOutput::AgentTranscript { text, is_final } => {
                tracing::info!(side = "agent", is_final, %text, "transcript");
                if is_final {
                    self.stats.transcript.push(Turn {
                        side: Side::Agent,
                        text,
                        heard_ms: None,
                    });
                }
                Next::Continue
            }
            SessionOutput::Transfer(number) => {
                if !crate::config::is_e164(&number) {
                    tracing::warn!(%number, "transfer to a number that is not E.164; ignored");
                    return Next::Continue;
                }
                if self.ctx.rest.is_none() {
                    tracing::error!(%number, "transfer needs Twilio's REST API: set [twilio] account_sid and auth_token; ignored");
                    return Next::Continue;
                }
                if let Next::End(r) = self.queue_frames(true).await {
                    return Next::End(r);
                }
                let Some(active) = &mut self.active else {
                    return Next::Continue;
                };
                active.transfer_to = Some(number.clone());
                active.playback.push_mark(HANGUP_MARK.to_string());
                let now = Instant::now();
                active.hangup_deadline = Some(now + active.playback.remaining(now) + HANGUP_GRACE);
                tracing::info!(%number, "plugin asked for a transfer; redirecting after queued audio plays");
                self.pump().await
            }
        }
    }

    /// Moves every whole frame the reframer holds (and the padded remainder when `flush`) into
    /// the playback queue, then sends what is due.
    async fn queue_frames(&mut self, flush: bool) -> Next {
        let Some(active) = &mut self.active else {
            return Next::Continue;
        };
        let now = Instant::now();
        loop {
            let frame = match active.from_plugin.next_frame() {
                Some(f) => f.to_vec(),
                None if flush => match active.from_plugin.flush() {
                    Some(f) => f.to_vec(),
                    None => break,
                },
                None => break,
            };
            if let Err(e) = active.playback.push_frame(frame, now) {
                return Next::End(EndReason::PluginFailed(e.to_string()));
            }
        }
        self.pump().await
    }

    /// Sends Twilio what the playback clock says is due now.
    async fn pump(&mut self) -> Next {
        let Some(active) = &mut self.active else {
            return Next::Continue;
        };
        let now = Instant::now();
        let due = active.playback.due(now);
        if due.iter().any(|o| matches!(o, Outgoing::Media(_))) {
            let lead_ms = active
                .playback
                .sent_ms()
                .saturating_sub(active.playback.position_ms(now));
            self.metrics.lead.record(Duration::from_millis(lead_ms));
        }
        let stream_sid = active.stream_sid.clone();
        let since_start = active.started.elapsed();
        for item in due {
            let msg = match item {
                Outgoing::Media(frame) => {
                    self.stats.frames_out += 1;
                    if self.stats.first_audio.is_none() {
                        self.stats.first_audio = Some(since_start);
                    }
                    Outbound::media_json(&stream_sid, &frame)
                }
                Outgoing::Mark(name) => {
                    self.stats.marks_sent += 1;
                    Outbound::Mark {
                        stream_sid: &stream_sid,
                        mark: MarkName { name },
                    }
                    .to_json()
                }
            };
            if let Next::End(r) = self.send(msg).await {
                return Next::End(r);
            }
        }
        Next::Continue
    }

    /// Queues one message in the socket's write buffer; [`Call::flush`] writes it out, once per
    /// event the call loop handles, so a frame and the mark after it share one write.
    async fn send(&mut self, text: String) -> Next {
        match self.ws.feed(Message::Text(text.into())).await {
            Ok(()) => {
                self.unflushed = true;
                Next::Continue
            }
            Err(e) => Next::End(EndReason::SocketError(e.to_string())),
        }
    }

    /// Writes out what [`Call::send`] queued.
    async fn flush(&mut self) -> Next {
        if !std::mem::take(&mut self.unflushed) {
            return Next::Continue;
        }
        match self.ws.flush().await {
            Ok(()) => Next::Continue,
            Err(e) => Next::End(EndReason::SocketError(e.to_string())),
        }
    }
}

/// The next Twilio message: one read ahead into the inbox while the plugin worked, else the
/// socket's next. Cancel-safe.
async fn next_message(
    inbox: &mut inbox::Inbox,
    ws: &mut WebSocket,
) -> Option<Result<Message, axum::Error>> {
    match inbox.pop() {
        Some(message) => Some(Ok(message)),
        None => ws.recv().await,
    }
}

/// Feeds `input` to a realtime session while reading the socket into `inbox`, so that the
/// caller hanging up ends the call at once however long the plugin takes (see [`inbox`]).
/// `Err` is how the call ends when the socket ended it first; the session's call is then
/// abandoned (dropped half-way) and the session must not be entered again.
async fn handle_watching(
    session: &mut Session,
    input: SessionInput,
    ws: &mut WebSocket,
    inbox: &mut inbox::Inbox,
) -> Result<Result<Vec<SessionOutput>, crate::plugin::SessionError>, EndReason> {
    let call = session.handle(input);
    tokio::pin!(call);
    loop {
        tokio::select! {
            biased;
            result = &mut call => return Ok(result),
            read = ws.recv(), if inbox.accepting() => {
                if let Some(end) = inbox.push(read) {
                    return Err(end);
                }
            }
        }
    }
}

/// Resolves once `shutdown` holds `true`; never, if its sender is gone.
async fn shutdown_signalled(shutdown: &mut watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Something the conversation engine of an active call produced.
enum EngineEvent {
    /// A realtime session's host I/O completed.
    Io(IoEvent),
    /// A pipeline stage reported.
    Report(StageReport),
}

/// The next event of the call's engine; pending while there is none.
async fn next_engine_event(active: &mut Option<Active>) -> EngineEvent {
    match active {
        Some(Active {
            engine: Engine::Realtime { io, .. },
            ..
        }) => {
            if io.is_idle() {
                // No host I/O in flight: nothing can come until the session asks for some.
                std::future::pending().await
            } else {
                EngineEvent::Io(io.next_event().await)
            }
        }
        Some(Active {
            engine: Engine::Pipeline(p),
            ..
        }) => match p.reports.recv().await {
            Some(r) => EngineEvent::Report(r),
            // Every stage task has stopped; each reported why first.
            None => std::future::pending().await,
        },
        // Not started.
        _ => std::future::pending().await,
    }
}

/// A timer of the call loop, kept across iterations and moved only when its deadline changes.
struct Timer {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    armed: Option<Instant>,
}

impl Timer {
    fn new() -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep_until(Instant::now())),
            armed: None,
        }
    }

    /// Sets the deadline; `None` leaves the timer as it is (the loop does not poll it then).
    fn arm(&mut self, at: Option<Instant>) {
        if let Some(at) = at
            && self.armed != Some(at)
        {
            self.sleep.as_mut().reset(at);
            self.armed = Some(at);
        }
    }
}
