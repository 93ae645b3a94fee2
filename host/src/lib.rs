//! Switchboard: a voice gateway between Twilio Media Streams and voice-AI agents that run as
//! plugins.
//!
//! Twilio POSTs the voice webhook ([`server`]), which routes the call ([`routing`], from
//! [`config`]) and answers TwiML ([`twiml`]) that opens a Media Streams WebSocket
//! ([`twilio::media_stream`]). One task per call ([`call`]) converts audio ([`audio`]) and drives
//! the agent's plugin session ([`plugin`]). [`records`] keeps one durable row per call in SQLite.
//! [`simulate`] plays Twilio's part for tests and demos. [`reload`] swaps in an edited config
//! for new calls while live calls keep theirs; [`check`] vets a config without serving it.
// Unsafe code is allowed in one module only, `plugin::native`, which calls native plugins
// through their C ABI.
#![deny(unsafe_code)]

pub mod audio;
pub mod call;
pub mod callbacks;
pub mod check;
pub mod config;
pub mod events;
pub mod logging;
pub mod metrics;
pub mod plugin;
pub mod records;
pub mod reload;
pub mod routing;
pub mod server;
pub mod simulate;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tools;
pub mod twilio;
pub mod twiml;
