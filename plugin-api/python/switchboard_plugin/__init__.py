"""Switchboard plugins in Python: thin, typed helpers over the WIT contract
(``plugin-api/wit``, ``switchboard:plugin@0.2.0``), mirroring the Rust SDK.

A plugin is a :class:`Session` subclass exported with :func:`export`::

    from switchboard_plugin import AudioFormat, AudioFrame, PluginInfo, Session, export

    @export(PluginInfo("echo-py", "0.1.0", "Plays the caller back", AudioFormat.pcm16(8000)))
    class Echo(Session):
        def on_audio(self, frame: AudioFrame) -> None:
            self.play(frame)

Build it into a component with ``plugin-api/python/build.sh <plugin dir> <out.wasm>``; test it
under plain CPython with :mod:`switchboard_plugin.testing`.
"""

from . import audio, host
from .host import log
from .session import Session, export
from .types import (
    AgentTranscript,
    AudioFormat,
    AudioFrame,
    CallInfo,
    ClearPlayback,
    Encoding,
    HangUp,
    Internal,
    InvalidConfig,
    IoError,
    LogLevel,
    Mark,
    Output,
    Play,
    PluginError,
    PluginInfo,
    RateLimited,
    SessionConfig,
    Tool,
    ToolCall,
    ToolResult,
    Transfer,
    Unauthorized,
    Unsupported,
    Upstream,
    UserTranscript,
)

__all__ = [
    "AgentTranscript", "AudioFormat", "AudioFrame", "CallInfo", "ClearPlayback", "Encoding",
    "HangUp", "Internal", "InvalidConfig", "IoError", "LogLevel", "Mark", "Output", "Play",
    "PluginError", "PluginInfo", "RateLimited", "Session", "SessionConfig", "Tool", "ToolCall",
    "ToolResult", "Transfer", "Unauthorized", "Unsupported", "Upstream", "UserTranscript",
    "audio", "export", "host", "log",
]
