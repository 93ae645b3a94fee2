//! A receiver of signed callbacks, as an operator's service would run one: a real HTTP server on
//! loopback that checks each delivery's Standard Webhooks signature itself (HMAC-SHA256 over
//! `{webhook-id}.{webhook-timestamp}.{body}`, written here from the specification, not with the
//! gateway's code), refuses the first deliveries with 500 (to make the gateway retry), and
//! keeps every delivery it saw. [`HungReceiver`] is the other kind of receiver: one that takes
//! the connection and never answers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};

/// One delivery the receiver saw.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `webhook-id`.
    pub id: String,
    /// `webhook-timestamp` (unix seconds).
    pub timestamp: i64,
    /// The signature matched one of `webhook-signature`'s `v1,` entries.
    pub signature_valid: bool,
    /// The body, parsed.
    pub body: serde_json::Value,
    /// The receiver answered 2xx.
    pub accepted: bool,
}

#[derive(Clone)]
struct Shared {
    key: Arc<Vec<u8>>,
    /// Deliveries to refuse (500) before accepting.
    refuse: Arc<Mutex<u32>>,
    seen: Arc<Mutex<Vec<Delivery>>>,
}

/// The running receiver; it stops when dropped.
pub struct CallbackReceiver {
    /// `http://127.0.0.1:PORT/hook`.
    pub url: String,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CallbackReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CallbackReceiver {
    /// Starts a receiver on `addr` (`127.0.0.1:0` for any port) verifying with `secret`
    /// (`whsec_…`), refusing the first `refuse` deliveries.
    ///
    /// # Errors
    /// The secret is not `whsec_<base64>`, or the port could not be bound.
    pub async fn start_on(addr: SocketAddr, secret: &str, refuse: u32) -> anyhow::Result<Self> {
        let encoded = secret
            .strip_prefix("whsec_")
            .ok_or_else(|| anyhow::anyhow!("not a whsec_ secret"))?;
        let shared = Shared {
            key: Arc::new(BASE64.decode(encoded)?),
            refuse: Arc::new(Mutex::new(refuse)),
            seen: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let app = axum::Router::new()
            .route("/hook", post(receive))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, shared, task })
    }

    /// [`CallbackReceiver::start_on`] on any loopback port.
    ///
    /// # Errors
    /// As [`CallbackReceiver::start_on`].
    pub async fn start(secret: &str, refuse: u32) -> anyhow::Result<Self> {
        Self::start_on(([127, 0, 0, 1], 0).into(), secret, refuse).await
    }

    /// Every delivery so far, in order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits (up to `timeout`) until the deliveries so far satisfy `done`; returns them.
    ///
    /// # Errors
    /// They did not in time.
    pub async fn wait_until(
        &self,
        timeout: std::time::Duration,
        done: impl Fn(&[Delivery]) -> bool,
    ) -> anyhow::Result<Vec<Delivery>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let seen = self.deliveries();
            if done(&seen) {
                return Ok(seen);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "not there within {timeout:?}; saw {seen:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Waits (up to `timeout`) until a delivery has been accepted.
    ///
    /// # Errors
    /// None was accepted in time.
    pub async fn accepted(&self, timeout: std::time::Duration) -> anyhow::Result<Delivery> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(d) = self.deliveries().into_iter().find(|d| d.accepted) {
                return Ok(d);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "no delivery accepted within {timeout:?}; saw {:?}",
                self.deliveries()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

async fn receive(State(shared): State<Shared>, headers: HeaderMap, body: String) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let id = header("webhook-id");
    let timestamp = header("webhook-timestamp");
    let signed = format!("{id}.{timestamp}.{body}");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&shared.key).expect("any key length");
    mac.update(signed.as_bytes());
    let expected = BASE64.encode(mac.finalize().into_bytes());
    let signature_valid = header("webhook-signature")
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|s| s == expected);
    let accepted = {
        let mut refuse = shared.refuse.lock().unwrap_or_else(|p| p.into_inner());
        if *refuse > 0 {
            *refuse -= 1;
            false
        } else {
            signature_valid
        }
    };
    shared
        .seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Delivery {
            id,
            timestamp: timestamp.parse().unwrap_or_default(),
            signature_valid,
            body: serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
            accepted,
        });
    if accepted {
        StatusCode::NO_CONTENT
    } else if signature_valid {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::UNAUTHORIZED
    }
}

/// A receiver that hangs: it accepts every connection on loopback, holds it open, and never reads
/// or answers a byte — a stuck service behind a load balancer. It stops when dropped.
pub struct HungReceiver {
    /// `http://127.0.0.1:PORT/hook`.
    pub url: String,
    accepted: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HungReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HungReceiver {
    /// Starts one on any loopback port.
    ///
    /// # Errors
    /// The port could not be bound.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let accepted: Arc<Mutex<usize>> = Arc::default();
        let counted = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            // Held, never read: the sender's request sits unanswered until it gives up.
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
                *counted.lock().unwrap_or_else(|p| p.into_inner()) += 1;
            }
        });
        Ok(Self {
            url,
            accepted,
            task,
        })
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        *self.accepted.lock().unwrap_or_else(|p| p.into_inner())
    }
}
