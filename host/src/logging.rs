//! How the gateway's log lines are written, so that nothing a caller, Twilio or a plugin sends
//! can forge a log line.
//!
//! Values from the network (a webhook's `CallSid`, a stream's `streamSid`, a mark name) and from
//! plugins (transcripts, log messages) reach the log. Written with `Display`, a newline in one
//! of them starts what looks like a new log line, and NUL, DEL or an escape sequence goes to the
//! terminal raw. The text format's field writer ([`escaped_fields`]) writes every value and
//! message with its control characters escaped (`\n`, `\u{0}`); the JSON format escapes by its
//! nature.

use std::borrow::Cow;
use std::fmt::Write as _;

use tracing_subscriber::field::MakeExt as _;
use tracing_subscriber::fmt::format::FormatFields;

/// `text` with every control character (newline, carriage return, NUL, DEL, escape…) written as
/// its Rust escape; borrowed when there is none.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The text format's field writer: `name=value` pairs and the message, separated by spaces, each
/// with its control characters escaped ([`escape_controls`]).
pub fn escaped_fields() -> impl for<'writer> FormatFields<'writer> + Send + Sync + 'static {
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        let text = escape_controls(&text);
        if field.name() == "message" {
            write!(writer, "{text}")
        } else {
            write!(writer, "{field}={text}")
        }
    })
    .delimited(" ")
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A log sink for one test.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A `CallSid` with a newline and control bytes in it, logged as the webhook logs it, stays
    /// on its one line, escaped; a span field and the message too.
    #[test]
    fn values_from_the_network_cannot_forge_log_lines() {
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(escaped_fields())
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let call_sid = "CA1\n2026-12-06T00:00:00Z  INFO switchboard: forged\u{0}\u{7f}\u{1b}[31m";
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("call", stream_sid = %"MZ\r\nx");
            let _entered = span.enter();
            tracing::warn!(%call_sid, to = ?Some("+1555\n"), "webhook not routed: {}", "a\nb");
        });
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(
            out.contains(
                r"call_sid=CA1\n2026-12-06T00:00:00Z  INFO switchboard: forged\u{0}\u{7f}\u{1b}[31m"
            ),
            "{out}"
        );
        assert!(out.contains(r"stream_sid=MZ\r\nx"), "{out}");
        assert!(out.contains(r"webhook not routed: a\nb"), "{out}");
        assert!(!out.contains('\u{0}') && !out.contains('\u{1b}'), "{out}");
    }

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(escape_controls("CA123 ok"), Cow::Borrowed(_)));
        assert_eq!(escape_controls("a\tb"), "a\\tb");
    }
}
