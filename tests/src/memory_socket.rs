//! An in-memory Media Streams socket: the call loop (`switchboard::call::run`) driven by a
//! scripted Twilio peer over channels, with no TCP, no WebSocket framing and — under paused tokio
//! time — no wall-clock waits.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::ws::Message;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use tokio::sync::mpsc;

/// Messages the peer may queue for the gateway before `send` waits.
const PEER_QUEUE: usize = 1024;

/// The gateway's end: what `switchboard::call::run` reads and writes.
pub struct MemorySocket {
    inbound: mpsc::Receiver<Result<Message, axum::Error>>,
    outbound: mpsc::UnboundedSender<Message>,
}

/// Twilio's end, scripted by a test.
pub struct Peer {
    to_gateway: Option<mpsc::Sender<Result<Message, axum::Error>>>,
    from_gateway: mpsc::UnboundedReceiver<Message>,
}

/// A connected pair.
pub fn pair() -> (MemorySocket, Peer) {
    let (to_gateway, inbound) = mpsc::channel(PEER_QUEUE);
    let (outbound, from_gateway) = mpsc::unbounded_channel();
    (
        MemorySocket { inbound, outbound },
        Peer {
            to_gateway: Some(to_gateway),
            from_gateway,
        },
    )
}

impl futures_util::Stream for MemorySocket {
    type Item = Result<Message, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inbound.poll_recv(cx)
    }
}

impl futures_util::Sink<Message> for MemorySocket {
    type Error = axum::Error;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        // A peer that went away loses what is sent, as a closed TCP socket would.
        let _ = self.outbound.send(item);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
}

impl Peer {
    /// Sends one JSON message as a text frame.
    ///
    /// # Errors
    /// The gateway's end is gone (or [`Peer::close`] was called).
    pub async fn send(&self, msg: serde_json::Value) -> anyhow::Result<()> {
        self.raw(Ok(Message::Text(msg.to_string().into()))).await
    }

    /// Sends what the socket would yield: a message or a socket error.
    ///
    /// # Errors
    /// The gateway's end is gone.
    pub async fn raw(&self, item: Result<Message, axum::Error>) -> anyhow::Result<()> {
        let tx = self
            .to_gateway
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("closed"))?;
        tx.send(item)
            .await
            .map_err(|_| anyhow::anyhow!("the gateway's end is gone"))
    }

    /// Ends the stream, as a socket closed without a close frame.
    pub fn close(&mut self) {
        self.to_gateway = None;
    }

    /// The next message the gateway sent, as JSON (`{"close": true}` for a close frame); `None`
    /// when the gateway's end is gone.
    pub async fn next(&mut self) -> Option<serde_json::Value> {
        loop {
            match self.from_gateway.recv().await? {
                Message::Text(t) => return serde_json::from_str(t.as_str()).ok(),
                Message::Close(_) => return Some(serde_json::json!({"close": true})),
                _ => {}
            }
        }
    }

    /// The next message the gateway has already sent, without waiting: JSON as [`Peer::next`]
    /// gives it, or `{"invalid": TEXT}` for a text frame that is not JSON; `None` when nothing
    /// is queued.
    pub fn try_next(&mut self) -> Option<serde_json::Value> {
        loop {
            match self.from_gateway.try_recv().ok()? {
                Message::Text(t) => {
                    return Some(
                        serde_json::from_str(t.as_str())
                            .unwrap_or_else(|_| serde_json::json!({"invalid": t.as_str()})),
                    );
                }
                Message::Close(_) => return Some(serde_json::json!({"close": true})),
                _ => {}
            }
        }
    }

    /// Reads until an event named `event` arrives, echoing every mark as Twilio does once its
    /// audio has played; returns it.
    pub async fn until(&mut self, event: &str, stream_sid: &str) -> Option<serde_json::Value> {
        loop {
            let msg = self.next().await?;
            if msg["event"] == event || (event == "close" && msg["close"] == true) {
                return Some(msg);
            }
            if msg["event"] == "mark" {
                let _ = self
                    .send(mark(stream_sid, msg["mark"]["name"].as_str()?))
                    .await;
            }
        }
    }
}

/// `start` for `stream_sid` with `customParameters`.
pub fn start(stream_sid: &str, params: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"event": "start", "sequenceNumber": "1", "streamSid": stream_sid, "start": {
        "accountSid": "AC1", "streamSid": stream_sid, "callSid": format!("CA{stream_sid}"),
        "tracks": ["inbound"], "customParameters": params,
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})
}

/// `media` chunk `chunk` of 160 bytes of `byte`.
pub fn media(stream_sid: &str, chunk: u64, byte: u8) -> serde_json::Value {
    serde_json::json!({"event": "media", "sequenceNumber": (chunk + 1).to_string(),
        "streamSid": stream_sid, "media": {"track": "inbound", "chunk": chunk.to_string(),
        "timestamp": (chunk * 20).to_string(), "payload": BASE64.encode([byte; 160])}})
}

/// `media` chunk `chunk` carrying `payload` (any length).
pub fn media_payload(stream_sid: &str, chunk: u64, payload: &[u8]) -> serde_json::Value {
    serde_json::json!({"event": "media", "sequenceNumber": (chunk + 1).to_string(),
        "streamSid": stream_sid, "media": {"track": "inbound", "chunk": chunk.to_string(),
        "timestamp": (chunk * 20).to_string(), "payload": BASE64.encode(payload)}})
}

/// A mark echo.
pub fn mark(stream_sid: &str, name: &str) -> serde_json::Value {
    serde_json::json!({"event": "mark", "sequenceNumber": "7", "streamSid": stream_sid,
        "mark": {"name": name}})
}

/// A DTMF digit.
pub fn dtmf(stream_sid: &str, digit: &str) -> serde_json::Value {
    serde_json::json!({"event": "dtmf", "sequenceNumber": "3", "streamSid": stream_sid,
        "dtmf": {"track": "inbound_track", "digit": digit}})
}

/// `stop`.
pub fn stop(stream_sid: &str) -> serde_json::Value {
    serde_json::json!({"event": "stop", "sequenceNumber": "99", "streamSid": stream_sid,
        "stop": {"accountSid": "AC1", "callSid": format!("CA{stream_sid}")}})
}
