//! What the host gives every plugin, on both targets: a log inside the call's span and the
//! host's clock. Nothing here blocks.

use crate::types::LogLevel;

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
