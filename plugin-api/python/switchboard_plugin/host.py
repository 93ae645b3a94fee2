"""What the host gives every plugin: a log inside the call's span, the host's clock, granted
secrets, and I/O done on the plugin's behalf. Mirrors the Rust SDK's ``host.rs``.

Nothing here blocks. An I/O function checks the request at once (the URL's host must be in the
agent's ``allowed_hosts``; per-session caps apply) and returns a handle (an ``int``); what
happens later arrives as a callback on the session that asked: ``on_ws_opened``,
``on_ws_message``, ``on_ws_closed``, ``on_http_head``, ``on_http_chunk``, ``on_http_done``,
``on_timer`` or ``on_io_failed``.

Inside a component these call the host's imports; under plain CPython the test kit installs a
fake (:class:`switchboard_plugin.testing.FakeHost`). Calling them with neither raises
``RuntimeError``.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Protocol, Sequence, Tuple, Union

from .types import LogLevel

Headers = Union[Mapping[str, str], Sequence[Tuple[str, str]]]
"""HTTP or WebSocket-handshake headers: a dict, or (name, value) pairs in order."""


class Backend(Protocol):
    """What the SDK calls to reach the host: the component glue or the test kit's fake."""

    def log(self, level: LogLevel, message: str) -> None: ...
    def now_ms(self) -> int: ...
    def secret(self, name: str) -> Optional[str]: ...
    def ws_connect(self, url: str, headers: List[Tuple[str, str]]) -> int: ...
    def ws_send(self, socket: int, message: Union[str, bytes]) -> None: ...
    def ws_close(self, socket: int) -> None: ...
    def http_send(self, method: str, url: str, headers: List[Tuple[str, str]], body: bytes) -> int: ...
    def set_timer(self, delay_ms: int) -> int: ...
    def cancel(self, target: int) -> None: ...


class _NoHost:
    def __getattr__(self, name: str) -> None:
        raise RuntimeError(
            f"switchboard_plugin.host.{name}: no host here — run the plugin as a component, "
            "or under switchboard_plugin.testing (which installs a fake host)"
        )


_backend: Backend = _NoHost()  # type: ignore[assignment]


def set_backend(backend: Backend) -> None:
    """Installs the host implementation (the glue and the test kit do this; plugins never)."""
    global _backend
    _backend = backend


def _pairs(headers: Optional[Headers]) -> List[Tuple[str, str]]:
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return [(str(k), str(v)) for k, v in headers.items()]
    return [(str(k), str(v)) for k, v in headers]


def log(level: LogLevel, message: str) -> None:
    """Writes a line to the host's log, inside the call's span (call sid, agent, plugin)."""
    _backend.log(level, message)


def debug(message: str) -> None:
    """Logs at debug level."""
    _backend.log(LogLevel.DEBUG, message)


def info(message: str) -> None:
    """Logs at info level."""
    _backend.log(LogLevel.INFO, message)


def warn(message: str) -> None:
    """Logs at warn level."""
    _backend.log(LogLevel.WARN, message)


def error(message: str) -> None:
    """Logs at error level."""
    _backend.log(LogLevel.ERROR, message)


def now_ms() -> int:
    """Milliseconds since the Unix epoch, from the host's clock."""
    return _backend.now_ms()


def secret(name: str) -> Optional[str]:
    """A secret the agent grants this plugin in agents.toml (``realtime.secrets``); ``None``
    when not granted."""
    return _backend.secret(name)


def ws_connect(url: str, headers: Optional[Headers] = None) -> int:
    """Opens a WebSocket (``wss://`` or ``ws://``); ``on_ws_opened`` or ``on_io_failed`` follows.

    Raises:
        IoError: ``denied`` (host not allowed), ``limit`` (socket cap), ``invalid`` (bad URL).
    """
    return _backend.ws_connect(url, _pairs(headers))


def ws_send(socket: int, message: Union[str, bytes]) -> None:
    """Queues a message (text for ``str``, binary for ``bytes``) on an open or opening socket.

    Raises:
        IoError: ``invalid`` for an unknown or closed socket.
    """
    _backend.ws_send(socket, message)


def ws_close(socket: int) -> None:
    """Closes a WebSocket; ``on_ws_closed`` follows.

    Raises:
        IoError: ``invalid`` for an unknown or closed socket.
    """
    _backend.ws_close(socket)


def http_send(method: str, url: str, headers: Optional[Headers] = None, body: bytes = b"") -> int:
    """Sends an HTTP request; ``on_http_head``, ``on_http_chunk``… and ``on_http_done`` (or
    ``on_io_failed``) follow, so server-sent events stream.

    Raises:
        IoError: as :func:`ws_connect`, with the session's request cap.
    """
    return _backend.http_send(method, url, _pairs(headers), bytes(body))


def set_timer(delay_ms: int) -> int:
    """Starts a one-shot timer; ``on_timer(handle)`` follows after ``delay_ms`` milliseconds.

    Raises:
        IoError: ``limit`` past the session's timer cap.
    """
    return _backend.set_timer(delay_ms)


def cancel(target: int) -> None:
    """Cancels a timer or an HTTP request that has not completed; no event follows."""
    _backend.cancel(target)
