//! The OpenAI HTTP API as a Switchboard plugin reaches it: through the host's I/O, never a
//! socket of its own. Shared by the `openai-stt`, `openai-llm` and `openai-tts` plugins.
//!
//! - [`Api`] sends requests to `{base_url}{path}` with `Authorization: Bearer <api_key>` (the
//!   `api_key` secret the agent grants; without one no header is sent, for local servers such as
//!   llama.cpp's or Ollama's, which need none).
//! - [`Response`] follows one request's `http-head`, `http-chunk`s and `http-done` (or `failed`)
//!   and turns a non-2xx status into a [`PluginError`] ([`status_error`]).
//! - [`sse`] parses a `text/event-stream` body incrementally, as its chunks arrive.
//!
//! Sources: the OpenAI API reference (developers.openai.com/api/reference) for endpoints and the
//! error object `{"error": {"message", "type", "param", "code"}}`; OpenAI's error-codes guide
//! (platform.openai.com/docs/guides/error-codes) for 401/403/429/5xx; RFC 9110 §10.2.3 for
//! `Retry-After`.

#![forbid(unsafe_code)]

pub mod sse;

use switchboard_plugin_api::prelude::*;

/// OpenAI's API root; any OpenAI-compatible server's `/v1` works in its place.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// Most bytes of an error response kept for its message (OpenAI's error objects are a few
/// hundred bytes; a proxy's HTML error page is cut here).
pub const MAX_ERROR_BODY_BYTES: usize = 64 << 10;

/// Most characters of a non-JSON error body quoted in an error message.
const MAX_QUOTED_CHARS: usize = 200;

/// An OpenAI-compatible endpoint root and the key to use with it.
#[derive(Debug, Clone)]
pub struct Api {
    base_url: String,
    api_key: Option<String>,
}

impl Api {
    /// `base_url` (e.g. `https://api.openai.com/v1`, `http://127.0.0.1:8080/v1`; a trailing `/`
    /// is ignored) with the granted `api_key` secret, if any.
    ///
    /// # Errors
    /// [`PluginError::InvalidConfig`] when `base_url` is not an `http://` or `https://` URL.
    pub fn new(base_url: &str) -> Result<Self, PluginError> {
        if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
            return Err(PluginError::InvalidConfig(format!(
                "base_url {base_url:?}: expected an http:// or https:// URL"
            )));
        }
        Ok(Self {
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key: host::secret("api_key").filter(|k| !k.is_empty()),
        })
    }

    /// `{base_url}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Sends `POST {base_url}{path}` with `body` of `content_type` (plus `extra` headers); the
    /// response arrives as `io` inputs for the returned handle.
    ///
    /// # Errors
    /// The host refused the request at once: [`PluginError::InvalidConfig`] when the URL's host
    /// is not in the agent's `allowed_hosts` or the URL is malformed, [`PluginError::Internal`]
    /// past the session's request cap.
    pub fn post(
        &self,
        path: &str,
        content_type: &str,
        extra: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<IoHandle, PluginError> {
        let url = self.url(path);
        let mut headers = vec![Header {
            name: "Content-Type".into(),
            value: content_type.into(),
        }];
        if let Some(key) = &self.api_key {
            headers.push(Header {
                name: "Authorization".into(),
                value: format!("Bearer {key}"),
            });
        }
        headers.extend(extra.iter().map(|(name, value)| Header {
            name: (*name).into(),
            value: (*value).into(),
        }));
        host::http_send(&HttpRequest {
            method: "POST".into(),
            url: url.clone(),
            headers,
            body,
        })
        .map_err(|e| match e {
            IoError::Denied(m) => PluginError::InvalidConfig(format!(
                "cannot reach {url}: {m} (add the base_url host to allowed_hosts)"
            )),
            IoError::Invalid(m) => PluginError::InvalidConfig(format!("cannot send to {url}: {m}")),
            IoError::Limit(m) => PluginError::Internal(format!("cannot send to {url}: {m}")),
        })
    }
}

/// The request an I/O event belongs to; `None` for WebSocket and timer events.
pub fn request_of(event: &IoEvent) -> Option<IoHandle> {
    match event {
        IoEvent::HttpHead(head) => Some(head.request),
        IoEvent::HttpChunk(chunk) => Some(chunk.request),
        IoEvent::HttpDone(id) => Some(*id),
        IoEvent::Failed(failed) => Some(failed.target),
        _ => None,
    }
}

/// What one event did to a [`Response`] with a 2xx status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Nothing for the caller (the head arrived, or an error body is being gathered).
    Nothing,
    /// More of the body, as it arrived.
    Data(Vec<u8>),
    /// The body is complete.
    Done,
}

/// One request's response as it streams back.
#[derive(Debug, Clone)]
pub struct Response {
    /// The request's handle.
    pub id: IoHandle,
    /// What was asked, for error messages (e.g. `OpenAI transcription`).
    what: &'static str,
    status: Option<u16>,
    /// `Retry-After` (seconds) of a non-2xx response.
    retry_after: Option<u32>,
    /// The body of a non-2xx response, up to [`MAX_ERROR_BODY_BYTES`].
    error_body: Vec<u8>,
}

impl Response {
    /// Follows request `id`; `what` names it in errors.
    pub fn new(id: IoHandle, what: &'static str) -> Self {
        Self {
            id,
            what,
            status: None,
            retry_after: None,
            error_body: Vec::new(),
        }
    }

    /// The HTTP status, once the head arrived.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// Feeds one event of this request (see [`request_of`]).
    ///
    /// # Errors
    /// At `http-done` of a non-2xx response, its [`status_error`]; on `failed` (connect refused,
    /// reset, a body cut short), or a body or end without a head,
    /// [`PluginError::Upstream`].
    pub fn on_event(&mut self, event: IoEvent) -> Result<Progress, PluginError> {
        let what = self.what;
        match event {
            IoEvent::HttpHead(head) => {
                self.status = Some(head.status);
                if !(200..300).contains(&head.status) {
                    self.retry_after = head
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("retry-after"))
                        .and_then(|h| retry_after_seconds(&h.value));
                }
                Ok(Progress::Nothing)
            }
            IoEvent::HttpChunk(chunk) => match self.status {
                Some(200..=299) => Ok(Progress::Data(chunk.data)),
                Some(_) => {
                    let room = MAX_ERROR_BODY_BYTES.saturating_sub(self.error_body.len());
                    let take = chunk.data.len().min(room);
                    self.error_body.extend_from_slice(&chunk.data[..take]);
                    Ok(Progress::Nothing)
                }
                None => Err(PluginError::Upstream(format!(
                    "{what}: response body before its status line"
                ))),
            },
            IoEvent::HttpDone(_) => match self.status {
                Some(200..=299) => Ok(Progress::Done),
                Some(status) => Err(status_error(
                    what,
                    status,
                    self.retry_after,
                    &self.error_body,
                )),
                None => Err(PluginError::Upstream(format!(
                    "{what}: response ended without a status line"
                ))),
            },
            IoEvent::Failed(failed) => Err(PluginError::Upstream(format!(
                "{what} failed: {}",
                failed.error
            ))),
            _ => Ok(Progress::Nothing),
        }
    }
}

/// Seconds from a `Retry-After` value: delay-seconds (RFC 9110 §10.2.3; a fraction, as some
/// servers send, rounds up). An HTTP-date gives `None` (the plugin has no calendar to spare).
pub fn retry_after_seconds(value: &str) -> Option<u32> {
    let seconds: f64 = value.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| seconds.ceil().min(f64::from(u32::MAX)) as u32)
}

/// `error.message` of an OpenAI error object (`{"error": {"message": …}}`), or of the bare
/// `{"message": …}` some compatible servers send.
pub fn error_message(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let error = value.get("error").unwrap_or(&value);
    match error {
        serde_json::Value::String(s) => Some(s.clone()),
        _ => error
            .get("message")
            .and_then(|m| m.as_str())
            .map(str::to_string),
    }
}

/// The [`PluginError`] for a non-2xx response to `what`, per OpenAI's error codes: 401 (bad
/// key) and 403 (region or permission) → [`PluginError::Unauthorized`]; 429 (rate or quota
/// limit) → [`PluginError::RateLimited`] with `retry_after` seconds (its message goes to the
/// log, since the variant carries none); anything else → [`PluginError::Upstream`]. Messages
/// quote `error.message`, or the start of a body that is not an error object.
pub fn status_error(what: &str, status: u16, retry_after: Option<u32>, body: &[u8]) -> PluginError {
    let message = error_message(body).unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        if text.is_empty() {
            "(no body)".to_string()
        } else {
            text.chars().take(MAX_QUOTED_CHARS).collect()
        }
    });
    let message = format!("{what}: HTTP {status}: {message}");
    match status {
        401 | 403 => PluginError::Unauthorized(message),
        429 => {
            host::log(LogLevel::Warn, &message);
            PluginError::RateLimited(retry_after)
        }
        _ => PluginError::Upstream(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(status: u16, headers: &[(&str, &str)]) -> IoEvent {
        IoEvent::HttpHead(HttpHead {
            request: 7,
            status,
            headers: headers
                .iter()
                .map(|(n, v)| Header {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
        })
    }

    fn chunk(data: &[u8]) -> IoEvent {
        IoEvent::HttpChunk(HttpChunk {
            request: 7,
            data: data.to_vec(),
        })
    }

    #[test]
    fn a_2xx_body_streams_through() {
        let mut r = Response::new(7, "test");
        assert_eq!(r.on_event(head(200, &[])), Ok(Progress::Nothing));
        assert_eq!(r.on_event(chunk(b"ab")), Ok(Progress::Data(b"ab".to_vec())));
        assert_eq!(r.on_event(IoEvent::HttpDone(7)), Ok(Progress::Done));
    }

    #[test]
    fn statuses_map_to_plugin_errors_with_the_api_message() {
        let body = br#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}"#;
        let mut r = Response::new(7, "test");
        r.on_event(head(401, &[])).unwrap();
        r.on_event(chunk(&body[..10])).unwrap();
        r.on_event(chunk(&body[10..])).unwrap();
        assert_eq!(
            r.on_event(IoEvent::HttpDone(7)),
            Err(PluginError::Unauthorized(
                "test: HTTP 401: Incorrect API key provided".into()
            ))
        );

        let mut r = Response::new(7, "test");
        r.on_event(head(429, &[("Retry-After", "2")])).unwrap();
        assert_eq!(
            r.on_event(IoEvent::HttpDone(7)),
            Err(PluginError::RateLimited(Some(2)))
        );

        assert_eq!(
            status_error("test", 502, None, b"<html>bad gateway</html>"),
            PluginError::Upstream("test: HTTP 502: <html>bad gateway</html>".into())
        );
        assert_eq!(
            status_error("test", 500, None, b""),
            PluginError::Upstream("test: HTTP 500: (no body)".into())
        );
        assert_eq!(
            status_error("test", 403, None, br#"{"error":"forbidden"}"#),
            PluginError::Unauthorized("test: HTTP 403: forbidden".into())
        );
    }

    #[test]
    fn failures_and_bodies_without_a_head_are_upstream_errors() {
        let mut r = Response::new(7, "test");
        assert!(matches!(
            r.on_event(chunk(b"x")),
            Err(PluginError::Upstream(_))
        ));
        assert!(matches!(
            r.on_event(IoEvent::HttpDone(7)),
            Err(PluginError::Upstream(_))
        ));
        let failed = IoEvent::Failed(IoFailed {
            target: 7,
            error: "connection reset".into(),
        });
        assert_eq!(request_of(&failed), Some(7));
        assert_eq!(
            r.on_event(failed),
            Err(PluginError::Upstream(
                "test failed: connection reset".into()
            ))
        );
    }

    #[test]
    fn retry_after_takes_seconds_and_ignores_dates() {
        assert_eq!(retry_after_seconds("20"), Some(20));
        assert_eq!(retry_after_seconds(" 1.2 "), Some(2));
        assert_eq!(retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(retry_after_seconds("-1"), None);
    }

    #[test]
    fn error_bodies_are_capped() {
        let mut r = Response::new(7, "test");
        r.on_event(head(500, &[])).unwrap();
        for _ in 0..100 {
            r.on_event(chunk(&[b'x'; 4096])).unwrap();
        }
        assert_eq!(r.error_body.len(), MAX_ERROR_BODY_BYTES);
    }
}
