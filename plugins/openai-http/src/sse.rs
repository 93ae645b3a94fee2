//! Server-sent events (`text/event-stream`), parsed incrementally as an HTTP body's chunks
//! arrive, per the WHATWG HTML standard, §9.2.6 "Interpreting an event stream": lines end in
//! `\r\n`, `\n` or `\r` (a `\r\n` split across chunks is one line end); a line starting with `:`
//! is a comment; `field: value` loses one space after the colon; `data` lines of one event are
//! joined with `\n`; an empty line dispatches the event (none when it had no `data`); a leading
//! byte-order mark is dropped. `id` and `retry` are ignored (no reconnection here).
//!
//! One deliberate difference: at the end of the body ([`Parser::finish`]) a last event that
//! lacks its closing blank line is dispatched rather than dropped, so a server that ends with
//! `data: [DONE]` and no blank line still ends cleanly (a JSON event cut short still fails to
//! parse, so a truncated stream is still caught).

/// Longest line (and longest event's data) accepted: far beyond any chat-completion chunk (a
/// few hundred bytes); a stream that sends more without a line end is broken.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event` field; `message` when the event had none.
    pub event: String,
    /// The `data` lines, joined with `\n`.
    pub data: String,
}

/// Why a stream cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseError {
    /// A line or an event's data passed [`MAX_LINE_BYTES`].
    TooLong,
    /// A line is not UTF-8 (the standard's only encoding for event streams).
    NotUtf8,
}

impl std::fmt::Display for SseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLong => write!(f, "an event stream line passed {MAX_LINE_BYTES} bytes"),
            Self::NotUtf8 => f.write_str("an event stream line is not UTF-8"),
        }
    }
}

impl std::error::Error for SseError {}

/// An incremental event-stream parser: [`feed`](Parser::feed) each chunk as it arrives.
#[derive(Debug, Default)]
pub struct Parser {
    /// The current line, before its end arrives.
    line: Vec<u8>,
    /// The last chunk ended in `\r`: a `\n` opening the next belongs to that line end.
    after_cr: bool,
    /// A line has been read (the byte-order mark can only come first).
    started: bool,
    event: String,
    data: String,
}

impl Parser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes of the body; returns the events they completed, in order.
    ///
    /// # Errors
    /// [`SseError`]: the stream is not one (the parser should not be fed again).
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<Vec<Event>, SseError> {
        let mut out = Vec::new();
        if std::mem::take(&mut self.after_cr) && bytes.first() == Some(&b'\n') {
            bytes = &bytes[1..];
        }
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            let byte = bytes[i];
            if byte != b'\n' && byte != b'\r' {
                i += 1;
                continue;
            }
            self.line.extend_from_slice(&bytes[start..i]);
            let line = std::mem::take(&mut self.line);
            self.process(&line, &mut out)?;
            if byte == b'\r' {
                match bytes.get(i + 1) {
                    Some(b'\n') => i += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            i += 1;
            start = i;
        }
        self.line.extend_from_slice(&bytes[start..]);
        if self.line.len() > MAX_LINE_BYTES {
            return Err(SseError::TooLong);
        }
        Ok(out)
    }

    /// The body ended: processes an unterminated last line and dispatches a pending event (see
    /// the module docs).
    ///
    /// # Errors
    /// As [`feed`](Parser::feed).
    pub fn finish(&mut self) -> Result<Vec<Event>, SseError> {
        let mut out = Vec::new();
        let line = std::mem::take(&mut self.line);
        if !line.is_empty() {
            self.process(&line, &mut out)?;
        }
        self.process(b"", &mut out)?;
        Ok(out)
    }

    fn process(&mut self, mut line: &[u8], out: &mut Vec<Event>) -> Result<(), SseError> {
        if !std::mem::replace(&mut self.started, true) {
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        let line = std::str::from_utf8(line).map_err(|_| SseError::NotUtf8)?;
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let mut data = std::mem::take(&mut self.data);
            if !data.is_empty() {
                data.pop(); // the `\n` after the last data line
                out.push(Event {
                    event: if event.is_empty() {
                        "message".into()
                    } else {
                        event
                    },
                    data,
                });
            }
            return Ok(());
        }
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.data.len() + value.len() >= MAX_LINE_BYTES {
                    return Err(SseError::TooLong);
                }
                self.data.push_str(value);
                self.data.push('\n');
            }
            "event" => self.event = value.to_string(),
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(data: &str) -> Event {
        Event {
            event: "message".into(),
            data: data.into(),
        }
    }

    /// Every split of `stream` into two chunks gives the same events as the whole.
    fn all_splits(stream: &[u8]) -> Vec<Event> {
        let mut whole = Parser::new();
        let mut expected = whole.feed(stream).unwrap();
        expected.extend(whole.finish().unwrap());
        for cut in 0..=stream.len() {
            let mut p = Parser::new();
            let mut got = p.feed(&stream[..cut]).unwrap();
            got.extend(p.feed(&stream[cut..]).unwrap());
            got.extend(p.finish().unwrap());
            assert_eq!(got, expected, "split at {cut}");
        }
        let mut p = Parser::new();
        let mut got = Vec::new();
        for byte in stream {
            got.extend(p.feed(std::slice::from_ref(byte)).unwrap());
        }
        got.extend(p.finish().unwrap());
        assert_eq!(got, expected, "byte by byte");
        expected
    }

    #[test]
    fn events_survive_any_chunking_and_every_line_end() {
        let stream = b"\xEF\xBB\xBFdata: {\"a\":1}\r\n\r\n: keep-alive\n\ndata:two\rdata: lines\r\revent: error\ndata: x\n\ndata: [DONE]\n\n";
        assert_eq!(
            all_splits(stream),
            [
                message("{\"a\":1}"),
                message("two\nlines"),
                Event {
                    event: "error".into(),
                    data: "x".into()
                },
                message("[DONE]"),
            ]
        );
    }

    #[test]
    fn fields_follow_the_standard() {
        // No space after the colon, only one space removed, a field with no colon, an event
        // with no data (not dispatched), unknown fields ignored.
        let stream = b"data:a\ndata:  b\ndata\nid: 3\nretry: 10\n\nevent: ping\n\ndata: c\n\n";
        assert_eq!(all_splits(stream), [message("a\n b\n"), message("c")]);
    }

    #[test]
    fn a_last_event_without_its_blank_line_is_dispatched_at_the_end() {
        let mut p = Parser::new();
        assert_eq!(p.feed(b"data: [DONE]").unwrap(), []);
        assert_eq!(p.finish().unwrap(), [message("[DONE]")]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut p = Parser::new();
        assert_eq!(p.feed(b"data: \xFF\xFE\n"), Err(SseError::NotUtf8));
        let mut p = Parser::new();
        assert_eq!(
            p.feed(&vec![b'x'; MAX_LINE_BYTES + 1]),
            Err(SseError::TooLong)
        );
    }
}
