//! The HTTP side of the gateway: the axum [`Router`] with Twilio's voice webhook, the Media
//! Streams WebSocket endpoint and the health check, and [`serve`] to run it on a listener.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::broadcast;

use crate::call::{self, CallContext, CallStats, EndReason};
use crate::routing::{self, RouteRequest};
use crate::twilio::webhook::{self, WebhookParams};
use crate::twiml::{self, Response as TwimlResponse, Say};

/// Largest WebSocket message accepted on the Media Streams socket (bytes). A 20 ms media message
/// is about 300 bytes of JSON; 64 KiB covers any legitimate message with a wide margin, and a
/// larger one ends that call with a socket error instead of buffering without bound.
pub const MAX_WS_MESSAGE_BYTES: usize = 64 * 1024;

/// Capacity of the call-ended event channel; slow subscribers miss events rather than hold memory.
const CALL_EVENTS_CAPACITY: usize = 1024;

/// What the caller hears when no agent takes the number.
pub const NOT_CONFIGURED_MESSAGE: &str = "Sorry, this number is not configured. Goodbye.";

/// Ended calls kept in memory for `GET /calls/{sid}` (oldest dropped first).
pub const RECENT_CALLS: usize = 256;

/// A call that ended, as published to [`AppState::subscribe`].
#[derive(Debug, Clone)]
pub struct CallEnded {
    /// Why it ended.
    pub reason: EndReason,
    /// Its counters.
    pub stats: CallStats,
}

/// Shared state of the gateway: the current config and plugins, and live-call accounting.
#[derive(Clone)]
pub struct AppState {
    current: Arc<ArcSwap<CallContext>>,
    active_calls: Arc<AtomicUsize>,
    ended: broadcast::Sender<CallEnded>,
    /// The last [`RECENT_CALLS`] ended calls. Locked once per call end and per lookup, never
    /// on a call's audio path.
    recent: Arc<std::sync::Mutex<std::collections::VecDeque<CallEnded>>>,
}

impl AppState {
    /// State serving `ctx`.
    pub fn new(ctx: CallContext) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(ctx)),
            active_calls: Arc::new(AtomicUsize::new(0)),
            ended: broadcast::channel(CALL_EVENTS_CAPACITY).0,
            recent: Arc::default(),
        }
    }

    fn record(&self, ended: CallEnded) {
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == RECENT_CALLS {
                recent.pop_front();
            }
            recent.push_back(ended.clone());
        }
        let _ = self.ended.send(ended);
    }

    /// Calls whose task is running.
    pub fn active_calls(&self) -> usize {
        self.active_calls.load(Ordering::Relaxed)
    }

    /// Receives an event for every call that ends from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<CallEnded> {
        self.ended.subscribe()
    }
}

/// The gateway's routes: `GET|POST /twilio/voice`, `GET /twilio/media-stream` (WebSocket),
/// `GET /healthz` (JSON: status, active calls, and per plugin its kind, name, version, calls
/// ended by a plugin failure since start, and circuit-breaker state), `GET /calls/{sid}` (JSON:
/// one of the last [`RECENT_CALLS`] ended calls with its transcript and per-turn latency).
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/twilio/voice", get(voice).post(voice))
        .route("/twilio/media-stream", get(media_stream))
        .route("/healthz", get(healthz))
        .route("/calls/{sid}", get(call_record))
        .with_state(state)
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
    // Media frames and marks are small writes 20 ms apart: without TCP_NODELAY, Nagle's
    // algorithm and delayed ACKs can hold a mark behind its frame for tens of milliseconds.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
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
        "plugins": plugins,
    }))
}

/// Twilio's voice webhook: route the call and answer TwiML that opens a bidirectional stream.
async fn voice(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = WebhookParams::parse(query.as_deref(), &body);
    let ctx = state.current.load_full();
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
            twiml::connect_stream(&webhook::media_stream_url(&base), &parameters)
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

/// The Media Streams WebSocket: one call task per socket.
async fn media_stream(State(state): State<AppState>, upgrade: WebSocketUpgrade) -> Response {
    let ctx = (*state.current.load_full()).clone();
    upgrade
        .max_message_size(MAX_WS_MESSAGE_BYTES)
        .max_frame_size(MAX_WS_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move {
            state.active_calls.fetch_add(1, Ordering::Relaxed);
            let (reason, stats) = call::run(socket, ctx).await;
            state.active_calls.fetch_sub(1, Ordering::Relaxed);
            state.record(CallEnded { reason, stats });
        })
}

/// `GET /calls/{sid}`: a recently ended call, or 404.
async fn call_record(
    State(state): State<AppState>,
    axum::extract::Path(sid): axum::extract::Path<String>,
) -> Response {
    let found = state.recent.lock().ok().and_then(|recent| {
        recent
            .iter()
            .rev()
            .find(|c| c.stats.call_sid.as_deref() == Some(sid.as_str()))
            .cloned()
    });
    let Some(call) = found else {
        return (
            axum::http::StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"error": "no recently ended call with this sid", "code": "not_found"})),
        )
            .into_response();
    };
    let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_millis() as u64);
    let transcript: Vec<serde_json::Value> = call
        .stats
        .transcript
        .iter()
        .map(|t| {
            serde_json::json!({
                "side": match t.side { call::Side::Caller => "caller", call::Side::Agent => "agent" },
                "text": t.text,
                "heard_ms": t.heard_ms,
            })
        })
        .collect();
    let latency: Vec<serde_json::Value> = call
        .stats
        .turn_latency
        .iter()
        .map(|l| {
            serde_json::json!({
                "stt_final_ms": ms(l.stt_final),
                "llm_first_text_ms": ms(l.llm_first_text),
                "tts_first_audio_ms": ms(l.tts_first_audio),
                "first_audio_out_ms": ms(l.first_audio_out),
            })
        })
        .collect();
    axum::Json(serde_json::json!({
        "call_sid": sid,
        "agent": call.stats.agent,
        "reason": format!("{:?}", call.reason),
        "frames_in": call.stats.frames_in,
        "frames_out": call.stats.frames_out,
        "first_audio_ms": ms(call.stats.first_audio),
        "transcript": transcript,
        "turn_latency": latency,
    }))
    .into_response()
}
