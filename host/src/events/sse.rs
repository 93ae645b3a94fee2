//! The event feed as Server-Sent Events (`GET /events`, WHATWG HTML §9.2 "Server-sent
//! events"): each event is `id: <id>`, `event: <type>`, `data: <the event's JSON>`; a client
//! that reconnects sends the last id it saw as `Last-Event-ID` and resumes after it
//! ([`super::EventBus::subscribe`]). When events were lost (the buffer no longer held them, or
//! the client read too slowly) an `events.lost` event without an id says how many:
//! `{"missed": n}`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::Event as SseEvent;
use futures_util::Stream;
use tokio::sync::{broadcast, watch};

use super::{Event, Subscription};

/// The type of the event that reports a gap in the feed.
pub const LOST: &str = "events.lost";

/// Which events a subscriber wants (`GET /events?call_sid=…&agent=…`); `None` matches all.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Filter {
    /// Only this call's events.
    pub call_sid: Option<String>,
    /// Only the events of calls served by this agent.
    pub agent: Option<String>,
}

impl Filter {
    /// `event` passes the filter.
    pub fn matches(&self, event: &Event) -> bool {
        self.call_sid
            .as_ref()
            .is_none_or(|sid| *sid == event.call_sid)
            && self
                .agent
                .as_ref()
                .is_none_or(|agent| event.agent.as_deref() == Some(agent.as_str()))
    }
}

fn frame(event: &Event) -> SseEvent {
    SseEvent::default()
        .id(event.id.as_str())
        .event(event.kind)
        .data(&*event.json)
}

fn lost(missed: u64) -> SseEvent {
    SseEvent::default()
        .event(LOST)
        .data(serde_json::json!({ "missed": missed }).to_string())
}

struct State {
    pending: std::collections::VecDeque<SseEvent>,
    live: broadcast::Receiver<Arc<Event>>,
    filter: Filter,
    closing: watch::Receiver<bool>,
}

/// The SSE stream of `subscription` through `filter`: the lost count (if any), the backlog,
/// then live events, until `closing` turns true (the server shuts down) — an endless response
/// would otherwise hold a graceful shutdown open.
pub fn stream(
    subscription: Subscription,
    filter: Filter,
    closing: watch::Receiver<bool>,
) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static {
    let mut pending = std::collections::VecDeque::new();
    if subscription.lost > 0 {
        pending.push_back(lost(subscription.lost));
    }
    pending.extend(
        subscription
            .backlog
            .iter()
            .filter(|e| filter.matches(e))
            .map(|e| frame(e)),
    );
    let state = State {
        pending,
        live: subscription.live,
        filter,
        closing,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(event) = state.pending.pop_front() {
                return Some((Ok(event), state));
            }
            if *state.closing.borrow() {
                return None;
            }
            tokio::select! {
                received = state.live.recv() => match received {
                    Ok(event) if state.filter.matches(&event) => {
                        return Some((Ok(frame(&event)), state));
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        return Some((Ok(lost(missed)), state));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                changed = state.closing.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
            }
        }
    })
}
