//! Live call events: what each call does, as it happens, for the operator console, an
//! application's event feed (`GET /events`, Server-Sent Events) and per-agent webhooks
//! ([`webhooks`]).
//!
//! A call emits typed [`EventKind`]s through its [`CallEvents`] handle; the gateway's one
//! [`EventBus`] numbers them, keeps the last [`DEFAULT_BUFFER`] in a ring (so an SSE client that
//! reconnects with `Last-Event-ID` resumes without loss), and fans them out to live subscribers
//! and to sinks (the webhook deliverer). Emitting never waits: the bus's critical section is a
//! ring push and a broadcast send (O(1), no await), and events are per turn, never per frame.
//! A slow subscriber misses events (it is told how many, [`Subscription`]); a full sink drops
//! them and counts `switchboard_events_dropped_total{sink}`.
//!
//! The schema (stable; `docs/events.md` has examples) — every event is one JSON object:
//!
//! ```json
//! {"id":"k3x9-42","type":"caller.transcript","time":"2026-12-07T06:41:00.123Z",
//!  "call_sid":"CA…","stream_sid":"MZ…","agent":"front-desk","data":{"text":"hi","final":true}}
//! ```
//!
//! `id` is `<boot>-<seq>`: `boot` names this process's run (so an id from an earlier run is
//! recognised as such), `seq` counts from 1. Events of one call are in the order the call
//! emitted them; `seq` orders all of the gateway's events.

pub mod sse;
pub mod webhooks;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

/// Events kept for `Last-Event-ID` resumption (about a minute of a busy gateway: a 1,000-call
/// gateway emits a few hundred events per second at most).
pub const DEFAULT_BUFFER: usize = 16_384;

/// Live subscribers' channel capacity: a subscriber further behind than this misses events.
pub const LIVE_CAPACITY: usize = 4_096;

/// Metric: events a sink's full queue dropped, by sink.
pub const EVENTS_DROPPED: &str = "switchboard_events_dropped_total";

/// Metric: events emitted, by type.
pub const EVENTS_EMITTED: &str = "switchboard_events_total";

/// Every event type, as in the `type` field (the stable names of the schema).
pub const TYPES: &[&str] = &[
    "call.started",
    "caller.speech_started",
    "caller.speech_stopped",
    "caller.transcript",
    "agent.text",
    "agent.audio_started",
    "agent.barge_in",
    "tool.call",
    "tool.result",
    "turn.latency",
    "plugin.failed",
    "call.ended",
];

/// How the call reached the gateway ([`EventKind::CallStarted`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Twilio's voice webhook: someone called one of the numbers.
    Inbound,
    /// Placed through the operator API (`POST /calls`).
    Outbound,
    /// The console's browser phone.
    Browser,
}

/// One thing that happened on a call. Times are milliseconds: `at_ms` since the stream's
/// `start`, durations as named.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// `call.started`: the stream started and was routed.
    CallStarted {
        /// The caller (`From`), `browser` for the console's phone.
        from: String,
        /// The number called (`To`), or the agent's name for the browser phone.
        to: String,
        /// How the call came in.
        direction: Direction,
        /// `echo`, `pipeline` or `realtime`.
        mode: &'static str,
        /// The plugins serving the call (one, or the pipeline's STT, LLM and TTS).
        plugins: Vec<String>,
    },
    /// `caller.speech_started`: the host VAD heard the caller start speaking (pipeline agents).
    SpeechStarted {
        /// Since the stream's start (ms).
        at_ms: u64,
    },
    /// `caller.speech_stopped`: the caller's speech ended (the last speech frame).
    SpeechStopped {
        /// Since the stream's start (ms), of the last speech frame's end.
        at_ms: u64,
        /// Onset to last speech frame (ms).
        speech_ms: u64,
    },
    /// `caller.transcript`: what the caller said; `final: false` for a partial result.
    CallerTranscript {
        /// Text.
        text: String,
        /// A final result.
        is_final: bool,
    },
    /// `agent.text`: what the agent says. Final: the turn's whole text as recorded (for a
    /// pipeline agent cut short by barge-in, only what the caller heard); partial: a fragment
    /// as generated.
    AgentText {
        /// Text.
        text: String,
        /// The whole turn.
        is_final: bool,
    },
    /// `agent.audio_started`: the first audio of a reply was queued for the caller.
    AudioStarted {
        /// Since the stream's start (ms).
        at_ms: u64,
    },
    /// `agent.barge_in`: the caller spoke over the agent; playback was cleared.
    BargeIn {
        /// Of the cut reply, what the caller heard by the playback clock (ms).
        heard_ms: u64,
    },
    /// `tool.call`: the agent called a tool.
    ToolCall {
        /// The call's id (the model's).
        id: String,
        /// The tool.
        name: String,
        /// Its arguments (JSON).
        arguments: Value,
    },
    /// `tool.result`: a tool call finished.
    ToolResult {
        /// The call's id.
        id: String,
        /// The tool.
        name: String,
        /// It succeeded.
        ok: bool,
        /// How long it ran (ms).
        duration_ms: u64,
    },
    /// `turn.latency`: a pipeline turn's timings, from the end of the caller's speech
    /// ([`crate::call::pipeline::TurnLatency`]).
    TurnLatency {
        /// 1-based turn number.
        turn: usize,
        /// The latency breakdown.
        latency: crate::call::pipeline::TurnLatency,
    },
    /// `plugin.failed`: a plugin failed the call.
    PluginFailed {
        /// The plugin, when one is to blame.
        plugin: Option<String>,
        /// Its pipeline stage (`stt`, `llm`, `tts`), for a pipeline agent.
        stage: Option<&'static str>,
        /// The failure's kind (`trap`, `timeout`, …: [`crate::plugin::SessionError::kind`]).
        kind: &'static str,
        /// What went wrong.
        message: String,
    },
    /// `call.ended`.
    CallEnded {
        /// The record's outcome ([`crate::call::EndReason::outcome`]).
        outcome: &'static str,
        /// Why, in words.
        reason: String,
        /// From `start` to the end (ms).
        duration_ms: u64,
        /// `media` frames from the caller.
        frames_in: u64,
        /// `media` frames to the caller.
        frames_out: u64,
        /// Time to first audio (ms), when the agent spoke.
        first_audio_ms: Option<u64>,
    },
}

/// A pipeline stage's short name in events: `realtime`, `stt`, `llm`, `tts`.
pub fn stage_name(stage: crate::plugin::Stage) -> &'static str {
    use crate::plugin::Stage;
    match stage {
        Stage::Realtime => "realtime",
        Stage::Stt => "stt",
        Stage::Llm => "llm",
        Stage::Tts => "tts",
    }
}

fn ms(d: Option<Duration>) -> Option<u64> {
    d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl EventKind {
    /// The event's `type`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::CallStarted { .. } => "call.started",
            Self::SpeechStarted { .. } => "caller.speech_started",
            Self::SpeechStopped { .. } => "caller.speech_stopped",
            Self::CallerTranscript { .. } => "caller.transcript",
            Self::AgentText { .. } => "agent.text",
            Self::AudioStarted { .. } => "agent.audio_started",
            Self::BargeIn { .. } => "agent.barge_in",
            Self::ToolCall { .. } => "tool.call",
            Self::ToolResult { .. } => "tool.result",
            Self::TurnLatency { .. } => "turn.latency",
            Self::PluginFailed { .. } => "plugin.failed",
            Self::CallEnded { .. } => "call.ended",
        }
    }

    /// The event's `data` object.
    pub fn data(&self) -> Value {
        match self {
            Self::CallStarted {
                from,
                to,
                direction,
                mode,
                plugins,
            } => {
                json!({"from": from, "to": to, "direction": direction, "mode": mode, "plugins": plugins})
            }
            Self::SpeechStarted { at_ms } => json!({ "at_ms": at_ms }),
            Self::SpeechStopped { at_ms, speech_ms } => {
                json!({"at_ms": at_ms, "speech_ms": speech_ms})
            }
            Self::CallerTranscript { text, is_final } | Self::AgentText { text, is_final } => {
                json!({"text": text, "final": is_final})
            }
            Self::AudioStarted { at_ms } => json!({ "at_ms": at_ms }),
            Self::BargeIn { heard_ms } => json!({ "heard_ms": heard_ms }),
            Self::ToolCall {
                id,
                name,
                arguments,
            } => json!({"id": id, "name": name, "arguments": arguments}),
            Self::ToolResult {
                id,
                name,
                ok,
                duration_ms,
            } => json!({"id": id, "name": name, "ok": ok, "duration_ms": duration_ms}),
            Self::TurnLatency { turn, latency } => json!({
                "turn": turn,
                "endpointing_ms": ms(latency.endpointing),
                "stt_final_ms": ms(latency.stt_final),
                "llm_first_text_ms": ms(latency.llm_first_text),
                "tts_first_audio_ms": ms(latency.tts_first_audio),
                "first_audio_out_ms": ms(latency.first_audio_out),
                "speech_ms": ms(latency.speech),
            }),
            Self::PluginFailed {
                plugin,
                stage,
                kind,
                message,
            } => json!({"plugin": plugin, "stage": stage, "kind": kind, "message": message}),
            Self::CallEnded {
                outcome,
                reason,
                duration_ms,
                frames_in,
                frames_out,
                first_audio_ms,
            } => json!({
                "outcome": outcome,
                "reason": reason,
                "duration_ms": duration_ms,
                "frames_in": frames_in,
                "frames_out": frames_out,
                "first_audio_ms": first_audio_ms,
            }),
        }
    }
}

/// One numbered event, serialized once for every subscriber.
#[derive(Debug)]
pub struct Event {
    /// `<boot>-<seq>`: the SSE `id` and the webhook's `webhook-id`.
    pub id: String,
    /// Orders the gateway's events (from 1).
    pub seq: u64,
    /// The event's `type` ([`TYPES`]).
    pub kind: &'static str,
    /// The call's `CallSid`.
    pub call_sid: String,
    /// The agent serving the call, once routed.
    pub agent: Option<String>,
    /// The whole event as one line of JSON (the schema in the module docs).
    pub json: Arc<str>,
}

/// What a subscriber gets: the buffered events after its `Last-Event-ID`, then the live ones.
pub struct Subscription {
    /// Events missed that the buffer no longer holds (0 when none were lost). Also set when
    /// `Last-Event-ID` names an earlier run of the gateway: everything buffered follows.
    pub lost: u64,
    /// Buffered events after the one named, oldest first.
    pub backlog: Vec<Arc<Event>>,
    /// Live events; each has a `seq` after the backlog's last.
    pub live: broadcast::Receiver<Arc<Event>>,
}

struct Ring {
    next_seq: u64,
    events: VecDeque<Arc<Event>>,
    capacity: usize,
    sinks: Vec<(&'static str, mpsc::Sender<Arc<Event>>)>,
}

/// The gateway's event hub: numbers events, keeps the recent ones and fans them out. Cheap to
/// clone; one per gateway, shared by every config generation.
#[derive(Clone)]
pub struct EventBus {
    ring: Arc<Mutex<Ring>>,
    live: broadcast::Sender<Arc<Event>>,
    boot: Arc<str>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("boot", &self.boot)
            .finish()
    }
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new(DEFAULT_BUFFER)
    }
}

impl EventBus {
    /// A bus keeping the last `buffer` events (at least 1).
    pub fn new(buffer: usize) -> Self {
        let boot = format!("{:08x}", rand::random::<u32>());
        Self {
            ring: Arc::new(Mutex::new(Ring {
                next_seq: 1,
                events: VecDeque::with_capacity(buffer.clamp(1, 1024)),
                capacity: buffer.max(1),
                sinks: Vec::new(),
            })),
            live: broadcast::channel(LIVE_CAPACITY).0,
            boot: boot.into(),
        }
    }

    /// This run's prefix of event ids.
    pub fn boot(&self) -> &str {
        &self.boot
    }

    /// A call's handle for emitting its events.
    pub fn call(&self, call_sid: &str, stream_sid: Option<&str>) -> CallEvents {
        CallEvents {
            bus: self.clone(),
            call_sid: call_sid.into(),
            stream_sid: stream_sid.map(Into::into),
            agent: None,
            started: tokio::time::Instant::now(),
        }
    }

    /// Every event from now on, on a queue of `capacity` (a sink that falls behind loses the
    /// newest events, counted in [`EVENTS_DROPPED`] with `sink = name`).
    pub fn sink(&self, name: &'static str, capacity: usize) -> mpsc::Receiver<Arc<Event>> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.lock().sinks.push((name, tx));
        rx
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        // A panic while holding the lock leaves a consistent ring (every step is one push or
        // pop), so a poisoned lock is taken as is.
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Numbers and publishes one event of `call_sid`.
    fn publish(
        &self,
        call_sid: &str,
        stream_sid: Option<&str>,
        agent: Option<&str>,
        kind: &EventKind,
    ) {
        let name = kind.name();
        let data = kind.data();
        let time = chrono::DateTime::<chrono::Utc>::from(SystemTime::now())
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        metrics::counter!(EVENTS_EMITTED, "type" => name).increment(1);
        let mut ring = self.lock();
        let seq = ring.next_seq;
        ring.next_seq += 1;
        let id = format!("{}-{seq}", self.boot);
        let line = json!({
            "id": id,
            "type": name,
            "time": time,
            "call_sid": call_sid,
            "stream_sid": stream_sid,
            "agent": agent,
            "data": data,
        })
        .to_string();
        let event = Arc::new(Event {
            id,
            seq,
            kind: name,
            call_sid: call_sid.into(),
            agent: agent.map(Into::into),
            json: line.into(),
        });
        if ring.events.len() == ring.capacity {
            ring.events.pop_front();
        }
        ring.events.push_back(Arc::clone(&event));
        ring.sinks
            .retain(|(sink, tx)| match tx.try_send(Arc::clone(&event)) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    metrics::counter!(EVENTS_DROPPED, "sink" => *sink).increment(1);
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
        // No receivers is not an error: nobody is watching.
        let _ = self.live.send(event);
    }

    /// Subscribes to the events after `last_event_id` (an SSE `Last-Event-ID`; `None`: live
    /// events only). The backlog and the live receiver are taken under one lock, so nothing
    /// falls between them and nothing comes twice.
    pub fn subscribe(&self, last_event_id: Option<&str>) -> Subscription {
        let ring = self.lock();
        let live = self.live.subscribe();
        let Some(last) = last_event_id else {
            return Subscription {
                lost: 0,
                backlog: Vec::new(),
                live,
            };
        };
        let oldest = ring.events.front().map_or(ring.next_seq, |e| e.seq);
        let after = match last
            .rsplit_once('-')
            .filter(|(boot, _)| *boot == &*self.boot)
            .and_then(|(_, seq)| seq.parse::<u64>().ok())
        {
            Some(seq) => seq.min(ring.next_seq - 1),
            // Another run's id (or garbage): everything buffered, and an unknown loss.
            None => {
                return Subscription {
                    lost: oldest.saturating_sub(1).max(1),
                    backlog: ring.events.iter().cloned().collect(),
                    live,
                };
            }
        };
        let lost = oldest.saturating_sub(after + 1);
        let backlog = ring
            .events
            .iter()
            .filter(|e| e.seq > after)
            .cloned()
            .collect();
        Subscription {
            lost,
            backlog,
            live,
        }
    }
}

/// One call's event emitter: owned by the call's task, so its events are in the call's order.
#[derive(Clone)]
pub struct CallEvents {
    bus: EventBus,
    call_sid: Arc<str>,
    stream_sid: Option<Arc<str>>,
    agent: Option<Arc<str>>,
    started: tokio::time::Instant,
}

impl std::fmt::Debug for CallEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallEvents")
            .field("call_sid", &self.call_sid)
            .finish()
    }
}

impl CallEvents {
    /// Names the agent serving the call (events from now on carry it).
    pub fn set_agent(&mut self, agent: &str) {
        self.agent = Some(agent.into());
    }

    /// Restarts the call's clock (`at_ms` counts from here): the stream's `start`.
    pub fn set_started(&mut self, started: tokio::time::Instant) {
        self.started = started;
    }

    /// Milliseconds since the stream's start.
    pub fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The call's `CallSid`.
    pub fn call_sid(&self) -> &str {
        &self.call_sid
    }

    /// Emits `kind` (never waits).
    pub fn emit(&self, kind: EventKind) {
        self.bus.publish(
            &self.call_sid,
            self.stream_sid.as_deref(),
            self.agent.as_deref(),
            &kind,
        );
    }
}

#[cfg(test)]
mod tests;
