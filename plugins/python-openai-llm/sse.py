"""Server-sent events (the WHATWG HTML "event stream" format), parsed incrementally from the
chunks of an HTTP body as the host hands them over: a chunk may end anywhere (mid-line, between
``\\r`` and ``\\n``, inside a UTF-8 sequence). Only what a chat-completion stream needs: ``data``
(joined with ``\\n`` over lines) and ``event``; ``id``, ``retry`` and comments are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

MAX_LINE_BYTES = 1 << 20
"""Longest line (or event data) kept, in bytes: a chunk of a chat completion is well under a
kilobyte, so a longer line is a broken stream, not a reply; it bounds the session's memory."""


class SseError(Exception):
    """The bytes are not an event stream (a line past :data:`MAX_LINE_BYTES`, or not UTF-8)."""


@dataclass(frozen=True)
class Event:
    """One dispatched event: its ``event`` type (``message`` when the stream named none) and
    ``data``."""

    event: str
    data: str


class Parser:
    """An event-stream parser fed body chunks in order."""

    def __init__(self) -> None:
        self._buffer = b""
        self._event = ""
        self._data: List[str] = []

    def feed(self, chunk: bytes) -> List[Event]:
        """The events that ``chunk`` completes, in order.

        Raises:
            SseError: a line is too long or not UTF-8.
        """
        self._buffer += chunk
        events: List[Event] = []
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                break
            end, after = cut
            line, self._buffer = self._buffer[:end], self._buffer[after:]
            event = self._line(line)
            if event is not None:
                events.append(event)
        if len(self._buffer) > MAX_LINE_BYTES:
            raise SseError(f"an event stream line passed {MAX_LINE_BYTES} bytes")
        return events

    def finish(self) -> List[Event]:
        """The events the end of the body completes (a last line without its newline, then the
        event it was part of, as if a blank line followed).

        Raises:
            SseError: the last line is not UTF-8.
        """
        events: List[Event] = []
        if self._buffer:
            line, self._buffer = self._buffer.rstrip(b"\r"), b""
            event = self._line(line)
            if event is not None:
                events.append(event)
        event = self._line(b"")
        if event is not None:
            events.append(event)
        return events

    def _line(self, raw: bytes) -> "Event | None":
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise SseError(f"an event stream line is not UTF-8: {e}") from None
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = Event(self._event or "message", "\n".join(self._data))
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            if sum(len(d) for d in self._data) + len(value) > MAX_LINE_BYTES:
                raise SseError(f"an event's data passed {MAX_LINE_BYTES} bytes")
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None


def _line_end(buffer: bytes) -> "tuple[int, int] | None":
    """Where the first line of ``buffer`` ends and the next begins (``\\n``, ``\\r\\n`` or a lone
    ``\\r``); ``None`` when no line is complete yet (a trailing ``\\r`` may be half of ``\\r\\n``)."""
    lf, cr = buffer.find(b"\n"), buffer.find(b"\r")
    if cr == -1 or (lf != -1 and lf < cr):
        return None if lf == -1 else (lf, lf + 1)
    if cr + 1 == len(buffer):
        return None
    return cr, cr + 2 if buffer[cr + 1] == 0x0A else cr + 1
