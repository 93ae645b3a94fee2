//! The browser phone: a call to an agent from the console, over a WebSocket that speaks Twilio's
//! Media Streams protocol, run by the same call task as Twilio's streams ([`crate::call::run`]).
//!
//! 1. `POST /console/phone` `{"agent": NAME}` with the operator API's bearer token issues a
//!    [`Ticket`]: one use, [`TICKET_TTL`], at most [`MAX_TICKETS`] outstanding, naming the
//!    agent and the call's `callSid`/`streamSid`.
//! 2. `GET /console/phone/ws?ticket=…` redeems it and upgrades (a browser's WebSocket cannot
//!    carry an `Authorization` header; the ticket stands for the token). The call is recorded
//!    (direction `browser`, from `browser`, to the agent's name) and goes to the ticket's agent
//!    whatever the `start` message's `customParameters` say ([`AdmittedStream`]); a `start`
//!    with other sids ends it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::time::Instant;

use super::random_hex;
use crate::call::AdmittedStream;
use crate::config::Config;
use crate::records::{self, NewCall};
use crate::server::api::{authorized_json, error};
use crate::server::{AppState, MAX_WS_MESSAGE_BYTES, WEBHOOK_RECORD_WAIT, WS_READ_BUFFER_BYTES};

/// How long a ticket may wait for its WebSocket: the page opens it at once; a ticket unused
/// for this long was lost, or copied.
pub const TICKET_TTL: Duration = Duration::from_secs(30);

/// Most tickets outstanding at once. Each is a few hundred bytes; the bound keeps a token
/// holder who never connects from growing the map, and is far above what people clicking Call
/// in consoles reach within [`TICKET_TTL`].
pub const MAX_TICKETS: usize = 64;

/// Random bytes in a ticket (64 hex digits).
pub const TICKET_BYTES: usize = 32;

/// Largest `POST /console/phone` body (bytes): `{"agent": NAME}` with a 64-character name.
pub const MAX_BODY_BYTES: usize = 4096;

/// `direction`, `from` of a browser call's record, and its `Direction` parameter.
pub const BROWSER: &str = "browser";

/// What a ticket admits: a call to `agent` with these sids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// The agent that answers.
    pub agent: String,
    /// The call's `CallSid` (`CA` + 32 hex digits), which its `start` must carry.
    pub call_sid: String,
    /// The stream's `StreamSid` (`MZ` + 32 hex digits), which its `start` must carry.
    pub stream_sid: String,
    /// When it stops being accepted.
    expires: Instant,
}

impl Ticket {
    /// The stream this ticket admits, routed to its agent; `From` is `browser`, `To` the agent's
    /// name, `Direction` `browser`.
    pub fn admitted(&self) -> AdmittedStream {
        let parameters = [
            ("agent", self.agent.as_str()),
            ("From", BROWSER),
            ("To", self.agent.as_str()),
            ("Direction", BROWSER),
        ];
        AdmittedStream {
            call_sid: self.call_sid.clone(),
            stream_sid: self.stream_sid.clone(),
            parameters: parameters
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }
}

/// Why a ticket was not issued or not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// [`MAX_TICKETS`] are outstanding and none has expired.
    #[error(
        "{} browser calls are waiting to connect; try again shortly",
        MAX_TICKETS
    )]
    TooMany,
    /// No such ticket: never issued, or already used.
    #[error("unknown or already used ticket")]
    Unknown,
    /// The ticket was issued more than [`TICKET_TTL`] ago.
    #[error("the ticket expired (tickets last {} s)", TICKET_TTL.as_secs())]
    Expired,
}

/// The outstanding tickets, by ticket. A plain mutex: taken twice per browser call, never on
/// the audio path.
#[derive(Debug, Default)]
pub struct Tickets {
    open: Mutex<HashMap<String, Ticket>>,
}

impl Tickets {
    /// Issues a ticket for a call to `agent`, with fresh sids; returns the ticket's text with
    /// what it admits.
    ///
    /// # Errors
    /// [`TicketError::TooMany`] when [`MAX_TICKETS`] unexpired tickets are outstanding.
    pub fn issue(&self, agent: &str) -> Result<(String, Ticket), TicketError> {
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|_, t| t.expires > now);
        if open.len() >= MAX_TICKETS {
            return Err(TicketError::TooMany);
        }
        let ticket = Ticket {
            agent: agent.to_string(),
            call_sid: format!("CA{}", random_hex(16)),
            stream_sid: format!("MZ{}", random_hex(16)),
            expires: now + TICKET_TTL,
        };
        let text = random_hex(TICKET_BYTES);
        open.insert(text.clone(), ticket.clone());
        Ok((text, ticket))
    }

    /// Takes the ticket `text`: it is accepted once, before it expires.
    ///
    /// # Errors
    /// [`TicketError::Unknown`] for a ticket never issued or already redeemed,
    /// [`TicketError::Expired`] for one past [`TICKET_TTL`].
    pub fn redeem(&self, text: &str) -> Result<Ticket, TicketError> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let ticket = open.remove(text).ok_or(TicketError::Unknown)?;
        if ticket.expires <= Instant::now() {
            return Err(TicketError::Expired);
        }
        Ok(ticket)
    }

    /// Tickets outstanding (expired ones included until the next issue).
    pub fn outstanding(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// `POST /console/phone`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaceBrowserCall {
    /// The agent to call.
    agent: String,
}

/// The answer to a browser call to `agent` that `config` refuses: 404 `unknown_agent`, or 409
/// `agent_disabled` (a secret it needs is empty: the console calls that agent, not its
/// fallback).
#[allow(clippy::result_large_err)]
fn check_agent(config: &Config, agent: &str) -> Result<(), Response> {
    match config.agent(agent) {
        None => Err(error(
            StatusCode::NOT_FOUND,
            "unknown_agent",
            &format!("no agent named {agent:?}"),
        )),
        Some(a) if a.is_disabled() => Err(error(
            StatusCode::CONFLICT,
            "agent_disabled",
            &format!(
                "agent {agent:?} is disabled: a secret it needs is empty (see `switchboard check`)"
            ),
        )),
        Some(_) => Ok(()),
    }
}

/// 503 `draining`: the gateway takes no new calls.
fn draining() -> Response {
    let mut response = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "draining",
        "the gateway is shutting down and takes no new calls",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
    response
}

/// `POST /console/phone` `{"agent": NAME}` (bearer token, rate-limited like the operator API):
/// 200 `{"ticket", "call_sid", "stream_sid", "agent", "ws_url", "expires_in_s"}`, where
/// `ws_url` is `/console/phone/ws?ticket=TICKET` (relative to the gateway) and `expires_in_s`
/// is [`TICKET_TTL`]. Errors (JSON `{"error", "code"}`): 400 `bad_request`, 401, 404
/// `unknown_agent`, 409 `agent_disabled`, 413 `too_large`, 429 `rate_limited` or
/// `too_many_tickets`, 503 `draining`.
pub async fn place(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let request: PlaceBrowserCall =
        match authorized_json(&state, &headers, &body, MAX_BODY_BYTES).await {
            Ok(r) => r,
            Err(refused) => return refused,
        };
    let ctx = state.context();
    if state.is_draining() {
        return draining();
    }
    if let Err(refused) = check_agent(&ctx.config, &request.agent) {
        return refused;
    }
    let (text, ticket) = match state.console.tickets.issue(&request.agent) {
        Ok(issued) => issued,
        Err(e) => {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_tickets",
                &e.to_string(),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return response;
        }
    };
    tracing::info!(call_sid = %ticket.call_sid, agent = %ticket.agent, "browser call ticket issued");
    Json(serde_json::json!({
        "ticket": text,
        "call_sid": ticket.call_sid,
        "stream_sid": ticket.stream_sid,
        "agent": ticket.agent,
        "ws_url": format!("/console/phone/ws?ticket={text}"),
        "expires_in_s": TICKET_TTL.as_secs(),
    }))
    .into_response()
}

/// `GET /console/phone/ws?ticket=TICKET`: redeems the ticket and upgrades to the call's Media
/// Streams socket. Refused before the upgrade: 401 `invalid_ticket` (missing, unknown, used or
/// expired), 404 `unknown_agent` / 409 `agent_disabled` (the agent went in a reload since),
/// 503 `draining`.
pub async fn socket(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    upgrade: WebSocketUpgrade,
) -> Response {
    let given = query.as_deref().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "ticket")
            .map(|(_, v)| v.into_owned())
    });
    let ticket = match given.as_deref().map(|t| state.console.tickets.redeem(t)) {
        Some(Ok(ticket)) => ticket,
        refused => {
            let why = match refused {
                Some(Err(e)) => e.to_string(),
                _ => "a ticket is required (?ticket=…, from POST /console/phone)".into(),
            };
            tracing::warn!(reason = %why, "browser call refused");
            return error(StatusCode::UNAUTHORIZED, "invalid_ticket", &why);
        }
    };
    if state.is_draining() {
        return draining();
    }
    let mut ctx = (*state.context()).clone();
    if let Err(refused) = check_agent(&ctx.config, &ticket.agent) {
        return refused;
    }
    ctx.admitted = Some(ticket.admitted());
    upgrade
        .max_message_size(MAX_WS_MESSAGE_BYTES)
        .max_frame_size(MAX_WS_MESSAGE_BYTES)
        .read_buffer_size(WS_READ_BUFFER_BYTES)
        .on_upgrade(move |socket| async move {
            record(&ctx, &ticket).await;
            state.run_call(socket, ctx).await;
        })
}

/// Records the browser call as the voice webhook records Twilio's (bounded by
/// [`WEBHOOK_RECORD_WAIT`]; a slow database does not hold the call up, the write goes on).
async fn record(ctx: &crate::call::CallContext, ticket: &Ticket) {
    let Some(records) = &ctx.records else {
        return;
    };
    let created = NewCall {
        call_sid: ticket.call_sid.clone(),
        direction: Some(BROWSER.into()),
        from: Some(BROWSER.into()),
        to: Some(ticket.agent.clone()),
        agent: Some(ticket.agent.clone()),
        // No carrier, so no Twilio status: the record's outcome says how the call went.
        status: None,
        task: None,
        callback_url: None,
        created_at_ms: records::now_ms(),
    };
    let call_sid = &ticket.call_sid;
    match tokio::time::timeout(WEBHOOK_RECORD_WAIT, records.call_created(created)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(%call_sid, error = %e, "browser call not recorded"),
        Err(_) => {
            tracing::warn!(%call_sid, "browser call record write is slow; starting without waiting for it")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_ticket_is_accepted_once() {
        let tickets = Tickets::default();
        let (text, issued) = tickets.issue("front-desk").unwrap();
        assert_eq!(text.len(), 2 * TICKET_BYTES);
        assert!(
            crate::twilio::rest::is_sid("CA", &issued.call_sid),
            "{}",
            issued.call_sid
        );
        assert!(issued.stream_sid.starts_with("MZ") && issued.stream_sid.len() == 34);
        let redeemed = tickets.redeem(&text).unwrap();
        assert_eq!(redeemed, issued);
        assert_eq!(
            tickets.redeem(&text),
            Err(TicketError::Unknown),
            "second use"
        );
        assert_eq!(tickets.redeem("not-a-ticket"), Err(TicketError::Unknown));
        assert_eq!(tickets.outstanding(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_ticket_expires_after_its_ttl() {
        let tickets = Tickets::default();
        let (early, _) = tickets.issue("a").unwrap();
        let (late, _) = tickets.issue("a").unwrap();
        tokio::time::advance(TICKET_TTL - Duration::from_millis(1)).await;
        assert!(tickets.redeem(&early).is_ok(), "1 ms before the TTL");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(tickets.redeem(&late), Err(TicketError::Expired));
        assert_eq!(
            tickets.redeem(&late),
            Err(TicketError::Unknown),
            "gone once refused"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn outstanding_tickets_are_bounded_and_expired_ones_make_room() {
        let tickets = Tickets::default();
        let mut issued: Vec<String> = (0..MAX_TICKETS)
            .map(|_| tickets.issue("a").unwrap().0)
            .collect();
        assert_eq!(tickets.issue("a"), Err(TicketError::TooMany));
        // A redeemed ticket makes room for one more.
        tickets.redeem(&issued.pop().unwrap()).unwrap();
        tickets.issue("a").unwrap();
        assert_eq!(tickets.issue("a"), Err(TicketError::TooMany));
        // Once they expire, they make room too.
        tokio::time::advance(TICKET_TTL).await;
        tickets.issue("a").unwrap();
        assert_eq!(tickets.outstanding(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_admitted_stream_takes_only_the_tickets_sids_and_routes_to_its_agent() {
        let tickets = Tickets::default();
        let (_, ticket) = tickets.issue("front-desk").unwrap();
        let admitted = ticket.admitted();
        assert!(admitted.matches(&ticket.call_sid, &ticket.stream_sid));
        assert!(
            !admitted.matches(&ticket.call_sid, "MZ1"),
            "another stream sid"
        );
        assert!(
            !admitted.matches("CA1", &ticket.stream_sid),
            "another call sid"
        );
        let (_, other) = tickets.issue("front-desk").unwrap();
        assert!(
            !admitted.matches(&other.call_sid, &other.stream_sid),
            "another ticket's"
        );
        // The browser's own parameters cannot pick another agent or caller.
        let mut params = vec![
            ("agent".to_string(), "billing".to_string()),
            ("From".to_string(), "+15005550001".to_string()),
            ("lang".to_string(), "fr".to_string()),
        ];
        admitted.apply(&mut params);
        let get = |k: &str| {
            params
                .iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("agent"), ["front-desk"]);
        assert_eq!(get("From"), [BROWSER]);
        assert_eq!(get("To"), ["front-desk"]);
        assert_eq!(get("Direction"), [BROWSER]);
        assert_eq!(get("lang"), ["fr"], "other parameters pass through");
    }
}
