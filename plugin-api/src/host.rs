//! What the host gives every plugin, on both targets: a log inside the call's span, the host's
//! clock, granted secrets, and I/O done on the plugin's behalf.
//!
//! Nothing here blocks. An I/O function checks the request at once (the URL's host must be in the
//! agent's `allowed_hosts`; per-session caps apply) and returns an [`IoHandle`]; what happens
//! later arrives as [`SessionInput::Io`](crate::types::SessionInput::Io) on the session that
//! asked: `WsOpened`, `WsMessage`, `WsClosed`, `HttpHead`, `HttpChunk`, `HttpDone`, `Timer`, or
//! `Failed`.

use crate::types::{Header, HttpRequest, IoError, IoHandle, LogLevel, Payload};

/// Writes a line to the host's log, tagged with the plugin's name.
pub fn log(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::switchboard::plugin::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    crate::abi::glue::log(level, message);
}

/// Milliseconds since the Unix epoch, from the host's clock.
pub fn now_ms() -> u64 {
    #[cfg(target_arch = "wasm32")]
    return crate::switchboard::plugin::host::now_ms();
    #[cfg(not(target_arch = "wasm32"))]
    return crate::abi::glue::now_ms();
}

/// A secret the agent granted this plugin in agents.toml (`realtime.secrets`), by name; `None`
/// when not granted.
pub fn secret(name: &str) -> Option<String> {
    #[cfg(target_arch = "wasm32")]
    return crate::switchboard::plugin::host::secret(name);
    #[cfg(not(target_arch = "wasm32"))]
    return crate::abi::glue::secret(name);
}

/// Opens a WebSocket to `url` (`wss://` or `ws://`) with these handshake headers.
///
/// # Errors
/// [`IoError::Denied`] when the host is not allowed, [`IoError::Limit`] past the session's socket
/// cap, [`IoError::Invalid`] for a bad URL.
pub fn ws_connect(url: &str, headers: &[Header]) -> Result<IoHandle, IoError> {
    #[cfg(target_arch = "wasm32")]
    return crate::switchboard::plugin::host::ws_connect(url, headers);
    #[cfg(not(target_arch = "wasm32"))]
    return crate::abi::glue::ws_connect(url, headers);
}

/// Queues a message on a WebSocket opened with [`ws_connect`].
///
/// # Errors
/// [`IoError::Invalid`] for an unknown or closed socket.
pub fn ws_send(socket: IoHandle, message: &Payload) -> Result<(), IoError> {
    #[cfg(target_arch = "wasm32")]
    return crate::switchboard::plugin::host::ws_send(socket, message);
    #[cfg(not(target_arch = "wasm32"))]
    return crate::abi::glue::ws_send(socket, message);
}

/// Closes a WebSocket; `WsClosed` follows.
///
/// # Errors
/// [`IoError::Invalid`] for an unknown or closed socket.
pub fn ws_close(socket: IoHandle) -> Result<(), IoError> {
    #[cfg(target_arch = "wasm32")]
    return crate::switchboard::plugin::host::ws_close(socket);
    #[cfg(not(target_arch = "wasm32"))]
    return crate::abi::glue::ws_close(socket);
}

/// Sends an HTTP request; the response streams back (`HttpHead`, `HttpChunk`…, `HttpDone`).
///
/// # Errors
/// As [`ws_connect`], with the session's request cap.
pub fn http_send(request: &HttpRequest) -> Result<IoHandle, IoError> {
    #[cfg(target_arch = "wasm32")]
    return crate::switchboard::plugin::host::http_send(request);
    #[cfg(not(target_arch = "wasm32"))]
    return crate::abi::glue::http_send(request);
}

/// Starts a one-shot timer; `Timer` follows after `delay_ms` milliseconds.
///
/// # Errors
/// [`IoError::Limit`] past the session's timer cap.
pub fn set_timer(delay_ms: u32) -> Result<IoHandle, IoError> {
    #[cfg(target_arch = "wasm32")]
    return crate::switchboard::plugin::host::set_timer(delay_ms);
    #[cfg(not(target_arch = "wasm32"))]
    return crate::abi::glue::set_timer(delay_ms);
}

/// Cancels a timer or an HTTP request that has not completed; no event follows.
pub fn cancel(target: IoHandle) {
    #[cfg(target_arch = "wasm32")]
    crate::switchboard::plugin::host::cancel(target);
    #[cfg(not(target_arch = "wasm32"))]
    crate::abi::glue::cancel(target);
}
