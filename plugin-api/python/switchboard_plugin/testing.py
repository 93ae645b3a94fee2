"""Test kit: run a plugin's session or pipeline stage under plain CPython, without a gateway or
a build.

Mirrors the Rust SDK's ``testing.rs``. :class:`Harness` (a realtime :class:`Session`),
:class:`RecognizerHarness`, :class:`ConversationHarness` and :class:`SynthesizerHarness` (the
pipeline stages) open the plugin's class with settings, feed it inputs through the same
callbacks the component glue uses, and return the outputs each input caused; :class:`FakeHost`
stands in for the host (log lines, clock, secrets, I/O calls recorded as :class:`HostCall`,
handles handed out from 1)::

    import unittest
    from switchboard_plugin.testing import Harness
    import plugin

    class EchoTest(unittest.TestCase):
        def test_immediate(self):
            h = Harness(plugin.Echo, {"mode": "immediate"})
            self.assertEqual(h.played_bytes(h.audio(b"\\x01\\x00" * 160)), b"\\x01\\x00" * 160)

A stage's harness also feeds host I/O (``http_head``, ``http_chunk``, ``http_done``,
``ws_message``, ``timer``, …), so a plugin that streams from an HTTP server is tested by
answering the request :class:`FakeHost` recorded::

    h = ConversationHarness(plugin.Chat, {"model": "m"}, secrets={"api_key": "sk-test"})
    h.reply([Message(Role.USER, "Hi")])
    (request,) = h.host.take("http_send")
    h.http_head(1, 200)
    out = h.http_chunk(1, b'data: {"choices": [{"delta": {"content": "Hello"}}]}\\n\\n')
    assert ConversationHarness.text(out) == "Hello"
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type, Union

from . import host as _host
from .session import Session, SessionBase, drive
from .stages import Conversation, Recognizer, Synthesizer
from .types import (
    AudioFormat,
    AudioFrame,
    CallInfo,
    Done,
    IoError,
    LogLevel,
    LlmOutput,
    Message,
    Output,
    Play,
    Role,
    SessionConfig,
    Speech,
    SttOutput,
    TextDelta,
    Tool,
    ToolCall,
    ToolResult,
    Transcript,
    TtsOutput,
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


class _Driver:
    """What every harness shares: the fake host, the opened instance and the host-I/O inputs."""

    def __init__(
        self,
        plugin_class: Type[SessionBase],
        settings: Union[str, Mapping[str, Any]],
        input_format: Optional[AudioFormat],
        greeting: Optional[str],
        secrets: Optional[Mapping[str, str]],
        host: Optional[FakeHost],
    ) -> None:
        self.host = host or FakeHost(secrets=dict(secrets or {}))
        _host.set_backend(self.host)
        fmt = input_format or _described_format(plugin_class)
        self.config = config_for(settings, fmt, greeting)
        self.session = plugin_class(self.config)
        self.timestamp_ms = 0

    @property
    def input_format(self) -> AudioFormat:
        """The format caller audio arrives in."""
        return self.config.input_format

    def _drive(self, name: str, *args: Any) -> List[Any]:
        _host.set_backend(self.host)
        return drive(self.session, getattr(self.session, name), *args)

    def _frame(self, data: bytes) -> AudioFrame:
        frame = AudioFrame(self.input_format, bytes(data), self.timestamp_ms)
        self.timestamp_ms += round(frame.duration_ms)
        return frame

    def _silent_frame(self) -> bytes:
        fmt = self.input_format
        zero = b"\xff" if fmt.encoding.value == "mulaw" else b"\x00\x00"
        return zero * (fmt.sample_rate // 50)

    def ws_opened(self, socket: int) -> List[Any]:
        """The socket ``socket`` opened."""
        return self._drive("on_ws_opened", socket)

    def ws_message(self, socket: int, message: Union[str, bytes, Mapping[str, Any]]) -> List[Any]:
        """A message arrived on ``socket`` (a dict is sent as JSON text)."""
        if isinstance(message, Mapping):
            message = json.dumps(dict(message))
        return self._drive("on_ws_message", socket, message)

    def ws_closed(self, socket: int, code: int = 1000, reason: str = "") -> List[Any]:
        """The socket ``socket`` closed."""
        return self._drive("on_ws_closed", socket, code, reason)

    def http_head(self, request: int, status: int, headers: Optional[List[Tuple[str, str]]] = None) -> List[Any]:
        """An HTTP response's head arrived."""
        return self._drive("on_http_head", request, status, headers or [])

    def http_chunk(self, request: int, data: bytes) -> List[Any]:
        """Part of an HTTP response body arrived."""
        return self._drive("on_http_chunk", request, data)

    def http_done(self, request: int) -> List[Any]:
        """An HTTP response is complete."""
        return self._drive("on_http_done", request)

    def io_failed(self, target: int, error: str) -> List[Any]:
        """An I/O operation failed after it started."""
        return self._drive("on_io_failed", target, error)

    def timer(self, timer: int) -> List[Any]:
        """The timer ``timer`` fired."""
        return self._drive("on_timer", timer)

    def hang_up(self) -> List[Any]:
        """The call is over."""
        return self._drive("on_hangup")


class Harness(_Driver):
    """One test call of a realtime plugin: opens ``session_class`` with ``settings`` (dict or
    JSON text) and feeds it.

    Every feeding method returns the outputs that input caused and raises the
    :class:`~switchboard_plugin.types.PluginError` the session raised (any other exception
    becomes ``Internal``), exactly as the component does. Opening raises what ``__init__`` does.
    """

    session: Session

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
        super().__init__(session_class, settings, input_format, greeting, secrets, host)

    def audio(self, data: bytes) -> List[Output]:
        """Feeds one frame of caller audio (bytes in the input format)."""
        return self._drive("on_audio", self._frame(data))

    def silence(self, ms: int) -> List[Output]:
        """Feeds ``ms`` of silence as 20 ms frames; all the outputs, in order."""
        frame = self._silent_frame()
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

    def tools(self, tools: List[Tool]) -> List[Output]:
        """The agent's tools."""
        return self._drive("on_tools", tools)

    def tool_result(self, result: ToolResult) -> List[Output]:
        """A tool call's result."""
        return self._drive("on_tool_result", result)

    @staticmethod
    def played_bytes(outputs: List[Output]) -> bytes:
        """The audio bytes of every ``Play`` in ``outputs``, concatenated."""
        return b"".join(o.frame.data for o in outputs if isinstance(o, Play))


class RecognizerHarness(_Driver):
    """One test call of a speech-to-text stage: opens ``recognizer_class`` with ``settings``
    and feeds it caller audio and the host's end of turn. Same contract as :class:`Harness`."""

    session: Recognizer

    def __init__(
        self,
        recognizer_class: Type[Recognizer],
        settings: Union[str, Mapping[str, Any]] = "{}",
        *,
        input_format: Optional[AudioFormat] = None,
        secrets: Optional[Mapping[str, str]] = None,
        host: Optional[FakeHost] = None,
    ) -> None:
        super().__init__(recognizer_class, settings, input_format, None, secrets, host)

    def audio(self, data: bytes) -> List[SttOutput]:
        """Feeds one frame of caller audio (bytes in the input format)."""
        return self._drive("on_audio", self._frame(data))

    def silence(self, ms: int) -> List[SttOutput]:
        """Feeds ``ms`` of silence as 20 ms frames; all the outputs, in order."""
        frame = self._silent_frame()
        out: List[SttOutput] = []
        for _ in range(ms // 20):
            out += self.audio(frame)
        return out

    def end_of_turn(self) -> List[SttOutput]:
        """The host's endpointing ended the caller's turn."""
        return self._drive("on_end_of_turn")

    @staticmethod
    def final_text(outputs: List[SttOutput]) -> Optional[str]:
        """The text of the last final ``Transcript`` in ``outputs`` (``None`` when none)."""
        finals = [o.text for o in outputs if isinstance(o, Transcript) and o.is_final]
        return finals[-1] if finals else None


class ConversationHarness(_Driver):
    """One test call of a language-model stage: opens ``conversation_class`` with ``settings``
    and asks it for replies. Same contract as :class:`Harness`."""

    session: Conversation

    def __init__(
        self,
        conversation_class: Type[Conversation],
        settings: Union[str, Mapping[str, Any]] = "{}",
        *,
        secrets: Optional[Mapping[str, str]] = None,
        host: Optional[FakeHost] = None,
    ) -> None:
        super().__init__(conversation_class, settings, None, None, secrets, host)

    def reply(self, history: Union[str, List[Message]]) -> List[LlmOutput]:
        """Asks for a reply to ``history`` (a string: one user message)."""
        if isinstance(history, str):
            history = [Message(Role.USER, history)]
        return self._drive("on_reply", list(history))

    def cancel(self) -> List[LlmOutput]:
        """The caller barged in: stop the reply in progress."""
        return self._drive("on_cancel")

    def tools(self, tools: List[Tool]) -> List[LlmOutput]:
        """The agent's tools."""
        return self._drive("on_tools", tools)

    @staticmethod
    def text(outputs: List[LlmOutput]) -> str:
        """The text of every ``TextDelta`` in ``outputs``, concatenated."""
        return "".join(o.text for o in outputs if isinstance(o, TextDelta))

    @staticmethod
    def tool_calls(outputs: List[LlmOutput]) -> List[ToolCall]:
        """The ``ToolCall``s in ``outputs``, in order."""
        return [o for o in outputs if isinstance(o, ToolCall)]

    @staticmethod
    def is_done(outputs: List[LlmOutput]) -> bool:
        """Whether ``outputs`` end the reply (``Done``)."""
        return any(isinstance(o, Done) for o in outputs)


class SynthesizerHarness(_Driver):
    """One test call of a text-to-speech stage: opens ``synthesizer_class`` with ``settings``
    and feeds it text. Same contract as :class:`Harness`."""

    session: Synthesizer

    def __init__(
        self,
        synthesizer_class: Type[Synthesizer],
        settings: Union[str, Mapping[str, Any]] = "{}",
        *,
        secrets: Optional[Mapping[str, str]] = None,
        host: Optional[FakeHost] = None,
    ) -> None:
        super().__init__(synthesizer_class, settings, None, None, secrets, host)

    def text(self, text: str) -> List[TtsOutput]:
        """Speak this text after what was given before."""
        return self._drive("on_text", text)

    def flush(self) -> List[TtsOutput]:
        """No more text for this utterance."""
        return self._drive("on_flush")

    def cancel(self) -> List[TtsOutput]:
        """The caller barged in: drop everything not yet returned."""
        return self._drive("on_cancel")

    def speak(self, text: str) -> List[TtsOutput]:
        """``text`` then ``flush``: all the outputs, in order."""
        return self.text(text) + self.flush()

    @staticmethod
    def speech_bytes(outputs: List[TtsOutput]) -> bytes:
        """The audio bytes of every ``Speech`` in ``outputs``, concatenated."""
        return b"".join(o.frame.data for o in outputs if isinstance(o, Speech))


def _described_format(plugin_class: Type[SessionBase]) -> AudioFormat:
    from .session import _exported

    if _exported is not None and _exported[1] is plugin_class:
        return _exported[0].input_format
    return AudioFormat.pcm16(8000)
