//! Signed callbacks: the record of an outbound call placed with a `callback_url`, POSTed to that
//! URL when the call ends, signed by the **Standard Webhooks** scheme
//! (<https://www.standardwebhooks.com/>, `webhook-id`, `webhook-timestamp`, `webhook-signature`)
//! so receivers verify it with an off-the-shelf library, and retried with exponential backoff
//! from the persisted outbox ([`crate::records::outbox`]) until the receiver answers 2xx.
//! Delivery is at least once; the `webhook-id` is the same on every attempt, for deduplication.
//!
//! One [`Deliverer`] task per gateway: it wakes when a message is due (at least every
//! [`POLL_INTERVAL`]), sends what is due one message at a time, and records each attempt.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::records::{Attempt, PendingCallback, Records};

/// The prefix of a Standard Webhooks secret: `whsec_` then the key in base64.
pub const SECRET_PREFIX: &str = "whsec_";

/// Shortest key accepted (bytes, after base64): 128 bits. Standard Webhooks generates 24 to 64.
pub const MIN_KEY_BYTES: usize = 16;

/// Attempts before a message is given up (logged as an error and kept in the outbox as failed):
/// with [`backoff`], about a day and a half of trying.
pub const MAX_ATTEMPTS: u32 = 40;

/// Longest wait for a receiver's answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest the deliverer sleeps between looks at the outbox (a message queued by a call that
/// just ended is seen within this).
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Messages sent per look at the outbox.
const BATCH: u32 = 32;

/// A Standard Webhooks signing key.
#[derive(Clone)]
pub struct WebhookSecret {
    key: Vec<u8>,
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(…)")
    }
}

impl PartialEq for WebhookSecret {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for WebhookSecret {}

impl WebhookSecret {
    /// Parses `whsec_<base64 key>`.
    ///
    /// # Errors
    /// What is wrong with it (no prefix, not base64, key under [`MIN_KEY_BYTES`]); the message
    /// never contains the secret.
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some(encoded) = text.strip_prefix(SECRET_PREFIX) else {
            return Err(format!(
                "a Standard Webhooks secret starts with {SECRET_PREFIX} (then the key in base64)"
            ));
        };
        let key = BASE64
            .decode(encoded)
            .map_err(|e| format!("the key after {SECRET_PREFIX} is not base64: {e}"))?;
        if key.len() < MIN_KEY_BYTES {
            return Err(format!(
                "the key is {} bytes; at least {MIN_KEY_BYTES} are needed",
                key.len()
            ));
        }
        Ok(Self { key })
    }

    /// The `webhook-signature` header of message `id` sent at `timestamp` (unix seconds) with
    /// `body`: `v1,` then the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &str) -> String {
        // HMAC takes a key of any length.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            unreachable!("HMAC accepts keys of any length")
        };
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body.as_bytes());
        format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
    }
}

/// How long to wait after failed attempt number `attempts` (1-based): 1 s, 2 s, 4 s, … doubling
/// up to an hour.
pub fn backoff(attempts: u32) -> Duration {
    let exponent = attempts.saturating_sub(1).min(12);
    Duration::from_secs(1u64 << exponent).min(Duration::from_secs(3600))
}

/// Delivers the outbox's messages; see the module docs.
pub struct Deliverer {
    records: Records,
    client: reqwest::Client,
    /// The current signing secret (it may change on reload); `None`: messages wait.
    secret: Box<dyn Fn() -> Option<WebhookSecret> + Send + Sync>,
}

impl Deliverer {
    /// A deliverer for `records`, signing with whatever `secret()` returns at each attempt.
    ///
    /// # Errors
    /// The HTTP client could not be built (no TLS roots).
    pub fn new(
        records: Records,
        secret: impl Fn() -> Option<WebhookSecret> + Send + Sync + 'static,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            records,
            client,
            secret: Box::new(secret),
        })
    }

    /// Delivers until the records store closes.
    pub async fn run(self) {
        loop {
            let (due, next) = match self.records.due_callbacks(BATCH).await {
                Ok(d) => d,
                Err(crate::records::RecordsError::Closed) => return,
                Err(e) => {
                    tracing::error!(error = %e, "callback outbox unreadable");
                    (Vec::new(), None)
                }
            };
            let full = due.len() == BATCH as usize;
            for message in due {
                let attempt = self.attempt(&message).await;
                if let Err(e) = self.records.callback_attempted(&message.id, attempt).await {
                    tracing::error!(error = %e, id = %message.id, "callback attempt not recorded");
                }
            }
            if full {
                continue;
            }
            let wait = next.map_or(POLL_INTERVAL, |at| {
                let ms = at.saturating_sub(crate::records::now_ms());
                Duration::from_millis(u64::try_from(ms).unwrap_or(0)).min(POLL_INTERVAL)
            });
            tokio::time::sleep(wait).await;
        }
    }

    /// One attempt at `message`.
    async fn attempt(&self, message: &PendingCallback) -> Attempt {
        let attempts = message.attempts + 1;
        let failed = |error: String| {
            if attempts >= MAX_ATTEMPTS {
                tracing::error!(id = %message.id, call_sid = %message.call_sid, attempts, %error, "callback given up");
                crate::metrics::callback_attempt("gave_up");
                Attempt::GaveUp { error }
            } else {
                let wait = backoff(attempts);
                tracing::warn!(id = %message.id, call_sid = %message.call_sid, attempts, %error, retry_in_ms = wait.as_millis() as u64, "callback not delivered; will retry");
                crate::metrics::callback_attempt("retry");
                Attempt::Retry {
                    at_ms: crate::records::now_ms()
                        + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX),
                    error,
                }
            }
        };
        let Some(secret) = (self.secret)() else {
            return failed("no [api] callback_secret is configured to sign it".into());
        };
        let timestamp = crate::records::now_ms() / 1000;
        let signature = secret.sign(&message.id, timestamp, &message.body);
        let sent = self
            .client
            .post(&message.url)
            .header("content-type", "application/json")
            .header("webhook-id", &message.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(message.body.clone())
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                tracing::info!(id = %message.id, call_sid = %message.call_sid, attempts, "callback delivered");
                crate::metrics::callback_attempt("delivered");
                Attempt::Delivered
            }
            Ok(response) => failed(format!("the receiver answered {}", response.status())),
            Err(e) => failed(format!("request failed: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification (and of its reference libraries'
    /// tests): this secret, id, timestamp and body sign to this value.
    #[test]
    fn signs_as_the_standard_webhooks_example() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            secret.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                r#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn bad_secrets_say_why_without_showing_them() {
        for (text, why) in [
            ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "starts with whsec_"),
            ("whsec_not base64!", "not base64"),
            ("whsec_c2hvcnQ=", "at least 16"),
        ] {
            let e = WebhookSecret::parse(text).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
            assert!(
                !e.contains(&text[text.len().min(6)..]) || text.len() <= 6,
                "{e}"
            );
        }
    }

    #[test]
    fn backoff_doubles_to_an_hour() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(20), Duration::from_secs(3600));
        let total: Duration = (1..MAX_ATTEMPTS).map(backoff).sum();
        assert!(total > Duration::from_secs(24 * 3600), "{total:?}");
    }
}
