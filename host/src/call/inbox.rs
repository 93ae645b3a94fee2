//! Twilio messages read while a realtime plugin works, so that `stop` jumps the queue.
//!
//! While a plugin's `handle` runs (a WASM guest yields every few ms, see
//! [`crate::plugin::budget`]), the call task keeps reading its socket into an [`Inbox`]: a
//! `stop`, a close or a socket error ends the call at once — the call in progress is abandoned —
//! instead of waiting behind every frame the slow plugin has not taken yet. Other messages wait
//! here, in order, and are handled before the socket is read again. The inbox is bounded: when
//! it is full, the oldest caller frame is dropped (audio that old is of no use to a realtime
//! agent) and counted; when it holds no frame to drop, the socket is left unread until it
//! drains (backpressure).

use std::collections::VecDeque;

use axum::extract::ws::Message;

use super::EndReason;
use crate::twilio::media_stream::{self, Inbound};

/// Messages the inbox holds at most: one second of caller frames.
pub const INBOX_MESSAGES: usize = 50;

/// Messages read ahead of the call loop. See the module docs.
#[derive(Debug, Default)]
pub struct Inbox {
    /// Each message, and whether it is a `media` frame (the kind that may be dropped).
    queue: VecDeque<(Message, bool)>,
    media: usize,
    dropped: u64,
}

impl Inbox {
    /// The oldest message waiting, if any.
    pub fn pop(&mut self) -> Option<Message> {
        let (message, is_media) = self.queue.pop_front()?;
        if is_media {
            self.media -= 1;
        }
        Some(message)
    }

    /// True when no message waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether another message may be read from the socket now.
    pub fn accepting(&self) -> bool {
        self.queue.len() < INBOX_MESSAGES || self.media > 0
    }

    /// Caller frames dropped because the inbox was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Files what one read of the socket returned. Returns how the call ends when the
    /// message ends it: `stop`, a close frame, the end of the stream, or a socket error.
    pub fn push(&mut self, read: Option<Result<Message, axum::Error>>) -> Option<EndReason> {
        let message = match read {
            None | Some(Ok(Message::Close(_))) => return Some(EndReason::SocketClosed),
            Some(Err(e)) => return Some(EndReason::SocketError(e.to_string())),
            Some(Ok(message)) => message,
        };
        let is_media = match &message {
            Message::Text(text) => match media_stream::parse(text.as_str()) {
                Ok(Inbound::Stop { .. }) => return Some(EndReason::Stop),
                Ok(Inbound::Media { .. }) => true,
                _ => false,
            },
            _ => false,
        };
        if self.queue.len() >= INBOX_MESSAGES
            && let Some(oldest) = self.queue.iter().position(|(_, m)| *m)
        {
            self.queue.remove(oldest);
            self.media -= 1;
            self.dropped += 1;
        }
        if is_media {
            self.media += 1;
        }
        self.queue.push_back((message, is_media));
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(chunk: u64) -> Message {
        Message::Text(
            format!(
                r#"{{"event":"media","sequenceNumber":"{n}","streamSid":"MZ1","media":{{"track":"inbound","chunk":"{chunk}","timestamp":"{ts}","payload":"/w=="}}}}"#,
                n = chunk + 1,
                ts = chunk * 20
            )
            .into(),
        )
    }

    fn mark(name: &str) -> Message {
        Message::Text(
            format!(
                r#"{{"event":"mark","sequenceNumber":"9","streamSid":"MZ1","mark":{{"name":"{name}"}}}}"#
            )
            .into(),
        )
    }

    #[test]
    fn stop_and_close_end_the_call_at_once() {
        let mut inbox = Inbox::default();
        assert_eq!(inbox.push(Some(Ok(media(1)))), None);
        let stop = r#"{"event":"stop","sequenceNumber":"3","streamSid":"MZ1","stop":{"accountSid":"AC1","callSid":"CA1"}}"#;
        assert_eq!(
            inbox.push(Some(Ok(Message::Text(stop.into())))),
            Some(EndReason::Stop)
        );
        assert_eq!(
            inbox.push(Some(Ok(Message::Close(None)))),
            Some(EndReason::SocketClosed)
        );
        assert_eq!(inbox.push(None), Some(EndReason::SocketClosed));
    }

    #[test]
    fn a_full_inbox_drops_its_oldest_frame_and_keeps_marks_in_order() {
        let mut inbox = Inbox::default();
        assert_eq!(inbox.push(Some(Ok(mark("first")))), None);
        for chunk in 1..=200 {
            assert!(inbox.accepting());
            assert_eq!(inbox.push(Some(Ok(media(chunk)))), None);
        }
        assert_eq!(inbox.dropped(), 200 - (INBOX_MESSAGES as u64 - 1));
        assert_eq!(inbox.pop(), Some(mark("first")), "the mark is kept, first");
        // Then the newest frames, oldest first.
        assert_eq!(inbox.pop(), Some(media(200 - INBOX_MESSAGES as u64 + 2)));
    }

    #[test]
    fn an_inbox_full_of_marks_stops_reading() {
        let mut inbox = Inbox::default();
        for i in 0..INBOX_MESSAGES {
            inbox.push(Some(Ok(mark(&i.to_string()))));
        }
        assert!(!inbox.accepting());
        inbox.pop();
        assert!(inbox.accepting());
    }
}
