"""OpenAI chat completions in Python: the language-model stage of a pipeline agent, backed by
``POST {base_url}/chat/completions`` with ``stream: true`` on OpenAI or any server that speaks
it (llama.cpp's ``llama-server``, Ollama, vLLM…), reached through the host's HTTP I/O. The
Python counterpart of ``plugins/openai-llm`` (Rust), and the example of a Python pipeline stage.

Each reply sends the whole history (the host owns it) and streams the answer back as text
deltas, one per content delta as its server-sent event arrives, then ``done``. A new reply
abandons the one in progress; ``cancel`` (barge-in) and ``hangup`` cancel its request, and any
of its events still in flight are dropped. An upstream failure — a non-2xx status (401/403:
``unauthorized``, 429: ``rate-limited``), a failed or cut connection, an ``error`` in the
stream, a stream that ends before ``data: [DONE]`` (or a ``finish_reason``), bytes that are not
an event stream of JSON chunks — ends the call with a plugin error (``upstream`` unless said).

Tools: the agent's tools are offered with every later request (``tools``, ``tool_choice:
"auto"``); the model's calls stream as ``delta.tool_calls`` fragments keyed by ``index``, are
assembled here, and go out whole, in index order, before ``done``. The continuation's history
maps to the API's shape (an assistant message with ``tool_calls``, ``tool`` messages with
``tool_call_id``).

Settings (the agent's LLM ``settings``; all optional, unknown keys refused):

- ``base_url`` (``"https://api.openai.com/v1"``): the API root, ``http://`` or ``https://``;
- ``model`` (``"gpt-4o-mini"``): for local servers, the model name they serve;
- ``temperature`` (0–2; the server's default when absent);
- ``max_tokens``: most tokens per reply (the server's default when absent).

Secrets: ``api_key``, sent as ``Authorization: Bearer …``; without one no header is sent (local
servers). The agent's ``allowed_hosts`` must include the ``base_url`` host.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, NoReturn, Optional, Tuple

import sse
from switchboard_plugin import (
    AudioFormat,
    Conversation,
    InvalidConfig,
    IoError,
    Message,
    PluginInfo,
    RateLimited,
    Role,
    SessionConfig,
    Tool,
    Unauthorized,
    Unsupported,
    Upstream,
    export,
    host,
)

WHAT = "OpenAI chat completion"
"""What error messages call this upstream request."""
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"
MAX_ERROR_BODY_BYTES = 4096
"""Most bytes of a non-2xx response body kept for the error message: an OpenAI error object is
a few hundred bytes; a proxy's HTML page is cut, not buffered whole."""
MAX_QUOTED_CHARS = 200
"""Most characters of a body that is not an error object quoted in an error message."""
SETTINGS = ("base_url", "model", "temperature", "max_tokens")

INFO = PluginInfo(
    name="python-openai-llm",
    version="0.1.0",
    description="OpenAI-compatible chat completions (/chat/completions), streamed (Python)",
    # Not used by a language model; the contract requires one.
    input_format=AudioFormat.pcm16(16000),
)


@dataclass
class _Call:
    """A tool call being assembled from streamed fragments."""

    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass
class _Reply:
    """The reply in progress: its request and what its response has brought so far."""

    request: int
    status: Optional[int] = None
    retry_after: Optional[int] = None
    error_body: bytes = b""
    events: sse.Parser = field(default_factory=sse.Parser)
    finished: bool = False
    """A chunk carried a ``finish_reason``: the reply is whole even if ``[DONE]`` never comes."""
    calls: Dict[int, _Call] = field(default_factory=dict)


@export(INFO)
class OpenAiLlm(Conversation):
    """One call's conversation with an OpenAI-compatible chat-completions server."""

    def __init__(self, config: SessionConfig) -> None:
        super().__init__(config)
        settings = config.settings()
        unknown = sorted(set(settings) - set(SETTINGS))
        if unknown:
            raise InvalidConfig(f"python-openai-llm settings: unknown key(s) {', '.join(unknown)}")
        self.base_url = _string(settings, "base_url", DEFAULT_BASE_URL).rstrip("/")
        if not self.base_url.startswith(("http://", "https://")):
            raise InvalidConfig(f"base_url {self.base_url!r}: expected an http:// or https:// URL")
        self.model = _string(settings, "model", DEFAULT_MODEL)
        if not self.model:
            raise InvalidConfig("python-openai-llm settings: model is empty")
        self.temperature = settings.get("temperature")
        if self.temperature is not None and (
            isinstance(self.temperature, bool)
            or not isinstance(self.temperature, (int, float))
            or not 0 <= self.temperature <= 2
        ):
            raise InvalidConfig(f"temperature {self.temperature!r}: expected a number from 0 to 2")
        self.max_tokens = settings.get("max_tokens")
        if self.max_tokens is not None and (
            isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 1
        ):
            raise InvalidConfig(f"max_tokens {self.max_tokens!r}: expected a whole number ≥ 1")
        self.api_key = host.secret("api_key") or None
        self.offered: List[Dict[str, Any]] = []
        self.reply: Optional[_Reply] = None

    # The host's requests -----------------------------------------------------------------------

    def on_reply(self, history: List[Message]) -> None:
        self._abandon()
        body = json.dumps(self._request(history)).encode()
        url = f"{self.base_url}/chat/completions"
        headers: List[Tuple[str, str]] = [("Content-Type", "application/json"), ("Accept", "text/event-stream")]
        if self.api_key:
            headers.append(("Authorization", f"Bearer {self.api_key}"))
        try:
            request = host.http_send("POST", url, headers, body)
        except IoError as e:
            if e.kind == "limit":
                raise Upstream(f"cannot send to {url}: {e.message}") from None
            hint = " (add the base_url host to allowed_hosts)" if e.kind == "denied" else ""
            raise InvalidConfig(f"cannot reach {url}: {e.message}{hint}") from None
        self.reply = _Reply(request)

    def on_cancel(self) -> None:
        self._abandon()

    def on_hangup(self) -> None:
        self._abandon()

    def on_tools(self, tools: List[Tool]) -> None:
        super().on_tools(tools)
        self.offered = [_offered(t) for t in tools]

    # The reply's response ----------------------------------------------------------------------

    def on_http_head(self, request: int, status: int, headers: List[Tuple[str, str]]) -> None:
        reply = self._current(request)
        if reply is None:
            return
        reply.status = status
        if not 200 <= status < 300:
            value = next((v for n, v in headers if n.lower() == "retry-after"), None)
            reply.retry_after = _retry_after_seconds(value) if value is not None else None

    def on_http_chunk(self, request: int, data: bytes) -> None:
        reply = self._current(request)
        if reply is None:
            return
        if reply.status is None:
            self._fail(Upstream(f"{WHAT}: response body before its status line"))
        if not 200 <= reply.status < 300:
            room = MAX_ERROR_BODY_BYTES - len(reply.error_body)
            reply.error_body += data[: max(room, 0)]
            return
        try:
            events = reply.events.feed(data)
        except sse.SseError as e:
            self._fail(Upstream(f"{WHAT}: {e}"))
        self._on_events(reply, events)

    def on_http_done(self, request: int) -> None:
        reply = self._current(request)
        if reply is None:
            return
        if reply.status is None:
            self._fail(Upstream(f"{WHAT}: response ended without a status line"))
        if not 200 <= reply.status < 300:
            self._fail(_status_error(reply.status, reply.retry_after, reply.error_body))
        try:
            events = reply.events.finish()
        except sse.SseError as e:
            self._fail(Upstream(f"{WHAT}: {e}"))
        if self._on_events(reply, events):
            return
        if not reply.finished:
            self._fail(Upstream(f"{WHAT}: the stream ended before data: [DONE] (reply cut short)"))
        self._complete(reply)

    def on_io_failed(self, target: int, error: str) -> None:
        if self._current(target) is not None:
            self._fail(Upstream(f"{WHAT} failed: {error}"))

    # Inside --------------------------------------------------------------------------------------

    def _current(self, request: int) -> Optional[_Reply]:
        """The reply in progress if ``request`` is its request (late events of an abandoned one
        are dropped)."""
        return self.reply if self.reply is not None and self.reply.request == request else None

    def _abandon(self) -> None:
        """Cancels the reply in progress, if any; its late events are ignored."""
        if self.reply is not None:
            host.cancel(self.reply.request)
            self.reply = None

    def _fail(self, error: Exception) -> NoReturn:
        """Drops the reply (the host ends the call with ``error``) and raises ``error``."""
        if self.reply is not None:
            host.cancel(self.reply.request)
        self.reply = None
        raise error

    def _complete(self, reply: _Reply) -> None:
        """Hands out the reply's tool calls, then ``done``; no reply is in progress after."""
        self._hand_out_calls(reply)
        self.done()
        self.reply = None

    def _request(self, history: List[Message]) -> Dict[str, Any]:
        body: Dict[str, Any] = {
            "model": self.model,
            "messages": [_message(n, m) for n, m in enumerate(history)],
            "stream": True,
        }
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.offered:
            body["tools"] = self.offered
            body["tool_choice"] = "auto"
            body["parallel_tool_calls"] = True
        return body

    def _on_events(self, reply: _Reply, events: List[sse.Event]) -> bool:
        """Turns server-sent events into outputs; True once the reply is complete
        (``data: [DONE]``)."""
        for event in events:
            data = event.data.strip()
            if data == "[DONE]":
                self._complete(reply)
                return True
            try:
                chunk = json.loads(data)
            except ValueError as e:
                why = f"error event: {data[:MAX_QUOTED_CHARS]}" if event.event == "error" else f"an event is not JSON: {e}"
                self._fail(Upstream(f"{WHAT}: {why}"))
            if event.event == "error" or (isinstance(chunk, dict) and "error" in chunk):
                self._fail(Upstream(f"{WHAT}: error mid-reply: {_error_message(chunk) or data[:MAX_QUOTED_CHARS]}"))
            choices = chunk.get("choices") if isinstance(chunk, dict) else None
            if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
                continue  # e.g. a usage chunk: no text
            choice = choices[0]
            delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
            content = delta.get("content")
            if isinstance(content, str):
                self.text_delta(content)
            if delta.get("tool_calls"):
                self._feed_calls(reply, delta["tool_calls"])
            if isinstance(choice.get("finish_reason"), str):
                reply.finished = True
                self._hand_out_calls(reply)
                if choice["finish_reason"] not in ("stop", "tool_calls"):
                    host.info(f"{WHAT}: finish_reason {choice['finish_reason']}")
        return False

    def _feed_calls(self, reply: _Reply, fragments: Any) -> None:
        """Adds streamed ``delta.tool_calls`` fragments to the calls being assembled."""
        if not isinstance(fragments, list):
            self._fail(Upstream(f"{WHAT}: delta.tool_calls is not a list"))
        for fragment in fragments:
            index = fragment.get("index") if isinstance(fragment, dict) else None
            if isinstance(index, bool) or not isinstance(index, int):
                self._fail(Upstream(f"{WHAT}: a tool-call delta without an index"))
            call = reply.calls.setdefault(index, _Call())
            function = fragment.get("function") if isinstance(fragment.get("function"), dict) else {}
            id, name, arguments = fragment.get("id"), function.get("name"), function.get("arguments")
            if not all(isinstance(v or "", str) for v in (id, name, arguments)):
                self._fail(Upstream(f"{WHAT}: a malformed tool-call delta (index {index})"))
            call.id = id or call.id
            call.name = name or call.name
            call.arguments += arguments or ""

    def _hand_out_calls(self, reply: _Reply) -> None:
        """Emits the calls assembled so far, whole and in index order; none are left."""
        for index in sorted(reply.calls):
            call = reply.calls[index]
            if not call.id or not call.name:
                self._fail(Upstream(f"{WHAT}: tool call {index} has no id or name"))
            self.tool_call(call.id, call.name, call.arguments or "{}")
        reply.calls.clear()


def _string(settings: Dict[str, Any], key: str, default: str) -> str:
    value = settings.get(key, default)
    if not isinstance(value, str):
        raise InvalidConfig(f"{key}: expected a string, got {value!r}")
    return value


def _offered(tool: Tool) -> Dict[str, Any]:
    """A tool as a request offers it.

    Raises:
        InvalidConfig: its parameters are not a JSON object (a JSON Schema).
    """
    try:
        parameters = json.loads(tool.parameters)
    except ValueError:
        parameters = None
    if not isinstance(parameters, dict):
        raise InvalidConfig(f"tool {tool.name}: parameters are not a JSON Schema object: {tool.parameters!r}")
    function: Dict[str, Any] = {"name": tool.name, "parameters": parameters}
    if tool.description:
        function["description"] = tool.description
    return {"type": "function", "function": function}


def _message(n: int, m: Message) -> Dict[str, Any]:
    """History message ``n`` as the API takes it.

    Raises:
        Unsupported: a tool message without its call's id.
    """
    if m.role is Role.ASSISTANT and m.tool_calls:
        calls = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in m.tool_calls
        ]
        return {"role": "assistant", "content": m.content or None, "tool_calls": calls}
    if m.role is Role.TOOL:
        if m.tool_call_id is None:
            raise Unsupported(f"history message {n}: a tool result without the id of its call")
        return {"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content}
    return {"role": m.role.value, "content": m.content}


def _retry_after_seconds(value: str) -> Optional[int]:
    """Seconds from a ``Retry-After`` delay (a fraction rounds up); ``None`` for a date."""
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        return None
    return int(-(-seconds // 1))


def _error_message(value: Any) -> Optional[str]:
    """``error.message`` of an OpenAI error object, or of the bare ``{"message": …}`` some
    compatible servers send."""
    if not isinstance(value, dict):
        return None
    error = value.get("error", value)
    if isinstance(error, str):
        return error
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) else None


def _status_error(status: int, retry_after: Optional[int], body: bytes) -> Exception:
    """The plugin error for a non-2xx response, per OpenAI's error codes."""
    try:
        message = _error_message(json.loads(body))
    except ValueError:
        message = None
    if message is None:
        text = body.decode("utf-8", "replace").strip()
        message = text[:MAX_QUOTED_CHARS] if text else "(no body)"
    message = f"{WHAT}: HTTP {status}: {message}"
    if status in (401, 403):
        return Unauthorized(message)
    if status == 429:
        host.warn(message)
        return RateLimited(retry_after)
    return Upstream(message)
