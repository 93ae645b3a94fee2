//! Twilio's protocols as Switchboard speaks them: the Media Streams WebSocket messages
//! ([`media_stream`]) and the voice webhook's parameters ([`webhook`]).

pub mod media_stream;
pub mod webhook;
