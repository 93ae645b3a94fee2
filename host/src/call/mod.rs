//! The per-call task: one tokio task per Media Streams WebSocket owns everything of its call —
//! the socket, the plugin session, the audio converters, the counters — and reacts to Twilio's
//! messages one at a time. Nothing here is shared with other calls, so nothing here locks.
//!
//! Life of a call: `connected` → `start` (route from `customParameters` against the config of
//! that moment, open the plugin session) → `media`/`dtmf`/`mark` → `stop` or socket close or the
//! plugin's `hang-up` → the session sees `hangup` and is dropped, the socket is closed.

pub mod pipeline;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use tokio::time::Instant;
use tracing::{Instrument, Span};

use crate::audio::convert::{FromPlugin, ToPlugin};
use crate::audio::playback::{Echo, Outgoing, Playback};
use crate::audio::{FRAME_MS, FRAME_SAMPLES, mulaw};
use crate::config::Config;
use crate::plugin::io::{IoDriver, IoEvent, IoPolicy};
use crate::plugin::{CallInfo, Plugins, Session, SessionConfig, SessionInput, SessionOutput};
use crate::routing::{self, RouteRequest};
use crate::twilio::media_stream::{self, Inbound, MarkName, Outbound};

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
    /// The agent's plugin is failing (its circuit breaker is open) and no fallback agent could
    /// take the call.
    CircuitOpen(String),
}

/// What one call did, logged when it ends.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CallStats {
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
    /// What the plugin reported was said (for the agent: the whole reply as generated).
    pub text: String,
    /// For an agent turn cut short by barge-in: the milliseconds of it the caller heard, by
    /// the playback clock. The text is not cut: word timings are not known to the host.
    pub heard_ms: Option<u64>,
}

/// State once `start` has arrived.
struct Active {
    stream_sid: String,
    session: Session,
    to_plugin: ToPlugin,
    from_plugin: FromPlugin,
    next_chunk: Option<u64>,
    /// Paces outbound audio and knows what the caller heard.
    playback: Playback,
    /// An input the host owes the plugin after the outputs being carried out (`interrupted`).
    deferred: Option<SessionInput>,
    /// Runs the host I/O the plugin asked for.
    io: IoDriver,
    /// When `start` arrived (for time-to-first-audio).
    started: Instant,
    /// Set once the plugin hung up: close when the hang-up mark returns or at this deadline.
    hangup_deadline: Option<Instant>,
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
        plugin: None,
        stats: CallStats::default(),
        active: None,
        payload: Vec::with_capacity(FRAME_SAMPLES),
        converted: Vec::new(),
        span: span.clone(),
    };
    let reason = call.run().instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(reason = ?reason, stats = ?call.stats, "call ended");
    });
    (reason, call.stats)
}

struct Call {
    ws: WebSocket,
    ctx: CallContext,
    /// Known from `start` on, even when no session could be opened.
    stream_sid: Option<String>,
    /// The plugin serving the call, once routed.
    plugin: Option<String>,
    stats: CallStats,
    active: Option<Active>,
    payload: Vec<u8>,
    converted: Vec<u8>,
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
        let reason = loop {
            let (deadline, due) = match &self.active {
                None => (Some(start_deadline), None),
                Some(a) => (a.hangup_deadline, a.playback.next_due(Instant::now())),
            };
            let msg = tokio::select! {
                msg = self.ws.recv() => msg,
                () = sleep_until(deadline) => {
                    break if self.active.is_none() { EndReason::NoStart } else { EndReason::HungUp };
                }
                () = sleep_until(due) => {
                    if let Next::End(reason) = self.pump().await {
                        break reason;
                    }
                    continue;
                }
                event = next_io(&mut self.active) => {
                    if let Next::End(reason) = self.feed(SessionInput::Io(event)).await {
                        break reason;
                    }
                    continue;
                }
            };
            let next = match msg {
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
            };
            if let Next::End(reason) = next {
                break reason;
            }
        };
        self.finish(&reason).await;
        reason
    }

    async fn finish(&mut self, reason: &EndReason) {
        if let Some(breaker) = self
            .plugin
            .as_deref()
            .and_then(|p| self.ctx.plugins.breaker(p))
        {
            match reason {
                EndReason::PluginFailed(_) if breaker.record_failure() => {
                    tracing::error!(
                        plugin = ?self.plugin,
                        failures = breaker.failures(),
                        "plugin circuit breaker opened: new calls go to the fallback"
                    );
                }
                EndReason::PluginFailed(_) => {}
                EndReason::CircuitOpen(_) => {}
                _ if self.active.is_some() => breaker.record_success(),
                _ => {}
            }
        }
        if matches!(
            reason,
            EndReason::PluginFailed(_) | EndReason::CircuitOpen(_)
        ) {
            // The session is broken or was never opened: drop it and tell the caller.
            self.active = None;
            self.apologise().await;
        }
        if let Some(active) = &mut self.active
            && let Err(e) = active.session.handle(SessionInput::Hangup).await
        {
            tracing::debug!(error = %e, "plugin failed on hangup");
        }
        // Drop the session (and the plugin's store) before the socket closes.
        self.active = None;
        if !matches!(reason, EndReason::SocketClosed | EndReason::SocketError(_)) {
            let frame = CloseFrame {
                code: axum::extract::ws::close_code::NORMAL,
                reason: "call ended".into(),
            };
            let _ = self.ws.send(Message::Close(Some(frame))).await;
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
            messages.push(Outbound::media(&stream_sid, &frame).to_json());
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
            if self.ws.send(Message::Text(m.into())).await.is_err() {
                return;
            }
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
            } => self.on_media(&media, &stream_sid).await,
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
        self.span.record("stream_sid", stream_sid.as_str());
        self.stream_sid = Some(stream_sid.clone());
        let params: Vec<(String, String)> = start.custom_parameters.into_iter().collect();
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
        let open = |name: &str| self.ctx.plugins.breaker(name).is_some_and(|b| b.is_open());
        if open(&agent.realtime.plugin) {
            let fallback = agent.fallback.as_deref().and_then(|f| config.agent(f));
            match fallback {
                Some(f) if !open(&f.realtime.plugin) => {
                    tracing::warn!(agent = %agent.name, fallback = %f.name, "plugin circuit open; call goes to the fallback agent");
                    agent = f;
                }
                _ => {
                    tracing::warn!(agent = %agent.name, plugin = %agent.realtime.plugin, "plugin circuit open and no fallback available");
                    self.stats.agent = Some(agent.name.clone());
                    return Next::End(EndReason::CircuitOpen(agent.realtime.plugin.clone()));
                }
            }
        }
        self.span.record("agent", agent.name.as_str());
        self.plugin = Some(agent.realtime.plugin.clone());
        self.stats.agent = Some(agent.name.clone());
        self.span.record("plugin", agent.realtime.plugin.as_str());
        let Some(plugin) = self.ctx.plugins.get(&agent.realtime.plugin).cloned() else {
            return Next::End(EndReason::PluginFailed(format!(
                "plugin {} is not loaded",
                agent.realtime.plugin
            )));
        };
        let session_config = SessionConfig {
            call: CallInfo {
                call_sid: start.call_sid.clone(),
                stream_sid: stream_sid.clone(),
                from: param("From").unwrap_or_default().to_string(),
                to: param("To").unwrap_or_default().to_string(),
                direction: param("Direction").unwrap_or("inbound").to_string(),
                agent: agent.name.clone(),
                parameters: params.clone(),
            },
            settings: agent.settings_json.clone(),
            greeting: agent.greeting.clone(),
            io: Arc::new(IoPolicy {
                allowed_hosts: agent.realtime.allowed_hosts.clone(),
                secrets: agent.realtime.secrets.clone(),
            }),
        };
        let opened = plugin.open(&session_config).await;
        let mut session = match opened {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "plugin session failed to open");
                return Next::End(EndReason::PluginFailed(e.to_string()));
            }
        };
        let mut io = IoDriver::new();
        for command in session.take_io() {
            io.execute(command);
        }
        let to_plugin = match ToPlugin::new(plugin.info().input_format) {
            Ok(c) => c,
            Err(e) => return Next::End(EndReason::PluginFailed(e.to_string())),
        };
        tracing::info!(reason = ?route.reason, from = %session_config.call.from, to = %session_config.call.to, "call started");
        self.active = Some(Active {
            stream_sid,
            session,
            to_plugin,
            from_plugin: FromPlugin::new(),
            next_chunk: None,
            playback: Playback::new(Instant::now()),
            deferred: None,
            io,
            started: Instant::now(),
            hangup_deadline: None,
        });
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
        self.feed(SessionInput::Audio { data, timestamp_ms }).await
    }

    async fn on_mark(&mut self, name: String) -> Next {
        self.stats.marks_echoed += 1;
        let Some(active) = &mut self.active else {
            return Next::Continue;
        };
        match active.playback.on_echo(&name, Instant::now()) {
            Echo::Played(name) if name == HANGUP_MARK => Next::End(EndReason::HungUp),
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
            let outputs = match active.session.handle(input).await {
                Ok(o) => o,
                Err(e) => {
                    tracing::error!(error = %e, "plugin failed");
                    return Next::End(EndReason::PluginFailed(e.to_string()));
                }
            };
            for command in active.session.take_io() {
                active.io.execute(command);
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
                if let Err(e) = active.from_plugin.push(format, &data) {
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
                tracing::warn!(%number, "transfer requested, but call control is not available yet; ignored");
                Next::Continue
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
        let due = active.playback.due(Instant::now());
        let stream_sid = active.stream_sid.clone();
        let since_start = active.started.elapsed();
        for item in due {
            let msg = match item {
                Outgoing::Media(frame) => {
                    self.stats.frames_out += 1;
                    if self.stats.first_audio.is_none() {
                        self.stats.first_audio = Some(since_start);
                    }
                    Outbound::media(&stream_sid, &frame).to_json()
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

    async fn send(&mut self, text: String) -> Next {
        match self.ws.send(Message::Text(text.into())).await {
            Ok(()) => Next::Continue,
            Err(e) => Next::End(EndReason::SocketError(e.to_string())),
        }
    }
}

/// The next host I/O completion of the call's session; pending while there is none.
async fn next_io(active: &mut Option<Active>) -> IoEvent {
    match active {
        Some(a) => a.io.next_event().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
