//! Refusing Twilio requests that Twilio did not sign: the check every Twilio-facing route (voice
//! webhook, status callback, Media Streams upgrade) runs before it does anything else.
//!
//! The URL Twilio signed is rebuilt from `server.public_url` (the gateway usually sits behind a
//! tunnel or a proxy, so the request's own Host may not be what Twilio called), else from the
//! request's `Host` and `X-Forwarded-Proto`, plus the request's path and query string exactly
//! as received. The token is the one of the request's account (`[twilio.accounts]`), else the
//! global `twilio.auth_token`. Rules: [`crate::twilio::signature`].

use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::config::Config;
use crate::twilio::signature::{self, Algorithm, Body, SignatureError};
use crate::twilio::webhook;

/// Which URL scheme Twilio used for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `http(s)://`: webhooks and status callbacks.
    Http,
    /// `ws(s)://`: the Media Streams upgrade.
    WebSocket,
}

/// Requests refused for their signature since start.
#[derive(Debug, Default)]
pub struct SignatureCounters {
    /// Refused: missing, wrong or unverifiable signature.
    pub rejected: AtomicU64,
    /// Accepted with a valid signature.
    pub accepted: AtomicU64,
}

/// Why a request could not be verified, beyond the signature itself.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("no auth token configured for this account; set [twilio] auth_token")]
    NoToken,
    #[error("no public_url configured and no usable Host header")]
    NoUrl,
}

/// Checks the request's `X-Twilio-Signature`. `Ok` when it is valid, or when
/// `twilio.validate_signatures` is off; otherwise a 403 to send back, logged (without secrets)
/// and counted.
#[allow(clippy::result_large_err)] // the error is the response itself, built once per refusal
pub fn check(
    config: &Config,
    counters: &SignatureCounters,
    headers: &HeaderMap,
    uri: &Uri,
    scheme: Scheme,
    body: Body<'_>,
    account: Option<&str>,
) -> Result<(), Response> {
    if !config.twilio.validate_signatures {
        return Ok(());
    }
    let url = signed_url(config, headers, uri, scheme);
    let result = verify(config, headers, url.as_deref(), body, account);
    match result {
        Ok(()) => {
            counters.accepted.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(crate::metrics::SIGNATURES, "result" => "accepted").increment(1);
            Ok(())
        }
        Err(refusal) => {
            counters.rejected.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(crate::metrics::SIGNATURES, "result" => "rejected").increment(1);
            tracing::warn!(
                path = %uri.path(),
                url = url.as_deref().unwrap_or("?"),
                account = account.unwrap_or("-"),
                reason = %refusal,
                "Twilio request refused: bad signature"
            );
            Err((StatusCode::FORBIDDEN, "invalid Twilio signature\n").into_response())
        }
    }
}

fn verify(
    config: &Config,
    headers: &HeaderMap,
    url: Option<&str>,
    body: Body<'_>,
    account: Option<&str>,
) -> Result<(), Refusal> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let token = config.twilio.token_for(account).ok_or(Refusal::NoToken)?;
    let url = url.ok_or(Refusal::NoUrl)?;
    let signature = header(signature::SIGNATURE_HEADER).ok_or(SignatureError::Missing)?;
    let algorithm = Algorithm::from_settings(header(signature::SETTINGS_HEADER))?;
    signature::validate(token, url, body, signature, algorithm)?;
    Ok(())
}

/// The URL Twilio requested: public base (with `ws`/`wss` for the upgrade) + path + query.
pub fn signed_url(
    config: &Config,
    headers: &HeaderMap,
    uri: &Uri,
    scheme: Scheme,
) -> Option<String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let base = webhook::public_base(
        config.server.public_url.as_deref(),
        header("host"),
        header("x-forwarded-proto"),
    )?;
    let base = match scheme {
        Scheme::Http => base,
        Scheme::WebSocket => webhook::ws_base(&base),
    };
    let path_and_query = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    Some(format!("{base}{path_and_query}"))
}
