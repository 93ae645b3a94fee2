"""A speech-to-speech bridge to an OpenAI-Realtime-speaking server, in Python: the example of
host I/O from a Python plugin (a WebSocket, a timer, a secret).

- Connects with ``host.ws_connect`` to ``{base_url}?model={model}`` with the agent's secret
  ``api_key`` as ``Authorization: Bearer …``; sets the session to μ-law both ways.
- Caller audio (μ-law 8 kHz, untouched) is batched and sent every ``batch_ms`` on a host
  timer (``input_audio_buffer.append``): fewer, larger messages than one per 20 ms frame.
- The server's audio (``response.output_audio.delta``) is played; its transcripts become the
  call's transcript. When the server hears the caller start speaking
  (``input_audio_buffer.speech_started``) playback is cleared at once, and the cut reply is
  truncated upstream at what the caller heard (``conversation.item.truncate``).
- The agent's greeting, if any, is asked for with ``response.create`` once the socket opens.

Settings: ``base_url`` (default ``wss://api.openai.com/v1/realtime``), ``model`` (default
``gpt-realtime``), ``instructions`` (optional), ``batch_ms`` (default 100, 20–1000).
Secrets: ``api_key`` (required: ``unauthorized`` without it).
"""

from __future__ import annotations

import base64
import json
from typing import Any, Dict, List, Optional

from switchboard_plugin import (
    AudioFormat,
    AudioFrame,
    InvalidConfig,
    PluginInfo,
    Session,
    SessionConfig,
    Unauthorized,
    Upstream,
    export,
    host,
)

MULAW = AudioFormat.mulaw()
SETTINGS = {"base_url", "model", "instructions", "batch_ms"}


@export(PluginInfo("python-realtime-bridge", "0.1.0", "Bridges calls to an OpenAI Realtime server (Python)", MULAW))
class Bridge(Session):
    """One call's bridge: one WebSocket upstream, one batching timer."""

    def __init__(self, config: SessionConfig) -> None:
        super().__init__(config)
        settings = config.settings()
        unknown = sorted(set(settings) - SETTINGS)
        if unknown:
            raise InvalidConfig(f"unknown setting(s): {', '.join(unknown)}")
        base_url = _text(settings, "base_url", "wss://api.openai.com/v1/realtime")
        model = _text(settings, "model", "gpt-realtime")
        self.instructions: Optional[str] = settings.get("instructions")
        if self.instructions is not None and not isinstance(self.instructions, str):
            raise InvalidConfig("instructions: expected a string")
        self.batch_ms = settings.get("batch_ms", 100)
        if isinstance(self.batch_ms, bool) or not isinstance(self.batch_ms, int) or not 20 <= self.batch_ms <= 1000:
            raise InvalidConfig(f"batch_ms: expected a whole number of ms in 20..=1000, got {self.batch_ms!r}")
        key = host.secret("api_key")
        if not key:
            raise Unauthorized("no api_key secret granted to this plugin (realtime.secrets)")
        self.socket = host.ws_connect(f"{base_url}?model={model}", {"Authorization": f"Bearer {key}"})
        self.timer = host.set_timer(self.batch_ms)
        self.open = False
        self.pending = bytearray()
        self.playing_item: Optional[str] = None
        self.cut_item: Optional[str] = None
        self.hung_up = False

    def send(self, event: Dict[str, Any]) -> None:
        """Sends one client event as JSON text."""
        host.ws_send(self.socket, json.dumps(event))

    def on_ws_opened(self, socket: int) -> None:
        self.open = True
        session: Dict[str, Any] = {
            "type": "realtime",
            "audio": {
                "input": {"format": {"type": "audio/pcmu"}, "transcription": {"model": "whisper-1"}},
                "output": {"format": {"type": "audio/pcmu"}},
            },
        }
        if self.instructions:
            session["instructions"] = self.instructions
        self.send({"type": "session.update", "session": session})
        if self.config.greeting:
            self.send({"type": "response.create",
                       "response": {"instructions": f"Greet the caller with: {self.config.greeting}"}})

    def on_audio(self, frame: AudioFrame) -> None:
        # Bounded: at most 2 s are held while the socket opens.
        self.pending += frame.data
        del self.pending[: max(0, len(self.pending) - 16000)]

    def on_timer(self, timer: int) -> None:
        if timer != self.timer:
            return
        if self.open and self.pending:
            self.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(bytes(self.pending)).decode()})
            self.pending.clear()
        self.timer = host.set_timer(self.batch_ms)

    def on_ws_message(self, socket: int, message: "str | bytes") -> None:
        if not isinstance(message, str):
            return
        try:
            event = json.loads(message)
        except ValueError:
            host.warn("upstream sent a message that is not JSON")
            return
        kind = event.get("type")
        if kind == "response.output_audio.delta":
            item = event.get("item_id")
            if item is not None and item == self.cut_item:
                return  # late audio of a reply the caller talked over
            self.playing_item = item
            self.play(base64.b64decode(event.get("delta", "")), MULAW)
        elif kind == "input_audio_buffer.speech_started":
            if self.playing_item is not None:
                self.cut_item = self.playing_item
                self.clear_playback()
        elif kind == "conversation.item.input_audio_transcription.completed":
            self.user_transcript(str(event.get("transcript", "")))
        elif kind == "response.output_audio_transcript.done":
            self.agent_transcript(str(event.get("transcript", "")))
        elif kind == "response.done":
            self.playing_item = None
        elif kind == "error":
            host.warn(f"upstream error: {event.get('error', {}).get('message', event)}")

    def on_interrupted(self, heard_ms: int) -> None:
        if self.cut_item is not None and self.open:
            self.send({"type": "conversation.item.truncate", "item_id": self.cut_item,
                       "content_index": 0, "audio_end_ms": heard_ms})
        self.playing_item = None

    def on_ws_closed(self, socket: int, code: int, reason: str) -> None:
        self.open = False
        if not self.hung_up:
            raise Upstream(f"the realtime server closed the socket ({code} {reason})")

    def on_io_failed(self, target: int, error: str) -> None:
        raise Upstream(f"realtime server: {error}")

    def on_hangup(self) -> None:
        self.hung_up = True
        host.cancel(self.timer)
        if self.open:
            host.ws_close(self.socket)


def _text(settings: Dict[str, Any], key: str, default: str) -> str:
    value = settings.get(key, default)
    if not isinstance(value, str) or not value:
        raise InvalidConfig(f"{key}: expected a non-empty string")
    return value
