//! Twilio's protocols as Switchboard speaks them: the Media Streams WebSocket messages
//! ([`media_stream`]), the voice webhook's parameters ([`webhook`]), request signatures
//! ([`signature`]) and the REST API calls that place and change calls ([`rest`]).

pub mod media_stream;
pub mod rest;
pub mod signature;
pub mod webhook;
