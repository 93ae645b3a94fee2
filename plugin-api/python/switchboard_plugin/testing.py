"""Test kit: run a plugin's session under plain CPython, without a gateway or a build.

Mirrors the Rust SDK's ``testing.rs``. :class:`Harness` opens the exported session class with
settings, feeds it inputs through the same callbacks the component glue uses, and returns the
outputs each input caused; :class:`FakeHost` stands in for the host (log lines, clock, secrets,
I/O calls recorded as :class:`HostCall`, handles handed out from 1)::

    import unittest
    from switchboard_plugin.testing import Harness
    import plugin

    class EchoTest(unittest.TestCase):
        def test_immediate(self):
            h = Harness(plugin.Echo, {"mode": "immediate"})
            self.assertEqual(h.played_bytes(h.audio(b"\\x01\\x00" * 160)), b"\\x01\\x00" * 160)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type, Union

from . import host as _host
from .session import Session, drive
from .types import (
    AudioFormat,
    AudioFrame,
    CallInfo,
    IoError,
    LogLevel,
    Output,
    Play,
    SessionConfig,
    Tool,
    ToolResult,
)


@dataclass
class HostCall:
    """One call the plugin made to the host: ``name`` (``ws_connect``, ``ws_send``,
    ``ws_close``, ``http_send``, ``set_timer``, ``cancel``) and its arguments."""

    name: str
    args: Tuple[Any, ...]


@dataclass
class FakeHost:
    """A host for tests: grants ``secrets``, records ``logs`` and I/O ``calls``; ``now`` is the
    clock (ms). Set ``refuse`` to ``{"ws_connect": IoError("denied", "…")}`` to make a call fail."""

    secrets: Dict[str, str] = field(default_factory=dict)
    now: int = 1_700_000_000_000
    logs: List[Tuple[LogLevel, str]] = field(default_factory=list)
    calls: List[HostCall] = field(default_factory=list)
    refuse: Dict[str, IoError] = field(default_factory=dict)
    _next: int = 0

    def _io(self, name: str, *args: Any) -> int:
        if name in self.refuse:
            raise self.refuse[name]
        self.calls.append(HostCall(name, args))
        self._next += 1
        return self._next

    def log(self, level: LogLevel, message: str) -> None:
        self.logs.append((level, message))

    def now_ms(self) -> int:
        return self.now

    def secret(self, name: str) -> Optional[str]:
        return self.secrets.get(name)

    def ws_connect(self, url: str, headers: List[Tuple[str, str]]) -> int:
        return self._io("ws_connect", url, headers)

    def ws_send(self, socket: int, message: Union[str, bytes]) -> None:
        if "ws_send" in self.refuse:
            raise self.refuse["ws_send"]
        self.calls.append(HostCall("ws_send", (socket, message)))

    def ws_close(self, socket: int) -> None:
        self.calls.append(HostCall("ws_close", (socket,)))

    def http_send(self, method: str, url: str, headers: List[Tuple[str, str]], body: bytes) -> int:
        return self._io("http_send", method, url, headers, body)

    def set_timer(self, delay_ms: int) -> int:
        return self._io("set_timer", delay_ms)

    def cancel(self, target: int) -> None:
        self.calls.append(HostCall("cancel", (target,)))

    def take(self, name: Optional[str] = None) -> List[HostCall]:
        """The calls recorded so far (only ``name``'s, if given), clearing them all."""
        calls, self.calls = self.calls, []
        return [c for c in calls if name is None or c.name == name]


def config_for(
    settings: Union[str, Mapping[str, Any]] = "{}",
    input_format: AudioFormat = AudioFormat.pcm16(8000),
    greeting: Optional[str] = None,
    parameters: Optional[List[Tuple[str, str]]] = None,
) -> SessionConfig:
    """A session config for a test call (sids ``CAtest``/``MZtest``, agent ``test``)."""
    text = settings if isinstance(settings, str) else json.dumps(dict(settings))
    call = CallInfo("CAtest", "MZtest", "+15550000001", "+15550000002", "inbound", "test", parameters or [])
    return SessionConfig(call, text, greeting, input_format)


class Harness:
    """One test call: opens ``session_class`` with ``settings`` (dict or JSON text) and feeds it.

    Every feeding method returns the outputs that input caused and raises the
    :class:`~switchboard_plugin.types.PluginError` the session raised (any other exception
    becomes ``Internal``), exactly as the component does. Opening raises what ``__init__`` does.
    """

    def __init__(
        self,
        session_class: Type[Session],
        settings: Union[str, Mapping[str, Any]] = "{}",
        *,
        input_format: Optional[AudioFormat] = None,
        greeting: Optional[str] = None,
        secrets: Optional[Mapping[str, str]] = None,
        host: Optional[FakeHost] = None,
    ) -> None:
        self.host = host or FakeHost(secrets=dict(secrets or {}))
        _host.set_backend(self.host)
        fmt = input_format or _described_format(session_class)
        self.config = config_for(settings, fmt, greeting)
        self.session = session_class(self.config)
        self.timestamp_ms = 0

    @property
    def input_format(self) -> AudioFormat:
        """The format caller audio arrives in."""
        return self.config.input_format

    def _drive(self, name: str, *args: Any) -> List[Output]:
        _host.set_backend(self.host)
        return drive(self.session, getattr(self.session, name), *args)

    def audio(self, data: bytes) -> List[Output]:
        """Feeds one frame of caller audio (bytes in the input format)."""
        frame = AudioFrame(self.input_format, bytes(data), self.timestamp_ms)
        self.timestamp_ms += round(frame.duration_ms)
        return self._drive("on_audio", frame)

    def silence(self, ms: int) -> List[Output]:
        """Feeds ``ms`` of silence as 20 ms frames; all the outputs, in order."""
        fmt = self.input_format
        zero = b"\xff" if fmt.encoding.value == "mulaw" else b"\x00\x00"
        frame = zero * (fmt.sample_rate // 50)
        out: List[Output] = []
        for _ in range(ms // 20):
            out += self.audio(frame)
        return out

    def dtmf(self, digit: str) -> List[Output]:
        """The caller pressed a key."""
        return self._drive("on_dtmf", digit)

    def mark_played(self, name: str) -> List[Output]:
        """The audio before mark ``name`` has played."""
        return self._drive("on_mark_played", name)

    def interrupted(self, heard_ms: int) -> List[Output]:
        """Playback was cleared after the caller heard ``heard_ms`` of the reply."""
        return self._drive("on_interrupted", heard_ms)

    def ws_opened(self, socket: int) -> List[Output]:
        """The socket ``socket`` opened."""
        return self._drive("on_ws_opened", socket)

    def ws_message(self, socket: int, message: Union[str, bytes, Mapping[str, Any]]) -> List[Output]:
        """A message arrived on ``socket`` (a dict is sent as JSON text)."""
        if isinstance(message, Mapping):
            message = json.dumps(dict(message))
        return self._drive("on_ws_message", socket, message)

    def ws_closed(self, socket: int, code: int = 1000, reason: str = "") -> List[Output]:
        """The socket ``socket`` closed."""
        return self._drive("on_ws_closed", socket, code, reason)

    def http_head(self, request: int, status: int, headers: Optional[List[Tuple[str, str]]] = None) -> List[Output]:
        """An HTTP response's head arrived."""
        return self._drive("on_http_head", request, status, headers or [])

    def http_chunk(self, request: int, data: bytes) -> List[Output]:
        """Part of an HTTP response body arrived."""
        return self._drive("on_http_chunk", request, data)

    def http_done(self, request: int) -> List[Output]:
        """An HTTP response is complete."""
        return self._drive("on_http_done", request)

    def io_failed(self, target: int, error: str) -> List[Output]:
        """An I/O operation failed after it started."""
        return self._drive("on_io_failed", target, error)

    def timer(self, timer: int) -> List[Output]:
        """The timer ``timer`` fired."""
        return self._drive("on_timer", timer)

    def tools(self, tools: List[Tool]) -> List[Output]:
        """The agent's tools."""
        return self._drive("on_tools", tools)

    def tool_result(self, result: ToolResult) -> List[Output]:
        """A tool call's result."""
        return self._drive("on_tool_result", result)

    def hang_up(self) -> List[Output]:
        """The call is over."""
        return self._drive("on_hangup")

    @staticmethod
    def played_bytes(outputs: List[Output]) -> bytes:
        """The audio bytes of every ``Play`` in ``outputs``, concatenated."""
        return b"".join(o.frame.data for o in outputs if isinstance(o, Play))


def _described_format(session_class: Type[Session]) -> AudioFormat:
    from .session import _exported

    if _exported is not None and _exported[1] is session_class:
        return _exported[0].input_format
    return AudioFormat.pcm16(8000)
