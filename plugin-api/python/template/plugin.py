"""Echo, in Python: a realtime plugin that plays the caller's speech back to them — the
template for Python plugin authors (copy this directory, rename, replace the session logic).

Settings (the agent's ``realtime.settings`` in agents.toml, all optional):

- ``mode``: ``"utterance"`` (default) plays back each caller utterance once the caller pauses;
  ``"immediate"`` returns every frame as soon as it arrives (a loopback).
- ``silence_ms`` (default 600): how long the caller must be quiet to end an utterance.
- ``threshold`` (default 500): RMS level (PCM16 units) above which a 20 ms frame is speech.

DTMF: ``#`` hangs up; any other key stops the reply that is playing (``clear_playback``).
Unknown or ill-typed settings refuse the session with ``invalid-config``.
"""

from __future__ import annotations

from typing import List

from switchboard_plugin import (
    AudioFormat,
    AudioFrame,
    InvalidConfig,
    PluginInfo,
    Session,
    SessionConfig,
    audio,
    export,
    log,
)
from switchboard_plugin.types import LogLevel

SAMPLE_RATE = 8000
"""Every sample the plugin receives and plays is PCM16 at this rate (Hz)."""
MAX_UTTERANCE_MS = 30_000
"""Longest utterance kept before it is played back anyway (ms); bounds the session's memory."""

INFO = PluginInfo(
    name="echo-py",
    version="0.1.0",
    description="Plays the caller's speech back to them (Python template)",
    input_format=AudioFormat.pcm16(SAMPLE_RATE),
)


@export(INFO)
class Echo(Session):
    """One call's echo."""

    def __init__(self, config: SessionConfig) -> None:
        super().__init__(config)
        settings = config.settings()
        unknown = sorted(set(settings) - {"mode", "silence_ms", "threshold"})
        if unknown:
            raise InvalidConfig(f"unknown setting(s): {', '.join(unknown)}")
        self.mode = settings.get("mode", "utterance")
        if self.mode not in ("utterance", "immediate"):
            raise InvalidConfig(f"mode: expected \"utterance\" or \"immediate\", got {self.mode!r}")
        self.silence_ms = _whole(settings, "silence_ms", 600)
        self.threshold = _whole(settings, "threshold", 500)
        self.utterance: List[AudioFrame] = []
        self.quiet_ms = 0.0
        log(LogLevel.INFO, f"echo-py session open, mode {self.mode}")

    def on_audio(self, frame: AudioFrame) -> None:
        if self.mode == "immediate":
            self.play(frame)
            return
        loud = audio.rms(audio.pcm16_from_bytes(frame.data)) >= self.threshold
        if loud or self.utterance:
            self.utterance.append(frame)
        self.quiet_ms = 0 if loud else self.quiet_ms + frame.duration_ms
        held_ms = sum(f.duration_ms for f in self.utterance)
        if self.utterance and (self.quiet_ms >= self.silence_ms or held_ms >= MAX_UTTERANCE_MS):
            self.play(b"".join(f.data for f in self.utterance))
            self.utterance.clear()

    def on_dtmf(self, digit: str) -> None:
        if digit == "#":
            self.hang_up()
        else:
            self.clear_playback()


def _whole(settings: dict, key: str, default: int) -> int:
    value = settings.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidConfig(f"{key}: expected a whole number ≥ 0, got {value!r}")
    return value
