//! An agent's event webhooks in agents.toml: where its calls' live events
//! ([`crate::events`]) are POSTed, signed by the Standard Webhooks scheme, and which of them.
//! The raw shape and its validation; [`crate::events::webhooks`] delivers them.
//!
//! ```toml
//! [[agents]]
//! name = "front-desk"
//!
//! [agents.events]
//! url = "https://crm.example.com/switchboard/events"   # http(s); "" (e.g. an unset
//!                                                       # ${VAR:-}) turns them off
//! secret = "${FRONT_DESK_EVENTS_SECRET}"                # whsec_…; default [api] callback_secret
//! types = ["call.started", "caller.transcript", "agent.text", "call.ended"]  # all when absent
//! ```

use std::collections::BTreeSet;

use serde::Deserialize;
use toml::Spanned;

use super::error::ConfigErrorKind;
use super::span::KeyPath;
use super::validate::Validator;
use crate::callbacks::WebhookSecret;

/// An agent's `events` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgentEvents {
    /// `url`: where each event is POSTed; `""` turns the webhooks off.
    pub url: Spanned<String>,
    /// `secret`: the Standard Webhooks secret (`whsec_…`) that signs them; `[api]
    /// callback_secret` when absent or empty.
    #[serde(default)]
    pub secret: Option<Spanned<String>>,
    /// `types`: the event types sent ([`crate::events::TYPES`]); all when absent.
    #[serde(default)]
    pub types: Option<Vec<Spanned<String>>>,
}

impl std::fmt::Debug for RawAgentEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawAgentEvents")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("types", &self.types)
            .finish()
    }
}

/// An agent's event webhooks, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentEvents {
    /// Where each event is POSTed: `http` or `https`, with a host and no credentials.
    pub url: reqwest::Url,
    /// Signs each delivery (the agent's `secret`, else `[api] callback_secret`).
    pub secret: WebhookSecret,
    /// The event types sent, as in [`crate::events::TYPES`]; `None`: all of them.
    pub types: Option<BTreeSet<&'static str>>,
}

impl AgentEvents {
    /// Whether events of type `kind` (an event's `type`) go to the webhook.
    pub fn wants(&self, kind: &str) -> bool {
        self.types.as_ref().is_none_or(|types| types.contains(kind))
    }
}

impl Validator<'_> {
    /// Validates agent `agent`'s `events` table (at `path`); `default_secret` is `[api]
    /// callback_secret`. `None` when the URL is empty or something is wrong (reported).
    pub(super) fn agent_events(
        &mut self,
        raw: RawAgentEvents,
        path: &KeyPath,
        agent: &str,
        default_secret: Option<&WebhookSecret>,
    ) -> Option<AgentEvents> {
        let url_span = raw.url.span();
        let url_text = raw.url.into_inner();
        let url = if url_text.is_empty() {
            None
        } else {
            match check_webhook_url(&url_text) {
                Ok(url) => Some(url),
                Err(reason) => {
                    self.err(
                        Some(url_span.clone()),
                        &path.key("url"),
                        ConfigErrorKind::InvalidUrl {
                            // Credentials are never shown.
                            value: if url_text.contains('@') {
                                "…".into()
                            } else {
                                url_text
                            },
                            reason,
                        },
                    );
                    None
                }
            }
        };
        let mut types = None;
        if let Some(raw_types) = raw.types {
            let mut wanted = BTreeSet::new();
            for (i, name) in raw_types.into_iter().enumerate() {
                let span = name.span();
                let name = name.into_inner();
                match crate::events::TYPES.iter().find(|t| **t == name) {
                    Some(known) => {
                        wanted.insert(*known);
                    }
                    None => self.err(
                        Some(span),
                        &path.key("types").index(i),
                        ConfigErrorKind::UnknownEventType {
                            name,
                            // All of them: a dozen short names.
                            known: format!("known: {}", crate::events::TYPES.join(", ")),
                        },
                    ),
                }
            }
            types = Some(wanted);
        }
        let own_secret = match raw.secret {
            Some(secret) if !secret.get_ref().is_empty() => {
                let span = secret.span();
                match WebhookSecret::parse(secret.get_ref()) {
                    Ok(secret) => Some(secret),
                    Err(reason) => {
                        self.err(
                            Some(span),
                            &path.key("secret"),
                            ConfigErrorKind::InvalidWebhookSecret(reason),
                        );
                        // Reported; not "no secret" as well.
                        return None;
                    }
                }
            }
            _ => None,
        };
        let url = url?;
        let Some(secret) = own_secret.or_else(|| default_secret.cloned()) else {
            self.err(
                Some(url_span),
                path,
                ConfigErrorKind::NoEventsSecret {
                    agent: agent.to_owned(),
                },
            );
            return None;
        };
        Some(AgentEvents { url, secret, types })
    }
}

/// Parses an event webhook URL: `http(s)://host[:port][/path][?query]`, no credentials (the
/// signature authenticates the sender; a password in the URL would end up in logs).
fn check_webhook_url(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must start with http:// or https://".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials (the signature authenticates the sender)".into());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls() {
        for good in [
            "https://crm.example.com/hooks/switchboard?tenant=4",
            "http://127.0.0.1:9000/hook",
            "HTTPS://[::1]/x",
        ] {
            assert!(check_webhook_url(good).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("crm.example.com/hook", "not a URL"),
            ("ftp://crm.example.com/hook", "http://"),
            ("file:///etc/passwd", "http://"),
            ("https://user:pw@crm.example.com/", "credentials"),
            ("https://:443/", "not a URL"),
        ] {
            let e = check_webhook_url(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
