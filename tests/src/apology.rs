//! Hearing the host's apology on a real Media Streams WebSocket, as Twilio plays it: the `clear`
//! that cuts the agent off, the apology's audio, then its mark (`switchboard:apology`), echoed
//! once played, after which the gateway ends the call.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// A client Media Streams socket on loopback.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The mark the host puts after its apology.
pub const APOLOGY_MARK: &str = "switchboard:apology";

/// Reads until the apology's mark of stream `sid` (after a `clear`), echoes it, and returns how
/// many ms of audio came between the `clear` and the mark (the apology's length). Frames and
/// clock marks before the `clear` are skipped.
///
/// # Errors
/// No apology within `within`, the socket closed first, or the mark came without a `clear`.
pub async fn hear_apology(ws: &mut Ws, sid: &str, within: Duration) -> anyhow::Result<u64> {
    let deadline = tokio::time::Instant::now() + within;
    let mut cleared = false;
    let mut frames = 0;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("socket closed before the apology"))??;
        let Message::Text(text) = msg else { continue };
        let v: serde_json::Value = serde_json::from_str(text.as_str())?;
        match v["event"].as_str() {
            Some("clear") => cleared = true,
            Some("media") if cleared => frames += 1,
            Some("mark") if v["mark"]["name"] == APOLOGY_MARK => {
                anyhow::ensure!(cleared, "apology without a clear first");
                let echo = json!({"event": "mark", "sequenceNumber": "99", "streamSid": sid,
                    "mark": {"name": APOLOGY_MARK}});
                ws.send(Message::Text(echo.to_string().into())).await?;
                return Ok(frames * 20);
            }
            _ => {}
        }
    }
}
