"""Switchboard plugins in Python: thin, typed helpers over the WIT contract
(``plugin-api/wit``, ``switchboard:plugin@0.2.0``), mirroring the Rust SDK.

A plugin is a :class:`Session` subclass exported with :func:`export`::

    from switchboard_plugin import AudioFormat, AudioFrame, PluginInfo, Session, export

    @export(PluginInfo("echo-py", "0.1.0", "Plays the caller back", AudioFormat.pcm16(8000)))
    class Echo(Session):
        def on_audio(self, frame: AudioFrame) -> None:
            self.play(frame)

A pipeline stage subclasses :class:`Recognizer` (speech to text), :class:`Conversation` (the
language model) or :class:`Synthesizer` (text to speech) instead (:mod:`switchboard_plugin.stages`).

Build it into a component with ``plugin-api/python/build.sh <plugin dir> <out.wasm>`` (the
world follows from the exported class); test it under plain CPython with
:mod:`switchboard_plugin.testing`.
"""

from . import audio, host
from .host import log
from .session import Session, export
from .stages import Conversation, Recognizer, Synthesizer
from .types import (
    AgentTranscript,
    AudioFormat,
    AudioFrame,
    CallInfo,
    ClearPlayback,
    Done,
    Encoding,
    EndOfTurn,
    HangUp,
    Internal,
    InvalidConfig,
    IoError,
    LogLevel,
    Mark,
    Message,
    Output,
    Play,
    PluginError,
    PluginInfo,
    RateLimited,
    Role,
    SessionConfig,
    Speech,
    SpeechStarted,
    TextDelta,
    Tool,
    ToolCall,
    ToolResult,
    Transcript,
    Transfer,
    Unauthorized,
    Unsupported,
    Upstream,
    UserTranscript,
    UtteranceDone,
)

__all__ = [
    "AgentTranscript", "AudioFormat", "AudioFrame", "CallInfo", "ClearPlayback", "Conversation",
    "Done", "Encoding", "EndOfTurn", "HangUp", "Internal", "InvalidConfig", "IoError", "LogLevel",
    "Mark", "Message", "Output", "Play", "PluginError", "PluginInfo", "RateLimited", "Recognizer",
    "Role", "Session", "SessionConfig", "Speech", "SpeechStarted", "Synthesizer", "TextDelta",
    "Tool", "ToolCall", "ToolResult", "Transcript", "Transfer", "Unauthorized", "Unsupported",
    "Upstream", "UserTranscript", "UtteranceDone", "audio", "export", "host", "log",
]
