"""A Python plugin that misbehaves on purpose, for the sandbox tests (tests/e2e/python_plugins.rs).

It echoes caller audio (μ-law, untouched) until the caller presses ``1``, then does what the
``behaviour`` setting says:

- ``spin``: loops forever (the host's 200 ms budget must stop it);
- ``hog``: allocates memory until it runs out (the host's per-call memory limit must stop it).

Either way only this call may end; the gateway and other calls go on.
"""

from __future__ import annotations

from typing import List

from switchboard_plugin import AudioFormat, AudioFrame, InvalidConfig, PluginInfo, Session, SessionConfig, export

BEHAVIOURS = ("spin", "hog")


@export(PluginInfo("python-misbehave", "0.1.0", "Misbehaves on DTMF 1 (tests only)", AudioFormat.mulaw()))
class Misbehave(Session):
    """Echoes, then misbehaves."""

    def __init__(self, config: SessionConfig) -> None:
        super().__init__(config)
        self.behaviour = config.settings().get("behaviour")
        if self.behaviour not in BEHAVIOURS:
            raise InvalidConfig(f"behaviour: expected one of {BEHAVIOURS}, got {self.behaviour!r}")
        self.hoard: List[bytearray] = []

    def on_audio(self, frame: AudioFrame) -> None:
        self.play(frame)

    def on_dtmf(self, digit: str) -> None:
        if digit != "1":
            return
        if self.behaviour == "spin":
            n = 0
            while True:
                n += 1
        else:
            while True:
                self.hoard.append(bytearray(1 << 20))
