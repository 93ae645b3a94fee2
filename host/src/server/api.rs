//! The operator API: place outbound calls, read call records, hang up a live call.
//!
//! | route | does |
//! |---|---|
//! | `POST /calls` | JSON `{to, agent, from?, task?: {type?, prompt, context?}, callback_url?}` → places the call through Twilio's REST API; 201 `{call_sid, status, agent, to, from}`; the call's record is POSTed, signed, to `callback_url` when it ends ([`crate::callbacks`]) |
//! | `GET /calls?agent=&status=&outcome=&direction=&since=&until=&limit=&before=` | call records, newest first |
//! | `GET /calls/{sid}` | one call record, with transcript and per-turn latency |
//! | `POST /calls/{sid}/hangup` | ends the call through Twilio's REST API (`Status=completed`) |
//!
//! Every request needs `Authorization: Bearer <token>` with one of `[api] tokens` (while none is
//! configured, the token the gateway generated at start, [`super::console`]; else 401),
//! and each token has its own token bucket (`rate_per_minute`, `burst`; over it: 429 with
//! `Retry-After`), shared by the fleet when the records are on PostgreSQL. Errors are JSON
//! `{"error": "<message>", "code": "<code>"}`: among them 409 `agent_disabled` (the agent's
//! secret is empty) and 503 `records_unavailable` (the records database is unreachable); errors
//! from Twilio add `twilio_code` and `twilio_status`, and their `code` is `twilio_<code>`.

use std::num::NonZeroU32;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::AppState;
use crate::call::task::Task;
use crate::config::{ApiConfig, is_e164};
use crate::records::{self, ListFilter, NewCall, RateVerdict, Records};
use crate::twilio::rest::{CallTarget, CreateCall, RestError, UpdateCall, is_sid};
use crate::twilio::webhook;

/// Status callback events requested for outbound calls.
pub const STATUS_EVENTS: [&str; 4] = ["initiated", "ringing", "answered", "completed"];

/// Largest `POST /calls` body, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The bearer tokens and their rate limiters.
///
/// With call records on a database, a token's bucket lives there ([`Records::rate_take`]), so
/// its burst holds for the whole fleet; the in-process bucket is used without records, and
/// while the database is unreachable (each instance then allows the burst on its own).
pub struct ApiGuard {
    /// SHA-256 of each token, compared in constant time, with the token's bucket.
    tokens: Vec<([u8; 32], DefaultDirectRateLimiter)>,
    /// `[api] rate_per_minute`.
    rate_per_minute: u32,
    /// `[api] burst`.
    burst: u32,
}

impl std::fmt::Debug for ApiGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiGuard")
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

impl ApiGuard {
    /// The guard for `[api]`.
    pub fn new(config: &ApiConfig) -> Self {
        let rate = NonZeroU32::new(config.rate_per_minute).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_minute(rate).allow_burst(burst);
        let tokens = config
            .tokens
            .iter()
            .map(|t| (digest(t.expose()), RateLimiter::direct(quota)))
            .collect();
        Self {
            tokens,
            rate_per_minute: rate.get(),
            burst: burst.get(),
        }
    }

    /// The same guard, also accepting `token` — the web console's generated token when no
    /// `[api] tokens` are configured ([`super::console::Console::guard`]) — with a bucket of
    /// its own, as a configured token has.
    pub fn with_token(mut self, token: &str) -> Self {
        let rate = NonZeroU32::new(self.rate_per_minute).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(self.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_minute(rate).allow_burst(burst);
        self.tokens
            .push((digest(token), RateLimiter::direct(quota)));
        self
    }

    /// Checks the `Authorization` header without taking from the token's bucket: for cheap
    /// reads a page repeats (the console's overview).
    ///
    /// # Errors
    /// 401 for a missing or unknown token (or when no tokens are configured).
    #[allow(clippy::result_large_err)]
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<(), Response> {
        self.token(headers).map(|_| ())
    }

    /// Checks the `Authorization` header and takes one request from the token's bucket: the
    /// fleet's shared one in `records` when given (see [`ApiGuard`]), else this process's.
    ///
    /// # Errors
    /// 401 for a missing or unknown token (or when no tokens are configured), 429 with
    /// `Retry-After` when the token's bucket is empty.
    pub async fn authorize(
        &self,
        headers: &HeaderMap,
        records: Option<&Records>,
    ) -> Result<(), Response> {
        let i = self.token(headers)?;
        let verdict = match records {
            Some(records) => {
                // The bucket's key is the token's digest (never the token), shortened.
                let key: String = self.tokens[i].0[..16]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                match records
                    .rate_take(&format!("api:{key}"), self.rate_per_minute, self.burst)
                    .await
                {
                    Ok(verdict) => verdict,
                    Err(error) => {
                        tracing::warn!(%error, "operator API: the shared rate limit is unavailable; using this instance's");
                        self.local(i)
                    }
                }
            }
            None => self.local(i),
        };
        match verdict {
            RateVerdict::Allowed => {
                metrics::counter!(crate::metrics::API_REQUESTS, "result" => "ok").increment(1);
                Ok(())
            }
            RateVerdict::Limited { retry_after_ms } => {
                metrics::counter!(crate::metrics::API_REQUESTS, "result" => "rate_limited")
                    .increment(1);
                let secs = retry_after_ms.div_ceil(1000).max(1);
                tracing::warn!(
                    token = i,
                    retry_after_s = secs,
                    "operator API: rate limited"
                );
                let mut response = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    &format!("too many requests; retry in {secs} s"),
                );
                if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                    response.headers_mut().insert(header::RETRY_AFTER, v);
                }
                Err(response)
            }
        }
    }

    /// This process's bucket for token `i`.
    fn local(&self, i: usize) -> RateVerdict {
        match self.tokens[i].1.check() {
            Ok(()) => RateVerdict::Allowed,
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                RateVerdict::Limited {
                    retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1),
                }
            }
        }
    }

    /// The index of the request's bearer token.
    #[allow(clippy::result_large_err)]
    fn token(&self, headers: &HeaderMap) -> Result<usize, Response> {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let Some(given) = given.filter(|g| !g.is_empty()) else {
            metrics::counter!(crate::metrics::API_REQUESTS, "result" => "unauthorized")
                .increment(1);
            return Err(unauthorized(if self.tokens.is_empty() {
                "the operator API is off: no [api] tokens are configured"
            } else {
                "missing bearer token (Authorization: Bearer <token>)"
            }));
        };
        let given = digest(given);
        // Every token is compared, each in constant time, so timing reveals nothing.
        let mut found = None;
        for (i, (token, _)) in self.tokens.iter().enumerate() {
            let diff = token
                .iter()
                .zip(given.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some(i);
            }
        }
        let Some(i) = found else {
            tracing::warn!("operator API: wrong bearer token");
            metrics::counter!(crate::metrics::API_REQUESTS, "result" => "unauthorized")
                .increment(1);
            return Err(unauthorized("wrong bearer token"));
        };
        Ok(i)
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A JSON error response.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({"error": message, "code": code})),
    )
        .into_response()
}

fn unauthorized(message: &str) -> Response {
    let mut response = error(StatusCode::UNAUTHORIZED, "unauthorized", message);
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// A Twilio REST failure as the API's answer: Twilio's client errors (4xx: a bad number, a
/// number the account cannot call) are the request's fault (400, or 404 for an unknown call);
/// Twilio refusing our credentials, failing or being unreachable is a bad gateway (502).
fn twilio_error(e: &RestError) -> Response {
    match e {
        RestError::Api {
            status,
            code,
            message,
            more_info,
        } => {
            let http = match *status {
                401 | 403 => StatusCode::BAD_GATEWAY,
                404 => StatusCode::NOT_FOUND,
                429 => StatusCode::SERVICE_UNAVAILABLE,
                400..=499 => StatusCode::BAD_REQUEST,
                _ => StatusCode::BAD_GATEWAY,
            };
            let message = if *status == 401 {
                format!("Twilio refused the gateway's credentials: {message}")
            } else {
                message.clone()
            };
            (
                http,
                Json(serde_json::json!({
                    "error": message,
                    "code": format!("twilio_{code}"),
                    "twilio_code": code,
                    "twilio_status": status,
                    "more_info": more_info,
                })),
            )
                .into_response()
        }
        RestError::InvalidSid(_) => error(StatusCode::BAD_REQUEST, "invalid_sid", &e.to_string()),
        RestError::Transport(_) | RestError::Decode { .. } | RestError::InvalidBaseUrl(_) => error(
            StatusCode::BAD_GATEWAY,
            "twilio_unreachable",
            &e.to_string(),
        ),
    }
}

/// A JSON request's authorization ([`ApiGuard::authorize`]: bearer token, one request from its
/// rate limit) and body: `body`, at most `max_bytes`, read as `T`.
///
/// # Errors
/// 401 or 429 as [`ApiGuard::authorize`]; 413 `too_large` over `max_bytes`; 400 `bad_request`
/// for a body that is not `T` in JSON.
pub(crate) async fn authorized_json<T: serde::de::DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
    max_bytes: usize,
) -> Result<T, Response> {
    state
        .api
        .load_full()
        .authorize(headers, state.context().records.as_ref())
        .await?;
    if body.len() > max_bytes {
        return Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            &format!("body over {} KiB", max_bytes / 1024),
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            &format!("invalid JSON body: {e}"),
        )
    })
}

/// `POST /calls`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaceCall {
    to: String,
    agent: String,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    task: Option<Task>,
    /// Where to POST the call's record, signed, when the call ends ([`crate::callbacks`]).
    #[serde(default)]
    callback_url: Option<String>,
}

/// Longest `callback_url` accepted (bytes).
pub const MAX_CALLBACK_URL_BYTES: usize = 2048;

/// A callback URL: `http://` or `https://` with a host, at most [`MAX_CALLBACK_URL_BYTES`].
fn check_callback_url(url: &str) -> Result<(), String> {
    if url.len() > MAX_CALLBACK_URL_BYTES {
        return Err(format!(
            "callback_url is over {MAX_CALLBACK_URL_BYTES} bytes"
        ));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("callback_url: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err("callback_url must be an http:// or https:// URL with a host".into());
    }
    Ok(())
}

/// `POST /calls`: place an outbound call to `to` answered by `agent`.
pub async fn place_call(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let request: PlaceCall = match authorized_json(&state, &headers, &body, MAX_BODY_BYTES).await {
        Ok(r) => r,
        Err(refused) => return refused,
    };
    let ctx = state.context();
    let config = &ctx.config;
    if !is_e164(&request.to) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_number",
            &format!(
                "\"to\" must be an E.164 number such as +14155550100, got {:?}",
                request.to
            ),
        );
    }
    let Some(agent) = config.agent(&request.agent) else {
        return error(
            StatusCode::BAD_REQUEST,
            "unknown_agent",
            &format!("no agent named {:?}", request.agent),
        );
    };
    // A disabled agent (an empty secret) would refuse the call once answered: say so now,
    // before anyone's phone rings.
    if agent.is_disabled() && config.fallback_for(agent).is_none() {
        return error(
            StatusCode::CONFLICT,
            "agent_disabled",
            &format!(
                "agent {:?} is disabled: a secret it needs is empty (see `switchboard check`)",
                request.agent
            ),
        );
    }
    let from = request
        .from
        .clone()
        .or_else(|| config.twilio.caller_id.clone())
        .or_else(|| agent.numbers.first().cloned());
    let Some(from) = from else {
        return error(
            StatusCode::BAD_REQUEST,
            "no_caller_id",
            "no \"from\": give one, or set [twilio] caller_id, or give the agent a number",
        );
    };
    if !is_e164(&from) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_number",
            &format!("\"from\" must be an E.164 number, got {from:?}"),
        );
    }
    if let Some(task) = &request.task
        && let Err(why) = task.check()
    {
        return error(StatusCode::BAD_REQUEST, "invalid_task", &why);
    }
    if let Some(url) = &request.callback_url {
        if let Err(why) = check_callback_url(url) {
            return error(StatusCode::BAD_REQUEST, "invalid_callback_url", &why);
        }
        if config.api.callback_secret.is_none() {
            return error(
                StatusCode::BAD_REQUEST,
                "no_callback_secret",
                "a callback_url needs [api] callback_secret (whsec_…) to sign the callback",
            );
        }
        if ctx.records.is_none() {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_records",
                "callbacks are delivered from the call records; [records] is off",
            );
        }
    }
    let Some(rest) = ctx.rest.clone() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "twilio_not_configured",
            "outbound calls need [twilio] account_sid and auth_token",
        );
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let Some(base) = webhook::public_base(
        config.server.public_url.as_deref(),
        header("host"),
        header("x-forwarded-proto"),
    ) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_public_url",
            "set [server] public_url so Twilio can reach the gateway",
        );
    };
    let task_id = match &request.task {
        Some(task) => {
            match crate::call::task::store(ctx.records.as_ref(), &state.tasks, task).await {
                Ok(id) => Some(id),
                Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, "busy", &e.to_string()),
            }
        }
        None => None,
    };
    let query = {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("agent", &agent.name);
        if let Some(id) = &task_id {
            query.append_pair(crate::call::task::TASK_PARAMETER, id);
        }
        query.finish()
    };
    let mut create = CreateCall::new(
        request.to.clone(),
        from.clone(),
        CallTarget::Url {
            url: format!("{base}/twilio/voice?{query}"),
            method: Some("POST".into()),
        },
    );
    create.status_callback = Some(format!("{base}/twilio/status"));
    create.status_callback_events = STATUS_EVENTS.iter().map(|s| s.to_string()).collect();
    create.status_callback_method = Some("POST".into());
    let call = match rest.create_call(&create).await {
        Ok(call) => call,
        Err(e) => {
            if let Some(id) = &task_id {
                let _ = crate::call::task::take(ctx.records.as_ref(), &state.tasks, id).await;
            }
            tracing::warn!(error = %e, to = %request.to, agent = %agent.name, "outbound call not placed");
            return twilio_error(&e);
        }
    };
    tracing::info!(call_sid = %call.sid, to = %request.to, agent = %agent.name, "outbound call placed");
    if let Some(records) = &ctx.records {
        let task = request
            .task
            .as_ref()
            .and_then(|t| serde_json::to_value(t).ok());
        let created = NewCall {
            call_sid: call.sid.clone(),
            direction: Some(
                call.direction
                    .clone()
                    .unwrap_or_else(|| "outbound-api".into()),
            ),
            from: Some(from.clone()),
            to: Some(request.to.clone()),
            agent: Some(agent.name.clone()),
            status: call.status.clone(),
            task,
            callback_url: request.callback_url.clone(),
            created_at_ms: records::now_ms(),
        };
        if let Err(e) = records.call_created(created).await {
            tracing::error!(error = %e, call_sid = %call.sid, "outbound call not recorded");
        }
    }
    (
        StatusCode::CREATED,
        Json(serde_json::json!({
            "call_sid": call.sid,
            "status": call.status,
            "agent": agent.name,
            "to": request.to,
            "from": from,
        })),
    )
        .into_response()
}

/// `GET /calls`: call records, filtered, newest first.
pub async fn list_calls(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if let Err(response) = state
        .api
        .load_full()
        .authorize(&headers, state.context().records.as_ref())
        .await
    {
        return response;
    }
    let pairs: Vec<(String, String)> = query
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let filter = match ListFilter::from_query(&pairs) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_filter", &e.to_string()),
    };
    let records = match records_of(&state) {
        Ok(r) => r,
        Err(response) => return response,
    };
    match records.list(&filter).await {
        Ok(calls) => Json(serde_json::json!({ "calls": calls })).into_response(),
        Err(e) => records_error(&e),
    }
}

/// `GET /calls/{sid}`: one call record.
pub async fn get_call(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(sid): Path<String>,
) -> Response {
    if let Err(response) = state
        .api
        .load_full()
        .authorize(&headers, state.context().records.as_ref())
        .await
    {
        return response;
    }
    let records = match records_of(&state) {
        Ok(r) => r,
        Err(response) => return response,
    };
    match records.get(&sid).await {
        Ok(Some(call)) => Json(call).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "not_found", "no call with this sid"),
        Err(e) => records_error(&e),
    }
}

/// `POST /calls/{sid}/hangup`: end a call through Twilio.
pub async fn hang_up(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(sid): Path<String>,
) -> Response {
    if let Err(response) = state
        .api
        .load_full()
        .authorize(&headers, state.context().records.as_ref())
        .await
    {
        return response;
    }
    if !is_sid("CA", &sid) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_sid",
            "a call sid is CA + 32 hex digits",
        );
    }
    let Some(rest) = state.context().rest.clone() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "twilio_not_configured",
            "hanging up needs [twilio] account_sid and auth_token",
        );
    };
    match rest.update_call(&sid, &UpdateCall::Complete).await {
        Ok(call) => {
            tracing::info!(call_sid = %sid, "call hung up by the operator");
            Json(serde_json::json!({"call_sid": call.sid, "status": call.status})).into_response()
        }
        Err(e) => twilio_error(&e),
    }
}

/// The call records, or 503 when they are off.
#[allow(clippy::result_large_err)]
fn records_of(state: &AppState) -> Result<records::Records, Response> {
    state.context().records.clone().ok_or_else(|| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "records_off",
            "call records are off",
        )
    })
}

fn records_error(e: &records::RecordsError) -> Response {
    if let records::RecordsError::BadFilter(why) = e {
        return error(StatusCode::BAD_REQUEST, "bad_filter", why);
    }
    tracing::error!(error = %e, "call records unavailable");
    let unreachable = match e {
        records::RecordsError::Unavailable(_) => true,
        records::RecordsError::Postgres(pg) => pg.code().is_none(),
        _ => false,
    };
    if unreachable {
        // The database is unreachable (a fleet's PostgreSQL): worth a retry, not a bug.
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "records_unavailable",
            &e.to_string(),
        );
    }
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "records_error",
        &e.to_string(),
    )
}
