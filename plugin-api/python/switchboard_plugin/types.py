"""The contract's values as plain Python: audio formats and frames, the call's configuration,
the outputs a session (or a pipeline stage) returns and the errors it raises.

These mirror ``plugin-api/wit/plugin.wit`` (``switchboard:plugin@0.2.0``) and the Rust SDK's
re-exported types. They are ordinary dataclasses, independent of the generated bindings, so a
plugin's logic runs unchanged under plain CPython (see :mod:`switchboard_plugin.testing`); the
component glue (:mod:`switchboard_plugin._component`) converts to and from the bindings.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union


class Encoding(enum.Enum):
    """How audio samples are encoded (WIT ``audio-encoding``)."""

    PCM16 = "pcm16"
    """Signed 16-bit little-endian PCM, mono: two bytes per sample."""
    MULAW = "mulaw"
    """ITU-T G.711 μ-law, mono: one byte per sample."""


@dataclass(frozen=True)
class AudioFormat:
    """An encoding at a sample rate (WIT ``audio-format``)."""

    encoding: Encoding
    sample_rate: int
    """Samples per second (Hz), e.g. 8000, 16000, 24000."""

    @property
    def bytes_per_sample(self) -> int:
        """2 for PCM16, 1 for μ-law."""
        return 2 if self.encoding is Encoding.PCM16 else 1

    def bytes_per_ms(self) -> float:
        """Bytes of audio per millisecond in this format."""
        return self.sample_rate * self.bytes_per_sample / 1000.0

    @staticmethod
    def pcm16(sample_rate: int) -> "AudioFormat":
        """PCM16 at ``sample_rate`` Hz."""
        return AudioFormat(Encoding.PCM16, sample_rate)

    @staticmethod
    def mulaw() -> "AudioFormat":
        """μ-law at 8 kHz, Twilio's own format (the host passes it through untouched)."""
        return AudioFormat(Encoding.MULAW, 8000)


@dataclass(frozen=True)
class AudioFrame:
    """A run of audio (WIT ``audio-frame``): whole samples of ``format`` in ``data``.

    Caller audio arrives as 20 ms frames; played audio may be any length (the host re-frames).
    """

    format: AudioFormat
    data: bytes
    timestamp_ms: int = 0
    """Milliseconds since the stream started (Twilio's ``media.timestamp``); 0 on output."""

    @property
    def duration_ms(self) -> float:
        """Length of the frame in milliseconds."""
        per_ms = self.format.bytes_per_ms()
        return len(self.data) / per_ms if per_ms else 0.0


@dataclass(frozen=True)
class CallInfo:
    """Who is calling whom, as the host learned it from Twilio (WIT ``call-info``)."""

    call_sid: str
    stream_sid: str
    from_: str
    """Caller number, E.164 when Twilio knows it (WIT ``from``)."""
    to: str
    direction: str
    """``inbound``, ``outbound-api`` or ``outbound-dial``."""
    agent: str
    """Name of the agent in agents.toml the call was routed to."""
    parameters: List[Tuple[str, str]] = field(default_factory=list)
    """The stream's ``customParameters``, in Twilio's order."""


@dataclass(frozen=True)
class SessionConfig:
    """Everything a session needs to start (WIT ``session-config``)."""

    call: CallInfo
    settings_json: str
    """The agent's plugin settings (plugin defaults overlaid by the agent's), a JSON object."""
    greeting: Optional[str]
    """The agent's greeting, if it has one."""
    input_format: AudioFormat
    """Format of the caller audio this session receives (what ``describe`` asked for)."""

    def settings(self) -> Dict[str, Any]:
        """The settings as a dict.

        Raises:
            InvalidConfig: the settings are not a JSON object.
        """
        try:
            value = json.loads(self.settings_json or "{}")
        except ValueError as e:
            raise InvalidConfig(f"settings are not JSON: {e}") from e
        if not isinstance(value, dict):
            raise InvalidConfig("settings must be a JSON object")
        return value


@dataclass(frozen=True)
class PluginInfo:
    """What a plugin is and what it wants (WIT ``plugin-info``)."""

    name: str
    """Short machine name, e.g. ``echo``."""
    version: str
    """The plugin's own version (semver)."""
    description: str
    """One line for operators."""
    input_format: AudioFormat
    """The caller audio format the plugin wants; the host converts from 8 kHz μ-law."""


@dataclass(frozen=True)
class Tool:
    """A tool the agent may call (WIT ``tool``); ``parameters`` is a JSON Schema as text."""

    name: str
    description: str
    parameters: str


@dataclass(frozen=True)
class ToolResult:
    """What a tool call came to (WIT ``tool-result``): ``output`` JSON text, or ``error`` words."""

    id: str
    output: Optional[str] = None
    error: Optional[str] = None


# Outputs (WIT ``session-output``). A session emits them with the Session helper methods.


@dataclass(frozen=True)
class Play:
    """Queue audio for the caller, after any audio already queued."""

    frame: AudioFrame


@dataclass(frozen=True)
class ClearPlayback:
    """Drop all queued audio that has not played yet (Twilio ``clear``)."""


@dataclass(frozen=True)
class Mark:
    """Ask to be told (``on_mark_played``) when the audio queued so far has played."""

    name: str


@dataclass(frozen=True)
class UserTranscript:
    """What the caller said; ``is_final`` False for a partial result."""

    text: str
    is_final: bool = True


@dataclass(frozen=True)
class AgentTranscript:
    """What the agent said; ``is_final`` False for a partial result."""

    text: str
    is_final: bool = True


@dataclass(frozen=True)
class Transfer:
    """Transfer the call to this E.164 number."""

    number: str


@dataclass(frozen=True)
class HangUp:
    """End the call once the queued audio has played."""


@dataclass(frozen=True)
class ToolCall:
    """Call a tool the host runs; its result arrives as ``on_tool_result``."""

    id: str
    name: str
    arguments: str
    """The arguments as JSON text (an object)."""


Output = Union[Play, ClearPlayback, Mark, UserTranscript, AgentTranscript, Transfer, HangUp, ToolCall]
"""One thing a session wants done."""


# Pipeline stages (WIT interfaces ``stt``, ``llm`` and ``tts``): the values a stage receives
# and the outputs it returns (emitted with the helpers of :mod:`switchboard_plugin.stages`).


@dataclass(frozen=True)
class SpeechStarted:
    """Speech-to-text: speech began (optional: the host's VAD detects it too)."""


@dataclass(frozen=True)
class Transcript:
    """Speech-to-text: text of the caller's current turn; ``is_final`` False for interim text
    that may still change (WIT ``stt-transcript``)."""

    text: str
    is_final: bool = True


@dataclass(frozen=True)
class EndOfTurn:
    """Speech-to-text: the recognizer's own endpointing says the turn is over (after its final
    transcript); also the answer to the host's ``end-of-turn``."""


SttOutput = Union[SpeechStarted, Transcript, EndOfTurn]
"""What a recognizer heard."""


class Role(enum.Enum):
    """Who said a message of a conversation's history (WIT ``role``)."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"
    """A tool's result (``tool_call_id`` says which call)."""


@dataclass(frozen=True)
class Message:
    """One message of a conversation's history (WIT ``message``)."""

    role: Role
    content: str
    """The text (for a ``tool`` message, the result: output JSON, or the error)."""
    tool_calls: List[ToolCall] = field(default_factory=list)
    """An ``assistant`` message's tool calls (the reply asked for them)."""
    tool_call_id: Optional[str] = None
    """A ``tool`` message's call."""


@dataclass(frozen=True)
class TextDelta:
    """Language model: more text of the reply."""

    text: str


@dataclass(frozen=True)
class Done:
    """Language model: the reply is complete (after any ``ToolCall``s it asked for)."""


LlmOutput = Union[TextDelta, Done, ToolCall]
"""The reply, as a language model produces it."""


@dataclass(frozen=True)
class Speech:
    """Text-to-speech: audio of the utterance, in any format the host converts (PCM16 at any
    rate, or μ-law at 8 kHz) (WIT ``tts-output.audio``)."""

    frame: AudioFrame


@dataclass(frozen=True)
class UtteranceDone:
    """Text-to-speech: everything given before the last ``flush`` has been returned as audio."""


TtsOutput = Union[Speech, UtteranceDone]
"""The speech, as a synthesizer produces it."""


class LogLevel(enum.Enum):
    """Severity of a log line (WIT ``log-level``)."""

    TRACE = "trace"
    DEBUG = "debug"
    INFO = "info"
    WARN = "warn"
    ERROR = "error"


# Errors. Raising one of these from a session ends the call with that plugin error; any other
# exception ends it as ``internal`` (with the exception's type and message).


class PluginError(Exception):
    """Why a plugin refused or failed (WIT ``plugin-error``). Raise a subclass."""

    kind = "internal"

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


class InvalidConfig(PluginError):
    """The settings are wrong; the message says which key and why."""

    kind = "invalid-config"


class Unauthorized(PluginError):
    """A credential was missing or refused."""

    kind = "unauthorized"


class Upstream(PluginError):
    """An upstream service failed."""

    kind = "upstream"


class RateLimited(PluginError):
    """An upstream service asked to slow down; ``retry_after`` in seconds, if it said."""

    kind = "rate-limited"

    def __init__(self, retry_after: Optional[int] = None) -> None:
        super().__init__(f"rate limited (retry after {retry_after} s)" if retry_after else "rate limited")
        self.retry_after = retry_after


class Unsupported(PluginError):
    """The plugin cannot do what was asked."""

    kind = "unsupported"


class Internal(PluginError):
    """A bug in the plugin."""

    kind = "internal"


class IoError(Exception):
    """The host refused an I/O call at once (WIT ``io-error``).

    ``kind`` is ``denied`` (host not in ``allowed_hosts``), ``limit`` (a per-session cap) or
    ``invalid`` (bad URL, unknown or closed handle).
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
