//! `GET /events`: the live call events ([`crate::events`]) as Server-Sent Events, behind the
//! operator API's bearer tokens.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::api::error;
use crate::events::sse::{self, Filter};

/// How often an idle feed sends an SSE comment, so proxies and load balancers that close idle
/// connections (often after 60 s) keep it open.
pub const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// Longest `Last-Event-ID` taken (bytes); a longer one is refused as malformed.
const MAX_LAST_EVENT_ID: usize = 64;

/// `GET /events?call_sid=CA…&agent=name`: the events of the calls this instance carries, live,
/// as `text/event-stream`. `Last-Event-ID` resumes after that event (from the bounded buffer;
/// an `events.lost` event says how many are gone). 401/429 as the operator API; 400 for a
/// malformed query or `Last-Event-ID`.
pub async fn feed(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<Filter>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let ctx = state.context();
    if let Err(response) = state
        .api
        .load_full()
        .authorize(&headers, ctx.records.as_ref())
        .await
    {
        return response;
    }
    let Query(filter) = match query {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_filter", &e.body_text()),
    };
    let last = match headers.get("last-event-id").map(|v| v.to_str()) {
        None => None,
        Some(Ok(id)) if id.len() <= MAX_LAST_EVENT_ID => Some(id.trim()).filter(|i| !i.is_empty()),
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_last_event_id",
                "Last-Event-ID must be an event id (<boot>-<seq>) of at most 64 bytes",
            );
        }
    };
    let subscription = ctx.events.subscribe(last);
    let stream = sse::stream(subscription, filter, state.closing.subscribe());
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    // Proxies (nginx) buffer responses unless told not to; an event feed must not wait.
    response.headers_mut().insert(
        "x-accel-buffering",
        axum::http::HeaderValue::from_static("no"),
    );
    response
}
