//! A typed client for the two Twilio REST calls the gateway makes: create an outbound call and
//! update a live one (hang up, cancel, or redirect it to new TwiML or a URL).
//!
//! It speaks the wire protocol the official SDK speaks (the design notes' `TWILIO.md` §4):
//! `POST /2010-04-01/Accounts/{AccountSid}/Calls[/{CallSid}].json` with HTTP Basic auth, a
//! form-encoded body whose unset parameters are omitted and whose lists are repeated keys, and
//! JSON answers. Errors are parsed as the SDK's `Version.exception` does: any status outside 2xx
//! is an error whose code is the body's `code`, else the HTTP status. The base URL is a
//! parameter so tests can point the client at a local fake (TWILIO.md §6).

use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde::Deserialize;

use crate::config::Secret;

/// Twilio's REST API host (`ApiBase` in the SDK).
pub const DEFAULT_BASE_URL: &str = "https://api.twilio.com";

/// How long one request may take, connect to last body byte. Twilio answers call creates and
/// updates in well under a second; 10 s rides out a slow TLS handshake or a congested path
/// without holding a call's task for long when Twilio is unreachable.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest response body read (bytes). A Call resource is about 2 KB; anything much larger is
/// not Twilio, and reading it whole would let a misbehaving endpoint exhaust memory.
pub const MAX_RESPONSE_BYTES: usize = 256 << 10;

/// How many characters of a non-JSON error body become [`RestError::Api`]'s `message`.
pub const MAX_ERROR_TEXT_CHARS: usize = 200;

/// The REST API version in every path.
const API_VERSION: &str = "2010-04-01";

/// `User-Agent` of every request (the SDK sends `twilio-python/…`).
const USER_AGENT: &str = concat!("switchboard/", env!("CARGO_PKG_VERSION"));

/// A client for one Twilio account. Cheap to clone: clones share one connection pool.
///
/// `Debug` shows the base URL and account SID, never the auth token.
#[derive(Clone)]
pub struct RestClient {
    http: reqwest::Client,
    /// `scheme://host[:port]`, no trailing slash.
    base_url: String,
    /// `AC` + 32 hex digits.
    account_sid: String,
    auth_token: Secret,
}

impl std::fmt::Debug for RestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestClient")
            .field("base_url", &self.base_url)
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"<redacted>")
            .finish()
    }
}

impl RestClient {
    /// A client for the account `account_sid` (`AC` + 32 hex digits) authenticating with
    /// `auth_token`, sending requests to `base_url`: `scheme://host[:port]` (http or https, no
    /// path, query or credentials; one trailing slash is tolerated), normally
    /// [`DEFAULT_BASE_URL`].
    ///
    /// # Errors
    /// [`RestError::InvalidBaseUrl`] for a base URL of another shape, [`RestError::InvalidSid`]
    /// for an account SID of another shape (its value is not echoed: it sits next to the token
    /// in every caller's argument list), [`RestError::Transport`] if the HTTP client cannot be
    /// built (no TLS roots).
    pub fn new(base_url: &str, account_sid: &str, auth_token: &str) -> Result<Self, RestError> {
        let base_url = validate_base_url(base_url)?;
        if !is_sid("AC", account_sid) {
            return Err(RestError::InvalidSid(
                "the account SID is not AC followed by 32 hex digits".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(REQUEST_TIMEOUT)
            // Twilio does not redirect API calls; following one would replay the POST (and
            // its credentials) somewhere else. A 3xx is reported as an error instead.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(RestError::Transport)?;
        Ok(Self {
            http,
            base_url,
            account_sid: account_sid.to_string(),
            auth_token: Secret::new(auth_token.to_string()),
        })
    }

    /// The account every request acts on (`AC…`).
    pub fn account_sid(&self) -> &str {
        &self.account_sid
    }

    /// The base URL requests go to (`scheme://host[:port]`).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Places an outbound call: `POST {base}/2010-04-01/Accounts/{AccountSid}/Calls.json`.
    /// Twilio answers 201 with the new call, normally `queued`.
    ///
    /// # Errors
    /// [`RestError::Api`] when Twilio refuses (e.g. code 21211, an invalid `To`; 20003, bad
    /// credentials), [`RestError::Transport`] when it cannot be reached within
    /// [`REQUEST_TIMEOUT`], [`RestError::Decode`] when a 2xx body is not a Call.
    pub async fn create_call(&self, call: &CreateCall) -> Result<CallResource, RestError> {
        let url = format!(
            "{}/{API_VERSION}/Accounts/{}/Calls.json",
            self.base_url, self.account_sid
        );
        let created = self.post(&url, &call.form()).await?;
        tracing::debug!(call_sid = %created.sid, status = ?created.status, "created call");
        Ok(created)
    }

    /// Changes a call: `POST {base}/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`.
    /// `call_sid` is `CA` + 32 hex digits, checked before it goes into the URL path.
    ///
    /// # Errors
    /// [`RestError::InvalidSid`] for a malformed `call_sid` (no request is sent);
    /// [`RestError::Api`] when Twilio refuses (e.g. 20404, no such call; 21220, the call is no
    /// longer in progress); otherwise as [`RestClient::create_call`].
    pub async fn update_call(
        &self,
        call_sid: &str,
        update: &UpdateCall,
    ) -> Result<CallResource, RestError> {
        if !is_sid("CA", call_sid) {
            return Err(RestError::InvalidSid(format!(
                "call SID {:?} is not CA followed by 32 hex digits",
                truncate_chars(call_sid, 64)
            )));
        }
        let url = format!(
            "{}/{API_VERSION}/Accounts/{}/Calls/{call_sid}.json",
            self.base_url, self.account_sid
        );
        let updated = self.post(&url, &update.form()).await?;
        tracing::debug!(call_sid, status = ?updated.status, "updated call");
        Ok(updated)
    }

    /// POSTs `form` to `url` with the account's credentials and parses the answer.
    async fn post(
        &self,
        url: &str,
        form: &[(&'static str, String)],
    ) -> Result<CallResource, RestError> {
        let mut response = self
            .http
            .post(url)
            .basic_auth(&self.account_sid, Some(self.auth_token.expose()))
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(encode_form(form))
            .send()
            .await
            .map_err(RestError::Transport)?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = response.chunk().await.map_err(RestError::Transport)? {
            let room = MAX_RESPONSE_BYTES - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                truncated = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        if truncated && (200..300).contains(&status) {
            return Err(RestError::Decode {
                status,
                error: format!("response body over {MAX_RESPONSE_BYTES} bytes"),
            });
        }
        parse_response(status, &body)
    }
}

/// `scheme://host[:port]` from `base_url`, or why it is not of that shape. Credentials in the
/// URL are never echoed.
fn validate_base_url(base_url: &str) -> Result<String, RestError> {
    let invalid = |why: &str| RestError::InvalidBaseUrl(why.to_string());
    let mut url = url::Url::parse(base_url).map_err(|e| invalid(&format!("not a URL: {e}")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "the base URL carries credentials; pass the auth token separately",
        ));
    }
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(&format!("{url}: not an http(s) URL with a host")));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        url.set_query(None);
        url.set_fragment(None);
        return Err(invalid(&format!(
            "{url}: want scheme://host[:port] without a path or query"
        )));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// Whether `s` is a Twilio SID of the kind `prefix` (`CA` call, `AC` account…): the prefix then
/// exactly 32 hex digits, either case.
pub fn is_sid(prefix: &str, s: &str) -> bool {
    s.strip_prefix(prefix)
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// An outbound call to place ([`RestClient::create_call`]). Unset fields are not sent, so
/// Twilio's defaults apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateCall {
    /// `To`: the number to call, E.164 (`+14155550100`), or a `sip:`/`client:` address.
    pub to: String,
    /// `From`: the caller ID, a Twilio number of the account, E.164.
    pub from: String,
    /// What the call does once answered: `Url` (+ `Method`) or `Twiml`.
    pub target: CallTarget,
    /// `StatusCallback`: the URL Twilio reports call progress to.
    pub status_callback: Option<String>,
    /// `StatusCallbackEvent`: which progress events to report (`initiated`, `ringing`,
    /// `answered`, `completed`), sent as one repeated key per event.
    pub status_callback_events: Vec<String>,
    /// `StatusCallbackMethod`: `GET` or `POST` (Twilio's default).
    pub status_callback_method: Option<String>,
    /// `Timeout`: seconds to let the call ring before giving up (Twilio's default 60).
    pub timeout_s: Option<u32>,
    /// `TimeLimit`: the most seconds the call may last (Twilio's default 4 hours).
    pub time_limit_s: Option<u32>,
}

impl CreateCall {
    /// A call from `from` to `to` doing `target`, every optional parameter unset.
    pub fn new(to: impl Into<String>, from: impl Into<String>, target: CallTarget) -> Self {
        Self {
            to: to.into(),
            from: from.into(),
            target,
            status_callback: None,
            status_callback_events: Vec::new(),
            status_callback_method: None,
            timeout_s: None,
            time_limit_s: None,
        }
    }

    /// The form body as `(key, value)` pairs in order, unset fields omitted, each status
    /// callback event its own `StatusCallbackEvent` pair.
    pub fn form(&self) -> Vec<(&'static str, String)> {
        let mut form = vec![("To", self.to.clone()), ("From", self.from.clone())];
        match &self.target {
            CallTarget::Url { url, method } => {
                form.push(("Url", url.clone()));
                if let Some(method) = method {
                    form.push(("Method", method.clone()));
                }
            }
            CallTarget::Twiml(twiml) => form.push(("Twiml", twiml.clone())),
        }
        if let Some(url) = &self.status_callback {
            form.push(("StatusCallback", url.clone()));
        }
        for event in &self.status_callback_events {
            form.push(("StatusCallbackEvent", event.clone()));
        }
        if let Some(method) = &self.status_callback_method {
            form.push(("StatusCallbackMethod", method.clone()));
        }
        if let Some(timeout) = self.timeout_s {
            form.push(("Timeout", timeout.to_string()));
        }
        if let Some(limit) = self.time_limit_s {
            form.push(("TimeLimit", limit.to_string()));
        }
        form
    }
}

/// What an outbound call does when answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallTarget {
    /// `Url`: Twilio fetches TwiML from this URL, with `Method` (Twilio's default `POST`).
    Url {
        /// The TwiML URL.
        url: String,
        /// `GET` or `POST`; `None` leaves Twilio's default.
        method: Option<String>,
    },
    /// `Twiml`: these TwiML instructions, inline (Twilio limits them to 4000 characters).
    Twiml(String),
}

/// A change to a call ([`RestClient::update_call`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateCall {
    /// `Status=completed`: hang up (a queued or ringing call is ended too).
    Complete,
    /// `Status=canceled`: end a call still queued or ringing; no effect once answered.
    Cancel,
    /// `Twiml=…`: replace what a live call is doing with these instructions (e.g. a transfer's
    /// `<Dial>`).
    Twiml(String),
    /// `Url=…`: redirect a live call to the TwiML at this URL.
    Url(String),
}

impl UpdateCall {
    /// The form body as `(key, value)` pairs.
    pub fn form(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::Complete => vec![("Status", "completed".into())],
            Self::Cancel => vec![("Status", "canceled".into())],
            Self::Twiml(twiml) => vec![("Twiml", twiml.clone())],
            Self::Url(url) => vec![("Url", url.clone())],
        }
    }
}

/// `application/x-www-form-urlencoded` encoding of `form`, repeated keys kept in order.
fn encode_form(form: &[(&'static str, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())))
        .finish()
}

/// The fields of Twilio's Call resource the gateway uses. Unknown fields are ignored (Twilio
/// adds fields without a new API version); Twilio sends `null` for the ones not known yet.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CallResource {
    /// `CA` + 32 hex digits.
    pub sid: String,
    /// The account that owns the call (`AC…`).
    pub account_sid: Option<String>,
    /// `queued`, `ringing`, `in-progress`, `completed`, `busy`, `failed`, `no-answer` or
    /// `canceled`.
    pub status: Option<String>,
    /// `inbound`, `outbound-api` (created through this API) or `outbound-dial`.
    pub direction: Option<String>,
    /// The caller, as Twilio formats it (E.164 for phone numbers).
    pub from: Option<String>,
    /// The called party, as Twilio formats it.
    pub to: Option<String>,
    /// Seconds the call lasted, as a decimal string; set once it has ended.
    pub duration: Option<String>,
    /// The call that created this one (a `<Dial>` leg's parent), if any.
    pub parent_call_sid: Option<String>,
    /// When the call was answered, RFC 2822 (`Tue, 10 Aug 2010 08:02:17 +0000`).
    pub start_time: Option<String>,
    /// When the call ended, RFC 2822.
    pub end_time: Option<String>,
    /// `human`, `machine_start`… when answering machine detection ran.
    pub answered_by: Option<String>,
    /// The resource's path, relative to the API host.
    pub uri: Option<String>,
}

/// Why a Twilio REST call failed. Never carries the auth token.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// Twilio answered with an error (any HTTP status outside 2xx).
    #[error("Twilio error {code} (HTTP {status}): {message}{}", more_info.as_ref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Api {
        /// The HTTP status.
        status: u16,
        /// Twilio's error code (<https://www.twilio.com/docs/api/errors>), or the HTTP status
        /// when the body has none, as the SDK does.
        code: i64,
        /// Twilio's `message`, or the body's first [`MAX_ERROR_TEXT_CHARS`] characters when it
        /// is not a Twilio error object, or the HTTP reason when the body is empty.
        message: String,
        /// Twilio's `more_info` link to the error's documentation.
        more_info: Option<String>,
    },
    /// Twilio could not be reached or did not answer in time (connect, TLS, timeout, reset).
    #[error("Twilio request failed: {0}")]
    Transport(#[source] reqwest::Error),
    /// Twilio answered 2xx with a body that is not a Call resource.
    #[error("Twilio answered HTTP {status} with a body that is not a call: {error}")]
    Decode {
        /// The HTTP status.
        status: u16,
        /// What was wrong with the body.
        error: String,
    },
    /// A SID of the wrong shape (not `CA`/`AC` + 32 hex digits); nothing was sent.
    #[error("invalid SID: {0}")]
    InvalidSid(String),
    /// The base URL is not `scheme://host[:port]`.
    #[error("invalid Twilio base URL: {0}")]
    InvalidBaseUrl(String),
}

impl RestError {
    /// Twilio's error code, for [`RestError::Api`].
    pub fn twilio_code(&self) -> Option<i64> {
        match self {
            Self::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The HTTP status Twilio answered, for [`RestError::Api`] and [`RestError::Decode`].
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } | Self::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The outcome of a response with HTTP `status` and `body`: a 2xx body must be a Call with a
/// `CA` SID; anything else is [`api_error`].
fn parse_response(status: u16, body: &[u8]) -> Result<CallResource, RestError> {
    if !(200..300).contains(&status) {
        return Err(api_error(status, body));
    }
    let call: CallResource = serde_json::from_slice(body).map_err(|e| RestError::Decode {
        status,
        error: e.to_string(),
    })?;
    if !is_sid("CA", &call.sid) {
        return Err(RestError::Decode {
            status,
            error: "`sid` is not a call SID".into(),
        });
    }
    Ok(call)
}

/// The error for a non-2xx answer, as the SDK's `Version.exception` builds it: `code` is the
/// body's `code`, else the HTTP status; `message` the body's `message`. Beyond the SDK, an
/// RFC 9457 body's `detail`/`title` stands in for a missing `message`, and a body that is not
/// a Twilio error object is kept (truncated) as the message so the cause is not lost.
fn api_error(status: u16, body: &[u8]) -> RestError {
    let json = serde_json::from_slice::<serde_json::Value>(body).ok();
    let object = json.as_ref().and_then(serde_json::Value::as_object);
    let field = |name: &str| {
        object
            .and_then(|o| o.get(name))
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
    };
    let code = object
        .and_then(|o| o.get("code"))
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(i64::from(status));
    let message = field("message")
        .or_else(|| field("detail"))
        .or_else(|| field("title"))
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                reqwest::StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .map_or_else(|| format!("HTTP {status}"), str::to_string)
            } else {
                truncate_chars(text, MAX_ERROR_TEXT_CHARS).to_string()
            }
        });
    RestError::Api {
        status,
        code,
        message,
        more_info: field("more_info"),
    }
}

/// The first `max` characters of `s`.
fn truncate_chars(s: &str, max: usize) -> &str {
    s.char_indices().nth(max).map_or(s, |(i, _)| &s[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: &str = "AC0123456789abcdef0123456789ABCDEF";
    const CALL: &str = "CA0123456789abcdef0123456789abcdef";

    fn pairs<'a>(form: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
        form.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    #[test]
    fn create_form_repeats_events_and_omits_unset_fields() {
        let mut call = CreateCall::new(
            "+14155550100",
            "+14155550199",
            CallTarget::Url {
                url: "https://gw.example/voice".into(),
                method: Some("POST".into()),
            },
        );
        call.status_callback = Some("https://gw.example/status".into());
        call.status_callback_events = vec!["initiated".into(), "ringing".into(), "answered".into()];
        call.time_limit_s = Some(600);
        assert_eq!(
            pairs(&call.form()),
            [
                ("To", "+14155550100"),
                ("From", "+14155550199"),
                ("Url", "https://gw.example/voice"),
                ("Method", "POST"),
                ("StatusCallback", "https://gw.example/status"),
                ("StatusCallbackEvent", "initiated"),
                ("StatusCallbackEvent", "ringing"),
                ("StatusCallbackEvent", "answered"),
                ("TimeLimit", "600"),
            ]
        );
        assert_eq!(
            encode_form(&call.form()[4..7]),
            "StatusCallback=https%3A%2F%2Fgw.example%2Fstatus\
             &StatusCallbackEvent=initiated&StatusCallbackEvent=ringing"
        );
    }

    #[test]
    fn create_form_with_only_required_fields_sends_only_them() {
        let call = CreateCall::new("+1415", "+1416", CallTarget::Twiml("<Response/>".into()));
        assert_eq!(
            pairs(&call.form()),
            [("To", "+1415"), ("From", "+1416"), ("Twiml", "<Response/>")]
        );
        assert_eq!(
            encode_form(&call.form()),
            "To=%2B1415&From=%2B1416&Twiml=%3CResponse%2F%3E"
        );
    }

    #[test]
    fn update_forms() {
        assert_eq!(
            pairs(&UpdateCall::Complete.form()),
            [("Status", "completed")]
        );
        assert_eq!(pairs(&UpdateCall::Cancel.form()), [("Status", "canceled")]);
        assert_eq!(
            pairs(&UpdateCall::Twiml("<Response><Dial>+1</Dial></Response>".into()).form()),
            [("Twiml", "<Response><Dial>+1</Dial></Response>")]
        );
        assert_eq!(
            pairs(&UpdateCall::Url("https://x/y".into()).form()),
            [("Url", "https://x/y")]
        );
    }

    #[test]
    fn sids_are_prefix_and_32_hex_digits() {
        assert!(is_sid("AC", SID));
        assert!(is_sid("CA", CALL));
        assert!(!is_sid("CA", SID), "wrong prefix");
        assert!(!is_sid("CA", &CALL[..33]), "31 digits");
        assert!(!is_sid("CA", &format!("{CALL}0")), "33 digits");
        assert!(
            !is_sid("CA", "CA0123456789abcdef0123456789abcdeg"),
            "not hex"
        );
        assert!(
            !is_sid("CA", "CA0123456789abcdef0123456789abcd/."),
            "path chars"
        );
        assert!(
            !is_sid("CA", "ca0123456789abcdef0123456789abcdef"),
            "prefix case"
        );
        assert!(
            !is_sid("CA", "CA0123456789abcdef0123456789abcdé"),
            "non-ASCII"
        );
        assert!(!is_sid("CA", ""));
    }

    #[test]
    fn new_validates_base_url_and_account_sid() {
        let ok = RestClient::new("http://127.0.0.1:8080/", SID, "tok").unwrap();
        assert_eq!(ok.base_url(), "http://127.0.0.1:8080");
        assert_eq!(ok.account_sid(), SID);
        assert_eq!(
            RestClient::new(DEFAULT_BASE_URL, SID, "t")
                .unwrap()
                .base_url(),
            DEFAULT_BASE_URL
        );
        for bad in [
            "api.twilio.com",
            "ftp://api.twilio.com",
            "https://api.twilio.com/2010-04-01",
            "https://api.twilio.com?x=1",
        ] {
            assert!(
                matches!(
                    RestClient::new(bad, SID, "t"),
                    Err(RestError::InvalidBaseUrl(_))
                ),
                "{bad}"
            );
        }
        let Err(RestError::InvalidBaseUrl(why)) =
            RestClient::new("https://AC1:hunter2@api.twilio.com", SID, "t")
        else {
            panic!("credentials in the base URL accepted");
        };
        assert!(!why.contains("hunter2"), "{why}");
        let Err(e) = RestClient::new(DEFAULT_BASE_URL, "s3cret-token-value", "AC…") else {
            panic!("bad account SID accepted");
        };
        assert!(matches!(e, RestError::InvalidSid(_)));
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }

    #[test]
    fn debug_never_prints_the_token() {
        let client = RestClient::new(DEFAULT_BASE_URL, SID, "s3cret-token-value").unwrap();
        let debug = format!("{client:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains(SID), "{debug}");
    }

    #[test]
    fn twilio_error_json_maps_code_message_and_more_info() {
        let body = br#"{"code": 21211, "message": "The 'To' number 123 is not a valid phone number.", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}"#;
        let e = parse_response(400, body).unwrap_err();
        let RestError::Api {
            status,
            code,
            message,
            more_info,
        } = &e
        else {
            panic!("{e:?}");
        };
        assert_eq!((*status, *code), (400, 21211));
        assert_eq!(message, "The 'To' number 123 is not a valid phone number.");
        assert_eq!(
            more_info.as_deref(),
            Some("https://www.twilio.com/docs/errors/21211")
        );
        assert_eq!((e.twilio_code(), e.http_status()), (Some(21211), Some(400)));
        assert!(e.to_string().contains("21211"), "{e}");
    }

    #[test]
    fn error_without_code_uses_the_http_status() {
        let e = parse_response(503, br#"{"message": "busy"}"#).unwrap_err();
        assert_eq!(e.twilio_code(), Some(503));
        assert!(matches!(&e, RestError::Api { message, more_info: None, .. } if message == "busy"));
    }

    #[test]
    fn non_json_error_body_is_kept_truncated() {
        let html = format!("<html>{}</html>", "é".repeat(500));
        let e = parse_response(502, html.as_bytes()).unwrap_err();
        let RestError::Api { code, message, .. } = &e else {
            panic!("{e:?}");
        };
        assert_eq!(*code, 502);
        assert_eq!(message.chars().count(), MAX_ERROR_TEXT_CHARS);
        assert!(message.starts_with("<html>éé"), "{message}");

        let e = parse_response(500, b"").unwrap_err();
        assert!(
            matches!(&e, RestError::Api { code: 500, message, .. } if message == "Internal Server Error"),
            "{e:?}"
        );
        let e = parse_response(302, b"").unwrap_err();
        assert_eq!(e.http_status(), Some(302), "a redirect is an error");
    }

    #[test]
    fn rfc9457_body_detail_stands_in_for_message() {
        let body = br#"{"type": "https://x/e", "title": "Bad", "status": 400, "code": 20001, "detail": "Status is invalid"}"#;
        let e = parse_response(400, body).unwrap_err();
        assert!(
            matches!(&e, RestError::Api { code: 20001, message, .. } if message == "Status is invalid"),
            "{e:?}"
        );
    }

    #[test]
    fn success_body_must_be_a_call() {
        let body = format!(
            r#"{{"sid": "{CALL}", "account_sid": "{SID}", "status": "queued", "direction": "outbound-api", "from": "+1416", "to": "+1415", "duration": null, "price": null, "subresource_uris": {{}}}}"#
        );
        let call = parse_response(201, body.as_bytes()).unwrap();
        assert_eq!(call.sid, CALL);
        assert_eq!(call.status.as_deref(), Some("queued"));
        assert_eq!(call.direction.as_deref(), Some("outbound-api"));
        assert_eq!(call.duration, None);

        for bad in [
            &b"not json"[..],
            br#"{"status": "queued"}"#,
            br#"{"sid": "CA1"}"#,
        ] {
            let e = parse_response(200, bad).unwrap_err();
            assert!(matches!(e, RestError::Decode { status: 200, .. }), "{e:?}");
        }
    }
}
