"""Component glue (build time only): connects the generated bindings of the ``realtime-plugin``
world to the plain-Python SDK. The build (:mod:`switchboard_plugin.build`) generates the
bindings and two tiny modules that re-export :class:`Realtime` (the app) and :class:`Session`
(the exported ``realtime.session`` resource) from here. Plugins never import this module.
"""

from __future__ import annotations

from typing import List, Optional, Tuple, Union

from componentize_py_types import Err  # type: ignore[import-not-found]
from wit_world import exports as _exports  # type: ignore[import-not-found]
from wit_world.exports import realtime as _rt  # type: ignore[import-not-found]
from wit_world.imports import host as _host  # type: ignore[import-not-found]
from wit_world.imports import types as _t  # type: ignore[import-not-found]
from wit_world.imports import tools as _tools  # type: ignore[import-not-found]

from . import host as _sdk_host
from . import types as sb
from .session import as_plugin_error, drive, exported

_ENCODING_TO_WIT = {sb.Encoding.PCM16: _t.AudioEncoding.PCM16, sb.Encoding.MULAW: _t.AudioEncoding.MULAW}
_ENCODING_FROM_WIT = {v: k for k, v in _ENCODING_TO_WIT.items()}
_LEVELS = {
    sb.LogLevel.TRACE: _t.LogLevel.TRACE,
    sb.LogLevel.DEBUG: _t.LogLevel.DEBUG,
    sb.LogLevel.INFO: _t.LogLevel.INFO,
    sb.LogLevel.WARN: _t.LogLevel.WARN,
    sb.LogLevel.ERROR: _t.LogLevel.ERROR,
}


def _io_error(e: BaseException) -> BaseException:
    value = getattr(e, "value", None)
    if isinstance(value, _t.IoError_Denied):
        return sb.IoError("denied", value.value)
    if isinstance(value, _t.IoError_Limit):
        return sb.IoError("limit", value.value)
    if isinstance(value, _t.IoError_Invalid):
        return sb.IoError("invalid", value.value)
    return e


def _headers(pairs: List[Tuple[str, str]]) -> List[_t.Header]:
    return [_t.Header(name, value) for name, value in pairs]


class _WitHost:
    """The SDK's host backend over the component's imports."""

    def log(self, level: sb.LogLevel, message: str) -> None:
        _host.log(_LEVELS[level], message)

    def now_ms(self) -> int:
        return _host.now_ms()

    def secret(self, name: str) -> Optional[str]:
        return _host.secret(name)

    def ws_connect(self, url: str, headers: List[Tuple[str, str]]) -> int:
        try:
            return _host.ws_connect(url, _headers(headers))
        except Err as e:
            raise _io_error(e) from None

    def ws_send(self, socket: int, message: Union[str, bytes]) -> None:
        payload = _t.Payload_Text(message) if isinstance(message, str) else _t.Payload_Binary(bytes(message))
        try:
            _host.ws_send(socket, payload)
        except Err as e:
            raise _io_error(e) from None

    def ws_close(self, socket: int) -> None:
        try:
            _host.ws_close(socket)
        except Err as e:
            raise _io_error(e) from None

    def http_send(self, method: str, url: str, headers: List[Tuple[str, str]], body: bytes) -> int:
        try:
            return _host.http_send(_t.HttpRequest(method, url, _headers(headers), body))
        except Err as e:
            raise _io_error(e) from None

    def set_timer(self, delay_ms: int) -> int:
        try:
            return _host.set_timer(delay_ms)
        except Err as e:
            raise _io_error(e) from None

    def cancel(self, target: int) -> None:
        _host.cancel(target)


_sdk_host.set_backend(_WitHost())


def _format_from_wit(f: _t.AudioFormat) -> sb.AudioFormat:
    return sb.AudioFormat(_ENCODING_FROM_WIT[f.encoding], f.sample_rate)


def _format_to_wit(f: sb.AudioFormat) -> _t.AudioFormat:
    return _t.AudioFormat(_ENCODING_TO_WIT[f.encoding], f.sample_rate)


def _error_to_wit(e: sb.PluginError) -> _t.PluginError:
    if isinstance(e, sb.InvalidConfig):
        return _t.PluginError_InvalidConfig(e.message)
    if isinstance(e, sb.Unauthorized):
        return _t.PluginError_Unauthorized(e.message)
    if isinstance(e, sb.Upstream):
        return _t.PluginError_Upstream(e.message)
    if isinstance(e, sb.RateLimited):
        return _t.PluginError_RateLimited(e.retry_after)
    if isinstance(e, sb.Unsupported):
        return _t.PluginError_Unsupported(e.message)
    return _t.PluginError_Internal(e.message)


def _output_to_wit(o: sb.Output) -> "_rt.SessionOutput":
    if isinstance(o, sb.Play):
        f = o.frame
        return _rt.SessionOutput_Play(_t.AudioFrame(_format_to_wit(f.format), f.data, 0))
    if isinstance(o, sb.ClearPlayback):
        return _rt.SessionOutput_ClearPlayback()
    if isinstance(o, sb.Mark):
        return _rt.SessionOutput_Mark(o.name)
    if isinstance(o, sb.UserTranscript):
        return _rt.SessionOutput_UserTranscript(_rt.Transcript(o.text, o.is_final))
    if isinstance(o, sb.AgentTranscript):
        return _rt.SessionOutput_AgentTranscript(_rt.Transcript(o.text, o.is_final))
    if isinstance(o, sb.Transfer):
        return _rt.SessionOutput_Transfer(o.number)
    if isinstance(o, sb.HangUp):
        return _rt.SessionOutput_HangUp()
    if isinstance(o, sb.ToolCall):
        return _rt.SessionOutput_ToolCall(_tools.ToolCall(o.id, o.name, o.arguments))
    raise sb.Internal(f"not an output: {o!r}")


class Realtime(_exports.Realtime):
    """The ``realtime`` interface's free functions."""

    def describe(self) -> _t.PluginInfo:
        info, _ = exported()
        return _t.PluginInfo(info.name, info.version, info.description, _format_to_wit(info.input_format))


class Session(_rt.Session):
    """The ``realtime.session`` resource: one SDK session per call."""

    def __init__(self, inner: "object") -> None:
        self.inner = inner

    @classmethod
    def open(cls, config: _t.SessionConfig) -> "Session":
        _, session_class = exported()
        c = config.call
        sdk_config = sb.SessionConfig(
            call=sb.CallInfo(c.call_sid, c.stream_sid, c.from_, c.to, c.direction, c.agent, list(c.parameters)),
            settings_json=config.settings,
            greeting=config.greeting,
            input_format=_format_from_wit(config.input_format),
        )
        try:
            return cls(session_class(sdk_config))
        except Exception as e:  # noqa: BLE001 — refused, as a plugin error
            raise Err(_error_to_wit(as_plugin_error(e))) from None

    def handle(self, input: "_rt.SessionInput") -> "List[_rt.SessionOutput]":
        s = self.inner
        try:
            outputs = self._dispatch(s, input)
        except sb.PluginError as e:
            raise Err(_error_to_wit(e)) from None
        return [_output_to_wit(o) for o in outputs]

    @staticmethod
    def _dispatch(s: "object", input: "_rt.SessionInput") -> List[sb.Output]:
        if isinstance(input, _rt.SessionInput_Audio):
            f = input.value
            frame = sb.AudioFrame(_format_from_wit(f.format), f.data, f.timestamp_ms)
            return drive(s, s.on_audio, frame)  # type: ignore[attr-defined, arg-type]
        if isinstance(input, _rt.SessionInput_Dtmf):
            return drive(s, s.on_dtmf, input.value)  # type: ignore[attr-defined, arg-type]
        if isinstance(input, _rt.SessionInput_MarkPlayed):
            return drive(s, s.on_mark_played, input.value)  # type: ignore[attr-defined, arg-type]
        if isinstance(input, _rt.SessionInput_Interrupted):
            return drive(s, s.on_interrupted, input.value)  # type: ignore[attr-defined, arg-type]
        if isinstance(input, _rt.SessionInput_Hangup):
            return drive(s, s.on_hangup)  # type: ignore[attr-defined, arg-type]
        if isinstance(input, _rt.SessionInput_Tools):
            tools = [sb.Tool(t.name, t.description, t.parameters) for t in input.value]
            return drive(s, s.on_tools, tools)  # type: ignore[attr-defined, arg-type]
        if isinstance(input, _rt.SessionInput_ToolResult):
            r = input.value
            if isinstance(r.outcome, _tools.ToolOutcome_Output):
                result = sb.ToolResult(r.id, output=r.outcome.value)
            else:
                result = sb.ToolResult(r.id, error=r.outcome.value)
            return drive(s, s.on_tool_result, result)  # type: ignore[attr-defined, arg-type]
        if isinstance(input, _rt.SessionInput_Io):
            return Session._io(s, input.value)
        return []

    @staticmethod
    def _io(s: "object", ev: "_t.IoEvent") -> List[sb.Output]:
        if isinstance(ev, _t.IoEvent_WsOpened):
            return drive(s, s.on_ws_opened, ev.value)  # type: ignore[attr-defined, arg-type]
        if isinstance(ev, _t.IoEvent_WsMessage):
            m = ev.value.message
            body: Union[str, bytes] = m.value if isinstance(m, _t.Payload_Text) else bytes(m.value)
            return drive(s, s.on_ws_message, ev.value.socket, body)  # type: ignore[attr-defined, arg-type]
        if isinstance(ev, _t.IoEvent_WsClosed):
            c = ev.value
            return drive(s, s.on_ws_closed, c.socket, c.code, c.reason)  # type: ignore[attr-defined, arg-type]
        if isinstance(ev, _t.IoEvent_HttpHead):
            h = ev.value
            headers = [(x.name, x.value) for x in h.headers]
            return drive(s, s.on_http_head, h.request, h.status, headers)  # type: ignore[attr-defined, arg-type]
        if isinstance(ev, _t.IoEvent_HttpChunk):
            return drive(s, s.on_http_chunk, ev.value.request, bytes(ev.value.data))  # type: ignore[attr-defined, arg-type]
        if isinstance(ev, _t.IoEvent_HttpDone):
            return drive(s, s.on_http_done, ev.value)  # type: ignore[attr-defined, arg-type]
        if isinstance(ev, _t.IoEvent_Failed):
            return drive(s, s.on_io_failed, ev.value.target, ev.value.error)  # type: ignore[attr-defined, arg-type]
        if isinstance(ev, _t.IoEvent_Timer):
            return drive(s, s.on_timer, ev.value)  # type: ignore[attr-defined, arg-type]
        return []
