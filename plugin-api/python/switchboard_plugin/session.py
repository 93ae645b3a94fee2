"""The realtime (speech-to-speech) session a plugin implements, the base every plugin class
shares (the pipeline stages' too, :mod:`switchboard_plugin.stages`), and how a plugin is
exported.

Mirrors the Rust SDK's ``Realtime`` trait: the host loads the plugin and reads its
:class:`~switchboard_plugin.types.PluginInfo` once, opens one session per call (the class's
constructor, with the call's :class:`~switchboard_plugin.types.SessionConfig`), then feeds it
one input at a time, in order, until the call hangs up. Each input is a method call
(``on_audio``, ``on_dtmf``, …); whatever the session emitted with :meth:`Session.play`,
:meth:`Session.mark` & co. during that call is what the host gets back, in order.

A session never blocks and never does I/O itself: it asks the host (:mod:`switchboard_plugin.host`)
and the completion arrives later as another callback (``on_ws_message``, ``on_timer``, …).

Budgets (the host's): a callback should return well within a 20 ms frame; the host ends a call
whose callback runs past 200 ms, returns more than 10,000 outputs, or grows past the per-call
memory limit. Raising a :class:`~switchboard_plugin.types.PluginError` ends the call with that
error (from ``__init__``: the session is refused, e.g. ``InvalidConfig``); any other exception
ends it as ``internal``. Either way only this call ends. The same holds for the stages.
"""

from __future__ import annotations

import traceback
from typing import Any, Callable, List, Optional, Type, TypeVar

from .types import (
    AgentTranscript,
    AudioFormat,
    AudioFrame,
    ClearPlayback,
    HangUp,
    Internal,
    Mark,
    Output,
    Play,
    PluginError,
    PluginInfo,
    SessionConfig,
    Tool,
    ToolCall,
    ToolResult,
    Transfer,
    UserTranscript,
)


class SessionBase:
    """What every plugin class shares — the realtime :class:`Session` and the pipeline stages
    (:mod:`switchboard_plugin.stages`): the call's config, the queue of outputs a callback
    emits, and the host-I/O callbacks (the defaults do nothing).

    ``__init__(config)`` is the WIT ``open``: parse settings there and raise
    :class:`~switchboard_plugin.types.InvalidConfig` for bad ones.
    """

    WORLD = ""
    """The WIT world a subclass implements (``realtime-plugin``, ``stt-plugin``, …)."""

    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self._outputs: List[Any] = []

    def emit(self, output: Any) -> None:
        """Queues any output of this plugin's kind (the subclasses' helpers are shorthands)."""
        self._outputs.append(output)

    def take_outputs(self) -> List[Any]:
        """The outputs queued since the last call, in order (the glue and test kit call this)."""
        out, self._outputs = self._outputs, []
        return out

    # Host I/O completions (override) ---------------------------------------------------

    def on_ws_opened(self, socket: int) -> None:
        """A ``ws_connect`` succeeded."""

    def on_ws_message(self, socket: int, message: "str | bytes") -> None:
        """A message arrived on a WebSocket (``str`` for text, ``bytes`` for binary)."""

    def on_ws_closed(self, socket: int, code: int, reason: str) -> None:
        """A WebSocket closed (RFC 6455 code; 1006 when it dropped without one)."""

    def on_http_head(self, request: int, status: int, headers: "list[tuple[str, str]]") -> None:
        """The status line and headers of an HTTP response."""

    def on_http_chunk(self, request: int, data: bytes) -> None:
        """Part of an HTTP response body, as it arrived."""

    def on_http_done(self, request: int) -> None:
        """The response body is complete."""

    def on_io_failed(self, target: int, error: str) -> None:
        """An I/O operation failed after it started (connect refused, TLS, reset…)."""

    def on_timer(self, timer: int) -> None:
        """A timer set with ``host.set_timer`` fired."""

    def on_hangup(self) -> None:
        """The call is over; no more inputs follow and outputs are dropped."""


class Session(SessionBase):
    """One call's realtime (speech-to-speech) state. Subclass it, override the ``on_*``
    callbacks you need (the defaults do nothing), and export the subclass with :func:`export`.

    ``__init__(config)`` is the WIT ``open``: parse settings there and raise
    :class:`~switchboard_plugin.types.InvalidConfig` for bad ones.
    """

    WORLD = "realtime-plugin"
    _outputs: List[Output]

    # Outputs -------------------------------------------------------------------------------

    def play(self, audio: "AudioFrame | bytes", format: Optional[AudioFormat] = None) -> None:
        """Queues audio for the caller after any already queued: a frame, or bytes in ``format``
        (default: the session's input format)."""
        if isinstance(audio, AudioFrame):
            frame = AudioFrame(audio.format, bytes(audio.data), 0)
        else:
            frame = AudioFrame(format or self.config.input_format, bytes(audio), 0)
        self._outputs.append(Play(frame))

    def clear_playback(self) -> None:
        """Drops all queued audio that has not played yet (barge-in)."""
        self._outputs.append(ClearPlayback())

    def mark(self, name: str) -> None:
        """Asks for ``on_mark_played(name)`` once the audio queued so far has played."""
        self._outputs.append(Mark(name))

    def user_transcript(self, text: str, is_final: bool = True) -> None:
        """Reports what the caller said."""
        self._outputs.append(UserTranscript(text, is_final))

    def agent_transcript(self, text: str, is_final: bool = True) -> None:
        """Reports what the agent said."""
        self._outputs.append(AgentTranscript(text, is_final))

    def transfer(self, number: str) -> None:
        """Transfers the call to this E.164 number."""
        self._outputs.append(Transfer(number))

    def hang_up(self) -> None:
        """Ends the call once the queued audio has played."""
        self._outputs.append(HangUp())

    def tool_call(self, id: str, name: str, arguments: str) -> None:
        """Calls a tool the host runs (arguments as JSON text); ``on_tool_result`` follows."""
        self._outputs.append(ToolCall(id, name, arguments))

    # Inputs (override) -------------------------------------------------------------------

    def on_audio(self, frame: AudioFrame) -> None:
        """20 ms of caller audio, in the session's input format."""

    def on_dtmf(self, digit: str) -> None:
        """A key the caller pressed: ``0``–``9``, ``*``, ``#``, ``A``–``D``."""

    def on_mark_played(self, name: str) -> None:
        """The audio before this mark has played."""

    def on_interrupted(self, heard_ms: int) -> None:
        """Playback was cleared mid-reply; the caller had heard this many ms of it."""

    def on_tools(self, tools: List[Tool]) -> None:
        """The agent's tools (replacing any list before)."""

    def on_tool_result(self, result: ToolResult) -> None:
        """The result of a ``tool_call``."""


S = TypeVar("S", bound=Type[SessionBase])

_exported: "Optional[tuple[PluginInfo, Type[SessionBase]]]" = None


def export(info: PluginInfo) -> Callable[[S], S]:
    """Class decorator: makes this class the plugin, described by ``info``. The class is a
    :class:`Session` subclass (a realtime plugin) or a pipeline stage's
    (:class:`~switchboard_plugin.stages.Recognizer`,
    :class:`~switchboard_plugin.stages.Conversation`,
    :class:`~switchboard_plugin.stages.Synthesizer`); its ``WORLD`` is the world the build
    picks.

    One per plugin; the entry module (``plugin.py`` by default) must apply it at import time.
    """

    def register(cls: S) -> S:
        global _exported
        if not (isinstance(cls, type) and issubclass(cls, SessionBase) and cls.WORLD):
            raise TypeError("@export applies to a subclass of Session, Recognizer, Conversation or Synthesizer")
        _exported = (info, cls)
        return cls

    return register


def exported() -> "tuple[PluginInfo, Type[SessionBase]]":
    """The exported plugin: its info and class.

    Raises:
        RuntimeError: no class was exported with :func:`export`.
    """
    if _exported is None:
        raise RuntimeError("no plugin class exported: decorate one with @switchboard_plugin.export(...)")
    return _exported


def as_plugin_error(e: BaseException) -> PluginError:
    """A plugin error for any exception: itself if it is one, else ``Internal`` naming it."""
    if isinstance(e, PluginError):
        return e
    where = traceback.extract_tb(e.__traceback__)[-1:] if e.__traceback__ else []
    at = f" at {where[0].filename}:{where[0].lineno}" if where else ""
    return Internal(f"{type(e).__name__}: {e}{at}")


def drive(session: SessionBase, callback: Callable[..., Any], *args: Any) -> List[Any]:
    """Runs one callback and returns the outputs it queued.

    Raises:
        PluginError: what the callback raised, as a plugin error.
    """
    try:
        callback(*args)
    except PluginError:
        session.take_outputs()
        raise
    except Exception as e:  # noqa: BLE001 — any bug ends only this call, as `internal`
        session.take_outputs()
        raise as_plugin_error(e) from e
    return session.take_outputs()
