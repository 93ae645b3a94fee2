//! Wire types of Twilio Media Streams: the JSON text frames Twilio sends over the WebSocket and
//! the ones the server sends back.
//!
//! Source: <https://www.twilio.com/docs/voice/media-streams/websocket-messages>. Every frame has a
//! string `event`; `sequenceNumber`, `media.chunk` and `media.timestamp` are JSON strings holding
//! integers. Outbound messages (`media`, `mark`, `clear`) always carry the `streamSid`.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Deserializer, Serialize};

/// Largest decoded `media.payload` accepted (bytes of μ-law, 1 byte per sample at 8 kHz). Twilio
/// sends 160 bytes (20 ms) per message; 1600 bytes (200 ms) leaves room for a peer that batches
/// frames while refusing anything that would make one message a denial of service.
pub const MAX_MEDIA_PAYLOAD_BYTES: usize = 1600;

/// A message from Twilio.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Inbound {
    /// First message on the socket.
    Connected {
        /// `"Call"`.
        #[serde(default)]
        protocol: String,
        /// `"1.0.0"`.
        #[serde(default)]
        version: String,
    },
    /// Stream metadata, once, right after `connected`.
    Start {
        /// Message counter.
        #[serde(rename = "sequenceNumber", deserialize_with = "string_u64")]
        sequence_number: u64,
        /// The metadata.
        start: Start,
        /// The stream (`MZ…`).
        #[serde(rename = "streamSid")]
        stream_sid: String,
    },
    /// 20 ms of caller audio.
    Media {
        /// Message counter.
        #[serde(rename = "sequenceNumber", deserialize_with = "string_u64")]
        sequence_number: u64,
        /// The audio.
        media: Media,
        /// The stream.
        #[serde(rename = "streamSid")]
        stream_sid: String,
    },
    /// A key the caller pressed.
    Dtmf {
        /// Message counter.
        #[serde(rename = "sequenceNumber", deserialize_with = "string_u64")]
        sequence_number: u64,
        /// The key.
        dtmf: Dtmf,
        /// The stream.
        #[serde(rename = "streamSid")]
        stream_sid: String,
    },
    /// The echo of a mark the server sent: the audio before it has played (or was cleared).
    Mark {
        /// Message counter.
        #[serde(rename = "sequenceNumber", deserialize_with = "string_u64")]
        sequence_number: u64,
        /// The mark.
        mark: MarkName,
        /// The stream.
        #[serde(rename = "streamSid")]
        stream_sid: String,
    },
    /// The stream stopped or the call ended.
    Stop {
        /// Message counter.
        #[serde(rename = "sequenceNumber", deserialize_with = "string_u64")]
        sequence_number: u64,
        /// Who stopped.
        stop: Stop,
        /// The stream.
        #[serde(rename = "streamSid")]
        stream_sid: String,
    },
    /// An event this server does not know; Twilio may add events, so these are skipped.
    #[serde(other)]
    Unknown,
}

/// The `start` metadata.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Start {
    /// Account (`AC…`).
    #[serde(default)]
    pub account_sid: String,
    /// Stream (`MZ…`).
    pub stream_sid: String,
    /// Call (`CA…`).
    pub call_sid: String,
    /// `inbound` and/or `outbound`.
    #[serde(default)]
    pub tracks: Vec<String>,
    /// The `<Parameter>` children of `<Stream>`, by name.
    #[serde(default)]
    pub custom_parameters: BTreeMap<String, String>,
    /// The audio format; Twilio always sends `audio/x-mulaw`, 8000 Hz, 1 channel.
    pub media_format: MediaFormat,
}

/// Audio format of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaFormat {
    /// `audio/x-mulaw`.
    pub encoding: String,
    /// Hz.
    pub sample_rate: u32,
    /// 1.
    pub channels: u32,
}

/// A `media` message's body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Media {
    /// `inbound` or `outbound`.
    #[serde(default)]
    pub track: String,
    /// Counter of media messages, from 1.
    #[serde(deserialize_with = "string_u64")]
    pub chunk: u64,
    /// Milliseconds since the stream started.
    #[serde(deserialize_with = "string_u64")]
    pub timestamp: u64,
    /// Base64 of headerless μ-law at 8 kHz.
    pub payload: String,
}

impl Media {
    /// Decodes the payload into `out` (cleared first).
    ///
    /// # Errors
    /// [`PayloadError::Base64`] for invalid base64; [`PayloadError::TooLarge`] when the audio is
    /// longer than [`MAX_MEDIA_PAYLOAD_BYTES`].
    pub fn decode_payload(&self, out: &mut Vec<u8>) -> Result<(), PayloadError> {
        // Base64 inflates by 4/3; check before decoding so a huge payload costs nothing.
        if self.payload.len() > MAX_MEDIA_PAYLOAD_BYTES.div_ceil(3) * 4 {
            return Err(PayloadError::TooLarge(self.payload.len() / 4 * 3));
        }
        out.clear();
        BASE64
            .decode_vec(self.payload.as_bytes(), out)
            .map_err(|e| PayloadError::Base64(e.to_string()))?;
        if out.len() > MAX_MEDIA_PAYLOAD_BYTES {
            return Err(PayloadError::TooLarge(out.len()));
        }
        Ok(())
    }
}

/// Why a `media.payload` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Not valid base64.
    #[error("payload is not valid base64: {0}")]
    Base64(String),
    /// Longer than [`MAX_MEDIA_PAYLOAD_BYTES`].
    #[error("payload of {0} bytes exceeds the {MAX_MEDIA_PAYLOAD_BYTES}-byte limit")]
    TooLarge(usize),
}

/// A `dtmf` message's body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Dtmf {
    /// `inbound_track`.
    #[serde(default)]
    pub track: String,
    /// `0`–`9`, `*`, `#`, `A`–`D`.
    pub digit: String,
}

/// A mark's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkName {
    /// The name the server chose.
    pub name: String,
}

/// A `stop` message's body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stop {
    /// Account.
    #[serde(default)]
    pub account_sid: String,
    /// Call.
    #[serde(default)]
    pub call_sid: String,
}

/// Why a text frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed Media Streams message: {0}")]
pub struct ParseError(String);

/// Parses one text frame from Twilio.
///
/// # Errors
/// [`ParseError`] when the frame is not JSON, has no string `event`, or a known event lacks a
/// field or has one of the wrong type. Unknown events parse as [`Inbound::Unknown`].
pub fn parse(text: &str) -> Result<Inbound, ParseError> {
    // `media` is 50 of every 50-odd messages a second: read it straight into its fields. serde's
    // internally tagged enums first copy every field of the message into a buffer of their own to
    // find the tag, then read the variant from that copy.
    if text.contains(MEDIA_EVENT)
        && let Ok(media) = serde_json::from_str::<MediaMessage<'_>>(text)
        && media.event == "media"
    {
        return Ok(Inbound::Media {
            sequence_number: media.sequence_number,
            media: media.media,
            stream_sid: media.stream_sid,
        });
    }
    // Every other message, and anything the shortcut did not take (its errors are this path's).
    serde_json::from_str(text).map_err(|e| ParseError(e.to_string()))
}

/// How Twilio writes the tag of a `media` message (compact JSON).
const MEDIA_EVENT: &str = r#""event":"media""#;

/// A `media` message as [`Inbound::Media`] reads it, plus its tag: what [`parse`] accepts through
/// this struct the enum accepts too, and anything else falls through to the enum.
#[derive(Deserialize)]
struct MediaMessage<'a> {
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    #[serde(rename = "sequenceNumber", deserialize_with = "string_u64")]
    sequence_number: u64,
    media: Media,
    #[serde(rename = "streamSid")]
    stream_sid: String,
}

/// The `event` name of a frame, for logging frames that parsed as [`Inbound::Unknown`].
pub fn event_name(text: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Event {
        event: String,
    }
    serde_json::from_str::<Event>(text).ok().map(|e| e.event)
}

/// A message to Twilio.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Outbound<'a> {
    /// Audio to play: base64 μ-law at 8 kHz.
    Media {
        /// The stream.
        #[serde(rename = "streamSid")]
        stream_sid: &'a str,
        /// The audio.
        media: OutboundMedia,
    },
    /// Tell me when the audio sent so far has played.
    Mark {
        /// The stream.
        #[serde(rename = "streamSid")]
        stream_sid: &'a str,
        /// The mark.
        mark: MarkName,
    },
    /// Drop all audio not yet played.
    Clear {
        /// The stream.
        #[serde(rename = "streamSid")]
        stream_sid: &'a str,
    },
}

/// Body of an outbound `media` message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboundMedia {
    /// Base64 of μ-law at 8 kHz.
    pub payload: String,
}

impl<'a> Outbound<'a> {
    /// A `media` message carrying `mulaw` (8 kHz μ-law bytes).
    pub fn media(stream_sid: &'a str, mulaw: &[u8]) -> Self {
        Outbound::Media {
            stream_sid,
            media: OutboundMedia {
                payload: BASE64.encode(mulaw),
            },
        }
    }

    /// The JSON text of a `media` message playing `mulaw` (8 kHz G.711 μ-law bytes), written
    /// straight into one buffer: the same text as `Outbound::media(stream_sid, mulaw).to_json()`
    /// without the intermediate base64 string and serde's escaping pass, since it runs for every
    /// 20 ms frame of every call. A `stream_sid` that would need escaping (Twilio's are `MZ` and
    /// 32 hex digits) goes through serde.
    pub fn media_json(stream_sid: &str, mulaw: &[u8]) -> String {
        const HEAD: &str = r#"{"event":"media","streamSid":""#;
        const MIDDLE: &str = r#"","media":{"payload":""#;
        const TAIL: &str = r#""}}"#;
        if !stream_sid.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Outbound::media(stream_sid, mulaw).to_json();
        }
        let payload_len = mulaw.len().div_ceil(3) * 4;
        let mut out = String::with_capacity(
            HEAD.len() + stream_sid.len() + MIDDLE.len() + payload_len + TAIL.len(),
        );
        out.push_str(HEAD);
        out.push_str(stream_sid);
        out.push_str(MIDDLE);
        BASE64.encode_string(mulaw, &mut out);
        out.push_str(TAIL);
        out
    }

    /// The JSON text frame.
    pub fn to_json(&self) -> String {
        // Serialising these plain structs cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn string_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    s.parse().map_err(|_| {
        serde::de::Error::custom(format!("expected an integer in a string, got {s:?}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examples() -> Vec<serde_json::Value> {
        let all: serde_json::Value =
            serde_json::from_str(include_str!("../../../tests/fixtures/twilio-examples.json"))
                .expect("fixture is JSON");
        all["media_stream_examples"]
            .as_array()
            .expect("examples")
            .clone()
    }

    #[test]
    fn parses_every_documented_inbound_example() {
        let mut seen = 0;
        for ex in examples() {
            if ex["direction"] != "twilio->server" {
                continue;
            }
            let text = ex["message"].to_string();
            let msg = parse(&text).unwrap_or_else(|e| panic!("{}: {e}", ex["name"]));
            assert_ne!(msg, Inbound::Unknown, "{}", ex["name"]);
            seen += 1;
        }
        assert_eq!(seen, 7);
    }

    #[test]
    fn start_fields() {
        let ex = examples()
            .into_iter()
            .find(|e| e["name"] == "start")
            .expect("start");
        let Inbound::Start {
            sequence_number,
            start,
            stream_sid,
        } = parse(&ex["message"].to_string()).expect("parses")
        else {
            panic!("not start");
        };
        assert_eq!(sequence_number, 1);
        assert_eq!(stream_sid, "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX");
        assert_eq!(start.call_sid, "CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX");
        assert_eq!(start.custom_parameters["FirstName"], "Jane");
        assert_eq!(start.media_format.sample_rate, 8000);
    }

    #[test]
    fn numbers_must_be_strings_holding_integers() {
        let ok = r#"{"event":"media","sequenceNumber":"4","streamSid":"MZ1","media":{"track":"inbound","chunk":"2","timestamp":"5","payload":"AA=="}}"#;
        assert!(parse(ok).is_ok());
        let bad = ok.replace(r#""chunk":"2""#, r#""chunk":"two""#);
        assert!(parse(&bad).is_err());
        let missing = ok.replace(r#","streamSid":"MZ1""#, "");
        assert!(parse(&missing).is_err());
    }

    #[test]
    fn media_reads_the_same_through_the_shortcut_and_the_enum() {
        let compact = r#"{"event":"media","sequenceNumber":"4","streamSid":"MZ1","media":{"track":"inbound","chunk":"2","timestamp":"5","payload":"AA=="}}"#;
        let spaced = r#"{ "event": "media", "sequenceNumber": "4", "streamSid": "MZ1", "media": { "track": "inbound", "chunk": "2", "timestamp": "5", "payload": "AA==" } }"#;
        let shortcut = parse(compact).expect("compact");
        let generic = parse(spaced).expect("spaced");
        assert_eq!(shortcut, generic);
        let Inbound::Media {
            sequence_number,
            media,
            stream_sid,
        } = shortcut
        else {
            panic!("not media: {shortcut:?}");
        };
        assert_eq!((sequence_number, stream_sid.as_str()), (4, "MZ1"));
        assert_eq!(
            (media.chunk, media.timestamp, media.payload.as_str()),
            (2, 5, "AA==")
        );
        // Unknown fields are skipped on both paths.
        let extra = compact.replace(r#""streamSid""#, r#""x":{"y":[1]},"streamSid""#);
        assert_eq!(parse(&extra), Ok(generic.clone()));
        // What the enum refuses, the shortcut does not let through, with the enum's error.
        for bad in [
            compact.replace(r#""chunk":"2""#, r#""chunk":2"#),
            compact.replace(r#","streamSid":"MZ1""#, ""),
            compact.replace(
                r#""sequenceNumber":"4""#,
                r#""sequenceNumber":"4","sequenceNumber":"5""#,
            ),
            format!("{compact} trailing"),
        ] {
            let err = parse(&bad).expect_err(&bad);
            assert_eq!(
                Err::<Inbound, _>(err),
                serde_json::from_str::<Inbound>(&bad).map_err(|e| ParseError(e.to_string())),
                "{bad}"
            );
        }
        // A message of another event that mentions `"event":"media"` is still that event.
        let mark = r#"{"event":"mark","sequenceNumber":"9","streamSid":"MZ1","mark":{"name":"m"},"x":{"event":"media"}}"#;
        assert!(
            matches!(parse(mark), Ok(Inbound::Mark { .. })),
            "{:?}",
            parse(mark)
        );
    }

    #[test]
    fn unknown_event_and_garbage() {
        assert_eq!(parse(r#"{"event":"newthing","x":1}"#), Ok(Inbound::Unknown));
        assert_eq!(
            event_name(r#"{"event":"newthing"}"#).as_deref(),
            Some("newthing")
        );
        assert!(parse("not json").is_err());
        assert!(parse(r#"{"no_event":1}"#).is_err());
    }

    #[test]
    fn payload_limits() {
        let media = |payload: String| Media {
            track: "inbound".into(),
            chunk: 1,
            timestamp: 0,
            payload,
        };
        let mut out = Vec::new();
        media(BASE64.encode([0xFFu8; 160]))
            .decode_payload(&mut out)
            .expect("valid");
        assert_eq!(out.len(), 160);
        assert!(matches!(
            media("@@@".into()).decode_payload(&mut out),
            Err(PayloadError::Base64(_))
        ));
        assert!(matches!(
            media(BASE64.encode(vec![0u8; MAX_MEDIA_PAYLOAD_BYTES + 1])).decode_payload(&mut out),
            Err(PayloadError::TooLarge(_))
        ));
    }

    #[test]
    fn outbound_matches_documented_shapes() {
        for ex in examples() {
            if ex["direction"] != "server->twilio" {
                continue;
            }
            let sid = "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX";
            let ours = match ex["name"].as_str() {
                Some("send_media") => Outbound::Media {
                    stream_sid: sid,
                    media: OutboundMedia {
                        payload: "a3242sa...".into(),
                    },
                },
                Some("send_mark") => Outbound::Mark {
                    stream_sid: sid,
                    mark: MarkName {
                        name: "my label".into(),
                    },
                },
                Some("send_clear") => Outbound::Clear { stream_sid: sid },
                other => panic!("untranslated example {other:?}"),
            };
            let ours: serde_json::Value = serde_json::from_str(&ours.to_json()).expect("json");
            assert_eq!(ours, ex["message"]);
        }
    }

    #[test]
    fn media_json_is_the_serde_text() {
        let frame: Vec<u8> = (0..=255u8).cycle().take(161).collect();
        for sid in [
            "MZ18ad3ab5a668481ce02b83e7395059f0",
            "MZ",
            "with \"quote\" and \\ é",
        ] {
            for len in [0, 1, 2, 3, 160, 161] {
                let want = Outbound::media(sid, &frame[..len]).to_json();
                assert_eq!(
                    Outbound::media_json(sid, &frame[..len]),
                    want,
                    "sid {sid:?}, {len} bytes"
                );
            }
        }
        let parsed: serde_json::Value =
            serde_json::from_str(&Outbound::media_json("MZ1", &frame[..160])).expect("JSON");
        assert_eq!(parsed["event"], "media");
        assert_eq!(parsed["streamSid"], "MZ1");
        assert_eq!(
            BASE64
                .decode(parsed["media"]["payload"].as_str().expect("payload"))
                .expect("base64"),
            frame[..160]
        );
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        const MEDIA: &str = r#"{"event":"media","sequenceNumber":"3","streamSid":"MZ1","media":{"track":"inbound","chunk":"2","timestamp":"40","payload":"/////w=="}}"#;

        proptest! {
            /// Any text at all: parsed or refused with an error, never a panic.
            #[test]
            fn any_text_parses_or_errs(text in ".{0,400}") {
                let _ = parse(&text);
            }

            /// A real `media` message with one byte changed, cut short or grown: parsed or
            /// refused, never a panic; a parsed payload decodes or errs.
            #[test]
            fn mutated_media_parses_or_errs(at in 0usize..MEDIA.len(), byte in any::<u8>(), cut in 0usize..MEDIA.len()) {
                let mut bytes = MEDIA.as_bytes().to_vec();
                bytes[at] = byte;
                for text in [String::from_utf8_lossy(&bytes).into_owned(), MEDIA[..cut].to_string()] {
                    if let Ok(Inbound::Media { media, .. }) = parse(&text) {
                        let mut out = Vec::new();
                        let _ = media.decode_payload(&mut out);
                    }
                }
            }
        }
    }
}
