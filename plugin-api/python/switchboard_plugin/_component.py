"""Component glue (build time only), the part every world shares: the SDK's host backend over
the component's imports, conversions between the generated bindings and the SDK's plain
values, and the ``open``/``handle`` of an exported resource. Each world's own glue
(:mod:`~switchboard_plugin._realtime`, :mod:`~switchboard_plugin._stt`,
:mod:`~switchboard_plugin._llm`, :mod:`~switchboard_plugin._tts`) builds on it; the build
(:mod:`switchboard_plugin.build`) generates the bindings and two tiny modules that re-export
that glue's app and resource classes. Plugins never import these modules.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple, Union

from componentize_py_types import Err  # type: ignore[import-not-found]
from wit_world.imports import host as _host  # type: ignore[import-not-found]
from wit_world.imports import types as _t  # type: ignore[import-not-found]

from . import host as _sdk_host
from . import types as sb
from .session import SessionBase, as_plugin_error, drive, exported

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


def format_from_wit(f: _t.AudioFormat) -> sb.AudioFormat:
    return sb.AudioFormat(_ENCODING_FROM_WIT[f.encoding], f.sample_rate)


def format_to_wit(f: sb.AudioFormat) -> _t.AudioFormat:
    return _t.AudioFormat(_ENCODING_TO_WIT[f.encoding], f.sample_rate)


def error_to_wit(e: sb.PluginError) -> _t.PluginError:
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


def frame_from_wit(f: _t.AudioFrame) -> sb.AudioFrame:
    """An SDK audio frame."""
    return sb.AudioFrame(format_from_wit(f.format), bytes(f.data), f.timestamp_ms)


def frame_to_wit(f: sb.AudioFrame) -> _t.AudioFrame:
    """A bindings audio frame, as output (timestamp 0)."""
    return _t.AudioFrame(format_to_wit(f.format), bytes(f.data), 0)


def info_to_wit() -> _t.PluginInfo:
    """The exported plugin's info (``describe``), whatever the world."""
    info, _ = exported()
    return _t.PluginInfo(info.name, info.version, info.description, format_to_wit(info.input_format))


def config_from_wit(config: _t.SessionConfig) -> sb.SessionConfig:
    """The SDK's session config."""
    c = config.call
    return sb.SessionConfig(
        call=sb.CallInfo(c.call_sid, c.stream_sid, c.from_, c.to, c.direction, c.agent, list(c.parameters)),
        settings_json=config.settings,
        greeting=config.greeting,
        input_format=format_from_wit(config.input_format),
    )


def dispatch_io(s: SessionBase, ev: "_t.IoEvent") -> List[Any]:
    """Feeds one host-I/O completion to its callback; the outputs it emitted."""
    if isinstance(ev, _t.IoEvent_WsOpened):
        return drive(s, s.on_ws_opened, ev.value)
    if isinstance(ev, _t.IoEvent_WsMessage):
        m = ev.value.message
        body: Union[str, bytes] = m.value if isinstance(m, _t.Payload_Text) else bytes(m.value)
        return drive(s, s.on_ws_message, ev.value.socket, body)
    if isinstance(ev, _t.IoEvent_WsClosed):
        c = ev.value
        return drive(s, s.on_ws_closed, c.socket, c.code, c.reason)
    if isinstance(ev, _t.IoEvent_HttpHead):
        h = ev.value
        headers = [(x.name, x.value) for x in h.headers]
        return drive(s, s.on_http_head, h.request, h.status, headers)
    if isinstance(ev, _t.IoEvent_HttpChunk):
        return drive(s, s.on_http_chunk, ev.value.request, bytes(ev.value.data))
    if isinstance(ev, _t.IoEvent_HttpDone):
        return drive(s, s.on_http_done, ev.value)
    if isinstance(ev, _t.IoEvent_Failed):
        return drive(s, s.on_io_failed, ev.value.target, ev.value.error)
    if isinstance(ev, _t.IoEvent_Timer):
        return drive(s, s.on_timer, ev.value)
    return []


class ResourceGlue:
    """``open`` and ``handle`` of an exported resource (``realtime.session``,
    ``stt.recognizer``, …) over one SDK instance per call. A world's resource class mixes this
    in before the generated protocol and sets :attr:`WORLD`, :meth:`dispatch` and
    :meth:`output_to_wit`."""

    WORLD = ""
    """The world this resource belongs to; the exported class must implement it."""

    def __init__(self, inner: SessionBase) -> None:
        self.inner = inner

    @classmethod
    def open(cls, config: _t.SessionConfig) -> Any:
        _, plugin_class = exported()
        try:
            if plugin_class.WORLD != cls.WORLD:
                raise sb.Internal(
                    f"{plugin_class.__name__} is a {plugin_class.WORLD} plugin class, but the component "
                    f"was built for {cls.WORLD} (build with --world {plugin_class.WORLD})"
                )
            return cls(plugin_class(config_from_wit(config)))
        except Exception as e:  # noqa: BLE001 — refused, as a plugin error
            raise Err(error_to_wit(as_plugin_error(e))) from None

    def handle(self, input: Any) -> List[Any]:
        try:
            outputs = self.dispatch(self.inner, input)
        except sb.PluginError as e:
            raise Err(error_to_wit(e)) from None
        return [self.output_to_wit(o) for o in outputs]

    @staticmethod
    def dispatch(s: Any, input: Any) -> List[Any]:
        """Feeds one bindings input to its callback; the SDK outputs it emitted."""
        raise NotImplementedError

    @staticmethod
    def output_to_wit(o: Any) -> Any:
        """One SDK output as the bindings' variant."""
        raise NotImplementedError
