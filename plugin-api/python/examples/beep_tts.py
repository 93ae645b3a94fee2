"""A text-to-speech stage in a few lines (the README's example): 10 ms of a square wave per
character of the utterance, PCM16 at 16 kHz, returned at the flush.

Build: ``plugin-api/python/build.sh plugin-api/python/examples OUT.wasm --entry beep_tts``
(world ``tts-plugin``).
"""

from switchboard_plugin import AudioFormat, PluginInfo, SessionConfig, Synthesizer, audio, export

RATE = 16000
"""Sample rate of the speech (Hz)."""


@export(PluginInfo("beep-tts", "0.1.0", "Beeps, 10 ms a character", AudioFormat.pcm16(RATE)))
class Beeper(Synthesizer):
    def __init__(self, config: SessionConfig) -> None:
        super().__init__(config)
        self.pending = ""

    def on_text(self, text: str) -> None:
        self.pending += text

    def on_flush(self) -> None:
        samples = [(3000 if (i // 8) % 2 else -3000) for i in range(RATE // 100 * len(self.pending))]
        self.speech(audio.pcm16_to_bytes(samples), AudioFormat.pcm16(RATE))
        self.utterance_done()
        self.pending = ""

    def on_cancel(self) -> None:
        self.pending = ""
