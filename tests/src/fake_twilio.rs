//! A fake of Twilio's REST API for calls: a real HTTP/1.1 server on loopback speaking the wire
//! protocol of the design notes' `TWILIO.md` §4, so tests can drive
//! `switchboard::twilio::rest::RestClient` (or the SDK, pointed here as in §6) end to end.
//! - `POST /2010-04-01/Accounts/{AccountSid}/Calls.json` creates a call (201, status `queued`).
//! - `POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json` updates one (200).
//! - Anything else: 404 with code 20404.
//!
//! Errors are Twilio's error object (TWILIO.md §4, <https://www.twilio.com/docs/usage/twilios-response>)
//! with the codes of <https://www.twilio.com/docs/api/errors>. It checks HTTP Basic auth, records
//! every request, keeps the calls it created, can fail the next request on purpose
//! ([`FakeTwilio::fail_next`]), and hands each created or updated call to the test
//! ([`FakeTwilio::next_created`], [`FakeTwilio::next_update`]). Only tests point a base URL here.
//!
//! Simplifications: `To` and `From` must be E.164 (Twilio also takes `client:`/`sip:` addresses
//! and normalises national numbers); only the account's own SID and token authenticate (no API
//! keys or subaccounts); calls never progress by themselves (a test moves them with
//! [`FakeTwilio::set_status`]); an invalid `Status` and a body that is not form-encoded answer
//! code 20001, a stand-in for whatever Twilio sends.

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// How many created (and, separately, updated) calls wait for [`FakeTwilio::next_created`] /
/// [`FakeTwilio::next_update`]; beyond that the oldest unread stay and newer ones are dropped,
/// so a test that never reads the hooks cannot stall the server.
const HOOK_CAPACITY: usize = 64;

/// How long [`FakeTwilio::next_created`] and [`FakeTwilio::next_update`] wait: far longer than a
/// loopback round trip, short enough that a missing request fails the test quickly.
const HOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// The API version prefix of every route.
const PREFIX: &str = "/2010-04-01/Accounts/";

/// One request as the fake received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `POST`, `GET`…
    pub method: String,
    /// The URL path (no query).
    pub path: String,
    /// The HTTP Basic auth user name (the password is not kept).
    pub auth_user: Option<String>,
    /// The form body's `(key, value)` pairs in order, repeated keys kept, percent-decoded.
    pub form: Vec<(String, String)>,
    /// The `Content-Type` header.
    pub content_type: Option<String>,
    /// The `Accept` header.
    pub accept: Option<String>,
    /// The `User-Agent` header.
    pub user_agent: Option<String>,
}

impl RecordedRequest {
    /// The first value of form key `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of form key `key`, in order.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.form
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A call the fake created, as it stands now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedCall {
    /// `CA` + 32 hex digits.
    pub sid: String,
    /// The account that created it.
    pub account_sid: String,
    /// `To`.
    pub to: String,
    /// `From`.
    pub from: String,
    /// `queued` at creation; then as updates or [`FakeTwilio::set_status`] left it.
    pub status: String,
    /// The TwiML URL it was created with or last redirected to.
    pub url: Option<String>,
    /// The TwiML it was created with or last given by an update (e.g. a transfer's `<Dial>`).
    pub twiml: Option<String>,
    /// Every update's form, in order.
    pub updates: Vec<Vec<(String, String)>>,
}

impl RecordedCall {
    /// The Call resource JSON Twilio answers for this call.
    fn resource(&self) -> Value {
        let uri = format!("{PREFIX}{}/Calls/{}.json", self.account_sid, self.sid);
        let sub = |name: &str| {
            format!(
                "{PREFIX}{}/Calls/{}/{name}.json",
                self.account_sid, self.sid
            )
        };
        json!({
            "sid": self.sid,
            "account_sid": self.account_sid,
            "to": self.to,
            "to_formatted": self.to,
            "from": self.from,
            "from_formatted": self.from,
            "status": self.status,
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "parent_call_sid": null,
            "phone_number_sid": null,
            "start_time": null,
            "end_time": null,
            "duration": null,
            "price": null,
            "price_unit": "USD",
            "answered_by": null,
            "caller_name": null,
            "forwarded_from": null,
            "group_sid": null,
            "queue_time": "0",
            "trunk_sid": null,
            "uri": uri,
            "subresource_uris": {
                "notifications": sub("Notifications"),
                "recordings": sub("Recordings"),
                "payments": sub("Payments"),
                "events": sub("Events"),
                "siprec": sub("Siprec"),
                "streams": sub("Streams"),
                "transcriptions": sub("Transcriptions"),
                "user_defined_message_subscriptions": sub("UserDefinedMessageSubscriptions"),
                "user_defined_messages": sub("UserDefinedMessages"),
            },
        })
    }

    fn is_ended(&self) -> bool {
        matches!(
            self.status.as_str(),
            "completed" | "busy" | "failed" | "no-answer" | "canceled"
        )
    }
}

/// A Twilio error the fake answers with.
#[derive(Debug, Clone)]
struct TwilioError {
    status: StatusCode,
    code: i64,
    message: String,
}

impl TwilioError {
    fn new(status: StatusCode, code: i64, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn not_found(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            20404,
            format!("The requested resource {path} was not found"),
        )
    }

    fn bad_request(code: i64, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl IntoResponse for TwilioError {
    /// Twilio's error object: `code`, `message`, `more_info` (the error's page) and `status`.
    fn into_response(self) -> Response {
        let body = json!({
            "code": self.code,
            "message": self.message,
            "more_info": format!("https://www.twilio.com/docs/errors/{}", self.code),
            "status": self.status.as_u16(),
        });
        (self.status, axum::Json(body)).into_response()
    }
}

#[derive(Default)]
struct Records {
    requests: Vec<RecordedRequest>,
    calls: Vec<RecordedCall>,
    failures: VecDeque<TwilioError>,
    next_sid: u64,
}

struct Shared {
    account_sid: String,
    auth_token: String,
    /// Random high half of every call SID, so two fakes never mint the same SIDs.
    sid_seed: u64,
    records: Mutex<Records>,
    created: mpsc::Sender<RecordedCall>,
    updated: mpsc::Sender<RecordedCall>,
}

impl Shared {
    fn records(&self) -> MutexGuard<'_, Records> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running fake of Twilio's REST API for one account. Stops when dropped.
pub struct FakeTwilio {
    base_url: String,
    shared: Arc<Shared>,
    created: tokio::sync::Mutex<mpsc::Receiver<RecordedCall>>,
    updated: tokio::sync::Mutex<mpsc::Receiver<RecordedCall>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeTwilio {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeTwilio {
    /// Serves the API of account `account_sid`, which authenticates with `auth_token`, on
    /// `127.0.0.1:0`.
    ///
    /// # Errors
    /// The port could not be bound.
    pub async fn start(account_sid: &str, auth_token: &str) -> anyhow::Result<Self> {
        let (created_tx, created_rx) = mpsc::channel(HOOK_CAPACITY);
        let (updated_tx, updated_rx) = mpsc::channel(HOOK_CAPACITY);
        let shared = Arc::new(Shared {
            account_sid: account_sid.to_string(),
            auth_token: auth_token.to_string(),
            sid_seed: RandomState::new().hash_one(account_sid),
            records: Mutex::new(Records::default()),
            created: created_tx,
            updated: updated_tx,
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the fake Twilio API")?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            base_url,
            shared,
            created: tokio::sync::Mutex::new(created_rx),
            updated: tokio::sync::Mutex::new(updated_rx),
            server,
        })
    }

    /// `http://127.0.0.1:PORT`: the base URL to give the client (no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Every request received so far, in order, including refused ones.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.records().requests.clone()
    }

    /// Every call created so far, in order, as each stands now.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.shared.records().calls.clone()
    }

    /// The call `sid`, if the fake created it.
    pub fn call(&self, sid: &str) -> Option<RecordedCall> {
        self.shared
            .records()
            .calls
            .iter()
            .find(|c| c.sid == sid)
            .cloned()
    }

    /// Moves call `sid` to `status` as Twilio's own progress would (`ringing`, `in-progress`,
    /// `busy`…). Returns whether the call exists.
    pub fn set_status(&self, sid: &str, status: &str) -> bool {
        let mut records = self.shared.records();
        match records.calls.iter_mut().find(|c| c.sid == sid) {
            Some(call) => {
                call.status = status.to_string();
                true
            }
            None => false,
        }
    }

    /// Makes the next request (whatever it is, before authentication) answer HTTP `status`
    /// with Twilio's error object carrying `code` and `message`, e.g. 429/20429 (rate limited)
    /// or 503/20503. Calls queue: each fails one request. An invalid `status` becomes 500.
    pub fn fail_next(&self, status: u16, code: i64, message: &str) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        self.shared
            .records()
            .failures
            .push_back(TwilioError::new(status, code, message));
    }

    /// The next call created (in creation order), waiting up to 5 s.
    ///
    /// # Errors
    /// No call was created in time.
    pub async fn next_created(&self) -> anyhow::Result<RecordedCall> {
        let mut rx = self.created.lock().await;
        tokio::time::timeout(HOOK_TIMEOUT, rx.recv())
            .await
            .ok()
            .flatten()
            .context("no call was created within 5 s")
    }

    /// The next successfully updated call, as the update left it, waiting up to 5 s.
    ///
    /// # Errors
    /// No call was updated in time.
    pub async fn next_update(&self) -> anyhow::Result<RecordedCall> {
        let mut rx = self.updated.lock().await;
        tokio::time::timeout(HOOK_TIMEOUT, rx.recv())
            .await
            .ok()
            .flatten()
            .context("no call was updated within 5 s")
    }
}

/// What a request path names.
enum Route<'a> {
    /// `/2010-04-01/Accounts/{account}/Calls.json`.
    Create { account: &'a str },
    /// `/2010-04-01/Accounts/{account}/Calls/{call}.json`.
    Update { account: &'a str, call: &'a str },
}

fn route<'a>(method: &Method, path: &'a str) -> Option<Route<'a>> {
    if method != Method::POST {
        return None;
    }
    let (account, rest) = path.strip_prefix(PREFIX)?.split_once('/')?;
    if rest == "Calls.json" {
        return Some(Route::Create { account });
    }
    let call = rest.strip_prefix("Calls/")?.strip_suffix(".json")?;
    (!call.is_empty() && !call.contains('/')).then_some(Route::Update { account, call })
}

/// The user name and password of an `Authorization: Basic …` header (RFC 7617).
fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credentials) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// Whether `s` is E.164: `+` then 8 to 15 digits, the first not 0.
fn is_e164(s: &str) -> bool {
    s.strip_prefix('+').is_some_and(|digits| {
        (8..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
    })
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let credentials = basic_auth(&headers);
    let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let content_type = header_text(&headers, header::CONTENT_TYPE);
    let request = RecordedRequest {
        method: method.to_string(),
        path: uri.path().to_string(),
        auth_user: credentials.as_ref().map(|(user, _)| user.clone()),
        form: form.clone(),
        content_type: content_type.clone(),
        accept: header_text(&headers, header::ACCEPT),
        user_agent: header_text(&headers, header::USER_AGENT),
    };
    let injected = {
        let mut records = shared.records();
        records.requests.push(request);
        records.failures.pop_front()
    };
    if let Some(error) = injected {
        return error.into_response();
    }
    answer(
        &shared,
        &method,
        uri.path(),
        credentials,
        content_type,
        form,
    )
    .unwrap_or_else(IntoResponse::into_response)
}

/// The answer to one request, checked in Twilio's order: the route, then authentication
/// (error 20003: wrong credentials, or an account in the path other than the authenticated
/// one), then the body's encoding, then the parameters.
fn answer(
    shared: &Shared,
    method: &Method,
    path: &str,
    credentials: Option<(String, String)>,
    content_type: Option<String>,
    form: Vec<(String, String)>,
) -> Result<Response, TwilioError> {
    let route = route(method, path).ok_or_else(|| TwilioError::not_found(path))?;
    let account = match route {
        Route::Create { account } | Route::Update { account, .. } => account,
    };
    let authenticated = credentials.is_some_and(|(user, password)| {
        user == shared.account_sid && password == shared.auth_token
    });
    if !authenticated || account != shared.account_sid {
        return Err(TwilioError::new(
            StatusCode::UNAUTHORIZED,
            20003,
            "Authenticate",
        ));
    }
    let essence = content_type
        .as_deref()
        .and_then(|c| c.split(';').next())
        .map(str::trim);
    if !essence.is_some_and(|e| e.eq_ignore_ascii_case("application/x-www-form-urlencoded")) {
        return Err(TwilioError::bad_request(
            20001,
            "Request body must be application/x-www-form-urlencoded",
        ));
    }
    let get = |key: &str| {
        form.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    match route {
        Route::Create { account } => create(shared, account, &get),
        Route::Update { call, .. } => update(shared, path, call, &form, &get),
    }
}

/// Creates a call, validating as Twilio does: 21201 no `To`, 21211 `To` not a phone number,
/// 21213 no `From`, 21212 `From` not a phone number, 21205 none of `Url`, `Twiml` or
/// `ApplicationSid`.
fn create(
    shared: &Shared,
    account: &str,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<Response, TwilioError> {
    let to =
        get("To").ok_or_else(|| TwilioError::bad_request(21201, "No 'To' number is specified"))?;
    if !is_e164(&to) {
        return Err(TwilioError::bad_request(
            21211,
            format!("The 'To' number {to} is not a valid phone number."),
        ));
    }
    let from = get("From")
        .ok_or_else(|| TwilioError::bad_request(21213, "No 'From' number is specified"))?;
    if !is_e164(&from) {
        return Err(TwilioError::bad_request(
            21212,
            format!(
                "The 'From' number {from} is not a valid phone number, shortcode, or alphanumeric sender ID."
            ),
        ));
    }
    let (url, twiml) = (get("Url"), get("Twiml"));
    if url.is_none() && twiml.is_none() && get("ApplicationSid").is_none() {
        return Err(TwilioError::bad_request(
            21205,
            "Url parameter is required.",
        ));
    }
    let call = {
        let mut records = shared.records();
        records.next_sid += 1;
        let call = RecordedCall {
            sid: format!("CA{:016x}{:016x}", shared.sid_seed, records.next_sid),
            account_sid: account.to_string(),
            to,
            from,
            status: "queued".into(),
            url,
            twiml,
            updates: Vec::new(),
        };
        records.calls.push(call.clone());
        call
    };
    let _ = shared.created.try_send(call.clone());
    Ok((StatusCode::CREATED, axum::Json(call.resource())).into_response())
}

/// Updates a call as Twilio does: 20404 unknown call; `Status` must be `completed` (ends any
/// call not yet ended) or `canceled` (ends a queued or ringing call, no effect once answered),
/// else 20001; `Twiml` or `Url` redirect a live call, and on an ended one fail with 21220.
fn update(
    shared: &Shared,
    path: &str,
    sid: &str,
    form: &[(String, String)],
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<Response, TwilioError> {
    let status = get("Status");
    if let Some(status) = &status
        && !matches!(status.as_str(), "completed" | "canceled")
    {
        return Err(TwilioError::bad_request(20001, "Invalid Status"));
    }
    let call = {
        let mut records = shared.records();
        let call = records
            .calls
            .iter_mut()
            .find(|c| c.sid == sid)
            .ok_or_else(|| TwilioError::not_found(path))?;
        let (url, twiml) = (get("Url"), get("Twiml"));
        if (url.is_some() || twiml.is_some()) && call.is_ended() {
            return Err(TwilioError::bad_request(
                21220,
                "Call is not in-progress. Cannot redirect.",
            ));
        }
        match status.as_deref() {
            Some("completed") if !call.is_ended() => call.status = "completed".into(),
            Some("canceled") if matches!(call.status.as_str(), "queued" | "ringing") => {
                call.status = "canceled".into();
            }
            _ => {}
        }
        if let Some(twiml) = twiml {
            call.twiml = Some(twiml);
            call.url = None;
        } else if let Some(url) = url {
            call.url = Some(url);
            call.twiml = None;
        }
        call.updates.push(form.to_vec());
        call.clone()
    };
    let _ = shared.updated.try_send(call.clone());
    Ok((StatusCode::OK, axum::Json(call.resource())).into_response())
}
